"""What the Prometheus metrics cost the proxy: throughput at 32 connections with metrics on and off, same run.

Starts the stand-in upstream, writes a store (a priced model, a gateway key),
and runs two `gwctl proxy` processes (one worker each, metering on, a SQLite
activity log) side by side: one with ``--metrics-port`` (scraped every
``--scrape-every`` seconds while it is measured, as a Prometheus server would),
one without. wrk drives them in turns: --repeat pairs of --duration-second
bursts, the order alternating between pairs. This shared machine's speed drifts
by tens of percent over minutes, so the figure is the median of the pairs'
ratios (each pair measured within seconds), with their interquartile range
beside it. ``--aa`` runs both without metrics: the ratio the method reads from
noise alone.

    python benchmarks/metrics_bench.py [--duration 2] [--repeat 15] [--aa]

Target: with metrics on >= 0.95x the same proxy with metrics off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, process helpers)


def store_for(tmp: Path, name: str, up_url: str) -> tuple[Path, str]:
    store = tmp / f"{name}.toml"
    hs.gwctl(store, "source", "add", "bench", "--base-url", up_url, "--auth-value", hs.UPSTREAM_KEY)
    hs.gwctl(store, "source", "refresh", "bench")
    hs.gwctl(store, "catalog", "set", f"bench/{hs.MODEL}", "--price", "input=3e-6", "--price", "output=1.5e-5")
    key = json.loads(hs.gwctl(store, "key", "create", "bench", "--json"))["key"]
    return store, key


def start(procs: hs.Procs, store: Path, dsn: str, metrics_port: int | None):
    port = hs.free_port()
    cmd = [sys.executable, "-m", "gwctl", "--store", str(store), "proxy", "--port", str(port), "--activity", dsn]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    return procs.start(cmd, port), f"http://{hs.HOST}:{port}"


class Scraper:
    """GET /metrics every ``every`` seconds while on."""

    def __init__(self, url: str, every: float):
        self.url, self.every = url, every
        self.on = threading.Event()
        self.stop = threading.Event()
        self.scrapes = 0
        self.bytes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.on.wait(0.1):
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    self.bytes = len(r.read())
                self.scrapes += 1
                self.stop.wait(self.every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2, help="seconds per wrk burst")
    ap.add_argument("--repeat", type=int, default=15, help="pairs of bursts")
    ap.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes of the metrics")
    ap.add_argument("--aa", action="store_true", help="metrics off on both sides: the method's noise")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-metrics-bench-"))
    runs: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}  # the proxy's process tree's CPU us per request
    scraper = None
    try:
        up_url = hs.start_standin(procs)
        hs.REQUEST["model"] = f"bench/{hs.MODEL}"
        running = {}
        for metrics in (False, True):
            store, key = store_for(tmp, f"m{int(metrics)}", up_url)
            mport = hs.free_port() if metrics and not args.aa else None
            proxy, base = start(procs, store, f"sqlite://{tmp / f'a{int(metrics)}.db'}", mport)
            url = base + "/v1/chat/completions"
            hs.wrk(url, 32, 1, "Bearer " + key)  # warm-up
            running[metrics] = (proxy, url, key)
            if mport is not None:
                scraper = Scraper(f"http://{hs.HOST}:{mport}/metrics", args.scrape_every)
        for pair in range(args.repeat):
            for metrics in (False, True) if pair % 2 == 0 else (True, False):
                proxy, url, key = running[metrics]
                if scraper is not None and metrics:
                    scraper.on.set()
                cpu = hs.tree_cpu_seconds(proxy.pid)
                rps = hs.wrk(url, 32, args.duration, "Bearer " + key).rps
                cpu = (hs.tree_cpu_seconds(proxy.pid) - cpu) / (rps * args.duration) * 1e6
                if scraper is not None:
                    scraper.on.clear()
                runs[metrics].append(rps)
                cpus[metrics].append(cpu)
                print(f"metrics={metrics}, pair {pair + 1}: {rps:.0f} req/s, {cpu:.0f} us CPU/req", file=sys.stderr)
    finally:
        if scraper is not None:
            scraper.stop.set()
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = sorted(b / a for a, b in zip(runs[False], runs[True]))
    q1, _q2, q3 = statistics.quantiles(ratios, n=4)
    med = statistics.median
    label = "off (A/A)" if args.aa else "on"
    print()
    print(
        f"{'metrics':<10} {'off req/s':>10} {label + ' req/s':>14} {'ratio':>7} {'pairs IQR':>11} {'target':>8}"
        f" {'CPU us/req':>12}"
    )
    print(
        f"{label:<10} {med(runs[False]):10.0f} {med(runs[True]):14.0f} {med(ratios):7.3f}"
        f" {q1:5.2f}-{q3:.2f} {'>= 0.95':>8} {med(cpus[False]):5.0f} -> {med(cpus[True]):.0f}"
    )
    if scraper is not None:
        print(f"({scraper.scrapes} scrapes during the bursts, {scraper.bytes} bytes each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
