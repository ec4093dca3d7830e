"""Activity log: the shared contract (run here on SQLite, and on PostgreSQL by
test_activity_postgres.py, which imports every ``test_contract_*`` below),
plus the pure helpers, the SQLite specifics and the log writer's failure
policy (LogSink).

Contract tests get their log from two fixtures each backend file defines:
``new_dsn`` (a factory for a fresh, empty log) and ``dsn`` (one fresh log),
and read the migration bookkeeping through ``read_versions``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gwctl.activity import (
    ROUTE_KINDS,
    SUMMARY_BY,
    USAGE_KINDS,
    ActivityError,
    ActivityRecord,
    SummaryRow,
    exact_sum,
    open_log,
    parse_dsn,
    parse_duration,
    record_to_json,
    redact_dsn,
    resolve_dsn,
    sqlite_dsn,
    summary_to_json,
)
from gwctl.activity.migrations import LATEST, MIGRATIONS, SCHEMA_MIGRATIONS_SQLITE
from gwctl.activity.query import clean_text, order_summary
from gwctl.activity.record import Attempt, format_utc, parse_utc
from gwctl.activity.writer import LogSink
from gwctl.errors import Exit
from records import record

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)

DB_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def rec(**kw) -> ActivityRecord:
    """A valid record of agent ``triage`` at T0 with usage and its cost; any field can be overridden."""
    base = dict(
        time=T0,
        agent="triage",
        latency_ms=12.5,
        usage={"input_tokens": 10, "output_tokens": 5},
        cost=Decimal("0.000015"),
    )
    return record(**{**base, **kw})


# ---------------------------------------------------------------------------
# fixtures (SQLite flavour; test_activity_postgres.py defines its own)


@pytest.fixture
def new_dsn(tmp_path):
    n = itertools.count()

    def make() -> str:
        return sqlite_dsn(tmp_path / f"log{next(n)}" / "activity.sqlite3")

    return make


@pytest.fixture
def dsn(new_dsn):
    return new_dsn()


@pytest.fixture
def read_versions():
    def read(dsn: str) -> list[int]:
        path = parse_dsn(dsn).path
        with sqlite3.connect(str(path)) as conn:
            return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]

    return read


BEFORE_ATTEMPTS = 2
"""The schema version before the activity table's ``attempts`` column."""
BEFORE_SHAPE = 3
"""The schema version before the ``shape``, ``original_cost`` and ``repriced_at`` columns (the last ones)."""
_FIRST_NEW_COLUMN = {BEFORE_ATTEMPTS: "attempts", BEFORE_SHAPE: "shape"}


def old_rows(records, dialect, row, version: int = BEFORE_ATTEMPTS) -> tuple[str, list[tuple]]:
    """The insert of ``records`` into a log of schema ``version``: the backend's ``row()`` without the columns
    later versions added (the records leave them empty)."""
    from gwctl.activity import query as q

    cut = q.COLUMNS.index(_FIRST_NEW_COLUMN[version])
    later = q.COLUMNS[cut:]
    assert all(getattr(r, c) is None for r in records for c in later)
    cols = q.COLUMNS[:cut]
    sql = f"INSERT INTO activity ({', '.join(cols)}) VALUES ({', '.join([dialect.placeholder] * len(cols))})"
    return sql, [row(q.record_fields(r))[:cut] for r in records]


@pytest.fixture
def make_old_log():
    """A log made by an older gwctl: the migrations up to ``version`` applied, and ``records`` in it."""

    def make(dsn: str, version: int, records) -> None:
        from gwctl.activity.sqlite import DIALECT, SqliteLog

        path = parse_dsn(dsn).path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(str(path))) as conn, conn:
            conn.execute(SCHEMA_MIGRATIONS_SQLITE)
            for m in MIGRATIONS[:version]:
                for stmt in m.sqlite:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'then')", (m.version,))
            conn.executemany(*old_rows(records, DIALECT, SqliteLog.row, version))

    return make


# ---------------------------------------------------------------------------
# an independent oracle for summaries


def expected_summary(records, by):
    def key_of(r):
        return {
            "source": r.source,
            "model": r.model,
            "agent": r.agent,
            "key": r.key_name,
            "day": r.time.astimezone(timezone.utc).strftime("%Y-%m-%d"),
        }[by]

    out = {}
    for r in records:
        g = out.setdefault(
            key_of(r),
            dict(
                requests=0,
                usage={k: 0 for k in USAGE_KINDS},
                cost=Fraction(0),
                billed=0,
                unbilled=0,
                rejected=0,
                errors=0,
            ),
        )
        g["requests"] += 1
        for k, v in r.usage.items():
            g["usage"][k] += v
        is_error = r.route_kind == "error" or r.status >= 500
        if r.cost is not None:
            g["billed"] += 1
            g["cost"] += Fraction(r.cost)
        elif r.route_kind in ("passthrough", "managed") and not is_error:
            g["unbilled"] += 1
        if r.route_kind in ("rejected", "not_found") or r.rule is not None:
            g["rejected"] += 1
        if is_error:
            g["errors"] += 1
    return out


def assert_summary_matches(rows, records, by):
    want = expected_summary(records, by)
    assert sorted((r.key for r in rows), key=str) == sorted(want, key=str)
    for row in rows:
        w = want[row.key]
        assert isinstance(row.cost, Decimal)
        assert Fraction(row.cost) == w["cost"]
        assert (row.requests, row.billed, row.unbilled, row.rejected, row.errors) == (
            w["requests"],
            w["billed"],
            w["unbilled"],
            w["rejected"],
            w["errors"],
        )
        assert row.usage == w["usage"]


