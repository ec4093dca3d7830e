"""Prometheus metrics end to end: a real proxy, the stand-in upstream, scraped and read with prometheus-client's
own parser after a known mix of requests."""

from __future__ import annotations

import os
import re
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run_cli
from proxyrun import ProxyProcess, closed_port, log_rows, wait_for
from test_proxy_e2e import add_priced_local

MSG = [{"role": "user", "content": "hi"}]


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted label items: value}}`` from one scrape, through prometheus-client's parser."""
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))


def scrape_until(url: str, name: str, at_least: float, *also: str, timeout: float = 15) -> dict:
    """A scrape once ``name`` (and each of ``also``) sums to ``at_least``. Each process publishes
    about every second on its own clock, so the log writer's figures and a worker's can be a
    second apart: wait for every figure the caller reads."""
    names = (name, *also)

    def enough():
        s = scrape(url)
        return s if all(total(s, n) >= at_least for n in names) else None

    got = wait_for(enough, timeout, 0.2)
    assert got, f"{names} never reached {at_least}: {[scrape(url).get(n) for n in names]}"
    return got


def replace_text(path, text: str) -> None:
    """Write the store whole at once (as gwctl does), so a reload never reads half a file."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def metrics_url(proc: ProxyProcess) -> str:
    m = re.search(r"metrics on (http://\S+)", proc.log)
    assert m, proc.log
    return m.group(1)


def listening_sockets(pid: int) -> int:
    """How many TCP sockets process ``pid`` has listening."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                n += 1
    return n


@pytest.fixture
def store(tmp_path, upstream):
    """local: the stand-in (its models listed; llama priced in the catalog); dead: nobody listens there."""
    add_priced_local(upstream)
    gw = run_cli
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    assert gw("source", "add", "dead", "--base-url", dead, "--auth-value", "x").code == 0
    assert (
        gw("route", "set", "triage", "--model-name", "assistant", "--provider", "local", "--model", "llama-3.1-8b").code
        == 0
    )
    key = gw("key", "create", "tester", "--json").json()["key"]
    scoped = gw("key", "create", "scoped", "--model", "local/llama-3.1-8b", "--json").json()["key"]
    return tmp_path / "cfg" / "gwctl.toml", key, scoped


def test_a_known_mix_is_counted_exactly_and_cost_is_the_logs_sum(tmp_path, store):
    path, key, scoped = store
    db = tmp_path / "a.db"
    proc = ProxyProcess(path, f"sqlite://{db}", "--metrics-port", "0")
    try:
        url = metrics_url(proc)
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0, timeout=20)
        h = {"Authorization": f"Bearer {key}"}
        for _ in range(2):  # plain, priced
            client.chat.completions.create(model="assistant", messages=MSG)
        chunks = list(client.chat.completions.create(model="assistant", messages=MSG, stream=True))  # streamed
        assert chunks
        client.chat.completions.create(model="local/mistral-7b", messages=MSG)  # listed, not in the catalog: unbilled
        client.chat.completions.create(model="local/made-up-by-client", messages=MSG)  # client text: "other"
        post = proc.url + "/v1/chat/completions"
        r = httpx.post(post, json={"model": "assistant", "messages": MSG}, timeout=20)  # no key
        assert r.status_code == 401
        r = httpx.post(post, headers=h, json={"model": "dead/m", "messages": MSG}, timeout=20)  # upstream error
        assert r.status_code == 502
        r = httpx.post(
            post,
            headers={"Authorization": f"Bearer {scoped}"},
            json={"model": "local/mistral-7b", "messages": MSG},
            timeout=20,
        )
        assert r.status_code == 403, r.text  # the key's scope refuses it
        scope_rule = r.json()["error"]["code"]
        assert proc.url != url.removesuffix("/metrics")
        r = httpx.get(proc.url + "/metrics", headers=h, timeout=10)  # never on the proxy's port
        assert r.status_code == 404 and "gwctl_" not in r.text

        n = 9  # the GET /metrics on the proxy's port is a request like any other (404, with its row)
        m = scrape_until(url, "gwctl_activity_rows_written_total", n, "gwctl_requests_total")
        assert m, scrape(url)
        rows = log_rows(db)
        assert len(rows) == n
        assert total(m, "gwctl_requests_total") == n, m["gwctl_requests_total"]
        priced = dict(source="local", model="llama-3.1-8b")
        assert total(m, "gwctl_requests_total", kind="managed", status="2xx", rule="", **priced) == 3
        assert total(m, "gwctl_requests_total", source="local", model="mistral-7b", status="2xx") == 1
        assert total(m, "gwctl_requests_total", source="local", model="other", status="2xx") == 1
        assert (
            total(m, "gwctl_requests_total", source="", model="", kind="rejected", status="4xx", rule="invalid_api_key")
            == 1
        )
        assert (
            total(
                m,
                "gwctl_requests_total",
                source="dead",
                model="other",
                kind="error",
                status="5xx",
                rule="upstream_unreachable",
            )
            == 1
        )
        assert total(m, "gwctl_requests_total", source="local", kind="rejected", status="4xx", rule=scope_rule) == 1
        assert total(m, "gwctl_limit_refusals_total", rule=scope_rule) == 1
        # no label carries the client's text
        assert "made-up-by-client" not in httpx.get(url, timeout=10).text
        # histograms: every request; the upstream's head for the five answered; one stream's first event
        assert total(m, "gwctl_request_duration_seconds_count") == n
        assert total(m, "gwctl_request_duration_seconds_bucket", le="+Inf") == n
        assert total(m, "gwctl_upstream_duration_seconds_count") == 5
        assert total(m, "gwctl_upstream_duration_seconds_count", source="local") == 5
        assert total(m, "gwctl_stream_first_byte_seconds_count", source="local") == 1
        assert 0 < total(m, "gwctl_stream_first_byte_seconds_sum") < 10
        # cost: exactly the log's sum (the listed-but-unpriced and the made-up model cost nothing)
        logged = sum(Decimal(r["cost"]) for r in rows if r["cost"] is not None)
        assert logged > 0
        assert Decimal(str(total(m, "gwctl_cost_usd_total", **priced))) == logged
        assert total(m, "gwctl_cost_usd_total") == total(m, "gwctl_cost_usd_total", **priced)
        # tokens: the stand-in's usage on every answered request, by model
        assert total(m, "gwctl_tokens_total", type="input", **priced) == 3 * 800
        assert total(m, "gwctl_tokens_total", type="cached_input", **priced) == 3 * 200
        assert total(m, "gwctl_tokens_total", type="output", **priced) == 3 * 50
        assert total(m, "gwctl_tokens_total", type="output", source="local", model="other") == 50
        assert total(m, "gwctl_activity_rows_dropped_total") == 0
        assert total(m, "gwctl_requests_in_flight") == 0
        assert total(m, "gwctl_store_reload_failures_total") == 0
        assert listening_sockets(proc.proc.pid) == 2  # the proxy's port and the metrics'
    finally:
        assert proc.terminate() == 0


