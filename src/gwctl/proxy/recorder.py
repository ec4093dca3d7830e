"""The record stage: one activity row per request, whatever its fate, handed to the log writer process.

The row is a :class:`~gwctl.activity.entry.LogEntry` of raw facts, which the
writer process (:mod:`gwctl.activity.child`) prices, off this core. It is
handed over in its wire form, a plain tuple in LogEntry's field order: the
two places below build it. A LogEntry instance would cost this core a second
allocation per request (a NamedTuple's constructor, or a tuple copied into
one) and ~1 us more per row to pickle (a Python-level ``__getnewargs__``);
the writer process turns the tuples back into LogEntry and reads them by name.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gwctl.core.pricing import Usage
from gwctl.core.request import RequestFeatures, request_shape
from gwctl.proxy.flow import Flow, error_reply
from gwctl.proxy.http import Reply

if TYPE_CHECKING:
    from gwctl.core.limits import Refusal
    from gwctl.proxy.http import Request
    from gwctl.proxy.limiter import Limiter
    from gwctl.proxy.metrics import WorkerMetrics
    from gwctl.proxy.tracing import Tracing


class Recorder:
    """Turns a request's outcome into its activity row; ``writer`` (a ChildWriter, or None: no log) takes it."""

    def __init__(self, writer=None):
        self.writer = writer
        self._shapes: dict[tuple, tuple] = {}  # each distinct request shape, as one object
        self.limiter: Limiter | None = (
            None  # gwctl.proxy.limiter.Limiter: settles a request's reservations with its usage
        )
        self.tracing: Tracing | None = None  # gwctl.proxy.tracing: a request's span ends with its row
        self.metrics: WorkerMetrics | None = None  # gwctl.proxy.metrics: counts each request once, here

    def record(
        self, flow: Flow, status: int, usage: Usage | None, rule: str | None, error: str | None, kind: str | None = None
    ) -> None:
        """The row of a decided request: the decision's facts, the answer's status and usage, and ``kind``
        instead of the decision's route kind (``"error"`` for an upstream failure). A request the limit
        stage admitted is settled here, log or no log."""
        flow.recorded = True
        if flow.trace is not None:
            flow.trace.end(flow, status, rule, error, kind)
        counts = None if usage is None else usage.counts()
        if flow.ticket is not None and self.limiter is not None:
            self.limiter.settle(flow, status, counts)
        if self.metrics is not None:
            self.metrics.request(flow, status, counts, rule, kind)
        writer = self.writer
        if writer is None:
            return
        d = flow.decision
        assert d is not None  # a refusal before the decision goes through refuse()
        writer.submit(
            (  # a LogEntry, field by field
                time.time(),
                flow.rid,
                flow.key_name,
                d.agent,
                kind or d.kind,
                d.source,
                d.client_model,
                d.upstream_model,
                flow.request.path,
                status,
                (time.perf_counter() - flow.start) * 1000,
                counts,
                d.entry if d.forwarded else None,
                d.catalog_ref,
                rule,
                error,
                flow.stream,
                # the attempts of a request that failed over (more than one); None when the first target
                # answered (the row's source, status and latency say it all) or without a plan; the writer
                # process encodes them
                attempts if (attempts := flow.attempts) is not None and len(attempts) > 1 else None,
                None if (feats := d.features) is None else self._shape(feats),
            )
        )

    def _shape(self, feats: RequestFeatures) -> tuple:
        """The request's shape for its row, one tuple object per distinct shape: a batch of rows pickles a
        repeated object once, and the writer process encodes each distinct one once."""
        shape = request_shape(feats)
        known = self._shapes.get(shape)
        if known is None:
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            known = self._shapes[shape] = shape
        return known

    def rejected(
        self,
        rid: str,
        key_name: str | None,
        request: Request | None,
        start: float,
        status: int,
        code: str,
        message: str,
    ) -> None:
        """The row of a request answered before any decision (no key, no such endpoint, not JSON, refused by
        the HTTP server, a bug of ours): route kind ``rejected``, the agent from its header if there is one."""
        if self.metrics is not None:
            self.metrics.rejected(status, code, start)
        writer = self.writer
        if writer is None:
            return
        agent = request.headers.get("x-gwctl-agent") if request is not None else None
        path = request.path if request is not None else ""
        writer.submit(
            (  # a LogEntry, field by field
                time.time(),
                rid,
                key_name,
                agent,
                "rejected",
                None,
                None,
                None,
                path,
                status,
                (time.perf_counter() - start) * 1000,
                None,
                None,
                None,
                code,
                message,
                False,
                None,
                None,
            )
        )

    def limited(self, flow: Flow, refusal: Refusal) -> Reply:
        """A limit or the key's scope refuses the request: record it, answer with the refusal."""
        if self.metrics is not None:
            self.metrics.limited(refusal.rule)
        self.record(flow, refusal.status, None, refusal.rule, refusal.message, kind="rejected")
        assert self.limiter is not None
        return self.limiter.refusal_reply(flow, refusal)

    def refuse(self, flow: Flow, status: int, message: str, code: str, etype: str = "invalid_request_error") -> Reply:
        """Answer an undecided request with the gateway's error, and record it (:meth:`rejected`)."""
        flow.recorded = True
        if flow.trace is None and self.tracing is not None:  # refused before the gateway took it up (the head's
            self.tracing.start(flow)  # key check): a span too
        if flow.trace is not None:
            flow.trace.end(flow, status, code, message, "rejected", flow.request.headers.get("x-gwctl-agent"))
        self.rejected(flow.rid, flow.key_name, flow.request, flow.start, status, code, message)
        return error_reply(flow, status, message, etype, code)
