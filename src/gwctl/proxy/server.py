"""The forwarding proxy: authenticate, decide (the same pure function as the dry-run), forward, relay, record.

:class:`Gateway` is one worker's proxy, the composition of its stages, each in
a module of its own, each taking the request's :class:`~gwctl.proxy.flow.Flow`:

1. authenticate (:mod:`gwctl.proxy.auth`): the gateway key, against the current store;
2. decide (:mod:`gwctl.proxy.decide`): the endpoint and body checks, then
   :func:`gwctl.core.decision.decide` (through its per-shape memo,
   :class:`~gwctl.core.decision.DecisionMemo`, which returns what decide returns);
   a rejected request is answered with the decision's own error body;
3. forward (:mod:`gwctl.proxy.forward`): the upstream request and a whole answer;
4. relay (:mod:`gwctl.proxy.relay`): an event stream, as it comes;
5. record (:mod:`gwctl.proxy.recorder`): one activity row per request, whatever its fate.

Beside them: hot reload of the store (:mod:`gwctl.proxy.reload`), :func:`serve`
(one worker's event loop) and :func:`run` (the process, and its forked
workers: :mod:`gwctl.proxy.master`).

On uvloop, a lean server protocol (gwctl.proxy.http) and a lean pooled
upstream client (gwctl.proxy.upstream), both on httptools' parser: aiohttp's
server and client cost ~3x and ~4x the CPU per request on this machine, and
the activity log is written by a child process (gwctl.activity.child)
(benchmarks/README.md). The proxy adds no routing or catalog rule of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, Mapping

import orjson

from gwctl.activity.child import ChildWriter
from gwctl.core.config import Snapshot
from gwctl.core.limits import Refusal
from gwctl.errors import GwctlError
from gwctl.proxy.auth import Authenticator
from gwctl.proxy.decide import LARGE_BODY, Decider, models_reply, refusal
from gwctl.proxy.failover import Failover
from gwctl.proxy.flow import (
    INTERNAL_ERROR,
    REQUEST_ID_HEADER,
    Flow,
    InFlight,
    bug_message,
    error_bytes,
    error_reply,
    new_request_id,
    own_error,
)
from gwctl.proxy.forward import Forwarder
from gwctl.proxy.http import HttpServer, Reply, Request
from gwctl.proxy.ledger import HEARTBEAT, Ledger, LocalBank
from gwctl.proxy.limiter import Limiter
from gwctl.proxy.recorder import Recorder
from gwctl.proxy.reload import StoreWatcher
from gwctl.proxy.tracing import Tracing, from_environ
from gwctl.proxy.upstream import Proxies, ProxySettingError, UpstreamPool

log = logging.getLogger("gwctl.proxy")

DEFAULT_BODY_LIMIT = 32 * 1024 * 1024

__all__ = ["REQUEST_ID_HEADER", "Gateway", "ProxyConfig", "new_request_id", "run", "serve", "upstream_proxies"]


PROBES = frozenset({"/healthz", "/readyz"})  # answered without a key and never logged: for load balancers
READY_CACHE_S = 1.0  # /readyz checks the database at most this often
READY_TIMEOUT_S = 2.0  # and gives it this long to answer


@dataclass
class ProxyConfig:
    store_path: Path
    activity_dsn: str | None
    no_auth: bool = False
    body_limit: int = DEFAULT_BODY_LIMIT
    reload_interval: float = 1.0
    grace_period: float = 30.0
    access_log: bool = False
    log_format: str = "text"  # the proxy's own log and the access log: text, or one JSON object a line
    head_timeout: float = 10.0  # these four: gwctl.proxy.http's defaults (HEAD_TIMEOUT and so on)
    body_timeout: float = 60.0
    max_connections: int = 4096
    max_connections_per_client: int = 256
    metrics_dir: str | None = None  # the run directory of the metrics' snapshots; None: metrics off


Answer = Coroutine[Any, Any, Reply | None]
"""What :meth:`Gateway.handle` returns: the coroutine of the request's answer (see there)."""


