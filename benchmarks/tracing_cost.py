"""What traces cost a request: nothing measurable when off, the span work when on.

Off: the hooks a forwarded request runs with tracing off (Gateway.handle's
``self.tracing`` check, ``Flow.trace = None``, the record stage's and
``Forwarder.attempt``'s ``is None`` checks), timed beside ``Flow()`` itself.
On: one request's span work as the hooks do it (the request span from a
client ``traceparent``, one upstream child span with its ``traceparent``
injected into the header list, the answer's status, the end with the
decision's attributes), through the real SDK provider and batch processor
with an exporter that discards (so the export, in its own thread, is not
counted). Compare with benchmarks/worker_cpu.py's µs per request.

    python benchmarks/tracing_cost.py
"""

from __future__ import annotations

import os
import sys
import timeit
from types import SimpleNamespace

from gwctl.proxy.flow import Flow

N = 200_000


def best(stmt, number: int, g: dict) -> float:
    """Nanoseconds per run of ``stmt``: the best of 7 repeats (the least disturbed by other processes)."""
    return min(timeit.repeat(stmt, globals=g, number=number, repeat=7)) / number * 1e9


def off() -> None:
    flow = Flow(None, "r", 0.0, None)  # type: ignore[arg-type]
    g = {"Flow": Flow, "f": flow, "gw": SimpleNamespace(tracing=None)}
    checks = (
        "gw.tracing is not None; f.trace is not None; t = f.trace; "
        "t is not None; t is not None; t is not None; t is not None"
    )
    print(
        f"off: Flow() {best('Flow(None, 1, 0.0, None)', N * 10, g):.0f} ns; the hooks' checks {best(checks, N * 10, g):.0f} ns"
    )


def on() -> None:
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        print("on: not measured (pip install 'gwctl[otel]')")
        return
    from gwctl.proxy import tracing

    class Discard(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    t = tracing.Tracing(tracing.Setting((), None, "benchmark"), {})  # no exporter of its own: ...
    t.provider.add_span_processor(BatchSpanProcessor(Discard()))  # ... the real processor, an exporter that discards
    decision = SimpleNamespace(
        upstream_url="http://127.0.0.1:8000/v1/chat/completions",
        source="local",
        catalog_ref="local/llama",
        agent="triage",
        kind="managed",
        upstream_model="llama",
        client_model="assistant",
        matched_by="route",
    )
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    request = SimpleNamespace(method="POST", path="/v1/chat/completions", headers={"traceparent": tp})

    def one(request=request) -> None:
        flow = Flow(request, "rid", 0.0, None)  # type: ignore[arg-type]
        flow.decision = decision  # type: ignore[assignment]
        t.start(flow)
        trace = flow.trace
        assert trace is not None
        trace.upstream(flow, [("Accept-Encoding", "identity"), ("traceparent", tp)])
        trace.answered(200)
        trace.end(flow, 200, None, None, None)

    print(f"on: one request's spans {best(one, N // 10, {}) / 1000:.1f} us (request span + one upstream span)")
    t.shutdown()
    # the same with a sampler that keeps none (OTEL_TRACES_SAMPLER, read by the SDK's provider), no client parent
    os.environ["OTEL_TRACES_SAMPLER"] = "always_off"
    t = tracing.Tracing(tracing.Setting((), None, "benchmark"), {})
    t.provider.add_span_processor(BatchSpanProcessor(Discard()))
    unparented = SimpleNamespace(method="POST", path="/v1/chat/completions", headers={})
    us = best(lambda: one(unparented), N // 10, {}) / 1000
    print(f"on, not sampled (OTEL_TRACES_SAMPLER=always_off): {us:.1f} us (the traceparent is still sent upstream)")
    t.shutdown()


if __name__ == "__main__":
    off()
    on()
    sys.exit(0)
