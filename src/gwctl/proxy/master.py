"""The proxy's process: one listening socket, served by this process or by forked workers sharing it.

With ``workers > 1`` this process forks the workers (each its own event loop,
request-id prefix, upstream pool and log writer process), passes SIGTERM and
SIGINT on to them, and exits when they all have, with the first non-zero
exit code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from gwctl.core.config import Snapshot
from gwctl.errors import GwctlError
from gwctl.proxy.flow import reseed_request_ids
from gwctl.proxy.server import ProxyConfig, serve, upstream_proxies

log = logging.getLogger("gwctl.proxy")


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop, or asyncio's where uvloop is missing."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def listen(host: str, port: int) -> socket.socket:
    """The proxy's listening socket (non-blocking, backlog 1024); a port in use is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise GwctlError(
            f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port, or stop what is using it"
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run(
    config: ProxyConfig,
    snapshot: Snapshot,
    host: str,
    port: int,
    workers: int = 1,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run the proxy in the foreground (pre-forked workers sharing one socket when workers > 1) until
    SIGTERM/SIGINT; the exit code. ``metrics``: the (host, port) of the metrics listener, None for none."""
    upstream_proxies(os.environ)  # an unusable egress proxy is an error now, not a 502 per request
    sock = listen(host, port)
    if metrics is None:
        return _run(config, snapshot, host, sock, workers, None)
    from gwctl.proxy.metrics_http import MetricsListener

    listener = MetricsListener(*metrics)
    config.metrics_dir = listener.run_dir
    if config.log_format == "json":
        log.info("gwctl proxy metrics on %s", listener.url)
    else:
        sys.stderr.write(f"gwctl proxy metrics on {listener.url}\n")
    try:
        return _run(config, snapshot, host, sock, workers, listener)
    finally:
        listener.close()


def _run(config: ProxyConfig, snapshot: Snapshot, host: str, sock: socket.socket, workers: int, listener) -> int:
    bound = sock.getsockname()[1]
    url = f"http://{host if sock.family == socket.AF_INET else '[' + host + ']'}:{bound}"

    def announce(_srv):
        if config.log_format == "json":
            log.info("gwctl proxy ready on %s (OpenAI base_url %s/v1; workers %d)", url, url, workers)
        else:
            sys.stderr.write(f"gwctl proxy ready on {url} (OpenAI base_url {url}/v1; workers {workers})\n")
            sys.stderr.flush()

    if workers <= 1 and listener is None:
        loop = new_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(serve(config, snapshot, host, bound, sock=sock, ready=announce))
        finally:
            loop.close()
    # With metrics on, even one worker is forked: the listener serves scrapes from this process, off the
    # worker's GIL (in the worker's process a scrape every second cost it ~7% of its throughput at 32
    # connections; benchmarks/README.md, "Metrics").
    children = [_fork_worker(config, snapshot, host, bound, sock, listener) for _ in range(max(1, workers))]
    if listener is not None:
        listener.start()  # after the forks: a worker must not inherit a thread
    announce(None)
    return _supervise(children)


def _fork_worker(
    config: ProxyConfig, snapshot: Snapshot, host: str, port: int, sock: socket.socket, listener=None
) -> int:
    """Fork one worker serving ``sock``; the child never returns from here. The child's pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - exercised through subprocess tests
        code = 1
        try:
            if listener is not None:
                listener.forget()  # the metrics are served by the main process only
            reseed_request_ids()
            loop = new_loop()
            asyncio.set_event_loop(loop)
            code = loop.run_until_complete(serve(config, snapshot, host, port, sock=sock))
        finally:
            os._exit(code)
    return pid


def _supervise(children: list[int]) -> int:
    """Pass SIGTERM and SIGINT on to the workers and wait for them all; the first non-zero exit code, else 0."""

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:  # pragma: no cover
                continue
        code = code or os.waitstatus_to_exitcode(status)
    return code
