"""The forward stage: send a decided request to its upstream and answer with what comes back.

What it sends: the body with the decision's upstream model (and, for a stream
the client did not ask usage for, ``stream_options.include_usage`` so it can
be metered), the client's headers as forwarding allows, then the source's
static headers and credential; for a source that speaks only the other API,
the body translated (:mod:`gwctl.proxy.translating`). An event stream goes on to the relay stage
(:mod:`gwctl.proxy.relay`); a whole answer is metered and recorded here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine, Mapping

import orjson

from gwctl.core.forwarding import replaced_names, request_headers, response_headers
from gwctl.core.translate import TranslationError
from gwctl.errors import GwctlError
from gwctl.proxy.flow import INTERNAL_ERROR, REQUEST_ID_HEADER, Flow, InFlight, bug_message, error_reply
from gwctl.proxy.http import Reply
from gwctl.proxy.meter import usage_from_body
from gwctl.proxy.recorder import Recorder
from gwctl.proxy.relay import relay_stream, why
from gwctl.proxy.translating import translate_request
from gwctl.proxy.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from gwctl.store.secrets import auth_headers

if TYPE_CHECKING:
    from gwctl.proxy.failover import Failover
    from gwctl.proxy.metrics import WorkerMetrics

log = logging.getLogger("gwctl.proxy")

ATTEMPTS_HEADER = "X-Gwctl-Attempts"  # on the answer to a request whose route has a plan: the targets tried
# on the answer to a translated request: the advisory fields the translation dropped ("; "-separated)
TRANSLATION_HEADER = "X-Gwctl-Translation-Warnings"
UNTRANSLATABLE = "untranslatable"  # the Failure of a plan's target that cannot take the request in its API

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0


class Forwarder:
    """The upstream client and each source's resolved credential headers."""

    def __init__(self, environ: Mapping[str, str], recorder: Recorder, inflight: InFlight):
        self.environ = environ
        self.recorder = recorder
        self.inflight = inflight
        self.pool: UpstreamPool | None = None  # set when the gateway opens
        self.failover: Failover | None = None  # set by the gateway: executes a route's plan
        self.metrics: WorkerMetrics | None = None  # set by gwctl.proxy.metrics.attach: times the upstream
        self._auth: dict[str, tuple] = {}  # source name -> (the Source it was resolved for, headers, names replaced)

    def payload(self, flow: Flow, raw: bytes) -> bytes:
        """The body to send: ``raw`` as the client sent it unless the decision or metering changes it."""
        d = flow.decision
        body = flow.body
        assert d is not None and body is not None  # set by the decide stage
        feats = d.features
        flow.api = api = feats.api if feats else "other"
        flow.stream = stream = bool(feats and feats.stream)
        changed = flow.strip_usage  # a failover's earlier attempt changed the body already
        if d.rewrite_model:
            body["model"] = d.upstream_model
            changed = True
        elif changed and feats is not None and body.get("model") != feats.model:  # an earlier target's model
            body["model"] = feats.model
        if d.translate:
            flow.translation, translated = translate_request(d, body, flow.strip_usage)
            flow.api = flow.translation.upstream_api  # metered in the upstream's shape
            return translated
        if flow.translation is not None:  # an earlier target of the plan translated
            flow.translation = None
        if stream and api in ("chat", "completions"):
            opts = body.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage")):
                body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
                flow.strip_usage = True
                changed = True
        return orjson.dumps(body) if changed else raw

    def upstream_headers(self, flow: Flow) -> list[tuple[str, str]]:
        """The client's headers as forwarding allows, then the source's static headers and credential."""
        d = flow.decision
        assert d is not None and d.source is not None  # a forwarded decision names its source
        src = flow.snapshot.sources[d.source]
        cached = self._auth.get(d.source)
        if cached is None or cached[0] is not src:  # resolved once per source object (a reload makes new ones)
            added = [*d.static_headers.items(), *auth_headers(src, self.environ).items()]
            cached = self._auth[d.source] = (src, added, replaced_names(d.static_headers, dict(added)))
        return request_headers(flow.request.raw_headers, cached[2], cached[1])

    def forward(self, flow: Flow) -> Coroutine[Any, Any, Reply | None]:
        """Send the request upstream and answer with what comes back (or relay its stream and return None);
        an upstream that cannot be reached, or fails before answering, is the gateway's 502 or 504. A route
        with a plan goes through the failover stage (:mod:`gwctl.proxy.failover`), which calls :meth:`attempt`
        for each target it tries. (A plain function returning the coroutine: no extra coroutine level for
        the common request.)"""
        assert flow.decision is not None
        if flow.decision.plan and self.failover is not None:
            return self.failover.run(flow)
        return self.attempt(flow, None, 0.0)  # type: ignore[return-value]  # with nothing to move on to, no Failure

    async def attempt(self, flow: Flow, move_on: frozenset[str] | None, started: float) -> Reply | None | Failure:
        """One attempt at ``flow.decision``'s upstream. A failure named in ``move_on`` (the failover policy's
        classes, when another target remains) comes back as a :class:`Failure` before anything reached the
        client, and nothing is recorded; any other outcome is answered and recorded."""
        self.inflight.begin()
        trace = flow.trace  # the request's span while tracing is on (gwctl.proxy.tracing)
        try:
            d = flow.decision
            assert d is not None and d.source is not None and d.upstream_url is not None  # decide forwarded it
            assert self.pool is not None and flow.request.body is not None  # the gateway is open; decide read it
            try:
                payload = self.payload(flow, flow.request.body)
            except TranslationError as exc:  # not this target's fault: another target of the plan may take it
                if move_on is not None:
                    return Failure(UNTRANSLATABLE, 400, f"refused by {exc.rule} ({exc.message})", None)
                return self.untranslatable(flow, exc, started)
            try:
                headers = self.upstream_headers(flow)
            except GwctlError as exc:
                return self.no_credential(flow, exc)
            src = flow.snapshot.sources[d.source]
            if trace is not None:  # the attempt's span; its traceparent goes upstream
                trace.upstream(flow, headers)
            metrics = self.metrics
            sent = time.perf_counter() if metrics is not None else 0.0
            try:
                upstream = await self.pool.request(
                    "POST",
                    d.upstream_url,
                    headers,
                    payload,
                    connect_timeout=d.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
                    read_timeout=d.read_timeout or DEFAULT_READ_TIMEOUT,
                    ca_file=src.ca_file,
                )
            except (UpstreamError, ValueError) as exc:
                if trace is not None:
                    trace.failed(exc)
                return self._unanswered(flow, exc, move_on, started)
            if trace is not None:
                trace.answered(upstream.status)
            if metrics is not None:
                metrics.upstream(d.source, time.perf_counter() - sent)
            return await self._answer(flow, upstream, src.response_headers, move_on, started)
        finally:
            if trace is not None:
                trace.over(flow)
            self.inflight.end()

    async def _answer(
        self, flow: Flow, upstream: Any, keep: Any, move_on: frozenset[str] | None, started: float
    ) -> Reply | None | Failure:
        """The upstream answered (its head is in): a failure status the policy moves on from, else the answer
        relayed (a stream) or read whole and passed on; ``keep`` are the source's response headers to pass."""
        trace = flow.trace
        try:
            if move_on is not None and upstream.status >= 400 and str(upstream.status) in move_on:
                upstream.abort()  # its error body is not wanted: the next target answers
                return Failure(
                    str(upstream.status),
                    upstream.status,
                    f"upstream answered {upstream.status}",
                    upstream.header("retry-after"),
                )
            out_headers = response_headers(upstream.headers, keep)
            out_headers.append((REQUEST_ID_HEADER, flow.rid))
            if flow.translation is not None and flow.translation.warnings:
                out_headers.append((TRANSLATION_HEADER, "; ".join(flow.translation.warnings)))
            if (upstream.header("content-type") or "")[:17].lower() == "text/event-stream":  # any letter case
                self.note(flow, upstream.status, None, started, out_headers)
                await relay_stream(flow, upstream, out_headers, self.recorder)
                return None
            try:
                data = await upstream.read()
            except UpstreamError as exc:  # nothing reached the client yet: this may move on too
                if trace is not None:
                    trace.failed(exc)
                return self._unread(flow, upstream.status, exc, move_on, started)
            return self._reply(flow, upstream.status, data, out_headers, started)
        except BaseException:
            upstream.abort()
            raise
        finally:
            upstream.release()

    def _unanswered(
        self, flow: Flow, exc: Exception, move_on: frozenset[str] | None, started: float
    ) -> Reply | Failure:
        """The upstream failed before its answer's head: move on, or answer 502/504."""
        d = flow.decision
        assert d is not None
        failure = getattr(exc, "failure", "connect")
        if move_on is not None and failure in move_on:
            return Failure(failure, None, why(exc), None)
        self.note(flow, None, why(exc), started)
        if isinstance(exc, UpstreamTimeout):
            return self.failed(flow, 504, "upstream_timeout", f"source {d.source} did not answer in time")
        return self.failed(flow, 502, "upstream_unreachable", f"source {d.source} is unreachable ({why(exc)})")

    def _unread(
        self, flow: Flow, status: int, exc: UpstreamError, move_on: frozenset[str] | None, started: float
    ) -> Reply | Failure:
        """The upstream's whole answer could not be read (nothing reached the client): move on, or 502/504."""
        d = flow.decision
        assert d is not None
        if move_on is not None and "reset" in move_on:
            return Failure("reset", status, why(exc), None)
        self.note(flow, status, why(exc), started)
        if isinstance(exc, UpstreamTimeout):
            return self.failed(flow, 504, "upstream_timeout", f"source {d.source} timed out while answering")
        return self.failed(flow, 502, "upstream_unreachable", f"source {d.source} broke the connection ({why(exc)})")

    def _reply(self, flow: Flow, status: int, data: bytes, out_headers: list, started: float) -> Reply:
        """The upstream's whole answer: recorded (metered when it is a success), and passed on."""
        error = None if status < 400 else f"upstream answered {status}"
        self.note(flow, status, error, started, out_headers)
        usage = usage_from_body(flow.api, data) if status < 400 else None
        if flow.translation is not None:
            try:
                data = flow.translation.answer(status, data)
            except TranslationError as exc:  # the upstream's answer has no form in the client's API: its failure
                assert flow.decision is not None
                message = f"the answer of source {flow.decision.source} cannot be translated ({exc.message})"
                log.warning("%s %s: %s", flow.rid, flow.request.path, message)
                self.recorder.record(flow, 502, usage, exc.rule, message, kind="error")
                reply = error_reply(flow, 502, message, "api_error", exc.rule, exc.param)
                reply.headers.extend(h for h in out_headers if h[0] == ATTEMPTS_HEADER)
                return reply
            except Exception as exc:  # a bug of ours: the row says 500 and keeps the usage the answer carried
                self.recorder.record(flow, 500, usage, INTERNAL_ERROR, bug_message(exc))
                raise
        self.recorder.record(flow, status, usage, None, error)
        return Reply(status, data, out_headers, content_type=None)

    @staticmethod
    def note(flow: Flow, status: int | None, error: str | None, started: float, headers: list | None = None) -> None:
        """The answering attempt of a planned request: added to its attempts (before the row is recorded),
        and their count to the answer's headers."""
        attempts = flow.attempts
        if attempts is None:
            return
        d = flow.decision
        assert d is not None
        attempts.append((d.catalog_ref or "", status, (time.perf_counter() - started) * 1000, error))
        if headers is not None:
            headers.append((ATTEMPTS_HEADER, str(len(attempts))))

    def no_credential(self, flow: Flow, exc: GwctlError) -> Reply:
        """The source's credential cannot be resolved (its env var is unset): record it, answer 502."""
        assert flow.decision is not None
        self.recorder.record(flow, 502, None, "credential_missing", exc.message)
        return error_reply(
            flow,
            502,
            f"the gateway cannot reach source {flow.decision.source}: {exc.message}",
            "api_error",
            "credential_missing",
        )

    def untranslatable(self, flow: Flow, exc: TranslationError, started: float) -> Reply:
        """The request has no counterpart in its source's API (dropping what cannot be said would change the
        answer): recorded as a rejection and answered 400 with the translation rule's id, as a check would."""
        self.note(flow, 400, f"refused by {exc.rule} ({exc.message})", started)
        self.recorder.record(flow, 400, None, exc.rule, exc.message, kind="rejected")
        reply = error_reply(flow, 400, exc.message, "invalid_request_error", exc.rule, exc.param)
        if flow.attempts is not None:
            reply.headers.append((ATTEMPTS_HEADER, str(len(flow.attempts))))
        return reply

    def failed(self, flow: Flow, status: int, code: str, message: str) -> Reply:
        """The upstream failed before the client got anything: log it, record it as an error, answer it."""
        log.warning("%s %s: %s", flow.rid, flow.request.path, message)
        self.recorder.record(flow, status, None, code, message, kind="error")
        reply = error_reply(flow, status, message, "api_error", code)
        if flow.attempts is not None:
            reply.headers.append((ATTEMPTS_HEADER, str(len(flow.attempts))))
        return reply


@dataclass(slots=True)
class Failure:
    """An attempt that failed in a way the failover policy moves on from; nothing reached the client."""

    failure: str  # its class (gwctl.core.config.FAILURE_CLASSES) or status code as text
    status: int | None  # the upstream's status, when it answered
    error: str
    retry_after: str | None  # the upstream's Retry-After header, as sent