def test_store_reloads_and_failover_are_counted(tmp_path, store, upstream):
    path, key, _scoped = store
    assert (
        run_cli(
            "route",
            "set",
            "fo",
            "--model-name",
            "m",
            "--provider",
            "dead",
            "--model",
            "x",
            "--fallback",
            "local/llama-3.1-8b",
        ).code
        == 0
    )
    proc = ProxyProcess(path, f"sqlite://{tmp_path / 'a.db'}", "--metrics-port", "0")
    try:
        url = metrics_url(proc)
        r = httpx.post(
            proc.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "X-Gwctl-Agent": "fo"},
            json={"model": "m", "messages": MSG},
            timeout=20,
        )
        assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
        assert run_cli("catalog", "set", "local/mistral-7b", "--price", "input=1e-6").code == 0
        m = scrape_until(url, "gwctl_store_reloads_total", 1)
        assert m
        assert total(m, "gwctl_failover_attempts_total") == 2
        assert total(m, "gwctl_failover_attempts_total", target="dead/x") == 1
        assert total(m, "gwctl_failover_moves_total", target="dead/x", failure="connect") == 1
        assert total(m, "gwctl_requests_total", source="local", model="llama-3.1-8b", status="2xx") == 1
        good = path.read_text()
        assert total(m, "gwctl_store_reload_failing") == 0
        replace_text(path, good + "\n[[[ not toml\n")  # a reload that fails
        m = scrape_until(url, "gwctl_store_reload_failures_total", 1, "gwctl_store_reload_failing")
        assert total(m, "gwctl_store_reload_failing") == 1
        assert total(m, "gwctl_store_reloads_total") == 1
        replace_text(path, good + "\n# mended\n")
        m = scrape_until(url, "gwctl_store_reloads_total", 2)
        assert total(m, "gwctl_store_reload_failing") == 0
    finally:
        assert proc.terminate() == 0