def sample_records():
    """A hand-made mix covering every route kind and the None group values."""
    return [
        rec(
            time=T0,
            source="local",
            model="local/llama",
            agent="triage",
            key_name="ci",
            cost=Decimal("0.1"),
            usage={"input_tokens": 100, "output_tokens": 20},
        ),
        rec(
            time=T0 + timedelta(minutes=1),
            source="local",
            model="local/llama",
            agent="triage/summarizer",
            key_name="ci",
            cost=Decimal("0.2"),
            usage={"input_tokens": 1, "cache_read_tokens": 7},
        ),
        rec(
            time=T0 + timedelta(minutes=2),
            source="local",
            model="fast",
            agent="triage/summarizer",
            key_name="ops",
            cost=None,
            route_kind="passthrough",
            stream=True,
            usage={"output_tokens": 3, "reasoning_tokens": 2},
        ),
        rec(
            time=T0 + timedelta(hours=13),
            source="remote",
            model="remote/gpt",
            agent=None,
            key_name=None,
            cost=Decimal("1E-7"),
            usage={"web_searches": 1, "images": 2, "audio_input_tokens": 9},
        ),
        rec(
            time=T0 + timedelta(hours=13, minutes=1),
            source="remote",
            model="remote/gpt",
            agent=None,
            key_name="ops",
            route_kind="rejected",
            status=400,
            rule="max_output",
            cost=None,
            usage={},
            error="max_tokens 9000 exceeds max output 4096",
        ),
        rec(
            time=T0 + timedelta(days=1),
            source=None,
            model="nope/x",
            agent="triage",
            key_name="ci",
            route_kind="not_found",
            status=404,
            cost=None,
            usage={},
            upstream_model=None,
            error="unknown model",
        ),
        rec(
            time=T0 + timedelta(days=1, minutes=5),
            source="local",
            model="local/llama",
            agent="triage",
            key_name="ci",
            route_kind="error",
            status=502,
            cost=None,
            usage={},
            error="upstream unreachable",
        ),
        rec(
            time=T0 + timedelta(days=1, minutes=6),
            source="local",
            model="local/llama",
            agent="triage",
            key_name="ci",
            route_kind="managed",
            status=503,
            cost=None,
            usage={"input_tokens": 4},
        ),
        rec(
            time=T0 + timedelta(days=1, minutes=7),
            source="local",
            model="local/llama",
            agent="triage",
            key_name="ci",
            cost=Decimal("0.30"),
            usage={"cache_write_5m_tokens": 11, "cache_write_1h_tokens": 12, "cached_input_tokens": 13},
        ),
    ]


# ---------------------------------------------------------------------------
# contract: runs on every backend


def test_contract_round_trip_newest_first(dsn):
    records = sample_records()
    # a non-UTC time comes back as the same instant in UTC
    plus2 = timezone(timedelta(hours=2))
    records.append(
        rec(
            time=datetime(2025, 3, 3, 1, 0, 0, 123456, tzinfo=plus2),
            request_id="tz",
            error="naïve? no: ünïcödé ✓",
            agent="a/b/c",
        )
    )
    with open_log(dsn) as log:
        log.write_many(records[:4])
        log.write_many(records[4:])
        log.write_many([])
        got = log.list(since=None, limit=None)
    want = sorted(records, key=lambda r: r.time, reverse=True)
    assert got == want
    tz = next(r for r in got if r.request_id == "tz")
    assert tz.time.tzinfo == timezone.utc and tz.time == datetime(2025, 3, 2, 23, 0, 0, 123456, tzinfo=timezone.utc)
    assert all(r.time.tzinfo == timezone.utc for r in got)


def test_contract_same_time_keeps_insertion_order_reversed(dsn):
    records = [rec(time=T0, request_id=f"same-{i}") for i in range(5)]
    with open_log(dsn) as log:
        log.write_many(records)
        got = log.list(limit=None)
    assert [r.request_id for r in got] == [f"same-{i}" for i in reversed(range(5))]


def test_contract_exact_cost_sums(dsn):
    costs = (
        [Decimal("0.1"), Decimal("0.2")]
        + [Decimal("1E-7")] * 10
        + [
            Decimal("123456789012345678901234567890.1"),
            Decimal("0.000000000000000000001"),
        ]
    )
    with open_log(dsn) as log:
        log.write_many([rec(cost=c, source="s") for c in costs])
        (row,) = log.summary(by="source", since=None)
        first = log.list(limit=None)
    assert row.cost == Decimal("123456789012345678901234567890.400001000000000000001")
    assert row.billed == len(costs) and row.unbilled == 0
    # each stored cost is still exactly what was written
    assert sorted(r.cost for r in first) == sorted(costs)


@DB_SETTINGS
@given(
    costs=st.lists(
        st.one_of(
            st.none(),
            st.decimals(min_value=Decimal("0"), max_value=Decimal("1000"), places=12, allow_nan=False),
            st.builds(lambda m, e: Decimal(m).scaleb(-e), st.integers(0, 10**9), st.integers(0, 15)),
        ),
        max_size=20,
    )
)
def test_contract_exact_cost_sums_property(new_dsn, costs):
    with open_log(new_dsn()) as log:
        log.write_many([rec(cost=c) for c in costs])
        rows = log.summary(by="model")
    billed = [c for c in costs if c is not None]
    if not costs:
        assert rows == []
        return
    (row,) = rows
    assert Fraction(row.cost) == sum((Fraction(c) for c in billed), Fraction(0))
    assert row.billed == len(billed)
    assert row.unbilled == len(costs) - len(billed)


