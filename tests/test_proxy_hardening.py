"""The proxy's hardening findings that live in the gateway itself (headers both ways, deep JSON,
finished streams, usage chunks, reloads), each against a real proxy process and a raw upstream."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from conftest import run_cli
from proxyrun import ProxyProcess, wait_for
from rawupstream import RawUpstream, json_reply

CHAT_OK = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


@pytest.fixture
def raw_upstream():
    up = RawUpstream(lambda rec: json_reply(CHAT_OK))
    yield up
    up.stop()


def _proxy(tmp_path, upstream_url: str, *source_args: str) -> tuple[ProxyProcess, str]:
    assert run_cli("source", "add", "up", "--base-url", upstream_url, *source_args).code == 0
    key = run_cli("key", "create", "k", "--json").json()["key"]
    return ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'activity.sqlite3'}"), key


def _raw_request(url: str, head_lines: list[bytes], body: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(line + b"\r\n" for line in head_lines)
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(req)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_source_headers_replace_client_copies_whatever_the_case(tmp_path, raw_upstream):
    """Finding 3: the source's credential and static headers replace any client copy; Connection-named
    headers are hop-by-hop; duplicates are forwarded, in order; header bytes go upstream as received."""
    proc, key = _proxy(
        tmp_path, raw_upstream.url, "--auth-header", "X-Up-Key", "--auth-value", "sekret-up", "--header", "X-Team: ml"
    )
    try:
        body = json.dumps({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}).encode()
        out = _raw_request(
            proc.url,
            [
                b"Authorization: Bearer " + key.encode(),
                b"x-up-key: client-copy",
                b"X-UP-KEY: client-copy-2",
                b"x-TEAM: evil",
                b"Connection: X-Hop, keep-alive",
                b"X-Hop: hop-value",
                b"X-Dup: a",
                b"X-Dup: b",
                b"X-Forwarded-For: 203.0.113.9",
                b"Forwarded: for=203.0.113.9",
                b"Via: 1.1 somewhere",
                b"X-Bytes: caf\xc3\xa9 \xff",
                b"Content-Type: application/json",
            ],
            body,
        )
        assert out.startswith(b"HTTP/1.1 200"), out[:300]
        seen = raw_upstream.received[-1]
        assert seen.values("x-up-key") == [b"sekret-up"]
        assert seen.values("x-team") == [b"ml"]
        assert seen.values("x-hop") == []
        assert seen.values("x-dup") == [b"a", b"b"]
        for name in ("x-forwarded-for", "forwarded", "via", "authorization"):
            assert seen.values(name) == [], name
        assert seen.values("x-bytes") == [b"caf\xc3\xa9 \xff"]
        assert key.encode() not in seen.head
    finally:
        proc.terminate()


def test_only_documented_response_headers_reach_the_client(tmp_path):
    """Finding 9: an upstream's internal headers stay behind; request ids, rate limits and API headers pass."""
    extra = [
        ("x-litellm-model-api-base", "http://10.1.2.3:8000"),
        ("Server", "uvicorn"),
        ("x-internal-host", "gpu-7"),
        ("x-request-id", "req-abc"),
        ("openai-processing-ms", "12"),
        ("x-ratelimit-remaining-requests", "9"),
        ("anthropic-ratelimit-tokens-remaining", "100"),
        ("Retry-After", "3"),
    ]
    up = RawUpstream(lambda rec: json_reply(CHAT_OK, headers=extra))
    proc, key = _proxy(tmp_path, up.url, "--auth-value", "sekret-up")
    try:
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "up/m", "messages": [{"role": "user", "content": "x"}]},
            timeout=20,
        )
        assert r.status_code == 200
        assert "x-litellm-model-api-base" not in r.headers and "x-internal-host" not in r.headers
        assert r.headers["server"] == "gwctl"
        assert r.headers["x-request-id"] == "req-abc" and r.headers["openai-processing-ms"] == "12"
        assert r.headers["x-ratelimit-remaining-requests"] == "9"
        assert r.headers["anthropic-ratelimit-tokens-remaining"] == "100"
        assert r.headers["retry-after"] == "3"
        assert r.headers["x-gwctl-request-id"]
    finally:
        proc.terminate()
        up.stop()