def test_two_workers_are_summed(tmp_path, store):
    path, key, _scoped = store
    db = tmp_path / "a.db"
    proc = ProxyProcess(path, f"sqlite://{db}", "--metrics-port", "0", "--workers", "2")
    try:
        url = metrics_url(proc)
        sent = 0

        def burst():
            with httpx.Client(timeout=20) as c:
                for _ in range(10):
                    r = c.post(
                        proc.url + "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "assistant", "messages": MSG},
                    )
                    assert r.status_code == 200

        for _ in range(5):  # until both workers answered some (the kernel picks who accepts)
            threads = [threading.Thread(target=burst) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent += 80
            rows = wait_for(lambda: len(log_rows(db)) >= sent and log_rows(db), 20)
            if len({r["request_id"][:8] for r in rows}) >= 2:
                break
        prefixes = {r["request_id"][:8] for r in rows}
        assert len(prefixes) == 2, "one worker answered everything"
        m = scrape_until(
            url,
            "gwctl_activity_rows_written_total",
            sent,
            "gwctl_requests_total",
            "gwctl_request_duration_seconds_count",
            "gwctl_upstream_duration_seconds_count",
        )
        assert m, scrape(url)
        assert total(m, "gwctl_requests_total") == sent
        assert total(m, "gwctl_requests_total", source="local", model="llama-3.1-8b", status="2xx") == sent
        assert total(m, "gwctl_request_duration_seconds_count") == sent
        assert total(m, "gwctl_upstream_duration_seconds_count") == sent
        logged = sum(Decimal(r["cost"]) for r in rows)
        assert Decimal(str(total(m, "gwctl_cost_usd_total"))) == logged
        assert total(m, "gwctl_tokens_total", type="input") == 800 * sent
        assert total(m, "gwctl_store_reloads_total") == 0
        replace_text(path, path.read_text() + "\n# a change every worker reloads\n")
        scrape_until(url, "gwctl_store_reloads_total", 1)
        time.sleep(2.5)  # both workers have reloaded and published: one change is still one reload
        assert total(scrape(url), "gwctl_store_reloads_total") == 1
    finally:
        assert proc.terminate() == 0


def test_metrics_off_opens_no_listener(tmp_path, store):
    path, _key, _scoped = store
    proc = ProxyProcess(path, f"sqlite://{tmp_path / 'a.db'}")
    try:
        assert "metrics on" not in proc.log
        assert listening_sockets(proc.proc.pid) == 1
    finally:
        assert proc.terminate() == 0


def test_metrics_host_must_be_listenable(tmp_path, store):
    path, _key, _scoped = store
    with pytest.raises(RuntimeError, match="cannot listen for metrics"):
        ProxyProcess(path, f"sqlite://{tmp_path / 'a.db'}", "--metrics-port", "0", "--metrics-host", "192.0.2.1")


def test_snapshots_are_summed_and_a_gone_process_keeps_its_counters_not_its_gauges(tmp_path):
    """collect() on a run directory: a live process's and a gone one's snapshots (pid 2**22+1 is never a
    process on Linux: pid_max is at most 2**22)."""
    import json

    from gwctl.proxy.metrics import collect
    from gwctl.proxy.metrics_http import render

    hist = [0] * 19 + [0.0]
    hist[3], hist[-1] = 2, 0.004
    live = {
        "gwctl_requests_total": [[["local", "m", "managed", "2xx", ""], 3]],
        "gwctl_request_duration_seconds": [[["local", "managed"], hist]],
        "gwctl_requests_in_flight": [[[], 1]],
        "gwctl_store_reloads_total": [[[], 2]],
        "gwctl_store_reload_failing": [[[], 0]],
    }
    gone = {
        "gwctl_requests_total": [[["local", "m", "managed", "2xx", ""], 4]],
        "gwctl_request_duration_seconds": [[["local", "managed"], hist]],
        "gwctl_requests_in_flight": [[[], 5]],
        "gwctl_store_reloads_total": [[[], 3]],
        "gwctl_store_reload_failing": [[[], 1]],
    }
    (tmp_path / f"worker-{os.getpid()}.json").write_text(json.dumps(live))
    (tmp_path / f"worker-{2**22 + 1}.json").write_text(json.dumps(gone))
    (tmp_path / f"writer-{2**22 + 2}.json").write_text(
        json.dumps({"gwctl_cost_usd_total": [[["local", "m"], "0.1"]], "gwctl_activity_rows_written_total": [[[], 7]]})
    )
    (tmp_path / f"writer-{os.getpid()}.json").write_text(
        json.dumps({"gwctl_cost_usd_total": [[["local", "m"], "0.2"]]})
    )
    (tmp_path / "worker-1.json.tmp").write_text("half a file")  # a snapshot being replaced: not read
    totals = collect(str(tmp_path))
    assert totals["gwctl_requests_total"] == {("local", "m", "managed", "2xx", ""): 7}
    assert totals["gwctl_request_duration_seconds"][("local", "managed")][3] == 4
    assert totals["gwctl_requests_in_flight"] == {(): 1}  # the gone process's gauge is not
    assert totals["gwctl_store_reloads_total"] == {(): 3}  # each worker reloads the same file: the most, not the sum
    assert totals["gwctl_store_reload_failing"] == {(): 0}  # a gauge: the live process's only
    assert str(totals["gwctl_cost_usd_total"][("local", "m")]) == "0.3"  # Decimal: exact
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(render(str(tmp_path)).decode())
        for s in fam.samples
    }
    labels = (("kind", "managed"), ("source", "local"))
    assert m[("gwctl_request_duration_seconds_bucket", (*labels[:1], ("le", "0.0025"), *labels[1:]))] == 0
    assert m[("gwctl_request_duration_seconds_bucket", (*labels[:1], ("le", "0.005"), *labels[1:]))] == 4
    assert m[("gwctl_request_duration_seconds_count", labels)] == 4
    assert m[("gwctl_activity_rows_written_total", ())] == 7
    assert m[("gwctl_activity_rows_dropped_total", ())] == 0  # a counter without labels is there from the start
