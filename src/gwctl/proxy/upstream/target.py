"""Where a request goes and the bytes that ask for it: URL parsing and the request head.

Pure functions and plain objects (no I/O, no asyncio), so the rules are testable
alone: a URL splits into a cached :class:`_Target` (``scheme://host:port``, and
whether it goes through an egress proxy) and a percent-encoded request target;
:func:`_build_request` writes the head the client owns (``Host``,
``Content-Length``; the caller's framing headers dropped) and refuses CR, LF or
NUL anywhere in it, so no header can be smuggled upstream. Parsed URLs and
validated names are cached because the proxy sends the same ones over and over.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gwctl.core.urls import redact_url

if TYPE_CHECKING:
    from gwctl.proxy.upstream.egress import Proxies, _Proxy

# Request bodies above this are handed to the transport as a second buffer
# (``writelines``) instead of being copied into the head.
_COPY_LIMIT = 256 * 1024
_EMPTY_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
# Headers the client owns; a caller's copy is dropped.
_FRAMING = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CACHE_LIMIT = 4096


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
