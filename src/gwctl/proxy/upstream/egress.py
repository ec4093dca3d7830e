"""The egress proxy settings: which upstreams go through which ``http://`` proxy.

Read once from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` as httpx
reads them, so ``gwctl source test`` and the proxy agree on the route. A proxy's
credentials go to the proxy alone (never to an upstream) and are masked in every
message. Settings only: the CONNECT tunnel itself is in ``tunnel.py``.
"""

from __future__ import annotations

import base64
from typing import Mapping
from urllib.parse import unquote, urlsplit

from gwctl.proxy.upstream.target import _split_url


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
        from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # untyped, not missing

        shown = f"[{host}]" if ":" in host else host
        if proxy_bypass_environment(host, {"no": self.no_proxy}) or proxy_bypass_environment(
            f"{shown}:{port}", {"no": self.no_proxy}
        ):
            return None
        return proxy
