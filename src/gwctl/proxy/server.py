"""The forwarding proxy: authenticate, decide (the same pure function as the dry-run), forward, meter.

On uvloop, a lean server protocol (gwctl.proxy.http) and a lean pooled
upstream client (gwctl.proxy.client), both on httptools' parser: aiohttp's
server and client cost ~3x and ~4x the CPU per request on this machine, and
the activity log is written by a child process (gwctl.activity.child)
(benchmarks/README.md). The proxy
adds no routing or catalog rule of its own: every request goes through
:func:`gwctl.core.decision.decide` (through its per-shape memo,
:class:`~gwctl.core.decision.DecisionMemo`, which returns what decide returns),
and the answer for a rejected request is the decision's own error body.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import orjson

from gwctl.activity.child import ChildWriter
from gwctl.activity.entry import LogEntry
from gwctl.core import keys as gwkeys
from gwctl.core.forwarding import replaced_names, request_headers, response_headers
from gwctl.core.decision import Decision, DecisionMemo, decide
from gwctl.core.model import Snapshot
from gwctl.core.pricing import Usage
from gwctl.core.request import MAX_JSON_DEPTH, too_deep
from gwctl.core.validate import validate
from gwctl.errors import GwctlError
from gwctl.proxy.client import Proxies, ProxySettingError, UpstreamError, UpstreamPool, UpstreamTimeout
from gwctl.proxy.http import HttpServer, Reply, Request
from gwctl.proxy.meter import StreamMeter, usage_from_body
from gwctl.store.file import load
from gwctl.store.secrets import auth_headers

log = logging.getLogger("gwctl.proxy")

POST_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"})
REQUEST_ID_HEADER = "X-Gwctl-Request-Id"
DEFAULT_BODY_LIMIT = 32 * 1024 * 1024
LARGE_BODY = 256 * 1024  # decide in a thread above this (the prompt estimate scans the text)
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 600.0
RELOAD_RETRY_MAX = 5.0  # seconds at most between attempts to load a store that failed to load
STREAM_END_WAIT = 2.0  # seconds an upstream may take to end its response after the stream's terminal event


@dataclass
class ProxyConfig:
    store_path: Path
    activity_dsn: str | None
    no_auth: bool = False
    body_limit: int = DEFAULT_BODY_LIMIT
    reload_interval: float = 1.0
    grace_period: float = 30.0
    access_log: bool = False
    head_timeout: float = 10.0  # these four: gwctl.proxy.http's defaults (HEAD_TIMEOUT and so on)
    body_timeout: float = 60.0
    max_connections: int = 4096
    max_connections_per_client: int = 256


def _error(status: int, message: str, etype: str, code: str | None, request_id: str, param: str | None = None) -> Reply:
    body = orjson.dumps({"error": {"message": message, "type": etype, "code": code, "param": param}})
    return Reply(status, body, [(REQUEST_ID_HEADER, request_id)])


class Gateway:
    """One worker's proxy: the current store snapshot, the upstream client, the log writer."""

    def __init__(self, config: ProxyConfig, snapshot: Snapshot, environ: Mapping[str, str] | None = None):
        self.config = config
        self.snapshot = snapshot
        self.environ = os.environ if environ is None else environ
        self._stamp = self._store_stamp()
        self.reload_failure: dict | None = None  # the reload failing now: error, since (UTC), attempts
        self._failed_stamp = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_reload_log = 0.0
        self.pool: UpstreamPool | None = None
        self.writer = None
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._reload_task: asyncio.Task | None = None
        self._auth: dict[str, tuple] = {}  # source name -> (the Source it was resolved for, its auth headers)
        self._decisions = DecisionMemo()  # decide(), remembered per request shape for the current snapshot
        self._keys = gwkeys.VerifiedKeys()  # gateway keys that matched, for the current snapshot

    # --- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        proxies = upstream_proxies(self.environ)
        if proxies:
            log.info("upstream requests go through an egress proxy: %s", proxies.describe())
        self.pool = UpstreamPool(proxies=proxies)
        if self.config.activity_dsn or self.config.access_log:
            self.writer = ChildWriter(self.config.activity_dsn, access_log=self.config.access_log)
            await self.writer.start()
        self._reload_task = asyncio.create_task(self._reload_loop())

    async def drain(self, timeout: float) -> bool:
        """Wait for in-flight requests and streams to finish; True when all did."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        if self._reload_task:
            self._reload_task.cancel()
        if self.pool:
            await self.pool.close()
        if self.writer is not None:
            await self.writer.close()

    # --- hot reload ----------------------------------------------------------

    def _store_stamp(self):
        try:
            st = os.stat(self.config.store_path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the store again when its file changed; True when a new snapshot is in use.

        A reload that fails, for any reason (the file is invalid or has what ``gwctl validate`` calls an
        error, is missing, is unreadable for a moment, a descriptor limit), keeps the last good snapshot and is tried again until one succeeds: at once when
        the file changes again, else with a backoff of up to :data:`RELOAD_RETRY_MAX` seconds. A key
        revoked in the file is never forgotten because one read failed. The failure is logged and shown
        by ``/healthz`` until a reload succeeds.
        """
        stamp = self._store_stamp()
        failure = self.reload_failure
        if stamp == self._stamp:
            if failure is not None:  # the file is back as it was when it last loaded: nothing is missed
                log.info("the store is back as last loaded; nothing to reload")
                self.reload_failure = None
            return False
        now = time.monotonic()
        if failure is not None and stamp == self._failed_stamp and now < self._retry_at:
            return False
        try:
            if stamp is None:
                raise GwctlError(f"the store {self.config.store_path} is missing", "restore the file")
            snapshot = load(self.config.store_path).snapshot
            errors = [p for p in validate(snapshot, frozenset(self.environ)) if p.level == "error"]
            if errors:  # what `gwctl validate` calls an error never runs (the proxy refused to start on it, too)
                raise GwctlError(f"gwctl validate reports {len(errors)} error(s): "
                                 + "; ".join(f"{p.where}: {p.message}" for p in errors[:3]), "fix the store")
        except Exception as exc:  # noqa: BLE001 - whatever it was, keep serving with the last good store
            self._reload_failed(stamp, exc.message if isinstance(exc, GwctlError) else f"{type(exc).__name__}: {exc}", now)
            return False
        self._stamp = stamp
        self.snapshot = snapshot
        if failure is not None:
            log.info("store reload succeeded after %d failed attempt(s)", failure["attempts"])
        self.reload_failure = None
        log.info("store reloaded: %d sources, %d catalog entries, %d routes, %d keys",
                 len(snapshot.sources), len(snapshot.catalog), len(snapshot.routes), len(snapshot.keys))
        return True

    def _reload_failed(self, stamp, message: str, now: float) -> None:
        failure = self.reload_failure
        if failure is None or stamp != self._failed_stamp:
            attempts = 1 if failure is None else failure["attempts"] + 1
            self._backoff = self.config.reload_interval
        else:
            attempts = failure["attempts"] + 1
            self._backoff = min(self._backoff * 2, RELOAD_RETRY_MAX)
        self._failed_stamp = stamp
        self._retry_at = now + self._backoff
        since = failure["since"] if failure is not None else _utc_now()
        if failure is None or failure["error"] != message or now - self._last_reload_log >= 30.0:
            self._last_reload_log = now
            log.error("store changed but cannot be loaded; keeping the last good one and retrying: %s", message)
        self.reload_failure = {"error": message, "since": since, "attempts": attempts}

    def health(self) -> dict:
        """What ``/healthz`` says: alive, plus whether the store's last change is in use and the log keeps up."""
        detail: dict = {"status": "ok", "store": {"reload": "ok"}}
        if self.reload_failure is not None:  # /healthz needs no key: the error without the file's path
            detail["status"] = "degraded"
            failure = dict(self.reload_failure)
            failure["error"] = failure["error"].replace(str(self.config.store_path), "the store")
            detail["store"] = {"reload": "failing", **failure}
        writer = self.writer
        if writer is not None:
            activity = writer.health() if hasattr(writer, "health") else {"submitted": writer.submitted, "dropped": writer.dropped}
            detail["activity"] = activity
            if activity.get("dropped"):
                detail["status"] = "degraded"
        return detail

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                self.reload_if_changed()
            except Exception:  # pragma: no cover - never let reload kill the proxy
                log.exception("store reload failed")

    # --- requests ------------------------------------------------------------

    def _begin(self) -> None:
        """A request that waits for something is in flight (the SIGTERM drain waits for it)."""
        self.inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    def check_head(self, request: Request) -> Reply | None:
        """The gateway-key check of :meth:`handle`, made as soon as the request's head is in: a request
        without a valid key is answered 401 (and logged) before any of its body is read."""
        if self.config.no_auth or request.path == "/healthz":
            return None
        presented = gwkeys.from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if self._keys.verify(self.snapshot, presented) is not None:
            return None
        start = time.perf_counter()
        msg = "missing gateway key: send Authorization: Bearer <key> or x-api-key: <key>" if not presented else "invalid gateway key"
        return self._log_error(401, msg, "invalid_api_key", new_request_id(), None, request, request.path, start,
                               "authentication_error")

    def handle(self, request: Request):
        """Answer one request: a :class:`Reply` at once when nothing needs waiting for (a rejection, the
        health check, the model list), else the coroutine that forwards it (see gwctl.proxy.http)."""
        start = time.perf_counter()
        rid = new_request_id()
        path = request.path
        method = request.method
        if path == "/healthz" and method in ("GET", "HEAD"):
            return Reply(200, orjson.dumps(self.health()), [(REQUEST_ID_HEADER, rid)])
        snap = self.snapshot
        key_name = None
        if not self.config.no_auth:
            presented = gwkeys.from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
            key_name = self._keys.verify(snap, presented)
            if key_name is None:
                msg = "missing gateway key: send Authorization: Bearer <key> or x-api-key: <key>" if not presented else "invalid gateway key"
                return self._log_error(401, msg, "invalid_api_key", rid, None, request, path, start, "authentication_error")
        if path == "/v1/models" and method == "GET":
            return self._models(snap, rid)
        if path not in POST_PATHS:
            return self._log_error(404, f"no such endpoint: {method} {path}", "unknown_endpoint", rid, key_name, request, path, start)
        if method != "POST":
            return self._log_error(405, f"{path} takes POST", "method_not_allowed", rid, key_name, request, path, start)
        if request.too_large:
            return self._log_error(413, f"the request body is over the {self.config.body_limit}-byte limit",
                                   "body_too_large", rid, key_name, request, path, start)
        raw = request.body
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._log_error(400, "the request body is not valid JSON", "invalid_json", rid, key_name, request, path, start)
        if not isinstance(body, dict):
            return self._log_error(400, "the request body must be a JSON object", "invalid_json", rid, key_name, request, path, start)
        if too_deep(raw, body):
            return self._log_error(400, f"the request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep",
                                   "invalid_json", rid, key_name, request, path, start)
        agent = request.headers.get("x-gwctl-agent")
        full_path = path + (("?" + request.query) if request.query else "")
        if len(raw) > LARGE_BODY:
            return self._decide_aside(request, agent, full_path, body, raw, rid, key_name, start, snap)
        d = self._decisions.decide(snap, agent, full_path, body, len(raw))
        if not d.forwarded:
            return self._refuse(d, rid, key_name, path, start)
        return self._forward(request, d, body, raw, rid, key_name, start, snap)

    async def _decide_aside(self, request, agent, full_path, body, raw, rid, key_name, start, snap) -> Reply | None:
        """A big prompt takes a while to estimate: decide in a thread while the loop serves the others."""
        self._begin()  # held until the answer: the drain must never see this request idle between the two steps
        try:
            d = await asyncio.get_running_loop().run_in_executor(None, decide, snap, agent, full_path, body, False, len(raw))
            if not d.forwarded:
                return self._refuse(d, rid, key_name, request.path, start)
            return await self._forward(request, d, body, raw, rid, key_name, start, snap)
        finally:
            self._end()

    def server_rejected(self, status: int, code: str, message: str, request: Request | None) -> list[tuple[str, str]] | None:
        """The HTTP server answered on its own (malformed, too slow, head too large): a request gets its
        row and its request id like any other; a connection refused over a cap is only logged (by the server)."""
        if status == 503 and request is None:
            return None
        rid = new_request_id()
        peer = getattr(request.conn, "peer", None) if request is not None else None
        log.info("refused with %d %s%s: %s", status, code, f" from {peer}" if peer else "", message)
        agent = request.headers.get("x-gwctl-agent") if request is not None else None
        path = request.path if request is not None else ""
        self._write(rid, None, agent, "rejected", None, None, None, path, status, time.perf_counter(), None, None, None,
                    code, message, False)
        return [(REQUEST_ID_HEADER, rid)]

    def internal_error(self, request: Request, exc: BaseException) -> Reply:
        """A bug of ours answered 500 (the server logged the traceback); the request still gets its row."""
        rid = new_request_id()
        message = f"internal error in the gateway ({exc.__class__.__name__}); see its log"
        try:
            return self._log_error(500, message, "internal_error", rid, None, request, request.path, time.perf_counter(), "api_error")
        except Exception:  # pragma: no cover - the row is best effort; the answer is not
            return _error(500, message, "api_error", "internal_error", rid)

    def _refuse(self, d: Decision, rid, key_name, path, start) -> Reply:
        self._record(rid, key_name, d, path, d.status, start, None, d.rule, d.message)
        return Reply(d.status, orjson.dumps(d.error_body()), [(REQUEST_ID_HEADER, rid)])

    def _models(self, snap: Snapshot, rid: str) -> Reply:
        data = [
            {"id": f"{s.name}/{m}", "object": "model", "created": 0, "owned_by": s.name}
            for s in snap.sources.values() for m, on in s.models.items() if on
        ]
        return Reply(200, orjson.dumps({"object": "list", "data": data}), [(REQUEST_ID_HEADER, rid)])

    def _log_error(self, status, message, code, rid, key_name, request, path, start,
                   etype: str = "invalid_request_error") -> Reply:
        self._write(rid, key_name, request.headers.get("x-gwctl-agent"), "rejected", None, None, None, path, status,
                    start, None, None, None, code, message, False)
        return _error(status, message, etype, code, rid)

    def _upstream_headers(self, request: Request, d: Decision, snap: Snapshot) -> list[tuple[str, str]]:
        """The client's headers as forwarding allows, then the source's static headers and credential."""
        src = snap.sources[d.source]
        cached = self._auth.get(d.source)
        if cached is None or cached[0] is not src:  # resolved once per source object (a reload makes new ones)
            added = [*d.static_headers.items(), *auth_headers(src, self.environ).items()]
            cached = self._auth[d.source] = (src, added, replaced_names(d.static_headers, dict(added)))
        return request_headers(request.raw_headers, cached[2], cached[1])

    async def _forward(self, request: Request, d: Decision, body: dict, raw: bytes, rid, key_name, start, snap) -> Reply | None:
        """Send the request upstream and answer with what comes back (or stream it and return None)."""
        self._begin()
        try:
            feats = d.features
            api = feats.api if feats else "other"
            stream = bool(feats and feats.stream)
            changed = False
            if d.rewrite_model:
                body["model"] = d.upstream_model
                changed = True
            strip_usage = False
            if stream and api in ("chat", "completions"):
                opts = body.get("stream_options")
                if not (isinstance(opts, dict) and opts.get("include_usage")):
                    body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
                    strip_usage = True
                    changed = True
            payload = orjson.dumps(body) if changed else raw
            try:
                headers = self._upstream_headers(request, d, snap)
            except GwctlError as exc:
                self._record(rid, key_name, d, request.path, 502, start, None, "credential_missing", exc.message, stream)
                return _error(502, f"the gateway cannot reach source {d.source}: {exc.message}", "api_error", "credential_missing", rid)
            try:
                upstream = await self.pool.request("POST", d.upstream_url, headers, payload,
                                                   connect_timeout=d.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
                                                   read_timeout=d.read_timeout or DEFAULT_READ_TIMEOUT,
                                                   ca_file=snap.sources[d.source].ca_file)
            except UpstreamTimeout:
                return self._upstream_failed(504, "upstream_timeout", f"source {d.source} did not answer in time", rid, key_name, d, request, start, stream)
            except (UpstreamError, ValueError) as exc:
                return self._upstream_failed(502, "upstream_unreachable", f"source {d.source} is unreachable ({_why(exc)})", rid, key_name, d, request, start, stream)
            try:
                out_headers = response_headers(upstream.headers, snap.sources[d.source].response_headers)
                out_headers.append((REQUEST_ID_HEADER, rid))
                if (upstream.header("content-type") or "").startswith("text/event-stream"):
                    return await self._relay_stream(request, upstream, out_headers, d, api, strip_usage, rid, key_name, start)
                try:
                    data = await upstream.read()
                except UpstreamTimeout:
                    return self._upstream_failed(504, "upstream_timeout", f"source {d.source} timed out while answering", rid, key_name, d, request, start, stream)
                except UpstreamError as exc:
                    return self._upstream_failed(502, "upstream_unreachable", f"source {d.source} broke the connection ({_why(exc)})", rid, key_name, d, request, start, stream)
                usage = usage_from_body(api, data) if upstream.status < 400 else None
                self._record(rid, key_name, d, request.path, upstream.status, start, usage,
                             None, None if upstream.status < 400 else f"upstream answered {upstream.status}", stream)
                return Reply(upstream.status, data, out_headers, content_type=None)
            except BaseException:
                upstream.abort()
                raise
            finally:
                upstream.release()
        finally:
            self._end()

    async def _relay_stream(self, request, upstream, out_headers, d, api, strip_usage, rid, key_name, start):
        """Relay an event stream as it arrives. Once its terminal event has reached the client the answer is
        whole: the client's stream ends there, and neither side hanging up afterwards makes it a failure."""
        resp = request.start_stream(upstream.status, out_headers)
        meter = StreamMeter(api, strip_usage_chunk=strip_usage)
        error = None
        status = upstream.status
        delivered = False
        try:
            async for chunk in upstream:
                out = meter.feed(chunk)
                if out and not delivered:
                    await resp.write(out)
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
                await self._finish_upstream(upstream, meter)
        except (ConnectionResetError, asyncio.CancelledError):
            if not delivered:
                error, status = "client disconnected", 499
            upstream.abort()  # hang up on the upstream too
            self._record(rid, key_name, d, request.path, status, start, meter.usage(), None, error, True)
            raise
        except UpstreamTimeout:
            if not delivered:
                error, status = "upstream timed out mid-stream", 504
        except UpstreamError as exc:
            if not delivered:
                error, status = f"upstream broke the stream ({_why(exc)})", 502
        self._record(rid, key_name, d, request.path, status, start, meter.usage(), None, error, True)
        return None

    @staticmethod
    async def _finish_upstream(upstream, meter: StreamMeter) -> None:
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

    def _upstream_failed(self, status, code, message, rid, key_name, d, request, start, stream) -> Reply:
        log.warning("%s %s: %s", rid, request.path, message)
        self._record(rid, key_name, d, request.path, status, start, None, code, message, stream, kind="error")
        return _error(status, message, "api_error", code, rid)

    # --- activity --------------------------------------------------------------

    def _record(self, rid, key_name, d: Decision, path, status, start, usage: Usage | None, rule, error, stream=False, kind=None):
        """Log one request: the facts go to the writer process, which prices them (off this core)."""
        self._write(rid, key_name, d.agent, kind or d.kind, d.source, d.client_model, d.upstream_model, path, status,
                    start, None if usage is None else usage.counts(), d.entry if d.forwarded else None, d.catalog_ref,
                    rule, error, stream)

    def _write(self, rid, key_name, agent, kind, source, model, upstream_model, path, status, start, usage, entry, ref,
               rule, error, stream):
        if self.writer is not None:
            self.writer.submit(LogEntry(time.time(), rid, key_name, agent, kind, source, model, upstream_model, path, status,
                                (time.perf_counter() - start) * 1000, usage, entry, ref, rule, error, stream))


