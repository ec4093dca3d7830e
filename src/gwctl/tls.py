"""TLS trust for upstreams: the default trust store, a source's own CA file, and what a
failed certificate check means in words a person can act on.

Trust, chosen once for the proxy and ``gwctl source test``/``refresh`` alike:

* By default, the system's trust store as OpenSSL finds it
  (:func:`ssl.create_default_context`), which ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR`` replace when set (OpenSSL reads them: they change the trust
  of every source).
* A source with ``ca_file`` trusts that file's CAs *in addition to* the
  default store (a private CA for one upstream does not take the public ones
  away; an upstream behind a public certificate keeps working if the file
  also serves others).

Only :mod:`ssl` and the standard library: the proxy's hot path imports this.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Sequence

# OpenSSL's X509_V_ERR_* codes that mean "nobody we trust signed this" (unknown or self-signed CA).
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64
_EXPIRED = 10
_NOT_YET_VALID = 9


def trust_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names: the default trust store
    (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), plus the CAs in ``ca_file`` when given.

    Raises OSError (missing, unreadable) or ssl.SSLError (not PEM certificates) for a bad ``ca_file``.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def expand_ca_path(text: str) -> str:
    """The form a CA file path is stored in: ``~`` expanded, absolute, normalised."""
    return os.path.abspath(os.path.expanduser(text.strip()))


def ca_file_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a CA file (missing, unreadable, no PEM certificate), or None."""
    if not os.path.isabs(path):
        return f"the CA file {path} is not an absolute path"
    if not os.path.exists(path):
        return f"the CA file {path} does not exist"
    if not os.path.isfile(path):
        return f"the CA file {path} is not a file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"the CA file {path} cannot be read ({exc.strerror or exc})"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        return f"the CA file {path} holds no usable PEM certificate ({getattr(exc, 'reason', None) or exc})"
    except OSError as exc:
        return f"the CA file {path} cannot be read ({exc.strerror or exc})"
    return None


def names_in(cert: dict | None) -> list[str]:
    """The names a certificate (as ``getpeercert()`` gives it) is for: its DNS and IP subjectAltNames,
    else its subject's common name."""
    if not cert:
        return []
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    if not names:
        for rdn in cert.get("subject", ()):
            names += [value for key, value in rdn if key == "commonName"]
    return names


def probe_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Same trust as :func:`trust_context`, without the host-name check: used only after a
    host-name mismatch, to read which names the (otherwise trusted) certificate is for."""
    ctx = trust_context(ca_file)
    ctx.check_hostname = False
    return ctx


def peer_names(host: str, port: int, ca_file: str | None, timeout: float) -> list[str] | None:
    """The names the certificate at ``host:port`` is for (blocking; None when that cannot be learned)."""
    try:
        ctx = probe_context(ca_file)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                return names_in(tls.getpeercert())
    except (OSError, ValueError):
        return None


def verify_failure(
    exc: ssl.SSLCertVerificationError,
    host: str,
    names: Sequence[str] | None = None,
    ca_file: str | None = None,
    source: str | None = None,
) -> tuple[str, str]:
    """(message, hint) for a failed certificate check of ``host``.

    ``names``: what the certificate is for, when known (a host-name mismatch);
    ``ca_file``: the source's CA file, if it has one; ``source``: its name, for the hint.
    """
    code = getattr(exc, "verify_code", None)
    detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    edit = (
        f"gwctl source edit {source} --ca-file PATH"
        if source
        else "--ca-file (gwctl source edit SOURCE --ca-file PATH)"
    )
    if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        what = "IP address" if code == _IP_MISMATCH else "hostname"
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") if names else ""
        message = (
            f"TLS certificate for {host} does not match: "
            + (f"certificate is for {shown}" if shown else "the certificate is for another name")
            + f" ({what} mismatch)"
        )
        hint = (
            "use a base URL with a name the certificate is for"
            + (f" (e.g. {names[0]})" if names else "")
            + f", or give the server a certificate that names {host}"
        )
        return message, hint
    if code in _UNTRUSTED:
        by = f"the system trust store or {ca_file}" if ca_file else "the system trust store"
        message = f"TLS certificate of {host} is not trusted: no CA in {by} signed it ({detail})"
        hint = f"if a private CA signed it, give the source that CA with {edit}, or set SSL_CERT_FILE for every source"
        return message, hint
    if code == _EXPIRED:
        return f"TLS certificate of {host} has expired ({detail})", "renew the server's certificate"
    if code == _NOT_YET_VALID:
        return (
            f"TLS certificate of {host} is not valid yet ({detail})",
            "check the server's certificate and both machines' clocks",
        )
    return f"TLS certificate of {host} could not be verified ({detail})", "check the server's certificate chain"
