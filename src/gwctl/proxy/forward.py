"""The forward stage: send a decided request to its upstream and answer with what comes back.

What it sends: the body with the decision's upstream model (and, for a stream
the client did not ask usage for, ``stream_options.include_usage`` so it can
be metered), the client's headers as forwarding allows, then the source's
static headers and credential. An event stream goes on to the relay stage
(:mod:`gwctl.proxy.relay`); a whole answer is metered and recorded here.
"""

from __future__ import annotations

import logging
from typing import Mapping

import orjson

from gwctl.core.forwarding import replaced_names, request_headers, response_headers
from gwctl.errors import GwctlError
from gwctl.proxy.flow import REQUEST_ID_HEADER, Flow, InFlight, error_reply
from gwctl.proxy.http import Reply
from gwctl.proxy.meter import usage_from_body
from gwctl.proxy.recorder import Recorder
from gwctl.proxy.relay import relay_stream, why
from gwctl.proxy.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from gwctl.store.secrets import auth_headers

log = logging.getLogger("gwctl.proxy")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0


class Forwarder:
    """The upstream client and each source's resolved credential headers."""

    def __init__(self, environ: Mapping[str, str], recorder: Recorder, inflight: InFlight):
        self.environ = environ
        self.recorder = recorder
        self.inflight = inflight
        self.pool: UpstreamPool | None = None  # set when the gateway opens
        self._auth: dict[str, tuple] = {}  # source name -> (the Source it was resolved for, headers, names replaced)

    def payload(self, flow: Flow, raw: bytes) -> bytes:
        """The body to send: ``raw`` as the client sent it unless the decision or metering changes it."""
        d = flow.decision
        body = flow.body
        assert d is not None and body is not None  # set by the decide stage
        feats = d.features
        flow.api = api = feats.api if feats else "other"
        flow.stream = stream = bool(feats and feats.stream)
        changed = False
        if d.rewrite_model:
            body["model"] = d.upstream_model
            changed = True
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

    async def forward(self, flow: Flow) -> Reply | None:
        """Send the request upstream and answer with what comes back (or relay its stream and return None);
        an upstream that cannot be reached, or fails before answering, is the gateway's 502 or 504."""
        self.inflight.begin()
        try:
            d = flow.decision
            assert d is not None and d.source is not None and d.upstream_url is not None  # decide forwarded it
            assert self.pool is not None and flow.request.body is not None  # the gateway is open; decide read the body
            payload = self.payload(flow, flow.request.body)
            try:
                headers = self.upstream_headers(flow)
            except GwctlError as exc:
                return self.no_credential(flow, exc)
            src = flow.snapshot.sources[d.source]
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
            except UpstreamTimeout:
                return self.failed(flow, 504, "upstream_timeout", f"source {d.source} did not answer in time")
            except (UpstreamError, ValueError) as exc:
                return self.failed(flow, 502, "upstream_unreachable", f"source {d.source} is unreachable ({why(exc)})")
            try:
                out_headers = response_headers(upstream.headers, src.response_headers)
                out_headers.append((REQUEST_ID_HEADER, flow.rid))
                if (upstream.header("content-type") or "").startswith("text/event-stream"):
                    await relay_stream(flow, upstream, out_headers, self.recorder)
                    return None
                try:
                    data = await upstream.read()
                except UpstreamTimeout:
                    return self.failed(flow, 504, "upstream_timeout", f"source {d.source} timed out while answering")
                except UpstreamError as exc:
                    return self.failed(
                        flow, 502, "upstream_unreachable", f"source {d.source} broke the connection ({why(exc)})"
                    )
                status = upstream.status
                self.recorder.record(
                    flow,
                    status,
                    usage_from_body(flow.api, data) if status < 400 else None,
                    None,
                    None if status < 400 else f"upstream answered {status}",
                )
                return Reply(status, data, out_headers, content_type=None)
            except BaseException:
                upstream.abort()
                raise
            finally:
                upstream.release()
        finally:
            self.inflight.end()

    def no_credential(self, flow: Flow, exc: GwctlError) -> Reply:
        """The source's credential cannot be resolved (its env var is unset): record it, answer 502."""
        assert flow.decision is not None
        self.recorder.record(flow, 502, None, "credential_missing", exc.message)
        return error_reply(
            502,
            f"the gateway cannot reach source {flow.decision.source}: {exc.message}",
            "api_error",
            "credential_missing",
            flow.rid,
        )

    def failed(self, flow: Flow, status: int, code: str, message: str) -> Reply:
        """The upstream failed before the client got anything: log it, record it as an error, answer it."""
        log.warning("%s %s: %s", flow.rid, flow.request.path, message)
        self.recorder.record(flow, status, None, code, message, kind="error")
        return error_reply(status, message, "api_error", code, flow.rid)
