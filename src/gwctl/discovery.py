"""Admin calls to a source: test the connection and list its models (httpx).

Failures are classified into the causes a person can act on (DNS, refused,
TLS, timeout, credential, wrong base URL, not JSON, not a model list), each
with a hint. The proxy's hot path does not use this module.

https is verified with the proxy's own trust (:func:`gwctl.tls.trust_context`):
the system store, which ``SSL_CERT_FILE``/``SSL_CERT_DIR`` replace, plus the
source's ``ca_file`` -- not httpx's default (certifi's bundle), so a test
passes exactly when the proxy would connect.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import httpx

from gwctl.core.config import Source
from gwctl.core.urls import models_url
from gwctl.store.secrets import auth_headers
from gwctl.tls import peer_names, trust_context, verify_failure

DEFAULT_TIMEOUT_S = 10.0


@dataclass
class TestResult:
    source: str
    url: str
    ok: bool
    status: int | None = None
    latency_ms: float | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = (
        None  # dns | refused | tls | timeout | credential | not_found | http | not_json | not_model_list | connection
    )
    message: str = ""
    hint: str = ""

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "url": self.url,
            "ok": self.ok,
            "status": self.status,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "model_count": len(self.models),
            "models": self.models,
            "error": self.error,
            "message": self.message,
            "hint": self.hint,
        }


def _walk_causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _classify_connect(
    exc: BaseException, url: str, source: Source | None = None, direct: bool = True, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[str, str, str]:
    parsed = httpx.URL(url)
    host = parsed.host
    text = " ".join(str(e) for e in _walk_causes(exc)).lower()
    for cause in _walk_causes(exc):
        if isinstance(cause, socket.gaierror):
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            ca_file = source.ca_file if source is not None else None
            names = None
            if getattr(cause, "verify_code", None) in (62, 64) and direct:  # a host-name mismatch: name what it is for
                names = peer_names(host, parsed.port or 443, ca_file, min(timeout, 5.0))
            message, hint = verify_failure(cause, host, names, ca_file, source.name if source is not None else None)
            return "tls", message, hint
        if isinstance(cause, ssl.SSLError):
            return (
                "tls",
                f"TLS handshake with {host} failed ({cause.reason or cause})",
                "check the certificate, or use http:// for a plain-HTTP server",
            )
        if isinstance(cause, ConnectionRefusedError):
            return "refused", f"connection to {host} was refused", "is the server running, and on that port?"
    if (
        "name or service not known" in text
        or "nodename nor servname" in text
        or "temporary failure in name resolution" in text
        or "getaddrinfo" in text
        or any(isinstance(c, socket.gaierror) for c in _walk_causes(exc))
    ):
        return "dns", f"the host name {host} could not be resolved (DNS)", "check the base URL's host name"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return (
            "tls",
            f"TLS handshake with {host} failed",
            "check the certificate, or use http:// for a plain-HTTP server",
        )
    if "refused" in text:
        return "refused", f"connection to {host} was refused", "is the server running, and on that port?"
    return "connection", f"could not connect to {host} ({exc})", "check the base URL and that the server is reachable"


def _egress_proxy(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy a request to ``url`` goes through under HTTP(S)_PROXY/NO_PROXY (as the gateway reads them)."""
    if not any(k.lower().endswith("_proxy") for k in environ):
        return None
    from gwctl.proxy.upstream import Proxies

    try:
        proxy = Proxies(environ).for_url(url)
    except ValueError:  # a setting the gateway cannot use, or a URL it would refuse: no proxy to name
        return None
    return None if proxy is None else proxy.name


def _version_hint(base_url: str) -> str:
    from gwctl.core.urls import strip_version

    if strip_version(base_url) == base_url.rstrip("/"):
        return f"the base URL usually ends with the API's version segment, e.g. {base_url.rstrip('/')}/v1"
    return "check the base URL's path: GET {base_url}/models must list the models".replace(
        "{base_url}", base_url.rstrip("/")
    )


