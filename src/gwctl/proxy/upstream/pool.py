"""The keep-alive pool: the one object callers use to send a request upstream.

A request takes the newest idle connection for its ``(scheme, host, port)`` (and
CA file) or opens one -- directly, through an egress proxy, or through a CONNECT
tunnel -- sends, and returns once the head is in. A reused connection that dies
before the first response byte is retried once on a fresh one; nothing else is.
Timers are per pool, not per request: one sweeper closes idle connections past
``idle_timeout``, one watchdog fails answers silent for their read timeout
(arming and cancelling a timer per request costs a noticeable share of a
proxied request). Connections reach back only through :meth:`UpstreamPool.watch`,
:meth:`UpstreamPool.unwatch` and :meth:`UpstreamPool.put_idle`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Callable, Iterable

from gwctl.proxy.upstream.connection import ConnState, _Conn
from gwctl.proxy.upstream.egress import Proxies
from gwctl.proxy.upstream.errors import (
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamTLSError,
    _Stale,
)
from gwctl.proxy.upstream.response import UpstreamResponse
from gwctl.proxy.upstream.target import _CACHE_LIMIT, _build_request, _split_url, _Target
from gwctl.proxy.upstream.tunnel import open_tunnel
from gwctl.tls import names_in, probe_context, trust_context, verify_failure

# The watchdog looks at the awaited answers every read_timeout / _TICKS_PER_TIMEOUT seconds (within
# these bounds), so a timeout fires at most an eighth late: one timer per pool instead of a timer
# armed and cancelled per request (~2 us each on uvloop, a noticeable share of a proxied request).
_TICKS_PER_TIMEOUT = 8
_MIN_TICK = 0.005
_MAX_TICK = 1.0
_CLOSED = ConnState.CLOSED


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to any number of upstream hosts.

    One connection per in-flight request; when a response is released its
    connection waits, newest first, for the next request to the same
    ``(scheme, host, port)`` -- and, for https, verified against the same CA
    file. ``proxies`` (none by default) sends upstreams through an egress proxy.
    ``ssl_context`` replaces the default trust (:func:`gwctl.tls.trust_context`)
    for requests without a ``ca_file``. Use it from one event loop.
    """

    def __init__(
        self,
        *,
        max_idle_per_host: int = 256,
        idle_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Proxies | None = None,
    ):
        if max_idle_per_host < 0:
            raise ValueError("max_idle_per_host must be >= 0")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0")
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._custom_ssl = ssl_context is not None
        self._ca_contexts: dict[str, tuple[tuple, ssl.SSLContext]] = {}  # CA file -> (its stat, context)
        self._proxies = proxies
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._targets: dict[str, _Target] = {}
        self._urls: dict[str, tuple[_Target, str]] = {}  # whole URL -> its split (the decision's URLs repeat)
        self._sweeper: asyncio.TimerHandle | None = None
        self._waiting: set[_Conn] = set()  # connections whose answer is awaited: the watchdog's round
        # unwatch(conn): take a connection off that round (the set's own method: no Python frame per answer)
        self.unwatch: Callable[[_Conn], None] = self._waiting.discard
        self._watchdog: asyncio.TimerHandle | None = None
        self._tick = _MAX_TICK
        self._closed = False
        self.connections_opened = 0  # for tests and stats

    # --- public ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        ca_file: str | None = None,
    ) -> UpstreamResponse:
        """Send one request; return once the status line and headers arrived.

        ``ca_file``: for an https URL, also trust the CAs in this PEM file (on top of
        the default trust store); connections verified with it are pooled apart.

        Raises ValueError for a request that cannot be written (bad URL, method,
        header name, or CR/LF/NUL anywhere in the head), else an UpstreamError.
        """
        if self._closed:
            raise RuntimeError("the upstream pool is closed")
        split = self._urls.get(url)
        if split is None:
            split = _split_url(url, self._targets, self._proxies)
            if len(self._urls) >= _CACHE_LIMIT:
                self._urls.clear()
            self._urls[url] = split
        target, path = split
        if isinstance(headers, dict):
            headers = headers.items()
        elif not isinstance(headers, (list, tuple)):
            headers = list(headers)
        data = _build_request(method, target, path, headers, b"" if body is None else body)
        key: tuple = target.key
        if ca_file is not None and target.tls:
            key = (*key, ca_file)
        conn = self._take_idle(key)
        if conn is None:
            conn = await self._connect(target, connect_timeout, key, ca_file)
        resp = conn.send(data, method, read_timeout)
        try:
            await resp.head_received()
        except _Stale:
            conn.close()
            conn = await self._connect(target, connect_timeout, key, ca_file)
            resp = conn.send(data, method, read_timeout)
            try:
                await resp.head_received()
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return resp

    async def close(self) -> None:
        """Close every idle connection; responses still in use close when released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def idle_count(self) -> int:
        """How many pooled connections are open and waiting for a request."""
        return sum(1 for conns in self._idle.values() for c in conns if c.state is not _CLOSED)

    # --- internals ---------------------------------------------------------------

    def _take_idle(self, key) -> _Conn | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        oldest_ok = None
        while conns:
            conn = conns.pop()
            if conn.state is _CLOSED:
                continue
            if oldest_ok is None:
                oldest_ok = conn.loop.time() - self.idle_timeout
            if conn.idle_since <= oldest_ok:
                # newest first: everything below this one is older still
                conn.close()
                for c in conns:
                    c.close()
                conns.clear()
                return None
            return conn
        return None

    # --- for its connections ---------------------------------------------------

    def put_idle(self, conn: _Conn) -> None:
        """Pool a connection whose answer was released (or close it: the pool is closed, or full)."""
        if self._closed:
            conn.close()
            return
        key = conn.key
        conns = self._idle.get(key)
        if conns is None:
            conns = self._idle[key] = []
        if len(conns) >= self.max_idle_per_host:
            conns[:] = [c for c in conns if c.state is not _CLOSED]
            if len(conns) >= self.max_idle_per_host:
                conn.close()
                return
        conn.idle_since = conn.loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(conn.idle_since + self.idle_timeout, self._sweep, conn.loop)

    def watch(self, conn: _Conn) -> None:
        """Watch ``conn``'s answer for its read timeout (until it completes, fails or closes)."""
        self._waiting.add(conn)
        if self._watchdog is None or conn.timeout < self._tick * _TICKS_PER_TIMEOUT:
            self._schedule_watchdog(conn.loop, conn.timeout)

    # --- timers ---------------------------------------------------------------

    def _schedule_watchdog(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        tick = min(_MAX_TICK, max(_MIN_TICK, timeout / _TICKS_PER_TIMEOUT))
        if self._watchdog is not None:
            if tick >= self._tick:
                return
            self._watchdog.cancel()
        self._tick = tick
        self._watchdog = loop.call_later(tick, self._check_timeouts, loop)

    def _check_timeouts(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = None
        now = loop.time()
        shortest = None
        for conn in list(self._waiting):
            if conn.check_timeout(now):
                shortest = conn.timeout if shortest is None else min(shortest, conn.timeout)
            else:
                self._waiting.discard(conn)
        if shortest is not None and not self._closed:
            self._schedule_watchdog(loop, shortest)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close idle connections past idle_timeout (lists are oldest first)."""
        self._sweeper = None
        now = loop.time()
        cutoff = now - self.idle_timeout
        next_due = None
        for key in list(self._idle):
            conns = self._idle[key]
            keep = []
            for c in conns:
                if c.state is _CLOSED:
                    continue
                if c.idle_since <= cutoff:
                    c.close()
                    continue
                keep.append(c)
            if keep:
                self._idle[key] = keep
                due = keep[0].idle_since + self.idle_timeout
                next_due = due if next_due is None else min(next_due, due)
            else:
                del self._idle[key]
        if next_due is not None and not self._closed:
            self._sweeper = loop.call_at(next_due, self._sweep, loop)

    def _ssl(self, ca_file: str | None) -> ssl.SSLContext:
        """The context for a new TLS connection: one per CA file (remade when the file changes)."""
        if ca_file is None:
            if self._ssl_context is None:
                ctx = trust_context()
                ctx.set_alpn_protocols(["http/1.1"])
                self._ssl_context = ctx
            return self._ssl_context
        st = os.stat(ca_file)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._ca_contexts.get(ca_file)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ctx = trust_context(ca_file)
        ctx.set_alpn_protocols(["http/1.1"])
        if len(self._ca_contexts) >= 64:
            self._ca_contexts.clear()
        self._ca_contexts[ca_file] = (stamp, ctx)
        return ctx

    async def _connect(self, target: _Target, connect_timeout: float, key: tuple, ca_file: str | None = None) -> _Conn:
        loop = asyncio.get_running_loop()
        ctx = None
        if target.tls:
            try:
                ctx = self._ssl(ca_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                raise UpstreamConnectError(f"cannot use the CA file {ca_file} for {target.name}: {reason}") from exc
        proxy = target.proxy
        via = f" through proxy {proxy.name}" if proxy is not None else ""
        try:
            async with asyncio.timeout(connect_timeout):
                if proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self, target, loop, key),
                        target.host,
                        target.port,
                        ssl=ctx,
                        server_hostname=target.host if ctx is not None else None,
                    )
                elif ctx is None:  # plain http: absolute-form requests to the proxy (see _Target.use_proxy)
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self, target, loop, key), proxy.host, proxy.port
                    )
                else:
                    conn = await open_tunnel(loop, target, proxy, ctx, lambda: _Conn(self, target, loop, key))
        except TimeoutError:
            raise UpstreamConnectTimeout(
                f"connecting to {target.name}{via} took longer than {connect_timeout:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            names = None
            if getattr(exc, "verify_code", None) in (62, 64) and proxy is None:
                names = await self._peer_names(loop, target, ca_file, connect_timeout)
            message, hint = verify_failure(exc, target.host, names, ca_file)
            raise UpstreamTLSError(f"{message}{via}; {hint}") from exc
        except ssl.SSLError as exc:
            raise UpstreamTLSError(f"TLS handshake with {target.name}{via} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or exc.__class__.__name__
            where = f"proxy {proxy.name} (for {target.name})" if proxy is not None else target.name
            raise UpstreamConnectError(f"cannot connect to {where}: {reason}") from exc
        self.connections_opened += 1
        return conn

    async def _peer_names(
        self, loop: asyncio.AbstractEventLoop, target: _Target, ca_file: str | None, timeout: float
    ) -> list[str] | None:
        """After a host-name mismatch: the names the (trusted) certificate is for, read over a second
        handshake that skips only the host-name check. None when that cannot be learned."""
        if ca_file is None and self._custom_ssl:
            return None  # a caller's own context: its trust cannot be repeated here
        try:
            async with asyncio.timeout(min(timeout, 5.0)):
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, target.host, target.port, ssl=probe_context(ca_file), server_hostname=target.host
                )
        except (OSError, TimeoutError, ValueError):
            return None
        try:
            return names_in(transport.get_extra_info("peercert"))
        finally:
            transport.abort()