def _rows(tmp_path, n: int):
    def rows():
        r = run_cli("activity", "list", "--json", "--activity", f"sqlite://{tmp_path / 'activity.sqlite3'}")
        return r.json() if r.code == 0 and len(r.json()) >= n else None

    got = wait_for(rows, 15)
    assert got is not None, "activity rows did not appear"
    return got


def test_deep_json_is_refused_400_with_a_row(tmp_path, raw_upstream):
    """Finding 4: a body nested ~300 levels deep parsed, then failed when re-serialised (500, no row)."""
    proc, key = _proxy(tmp_path, raw_upstream.url, "--auth-value", "sekret-up")
    try:
        deep = (
            b'{"model":"up/m","stream":true,"messages":[{"role":"user","content":"x"}],"x":'
            + b"[" * 300
            + b"]" * 300
            + b"}"
        )
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            content=deep,
            timeout=20,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json" and "128 levels" in r.json()["error"]["message"]
        rows = _rows(tmp_path, 1)
        assert rows[0]["status"] == 400 and rows[0]["rule"] == "invalid_json"
        assert raw_upstream.received == []
        # just under the limit still goes through (and is re-serialised for the injected stream options)
        ok = b'{"model":"up/m","messages":[{"role":"user","content":"x"}],"x":' + b"[" * 120 + b"]" * 120 + b"}"
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            content=ok,
            timeout=20,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()


def test_dry_run_refuses_deep_json_like_the_proxy(tmp_path):
    req = tmp_path / "deep.json"
    req.write_text('{"messages":[],"x":' + "[" * 300 + "]" * 300 + "}")
    r = run_cli("route", "dry-run", "--model", "a/b", "--request", str(req))
    assert r.code == 1 and "128 levels" in r.err and "Traceback" not in r.err
    req.write_text("[" * 100000 + "]" * 100000)
    r = run_cli("route", "dry-run", "--model", "a/b", "--request", str(req))
    assert r.code == 1 and "levels deep" in r.err and "Traceback" not in r.err


def test_an_internal_error_still_gets_its_row(tmp_path):
    """Every request, whatever its fate, gets its activity row: also a 500 from a bug of ours."""
    from pathlib import Path

    from gwctl.core.config import Snapshot
    from gwctl.proxy.http import Request
    from gwctl.proxy.server import Gateway, ProxyConfig

    rows = []
    gw = Gateway(ProxyConfig(Path(tmp_path / "none.toml"), None), Snapshot())
    gw.writer = type("W", (), {"submit": staticmethod(rows.append)})()
    req = Request(
        None,
        "POST",
        "/v1/chat/completions",
        "",
        [("X-Gwctl-Agent", "triage")],
        {"x-gwctl-agent": "triage"},
        b"{}",
        True,
        False,
        False,
    )
    reply = gw.internal_error(req, KeyError("boom"))
    assert reply.status == 500 and b"internal_error" in reply.body
    assert len(rows) == 1 and rows[0][9] == 500 and rows[0][3] == "triage" and rows[0][14] == "internal_error"
    from gwctl.activity.entry import LogEntry

    entry = LogEntry(*rows[0])  # the row submitted is a LogEntry in its wire form (field order)
    assert entry.status == 500 and entry.agent == "triage" and entry.rule == "internal_error"
    assert entry.route_kind == "rejected" and entry.path == "/v1/chat/completions" and entry.stream is False