def test_contract_unbilled_stays_none(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(cost=None, request_id="u"), rec(cost=Decimal("0"), request_id="z")])
        got = {r.request_id: r for r in log.list()}
        (row,) = log.summary(by="source")
    assert got["u"].cost is None  # unbilled is not zero
    assert got["z"].cost == 0 and got["z"].cost is not None
    assert (row.billed, row.unbilled, row.cost) == (1, 1, Decimal(0))


@pytest.mark.parametrize("by", SUMMARY_BY)
def test_contract_summary_by_each_group(dsn, by):
    records = sample_records()
    with open_log(dsn) as log:
        log.write_many(records)
        rows = log.summary(by=by, since=None)
    assert_summary_matches(rows, records, by)
    assert rows == order_summary(rows, by)


def test_contract_summary_values(dsn):
    with open_log(dsn) as log:
        log.write_many(sample_records())
        by_agent = {r.key: r for r in log.summary(by="agent")}
        by_day = log.summary(by="day")
        by_source = log.summary(by="source")
    # root and subagent are separate groups; no agent is its own (None) group
    assert set(by_agent) == {"triage", "triage/summarizer", None}
    assert by_agent["triage/summarizer"].cost == Decimal("0.2")
    assert by_agent["triage/summarizer"].unbilled == 1
    assert by_agent["triage"].errors == 2 and by_agent["triage"].rejected == 1
    assert by_agent[None].rejected == 1 and by_agent[None].billed == 1
    assert [r.key for r in by_day] == ["2025-03-01", "2025-03-02"]  # UTC days, oldest first
    assert by_day[0].requests == 3 and by_day[1].requests == 6  # 12:00 + 13 h is the next UTC day
    # most expensive first
    assert [r.key for r in by_source] == ["local", "remote", None]
    assert by_source[0].cost == Decimal("0.6")
    assert by_source[0].usage["input_tokens"] == 105


def test_contract_filters_and_limit(dsn):
    records = sample_records()
    with open_log(dsn) as log:
        log.write_many(records)

        def ids(**kw):
            return [r.request_id for r in log.list(limit=None, **kw)]

        def want(pred):
            return [r.request_id for r in sorted(records, key=lambda r: r.time, reverse=True) if pred(r)]

        assert ids(source="local") == want(lambda r: r.source == "local")
        assert ids(model="remote/gpt") == want(lambda r: r.model == "remote/gpt")
        assert ids(agent="triage") == want(lambda r: r.agent == "triage")  # exact: not its subagents
        assert ids(agent="triage/summarizer") == want(lambda r: r.agent == "triage/summarizer")
        assert ids(key="ops") == want(lambda r: r.key_name == "ops")
        since = T0 + timedelta(hours=13)
        assert ids(since=since) == want(lambda r: r.time >= since)
        assert ids(since=since, source="local", agent="triage") == want(
            lambda r: r.time >= since and r.source == "local" and r.agent == "triage"
        )
        assert ids(source="nobody") == []
        # a since in another time zone means the same instant
        assert ids(since=since.astimezone(timezone(timedelta(hours=-5)))) == ids(since=since)
        assert len(log.list(limit=3)) == 3
        assert [r.request_id for r in log.list(limit=2)] == want(lambda r: True)[:2]
        assert len(log.list()) == len(records)  # default limit 100
        rows = log.summary(by="model", since=since, source="remote")
        assert_summary_matches(rows, [r for r in records if r.time >= since and r.source == "remote"], "model")
        with pytest.raises(ValueError):
            log.list(limit=0)
        with pytest.raises(ValueError):
            log.list(since=datetime(2025, 1, 1))  # naive
        with pytest.raises(ValueError, match="summarise by"):
            log.summary(by="colour")


@DB_SETTINGS
@given(
    records=st.lists(
        st.builds(
            lambda minutes, src, model, agent, key, kind, status, cost, n_in, n_out: rec(
                time=T0 + timedelta(minutes=minutes),
                source=src,
                model=model,
                agent=agent,
                key_name=key,
                route_kind=kind,
                status=status,
                cost=cost,
                rule="max_output" if kind == "rejected" else None,
                usage={"input_tokens": n_in, "output_tokens": n_out},
            ),
            st.integers(0, 60 * 24 * 3),
            st.sampled_from(["local", "remote", None]),
            st.sampled_from(["local/llama", "alias", None]),
            st.sampled_from(["triage", "triage/summarizer", "other", None]),
            st.sampled_from(["ci", "ops", None]),
            st.sampled_from(ROUTE_KINDS),
            st.sampled_from([200, 400, 404, 429, 500, 502]),
            st.one_of(st.none(), st.decimals(min_value=0, max_value=10, places=9, allow_nan=False)),
            st.integers(0, 10**6),
            st.integers(0, 10**6),
        ),
        max_size=25,
    ),
    by=st.sampled_from(SUMMARY_BY),
    since_min=st.one_of(st.none(), st.integers(0, 60 * 24 * 3)),
)
def test_contract_summary_matches_oracle(new_dsn, records, by, since_min):
    since = None if since_min is None else T0 + timedelta(minutes=since_min)
    with open_log(new_dsn()) as log:
        log.write_many(records)
        rows = log.summary(by=by, since=since)
        listed = log.list(since=since, limit=None)
    kept = [r for r in records if since is None or r.time >= since]
    assert_summary_matches(rows, kept, by)
    assert sorted(r.request_id for r in listed) == sorted(r.request_id for r in kept)


def test_contract_odd_strings_are_stored(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(request_id="nul", error="bad\x00byte", model="m\ud800x")])
        (got,) = log.list()
    assert got.error == "bad\ufffdbyte"
    assert got.model == "m\ufffdx"


