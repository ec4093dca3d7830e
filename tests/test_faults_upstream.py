"""Upstream faults through a real proxy: each gives the documented answer, an activity row, and no leaked connection.

The upstream (tests/faulty.py) resets connections mid-stream and before its
answer, hangs before its headers or in the middle of a stream, trickles its
answer byte by byte (with and without a silence longer than the read
timeout), answers 5xx/429 with bodies and Retry-After, and sends huge
bodies. The source's read timeout is 1 s (``source add --read-timeout``,
which the decision hands the proxy). For each fault: the status (or the
way a stream ends) the README documents -- 502 upstream_unreachable, 504
upstream_timeout, a stream cut short without its last chunk, the
upstream's own status and body relayed as is --, the request's row in the
SQLite activity log (found by its X-Gwctl-Request-Id), and the proxy's open
file descriptors (/proc/PID/fd) back to what they were before.

How to run the long suite: the default run sends each fault a few times and
the huge bodies at 16 MB; the long version repeats each fault 50 times on
one proxy (leaks add up) and sends 100 MB bodies:

    python -m pytest -m long tests/test_faults_upstream.py -s

The whole long suite, every module: ``python -m pytest -m long -s`` (about 4 minutes
on the 2-core machine; without ``-n``, so the measured figures are not disturbed).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from faulty import COST, FaultyUpstream, RawClient, chat_body, fd_count, figure, one_request, start_gateway, wait_until

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def faulty():
    with FaultyUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, faulty):
    gw = start_gateway(tmp_path_factory.mktemp("faults"), faulty.url, read_timeout=READ_TIMEOUT)
    yield gw
    gw.proc.terminate()


def _send(gw, model: str, *, stream: bool = False, fault: dict | None = None, timeout: float = 60) -> RawClient:
    return asyncio.run(one_request(gw.url, gw.key, chat_body(model, stream=stream, fault=fault), timeout=timeout))


def _baseline(gw) -> int:
    """The proxy's open fds after a good request (its upstream connection pooled, the client's closed)."""
    c = _send(gw, "fz/ok")
    assert c.status == 200
    gw.row(c.header("x-gwctl-request-id"))
    return fd_count(gw.pid)


def _no_leak(gw, faulty, base: int) -> None:
    assert wait_until(lambda: fd_count(gw.pid) <= base, 20), f"proxy fds {fd_count(gw.pid)} > {base} after the fault"
    assert wait_until(lambda: faulty.live <= 1, 20), f"{faulty.live} upstream connections open (1 may be pooled)"


def _error(c: RawClient) -> dict:
    return json.loads(bytes(c.body))["error"]


# --- each fault: what the client gets and what the log says ----------------------------


def reset_mid_stream(gw):
    c = _send(gw, "fz/reset", stream=True, fault={"events": 2})
    assert c.status == 200 and not c.complete  # the head went out; the stream is cut, not ended cleanly
    assert b"piece 1" in bytes(c.body) and b"[DONE]" not in bytes(c.body)
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 502 and row["error"].startswith("upstream broke the stream") and row["stream"] == 1


def reset_before_answer(gw):
    c = _send(gw, "fz/reset", fault={"at": "head"})
    assert c.status == 502 and c.complete and _error(c)["code"] == "upstream_unreachable"
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 502 and row["rule"] == "upstream_unreachable" and row["route_kind"] == "error"


def reset_mid_body(gw):
    c = _send(gw, "fz/reset", fault={"bytes": 50})
    assert c.status == 502 and _error(c)["code"] == "upstream_unreachable"
    assert "broke the connection" in _error(c)["message"]
    assert gw.row(c.header("x-gwctl-request-id"))["status"] == 502


def hang_before_headers(gw, faulty):
    tag = f"hang-{time.monotonic_ns()}"
    started = time.monotonic()
    c = _send(gw, "fz/hang", fault={"tag": tag})
    took = time.monotonic() - started
    assert c.status == 504 and _error(c)["code"] == "upstream_timeout"
    assert READ_TIMEOUT * 0.9 <= took < READ_TIMEOUT + 10
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 504 and row["rule"] == "upstream_timeout"
    assert wait_until(lambda: tag in faulty.closed, 10)  # the proxy hung up on the silent upstream


def hang_mid_stream(gw, faulty):
    tag = f"stall-{time.monotonic_ns()}"
    c = _send(gw, "fz/hold", stream=True, fault={"tag": tag})  # its first event, then silence
    assert c.status == 200 and not c.complete and len(c.events()) == 1
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 504 and row["error"] == "upstream timed out mid-stream"
    assert wait_until(lambda: tag in faulty.closed, 10)


def trickle(gw):
    c = _send(gw, "fz/trickle", fault={"piece": 7, "gap": 0.002})
    assert c.status == 200 and c.complete
    assert json.loads(bytes(c.body))["choices"][0]["message"]["content"].startswith("slow and steady")
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 200 and row["cost"] == COST


def trickle_then_stall(gw):
    c = _send(gw, "fz/trickle", fault={"piece": 50, "gap": 0.001, "stall": READ_TIMEOUT + 1.5})
    assert c.status == 504 and _error(c)["code"] == "upstream_timeout"
    assert gw.row(c.header("x-gwctl-request-id"))["status"] == 504


def statuses(gw):
    for status, retry_after, stream in ((503, "7", False), (429, "2", True), (500, None, False), (502, None, True)):
        c = _send(
            gw,
            "fz/status",
            stream=stream,
            fault={"status": status, "retry_after": retry_after, "message": f"busy {status}"},
        )
        assert c.status == status  # relayed as is, never turned into the gateway's own error
        assert _error(c) == {"message": f"busy {status}", "type": "upstream_error", "code": "overloaded"}
        assert c.header("retry-after") == retry_after
        row = gw.row(c.header("x-gwctl-request-id"))
        assert row["status"] == status and row["error"] == f"upstream answered {status}" and row["cost"] is None


def huge_body(gw, size: int):
    started = time.monotonic()
    c = _send(gw, "fz/huge", fault={"size": size}, timeout=300)
    took = time.monotonic() - started
    assert c.status == 200 and c.complete
    doc = json.loads(bytes(c.body))
    assert len(doc["choices"][0]["message"]["content"]) == size
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 200 and row["cost"] == COST  # the usage after the huge content still counts
    return took


def huge_stream(gw, size: int):
    started = time.monotonic()
    c = _send(gw, "fz/huge", stream=True, fault={"size": size}, timeout=300)
    took = time.monotonic() - started
    assert c.status == 200 and c.complete and c.events()[-1] == b"[DONE]"
    assert sum(len(e) for e in c.events()) >= size
    row = gw.row(c.header("x-gwctl-request-id"))
    assert row["status"] == 200 and row["stream"] == 1
    return took


FAULTS = {
    "reset_mid_stream": lambda gw, up: reset_mid_stream(gw),
    "reset_before_answer": lambda gw, up: reset_before_answer(gw),
    "reset_mid_body": lambda gw, up: reset_mid_body(gw),
    "hang_before_headers": hang_before_headers,
    "hang_mid_stream": hang_mid_stream,
    "trickle": lambda gw, up: trickle(gw),
    "trickle_then_stall": lambda gw, up: trickle_then_stall(gw),
    "statuses": lambda gw, up: statuses(gw),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_upstream_fault(gateway, faulty, fault):
    base = _baseline(gateway)
    FAULTS[fault](gateway, faulty)
    _no_leak(gateway, faulty, base)
    assert "Traceback" not in gateway.proc.log


def test_huge_bodies(gateway, faulty):
    base = _baseline(gateway)
    took = huge_body(gateway, 16_000_000), huge_stream(gateway, 16_000_000)
    figure("16 MB plain body / stream relayed", f"{took[0]:.1f} s / {took[1]:.1f} s")
    _no_leak(gateway, faulty, base)


@pytest.mark.long
def test_upstream_faults_repeated_long(gateway, faulty):
    """Every fault 50 times on one proxy: a leak of one descriptor per fault would show as 50."""
    base = _baseline(gateway)
    started = time.monotonic()
    for _ in range(50):
        for name in sorted(FAULTS):
            if name in ("hang_before_headers", "hang_mid_stream", "trickle_then_stall") and _ % 10:
                continue  # the slow ones (a read timeout each) 5 times
            FAULTS[name](gateway, faulty)
    figure("upstream faults repeated on one proxy", f"{time.monotonic() - started:.1f}", "s")
    _no_leak(gateway, faulty, base)
    assert "Traceback" not in gateway.proc.log


@pytest.mark.long
def test_huge_bodies_long(gateway, faulty):
    base = _baseline(gateway)
    took = huge_body(gateway, 100_000_000), huge_stream(gateway, 100_000_000)
    figure("100 MB plain body / stream relayed", f"{took[0]:.1f} s / {took[1]:.1f} s")
    _no_leak(gateway, faulty, base)
