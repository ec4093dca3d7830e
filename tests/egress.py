"""A small HTTP egress proxy for tests: CONNECT tunnels and absolute-form requests, piped as they come.

It records each connection's first request (line and headers), answers 407
without the expected ``Proxy-Authorization`` and 403 to a CONNECT whose
authority is in ``refuse``. Async (``async with EgressProxy() as p``) or, for
the synchronous end-to-end tests, on a thread of its own
(``with EgressProxy().in_thread() as p``). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

HOST = "127.0.0.1"


class Seen:
    """One request the proxy received first on a connection."""

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], raw: bytes):
        self.method, self.target, self.headers, self.raw = method, target, headers, raw

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class EgressProxy:
    def __init__(self, credentials: str | None = None, refuse: tuple[str, ...] = ()):
        self.credentials = credentials
        self.refuse = refuse
        self.seen: list[Seen] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> "EgressProxy":
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for t in list(self._tasks):
            t.cancel()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}{HOST}:{self.port}"

    @contextlib.contextmanager
    def in_thread(self):
        """Serve from a thread with its own event loop until the block ends."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()

        async def main():
            async with self:
                ready.set()
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test egress proxy did not start")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()

    async def _serve(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        seen = Seen(method, target, headers, head)
        self.seen.append(seen)
        if self.credentials is not None and seen.header("proxy-authorization") != [self.credentials]:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        if method == "CONNECT":
            if target in self.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = b""
        else:  # absolute form: to the host it names, forwarded as is (origin servers must accept it)
            authority = target.split("://", 1)[1].split("/", 1)[0]
            host, _, port = authority.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            first = head
        for coro in (self._pipe(reader, up_writer, first), self._pipe(up_reader, writer)):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src, dst, prefix: bytes = b"") -> None:
        try:
            if prefix:
                dst.write(prefix)
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()
