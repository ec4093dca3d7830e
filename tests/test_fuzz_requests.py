"""Fuzzing the whole request path of a real proxy: odd bodies and headers, deep JSON, malformed HTTP.

Generated requests (tests/fuzzgen.py, seeded: a failure names its seed and
case) go over raw sockets, with a valid gateway key, to a real `gwctl proxy`
in front of a real upstream on loopback (tests/faulty.py; it answers 200 to
anything). For every request:

* never a 5xx of the gateway's own: a 5xx may only be 502/504 for upstream
  trouble (the upstream here never answers 5xx itself); an internal 500 is a
  failure;
* an answer at all, carrying ``X-Gwctl-Request-Id``;
* an activity row with that request id (SQLite, read directly);
* and, over the whole run, no escaped exception in the proxy's stderr (no
  "Traceback").

How to run the long suite: the default run sends 500 well-formed requests,
60 deeply nested ones and 60 malformed ones; the long one 10,000, 500 and
1,000, and 2,000 well-formed ones again with the log on PostgreSQL.
``GWCTL_FUZZ_SEED`` picks the seed (default: a fixed one):

    python -m pytest -m long tests/test_fuzz_requests.py -s

The whole long suite, every module: ``python -m pytest -m long -s`` (about 4 minutes
on the 2-core machine; without ``-n``, so the measured figures are not disturbed).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time

import pytest

from faulty import FaultyUpstream, RawClient, figure, start_gateway, wait_until
from fuzzgen import Case, Gen
from pgserver import new_schema

SEED = int(os.environ.get("GWCTL_FUZZ_SEED", "20240611"))
BODY_LIMIT = 1_000_000
UPSTREAM_TROUBLE = {(502, "upstream_unreachable"), (504, "upstream_timeout")}


@pytest.fixture(scope="module")
def faulty():
    with FaultyUpstream() as up:
        yield up


def _fuzz_gateway(where, faulty, activity: str | None = None):
    from conftest import run_cli

    gw = start_gateway(where, faulty.url, "--body-limit", str(BODY_LIMIT), read_timeout=30, activity=activity)

    def cli(*args):
        r = run_cli("--store", gw.store, *args)
        assert r.code == 0, r.err

    # catalog checks to run into: output budget, context size, capabilities (the proxy reloads the store)
    cli(
        "catalog",
        "set",
        "fz/ok",
        "--max-output",
        "1000",
        "--context-size",
        "100000",
        "--capability",
        "vision=false",
        "--capability",
        "audio=false",
        "--capability",
        "reasoning=false",
        "--capability",
        "json_output=false",
        "--capability",
        "tools=true",
        "--capability",
        "streaming=true",
    )
    cli("source", "add", "pt", "--base-url", faulty.url, "--auth-value", "sk-up", "--passthrough")
    cli("route", "set", "triage", "--model-name", "assistant", "--provider", "fz", "--model", "ok")
    cli("route", "set", "triage/sub", "--model-name", "child", "--provider", "pt", "--model", "ok")
    assert wait_until(lambda: gw.proc.log.count("store reloaded") >= 1, 20)
    return gw


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, faulty):
    gw = _fuzz_gateway(tmp_path_factory.mktemp("fuzz"), faulty)
    yield gw
    gw.proc.terminate()


async def _send(url: str, case: Case, timeout: float) -> RawClient:
    c = RawClient.for_url(url)
    await c.connect()
    try:
        try:
            await c.send(case.raw)
        except (ConnectionError, OSError):
            pass  # the proxy may refuse before it has read all of it; its answer is still there to read
        try:
            await c.read_until(lambda x: x.complete or (x.head_done and case.raw.startswith(b"HEAD ")), timeout)
        except (ConnectionError, OSError):
            c.eof = True
    finally:
        c.close()
    return c


def _run(gw, cases: list[Case], at_once: int = 16, timeout: float = 60) -> list[tuple[Case, RawClient]]:
    async def main():
        gate = asyncio.Semaphore(at_once)

        async def one(case):
            async with gate:
                return case, await _send(gw.url, case, timeout)

        return await asyncio.gather(*(one(c) for c in cases))

    return asyncio.run(main())


def _check(gw, results: list[tuple[Case, RawClient]]) -> tuple[dict, collections.Counter]:
    """Every failure, grouped by what went wrong (an empty dict when all is well); and the statuses seen."""
    failures: dict[str, list] = collections.defaultdict(list)
    statuses = collections.Counter()
    ids = {}
    for case, c in results:
        statuses[c.status] += 1
        if c.status is None:
            failures["no answer"].append((case, c.parse_error or "the connection closed"))
            continue
        if c.status >= 500:
            try:
                code = json.loads(bytes(c.body))["error"]["code"]
            except Exception:
                code = None
            if (c.status, code) not in UPSTREAM_TROUBLE:
                failures[f"{c.status} {code} from the gateway"].append((case, bytes(c.body[:200])))
        rid = c.header("x-gwctl-request-id")
        if not rid:
            failures[f"{c.status} without X-Gwctl-Request-Id"].append((case, bytes(c.body[:200])))
        else:
            ids[rid] = (case, c.status)
    # every answered request has its row: wait for them, up to 60 s, or until none came for 5 s
    deadline, quiet_since, seen = time.monotonic() + 60, time.monotonic(), -1
    while True:
        got = {r["request_id"] for r in gw.rows("request_id")}
        if set(ids) <= got or time.monotonic() > deadline or time.monotonic() - quiet_since > 5:
            break
        if len(got) != seen:
            seen, quiet_since = len(got), time.monotonic()
        time.sleep(0.2)
    for rid in set(ids) - got:
        case, status = ids[rid]
        failures[f"{status} without an activity row"].append((case, rid))
    return failures, statuses


def _report(failures: dict, seed: int) -> str:
    lines = [f"seed {seed} (GWCTL_FUZZ_SEED):"]
    for what, items in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        lines.append(
            f"  {len(items)} x {what}: " + "; ".join(f"{case!r} {detail!r}"[:300] for case, detail in items[:4])
        )
    return "\n".join(lines)


def _fuzz(gw, faulty, kind: str, count: int) -> None:
    host = gw.url.split("//", 1)[1]
    cases = Gen(SEED + {"wellformed": 0, "deep": 1, "malformed": 2}[kind], gw.key, host, BODY_LIMIT).cases(count, kind)
    first_line = len(gw.proc.lines)
    started = time.monotonic()
    results = _run(gw, cases)
    took = time.monotonic() - started
    failures, statuses = _check(gw, results)
    log = "".join(gw.proc.lines[first_line:])
    if "Traceback" in log:
        at = log.index("Traceback")
        failures["a Traceback in the proxy's stderr"].append(
            (Case(-1, kind, b"", "stderr"), log[max(0, at - 300) : at + 1500])
        )
    figure(f"fuzz {kind}: {count} requests in {took:.1f} s", dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))))
    assert not failures, _report(failures, SEED)


def test_fuzz_wellformed_requests(gateway, faulty):
    _fuzz(gateway, faulty, "wellformed", 500)


def test_fuzz_deeply_nested_json(gateway, faulty):
    _fuzz(gateway, faulty, "deep", 60)


def test_fuzz_malformed_http(gateway, faulty):
    _fuzz(gateway, faulty, "malformed", 60)


@pytest.mark.long
def test_fuzz_wellformed_requests_long(gateway, faulty):
    _fuzz(gateway, faulty, "wellformed", 10_000)


@pytest.mark.long
def test_fuzz_deeply_nested_json_long(gateway, faulty):
    _fuzz(gateway, faulty, "deep", 500)


@pytest.mark.long
def test_fuzz_malformed_http_long(gateway, faulty):
    _fuzz(gateway, faulty, "malformed", 1000)


@pytest.mark.long
@pytest.mark.postgres
def test_fuzz_wellformed_requests_postgres_long(tmp_path, faulty, pg_server_dsn):
    """The same odd requests with the log on PostgreSQL, whose text columns take less than SQLite's."""

    psycopg = pytest.importorskip("psycopg")
    schema, dsn = new_schema(pg_server_dsn, "gwctl_fuzz_")
    gw = _fuzz_gateway(tmp_path, faulty, activity=dsn)
    try:
        _fuzz(gw, faulty, "wellformed", 2000)
    finally:
        gw.proc.terminate()
        with psycopg.connect(pg_server_dsn, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
