"""Streams under load through one proxy worker: many at once, memory per open stream, hang-ups, slow readers.

A real `gwctl proxy` subprocess (one worker) in front of a real upstream on
loopback (tests/faulty.py) that writes each SSE event and the chunked
terminator in writes of their own with pauses, as LiteLLM does, and that can
hold a stream open until told to finish; the clients are raw HTTP/1.1
connections. The proxy's memory is its VmRSS from /proc.

How to run the long suite: the default run (`pytest`) runs the short
versions (100 streams, 20 hang-ups, a 32 MB stream nobody reads); the long
ones (1,000 concurrent streams, 1,000 held open for the memory figure, 200
hang-ups, a 100 MB stream nobody reads) carry the ``long`` marker:

    python -m pytest -m long tests/test_load_streams.py -s

(``-s`` prints the measured figures, lines starting with ``[figure]``.)
The whole long suite, every module: ``python -m pytest -m long -s`` (about 4 minutes
on the 2-core machine; without ``-n``, so the measured figures are not disturbed).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from faulty import COST, FaultyUpstream, RawClient, chat_body, fd_count, figure, rss_kib, start_gateway, wait_until

PATH = "/v1/chat/completions"


@pytest.fixture
def faulty():
    with FaultyUpstream() as up:
        yield up


@pytest.fixture
def gateway(tmp_path, faulty):
    # every load client comes from 127.0.0.1: lift the per-address cap (256 by default) above the 1,000 streams
    gw = start_gateway(tmp_path, faulty.url, "--max-connections-per-client", "4096")
    yield gw
    gw.proc.terminate()


async def _open_stream(gw, model: str, fault: dict, *, first_event: bool = True) -> RawClient:
    c = RawClient.for_url(gw.url)
    await c.connect(60)
    await c.request(PATH, chat_body(model, stream=True, fault=fault), gw.auth())
    if first_event:
        await c.read_until(lambda x: x.events(), 120)
    return c


async def _gather_bounded(coros, at_once: int):
    """Run the coroutines with at most ``at_once`` starting together (a burst of connects, not a flood)."""
    gate = asyncio.Semaphore(at_once)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def _check_stream(c: RawClient, events: int) -> None:
    assert c.status == 200 and c.complete, (c.status, c.complete, bytes(c.body[-200:]))
    data = c.events()
    assert data[-1] == b"[DONE]"
    text = b"".join(data)
    for i in range(events):
        assert b'"content":"piece %d "' % i in text
    assert b'"usage"' not in text  # the client did not ask for usage: the injected chunk is hidden


def _many_streams(gw, faulty, n: int, timeout: float) -> float:
    """n streams open at once (the upstream holds each after its first event until all n are open), then
    finishing together, event by event; the seconds from the first request to the last [DONE]."""
    events = 5
    faulty.rearm()

    async def one(i: int) -> RawClient:
        c = await _open_stream(gw, "fz/hold", {"events": events, "gap": 0.02, "split": i % 2 == 0}, first_event=False)
        try:
            await c.read_all(timeout)
        finally:
            c.close()
        return c

    async def main():
        conns = [asyncio.ensure_future(one(i)) for i in range(n)]
        all_open = await asyncio.to_thread(wait_until, lambda: faulty.held == n, timeout)
        faulty.release()
        clients = await asyncio.wait_for(asyncio.gather(*conns), timeout)
        assert all_open, f"only {faulty.held} of {n} streams were open at once"
        return clients

    started = time.monotonic()
    clients = asyncio.run(main())
    took = time.monotonic() - started
    faulty.rearm()
    for c in clients:
        _check_stream(c, events)
    return took


def _streams_complete(gw, faulty, n: int) -> None:
    took = _many_streams(gw, faulty, n, timeout=240)
    rows = gw.wait_rows(n, timeout=60)
    assert len(rows) == n
    assert all(r["status"] == 200 and r["stream"] == 1 and r["cost"] == COST for r in rows), rows[:3]
    figure(
        f"{n} concurrent streams through one worker, all open at once, then 5 events 20 ms apart", f"{took:.1f}", "s"
    )


def test_concurrent_streams_complete(gateway, faulty):
    _streams_complete(gateway, faulty, 100)


@pytest.mark.long
def test_concurrent_streams_complete_long(gateway, faulty):
    _streams_complete(gateway, faulty, 1000)


def _memory_per_stream(gw, faulty, n: int) -> float:
    """Bytes of proxy RSS per open stream, with n streams held open by the upstream."""
    _many_streams(gw, faulty, 20, timeout=120)  # warm up: code paths, pools, the first buffers
    time.sleep(0.5)
    base = rss_kib(gw.pid)

    async def main():
        clients = await _gather_bounded(
            [_open_stream(gw, "fz/hold", {"tag": f"m{i}", "events": 2}) for i in range(n)], 200
        )
        try:
            assert await asyncio.to_thread(wait_until, lambda: faulty.held == n, 60), faulty.held
            await asyncio.sleep(0.5)
            held = max(rss_kib(gw.pid) for _ in range(3))
            faulty.release()
            await asyncio.gather(*(c.read_all(120) for c in clients))
            for c in clients:
                _check_stream(c, 2)
            return held
        finally:
            for c in clients:
                c.close()

    held = asyncio.run(main())
    per_stream = (held - base) * 1024 / n
    figure(f"proxy RSS with {n} open streams", f"{base} KiB -> {held} KiB, {per_stream / 1024:.1f} KiB per stream")
    rows = gw.wait_rows(20 + n, timeout=60)
    assert sum(r["status"] == 200 for r in rows) == 20 + n
    return per_stream


def test_memory_per_open_stream(gateway, faulty):
    per_stream = _memory_per_stream(gateway, faulty, 100)
    assert per_stream <= 200 * 1024  # loose: 100 streams are few against allocator noise


@pytest.mark.long
def test_memory_per_open_stream_long(gateway, faulty):
    per_stream = _memory_per_stream(gateway, faulty, 1000)
    assert per_stream <= 30 * 1024


def _hangups_cancel_upstream(gw, faulty, n: int) -> None:
    # the baseline: after one stream whose upstream connection stays pooled
    _many_streams(gw, faulty, 1, timeout=60)
    assert wait_until(lambda: gw.rows(), 20)
    base_fds = fd_count(gw.pid)

    async def main():
        clients = await _gather_bounded([_open_stream(gw, "fz/hold", {"tag": f"h{i}"}) for i in range(n)], 100)
        assert await asyncio.to_thread(wait_until, lambda: faulty.held == n, 60), faulty.held
        hung_up = time.monotonic()
        for i, c in enumerate(clients):
            if i % 2:
                c.abort()  # RST
            else:
                c.close()  # FIN
        return hung_up

    hung_up = asyncio.run(main())
    tags = {f"h{i}" for i in range(n)}
    assert wait_until(lambda: tags <= faulty.closed.keys(), 20), (
        f"{len(tags - faulty.closed.keys())} upstream calls still open"
    )
    slowest = max(faulty.closed[t] - hung_up for t in tags)
    assert slowest < 10
    figure(f"{n} client hang-ups: the upstream saw its connection close within", f"{slowest:.2f}", "s")
    rows = gw.wait_rows(1 + n, timeout=30)
    cut = [r for r in rows if r["status"] == 499]
    assert len(cut) == n and all(r["error"] == "client disconnected" for r in cut)
    assert wait_until(lambda: fd_count(gw.pid) <= base_fds, 20), (fd_count(gw.pid), base_fds)
    assert wait_until(lambda: faulty.live <= 1, 20), faulty.live  # at most the pooled connection


def test_client_hangups_cancel_upstream_calls(gateway, faulty):
    _hangups_cancel_upstream(gateway, faulty, 20)


@pytest.mark.long
def test_client_hangups_cancel_upstream_calls_long(gateway, faulty):
    _hangups_cancel_upstream(gateway, faulty, 200)


def _slow_reader(gw, faulty, others: int, size: int) -> None:
    async def main():
        slow = RawClient.for_url(gw.url)
        await slow.connect(rcvbuf=64 * 1024)  # a slow client's small window (no autotuning on its side)
        await slow.request(PATH, chat_body("fz/huge", stream=True, fault={"size": size, "tag": "slow"}), gw.auth())
        await slow.read_until(lambda c: c.head_done, 60)  # then reads nothing for a while
        await asyncio.sleep(1.0)  # the pipeline fills up: the socket buffers, the proxy's read-ahead
        before = rss_kib(gw.pid)
        started = time.monotonic()

        async def other(i):
            c = await _open_stream(gw, "fz/ok", {"events": 5, "gap": 0.01}, first_event=False)
            try:
                return await c.read_all(120)
            finally:
                c.close()

        done = await asyncio.wait_for(asyncio.gather(*(other(i) for i in range(others))), 180)
        took = time.monotonic() - started
        grown = rss_kib(gw.pid) - before
        # it really was stalled while the others ran: the proxy held the upstream back (flow control)
        assert "slow" not in faulty.finished and len(slow.body) < size
        await slow.read_all(180)  # and gets all of it once it reads
        slow.close()
        return done, took, grown, slow

    done, took, grown, slow = asyncio.run(main())
    for c in done:
        _check_stream(c, 5)
    assert slow.complete and slow.events()[-1] == b"[DONE]"
    content = sum(len(e) for e in slow.events())
    assert content >= size
    figure(
        f"{others} streams beside a client reading nothing of a {size // 1_000_000} MB stream",
        f"{took:.1f} s, proxy RSS +{grown} KiB meanwhile",
    )
    assert grown < 64 * 1024  # flow control: the stalled stream is not buffered whole in the proxy
    rows = gw.wait_rows(others + 1, timeout=30)
    assert all(r["status"] == 200 for r in rows)


def _more_than_buffers(at_least: int) -> int:
    """A stream longer than every buffer on the way can hold: the proxy's upstream socket autotunes up
    to net.ipv4.tcp_rmem's maximum, and two send buffers up to tcp_wmem's (32 and 4 MiB here)."""
    try:
        rmem = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[2])
        wmem = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    except (OSError, IndexError, ValueError):
        rmem = wmem = 32 << 20
    return max(at_least, rmem + 2 * wmem + (16 << 20))


def test_a_slow_reader_does_not_stall_others(gateway, faulty):
    _slow_reader(gateway, faulty, 20, _more_than_buffers(32_000_000))


@pytest.mark.long
def test_a_slow_reader_does_not_stall_others_long(gateway, faulty):
    _slow_reader(gateway, faulty, 200, _more_than_buffers(100_000_000))
