"""What limits cost the proxy: throughput at 32 connections with and without a budget and an rpm limit.

Starts the stand-in upstream, writes a store (a priced model, a gateway key),
and measures `gwctl proxy` (one worker, metering on) with wrk, in the same run:

* the proxy without limits;
* the same proxy with a budget (large enough never to refuse) and an rpm limit
  on the key, so every request reserves, admits and settles against both;

on a SQLite activity log, and on PostgreSQL when --postgres DSN (or
$GWCTL_TEST_POSTGRES) is given: the limits' meters are then shared through the
database. Both proxies run side by side and wrk drives them in turns: --repeat
pairs of --duration-second bursts, the order alternating between pairs. This
shared machine's speed drifts by tens of percent over minutes, so the figure
is the median of the pairs' ratios (each pair measured within seconds), with
their interquartile range beside it.

    python benchmarks/limits_bench.py [--duration 2] [--repeat 15] [--postgres DSN]

Target (issue 12): with limits >= 0.9x the same proxy without them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, process helpers)


def store_for(tmp: Path, name: str, up_url: str, limits: bool) -> tuple[Path, str]:
    """A store with the priced model and a key; with ``limits``, a budget and an rpm limit on the key."""
    store = tmp / f"{name}.toml"
    hs.gwctl(store, "source", "add", "bench", "--base-url", up_url, "--auth-value", hs.UPSTREAM_KEY)
    hs.gwctl(store, "source", "refresh", "bench")
    hs.gwctl(store, "catalog", "set", f"bench/{hs.MODEL}", "--price", "input=3e-6", "--price", "output=1.5e-5")
    hs.gwctl(store, "catalog", "set", f"bench/{hs.MODEL}", "--max-output", "4096", "--context-size", "131072")
    key = json.loads(hs.gwctl(store, "key", "create", "bench", "--json"))["key"]
    if limits:
        hs.gwctl(store, "limit", "set", "key:bench", "--budget", "1000000", "--window", "month", "--rpm", "100000000")
    return store, key


def burst(proxy, url: str, key: str, duration: float) -> tuple[float, float]:
    """Requests per second over one wrk burst, and the proxy's CPU microseconds per request (its process
    tree: the worker and its log writer)."""
    cpu = hs.tree_cpu_seconds(proxy.pid)
    rps = hs.wrk(url, 32, duration, "Bearer " + key).rps
    cpu = hs.tree_cpu_seconds(proxy.pid) - cpu
    return rps, cpu / (rps * duration) * 1e6


def measure(procs, tmp: Path, up_url: str, backend: str, dsn: str, args) -> dict[bool, list[tuple[float, float]]]:
    """Both proxies (no limits, budget+rpm) run side by side on ``dsn``; wrk drives them in turns."""
    running = {}
    for limits in (False, True):
        # a fresh key: a new key's meters start empty, on a shared database too
        store, key = store_for(tmp, f"{backend}-{limits}-{uuid.uuid4().hex[:6]}", up_url, limits and not args.aa)
        proxy, base = hs.start_gwctl_proxy(procs, store, dsn, *(["taskset", "-c", "0"] if args.pin else []))
        url = base + "/v1/chat/completions"
        hs.wrk(url, 32, 1, "Bearer " + key)  # warm-up
        running[limits] = (proxy, url, key)
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        for pair in range(args.repeat):
            for limits in (False, True) if pair % 2 == 0 else (True, False):
                proxy, url, key = running[limits]
                runs[limits].append(burst(proxy, url, key, args.duration))
                rps, cpu = runs[limits][-1]
                print(
                    f"{backend}, limits={limits}, pair {pair + 1}: {rps:.0f} req/s, {cpu:.0f} us CPU/req",
                    file=sys.stderr,
                )
    finally:
        for proxy, _url, _key in running.values():
            procs.stop(proxy)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2, help="seconds per wrk burst")
    ap.add_argument("--repeat", type=int, default=15, help="pairs of bursts per activity log")
    ap.add_argument("--postgres", metavar="DSN", default=os.environ.get("GWCTL_TEST_POSTGRES"))
    ap.add_argument(
        "--aa", action="store_true", help="no limits on either side: the ratio the method reads from noise alone"
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the proxies (and their log writers) on CPU 0; wrk and the upstream on CPU 1",
    )
    args = ap.parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, {1})  # wrk and the stand-in upstream inherit it
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-limits-bench-"))
    results = {}
    try:
        up_url = hs.start_standin(procs)
        hs.REQUEST["model"] = f"bench/{hs.MODEL}"
        backends = [("sqlite", f"sqlite://{tmp / 'activity.sqlite3'}")]
        if args.postgres:
            backends.append(("postgresql", args.postgres))
        for backend, dsn in backends:
            results[backend] = measure(procs, tmp, up_url, backend, dsn, args)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"{'activity log':<14} {'no limits req/s':>16} {'budget+rpm req/s':>17} {'ratio':>7} {'pairs IQR':>11}"
        f" {'target':>8} {'CPU us/req':>12}"
    )
    for backend, runs in results.items():
        plain, limited = runs[False], runs[True]
        ratios = sorted(b[0] / a[0] for a, b in zip(plain, limited))
        q1, _q2, q3 = statistics.quantiles(ratios, n=4)
        med = statistics.median
        cpu = f"{med(c for _r, c in plain):.0f} -> {med(c for _r, c in limited):.0f}"
        print(
            f"{backend:<14} {med(r for r, _c in plain):16.0f} {med(r for r, _c in limited):17.0f}"
            f" {med(ratios):7.2f} {q1:5.2f}-{q3:.2f} {'>= 0.90':>8} {cpu:>12}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
