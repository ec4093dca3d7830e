"""The shared bank of limit meters (gwctl.activity.meters) on real SQLite files and a real PostgreSQL server.

Every database test runs on both backends (``backend`` fixture); each test gets its own SQLite file or its
own PostgreSQL schema, so tests are independent. Loops are bounded in count and in time; only 127.0.0.1.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.activity import ActivityError, ActivityRecord, exact_sum, open_log, sqlite_dsn
from gwctl.activity import migrations as mig
from gwctl.activity.meters import SHARE, SqlBank, default_holder, grant, meter_status, spent_in_window
from gwctl.core.limits import window_bounds
from gwctl.proxy.ledger import Meter
from pgserver import with_search_path
from records import record

MONTH = (datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp(), datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp())
INSIDE = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
BEFORE = datetime(2026, 10, 31, 23, 59, 59, tzinfo=timezone.utc)
AT_END = datetime(2026, 12, 1, tzinfo=timezone.utc)  # the window is [start, end): not counted


def rec(**kw) -> ActivityRecord:
    return record(**{"time": INSIDE, **kw})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_dsn(request, tmp_path):
    """A factory of empty, independent activity logs on the parametrized backend."""
    if request.param == "sqlite":
        n = iter(range(1000))
        yield lambda: sqlite_dsn(tmp_path / f"log{next(n)}.sqlite3")
        return
    server = request.getfixturevalue("pg_server_dsn")
    admin = psycopg.connect(server, autocommit=True, connect_timeout=10)
    schemas: list[str] = []

    def make() -> str:
        schema = f"gwctl_b_{uuid.uuid4().hex[:16]}"
        admin.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return with_search_path(server, schema)

    try:
        yield make
    finally:
        for schema in schemas:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


@pytest.fixture
def dsn(new_dsn):
    return new_dsn()


def write(dsn: str, records: list[ActivityRecord]) -> None:
    with open_log(dsn) as log:
        log.write_many(records)


def usd_meter(target: str, capacity: str = "100", window: tuple[float, float | None] | None = None) -> Meter:
    """A USD meter; by default in this month (a window holding now, as meter_status shows)."""
    start, end = window or window_bounds("month", time.time())
    meter = Meter(target, "usd", Decimal(capacity), start, end)
    meter.used_since_sync = True  # in use: a sync grants a slice (an idle holder's returns its lease)
    return meter


def snapshot(dsn: str, meter_id: str) -> tuple[Decimal, Decimal]:
    """(settled, sum of leases) of a meter, read in one statement (a consistent snapshot)."""
    (st,) = [s for s in meter_status(dsn, now=time.time()) if s.meter_id == meter_id] or [None]
    assert st is not None
    return Decimal(st.settled), Decimal(st.leased)


# ---------------------------------------------------------------------------
# the starting total of a USD meter: the activity log's spend of its target in its window


def test_initial_settled_per_target(dsn):
    rows = [
        rec(key_name="ci", agent="triage", cost=Decimal("0.1")),
        rec(key_name="ci", agent="triage/sub", cost=Decimal("0.02")),
        rec(key_name="ci", agent="triage/sub/deep", cost=Decimal("0.003")),
        rec(key_name="ci", agent="triagex", cost=Decimal("0.0004")),  # not a subagent of triage
        rec(key_name="ci", agent="Triage/sub", cost=Decimal("0.00005")),  # case differs (SQLite LIKE ignores it)
        rec(key_name="other", agent="a_b", cost=Decimal("1E-7")),
        rec(key_name="other", agent="a_b/x", cost=Decimal("2E-7")),
        rec(key_name="other", agent="axb/x", cost=Decimal("4E-7")),  # _ is no wildcard
        rec(key_name="other", agent="100%", cost=Decimal("8E-7")),
        rec(key_name="other", agent="100%/x", cost=Decimal("0.0000016")),
        rec(key_name="other", agent="1000/x", cost=Decimal("0.0000032")),  # % is no wildcard
        rec(key_name="ci", source="cloud", upstream_model="org/big", model="cloud/org/big", cost=Decimal("3")),
        rec(key_name="ci", source="cloud", upstream_model="small", model="cloud/small", cost=Decimal("5")),
        rec(key_name="ci", time=BEFORE, cost=Decimal("700")),  # outside the window
        rec(key_name="ci", time=AT_END, cost=Decimal("900")),
        rec(key_name="ci", cost=None, status=200),  # unbilled
        rec(key_name="ci", cost=None, status=502, route_kind="error"),
        rec(key_name="ci", cost=None, status=429, route_kind="rejected", rule="budget_exceeded"),
    ]
    write(dsn, rows)
    expected = {
        "key:ci": Decimal("8.12305") + Decimal("0.0004"),
        "key:other": Decimal("0.0000063"),
        "agent:triage": Decimal("0.123"),
        "agent:triage/sub": Decimal("0.023"),
        "agent:a_b": Decimal("3E-7"),
        "agent:100%": Decimal("0.0000024"),
        "source:cloud": Decimal("8"),
        "source:local": Decimal("0.12305") + Decimal("0.0004") + Decimal("0.0000063"),
        "model:cloud/org/big": Decimal("3"),
        "model:cloud/small": Decimal("5"),
        "model:local/big": Decimal("0"),
        "source:nobody": Decimal("0"),
    }
    with SqlBank(dsn, "h1") as bank:
        for target, spent in expected.items():
            lease, settled = bank.sync(usd_meter(target, window=MONTH), Decimal(0), Decimal(0))
            assert settled == spent, target
            assert lease == (Decimal(100) - spent) / SHARE, target
    for target, spent in expected.items():
        assert spent_in_window(dsn, target, *MONTH)[0] == spent, target
    # 10 rows of key ci in the window: 1 unbilled (the upstream error is not), 9 admitted (not the rejected one)
    assert spent_in_window(dsn, "key:ci", *MONTH)[1:] == (1, 9)
    assert spent_in_window(dsn, "key:ci", MONTH[0], None)[0] == expected["key:ci"] + 900
    assert spent_in_window(dsn, "key:ci", 0.0, None)[0] == expected["key:ci"] + 1600


def test_rate_meters_start_at_zero_and_the_delta_is_added(dsn):
    write(dsn, [rec() for _ in range(5)])
    start = time.time() // 60 * 60
    meter = Meter("key:ci", "requests", 100, start, start + 60)
    meter.used_since_sync = True
    with SqlBank(dsn) as bank:
        assert bank.sync(meter, 0, 1) == (1 + 99 // 4, 0)
        lease, settled = bank.sync(meter, 7, 0)
        assert (lease, settled) == (93 // 4, 7) and isinstance(lease, int) and isinstance(settled, int)


def test_a_bad_target_is_a_value_error(dsn):
    with pytest.raises(ValueError):
        spent_in_window(dsn, "nonsense", *MONTH)


# ---------------------------------------------------------------------------
# grants


def test_slices_shrink_as_the_capacity_runs_out(dsn):
    meter = usd_meter("key:ci", "100")
    with SqlBank(dsn, "solo") as bank:
        lease, _ = bank.sync(meter, Decimal(0), Decimal(0))
        leases = [lease]
        for _ in range(20):
            lease, settled = bank.sync(meter, lease, Decimal(0))  # spend the whole lease each time
            leases.append(lease)
            assert settled + lease <= Decimal(100)
            assert settled == exact_sum(leases[:-1])
    assert leases[0] == Decimal(25) and leases[1] == Decimal("18.75")
    assert leases == sorted(leases, reverse=True) and leases[-1] < Decimal("0.1")


def test_two_holders_share_what_is_left(dsn):
    meter_a, meter_b = usd_meter("key:ci", "100"), usd_meter("key:ci", "100")
    with SqlBank(dsn, "a") as a, SqlBank(dsn, "b") as b:
        assert a.sync(meter_a, Decimal(0), Decimal(0))[0] == Decimal(25)
        assert b.sync(meter_b, Decimal(0), Decimal(10))[0] == Decimal(10) + Decimal(65) / 4
        # a asks for more than is left: it gets what is left (the caller refuses what does not fit)
        left = Decimal(100) - Decimal("26.25")
        assert a.sync(meter_a, Decimal(0), Decimal(90))[0] == left
        # with requests in flight beyond what is left (room 21.25), the lease stays at what is in flight
        meter_b.reserved = Decimal(25)
        assert b.sync(meter_b, Decimal(5), Decimal(1))[0] == Decimal(25)
        st = [s for s in meter_status(dsn) if s.meter_id == meter_a.id][0]
        assert (st.settled, st.leased, st.holders) == (Decimal(5), left + 25, 2)
        assert st.left == Decimal(100) - 5 - left - 25 < 0
        # a needs nothing now: it keeps a quarter of what b does not hold, b's next sync gets a quarter more
        assert a.sync(meter_a, Decimal(0), Decimal(0))[0] == Decimal(70) / 4
        assert b.sync(meter_b, Decimal(0), Decimal(0))[0] == Decimal(25) + (Decimal("77.5") - 25) / 4
        # a settles 95: the budget is spent, a gets nothing, b keeps its lease until its next sync
        assert a.sync(meter_a, Decimal(95), Decimal(0)) == (Decimal(0), Decimal(100))
        assert [(s.holders, s.left) for s in meter_status(dsn, ["key:ci"])] == [(1, Decimal("-38.125"))]
        # then b holds what it has in flight, nothing more
        assert b.sync(meter_b, Decimal(0), Decimal(0)) == (Decimal(25), Decimal(100))
        assert [(s.holders, s.left) for s in meter_status(dsn, ["key:ci"])] == [(1, Decimal(-25))]


def test_an_idle_holder_returns_its_lease(dsn):
    meter = usd_meter("key:ci", "100")
    with SqlBank(dsn, "a") as bank:
        assert bank.sync(meter, Decimal(0), Decimal(1))[0] == Decimal(1) + Decimal(99) / 4
        meter.used_since_sync = False  # the heartbeat: nothing admitted since
        assert bank.sync(meter, Decimal("0.5"), Decimal(0)) == (Decimal(0), Decimal("0.5"))
        assert [(s.leased, s.holders) for s in meter_status(dsn, ["key:ci"])] == [(Decimal(0), 0)]
        meter.reserved = Decimal(2)  # requests in flight keep their lease, and so does a need
        assert bank.sync(meter, Decimal(0), Decimal(0))[0] == Decimal(2) + Decimal("97.5") / 4
        meter.reserved = Decimal(0)
        assert bank.sync(meter, Decimal(0), Decimal(3))[0] == Decimal(3) + Decimal("96.5") / 4


def test_bad_arguments():
    with pytest.raises(ValueError):
        SqlBank("x.sqlite3", ttl=0)
    with pytest.raises(ValueError):
        SqlBank("x.sqlite3", share=0)


def test_an_edited_capacity_is_stored(dsn):
    meter = usd_meter("key:ci", "100")
    with SqlBank(dsn) as bank:
        bank.sync(meter, Decimal(0), Decimal(0))
        meter.capacity = Decimal(8)
        assert bank.sync(meter, Decimal(0), Decimal(0)) == (Decimal(2), Decimal(0))
    assert [s.capacity for s in meter_status(dsn, ["key:ci"])] == [Decimal(8)]


def test_holders_hammering_never_lease_beyond_the_capacity(dsn):
    """N holders, each its own bank (connection) and meter object, spend from their leases and sync with
    random needs; a monitor reads (settled, leases) in one statement: never above the capacity. At the
    end every holder settles what it spent: the meter's total is exactly the sum."""
    capacity = Decimal("3.5")
    holders, iterations, deadline = 4, 200, time.monotonic() + 60
    spent_by: list[Decimal] = [Decimal(0)] * holders
    errors: list[BaseException] = []
    meter_id = usd_meter("key:ci").id

    def holder(i: int) -> None:
        rng = random.Random(i)
        meter = usd_meter("key:ci", str(capacity))
        with SqlBank(dsn, f"h{i}") as bank:
            try:
                unsettled = Decimal(0)
                for _ in range(iterations):
                    if time.monotonic() > deadline:
                        break
                    # admit a request within what the lease leaves, finish another (its cost <= its reservation)
                    available = meter.lease - unsettled - meter.reserved
                    want = Decimal(rng.randint(0, 200_000)) / 10**6
                    if want <= available:
                        meter.reserved += want
                    if meter.reserved and rng.random() < 0.6:
                        done_cost = meter.reserved * Decimal(rng.randint(0, 100)) / 100
                        unsettled += done_cost
                        spent_by[i] += done_cost
                        meter.reserved = Decimal(0)
                    need = Decimal(rng.randint(0, 300_000)) / 10**6
                    meter.lease, meter.settled = bank.sync(meter, unsettled, need)
                    unsettled = Decimal(0)
                    assert meter.lease >= meter.reserved
                bank.sync(meter, unsettled, Decimal(0))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

    checks = 0

    def monitor() -> None:
        nonlocal checks
        while any(t.is_alive() for t in threads) and checks < 2000 and time.monotonic() < deadline:
            settled, leased = snapshot(dsn, meter_id)
            assert settled + leased <= capacity, (settled, leased)
            checks += 1

    with SqlBank(dsn, "creator") as bank:  # the meter exists before the monitor reads it
        bank.sync(usd_meter("key:ci", str(capacity)), Decimal(0), Decimal(0))
    threads = [threading.Thread(target=holder, args=(i,)) for i in range(holders)]
    for t in threads:
        t.start()
    try:
        monitor()
    finally:
        for t in threads:
            t.join(timeout=90)
    assert not errors, errors
    assert checks >= 5
    settled, _ = snapshot(dsn, meter_id)
    assert settled == exact_sum(spent_by) <= capacity
    assert exact_sum(spent_by) > 0