def test_contract_migrations_idempotent(dsn, read_versions):
    with open_log(dsn) as log:
        log.write_many([rec(request_id="kept")])
    for _ in range(2):
        with open_log(dsn) as log:
            assert [r.request_id for r in log.list()] == ["kept"]
    assert read_versions(dsn) == [m.version for m in MIGRATIONS]


def test_contract_concurrent_opens_threads(new_dsn, read_versions):
    dsn = new_dsn()
    n = 8
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            with open_log(dsn) as log:
                log.write_many([rec(request_id=f"t{i}")])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert read_versions(dsn) == [m.version for m in MIGRATIONS]
    with open_log(dsn) as log:
        assert sorted(r.request_id for r in log.list()) == sorted(f"t{i}" for i in range(n))


def test_contract_concurrent_opens_processes(new_dsn, read_versions):
    dsn = new_dsn()
    code = (
        "import sys, time\n"
        "from gwctl.activity import open_log\n"
        "t = float(sys.argv[2])\n"
        "while time.time() < t: time.sleep(0.005)\n"
        "open_log(sys.argv[1]).close()\n"
    )
    start_at = time.time() + 1.0  # let every interpreter import first, then open together
    procs = [
        subprocess.Popen([sys.executable, "-c", code, dsn, str(start_at)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert read_versions(dsn) == [m.version for m in MIGRATIONS]


def wire_row(i: int, entry=None, counts=None, attempts=None, shape=None) -> tuple:
    """What the proxy submits to its writer process for one request (a gwctl.activity.entry.LogEntry)."""
    from gwctl.activity.entry import LogEntry
    from gwctl.core.pricing import Usage

    counts = counts if counts is not None else Usage(input_tokens=10, output_tokens=5).counts()
    return LogEntry(
        (T0 + timedelta(seconds=i)).timestamp(),
        f"w{i}",
        "ci",
        "triage",
        "managed",
        "local",
        "local/llama",
        "llama",
        "/v1/chat/completions",
        200,
        12.5,
        counts,
        entry,
        "local/llama",
        None,
        None,
        False,
        attempts,
        shape,
    )


def _run_writer(dsn, rows, **kw) -> tuple[bool, object]:  # (closed cleanly, the ChildWriter)
    import asyncio

    from gwctl.activity.child import ChildWriter

    async def main():
        writer = ChildWriter(dsn, **kw)
        await writer.start()
        for r in rows:
            writer.submit(r)
        return await writer.close(30), writer

    return asyncio.run(main())


def test_contract_writer_process_writes_every_row_exactly(dsn):
    """The proxy's writer process, on this backend: every row lands, priced exactly in the child."""
    from types import MappingProxyType

    from gwctl.core.config import CatalogEntry

    entry = CatalogEntry(
        "local", "llama", prices=MappingProxyType({"input": Decimal("1e-6"), "output": Decimal("1e-6")})
    )
    ok, writer = _run_writer(dsn, [wire_row(i, entry) for i in range(1000)] + [wire_row(1000)], batch_rows=64)
    assert ok and writer.submitted == 1001 and writer.dropped == 0
    with open_log(dsn) as log:
        rows = log.list(limit=None)
        assert len(rows) == 1001
        assert {r.cost for r in rows if r.request_id != "w1000"} == {Decimal("0.000015")}
        assert next(r for r in rows if r.request_id == "w1000").cost is None  # no entry: unbilled, not zero
        assert next(r for r in rows if r.request_id == "w7").time == T0 + timedelta(seconds=7)
        assert log.summary(by="source")[0].cost == Decimal("0.000015") * 1000


def test_contract_writer_process_flushes_on_interval_and_size(dsn):
    import asyncio

    from gwctl.activity.child import ChildWriter

    async def main():
        by_time = ChildWriter(dsn, batch_rows=1000, flush_interval=0.05)
        by_size = ChildWriter(dsn, batch_rows=5, flush_interval=60.0)
        await by_time.start()
        await by_size.start()
        try:
            for i in range(3):
                by_time.submit(wire_row(i))
            for i in range(3, 8):
                by_size.submit(wire_row(i))
            deadline = time.monotonic() + 10
            seen: set[str] = set()
            with open_log(dsn) as log:
                while time.monotonic() < deadline and len(seen) < 8:
                    seen = {r.request_id for r in log.list(limit=None)}
                    await asyncio.sleep(0.02)
            return seen  # both writers are still open: what was seen came by time and by size
        finally:
            assert await by_time.close(10) and await by_size.close(10)

    assert asyncio.run(main()) == {f"w{i}" for i in range(8)}


ATTEMPTS = [("a/x", 503, 12.3, "upstream answered 503"), ("b/y", None, 3001.4, "timed out"), ("c/z", 200, 40.0, None)]
"""A failover request's attempts as the proxy records them (gwctl.proxy.flow.Flow.attempts)."""


def test_contract_attempts_round_trip(dsn):
    tried = rec(attempts=ATTEMPTS)
    plain = rec(time=T0 + timedelta(seconds=1))
    odd = rec(
        time=T0 + timedelta(seconds=2),
        attempts=[{"target": "s/m\x00", "status": 0, "latency_ms": 0, "error": "x\ud800 ✓"}],
    )
    with open_log(dsn) as log:
        log.write_many([tried, plain, odd])
        got = log.list()
    assert [r.request_id for r in got] == [odd.request_id, plain.request_id, tried.request_id]
    assert got[2] == tried
    assert got[2].attempts == (
        Attempt("a/x", 503, 12.3, "upstream answered 503"),
        Attempt("b/y", None, 3001.4, "timed out"),
        Attempt("c/z", 200, 40.0, None),
    )
    assert got[1].attempts is None
    assert got[0].attempts == (Attempt("s/m\ufffd", 0, 0.0, "x\ufffd ✓"),)  # cleaned like the text columns


def test_contract_writer_process_carries_attempts(dsn):
    """The proxy's wire row carries the attempts as it has them; the writer process encodes them."""
    ok, _writer = _run_writer(dsn, [wire_row(1, attempts=[list(a) for a in ATTEMPTS]), wire_row(2)])
    assert ok
    with open_log(dsn) as log:
        got = {r.request_id: r.attempts for r in log.list()}
    assert got == {"w1": tuple(Attempt(*a) for a in ATTEMPTS), "w2": None}


def test_contract_old_log_gains_attempts_null_for_old_rows(dsn, make_old_log, read_versions):
    old = [rec(request_id="old-1"), rec(request_id="old-2", time=T0 + timedelta(seconds=1), cost=None, status=502)]
    make_old_log(dsn, BEFORE_ATTEMPTS, old)
    assert read_versions(dsn) == list(range(1, BEFORE_ATTEMPTS + 1))
    with open_log(dsn) as log:
        log.write_many([rec(request_id="new", time=T0 + timedelta(seconds=2), attempts=ATTEMPTS)])
        got = {r.request_id: r for r in log.list()}
    assert read_versions(dsn) == [m.version for m in MIGRATIONS]
    assert got["old-1"] == old[0] and got["old-2"] == old[1]  # every old value kept
    assert got["old-1"].attempts is None and got["old-2"].attempts is None
    assert got["new"].attempts == tuple(Attempt(*a) for a in ATTEMPTS)


def test_contract_cli_list_shows_attempts(dsn):
    from conftest import invoke, run_cli

    with open_log(dsn) as log:
        log.write_many([rec(request_id="tried", attempts=ATTEMPTS, time=T0 - timedelta(1)), rec(request_id="plain")])
    r = run_cli("activity", "list", "--json", "--activity", dsn)
    assert r.code == 0, r.err
    by_id = {row["request_id"]: row for row in r.json()}
    assert by_id["tried"]["attempts"] == [
        {"target": "a/x", "status": 503, "latency_ms": 12.3, "error": "upstream answered 503"},
        {"target": "b/y", "status": None, "latency_ms": 3001.4, "error": "timed out"},
        {"target": "c/z", "status": 200, "latency_ms": 40.0, "error": None},
    ]
    assert by_id["plain"]["attempts"] is None
    lines = run_cli("activity", "list", "--activity", dsn).out.splitlines()
    assert [line.split("\t")[-1] for line in lines] == ["", "a/x 503 12ms -> b/y - 3001ms -> c/z 200 40ms"]
    assert all(len(line.split("\t")) == 14 for line in lines)  # the ATTEMPTS column, last
    table = invoke(["activity", "list", "--activity", dsn], force_tables=True).out
    assert "ATTEMPTS" in table and "a/x 503 12ms -> b/y - 3001ms" in table  # (the cell may wrap)
    # without a failover request listed, the table is as it was: no ATTEMPTS column
    only_plain = run_cli("activity", "list", "--limit", "1", "--activity", dsn).out.splitlines()
    assert len(only_plain) == 1 and len(only_plain[0].split("\t")) == 13
    assert "ATTEMPTS" not in invoke(["activity", "list", "--limit", "1", "--activity", dsn], force_tables=True).out


# ---------------------------------------------------------------------------
# pure helpers


@pytest.mark.parametrize(
    "text,want",
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 1H ", timedelta(hours=1)),
    ],
)
def test_parse_duration(text, want):
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "h", "10", "1.5h", "-3d", "0m", "3 days", "7y", "1h30m", "∞d", "1e3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@settings(max_examples=200)
@given(n=st.integers(1, 10**6), unit=st.sampled_from("smhdw"))
def test_parse_duration_property(n, unit):
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}").total_seconds() == n * seconds


@settings(max_examples=200)
@given(
    st.lists(
        st.builds(lambda m, e: Decimal(m).scaleb(e), st.integers(-(10**30), 10**30), st.integers(-40, 40)),
        max_size=30,
    )
)
def test_exact_sum_matches_fractions(values):
    total = exact_sum(values)
    assert Fraction(total) == sum((Fraction(v) for v in values), Fraction(0))


@given(
    st.datetimes(
        timezones=st.sampled_from(
            [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        )
    ).filter(
        lambda t: (
            datetime.min.replace(tzinfo=timezone.utc) + timedelta(days=1)
            < t
            < datetime.max.replace(tzinfo=timezone.utc) - timedelta(days=1)
        )
    )
)
def test_format_utc_is_fixed_width_utc_and_round_trips(t):
    text = format_utc(t)
    u = t.astimezone(timezone.utc)
    assert text == (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}Z"
    )
    assert parse_utc(text) == t


def test_format_utc_refuses_naive_time():
    with pytest.raises(ValueError):
        format_utc(datetime(2024, 5, 1))


def test_exact_sum_beyond_default_precision():
    # the default decimal context keeps 28 digits and would round this
    assert exact_sum([Decimal("1E+30"), Decimal("1E-30")]) == Decimal("1" + "0" * 30 + "." + "0" * 29 + "1")


def test_resolve_dsn_precedence(tmp_path):
    default = tmp_path / "data" / "activity.sqlite3"
    env = {"GWCTL_ACTIVITY": "postgresql://u@h/db"}
    assert resolve_dsn("sqlite:///x/y.db", env, default) == "sqlite:///x/y.db"
    assert resolve_dsn(None, env, default) == "postgresql://u@h/db"
    assert resolve_dsn(None, {}, default) == f"sqlite://{default}"
    assert resolve_dsn(None, {"GWCTL_ACTIVITY": "  "}, default) == f"sqlite://{default}"
    with pytest.raises(ActivityError) as e:
        resolve_dsn("", env, default)
    assert e.value.code == Exit.USAGE and "--activity" in e.value.message
    with pytest.raises(ActivityError, match="GWCTL_ACTIVITY"):
        resolve_dsn(None, {"GWCTL_ACTIVITY": "mysql://h/db"}, default)


def test_parse_dsn_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_dsn("sqlite:///abs/a.db").path == Path("/abs/a.db")
    assert parse_dsn("sqlite:/abs/a.db").path == Path("/abs/a.db")
    assert parse_dsn("sqlite:rel/a.db").path == tmp_path / "rel" / "a.db"
    assert parse_dsn("SQLite:rel/../b.db").path == tmp_path / "b.db"
    assert parse_dsn("plain.db").path == tmp_path / "plain.db"
    assert parse_dsn("/abs/plain.db").path == Path("/abs/plain.db")
    assert parse_dsn("~/x.db").path == tmp_path / "home" / "x.db"
    assert parse_dsn("sqlite:~/x.db").path == tmp_path / "home" / "x.db"
    pg = parse_dsn("postgresql://u:p@h:5432/db?sslmode=require")
    assert pg.kind == "postgres" and pg.conninfo == "postgresql://u:p@h:5432/db?sslmode=require"
    assert parse_dsn("postgres://h/db").kind == "postgres"
    assert resolve_dsn("sqlite:rel/a.db", {}, tmp_path) == f"sqlite://{tmp_path}/rel/a.db"
    for bad in [
        "",
        "   ",
        "sqlite:",
        "sqlite://host/a.db",
        "sqlite://",
        ":memory:",
        "sqlite::memory:",
        "mysql://h/db",
        "file:///x.db",
        "redis://x",
    ]:
        with pytest.raises(ActivityError) as e:
            parse_dsn(bad)
        assert e.value.code == Exit.USAGE and e.value.hint


def test_redact_dsn():
    assert redact_dsn("postgresql://alice:s3cret@db:5432/x") == "postgresql://alice:***@db:5432/x"
    assert "s3cret" not in redact_dsn("postgres://h/x?password=s3cret&sslmode=require")
    assert redact_dsn("postgresql://alice@db/x") == "postgresql://alice@db/x"
    assert redact_dsn("sqlite:///a:b@c") == "sqlite:///a:b@c"


def test_bad_dsn_error_does_not_show_password():
    with pytest.raises(ActivityError) as e:
        parse_dsn("mysql://root:hunter2@h/db")
    assert "hunter2" not in e.value.message


def test_record_normalises():
    plus1 = timezone(timedelta(hours=1))
    r = rec(
        time=datetime(2025, 1, 1, 1, 0, tzinfo=plus1),
        usage={"output_tokens": 3, "input_tokens": 0, "images": 1},
        cost=2,
        latency_ms=7,
    )
    assert r.time == datetime(2025, 1, 1, 0, 0, tzinfo=timezone.utc) and r.time.tzinfo is timezone.utc
    assert list(r.usage.items()) == [("output_tokens", 3), ("images", 1)]  # canonical order, zeros dropped
    assert r.cost == Decimal(2) and isinstance(r.cost, Decimal)
    assert isinstance(r.latency_ms, float)
    assert r == rec(
        time=r.time,
        request_id=r.request_id,
        usage={"images": 1, "output_tokens": 3},
        cost=Decimal("2.0"),
        latency_ms=7.0,
    )
    hash(r)  # usable in sets despite the usage dict
    assert r.forwarded and not rec(route_kind="rejected").forwarded


@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"time": datetime(2025, 1, 1)}, ValueError),
        ({"time": "2025-01-01"}, TypeError),
        ({"cost": 0.1}, TypeError),
        ({"cost": True}, TypeError),
        ({"cost": Decimal("NaN")}, ValueError),
        ({"cost": Decimal("Infinity")}, ValueError),
        ({"usage": {"tokens": 1}}, ValueError),
        ({"usage": {"input_tokens": -1}}, ValueError),
        ({"usage": {"input_tokens": 1.0}}, TypeError),
        ({"route_kind": "forwarded"}, ValueError),
        ({"status": "200"}, TypeError),
        ({"latency_ms": float("nan")}, ValueError),
        ({"latency_ms": -1}, ValueError),
        ({"stream": 1}, TypeError),
        ({"request_id": None}, TypeError),
        ({"agent": 3}, TypeError),
        ({"attempts": "a/x"}, TypeError),
        ({"attempts": [("a/x", 200, 1.0)]}, TypeError),
        ({"attempts": [(None, 200, 1.0, None)]}, TypeError),
        ({"attempts": [("a/x", "503", 1.0, None)]}, TypeError),
        ({"attempts": [("a/x", 200, float("inf"), None)]}, ValueError),
        ({"attempts": [("a/x", 200, -1, None)]}, ValueError),
        ({"attempts": [{"target": "a/x", "status": 200, "latency_ms": 1, "error": None, "extra": 1}]}, TypeError),
    ],
)
def test_record_rejects(kw, exc):
    with pytest.raises(exc):
        rec(**kw)