def upstream_proxies(environ: Mapping[str, str]) -> Proxies:
    """The egress proxy settings in ``environ`` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), as
    httpx reads them for ``gwctl source test``; a proxy the gateway cannot use is a clear error."""
    try:
        return Proxies(environ)
    except ProxySettingError as exc:
        raise GwctlError(f"cannot use the egress proxy from the environment: {exc}",
                         f"point {exc.variable} at an http:// proxy, or unset it for the gateway "
                         f"(env -u {exc.variable} gwctl proxy ...)") from None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _why(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or exc.__class__.__name__


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _reseed_request_ids() -> None:
    """After fork: each worker gets its own prefix, so ids never collide."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = secrets.token_hex(4)
    _ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process run and cheap: a random prefix and a counter (16 hex digits)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


# --- serving --------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


async def serve(config: ProxyConfig, snapshot: Snapshot, host: str, port: int, sock=None, ready=None) -> int:
    """Serve until SIGTERM/SIGINT; drain in-flight requests; flush the log; return the exit code."""
    gateway = Gateway(config, snapshot)
    await gateway.open()
    loop = asyncio.get_running_loop()
    server = HttpServer(gateway.handle, body_limit=config.body_limit, keepalive_timeout=75.0,
                        on_error=gateway.internal_error, on_head=gateway.check_head, on_reject=gateway.server_rejected,
                        head_timeout=config.head_timeout, body_timeout=config.body_timeout,
                        max_connections=config.max_connections,
                        max_connections_per_client=config.max_connections_per_client)
    if sock is not None:
        srv = await loop.create_server(server, sock=sock, backlog=1024)
    else:
        srv = await loop.create_server(server, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass
    if ready is not None:
        ready(srv)
    await stop.wait()
    log.info("shutting down: no new connections; waiting up to %.0fs for %d in-flight requests", config.grace_period, gateway.inflight)
    srv.close()
    server.closing = True  # answers from now on say Connection: close
    drained = await gateway.drain(config.grace_period)
    if not drained:
        log.warning("grace period over with %d requests still running", gateway.inflight)
    await server.shutdown(1.0)
    await gateway.close()
    log.info("stopped")
    return 0


def run(config: ProxyConfig, snapshot: Snapshot, host: str, port: int, workers: int = 1) -> int:
    """Run the proxy in the foreground (pre-forked workers sharing one socket when workers > 1)."""
    import socket

    upstream_proxies(os.environ)  # an unusable egress proxy is an error now, not a 502 per request
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise GwctlError(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port, or stop what is using it") from None
    sock.listen(1024)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    url = f"http://{host if family == socket.AF_INET else '[' + host + ']'}:{bound}"

    def announce(_srv):
        sys.stderr.write(f"gwctl proxy ready on {url} (OpenAI base_url {url}/v1; workers {workers})\n")
        sys.stderr.flush()

    if workers <= 1:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(serve(config, snapshot, host, bound, sock=sock, ready=announce))
        finally:
            loop.close()
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised through subprocess tests
            code = 1
            try:
                _reseed_request_ids()
                loop = _new_loop()
                asyncio.set_event_loop(loop)
                code = loop.run_until_complete(serve(config, snapshot, host, bound, sock=sock))
            finally:
                os._exit(code)
        children.append(pid)
    announce(None)

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:  # pragma: no cover
                continue
        code = code or os.waitstatus_to_exitcode(status)
    return code
