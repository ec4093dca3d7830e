"""The store edited over and over while requests flow: no request fails, every cost is one snapshot's.

A real `gwctl proxy` (``--reload-interval 0.2``) serves a steady stream of
requests from four clients while the store is edited: the catalog entry's
prices flip between two sets (input and output together, in one edit), an
unrelated route comes and goes, and some edits are a plain atomic replace
of the TOML text instead of the CLI. Every request must be answered 200,
have its row, and be billed at exactly one of the two price sets, never a
mix (input from one, output from the other): each request is decided and
priced on one snapshot of the store.

How to run the long suite: the default run makes 10 edits; the long one 50:

    python -m pytest -m long tests/test_reload_under_load.py -s

The whole long suite, every module: ``python -m pytest -m long -s`` (about 4 minutes
on the 2-core machine; without ``-n``, so the measured figures are not disturbed).
"""

from __future__ import annotations

import os
import tempfile
import time
from decimal import Decimal

import pytest

from conftest import run_cli
from faulty import FaultyUpstream, Traffic, figure, start_gateway, wait_until

# USAGE (1000 input, 50 output tokens) at each price set, and the mixes that must never appear
A = ("input=1e-6", "output=2e-6")
B = ("input=3e-6", "output=5e-6")
COST_A, COST_B = Decimal("0.0011"), Decimal("0.00325")
MIXES = {Decimal("0.00125"), Decimal("0.0031")}


@pytest.fixture
def faulty():
    with FaultyUpstream() as up:
        yield up


def _replace_text(path: str, old: str, new: str) -> None:
    """An edit by hand: the whole file rewritten atomically (temp file in the same directory, rename)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert old in text
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".edit-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _edits_while_serving(tmp_path, faulty, edits: int) -> None:
    gw = start_gateway(tmp_path, faulty.url, priced=())

    def cli(*args):
        r = run_cli("--store", gw.store, *args)
        assert r.code == 0, r.err

    cli("catalog", "set", "fz/ok", "--price", A[0], "--price", A[1])
    assert wait_until(lambda: "store reloaded" in gw.proc.log, 20)
    clients = [Traffic(gw.url, gw.key, pace=0.005, max_requests=20_000).start() for _ in range(4)]
    started = time.monotonic()
    try:
        prices = A
        route = False
        for i in range(edits):
            time.sleep(0.1 + (i % 4) * 0.1)  # 0.1 to 0.4 s: some edits within one reload interval, some not
            if i % 5 == 4:  # an unrelated route comes and goes
                if route:
                    cli("route", "remove", "unrelated", "--model-name", "other", "--yes")
                else:
                    cli("route", "set", "unrelated", "--model-name", "other", "--provider", "fz", "--model", "x")
                route = not route
                continue
            new = B if prices == A else A
            if i % 3 == 2:  # by hand, an atomic replace of the text
                text = open(gw.store, encoding="utf-8").read()
                _replace_text(gw.store, text, _swap_prices(text, prices, new))
            else:
                cli("catalog", "set", "fz/ok", "--price", new[0], "--price", new[1])
            prices = new
        time.sleep(0.5)
    finally:
        results = [r for c in clients for r in c.stop()]
    took = time.monotonic() - started
    bad = [r for r in results if r[0] != 200]
    assert not bad, f"{len(bad)} of {len(results)} requests failed while the store changed: {bad[:5]}"
    rows = gw.wait_rows(len(results), timeout=60)
    gw.proc.terminate()
    assert "Traceback" not in gw.proc.log and "keeping the last good one" not in gw.proc.log
    costs = [Decimal(r["cost"]) for r in rows]
    assert len(rows) == len(results) and {r["request_id"] for r in rows} == {rid for _, rid in results}
    assert not MIXES & set(costs), "a request was priced with input and output prices of two snapshots"
    assert set(costs) == {COST_A, COST_B}, set(costs)  # both price sets served, nothing else
    reloads = gw.proc.log.count("store reloaded")
    figure(
        f"store edited {edits} times in {took:.0f} s while serving",
        f"{len(results)} requests, all 200, "
        f"{reloads} reloads, {costs.count(COST_A)} rows at price set A and {costs.count(COST_B)} at B, no mix",
    )


def _swap_prices(text: str, old: tuple[str, str], new: tuple[str, str]) -> str:
    """The store's text with fz/ok's two prices changed from ``old`` to ``new`` (in the catalog table)."""
    out = text
    for o, n in zip(old, new):
        kind, o_val = o.split("=")
        _, n_val = n.split("=")
        found = False
        for quote in ('"', ""):
            before = f"{kind} = {quote}{o_val}{quote}"
            if before in out:
                out = out.replace(before, f"{kind} = {quote}{n_val}{quote}")
                found = True
                break
        assert found, f"{kind} = {o_val} not in the store:\n{text}"
    return out


def test_store_edited_while_requests_flow(tmp_path, faulty):
    _edits_while_serving(tmp_path, faulty, 10)


@pytest.mark.long
def test_store_edited_while_requests_flow_long(tmp_path, faulty):
    _edits_while_serving(tmp_path, faulty, 50)
