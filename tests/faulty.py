"""Test helpers for the fault and load suites: a misbehaving upstream, a raw HTTP client, process figures.

:class:`FaultyUpstream` is a small raw HTTP/1.1 server on 127.0.0.1 (asyncio
streams, in a thread of its own) that answers like an OpenAI-compatible
provider, or fails the way real ones do. The request's ``model`` (the
upstream model id, so ``SOURCE/MODE`` through the gateway) picks the
behaviour and an optional ``"fault"`` object in the body its parameters
(the gateway forwards the body as is):

``ok`` (and any unknown model)
    a chat completion with usage; with ``"stream": true`` SSE chunks written
    the way LiteLLM writes them: each event in a write of its own, a pause
    (``gap`` s) between them, the chunked terminator in a separate write after
    a last pause. ``events`` content pieces (3), ``split``: each event cut in
    two chunks, ``usage``: {prompt_tokens, completion_tokens} (1000/50).
``hold``
    a stream that sends its head and first event, then waits until
    :meth:`FaultyUpstream.release` or until the gateway hangs up (the time is
    kept in :attr:`FaultyUpstream.closed`, by ``tag``).
``reset``
    a connection reset (RST): ``at`` "head" (before any byte of the answer),
    else after the head and ``events`` events (1) of a stream, or ``bytes``
    bytes of a plain body.
``hang``
    reads the request and never answers (until the gateway hangs up).
``trickle``
    the answer in pieces of ``piece`` bytes (1) every ``gap`` s (0.002), with
    a silence of ``stall`` s (0) half way.
``status``
    ``status`` (503) with an error JSON body, ``Retry-After: retry_after``
    when given.
``huge``
    a plain body of ``size`` bytes (a long content string) with usage, or with
    ``"stream": true`` events of ``event_size`` bytes until ``size``.

Every connection is counted (:attr:`FaultyUpstream.live`) and every request
recorded (:attr:`FaultyUpstream.seen`: the JSON body's mode and tag).

:class:`RawClient` speaks HTTP/1.1 over a plain socket (asyncio streams and
httptools' parser) so tests can send bytes no HTTP library would, read a
stream one event at a time, stop reading, or hang up mid-answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import httptools

from proxyrun import wait_for as wait_until  # noqa: F401 - the suites import it from here

_REASONS = {
    200: "OK",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 50}


# ---------------------------------------------------------------------------
# process figures


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    """How many file descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def activity_rows(db_path, columns: str = "request_id, status, cost, error, rule, route_kind, stream") -> list[dict]:
    """The SQLite activity log's rows, read directly (a reader beside the proxy's writer, as WAL allows)."""
    import sqlite3

    if not os.path.exists(db_path):
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"SELECT {columns} FROM activity ORDER BY id")]
        except sqlite3.OperationalError as e:  # not created yet
            if "no such table" in str(e):
                return []
            raise
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# the upstream


@dataclass
class Seen:
    mode: str
    tag: str | None
    path: str
    body: dict
    at: float = field(default_factory=time.monotonic)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _completion(model: str, text: str, usage: dict) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-faulty",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        },
        separators=(",", ":"),
    ).encode()


