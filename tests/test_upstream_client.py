"""The proxy's upstream client (gwctl.proxy.upstream) against real servers on 127.0.0.1.

Two kinds of server: the stand-in upstream (real provider shapes) and small
raw asyncio servers written here, each misbehaving in one specific way.
Every test runs on the default asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time

import pytest
import trustme
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress import EgressProxy
from gwctl.proxy.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gwctl.testing.thread import StandinConfig, start_standin

HOST = "127.0.0.1"
KEY = "sk-client-test"
CHAT = {"model": "m-one", "messages": [{"role": "user", "content": "Hello there, upstream."}]}
AUTH = [("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json")]


# --------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """run(async_fn) on a fresh loop of the parametrized kind, bounded by a timeout."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def _run(fn, timeout: float = 10.0):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(fn(), timeout))

    return _run


@pytest.fixture(scope="module")
def standin():
    with start_standin(StandinConfig(models=["m-one", "org/m-two"], api_key=KEY)) as h:
        yield h


@pytest.fixture
def up(standin):
    standin.clear()
    yield standin
    standin.configure(fail_status=None, chunk_delay_ms=0, stream_chunks=3, delay_ms=0)
    standin.clear()


class Req:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, raw: bytes):
        self.method, self.target, self.headers, self.body, self.raw = method, target, headers, body, raw

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_request(reader: asyncio.StreamReader) -> Req | None:
    """One HTTP/1.1 request with a Content-Length body, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].decode("utf-8", "surrogateescape").split("\r\n")
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    n = sum(int(v) for k, v in headers if k.lower() == "content-length")
    body = await reader.readexactly(n) if n else b""
    return Req(method, target, headers, body, head + body)


def response(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class Raw:
    """A raw asyncio server: handler(server, reader, writer, conn_no) per connection."""

    def __init__(self, handler, ssl_ctx: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.requests: list[Req] = []
        self.closed_by_peer = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "Raw":
        self.server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.ssl_ctx, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for w in self._writers:
            w.transport.abort()

    def url(self, path: str = "/v1/x", scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(self, reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    async def serve_keepalive(self, reader, writer, answer, limit: int = 1000) -> None:
        """Answer requests on one connection until EOF (bounded)."""
        for _ in range(limit):
            req = await read_request(reader)
            if req is None:
                self.closed_by_peer.set()
                return
            self.requests.append(req)
            out = answer(req)
            if asyncio.iscoroutine(out):
                out = await out
            if out is not None:
                writer.write(out)
                await writer.drain()


def keepalive(answer):
    async def handler(srv, reader, writer, n):
        await srv.serve_keepalive(reader, writer, answer)

    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Against the stand-in
# --------------------------------------------------------------------------


def test_chat_post_status_headers_json_body(run, up):
    async def go():
        pool = UpstreamPool()
        try:
            body = json.dumps(CHAT).encode()
            async with await pool.request("POST", up.url + "/chat/completions", AUTH + [("X-Trace", "abc")], body) as r:
                assert r.status == 200
                assert r.reason == "OK"
                assert r.header("content-type").startswith("application/json")
                assert r.header("CONTENT-LENGTH") == r.header("Content-Length")
                assert r.header("x-missing") is None
                data = json.loads(await r.read())
            assert data["object"] == "chat.completion"
            assert data["usage"]["completion_tokens"] == 3
            return body
        finally:
            await pool.close()

    body = run(go)
    (seen,) = up.received
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.raw == body
    assert seen.headers["x-trace"] == "abc"
    assert seen.headers["host"] == f"127.0.0.1:{up.port}"
    assert seen.headers["content-length"] == str(len(body))


def test_streaming_pieces_arrive_before_the_stream_ends(run, up):
    up.configure(chunk_delay_ms=40, stream_chunks=5)

    async def go():
        pool = UpstreamPool()
        try:
            stamps, pieces = [], []
            r = await pool.request(
                "POST", up.url + "/chat/completions", AUTH, json.dumps({**CHAT, "stream": True}).encode()
            )
            async with r:
                assert r.status == 200
                assert r.header("content-type").startswith("text/event-stream")
                async for piece in r:
                    stamps.append(time.perf_counter())
                    pieces.append(piece)
            return stamps, b"".join(pieces)
        finally:
            await pool.close()

    stamps, text = run(go)
    assert len(stamps) >= 3
    # 5 content events + usage + [DONE], paced 40 ms apart: the first piece
    # must come long before the last, i.e. nothing was buffered to the end.
    assert stamps[-1] - stamps[0] > 0.15
    events = [e for e in text.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    contents = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if json.loads(e[6:])["choices"]
    )
    assert contents == "Hello from the gwctl stand-in"


def test_models_get(run, up):
    async def go():
        pool = UpstreamPool()
        try:
            r = await pool.request("GET", up.url + "/models", [("Authorization", f"Bearer {KEY}")], b"")
            async with r:
                return r.status, json.loads(await r.read())
        finally:
            await pool.close()

    status, data = run(go)
    assert status == 200
    assert [m["id"] for m in data["data"]] == ["m-one", "org/m-two"]
    (seen,) = up.received
    assert seen.method == "GET" and "content-length" not in seen.headers


def test_error_status_and_body_are_relayed(run, up):
    up.configure(fail_status=429)

    async def go():
        pool = UpstreamPool()
        try:
            r = await pool.request("POST", up.url + "/chat/completions", AUTH, json.dumps(CHAT).encode())
            async with r:
                return r.status, json.loads(await r.read())
        finally:
            await pool.close()

    status, data = run(go)
    assert status == 429
    assert "429" in data["error"]["message"]


def test_wrong_key_is_a_status_not_an_exception(run, up):
    async def go():
        pool = UpstreamPool()
        try:
            r = await pool.request("GET", up.url + "/models", [("Authorization", "Bearer nope")], b"")
            async with r:
                return r.status
        finally:
            await pool.close()

    assert run(go) == 401


def test_sequential_requests_reuse_one_connection_standin(run, up):
    async def go():
        pool = UpstreamPool()
        try:
            for i in range(30):
                r = await pool.request("POST", up.url + "/chat/completions", AUTH, json.dumps(CHAT).encode())
                async with r:
                    assert r.status == 200
                    await r.read()
            return pool.connections_opened, pool.idle_count()
        finally:
            await pool.close()

    assert run(go) == (1, 1)
    assert len(up.received) == 30


# --------------------------------------------------------------------------
# Raw servers: framing
# --------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection_server_side(run):
    async def go():
        async with Raw(keepalive(lambda req: response(req.body[::-1]))) as srv:
            pool = UpstreamPool()
            for i in range(50):
                r = await pool.request("POST", srv.url(f"/echo?i={i}"), [], f"body-{i}".encode())
                async with r:
                    assert await r.read() == f"body-{i}".encode()[::-1]
            await pool.close()
            await asyncio.wait_for(srv.closed_by_peer.wait(), 2)
            return srv.connections, [q.target for q in srv.requests]

    conns, targets = run(go)
    assert conns == 1
    assert targets == [f"/echo?i={i}" for i in range(50)]


def test_request_head_is_exact_and_framing_headers_are_ours(run):
    async def go():
        async with Raw(keepalive(lambda req: response())) as srv:
            pool = UpstreamPool()
            given_headers = [
                ("Host", "evil.example"),
                ("Content-Length", "999"),
                ("connection", "close"),
                ("Transfer-Encoding", "chunked"),
                ("X-A", "1"),
                ("x-a", "2"),
                ("Authorization", "Bearer t"),
            ]
            async with await pool.request("POST", srv.url("/p/q?x=1&y=%20"), given_headers, b"hello") as r:
                await r.read()
            async with await pool.request("GET", f"http://{HOST}:{srv.port}", [], b"") as r:
                await r.read()
            async with await pool.request("GET", f"http://{HOST}:{srv.port}?q=1#frag", [], b"") as r:
                await r.read()
            await pool.close()
            return srv.port, srv.requests

    port, reqs = run(go)
    assert (
        reqs[0].raw
        == (
            f"POST /p/q?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: 1\r\nx-a: 2\r\n"
            f"Authorization: Bearer t\r\nContent-Length: 5\r\n\r\nhello"
        ).encode()
    )
    assert reqs[1].raw == f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    assert reqs[2].target == "/?q=1"


def test_default_port_is_left_out_of_host_header():
    from gwctl.proxy.upstream.target import _split_url

    cache: dict = {}
    t, path = _split_url("https://API.Example.com/v1/chat", cache)
    assert (t.key, t.host_header, path) == (("https", "api.example.com", 443), "api.example.com", "/v1/chat")
    t, path = _split_url("http://h:8080", cache)
    assert (t.key, t.host_header, path) == (("http", "h", 8080), "h:8080", "/")
    t, _ = _split_url("http://[::1]:9000/x", cache)
    assert (t.key, t.host_header) == (("http", "::1", 9000), "[::1]:9000")
    for bad in ("ftp://h/x", "h/x", "http://u:p@h/x", "http://h:99999/", "http://h:x/", "http:///x"):
        with pytest.raises(ValueError):
            _split_url(bad, cache)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(alphabet="AbZ-_\r\n:é ", min_size=1, max_size=6),
    value=st.text(alphabet="ab \t\r\n\x00é", max_size=8),
)
def test_header_validation_rejects_cr_lf_before_connecting(name, value):
    """A bad head raises ValueError without touching the network; a good one
    gets as far as connecting (nothing listens: a connect error)."""
    port = free_port()
    bad_name = not all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    bad_value = any(c in value for c in "\r\n\x00")

    async def go():
        pool = UpstreamPool()
        try:
            await pool.request("POST", f"http://{HOST}:{port}/x", [(name, value)], b"{}", connect_timeout=2)
        finally:
            await pool.close()

    if bad_name or bad_value:
        with pytest.raises(ValueError):
            asyncio.run(asyncio.wait_for(go(), 10))
    else:
        with pytest.raises(UpstreamConnectError):
            asyncio.run(asyncio.wait_for(go(), 10))


def test_cr_lf_in_path_or_method_is_rejected(run):
    async def go():
        pool = UpstreamPool()
        for method, url in (
            ("GET", f"http://{HOST}:1/a\r\nX: y"),
            ("GE T", f"http://{HOST}:1/"),
            ("GET", f"http://{HOST}:1/a b"),
        ):
            with pytest.raises(ValueError):
                await pool.request(method, url, [], b"")
        await pool.close()
        return True

    assert run(go)


def chunked_answer(pieces: list[bytes], exts: bool = False) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    for p in pieces:
        out += f"{len(p):x}{';ext=1' if exts else ''}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=12),
    exts=st.booleans(),
)
def test_chunked_body_with_odd_boundaries(pieces, cuts, exts):
    """The server writes the chunked answer cut at arbitrary byte positions;
    the de-chunked body is exact and the connection is reused after."""
    wire = chunked_answer(pieces, exts)
    bounds = sorted({c for c in cuts if c < len(wire)})

    async def answer(req):
        if req.target == "/second":
            return response(b"again")
        last = 0
        for b in bounds + [len(wire)]:
            writer_ref[0].write(wire[last:b])
            await writer_ref[0].drain()
            await asyncio.sleep(0)
            last = b
        return None

    writer_ref: list = []

    async def handler(srv, reader, writer, n):
        writer_ref.append(writer)
        await srv.serve_keepalive(reader, writer, answer)

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            async with await pool.request("GET", srv.url(), [], b"") as r:
                streamed = [p async for p in r]
            async with await pool.request("GET", srv.url("/second"), [], b"") as r:
                second = await r.read()
            await pool.close()
            return streamed, second, srv.connections

    streamed, second, conns = asyncio.run(asyncio.wait_for(go(), 10))
    assert b"".join(streamed) == b"".join(pieces)
    assert all(streamed)  # never an empty piece
    assert second == b"again"
    # Reused -- unless a cut fell inside the final CR LF CR LF: a last read made only of CR/LF
    # octets cannot be told from bytes after the answer, so the client opens a new connection.
    assert conns == 1 or any(len(wire) - 4 <= b < len(wire) for b in bounds)


def test_close_delimited_body(run):
    body = b"x" * 70_000 + b"end"

    async def handler(srv, reader, writer, n):
        req = await read_request(reader)
        srv.requests.append(req)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(0, len(body), 10_000):
            writer.write(body[i : i + 10_000])
            await writer.drain()
        writer.close()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            results = []
            for _ in range(2):
                async with await pool.request("GET", srv.url(), [], b"") as r:
                    results.append(await r.read())
            idle = pool.idle_count()
            await pool.close()
            return results, idle, srv.connections

    results, idle, conns = run(go)
    assert results == [body, body]
    assert idle == 0 and conns == 2  # never reused


def test_http10_response_is_close_delimited(run):
    async def handler(srv, reader, writer, n):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nold school")
        await writer.drain()
        writer.close()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            async with await pool.request("GET", srv.url(), [], b"") as r:
                body = await r.read()
            idle = pool.idle_count()
            await pool.close()
            return body, idle

    assert run(go) == (b"old school", 0)


def test_truncated_content_length_body_is_a_protocol_error(run):
    async def handler(srv, reader, writer, n):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a bit")
        await writer.drain()
        writer.close()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            r = await pool.request("GET", srv.url(), [], b"")
            assert r.status == 200
            with pytest.raises(UpstreamProtocolError) as info:
                await r.read()
            r.release()
            assert pool.idle_count() == 0
            await pool.close()
            return info.value

    err = run(go)
    assert err.kind == "protocol" and "before the response completed" in err.message


def test_release_before_the_body_is_complete_closes_the_connection(run):
    async def answer(req):
        if req.target == "/partial":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
        return response()

    async def go():
        async with Raw(keepalive(answer)) as srv:
            pool = UpstreamPool()
            r = await pool.request("GET", srv.url("/partial"), [], b"")
            r.release()
            with pytest.raises(UpstreamProtocolError):
                await r.read()
            idle = pool.idle_count()
            async with await pool.request("GET", srv.url(), [], b"") as r:
                assert await r.read() == b"ok"
            await pool.close()
            return idle, srv.connections

    assert run(go) == (0, 2)


def test_connection_close_from_server_is_not_reused(run):
    async def go():
        async with Raw(keepalive(lambda req: response(extra="Connection: close\r\n"))) as srv:
            pool = UpstreamPool()
            for _ in range(3):
                async with await pool.request("GET", srv.url(), [], b"") as r:
                    assert await r.read() == b"ok"
            idle = pool.idle_count()
            await pool.close()
            return srv.connections, idle

    assert run(go) == (3, 0)


def test_head_204_304_and_1xx(run):
    def answer(req):
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n"
        if req.target == "/204":
            return b"HTTP/1.1 204 No Content\r\nX-K: v\r\n\r\n"
        if req.target == "/304":
            return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
        if req.target == "/100":
            return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(b"final")
        return response(b"plain")

    async def go():
        async with Raw(keepalive(answer)) as srv:
            pool = UpstreamPool()
            seen = []
            for method, path in (
                ("HEAD", "/h"),
                ("GET", "/after-head"),
                ("GET", "/204"),
                ("GET", "/304"),
                ("GET", "/100"),
                ("HEAD", "/h2"),
                ("GET", "/last"),
            ):
                async with await pool.request(method, srv.url(path), [], b"") as r:
                    seen.append((r.status, await r.read(), r.header("content-length"), r.header("link")))
            await pool.close()
            return seen, srv.connections

    seen, conns = run(go)
    assert seen == [
        (200, b"", "1234", None),
        (200, b"plain", "5", None),
        (204, b"", None, None),
        (304, b"", "50", None),
        (200, b"final", "5", None),  # the interim answers' headers are not mixed in
        (200, b"", "1234", None),
        (200, b"plain", "5", None),
    ]
    assert conns == 1  # every one of them left the connection reusable


def test_switching_protocols_is_a_protocol_error(run):
    async def go():
        answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        async with Raw(keepalive(lambda req: answer)) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamProtocolError):
                await pool.request("GET", srv.url(), [], b"")
            await pool.close()
            return True

    assert run(go)


# --------------------------------------------------------------------------
# Raw servers: what llhttp lets through and the client refuses (found by
# tests/test_upstream_differential.py against h11)
# --------------------------------------------------------------------------


def _one_answer(run, wire: bytes, method: str = "GET"):
    """Serve ``wire`` (one write) to a request; (status, headers, body or the error, pooled?)."""

    async def go():
        async with Raw(keepalive(lambda req: wire)) as srv:
            pool = UpstreamPool()
            try:
                r = await pool.request(method, srv.url(), [], b"")
                try:
                    out = (r.status, r.headers, await r.read())
                except UpstreamProtocolError as exc:
                    out = (r.status, r.headers, exc)
                r.release()
            except UpstreamProtocolError as exc:
                out = (None, None, exc)
            await asyncio.sleep(0.02)
            idle = pool.idle_count()
            await pool.close()
            return (*out, idle == 1)

    return run(go)


@pytest.mark.parametrize(
    "wire, why",
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "only chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "only chunked"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "more than one Transfer-Encoding",
        ),
        (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n", "only chunked"),
        (
            b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: gzip\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "only chunked",
        ),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nok", "larger than 64 KiB"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: "
            + b"t" * 100_000
            + b"\r\n\r\n",
            "trailer section larger",
        ),
        (b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "does not begin with a status line"),
        (b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok", "status 99"),
        (b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", "reason phrase"),
        (b"HTTP/2.0 200 OK\r\n\r\nok", "HTTP/2.0 status line"),
    ],
    ids=[
        "te-gzip",
        "te-gzip-chunked",
        "te-twice",
        "te-on-204",
        "te-on-1xx",
        "huge-head",
        "huge-trailers",
        "leading-crlf",
        "status-99",
        "nul-in-reason",
        "http2-line",
    ],
)
def test_answers_llhttp_accepts_are_refused(run, wire, why):
    status, headers, outcome, pooled = _one_answer(run, wire)
    assert isinstance(outcome, UpstreamProtocolError) and why in outcome.message, outcome
    assert not pooled


def test_a_second_answer_in_the_same_read_changes_nothing_and_ends_the_connection(run):
    wire = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 500 Injected\r\nSet-Cookie: evil=1\r\nContent-Length: 0\r\n\r\n"
    )
    status, headers, body, pooled = _one_answer(run, wire)
    assert (status, headers, body) == (200, [("Content-Length", "2")], b"ok")
    assert not pooled


def test_trailers_are_not_headers(run):
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n"
    status, headers, body, pooled = _one_answer(run, wire)
    assert (status, headers, body) == (200, [("Transfer-Encoding", "chunked")], b"ok")
    assert pooled


@pytest.mark.parametrize(
    "wire, pooled",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok\r\n", True),  # the CRLF is the body's
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok\r\n\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\r\n", False),  # all CR/LF: cannot tell, not pooled
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX: y\r\n\r\n\r\n", False),
    ],
)
def test_cr_lf_after_an_answer_keeps_its_connection_out_of_the_pool(run, wire, pooled):
    """llhttp skips CR/LF between messages silently; the client looks at how the read ended."""
    status, headers, body, was_pooled = _one_answer(run, wire)
    assert status in (200, 204) and isinstance(body, bytes)
    assert was_pooled == pooled


def test_head_answer_followed_by_cr_lf_or_a_chunked_body_is_not_pooled(run):
    assert _one_answer(run, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "HEAD")[3]
    assert not _one_answer(run, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\n", "HEAD")[3]
    assert _one_answer(run, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD")[3]
    assert not _one_answer(run, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HEAD")[3]


def test_http10_keep_alive_is_honoured_unless_close_is_there_too(run):
    """llhttp keeps an HTTP/1.0 answer alive on "keep-alive" even beside "close"; "close" wins."""
    kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    both = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n\r\nok"
    assert _one_answer(run, kept)[2:] == (b"ok", True)
    assert _one_answer(run, both)[2:] == (b"ok", False)
    old = b"HTTP/0.9 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    assert "HTTP/0.9 status line" in _one_answer(run, old)[2].message


def test_a_huge_head_is_refused_even_when_bytes_follow_the_answer(run):
    wire = b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * 100_000 + b"\r\nContent-Length: 0\r\n\r\ngarbage"
    status, headers, outcome, pooled = _one_answer(run, wire)
    assert isinstance(outcome, UpstreamProtocolError) and "larger than 64 KiB" in outcome.message
    assert not pooled


def test_a_big_first_read_with_a_small_head_is_fine(run):
    body = b"b" * 300_000
    status, headers, got, pooled = _one_answer(run, response(body))
    assert (status, got, pooled) == (200, body, True)


# --------------------------------------------------------------------------
# Raw servers: stale connections and retries
# --------------------------------------------------------------------------


def test_stale_keepalive_connection_is_retried_once(run):
    """The server answers the first request on each connection and closes the
    connection when a second one comes (an idle-timeout race)."""

    async def handler(srv, reader, writer, n):
        first = await read_request(reader)
        srv.requests.append(first)
        writer.write(response(f"conn{n}".encode()))
        await writer.drain()
        second = await read_request(reader)
        if second is not None:
            srv.requests.append(second)

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            bodies = []
            for i in range(3):
                async with await pool.request("POST", srv.url(f"/{i}"), [], b"data") as r:
                    bodies.append(await r.read())
            await pool.close()
            return bodies, srv.connections, [q.target for q in srv.requests]

    bodies, conns, targets = run(go)
    assert bodies == [b"conn1", b"conn2", b"conn3"]
    assert conns == 3
    # /1 went to the stale connection 1 first, then to connection 2; the same for /2
    assert targets == ["/0", "/1", "/1", "/2", "/2"]


def test_stale_retry_happens_only_once(run):
    """Connection 1 answers once; every later connection (and request) is dropped unanswered."""

    async def handler(srv, reader, writer, n):
        req = await read_request(reader)
        srv.requests.append(req)
        if n == 1:
            writer.write(response())
            await writer.drain()
            again = await read_request(reader)
            if again is not None:
                srv.requests.append(again)

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            async with await pool.request("GET", srv.url(), [], b"") as r:
                await r.read()
            with pytest.raises(UpstreamProtocolError) as info:
                await pool.request("POST", srv.url("/again"), [], b"x")
            await pool.close()
            return srv.connections, len(srv.requests), info.value

    conns, requests, err = run(go)
    assert conns == 2  # the stale one, then exactly one fresh one
    assert requests == 3
    assert "without answering" in err.message


def test_fresh_connection_is_never_retried(run):
    async def handler(srv, reader, writer, n):
        srv.requests.append(await read_request(reader))

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamProtocolError):
                await pool.request("POST", srv.url(), [], b"x")
            await pool.close()
            return srv.connections

    assert run(go) == 1


def test_no_retry_after_response_bytes(run):
    async def handler(srv, reader, writer, n):
        srv.requests.append(await read_request(reader))
        writer.write(response())
        await writer.drain()
        if await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
            await writer.drain()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            async with await pool.request("GET", srv.url(), [], b"") as r:
                await r.read()
            with pytest.raises(UpstreamProtocolError):
                await pool.request("GET", srv.url(), [], b"")
            await pool.close()
            return srv.connections

    assert run(go) == 1


def test_connection_closed_while_idle_is_discarded(run):
    async def handler(srv, reader, writer, n):
        await read_request(reader)
        writer.write(response(f"c{n}".encode()))
        await writer.drain()
        writer.close()  # keep-alive advertised, but gone right after

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            out = []
            for _ in range(3):
                async with await pool.request("GET", srv.url(), [], b"") as r:
                    out.append(await r.read())
                await asyncio.sleep(0.05)
            await pool.close()
            return out

    assert run(go) == [b"c1", b"c2", b"c3"]


def test_idle_connections_expire(run):
    async def go():
        async with Raw(keepalive(lambda req: response())) as srv:
            pool = UpstreamPool(idle_timeout=0.15)
            async with await pool.request("GET", srv.url(), [], b"") as r:
                await r.read()
            assert pool.idle_count() == 1
            await asyncio.wait_for(srv.closed_by_peer.wait(), 2)  # the sweeper closed it
            assert pool.idle_count() == 0
            async with await pool.request("GET", srv.url(), [], b"") as r:
                await r.read()
            await pool.close()
            return srv.connections

    assert run(go) == 2


# --------------------------------------------------------------------------
# Raw servers: failures and timeouts
# --------------------------------------------------------------------------


def test_server_that_never_answers_times_out(run):
    async def handler(srv, reader, writer, n):
        srv.requests.append(await read_request(reader))
        await reader.read()  # until the client gives up
        srv.closed_by_peer.set()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            t0 = time.perf_counter()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.request("POST", srv.url(), [], b"x", read_timeout=0.3)
            took = time.perf_counter() - t0
            await asyncio.wait_for(srv.closed_by_peer.wait(), 2)
            await pool.close()
            return took, info.value, pool.idle_count()

    took, err, idle = run(go)
    assert 0.25 <= took < 2
    assert isinstance(err, UpstreamError) and err.kind == "timeout"
    assert "0.3 s" in err.message
    assert idle == 0


def test_short_read_timeout_fires_on_time_beside_a_long_one(run):
    """One watchdog serves the whole pool: a short timeout arriving while a long one is
    awaited must still fire at its own time, and the watchdog stops when nothing is awaited."""

    async def handler(srv, reader, writer, n):
        srv.requests.append(await read_request(reader))
        await reader.read()  # never answers

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            long_wait = asyncio.ensure_future(pool.request("POST", srv.url(), [], b"x", read_timeout=30))
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.request("POST", srv.url(), [], b"x", read_timeout=0.2)
            took = time.perf_counter() - t0
            still_waiting = not long_wait.done()
            long_wait.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long_wait
            await pool.close()
            return took, info.value, still_waiting, len(pool._waiting), pool._watchdog

    took, err, still_waiting, waiting, watchdog = run(go)
    assert 0.19 <= took < 0.6  # 0.2 s plus at most a tick (0.025 s) and scheduling
    assert "0.2 s" in err.message
    assert still_waiting
    assert waiting == 0 and watchdog is None


def test_watchdog_stops_when_answers_complete(run):
    async def go():
        async with Raw(keepalive(lambda req: response(b"ok"))) as srv:
            pool = UpstreamPool()
            for _ in range(3):
                async with await pool.request("GET", srv.url(), [], b"", read_timeout=0.05) as r:
                    assert await r.read() == b"ok"
            waiting = len(pool._waiting)
            await asyncio.sleep(0.1)  # the watchdog's next round finds nothing and does not re-arm
            watchdog = pool._watchdog
            await pool.close()
            return waiting, watchdog

    waiting, watchdog = run(go)
    assert waiting == 0 and watchdog is None


def test_nothing_listening_is_a_connect_error(run):
    port = free_port()

    async def go():
        pool = UpstreamPool()
        with pytest.raises(UpstreamConnectError) as info:
            await pool.request("GET", f"http://{HOST}:{port}/v1/models", [], b"")
        await pool.close()
        return info.value

    err = run(go)
    assert err.kind == "connect"
    assert f"127.0.0.1:{port}" in err.message


def test_tls_handshake_that_never_completes_is_a_connect_timeout(run):
    async def handler(srv, reader, writer, n):
        await reader.read()  # a TCP server that ignores the ClientHello

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamTimeout) as info:
                await pool.request("GET", srv.url(scheme="https"), [], b"", connect_timeout=0.3)
            await pool.close()
            return info.value

    err = run(go)
    assert err.kind == "timeout" and "connecting" in err.message


def test_garbage_is_a_protocol_error(run):
    async def go():
        async with Raw(keepalive(lambda req: b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n")) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamProtocolError) as info:
                await pool.request("GET", srv.url(), [], b"")
            await pool.close()
            return info.value

    err = run(go)
    assert err.kind == "protocol" and "malformed" in err.message


def test_slow_body_read_timeout_resets_on_each_piece(run):
    async def answer(req):
        gap = float(req.target.rsplit("=", 1)[1])
        writer = answer.writer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        for ch in b"abcde":
            await asyncio.sleep(gap)
            writer.write(bytes([ch]))
            await writer.drain()

    async def handler(srv, reader, writer, n):
        answer.writer = writer
        await srv.serve_keepalive(reader, writer, answer)

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            t0 = time.perf_counter()
            async with await pool.request("GET", srv.url("/slow?gap=0.07"), [], b"", read_timeout=0.2) as r:
                pieces = [p async for p in r]
            took = time.perf_counter() - t0
            r = await pool.request("GET", srv.url("/slower?gap=0.5"), [], b"", read_timeout=0.2)
            with pytest.raises(UpstreamTimeout):
                await r.read()
            r.release()
            await pool.close()
            return pieces, took

    pieces, took = run(go)
    assert b"".join(pieces) == b"abcde"
    assert took > 0.3  # longer than read_timeout in total, yet no timeout: it resets


def test_slow_head_then_fast_body(run):
    async def answer(req):
        await asyncio.sleep(0.15)
        return response(b"late")

    async def go():
        async with Raw(keepalive(answer)) as srv:
            pool = UpstreamPool()
            async with await pool.request("GET", srv.url(), [], b"", read_timeout=0.5) as r:
                return await r.read()

    assert run(go) == b"late"


def test_abort_closes_the_connection_mid_stream(run):
    async def handler(srv, reader, writer, n):
        if n > 1:
            await srv.serve_keepalive(reader, writer, lambda req: response(b"fresh"))
            return
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(300):  # ~3 s at most; the client hangs up long before
                writer.write(b"6\r\nevent\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        srv.closed_by_peer.set()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            got = []
            with pytest.raises(RuntimeError):
                async with await pool.request("GET", srv.url(), [], b"") as r:
                    async for piece in r:
                        got.append(piece)
                        if len(got) == 3:
                            raise RuntimeError("client hung up")
            with pytest.raises(UpstreamProtocolError):
                await r.read()  # aborted: nothing more comes
            await asyncio.wait_for(srv.closed_by_peer.wait(), 2)
            async with await pool.request("GET", srv.url(), [], b"") as r2:
                again = await r2.read()
            await pool.close()
            return got, again, srv.connections

    got, again, conns = run(go)
    assert got == [b"event\n"] * 3
    assert again == b"fresh" and conns == 2


def test_cancelled_request_closes_connection(run):
    async def handler(srv, reader, writer, n):
        srv.requests.append(await read_request(reader))
        await reader.read()
        srv.closed_by_peer.set()

    async def go():
        async with Raw(handler) as srv:
            pool = UpstreamPool()
            task = asyncio.ensure_future(pool.request("POST", srv.url(), [], b"x"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(srv.closed_by_peer.wait(), 2)
            idle = pool.idle_count()
            await pool.close()
            return idle

    assert run(go) == 0


# --------------------------------------------------------------------------
# Flow control
# --------------------------------------------------------------------------


def test_slow_consumer_pauses_reading(run):
    size = 6 * 1024 * 1024
    blob = bytes(range(256)) * (size // 256)

    async def answer(req):
        return response(blob)

    async def go():
        async with Raw(keepalive(answer)) as srv:
            pool = UpstreamPool()
            r = await pool.request("GET", srv.url(), [], b"")
            it = r.__aiter__()
            first = await it.__anext__()
            await asyncio.sleep(0.2)  # a slow client: the upstream keeps sending meanwhile
            buffered = r._buffered
            paused = r._conn.paused
            rest = [p async for p in it]
            body = first + b"".join(rest)
            r.release()
            r2 = await pool.request("GET", srv.url(), [], b"")
            whole = await r2.read()
            r2.release()
            await pool.close()
            return buffered, paused, body, whole, srv.connections

    buffered, paused, body, whole, conns = run(go)
    assert paused
    assert buffered <= 1024 * 1024 + 512 * 1024  # high water + at most one read's worth
    assert body == blob and whole == blob
    assert conns == 1


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_tls_with_trusted_ca(run, tls):
    server_ctx, client_ctx = tls

    async def go():
        async with Raw(keepalive(lambda req: response(b"secure " + req.body)), ssl_ctx=server_ctx) as srv:
            pool = UpstreamPool(ssl_context=client_ctx)
            out = []
            for i in range(3):
                async with await pool.request("POST", srv.url(scheme="https"), [], str(i).encode()) as r:
                    out.append(await r.read())
            host = srv.requests[0].header("host")
            await pool.close()
            return out, srv.connections, host, srv.port

    out, conns, host, port = run(go)
    assert out == [b"secure 0", b"secure 1", b"secure 2"]
    assert conns == 1
    assert host == [f"127.0.0.1:{port}"]


def test_tls_with_default_context_rejects_unknown_ca(run, tls):
    server_ctx, _ = tls

    async def go():
        async with Raw(keepalive(lambda req: response()), ssl_ctx=server_ctx) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request("GET", srv.url(scheme="https"), [], b"")
            await pool.close()
            return info.value

    err = run(go)
    assert err.kind == "connect" and "TLS" in err.message


def test_plain_http_to_tls_server_is_an_error_not_a_hang(run, tls):
    server_ctx, _ = tls

    async def go():
        async with Raw(keepalive(lambda req: response()), ssl_ctx=server_ctx) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError):
                await pool.request("GET", srv.url(), [], b"", read_timeout=2)
            await pool.close()
            return True

    assert run(go)


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def test_200_concurrent_requests_and_idle_cap(run):
    async def answer(req):
        if not req.target.startswith("/seq"):
            await asyncio.sleep(0.05)  # keep them all in flight at once
        return response(req.body)

    async def go():
        async with Raw(keepalive(answer)) as srv:
            pool = UpstreamPool(max_idle_per_host=16)

            async def one(i, prefix=""):
                async with await pool.request("POST", srv.url(f"{prefix}/{i}"), [], str(i).encode()) as r:
                    return r.status, await r.read()

            results = await asyncio.gather(*(one(i) for i in range(200)))
            idle_after = pool.idle_count()
            opened = pool.connections_opened
            # a second, sequential round only uses the pooled connections
            for i in range(20):
                assert await one(i, "/seq") == (200, str(i).encode())
            opened_after = pool.connections_opened
            await pool.close()
            return results, idle_after, opened, opened_after

    results, idle, opened, opened_after = run(go)
    assert results == [(200, str(i).encode()) for i in range(200)]
    assert opened == 200  # one connection per in-flight request
    assert idle == 16
    assert opened_after == opened


def test_standin_concurrent_streams(run, up):
    up.configure(chunk_delay_ms=5, stream_chunks=4)

    async def go():
        pool = UpstreamPool(max_idle_per_host=8)

        async def one():
            r = await pool.request(
                "POST", up.url + "/chat/completions", AUTH, json.dumps({**CHAT, "stream": True}).encode()
            )
            async with r:
                return b"".join([p async for p in r])

        outs = await asyncio.gather(*(one() for _ in range(40)))
        idle = pool.idle_count()
        await pool.close()
        return outs, idle

    outs, idle = run(go)
    assert all(o.endswith(b"data: [DONE]\n\n") for o in outs)
    assert len(set(outs)) == 1
    assert idle <= 8


def test_closed_pool_refuses_requests(run):
    async def go():
        pool = UpstreamPool()
        await pool.close()
        with pytest.raises(RuntimeError):
            await pool.request("GET", f"http://{HOST}:1/", [], b"")
        return True

    assert run(go)


# --------------------------------------------------------------------------
# Egress proxies (HTTP_PROXY / HTTPS_PROXY / NO_PROXY); the test proxy is tests/egress.py
# --------------------------------------------------------------------------


def test_https_upstream_goes_through_a_connect_tunnel(run, tls):
    """The proxy sees CONNECT and its own credentials, never the request, its headers or the upstream key."""
    from gwctl.proxy.upstream import Proxies

    server_ctx, client_ctx = tls

    async def go():
        async with (
            Raw(keepalive(lambda req: response(b"secure " + req.body)), ssl_ctx=server_ctx) as srv,
            EgressProxy(credentials="Basic dXNlcjpwQHNz") as egress,
        ):
            proxies = Proxies({"HTTPS_PROXY": egress.url("user:p%40ss")})
            pool = UpstreamPool(ssl_context=client_ctx, proxies=proxies)
            out = []
            for i in range(2):
                async with await pool.request(
                    "POST", srv.url(scheme="https"), [("Authorization", "Bearer sk-up")], str(i).encode()
                ) as r:
                    out.append(await r.read())
            await pool.close()
            return out, egress.seen, srv.requests, srv.port

    out, seen, got, port = run(go)
    assert out == [b"secure 0", b"secure 1"]
    assert [(r.method, r.target) for r in seen] == [("CONNECT", f"127.0.0.1:{port}")]  # one tunnel, reused
    assert seen[0].header("proxy-authorization") == ["Basic dXNlcjpwQHNz"]  # user:p@ss, unquoted
    assert b"sk-up" not in seen[0].raw
    assert got[0].header("authorization") == ["Bearer sk-up"] and not got[0].header("proxy-authorization")
    assert got[0].target == "/v1/x"


def test_http_upstream_goes_to_the_proxy_in_absolute_form(run):
    from gwctl.proxy.upstream import Proxies

    async def go():
        async with Raw(keepalive(lambda req: response(b"plain " + req.body))) as srv, EgressProxy() as egress:
            pool = UpstreamPool(proxies=Proxies({"http_proxy": egress.url("u:pw")}))
            out = []
            for i in range(2):
                async with await pool.request("POST", srv.url("/v1/x?a=1"), [], str(i).encode()) as r:
                    out.append(await r.read())
            await pool.close()
            return out, egress.seen, srv.requests, srv.port

    out, seen, got, port = run(go)
    assert out == [b"plain 0", b"plain 1"]
    assert len(seen) == 1 and seen[0].target == f"http://127.0.0.1:{port}/v1/x?a=1"  # one kept-alive connection
    assert [r.target for r in got] == [f"http://127.0.0.1:{port}/v1/x?a=1"] * 2
    assert seen[0].header("proxy-authorization") == ["Basic dTpwdw=="]  # the proxy's credentials, to the proxy
    assert seen[0].header("host") == [f"127.0.0.1:{port}"]


def test_no_proxy_hosts_are_reached_directly(run):
    from gwctl.proxy.upstream import Proxies

    async def go():
        async with Raw(keepalive(lambda req: response(b"direct"))) as srv, EgressProxy() as egress:
            pool = UpstreamPool(proxies=Proxies({"HTTP_PROXY": egress.url(), "NO_PROXY": "example.org, 127.0.0.1"}))
            async with await pool.request("GET", srv.url(), [], b"") as r:
                body = await r.read()
            await pool.close()
            return body, egress.seen, srv.requests

    body, seen, got = run(go)
    assert body == b"direct" and seen == [] and got[0].target == "/v1/x"


@pytest.mark.parametrize("credentials, refuse, status", [("Basic bm9wZQ==", (), "407"), (None, ("*",), "403")])
def test_a_proxy_that_refuses_the_tunnel_is_a_connect_error(run, tls, credentials, refuse, status):
    from gwctl.proxy.upstream import Proxies

    _server_ctx, client_ctx = tls

    async def go():
        async with EgressProxy(credentials=credentials) as egress:
            egress.refuse = (f"127.0.0.1:{free_port()}",) if refuse else ()
            target = egress.refuse[0] if refuse else f"127.0.0.1:{free_port()}"
            pool = UpstreamPool(ssl_context=client_ctx, proxies=Proxies({"ALL_PROXY": egress.url()}))
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request("GET", f"https://{target}/v1/models", [], b"")
            await pool.close()
            return info.value

    err = run(go)
    assert err.kind == "connect"
    assert "refused the tunnel to 127.0.0.1:" in err.message and status in err.message


def test_an_unreachable_proxy_is_named_in_the_error(run):
    from gwctl.proxy.upstream import Proxies

    port = free_port()

    async def go():
        pool = UpstreamPool(proxies=Proxies({"HTTPS_PROXY": f"http://127.0.0.1:{port}"}))
        with pytest.raises(UpstreamConnectError) as info:
            await pool.request("GET", "https://api.example.com/v1/models", [], b"")
        await pool.close()
        return info.value

    err = run(go)
    assert f"cannot connect to proxy 127.0.0.1:{port} (for api.example.com:443)" in err.message


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, "only http:// proxies are supported (not socks5://)"),
        ({"ALL_PROXY": "https://u:secret@proxy:3128"}, "proxy https://u:***@proxy:3128"),
        ({"http_proxy": "http://proxy:notaport"}, "bad port"),
    ],
)
def test_unusable_proxy_settings_are_refused_with_the_password_masked(env, message):
    from gwctl.proxy.upstream import Proxies

    with pytest.raises(ValueError) as info:
        Proxies(env)
    assert message in str(info.value) and "secret" not in str(info.value)


def test_proxy_settings_follow_the_usual_precedence():
    from gwctl.proxy.upstream import Proxies

    p = Proxies(
        {
            "HTTPS_PROXY": "http://upper:1",
            "https_proxy": "http://lower:2",
            "ALL_PROXY": "http://all:3",
            "no_proxy": ".internal,db.local:5432",
        }
    )
    assert p.for_target("https", "api.openai.com", 443).name == "lower:2"  # lower-case first, as curl and httpx
    assert p.for_target("http", "api.openai.com", 80).name == "all:3"  # ALL_PROXY when a scheme has none
    assert p.for_target("https", "llm.internal", 443) is None and p.for_target("https", "internal", 443) is None
    assert p.for_target("http", "db.local", 5432) is None and p.for_target("http", "db.local", 80).name == "all:3"
    assert not Proxies({}) and Proxies({}).for_target("https", "x", 443) is None


# --------------------------------------------------------------------------
# No secrets in errors: a URL's user info never shows whole in a message
# --------------------------------------------------------------------------


def test_user_info_in_the_url_never_shows_in_the_error(run):
    port = free_port()

    async def go():
        pool = UpstreamPool()
        errors = []
        for url in (
            f"http://user:s3cret@127.0.0.1:{port}/v1",
            f"http://user:s3cret@127.0.0.1:{port}",
            f"https://user:s3cret@127.0.0.1:{port}/v1?x=1",
            "ftp://user:s3cret@127.0.0.1/v1",
            "user:s3cret@127.0.0.1/v1",
            "http://s3cret@127.0.0.1/v1",
            "http://user:s3cret@[::1/v1",
        ):
            with pytest.raises(ValueError) as info:
                await pool.request("POST", url, [], b"{}")
            errors.append(str(info.value))
        await pool.close()
        return errors

    for message in run(go):
        assert "s3cret" not in message
        assert "***@" in message or "user info" in message


@settings(max_examples=100, deadline=None)
@given(
    secret=st.text(alphabet="abcXYZ019-._~!$&'()*+,;=%:", min_size=4, max_size=12).map(lambda s: "S3" + s),
    user=st.text(alphabet="abc019-._~%", max_size=6),
    host=st.sampled_from(["127.0.0.1", "h", "[::1]", "", "h:99999", "h:x"]),
    scheme=st.sampled_from(["http://", "https://", "ftp://", ""]),
    tail=st.sampled_from(["", "/v1", "/v1?key=1", "?a", "#f", "/a b"]),
)
def test_no_url_shape_leaks_its_user_info(secret, user, host, scheme, tail):
    """Whatever is wrong with a URL carrying user info, the message shows it redacted."""
    from gwctl.proxy.upstream.target import _split_url

    url = f"{scheme}{user}{':' if user else ''}{secret}@{host}{tail}"
    with pytest.raises(ValueError) as info:
        _split_url(url, {})
    assert secret not in str(info.value)


def test_query_strings_stay_out_of_path_errors():
    from gwctl.proxy.upstream.target import _build_request, _split_url

    with pytest.raises(ValueError) as info:
        _split_url("http://h/v1/a b?key=AIzaSECRET", {})
    assert "AIzaSECRET" not in str(info.value) and "'/v1/a b'" in str(info.value)
    target, _ = _split_url("http://h/v1", {})
    with pytest.raises(ValueError) as info:
        _build_request("GET", target, "/v1?key=AIzaSECRET\r\nX: y", [], b"")
    assert "AIzaSECRET" not in str(info.value) and "CR, LF or NUL" in str(info.value)


def test_a_proxy_user_name_alone_is_masked():
    from gwctl.proxy.upstream import Proxies

    with pytest.raises(ValueError) as info:
        Proxies({"HTTPS_PROXY": "socks5://tok3n@proxy:1080"})
    assert "tok3n" not in str(info.value) and "socks5://***@proxy:1080" in str(info.value)
    assert "tok3n" not in Proxies({"HTTPS_PROXY": "http://tok3n@proxy:3128"}).describe()
