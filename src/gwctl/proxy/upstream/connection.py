"""One upstream HTTP/1.1 connection: ``send`` writes a request and returns the UpstreamResponse
its answer is read into; ``release`` pools the connection afterwards, or closes it. One
request at a time (no pipelining).

An ``asyncio.Protocol`` that httptools (llhttp) calls back into as bytes arrive; the framing
rules llhttp leaves open are in ``framing.py``. Where the connection is in its life is one
:class:`ConnState`, not a set of flags, so each callback asks one question: what am I reading
now? ``data_received`` is the hot path: one branch on the state per read, and no call per
body piece beyond ``UpstreamResponse.feed``.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gwctl.proxy.upstream.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, _Refused, _Stale
from gwctl.proxy.upstream.framing import (
    _BAD_REASON,
    _MAX_HEAD,
    _check_unkept,
    _close_delimited,
    _ends_with,
    _keep_alive,
    _Trailers,
    _transfer_coding,
)
from gwctl.proxy.upstream.response import UpstreamResponse
from gwctl.proxy.upstream.target import _Target

if TYPE_CHECKING:
    from gwctl.proxy.upstream.pool import UpstreamPool


class ConnState(enum.Enum):
    """Where a connection is: which part of an answer it reads, or why it reads none."""

    IDLE = "idle"  # no request on it: new, or pooled after an answer
    SENT = "sent"  # a request written, no byte of its answer yet (a reused one dying now is retried)
    HEAD = "head"  # reading the answer's head (any 1xx answers before it included)
    INTERIM = "interim"  # a 1xx head is complete; its (bodiless) message ends next
    BODY = "body"  # the final head is in: reading the body
    BACKLOG = "backlog"  # the body passed the high-water mark in this read: reading pauses when it ends
    PAUSED = "paused"  # reading paused until the consumer takes enough of the body
    DONE = "done"  # the answer is complete; released, it may carry the next request (if keep-alive)
    SPENT = "spent"  # the answer is complete, but bytes came that nobody asked for: never reused
    CLOSED = "closed"


# Module names for the members: the hot path compares with ``is`` against a global.
_IDLE = ConnState.IDLE
_SENT = ConnState.SENT
_HEAD = ConnState.HEAD
_INTERIM = ConnState.INTERIM
_BODY = ConnState.BODY
_BACKLOG = ConnState.BACKLOG
_PAUSED = ConnState.PAUSED
_DONE = ConnState.DONE
_SPENT = ConnState.SPENT
_CLOSED = ConnState.CLOSED


class _Conn(asyncio.Protocol):
    """One upstream connection; httptools calls back into it as bytes arrive."""

    __slots__ = (
        "pool",
        "target",
        "key",
        "loop",
        "transport",
        "parser",
        "resp",
        "state",
        "uses",
        "idle_since",
        "timeout",
        "last_data",
        "sink",
        "trailers",
        "head_bytes",
        "odd_version",
        "keep_alive",
        "last_piece",
    )

    def __init__(self, pool: UpstreamPool, target: _Target, loop: asyncio.AbstractEventLoop, key: tuple):
        self.pool = pool
        self.target = target
        self.key = key  # the idle list it goes back to: (scheme, host, port), plus the CA file it was verified with
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.resp: UpstreamResponse | None = None
        self.state = _IDLE
        self.uses = 0
        self.idle_since = 0.0
        self.timeout = 0.0
        self.last_data = 0.0
        self.sink: list | _Trailers = []  # where on_header puts fields: the answer's headers, then its trailers
        self.trailers = _Trailers()
        self.head_bytes = 0  # bytes received before the final head was complete
        self.odd_version = False  # the answer may not be HTTP/1.1: look at its version before keeping it alive
        self.keep_alive = False  # the answer's head allows another request after it
        self.last_piece: bytes | None = None  # the last body piece of the current read (None: no piece in it)

    @property
    def paused(self) -> bool:
        """Reading is paused for a slow consumer (for tests and debugging: the code compares ``state``)."""
        return self.state is _PAUSED

    # --- driving a request ---------------------------------------------------

    def send(self, data: bytes | tuple[bytes, bytes], method: str, read_timeout: float) -> UpstreamResponse:
        loop = self.loop
        resp = UpstreamResponse(self, loop, method)
        self.resp = resp
        self.uses += 1
        self.timeout = read_timeout
        self.sink = resp.headers
        self.last_data = loop.time()
        if self.state is _CLOSED:  # the server hung up between connect and now
            self._lost_before_answer(resp)
            return resp
        self.state = _SENT
        self.pool.watch(self)
        assert self.transport is not None
        if type(data) is bytes:
            self.transport.write(data)
        else:
            self.transport.writelines(data)  # type: ignore[arg-type]  # the (head, body) pair
        return resp

    def release(self, head_request: bool) -> None:
        """The caller is done with a complete answer: pool the connection if it may carry another, else close it."""
        self.resp = None
        if self.state is not _DONE or not self.keep_alive:
            self.close()
            return
        self.state = _IDLE
        self.last_piece = None
        if head_request:
            # llhttp cannot be told the answer was to HEAD, so it may still be
            # expecting a Content-Length body: start the next answer afresh.
            self.parser = HttpResponseParser(self)
        self.pool.put_idle(self)

    def close(self) -> None:
        self.pool.unwatch(self)
        self.resp = None
        if self.state is not _CLOSED:
            self.state = _CLOSED
            if self.transport is not None:
                self.transport.abort()

    def resume(self) -> None:
        """Read again if reading was paused for a slow consumer."""
        if self.state is _PAUSED:
            self.state = _BODY
            self.last_data = self.loop.time()
            assert self.transport is not None
            self.transport.resume_reading()

    def _fail(self, error: UpstreamError) -> None:
        """End the current answer with ``error`` and drop the connection."""
        if self.resp is not None:
            self.resp.fail(error)
        self.state = _CLOSED
        self.pool.unwatch(self)
        if self.transport is not None:
            self.transport.abort()

    def check_timeout(self, now: float) -> bool:
        """The watchdog's look at this answer: fail it when the upstream was silent for read_timeout.
        False when it no longer needs watching."""
        state = self.state
        if state is _PAUSED:  # the consumer is slow, not the upstream: the clock restarts when reading does
            self.last_data = now
            return True
        in_head = state is _SENT or state is _HEAD or state is _INTERIM
        if not in_head and state is not _BODY and state is not _BACKLOG:
            return False  # answered, failed or closed
        if now - self.last_data >= self.timeout:
            what = "the response head" if in_head else "the next part of the body"
            self._fail(
                UpstreamTimeout(f"{self.target.name} sent nothing for {self.timeout:g} s while we waited for {what}")
            )
            return False
        return True

    def _complete(self) -> None:
        self.state = _DONE
        self.pool.unwatch(self)
        self.resp.end()  # type: ignore[union-attr]

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is _BODY or state is _PAUSED or state is _BACKLOG:
            in_head = False
        elif state is _SENT:  # the answer's first read
            self.state = _HEAD
            self.head_bytes = len(data)
            if not data.startswith(b"HTTP/1.1"):
                if data[0] != 72:  # "H": llhttp would skip CR/LF before a status line; a desynchronised stream
                    self._fail(self._malformed("it does not begin with a status line"))
                    return
                self.odd_version = True  # another version, or a first read too short to tell: read it
            in_head = True
        elif state is _HEAD or state is _INTERIM:
            self.head_bytes += len(data)
            in_head = True
        else:  # nothing asked (IDLE), the answer is over (DONE, SPENT), or CLOSED
            if state is _IDLE:
                self.close()  # the connection is unusable
            elif state is not _CLOSED:
                self.state = _SPENT
            return
        self.last_data = self.loop.time()
        self.last_piece = None
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(
                UpstreamProtocolError(f"{self.target.name} switched protocols, which the gateway never asks for")
            )
            return
        except HttpParserError as exc:
            self._parse_failed(exc)
            return
        if in_head and self.head_bytes > _MAX_HEAD and self._head_too_big():
            return
        state = self.state
        if state is _BACKLOG:
            self.state = _PAUSED
            self.transport.pause_reading()  # type: ignore[union-attr]
        elif (state is _DONE or state is _SPENT) and self.keep_alive and data[-1] in b"\r\n":
            self._check_end(data)

    def _check_end(self, data: bytes) -> None:
        """Once per answer, in the read where it ended, if it may be followed by another (keep-alive)
        and that read ends in CR or LF: is anything after the answer?

        llhttp skips CR and LF between messages without a callback, so CR/LF octets after the
        answer would go unnoticed and the connection would be reused out of step (any other
        byte starts a message: on_message_begin refuses it). An answer ends either with the
        blank line closing its head or trailer section -- exactly CR LF CR LF after a byte that
        is neither -- or with its last body piece (_ends_with); anything else means octets
        after it, or an end split so that we cannot tell: either way the connection is not
        reused. The same pass refuses a Transfer-Encoding other than one plain "chunked" (as
        _transfer_coding does; a Content-Length answer ending otherwise has none: llhttp
        refuses the two together).
        """
        headers = self.resp.headers  # type: ignore[union-attr]
        coding = None  # its Transfer-Encoding field (inlined: once per answer, on the hot path)
        for name, value in headers:
            if len(name) == 17 and name.lower() == "transfer-encoding":
                if coding is not None:
                    coding = ""  # twice: refused below
                    break
                coding = value
        if coding is None:
            last = self.last_piece
            if last is not None:  # ended with a body piece (Content-Length)
                if not _ends_with(data, last):
                    self.state = _SPENT
                return
        elif coding != "chunked" and coding.strip(" \t").lower() != "chunked":
            self._refuse_ended(_transfer_coding(headers)[1])  # type: ignore[arg-type]
            return
        # ended with the blank line closing its head or trailer section
        if not (data.endswith(b"\r\n\r\n") and len(data) > 4 and data[-5] not in b"\r\n"):
            self.state = _SPENT

    def _parse_failed(self, exc: HttpParserError) -> None:
        cause = exc.__context__
        error = self._malformed(cause.message if isinstance(cause, _Refused) else str(exc))
        if self.state is _DONE or self.state is _SPENT:
            # The answer had ended; what followed it is not an answer (so the connection goes),
            # but the answer itself must still pass the size and framing checks.
            if self.head_bytes > _MAX_HEAD and self._head_too_big():
                return
            if self.keep_alive:
                self._check_framing()
            self.close()
            return
        self._fail(error)

    def _malformed(self, why: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.target.name} sent a malformed HTTP response ({why})")

    def _refuse_ended(self, why: str) -> None:
        """Fail an answer that has ended (its head and body were parsed) and drop the connection."""
        self.resp.refuse(self._malformed(why))  # type: ignore[union-attr]
        self.close()

    def _head_too_big(self) -> bool:
        """More than _MAX_HEAD bytes came before the head was complete: is the head itself too big?"""
        resp = self.resp
        assert resp is not None
        state = self.state
        if state is not _SENT and state is not _HEAD and state is not _INTERIM:  # the head is complete
            size = len(resp.reason) + 15 + sum(len(k) + len(v) + 4 for k, v in resp.headers)
            if size <= _MAX_HEAD:
                self.head_bytes = 0  # it was the body that made the read big: stop counting
                return False
        why = f"a response head larger than {_MAX_HEAD // 1024} KiB"
        if state is _DONE or state is _SPENT:
            self._refuse_ended(why)
        else:
            self._fail(self._malformed(why))
        return True

    def _check_framing(self) -> bool:
        """Refuse an ended answer with a Transfer-Encoding other than one plain ``chunked``. True when it passes."""
        problem = _transfer_coding(self.resp.headers)[1]  # type: ignore[union-attr]
        if problem is not None:
            self._refuse_ended(problem)
            return False
        return True

    def eof_received(self):
        return None  # let the transport close; connection_lost decides what it meant

    def connection_lost(self, exc) -> None:
        state = self.state
        self.state = _CLOSED
        self.pool.unwatch(self)
        resp = self.resp
        if resp is None:
            return
        if state is _SENT:
            self._lost_before_answer(resp)
        elif state is _BODY or state is _PAUSED or state is _BACKLOG:
            if exc is None and _close_delimited(resp.headers):
                resp.end()  # closed: the connection is not reused
            else:
                self._fail(self._closed_early())
        elif state is _HEAD or state is _INTERIM:
            self._fail(self._closed_early())

    def _closed_early(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.target.name} closed the connection before the response completed")

    def _lost_before_answer(self, resp: UpstreamResponse) -> None:
        # A reused connection the server closed while idle: the caller retries once.
        if self.uses > 1:
            err: Exception = _Stale()
        else:
            err = UpstreamProtocolError(f"{self.target.name} closed the connection without answering")
        resp.fail(err)

    # --- httptools callbacks ----------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if not status.isalpha() and _BAD_REASON(status):
            raise _Refused("a control character in the reason phrase")
        self.resp.reason += status.decode("latin-1")  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.sink.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            # 1xx: informational, a final answer follows (101 makes feed_data raise)
            if status < 100:
                raise _Refused(f"status {status}")
            problem = _transfer_coding(resp.headers)[1]
            if problem is not None:
                raise _Refused(problem)
            self.odd_version = True  # the final answer's version was not seen in the first bytes
            self.state = _INTERIM
            resp.headers = self.sink = []
            resp.reason = ""
            return
        head = resp.method == "HEAD"
        keep = parser.should_keep_alive()
        if not keep or head or self.odd_version:
            # rare: Connection: close, HTTP/1.0, a close-delimited body, a HEAD answer (llhttp cannot be
            # told the method), an answer whose version the first bytes did not show; llhttp also keeps
            # an HTTP/1.0 (or 0.9) answer alive on "keep-alive", even beside "close"
            self.odd_version = False
            version = parser.get_http_version()
            _check_unkept(resp.headers, version)
            if keep or head:
                keep = _keep_alive(resp.headers, version)
        trailers = self.trailers
        trailers.size = 0
        self.sink = trailers
        self.keep_alive = keep
        if head:
            self.state = _DONE
            self.pool.unwatch(self)
            resp.end()
        else:
            self.state = _BODY
        resp.head_done(status)

    def on_body(self, body: bytes) -> None:
        state = self.state
        if state is _BODY:
            self.last_piece = body
            if self.resp.feed(body):  # type: ignore[union-attr]
                self.state = _BACKLOG
        elif state is _DONE or state is _SPENT:  # a body after HEAD
            self.state = _SPENT
        else:  # BACKLOG, or PAUSED: bytes the transport delivered before reading paused
            self.last_piece = body
            self.resp.feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        state = self.state
        if state is _INTERIM:
            self.state = _HEAD
            return
        resp = self.resp
        assert resp is not None
        if state is _BODY or state is _BACKLOG:
            self._complete()
        elif state is _PAUSED:  # the rest came before reading paused: nothing more is due, so read on
            self.transport.resume_reading()  # type: ignore[union-attr]
            self._complete()
        elif resp.status not in (204, 304) and _transfer_coding(resp.headers)[0]:
            # A HEAD answer (done at its head) that llhttp, not knowing the method, read a chunked
            # body for: those chunk bytes came after the answer, so the connection is out of step.
            self.state = _SPENT

    def on_message_begin(self) -> None:
        state = self.state
        if state is not _HEAD and state is not _SENT and state is not _INTERIM:
            raise _Refused("more than one response to one request")  # a second answer: stop parsing here
