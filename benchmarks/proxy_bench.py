"""The real `gwctl proxy` against the stand-in upstream, next to direct and LiteLLM.

Starts `python -m gwctl.testing --no-record`, writes a temporary store (a
source for the stand-in, a priced catalog entry, a route, a gateway key), runs
`gwctl proxy` with one worker and metering on (SQLite activity log), and
measures with wrk (see http_stack.py for the method):

* req/s at 32 connections, direct vs proxy (median of --repeat runs), ratio;
* p50 latency at 1 connection, direct vs proxy, added ms;
* time to the first SSE event of a stream, direct vs proxy, added ms;
* LiteLLM 1.100.5's proxy on the same stand-in when benchmarks/.venv-litellm
  exists (benchmarks/litellm/setup.sh), and gwctl's multiple of it.

    python benchmarks/proxy_bench.py [--duration 6] [--repeat 3] [--no-litellm]

Targets (issue 5): throughput >= 50% of direct; added p50 <= 0.5 ms; added
first-chunk <= 1 ms; >= 25x LiteLLM's throughput.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, stream client, process helpers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-duration", type=float, default=4)
    ap.add_argument("--stream-requests", type=int, default=200)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-floor", action="store_true", help="skip the logic-free floor proxy")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-bench-"))
    try:
        up_port = hs.free_port()
        standin = procs.start(
            [
                sys.executable,
                "-m",
                "gwctl.testing",
                "--port",
                str(up_port),
                "--models",
                hs.MODEL,
                "--api-key",
                hs.UPSTREAM_KEY,
                "--no-record",
                "--chunk-delay-ms",
                "2",
            ],
            up_port,
        )
        up_url = f"http://{hs.HOST}:{up_port}/v1"
        store = tmp / "gwctl.toml"
        hs.gwctl(store, "source", "add", "bench", "--base-url", up_url, "--auth-value", hs.UPSTREAM_KEY)
        hs.gwctl(store, "source", "refresh", "bench")
        hs.gwctl(
            store,
            "catalog",
            "set",
            f"bench/{hs.MODEL}",
            "--price",
            "input=3e-6",
            "--price",
            "output=1.5e-5",
            "--max-output",
            "4096",
            "--context-size",
            "131072",
        )
        key = json.loads(hs.gwctl(store, "key", "create", "bench", "--json"))["key"]
        px_port = hs.free_port()
        proxy = procs.start(
            [
                sys.executable,
                "-m",
                "gwctl",
                "--store",
                str(store),
                "proxy",
                "--port",
                str(px_port),
                "--activity",
                f"sqlite://{tmp / 'activity.sqlite3'}",
            ],
            px_port,
        )
        # the request names the model as a SOURCE/MODEL_ID reference: the managed path (decision, checks, metering)
        hs.REQUEST["model"] = f"bench/{hs.MODEL}"
        print("measuring the proxy …", file=sys.stderr)
        prox = hs.measure(px_port, "/v1/chat/completions", "Bearer " + key, args, watch={"proxy": proxy.pid})
        hs.REQUEST["model"] = hs.MODEL
        print("measuring direct …", file=sys.stderr)
        direct = hs.measure(
            up_port, "/v1/chat/completions", "Bearer " + hs.UPSTREAM_KEY, args, watch={"standin": standin.pid}
        )
        floor = None
        if not args.no_floor:
            # the same server protocol and upstream client with no product logic and no log: the floor
            print("measuring the floor (gwctl's server + client, no decision, no log) …", file=sys.stderr)
            fl_port = hs.free_port()
            fl = procs.start(
                [
                    sys.executable,
                    str(HERE / "http_stack.py"),
                    "_proxy",
                    "--server",
                    "gwctlhttp",
                    "--client",
                    "gwctl",
                    "--port",
                    str(fl_port),
                    "--upstream",
                    f"http://{hs.HOST}:{up_port}",
                ],
                fl_port,
            )
            hs.REQUEST["model"] = "bench"
            floor = hs.measure(
                fl_port, "/v1/chat/completions", "Bearer " + hs.GATEWAY_KEY, args, stream=False, watch={"floor": fl.pid}
            )
            hs.REQUEST["model"] = hs.MODEL
            procs.stop(fl)
        lite = None
        if not args.no_litellm:
            print("measuring LiteLLM …", file=sys.stderr)
            lite = hs.litellm_row(procs, up_url, args)
        rows = activity_count(store, tmp)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = prox.rps / direct.rps
    print()
    print(f"{'figure':<44} {'direct':>10} {'gwctl proxy':>12} {'result':>12} {'target':>10}")
    print(f"{'req/s at 32 connections':<44} {direct.rps:10.0f} {prox.rps:12.0f} {ratio:11.0%} {'>= 50%':>10}")
    print(
        f"{'p50 latency at 1 connection (ms)':<44} {direct.p50_ms:10.3f} {prox.p50_ms:12.3f} "
        f"{'+%.3f' % (prox.p50_ms - direct.p50_ms):>12} {'<= +0.5':>10}"
    )
    print(
        f"{'first SSE event of a stream (ms)':<44} {direct.first_chunk_ms:10.3f} {prox.first_chunk_ms:12.3f} "
        f"{'+%.3f' % (prox.first_chunk_ms - direct.first_chunk_ms):>12} {'<= +1':>10}"
    )
    print(f"{'proxy CPU per request (us)':<44} {'':>10} {prox.extra['cpu_us']['proxy']:12.0f}")
    if floor is not None:
        print(
            f"{'floor (no decision, no log) req/s at 32 conn':<44} {'':>10} {floor.rps:12.0f} {floor.rps / direct.rps:11.0%}"
        )
        print(f"{'floor CPU per request (us)':<44} {'':>10} {floor.extra['cpu_us']['floor']:12.0f}")
    if lite is not None:
        mult = prox.rps / lite.rps
        print(f"{'LiteLLM proxy req/s at 32 connections':<44} {'':>10} {lite.rps:12.0f} {mult:11.1f}x {'>= 25x':>10}")
    print(f"activity rows written during the run: {rows}")
    if prox.errors or direct.errors:
        print(f"errors: proxy {prox.errors}, direct {direct.errors}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "direct": vars(direct),
                    "proxy": vars(prox),
                    "floor": None if floor is None else vars(floor),
                    "litellm": None if lite is None else vars(lite),
                    "ratio": ratio,
                },
                default=str,
                indent=2,
            )
        )
    return 0


def activity_count(store: Path, tmp: Path) -> int:
    import sqlite3

    db = tmp / "activity.sqlite3"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from activity").fetchone()[0]


if __name__ == "__main__":
    raise SystemExit(main())
