"""Choose the proxy's HTTP server and upstream client by measuring them.

Each candidate stack runs the same minimal forwarding proxy (read the POST
body, parse the JSON, make a cheap routing decision, rewrite the model,
forward it over a pooled keep-alive client, relay the answer -- streamed
chunk by chunk when asked -- capture the usage and enqueue a log record) in
one worker process. ``wrk`` drives load; a small raw-socket client measures
the time to the first SSE event. Everything listens on 127.0.0.1 only, and
every run is bounded in time.

    python benchmarks/http_stack.py                 # all candidates, prints a table
    python benchmarks/http_stack.py --only aiohttpapp-aiohttp-uvloop --duration 3
    python benchmarks/http_stack.py --litellm       # also LiteLLM's proxy (benchmarks/litellm)

Extra candidates (uvicorn, httptools, granian) are run with
``benchmarks/.venv-stack/bin/python`` when that venv exists (it is created
with ``--system-site-packages`` and git-ignored; see benchmarks/README.md).

Internal entry points used by the driver (not for humans):
``_proxy --server S --client C [--loop L] --port N --upstream URL`` and ``_raw-upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STACK_VENV = HERE / ".venv-stack"
LITELLM_VENV = HERE / ".venv-litellm"
HOST = "127.0.0.1"
MODEL = "bench-model"
UPSTREAM_KEY = "sk-upstream"
GATEWAY_KEY = "gw-bench-key"
REQUEST = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the benefits of keep-alive connections in two lines."},
    ],
    "max_tokens": 64,
}

# --------------------------------------------------------------------------
# The proxy logic shared by every stack (kept deliberately equal)
# --------------------------------------------------------------------------

ROUTES = {"bench": (MODEL, "Bearer " + UPSTREAM_KEY), MODEL: (MODEL, "Bearer " + UPSTREAM_KEY)}
KEYS = {"Bearer " + GATEWAY_KEY: "bench"}


def decide(body: dict, auth: str | None) -> tuple[int, str, str]:
    """Cheap stand-in for the real pure decision: key check, route lookup."""
    if auth not in KEYS:
        return 401, "", ""
    route = ROUTES.get(body.get("model"))
    if route is None:
        return 404, "", ""
    return 200, route[0], route[1]


def usage_from_sse_tail(tail: bytes) -> dict | None:
    i = tail.rfind(b'"usage":{')
    if i < 0:
        return None
    start = tail.rfind(b"data: ", 0, i)
    end = tail.find(b"\n", i)
    try:
        return json.loads(tail[start + 6 : end]).get("usage")
    except (ValueError, AttributeError):
        return None


class LogQueue:
    """Enqueue is O(1) on the request path; a background task drains batches."""

    def __init__(self) -> None:
        self.q: asyncio.Queue = asyncio.Queue()
        self.written = 0
        self.task = asyncio.get_running_loop().create_task(self._drain())

    def put(self, record: tuple) -> None:
        self.q.put_nowait(record)

    async def _drain(self) -> None:
        while True:
            batch = [await self.q.get()]
            while not self.q.empty() and len(batch) < 512:
                batch.append(self.q.get_nowait())
            self.written += len(batch)  # a real proxy writes the batch to SQLite here


def error_body(status: int) -> bytes:
    return json.dumps({"error": {"message": "rejected", "type": "bench", "code": status}}).encode()


# ---------------------------------------------------------------- a lean upstream client


class _FastConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the upstream (prototype).

    Parses the status line, headers and a Content-Length or chunked body by
    hand; in stream mode hands decoded body pieces to a queue as they come.
    """

    def __init__(self, pool: "FastPool") -> None:
        self.pool = pool
        self.t: asyncio.Transport | None = None
        self.buf = bytearray()
        self.alive = True
        self._reset()

    def _reset(self) -> None:
        self.head_fut: asyncio.Future | None = None
        self.body_fut: asyncio.Future | None = None
        self.queue: asyncio.Queue | None = None
        self.state = 0  # 0 head, 1 content-length, 2 chunk size, 3 chunk data, 4 chunk trailer
        self.remaining = 0
        self.parts: list = []

    def connection_made(self, transport) -> None:
        self.t = transport

    def connection_lost(self, exc) -> None:
        self.alive = False
        err = ConnectionError("upstream closed the connection")
        for fut in (self.head_fut, self.body_fut):
            if fut is not None and not fut.done():
                fut.set_exception(err)
        if self.queue is not None:
            self.queue.put_nowait(err)

    def start(self, data: bytes, stream: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        self.head_fut = loop.create_future()
        if stream:
            self.queue = asyncio.Queue()
        else:
            self.body_fut = loop.create_future()
        self.t.write(data)
        return self.head_fut, self.body_fut, self.queue

    def _emit(self, piece: bytes) -> None:
        if self.queue is not None:
            self.queue.put_nowait(piece)
        else:
            self.parts.append(piece)

    def _done(self) -> None:
        if self.queue is not None:
            self.queue.put_nowait(None)
        else:
            self.body_fut.set_result(b"".join(self.parts))
        keep = self.keep_alive
        self._reset()
        if keep:
            self.pool.idle.append(self)
        else:
            self.t.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            st = self.state
            if st == 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buf[:end]).split(b"\r\n")
                del buf[: end + 4]
                status = int(lines[0].split(b" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
                self.keep_alive = headers.get("connection", "").lower() != "close"
                self.head_fut.set_result((status, headers))
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self.state = 2
                else:
                    self.remaining = int(headers.get("content-length", 0))
                    self.state = 1
            elif st == 1:
                take = min(self.remaining, len(buf))
                if take:
                    self._emit(bytes(buf[:take]))
                    del buf[:take]
                    self.remaining -= take
                if self.remaining:
                    return
                self._done()
            elif st == 2:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0], 16)
                del buf[: end + 2]
                self.remaining = size
                self.state = 3 if size else 4
            elif st == 3:
                if len(buf) < self.remaining + 2:
                    if len(buf) > 2 and self.queue is not None:  # pass partial chunks on at once
                        n = min(len(buf), self.remaining)
                        self._emit(bytes(buf[:n]))
                        del buf[:n]
                        self.remaining -= n
                    return
                if self.remaining:
                    self._emit(bytes(buf[: self.remaining]))
                del buf[: self.remaining + 2]
                self.state = 2
            else:  # 4: trailers until an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._done()


