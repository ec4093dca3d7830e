"""The running proxy (a real `gwctl proxy` process) under hostile clients: keyless bodies, trailers, caps, stalls.

The HTTP server's limits are tested piece by piece in test_proxy_http_limits.py;
here they are seen through the gateway as wired by ``serve()``: a request
without a valid key is refused at its head (its body never read, so a storm
of keyless multi-megabyte uploads leaves the worker's memory where it was), a
key sent in a chunked body's trailer does not authenticate, and the command
line's caps and deadlines apply. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import run_cli
from proxyrun import ProxyProcess, wait_for
from test_proxy_http import Client, get

STORM = 50  # keyless connections
DECLARED = 4 << 20  # the body each of them declares (and tries to send)
MIB = 1 << 20


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.fixture
def proxy(tmp_path):
    key = run_cli("key", "create", "tester", "--json").json()["key"]
    proc = ProxyProcess(
        tmp_path / "cfg" / "gwctl.toml",
        f"sqlite://{tmp_path / 'a.db'}",
        "--max-connections-per-client",
        str(STORM + 20),
        "--head-timeout",
        "1",
    )
    proc.port = int(proc.url.rsplit(":", 1)[1])
    yield proc, key
    proc.terminate()


def upload_head(length: int, *extra: str) -> bytes:
    return get(
        "/v1/chat/completions", f"Content-Length: {length}", "Content-Type: application/json", *extra, method="POST"
    )


def test_keyless_uploads_are_refused_at_the_head_and_memory_comes_back(proxy):
    proc, key = proxy
    pid = proc.proc.pid
    for _ in range(3):  # warm up: the paths below have run once before the baseline
        with Client(proc.port) as c:
            c.send(upload_head(2) + b"{}")
            assert c.response().status == 401
    time.sleep(0.3)
    baseline = rss(pid)

    # each client declares 4 MiB and waits: the 401 must come without a byte of the body
    clients = [Client(proc.port) for _ in range(STORM)]
    try:
        for c in clients:
            c.send(upload_head(DECLARED))
        for c in clients:
            r = c.response()
            assert r.status == 401
            assert r.header("connection") == "close"
            assert r.json()["error"]["code"] == "invalid_api_key"
        held = rss(pid)
    finally:
        for c in clients:
            c.sock.close()

    # and clients that send head and body at once, without waiting, all together
    def blast() -> None:
        try:
            with socket.create_connection(("127.0.0.1", proc.port), timeout=3) as s:
                s.sendall(upload_head(DECLARED))
                piece = b"x" * (256 * 1024)
                for _ in range(DECLARED // len(piece)):
                    s.sendall(piece)
        except OSError:
            pass  # the gateway answered and closed: the rest of the body is refused

    threads = [threading.Thread(target=blast) for _ in range(STORM)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    time.sleep(0.5)
    after = rss(pid)
    with Client(proc.port) as c:  # and the gateway still serves
        c.send(get("/healthz"))
        assert c.response().status == 200
    assert held - baseline < 20 * MIB, f"RSS grew {(held - baseline) / MIB:.1f} MiB while {STORM} heads were refused"
    assert after - baseline < 40 * MIB, f"RSS is {(after - baseline) / MIB:.1f} MiB over the baseline after the storm"


def test_a_key_in_a_trailer_does_not_authenticate(proxy):
    proc, key = proxy
    body = b'{"model": "x/y", "messages": []}'
    chunked = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    with Client(proc.port) as c:
        c.send(
            get("/v1/chat/completions", "Transfer-Encoding: chunked", method="POST")
            + chunked
            + f"Authorization: Bearer {key}\r\n\r\n".encode()
        )
        r = c.response()
        assert r.status == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    with Client(proc.port) as c:  # the same key in the head does
        c.send(
            get("/v1/chat/completions", "Transfer-Encoding: chunked", f"Authorization: Bearer {key}", method="POST")
            + chunked
            + b"\r\n"
        )
        assert c.response().status != 401


def test_a_stalled_head_gets_408_and_a_valid_key_still_uploads(proxy):
    proc, key = proxy
    with Client(proc.port) as c:
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthor")
        t0 = time.monotonic()
        r = c.response()
        assert r.status == 408 and r.json()["error"]["code"] == "request_timeout"
        assert time.monotonic() - t0 < 3.5
    body = b'{"model": "none/none", "messages": []}'
    with Client(proc.port) as c:
        c.send(upload_head(len(body), f"Authorization: Bearer {key}", "Expect: 100-continue"))
        assert c.response().status == 100  # a client with a valid key is asked for its body
        c.send(body)
        assert c.response().status not in (100, 401, 408)
    assert wait_for(lambda: "refused with 408 request_timeout" in proc.log, 5)


def test_the_per_client_connection_cap_from_the_command_line(tmp_path):
    run_cli("key", "create", "tester", "--json")
    proc = ProxyProcess(
        tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'a.db'}", "--max-connections-per-client", "3"
    )
    port = int(proc.url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(3):
            c = Client(port)
            c.send(get("/healthz"))
            assert c.response().status == 200
            held.append(c)
        for _ in range(3):
            with Client(port) as extra:
                r = extra.response()
                assert (r.status, r.json()["error"]["code"]) == (503, "too_many_connections")
        assert wait_for(lambda: "refusing connections with 503" in proc.log, 5)
        assert proc.log.count("refusing connections with 503") == 1
    finally:
        for c in held:
            c.sock.close()
        proc.terminate()
