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
streamed the answer itself through :meth:`Request.start_stream`. Answering
synchronously when nothing needs waiting for (a rejection, a health check)
and handing back the coroutine only for the rest keeps the chain of
coroutines a resumed request runs through short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable, Iterable

import httptools
import orjson

log = logging.getLogger("gwctl.proxy")

MAX_HEAD = 64 * 1024  # request line + headers
MAX_PIPELINE = 16  # parsed requests waiting behind the one being answered
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_JSON = "application/json"


class Reply:
    """A whole answer: status, headers (name, value) and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
                 content_type: str | None = _JSON):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        if content_type:
            self.headers.append(("Content-Type", content_type))


class Request:
    """One parsed request. ``headers`` maps lower-case names to values; ``raw_headers`` keeps names as sent."""

    __slots__ = ("method", "path", "query", "headers", "raw_headers", "body", "keep_alive", "http10",
                 "too_large", "conn", "streaming", "answered")

    def __init__(self, conn: "HttpProtocol", method: str, path: str, query: str, raw_headers: list[tuple[str, str]],
                 body: bytes | None, keep_alive: bool, http10: bool, too_large: bool):
        self.conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.raw_headers = raw_headers
        headers: dict[str, str] = {}
        for k, v in raw_headers:
            lk = k.lower()
            headers[lk] = f"{headers[lk]}, {v}" if lk in headers else v
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10
        self.too_large = too_large
        self.streaming = False
        self.answered = False

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
        if not self._chunked or conn.server.closing or conn._broken:
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


_date_cache = [0, b""]


def _date() -> bytes:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


def _head(status: int, headers: Iterable[tuple[str, str]], keep_alive: bool, http10: bool = False) -> bytes:
    """Status line and headers, without the blank line that ends them."""
    parts = [b"HTTP/1.1 %d %s\r\nDate: %s\r\nServer: gwctl\r\n" % (status, _REASONS.get(status, "").encode(), _date()),
             "".join([f"{k}: {v}\r\n" for k, v in headers]).encode("latin-1", "replace")]
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    return b"".join(parts)


Handler = Callable[[Request], "Reply | Awaitable[Reply | None]"]


class HttpServer:
    """The connections of one listening socket, for the idle sweep and shutdown."""

    def __init__(self, handler: Handler, *, body_limit: int, keepalive_timeout: float = 75.0,
                 on_error: Callable[[Request, BaseException], Reply] | None = None):
        self.handler = handler
        self.body_limit = body_limit
        self.keepalive_timeout = keepalive_timeout
        self.on_error = on_error
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> "HttpProtocol":
        if self._sweeper is None:
            self._schedule_sweep()
        return HttpProtocol(self)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(self.keepalive_timeout, 15.0) / 2, self._sweep)

    def _sweep(self) -> None:
        """Close connections that sat idle (or half-sent a request) longer than the keep-alive timeout."""
        deadline = asyncio.get_running_loop().time() - self.keepalive_timeout
        for conn in list(self.connections):
            if not conn.busy and conn.last_active < deadline:
                conn.close()
        self._schedule_sweep()

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now and busy ones after their answer; wait up to ``timeout``."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.busy:
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
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.paused_writing = False
        self._drain_waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None  # serves this connection's requests, one after another
        self.busy = False  # a request is being answered
        self._next: asyncio.Future | None = None  # the idle task waits here for the next request
        self.queue: deque[Request] = deque()
        self.last_active = self.loop.time()
        self._reading_paused = False
        self._read_used = 0  # bytes of this read taken by messages completed in it (roughly)
        self._broken = False  # a request after the current one could not be parsed: close after answering
        self._continue_owed = False  # a 100 Continue held back until the answers before it are out
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0  # bytes of the head parsed so far (url and complete headers)
        self._partial = 0  # bytes read since then while the head stayed unfinished
        self._in_head = True
        self._skip = False  # the rest of this message is not read (too large: the connection closes)

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
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
        self.last_active = self.loop.time()
        if self._skip:
            return
        # a head already unfinished before this read, and still after it, holds all of the read; one
        # that began in this read holds what the messages completed in it did not use
        unfinished = self._in_head and (self._url or self._headers)
        self._read_used = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._skip:
                self._fail(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            if not self._skip:
                self._fail(400, f"malformed HTTP request ({exc})")
            return
        if self._in_head and not self._skip:
            self._partial += len(data) if unfinished else max(0, len(data) - self._read_used - self._head_size)
            if self._head_size + self._partial > MAX_HEAD:
                self._fail(431, "the request head is over 64 KiB")

    # --- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self._head_size += len(name) + len(value) + 4
        self._partial = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._read_used += self._head_size
        if self._skip:
            return
        parser = self.parser
        if self._head_size > MAX_HEAD:
            self._fail(431, "the request head is over 64 KiB")
            return
        if parser.should_upgrade():  # CONNECT, or Upgrade: the body would be skipped by the parser
            self._fail(400, "protocol upgrades and CONNECT are not supported")
            return
        length = None
        expect = False
        for k, v in self._headers:
            lk = k.lower()
            if lk == "content-length":
                length = int(v) if v.isdigit() else None
            elif lk == "expect" and v.lower() == "100-continue":
                expect = True
        if length is not None and length > self.server.body_limit:
            self._dispatch(too_large=True)
            return
        if expect and parser.get_http_version() == "1.1" and not self.closed:  # HTTP/1.0 clients never wait for it
            if not self.busy:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self._continue_owed = True  # after the answers still owed, to keep them in order

    def on_body(self, body: bytes) -> None:
        self._read_used += len(body)
        if self._skip:
            return
        self._size += len(body)
        if self._size > self.server.body_limit:
            self._dispatch(too_large=True)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._skip:
            self._dispatch(too_large=False)

    # --- requests ------------------------------------------------------------------

    def _dispatch(self, too_large: bool) -> None:
        parser = self.parser
        url = self._url
        q = url.find(b"?")
        if q >= 0:
            path, query = url[:q].decode("latin-1"), url[q + 1:].decode("latin-1")
        else:
            path, query = url.decode("latin-1"), ""
        keep_alive = parser.should_keep_alive() and not too_large and not self.server.closing
        body = None if too_large else (self._body[0] if len(self._body) == 1 else b"".join(self._body))
        req = Request(self, parser.get_method().decode("latin-1"), path, query, self._headers, body,
                      keep_alive, parser.get_http_version() == "1.0", too_large)
        if too_large:
            self._skip = True  # the rest of the body is never read: the connection closes after the 413
            self.transport.pause_reading()
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
                reply = self.server.on_error(req, exc) if self.server.on_error else Reply(500, b'{"error":{"message":"internal error"}}')
            if not req.streaming:
                req.keep_alive = req.keep_alive and not self._broken and not self.server.closing
            if reply is not None and not self.closed:
                self.write(_head(reply.status, reply.headers, req.keep_alive, req.http10)
                           + b"Content-Length: %d\r\n\r\n" % len(reply.body)
                           + (b"" if req.method == "HEAD" else reply.body))
            elif reply is None and not req.answered and not self.closed:
                self.close()  # a stream that did not end properly: the client must not wait for more
                return
            self.last_active = self.loop.time()
            if not req.keep_alive or self.closed or self._broken or self.server.closing:
                self.close()
                return
            if not self.queue:
                self.busy = False
                if self._continue_owed:
                    self._continue_owed = False
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
                self._reading_paused = False
                self.transport.resume_reading()

    def _fail(self, status: int, message: str) -> None:
        """A request we cannot parse or take: answer (if nothing is being answered) and close."""
        self._skip = True
        if not self.busy and not self.closed:
            body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None, "param": None}})
            self.write(_head(status, [("Content-Type", _JSON)], False) + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.close()
        else:
            self._broken = True
            self.queue.clear()
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

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.connections.discard(self)
            self.transport.close()
