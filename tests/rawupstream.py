"""A raw-bytes upstream on loopback for tests: records each request's head as sent, answers with scripted writes.

The stand-in (gwctl.testing) is an aiohttp server: kind, and it lower-cases and
merges what it receives. This one keeps the bytes (duplicate headers, letter
case, non-ASCII) and writes its answer as a list of pieces with pauses between
them, the way real servers split an event from the end of a chunked body.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Callable

Script = list[tuple[bytes, float]]  # (bytes to write, seconds to wait before writing them)


@dataclass
class Received:
    head: bytes
    body: bytes

    def header_lines(self) -> list[tuple[bytes, bytes]]:
        lines = self.head.split(b"\r\n")[1:]
        return [(k, v.strip()) for k, _, v in (line.partition(b":") for line in lines if line)]

    def values(self, name: str) -> list[bytes]:
        want = name.lower().encode()
        return [v for k, v in self.header_lines() if k.lower() == want]


def json_reply(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Script:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or []))
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()
    return [(head + body, 0.0)]


def sse_reply(
    events: list[bytes], end_delay: float = 0.0, event_delay: float = 0.0, headers: list[tuple[str, str]] | None = None
) -> Script:
    """A chunked text/event-stream answer: each event its own write, the terminating chunk a write of its own."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or []))
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
    script: Script = [(head, 0.0)]
    for ev in events:
        script.append((b"%x\r\n%s\r\n" % (len(ev), ev), event_delay))
    script.append((b"0\r\n\r\n", end_delay))
    return script


@dataclass
class RawUpstream:
    respond: Callable[[Received], Script]
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                body = await reader.readexactly(length) if length else b""
                rec = Received(head[:-4], body)
                self.received.append(rec)
                for data, pause in self.respond(rec):
                    if pause:
                        await asyncio.sleep(pause)
                    writer.write(data)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def _stop():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop)
        self._thread.join(10)
        self._loop.close()
