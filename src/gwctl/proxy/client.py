"""The proxy's upstream HTTP/1.1 client: a lean keep-alive pool on asyncio.Protocol.

Why not aiohttp's or httpx's client: the proxy spends most of its CPU in the
upstream client, and a general-purpose client costs ~150 µs per proxied
request where this one costs a fraction of that (benchmarks/README.md, "HTTP
stack choice"). We keep the hot path small -- one request write, one future
for the response head, no timer of its own (one watchdog per pool checks the
read timeouts of every answer still awaited), no tasks, no queues --
and leave HTTP parsing to ``httptools`` (llhttp, the C parser uvicorn uses),
so no response parsing is hand-written here.

What it does and does not do:

* HTTP/1.1 only, one request in flight per connection (no pipelining), one
  connection per in-flight request (no limit), idle connections pooled per
  ``(scheme, host, port)`` (and CA file) and reused newest first, at most
  ``max_idle_per_host`` kept, each for at most ``idle_timeout`` seconds.
* Request bodies are bytes with a ``Content-Length``; the caller's ``Host``,
  ``Content-Length``, ``Connection``, ``Keep-Alive``, ``Transfer-Encoding``
  and ``Upgrade`` headers are dropped (the client owns framing).
* Response bodies: Content-Length, chunked (de-chunked), close-delimited, and
  none for HEAD / 1xx / 204 / 304. No decompression: bytes are relayed as sent.
* A reused connection that dies before the first response byte (the server
  closed it while idle) is retried once on a fresh connection; nothing else is
  ever retried.
* Errors are :class:`UpstreamConnectError` (DNS, refused, TLS), :class:`UpstreamTimeout`
  and :class:`UpstreamProtocolError`, so the proxy can answer 502 or 504. Their
  messages reach clients and logs: a URL in one is redacted, never shown with its
  user info; a failed certificate check says why (not trusted, and the fix; a
  host-name mismatch, with the names the certificate is for).
* https: verified against the default trust store (:func:`gwctl.tls.trust_context`)
  plus a request's ``ca_file``, one context per CA file.
* Stricter than llhttp alone where it is lax (tests/test_upstream_differential.py
  holds it against h11): one plain ``chunked`` Transfer-Encoding only, heads and
  trailer sections up to 64 KiB, no bytes before an answer, and a connection
  with anything after an answer is never pooled.
* An egress proxy (:class:`Proxies`, read from ``HTTP_PROXY``/``HTTPS_PROXY``/
  ``ALL_PROXY``/``NO_PROXY`` as httpx and so ``gwctl source test`` read them):
  https upstreams through a ``CONNECT`` tunnel, then TLS to the upstream
  itself; http upstreams as absolute-form requests to the proxy. Only
  ``http://`` proxies; their credentials (``http://user:pass@host:port``) go
  to the proxy alone, never to an upstream.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
from collections import deque
from typing import AsyncIterator, Iterable, Mapping
from urllib.parse import unquote, urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gwctl.core.urls import redact_url
from gwctl.tls import names_in, probe_context, trust_context, verify_failure

__all__ = [
    "Proxies",
    "ProxySettingError",
    "UpstreamError",
    "UpstreamConnectError",
    "UpstreamTimeout",
    "UpstreamProtocolError",
    "UpstreamPool",
    "UpstreamResponse",
]

# Flow control: stop reading from the upstream when this much of a streamed
# body is buffered and not yet taken by the consumer; read again below _LOW.
_HIGH_WATER = 1024 * 1024
_LOW_WATER = 256 * 1024
# Request bodies above this are handed to the transport as a second buffer
# (``writelines``) instead of being copied into the head.
_COPY_LIMIT = 256 * 1024
_EMPTY_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
# Headers the client owns; a caller's copy is dropped.
_FRAMING = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CACHE_LIMIT = 4096
# The watchdog looks at the awaited answers every read_timeout / _TICKS_PER_TIMEOUT seconds (within
# these bounds), so a timeout fires at most an eighth late: one timer per pool instead of a timer
# armed and cancelled per request (~2 us each on uvloop, a noticeable share of a proxied request).
_TICKS_PER_TIMEOUT = 8
_MIN_TICK = 0.005
_MAX_TICK = 1.0
# The most a response head (status line and fields, any 1xx answers before it included) and,
# separately, a trailer section may take; llhttp sets no limit of its own.
_MAX_HEAD = 64 * 1024
# Control characters a reason phrase may not hold (tab is allowed; CR and LF end the line).
_BAD_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer properly."""

    kind = "protocol"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    """DNS failure, connection refused or reset while connecting, TLS handshake failure."""

    kind = "connect"


