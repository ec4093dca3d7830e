"""Base URLs of sources: validation and joining with a client's path.

SDK clients append paths that already carry the API version
(``/v1/chat/completions``), while users paste base URLs that end with one
(``https://gateway.example/v1``). Joining the two naively gives
``/v1/v1/...``; so the trailing version segment of the base URL is stripped
first. Only the path is ever touched, never the host, so
``https://v1.example`` stays as it is.

Rules chosen here:

* A base URL is ``http`` or ``https`` with a host (name, IPv4 or bracketed
  IPv6 literal) and an optional port. Credentials in the URL
  (``user:pass@``), fragments, whitespace and control characters are refused:
  credentials belong in the source's auth, and the rest cannot be sent.
* A base URL may carry a query string (e.g. ``?api-version=2024-06-01``). It
  is kept: :func:`join_upstream` puts the base URL's query first and the
  client's query after it (``base&client``); nothing is dropped or
  de-duplicated. :func:`models_url` keeps it too.
* A fragment on a client path is dropped (fragments are never sent to a
  server).
"""

from __future__ import annotations

import functools
import ipaddress
import re

VERSION_SEGMENT = re.compile(r"v\d+(?:[a-z]+\d*)?")
"""One path segment that names an API version: v1, v2, v1beta, v1alpha1, v1beta2."""

_EXAMPLE = "like https://gateway.example/v1"
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def _split(url: str) -> tuple[str, str, str, str]:
    """Split into (scheme://authority, path, query, fragment) without normalising.

    Unlike :func:`urllib.parse.urlsplit` + ``urlunsplit``, joining the four
    parts back gives the input unchanged, so nothing the user wrote is
    rewritten behind their back.
    """
    rest, _, fragment = url.partition("#")
    rest, _, query = rest.partition("?")
    marker = rest.find("://")
    start = marker + 3 if marker >= 0 else 0
    slash = rest.find("/", start)
    if slash < 0:
        return rest, "", query, fragment
    return rest[:slash], rest[slash:], query, fragment


def validate_base_url(url: str) -> str:
    """Return ``url`` (surrounding whitespace stripped) or raise ValueError saying what is wrong."""
    if not isinstance(url, str):
        raise ValueError(f"base URL must be a string, {_EXAMPLE}")
    text = url.strip()
    if not text:
        raise ValueError(f"base URL is empty; give one {_EXAMPLE}")
    shown = text if len(text) <= 200 else text[:200] + "..."
    if "\r" in text or "\n" in text:
        raise ValueError(f"base URL must not contain a line break; got {shown!r}")
    if _BAD_CHARS.search(text):
        raise ValueError(
            f"base URL must not contain spaces or control characters (percent-encode them, e.g. %20); got {shown!r}"
        )
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"base URL must be http(s) with a host, {_EXAMPLE}; got {shown!r}")
    if "#" in text:
        raise ValueError(f"base URL must not have a #fragment; got {shown!r}")
    authority = _split(text)[0][len(scheme) + 3 :]
    if "@" in authority:
        redacted = text.replace(authority, "***@" + authority.rpartition("@")[2], 1)
        raise ValueError(
            f"base URL must not carry credentials (user:password@); "
            f"put the credential in --auth-value or --auth-env instead; got {redacted!r}"
        )
    if not authority:
        raise ValueError(f"base URL has no host, {_EXAMPLE}; got {shown!r}")
    host, port = _host_port(authority, shown)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%", 1)[0])
        except ValueError:
            raise ValueError(f"base URL has an invalid IPv6 address {host}; got {shown!r}") from None
    elif re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"base URL has an invalid IPv4 address {host}; got {shown!r}") from None
    elif not _HOSTNAME.fullmatch(host) or ".." in host:
        raise ValueError(
            f"base URL has an invalid host {host!r} (letters, digits, '-', '.' only; "
            f"use the punycode form of international names); got {shown!r}"
        )
    if port is not None:
        if not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536:
            raise ValueError(f"base URL has an invalid port {port!r} (1-65535); got {shown!r}")
    return text


def _host_port(authority: str, shown: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"base URL has an unclosed IPv6 bracket; got {shown!r}")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"base URL has junk after the IPv6 address; got {shown!r}")
        return host, (rest[1:] if rest else None)
    host, sep, port = authority.partition(":")
    if not host:
        raise ValueError(f"base URL has no host, {_EXAMPLE}; got {shown!r}")
    return host, (port if sep else None)


