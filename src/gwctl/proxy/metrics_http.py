"""The metrics listener: ``GET /metrics`` in Prometheus' text format, on an address of its own.

A small threaded ``http.server`` in the proxy's main process, which forks the
workers when metrics are on (one included: a scrape then costs no worker
anything), bound to ``--metrics-host`` (loopback by default) and
``--metrics-port``, never on the proxy's own port. Each scrape
sums the run directory's snapshots (:func:`gwctl.proxy.metrics.collect`) and
renders them with prometheus-client (a custom collector and
``generate_latest``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from gwctl.errors import GwctlError
from gwctl.proxy.metrics import LATENCY_BUCKETS, SPECS, collect

log = logging.getLogger("gwctl.proxy")


class _Collector:
    """The run directory's figures as prometheus-client metric families."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        totals = collect(self.run_dir)
        les = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for name, (kind, doc, labels) in SPECS.items():
            samples = totals[name]
            fam: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if kind == "counter":
                fam = CounterMetricFamily(name, doc, labels=list(labels))
                if not labels and not samples:
                    samples = {(): 0}
                for key, value in sorted(samples.items()):
                    fam.add_metric(list(key), float(value))
            elif kind == "gauge":
                fam = GaugeMetricFamily(name, doc, labels=list(labels))
                if not labels and not samples:
                    samples = {(): 0}
                for key, value in sorted(samples.items()):
                    fam.add_metric(list(key), float(value))
            else:
                fam = HistogramMetricFamily(name, doc, labels=list(labels))
                for key, h in sorted(samples.items()):
                    running, buckets = 0, []
                    for le, n in zip(les, h[:-1]):
                        running += n
                        buckets.append((le, running))
                    fam.add_metric(list(key), buckets, h[-1])
            yield fam


def render(run_dir: str) -> bytes:
    """The exposition text of the figures in ``run_dir``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(run_dir))  # type: ignore[arg-type]
    return generate_latest(registry)


class _Handler(BaseHTTPRequestHandler):
    server_version = "gwctl-metrics"
    run_dir = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body = render(self.run_dir)
        except Exception:
            log.exception("cannot render the metrics")
            self._send(500, b"cannot render the metrics; see the proxy's log\n", "text/plain; charset=utf-8")
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        self._send(200, body, CONTENT_TYPE_LATEST)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # scrapes are not worth a line each
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class MetricsListener:
    """The run directory (made here, removed by :meth:`close`) and the listener serving its figures."""

    def __init__(self, host: str, port: int):
        self.run_dir = tempfile.mkdtemp(prefix="gwctl-metrics-")
        handler = type("Handler", (_Handler,), {"run_dir": self.run_dir})
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.server = _Server((host, port), handler, bind_and_activate=True)
        except OSError as exc:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise GwctlError(
                f"cannot listen for metrics on {host}:{port}: {exc.strerror}",
                "pick another --metrics-port, or stop what is using it",
            ) from None
        self.port = self.server.server_address[1]
        self.host = host
        self._thread: threading.Thread | None = None
        self._owner = os.getpid()

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Serve in a daemon thread (start it after forking the workers: they must not inherit a thread)."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="gwctl-metrics", daemon=True)
        self._thread.start()

    def forget(self) -> None:
        """In a forked worker: close the inherited socket, which only the main process serves."""
        self.server.socket.close()

    def close(self) -> None:
        if os.getpid() != self._owner:
            return
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