# ---------------------------------------------------------------------------
# leases expire


def test_a_silent_holders_lease_expires(dsn):
    ttl = 0.5
    with SqlBank(dsn, "a", ttl=ttl) as a, SqlBank(dsn, "b", ttl=ttl) as b:
        meter_a, meter_b = usd_meter("key:ci"), usd_meter("key:ci")
        assert a.sync(meter_a, Decimal(0), Decimal(100))[0] == Decimal(100)
        assert b.sync(meter_b, Decimal(0), Decimal(1))[0] == Decimal(0)
        # a keeps renewing: its lease holds past the TTL
        start = time.monotonic()
        while time.monotonic() - start < 2 * ttl:
            a.sync(meter_a, Decimal(0), Decimal(100))
            time.sleep(ttl / 5)
        assert b.sync(meter_b, Decimal(0), Decimal(1))[0] == Decimal(0)
        # a falls silent (as if killed): after the TTL, b takes all the rest
        time.sleep(ttl * 1.5)
        assert b.sync(meter_b, Decimal(0), Decimal(100))[0] == Decimal(100)
        st = [s for s in meter_status(dsn, ["key:ci"])][0]
        assert (st.leased, st.holders) == (Decimal(100), 1)


def test_finished_windows_are_forgotten(dsn):
    now = [1_800_000_000.0]
    with SqlBank(dsn, "a", clock=lambda: now[0]) as bank:
        old = Meter("key:ci", "requests", 10, now[0] - 60, now[0])
        bank.sync(old, 3, 1)
        now[0] += 3600
        new = Meter("key:ci", "requests", 10, now[0] // 60 * 60, now[0] // 60 * 60 + 60)
        assert bank.sync(new, 0, 1)[0] == 1 + 9 // 4
    assert [s.meter_id for s in meter_status(dsn, now=now[0])] == [new.id]
    assert meter_status(dsn, now=old.start) == []
    with open_log(dsn) as log:
        conn = log._connection()
        assert [r[0] for r in conn.execute("SELECT meter_id FROM limit_leases").fetchall()] == [new.id]


# ---------------------------------------------------------------------------
# the migration, errors


def test_a_version_1_log_migrates_and_its_spend_counts(dsn, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(mig, "MIGRATIONS", mig.MIGRATIONS[:1])
        with open_log(dsn) as log:
            assert [v for (v,) in log._connection().execute("SELECT version FROM schema_migrations")] == [1]
            write_v1(log, [rec(cost=Decimal("1.5")), rec(cost=Decimal("0.25"))])
    with SqlBank(dsn) as bank:
        assert bank.sync(usd_meter("key:ci", "10", MONTH), Decimal(0), Decimal(0))[1] == Decimal("1.75")
    with open_log(dsn) as log:
        versions = [v for (v,) in log._connection().execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in mig.MIGRATIONS] == [1, 2, 3, 4]
        assert [r.cost for r in log.list()] == [Decimal("0.25"), Decimal("1.5")]


def write_v1(log, records: list[ActivityRecord]) -> None:
    """Rows as a version 1 log has them: the columns before ``attempts`` (version 3's; later ones follow it)."""
    from gwctl.activity import query as q

    cut = q.COLUMNS.index("attempts")
    cols = q.COLUMNS[:cut]
    sql = f"INSERT INTO activity ({', '.join(cols)}) VALUES ({', '.join([log.dialect.placeholder] * len(cols))})"
    for r in records:
        log._connection().execute(sql, log.row(q.record_fields(r))[:cut])


def test_sqlite_amounts_are_exact_text(tmp_path):
    dsn = sqlite_dsn(tmp_path / "a.sqlite3")
    with SqlBank(dsn, "h") as bank:
        bank.sync(usd_meter("key:ci", "1"), Decimal("1E-7"), Decimal(0))
    with sqlite3.connect(str(tmp_path / "a.sqlite3")) as conn:
        assert conn.execute("SELECT settled, typeof(settled), capacity FROM limit_meters").fetchone() == (
            "0.0000001",
            "text",
            "1",
        )
        assert conn.execute("SELECT amount FROM limit_leases").fetchone() == ("0.249999975",)


def test_unreachable_database_is_an_activity_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bank = SqlBank(f"postgresql://gw:hunter2@127.0.0.1:{port}/nope?connect_timeout=3", "h")
    with pytest.raises(ActivityError) as e:
        bank.sync(usd_meter("key:ci"), Decimal(0), Decimal(0))
    assert "hunter2" not in e.value.message
    with pytest.raises(ActivityError, match="no activity log"):
        spent_in_window(sqlite_dsn(tmp_path / "missing.sqlite3"), "key:ci", *MONTH)
    with pytest.raises(ActivityError, match="no activity log"):
        meter_status(sqlite_dsn(tmp_path / "missing.sqlite3"))
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(ActivityError):
        SqlBank(sqlite_dsn(tmp_path / "dir.sqlite3")).sync(usd_meter("key:ci"), Decimal(0), Decimal(0))


def test_default_holders_are_unique():
    assert len({default_holder() for _ in range(50)}) == 50


# ---------------------------------------------------------------------------
# the grant arithmetic, as a property

money = st.decimals(min_value=0, max_value=10**6, places=7, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=10**9)


def _check_grant(capacity, settled, others, reserved, need, share):
    g = grant(capacity, settled, others, reserved, need, share)
    room = capacity - settled - others
    assert g >= reserved  # never below what is in flight
    if room >= reserved + need:
        assert reserved + need <= g <= room  # covers the need, never beyond the room
        assert g - (reserved + need) <= (room - reserved - need) / share
    else:
        assert g == max(reserved, room)  # beyond the room only when clamped at the reservations
    # a smaller room never grants more
    assert grant(capacity, settled, others + 1, reserved, need, share) <= g
    return g


@settings(max_examples=400, deadline=None)
@given(money, money, money, money, money, st.integers(min_value=1, max_value=16))
def test_grant_property_usd(capacity, settled, others, reserved, need, share):
    g = _check_grant(capacity, settled, others, reserved, need, share)
    assert isinstance(g, Decimal)


@settings(max_examples=400, deadline=None)
@given(counts, counts, counts, counts, counts, st.integers(min_value=1, max_value=16))
def test_grant_property_counts(capacity, settled, others, reserved, need, share):
    g = _check_grant(capacity, settled, others, reserved, need, share)
    assert isinstance(g, int)


# ---------------------------------------------------------------------------
# with the proxy's ledger


def test_two_ledgers_share_one_budget(dsn):
    """Two processes' ledgers, each with its own bank, admit $1 requests against one $10 budget in turn:
    together they admit at most 10, and settle exactly what they admitted."""
    import asyncio

    from gwctl.core.config import Limit
    from gwctl.core.limits import Reservation
    from gwctl.proxy.ledger import Ledger

    limit = Limit("key:ci", budget=Decimal(10), window="month")
    res = Reservation(10, 10, "request", Decimal(1))

    async def run() -> tuple[int, list[int]]:
        banks = [SqlBank(dsn, "p1"), SqlBank(dsn, "p2")]
        ledgers = [Ledger(bank) for bank in banks]
        admitted = [0, 0]
        try:
            for turn in range(40):
                i = turn % 2
                refusal, ticket = await ledgers[i].admit([limit], res, time.time())
                if ticket is not None:
                    admitted[i] += 1
                    ledgers[i].settle(ticket, Decimal(1), 20)
                else:
                    assert refusal is not None and refusal.rule == "budget_exceeded"
                if turn % 5 == 4:
                    for ledger in ledgers:
                        await ledger.heartbeat()
            for ledger in ledgers:
                await ledger.heartbeat()
            (st,) = meter_status(dsn, ["key:ci"])
            return st.settled, admitted
        finally:
            for bank in banks:
                bank.close()

    settled, admitted = asyncio.run(asyncio.wait_for(run(), 60))
    assert settled == sum(admitted) <= 10
    assert sum(admitted) >= 8 and min(admitted) >= 1