def test_json_helpers():
    r = rec(cost=Decimal("1E-7"), time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    j = record_to_json(r)
    assert j["cost"] == "0.0000001" and j["time"] == "2025-01-02T03:04:05.000000Z"
    assert record_to_json(rec(cost=None))["cost"] is None
    row = SummaryRow(
        key=None,
        requests=1,
        usage={k: 0 for k in USAGE_KINDS},
        cost=Decimal("1E-9"),
        billed=1,
        unbilled=0,
        rejected=0,
        errors=0,
    )
    assert summary_to_json(row)["cost"] == "0.000000001"
    import json

    json.dumps(j), json.dumps(summary_to_json(row))


def test_clean_text():
    assert clean_text(None) is None
    assert clean_text("plain ✓") == "plain ✓"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\udc80y") == "x\ufffdy"


def test_order_summary():
    def row(key, cost, requests):
        return SummaryRow(
            key=key, requests=requests, usage={}, cost=Decimal(cost), billed=0, unbilled=0, rejected=0, errors=0
        )

    rows = [row(None, "1", 1), row("b", "1", 1), row("a", "1", 1), row("c", "1", 5), row("d", "2", 1)]
    assert [r.key for r in order_summary(rows, "source")] == ["d", "c", "a", "b", None]
    days = [row("2025-01-02", "9", 1), row("2025-01-01", "0", 1)]
    assert [r.key for r in order_summary(days, "day")] == ["2025-01-01", "2025-01-02"]


def test_migration_versions_are_ordered():
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert all(m.sqlite and m.postgres for m in MIGRATIONS)


# ---------------------------------------------------------------------------
# SQLite specifics


def test_sqlite_file_mode_dirs_and_pragmas(tmp_path):
    path = tmp_path / "deep" / "er" / "activity.sqlite3"
    old = os.umask(0o000)
    try:
        log = open_log(f"sqlite://{path}")
    finally:
        os.umask(old)
    try:
        assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
        log.write_many([rec()])
        for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():
                assert (side.stat().st_mode & 0o077) == 0
        conn = log._conn  # per-connection settings
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        log.close()
    with sqlite3.connect(str(path)) as other:  # WAL is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_simultaneous_first_opens(tmp_path):
    """Switching a new file to WAL reports "locked" without waiting; opens must retry."""
    for i in range(50):
        dsn = sqlite_dsn(tmp_path / f"n{i}.sqlite3")
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def opener() -> None:
            try:
                barrier.wait(timeout=10)
                open_log(dsn).close()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=opener) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors


