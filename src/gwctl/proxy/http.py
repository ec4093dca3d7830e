"""The proxy's HTTP/1.1 server side: an asyncio protocol on httptools' parser.

Parsing is llhttp's (through httptools); this module is the connection glue a
forwarding proxy needs and nothing more: whole request bodies with a size
limit (413 as soon as it is known), keep-alive and pipelining (answers in
order), ``Expect: 100-continue``, a cap on the request head (431), chunked
streaming answers with write back-pressure, the handler cancelled when its
client hangs up, idle connections closed after a timeout, and a graceful
shutdown. aiohttp's server did the same work for about 3x the CPU per
request, a third of the proxy's budget (benchmarks/README.md).

A handler is called with the request and returns a :class:`Reply`, or an
awaitable (an ``async def``'s coroutine) of a Reply or of None when it
streamed the answer itself through :meth:`Request.start_stream`. The server
takes either; the gateway's handler (gwctl.proxy.server) always returns a
coroutine, from a plain function rather than an ``async def`` so that the
chain of coroutines a resumed request runs through stays short.

Limits (the defaults are :class:`HttpServer`'s keyword arguments), none of
them a timer or task per request: one sweep a second looks at every
connection.

* ``MAX_HEAD`` (64 KiB): the request line and headers, and a chunked body's
  trailer fields counted with them; over it, 431 and close. Trailer fields
  are counted and dropped: they never become headers, so they can neither
  authenticate nor be forwarded.
* ``body_limit``: a larger body is never read; the handler answers the
  request with ``too_large`` set (known from Content-Length at the head) and
  the connection closes.
* ``head_timeout`` (10 s): from a request's first byte until its head is
  complete; ``body_timeout`` (60 s): from then until its whole body is in.
  Over either, 408 and close. An idle keep-alive connection is closed after
  ``keepalive_timeout`` (75 s).
* ``max_connections`` (4096) open connections per server (so per worker) and
  ``max_connections_per_client`` (256) per peer address: a connection over
  either gets 503 and is closed; the log says so at most every 5 s.
* ``MAX_PIPELINE`` parsed requests waiting behind the one being answered;
  reading pauses past it.
* What h11 refuses, this server refuses too (tests/test_proxy_http_h11.py):
  an HTTP/1.1 request without exactly one Host (400), a Content-Length of
  over 20 digits (400), a transfer coding other than chunked (501), HTTP
  versions other than 1.0 and 1.1 (505; a request line without one: 400). Header values lose trailing blanks.

Hooks: ``on_head(request)`` is called as soon as a request's head is complete,
before any of its body is read (``request.body`` is None). A :class:`Reply` it
returns answers the request (after the answers owed to requests pipelined
before it), its body is never read, and the connection closes; None lets the
request go on. ``on_reject(status, code, message, request_or_None, path)`` is
told of every answer the server gives on its own (400, 408, 431, 501, 505, and
503 for a connection over a cap), with the request when its head was complete
and the request line's path as far as it was read ("" before it);
the Reply it returns (the gateway's error shape and request id) is sent
instead of the server's default one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Iterable, final

import httptools
import orjson

log = logging.getLogger("gwctl.proxy")

MAX_HEAD = 64 * 1024  # request line + headers, and a chunked body's trailers with them
MAX_PIPELINE = 16  # parsed requests waiting behind the one being answered
HEAD_TIMEOUT = 10.0  # seconds from a request's first byte until its head is complete
BODY_TIMEOUT = 60.0  # seconds from a complete head until the whole body is in
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle connection is kept
MAX_CONNECTIONS = 4096  # open connections per server (per worker process)
MAX_CONNECTIONS_PER_CLIENT = 256  # open connections per peer address
SWEEP_INTERVAL = 1.0  # how often the deadlines are checked: how late one can be noticed
CAP_WARNING_INTERVAL = 5.0  # at most one warning this often about refused connections
# Closing a connection with request bytes unread makes the kernel answer with a reset, which can destroy the
# answer just sent (a 413, a 431) before the client reads it. So such a connection lingers, as nginx's
# lingering close does: its answer goes out with a FIN, and what the client still sends is read and dropped
# until it closes, for at most this long and this much (then it closes anyway).
LINGER_TIME = 2.0
LINGER_BYTES = 1 << 20
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_JSON = "application/json"


@final  # no subclasses: _serve tells a Reply from an awaitable by type(reply) is Reply
class Reply:
    """A whole answer: status, headers (name, value) and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None, content_type: str | None = _JSON
    ):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        if content_type:
            self.headers.append(("Content-Type", content_type))