def _chunk_event(model: str, delta: dict, finish: str | None = None) -> bytes:
    return _sse(
        {
            "id": "chatcmpl-faulty",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def _usage_event(model: str, usage: dict) -> bytes:
    return _sse(
        {
            "id": "chatcmpl-faulty",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        }
    )


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reset(Exception):
    pass


class FaultyUpstream:
    """The misbehaving upstream (see the module's docstring); use as a context manager or start()/stop()."""

    def __init__(self):
        self.seen: list[Seen] = []
        self.live = 0  # connections open now
        self.connections = 0  # connections accepted in all
        self.held = 0  # "hold" streams waiting for release() now
        self.closed: dict[str, float] = {}  # tag -> when the gateway hung up on a held / hanging answer
        self.finished: dict[str, float] = {}  # tag -> when the whole answer was written
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._release: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FaultyUpstream":
        ready = threading.Event()
        failed: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def open_server():
                self._release = asyncio.Event()
                self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096, limit=1 << 20)
                self.port = self._server.sockets[0].getsockname()[1]

            try:
                loop.run_until_complete(open_server())
            except BaseException as e:  # pragma: no cover - reported to start()
                failed.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="faulty-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(30) or failed:
            raise RuntimeError(f"the faulty upstream did not start: {failed}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def close():
            self._release.set()
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        except Exception:  # pragma: no cover - stopping anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "FaultyUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def release(self) -> None:
        """Let every held stream finish (and the ones held later, until rearm())."""
        self._loop.call_soon_threadsafe(self._release.set)

    def rearm(self) -> None:
        """Hold streams again after a release()."""
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (self._release.clear(), done.set()))
        done.wait(10)

    # --- serving ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.live += 1
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                if method == "GET":
                    body = json.dumps({"object": "list", "data": [{"id": "ok", "object": "model"}]}).encode()
                    writer.write(
                        _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]) + body
                    )
                    await writer.drain()
                    continue
                try:
                    req = json.loads(raw)
                except ValueError:
                    req = None
                if not isinstance(req, dict):
                    req = {}
                model = req.get("model")
                mode = model if isinstance(model, str) else "ok"
                params = req.get("fault") if isinstance(req.get("fault"), dict) else {}
                self.seen.append(Seen(mode, params.get("tag"), path, req))
                keep = await self._answer(mode, params, req, reader, writer)
                if params.get("tag") is not None:
                    self.finished[params["tag"]] = time.monotonic()
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except _Reset:
            self._rst(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.live -= 1
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    def _rst(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()

    async def _until_hangup(self, reader: asyncio.StreamReader, tag: str | None, extra=None) -> bool:
        """Wait for the gateway to hang up (True), or for ``extra`` to finish (False)."""
        eof = asyncio.ensure_future(reader.read(1 << 16))
        waits = {eof}
        if extra is not None:
            other = asyncio.ensure_future(extra)
            waits.add(other)
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if not w.done():
                    w.cancel()
        if eof in done:
            try:
                eof.result()
            except (ConnectionError, OSError):
                pass
            if tag is not None:
                self.closed[tag] = time.monotonic()
            return True
        return False

    async def _answer(self, mode: str, p: dict, req: dict, reader, writer) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        model = req.get("model") if isinstance(req.get("model"), str) else "ok"
        stream = req.get("stream") is True
        usage = p.get("usage") or USAGE
        tag = p.get("tag")
        if mode == "hang":
            await self._until_hangup(reader, tag)
            return False
        if mode == "status":
            status = int(p.get("status", 503))
            body = json.dumps(
                {
                    "error": {
                        "message": p.get("message", f"upstream says {status}"),
                        "type": "upstream_error",
                        "code": p.get("code", "overloaded"),
                    }
                }
            ).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            if p.get("retry_after") is not None:
                headers.append(("Retry-After", str(p["retry_after"])))
            writer.write(_head(status, headers) + body)
            await writer.drain()
            return True
        if mode == "reset" and p.get("at") == "head":
            raise _Reset()
        if mode == "trickle":
            body = _completion(model, "slow and steady " * int(p.get("words", 8)), usage)
            data = _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]) + body
            piece, gap, stall = int(p.get("piece", 1)), float(p.get("gap", 0.002)), float(p.get("stall", 0))
            half = len(data) // 2
            for i in range(0, len(data), piece):
                writer.write(data[i : i + piece])
                await writer.drain()
                if stall and i <= half < i + piece:
                    await asyncio.sleep(stall)
                elif gap:
                    await asyncio.sleep(gap)
            return True
        if mode == "huge" and not stream:
            size = int(p.get("size", 20_000_000))
            body = _completion(model, "x" * size, usage)
            writer.write(_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
            view = memoryview(body)
            for i in range(0, len(body), 1 << 20):
                writer.write(view[i : i + (1 << 20)])
                await writer.drain()
            return True
        if mode == "reset" and not stream:
            body = _completion(model, "cut short " * 100, usage)
            writer.write(
                _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                + body[: int(p.get("bytes", 100))]
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            raise _Reset()
        if not stream:
            body = _completion(model, "Hello from the faulty upstream", usage)
            writer.write(_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]) + body)
            await writer.drain()
            return True
        # --- streams ---------------------------------------------------------------
        include_usage = isinstance(req.get("stream_options"), dict) and bool(req["stream_options"].get("include_usage"))
        gap = float(p.get("gap", 0))
        split = bool(p.get("split"))
        writer.write(
            _head(
                200,
                [
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-cache"),
                    ("Transfer-Encoding", "chunked"),
                ],
            )
        )
        await writer.drain()

        async def event(data: bytes) -> None:
            if split and len(data) > 2:
                half = len(data) // 2
                writer.write(_chunk(data[:half]))
                await writer.drain()
                await asyncio.sleep(gap / 2 if gap else 0)
                writer.write(_chunk(data[half:]))
            else:
                writer.write(_chunk(data))
            await writer.drain()
            if gap:
                await asyncio.sleep(gap)

        if mode == "huge":
            size, event_size = int(p.get("size", 20_000_000)), int(p.get("event_size", 64 * 1024))
            sent = 0
            piece = "y" * event_size
            while sent < size:
                await event(_chunk_event(model, {"content": piece}))
                sent += event_size
        else:
            await event(_chunk_event(model, {"role": "assistant", "content": ""}))
            if mode == "hold":
                self.held += 1
                try:
                    if await self._until_hangup(reader, tag, self._release.wait()):
                        return False
                finally:
                    self.held -= 1
            n = int(p.get("events", 3))
            if mode == "reset":
                for i in range(int(p.get("events", 1))):
                    await event(_chunk_event(model, {"content": f"piece {i} "}))
                await asyncio.sleep(0.05)
                raise _Reset()
            for i in range(n):
                await event(_chunk_event(model, {"content": f"piece {i} "}))
        await event(_chunk_event(model, {}, "stop"))
        if include_usage:
            await event(_usage_event(model, usage))
        await event(b"data: [DONE]\n\n")
        await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")  # the terminator in a write of its own, after a pause, as LiteLLM does
        await writer.drain()
        return True


