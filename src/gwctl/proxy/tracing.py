"""OpenTelemetry traces of the proxy's requests: optional (``pip install 'gwctl[otel]'``), off by default.

When on, every request that gets an activity row gets one span (kind SERVER),
started when the gateway takes the request up and ended when its row is
recorded, with the decision's facts as attributes; each upstream call (each
attempt of a failover plan) is a child span (kind CLIENT). A client's W3C
``traceparent`` (and ``tracestate``) is continued, and the upstream request
carries the child span's ``traceparent`` instead of the client's. Spans go
through a batch span processor to an OTLP/HTTP exporter configured by the
standard ``OTEL_*`` variables.

On or off (:func:`wanted`, read from the environment at start):

* off when ``OTEL_SDK_DISABLED`` is ``true``, whatever else is set;
* else on when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console`` (a
  comma-separated list: ``none`` alone is off, another exporter is an error);
* else on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the SDK's own default exporter is
  otlp: unlike the SDK, a gateway with none of these set traces nothing);
* the exporter speaks OTLP over HTTP/protobuf only: an ``OTEL_EXPORTER_OTLP_*PROTOCOL``
  of ``grpc`` or ``http/json`` is an error at start.

When off, nothing here imports OpenTelemetry, and a request pays one attribute
check per stage (``flow.trace is None``). Each worker process sets up its own
provider and exporter thread (:class:`Tracing` is made by the worker's gateway,
after the fork) and flushes it when it stops.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from gwctl.errors import GwctlError
from gwctl.proxy.decide import POST_PATHS

if TYPE_CHECKING:
    from gwctl.proxy.flow import Flow

INSTALL = "pip install 'gwctl[otel]'"
EXPORTERS = ("otlp", "console")
DEFAULT_ENDPOINT = "http://localhost:4318"
SERVICE_NAME = "gwctl-proxy"  # service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
NAMED_PATHS = POST_PATHS | {"/v1/models"}


class Setting:
    """Tracing as the environment asks for it: the exporters and, for otlp, where spans go (a plain class: this
    module is imported by every proxy, traced or not, and a dataclass costs its import several times more)."""

    __slots__ = ("exporters", "endpoint", "because")

    def __init__(self, exporters: tuple[str, ...], endpoint: str | None, because: str):
        self.exporters = exporters
        self.endpoint = endpoint  # the OTLP traces URL (otlp only)
        self.because = because  # the variable that turned it on

    def describe(self) -> str:
        where = [f"OTLP/HTTP to {self.endpoint}" if e == "otlp" else "the console (stdout)" for e in self.exporters]
        return f"traces: on, exported to {' and '.join(where)} ({self.because})"


def _flag(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or "").strip()


def wanted(environ: Mapping[str, str]) -> Setting | None:
    """Whether the environment asks for traces (see the module's docstring); a setting this module cannot
    honour is a :class:`~gwctl.errors.GwctlError`. Imports nothing."""
    if _flag(environ, "OTEL_SDK_DISABLED").lower() == "true":
        return None
    named = _flag(environ, "OTEL_TRACES_EXPORTER")
    traces_ep = _flag(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base_ep = _flag(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if named:
        exporters = tuple(dict.fromkeys(e.strip().lower() for e in named.split(",") if e.strip()))
        unknown = [e for e in exporters if e not in (*EXPORTERS, "none")]
        if unknown:
            raise GwctlError(
                f"OTEL_TRACES_EXPORTER={named}: the gateway exports traces with otlp (OTLP over HTTP) or console only",
                "set OTEL_TRACES_EXPORTER=otlp (or none to turn traces off)",
            )
        exporters = tuple(e for e in exporters if e != "none")
        if not exporters:
            return None
        because = f"OTEL_TRACES_EXPORTER={named}"
    elif traces_ep or base_ep:
        exporters = ("otlp",)
        because = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if traces_ep else "OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        return None
    endpoint = None
    if "otlp" in exporters:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = _flag(environ, name)
            if protocol:
                if protocol != "http/protobuf":
                    raise GwctlError(
                        f"{name}={protocol}: the gateway exports traces over OTLP/HTTP with protobuf only",
                        f"set {name}=http/protobuf (the collector's port 4318), or unset it",
                    )
                break
        endpoint = traces_ep or (base_ep or DEFAULT_ENDPOINT).rstrip("/") + "/v1/traces"
    return Setting(exporters, endpoint, because)


def check_installed() -> None:
    """A clear error when traces are asked for but the otel extra is not installed."""
    import importlib.util

    try:
        found = all(
            importlib.util.find_spec(m) is not None
            for m in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
        )
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        raise GwctlError(
            "traces are asked for (OTEL_* variables) but the OpenTelemetry SDK and OTLP exporter are not installed",
            f"install them with: {INSTALL} (or unset OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_*ENDPOINT)",
        )


def from_environ(environ: Mapping[str, str]) -> Tracing | None:
    """This process's tracing, when the environment asks for it (else None, and nothing imported)."""
    setting = wanted(environ)
    if setting is None:
        return None
    check_installed()
    return Tracing(setting, environ)


class Tracing:
    """One worker's tracer provider, batch processor and exporter; starts each request's :class:`RequestTrace`."""

    def __init__(self, setting: Setting, environ: Mapping[str, str]):
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from gwctl import __version__

        self.setting = setting
        attrs: dict[str, Any] = {"service.version": __version__}
        if not _flag(environ, "OTEL_SERVICE_NAME") and "service.name=" not in _flag(
            environ, "OTEL_RESOURCE_ATTRIBUTES"
        ):
            attrs["service.name"] = SERVICE_NAME
        # the provider is this object's own, never the process-wide one: nothing else's spans go through it
        self.provider = TracerProvider(resource=Resource.create(attrs))
        for name in setting.exporters:
            exporter: SpanExporter
            if name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(endpoint=setting.endpoint)  # headers, timeout, ...: OTEL_* as usual
            else:
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                exporter = ConsoleSpanExporter()
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gwctl.proxy", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.root = Context()  # a request without a client traceparent starts a trace, whatever context is current
        self.in_span = trace.set_span_in_context
        self.SERVER, self.CLIENT = SpanKind.SERVER, SpanKind.CLIENT
        self.Status, self.ERROR = Status, StatusCode.ERROR

    def start(self, flow: Flow) -> None:
        """The request's span starts (its parent: the client's ``traceparent``, if any): ``flow.trace``."""
        request = flow.request
        headers = request.headers
        parent = self.propagator.extract(headers, self.root) if "traceparent" in headers else self.root
        path = request.path
        span = self.tracer.start_span(
            # the endpoint in the name, never a path a client made up (span names are for grouping)
            f"{request.method} {path}" if path in NAMED_PATHS else request.method,
            context=parent,
            kind=self.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "gwctl.request_id": flow.rid,
            },
        )
        flow.trace = RequestTrace(self, span)

    def shutdown(self) -> None:
        """Export what is still queued and stop the exporter thread (blocks up to the exporter's timeout)."""
        self.provider.shutdown()


