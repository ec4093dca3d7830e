"""`gwctl activity report --html`: one self-contained HTML page from :class:`~gwctl.activity.insights.Insights`.

The page needs nothing but a browser: the charts are SVG drawn here, the style is
inline, there is no script, no web font and no link to fetch. Every string that
came from a client or an upstream (agent, model, source, rule) is escaped for HTML
with :func:`esc`, in text and in attributes alike, so a logged name cannot add
markup. Costs are printed as exact decimals; only the bars' geometry uses floats.
The totals carry ``data-*`` attributes so a test (or a script) can read them back.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable

from gwctl.activity.insights import DaySpend, Insights
from gwctl.activity.record import INPUT_KINDS, SummaryRow, decimal_text, format_utc, summary_cost_known
from gwctl.activity.tree import walk

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
OTHER = "#bab0ac"  # sources past the palette share one colour (each bar still names them on hover)


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute: ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def name(value: str | None, none: str = "(none)") -> str:
    return esc(none if value is None else value)


def cost_text(r: SummaryRow) -> str:
    """The exact cost, or ``unbilled`` when the group's forwarded requests were all unbilled (unknown, not 0)."""
    return decimal_text(r.cost) if summary_cost_known(r) else "unbilled"


def _cost_attr(r: SummaryRow) -> str:
    return decimal_text(r.cost) if summary_cost_known(r) else ""


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.meta{color:#666}.cards{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card .v{font-size:1.4em;font-weight:600;font-variant-numeric:tabular-nums}.card .k{color:#666;font-size:.9em}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;vertical-align:top}
td.n,th.n{text-align:right}tr.own td:first-child{color:#666;font-style:italic}
tr.parent td{font-weight:600}.name{word-break:break-all}
.legend span{display:inline-block;margin-right:1em}.sw{display:inline-block;width:.9em;height:.9em;
margin-right:.3em;vertical-align:-.1em;border-radius:2px}
.hbar{background:#4e79a7;height:.8em;display:inline-block;border-radius:2px}
.muted{color:#888}svg text{font:11px system-ui,sans-serif;fill:#444}
"""


def _colors(sources: list[str]) -> dict[str, str]:
    return {s: PALETTE[i] if i < len(PALETTE) else OTHER for i, s in enumerate(sources)}


def _spend_chart(days: list[DaySpend], sources: list[str]) -> str:
    """Spend per day as an SVG bar chart, each bar stacked by source; a day with only unbilled requests
    gets a ``?`` instead of a bar (its cost is unknown)."""
    if not days:
        return '<p class="muted">no activity in this period</p>'
    colors = _colors(sources)
    top = max((d.cost for d in days), default=Decimal(0))
    width, height, left, bottom, top_pad = 1000, 260, 70, 40, 14
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    step = plot_w / len(days)
    bar_w = max(1.0, min(40.0, step * 0.8))
    parts = [
        f'<svg id="spend-chart" role="img" aria-label="spend per day, stacked by source" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 10}" y2="{top_pad + plot_h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{esc(decimal_text(top))}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left + 6}" y="{top_pad + 4}">USD</text>',
    ]
    label_every = max(1, len(days) // 12)
    for i, d in enumerate(days):
        x = left + i * step + (step - bar_w) / 2
        y = float(top_pad + plot_h)
        parts.append(f'<g class="day" data-day="{esc(d.day)}" data-cost="{esc(decimal_text(d.cost))}">')
        for source, cost in sorted(d.by_source.items(), key=lambda kv: sources.index(kv[0])):
            h = float(cost / top) * plot_h if top > 0 else 0.0
            y -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{bar_w:.2f}" height="{h:.2f}" fill="{colors[source]}">'
                f"<title>{esc(d.day)} {esc(source)}: {esc(decimal_text(cost))} USD</title></rect>"
            )
        if d.unbilled and not d.billed:
            parts.append(
                f'<text x="{x + bar_w / 2:.2f}" y="{top_pad + plot_h - 4}" text-anchor="middle">?'
                f"<title>{esc(d.day)}: {d.unbilled} unbilled requests, cost unknown</title></text>"
            )
        parts.append("</g>")
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.2f}" y="{height - bottom + 16}" text-anchor="middle">{esc(d.day[5:])}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="sw" style="background:{colors[s]}"></i><span class="name">{esc(s)}</span></span>'
        for s in sources
    )
    return "\n".join(parts) + f'\n<div class="legend">{legend}</div>'


def _day_table(days: list[DaySpend]) -> str:
    rows = "".join(
        f'<tr data-day="{esc(d.day)}"><td>{esc(d.day)}</td><td class="n">{d.requests}</td>'
        f'<td class="n">{esc(decimal_text(d.cost)) if d.billed or not d.unbilled else "unbilled"}</td>'
        f'<td class="n">{d.unbilled}</td></tr>'
        for d in days
    )
    return _table("days", ("day (UTC)", "#requests", "#cost USD", "#unbilled"), rows)


def _table(ident: str, columns: tuple[str, ...], body: str) -> str:
    """One table of the page: its header from ``columns`` (a leading ``#`` marks a number column,
    right-aligned like its cells) and its rows."""
    head = "".join(f'<th class="n">{esc(c[1:])}</th>' if c.startswith("#") else f"<th>{esc(c)}</th>" for c in columns)
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _empty(what: str) -> str:
    return f'<p class="muted">{esc(what)}</p>'


# the columns of a summary group's counts (_counts_cells), after its name
_COUNTS = ("#requests", "#input tok", "#output tok", "#cost USD", "#unbilled", "#rejected")


def _counts_cells(r: SummaryRow) -> str:
    inp = sum(v for k, v in r.usage.items() if k in INPUT_KINDS)
    return (
        f'<td class="n">{r.requests}</td><td class="n">{inp}</td><td class="n">{r.usage.get("output_tokens", 0)}</td>'
        f'<td class="n">{esc(cost_text(r))}</td><td class="n">{r.unbilled}</td><td class="n">{r.rejected}</td>'
    )


def _agent_table(ins: Insights) -> str:
    if not ins.agents:
        return _empty("no activity in this period")
    body = []
    for depth, n in walk(ins.agents):
        pad = f' style="padding-left:{0.6 + 1.5 * depth:.1f}em"'
        key = "" if n.key is None else n.key
        if n.children:
            body.append(
                f'<tr class="parent" data-agent="{esc(key)}" data-depth="{depth}" data-cost="{_cost_attr(n.totals)}">'
                f'<td class="name"{pad}>{name(n.key)} <span class="muted">(incl. subagents)</span></td>'
                f"{_counts_cells(n.totals)}</tr>"
            )
            if n.own is not None:
                own_pad = f' style="padding-left:{0.6 + 1.5 * (depth + 1):.1f}em"'
                body.append(f'<tr class="own"><td{own_pad}>own requests</td>{_counts_cells(n.own)}</tr>')
        else:
            assert n.own is not None
            body.append(
                f'<tr class="leaf" data-agent="{esc(key)}" data-depth="{depth}" data-cost="{_cost_attr(n.own)}">'
                f'<td class="name"{pad}>{name(n.key)}</td>{_counts_cells(n.own)}</tr>'
            )
    return _table("agents", ("agent", *_COUNTS), "".join(body))


def _model_table(ins: Insights) -> str:
    if not ins.models:
        return _empty("no activity in this period")
    top = max((r.cost for r in ins.models), default=Decimal(0))
    body = []
    for r in ins.models:
        share = float(r.cost / top) * 100 if top > 0 else 0.0
        body.append(
            f'<tr data-model="{esc("" if r.key is None else r.key)}" data-cost="{_cost_attr(r)}">'
            f'<td class="name">{name(r.key)}</td>{_counts_cells(r)}'
            f'<td style="width:25%"><span class="hbar" style="width:{share:.1f}%"></span></td></tr>'
        )
    more = (
        _empty(f"{ins.model_count - len(ins.models)} more models not shown")
        if ins.model_count > len(ins.models)
        else ""
    )
    return _table("models", ("model", *_COUNTS, ""), "".join(body)) + more


def _unbilled(ins: Insights) -> str:
    share = ins.unbilled_share
    t = ins.total
    if share is None:
        return '<p id="unbilled" class="muted" data-share="">no forwarded requests in this period</p>'
    pct = share * 100
    w = float(share) * 400
    return (
        f'<p id="unbilled" data-share="{esc(decimal_text(share))}" data-unbilled="{t.unbilled}" data-billed="{t.billed}">'
        f"{t.unbilled} of {t.billed + t.unbilled} forwarded requests were unbilled "
        f"({esc(f'{pct:.1f}')}%): no catalog entry, so their cost is unknown and not in the totals.</p>"
        '<svg role="img" aria-label="unbilled share" viewBox="0 0 400 16" width="400" height="16" '
        'xmlns="http://www.w3.org/2000/svg"><rect width="400" height="16" fill="#59a14f"/>'
        f'<rect width="{w:.2f}" height="16" fill="#e15759"/></svg>'
    )


def _rejections(ins: Insights) -> str:
    if not ins.rejections:
        return _empty("no rejections in this period")
    body = "".join(
        f'<tr data-rule="{esc("" if rule is None else rule)}"><td class="name">{name(rule, "(no rule)")}</td>'
        f'<td class="n">{n}</td></tr>'
        for rule, n in ins.rejections
    )
    return _table("rejections", ("rule", "#requests"), body)


def _slow(ins: Insights) -> str:
    if not ins.slow_routes:
        return _empty("no forwarded requests in this period")
    body = "".join(
        f'<tr data-source="{esc(r.source or "")}" data-model="{esc(r.model or "")}" data-p50="{r.p50_ms:.1f}" '
        f'data-p95="{r.p95_ms:.1f}"><td class="name">{name(r.source)}</td><td class="name">{name(r.model)}</td>'
        f'<td class="n">{r.requests}</td><td class="n">{r.p50_ms:.0f}</td><td class="n">{r.p95_ms:.0f}</td></tr>'
        for r in ins.slow_routes
    )
    return _table("latency", ("source", "model", "#requests", "#p50 ms", "#p95 ms"), body)


def _card(key: str, value: str, ident: str) -> str:
    return f'<div class="card"><div class="v" id="{ident}">{esc(value)}</div><div class="k">{esc(key)}</div></div>'


def render(ins: Insights, *, since_text: str | None, log_name: str, now: datetime | None = None) -> str:
    """The whole page. ``log_name`` is the log's DSN with any password masked; ``since_text`` as given."""
    t = ins.total
    now = now or datetime.now(timezone.utc)
    period = f"the last {since_text}" if since_text else "everything in the log"
    cards: Iterable[str] = (
        _card("total cost USD (billed requests)", decimal_text(t.cost), "total-cost"),
        _card("requests", str(t.requests), "total-requests"),
        _card("unbilled (cost unknown)", str(t.unbilled), "total-unbilled"),
        _card("rejected", str(t.rejected), "total-rejected"),
        _card("errors", str(t.errors), "total-errors"),
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gwctl activity report</title>
<style>{STYLE}</style>
</head>
<body>
<h1>gwctl activity report</h1>
<p class="meta">{esc(period)} &middot; generated {esc(format_utc(now)[:19])}Z &middot; log {esc(log_name)}</p>
<section id="totals" data-requests="{t.requests}" data-cost="{esc(decimal_text(t.cost))}" data-unbilled="{t.unbilled}"
 data-rejected="{t.rejected}" data-errors="{t.errors}">
<div class="cards">{"".join(cards)}</div>
</section>
<h2>Spend per day, by source</h2>
{_spend_chart(ins.days, ins.sources)}
{_day_table(ins.days)}
<h2>Agents</h2>
{_agent_table(ins)}
<h2>Top models</h2>
{_model_table(ins)}
<h2>Unbilled share</h2>
{_unbilled(ins)}
<h2>Rejections by rule</h2>
{_rejections(ins)}
<h2>Slowest routes</h2>
<p class="meta">latency of forwarded requests per source and model (nearest-rank percentiles)</p>
{_slow(ins)}
</body>
</html>
"""
