"""OpenTelemetry traces: a real proxy exporting over OTLP/HTTP to a collector run here, checked span by span.

The collector is a small HTTP server taking ``POST /v1/traces`` and decoding
each body with opentelemetry-proto's ExportTraceServiceRequest; the upstreams
are the stand-in (gwctl.testing) and a port nobody listens on (for failover).
"""

from __future__ import annotations

import gzip
import os
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from faulty import FaultyUpstream
from gwctl.errors import GwctlError
from gwctl.proxy import tracing
from gwctl.testing.thread import StandinConfig, start_standin
from proxyrun import ProxyProcess, StoreRig, closed_port, wait_for

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

UP_KEY = "sk-up"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


# --- the collector -------------------------------------------------------------


@dataclass
class Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attrs: dict
    status: int
    message: str
    service: str = ""

    def __repr__(self) -> str:
        return f"Span({self.name!r} kind={self.kind} {self.trace_id}/{self.span_id}<-{self.parent or '-'} {self.attrs})"


def _value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


@dataclass
class Collector:
    spans: list[Span] = field(default_factory=list)
    posts: int = 0

    def start(self) -> Collector:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.take(self.path, body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def take(self, path: str, body: bytes) -> None:
        self.posts += 1
        assert path == "/v1/traces"
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in s.attributes},
                            s.status.code,
                            s.status.message,
                            service,
                        )
                    )

    def request_span(self, rid: str, timeout: float = 10) -> Span:
        got = wait_for(lambda: next((s for s in self.spans if s.attrs.get("gwctl.request_id") == rid), None), timeout)
        assert got is not None, f"no span for {rid}: {self.spans}"
        return got

    def children(self, span: Span) -> list[Span]:
        return [s for s in self.spans if s.parent == span.span_id and s.trace_id == span.trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Rig(StoreRig):
    def __init__(self, root: Path):
        self.collector = Collector().start()
        self.good = start_standin(StandinConfig(models=["good-m"], api_key=UP_KEY))
        self.store = root / "cfg" / "gwctl.toml"
        self.db = root / "activity.sqlite3"
        self.cli("source", "add", "good", "--base-url", self.good.url, "--auth-value", UP_KEY)
        self.cli("source", "add", "dead", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--auth-value", UP_KEY)
        self.cli("catalog", "set", "good/good-m", "--price", "input=3e-6", "--price", "output=1.5e-5")
        self.cli("catalog", "set", "dead/x", "--price", "input=3e-6", "--price", "output=1.5e-5")
        self.faulty = FaultyUpstream().start()
        self.cli("source", "add", "bad", "--base-url", self.faulty.url, "--auth-value", UP_KEY)
        self.cli("catalog", "set", "bad/reset", "--price", "input=3e-6", "--price", "output=1.5e-5")
        self.cli("route", "set", "t/broken", "--model-name", "m", "--provider", "bad", "--model", "reset")
        self.route("plain", "good", "good-m")
        self.route("fo", "dead", "x", "--fallback", "good/good-m")
        self.key = self.cli("key", "create", "tester", "--json").json()["key"]

    def env(self, **more: str) -> dict:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50", **more}

    def start(self, *extra: str, env: dict | None = None) -> ProxyProcess:
        return ProxyProcess(self.store, f"sqlite://{self.db}", *extra, env=self.env() if env is None else env)

    def chat(
        self, proc: ProxyProcess, agent: str, key: str | None = None, stream: bool = False, timeout=20, **headers: str
    ):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        hdrs = {"Authorization": f"Bearer {key or self.key}", "X-Gwctl-Agent": f"t/{agent}", **headers}
        return httpx.post(proc.url + "/v1/chat/completions", json=body, headers=hdrs, timeout=timeout)

    def close(self) -> None:
        self.good.stop()
        self.faulty.stop()
        self.collector.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("tracing"))
    r.proc = r.start()
    yield r
    r.proc.terminate()
    r.close()


def _traceparent(value: str) -> tuple[str, str]:
    version, trace_id, parent, flags = value.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (newer SDKs add the random-trace-id bit, 02)
    return trace_id, parent


# --- end to end -----------------------------------------------------------------


def test_the_proxy_says_where_traces_go(rig):
    assert f"traces: on, exported to OTLP/HTTP to {rig.collector.url}/v1/traces" in rig.proc.log


def test_a_plain_request_is_a_server_span_with_the_upstream_call_as_its_child(rig):
    r = rig.chat(rig.proc, "plain")
    assert r.status_code == 200
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    assert span.kind == SERVER and span.name == "POST /v1/chat/completions" and span.parent == ""
    assert span.service == "gwctl-proxy"
    a = span.attrs
    assert a["gwctl.agent"] == "t/plain" and a["gwctl.route_kind"] == "managed" and a["gwctl.source"] == "good"
    assert a["gwctl.model"] == "good/good-m" and a["gwctl.client_model"] == "m" and a["gwctl.attempts"] == 1
    assert a["http.request.method"] == "POST" and a["url.path"] == "/v1/chat/completions"
    assert a["http.response.status_code"] == 200 and a["gwctl.key"] == "tester" and "gwctl.rule" not in a
    assert span.status != STATUS_ERROR
    (child,) = wait_for(lambda: rig.collector.children(span))
    assert child.kind == CLIENT and child.name == "POST good/good-m"
    host, port = rig.good.url.split("//")[1].split("/")[0].split(":")
    assert child.attrs["server.address"] == host and child.attrs["server.port"] == int(port)
    assert child.attrs["http.response.status_code"] == 200 and child.attrs["gwctl.target"] == "good/good-m"
    # the upstream saw the child span's traceparent: same trace, the child as its parent
    sent = rig.good.received[-1].headers["traceparent"]
    assert _traceparent(sent) == (span.trace_id, child.span_id)


def test_a_clients_traceparent_is_continued_and_replaced_upstream(rig):
    r = rig.chat(
        rig.proc,
        "plain",
        traceparent=f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
        tracestate="vendor=abc",
    )
    assert r.status_code == 200
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    assert span.trace_id == CLIENT_TRACE and span.parent == CLIENT_PARENT
    (child,) = wait_for(lambda: rig.collector.children(span))
    seen = rig.good.received[-1].headers
    assert _traceparent(seen["traceparent"]) == (CLIENT_TRACE, child.span_id)  # one traceparent: ours, not the client's
    assert seen["tracestate"] == "vendor=abc"
    r = rig.chat(rig.proc, "plain", traceparent="00-not-a-trace-01")  # unreadable: a trace of its own, ours upstream
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    (child,) = wait_for(lambda: rig.collector.children(span))
    assert span.parent == "" and span.trace_id != CLIENT_TRACE
    assert _traceparent(rig.good.received[-1].headers["traceparent"]) == (span.trace_id, child.span_id)


def test_a_rejected_request_is_a_span_without_child(rig):
    r = rig.chat(rig.proc, "nobody-routes-this")
    assert r.status_code >= 400
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    assert span.attrs["http.response.status_code"] == r.status_code
    assert span.attrs["gwctl.route_kind"] in ("rejected", "not_found") and span.attrs["gwctl.rule"]
    assert span.attrs["gwctl.attempts"] == 0
    r2 = rig.chat(rig.proc, "plain", key="not-a-key")  # refused at the head's key check
    assert r2.status_code == 401
    span2 = rig.collector.request_span(r2.headers["x-gwctl-request-id"])
    assert span2.attrs["gwctl.rule"] == "invalid_api_key" and span2.attrs["gwctl.route_kind"] == "rejected"
    assert span2.attrs["gwctl.agent"] == "t/plain"
    assert rig.collector.children(span) == [] and rig.collector.children(span2) == []
    r3 = httpx.post(rig.proc.url + "/v1/no/such/thing", json={}, headers={"Authorization": f"Bearer {rig.key}"})
    assert r3.status_code == 404
    span3 = rig.collector.request_span(r3.headers["x-gwctl-request-id"])
    assert span3.name == "POST" and span3.attrs["url.path"] == "/v1/no/such/thing"  # a made-up path: not in the name


def test_a_failover_has_one_child_span_per_attempt(rig):
    r = rig.chat(rig.proc, "fo")
    assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    assert span.attrs["gwctl.attempts"] == 2 and span.attrs["gwctl.source"] == "good"
    children = wait_for(lambda: len(rig.collector.children(span)) == 2 and rig.collector.children(span))
    first, second = sorted(children, key=lambda s: s.attrs["gwctl.attempt"])
    assert first.attrs["gwctl.target"] == "dead/x" and first.status == STATUS_ERROR
    assert first.attrs["error.type"] and "http.response.status_code" not in first.attrs
    assert second.attrs["gwctl.target"] == "good/good-m" and second.attrs["http.response.status_code"] == 200
    assert _traceparent(rig.good.received[-1].headers["traceparent"]) == (span.trace_id, second.span_id)


def test_a_stream_ends_its_span_when_its_row_is_recorded(rig):
    with httpx.stream(
        "POST",
        rig.proc.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {rig.key}", "X-Gwctl-Agent": "t/plain"},
        timeout=20,
    ) as r:
        text = r.read().decode()
        rid = r.headers["x-gwctl-request-id"]
    assert "[DONE]" in text
    span = rig.collector.request_span(rid)
    assert span.attrs["gwctl.stream"] is True and span.attrs["http.response.status_code"] == 200
    (child,) = wait_for(lambda: rig.collector.children(span))
    assert child.kind == CLIENT


def test_a_stream_the_upstream_breaks_is_an_error_span_and_so_is_its_attempts(rig):
    with httpx.stream(
        "POST",
        rig.proc.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "fault": {"events": 1}},
        headers={"Authorization": f"Bearer {rig.key}", "X-Gwctl-Agent": "t/broken"},
        timeout=20,
    ) as r:
        rid = r.headers["x-gwctl-request-id"]
        with pytest.raises(httpx.HTTPError):
            r.read()
    span = rig.collector.request_span(rid)
    assert span.status == STATUS_ERROR and span.attrs["http.response.status_code"] == 502
    assert "broke the stream" in span.message and span.attrs["gwctl.stream"] is True
    (child,) = wait_for(lambda: rig.collector.children(span))
    assert child.status == STATUS_ERROR and "broke the stream" in child.message
    assert child.attrs["http.response.status_code"] == 200  # the upstream's head said 200


