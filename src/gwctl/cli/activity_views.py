"""`activity summary`'s pictures for a person: the agent tree and the per-day bar charts.

Both are drawn with rich, which is imported here only when one is shown. Names
come from clients, so every one is escaped with :func:`~gwctl.core.text.printable`
and given to rich as plain Text, never as markup.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gwctl.activity.record import INPUT_KINDS, SummaryRow, decimal_text, summary_cost_known
from gwctl.activity.tree import AgentNode, walk
from gwctl.context import current
from gwctl.core.text import printable

GUIDE = 4  # columns rich's Tree indents each level by


def input_tokens(r: SummaryRow) -> int:
    return sum(v for k, v in r.usage.items() if k in INPUT_KINDS)


def cost_cell(r: SummaryRow) -> str:
    """The exact cost, or ``unbilled`` for a group whose forwarded requests were all unbilled."""
    return decimal_text(r.cost) if summary_cost_known(r) else "unbilled"


def _console(width: int | None = None) -> Any:
    from rich.console import Console

    env = current()
    if width is None and not env.stdout_is_terminal():
        width = 160 if env.force_tables else 200  # a pipe or a capture: wide enough that lines are not wrapped
    return Console(file=env.stdout, highlight=False, width=width)


TREE_COLUMNS = ("REQUESTS", "INPUT TOK", "OUTPUT TOK", "COST USD", "UNBILLED", "REJECTED")


def _stats(r: SummaryRow) -> list[str]:
    return [str(r.requests), str(input_tokens(r)), str(r.usage.get("output_tokens", 0)), cost_cell(r)] + [
        str(r.unbilled),
        str(r.rejected),
    ]


def print_agent_tree(roots: list[AgentNode]) -> None:
    """Each root agent with its subagents under it, the columns aligned across levels.

    A parent's line shows its total with its subagents; its own requests, when
    it made any, are the first line under it.
    """
    from rich.text import Text
    from rich.tree import Tree

    # (depth, name, the columns, "total" for a parent's line, "own" for a parent's own requests, else "")
    lines: list[tuple[int, str, list[str], str]] = []
    for depth, n in walk(roots):
        name = printable(n.key) if n.key is not None else "(none)"
        if n.children:
            lines.append((depth, name, _stats(n.totals), "total"))
            if n.own is not None:
                lines.append((depth + 1, "(own requests)", _stats(n.own), "own"))
        else:
            assert n.own is not None  # a leaf is an agent that logged requests
            lines.append((depth, name, _stats(n.own), ""))
    name_w = max([len("AGENT")] + [GUIDE * d + len(name) for d, name, _, _ in lines])
    widths = [max([len(h)] + [len(s[i]) for _, _, s, _ in lines]) for i, h in enumerate(TREE_COLUMNS)]

    def label(depth: int, name: str, stats: list[str], kind: str) -> Any:
        text = Text(name, style="bold" if depth == 0 else ("dim" if kind == "own" else ""))
        text.append(" " * (name_w - GUIDE * depth - len(name)))
        for s, w in zip(stats, widths):
            text.append("  " + s.rjust(w))
        if kind == "total":
            text.append("  incl. subagents", style="dim")
        return text

    header = Text("AGENT".ljust(name_w), style="bold")
    for h, w in zip(TREE_COLUMNS, widths):
        header.append("  " + h.rjust(w), style="bold")
    tree = Tree("", hide_root=True)
    parents: list[Any] = [tree]
    for depth, name, stats, kind in lines:
        del parents[depth + 1 :]
        parents.append(parents[depth].add(label(depth, name, stats, kind)))
    console = _console()
    console.print(header, soft_wrap=True)
    console.print(tree, soft_wrap=True)


BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for bars finer than one character


def bar(value: Decimal, top: Decimal, width: int) -> str:
    """A bar of ``value`` on a scale where ``top`` fills ``width`` cells (exact up to an eighth of a cell)."""
    if top <= 0 or value <= 0:
        return ""
    eighths = int(value * width * 8 / top)
    if eighths == 0:
        eighths = 1  # something that is not nothing shows
    full, rest = divmod(eighths, 8)
    return "█" * full + (BLOCKS[rest] if rest else "")


def _days(rows: list[SummaryRow]) -> list[tuple[str, SummaryRow | None]]:
    """Every day from the first to the last one with activity, quiet days included (as None)."""
    from gwctl.activity.insights import calendar

    by_day = {r.key: r for r in rows if r.key is not None}
    return [(d, by_day.get(d)) for d in calendar(sorted(by_day))]


def print_day_charts(rows: list[SummaryRow]) -> None:
    """Spend and requests per day as two bar charts scaled to the terminal's width; costs as exact labels.

    A day whose forwarded requests were all unbilled has no bar and says ``unbilled``: its cost is unknown.
    """
    from rich.text import Text

    days = _days(rows)
    console = _console()
    if not days:
        console.print(Text("no activity yet"))
        return
    spend = [(d, r.cost if r is not None else Decimal(0), cost_cell(r) if r is not None else "-") for d, r in days]
    reqs = [(d, Decimal(r.requests if r is not None else 0), str(r.requests if r is not None else 0)) for d, r in days]
    for title, series, style in (
        ("spend per day (USD)", spend, "green"),
        ("requests per day", reqs, "cyan"),
    ):
        label_w = max(len(s) for _, _, s in series)
        width = max(10, console.width - 10 - 2 - 2 - label_w)
        top = max(v for _, v, _ in series)
        console.print(Text(title, style="bold"))
        for day, value, text in series:
            line = Text(day + "  ")
            drawn = bar(value, top, width)
            line.append(drawn, style=style)
            line.append(" " * (width - len(drawn)) + "  " + text.rjust(label_w))
            console.print(line, soft_wrap=True)
        if title.startswith("spend"):
            console.print()