# ---------------------------------------------------------------------------
# a raw client


class RawClient:
    """One HTTP/1.1 connection to ``host:port``: send any bytes, read the answer as it comes."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = False  # the whole answer came (its framing said so)
        self.eof = False
        self.head_done = False
        self._parser = httptools.HttpResponseParser(self)
        self.parse_error: str | None = None

    @classmethod
    def for_url(cls, url: str) -> "RawClient":
        hostport = url.split("//", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        return cls(host, int(port))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if (
            self.status is not None and 100 <= self.status < 200
        ):  # an interim answer (100 Continue): the real one follows
            self.status, self.headers, self.head_done = None, [], False
            self.body.clear()
            return
        self.complete = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    async def connect(self, timeout: float = 30, rcvbuf: int | None = None) -> "RawClient":
        """Connect; ``rcvbuf`` fixes the socket's receive buffer (no kernel autotuning), as a slow client's would be."""
        if rcvbuf is None:
            opened = asyncio.open_connection(self.host, self.port)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            opened = asyncio.open_connection(sock=sock)
        self.reader, self.writer = await asyncio.wait_for(opened, timeout)
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        path: str,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        method: str = "POST",
        close: bool = True,
    ) -> None:
        hs = [
            ("Host", f"{self.host}:{self.port}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ] + list(headers or [])
        if close:
            hs.append(("Connection", "close"))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
        await self.send(head.encode("latin-1") + body)

    async def read_some(self, timeout: float = 30) -> bool:
        """Read what comes next; False at EOF."""
        data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        if not data:
            self.eof = True
            try:
                self._parser.feed_data(b"")
            except Exception:
                pass
            return False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.parse_error = str(e)
            self.eof = True
            return False
        return True

    async def read_until(self, predicate, timeout: float = 30) -> bool:
        """Read until ``predicate(self)`` holds (True) or the connection ends (False)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.complete or self.eof:
                return predicate(self)
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"read_until timed out after {timeout} s")
            if not await self.read_some(left):
                return predicate(self)
        return True

    async def read_all(self, timeout: float = 60) -> "RawClient":
        await self.read_until(lambda c: c.complete, timeout)
        return self

    def events(self) -> list[bytes]:
        """The SSE data lines received so far."""
        return [line[6:] for line in bytes(self.body).split(b"\n") if line.startswith(b"data: ")]

    def abort(self) -> None:
        """Hang up at once (RST)."""
        if self.writer is not None:
            FaultyUpstream._rst(self.writer)

    def close(self) -> None:
        if self.writer is not None and not self.writer.transport.is_closing():
            self.writer.close()


def chat_body(model: str, *, stream: bool = False, fault: dict | None = None, **extra) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    if stream:
        body["stream"] = True
    if fault is not None:
        body["fault"] = fault
    return json.dumps(body).encode()


async def one_request(
    url: str,
    key: str,
    body: bytes,
    path: str = "/v1/chat/completions",
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 60,
) -> RawClient:
    """Send one request on a connection of its own and read the whole answer (or until the connection ends)."""
    c = RawClient.for_url(url)
    await c.connect()
    try:
        await c.request(path, body, [("Authorization", f"Bearer {key}")] + list(headers or []))
        await c.read_all(timeout)
    finally:
        c.close()
    return c


# ---------------------------------------------------------------------------
# a gateway in front of it