def test_sqlite_existing_file_mode_is_left_alone(tmp_path):
    path = tmp_path / "a.sqlite3"
    path.touch()
    path.chmod(0o640)
    open_log(str(path)).close()
    assert (path.stat().st_mode & 0o777) == 0o640


def test_sqlite_attempts_are_json_text(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(request_id="tried", attempts=ATTEMPTS[:1]), rec(request_id="plain")])
    with contextlib.closing(sqlite3.connect(str(parse_dsn(dsn).path))) as conn:
        stored = dict(conn.execute("SELECT request_id, attempts FROM activity"))
    assert stored["plain"] is None
    assert json.loads(stored["tried"]) == [
        {"target": "a/x", "status": 503, "latency_ms": 12.3, "error": "upstream answered 503"}
    ]


def test_sqlite_cost_is_exact_text(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(cost=Decimal("3.0E-6")), rec(cost=Decimal("0.1"))])
    with sqlite3.connect(str(parse_dsn(dsn).path)) as conn:
        rows = conn.execute("SELECT typeof(cost), cost FROM activity ORDER BY id").fetchall()
        times = conn.execute("SELECT time FROM activity").fetchall()
    assert rows == [("text", "0.0000030"), ("text", "0.1")]
    assert times[0][0] == "2025-03-01T12:00:00.000000Z"