async def _at_once(reply: Reply) -> Reply:
    """An answer known without waiting (a rejection, the health check), in the shape every answer has."""
    return reply


class Gateway:
    """One worker's proxy: the current store snapshot and the stages a request goes through."""

    def __init__(self, config: ProxyConfig, snapshot: Snapshot, environ: Mapping[str, str] | None = None):
        self.config = config
        self.snapshot = snapshot
        self.environ = os.environ if environ is None else environ
        self.watcher = StoreWatcher(config.store_path, self.environ, config.reload_interval)
        self.auth = Authenticator(required=not config.no_auth)
        self._keys = self.auth.keys  # gateway keys that matched, for the current snapshot
        self.decider = Decider(config.body_limit)
        self.recorder = Recorder()
        self.limiter = self.recorder.limiter = Limiter(Ledger(LocalBank()))
        self.flights = InFlight()
        self.forwarder = Forwarder(self.environ, self.recorder, self.flights)
        self.forwarder.failover = Failover(self.forwarder, self.flights)
        self.tracing: Tracing | None = None  # set by open() when the environment asks for traces
        self.metrics = None
        if config.metrics_dir:  # Prometheus metrics: the stages' hooks count (gwctl.proxy.metrics)
            from gwctl.proxy.metrics import attach

            self.metrics = attach(self, config.metrics_dir)
        self._closing = False
        self._reload_task: asyncio.Task | None = None
        self._ledger_task: asyncio.Task | None = None
        self._database: tuple[float, dict] | None = None  # the last database check: (monotonic time, its result)
        self._checking: asyncio.Future | None = None  # the database check under way, shared by concurrent probes

    # the parts other code plugs in or looks at (serve, the tests, the benchmarks)
    pool = property(lambda self: self.forwarder.pool, lambda self, pool: setattr(self.forwarder, "pool", pool))
    writer = property(lambda self: self.recorder.writer, lambda self, w: setattr(self.recorder, "writer", w))
    inflight = property(lambda self: self.flights.count)

    # --- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Start the upstream pool, the log writer process and the reload loop."""
        proxies = upstream_proxies(self.environ)
        if proxies:
            log.info("upstream requests go through an egress proxy: %s", proxies.describe())
        self.pool = UpstreamPool(proxies=proxies)
        self.tracing = self.recorder.tracing = from_environ(self.environ)  # per worker: after the fork
        if self.config.activity_dsn or self.config.access_log:
            self.writer = ChildWriter(
                self.config.activity_dsn,
                access_log=self.config.access_log,
                log_format=self.config.log_format,
                metrics_dir=self.config.metrics_dir,
            )
            await self.writer.start()
        if self.config.activity_dsn:  # limits shared through the log's database, and rebuilt from it
            from gwctl.activity.meters import SqlBank

            self.limiter.ledger.bank = SqlBank(self.config.activity_dsn)
        self._reload_task = asyncio.create_task(self._reload_loop())
        self._ledger_task = asyncio.create_task(self._ledger_loop())
        if self.metrics is not None:
            self.metrics.start()

    async def drain(self, timeout: float) -> bool:
        """Wait for in-flight requests and streams to finish; True when all did."""
        self._closing = True
        return await self.flights.wait_idle(timeout)

    async def close(self) -> None:
        """Stop the reload loop, close the upstream pool, and flush and stop the log writer process."""
        if self._reload_task:
            self._reload_task.cancel()
        if self._ledger_task:
            self._ledger_task.cancel()
        await self.limiter.ledger.close()
        if self.pool:
            await self.pool.close()
        if self.writer is not None:
            await self.writer.close()
        if self.tracing is not None:  # export the spans still queued
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)
        if self.metrics is not None:
            self.metrics.stop()

    # --- hot reload ----------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Load the store again when its file changed; True when a new snapshot is in use. A failure keeps the
        last good one and is retried (:meth:`gwctl.proxy.reload.StoreWatcher.reload_if_changed`)."""
        snapshot = self.watcher.reload_if_changed()
        if snapshot is None:
            return False
        self.snapshot = snapshot
        self.limiter.ledger.keep_only(snapshot.limits)
        return True

    async def _reload_loop(self) -> None:
        """Every ``reload_interval`` seconds, :meth:`reload_if_changed`; never raises."""
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                self.reload_if_changed()
            except Exception:  # pragma: no cover - never let reload kill the proxy
                log.exception("store reload failed")

    async def _ledger_loop(self) -> None:
        """Every second: settle what requests spent with the bank, return unused leases; never raises."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self.limiter.ledger.heartbeat()
            except Exception:  # pragma: no cover - never let the ledger kill the proxy
                log.exception("settling limits failed")

    def health(self) -> dict:
        """What ``/healthz`` says: alive, plus whether the store's last change is in use and the log keeps up."""
        store = self.watcher.health()
        detail: dict = {"status": "ok" if store["reload"] == "ok" else "degraded", "store": store}
        writer = self.writer
        if writer is not None:
            activity = writer.health()
            detail["activity"] = activity
            if activity.get("dropped"):
                detail["status"] = "degraded"
        return detail

    async def readiness(self) -> tuple[bool, dict]:
        """What ``/readyz`` says: ready when a store is loaded (the last good one counts: it serves), the log
        writer process runs and the activity log's database answers (checked at most every second; probes
        in between share the last answer)."""
        checks: dict = {"store": self.watcher.health()}
        ready = self.snapshot is not None
        writer = self.writer
        if writer is not None:
            alive = bool(writer.health().get("writer_alive"))
            if not alive:
                writer.revive()
            checks["activity_writer"] = {"alive": alive}
            ready = ready and alive
        if self.config.activity_dsn:
            database = await self._database_check()
            checks["database"] = database
            ready = ready and database["reachable"]
        return ready, {"status": "ready" if ready else "not_ready", "checks": checks}

    async def _database_check(self) -> dict:
        now = time.monotonic()
        cached = self._database
        if cached is not None and now - cached[0] < READY_CACHE_S:
            return cached[1]
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check_database())
        return dict(await asyncio.shield(self._checking))

    async def _check_database(self) -> dict:
        from gwctl.activity.reachable import check

        try:
            dsn = self.config.activity_dsn
            assert dsn is not None
            ok, why_not, ms = await asyncio.to_thread(check, dsn, READY_TIMEOUT_S)
            result: dict = {"reachable": ok, "latency_ms": round(ms, 1)}
            if why_not:
                result["error"] = why_not
            self._database = (time.monotonic(), result)
            return result
        finally:
            self._checking = None

    async def _readyz(self, rid: str) -> Reply:
        ready, detail = await self.readiness()
        return Reply(503 if not ready else 200, orjson.dumps(detail), [(REQUEST_ID_HEADER, rid)])

    # --- requests ------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """Answer one request: authenticate, decide, limit, then forward (relay, record).

        Always a coroutine, which the server awaits for a Reply (or None when the answer was streamed): the
        forward stage's own coroutine when the request goes upstream, else :func:`_at_once` around the
        answer known at once (a rejection, the health check, the model list). ``handle`` itself stays a
        plain function so that a forwarded request's coroutine chain is no deeper than before (an ``async
        def handle`` would add a level to every resumption); the rejections pay one coroutine that never
        suspends, measured at ~0.1-0.2 µs of CPU against ~40-50 µs for a request the decision refuses in
        benchmarks/worker_cpu.py's harness (under 1%), and nothing changes for forwarded requests.
        """
        start = time.perf_counter()
        rid = new_request_id()
        path, method = request.path, request.method
        if path in PROBES and method in ("GET", "HEAD"):
            if path == "/readyz":
                return self._readyz(rid)
            return _at_once(Reply(200, orjson.dumps(self.health()), [(REQUEST_ID_HEADER, rid)]))
        snap = self.snapshot
        flow = request.context = Flow(request, rid, start, snap)
        if self.tracing is not None:
            self.tracing.start(flow)
        auth = self.auth
        if auth.required:  # 1. authenticate
            flow.key_name = name = auth.key_name(request, snap)
            if name is None:
                return _at_once(
                    self.recorder.refuse(
                        flow, 401, auth.refusal_message(request), "invalid_api_key", "authentication_error"
                    )
                )
            expired = auth.expired(snap, name, time.time())
            if expired is not None:
                return _at_once(self.recorder.refuse(flow, 401, expired, "key_expired", "authentication_error"))
        if path == "/v1/models" and method == "GET":
            if flow.trace is not None:  # no row: the span ends here
                flow.trace.end(flow, 200, None, None, "models")
            return _at_once(models_reply(snap, rid))
        problem = self.decider.parse(flow)  # 2. decide
        if problem is not None:
            return _at_once(self.recorder.refuse(flow, *problem))
        assert request.body is not None  # parse read it
        if len(request.body) > LARGE_BODY:
            return self._decide_aside(flow)
        d = flow.decision = self.decider.decide(flow)
        if not d.forwarded:
            return _at_once(self._refuse(flow))
        if Limiter.applies(flow):  # 3. limit (only when the store has limits or the key a scope)
            verdict = self.limiter.try_admit(flow)
            if verdict is True:  # a limit would refuse, or the bank must be asked: the async stage decides
                return self._limit_then_forward(flow)
            if isinstance(verdict, Refusal):
                return _at_once(self._limited(flow, verdict))
        return self.forwarder.forward(flow)  # 4. forward, 5. relay, 6. record

    async def _decide_aside(self, flow: Flow) -> Reply | None:
        """A big prompt takes a while to estimate: decide in a thread while the loop serves the others."""
        self.flights.begin()  # held until the answer: the drain must never see this request idle between the two steps
        try:
            d = flow.decision = await self.decider.decide_aside(flow)
            if not d.forwarded:
                return self._refuse(flow)
            if Limiter.applies(flow):
                return await self._limit_then_forward(flow)
            return await self.forwarder.forward(flow)
        finally:
            self.flights.end()

    async def _limit_then_forward(self, flow: Flow) -> Reply | None:
        """The key's scope and every applicable limit, then forward; whatever happens, the reservations
        are settled (by the record stage, or here when a bug skipped it)."""
        self.flights.begin()
        try:
            refusal = await self.limiter.admit(flow)
            if refusal is not None:
                return self._limited(flow, refusal)
            return await self.forwarder.forward(flow)
        finally:
            if flow.ticket is not None:
                self.limiter.settle(flow, 499, None)
            self.flights.end()

    def _limited(self, flow: Flow, refusal: Refusal) -> Reply:
        """A limit or the key's scope refuses the request: record it, answer with the refusal."""
        return self.recorder.limited(flow, refusal)

    def _refuse(self, flow: Flow) -> Reply:
        """The decision rejects the request: record it, answer with the decision's error."""
        d = flow.decision
        assert d is not None  # decided
        self.recorder.record(flow, d.status, None, d.rule, d.message)
        return refusal(flow)

    def check_head(self, request: Request) -> Reply | None:
        """The gateway-key check of :meth:`handle`, made as soon as the request's head is in: a request
        without a valid key is answered 401 (and logged) before any of its body is read."""
        if not self.auth.required or request.path in PROBES:
            return None
        snap = self.snapshot
        name = self.auth.key_name(request, snap)
        if name is not None:
            expired = self.auth.expired(snap, name, time.time())
            if expired is None:
                return None
            flow = Flow(request, new_request_id(), time.perf_counter(), snap)
            flow.key_name = name
            return self.recorder.refuse(flow, 401, expired, "key_expired", "authentication_error")
        flow = Flow(request, new_request_id(), time.perf_counter(), snap)
        return self.recorder.refuse(
            flow, 401, self.auth.refusal_message(request), "invalid_api_key", "authentication_error"
        )

    def server_rejected(self, status: int, code: str, message: str, request: Request | None, path: str) -> Reply | None:
        """The HTTP server answers on its own (malformed, too slow, head too large): a request gets its row,
        its request id and its client API's error shape (by the request line's path, even when the head
        is not whole) like any other; a connection refused over a cap is only logged (by the server), and
        answered with the server's default."""
        if status == 503 and request is None:
            return None
        rid = new_request_id()
        peer = getattr(request.conn, "peer", None) if request is not None else None
        log.info("refused with %d %s%s: %s", status, code, f" from {peer}" if peer else "", message)
        self.recorder.rejected(rid, None, request, time.perf_counter(), status, code, message)
        etype = "api_error" if status == 503 else "invalid_request_error"
        return Reply(status, error_bytes(path, status, own_error(message, etype, code)), [(REQUEST_ID_HEADER, rid)])

    def internal_error(self, request: Request, exc: BaseException) -> Reply:
        """A bug of ours answered 500 (the server logged the traceback); the request still gets one row: in the
        flow the handler began (its request id, its key, its span), unless a stage already recorded it (the
        stage that broke records its own row when it has more to say, such as the usage an answer carried)."""
        flow = request.context
        if not isinstance(flow, Flow):
            flow = Flow(request, new_request_id(), time.perf_counter(), self.snapshot)
        message = bug_message(exc)
        if flow.recorded:
            return error_reply(flow, 500, message, "api_error", INTERNAL_ERROR)
        try:
            return self.recorder.refuse(flow, 500, message, INTERNAL_ERROR, "api_error")
        except Exception:  # pragma: no cover - the row is best effort; the answer is not
            return error_reply(flow, 500, message, "api_error", INTERNAL_ERROR)


