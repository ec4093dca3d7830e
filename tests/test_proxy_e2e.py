"""gwctl proxy end to end: the real openai and anthropic SDKs -> proxy -> a real stand-in upstream."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from conftest import run_cli
from proxyrun import ProxyProcess, closed_port, wait_for

UP_KEY = "sk-upstream-1234"
# standin usage with usage override: 1000 prompt tokens of which 200 cached, 50 output
USAGE = {"input_tokens": 1000, "cached_tokens": 200, "output_tokens": 50}
PINNED = Decimal("0.00345")


@pytest.fixture
def gateway(tmp_path, upstream, monkeypatch):
    """A store wired to the stand-in, a gateway key, and a running proxy."""
    upstream.configure(usage=USAGE)
    gw = run_cli
    assert (
        gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY, "--header", "X-Team: ml").code
        == 0
    )
    assert gw("source", "refresh", "local").code == 0
    assert (
        gw(
            "catalog",
            "set",
            "local/llama-3.1-8b",
            "--price",
            "input=3e-6",
            "--price",
            "output=1.5e-5",
            "--price",
            "cached_input=1.5e-6",
            "--max-output",
            "1000",
            "--context-size",
            "100000",
            "--capability",
            "vision=false",
        ).code
        == 0
    )
    assert (
        gw("route", "set", "triage", "--model-name", "assistant", "--provider", "local", "--model", "llama-3.1-8b").code
        == 0
    )
    proc, key = start_with_key(tmp_path, monkeypatch, upstream)
    yield proc, key
    proc.terminate()


def start_with_key(tmp_path, monkeypatch, upstream) -> tuple[ProxyProcess, str]:
    """A gateway key ``tester``, then the proxy on the test's store with a SQLite activity log (also the CLI's,
    through $GWCTL_ACTIVITY); the stand-in's record of requests starts empty. (proxy, key)."""
    key = run_cli("key", "create", "tester", "--json").json()["key"]
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    monkeypatch.setenv("GWCTL_ACTIVITY", activity)
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", activity)
    upstream.clear()
    return proc, key


def add_priced_local(upstream) -> None:
    """Source ``local`` on the stand-in (answering with USAGE), its models listed, llama-3.1-8b priced at
    input 3e-6, output 1.5e-5, cached input 1.5e-6."""
    upstream.configure(usage=USAGE)
    assert run_cli("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    assert run_cli("source", "refresh", "local").code == 0
    prices = ["--price", "input=3e-6", "--price", "output=1.5e-5", "--price", "cached_input=1.5e-6"]
    assert run_cli("catalog", "set", "local/llama-3.1-8b", *prices).code == 0


def activity_rows(n: int, timeout: float = 10.0):
    def rows():
        r = run_cli("activity", "list", "--json")
        if r.code != 0:
            return None
        data = r.json()
        return data if len(data) >= n else None

    got = wait_for(rows, timeout)
    assert got is not None, "activity rows did not appear"
    return got


def oa(proc, key, **kw):
    return openai.OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0, timeout=20, **kw)


def test_openai_chat_plain_is_billed_exactly(gateway, upstream):
    proc, key = gateway
    client = oa(proc, key)
    r = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Gwctl-Agent": "triage"}
    )
    assert r.choices[0].message.content
    seen = upstream.received[-1]
    assert seen.body["model"] == "llama-3.1-8b"  # managed: upstream id replaces the alias
    assert seen.headers["authorization"] == f"Bearer {UP_KEY}"  # the source's credential ...
    assert key not in json.dumps(seen.headers)  # ... never the client's gateway key
    assert seen.headers["x-team"] == "ml"
    assert "x-gwctl-agent" not in seen.headers
    row = activity_rows(1)[0]
    assert row["cost"] == str(PINNED) and row["key_name"] == "tester" and row["agent"] == "triage"
    assert row["route_kind"] == "managed" and row["status"] == 200
    assert row["usage"]["input_tokens"] == 800 and row["usage"]["cached_input_tokens"] == 200


