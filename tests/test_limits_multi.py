"""Limits shared by several proxy instances (one PostgreSQL activity log), a holder killed with SIGKILL,
a restart and a limit added mid-window (SQLite), and ``limit status`` after a known mix of requests.

Deterministic pricing (as in test_spend_limits_e2e.py): input is free, output costs $0.001 a token and
every request asks max_tokens=10, so each one reserves exactly $0.01; the stand-in answers 3 output tokens,
so each admitted one costs exactly $0.003. Reservations are upper bounds here: the admitted spend must
never exceed a budget at all.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from conftest import run_cli
from pgserver import new_schema
from proxyrun import ProxyProcess, wait_for

UP_KEY = "sk-upstream-1234"
MODEL = "local/llama-3.1-8b"
PRICES = ("--price", "input=0", "--price", "output=0.001", "--max-output", "100")
RESERVE, COST = Decimal("0.01"), Decimal("0.003")


def setup_store(upstream) -> None:
    gw = run_cli
    assert gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    assert gw("source", "refresh", "local").code == 0
    assert gw("catalog", "set", MODEL, *PRICES).code == 0


def key(name: str) -> str:
    result = run_cli("key", "create", name, "--json")
    assert result.code == 0, result.err
    return result.json()["key"]


def body(*, model: str = MODEL, stream: bool = False) -> dict:
    return {"model": model, "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def chat(url: str, k: str, *, model: str = MODEL, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions", json=body(model=model), headers={"Authorization": f"Bearer {k}"}, timeout=timeout
    )


def load(urls: list[str], k: str, n: int, workers: int, backoff: float = 0) -> list[tuple[int, dict, dict | None]]:
    """``n`` streamed requests, request i to ``urls[i % len(urls)]``, sent by ``workers`` concurrent clients
    (each its share, one after the other, pausing ``backoff`` seconds after a refusal):
    [(status, headers, error object or None)] by request."""
    results: list = [None] * n

    async def worker(client, w):
        for i in range(w, n, workers):
            r = await client.post(
                urls[i % len(urls)] + "/v1/chat/completions",
                json=body(stream=True),
                headers={"Authorization": f"Bearer {k}"},
            )
            if r.status_code == 200:
                assert "data: [DONE]" in r.text
                results[i] = (200, dict(r.headers), None)
            else:
                results[i] = (r.status_code, dict(r.headers), r.json()["error"])
                await asyncio.sleep(backoff)

    async def run():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=workers + 8)) as client:
            await asyncio.gather(*(worker(client, w) for w in range(workers)))

    asyncio.run(run())
    return results


def activity_rows(n: int, *extra: str) -> list[dict]:
    """The activity log's rows once there are at least ``n`` (bounded wait)."""

    def get():
        r = run_cli("activity", "list", "--json", "--limit", "10000", *extra)
        data = r.json() if r.code == 0 else []
        return data if len(data) >= n else None

    got = wait_for(get, 20, interval=0.2)
    assert got is not None, f"fewer than {n} activity rows appeared"
    return got


def status(target: str, *extra: str) -> dict:
    r = run_cli("limit", "status", target, "--json", *extra)
    assert r.code == 0, r.err
    (doc,) = r.json()
    return doc


def early_in_a_minute(latest: int = 40) -> None:
    """Wait (at most a minute's rest) until the UTC second is below ``latest``: a test that counts one
    minute's requests then runs within one minute."""
    assert wait_for(lambda: time.time() % 60 < latest, 61, interval=0.1)


def spent(rows: list[dict]) -> Decimal:
    return sum((Decimal(r["cost"]) for r in rows if r["cost"] is not None), Decimal(0))


# --- several instances on one PostgreSQL log ---------------------------------------------------------


@pytest.fixture
def schema_dsn(pg_server_dsn):
    """A DSN on a schema of its own for this test (dropped afterwards)."""
    psycopg = pytest.importorskip("psycopg")
    schema, dsn = new_schema(pg_server_dsn, "gwctl_multi_")
    yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def pg_store(tmp_path, upstream, schema_dsn):
    setup_store(upstream)
    return tmp_path / "cfg" / "gwctl.toml", schema_dsn


def start_all(store, dsn, n: int) -> list[ProxyProcess]:
    procs: list[ProxyProcess] = []
    try:
        for _ in range(n):
            procs.append(ProxyProcess(store, dsn))
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    return procs


def kill(procs: list[ProxyProcess]) -> list[int]:
    return [p.terminate() for p in procs]


