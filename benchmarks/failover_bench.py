"""What failover costs: throughput with a fallback configured (the first attempt succeeds), and the time a failover adds.

Starts two stand-in upstreams (one answers, one answers 503 to everything), a
closed port, and proxies on stores built with the CLI (one worker each,
metering on, SQLite activity logs):

* throughput: a proxy whose route has a fallback (never needed: the primary
  answers) against the same route without one, driven by wrk in turns
  (--repeat pairs of --duration-second bursts, the order alternating; the
  median of the pairs' ratios, as benchmarks/limits_bench.py does);
* the added latency: sequential requests on one keep-alive connection to a
  route straight to the answering stand-in, and to routes whose primary is
  the closed port (connection refused) or the 503 stand-in, each falling back
  to the answering one; the median difference per request.

    python benchmarks/failover_bench.py [--duration 2] [--repeat 15] [--requests 400]

Targets (issue 13): throughput >= 0.97x without a fallback; a failover to a
second local target adds under 2 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, process helpers)


def closed_port() -> int:
    s = socket.socket()
    s.bind((hs.HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def store_for(tmp: Path, name: str, urls: dict[str, str], routes: list[list[str]]) -> tuple[Path, str]:
    """A store with the sources ``urls`` (each serving hs.MODEL, priced), ``routes`` and a key."""
    store = tmp / f"{name}.toml"
    for source, url in urls.items():
        hs.gwctl(store, "source", "add", source, "--base-url", url, "--auth-value", hs.UPSTREAM_KEY)
        hs.gwctl(store, "catalog", "set", f"{source}/{hs.MODEL}", "--price", "input=3e-6", "--price", "output=1.5e-5")
    for route in routes:
        hs.gwctl(store, "route", "set", *route)
    hs.gwctl(store, "catalog", "set", f"good/{hs.MODEL}", "--max-output", "4096")
    key = json.loads(hs.gwctl(store, "key", "create", "bench", "--json"))["key"]
    return store, key


def throughput(procs, tmp: Path, urls: dict[str, str], args) -> list[tuple[float, float]]:
    """(without a fallback, with one) req/s per pair of wrk bursts."""
    route = ["t", "--model-name", "m", "--provider", "good", "--model", hs.MODEL]
    running = []
    for name, extra in (("plain", []), ("fallback", ["--fallback", f"other/{hs.MODEL}"])):
        store, key = store_for(tmp, name, urls, [route + extra])
        proxy, base = hs.start_gwctl_proxy(procs, store, f"sqlite://{tmp / f'{name}.sqlite3'}")
        hs.wrk(base + "/v1/chat/completions", 32, 1, "Bearer " + key)  # warm-up
        running.append((base, key))
    pairs = []
    for pair in range(args.repeat):
        rps = {}
        for i in (0, 1) if pair % 2 == 0 else (1, 0):
            base, key = running[i]
            rps[i] = hs.wrk(base + "/v1/chat/completions", 32, args.duration, "Bearer " + key).rps
        pairs.append((rps[0], rps[1]))
        print(f"pair {pair + 1}: {rps[0]:.0f} / {rps[1]:.0f} req/s", file=sys.stderr)
    return pairs


def latencies(base: str, key: str, agent: str, n: int) -> list[float]:
    body = dict(hs.REQUEST, model="m")
    out = []
    with httpx.Client(timeout=30) as c:
        headers = {"Authorization": f"Bearer {key}", "X-Gwctl-Agent": agent}
        for _ in range(20):
            c.post(base + "/v1/chat/completions", json=body, headers=headers)
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.post(base + "/v1/chat/completions", json=body, headers=headers)
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    return out


def added_latency(procs, tmp: Path, urls: dict[str, str], args) -> dict[str, tuple[float, float]]:
    """Median ms per request of each route, and its difference from the direct route's (measured in turns)."""
    routes = {
        "t/direct": ["good"],
        "t/refused": ["dead", "--fallback", f"good/{hs.MODEL}"],
        "t/503": ["failing", "--fallback", f"good/{hs.MODEL}"],
    }
    sets = [
        [agent, "--model-name", "m", "--provider", src, "--model", hs.MODEL, *more]
        for agent, (src, *more) in routes.items()
    ]
    store, key = store_for(tmp, "latency", urls, sets)
    # a cooldown would skip the failing primary after a few requests: this measures the failover itself
    with open(store, "a") as f:
        f.write("\n[settings.failover]\ncooldown_after = 1000000\n")
    _proxy, base = hs.start_gwctl_proxy(procs, store, f"sqlite://{tmp / 'latency.sqlite3'}")
    runs: dict[str, list[float]] = {agent: [] for agent in routes}
    for _round in range(4):  # in turns, so the machine's drift touches each alike
        for agent in routes:
            runs[agent] += latencies(base, key, agent, args.requests // 4)
    direct = statistics.median(runs["t/direct"])
    return {agent: (statistics.median(v), statistics.median(v) - direct) for agent, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2, help="seconds per wrk burst")
    ap.add_argument("--repeat", type=int, default=15, help="pairs of bursts")
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per route for the latency")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-failover-bench-"))
    try:
        urls = {}
        for name, extra in (("good", []), ("other", []), ("failing", ["--fail-status", "503"])):
            urls[name] = hs.start_standin(procs, *extra)
        urls["dead"] = f"http://{hs.HOST}:{closed_port()}/v1"
        hs.REQUEST["model"] = "m"
        pairs = throughput(procs, tmp, urls, args)
        added = added_latency(procs, tmp, urls, args)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = sorted(b / a for a, b in pairs)
    q1, _q2, q3 = statistics.quantiles(ratios, n=4)
    print()
    print(
        f"{'throughput':<28} {'no fallback req/s':>18} {'fallback req/s':>15} {'ratio':>6} {'pairs IQR':>11} {'target':>8}"
    )
    print(
        f"{'first attempt succeeds':<28} {statistics.median(a for a, _ in pairs):18.0f}"
        f" {statistics.median(b for _, b in pairs):15.0f} {statistics.median(ratios):6.2f} {q1:5.2f}-{q3:.2f} {'>= 0.97':>8}"
    )
    print()
    print(f"{'route':<28} {'median ms':>10} {'added ms':>9} {'target':>8}")
    for agent, (med, diff) in added.items():
        print(f"{agent:<28} {med:10.2f} {diff:9.2f} {'< 2' if agent != 't/direct' else '':>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