class FastPool:
    """A pool of keep-alive connections to one upstream host (prototype)."""

    def __init__(self, base: str) -> None:
        m = re.fullmatch(r"http://([^:/]+):(\d+)", base)
        self.host, self.port = m.group(1), int(m.group(2))
        self.hosthdr = f"{self.host}:{self.port}".encode()
        self.idle: list[_FastConn] = []

    async def _conn(self) -> _FastConn:
        while self.idle:
            c = self.idle.pop()
            if c.alive:
                return c
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(lambda: _FastConn(self), self.host, self.port)
        return c

    async def post(self, path: str, headers: dict, body: bytes, stream: bool):
        head = [
            b"POST ",
            path.encode(),
            b" HTTP/1.1\r\nHost: ",
            self.hosthdr,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for k, v in headers.items():
            head += [k.encode(), b": ", v.encode(), b"\r\n"]
        head += [b"\r\n", body]
        c = await self._conn()
        head_fut, body_fut, queue = c.start(b"".join(head), stream)
        status, hdrs = await head_fut
        return status, hdrs, body_fut if body_fut is not None else queue


async def fast_iter(q: asyncio.Queue):
    while True:
        piece = await q.get()
        if piece is None:
            return
        if isinstance(piece, BaseException):
            raise piece
        yield piece


# ---------------------------------------------------------------- the upstream clients, one interface


class Upstream:
    """``forward()`` returns (status, content type, body bytes or None, chunk
    iterator or None, release callable); one per client library."""

    def __init__(self, kind: str, base: str) -> None:
        self.kind, self.base = kind, base
        if kind == "aiohttp":
            from aiohttp import ClientSession, ClientTimeout, TCPConnector

            self.session = ClientSession(
                connector=TCPConnector(limit=512, keepalive_timeout=60),
                timeout=ClientTimeout(total=None, sock_connect=5, sock_read=60),
                auto_decompress=False,
            )
        elif kind == "httpx":
            import httpx

            self.session = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
                timeout=httpx.Timeout(60, connect=5),
            )
        elif kind == "fast":
            self.session = FastPool(base)
        else:
            raise ValueError(kind)

    async def forward(self, path: str, headers: dict, data: bytes, stream: bool):
        if self.kind == "fast":
            status, hdrs, got = await self.session.post(path, headers, data, stream)
            ctype = hdrs.get("content-type", "application/json")
            if stream:
                return status, ctype, None, fast_iter(got), _noop
            return status, ctype, await got, None, _noop
        if self.kind == "aiohttp":
            up = await self.session.post(self.base + path, data=data, headers=headers)
            ctype = up.headers.get("Content-Type", "application/json")
            if stream:
                return up.status, ctype, None, up.content.iter_any(), up.release
            body = await up.read()
            up.release()
            return up.status, ctype, body, None, _noop
        req = self.session.build_request("POST", self.base + path, content=data, headers=headers)
        up = await self.session.send(req, stream=True)
        ctype = up.headers.get("Content-Type", "application/json")
        if stream:
            return up.status_code, ctype, None, up.aiter_raw(), up.aclose
        body = await up.aread()
        await up.aclose()
        return up.status_code, ctype, body, None, _noop


