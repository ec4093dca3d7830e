"""Operating the proxy: /healthz (alive) and /readyz (store loaded, log writer alive, database reachable) for
load balancers, and --log-format json for the proxy's own log and its access log."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from conftest import run_cli
from pgserver import new_schema
from proxyrun import ProxyProcess, log_rows, wait_for
from test_faults_activity import own_pg  # noqa: F401  (a PostgreSQL server of the module's own: stopped here)
from test_proxy_e2e import UP_KEY


def _setup(upstream) -> str:
    assert run_cli("source", "add", "local", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    assert run_cli("catalog", "set", "local/llama-3.1-8b", "--price", "input=1e-6", "--price", "output=2e-6").code == 0
    return run_cli("key", "create", "ops", "--json").json()["key"]


def _probe(url: str, path: str) -> httpx.Response:
    return httpx.get(url + path, timeout=10)


def test_healthz_and_readyz_need_no_key_and_are_not_logged(tmp_path, upstream):
    _setup(upstream)
    db = tmp_path / "activity.sqlite3"
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{db}")
    try:
        ready = _probe(proc.url, "/readyz")
        assert ready.status_code == 200 and ready.headers["x-gwctl-request-id"]
        doc = ready.json()
        assert doc["status"] == "ready"
        assert doc["checks"]["activity_writer"] == {"alive": True}
        assert doc["checks"]["database"]["reachable"] is True and "error" not in doc["checks"]["database"]
        assert doc["checks"]["store"]["reload"] == "ok"
        head = httpx.head(proc.url + "/readyz", timeout=10)
        assert head.status_code == 200 and head.content == b""
        alive = _probe(proc.url, "/healthz")
        assert alive.status_code == 200 and alive.json()["status"] == "ok"
        assert httpx.post(proc.url + "/readyz", timeout=10).status_code == 401  # only GET and HEAD are probes
        time.sleep(0.5)
        probes = [(r["path"], r["status"]) for r in log_rows(db) if r["path"] in ("/readyz", "/healthz")]
        assert probes == [("/readyz", 401)]  # the probes themselves are not logged; a POST is a request
    finally:
        assert proc.terminate() == 0


def test_readyz_is_not_ready_while_the_writer_is_down_and_revives_it(tmp_path, upstream):
    _setup(upstream)
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", f"sqlite://{tmp_path / 'a.sqlite3'}")
    try:
        children = [p for p in _children(proc.proc.pid) if b"gwctl.activity.child" in _cmdline(p)]
        assert children, "no log writer process"
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        down = wait_for(lambda: (r := _probe(proc.url, "/readyz")).status_code == 503 and r, 10, 0.1)
        assert down, "readyz stayed ready with the writer killed"
        assert down.json()["status"] == "not_ready" and down.json()["checks"]["activity_writer"] == {"alive": False}
        # no request needed: the probe itself starts a new writer (a load balancer sends nothing meanwhile)
        back = wait_for(lambda: _probe(proc.url, "/readyz").status_code == 200, 20, 0.2)
        assert back, "the writer was not started again"
    finally:
        proc.terminate()


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out + [c for child in out for c in _children(child)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


# --- PostgreSQL stopped and started: a server of this module's own ----------------------------


@pytest.mark.postgres
def test_readyz_follows_the_database(tmp_path, upstream, own_pg):
    from test_faults_activity import pg_start, pg_stop

    pytest.importorskip("psycopg")
    _schema, dsn = new_schema(own_pg.dsn, "gwctl_ops_")
    key = _setup(upstream)
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", dsn)
    try:
        assert _probe(proc.url, "/readyz").status_code == 200
        pg_stop(own_pg)
        try:
            down = wait_for(lambda: (r := _probe(proc.url, "/readyz")).status_code == 503 and r, 15, 0.2)
            assert down, "readyz stayed ready with the database stopped"
            db = down.json()["checks"]["database"]
            assert down.json()["status"] == "not_ready" and db["reachable"] is False and db["error"]
            assert "password" not in db["error"]
            assert _probe(proc.url, "/healthz").status_code == 200  # alive all the same
            answered = httpx.post(
                proc.url + "/v1/chat/completions",
                json={"model": "local/llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}"},
                timeout=20,
            )
            assert answered.status_code == 200  # serving goes on; the row waits in the writer
        finally:
            pg_start(own_pg)
        assert wait_for(lambda: _probe(proc.url, "/readyz").status_code == 200, 20, 0.2), "not ready again"
    finally:
        assert proc.terminate() == 0


# --- JSON logs ------------------------------------------------------------------------------------


def test_json_logs_are_one_object_a_line_with_no_secret(tmp_path, upstream):
    key = _setup(upstream)
    proc = ProxyProcess(
        tmp_path / "cfg" / "gwctl.toml",
        f"sqlite://{tmp_path / 'a.sqlite3'}",
        "--log-format",
        "json",
        "--access-log",
        "--metrics-port",
        "0",
    )
    try:
        ok = httpx.post(
            proc.url + "/v1/chat/completions",
            json={"model": "local/llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}", "x-gwctl-agent": "triage"},
            timeout=20,
        )
        assert ok.status_code == 200
        hostile = httpx.post(
            proc.url + "/v1/chat/completions",
            json={"model": 'local/x\x1b[31m\u2028"forged', "messages": []},
            headers={"authorization": f"Bearer {key}"},
            timeout=20,
        )
        rid = ok.headers["x-gwctl-request-id"]
        assert wait_for(lambda: rid in proc.log and hostile.headers["x-gwctl-request-id"] in proc.log, 10)
    finally:
        assert proc.terminate() == 0
    lines = [line for line in proc.lines if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line, the startup ones included, is one JSON object
    assert all(line.isascii() and "\x1b" not in line for line in lines)
    assert any("ready on http://" in d.get("message", "") for d in docs)
    assert any("metrics on http://127.0.0.1:" in d.get("message", "") for d in docs)
    assert all(d.get("level") in ("info", "warning", "error", None) for d in docs)
    access = {d["request_id"]: d for d in docs if d.get("type") == "access"}
    row = access[rid]
    assert row["status"] == 200 and row["agent"] == "triage" and row["source"] == "local"
    assert row["path"] == "/v1/chat/completions" and row["cost"] and row["key"] == "ops"
    assert access[hostile.headers["x-gwctl-request-id"]]["model"] == 'local/x\x1b[31m\u2028"forged'
    assert key not in proc.log and UP_KEY not in proc.log


def test_log_format_is_checked():
    res = run_cli("proxy", "--log-format", "xml", "--no-auth")
    assert res.code == 1 and "--log-format must be text or json" in res.err