class UpstreamTimeout(UpstreamError):
    """Connecting took longer than connect_timeout, or no data came within read_timeout."""

    kind = "timeout"


class UpstreamProtocolError(UpstreamError):
    """A malformed response, or the connection closed before the response completed."""

    kind = "protocol"


class _Stale(Exception):
    """A reused connection died before any response byte: safe to retry once."""


class _Refused(Exception):
    """Raised from a parser callback: the answer breaks a rule llhttp does not enforce itself."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Trailers:
    """Where trailer fields go: checked, counted against _MAX_HEAD, then dropped (they cannot be relayed)."""

    __slots__ = ("conn", "counting", "size")

    def __init__(self, conn: "_Conn"):
        self.conn = conn
        self.counting = None  # the answer whose trailers are being counted
        self.size = 0

    def append(self, field_: tuple[str, str]) -> None:
        resp = self.conn.resp
        if self.counting is not resp:
            self.counting = resp
            self.size = 0
        name = field_[0]
        self.size += len(name) + len(field_[1]) + 4
        if self.size > _MAX_HEAD:
            raise _Refused(f"a trailer section larger than {_MAX_HEAD // 1024} KiB")
        if name.lower() in ("transfer-encoding", "content-length"):  # framing is never a trailer (RFC 9110 6.5.1)
            raise _Refused(f"a {name} trailer field")


# --------------------------------------------------------------------------
# Request side: URL targets and the request head
# --------------------------------------------------------------------------


class _Proxy:
    """An ``http://`` egress proxy: where to connect, and the credentials it wants (if any)."""

    __slots__ = ("host", "port", "authorization", "name")

    def __init__(self, url: str):
        parts = urlsplit(url if "://" in url else "http://" + url)  # "host:port" alone means http://
        if parts.scheme.lower() != "http":
            raise ValueError(f"proxy {_shown_proxy(url)}: only http:// proxies are supported (not {parts.scheme}://)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"proxy {_shown_proxy(url)}: bad port") from None
        if not parts.hostname:
            raise ValueError(f"proxy {_shown_proxy(url)}: no host")
        self.host = parts.hostname
        self.port = port
        self.authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        self.name = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"


def _shown_proxy(url: str) -> str:
    """A proxy URL fit for messages: its password masked (``user:***@``), or the whole user
    info when there is no password (a lone user name is often a token: ``***@``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = (user + ":***@" if colon else "***@") + hostpart
    return f"{scheme}://{rest}" if sep else rest


class ProxySettingError(ValueError):
    """A proxy variable the client cannot use; ``variable`` names it as it was spelled."""

    def __init__(self, variable: str, message: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class Proxies:
    """Which upstreams go through an egress proxy: the standard variables, read once.

    ``HTTPS_PROXY`` for https upstreams, ``HTTP_PROXY`` for http ones,
    ``ALL_PROXY`` for either when its own is unset (lower-case names first,
    as curl and httpx read them); ``NO_PROXY`` lists hosts (``host``,
    ``host:port``, ``.domain`` for a domain and its subdomains, ``*`` for
    all) reached directly, matched as the standard library matches them.
    Loopback is not special: list it in ``NO_PROXY`` to reach it directly.
    Raises :class:`ProxySettingError` for a proxy URL it cannot use.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = environ or {}

        def var(name: str) -> tuple[str, str]:
            for spelling in (name.lower(), name.upper()):
                value = (environ.get(spelling) or "").strip()
                if value:
                    return spelling, value
            return name.upper(), ""

        fallback = var("all_proxy")
        chosen = {scheme: var(f"{scheme}_proxy") for scheme in ("http", "https")}
        chosen = {scheme: pair if pair[1] else fallback for scheme, pair in chosen.items()}
        self.urls = {scheme: url for scheme, (_name, url) in chosen.items()}
        self._proxies: dict[str, _Proxy | None] = {}
        for scheme, (name, url) in chosen.items():
            try:
                self._proxies[scheme] = _Proxy(url) if url else None
            except ValueError as exc:
                raise ProxySettingError(name, str(exc)) from None
        self.no_proxy = var("no_proxy")[1]

    def __bool__(self) -> bool:
        return any(self._proxies.values())

    def describe(self) -> str:
        """One line for the proxy's log (passwords masked)."""
        used = [f"{scheme} via {_shown_proxy(url)}" for scheme, url in self.urls.items() if url]
        return ", ".join(used) + (f" (NO_PROXY {self.no_proxy})" if self.no_proxy else "")

    def for_url(self, url: str) -> _Proxy | None:
        """The proxy a request to ``url`` goes through (the URL parsed as the pool parses it)."""
        return self.for_target(*_split_url(url, {})[0].key)

    def for_target(self, scheme: str, host: str, port: int) -> _Proxy | None:
        proxy = self._proxies.get(scheme)
        if proxy is None or not self.no_proxy:
            return proxy
        from urllib.request import proxy_bypass_environment

        shown = f"[{host}]" if ":" in host else host
        if proxy_bypass_environment(host, {"no": self.no_proxy}) or proxy_bypass_environment(
            f"{shown}:{port}", {"no": self.no_proxy}
        ):
            return None
        return proxy


class _Target:
    """Where a base URL (``scheme://host[:port]``) connects, parsed once and cached."""

    __slots__ = ("key", "host", "port", "tls", "host_header", "name", "proxy", "uri_prefix", "proxy_line")

    def __init__(self, scheme: str, host: str, port: int, host_header: str):
        self.key = (scheme, host, port)
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.host_header = host_header
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # for messages
        self.proxy: _Proxy | None = None
        self.uri_prefix = ""  # "http://host:port" when requests go to a proxy in absolute form
        self.proxy_line = ""  # the proxy's credentials on such requests

    def use_proxy(self, proxy: _Proxy | None) -> None:
        self.proxy = proxy
        if proxy is not None and not self.tls:  # https goes through a tunnel: the proxy sees no request
            self.uri_prefix = "http://" + self.host_header
            if proxy.authorization:
                self.proxy_line = f"Proxy-Authorization: {proxy.authorization}\r\n"


def _parse_target(base: str) -> _Target:
    scheme_end = base.find("://")
    scheme = base[:scheme_end].lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r} (use http or https): {redact_url(base)!r}")
    netloc = base[scheme_end + 3 :]
    if not netloc or "@" in netloc:
        raise ValueError(f"the URL needs a host and no user info: {redact_url(base)!r}")
    default = 443 if scheme == "https" else 80
    if netloc.startswith("["):  # IPv6 literal
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 address in URL: {redact_url(base)!r}")
        host, rest = netloc[1:end], netloc[end + 1 :]
        shown = f"[{host}]"
    else:
        host, sep, port_text = netloc.partition(":")
        rest = sep + port_text
        shown = host
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit():
            raise ValueError(f"bad port in URL: {redact_url(base)!r}")
        port = int(rest[1:])
        if not 0 < port < 65536:
            raise ValueError(f"port out of range in URL: {redact_url(base)!r}")
    else:
        port = default
    if not host or not host.isprintable() or " " in host:
        raise ValueError(f"bad host in URL: {redact_url(base)!r}")
    host = host.lower()
    shown = shown.lower()
    return _Target(scheme, host, port, shown if port == default else f"{shown}:{port}")


