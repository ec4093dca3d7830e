"""`gwctl activity …`: what the proxy did and what it cost."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Optional

import typer

from gwctl.activity import (
    SUMMARY_BY,
    exact_sum,
    open_log,
    parse_dsn,
    parse_duration,
    record_to_json,
    resolve_dsn,
    summary_to_json,
)
from gwctl.activity.record import INPUT_KINDS, attempts_line, summary_cost_known
from gwctl.cli import complete
from gwctl.cli.common import ActivityOpt, JsonOpt, fail
from gwctl.context import current
from gwctl.core.text import printable
from gwctl.render import print_json, print_table
from gwctl.store.paths import default_activity_path

app = typer.Typer(
    help="Read the activity log: requests, tokens, exact cost.\n\nExample: gwctl activity summary --by model --since 7d",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SinceOpt = Annotated[
    Optional[str], typer.Option("--since", metavar="DURATION", help="Only the last DURATION, like 30m, 12h, 7d.")
]
SourceOpt = Annotated[
    Optional[str], typer.Option("--source", metavar="S", help="Only this source.", autocompletion=complete.sources)
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        metavar="REF",
        help="Only this model (as the client asked for it).",
        autocompletion=complete.model_names,
    ),
]
AgentOpt = Annotated[
    Optional[str],
    typer.Option(
        "--agent",
        metavar="A",
        help="Only this agent (root and subagents are separate).",
        autocompletion=complete.agents,
    ),
]


def _open(dsn_option: str | None):
    dsn = resolve_dsn(dsn_option, current().environ, default_activity_path())
    target = parse_dsn(dsn)
    if target.kind == "sqlite" and target.path is not None and not target.path.exists():
        return None  # nothing recorded yet: an empty log, not an error
    return open_log(dsn, create=False)


def _since(text: str | None):
    if text is None:
        return None
    try:
        span = parse_duration(text)
    except ValueError as exc:
        fail(str(exc))
    try:
        return datetime.now(timezone.utc) - span
    except OverflowError:
        fail(f"invalid duration {text!r}: it reaches back before the year 1", "give a shorter --since, or leave it out")


def _read(activity: str | None, query) -> list:
    """What ``query(log)`` returns from the activity log; nothing when no log was recorded yet."""
    log = _open(activity)
    if log is None:
        return []
    try:
        return query(log)
    finally:
        log.close()


LIST_HEADERS = [
    "TIME (UTC)",
    "REQUEST",
    "KEY",
    "AGENT",
    "KIND",
    "SOURCE",
    "MODEL",
    "STATUS",
    "LATENCY",
    "TOKENS",
    "COST USD",
    "RULE",
    "ERROR",
]


def _list_row(r, with_attempts: bool = False) -> list:
    """One request as a row of `activity list`'s table; ``with_attempts``: and its failover attempts
    (``a/x 503 12ms -> b/y 200 40ms``, empty without a plan) as a last column."""
    tokens = sum(v for k, v in r.usage.items() if k.endswith("tokens") and k != "reasoning_tokens")
    cost = (
        "unbilled"
        if r.cost is None and r.route_kind in ("passthrough", "managed")
        else ("" if r.cost is None else str(r.cost))
    )
    # agent, model and error come from clients and upstreams: escaped, so they cannot forge a line or drive the terminal
    row = [
        r.time.strftime("%Y-%m-%d %H:%M:%S"),
        printable(r.request_id, 80),
        printable(r.key_name or "-", 80),
        printable(r.agent or "-"),
        r.route_kind,
        printable(r.source or "-", 80),
        printable(r.model or "-"),
        r.status,
        f"{r.latency_ms:.0f}ms",
        tokens,
        cost,
        printable(r.rule or "", 80),
        printable(r.error or "", 120),
    ]
    if with_attempts:  # the targets come from the store, the errors from upstreams: escaped too
        row.append(printable(attempts_line(r.attempts), 400) if r.attempts else "")
    return row


@app.command("list")
def list_cmd(
    since: SinceOpt = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    agent: AgentOpt = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="At most N rows, newest first (0: all).")] = 100,
    activity: ActivityOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List proxied requests, newest first.

    Example: gwctl activity list --since 1h --agent triage/summarizer
    """
    if not 0 <= limit <= 2**63 - 1:  # the backends' integer: a larger N lists everything anyway
        fail(f"--limit must be a number of rows (0 for all), got {limit}")
    cutoff = _since(since)
    rows = _read(
        activity, lambda log: log.list(since=cutoff, source=source, model=model, agent=agent, limit=limit or None)
    )
    if json_:
        print_json([record_to_json(r) for r in rows])
        return
    # the ATTEMPTS column only when a listed request was tried on several targets (failover): the common
    # table stays as it is, and the other columns keep their places
    with_attempts = any(r.attempts for r in rows)
    headers = [*LIST_HEADERS, "ATTEMPTS"] if with_attempts else LIST_HEADERS
    filtered = any(v is not None for v in (since, source, model, agent))
    print_table(headers, [_list_row(r, with_attempts) for r in rows], empty=_nothing(filtered))