def test_an_internal_error_keeps_the_request_id_key_and_span_the_handler_began(tmp_path):
    """A bug in the middle of a request: its row and its answer carry the request id the handler gave it,
    and the span the handler started ends with the 500; when a stage already recorded the request's row,
    the answer keeps its id and no second row is written."""
    from pathlib import Path

    from gwctl.activity.entry import LogEntry
    from gwctl.core.config import Snapshot
    from gwctl.proxy.flow import Flow
    from gwctl.proxy.http import Request
    from gwctl.proxy.server import Gateway, ProxyConfig

    rows = []
    gw = Gateway(ProxyConfig(Path(tmp_path / "none.toml"), None), Snapshot())
    gw.writer = type("W", (), {"submit": staticmethod(rows.append)})()
    ended = []

    class Trace:
        def end(self, flow, status, rule, error, kind, agent=None):
            ended.append((flow.rid, status, rule))
            flow.trace = None

    def request():
        return Request(None, "POST", "/v1/messages", "", [], {}, b"{}", True, False, False)

    req = request()
    flow = req.context = Flow(req, "rid-of-the-handler", 0.0, gw.snapshot)
    flow.key_name, flow.trace = "ci", Trace()
    reply = gw.internal_error(req, KeyError("boom"))
    assert reply.status == 500 and dict(reply.headers)["X-Gwctl-Request-Id"] == "rid-of-the-handler"
    assert json.loads(reply.body)["type"] == "error"  # the client's API's error shape
    entry = LogEntry(*rows[-1])
    assert (entry.request_id, entry.key_name, entry.rule) == ("rid-of-the-handler", "ci", "internal_error")
    assert ended == [("rid-of-the-handler", 500, "internal_error")]

    req = request()
    req.context = done = Flow(req, "rid-recorded", 0.0, gw.snapshot)
    done.recorded = True
    reply = gw.internal_error(req, KeyError("boom"))
    assert len(rows) == 1 and reply.status == 500 and b"internal_error" in reply.body
    assert dict(reply.headers)["X-Gwctl-Request-Id"] == "rid-recorded"


def _chunk(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


LITELLM_EVENTS = [
    _chunk(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}],
        }
    ),
    _chunk(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}],
        }
    ),
    # LiteLLM's usage chunk: a choice with an empty delta, not "choices": []
    _chunk(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
    ),
    b"data: [DONE]\n\n",
]