def test_openai_chat_stream_relays_chunks_and_hides_injected_usage(gateway, upstream):
    proc, key = gateway
    client = oa(proc, key)
    chunks = list(
        client.chat.completions.create(
            model="local/llama-3.1-8b", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    row = activity_rows(1)[0]
    assert row["stream"] is True and row["cost"] == str(PINNED)


def test_openai_stream_usage_passed_on_when_client_asks(gateway):
    proc, key = gateway
    chunks = list(
        oa(proc, key).chat.completions.create(
            model="local/llama-3.1-8b",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1000


def test_openai_async_client(gateway):
    proc, key = gateway

    async def go():
        client = openai.AsyncOpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0)
        rs = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="local/llama-3.1-8b", messages=[{"role": "user", "content": f"hi {i}"}]
                )
                for i in range(5)
            ]
        )
        stream = await client.chat.completions.create(
            model="local/llama-3.1-8b", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return rs, pieces

    rs, pieces = asyncio.run(go())
    assert len(rs) == 5 and "".join(pieces) == "Hello from the"
    rows = activity_rows(6)
    assert sum(Decimal(r["cost"]) for r in rows) == PINNED * 6


def test_openai_responses_plain_and_stream(gateway):
    proc, key = gateway
    client = oa(proc, key)
    r = client.responses.create(model="local/llama-3.1-8b", input="hi")
    assert r.output_text
    events = list(client.responses.create(model="local/llama-3.1-8b", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    rows = activity_rows(2)
    assert [r["cost"] for r in rows] == [str(PINNED)] * 2


def test_embeddings(gateway):
    proc, key = gateway
    r = oa(proc, key).embeddings.create(model="local/llama-3.1-8b", input=["a", "b"])
    assert len(r.data) == 2
    assert activity_rows(1)[0]["status"] == 200


def test_anthropic_messages_plain_stream_async(gateway, upstream):
    proc, key = gateway
    client = anthropic.Anthropic(base_url=proc.url, api_key=key, max_retries=0)
    m = client.messages.create(model="local/llama-3.1-8b", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text
    seen = upstream.received[-1]
    assert seen.path == "/v1/messages" and seen.headers["authorization"] == f"Bearer {UP_KEY}"
    assert "x-api-key" not in seen.headers and seen.headers.get("anthropic-version")
    with client.messages.stream(
        model="local/llama-3.1-8b", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.usage.output_tokens == 50

    async def go():
        c = anthropic.AsyncAnthropic(base_url=proc.url, api_key=key, max_retries=0)
        r = await c.messages.create(
            model="local/llama-3.1-8b", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
        await c.close()
        return r

    assert asyncio.run(go()).content
    rows = activity_rows(3)
    # Anthropic shape: 800 input (excl. cache) + 200 cache_read (no cache_read price -> cached_input) + 50 output
    assert all(r["cost"] == str(PINNED) for r in rows), rows


def test_auth_failures(gateway):
    proc, key = gateway
    with pytest.raises(openai.AuthenticationError):
        oa(proc, "gwk_wrong").chat.completions.create(
            model="local/llama-3.1-8b", messages=[{"role": "user", "content": "x"}]
        )
    r = httpx.post(proc.url + "/v1/chat/completions", json={"model": "x"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=proc.url, api_key="nope", max_retries=0).messages.create(
            model="local/llama-3.1-8b", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert httpx.get(proc.url + "/healthz").status_code == 200  # health needs no key
    # refused requests are logged too: no key name, the reason as the rule; health checks are not
    rows = activity_rows(3)
    assert [(r["status"], r["rule"], r["key_name"], r["route_kind"]) for r in rows] == [
        (401, "invalid_api_key", None, "rejected")
    ] * 3
    r = httpx.post(proc.url + "/v1/nothing", json={}, headers={"Authorization": "Bearer " + key})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_endpoint"
    rows = activity_rows(4)
    assert (rows[0]["status"], rows[0]["rule"], rows[0]["key_name"], rows[0]["path"]) == (
        404,
        "unknown_endpoint",
        "tester",
        "/v1/nothing",
    )


def test_catalog_rejection_is_400_with_rule_and_never_reaches_upstream(gateway, upstream):
    proc, key = gateway
    client = oa(proc, key)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="assistant",
            max_tokens=5000,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Gwctl-Agent": "triage"},
        )
    assert e.value.status_code == 400 and e.value.code == "max_output"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="local/llama-3.1-8b",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ],
        )
    assert e.value.code == "capability_vision"
    assert upstream.received == []
    rows = activity_rows(2)
    assert {r["rule"] for r in rows} == {"max_output", "capability_vision"}
    assert all(r["route_kind"] == "rejected" and r["cost"] is None for r in rows)


def test_unknown_model_404(gateway):
    proc, key = gateway
    with pytest.raises(openai.NotFoundError) as e:
        oa(proc, key).chat.completions.create(model="nothing-like-this", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_body_too_large_413(tmp_path, upstream, monkeypatch):
    run_cli("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY)
    key = run_cli("key", "create", "k", "--json").json()["key"]
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'a.db'}", "--body-limit", "1000")
    try:
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "local/x", "messages": [{"role": "user", "content": "x" * 5000}]},
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    finally:
        proc.terminate()


def test_upstream_errors_502_504_and_relayed_status(tmp_path, upstream):
    gw = run_cli
    gw("source", "add", "dead", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--auth-value", "x")
    gw("source", "add", "slow", "--base-url", upstream.url, "--auth-value", UP_KEY, "--read-timeout", "0.3")
    gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY)
    key = gw("key", "create", "k", "--json").json()["key"]
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'a.db'}")
    h = {"Authorization": f"Bearer {key}"}
    body = {"messages": [{"role": "user", "content": "x"}]}
    try:
        r = httpx.post(proc.url + "/v1/chat/completions", headers=h, json={**body, "model": "dead/m"}, timeout=20)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
        upstream.configure(delay_ms=1500)
        r = httpx.post(proc.url + "/v1/chat/completions", headers=h, json={**body, "model": "slow/m"}, timeout=20)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        upstream.configure(delay_ms=0, fail_status=429)
        r = httpx.post(proc.url + "/v1/chat/completions", headers=h, json={**body, "model": "local/m"}, timeout=20)
        assert r.status_code == 429 and "stand-in configured to fail" in r.text  # relayed as is
        assert r.headers.get("x-gwctl-request-id")
    finally:
        upstream.configure(fail_status=None)
        proc.terminate()


def test_hot_reload_prices_and_revoked_keys(gateway, store_path):
    proc, key = gateway
    client = oa(proc, key)
    client.chat.completions.create(model="local/llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
    assert run_cli("catalog", "set", "local/llama-3.1-8b", "--price", "input=6e-6").code == 0

    def new_price_applies():
        client.chat.completions.create(model="local/llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
        r = run_cli("activity", "list", "--json")
        assert r.code == 0, r.err
        return any(row["cost"] == "0.00585" for row in r.json())  # 800*6e-6 + 200*1.5e-6 + 50*1.5e-5

    assert wait_for(new_price_applies, timeout=10, interval=0.3)
    # an invalid store is logged and the last good one kept
    text = store_path.read_text()
    store_path.write_text(text + "\n[broken\n")
    assert wait_for(lambda: "keeping the last good one" in proc.log, timeout=10)
    client.chat.completions.create(model="local/llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
    store_path.write_text(text)
    assert run_cli("key", "revoke", "tester", "--yes").code == 0

    def refused():
        try:
            client.chat.completions.create(model="local/llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
            return False
        except openai.AuthenticationError:
            return True

    assert wait_for(refused, timeout=10, interval=0.3)


def test_sigterm_drains_inflight_stream_and_flushes_log(gateway, upstream):
    proc, key = gateway
    upstream.configure(chunk_delay_ms=300, stream_chunks=5)
    result = {}

    def stream():
        pieces = []
        for c in oa(proc, key).chat.completions.create(
            model="local/llama-3.1-8b", stream=True, messages=[{"role": "user", "content": "x"}]
        ):
            if c.choices:
                pieces.append(c.choices[0].delta.content or "")
        result["text"] = "".join(pieces)

    t = threading.Thread(target=stream)
    t.start()
    assert wait_for(lambda: upstream.received, timeout=10)  # the stream is under way upstream
    time.sleep(0.3)
    code = proc.terminate(timeout=30)
    t.join(timeout=30)
    upstream.configure(chunk_delay_ms=0, stream_chunks=3)
    assert code == 0
    assert result.get("text", "").startswith("Hello from the")
    rows = run_cli("activity", "list", "--json").json()
    assert len(rows) == 1 and rows[0]["status"] == 200 and rows[0]["cost"] is not None


def test_proxy_refuses_to_start_without_keys_and_no_auth_off_loopback(tmp_path):
    r = run_cli("proxy", "--port", "0")
    assert r.code == 1 and "gwctl key create" in r.err
    r = run_cli("proxy", "--no-auth", "--host", "0.0.0.0", "--port", "0")
    assert r.code == 1 and "non-loopback" in r.err


def test_models_endpoint_lists_enabled_refs(gateway):
    proc, key = gateway
    run_cli("model", "disable", "local/mistral-7b")

    def listed():
        ids = {m.id for m in oa(proc, key).models.list()}
        return ids if "local/mistral-7b" not in ids else None

    ids = wait_for(listed, timeout=10, interval=0.3)
    assert ids == {"local/llama-3.1-8b", "local/qwen/qwen3"}


def test_activity_summary_cli_by_each_dimension(gateway):
    proc, key = gateway
    client = oa(proc, key)
    for agent in ("triage", "triage/summarizer", "triage/summarizer"):
        client.chat.completions.create(
            model="local/llama-3.1-8b",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Gwctl-Agent": agent},
        )
    client.chat.completions.create(model="local/mistral-7b", messages=[{"role": "user", "content": "x"}])
    activity_rows(4)
    by_agent = {r["key"]: r for r in run_cli("activity", "summary", "--by", "agent", "--json").json()["rows"]}
    assert by_agent["triage"]["requests"] == 1 and by_agent["triage/summarizer"]["requests"] == 2
    assert Decimal(by_agent["triage/summarizer"]["cost"]) == PINNED * 2
    by_model = {r["key"]: r for r in run_cli("activity", "summary", "--by", "model", "--json").json()["rows"]}
    assert by_model["local/mistral-7b"]["unbilled"] == 1 and by_model["local/mistral-7b"]["billed"] == 0
    assert run_cli("activity", "summary", "--by", "key", "--json").json()["rows"][0]["key"] == "tester"
    day = run_cli("activity", "summary", "--by", "day", "--json").json()
    assert day["total"]["requests"] == 4 and Decimal(day["total"]["cost"]) == PINNED * 3
    text = run_cli("activity", "summary", "--by", "source")
    assert text.code == 0 and text.out.startswith("local\t4\t")
    assert run_cli("activity", "list", "--agent", "triage", "--json").json()[0]["agent"] == "triage"
    assert run_cli("activity", "summary", "--by", "colour").code == 1
    assert run_cli("activity", "list", "--since", "soon").code == 1


def test_workers_share_the_port(tmp_path, upstream):
    run_cli("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY)
    key = run_cli("key", "create", "k", "--json").json()["key"]
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'a.db'}", "--workers", "2")
    try:
        for _ in range(6):
            r = httpx.post(
                proc.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "local/m", "messages": []},
                timeout=20,
            )
            assert r.status_code == 200
    finally:
        assert proc.terminate() == 0
    rows = run_cli("activity", "list", "--activity", f"sqlite://{tmp_path / 'a.db'}", "--json").json()
    assert len(rows) == 6


def test_client_hangup_cancels_the_stream(gateway, upstream):
    proc, key = gateway
    upstream.configure(chunk_delay_ms=200, stream_chunks=20)
    try:
        with httpx.Client(timeout=20) as c:
            with c.stream(
                "POST",
                proc.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "local/llama-3.1-8b", "stream": True, "messages": []},
            ) as s:
                for line in s.iter_lines():
                    if line.startswith("data: {"):
                        break  # hang up after the first chunk
        rows = activity_rows(1)
        assert rows[0]["status"] == 499 and rows[0]["error"] == "client disconnected"
    finally:
        upstream.configure(chunk_delay_ms=0, stream_chunks=3)


def test_no_auth_on_loopback_serves_without_a_key(tmp_path, upstream):
    run_cli("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY)
    db = f"sqlite://{tmp_path / 'a.db'}"
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", db, "--no-auth")
    try:
        r = httpx.post(proc.url + "/v1/chat/completions", json={"model": "local/m", "messages": []}, timeout=20)
        assert r.status_code == 200
        assert upstream.received[-1].headers["authorization"] == f"Bearer {UP_KEY}"
    finally:
        assert proc.terminate() == 0
    rows = run_cli("activity", "list", "--activity", db, "--json").json()
    assert rows[0]["key_name"] is None and rows[0]["cost"] is None and rows[0]["route_kind"] == "managed"


def test_large_prompt_is_decided_and_forwarded(gateway, upstream):
    proc, key = gateway
    big = "lorem ipsum dolor sit amet " * 10000  # ~270 kB: decided off the event loop
    r = oa(proc, key).chat.completions.create(model="local/llama-3.1-8b", messages=[{"role": "user", "content": big}])
    assert r.choices[0].message.content
    assert upstream.received[-1].body["messages"][0]["content"] == big
    with pytest.raises(openai.BadRequestError) as e:  # the context check still applies
        oa(proc, key).chat.completions.create(
            model="local/llama-3.1-8b", messages=[{"role": "user", "content": big * 2}]
        )
    assert e.value.code == "context_size"


def test_upstreams_are_reached_through_the_egress_proxy_in_the_environment(tmp_path, upstream):
    """HTTP_PROXY in the gateway's environment (as httpx honours it for source test): the request
    goes to the proxy in absolute form, answers and is billed as usual; NO_PROXY bypasses it."""
    from egress import EgressProxy

    add_priced_local(upstream)
    key = run_cli("key", "create", "tester", "--json").json()["key"]
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    store = tmp_path / "cfg" / "gwctl.toml"
    with EgressProxy().in_thread() as egress:
        for env, through in (
            ({"HTTP_PROXY": egress.url("ops:s3cret")}, True),
            ({"HTTP_PROXY": egress.url(), "NO_PROXY": "127.0.0.1"}, False),
        ):
            egress.seen.clear()
            upstream.clear()
            proc = ProxyProcess(store, activity, env=env)
            try:
                r = oa(proc, key).chat.completions.create(
                    model="local/llama-3.1-8b", messages=[{"role": "user", "content": "hi"}]
                )
                assert r.choices[0].message.content
                assert upstream.received[-1].headers["authorization"] == f"Bearer {UP_KEY}"
                if through:
                    assert [s.target for s in egress.seen] == [upstream.url + "/chat/completions"]
                    assert egress.seen[0].header("proxy-authorization") == ["Basic b3BzOnMzY3JldA=="]
                    assert "egress proxy: http via http://ops:***@127.0.0.1" in proc.log and "s3cret" not in proc.log
                else:
                    assert egress.seen == []
            finally:
                assert proc.terminate() == 0
    rows = activity_rows(2)
    assert [row["cost"] for row in rows] == [str(PINNED)] * 2


def test_an_unusable_egress_proxy_stops_the_gateway_at_start(tmp_path):
    import subprocess
    import sys

    assert run_cli("key", "create", "tester").code == 0
    out = subprocess.run(
        [sys.executable, "-m", "gwctl", "--store", str(tmp_path / "cfg" / "gwctl.toml"), "proxy", "--port", "0"],
        env={**os.environ, "HTTPS_PROXY": "socks5://u:pw@127.0.0.1:1080"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot use the egress proxy from the environment" in out.stderr and "socks5://" in out.stderr
    assert "pw@" not in out.stderr and "Traceback" not in out.stderr