def _split_url(url: str, cache: dict, proxies: Proxies | None = None) -> tuple[_Target, str]:
    """``url`` -> (target, request-target); the scheme://host:port part is cached."""
    start = url.find("://")
    if start < 0:
        raise ValueError(f"not an absolute http(s) URL: {redact_url(url)!r}")
    cut = len(url)
    for ch in "/?#":
        i = url.find(ch, start + 3)
        if 0 <= i < cut:
            cut = i
    base = url[:cut]
    target = cache.get(base)
    if target is None:
        target = _parse_target(base)
        if proxies:
            target.use_proxy(proxies.for_target(*target.key))
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[base] = target
    path = url[cut:]
    hash_at = path.find("#")
    if hash_at >= 0:
        path = path[:hash_at]
    if not path:
        path = "/"
    elif path[0] == "?":
        path = "/" + path
    if " " in path or not path.isprintable():
        raise ValueError(f"the URL path must be percent-encoded (no spaces or control characters): {_shown_path(path)}")
    return target, path


def _shown_path(path: str) -> str:
    """A request path fit for messages: its query string (which may carry a key, e.g. ``?key=...``) left out."""
    base, sep, _query = path.partition("?")
    return repr(base) + (" (and a query string)" if sep else "")


# name -> True (send) / False (dropped: the client owns it); validated once.
_NAMES: dict[str, bool] = {}


def _classify_name(name: str) -> bool:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    keep = name.lower() not in _FRAMING
    if len(_NAMES) < _CACHE_LIMIT:
        _NAMES[name] = keep
    return keep


def _check_method(method: str) -> None:
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid HTTP method {method!r}")


