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

The modules, in the order a request meets them: ``target`` (URL -> where to
connect, and the request head; pure), ``egress`` (proxy settings) and ``tunnel``
(CONNECT), ``pool`` (keep-alive connections, timers), ``connection`` (one
connection and its :class:`~gwctl.proxy.upstream.connection.ConnState`),
``framing`` (the response rules llhttp leaves open; pure), ``response`` (what the
caller reads), ``errors``.
"""

from gwctl.proxy.upstream.egress import Proxies, ProxySettingError
from gwctl.proxy.upstream.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from gwctl.proxy.upstream.pool import UpstreamPool
from gwctl.proxy.upstream.response import UpstreamResponse

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
