"""Budgets, rate limits and scoped keys through a real proxy process and the stand-in upstream."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest

from conftest import run_cli
from proxyrun import ProxyProcess, wait_for

UP_KEY = "sk-upstream-1234"
MODEL = "local/llama-3.1-8b"
# input is free and output costs 0.001 a token, so a request with max_tokens=10 reserves exactly $0.01;
# the stand-in answers 3 output tokens ($0.003)
PRICES = ("--price", "input=0", "--price", "output=0.001", "--max-output", "100")


@pytest.fixture
def store(tmp_path, upstream, monkeypatch):
    gw = run_cli
    assert gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    assert gw("source", "refresh", "local").code == 0
    assert gw("catalog", "set", MODEL, *PRICES).code == 0
    assert (
        gw("route", "set", "triage", "--model-name", "assistant", "--provider", "local", "--model", "llama-3.1-8b").code
        == 0
    )
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    monkeypatch.setenv("GWCTL_ACTIVITY", activity)
    return tmp_path / "cfg" / "gwctl.toml", activity


def start(store) -> ProxyProcess:
    return ProxyProcess(*store)


def key(name: str, *args: str) -> str:
    result = run_cli("key", "create", name, *args, "--json")
    assert result.code == 0, result.err
    return result.json()["key"]


def chat(url: str, k: str, *, model: str = MODEL, agent: str | None = None, stream: bool = False, timeout=30):
    headers = {"Authorization": f"Bearer {k}"}
    if agent:
        headers["X-Gwctl-Agent"] = agent
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def rows(n: int) -> list[dict]:
    def get():
        r = run_cli("activity", "list", "--json", "--limit", "1000")
        data = r.json() if r.code == 0 else []
        return data if len(data) >= n else None

    got = wait_for(get, 15)
    assert got is not None, "activity rows did not appear"
    return got


def test_concurrent_streams_never_spend_past_the_budget(store, upstream):
    """32 streams at once against a budget that admits 10 reservations: 10 run, 22 get budget_exceeded,
    and the exact spend stays within the budget."""
    k = key("ci")
    assert run_cli("limit", "set", "key:ci", "--budget", "0.10", "--window", "day").code == 0
    upstream.configure(chunk_delay_ms=150)  # keep the admitted streams in flight together
    proc = start(store)
    try:

        async def one(client):
            body = {"model": MODEL, "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post(
                proc.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {k}"}
            )
            return r.status_code, r.headers, r.text

        async def burst():
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
                return await asyncio.gather(*(one(client) for _ in range(32)))

        results = asyncio.run(burst())
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert len(ok) == 10 and len(refused) == 22
        err = json.loads(refused[0][2])["error"]
        assert (err["code"], err["type"]) == ("budget_exceeded", "insufficient_quota")
        assert "key:ci" in err["message"] and "$0.1" in err["message"]
        assert int(refused[0][1]["retry-after"]) > 0
        assert all("data: [DONE]" in r[2] for r in ok)
        logged = rows(32)
        spent = sum(Decimal(r["cost"]) for r in logged if r["cost"] is not None)
        assert spent == Decimal("0.030")  # 10 x 3 output tokens x $0.001, exactly
        assert sum(1 for r in logged if r["rule"] == "budget_exceeded") == 22
        # what the streams did not use is free again: each request reserves $0.01 and settles at $0.003,
        # so one after the other they are admitted while spent + 0.01 <= 0.10: 21 more (spent 0.093), then refused
        more = [chat(proc.url, k).status_code for _ in range(22)]
        assert more == [200] * 21 + [429]
    finally:
        proc.terminate()


def test_the_rate_limit_refuses_the_request_over_the_minute_with_retry_after(store):
    k = key("ci")
    assert run_cli("limit", "set", "key:ci", "--rpm", "3").code == 0
    proc = start(store)
    try:
        codes = [chat(proc.url, k) for _ in range(4)]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        r = codes[3]
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-gwctl-request-id"]
    finally:
        proc.terminate()


def test_scoped_and_expired_keys(store, tmp_path):
    scoped = key("bot", "--agent", "triage", "--model", "local/*")
    soon = key("old", "--expires", "1h")
    text = (tmp_path / "cfg" / "gwctl.toml").read_text()
    (tmp_path / "cfg" / "gwctl.toml").write_text(
        text.replace(run_cli("key", "list", "--json").json()[1]["expires"], "2020-01-01T00:00:00Z")
    )
    proc = start(store)
    try:
        r = chat(proc.url, scoped)  # no agent
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_scope"
        assert "triage" in r.json()["error"]["message"]
        assert chat(proc.url, scoped, agent="triage/summarizer").status_code == 200
        assert chat(proc.url, scoped, agent="triage", model="assistant").status_code == 200  # routed to local/...
        r = chat(proc.url, soon)
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
        got = rows(4)
        assert {x["rule"] for x in got} >= {"key_scope", "key_expired"}
    finally:
        proc.terminate()


def test_passthrough_and_unbilled_requests_count_against_budgets(store, upstream):
    k = key("ci")
    assert run_cli("source", "edit", "local", "--passthrough").code == 0
    assert run_cli("limit", "set", "source:local", "--budget", "0.02", "--window", "month").code == 0
    proc = start(store)
    try:
        codes = [chat(proc.url, k).status_code for _ in range(5)]
        # passthrough, priced: each reserves $0.01 and settles at $0.003; the 5th finds 0.012 + 0.01 > 0.02
        assert codes == [200, 200, 200, 200, 429]
        # unbilled (no catalog entry) under a budget: allowed by default...
        assert chat(proc.url, k, model="local/mistral-7b").status_code == 200
        assert run_cli("limit", "set", "source:local", "--unbilled", "reject").code == 0
        r = wait_for(lambda: (x := chat(proc.url, k, model="local/mistral-7b")).status_code == 403 and x, 10)
        assert r and r.json()["error"]["code"] == "budget_unbilled"
    finally:
        proc.terminate()


def test_a_source_that_ignores_max_tokens_overshoots_by_at_most_its_overrun(store, upstream):
    """The documented bound, measured: the stand-in answers 50 output tokens to max_tokens=10, so each
    admitted request costs $0.05 against a $0.01 reservation. A burst of 32 admits 10 (their reservations
    fill the $0.10 budget); spend ends at $0.50 = budget + 10 x $0.04 of overrun, and nothing more is
    admitted until the window resets."""
    k = key("ci")
    assert run_cli("limit", "set", "key:ci", "--budget", "0.10", "--window", "day").code == 0
    upstream.configure(chunk_delay_ms=150, usage={"output_tokens": 50})
    proc = start(store)
    try:

        async def burst():
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
                body = {
                    "model": MODEL,
                    "max_tokens": 10,
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                }
                head = {"Authorization": f"Bearer {k}"}
                url = proc.url + "/v1/chat/completions"
                return await asyncio.gather(*(client.post(url, json=body, headers=head) for _ in range(32)))

        codes = [r.status_code for r in asyncio.run(burst())]
        assert codes.count(200) == 10 and codes.count(429) == 22
        logged = rows(32)
        spent = sum(Decimal(r["cost"]) for r in logged if r["cost"] is not None)
        overrun = 10 * (Decimal("0.05") - Decimal("0.01"))
        assert spent == Decimal("0.50") == Decimal("0.10") + overrun
        assert chat(proc.url, k).status_code == 429  # over budget now: refused until the window resets
    finally:
        proc.terminate()


def test_limits_whose_database_is_unreachable_refuse_with_503_not_a_crash(tmp_path, upstream):
    """Limits live in the activity log's database; when a proxy cannot reach it to admit a request, the
    request is refused 503 limits_unavailable with Retry-After (and logged), never a 500."""
    import socket

    gw = run_cli
    assert gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    assert gw("source", "refresh", "local").code == 0
    assert gw("catalog", "set", MODEL, *PRICES).code == 0
    k = key("ci")
    assert gw("limit", "set", "key:ci", "--rpm", "100").code == 0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"postgresql://nobody@127.0.0.1:{port}/none")
    try:
        r = chat(proc.url, k)
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
        assert r.headers["retry-after"] == "1"
        assert "Traceback" not in proc.log
        assert wait_for(lambda: "cannot reach the activity log's database" in proc.log, 5)
    finally:
        proc.terminate()


def test_an_overspent_budget_refuses_without_a_negative_reservation(store):
    """The budget lowered below what was already spent: the refusal says what was spent, and never that a
    negative amount is reserved (the ledger took "in flight" as capacity less free less spent)."""
    k = key("ci")
    proc = start(store)
    try:
        for _ in range(3):  # $0.003 each
            assert chat(proc.url, k).status_code == 200
        rows(3)
    finally:
        assert proc.terminate() == 0
    assert run_cli("limit", "set", "key:ci", "--budget", "0.005", "--window", "day").code == 0
    proc = start(store)
    try:
        r = chat(proc.url, k)
        assert r.status_code == 429, r.text
        message = r.json()["error"]["message"]
        assert "spent $0.009 of $0.005" in message and "$-" not in message and "reserved" not in message
    finally:
        assert proc.terminate() == 0
    status = run_cli("limit", "status", "--json").json()[0]
    assert (status["spent"], status["reserved"], status["left"]) == ("0.009", "0", "-0.004")
