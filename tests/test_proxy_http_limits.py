"""The HTTP server's defences (gwctl.proxy.http): trailers, the head hook, deadlines, connection caps.

Each test here was written against a weakness of the server before it was
fixed: trailer fields that became headers (and escaped the 64 KiB head cap),
bodies buffered before the gateway key was looked at, clients that dribble a
head or a body forever, and unbounded connection counts. The clients are the
raw-socket ones of test_proxy_http.py, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest

from gwctl.proxy.http import MAX_HEAD, HttpServer, Reply
from test_proxy_http import TIMEOUT, Client, chunked, echo, get, post, serve  # noqa: F401  (serve is a fixture)


def recording(serve, **options):
    """A server whose handler answers the body (or the path) and lists what it saw."""
    seen = []

    async def handler(request):
        seen.append(request)
        return await echo(request)

    return serve(handler, **options), seen


def trailer_block(fields: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in fields) + b"\r\n"


def chunked_with_trailers(path: str, body: bytes, trailers: bytes, *extra: str) -> bytes:
    head = get(path, "Transfer-Encoding: chunked", *extra, method="POST")
    return head + b"%x\r\n%s\r\n" % (len(body), body) + b"0\r\n" + trailers


def send_ignoring_reset(c: Client, data: bytes, piece: int = 1 << 14) -> int:
    """Send ``data`` in pieces until the server stops taking it; return how much went out."""
    sent = 0
    try:
        for i in range(0, len(data), piece):
            c.sock.sendall(data[i : i + piece])
            sent += len(data[i : i + piece])
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    return sent


# --- trailers ------------------------------------------------------------------------


def test_trailer_fields_never_become_headers(serve):
    running, seen = recording(serve)
    trailers = trailer_block([("X-Trailer", "t"), ("Authorization", "Bearer from-the-trailer"), ("Host", "other")])
    with running.client() as c:
        c.send(chunked_with_trailers("/echo", b"hello", trailers, "X-Head: h"))
        r = c.response()
        assert (r.status, r.body) == (200, b"hello")
        c.send(get("/next"))  # the connection is still in step after the trailers
        assert c.response().body == b"/next"
    first = seen[0]
    assert [k for k, _ in first.raw_headers] == ["Host", "Transfer-Encoding", "X-Head"]
    assert "authorization" not in first.headers and "x-trailer" not in first.headers
    assert first.headers["host"] == "test"


def test_many_small_trailer_fields_count_against_the_head_limit(serve):
    running, seen = recording(serve)
    fields = [(f"X-T{i}", "v" * 30) for i in range(3000)]  # ~120 KiB of trailers after a small head
    with running.client() as c:
        sent = send_ignoring_reset(c, chunked_with_trailers("/echo", b"x", trailer_block(fields)))
        r = c.response()
        assert r.status == 431
        assert r.header("connection") == "close"
        assert "64 KiB" in r.json()["error"]["message"]
        assert c.closed_by_server()
    assert seen == []
    assert sent < 400_000


def test_one_huge_trailer_field_is_refused_before_it_is_all_read(serve):
    running, seen = recording(serve)
    with running.client() as c:
        c.send(chunked_with_trailers("/echo", b"x", b"X-Huge: "))
        sent = send_ignoring_reset(c, b"a" * (8 << 20), piece=1 << 14)  # 8 MiB, never finished
        r = c.response()
        assert r.status == 431
        assert c.closed_by_server()
    assert seen == []
    assert sent < (4 << 20), f"{sent} bytes of one trailer field were taken"


def test_trailers_at_the_limit_with_the_head_are_refused_but_under_it_pass(serve):
    running, seen = recording(serve)
    head = get("/echo", "Transfer-Encoding: chunked", method="POST")
    # a trailer block that with this head stays just under the cap
    under = trailer_block([("X-Pad", "p" * (MAX_HEAD - len(head) - 2000))])
    over = trailer_block([("X-Pad", "p" * (MAX_HEAD - len(head) - 100)), ("X-More", "m" * 200)])
    with running.client() as c:
        c.send(chunked_with_trailers("/echo", b"ok", under))
        assert c.response().body == b"ok"
    with running.client() as c:
        c.send(chunked_with_trailers("/echo", b"no", over))
        assert c.response().status == 431
        assert c.closed_by_server()
    assert [r.body for r in seen] == [b"ok"]


def test_duplicate_header_names_are_joined_in_order_in_linear_time():
    from gwctl.proxy.http import _fold_headers

    raw = [("Host", "h")] + [("X-Dup", f"v{i}") for i in range(100_000)] + [("x-dup", "last")]
    t0 = time.perf_counter()
    headers, dups = _fold_headers(raw)
    elapsed = time.perf_counter() - t0
    assert headers["x-dup"] == ", ".join([f"v{i}" for i in range(100_000)] + ["last"])
    assert headers["host"] == "h"
    assert dups == {"x-dup"}
    assert elapsed < 10.0, f"joining 100k repeated headers took {elapsed:.2f}s (quadratic would take minutes)"


# --- the head hook (a request refused before its body is read) -------------------------


def deny_server(serve, **options):
    """/deny... is refused by on_head with a 401; the handler echoes everything else."""
    heads, handled = [], []

    def on_head(request):
        heads.append((request.method, request.path, request.body, request.too_large, request.headers.get("x-n")))
        if request.path.startswith("/deny"):
            return Reply(401, b'{"error":{"message":"no key","code":"invalid_api_key"}}')
        return None

    async def handler(request):
        handled.append(request.path)
        if request.path == "/slow":
            await asyncio.sleep(0.2)
        return await echo(request)

    options.setdefault("body_limit", 1 << 20)
    return serve(handler, on_head=on_head, **options), heads, handled


def test_head_hook_refuses_before_any_body_byte_and_closes(serve):
    running, heads, handled = deny_server(serve)
    with running.client() as c:
        c.send(get("/deny", "Content-Length: 10000000", "X-N: 1", method="POST"))  # no body sent at all
        r = c.response()
        assert r.status == 401
        assert r.header("connection") == "close"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert c.closed_by_server()
    assert heads == [("POST", "/deny", None, True, "1")]  # too_large known from Content-Length
    assert handled == []


def test_head_hook_passing_lets_the_request_through(serve):
    running, heads, handled = deny_server(serve)
    with running.client() as c:
        c.send(post("/echo", b"body", "X-N: 2"))
        r = c.response()
        assert (r.status, r.body, r.header("connection")) == (200, b"body", None)
    assert heads == [("POST", "/echo", None, False, "2")]
    assert handled == ["/echo"]


def test_head_hook_refusal_is_answered_after_earlier_pipelined_requests(serve):
    running, heads, handled = deny_server(serve)
    with running.client() as c:
        c.send(
            get("/slow")
            + post("/echo", b"second")
            + get("/deny", "Content-Length: 5", method="POST")
            + b"hello"
            + get("/never")
        )
        first, second, third = c.response(), c.response(), c.response()
        assert (first.status, first.body, first.header("connection")) == (200, b"/slow", None)
        assert (second.status, second.body, second.header("connection")) == (200, b"second", None)
        assert (third.status, third.header("connection")) == (401, "close")
        assert c.closed_by_server()
    assert handled == ["/slow", "/echo"]
    assert [h[1] for h in heads] == ["/slow", "/echo", "/deny"]


def test_head_hook_refusal_sends_no_100_continue(serve):
    running, heads, handled = deny_server(serve)
    with running.client() as c:
        c.send(get("/deny", "Content-Length: 3", "Expect: 100-continue", method="POST"))
        r = c.response()
        assert r.status == 401  # not an interim 100 first
        assert c.closed_by_server()
    with running.client() as c:  # an accepted one still gets its 100 Continue
        c.send(get("/echo", "Content-Length: 3", "Expect: 100-continue", method="POST"))
        assert c.response().status == 100
        c.send(b"abc")
        assert c.response().body == b"abc"


def test_head_hook_refusal_of_a_head_request_has_no_body(serve):
    running, heads, handled = deny_server(serve)
    with running.client() as c:
        c.send(get("/deny", method="HEAD"))
        r = c.response(head_request=True)
        assert r.status == 401
        assert int(r.header("content-length")) > 0
        assert c.closed_by_server()  # and no body bytes before the close


def test_head_hook_error_is_answered_as_an_internal_error_and_closes(serve):
    def on_head(request):
        raise RuntimeError("hook broke")

    handled = []

    async def handler(request):
        handled.append(request.path)
        return Reply(200, b"{}")

    running = serve(handler, on_head=on_head)
    with running.client() as c:
        c.send(post("/x", b"{}"))
        r = c.response()
        assert r.status == 500
        assert c.closed_by_server()
    assert handled == []


# --- deadlines for a head and a body ----------------------------------------------------


def dribble(c: Client, data: bytes, every: float, until: float) -> None:
    """Send ``data`` a byte at a time, ``every`` seconds apart, until sent, refused or ``until`` seconds passed."""
    deadline = time.monotonic() + until
    for i in range(len(data)):
        if time.monotonic() > deadline:
            return
        try:
            c.sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return
        time.sleep(every)


def test_a_head_sent_byte_by_byte_gets_408_after_the_head_timeout(serve):
    running, seen = recording(serve, head_timeout=0.6)
    with running.client() as c:
        t0 = time.monotonic()
        sender = threading.Thread(target=dribble, args=(c, get("/slow-head", "X-Pad: " + "p" * 100), 0.05, 2.5))
        sender.start()
        r = c.response()
        elapsed = time.monotonic() - t0
        sender.join(5)
        assert r.status == 408
        assert r.header("connection") == "close"
        error = r.json()["error"]
        assert error["code"] == "request_timeout"
        assert error["type"] == "invalid_request_error"
        assert 0.5 < elapsed < 2.5, elapsed
        assert c.closed_by_server()
    assert seen == []


def test_a_body_sent_byte_by_byte_gets_408_after_the_body_timeout(serve):
    running, seen = recording(serve, body_timeout=0.6, head_timeout=5.0)
    with running.client() as c:
        c.send(get("/echo", "Content-Length: 200", method="POST"))
        t0 = time.monotonic()
        sender = threading.Thread(target=dribble, args=(c, b"b" * 200, 0.05, 2.5))
        sender.start()
        r = c.response()
        elapsed = time.monotonic() - t0
        sender.join(5)
        assert r.status == 408
        assert r.json()["error"]["code"] == "request_timeout"
        assert 0.5 < elapsed < 2.5, elapsed
        assert c.closed_by_server()
    assert seen == []


def test_a_slow_but_steady_head_within_the_timeout_is_served(serve):
    running, seen = recording(serve, head_timeout=2.0, body_timeout=2.0)
    with running.client() as c:
        raw = post("/echo", b"12345")
        dribble(c, raw, 0.3 / len(raw), 3.0)
        assert c.response().body == b"12345"
    assert len(seen) == 1


def test_a_timed_out_pipelined_head_is_answered_after_the_answer_before_it(serve):
    async def handler(request):
        await asyncio.sleep(0.8)
        return Reply(200, request.path.encode(), content_type=None)

    running = serve(handler, head_timeout=0.3)
    with running.client() as c:
        c.send(get("/first") + b"GET /second HTTP/1.1\r\nHo")  # the second head never finishes
        first = c.response()
        assert (first.status, first.body, first.header("connection")) == (200, b"/first", None)
        second = c.response()
        assert second.status == 408
        assert c.closed_by_server()


def test_an_idle_keep_alive_connection_still_gets_the_keepalive_timeout(serve):
    running, seen = recording(serve, keepalive_timeout=5.0, head_timeout=0.3, body_timeout=0.3)
    with running.client() as c:
        c.send(get("/a"))
        assert c.response().body == b"/a"
        assert not c.closed_by_server(1.0)  # idle, not a slow request: the short deadlines do not apply
        c.send(get("/b"))
        assert c.response().body == b"/b"


def test_the_body_deadline_waits_for_an_owed_100_continue(serve):
    gate = threading.Event()

    async def handler(request):
        if request.path == "/slow":
            for _ in range(100):
                if gate.is_set():
                    break
                await asyncio.sleep(0.02)
        return await echo(request)

    running = serve(handler, body_timeout=0.4)
    with running.client() as c:
        c.send(get("/slow") + get("/echo", "Content-Length: 3", "Expect: 100-continue", method="POST"))
        time.sleep(0.9)  # longer than the body deadline, while the 100 Continue is still owed
        gate.set()
        assert c.response().body == b"/slow"
        assert c.response().status == 100
        c.send(b"abc")
        assert c.response().body == b"abc"


# --- connection caps ------------------------------------------------------------------


def open_clients(running, n: int) -> list[Client]:
    clients = []
    for i in range(n):
        c = running.client()
        c.send(get(f"/c{i}"))
        assert c.response().status == 200  # accepted and registered
        clients.append(c)
    return clients


@pytest.mark.parametrize("option", ["max_connections", "max_connections_per_client"])
def test_connections_over_a_cap_get_503_and_close(serve, option, caplog):
    rejects = []
    running = serve(echo, on_reject=lambda *args: rejects.append(args), **{option: 3})
    caplog.set_level(logging.WARNING, logger="gwctl.proxy")
    clients = open_clients(running, 3)
    try:
        for _ in range(5):
            with running.client() as extra:
                r = extra.response()
                assert r.status == 503
                assert r.header("connection") == "close"
                assert r.json()["error"]["code"] == "too_many_connections"
                assert extra.closed_by_server()
        clients.pop().sock.close()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # the slot comes back once the server saw the close
            with running.client() as again:
                if again.silent_for(0.2):  # not refused at once: accepted
                    again.send(get("/again"))
                    r = again.response()
                    break
                r = again.response()
            time.sleep(0.05)
        assert r.status == 200
    finally:
        for c in clients:
            c.sock.close()
    assert all(
        status == 503 and code == "too_many_connections" and req is None and path == ""
        for status, code, _, req, path in rejects
    )
    assert len(rejects) >= 5
    warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING and "connections" in rec.getMessage()]
    assert 1 <= len(warnings) <= 2  # at most one warning per few seconds, not one per refusal


def test_connection_counts_come_back_to_zero(serve):
    running = serve(echo, max_connections_per_client=4)
    for _ in range(3):
        clients = open_clients(running, 4)
        for c in clients:
            c.sock.close()
        deadline = time.monotonic() + TIMEOUT
        while running.server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
    assert running.server.connections == set()
    assert running.server.clients == {}


# --- the server's own refusals are reported -------------------------------------------------


def test_server_refusals_reach_on_reject(serve):
    rejects = []
    running = serve(echo, on_reject=lambda *args: rejects.append(args), head_timeout=0.3)
    with running.client() as c:
        c.send(b"GARBAGE\r\n\r\n")
        assert c.response().status == 400
    with running.client() as c:
        c.send(b"GET /big HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n")
        assert c.response().status == 431
    with running.client() as c:
        c.send(b"GET /stall HTTP/1.1\r\nHo")
        assert c.response().status == 408
    with running.client() as c:
        c.send(get("/echo", "Transfer-Encoding: chunked", "Content-Length: 3", method="POST"))
        assert c.response().status == 400
    with running.client() as c:
        c.send(get("/echo", "Transfer-Encoding: chunked", method="POST") + b"5\r\nabc")
        time.sleep(0.05)
        c.send(b"zz\r\nnot-a-chunk-size\r\n")
        assert c.response().status == 400
    statuses = [(status, code) for status, code, _message, _req, _path in rejects]
    assert statuses == [
        (400, "malformed_request"),
        (431, "head_too_large"),
        (408, "request_timeout"),
        (400, "malformed_request"),
        (400, "malformed_request"),
    ]
    assert all(isinstance(message, str) and message for _s, _c, message, _r, _p in rejects)
    assert rejects[-1][3] is not None and rejects[-1][3].path == "/echo" == rejects[-1][4]  # the head was in


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 400),  # HTTP/0.9 (or no version at all): not an HTTP/1.x request
    ],
)
def test_requests_h11_refuses_are_refused(serve, raw, status):
    running, seen = recording(serve)
    with running.client() as c:
        c.send(raw)
        r = c.response()
        assert r.status == status
        assert r.header("connection") == "close"
        assert c.closed_by_server()
    assert seen == []


def test_header_values_lose_trailing_whitespace(serve):
    running, seen = recording(serve)
    with running.client() as c:
        c.send(get("/echo", "X-A: a b \t", "Content-Length: 2 ", method="POST") + b"hi")
        assert c.response().body == b"hi"
    assert seen[0].headers["x-a"] == "a b"
    assert seen[0].raw_headers[1] == ("X-A", "a b")


def test_server_options_are_checked():
    with pytest.raises(ValueError):
        HttpServer(echo, body_limit=1, head_timeout=0)
    with pytest.raises(ValueError):
        HttpServer(echo, body_limit=1, max_connections=0)


def test_the_gateway_and_command_line_defaults_are_the_servers():
    import inspect

    from gwctl.cli.proxy import proxy
    from gwctl.proxy import http
    from gwctl.proxy.server import ProxyConfig

    expected = (http.HEAD_TIMEOUT, http.BODY_TIMEOUT, http.MAX_CONNECTIONS, http.MAX_CONNECTIONS_PER_CLIENT)
    config = ProxyConfig(store_path=None, activity_dsn=None)
    assert (
        config.head_timeout,
        config.body_timeout,
        config.max_connections,
        config.max_connections_per_client,
    ) == expected
    params = inspect.signature(proxy).parameters
    names = ("head_timeout", "body_timeout", "max_connections", "max_connections_per_client")
    assert tuple(params[n].default for n in names) == expected


# --- closing with request bytes unread ------------------------------------------------------


def test_an_early_refusal_reaches_a_client_still_sending_its_body(serve):
    """A body over the limit is refused (413) at the head while the client is still sending it, as most clients
    do before they read: the client reads the whole answer, then the end of the connection. (Closing at once
    with the bytes unread makes the kernel send a reset, which can destroy the 413 still in the server's send
    queue; on an idle loopback the 413 usually gets through anyway, so this guards the behaviour and the test
    below checks the mechanism.)"""

    async def handler(request):
        if request.too_large:  # as the gateway answers it
            return Reply(413, b'{"error":{"message":"too large","code":"body_too_large"}}')
        return await echo(request)

    running = serve(handler, body_limit=1000)
    for _ in range(5):  # each is a race the server used to lose often: all must be read
        with running.client() as c:
            c.send(get("/echo", "Content-Length: 8000000", method="POST"))
            send_ignoring_reset(
                c, b"x" * (768 << 10), piece=1 << 16
            )  # keeps sending (within LINGER_BYTES), reads nothing yet
            r = c.response()
            assert r.status == 413 and r.header("connection") == "close"
            assert c.closed_by_server()


def test_a_connection_refused_with_bytes_unread_lingers_within_bounds(monkeypatch):
    """After its answer to a request whose body it will not read, the server half-closes (write_eof), reads
    on and drops what the client still sends, and closes after LINGER_BYTES more or LINGER_TIME, whichever
    comes first; a connection whose bytes were all read closes at once."""
    from gwctl.proxy import http as H
    from test_proxy_http_h11 import FakeTransport

    monkeypatch.setattr(H, "LINGER_TIME", 0.2)
    monkeypatch.setattr(H, "LINGER_BYTES", 5000)

    async def one(sent_after: int) -> tuple[FakeTransport, float]:
        loop = asyncio.get_running_loop()

        async def handler(request):
            return Reply(413 if request.too_large else 200, b"{}")

        server = HttpServer(handler, body_limit=10)
        conn = server()
        t = FakeTransport(loop)
        t.protocol = conn
        conn.connection_made(t)
        conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        for _ in range(10):
            await asyncio.sleep(0)
        assert t.eof and not t.closed and not t.paused  # answered, half-closed, reading on
        start = loop.time()
        for _ in range(sent_after // 1000):
            conn.data_received(b"x" * 1000)  # dropped
        while not t.closed and loop.time() - start < 2:
            await asyncio.sleep(0.01)
        await server.shutdown(0)
        return t, loop.time() - start

    t, took = asyncio.run(one(6000))  # more than LINGER_BYTES: closed at once
    assert t.closed and took < 0.15 and bytes(t.out).startswith(b"HTTP/1.1 413")
    t, took = asyncio.run(one(1000))  # a quiet client: closed after LINGER_TIME
    assert t.closed and 0.15 <= took < 1.5
