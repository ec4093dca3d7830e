"""What limits cost the proxy: throughput at 32 connections with and without a budget and an rpm limit.

Starts the stand-in upstream, writes a store (a priced model, a gateway key),
and measures `gwctl proxy` (one worker, metering on) with wrk, in the same run:

* the proxy without limits;
* the same proxy with a budget (large enough never to refuse) and an rpm limit
  on the key, so every request reserves, admits and settles against both;

on a SQLite activity log, and on PostgreSQL when --postgres DSN (or
$GWCTL_TEST_POSTGRES) is given: the limits' meters are then shared through the
database. Each configuration runs --repeat times, alternating, median taken.

    python benchmarks/limits_bench.py [--duration 5] [--repeat 3] [--postgres DSN]

Target (issue 12): with limits >= 0.9x the same proxy without them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, process helpers)


def gw(store: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gwctl", "--store", str(store), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def store_for(tmp: Path, name: str, up_url: str, limits: bool) -> tuple[Path, str]:
    store = tmp / f"{name}.toml"
    gw(store, "source", "add", "bench", "--base-url", up_url, "--auth-value", hs.UPSTREAM_KEY)
    gw(store, "source", "refresh", "bench")
    gw(store, "catalog", "set", f"bench/{hs.MODEL}", "--price", "input=3e-6", "--price", "output=1.5e-5")
    gw(store, "catalog", "set", f"bench/{hs.MODEL}", "--max-output", "4096", "--context-size", "131072")
    key = json.loads(gw(store, "key", "create", "bench", "--json"))["key"]
    if limits:
        gw(store, "limit", "set", "key:bench", "--budget", "1000000", "--window", "month", "--rpm", "100000000")
    return store, key


def throughput(procs, store: Path, dsn: str, key: str, args) -> float:
    port = hs.free_port()
    proxy = procs.start(
        [sys.executable, "-m", "gwctl", "--store", str(store), "proxy", "--port", str(port), "--activity", dsn], port
    )
    try:
        url = f"http://{hs.HOST}:{port}/v1/chat/completions"
        hs.wrk(url, 32, 1, "Bearer " + key)  # warm-up
        return hs.wrk(url, 32, args.duration, "Bearer " + key).rps
    finally:
        procs.stop(proxy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--postgres", metavar="DSN", default=os.environ.get("GWCTL_TEST_POSTGRES"))
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-limits-bench-"))
    results: dict[tuple[str, bool], list[float]] = {}
    try:
        up_port = hs.free_port()
        procs.start(
            [sys.executable, "-m", "gwctl.testing", "--port", str(up_port), "--models", hs.MODEL]
            + ["--api-key", hs.UPSTREAM_KEY, "--no-record"],
            up_port,
        )
        up_url = f"http://{hs.HOST}:{up_port}/v1"
        hs.REQUEST["model"] = f"bench/{hs.MODEL}"
        backends = [("sqlite", lambda run: f"sqlite://{tmp / f'activity-{run}.sqlite3'}")]
        if args.postgres:
            backends.append(("postgresql", lambda run: args.postgres))
        for backend, dsn_for in backends:
            for limits in (False, True):
                results[(backend, limits)] = []
            for run in range(args.repeat):
                for limits in (False, True):
                    # a fresh key each run: a new key's meters start empty, on a shared database too
                    store, key = store_for(tmp, f"{backend}-{run}-{limits}-{uuid.uuid4().hex[:6]}", up_url, limits)
                    print(f"measuring {backend}, limits={limits}, run {run + 1} …", file=sys.stderr)
                    results[(backend, limits)].append(throughput(procs, store, dsn_for(run), key, args))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'activity log':<14} {'no limits req/s':>16} {'budget+rpm req/s':>17} {'ratio':>7} {'target':>8}")
    for backend in dict.fromkeys(b for b, _ in results):
        plain = statistics.median(results[(backend, False)])
        limited = statistics.median(results[(backend, True)])
        print(f"{backend:<14} {plain:16.0f} {limited:17.0f} {limited / plain:7.2f} {'>= 0.90':>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
