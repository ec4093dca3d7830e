"""CLI speed: `gwctl --help` and `gwctl model list --json` on a 100 x 100 store.

Runs the installed `gwctl` console script (as a user would) N times each and
prints a table of wall-clock figures (min / median / p90), next to bare
`python -c pass` measured in the same run as the floor. Targets (issue 2):
--help <= 100 ms, model list --json on 100 sources x 100 models <= 250 ms.

    python benchmarks/cli_speed.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def big_store(path: Path, sources: int = 100, models: int = 100) -> None:
    lines = ["schema = 1", ""]
    for s in range(sources):
        lines += [
            f"[sources.src{s:03d}]",
            f'base_url = "https://gw{s}.example/v1"',
            f'auth_env = "KEY_{s}"',
            "",
            f"[sources.src{s:03d}.models]",
        ]
        lines += [f'"family-{m // 10}/model-{m:03d}" = {"true" if m % 3 else "false"}' for m in range(models)]
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    gwctl = shutil.which("gwctl")
    # resolve pyenv-style shims to the real script so we time gwctl, not the shim
    real = Path(sys.executable).parent / "gwctl"
    if real.exists():
        gwctl = str(real)
    if not gwctl:
        sys.exit("gwctl is not installed: pip install -e .")
    tmp = Path(tempfile.mkdtemp())
    store = tmp / "gwctl.toml"
    big_store(store)
    env = {**os.environ, "GWCTL_STORE": str(store)}
    rows = [
        ("python -c pass (floor)", timed([sys.executable, "-c", "pass"], env, args.runs), None),
        ("gwctl --help", timed([gwctl, "--help"], env, args.runs), 100),
        ("gwctl source --help", timed([gwctl, "source", "--help"], env, args.runs), None),
        ("gwctl model list --json (100x100)", timed([gwctl, "model", "list", "--json"], env, args.runs), 250),
    ]
    print(f"{'command':<36} {'min ms':>8} {'median':>8} {'p90':>8} {'target':>8}")
    for name, xs, target in rows:
        xs.sort()
        p90 = xs[int(0.9 * (len(xs) - 1))]
        print(
            f"{name:<36} {xs[0]:8.1f} {statistics.median(xs):8.1f} {p90:8.1f} {('<= ' + str(target)) if target else '':>8}"
        )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