def _noop() -> None:
    return None


async def _maybe_await(x) -> None:
    if asyncio.iscoroutine(x):
        await x


class Proxy:
    """The request path every stack shares: parse, decide, forward, log."""

    def __init__(self, client: str, upstream: str) -> None:
        self.up = Upstream(client, upstream)
        self.log = LogQueue()

    def prepare(self, raw: bytes, auth: str | None):
        body = json.loads(raw)
        status, model, up_auth = decide(body, auth)
        if status != 200:
            return status, None, None, None
        body["model"] = model
        headers = {"Content-Type": "application/json", "Authorization": up_auth}
        return 200, json.dumps(body).encode(), headers, body.get("stream") is True

    def done(self, t0: float, status: int, payload: bytes | None, tail: bytes | None) -> None:
        if payload is not None:
            usage = json.loads(payload).get("usage") if status == 200 else None
        else:
            usage = usage_from_sse_tail(tail or b"")
        self.log.put((t0, status, usage, time.perf_counter() - t0))


# ---------------------------------------------------------------- aiohttp server


def serve_aiohttp(port: int, upstream: str, server: str, client: str, use_uvloop: bool) -> None:
    from aiohttp import web

    async def main() -> None:
        proxy = Proxy(client, upstream)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            t0 = time.perf_counter()
            status, data, headers, stream = proxy.prepare(await request.read(), request.headers.get("Authorization"))
            if status != 200:
                return web.Response(status=status, body=error_body(status), content_type="application/json")
            status, ctype, payload, chunks, release = await proxy.up.forward(request.path, headers, data, stream)
            if chunks is None:
                proxy.done(t0, status, payload, None)
                return web.Response(status=status, body=payload, headers={"Content-Type": ctype})
            try:
                resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
                await resp.prepare(request)
                tail = b""
                async for chunk in chunks:
                    await resp.write(chunk)
                    tail = (tail + chunk)[-4096:]
                await resp.write_eof()
            finally:
                await _maybe_await(release())
            proxy.done(t0, status, None, tail)
            return resp

        paths = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
        if server == "aiohttpapp":
            app = web.Application()
            for path in paths:
                app.router.add_post(path, handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
        else:  # low-level server: no router, no middlewares; dispatch by hand
            allowed = frozenset(paths)

            async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
                if request.method != "POST" or request.path not in allowed:
                    return web.Response(status=404, body=error_body(404), content_type="application/json")
                return await handle(request)

            runner = web.ServerRunner(web.Server(dispatch, access_log=None), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        await _wait_for_term()
        await runner.cleanup()

    _run(main(), use_uvloop)


# ---------------------------------------------------------------- ASGI / RSGI apps

_state: dict = {}


def _proxy() -> Proxy:
    proxy = _state.get("proxy")
    if proxy is None:
        proxy = _state["proxy"] = Proxy(
            os.environ.get("GWCTL_BENCH_CLIENT", "aiohttp"), os.environ["GWCTL_BENCH_UPSTREAM"]
        )
    return proxy


async def asgi_app(scope, receive, send) -> None:
    """Raw ASGI proxy app (uvicorn, granian --interface asgi)."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    t0 = time.perf_counter()
    proxy = _proxy()
    parts = []
    more = True
    while more:
        msg = await receive()
        parts.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    auth = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            auth = v.decode("latin-1")
    status, data, headers, stream = proxy.prepare(b"".join(parts), auth)
    if status != 200:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": error_body(status)})
        return
    status, ctype, payload, chunks, release = await proxy.up.forward(scope["path"], headers, data, stream)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype.encode())]})
    if chunks is None:
        await send({"type": "http.response.body", "body": payload})
        proxy.done(t0, status, payload, None)
        return
    tail = b""
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tail = (tail + chunk)[-4096:]
        await send({"type": "http.response.body", "body": b""})
    finally:
        await _maybe_await(release())
    proxy.done(t0, status, None, tail)


async def rsgi_app(scope, proto) -> None:
    """Granian's native RSGI interface, same logic."""
    t0 = time.perf_counter()
    proxy = _proxy()
    status, data, headers, stream = proxy.prepare(await proto(), scope.headers.get("authorization"))
    if status != 200:
        proto.response_bytes(status, [("content-type", "application/json")], error_body(status))
        return
    status, ctype, payload, chunks, release = await proxy.up.forward(scope.path, headers, data, stream)
    if chunks is None:
        proto.response_bytes(status, [("content-type", ctype)], payload)
        proxy.done(t0, status, payload, None)
        return
    transport = proto.response_stream(status, [("content-type", ctype)])
    tail = b""
    try:
        async for chunk in chunks:
            await transport.send_bytes(chunk)
            tail = (tail + chunk)[-4096:]
    finally:
        await _maybe_await(release())
    proxy.done(t0, status, None, tail)


def serve_gwctl_stack(port: int, upstream: str) -> None:
    """gwctl's own server protocol (gwctl.proxy.http) and upstream client
    (gwctl.proxy.upstream) around the shared minimal request path: the floor
    under `gwctl proxy`, which adds the real decision, metering and log."""
    from gwctl.proxy.http import HttpServer, Reply
    from gwctl.proxy.upstream import UpstreamPool

    async def main() -> None:
        proxy = Proxy("fast", upstream)  # its prepare/done; forwarding below uses gwctl's pool
        pool = UpstreamPool()
        allowed = frozenset(("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"))

        async def handle(request):
            t0 = time.perf_counter()
            if request.method != "POST" or request.path not in allowed:
                return Reply(404, error_body(404))
            status, data, headers, stream = proxy.prepare(request.body, request.headers.get("authorization"))
            if status != 200:
                return Reply(status, error_body(status))
            up = await pool.request(
                "POST", upstream + request.path, list(headers.items()), data, connect_timeout=5, read_timeout=60
            )
            try:
                ctype = up.header("content-type") or "application/json"
                if not stream:
                    payload = await up.read()
                    proxy.done(t0, up.status, payload, None)
                    return Reply(up.status, payload, content_type=ctype)
                out = request.start_stream(up.status, [("Content-Type", ctype)])
                tail = b""
                async for chunk in up:
                    await out.write(chunk)
                    tail = (tail + chunk)[-4096:]
                out.end()
                proxy.done(t0, up.status, None, tail)
                return None
            finally:
                up.release()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(HttpServer(handle, body_limit=1 << 25), HOST, port)
        await _wait_for_term()
        server.close()
        await pool.close()

    _run(main(), True)


def serve_uvicorn(port: int, upstream: str, client: str) -> None:
    import uvicorn

    os.environ["GWCTL_BENCH_UPSTREAM"] = upstream
    os.environ["GWCTL_BENCH_CLIENT"] = client
    uvicorn.run(
        asgi_app,
        host=HOST,
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        lifespan="on",
        workers=1,
    )


# ---------------------------------------------------------------- raw upstream


def serve_raw_upstream(port: int) -> None:
    """The cheapest possible upstream: asyncio.Protocol, precomputed answer."""
    body = json.dumps(
        {
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello from raw"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33},
        }
    ).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = b""

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                m = re.search(rb"(?i)content-length:\s*(\d+)", self.buf[:end])
                n = int(m.group(1)) if m else 0
                if len(self.buf) < end + 4 + n:
                    return
                self.buf = self.buf[end + 4 + n :]
                self.t.write(answer)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, HOST, port, backlog=1024)
        await _wait_for_term()
        server.close()

    _run(main(), True)


# ---------------------------------------------------------------- helpers


def _run(coro, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


async def _wait_for_term() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and every live descendant (the proxy's workers and
    their log writer processes, which run in sessions of their own)."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is state, [1] ppid, [11] utime, [12] stime
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    children: dict[int, list[int]] = {}
    for child, (parent, _cpu) in stats.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(children.get(p, ()))
    return total


def busy_others(own: set[int]) -> list[str]:
    """Other processes using a noticeable share of CPU right now (noise warning)."""

    def sample() -> dict[int, tuple[int, str]]:
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in own:
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                name = stat[stat.find("(") + 1 : stat.rfind(")")]
                f = stat.rsplit(")", 1)[1].split()
                out[int(entry)] = (int(f[11]) + int(f[12]), name)
        return out

    a = sample()
    time.sleep(1)
    b = sample()
    busy = []
    for pid, (ticks, name) in b.items():
        used = (ticks - a.get(pid, (ticks, name))[0]) / _TICK
        if used > 0.2:
            busy.append(f"{name}[{pid}] {used * 100:.0f}%")
    return busy


def gwctl(store: Path, *args: str, stdin: str | None = None) -> str:
    """Run the gwctl CLI on ``store`` (raises on a non-zero exit); its standard output."""
    out = subprocess.run(
        [sys.executable, "-m", "gwctl", "--store", str(store), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def start_gwctl_proxy(procs: "Procs", store: Path, activity: str, *prefix: str) -> tuple[subprocess.Popen, str]:
    """``gwctl proxy`` (one worker) on ``store`` with the activity log ``activity``, started through ``procs``
    (``prefix``: a command to run it under, such as taskset); the process and its base URL."""
    port = free_port()
    cmd = [*prefix, sys.executable, "-m", "gwctl", "--store", str(store), "proxy", "--port", str(port)]
    proxy = procs.start([*cmd, "--activity", activity], port)
    return proxy, f"http://{HOST}:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_standin(procs: "Procs", *extra: str) -> str:
    """The stand-in upstream (the benchmark's model and key, recording nothing), started under ``procs``;
    its /v1 URL. ``extra``: more of its options (``--fail-status 503``, ``--chunk-delay-ms 2``, ...)."""
    port = free_port()
    args = [sys.executable, "-m", "gwctl.testing", "--port", str(port), "--models", MODEL]
    procs.start([*args, "--api-key", UPSTREAM_KEY, "--no-record", *extra], port)
    return f"http://{HOST}:{port}/v1"


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not ready after {timeout}s: {proc.args}")


class Procs:
    """Subprocesses started by this run; all of them are stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], port: int, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        # stderr goes to a file, never a pipe nobody reads (a chatty server would block on it)
        log = tempfile.TemporaryFile()
        p = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        self.procs.append(p)
        try:
            wait_port(port, p, timeout=60)
        except Exception:
            self.stop(p)
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(args[:4])} did not start: {err[-2000:]}")
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # our own new session: the process and its workers
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)


# ---------------------------------------------------------------- load (wrk) and stream client

LUA = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""


def _lua(body: dict, auth: str | None, headers: dict[str, str] | None) -> str:
    """wrk's script: a POST of ``body`` with ``Authorization: auth`` (left out when None) and ``headers``."""
    script = LUA.format(body=json.dumps(body))
    extra = ({"Authorization": auth} if auth is not None else {}) | (headers or {})
    return script + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in extra.items())


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    n = float(m.group(1))
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[m.group(2)]


def wrk(
    url: str,
    conns: int,
    duration: float,
    auth: str | None,
    body: dict | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """wrk POSTing ``body`` (default REQUEST) to ``url``; ``auth`` is the Authorization header (None: none),
    ``headers`` any others (x-api-key, anthropic-version)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua(body or REQUEST, auth, headers))
        script = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{conns}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "--timeout",
                "5s",
                "-s",
                script,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        ).stdout
    finally:
        os.unlink(script)
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    rps = float(m.group(1))
    p50 = re.search(r"^\s*50%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M)
    p99 = re.search(r"^\s*99%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M)
    p50_ms = _ms(p50.group(1)) if p50 else float("nan")
    p99_ms = _ms(p99.group(1)) if p99 else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs += sum(int(g) for g in m.groups()) if m else 0
    return WrkResult(rps, p50_ms, p99_ms, errs)


async def _first_chunk_times(
    port: int,
    path: str,
    auth: str | None,
    n: int,
    request: dict | None = None,
    headers: dict[str, str] | None = None,
) -> list[float]:
    """Time from sending a stream request to the end of the first SSE event,
    over one keep-alive connection, with a hand-rolled chunked decoder so the
    client adds as little as possible. ``request`` is the body (default REQUEST;
    ``stream: true`` is added), ``auth`` the Authorization header (None: none),
    ``headers`` any others."""
    body = json.dumps({**(request or REQUEST), "stream": True}).encode()
    extra = ({"Authorization": auth} if auth is not None else {}) | (headers or {})
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(HOST, port)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            lower = head.lower()
            first = None
            if b"transfer-encoding: chunked" in lower:
                buf = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    data = (await reader.readexactly(size + 2))[:-2]
                    if first is None:
                        buf += data
                        if b"\n\n" in buf:
                            first = time.perf_counter()
            else:
                n_bytes = int(re.search(rb"content-length:\s*(\d+)", lower).group(1))
                await reader.readexactly(n_bytes)
                first = time.perf_counter()
            times.append((first or time.perf_counter()) - t0)
    finally:
        writer.close()
    return times


def first_chunk_ms(port: int, path: str, auth: str, n: int) -> float:
    times = asyncio.run(asyncio.wait_for(_first_chunk_times(port, path, auth, n), 120))
    return statistics.median(times) * 1000


# ---------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Candidate:
    """One stack to measure: its server, its upstream client and its event loop."""

    name: str  # what --only takes
    label: str  # the table's row
    server: str  # aiohttpapp, aiohttpll (low-level), gwctlhttp, uvicorn, granianasgi, granianrsgi
    client: str  # aiohttp, httpx, fast (the lean pooled client), gwctl (gwctl's own)
    loop: str = "uvloop"  # or asyncio (aiohttp servers only; uvicorn and granian run uvloop)
    needs: tuple[str, ...] = ()  # modules that must import in the interpreter used

    def python(self) -> str:
        if self.needs and (STACK_VENV / "bin" / "python").exists():
            return str(STACK_VENV / "bin" / "python")
        return sys.executable

    def available(self) -> bool:
        if not self.needs:
            return True
        code = "import " + ",".join(self.needs)
        return subprocess.run([self.python(), "-c", code], capture_output=True).returncode == 0

    def command(self, port: int, upstream: str) -> tuple[list[str], dict, Path | None]:
        py = self.python()
        env = {"GWCTL_BENCH_UPSTREAM": upstream, "GWCTL_BENCH_CLIENT": self.client}
        if self.server in ("granianasgi", "granianrsgi"):
            iface = self.server.removeprefix("granian")
            target = f"http_stack:{iface}_app"
            granian = str(Path(py).parent / "granian")
            return (
                [
                    granian,
                    "--interface",
                    iface,
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--runtime-threads",
                    "1",
                    "--loop",
                    "uvloop",
                    "--no-ws",
                    "--log-level",
                    "warning",
                    "--no-log",
                    target,
                ],
                env,
                HERE,
            )
        return (
            [
                py,
                str(Path(__file__)),
                "_proxy",
                "--server",
                self.server,
                "--client",
                self.client,
                "--loop",
                self.loop,
                "--port",
                str(port),
                "--upstream",
                upstream,
            ],
            env,
            None,
        )


_UVICORN = ("uvicorn", "httptools")
CANDIDATES = [
    Candidate("aiohttpapp-aiohttp-uvloop", "aiohttp app + aiohttp client, uvloop", "aiohttpapp", "aiohttp"),
    Candidate(
        "aiohttpapp-aiohttp-asyncio",
        "aiohttp app + aiohttp client, asyncio loop",
        "aiohttpapp",
        "aiohttp",
        loop="asyncio",
    ),
    Candidate("aiohttpapp-httpx-uvloop", "aiohttp app + httpx client, uvloop", "aiohttpapp", "httpx"),
    Candidate("aiohttpll-aiohttp-uvloop", "aiohttp low-level server + aiohttp client, uvloop", "aiohttpll", "aiohttp"),
    Candidate("aiohttpapp-fast-uvloop", "aiohttp app + lean pooled client, uvloop", "aiohttpapp", "fast"),
    Candidate("aiohttpll-fast-uvloop", "aiohttp low-level server + lean pooled client, uvloop", "aiohttpll", "fast"),
    Candidate(
        "gwctlhttp-gwctl-uvloop", "gwctl's server protocol + gwctl's upstream client, uvloop", "gwctlhttp", "gwctl"
    ),
    Candidate(
        "uvicorn-aiohttp", "uvicorn (httptools, uvloop) raw ASGI + aiohttp client", "uvicorn", "aiohttp", needs=_UVICORN
    ),
    Candidate("uvicorn-fast", "uvicorn (httptools, uvloop) raw ASGI + lean client", "uvicorn", "fast", needs=_UVICORN),
    Candidate(
        "granianasgi-aiohttp", "granian ASGI (uvloop) + aiohttp client", "granianasgi", "aiohttp", needs=("granian",)
    ),
    Candidate(
        "granianrsgi-aiohttp", "granian RSGI (uvloop) + aiohttp client", "granianrsgi", "aiohttp", needs=("granian",)
    ),
    Candidate("granianrsgi-fast", "granian RSGI (uvloop) + lean client", "granianrsgi", "fast", needs=("granian",)),
]


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float | None = None
    first_chunk_ms: float | None = None
    errors: int = 0
    note: str = ""
    extra: dict = field(default_factory=dict)


def measure(port: int, path: str, auth: str, args, stream: bool = True, watch: dict[str, int] | None = None) -> Row:
    """Throughput at 32 connections (median of runs), p50 at 1 connection,
    first-SSE-event latency, and the CPU each watched process tree spent per
    request during the throughput runs (robust to other load on the machine)."""
    url = f"http://{HOST}:{port}{path}"
    wrk(url, 32, 1, auth)  # warm-up: pools, caches
    watch = watch or {}
    before = {k: tree_cpu_seconds(pid) for k, pid in watch.items()}
    runs = [wrk(url, 32, args.duration, auth) for _ in range(args.repeat)]
    after = {k: tree_cpu_seconds(pid) for k, pid in watch.items()}
    total_requests = sum(r.rps for r in runs) * max(1, round(args.duration))
    cpu_us = {k: (after[k] - before[k]) / total_requests * 1e6 for k in watch}
    rps = statistics.median(r.rps for r in runs)
    lat = wrk(url, 1, args.latency_duration, auth)
    fc = first_chunk_ms(port, path, auth, args.stream_requests) if stream else None
    return Row(
        "",
        rps,
        lat.p50_ms,
        fc,
        sum(r.errors for r in runs) + lat.errors,
        extra={"runs": [r.rps for r in runs], "p99_1conn_ms": lat.p99_ms, "cpu_us": cpu_us},
    )


def litellm_row(procs: Procs, standin_url: str, args) -> Row | None:
    py = LITELLM_VENV / "bin" / "litellm"
    if not py.exists():
        print("  (LiteLLM venv missing: run benchmarks/litellm/setup.sh)", file=sys.stderr)
        return None
    port = free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    template = (HERE / "litellm" / "config.yaml").read_text()
    cfg.write(template.replace("http://127.0.0.1:8099/v1", standin_url))
    cfg.close()
    # The one setting it needs offline: use the bundled model cost map instead of
    # fetching it at start-up. Everything else stays at LiteLLM's defaults.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = procs.start(
        [str(py), "--config", cfg.name, "--host", HOST, "--port", str(port)],
        port,
        env={**env, "PATH": f"{py.parent}:{os.environ['PATH']}"},
    )
    try:
        auth = "Bearer " + GATEWAY_KEY
        body = {**REQUEST, "model": MODEL}
        url = f"http://{HOST}:{port}/v1/chat/completions"
        wrk(url, 32, 2, auth, body)
        before = tree_cpu_seconds(p.pid)
        runs = [wrk(url, 32, args.duration, auth, body) for _ in range(args.repeat)]
        used = tree_cpu_seconds(p.pid) - before
        lat = wrk(url, 1, args.latency_duration, auth, body)
        requests = sum(r.rps for r in runs) * max(1, round(args.duration))
        return Row(
            "LiteLLM 1.100.5 proxy (its default: 1 uvicorn worker)",
            statistics.median(r.rps for r in runs),
            lat.p50_ms,
            None,
            sum(r.errors for r in runs) + lat.errors,
            extra={"runs": [r.rps for r in runs], "cpu_us": {"proxy": used / requests * 1e6}},
        )
    finally:
        procs.stop(p)
        os.unlink(cfg.name)


def drive(args) -> int:
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = Procs()
    rows: list[Row] = []
    auth_direct = "Bearer " + UPSTREAM_KEY
    auth_proxy = "Bearer " + GATEWAY_KEY
    path = "/v1/chat/completions"
    try:
        sport = free_port()
        standin_proc = procs.start(
            [
                sys.executable,
                "-m",
                "gwctl.testing",
                "--port",
                str(sport),
                "--no-record",
                "--models",
                MODEL,
                "--api-key",
                UPSTREAM_KEY,
                "--stream-chunks",
                "5",
                "--chunk-delay-ms",
                str(args.chunk_delay_ms),
            ],
            sport,
            env={"PYTHONPATH": str(ROOT / "src")},
        )
        standin = f"http://{HOST}:{sport}"
        print(f"standin upstream on {standin}; {os.cpu_count()} cores; wrk -t1", file=sys.stderr)

        busy = busy_others({os.getpid(), standin_proc.pid})
        if busy:
            print(f"  warning: other processes are busy, figures will be noisy: {', '.join(busy)}", file=sys.stderr)
        direct = measure(sport, path, auth_direct, args, watch={"upstream": standin_proc.pid})
        direct.name = "direct to standin (no proxy)"
        rows.append(direct)
        print(f"  {direct.name}: {direct.rps:.0f} req/s", file=sys.stderr)

        rport = free_port()
        raw = procs.start([sys.executable, str(Path(__file__)), "_raw-upstream", "--port", str(rport)], rport)
        raw_row = measure(rport, path, auth_direct, args, stream=False)
        raw_row.name = "direct to raw asyncio upstream"
        print(f"  {raw_row.name}: {raw_row.rps:.0f} req/s", file=sys.stderr)

        only = set(args.only.split(",")) if args.only else None
        for cand in CANDIDATES:
            if only and cand.name not in only:
                continue
            if not cand.available():
                rows.append(Row(cand.label, 0, note="not installed (benchmarks/.venv-stack)"))
                continue
            port = free_port()
            cmd, env, cwd = cand.command(port, standin)
            try:
                p = procs.start(cmd, port, env=env, cwd=cwd)
            except RuntimeError as exc:
                rows.append(Row(cand.label, 0, note=f"failed to start: {exc}"[:200]))
                continue
            try:
                row = measure(port, path, auth_proxy, args, watch={"proxy": p.pid, "upstream": standin_proc.pid})
                row.name = cand.label
                if args.raw_upstream:
                    procs.stop(p)
                    cmd, env, cwd = cand.command(port, f"http://{HOST}:{rport}")
                    p = procs.start(cmd, port, env=env, cwd=cwd)
                    wrk(f"http://{HOST}:{port}{path}", 32, 1, auth_proxy)
                    row.extra["rps_via_raw_upstream"] = wrk(
                        f"http://{HOST}:{port}{path}", 32, args.duration, auth_proxy
                    ).rps
            except Exception as exc:  # report, keep going with the others
                row = Row(cand.label, 0, note=f"failed: {exc!r}"[:200])
            finally:
                procs.stop(p)
            rows.append(row)
            print(f"  {row.name}: {row.rps:.0f} req/s {row.note}", file=sys.stderr)

        if args.litellm or (only and "litellm" in only):
            row = litellm_row(procs, standin + "/v1", args)
            if row:
                rows.append(row)
                print(f"  {row.name}: {row.rps:.0f} req/s", file=sys.stderr)
        procs.stop(raw)
    finally:
        procs.stop_all()

    print_table(rows, direct, raw_row, args)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows + [raw_row]], indent=2))
    return 0


def print_table(rows: list[Row], direct: Row, raw: Row, args) -> None:
    print()
    print(
        f"Throughput: wrk -t1 -c32, {args.duration:g}s x{args.repeat} (median); "
        f"p50: wrk -c1 {args.latency_duration:g}s; first SSE event: median of "
        f"{args.stream_requests} sequential streams (upstream paces events {args.chunk_delay_ms:g} ms apart)"
    )
    print(f"Raw asyncio upstream, direct: {raw.rps:.0f} req/s (standin direct: {direct.rps:.0f} req/s)")
    print()
    hdr = (
        "stack",
        "req/s@32",
        "vs direct",
        "proxy CPU us/req",
        "p50@1 ms",
        "added ms",
        "1st chunk ms",
        "added ms",
        "via raw up",
        "errors",
    )
    lines = [hdr]
    for r in rows:
        if not r.rps:
            lines.append((r.name, "-", "-", "-", "-", "-", "-", "-", "-", r.note))
            continue
        is_direct = r is direct
        lines.append(
            (
                r.name,
                f"{r.rps:.0f}",
                "100%" if is_direct else f"{100 * r.rps / direct.rps:.0f}%",
                f"{r.extra['cpu_us'].get('proxy', r.extra['cpu_us'].get('upstream', 0)):.0f}"
                + (" (upstream)" if is_direct else "")
                if r.extra.get("cpu_us")
                else "-",
                f"{r.p50_ms:.3f}" if r.p50_ms is not None else "-",
                "" if is_direct or r.p50_ms is None else f"{r.p50_ms - direct.p50_ms:+.3f}",
                f"{r.first_chunk_ms:.3f}" if r.first_chunk_ms is not None else "-",
                "" if is_direct or r.first_chunk_ms is None else f"{r.first_chunk_ms - direct.first_chunk_ms:+.3f}",
                f"{r.extra['rps_via_raw_upstream']:.0f}" if "rps_via_raw_upstream" in r.extra else "",
                str(r.errors),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(hdr))]
    for i, line in enumerate(lines):
        print(" | ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    px = sub.add_parser("_proxy")
    px.add_argument("--server", required=True, choices=("aiohttpapp", "aiohttpll", "gwctlhttp", "uvicorn"))
    px.add_argument("--client", required=True, choices=("aiohttp", "httpx", "fast", "gwctl"))
    px.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    px.add_argument("--port", type=int, required=True)
    px.add_argument("--upstream", required=True)
    ru = sub.add_parser("_raw-upstream")
    ru.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=6, help="seconds per throughput run (default 6)")
    ap.add_argument("--latency-duration", type=float, default=4, help="seconds of the 1-connection run")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per stack (median)")
    ap.add_argument("--stream-requests", type=int, default=200)
    ap.add_argument("--chunk-delay-ms", type=float, default=2)
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    ap.add_argument("--raw-upstream", action="store_true", help="also measure each proxy against the raw upstream")
    ap.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    ap.add_argument("--json", default="", help="write the rows to this file")
    args = ap.parse_args(argv)
    if args.cmd == "_proxy":
        if args.server == "gwctlhttp":
            serve_gwctl_stack(args.port, args.upstream)
        elif args.server == "uvicorn":
            serve_uvicorn(args.port, args.upstream, args.client)
        else:
            serve_aiohttp(args.port, args.upstream, args.server, args.client, args.loop == "uvloop")
        return 0
    if args.cmd == "_raw-upstream":
        serve_raw_upstream(args.port)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