def _fold_headers(raw_headers: list[tuple[str, str]]) -> tuple[dict[str, str], set[str] | None]:
    """Lower-case names to values, a repeated name's values joined with ", " in order (collected in lists
    and joined once: linear however many repeats), and the set of repeated names (None when none was)."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] | None = None
    for k, v in raw_headers:
        lk = k.lower()
        if lk in headers:
            if repeated is None:
                repeated = {}
            values = repeated.get(lk)
            if values is None:
                repeated[lk] = [headers[lk], v]
            else:
                values.append(v)
        else:
            headers[lk] = v
    if repeated is None:
        return headers, None
    for lk, values in repeated.items():
        headers[lk] = ", ".join(values)
    return headers, set(repeated)


class Request:
    """One parsed request. ``headers`` maps lower-case names to values; ``raw_headers`` keeps names as sent.

    ``body`` is None until the whole body is in (so in ``on_head``) and when it was too large."""

    __slots__ = (
        "method",
        "path",
        "query",
        "headers",
        "raw_headers",
        "body",
        "keep_alive",
        "http10",
        "too_large",
        "conn",
        "streaming",
        "answered",
        "context",
    )

    def __init__(
        self,
        conn: "HttpProtocol",
        method: str,
        path: str,
        query: str,
        raw_headers: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
        keep_alive: bool,
        http10: bool,
        too_large: bool,
    ):
        self.conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.raw_headers = raw_headers
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10
        self.too_large = too_large
        self.streaming = False
        self.answered = False
        self.context: object = None  # the handler's own object for this request (the gateway's flow)

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> "Stream":
        """Send the status and headers now; the body follows in :meth:`Stream.write` calls."""
        self.streaming = True
        return Stream(self, status, headers)


class Stream:
    """A streamed answer: chunked on HTTP/1.1, close-delimited on HTTP/1.0."""

    __slots__ = ("_conn", "_request", "_chunked")

    def __init__(self, request: Request, status: int, headers: Iterable[tuple[str, str]]):
        conn = request.conn
        self._conn = conn
        self._request = request
        self._chunked = not request.http10
        if not self._chunked or conn.server.closing:
            request.keep_alive = False
        framing = b"Transfer-Encoding: chunked\r\n" if self._chunked else b""
        conn.write(_head(status, headers, request.keep_alive) + framing + b"\r\n")

    async def write(self, data: bytes) -> None:
        """Send one piece at once (no buffering); waits while the client reads slower than we write."""
        if not data:
            return
        conn = self._conn
        if conn.closed:
            raise ConnectionResetError("the client closed the connection")
        conn.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        if conn.paused_writing:
            await conn.drain()

    def end(self) -> None:
        if self._chunked and not self._conn.closed:
            self._conn.write(b"0\r\n\r\n")
        self._request.answered = True


_date_cache: list[Any] = [0, b""]  # [the second, its Date value]


def _date() -> bytes:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


def _head(status: int, headers: Iterable[tuple[str, str]], keep_alive: bool, http10: bool = False) -> bytes:
    """Status line and headers, without the blank line that ends them."""
    parts = [
        b"HTTP/1.1 %d %s\r\nDate: %s\r\nServer: gwctl\r\n" % (status, _REASONS.get(status, "").encode(), _date()),
        "".join([f"{k}: {v}\r\n" for k, v in headers]).encode("latin-1", "replace"),
    ]
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    return b"".join(parts)


def _reply_bytes(reply: Reply, keep_alive: bool, http10: bool, head_only: bool) -> bytes:
    return (
        _head(reply.status, reply.headers, keep_alive, http10)
        + b"Content-Length: %d\r\n\r\n" % len(reply.body)
        + (b"" if head_only else reply.body)
    )


def _error_body(status: int, code: str, message: str) -> bytes:
    etype = "api_error" if status == 503 else "invalid_request_error"
    return orjson.dumps({"error": {"message": message, "type": etype, "code": code, "param": None}})


Handler = Callable[[Request], "Reply | Awaitable[Reply | None]"]
HeadHook = Callable[[Request], "Reply | None"]
RejectHook = Callable[[int, str, str, "Request | None", str], "Reply | None"]


_HTTP10 = {"1.1": False, "1.0": True}  # the versions served: is it HTTP/1.0


def _version_refusal(version: str) -> tuple[int, str, str]:
    """The answer to a request line of another HTTP version than 1.0 and 1.1."""
    if version == "0.9":  # a request line without a version: malformed for an HTTP/1.x server
        return 400, "malformed_request", "the request line has no HTTP version: send HTTP/1.1"
    return 505, "http_version_not_supported", f"HTTP/{version} is not supported: send HTTP/1.1"


def _head_refusal(headers: dict[str, str], repeated: set[str] | None, http10: bool) -> tuple[int, str, str] | None:
    """Why a head h11 would refuse is refused (status, code, message): Host, Transfer-Encoding, Content-Length."""
    if "host" not in headers:
        if not http10:
            return 400, "malformed_request", "malformed HTTP request (an HTTP/1.1 request needs a Host header)"
    elif repeated is not None and "host" in repeated:
        return 400, "malformed_request", "malformed HTTP request (more than one Host header)"
    coding = headers.get("transfer-encoding")
    if coding is not None and coding.lower() != "chunked":
        return 501, "unsupported_transfer_encoding", "only Transfer-Encoding: chunked is supported"
    length = headers.get("content-length")  # digits only: the parser checked
    if length is not None and len(length) > 20:  # h11's bound too: a length no body can have
        return 400, "malformed_request", "malformed HTTP request (Content-Length has over 20 digits)"
    return None


class _Stop(Exception):
    """Raised in a parser callback to stop parsing what is left of a read (nothing more is taken)."""


class HttpServer:
    """The connections of one listening socket, their limits and hooks, the deadline sweep and shutdown."""

    def __init__(
        self,
        handler: Handler,
        *,
        body_limit: int,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        on_error: Callable[[Request, BaseException], Reply] | None = None,
        on_head: HeadHook | None = None,
        on_reject: RejectHook | None = None,
        head_timeout: float = HEAD_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
    ):
        for name, seconds in (
            ("keepalive_timeout", keepalive_timeout),
            ("head_timeout", head_timeout),
            ("body_timeout", body_timeout),
        ):
            if not seconds > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
        for name, count in (
            ("max_connections", max_connections),
            ("max_connections_per_client", max_connections_per_client),
        ):
            if count < 1:
                raise ValueError(f"{name} must be at least 1, not {count!r}")
        self.handler = handler
        self.body_limit = body_limit
        self.keepalive_timeout = keepalive_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.on_error = on_error
        self.on_head = on_head
        self.on_reject = on_reject
        self.connections: set[HttpProtocol] = set()
        self.clients: dict[str, int] = {}  # peer address -> its open connections
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._interval = min(SWEEP_INTERVAL, keepalive_timeout / 2, head_timeout / 2, body_timeout / 2)
        self._refused = 0  # connections refused since the last warning
        self._warned = float("-inf")

    def __call__(self) -> "HttpProtocol":
        if self._sweeper is None:
            self._schedule_sweep()
        return HttpProtocol(self)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self._interval, self._sweep)

    def _sweep(self) -> None:
        """408 for heads and bodies past their deadline; close connections idle past the keep-alive timeout."""
        now = asyncio.get_running_loop().time()
        idle_since = now - self.keepalive_timeout
        head_timeout, body_timeout = self.head_timeout, self.body_timeout
        for conn in list(self.connections):
            if conn._skip or conn._reading_paused:  # nothing is being read: it owes answers, or it is closing
                if not conn.busy and conn.last_active < idle_since:
                    conn.close()
            elif conn._began:  # a head is coming in
                if now - conn._began > head_timeout:
                    conn._reject(
                        408, "request_timeout", f"the request head did not arrive within {head_timeout:g} s", None
                    )
            elif conn._req is not None:  # a body is coming in (or will, once the 100 Continue owed goes out)
                if now - conn._body_began > body_timeout and not conn._continue_owed:
                    conn._reject(
                        408, "request_timeout", f"the request body did not arrive within {body_timeout:g} s", conn._req
                    )
            elif not conn.busy and conn.last_active < idle_since:
                conn.close()
        self._schedule_sweep()

    def _refused_connection(self, why: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._warned >= CAP_WARNING_INTERVAL:
            log.warning(
                "refusing connections with 503: %s (%d refused since the last such warning)", why, self._refused
            )
            self._warned = now
            self._refused = 0

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now and busy ones after their answer; wait up to ``timeout``."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.busy or conn._lingering:  # (a lingering one was answered: nothing is owed)
                conn.close()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made, before any other call
        self.peer: str | None = None  # the client's address
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.paused_writing = False
        self._drain_waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None  # serves this connection's requests, one after another
        self.busy = False  # a request is being answered
        self._next: asyncio.Future | None = None  # the idle task waits here for the next request
        self.queue: deque[Request] = deque()
        self.last_active = self.loop.time()
        self._counted = False  # in server.connections and server.clients
        self._reading_paused = False
        self._read_used = 0  # bytes of this read taken by messages completed in it (roughly)
        self._final: bytes | None = None  # the server's own last answer, sent once the answers owed before it are out
        self._continue_owed = False  # a 100 Continue held back until the answers before it are out
        # the message being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: bytes | bytearray | None = None
        self._size = 0  # body bytes so far
        self._head_size = 0  # bytes of the head (url and complete headers) and of complete trailer fields
        self._partial = 0  # bytes read since then while the head (or trailer field) stayed unfinished
        self._in_head = True
        self._began = 0.0  # loop time of the read that began the head being parsed; 0.0 when none is
        self._req: Request | None = None  # the request whose body is being read
        self._body_began = 0.0  # loop time its head was complete (or its 100 Continue went out)
        self._skip = False  # nothing more is read on this connection (it closes after the answers it owes)
        self._lingering = False  # answered and half-closed: what the client still sends is dropped (_linger)
        self._linger_left = 0

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        peer = self.peer = peer[0] if isinstance(peer, tuple) and peer else None
        if len(server.connections) >= server.max_connections:
            self._refuse(f"the gateway has {server.max_connections} connections open, its limit", None)
            return
        if peer is not None:
            count = server.clients.get(peer, 0)
            if count >= server.max_connections_per_client:
                self._refuse(f"{count} connections are open from this client, the limit per client", peer)
                return
            server.clients[peer] = count + 1
        self._counted = True
        server.connections.add(self)

    def _refuse(self, why: str, peer: str | None) -> None:
        """Over a connection cap: 503 at once, and close."""
        self._skip = True
        self.server._refused_connection(why + (f" ({peer})" if peer else ""))
        self._reject(503, "too_many_connections", f"{why}; retry later", None)

    def _forget(self) -> None:
        if self._counted:
            self._counted = False
            server = self.server
            server.connections.discard(self)
            peer = self.peer
            if peer is not None:
                count = server.clients.get(peer, 1) - 1
                if count > 0:
                    server.clients[peer] = count
                else:
                    server.clients.pop(peer, None)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._forget()
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client is gone: stop its upstream request too
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        before = self.last_active
        self.last_active = self.loop.time()
        if self._skip:
            if self._lingering:
                self._linger_left -= len(data)
                if self._linger_left < 0:
                    self.close()
            return
        req = self._req
        if req is not None:
            mark = self._size + self._head_size
        # a head already unfinished before this read, and still after it, holds all of the read; one
        # that began in this read holds what the messages completed in it did not use
        unfinished = self._in_head and (self._url or self._headers)
        self._read_used = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._skip:
                self._reject(400, "upgrade_not_supported", "protocol upgrades are not supported", self._req)
            return
        except httptools.HttpParserError as exc:
            if not self._skip:
                self._reject(400, "malformed_request", f"malformed HTTP request ({exc})", self._req)
            return
        if self._skip:
            return
        if self._began:
            self._partial += len(data) if unfinished else max(0, len(data) - self._read_used - self._head_size)
            if self._head_size + self._partial > MAX_HEAD:
                self._reject(431, "head_too_large", "the request head is over 64 KiB", None)
        elif self._req is not None:
            if self._req is req:  # the same body: what was neither body nor a whole trailer field is a trailer's
                if self._size + self._head_size != mark:  # (or a chunk extension), unfinished
                    self._partial = 0
                else:
                    self._partial += len(data)
                    if self._head_size + self._partial > MAX_HEAD:
                        self._reject(431, "head_too_large", "the request head and trailers are over 64 KiB", req)
        elif not self.busy:
            self.last_active = before  # nothing began (empty lines only): not a sign of life

    # --- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._skip:
            raise _Stop  # nothing after a refused request is parsed
        self._began = self.last_active
        self._url = b""
        self._headers = []
        self._body = None
        self._size = 0
        self._head_size = 0
        self._partial = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        self._partial = 0
        if self._in_head:
            self._headers.append((name.decode("latin-1"), value.decode("latin-1").rstrip(" \t")))
        elif size > MAX_HEAD and not self._skip:  # a trailer field: counted with the head, never kept
            self._reject(431, "head_too_large", "the request head and trailers are over 64 KiB", self._req)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._read_used += self._head_size
        if self._skip:
            return
        self._began = 0.0
        self._partial = 0
        parser = self.parser
        if self._head_size > MAX_HEAD:
            self._reject(431, "head_too_large", "the request head is over 64 KiB", None)
            return
        if parser.should_upgrade():  # CONNECT, or Upgrade: the body would be skipped by the parser
            self._reject(400, "upgrade_not_supported", "protocol upgrades and CONNECT are not supported", None)
            return
        version = parser.get_http_version()
        http10 = _HTTP10.get(version)
        if http10 is None:
            self._reject(*_version_refusal(version), None)
            return
        raw = self._headers
        headers: dict[str, str] = {}
        repeated = None
        for k, v in raw:  # _fold_headers inline for the usual head without a repeated name
            lk = k.lower()
            if lk in headers:
                headers, repeated = _fold_headers(raw)
                break
            headers[lk] = v
        refusal = _head_refusal(headers, repeated, http10)
        if refusal is not None:
            self._reject(*refusal, None)
            return
        length = headers.get("content-length")  # digits only: the parser checked (and _head_refusal its size)
        too_large = length is not None and int(length) > self.server.body_limit
        path, _, query = self._url.decode("latin-1").partition("?")  # latin-1: a byte is a character
        method = parser.get_method().decode("latin-1")
        keep_alive = parser.should_keep_alive() and not too_large and not self.server.closing
        req = Request(self, method, path, query, raw, headers, None, keep_alive, http10, too_large)
        on_head = self.server.on_head
        if on_head is not None:
            try:
                reply = on_head(req)
            except Exception as exc:
                log.exception("error while checking the head of %s %s", method, path)
                reply = self._internal_error(req, exc)
            if reply is not None:  # refused at the head: the body is never read
                req.keep_alive = False
                self._finish(_reply_bytes(reply, False, http10, method == "HEAD"))
                return
        if too_large:
            self._too_large(req)
            return
        if not http10 and not self.closed and "expect" in headers:  # HTTP/1.0 clients never wait for a 100 Continue
            self._expect(headers["expect"])
        self._req = req
        self._body_began = self.last_active

    def _expect(self, expect: str) -> None:
        """Answer ``Expect: 100-continue`` now, or once the answers still owed are out (to keep them in order)."""
        if expect.lower() == "100-continue":
            if not self.busy:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self._continue_owed = True

    def on_body(self, body: bytes) -> None:
        self._read_used += len(body)
        if self._skip:
            return
        size = self._size = self._size + len(body)
        if size > self.server.body_limit:
            assert self._req is not None  # a body is read only for the request being parsed
            self._too_large(self._req)
            return
        buf = self._body
        if buf is None:
            self._body = body
        elif type(buf) is bytes:  # a second piece: gather in one buffer (a list of many tiny pieces costs far more)
            buf = self._body = bytearray(buf)
            buf += body
        else:
            buf += body

    def on_message_complete(self) -> None:
        req = self._req
        if req is None:  # refused, or too large (answered already)
            return
        self._req = None
        body = self._body
        req.body = b"" if body is None else body if type(body) is bytes else bytes(body)
        self._dispatch(req)

    # --- requests ------------------------------------------------------------------

    def _too_large(self, req: Request) -> None:
        """Hand over a request whose body is over the limit; the rest is never read (the connection closes)."""
        self._req = None
        self._body = None
        self._skip = True
        req.too_large = True
        req.keep_alive = False
        self.transport.pause_reading()
        self._dispatch(req)

    def _dispatch(self, req: Request) -> None:
        if not self.busy:
            self.busy = True
            waiting = self._next
            if waiting is not None:  # the connection's task is idle: hand it the request (cheaper than a new task)
                self._next = None
                waiting.set_result(req)
            else:
                self.task = self.loop.create_task(self._serve(req))
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_PIPELINE and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    async def _serve(self, req: Request) -> None:
        while True:
            reply: Reply | Awaitable[Reply | None] | None
            try:
                reply = self.server.handler(req)
                if type(reply) is not Reply:
                    reply = await reply
            except asyncio.CancelledError:
                self.close()
                return
            except Exception as exc:
                if req.streaming:  # headers already went out: all we can do is cut the stream
                    log.exception("error while streaming %s", req.path)
                    self.close()
                    return
                log.exception("error while answering %s %s", req.method, req.path)
                reply = self._internal_error(req, exc)
            # the handler's object points back at the request: drop the cycle now, or every request's objects
            # wait for the cyclic garbage collector (measured: ~5 µs a request in collections)
            req.context = None
            if not req.streaming:
                req.keep_alive = req.keep_alive and not self.server.closing
            if reply is not None and not self.closed:
                self.write(
                    _head(reply.status, reply.headers, req.keep_alive, req.http10)
                    + b"Content-Length: %d\r\n\r\n" % len(reply.body)
                    + (b"" if req.method == "HEAD" else reply.body)
                )
            elif reply is None and not req.answered and not self.closed:
                self.close()  # a stream that did not end properly: the client must not wait for more
                return
            self.last_active = self.loop.time()
            if not req.keep_alive or self.closed or self.server.closing:
                self._close_answered()
                return
            if not self.queue:
                if self._final is not None:  # the server's own answer comes last, then the connection closes
                    self.write(self._final)
                    self._close_answered()
                    return
                self.busy = False
                if self._continue_owed:
                    self._continue_owed = False
                    self._body_began = self.last_active  # the body's deadline counts from now
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                waiting = self._next = self.loop.create_future()
                try:
                    req = await waiting  # _dispatch sets busy and hands over the next request
                except asyncio.CancelledError:  # the connection went away while idle
                    self.close()
                    return
                continue
            req = self.queue.popleft()
            if self._reading_paused and len(self.queue) < MAX_PIPELINE // 2:
                self._resume_reading()

    def _internal_error(self, req: Request, exc: Exception) -> Reply:
        """The answer to a handler's or hook's exception (logged by the caller): ``on_error``'s, else a bare 500."""
        on_error = self.server.on_error
        return on_error(req, exc) if on_error else Reply(500, b'{"error":{"message":"internal error"}}')

    def _resume_reading(self) -> None:
        """The pipeline drained to half: read again."""
        self._reading_paused = False
        if not self._skip:
            now = self.loop.time()  # nothing could arrive while paused: the deadlines count from now
            if self._began:
                self._began = now
            self._body_began = now
            self.transport.resume_reading()

    def _reject(self, status: int, code: str, message: str, request: Request | None) -> None:
        """The server's own answer to a request it will not take (or to a connection over a cap): tell
        ``on_reject``, answer once the answers owed are out, read nothing more, close."""
        hook = self.server.on_reject
        reply = None
        if hook is not None:
            path = request.path if request is not None else self._url.decode("latin-1").partition("?")[0]
            try:
                reply = hook(status, code, message, request, path)  # the answer to send instead of the default
            except Exception:
                log.exception("error in the on_reject hook")
        http10 = request.http10 if request is not None else False
        head_only = request is not None and request.method == "HEAD"
        if reply is None:
            reply = Reply(status, _error_body(status, code, message))
        self._finish(_reply_bytes(reply, False, http10, head_only))

    def _finish(self, answer: bytes) -> None:
        """Send ``answer`` after the answers still owed on this connection, then close; read nothing more."""
        self._skip = True
        self._req = None
        self._body = None
        self._began = 0.0
        if not self.busy:
            if not self.closed:
                self.write(answer)
                self._close_answered()
        else:
            self._final = answer
            self.transport.pause_reading()

    # --- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.paused_writing or self.closed:
            return
        self._drain_waiter = self.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def _close_answered(self) -> None:
        """Close after the last answer: at once when everything the client sent was read, else lingering
        (LINGER_TIME, LINGER_BYTES) so the unread bytes cannot turn into a reset that destroys the answer."""
        if self.closed:
            return
        if not self._skip or self._lingering or not self._counted:  # (refused over a cap: not kept at all)
            self.close()
            return
        try:
            self.transport.write_eof()  # the answer, then FIN: the client reads it all, then sees the end
        except (OSError, RuntimeError, NotImplementedError, AttributeError):  # a transport without half-close
            self.close()
            return
        self._lingering = True
        self._linger_left = LINGER_BYTES
        self.transport.resume_reading()
        self.loop.call_later(LINGER_TIME, self.close)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._forget()
            self.transport.close()