@pytest.mark.postgres
def test_three_instances_never_spend_past_a_shared_budget(pg_store, upstream):
    """93 overlapping streams, round-robin over three proxies on one PostgreSQL log, against one $0.15
    budget: the exact sum of the logged costs stays within it, the refused are 429 budget_exceeded, and the
    meter the proxies settled equals the log's sum."""
    store, dsn = pg_store
    k = key("ci")
    budget = Decimal("0.15")
    assert run_cli("limit", "set", "key:ci", "--budget", str(budget), "--window", "day").code == 0
    upstream.configure(chunk_delay_ms=80)  # about 0.3 s a stream: many in flight on every instance at once
    procs = start_all(store, dsn, 3)
    try:
        # one request through each first (each opens its connection to the log), then the load: 25 clients
        # (each one's requests rotate over the three instances), pausing 0.1 s after a refusal
        assert [chat(p.url, k).status_code for p in procs] == [200] * 3
        results = load([p.url for p in procs], k, 90, workers=25, backoff=0.1)
    finally:
        codes = kill(procs)
    assert codes == [0, 0, 0]
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert all(r[0] == 429 for r in refused), {r[0] for r in refused}
    assert all((r[2]["code"], r[2]["type"]) == ("budget_exceeded", "insufficient_quota") for r in refused)
    assert all(int(r[1]["retry-after"]) > 0 for r in refused)
    rows = activity_rows(93, "--activity", dsn)
    assert len(rows) == 93
    total = spent(rows)
    billed = [r for r in rows if r["cost"] is not None]
    print(f"\nadmitted 3 + {len(ok)}/90 over 3 instances, spent ${total} of ${budget}")
    assert total <= budget  # the bound: no overshoot at all
    assert len(billed) == len(ok) + 3 and all(Decimal(r["cost"]) == COST for r in billed)
    assert sum(1 for r in rows if r["rule"] == "budget_exceeded") == len(refused)
    # every instance admitted some of the load (they share the budget), and the budget was not left mostly
    # idle (refused clients give up after 90 requests in all, some of the budget may be left)
    per_instance = [sum(1 for i, r in enumerate(results) if r[0] == 200 and i % 3 == j) for j in range(3)]
    assert all(n > 0 for n in per_instance), per_instance
    assert total >= budget / 2
    # the shared meter, settled by the three on SIGTERM, holds exactly what the log holds, and no lease is left
    doc = status("key:ci", "--activity", dsn)
    assert Decimal(doc["spent"]) == total and Decimal(doc["reserved"]) == 0
    from gwctl.activity.meters import meter_status

    (usd,) = [m for m in meter_status(dsn, ["key:ci"]) if m.measure == "usd"]
    assert usd.settled == total and usd.leased == 0