def test_source(source: Source, environ: Mapping[str, str] | None = None, timeout: float | None = None) -> TestResult:
    """GET {base_url}/models with the source's auth and static headers.

    A missing credential env var raises :class:`gwctl.errors.GwctlError`.
    """
    url = models_url(source.base_url)
    headers = {"Accept": "application/json", **dict(source.headers), **auth_headers(source, environ)}
    result = TestResult(source=source.name, url=url, ok=False)
    verify = _tls_verify(source, url, result)
    if verify is None:
        return result
    resp = _get_models(source, url, headers, timeout, verify, result)
    if resp is not None:
        _read_models(source, url, resp, result)
    return result


def _tls_verify(source: Source, url: str, result: TestResult) -> ssl.SSLContext | bool | None:
    """What httpx verifies an https:// answer with; None (the failure in ``result``) when the CA file is unusable."""
    if url[:8].lower() != "https://":
        return True
    try:
        return trust_context(source.ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        result.error = "tls"
        result.message = f"cannot use the CA file {source.ca_file} ({reason})"
        result.hint = f"point it at a PEM CA file with: gwctl source edit {source.name} --ca-file PATH (or --ca-file '' to drop it)"
        return None


def _get_models(source: Source, url: str, headers: dict, timeout: float | None, verify, result: TestResult):
    """The answer to the GET (its status and latency in ``result``), or None with the failure in ``result``."""
    t = timeout or source.connect_timeout or DEFAULT_TIMEOUT_S
    start = time.perf_counter()
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout or source.read_timeout or DEFAULT_TIMEOUT_S, connect=t),
            verify=verify,
            trust_env=True,
        ) as client:
            resp = client.get(url, headers=headers)
    except httpx.TimeoutException:
        result.error, result.message = "timeout", f"no answer from {url} within {t:g} s"
        result.hint = "is the server up and reachable? a slow server can be given --timeout"
        return None
    except (httpx.ConnectError, httpx.NetworkError, httpx.ProtocolError) as exc:
        proxy = _egress_proxy(url, os.environ)
        result.error, result.message, result.hint = _classify_connect(exc, url, source, proxy is None, t)
        if proxy is not None:  # what failed may be the proxy: say that the connection went through one
            result.message += f" (through the egress proxy {proxy} from the environment)"
            result.hint = "check the proxy and the server, or list the source's host in NO_PROXY to reach it directly"
        return None
    result.latency_ms = (time.perf_counter() - start) * 1000
    result.status = resp.status_code
    return resp


def _read_models(source: Source, url: str, resp, result: TestResult) -> None:
    """The answer's model ids into ``result``, or why it is not a model list."""
    if resp.status_code in (401, 403):
        result.error = "credential"
        result.message = f"{url} answered {resp.status_code}: the credential was refused"
        result.hint = f"rotate it with: gwctl source edit {source.name} --auth-value - (or check --auth-header)"
        return
    if resp.status_code == 404:
        result.error = "not_found"
        result.message = f"{url} answered 404: no model list there"
        result.hint = _version_hint(source.base_url)
        return
    if resp.status_code >= 400:
        result.error = "http"
        result.message = f"{url} answered {resp.status_code} {resp.reason_phrase}"
        result.hint = "check the server's logs"
        return
    try:
        body = resp.json()
    except ValueError:
        result.error = "not_json"
        ctype = resp.headers.get("content-type", "unknown")
        result.message = f"{url} did not answer JSON (content-type {ctype})"
        result.hint = "is the base URL an OpenAI-compatible API? " + _version_hint(source.base_url)
        return
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        result.error = "not_model_list"
        result.message = f'{url} answered JSON that is not an OpenAI model list ({{"data": [{{"id": ...}}]}})'
        result.hint = "point the source at an OpenAI-compatible API"
        return
    seen: dict[str, None] = {}
    for m in data:
        seen.setdefault(m["id"], None)
    result.models = list(seen)
    result.ok = True
    result.message = f"{resp.status_code} OK, {len(result.models)} models, {result.latency_ms:.0f} ms"
