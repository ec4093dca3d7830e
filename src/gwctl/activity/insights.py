"""What `gwctl activity report` shows, read from the log: one :class:`Insights` for a period.

Totals, agents and models come from the summary query (so they are the numbers
`activity summary --json` prints); spend per day and source and rejections by rule
are grouped by the database too, with the summary's counters; latency percentiles
come from the forwarded rows' latencies, streamed into one array per route. So the
reader's memory grows with the groups (and 8 bytes a forwarded row), never with a
record per row: a month of a busy gateway is millions of rows. Both backends answer
these queries the same way, so nothing here knows which one is in use. Money stays
a Decimal throughout.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Iterable

from gwctl.activity.query import exact_sum
from gwctl.activity.record import ActivityLog, DaySourceRow, RouteKey, SummaryRow
from gwctl.activity.tree import AgentNode, build_tree, merge_rows

TOP_MODELS = 10
SLOW_ROUTES = 10


@dataclass(frozen=True)
class DaySpend:
    """One UTC day: the billed cost per source (exact), the requests, how many were unbilled."""

    day: str  # YYYY-MM-DD
    by_source: dict[str, Decimal]  # source ("(none)" for rows without one) -> billed cost
    requests: int
    billed: int
    unbilled: int

    @property
    def cost(self) -> Decimal:
        return exact_sum(self.by_source.values())


@dataclass(frozen=True)
class RouteLatency:
    """Latency of the forwarded requests to one source and model: nearest-rank percentiles, in ms."""

    source: str | None
    model: str | None
    requests: int
    p50_ms: float
    p95_ms: float


@dataclass
class Insights:
    """Everything the report shows, for one period of the log."""

    since: datetime | None
    total: SummaryRow  # key None: every row of the period (the summary query's groups merged)
    agents: list[AgentNode]
    models: list[SummaryRow]  # the most expensive first, at most TOP_MODELS
    model_count: int  # models in the period, shown or not
    days: list[DaySpend]
    sources: list[str]  # every source of the period, the most expensive first (the stack's order)
    rejections: list[tuple[str | None, int]]  # by rule (None: a rejection without one), most first
    slow_routes: list[RouteLatency] = field(default_factory=list)

    @property
    def unbilled_share(self) -> Decimal | None:
        """Unbilled requests as a share of the forwarded ones (billed or unbilled); None when there were none."""
        forwarded = self.total.billed + self.total.unbilled
        return Decimal(self.total.unbilled) / Decimal(forwarded) if forwarded else None


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile of an ascending list (a value that was measured, never interpolated)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _days(rows: Iterable[DaySourceRow]) -> list[DaySpend]:
    """Day totals from the (day, source) groups; a source's cost shows on a day it had billed rows."""
    costs: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        c = counts[r.day]
        c["requests"] += r.requests
        c["billed"] += r.billed
        c["unbilled"] += r.unbilled
        if r.billed:
            costs[r.day][r.source or "(none)"].append(r.cost)
    return [
        DaySpend(
            day,
            {s: exact_sum(v) for s, v in sorted(costs[day].items())},
            counts[day]["requests"],
            counts[day]["billed"],
            counts[day]["unbilled"],
        )
        for day in calendar(sorted(counts))
    ]


def calendar(days: list[str]) -> list[str]:
    """Every day from the first to the last of ``days`` (ascending "YYYY-MM-DD"), the quiet ones included,
    so a chart's time axis is even; ``days`` as they are when that would be more than ten years."""
    if not days:
        return []
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    if (last - first).days > 3660:
        return days
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _rejections(counts: Iterable[tuple[str | None, int]]) -> list[tuple[str | None, int]]:
    """Rejected rows by rule, the most first (ties by rule, a rejection without one last)."""
    return sorted(counts, key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))


def _slow_routes(latencies: dict[RouteKey, array[float]], limit: int) -> list[RouteLatency]:
    """The ``limit`` routes with the highest p95. Empties ``latencies``: each route's array is let go once
    ranked, so at most one route's values are ever held twice (the sorted copy). The order is total (a
    missing source or model after an empty one) since the arrays come in no particular order."""
    out = []
    while latencies:
        (source, model), values = latencies.popitem()
        ordered = sorted(values)
        del values
        out.append(RouteLatency(source, model, len(ordered), percentile(ordered, 50), percentile(ordered, 95)))
    out.sort(key=lambda x: (-x.p95_ms, -x.p50_ms, x.source or "", x.model or "", x.source is None, x.model is None))
    return out[:limit]


def gather(log: ActivityLog, since: datetime | None) -> Insights:
    """Read one period (``since`` None: all of it) of ``log`` for the report."""
    by_source = log.summary(by="source", since=since)
    by_model = log.summary(by="model", since=since)
    agents = build_tree(log.summary(by="agent", since=since))
    days = _days(log.day_sources(since=since))
    source_cost: dict[str, Decimal] = defaultdict(Decimal)
    for d in days:
        for s, c in d.by_source.items():
            source_cost[s] = exact_sum([source_cost[s], c])
    sources = sorted(source_cost, key=lambda s: (source_cost[s].copy_negate(), s))
    return Insights(
        since=since,
        total=merge_rows(None, by_source),
        agents=agents,
        models=by_model[:TOP_MODELS],
        model_count=len(by_model),
        days=days,
        sources=sources,
        rejections=_rejections(log.rejections(since=since)),
        slow_routes=_slow_routes(log.route_latencies(since=since), SLOW_ROUTES),
    )


def empty(since: datetime | None) -> Insights:
    """The insights of a log with nothing in the period (or no log yet)."""
    return Insights(since, merge_rows(None, []), [], [], 0, [], [], [])