def upstream_proxies(environ: Mapping[str, str]) -> Proxies:
    """The egress proxy settings in ``environ`` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), as
    httpx reads them for ``gwctl source test``; a proxy the gateway cannot use is a clear error."""
    try:
        return Proxies(environ)
    except ProxySettingError as exc:
        raise GwctlError(
            f"cannot use the egress proxy from the environment: {exc}",
            f"point {exc.variable} at an http:// proxy, or unset it for the gateway "
            f"(env -u {exc.variable} gwctl proxy ...)",
        ) from None


# --- serving --------------------------------------------------------------


async def serve(config: ProxyConfig, snapshot: Snapshot, host: str, port: int, sock=None, ready=None) -> int:
    """Serve until SIGTERM/SIGINT; drain in-flight requests; flush the log; return the exit code."""
    gateway = Gateway(config, snapshot)
    await gateway.open()
    loop = asyncio.get_running_loop()
    server = HttpServer(
        gateway.handle,
        body_limit=config.body_limit,
        keepalive_timeout=75.0,
        on_error=gateway.internal_error,
        on_head=gateway.check_head,
        on_reject=gateway.server_rejected,
        head_timeout=config.head_timeout,
        body_timeout=config.body_timeout,
        max_connections=config.max_connections,
        max_connections_per_client=config.max_connections_per_client,
    )
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
    log.info(
        "shutting down: no new connections; waiting up to %.0fs for %d in-flight requests",
        config.grace_period,
        gateway.inflight,
    )
    srv.close()
    server.closing = True  # answers from now on say Connection: close
    drained = await gateway.drain(config.grace_period)
    if not drained:
        log.warning("grace period over with %d requests still running", gateway.inflight)
    await server.shutdown(1.0)
    await gateway.close()
    log.info("stopped")
    return 0


def run(
    config: ProxyConfig,
    snapshot: Snapshot,
    host: str,
    port: int,
    workers: int = 1,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run the proxy in the foreground: :func:`gwctl.proxy.master.run` (the process, and its forked workers),
    named here, where the CLI finds it (imported when called: the master module builds on this one)."""
    from gwctl.proxy import master

    return master.run(config, snapshot, host, port, workers, metrics)
