"""The proxy worker's own CPU per request, without sockets: where its microseconds go.

Runs the real ``Gateway`` behind the real server protocol (gwctl.proxy.http)
and the real upstream client (gwctl.proxy.upstream) on uvloop, but with fake
transports: 32 client connections fed the benchmark's request over and over,
and an upstream whose answer arrives on the next loop iteration. No kernel,
no wrk, no stand-in, so what is left is the Python (and uvloop callback)
work per request, steady enough to compare changes that proxy_bench.py's
noise would hide. The log writer process is replaced by a list that is
pickled every 1024 rows, as the real one is.

    python benchmarks/worker_cpu.py                  # the full proxy, the floor, and each part left out
    python benchmarks/worker_cpu.py --requests 200000 --profile

``--without`` ablations replace one part with a constant: ``decide`` (the
decision memo), ``usage`` (reading the answer's usage), ``log`` (the
record stage: the log entry), ``key`` (gateway-key check). ``floor`` is benchmarks/http_stack.py's
logic-free handler on the same server and client. It reaches into private
attributes to plug the fakes in: a measuring tool, not an API.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pickle
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType as MP

import orjson
import uvloop

from gwctl.core import keys as gwkeys
from gwctl.core.config import CatalogEntry, GatewayKey, Limit, Route, Secret, Snapshot, Source
from gwctl.core.pricing import Usage
from gwctl.proxy import forward as proxy_forward
from gwctl.proxy import server as proxy_server
from gwctl.proxy import upstream as upstream_client
from gwctl.proxy.http import HttpServer, Reply
from gwctl.proxy.upstream.connection import _Conn

KEY = gwkeys.generate()
BODY_MODEL = "bench/bench-model"
BODY = orjson.dumps(
    {
        "model": "bench/bench-model",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the benefits of keep-alive connections in two lines."},
        ],
        "max_tokens": 64,
    }
)
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nAuthorization: Bearer "
    + KEY.encode()
    + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    + BODY
)
ANSWER_BODY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Keep-alive saves handshakes."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Date: Mon, 23 Nov 2026 18:00:00 GMT\r\nServer: Python/3.11 aiohttp\r\n\r\n" % len(ANSWER_BODY) + ANSWER_BODY
)
PARTS = ("decide", "usage", "log", "key")


def snapshot() -> Snapshot:
    from decimal import Decimal

    source = Source(
        name="bench",
        base_url="http://127.0.0.1:9/v1",
        auth=Secret(value="sk-upstream"),
        models=MP({"bench-model": True}),
    )
    entry = CatalogEntry(
        "bench",
        "bench-model",
        prices=MP({"input": Decimal("3e-6"), "output": Decimal("1.5e-5")}),
        max_output=4096,
        context_size=131072,
    )
    key = GatewayKey(name="bench", hash=gwkeys.digest(KEY), prefix=gwkeys.shown_prefix(KEY))
    return Snapshot(sources=MP({"bench": source}), catalog=MP({entry.ref: entry}), keys=MP({"bench": key}))


class ListWriter:
    """The log writer process's parent side, minus the pipe: rows batched and pickled."""

    def __init__(self):
        self.rows: list[tuple] = []

    def submit(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= 1024:
            pickle.dumps(self.rows, protocol=pickle.HIGHEST_PROTOCOL)
            self.rows = []

    async def close(self, timeout=None) -> bool:
        return True


class _Transport(asyncio.Transport):
    def is_closing(self):
        return False

    def close(self):
        pass

    def abort(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_extra_info(self, name, default=None):
        return default


class UpstreamTransport(_Transport):
    """Whatever is sent, the answer arrives on the next loop iteration."""

    def __init__(self, conn, loop):
        super().__init__()
        self.conn, self.loop = conn, loop

    def write(self, data):
        self.loop.call_soon(self.conn.data_received, ANSWER)

    def writelines(self, data):
        self.write(b"".join(data))


class ClientTransport(_Transport):
    """A keep-alive client that sends its next request once the answer is written."""

    def __init__(self, proto, loop, state):
        super().__init__()
        self.proto, self.loop, self.state = proto, loop, state

    def write(self, data):
        st = self.state
        st["answered"] += 1
        if st["sent"] < st["n"]:
            st["sent"] += 1
            self.loop.call_soon(self.proto.data_received, REQUEST)
        elif st["answered"] >= st["n"] and not st["done"].done():
            st["done"].set_result(None)


def fake_gateway(loop: asyncio.AbstractEventLoop, snap: Snapshot) -> proxy_server.Gateway:
    """The real Gateway, its upstream pool connecting to :class:`UpstreamTransport` s and its log a ListWriter."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "gwctl.toml"
        store.write_text("")
        gateway = proxy_server.Gateway(proxy_server.ProxyConfig(store_path=store, activity_dsn=None), snap)
    pool = gateway.pool = upstream_client.UpstreamPool()
    gateway.writer = ListWriter()

    async def connect(target, connect_timeout, key, ca_file=None):
        conn = _Conn(pool, target, loop, key)
        conn.connection_made(UpstreamTransport(conn, loop))
        return conn

    pool._connect = connect
    return gateway


def leave_out(gateway: proxy_server.Gateway, snap: Snapshot, without: set[str]) -> None:
    """Replace the parts named in ``without`` (see PARTS) with constants; usage_from_body is restored by the caller."""
    if "decide" in without:
        fixed = gateway.decider._decisions.decide(snap, None, "/v1/chat/completions", orjson.loads(BODY), len(BODY))

        class Fixed:
            def decide(self, *args):
                return fixed

        gateway.decider._decisions = Fixed()
    if "usage" in without:
        usage = Usage(input_tokens=20, output_tokens=5)
        proxy_forward.usage_from_body = lambda api, data: usage
    if "log" in without:
        gateway.recorder.record = lambda *args, **kwargs: None
    if "key" in without:
        gateway.auth.required = False


def floor_handler(pool: upstream_client.UpstreamPool):
    """http_stack.py's logic-free handler on the same server and client."""
    headers = [
        ("Authorization", "Bearer sk-upstream"),
        ("Content-Type", "application/json"),
        ("Accept-Encoding", "identity"),
    ]

    async def handler(req):
        body = orjson.loads(req.body)
        body["model"] = "bench-model"
        r = await pool.request(
            "POST",
            "http://127.0.0.1:9/v1/chat/completions",
            headers,
            orjson.dumps(body),
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            data = await r.read()
            orjson.loads(data)
            return Reply(
                r.status,
                data,
                [(k, v) for k, v in r.headers if k.lower() not in ("content-length", "date", "server", "connection")],
                content_type=None,
            )
        finally:
            r.release()

    return handler


async def run_once(n: int, variant: str, profile: bool) -> float:
    """The CPU microseconds per request of ``n`` requests over 32 connections, for one variant."""
    loop = asyncio.get_running_loop()
    snap = snapshot()
    if variant in ("route", "fallback"):  # a root route for the body's model; with a fallback (never needed)
        other = replace(snap.sources["bench"], name="bench2")
        fallbacks = ("bench2/bench-model",) if variant == "fallback" else ()
        route = Route("r", BODY_MODEL, "bench", model="bench-model", fallbacks=fallbacks)
        snap = replace(snap, sources=MP({**snap.sources, "bench2": other}), routes=(route,))
    if variant == "limits":  # a budget and an rpm limit on the key, counted in this process (LocalBank)
        budget = Limit("key:bench", budget=Decimal(10**6), budget_text="1000000", window="month", rpm=10**8)
        snap = replace(snap, limits=MP({"key:bench": budget}))
    gateway = fake_gateway(loop, snap)
    if variant == "metrics":  # Prometheus metrics counted (gwctl.proxy.metrics; the per-second snapshot left out)
        from gwctl.proxy.metrics import attach

        gateway.metrics = attach(gateway, tempfile.gettempdir())
    saved_usage = proxy_forward.usage_from_body
    plain = ("full", "floor", "limits", "route", "fallback", "metrics")
    leave_out(gateway, snap, set(variant.split("+")) if variant not in plain else set())
    handler = floor_handler(gateway.pool) if variant == "floor" else gateway.handle
    try:
        server = HttpServer(handler, body_limit=1 << 25)
        state = {"n": n, "sent": 0, "answered": 0, "done": loop.create_future()}
        protocols = []
        for _ in range(32):
            proto = server()
            proto.connection_made(ClientTransport(proto, loop, state))
            protocols.append(proto)
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        for proto in protocols:
            state["sent"] += 1
            loop.call_soon(proto.data_received, REQUEST)
        await asyncio.wait_for(state["done"], 600)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats("limit|ledger|request.py|decision", 30)
        return (time.process_time() - started) / n * 1e6
    finally:
        proxy_forward.usage_from_body = saved_usage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="median of this many runs per variant")
    ap.add_argument(
        "--variants", default="full,floor,limits," + ",".join(f"without {p}" for p in PARTS) + ",without all"
    )
    ap.add_argument("--profile", action="store_true", help="cProfile one run of the first variant instead")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.profile:
        first = args.variants.split(",")[0].strip() if "--variants" in (argv or sys.argv) else "full"
        uvloop.run(run_once(args.requests, first.replace("without ", ""), True))
        return 0
    results = {}
    print(f"{'variant':<22} {'us CPU per request':>20}")
    for name in args.variants.split(","):
        variant = name.strip()
        key = "+".join(PARTS) if variant == "without all" else variant.replace("without ", "")
        runs = [uvloop.run(run_once(args.requests, key, False)) for _ in range(args.repeat)]
        results[variant] = statistics.median(runs)
        print(f"{variant:<22} {results[variant]:>20.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