def _strip_version_path(path: str) -> str:
    path = path.rstrip("/")
    head, _, last = path.rpartition("/")
    if VERSION_SEGMENT.fullmatch(last):
        path = head.rstrip("/")
    return path


def strip_version(base_url: str) -> str:
    """Drop trailing slashes, then one trailing version segment, then trailing slashes.

    ``https://h/api/v1/`` -> ``https://h/api``; ``https://h`` and
    ``https://v1.example/`` keep their host. A query string is kept after
    the stripped path; a fragment is dropped.
    """
    prefix, path, query, _ = _split(base_url)
    path = _strip_version_path(path)
    return prefix + path + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=4096)
def join_upstream(base_url: str, path: str) -> str:
    """The upstream URL for a client's request path (which may carry a query).

    ``https://h/v1`` + ``/v1/messages`` -> ``https://h/v1/messages``. The
    base URL's query (rare) comes first, then the client's, joined by ``&``.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"request path must start with '/'; got {path!r}")
    if _BAD_CHARS.search(path):
        raise ValueError("request path must not contain spaces or control characters")
    prefix, base_path, base_query, _ = _split(base_url)
    client_path, _, client_query = path.partition("#")[0].partition("?")
    query = "&".join(q for q in (base_query, client_query) if q)
    return prefix + _strip_version_path(base_path) + client_path + (f"?{query}" if query else "")


def models_url(base_url: str) -> str:
    """``GET {base_url}/models``: the URL for a connection test and model discovery."""
    prefix, path, query, _ = _split(base_url)
    return prefix + path.rstrip("/") + "/models" + (f"?{query}" if query else "")


# query parameter names that carry a credential (Google's ?key=, ?api_key=, ?access_token=, a SAS ?sig=, …),
# compared lower-case without - and _
_SECRET_QUERY_NAMES = ("key", "token", "secret", "password", "passwd", "pwd", "sig", "auth", "credential", "session")


def redact_url(url: str) -> str:
    """``url`` with any user info (``user:secret@``) replaced by ``***@`` and the value of every query
    parameter whose name says it is a credential (``?api_key=…`` → ``?api_key=***``): safe to print, log or send.

    A secret in a URL is still a secret, and no output ever holds a secret, so
    every message, log line, table and error column that shows a URL passes it
    through here. Anything that is not a string comes back as its ``str``.
    """
    text = url if isinstance(url, str) else str(url)
    span = _userinfo_span(text)
    if span is not None:
        text = text[: span[0]] + "***" + text[span[1] :]
    return _redact_query(text)


def _userinfo_span(text: str) -> tuple[int, int] | None:
    """Where the user info (``user:secret`` before the last ``@`` of the authority) is in ``text``."""
    marker = text.find("://")
    start = marker + 3 if marker >= 0 else 0
    end = len(text)
    for stop in "/?#":
        i = text.find(stop, start)
        if 0 <= i < end:
            end = i
    at = text.rfind("@", start, end)
    return None if at < 0 else (start, at)


def _query_parts(text: str) -> tuple[int, str, str] | None:
    """Where ``text``'s query starts, the query, and what follows it (the fragment); None without one."""
    q = text.find("?")
    if q < 0:
        return None
    h = text.find("#", q)
    return (q + 1, text[q + 1 :], "") if h < 0 else (q + 1, text[q + 1 : h], text[h:])


def _is_secret_name(name: str) -> bool:
    bare = name.lower().replace("-", "").replace("_", "")
    return any(word in bare for word in _SECRET_QUERY_NAMES)


def _redact_query(text: str) -> str:
    parts = _query_parts(text)
    if parts is None:
        return text
    at, query, rest = parts
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        pairs.append(name + eq + ("***" if eq and value and _is_secret_name(name) else value))
    return text[:at] + "&".join(pairs) + rest


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that :func:`redact_url` masks: its user info (without the ``@``) and the values of
    its credential query parameters, for masking them where a message quotes the URL in pieces."""
    if not isinstance(url, str):
        return []
    span = _userinfo_span(url)
    out = [] if span is None or span[0] == span[1] else [url[span[0] : span[1]]]
    parts = _query_parts(url)
    if parts is not None:
        for pair in parts[1].split("&"):
            name, eq, value = pair.partition("=")
            if eq and value and _is_secret_name(name):
                out.append(value)
    return out