@dataclass
class Gateway:
    """A running `gwctl proxy` (tests/proxyrun.py) with a key, in front of a FaultyUpstream as source ``fz``."""

    proc: object  # proxyrun.ProxyProcess
    key: str
    db: str  # the SQLite activity log's path
    store: str

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    pg_dsn: str | None = None  # when the log is PostgreSQL

    def rows(self, columns: str = "request_id, status, cost, error, rule, route_kind, stream") -> list[dict]:
        if self.pg_dsn is None:
            return activity_rows(self.db, columns)
        import psycopg
        from psycopg.rows import dict_row

        try:
            with psycopg.connect(self.pg_dsn, connect_timeout=10, row_factory=dict_row) as conn:
                return list(conn.execute(f"SELECT {columns} FROM activity ORDER BY id"))
        except psycopg.errors.UndefinedTable:
            return []

    def wait_rows(self, n: int, timeout: float = 30.0) -> list[dict]:
        got = wait_until(lambda: (lambda r: r if len(r) >= n else None)(self.rows()), timeout, 0.1)
        assert got is not None, f"{len(self.rows())} activity rows of {n} after {timeout} s"
        return got

    def row(self, request_id: str, timeout: float = 30.0) -> dict:
        """The activity row of one request (waits for the writer)."""
        assert request_id, "the answer had no X-Gwctl-Request-Id"
        got = wait_until(lambda: next((r for r in self.rows() if r["request_id"] == request_id), None), timeout, 0.1)
        assert got is not None, f"no activity row for {request_id} after {timeout} s"
        return got

    def auth(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.key}")]


PRICES = ("--price", "input=3e-6", "--price", "output=1.5e-5")
COST = "0.00375"  # USAGE at PRICES: 1000 x 3e-6 + 50 x 1.5e-5


def start_gateway(
    tmp_path,
    upstream_url: str,
    *proxy_args: str,
    read_timeout: float | None = None,
    priced: tuple[str, ...] = ("ok", "hold", "huge", "trickle"),
    activity: str | None = None,
    env: dict | None = None,
) -> Gateway:
    """Configure a store under ``tmp_path`` (source fz -> upstream_url, prices, a key) and start a proxy on it.

    The CLI is given the store explicitly, so a module-scoped gateway works too."""
    from pathlib import Path

    from conftest import run_cli
    from proxyrun import ProxyProcess

    store = Path(tmp_path) / "cfg" / "gwctl.toml"

    def cli(*args: str):
        r = run_cli("--store", str(store), *args)
        assert r.code == 0, r.err
        return r

    args = ["source", "add", "fz", "--base-url", upstream_url, "--auth-value", "sk-up"]
    if read_timeout is not None:
        args += ["--read-timeout", str(read_timeout)]
    cli(*args)
    for mode in priced:
        cli("catalog", "set", f"fz/{mode}", *PRICES)
    key = cli("key", "create", "load", "--json").json()["key"]
    db = str(Path(tmp_path) / "activity.sqlite3")
    proc = ProxyProcess(store, activity or f"sqlite://{db}", *proxy_args, env=env)
    pg = activity if activity and activity.startswith(("postgres://", "postgresql://")) else None
    return Gateway(proc, key, db, str(store), pg)


def figure(name: str, value, unit: str = "") -> None:
    """Print one measured figure (shown with pytest -s; the long suite's report quotes them)."""
    print(f"[figure] {name}: {value}{(' ' + unit) if unit else ''}", flush=True)


class Traffic:
    """Requests one after another from a thread, until stop() (bounded: max_requests, max_seconds)."""

    def __init__(
        self,
        url: str,
        key: str,
        model: str = "fz/ok",
        pace: float = 0.05,
        max_requests: int = 5000,
        max_seconds: float = 300.0,
    ):
        self.url, self.key, self.model, self.pace = url, key, model, pace
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.results: list[tuple[int | None, str | None]] = []  # (status, request id); None: no answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        import httpx

        deadline = time.monotonic() + self.max_seconds
        body = {"model": self.model, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and len(self.results) < self.max_requests and time.monotonic() < deadline:
                try:
                    r = client.post(
                        self.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {self.key}"}
                    )
                    self.results.append((r.status_code, r.headers.get("x-gwctl-request-id")))
                except Exception:
                    self.results.append((None, None))
                self._stop.wait(self.pace)

    def start(self) -> "Traffic":
        self._thread.start()
        return self

    def stop(self) -> list[tuple[int | None, str | None]]:
        self._stop.set()
        self._thread.join(60)
        return self.results

    def count(self) -> int:
        return len(self.results)
