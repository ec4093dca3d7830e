"""The report's insights (:func:`gwctl.activity.insights.gather`) read by groups, not by rows.

``reference`` is how the report computed them before: every record of the period read with ``list`` and
counted one by one. The grouped queries and the streamed latencies must give the very same insights and
the very same page on a varied log (both backends; PostgreSQL when GWCTL_TEST_POSTGRES is set), and on a
log of 200,000 rows the reader's peak memory must stay far below what holding the records takes.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc
import uuid
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gwctl.activity import exact_sum, open_log, sqlite_dsn
from gwctl.activity.insights import DaySpend, Insights, RouteLatency, calendar, gather, percentile
from gwctl.activity.record import FORWARDED_KINDS, REJECTED_KINDS, ROUTE_KINDS, ActivityRecord
from gwctl.activity.report import render
from records import record

T0 = datetime(2025, 6, 28, 0, 0, tzinfo=timezone.utc)
NOW = datetime(2025, 7, 10, tzinfo=timezone.utc)


# -- the reference: the row-by-row computation the report used before -------------------------------------


def _ref_days(rows: list[ActivityRecord]) -> list[DaySpend]:
    costs: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        day = r.time.strftime("%Y-%m-%d")
        c = counts[day]
        c["requests"] += 1
        if r.cost is not None:
            costs[day][r.source or "(none)"].append(r.cost)
            c["billed"] += 1
        elif r.route_kind in FORWARDED_KINDS and not (r.route_kind == "error" or r.status >= 500):
            c["unbilled"] += 1
    return [
        DaySpend(d, {s: exact_sum(v) for s, v in sorted(costs[d].items())}, c["requests"], c["billed"], c["unbilled"])
        for d in calendar(sorted(counts))
        for c in [counts[d]]
    ]


def _ref_slow_routes(rows: list[ActivityRecord], limit: int) -> list[RouteLatency]:
    latencies: dict[tuple[str | None, str | None], list[float]] = defaultdict(list)
    for r in rows:
        if r.route_kind in FORWARDED_KINDS:
            latencies[(r.source, r.model)].append(r.latency_ms)
    out = []
    for (source, model), values in latencies.items():
        values.sort()
        out.append(RouteLatency(source, model, len(values), percentile(values, 50), percentile(values, 95)))
    out.sort(key=lambda x: (-x.p95_ms, -x.p50_ms, x.source or "", x.model or ""))
    return out[:limit]


def rowwise(log, since: datetime | None) -> dict:
    """The insights' day, source, rejection and latency fields as the report computed them from every record
    of the period."""
    rows = log.list(since=since, limit=None)
    days = _ref_days(rows)
    source_cost: dict[str, Decimal] = defaultdict(Decimal)
    for d in days:
        for s, c in d.by_source.items():
            source_cost[s] = exact_sum([source_cost[s], c])
    rejected = Counter(r.rule for r in rows if r.route_kind in REJECTED_KINDS or r.rule is not None)
    return dict(
        days=days,
        sources=sorted(source_cost, key=lambda s: (source_cost[s].copy_negate(), s)),
        rejections=sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")),
        slow_routes=_ref_slow_routes(rows, 10),
    )


def reference(log, since: datetime | None, grouped: Insights) -> Insights:
    """``grouped`` with those fields computed row by row (totals, agents, models come from the summary either
    way)."""
    return replace(grouped, **rowwise(log, since))


# -- a varied log -------------------------------------------------------------------------------------------

SOURCES = ["local", "cloud", "edge", "(none)", None]
MODELS = ["m/a", "m/b", "m/c", None]
RULES = [None, None, "max_output", "budget", "tools"]


def _cost(rng: random.Random) -> Decimal | None:
    """Exact costs of every scale: tiny, long (beyond a float's and the default context's digits), zero."""
    kind = rng.randrange(6)
    if kind == 0:
        return None
    if kind == 1:
        return Decimal(rng.randrange(1, 10**6)).scaleb(-rng.randrange(0, 34))
    if kind == 2:
        return Decimal(f"{rng.randrange(10**20)}.{rng.randrange(10**15):015d}")
    if kind == 3:
        return Decimal("0.000")
    return Decimal(rng.randrange(1, 10**5)).scaleb(-6)


def varied(n: int, seed: int) -> list[ActivityRecord]:
    """Rows over twelve UTC days, many near midnight, of every route kind, with and without cost and rule."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        near_midnight = rng.random() < 0.3
        offset = (
            timedelta(days=rng.randrange(12), hours=23, minutes=59, seconds=59, microseconds=rng.randrange(10**6))
            if near_midnight
            else timedelta(seconds=rng.uniform(0, 12 * 86400))
        )
        kind = rng.choice(ROUTE_KINDS)
        rule = rng.choice(RULES) if kind in REJECTED_KINDS or rng.random() < 0.05 else None
        rows.append(
            record(
                time=T0 + offset,
                route_kind=kind,
                source=rng.choice(SOURCES),
                model=rng.choice(MODELS),
                agent=rng.choice([None, "triage", "triage/sum", "research"]),
                status=rng.choice([200, 200, 200, 400, 429, 500, 502]),
                latency_ms=rng.choice([rng.uniform(0, 5000), float(rng.randrange(100)), 0.0]),
                cost=_cost(rng) if kind != "rejected" else None,
                rule=rule,
            )
        )
    return rows