def _nothing(filtered: bool) -> str:
    """What an empty answer says: an empty log, or filters nothing matched (not the same news)."""
    return "no requests match these filters" if filtered else "no activity yet"


def _summary_json(by: str, since: str | None, rows: list, total: Decimal) -> dict:
    return {
        "by": by,
        "since": since,
        "rows": [summary_to_json(r) for r in rows],
        "total": {
            "requests": sum(r.requests for r in rows),
            "cost": str(total),
            "unbilled": sum(r.unbilled for r in rows),
            "rejected": sum(r.rejected for r in rows),
        },
    }


def _summary_row(r) -> list:
    """One group as a row of `activity summary`'s table."""
    return [
        printable(r.key or "(none)"),
        r.requests,
        sum(v for k, v in r.usage.items() if k in INPUT_KINDS),
        r.usage.get("output_tokens", 0),
        str(r.cost) if summary_cost_known(r) else "unbilled",
        r.billed,
        r.unbilled,
        r.rejected,
        r.errors,
    ]


@app.command("summary")
def summary(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            metavar="source|model|agent|key|day",
            help="Group by this.",
            autocompletion=complete.choices(SUMMARY_BY),
        ),
    ] = "source",
    since: SinceOpt = None,
    source: SourceOpt = None,
    model: ModelOpt = None,
    agent: AgentOpt = None,
    tree: Annotated[
        Optional[bool],
        typer.Option(
            "--tree/--flat",
            help="With --by agent: subagents nested under their root agent, with totals (default on a terminal),"
            " or one row per agent.",
        ),
    ] = None,
    chart: Annotated[
        bool, typer.Option("--chart", help="With --by day: bar charts of spend and requests per day (on a terminal).")
    ] = False,
    activity: ActivityOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Totals per source, model, agent, key or day: requests, tokens, exact cost.

    Unbilled requests (no catalog entry) are counted apart: their cost is
    unknown, not zero.

    Example: gwctl activity summary --by agent --since 7d --json
    """
    _check_summary_options(by, tree, chart, json_)
    cutoff = _since(since)
    rows = _read(activity, lambda log: log.summary(by=by, since=cutoff, source=source, model=model, agent=agent))
    total = exact_sum(r.cost for r in rows)
    env = current()
    # the tree is a person's default; a pipe keeps the flat rows a script reads, unless --tree asks for it
    nested = by == "agent" and (tree if tree is not None else env.stdout_is_tty())
    if json_:
        doc = _summary_json(by, since, rows, total)
        if nested and tree:
            from gwctl.activity.tree import build_tree, node_to_json

            doc["rows"] = [node_to_json(n) for n in build_tree(rows)]
        print_json(doc)
        return
    _print_summary(by, rows, nested, chart and env.stdout_is_tty(), _nothing(since is not None))
    if env.stdout_is_terminal() and rows:
        unbilled = sum(r.unbilled for r in rows)
        env.stdout.write(
            f"total cost: {total} USD over {sum(r.requests for r in rows)} requests"
            + (f" ({unbilled} unbilled: no catalog entry, cost unknown)" if unbilled else "")
            + "\n"
        )


def _check_summary_options(by: str, tree: bool | None, chart: bool, json_: bool) -> None:
    if by not in SUMMARY_BY:
        fail(f"--by must be one of {', '.join(SUMMARY_BY)}, not '{by}'")
    if tree is not None and by != "agent":
        fail(f"--{'tree' if tree else 'flat'} needs --by agent (it nests subagents under their root agent)")
    if chart and by != "day":
        fail("--chart needs --by day (it draws spend and requests per day)")
    if chart and json_:
        fail("--chart draws for a person and --json prints the numbers: choose one")


def _print_summary(by: str, rows: list, nested: bool, chart: bool, empty: str) -> None:
    """The summary for a person: the agent tree, the day charts, or the table."""
    if nested and rows:
        from gwctl.activity.tree import build_tree
        from gwctl.cli.activity_views import print_agent_tree

        print_agent_tree(build_tree(rows))
    elif chart:
        from gwctl.cli.activity_views import print_day_charts

        print_day_charts(rows)
    else:
        print_table(
            [by.upper(), "REQUESTS", "INPUT TOK", "OUTPUT TOK", "COST USD", "BILLED", "UNBILLED", "REJECTED", "ERRORS"],
            [_summary_row(r) for r in rows],
            empty=empty,
        )


@app.command("report")
def report(
    html: Annotated[
        str, typer.Option("--html", metavar="FILE", help="Write the report to FILE (one HTML page); '-' for stdout.")
    ],
    since: SinceOpt = None,
    activity: ActivityOpt = None,
) -> None:
    """Write one self-contained HTML page: spend per day by source, agents, models, rejections, latency.

    The page needs no network (inline SVG, no scripts or fonts to fetch); its
    totals are `activity summary --json`'s for the same period.

    Example: gwctl activity report --html activity.html --since 30d
    """
    from pathlib import Path

    from gwctl.activity import redact_dsn
    from gwctl.activity.insights import empty, gather
    from gwctl.activity.report import render
    from gwctl.render import message

    cutoff = _since(since)
    log = _open(activity)
    if log is None:  # nothing recorded yet: the page of an empty log, as `summary` prints no rows
        insights = empty(cutoff)
        log_name = redact_dsn(resolve_dsn(activity, current().environ, default_activity_path()))
    else:
        try:
            insights = gather(log, cutoff)
            log_name = redact_dsn(log.dsn)
        finally:
            log.close()
    page = render(insights, since_text=since, log_name=log_name)
    if html == "-":  # as '-' is stdin where gwctl reads a file: gwctl activity report --html - | mail …
        current().stdout.write(page)
        return
    target = Path(html)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
    message(f"wrote {target} ({insights.total.requests} requests)")


def _complete_reprice_by(incomplete: str) -> list[str]:
    from gwctl.activity.reprice import REPRICE_BY  # the decision's modules: only when asked

    return complete.choices(REPRICE_BY)(incomplete)


@app.command("reprice")
def reprice_cmd(
    catalog: Annotated[
        Optional[str],
        typer.Option(
            "--catalog",
            metavar="FILE",
            help="A proposed catalog in `catalog export` form (TOML or JSON, '-' for stdin); default: the store's.",
        ),
    ] = None,
    since: SinceOpt = None,
    by: Annotated[
        str,
        typer.Option(
            "--by", metavar="source|model|agent|key", help="Group by this.", autocompletion=_complete_reprice_by
        ),
    ] = "source",
    max_increase: Annotated[
        Optional[str],
        typer.Option(
            "--max-increase", metavar="PCT", help="Exit 1 when the total rises by more than PCT percent (for CI)."
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Rewrite the logged costs to the proposed ones (a late price correction).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Apply without asking.")] = False,
    activity: ActivityOpt = None,
    json_: JsonOpt = False,
) -> None:
    """What the logged requests would cost under a proposed catalog, before it ships.

    Replays each forwarded request's recorded usage at the proposed prices in
    force at its time, and its shape through the proxy's decision, to show
    the cost change per group, requests that would become billed or unbilled,
    and requests the proposal's checks would refuse.

    Example: gwctl activity reprice --catalog proposed.toml --since 30d --by model --max-increase 5 --json
    """
    from gwctl.activity.reprice import REPRICE_BY, changed_costs, reprice, repricing_json, with_catalog
    from gwctl.cli.common import confirm, load
    from gwctl.render import message

    if by not in REPRICE_BY:
        fail(f"--by must be one of {', '.join(REPRICE_BY)}, not '{by}'")
    limit = _percent(max_increase) if max_increase is not None else None
    if apply and catalog is not None:
        fail(
            "--apply rewrites logged costs at the store's catalog; --catalog is only a what-if",
            "write the proposed prices into the store first (gwctl catalog import FILE), then run --apply",
        )
    snap = load()
    if catalog is not None:
        snap = with_catalog(snap, _proposed_catalog(catalog))
    cutoff = _since(since)
    log = _open(activity)
    try:
        # streamed, a record at a time; a what-if keeps nothing per row, --apply the rows it rewrites
        result = reprice([] if log is None else log.scan(since=cutoff), snap, by, keep_changes=apply)
        if apply and result.changes:
            confirm(f"rewrite the logged cost of {result.changed} request(s) at the store's prices?", yes)
            assert log is not None
            changed = log.reprice(changed_costs(result), datetime.now(timezone.utc))
            message(f"rewrote the cost of {changed} request(s); each keeps its first cost (original_cost)")
        elif apply:
            message("nothing to rewrite: every logged cost already matches the store's prices")
    finally:
        if log is not None:
            log.close()
    if json_:
        print_json(repricing_json(result, catalog or "store", since, limit))
    else:
        _print_repricing(result, limit)
    if limit is not None and result.increase_over(limit):
        raise typer.Exit(1)


def _percent(text: str) -> Decimal:
    from decimal import InvalidOperation

    try:
        if "_" in text:  # Decimal reads 1_0 as 10; a percentage is written as digits
            raise InvalidOperation
        value = Decimal(text.strip().rstrip("%"))
    except InvalidOperation:
        fail(f"--max-increase must be a percentage like 5 or 2.5, not '{text}'")
    if not value.is_finite() or value < 0:
        fail(f"--max-increase must be a percentage of 0 or more, not '{text}'")
    return value


def _proposed_catalog(path: str) -> dict:
    """The proposed catalog file's entries, each checked as `catalog import` checks them."""
    from gwctl.cli.catalog import read_catalog_file
    from gwctl.store.schema import SchemaError, parse_entry

    entries = {}
    for ref, table in read_catalog_file(path).items():
        try:
            entries[ref] = parse_entry(ref, table)
        except SchemaError as exc:
            fail(f"{path}: {exc.message}")
    return entries


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:+}%"


