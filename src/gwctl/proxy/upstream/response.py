"""One upstream answer as the caller sees it: status and headers at once, the body as it arrives.

The connection that reads the answer drives it through a small interface:
:meth:`~UpstreamResponse.head_done`, :meth:`~UpstreamResponse.feed` (one body piece;
says when the consumer is so far behind that reading should pause),
:meth:`~UpstreamResponse.end`, :meth:`~UpstreamResponse.fail` and
:meth:`~UpstreamResponse.refuse`. The response in turn calls back three
connection methods: ``resume()`` when its consumer caught up, ``release()``
and ``close()`` when it is done with the connection. No futures or tasks per
body piece: a waiting reader is woken by resolving one future.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, AsyncIterator

from gwctl.proxy.upstream.errors import UpstreamError, UpstreamProtocolError

if TYPE_CHECKING:
    from gwctl.proxy.upstream.connection import _Conn

# Flow control: stop reading from the upstream when this much of a streamed
# body is buffered and not yet taken by the consumer; read again below _LOW.
_HIGH_WATER = 1024 * 1024
_LOW_WATER = 256 * 1024

MAX_ANSWER_BYTES = 256 * 1024 * 1024
"""The most of a whole answer (one read whole, not streamed) held for the consumer: a chat answer is
kilobytes and a big embeddings batch tens of megabytes; an upstream sending more fails the answer instead of
the worker's memory."""


class UpstreamResponse:
    """One upstream answer: status and headers at once, the body as it arrives.

    Always finish with :meth:`release` (body done, connection back to the
    pool) or :meth:`abort` (connection closed), or use ``async with``.
    """

    __slots__ = (
        "status",
        "reason",
        "headers",
        "method",
        "_conn",
        "_loop",
        "_head",
        "_pieces",
        "_buffered",
        "_done",
        "_error",
        "_waiter",
        "_read_all",
    )

    def __init__(self, conn: _Conn, loop: asyncio.AbstractEventLoop, method: str):
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.method = method
        self._conn: _Conn | None = conn
        self._loop = loop
        self._head: asyncio.Future[None] = loop.create_future()
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_all = False

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason!r} done={self._done}>"

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    # --- driven by the connection --------------------------------------------------------

    def head_received(self) -> asyncio.Future[None]:
        """What the pool awaits: resolved when the head is in, failed when the answer fails first."""
        return self._head

    def head_done(self, status: int) -> None:
        """The final head is in (``headers`` and ``reason`` were filled as it arrived)."""
        self.status = status
        if not self._head.done():  # done: the request was cancelled meanwhile
            self._head.set_result(None)

    def feed(self, piece: bytes) -> bool:
        """One body piece. True when the consumer is behind: more than _HIGH_WATER is buffered
        and nobody asked for the whole body (the connection then pauses reading)."""
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._read_all:
            if self._buffered > MAX_ANSWER_BYTES:
                self._pieces.clear()  # and whatever still comes, until the consumer aborts the connection
                self.fail(UpstreamError(f"the answer is larger than {MAX_ANSWER_BYTES >> 20} MiB"))
            return False
        w = self._waiter  # wake a waiting reader (inlined: once per body piece)
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        return self._buffered > _HIGH_WATER

    def end(self) -> None:
        """The answer is complete."""
        self._done = True
        w = self._waiter  # (inlined _wake: once per answer)
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def fail(self, error: BaseException) -> None:
        """End an answer still arriving with ``error`` (no effect once it ended or failed)."""
        if not self._done and self._error is None:
            self._error = error
            head = self._head
            if not head.done():
                head.set_exception(error)
            self._wake()

    def refuse(self, error: UpstreamError) -> None:
        """Fail an answer that has ended (head and body parsed) but breaks a rule seen only now."""
        self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # --- body --------------------------------------------------------------

    async def _wait(self) -> None:
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None

    def _taken(self, n: int) -> None:
        buffered = self._buffered - n
        self._buffered = buffered
        # Reading pauses only above _HIGH_WATER, so a paused connection resumes as the buffer drops to _LOW_WATER.
        if buffered <= _LOW_WATER < buffered + n and self._conn is not None:
            self._conn.resume()

    async def read(self) -> bytes:
        """The rest of the body, de-chunked (b"" when there is none)."""
        self._read_all = True
        conn = self._conn
        if conn is not None and self._buffered > _LOW_WATER:  # it may have paused: read on
            conn.resume()
        while True:
            if self._error is not None:
                raise self._error
            if self._done:
                break
            await self._wait()
        pieces = self._pieces
        n = len(pieces)
        if n == 0:
            return b""
        data = pieces[0] if n == 1 else b"".join(pieces)
        pieces.clear()
        self._buffered = 0
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            pieces = self._pieces
            if pieces:
                piece = pieces.popleft()
                self._taken(len(piece))
                return piece
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    # --- end of use --------------------------------------------------------

    def release(self) -> None:
        """Done with this answer: pool the connection when the body was fully
        received and both sides allow keep-alive, else close it. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._done and self._error is None:
            conn.release(self.method == "HEAD")  # pooled if the answer allows keep-alive
            return
        if not self._done and self._error is None:
            self._error = UpstreamProtocolError("the response was released before its body was complete")
            self._wake()
        conn.close()

    def abort(self) -> None:
        """Close the connection now (the client hung up, or the caller gave up)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if not self._done and self._error is None:
            self._error = UpstreamProtocolError("the response was aborted")
            self._wake()
        conn.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()