def test_an_upstream_failure_is_an_error_span(rig):
    rig.cli("route", "set", "t/down", "--model-name", "m", "--provider", "dead", "--model", "x")
    r = wait_for(lambda: (x := rig.chat(rig.proc, "down")).status_code == 502 and x, 10)  # once the reload has it
    assert r
    span = rig.collector.request_span(r.headers["x-gwctl-request-id"])
    assert span.status == STATUS_ERROR and span.attrs["gwctl.route_kind"] == "error"
    assert span.attrs["gwctl.rule"] == "upstream_unreachable" and "unreachable" in span.message
    (child,) = wait_for(lambda: rig.collector.children(span))
    assert child.status == STATUS_ERROR


def test_a_client_that_hangs_up_before_the_answer_ends_its_span_as_499(rig):
    before = len(rig.collector.spans)
    rig.good.configure(delay_ms=1500)
    try:
        with pytest.raises(httpx.ReadTimeout):
            rig.chat(rig.proc, "plain", timeout=0.3)
        got = wait_for(
            lambda: [
                s
                for s in rig.collector.spans[before:]
                if s.kind == SERVER and s.attrs["http.response.status_code"] == 499
            ]
        )
    finally:
        rig.good.configure(delay_ms=0)
    (span,) = got
    assert span.attrs["gwctl.attempts"] == 1 and span.status != STATUS_ERROR
    (child,) = rig.collector.children(span)
    assert child.kind == CLIENT and "http.response.status_code" not in child.attrs


