"""Several proxy instances logging to one PostgreSQL activity log, read back with the CLI."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from conftest import run_cli
from pgserver import new_schema
from proxyrun import ProxyProcess, wait_for

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def schema_dsn(pg_server_dsn):
    schema, dsn = new_schema(pg_server_dsn, "gwctl_proxy_")
    yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_two_proxies_share_a_postgres_log(tmp_path, upstream, schema_dsn):
    upstream.configure(usage={"input_tokens": 1000, "cached_tokens": 200, "output_tokens": 50})
    gw = run_cli
    gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", "sk-upstream-1234")
    gw(
        "catalog",
        "set",
        "local/m",
        "--price",
        "input=3e-6",
        "--price",
        "output=1.5e-5",
        "--price",
        "cached_input=1.5e-6",
    )
    key = gw("key", "create", "k", "--json").json()["key"]
    store = tmp_path / "cfg" / "gwctl.toml"
    procs = [ProxyProcess(store, schema_dsn), ProxyProcess(store, schema_dsn)]
    try:
        for i in range(6):
            p = procs[i % 2]
            r = httpx.post(
                p.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}", "X-Gwctl-Agent": "triage/sub"},
                json={"model": "local/m", "messages": [{"role": "user", "content": "x"}]},
                timeout=20,
            )
            assert r.status_code == 200
        r = httpx.post(
            procs[0].url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "local/unpriced", "messages": []},
            timeout=20,
        )
        assert r.status_code == 200
    finally:
        codes = [p.terminate() for p in procs]
    assert codes == [0, 0]  # SIGTERM flushed both logs

    def summary():
        res = gw("activity", "summary", "--by", "agent", "--activity", schema_dsn, "--json")
        assert res.code == 0, res.err
        return res.json()

    doc = wait_for(lambda: summary() if summary()["total"]["requests"] == 7 else None, timeout=10)
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["triage/sub"]["requests"] == 6 and Decimal(rows["triage/sub"]["cost"]) == Decimal("0.00345") * 6
    assert rows[None]["unbilled"] == 1 and rows[None]["cost"] is None  # unbilled only: unknown, not 0
    listed = gw("activity", "list", "--activity", schema_dsn, "--model", "local/m", "--json").json()
    assert len(listed) == 6 and all(Decimal(x["cost"]) == Decimal("0.00345") for x in listed)
