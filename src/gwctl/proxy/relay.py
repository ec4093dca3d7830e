"""The relay stage for event streams: pass the upstream's events to the client as they come, metering them."""

from __future__ import annotations

import asyncio

from gwctl.proxy.flow import INTERNAL_ERROR, Flow, bug_message
from gwctl.proxy.meter import StreamMeter
from gwctl.proxy.recorder import Recorder
from gwctl.proxy.translating import TranslatingMeter
from gwctl.proxy.upstream import UpstreamError, UpstreamTimeout
from gwctl.proxy.upstream.response import MAX_ANSWER_BYTES

STREAM_END_WAIT = 2.0  # seconds an upstream may take to end its response after the stream's terminal event
STREAM_ERROR = "upstream_stream_error"  # the row's rule for a stream that ended in an error event
MAX_EVENT_BYTES = MAX_ANSWER_BYTES  # the most of one stream event held back until its end comes


def why(exc: BaseException) -> str:
    """An upstream failure in a few words, for the client's error and the activity row."""
    return getattr(exc, "message", None) or str(exc) or exc.__class__.__name__


async def relay_stream(flow: Flow, upstream, out_headers: list[tuple[str, str]], recorder: Recorder) -> None:
    """Relay an event stream as it arrives, then record it. Once its terminal event has reached the client the
    answer is whole: the client's stream ends there, and neither side hanging up afterwards makes it a failure.
    Returns None: the answer went out through the request's stream (gwctl.proxy.http)."""
    flow.stream = True  # logged as a stream, whether the client asked for one or not
    resp = flow.request.start_stream(upstream.status, out_headers)
    translation = flow.translation
    meter: StreamMeter | TranslatingMeter = (
        StreamMeter(flow.api, strip_usage_chunk=flow.strip_usage)
        if translation is None
        else translation.stream_meter(flow.rid)
    )
    error = None
    status = upstream.status
    delivered = False
    first = recorder.metrics  # times the first event to reach the client, when metrics are on
    try:
        async for chunk in upstream:
            out = meter.feed(chunk)
            if not out and meter.held > MAX_EVENT_BYTES:  # one event without end: not the worker's memory
                raise UpstreamError(f"an event of the stream is larger than {MAX_EVENT_BYTES >> 20} MiB")
            if out and not delivered:
                await resp.write(out)
                if first is not None:
                    first.first_byte(flow)
                    first = None
            if meter.terminal and not delivered:
                delivered = True
                resp.end()  # the client has it all; the upstream's own end is only waited for below
                break
        if not delivered:
            tail = meter.finish()
            if tail:
                await resp.write(tail)
            resp.end()
        else:
            await finish_upstream(upstream, meter)
    except (ConnectionResetError, asyncio.CancelledError):
        if meter.failure is not None:  # the client hung up on the upstream's error event: the upstream failed
            error, status = meter.failure, 502
        elif not delivered:
            error, status = "client disconnected", 499
        upstream.abort()  # hang up on the upstream too
        recorder.record(flow, status, meter.usage(), STREAM_ERROR if meter.failure else None, error)
        raise
    except UpstreamTimeout:
        if not delivered:
            error, status = "upstream timed out mid-stream", 504
    except UpstreamError as exc:
        if not delivered:
            error, status = f"upstream broke the stream ({why(exc)})", 502
    except Exception as exc:  # a bug of ours mid-stream: the HTTP server cuts the stream; the row still says
        upstream.abort()  # what the upstream was asked and what it metered so far (tokens cost money)
        _record_bug(recorder, flow, meter, exc)
        raise
    rule = None
    if meter.failure is not None and error is None:  # the stream ended in an error event: the upstream failed
        error, status, rule = meter.failure, 502, STREAM_ERROR
    recorder.record(flow, status, meter.usage(), rule, error)
    return None


def _record_bug(recorder: Recorder, flow: Flow, meter: StreamMeter | TranslatingMeter, exc: Exception) -> None:
    """The row of a stream a bug of ours broke: 500, rule ``internal_error``, the usage metered so far (if the
    meter itself still answers)."""
    try:
        usage = meter.usage()
    except Exception:  # noqa: BLE001 - the meter may be what broke
        usage = None
    recorder.record(flow, 500, usage, INTERNAL_ERROR, bug_message(exc, " mid-stream"))


async def finish_upstream(upstream, meter: StreamMeter | TranslatingMeter) -> None:
    """After the terminal event, read the upstream's end (it usually follows within a millisecond) so its
    connection can be reused, and any usage it still sends is metered; give up after a short while."""

    async def rest() -> None:
        async for chunk in upstream:
            meter.feed(chunk)
        meter.finish()

    try:
        await asyncio.wait_for(rest(), STREAM_END_WAIT)
    except asyncio.TimeoutError:
        upstream.abort()