SITE_HOOK = """
import atexit, os, sys

def _dump():
    with open(os.environ["GWCTL_TEST_MODULES"], "w") as f:
        f.write("\\n".join(sorted(sys.modules)))

if os.environ.get("GWCTL_TEST_MODULES"):
    atexit.register(_dump)
"""


def test_with_tracing_off_nothing_is_exported_and_opentelemetry_is_never_imported(rig, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITE_HOOK)
    modules = tmp_path / "modules.txt"
    env = {
        "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "GWCTL_TEST_MODULES": str(modules),
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)  # the proxy's environment is this one's, plus env
    posts = rig.collector.posts
    proc = rig.start(env=env)
    try:
        for agent in ("plain", "fo", "nobody-routes-this"):
            rig.chat(proc, agent)
        assert "traceparent" not in rig.good.received[-1].headers
        assert "traces: on" not in proc.log
    finally:
        assert proc.terminate() == 0
    loaded = modules.read_text().split()
    assert "gwctl.proxy.server" in loaded  # the hook saw the proxy's own modules ...
    assert [m for m in loaded if m.startswith("opentelemetry")] == []  # ... and no opentelemetry at all
    assert rig.collector.posts == posts


def test_each_worker_exports_its_own_spans_and_flushes_them_on_sigterm(rig):
    # a batch delay far longer than the test: the spans arrive only through the flush at shutdown
    proc = rig.start("--workers", "2", env=rig.env(OTEL_BSP_SCHEDULE_DELAY="600000"))
    rids = []
    try:
        for _ in range(6):
            r = rig.chat(proc, "plain")
            assert r.status_code == 200
            rids.append(r.headers["x-gwctl-request-id"])
    finally:
        assert proc.terminate() == 0
    for rid in rids:
        span = rig.collector.request_span(rid, timeout=2)
        assert len(rig.collector.children(span)) == 1