def _repricing_row(g, name: str) -> list:
    """One group of a repricing (or its total) as a table row: exact amounts, the change signed."""
    from gwctl.core.catalog_values import format_usd as usd

    diff = ("+" if g.difference > 0 else "") + usd(g.difference)
    return [
        name,
        g.requests,
        usd(g.current),
        usd(g.proposed),
        diff,
        _pct(g.percent),
        g.current_unbilled,
        g.proposed_unbilled,
    ]


def _print_repricing(r, limit: Decimal | None) -> None:
    from gwctl.core.catalog_values import format_usd as usd
    from gwctl.core.text import printable

    rows = [_repricing_row(g, printable(g.key) if g.key is not None else "-") for g in r.groups]
    if rows:
        rows.append(_repricing_row(r.total, "TOTAL"))
    headers = [r.by.upper(), "REQUESTS", "CURRENT USD", "PROPOSED USD", "DIFF USD", "CHANGE"]
    print_table(
        [*headers, "UNBILLED NOW", "UNBILLED THEN"], rows, empty="no priced requests in the log for this period"
    )
    lines = []
    if r.became_billed:
        lines.append(
            f"became billed: {r.became_billed} request(s), {usd(r.became_billed_cost)} USD at the proposed prices"
        )
    if r.became_unbilled:
        lines.append(
            f"became unbilled: {r.became_unbilled} request(s) costing {usd(r.became_unbilled_cost)} USD now "
            f"(no proposed price: their cost would be unknown)"
        )
    if r.rejected:
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(r.rejected.items()))
        lines.append(f"would be rejected: {sum(r.rejected.values())} request(s) ({rules})")
    if r.not_replayable:
        lines.append(
            f"not replayable: {r.not_replayable} request(s) logged without their request's shape "
            f"(before this gwctl kept it); their cost is repriced, their checks are not"
        )
    if limit is not None:
        verdict = "over" if r.increase_over(limit) else "within"
        lines.append(f"total change {_pct(r.total.percent)}: {verdict} the --max-increase of {limit:f}%")
    current().stdout.write("".join(line + "\n" for line in lines))