def test_sqlite_create_false(tmp_path):
    path = tmp_path / "missing" / "a.sqlite3"
    with pytest.raises(ActivityError, match="no activity log"):
        open_log(str(path), create=False)
    assert not path.exists() and not path.parent.exists()
    open_log(str(path)).close()
    open_log(str(path), create=False).close()


def test_sqlite_unopenable_path_is_a_clear_error(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(ActivityError, match="activity log"):
        open_log(str(tmp_path / "dir.sqlite3"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ActivityError):
        open_log(str(blocker / "sub" / "a.sqlite3"))


def test_sqlite_schema_newer_than_code(dsn):
    open_log(dsn).close()
    with sqlite3.connect(str(parse_dsn(dsn).path)) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'later')", (LATEST + 1,))
    with pytest.raises(ActivityError, match="newer"):
        open_log(dsn)


def test_sqlite_closed_log(dsn):
    log = open_log(dsn)
    log.close()
    log.close()  # idempotent
    with pytest.raises(ActivityError, match="closed"):
        log.list()


def test_sqlite_reader_while_writer_holds_transaction(dsn):
    """WAL: the CLI can read while the proxy is in the middle of a write."""
    with open_log(dsn) as log:
        log.write_many([rec(request_id="before")])
    raw = sqlite3.connect(str(parse_dsn(dsn).path), isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(
            "INSERT INTO activity (time, request_id, route_kind, path, status, latency_ms) "
            "VALUES ('2025-03-01T12:00:01.000000Z', 'uncommitted', 'managed', '/v1/x', 200, 1.0)"
        )
        with open_log(dsn) as reader:
            assert [r.request_id for r in reader.list()] == ["before"]
        raw.execute("COMMIT")
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# LogSink's failure policy (what the writer process writes through; backend-independent: fake logs)


class FakeLog:
    def __init__(self, *, fail_calls: int = 0, refuse: set[str] = frozenset()):
        self.rows: list[ActivityRecord] = []
        self.fail_calls = fail_calls
        self.refuse = set(refuse)
        self.calls = 0

    def write_many(self, records):
        self.calls += 1
        if self.calls <= self.fail_calls:
            raise ActivityError("database went away")
        if any(r.request_id in self.refuse for r in records):
            raise ActivityError("value refused")
        self.rows.extend(records)

    def close(self):
        pass


def test_sink_says_unavailable_when_the_log_cannot_open(caplog):
    def opener():
        raise ActivityError("cannot connect")

    sink = LogSink(opener, "fake://")
    with caplog.at_level(logging.WARNING, logger="gwctl.activity"):
        assert sink.write([rec(request_id="x")]) == (False, 0, 0)  # never raises: "retry later"
    assert any("cannot open the activity log (fake://)" in m for m in caplog.messages)


def test_sink_retries_once_on_a_fresh_connection():
    fake = FakeLog(fail_calls=1)
    opened = []
    sink = LogSink(lambda: opened.append(1) or fake, "fake://")
    assert sink.write([rec(request_id=f"r{i}") for i in range(3)]) == (True, 3, 0)
    assert len(opened) == 2 and [r.request_id for r in fake.rows] == ["r0", "r1", "r2"]


def test_sink_says_unavailable_while_every_write_fails_then_recovers(caplog):
    fake = FakeLog(fail_calls=5)  # two whole-batch tries and each of the 3 records alone: all fail
    sink = LogSink(lambda: fake, "fake://")
    batch = [rec(request_id=f"r{i}") for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="gwctl.activity"):
        assert sink.write(batch) == (False, 0, 0)
    assert any("cannot write to the activity log" in m for m in caplog.messages)
    assert sink.write(batch) == (True, 3, 0) and len(fake.rows) == 3  # the database is back


def test_sink_isolates_a_refused_record(caplog):
    fake = FakeLog(refuse={"poison"})
    sink = LogSink(lambda: fake, "fake://")
    with caplog.at_level(logging.ERROR, logger="gwctl.activity"):
        assert sink.write([rec(request_id=rid) for rid in ["a", "poison", "b"]]) == (True, 2, 1)
    assert sorted(r.request_id for r in fake.rows) == ["a", "b"]
    assert any("poison" in m and "dropped" in m for m in caplog.messages)


def test_summary_cost_of_an_all_unbilled_group_is_unknown_not_zero(new_dsn):
    from conftest import run_cli

    dsn = new_dsn()
    log = open_log(dsn)
    log.write_many(
        [
            rec(source="paid"),
            rec(source="paid", cost=None),  # billed + unbilled: the billed sum
            rec(source="free", cost=None, route_kind="passthrough"),  # only unbilled: unknown
            rec(
                source="refused", cost=None, route_kind="rejected", rule="max_output", status=400
            ),  # nothing forwarded: 0
        ]
    )
    log.close()
    r = run_cli("activity", "summary", "--by", "source", "--json", "--activity", dsn)
    assert r.code == 0, r.err
    costs = {row["key"]: row["cost"] for row in r.json()["rows"]}
    assert costs == {"paid": "0.000015", "free": None, "refused": "0"}
    table = run_cli("activity", "summary", "--by", "source", "--activity", dsn).out
    assert next(line for line in table.splitlines() if line.startswith("free")).split("\t")[4] == "unbilled"


def test_contract_writer_process_keeps_the_request_shape(dsn):
    """The wire row carries the decided request's shape as a tuple; the writer encodes it as the column's
    JSON, which reads back into the same features (what `activity reprice` replays)."""
    from gwctl.core.request import features, features_from_shape, request_shape, shape_text

    body = {"model": "m", "stream": True, "max_tokens": 7, "response_format": {"type": "json_object"}, "messages": []}
    feats = features("/v1/chat/completions", body)
    ok, _writer = _run_writer(dsn, [wire_row(1, shape=request_shape(feats)), wire_row(2)])
    assert ok
    with open_log(dsn) as log:
        got = {r.request_id: r for r in log.list()}
    assert got["w1"].shape == shape_text(request_shape(feats)) and got["w2"].shape is None
    again = features_from_shape(got["w1"].shape, "m", 12)
    assert again.uses_json_output and again.output_budget == 7 and again.stream and again.params == feats.params
    assert again.prompt_tokens_estimate == 12


def test_contract_repriced_rows_keep_their_first_cost(dsn):
    repriced = rec(
        request_id="r", cost=Decimal("0.5"), original_cost=Decimal("0.25"), repriced_at=T0 + timedelta(days=1)
    )
    with open_log(dsn) as log:
        log.write_many([repriced, rec(request_id="plain")])
        got = {r.request_id: r for r in log.list()}
    assert got["r"] == repriced and got["r"].original_cost == Decimal("0.25")
    assert got["plain"].original_cost is None and got["plain"].repriced_at is None


def test_contract_old_log_gains_empty_shape_columns(dsn, make_old_log, read_versions):
    old = [rec(request_id="old-1", attempts=ATTEMPTS)]
    make_old_log(dsn, BEFORE_SHAPE, old)
    with open_log(dsn) as log:
        log.write_many([rec(request_id="new", shape='{"api":"chat"}')])
        got = {r.request_id: r for r in log.list()}
    assert read_versions(dsn) == [m.version for m in MIGRATIONS]
    assert got["old-1"] == old[0] and got["old-1"].shape is None and got["old-1"].original_cost is None
    assert got["new"].shape == '{"api":"chat"}'