@pytest.fixture(params=["sqlite", "postgres"])
def log_dsn(request, tmp_path):
    if request.param == "sqlite":
        yield sqlite_dsn(tmp_path / "activity.sqlite3")
        return
    base = os.environ.get("GWCTL_TEST_POSTGRES")
    if not base:
        pytest.skip("set GWCTL_TEST_POSTGRES (bash .ci/postgres.sh) for the PostgreSQL backend")
    import psycopg

    from pgserver import with_search_path

    schema = f"gwctl_i_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_search_path(base, schema)
        finally:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grouped_insights_equal_the_row_by_row_ones(log_dsn, seed):
    log = open_log(log_dsn)
    try:
        log.write_many(varied(3000, seed))
        for since in (NOW, T0 + timedelta(days=5, hours=7), None):  # the last: the whole log
            grouped = gather(log, since)
            rowwise = reference(log, since, grouped)
            assert grouped == rowwise
            # Decimal equality ignores trailing zeros; the page shows the exact figures, so compare it too
            page = render(grouped, since_text=None, log_name="log", now=NOW)
            assert page == render(rowwise, since_text=None, log_name="log", now=NOW)
    finally:
        log.close()
    assert grouped.days and grouped.rejections and grouped.slow_routes


def test_grouped_day_costs_are_exact_on_both_sides_of_midnight(log_dsn):
    tiny, long = Decimal("3E-31"), Decimal("123456789012345678901234567890.000000000000000000000001")
    midnight = datetime(2025, 7, 1, tzinfo=timezone.utc)
    rows = [
        record(time=midnight - timedelta(microseconds=1), source="cloud", cost=tiny),
        record(time=midnight - timedelta(microseconds=1), source="cloud", cost=long),
        record(time=midnight, source="cloud", cost=tiny),
        record(time=midnight, source=None, cost=Decimal("1")),
        record(time=midnight, source="(none)", cost=Decimal("0.5")),
        record(time=midnight, source="edge", cost=None, route_kind="passthrough"),
    ]
    log = open_log(log_dsn)
    try:
        log.write_many(rows)
        days = gather(log, None).days
    finally:
        log.close()
    assert [(d.day, d.by_source, d.requests, d.billed, d.unbilled) for d in days] == [
        ("2025-06-30", {"cloud": exact_sum([tiny, long])}, 2, 2, 0),
        ("2025-07-01", {"(none)": Decimal("1.5"), "cloud": tiny}, 4, 3, 1),
    ]
    assert str(days[0].by_source["cloud"]) == "123456789012345678901234567890.0000000000000000000000010000003"


# -- memory -------------------------------------------------------------------------------------------------


def _peak(fn):
    """(result, peak traced bytes, seconds) of one call."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1], time.perf_counter() - t
    finally:
        tracemalloc.stop()


def _busy_month(tmp_path, rows: int) -> str:
    """``rows`` rows over 30 days through the normal write path: 8 sources x 5 models, 90% forwarded."""
    dsn = sqlite_dsn(tmp_path / "busy.sqlite3")
    rng = random.Random(7)
    log = open_log(dsn)
    try:
        for start in range(0, rows, 20_000):
            log.write_many(
                [
                    record(
                        time=T0 + timedelta(seconds=rng.uniform(0, 30 * 86400)),
                        source=f"s{rng.randrange(8)}",
                        model=f"m/{rng.randrange(5)}",
                        route_kind="managed" if rng.random() < 0.9 else "rejected",
                        rule=None if rng.random() < 0.9 else "max_output",
                        latency_ms=rng.uniform(1, 3000),
                        cost=Decimal(rng.randrange(1, 10**6)).scaleb(-8),
                    )
                    for _ in range(min(20_000, rows - start))
                ]
            )
    finally:
        log.close()
    return dsn


@pytest.mark.parametrize("rows", [20_000, pytest.param(200_000, marks=pytest.mark.long)])
def test_gather_memory_is_bounded_by_groups_not_rows(tmp_path, rows):
    dsn = _busy_month(tmp_path, rows)
    log = open_log(dsn)
    try:
        grouped, new_peak, new_s = _peak(lambda: gather(log, None))
        fields, old_peak, old_s = _peak(lambda: rowwise(log, None))
    finally:
        log.close()
    assert grouped == replace(grouped, **fields) and grouped.total.requests == rows
    print(f"\ngather: {new_peak / 2**20:.1f} MiB peak, {new_s:.1f} s; rows: {old_peak / 2**20:.1f} MiB, {old_s:.1f} s")
    assert new_peak < old_peak / 5
    # a few bytes a row, not a record's kilobyte or so: the latencies (8 bytes a forwarded row), one route's
    # values sorted at a time, and one batch of the stream (the MiB)
    assert new_peak < 32 * rows + 2**20