_METHODS_SEEN: set[str] = {"GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _bad_line(method: str, path: str, headers: list[tuple[str, str]]) -> str:
    """Name what holds a CR, LF or NUL (only called once a count says something does)."""
    if any(c in method for c in "\r\n\0"):
        return f"the method contains CR, LF or NUL: {method!r}"
    if any(c in path for c in "\r\n\0"):
        return f"the URL path contains CR, LF or NUL: {_shown_path(path)}"
    for k, v in headers:
        if any(c in k or c in v for c in "\r\n\0"):
            return f"header {k!r} contains CR, LF or NUL"
    return "the request head contains CR, LF or NUL"


def _build_request(method: str, target: _Target, path: str, headers, body) -> bytes | tuple[bytes, bytes]:
    """The request bytes: head + body in one buffer (or a pair for big bodies)."""
    if method not in _METHODS_SEEN:
        _check_method(method)
        if len(_METHODS_SEEN) < 64:
            _METHODS_SEEN.add(method)
    names = _NAMES
    parts = [f"{method} {target.uri_prefix}{path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    append = parts.append
    if target.proxy_line:
        append(target.proxy_line)
    for k, v in headers:
        keep = names.get(k)
        if keep is None:
            keep = _classify_name(k)
        if keep:
            append(f"{k}: {v}\r\n")
    n = len(body)
    if n or method not in _EMPTY_BODY_METHODS:
        append(f"Content-Length: {n}\r\n\r\n")
        lines = len(parts) + 2  # request line + Host, headers, Content-Length + blank
    else:
        append("\r\n")
        lines = len(parts) + 1
    head = "".join(parts)
    # Each line we built ends in exactly one CRLF, so any other CR, LF (or a
    # NUL) anywhere -- method, path, name, value -- shows up in these counts.
    if head.count("\n") != lines or head.count("\r") != lines or "\0" in head:
        raise ValueError(_bad_line(method, path, list(headers)))
    try:
        raw = head.encode("latin-1")  # as the server decoded the client's head: its bytes go on unchanged
    except UnicodeEncodeError:
        raise ValueError("the request head holds characters that cannot be sent in an HTTP/1.1 head") from None
    if not n:
        return raw
    if type(body) is not bytes:
        body = bytes(body)
    if n > _COPY_LIMIT:
        return raw, body
    return raw + body


# --------------------------------------------------------------------------
# The response
# --------------------------------------------------------------------------


class UpstreamResponse:
    """One upstream answer: status and headers at once, the body as it arrives.

    Always finish with :meth:`release` (body done, connection back to the
    pool) or :meth:`abort` (connection closed), or use ``async with``.
    """

    __slots__ = (
        "status",
        "reason",
        "headers",
        "method",
        "_conn",
        "_loop",
        "_head",
        "_pieces",
        "_buffered",
        "_done",
        "_error",
        "_waiter",
        "_read_all",
        "_keep_alive",
        "_got_bytes",
        "_headers_done",
    )

    def __init__(self, conn: "_Conn", loop: asyncio.AbstractEventLoop, method: str):
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.method = method
        self._conn: _Conn | None = conn
        self._loop = loop
        self._head: asyncio.Future = loop.create_future()
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._read_all = False
        self._keep_alive = False
        self._got_bytes = False
        self._headers_done = False

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason!r} done={self._done}>"

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    # --- body --------------------------------------------------------------

    async def _wait(self) -> None:
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None

    def _taken(self, n: int) -> None:
        self._buffered -= n
        conn = self._conn
        if conn is not None and conn.paused and self._buffered <= _LOW_WATER:
            conn.resume()

    async def read(self) -> bytes:
        """The rest of the body, de-chunked (b"" when there is none)."""
        self._read_all = True
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        while True:
            if self._error is not None:
                raise self._error
            if self._done:
                break
            await self._wait()
        pieces = self._pieces
        n = len(pieces)
        if n == 0:
            return b""
        data = pieces[0] if n == 1 else b"".join(pieces)
        pieces.clear()
        self._buffered = 0
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            pieces = self._pieces
            if pieces:
                piece = pieces.popleft()
                self._taken(len(piece))
                return piece
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    # --- end of use --------------------------------------------------------

    def release(self) -> None:
        """Done with this answer: pool the connection when the body was fully
        received and both sides allow keep-alive, else close it. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._done and self._error is None and self._keep_alive:
            conn.finish(True, self.method == "HEAD")
            return
        if not self._done and self._error is None:
            self._error = UpstreamProtocolError("the response was released before its body was complete")
            _wake(self)
        conn.close()

    def abort(self) -> None:
        """Close the connection now (the client hung up, or the caller gave up)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if not self._done and self._error is None:
            self._error = UpstreamProtocolError("the response was aborted")
            _wake(self)
        conn.close()

    async def __aenter__(self) -> "UpstreamResponse":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()


# --------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One upstream connection; httptools calls back into it as bytes arrive."""

    __slots__ = (
        "pool",
        "target",
        "key",
        "loop",
        "transport",
        "parser",
        "resp",
        "closed",
        "paused",
        "uses",
        "idle_since",
        "broken",
        "interim",
        "timeout",
        "last_data",
        "sink",
        "trailers",
        "head_bytes",
        "odd_version",
    )

    def __init__(self, pool: "UpstreamPool", target: _Target, loop: asyncio.AbstractEventLoop, key: tuple):
        self.pool = pool
        self.target = target
        self.key = key  # the idle list it goes back to: (scheme, host, port), plus the CA file it was verified with
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.resp: UpstreamResponse | None = None
        self.closed = False
        self.paused = False
        self.uses = 0
        self.idle_since = 0.0
        self.broken = False  # the server sent bytes we did not ask for
        self.interim = False  # inside a 1xx response
        self.timeout = 0.0
        self.last_data = 0.0
        self.sink: list | _Trailers = []  # where on_header puts fields: the answer's headers, then its trailers
        self.trailers = _Trailers(self)
        self.head_bytes = 0  # bytes received before the final head was complete
        self.odd_version = False  # the answer may not be HTTP/1.1: look at its version before keeping it alive

    # --- driving a request ---------------------------------------------------

    def send(self, data, method: str, read_timeout: float) -> UpstreamResponse:
        loop = self.loop
        resp = UpstreamResponse(self, loop, method)
        self.resp = resp
        self.uses += 1
        self.timeout = read_timeout
        self.sink = resp.headers
        self.last_data = loop.time()
        if self.closed:  # the server hung up between connect and now
            self._lost_before_answer(resp)
            return resp
        self.pool._watch(self)
        if type(data) is bytes:
            self.transport.write(data)
        else:
            self.transport.writelines(data)
        return resp

    def finish(self, reusable: bool, head_request: bool) -> None:
        """The caller released the response."""
        self.resp = None
        if self.paused:
            self.resume()
        if not reusable or self.closed or self.broken:
            self.close()
            return
        if head_request:
            # llhttp cannot be told the answer was to HEAD, so it may still be
            # expecting a Content-Length body: start the next answer afresh.
            self.parser = HttpResponseParser(self)
        self.pool._put_idle(self)

    def close(self) -> None:
        self.pool._waiting.discard(self)
        self.resp = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def resume(self) -> None:
        self.paused = False
        if not self.closed:
            self.last_data = self.loop.time()
            self.transport.resume_reading()

    def _fail(self, error: UpstreamError) -> None:
        """End the current answer with ``error`` and drop the connection."""
        resp = self.resp
        if resp is not None and not resp._done and resp._error is None:
            resp._error = error
            head = resp._head
            if not head.done():
                head.set_exception(error)
            _wake(resp)
        self.closed = True
        self.pool._waiting.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def check_timeout(self, now: float) -> bool:
        """The watchdog's look at this answer: fail it when the upstream was silent for read_timeout.
        False when it no longer needs watching."""
        resp = self.resp
        if resp is None or resp._done or resp._error is not None or self.closed:
            return False
        if self.paused:  # the consumer is slow, not the upstream: the clock restarts when reading does
            self.last_data = now
        elif now - self.last_data >= self.timeout:
            what = "the response head" if not resp._headers_done else "the next part of the body"
            self._fail(
                UpstreamTimeout(f"{self.target.name} sent nothing for {self.timeout:g} s while we waited for {what}")
            )
            return False
        return True

    def _complete(self, resp: UpstreamResponse) -> None:
        resp._done = True
        self.pool._waiting.discard(self)
        _wake(resp)

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        resp = self.resp
        if resp is None or resp._done:  # nothing asked: the connection is unusable
            self.broken = True
            if resp is None:
                self.close()
            return
        self.last_data = self.loop.time()
        in_head = not resp._headers_done
        if in_head:
            if not resp._got_bytes:  # the answer's first read
                resp._got_bytes = True
                self.head_bytes = len(data)
                if not data.startswith(b"HTTP/1.1"):
                    if data[0] != 72:  # "H": llhttp would skip CR/LF before a status line; a desynchronised stream
                        self._fail(self._malformed("it does not begin with a status line"))
                        return
                    self.odd_version = True  # another version, or a first read too short to tell: read it
            else:
                self.head_bytes += len(data)
        buffered = resp._buffered
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(
                UpstreamProtocolError(f"{self.target.name} switched protocols, which the gateway never asks for")
            )
            return
        except HttpParserError as exc:
            cause = exc.__context__
            error = self._malformed(cause.message if isinstance(cause, _Refused) else str(exc))
            if resp._done and resp._error is None:
                # The answer had ended; what followed it is not an answer (so the connection goes),
                # but the answer itself must still pass the size and framing checks.
                if self.head_bytes > _MAX_HEAD and self._head_too_big(resp):
                    return
                if resp._keep_alive:
                    self._check_framing(resp)
                self.close()
                return
            self._fail(error)
            return
        if in_head and self.head_bytes > _MAX_HEAD and self._head_too_big(resp):
            return
        if resp._done:
            # Once per answer, in the read where it ended, if it may be followed by another (keep-alive)
            # and that read ends in CR or LF: llhttp skips CR and LF between messages without a
            # callback, so CR/LF octets after the answer would go unnoticed and the connection would
            # be reused out of step (any other byte starts a message: on_message_begin refuses it).
            # An answer ends either with the blank line closing its head or trailer section -- exactly
            # CR LF CR LF after a byte that is neither -- or with its last body piece (_ends_with);
            # anything else means octets after it, or an end split so that we cannot tell: either way
            # the connection is not reused. The same pass refuses a Transfer-Encoding other than one
            # plain "chunked" (as _transfer_coding does; a Content-Length answer ending otherwise
            # has none: llhttp refuses the two together).
            if resp._keep_alive and data[-1] in b"\r\n" and resp._error is None:
                coding = None  # its Transfer-Encoding field (inlined: once per answer, on the hot path)
                for name, value in resp.headers:
                    if len(name) == 17 and name.lower() == "transfer-encoding":
                        if coding is not None:
                            coding = ""  # twice: refused below
                            break
                        coding = value
                if coding is None:
                    if resp._buffered != buffered:  # ended with a body piece (Content-Length)
                        if not _ends_with(data, resp._pieces[-1]):
                            self.broken = True
                        return
                elif coding != "chunked" and coding.strip(" \t").lower() != "chunked":
                    self._refuse_ended(resp, _transfer_coding(resp.headers)[1])
                    return
                # ended with the blank line closing its head or trailer section
                if not (data.endswith(b"\r\n\r\n") and len(data) > 4 and data[-5] not in b"\r\n"):
                    self.broken = True
            return
        if resp._buffered > _HIGH_WATER and not resp._read_all and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _malformed(self, why: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.target.name} sent a malformed HTTP response ({why})")

    def _refuse_ended(self, resp: UpstreamResponse, why: str) -> None:
        """Fail an answer that has ended (its head and body were parsed) and drop the connection."""
        resp._error = self._malformed(why)
        _wake(resp)
        self.close()

    def _head_too_big(self, resp: UpstreamResponse) -> bool:
        """More than _MAX_HEAD bytes came before the head was complete: is the head itself too big?"""
        if resp._headers_done:
            size = len(resp.reason) + 15 + sum(len(k) + len(v) + 4 for k, v in resp.headers)
            if size <= _MAX_HEAD:
                self.head_bytes = 0  # it was the body that made the read big: stop counting
                return False
        why = f"a response head larger than {_MAX_HEAD // 1024} KiB"
        if resp._done:
            self._refuse_ended(resp, why)
        else:
            self._fail(self._malformed(why))
        return True

    def _check_framing(self, resp: UpstreamResponse) -> bool:
        """Refuse an ended answer with a Transfer-Encoding other than one plain ``chunked``. True when it passes."""
        problem = _transfer_coding(resp.headers)[1]
        if problem is not None:
            self._refuse_ended(resp, problem)
            return False
        return True

    def eof_received(self):
        return None  # let the transport close; connection_lost decides what it meant

    def connection_lost(self, exc) -> None:
        was_closed = self.closed
        self.closed = True
        self.pool._waiting.discard(self)
        resp = self.resp
        if was_closed or resp is None or resp._done or resp._error is not None:
            return
        if not resp._got_bytes:
            self._lost_before_answer(resp)
            return
        if resp._headers_done and exc is None and _close_delimited(resp):
            resp._keep_alive = False
            self._complete(resp)
            return
        self._fail(UpstreamProtocolError(f"{self.target.name} closed the connection before the response completed"))

    def _lost_before_answer(self, resp: UpstreamResponse) -> None:
        # A reused connection the server closed while idle: the caller retries once.
        if self.uses > 1:
            err: Exception = _Stale()
        else:
            err = UpstreamProtocolError(f"{self.target.name} closed the connection without answering")
        resp._error = err  # type: ignore[assignment]
        if not resp._head.done():
            resp._head.set_exception(err)

    # --- httptools callbacks ----------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if not status.isalpha() and _BAD_REASON(status):
            raise _Refused("a control character in the reason phrase")
        self.resp.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.sink.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        resp = self.resp
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            # 1xx: informational, a final answer follows (101 makes feed_data raise)
            if status < 100:
                raise _Refused(f"status {status}")
            problem = _transfer_coding(resp.headers)[1]
            if problem is not None:
                raise _Refused(problem)
            self.odd_version = True  # the final answer's version was not seen in the first bytes
            self.interim = True
            resp.headers = self.sink = []
            resp.reason = ""
            return
        head = resp.method == "HEAD"
        keep = parser.should_keep_alive()
        if not keep or head or self.odd_version:
            # rare: Connection: close, HTTP/1.0, a close-delimited body, a HEAD answer (llhttp cannot be
            # told the method), an answer whose version the first bytes did not show; llhttp also keeps
            # an HTTP/1.0 (or 0.9) answer alive on "keep-alive", even beside "close"
            self.odd_version = False
            version = parser.get_http_version()
            _check_unkept(resp, version)
            if keep or head:
                keep = _keep_alive(resp, version)
        self.sink = self.trailers
        resp.status = status
        resp._headers_done = True
        resp._keep_alive = keep
        if head:
            resp._done = True
            self.pool._waiting.discard(self)
        if not resp._head.done():  # done: the request was cancelled meanwhile
            resp._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp._done:  # a body after HEAD
            self.broken = True
            return
        resp._pieces.append(body)
        resp._buffered += len(body)
        if not resp._read_all:
            _wake(resp)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        resp = self.resp
        if not resp._done:
            self._complete(resp)
        elif resp.status not in (204, 304) and _transfer_coding(resp.headers)[0]:
            # A HEAD answer (done at its head) that llhttp, not knowing the method, read a chunked
            # body for: those chunk bytes came after the answer, so the connection is out of step.
            self.broken = True

    def on_message_begin(self) -> None:
        if self.resp._headers_done:  # a second answer to one request: stop parsing here
            raise _Refused("more than one response to one request")


def _wake(resp: UpstreamResponse) -> None:
    w = resp._waiter
    if w is not None:
        resp._waiter = None
        if not w.done():
            w.set_result(None)


def _transfer_coding(headers: list[tuple[str, str]]) -> tuple[bool, str | None]:
    """(chunked?, what is wrong) from the Transfer-Encoding fields.

    One field whose value is ``chunked`` is all we accept, as h11 does: llhttp also takes
    ``gzip, chunked`` (and de-chunks, leaving a body in a coding nobody decodes), a coding
    list not ending in chunked (read to the close), and the field twice.
    """
    coding = None
    for k, v in headers:
        if len(k) == 17 and k.lower() == "transfer-encoding":
            if coding is not None:
                return False, "more than one Transfer-Encoding field"
            coding = v
    if coding is None:
        return False, None
    if coding.strip(" \t").lower() != "chunked":
        return False, f"Transfer-Encoding {coding[:40]!r}: only chunked is supported"
    return True, None


def _check_unkept(resp: UpstreamResponse, version: str) -> None:
    """The checks for an answer the connection ends after (or a HEAD answer): its version and framing."""
    if version not in ("1.1", "1.0"):
        raise _Refused(f"an HTTP/{version} status line on an HTTP/1.1 connection")
    problem = _transfer_coding(resp.headers)[1]
    if problem is not None:
        raise _Refused(problem)


def _blank_run(data: bytes, limit: int = 16) -> int:
    """How many CR/LF octets end ``data`` (counting stops at ``limit``)."""
    n = 0
    end = len(data)
    while n < end and n < limit and data[end - 1 - n] in (10, 13):
        n += 1
    return n


def _ends_with(data: bytes, piece: bytes) -> bool:
    """Does ``data`` end exactly where its last body piece ``piece`` does (no CR/LF after it)?

    ``piece`` is a slice of ``data`` and anything after it is CR/LF only (see _Conn.data_received).
    When the piece holds some other octet, data ends with the piece exactly when nothing
    follows it (CR/LF octets after it would shift that octet); when it does not, we cannot
    tell: False.
    """
    return data.endswith(piece) and _blank_run(piece) < min(len(piece), 16)


def _close_delimited(resp: UpstreamResponse) -> bool:
    """No Content-Length and not chunked: the body ends where the connection does."""
    for k, v in resp.headers:
        lk = k.lower()
        if lk == "content-length":
            return False
        if lk == "transfer-encoding" and "chunked" in v.lower():
            return False
    return True


def _keep_alive(resp: UpstreamResponse, version: str) -> bool:
    """May the connection carry another request after this answer? (RFC 9112 9.3: "close" always wins.)"""
    keep = version == "1.1"
    for k, v in resp.headers:
        if k.lower() == "connection":
            tokens = {t.strip().lower() for t in v.split(",")}
            if "close" in tokens:
                return False
            if "keep-alive" in tokens:
                keep = True
    return keep


class _TunnelOpening(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status, once the head is in (nothing more is read)."""

    def __init__(self):
        self.answer: asyncio.Future = asyncio.get_running_loop().create_future()
        self._parser = HttpResponseParser(self)
        self._reason = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            if not self.answer.done():
                self.answer.set_exception(
                    UpstreamProtocolError(f"the proxy sent a malformed answer to CONNECT ({exc})")
                )

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_headers_complete(self) -> None:
        if not self.answer.done():
            self.answer.set_result((self._parser.get_status_code(), self._reason.decode("latin-1")))

    def connection_lost(self, exc) -> None:
        if not self.answer.done():
            self.answer.set_exception(UpstreamConnectError("the proxy closed the connection before answering CONNECT"))


# --------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------


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
        key = target.key
        if ca_file is not None and target.tls:
            key = (*key, ca_file)
        conn = self._take_idle(key)
        if conn is None:
            conn = await self._connect(target, connect_timeout, key, ca_file)
        resp = conn.send(data, method, read_timeout)
        try:
            await resp._head
        except _Stale:
            conn.close()
            conn = await self._connect(target, connect_timeout, key, ca_file)
            resp = conn.send(data, method, read_timeout)
            try:
                await resp._head
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
        return sum(1 for conns in self._idle.values() for c in conns if not c.closed)

    # --- internals ---------------------------------------------------------------

    def _take_idle(self, key) -> _Conn | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        oldest_ok = None
        while conns:
            conn = conns.pop()
            if conn.closed:
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

    def _put_idle(self, conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        key = conn.key
        conns = self._idle.get(key)
        if conns is None:
            conns = self._idle[key] = []
        if len(conns) >= self.max_idle_per_host:
            conns[:] = [c for c in conns if not c.closed]
            if len(conns) >= self.max_idle_per_host:
                conn.close()
                return
        conn.idle_since = conn.loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(conn.idle_since + self.idle_timeout, self._sweep, conn.loop)

    def _watch(self, conn: _Conn) -> None:
        """Watch ``conn``'s answer for its read timeout (until it completes, fails or closes)."""
        self._waiting.add(conn)
        if self._watchdog is None or conn.timeout < self._tick * _TICKS_PER_TIMEOUT:
            self._schedule_watchdog(conn.loop, conn.timeout)

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
                if c.closed:
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
                    conn = await self._tunnel(loop, target, proxy, ctx, key)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {target.name}{via} took longer than {connect_timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            names = None
            if getattr(exc, "verify_code", None) in (62, 64) and proxy is None:
                names = await self._peer_names(loop, target, ca_file, connect_timeout)
            message, hint = verify_failure(exc, target.host, names, ca_file)
            raise UpstreamConnectError(f"{message}{via}; {hint}") from exc
        except ssl.SSLError as exc:
            raise UpstreamConnectError(f"TLS handshake with {target.name}{via} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or exc.__class__.__name__
            where = f"proxy {proxy.name} (for {target.name})" if proxy is not None else target.name
            raise UpstreamConnectError(f"cannot connect to {where}: {reason}") from exc
        self.connections_opened += 1
        return conn

    async def _peer_names(self, loop, target: _Target, ca_file: str | None, timeout: float) -> list[str] | None:
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

    async def _tunnel(self, loop, target: _Target, proxy: _Proxy, ctx: ssl.SSLContext, key: tuple) -> _Conn:
        """A CONNECT tunnel through ``proxy`` to ``target``, then TLS to the target over it."""
        transport, opening = await loop.create_connection(_TunnelOpening, proxy.host, proxy.port)
        try:
            authority = f"[{target.host}]:{target.port}" if ":" in target.host else f"{target.host}:{target.port}"
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if proxy.authorization:
                head += f"Proxy-Authorization: {proxy.authorization}\r\n"
            transport.write((head + "\r\n").encode("ascii"))
            status, reason = await opening.answer
            if status != 200:
                raise UpstreamConnectError(
                    f"proxy {proxy.name} refused the tunnel to {target.name}: {status} {reason}".rstrip()
                )
            conn = _Conn(self, target, loop, key)
            tls = await loop.start_tls(transport, conn, ctx, server_hostname=target.host)
            conn.connection_made(tls)
            return conn
        except BaseException:
            transport.abort()
            raise