# --- on or off, from the environment ---------------------------------------------------------


@pytest.mark.parametrize(
    "env, exporters, endpoint",
    [
        ({}, None, None),
        ({"OTEL_SERVICE_NAME": "gw"}, None, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, ("otlp",), "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/t"}, ("otlp",), "http://c:9/t"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/x"},
            ("otlp",),
            "http://b:2/x",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",), "http://localhost:4318/v1/traces"),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",), None),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console"), "http://localhost:4318/v1/traces"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None, None),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None, None),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",), None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("otlp",),
            "http://c:4318/v1/traces",
        ),
    ],
)
def test_wanted_reads_the_standard_variables(env, exporters, endpoint):
    setting = tracing.wanted(env)
    if exporters is None:
        assert setting is None
    else:
        assert setting is not None and setting.exporters == exporters
        if endpoint is not None:
            assert setting.endpoint == endpoint


@pytest.mark.parametrize(
    "env, says",
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp (OTLP over HTTP) or console only"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "HTTP with protobuf only"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "HTTP with protobuf only",
        ),
    ],
)
def test_a_setting_the_gateway_cannot_honour_is_an_error(env, says):
    with pytest.raises(GwctlError) as err:
        tracing.wanted(env)
    assert says in err.value.message


def test_the_proxy_refuses_to_start_when_the_otel_extra_is_missing(store_path, monkeypatch):
    import importlib.util

    assert run_cli("key", "create", "k").code == 0
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a)
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    r = run_cli("proxy", "--port", "0")
    assert r.code != 0
    assert "pip install 'gwctl[otel]'" in r.err and "not installed" in r.err


def test_the_proxy_refuses_an_exporter_it_does_not_speak(store_path, monkeypatch):
    assert run_cli("key", "create", "k").code == 0
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    r = run_cli("proxy", "--port", "0")
    assert r.code != 0 and "OTEL_TRACES_EXPORTER=jaeger" in r.err


def test_importing_the_tracing_module_imports_no_opentelemetry():
    import subprocess

    code = "import sys, gwctl.proxy.server, gwctl.proxy.tracing as t; t.wanted({}); print(any(m.startswith('opentelemetry') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