def test_a_stream_whose_end_comes_late_is_a_success_when_the_client_leaves_after_done(tmp_path):
    """Finding 7: LiteLLM writes the chunked terminator ~0.1-0.3 ms after [DONE]; a client that closes right
    after [DONE] was logged 499. Here the terminator comes 1.5 s late and the client hangs up at [DONE]."""
    from rawupstream import sse_reply

    up = RawUpstream(lambda rec: sse_reply(LITELLM_EVENTS, end_delay=1.5, event_delay=0.01))
    proc, key = _proxy(tmp_path, up.url, "--auth-value", "sekret-up")
    try:
        host, port = proc.url.split("//")[1].split(":")
        body = json.dumps({"model": "up/m", "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode()
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
                + key.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            got = b""
            while b"[DONE]" not in got:
                piece = s.recv(65536)
                assert piece, got
                got += piece
        assert b"Hel" in got and b'"usage"' not in got  # finding 8: LiteLLM's usage chunk hidden too
        rows = _rows(tmp_path, 1)
        assert rows[0]["status"] == 200 and not rows[0]["error"], rows[0]
        assert rows[0]["usage"]["input_tokens"] == 7 and rows[0]["usage"]["output_tokens"] == 2
    finally:
        proc.terminate()
        up.stop()


def test_openai_sdk_stream_through_a_litellm_shaped_upstream(tmp_path):
    """The openai SDK against an upstream in LiteLLM's shape: every stream is whole, logged 200, no usage leak."""
    import openai

    from rawupstream import sse_reply

    up = RawUpstream(lambda rec: sse_reply(LITELLM_EVENTS, end_delay=0.2))
    proc, key = _proxy(tmp_path, up.url, "--auth-value", "sekret-up")
    try:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0, timeout=20)
        for _ in range(5):
            chunks = list(
                client.chat.completions.create(model="up/m", stream=True, messages=[{"role": "user", "content": "x"}])
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
            assert all(c.usage is None for c in chunks)
        rows = _rows(tmp_path, 5)
        assert [r["status"] for r in rows] == [200] * 5
        assert all(r["usage"]["input_tokens"] == 7 for r in rows)
    finally:
        proc.terminate()
        up.stop()


def test_a_failed_reload_is_retried_until_the_revocation_applies(tmp_path, monkeypatch, caplog):
    """Finding 2: an OSError while loading a changed store was not retried, so a revoked key kept working
    until the store changed again. Now the failure is logged, shown by /healthz, and retried."""
    import gwctl.proxy.server as server
    from gwctl.core import keys as gwkeys
    from gwctl.store.file import load

    store = tmp_path / "cfg" / "gwctl.toml"
    key = run_cli("key", "create", "k", "--json").json()["key"]
    gw = server.Gateway(server.ProxyConfig(store, None, reload_interval=0.01), load(store).snapshot)
    assert gw._keys.verify(gw.snapshot, key) == "k"
    assert run_cli("key", "revoke", "k", "--yes").code == 0

    import gwctl.proxy.reload as reload

    real_load, calls = reload.load, []

    def flaky(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real_load(path)

    monkeypatch.setattr(reload, "load", flaky)
    assert gw.reload_if_changed() is False  # the read failed: the last good store stays in use ...
    assert gw.health()["status"] == "degraded"
    assert gw.health()["store"]["reload"] == "failing" and "Too many open files" in gw.health()["store"]["error"]
    assert any("cannot be loaded" in r.message for r in caplog.records)
    assert wait_for(lambda: gw.reload_if_changed(), 5)  # ... until the retry succeeds
    assert gwkeys.from_headers(None, key) and gw._keys.verify(gw.snapshot, key) is None  # revoked
    assert gw.health() == {"status": "ok", "store": {"reload": "ok"}}


def test_a_store_that_goes_missing_keeps_the_last_good_one(tmp_path):
    import gwctl.proxy.server as server
    from gwctl.store.file import load

    store = tmp_path / "cfg" / "gwctl.toml"
    key = run_cli("key", "create", "k", "--json").json()["key"]
    gw = server.Gateway(server.ProxyConfig(store, None, reload_interval=0.01), load(store).snapshot)
    store.rename(store.with_suffix(".bak"))
    assert gw.reload_if_changed() is False and gw._keys.verify(gw.snapshot, key) == "k"
    assert "missing" in gw.health()["store"]["error"]
    store.with_suffix(".bak").rename(store)
    assert wait_for(lambda: gw.health()["status"] == "ok" or gw.reload_if_changed(), 5)


def test_access_log_lines_cannot_be_forged_by_a_model_string():
    """Finding 10: a model string with newlines or ANSI escapes was written raw into --access-log."""
    from datetime import datetime, timezone

    from gwctl.activity.child import access_line
    from gwctl.activity.entry import LogRow

    evil = "m\n2026-12-01T00:00:00.000+00:00 fake 200 /v1/chat/completions agent=- model=x managed 1.0ms\x1b[2J"
    line = access_line(
        LogRow(
            datetime.now(timezone.utc),
            "rid",
            None,
            "a b",
            "managed",
            None,
            evil,
            None,
            "/v1/chat/completions",
            200,
            1.5,
            (),
            None,
            "r\r1",
            False,
            None,
            None,
        )
    )
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "\x1b" not in line and "\r" not in line
    assert len(line.split(" ")) == 9 and "agent=a\\x20b" in line and line.rstrip().endswith("rule=r\\x0d1")


def test_a_reload_to_a_store_with_validate_errors_keeps_the_last_good_one(tmp_path):
    """The proxy refuses to start on what validate calls an error; a running proxy refuses to reload to it."""
    import gwctl.proxy.server as server
    from gwctl.store.file import load

    store = tmp_path / "cfg" / "gwctl.toml"
    assert run_cli("source", "add", "up", "--base-url", "http://127.0.0.1:9/v1", "--auth-value", "k").code == 0
    gw = server.Gateway(server.ProxyConfig(store, None), load(store).snapshot)
    store.write_text(store.read_text().replace("http://127.0.0.1:9/v1", "http://user:s3cret@127.0.0.1:9/v1"))
    assert gw.reload_if_changed() is False
    health = gw.health()
    assert health["status"] == "degraded" and "validate" in health["store"]["error"]
    assert "s3cret" not in json.dumps(health)
    assert gw.snapshot.sources["up"].base_url == "http://127.0.0.1:9/v1"


def test_dry_run_warns_when_the_proxy_would_not_start_on_the_store(tmp_path):
    store = tmp_path / "cfg" / "gwctl.toml"
    assert run_cli("source", "add", "up", "--base-url", "http://127.0.0.1:9/v1").code == 0
    r = run_cli("route", "dry-run", "--model", "up/m")
    assert r.code == 0 and "validate" not in r.err
    store.write_text(store.read_text().replace("http://127.0.0.1:9/v1", "http://user:s3cret@127.0.0.1:9/v1"))
    r = run_cli("route", "dry-run", "--model", "up/m")
    assert "the proxy will not start on it" in r.err and "s3cret" not in r.err + r.out


def test_a_source_can_pass_on_more_response_headers(tmp_path, store_path):
    extra = [("x-litellm-model-api-base", "http://10.1.2.3:8000"), ("X-Backend-Version", "7")]
    up = RawUpstream(lambda rec: json_reply(CHAT_OK, headers=extra))
    assert run_cli("source", "add", "up", "--base-url", up.url, "--response-header", "X-Backend-Version").code == 0
    assert run_cli("source", "show", "up", "--json").json()["response_headers"] == ["x-backend-version"]
    assert 'response_headers = ["x-backend-version"]' in store_path.read_text()
    assert run_cli("source", "edit", "up", "--response-header", "bad header").code != 0
    key = run_cli("key", "create", "k", "--json").json()["key"]
    proc = ProxyProcess(store_path, f"sqlite://{tmp_path / 'activity.sqlite3'}")
    try:
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "up/m", "messages": [{"role": "user", "content": "x"}]},
            timeout=20,
        )
        assert r.headers["x-backend-version"] == "7" and "x-litellm-model-api-base" not in r.headers
    finally:
        proc.terminate()
        up.stop()
    assert run_cli("source", "edit", "up", "--response-header", "").code == 0
    assert "response_headers" not in store_path.read_text()


def test_a_store_caught_mid_write_empty_is_not_taken(tmp_path):
    """An editor that truncates and then writes: a reload that sees the empty file must not drop every key."""
    import gwctl.proxy.server as server
    from gwctl.store.file import load

    store = tmp_path / "cfg" / "gwctl.toml"
    key = run_cli("key", "create", "k", "--json").json()["key"]
    gw = server.Gateway(server.ProxyConfig(store, None), load(store).snapshot)
    text = store.read_text()
    store.write_text("")
    assert gw.reload_if_changed() is False and gw._keys.verify(gw.snapshot, key) == "k"
    assert "empty" in gw.health()["store"]["error"]
    store.write_text(text + "\n[broken\n")
    assert gw.reload_if_changed() is False and gw._keys.verify(gw.snapshot, key) == "k"


def test_a_bug_mid_stream_still_records_the_row_with_what_was_metered(monkeypatch):
    """A bug of ours while relaying a stream (the HTTP server then cuts the stream): the upstream is hung up
    on, and the request still gets its row, 500 ``internal_error``, with the usage metered before the bug."""
    import asyncio

    from gwctl.core.config import Snapshot
    from gwctl.proxy import relay
    from gwctl.proxy.flow import Flow
    from gwctl.proxy.meter import StreamMeter

    sent = []

    class Client:  # the request's stream toward the client
        async def write(self, data):
            sent.append(data)

        def end(self):
            sent.append(None)

    class Req:
        path, headers = "/v1/chat/completions", {}

        def start_stream(self, status, headers):
            return Client()

    class Upstream:
        status, aborted = 200, False

        def __init__(self, chunks):
            self.chunks = chunks

        def __aiter__(self):
            return self._gen()

        async def _gen(self):
            for c in self.chunks:
                yield c

        def abort(self):
            self.aborted = True

    usage = _chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
    up = Upstream([_chunk({"choices": [{"delta": {"content": "hi"}}]}) + usage, b"data: boom\n\n"])
    feed = StreamMeter.feed

    def buggy(self, chunk):
        if b"boom" in chunk:
            raise KeyError("a bug")
        return feed(self, chunk)

    monkeypatch.setattr(StreamMeter, "feed", buggy)
    recorded = []
    recorder = type("R", (), {"metrics": None, "record": lambda self, *a: recorded.append(a)})()
    flow = Flow(Req(), "rid", 0.0, Snapshot())  # type: ignore[arg-type]
    flow.api = "chat"
    with pytest.raises(KeyError):
        asyncio.run(relay.relay_stream(flow, up, [], recorder))
    assert up.aborted and sent and sent[0].startswith(b"data: ")
    [(f, status, use, rule, error)] = recorded
    assert (f, status, rule) == (flow, 500, "internal_error") and "KeyError" in error
    assert use is not None and (use.input_tokens, use.output_tokens) == (7, 2)


def test_a_bug_translating_a_whole_answer_records_one_row_with_its_usage():
    """The upstream answered whole and a bug of ours broke its translation: the row says 500 internal_error
    and keeps the usage the answer carried (the tokens were spent); the bug goes on to the HTTP server,
    whose internal_error answer then adds no second row."""
    from gwctl.core.config import Snapshot
    from gwctl.proxy.flow import Flow, InFlight
    from gwctl.proxy.forward import Forwarder

    recorded = []
    recorder = type("R", (), {"record": lambda self, *a: recorded.append(a)})()

    class Broken:
        warnings = ()

        def answer(self, status, data):
            raise KeyError("a bug")

    req = type("Req", (), {"path": "/v1/messages", "headers": {}})()
    flow = Flow(req, "rid", 0.0, Snapshot())  # type: ignore[arg-type]
    flow.api, flow.translation = "chat", Broken()  # type: ignore[assignment]
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    with pytest.raises(KeyError):
        Forwarder({}, recorder, InFlight())._reply(flow, 200, body.encode(), [], 0.0)  # type: ignore[arg-type]
    [(f, status, usage, rule, error)] = recorded
    assert (f, status, rule) == (flow, 500, "internal_error") and "KeyError" in error
    assert (usage.input_tokens, usage.output_tokens) == (5, 1)


def test_a_request_and_its_flow_do_not_outlive_the_answer_as_a_cycle():
    """The flow rides on its request (for a bug's row) and points back at it: the server drops that link once
    the request is answered, so a request's objects are freed by their reference counts, not left to the
    cyclic garbage collector (which cost ~5 µs a request in collections before)."""
    import asyncio
    import gc

    from gwctl.core.config import Snapshot
    from gwctl.proxy.flow import Flow
    from gwctl.proxy.http import HttpServer, Reply
    from test_proxy_http_h11 import FakeTransport

    def handler(request):
        request.context = Flow(request, "rid-cycle", 0.0, Snapshot())
        return Reply(200, b"{}")

    async def main():
        server = HttpServer(handler, body_limit=1000)
        conn = server()
        t = FakeTransport(asyncio.get_running_loop())
        t.protocol = conn
        conn.connection_made(t)
        conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}" * 3)
        for _ in range(20):
            await asyncio.sleep(0)
        assert bytes(t.out).count(b"HTTP/1.1 200") == 3
        await server.shutdown(0)

    gc.collect()
    gc.disable()
    try:
        asyncio.run(main())
        left = [o for o in gc.get_objects() if type(o) is Flow and o.rid == "rid-cycle"]
        assert left == []  # freed without a collection
    finally:
        gc.enable()