class RequestTrace:
    """One request's span, and the span of its upstream attempt in progress."""

    __slots__ = ("tracing", "span", "child", "attempts")

    def __init__(self, tracing: Tracing, span: Any):
        self.tracing = tracing
        self.span = span
        self.child: Any = None
        self.attempts = 0

    def upstream(self, flow: Flow, headers: list[tuple[str, str]]) -> None:
        """An upstream attempt starts: its child span, whose ``traceparent`` replaces any client's in
        ``headers`` (the header lines about to be sent)."""
        t = self.tracing
        d = flow.decision
        assert d is not None and d.upstream_url is not None
        url = urlsplit(d.upstream_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        self.upstream_done()  # an earlier attempt's, if still open
        self.attempts += 1
        child = self.child = t.tracer.start_span(
            f"POST {d.catalog_ref or d.source}",
            context=t.in_span(self.span),
            kind=t.CLIENT,
            attributes={
                "http.request.method": "POST",
                "server.address": url.hostname or "",
                "server.port": port,
                "url.path": url.path,
                "gwctl.source": d.source or "",
                "gwctl.target": d.catalog_ref or "",
                "gwctl.attempt": self.attempts,
            },
        )
        if any(k.lower() in TRACE_HEADERS for k, _v in headers):
            headers[:] = [(k, v) for k, v in headers if k.lower() not in TRACE_HEADERS]
        carrier: dict[str, str] = {}
        t.propagator.inject(carrier, context=t.in_span(child))
        headers.extend(carrier.items())

    def answered(self, status: int) -> None:
        """The upstream answered with ``status`` (4xx and 5xx mark the attempt's span as an error)."""
        child = self.child
        if child is not None:
            child.set_attribute("http.response.status_code", status)
            if status >= 400:
                child.set_status(self.tracing.Status(self.tracing.ERROR, f"upstream answered {status}"))

    def failed(self, error: BaseException | str) -> None:
        """The upstream attempt failed without (a whole) answer: its span ends."""
        child = self.child
        if child is not None:
            child.set_attribute("error.type", getattr(error, "failure", None) or type(error).__name__)
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            child.set_status(self.tracing.Status(self.tracing.ERROR, message))
            self.upstream_done()

    def upstream_done(self) -> None:
        """The attempt is over (its answer relayed, or given up on): its span ends."""
        child = self.child
        if child is not None:
            self.child = None
            child.end()

    def over(self, flow: Flow) -> None:
        """The attempt is over: its span ends; and the request's, when no row was recorded for it (the client
        went away while the gateway waited for the upstream) and no other attempt follows: as 499."""
        self.upstream_done()
        if flow.trace is self and sys.exc_info()[0] is asyncio.CancelledError:
            self.end(flow, 499, None, "client disconnected", None)

    def end(
        self, flow: Flow, status: int, rule: str | None, error: str | None, kind: str | None, agent: str | None = None
    ) -> None:
        """The request's row is recorded: its span gets the decision's facts and the answer's status, and ends.
        ``kind`` as the row's route kind (None: the decision's)."""
        flow.trace = None  # ended once, whatever calls come later
        failed = status >= 500 or kind == "error"
        if failed and self.child is not None:  # the attempt in progress failed it (a stream that broke, ...)
            self.child.set_status(self.tracing.Status(self.tracing.ERROR, error or f"answered {status}"))
        self.upstream_done()
        span = self.span
        if not span.is_recording():  # not sampled (OTEL_TRACES_SAMPLER): nothing to add
            span.end()
            return
        d = flow.decision
        attrs: dict[str, Any] = {"http.response.status_code": status, "gwctl.attempts": self.attempts}
        if d is not None:
            agent = d.agent
            kind = kind or d.kind
            model = d.catalog_ref or d.upstream_model
            for name, value in (
                ("gwctl.source", d.source),
                ("gwctl.model", model),
                ("gwctl.client_model", d.client_model),
                ("gwctl.upstream_model", d.upstream_model),
                ("gwctl.matched_by", d.matched_by),
            ):
                if value is not None:
                    attrs[name] = value
        if agent is not None:
            attrs["gwctl.agent"] = agent
        if kind is not None:
            attrs["gwctl.route_kind"] = kind
        if rule is not None:
            attrs["gwctl.rule"] = rule
        if flow.key_name is not None:
            attrs["gwctl.key"] = flow.key_name
        if flow.stream:
            attrs["gwctl.stream"] = True
        span.set_attributes(attrs)
        if failed:
            span.set_status(self.tracing.Status(self.tracing.ERROR, error or f"answered {status}"))
        span.end()
