"""Which headers cross the gateway, in each direction: a pure rule set the proxy applies per request.

Upstream (client -> source):

* never forwarded: hop-by-hop and framing headers, any header the client's own
  ``Connection`` header names (RFC 9110 7.6.1: those are hop-by-hop too), the
  client's gateway key (``Authorization``, ``x-api-key``, ``api-key``), cookies,
  ``Accept-Encoding`` (we ask for identity), and the client's ``Forwarded``,
  ``X-Forwarded-*``, ``X-Real-IP`` and ``Via``. The gateway is the upstream's
  client: a client's claims about addresses are unverified, and the source is a
  model API, not a web application behind us that needs them.
* the source's credential header and its static headers replace any client copy
  whatever its letter case (header names ignore case), so a client can neither
  add a second credential nor override one.
* everything else is forwarded as received: duplicates stay duplicates, in their
  order, and values keep their bytes (the server decodes a head as latin-1 and
  the client encodes it back the same way).

Downstream (source -> client), only a documented set (:data:`RESPONSE_HEADERS`
and :data:`RESPONSE_PREFIXES`) plus the names a source lists in its
``response_headers``: an upstream's other headers can reveal internals (a
backend's address, its software and version).
"""

from __future__ import annotations

from typing import Collection, Iterable, Mapping

from gwctl.core.headers import AUTH_HEADER_NAMES, HOP_BY_HOP

REQUEST_DROP = (
    HOP_BY_HOP
    | AUTH_HEADER_NAMES
    | frozenset(
        {
            "proxy-authenticate",
            "expect",
            # what the gateway sets itself, and its own header
            "accept-encoding",
            "content-type",
            "x-gwctl-agent",
            "cookie",
            # claims about the client's network path
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-real-ip",
            "via",
        }
    )
)
"""Request header names (lower case) never forwarded upstream: the hop-by-hop and credential headers
that static headers may not be (gwctl.core.headers), and the ones below."""

RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-encoding",
        "cache-control",
        "x-request-id",
        "request-id",
        "openai-processing-ms",
        "openai-version",
        "openai-organization",
        "retry-after",
        "retry-after-ms",
    }
)
"""Response header names (lower case) forwarded to the client."""

RESPONSE_PREFIXES = ("openai-", "anthropic-", "x-ratelimit-", "ratelimit-")
"""Response header name prefixes (lower case) forwarded to the client: each API's own headers and rate limits."""

_IDENTITY = ("Accept-Encoding", "identity")
_JSON = ("Content-Type", "application/json")


def request_headers(
    raw: Iterable[tuple[str, str]], replaced: frozenset[str], added: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The header lines to send upstream.

    ``raw`` is the client's headers as sent (names as written, duplicates
    kept); ``replaced`` the lower-case names the gateway sets itself for this
    source (its credential and static headers); ``added`` those headers.
    """
    drop = REQUEST_DROP
    out = []
    hop: set[str] | None = None
    for k, v in raw:
        lk = k.lower()
        if lk in drop or lk in replaced:
            if lk == "connection":
                for token in v.split(","):
                    token = token.strip().lower()
                    if token and token not in ("close", "keep-alive"):
                        hop = hop or set()
                        hop.add(token)
            continue
        out.append((k, v))
    if hop:
        out = [(k, v) for k, v in out if k.lower() not in hop]
    out.append(_IDENTITY)
    out.append(_JSON)
    out.extend(added)
    return out


def replaced_names(static: Mapping[str, str], auth: Mapping[str, str]) -> frozenset[str]:
    """The lower-case names a source's own headers take over from the client."""
    return frozenset(k.lower() for k in (*static, *auth))


def response_headers(upstream: Iterable[tuple[str, str]], extra: Collection[str] = ()) -> list[tuple[str, str]]:
    """The upstream's response headers a client may see (``extra``: a source's own additions, lower case)."""
    keep = RESPONSE_HEADERS
    return [(k, v) for k, v in upstream if (lk := k.lower()) in keep or lk.startswith(RESPONSE_PREFIXES) or lk in extra]
