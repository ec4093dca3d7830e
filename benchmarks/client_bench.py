"""CPU per request of the proxy's upstream client versus aiohttp's client.

The upstream is a tiny raw asyncio server in a child process (a precomputed
chat answer, or a 5-event chunked SSE stream), so the CPU this process burns
is the client's alone: building the request, parsing the answer, pooling.
Everything is on 127.0.0.1 and bounded in requests and time.

    python benchmarks/client_bench.py                    # uvloop, 20000 requests x 32 concurrent
    python benchmarks/client_bench.py --requests 5000 --loop asyncio
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time

HOST = "127.0.0.1"
BODY = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "Summarise the benefits of keep-alive in two lines."}],
        "max_tokens": 64,
    }
).encode()
ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Fewer handshakes."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
    }
).encode()
PLAIN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)
_EVENTS = [b'data: {"choices":[{"delta":{"content":"w%d"}}]}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]
STREAM = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in _EVENTS)
    + b"0\r\n\r\n"
)
HEADERS = [("Content-Type", "application/json"), ("Authorization", "Bearer sk-upstream"), ("X-Extra", "1")]


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n:
                return
            path = self.buf.split(b" ", 2)[1]
            self.buf = self.buf[end + 4 + n :]
            self.t.write(STREAM if path.endswith(b"stream") else PLAIN)


def _serve(sock: socket.socket) -> None:
    import uvloop

    async def main():
        server = await asyncio.get_running_loop().create_server(_Upstream, sock=sock, backlog=1024)
        await asyncio.sleep(3600)
        server.close()

    uvloop.run(main())


async def _bench_pool(url: str, n: int, conc: int, stream: bool) -> None:
    from gwctl.proxy.upstream import UpstreamPool

    pool = UpstreamPool()
    per = n // conc

    async def worker():
        for _ in range(per):
            r = await pool.request("POST", url, HEADERS, BODY)
            if stream:
                async for _piece in r:
                    pass
            else:
                await r.read()
            r.release()

    await asyncio.gather(*(worker() for _ in range(conc)))
    await pool.close()


async def _bench_aiohttp(url: str, n: int, conc: int, stream: bool) -> None:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
    )
    per = n // conc

    async def worker():
        for _ in range(per):
            r = await session.post(url, data=BODY, headers=dict(HEADERS))
            if stream:
                async for _piece in r.content.iter_any():
                    pass
            else:
                await r.read()
            r.release()

    await asyncio.gather(*(worker() for _ in range(conc)))
    await session.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args(argv)
    n = max(args.concurrency, min(args.requests, 500_000))

    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    child = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    child.start()
    try:
        if args.loop == "uvloop":
            import uvloop

            runner = uvloop.run
        else:
            runner = asyncio.run
        print(f"{n} requests, {args.concurrency} concurrent, {args.loop} loop; CPU of this process only")
        print(f"{'client':<10} {'answer':<8} {'req/s':>8} {'CPU us/req':>11}")
        for name, fn in (("gwctl", _bench_pool), ("aiohttp", _bench_aiohttp)):
            for stream in (False, True):
                url = f"http://{HOST}:{port}/v1/chat/" + ("stream" if stream else "plain")
                runner(fn(url, args.concurrency * 4, args.concurrency, stream))  # warm-up
                c0, t0 = time.process_time(), time.perf_counter()
                runner(fn(url, n, args.concurrency, stream))
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                done = (n // args.concurrency) * args.concurrency
                print(f"{name:<10} {'stream' if stream else 'json':<8} {done / wall:>8.0f} {cpu / done * 1e6:>11.1f}")
    finally:
        child.terminate()
        child.join(5)
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