@pytest.mark.postgres
def test_three_instances_share_one_rate_limit(pg_store, upstream):
    """90 requests at once over three proxies under rpm 30 within one minute: at most 30 admitted in all,
    the rest 429 rate_limited with the OpenAI headers."""
    store, dsn = pg_store
    k = key("ci")
    rpm = 30
    assert run_cli("limit", "set", "key:ci", "--rpm", str(rpm)).code == 0
    upstream.configure(chunk_delay_ms=50)
    procs = start_all(store, dsn, 3)
    try:
        early_in_a_minute()
        minute = int(time.time() // 60)
        results = load([p.url for p in procs], k, 90, workers=45)
        assert int(time.time() // 60) == minute, "the load straddled a minute"
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] != 200]
        print(f"\nadmitted {len(ok)}/90 under rpm {rpm} over 3 instances")
        assert len(ok) <= rpm
        assert len(ok) >= rpm // 2  # the instances share the minute's requests; slices strand little
        assert all(r[0] == 429 and r[2]["code"] == "rate_limited" for r in refused)
        assert all(r[1]["x-ratelimit-limit-requests"] == str(rpm) for r in refused)
        assert all(1 <= int(r[1]["retry-after"]) <= 60 for r in refused)
    finally:
        codes = kill(procs)
    assert codes == [0, 0, 0]
    rows = activity_rows(90, "--activity", dsn)
    assert sum(1 for r in rows if r["status"] == 200) == len(ok)
    assert sum(1 for r in rows if r["rule"] == "rate_limited") == len(refused)
    if int(time.time() // 60) == minute:  # the leases were returned on SIGTERM: the minute's count is exact
        assert status("key:ci", "--activity", dsn)["requests"] == len(ok)


@pytest.mark.postgres
def test_a_killed_holders_lease_is_free_again_after_it_expires(pg_store, upstream):
    """A proxy holding a lease (a request in flight) is killed with SIGKILL: within the lease's 10 s (and a
    heartbeat) `limit status` shows nothing reserved, and another proxy spends the whole rest of the budget."""
    store, dsn = pg_store
    k = key("ci")
    budget = Decimal("0.10")
    assert run_cli("limit", "set", "key:ci", "--budget", str(budget), "--window", "day").code == 0
    procs = start_all(store, dsn, 2)
    a, b = procs
    try:
        upstream.configure(delay_ms=15000)  # a's request stays in flight until a is killed
        outcome: list = []

        def hang():
            try:
                outcome.append(chat(a.url, k, timeout=30).status_code)
            except httpx.HTTPError as e:
                outcome.append(type(e).__name__)

        t = threading.Thread(target=hang, daemon=True)
        t.start()
        # a's lease: its request's $0.01 plus a quarter of the rest, (0.10 - 0.01) / 4
        held = wait_for(lambda: (d := status("key:ci", "--activity", dsn)) and Decimal(d["reserved"]) > 0 and d, 10)
        assert held, "the first proxy never took a lease"
        assert Decimal(held["reserved"]) == RESERVE + (budget - RESERVE) / 4
        assert Decimal(held["spent"]) == 0
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(timeout=10)
        upstream.configure(delay_ms=0)
        t.join(timeout=20)
        assert outcome and outcome[0] != 200, outcome
        # right after the kill the lease still holds its part of the budget
        assert Decimal(status("key:ci", "--activity", dsn)["reserved"]) == Decimal(held["reserved"])
        freed = wait_for(lambda: Decimal(status("key:ci", "--activity", dsn)["reserved"]) == 0, 20, interval=0.2)
        took = time.monotonic() - killed
        print(f"\nthe killed proxy's lease of ${held['reserved']} was free again after {took:.1f} s")
        assert freed, "the killed proxy's lease never expired"
        # the lease's ttl past its last renewal (a heartbeat before the kill at most), plus polling and slack
        assert took <= 10 + 4
        # b now has the whole budget: one at a time, admitted while spent + $0.01 <= $0.10 (spent 0.003 each):
        # 31 requests (spent 0.093), then refused
        codes = [chat(b.url, k).status_code for _ in range(32)]
        assert codes == [200] * 31 + [429], codes
    finally:
        upstream.configure(delay_ms=0)
        kill(procs)
    rows = activity_rows(32, "--activity", dsn)
    assert spent(rows) == COST * 31 <= budget


# --- one instance on SQLite: restarts and limits added mid-window ------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path, upstream, monkeypatch):
    setup_store(upstream)
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    monkeypatch.setenv("GWCTL_ACTIVITY", activity)
    return tmp_path / "cfg" / "gwctl.toml", activity


def test_a_restart_keeps_what_was_spent(sqlite_store):
    """$0.10 a day: 10 requests through one proxy, SIGTERM, a new proxy on the same store and log admits 21
    more (0.030 + 21 x 0.003 = 0.093; then 0.093 + 0.01 > 0.10): the refusal comes where it would have
    without the restart."""
    k = key("ci")
    assert run_cli("limit", "set", "key:ci", "--budget", "0.10", "--window", "day").code == 0
    first = ProxyProcess(*sqlite_store)
    try:
        assert [chat(first.url, k).status_code for _ in range(10)] == [200] * 10
    finally:
        assert first.terminate() == 0
    assert Decimal(status("key:ci")["spent"]) == COST * 10
    second = ProxyProcess(*sqlite_store)
    try:
        codes = [chat(second.url, k).status_code for _ in range(22)]
    finally:
        second.terminate()
    assert codes == [200] * 21 + [429], codes
    assert spent(activity_rows(32)) == COST * 31


def test_a_limit_added_mid_window_counts_what_was_logged_before(sqlite_store):
    """10 requests with no limit, then a $0.10 daily budget is set while the proxy runs: the meter starts
    from the log's $0.030, so 21 more are admitted and the 22nd refused."""
    k = key("ci")
    proc = ProxyProcess(*sqlite_store)
    try:
        assert [chat(proc.url, k).status_code for _ in range(10)] == [200] * 10
        activity_rows(10)  # in the log before the limit exists
        reloads = proc.log.count("store reloaded")
        assert run_cli("limit", "set", "key:ci", "--budget", "0.10", "--window", "day").code == 0
        assert wait_for(lambda: proc.log.count("store reloaded") > reloads, 10), proc.log
        codes = [chat(proc.url, k).status_code for _ in range(22)]
    finally:
        proc.terminate()
    assert codes == [200] * 21 + [429], codes
    rows = activity_rows(32)
    assert spent(rows) == COST * 31


def test_limit_status_after_a_known_mix(sqlite_store):
    """A monthly budget with an rpm: 4 billed requests, 2 unbilled (no catalog entry), 1 from another key
    (not under the limit) and 1 over the rpm; `limit status` shows the exact spend, the UTC month, the
    unbilled count and the minute's requests."""
    k, other = key("ci"), key("other")
    assert run_cli("limit", "set", "key:ci", "--budget", "1", "--window", "month", "--rpm", "6").code == 0
    proc = ProxyProcess(*sqlite_store)
    try:
        early_in_a_minute(50)  # the 8 requests take a second or two
        minute = int(time.time() // 60)
        codes = [chat(proc.url, k).status_code for _ in range(4)]
        codes += [chat(proc.url, k, model="local/mistral-7b").status_code for _ in range(2)]
        codes.append(chat(proc.url, other).status_code)
        refused = chat(proc.url, k)
        assert codes == [200] * 7
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        activity_rows(8)
        live = status("key:ci")  # while the proxy runs, its leases show as reserved
        assert Decimal(live["spent"]) == COST * 4 and live["requests"] >= 6
    finally:
        assert proc.terminate() == 0
    doc = status("key:ci")
    now = datetime.now(timezone.utc)
    first = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    following = (first + timedelta(days=32)).replace(day=1)
    assert doc["target"] == "key:ci" and doc["budget"] == "1" and doc["window"] == "month" and doc["rpm"] == 6
    assert doc["window_start"] == first.strftime("%Y-%m-%dT00:00:00Z")
    assert doc["resets_at"] == following.strftime("%Y-%m-%dT00:00:00Z")
    assert doc["spent"] == "0.012"  # exact: 4 x $0.003, the unbilled ones and the other key's not in it
    assert Decimal(doc["reserved"]) == 0  # the stopped proxy returned its lease
    assert Decimal(doc["left"]) == Decimal("0.988")
    assert doc["unbilled"] == "allow" and doc["unbilled_requests"] == 2
    if int(time.time() // 60) == minute:
        assert doc["minute_start"] == datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert doc["requests"] == 6  # the refused one is not counted


# --- the race behind an overshoot seen with three instances ------------------------------------------------


def slow_bank(dsn: str, holder: str, **kw):
    """A SqlBank whose sync, once ``hold`` is set, pauses after committing (a slow round trip) until ``gate``
    is set, and says so through ``entered``: it makes an interleaving with the ledger deterministic."""
    from gwctl.activity.meters import SqlBank

    class SlowBank(SqlBank):
        def __init__(self) -> None:
            super().__init__(dsn, holder, **kw)
            self.hold = False
            self.entered, self.gate = threading.Event(), threading.Event()

        def _sync(self, db, meter, delta, need, keep):
            out = super()._sync(db, meter, delta, need, keep)
            if self.hold:
                self.entered.set()
                self.gate.wait(5)
            return out

    return SlowBank()


def test_a_request_admitted_while_its_meter_syncs_is_covered_by_the_new_lease(tmp_path):
    """One process returns its unused lease (the heartbeat's sync) while a request is admitted against the old
    lease: the bank must not see that lease as returned, or another process spends it too (rpm 4: 5 admitted).

    A bank whose sync pauses after committing (a slow round trip) makes the interleaving deterministic."""
    from gwctl.core.config import Limit
    from gwctl.core.limits import Reservation
    from gwctl.proxy.ledger import Ledger

    dsn = f"sqlite://{tmp_path / 'bank.sqlite3'}"
    limit = Limit("key:ci", rpm=4)
    res = Reservation(0, 0, "request", None)

    async def scenario():
        bank_a, bank_b = slow_bank(dsn, "a", share=1), slow_bank(dsn, "b", share=1)
        a, b = Ledger(bank_a), Ledger(bank_b)
        try:
            now = time.time()
            refusal, first = await a.admit([limit], res, now)  # a leases all 4 (share 1)
            assert refusal is None
            a.settle(first, None, None)
            await a.heartbeat()  # settles 1, keeps a lease of 3 (it was used)
            bank_a.hold = True
            returning = asyncio.create_task(a.heartbeat())  # unused since: a returns its lease...
            assert await asyncio.to_thread(bank_a.entered.wait, 5)
            admitting = asyncio.create_task(a.admit([limit], res, now))  # ...while a request comes in
            await asyncio.sleep(0.1)
            bank_a.gate.set()
            await returning
            refusal, second = await admitting
            bank_a.hold = False
            assert refusal is None and second is not None
            admitted_b = 0
            for _ in range(5):
                refusal, _ticket = await b.admit([limit], res, now)
                admitted_b += refusal is None
            # a: 1 settled + 1 in flight; b may have the other 2 at most
            assert 2 + admitted_b <= 4, f"{2 + admitted_b} requests admitted under rpm 4"
        finally:
            bank_a.gate.set()
            bank_a.close()
            bank_b.close()

    asyncio.run(scenario())


def test_requests_admitted_while_a_busy_meter_settles_keep_their_lease(tmp_path):
    """A heartbeat that settles a meter in use does not hold admissions up (they go on against the lease),
    and the bank keeps that lease whole, so another process cannot be granted the same requests."""
    from gwctl.core.config import Limit
    from gwctl.core.limits import Reservation
    from gwctl.proxy.ledger import Ledger

    dsn = f"sqlite://{tmp_path / 'bank.sqlite3'}"
    limit = Limit("key:ci", rpm=100)
    res = Reservation(0, 0, "request", None)

    async def scenario():
        bank_a, bank_b = slow_bank(dsn, "a"), slow_bank(dsn, "b", share=1)  # b takes all there is when it asks
        a, b = Ledger(bank_a), Ledger(bank_b)
        try:
            now = time.time()
            refusal, first = await a.admit([limit], res, now)  # a leases 1 + a quarter of 99: 25
            assert refusal is None and first is not None
            refusal, _t = await b.admit([limit], res, now)  # b leases the other 75
            assert refusal is None
            a.settle(first, None, None)  # a delta to settle on a meter in use: a busy settle, not a return
            bank_a.hold = True
            settling = asyncio.create_task(a.heartbeat())  # the bank would shrink a's lease to a quarter of 24
            assert await asyncio.to_thread(bank_a.entered.wait, 5)
            admitted_a = 1
            for _ in range(20):  # not held up by the settle in flight: they use the lease a holds
                refusal, _t = await asyncio.wait_for(a.admit([limit], res, now), 1)
                admitted_a += refusal is None
            bank_a.gate.set()
            await settling
            bank_a.hold = False
            assert admitted_a == 21
            admitted_b = 1
            for _ in range(120):  # b spends its lease, then asks the bank for whatever is left
                refusal, _t = await b.admit([limit], res, now)
                admitted_b += refusal is None
            assert admitted_a + admitted_b <= 100, f"{admitted_a + admitted_b} requests admitted under rpm 100"
        finally:
            bank_a.gate.set()
            bank_a.close()
            bank_b.close()

    asyncio.run(scenario())


def test_a_sync_cancelled_on_its_way_is_not_settled_twice(tmp_path):
    """The proxy stops while a heartbeat's sync is in the bank (its thread commits the delta): the cancelled
    sync's outcome is applied, so the closing sync does not settle the same spend again (seen as three
    instances' meter 3 requests over the log's exact sum)."""
    from gwctl.activity.meters import meter_status
    from gwctl.core.config import Limit
    from gwctl.core.limits import Reservation
    from gwctl.proxy.ledger import Ledger

    dsn = f"sqlite://{tmp_path / 'bank.sqlite3'}"
    limit = Limit("key:ci", budget=Decimal("10"), window="day")
    res = Reservation(10, 10, "request", Decimal("0.01"))

    async def scenario():
        bank = slow_bank(dsn, "a")
        ledger = Ledger(bank)
        now = time.time()
        refusal, ticket = await ledger.admit([limit], res, now)
        assert refusal is None and ticket is not None
        ledger.settle(ticket, Decimal("0.003"), None)
        bank.hold = True
        beat = asyncio.create_task(ledger.heartbeat())  # settles 0.003 ...
        assert await asyncio.to_thread(bank.entered.wait, 5)  # ... committed, its round trip still on its way
        beat.cancel()  # the proxy stops: the heartbeat loop is cancelled
        bank.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await beat
        bank.hold = False
        await ledger.close()  # settles whatever is left, returns the lease

    asyncio.run(scenario())
    (usd,) = [m for m in meter_status(dsn, ["key:ci"]) if m.measure == "usd"]
    assert usd.settled == Decimal("0.003") and usd.leased == 0
