"""What can go wrong with an upstream request, as the proxy tells it apart.

The public errors map to the proxy's answers (``kind``: connect and protocol ->
502, timeout -> 504); their messages reach clients and logs, so they never hold
a URL's user info. ``_Stale`` and ``_Refused`` never leave the package: they
are signals between the connection, its parser callbacks and the pool.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer properly.

    ``failure`` is the class a failover policy names (gwctl.core.config.FAILURE_CLASSES)."""

    kind = "protocol"
    failure = "reset"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    """DNS failure, connection refused or reset while connecting, TLS handshake failure."""

    kind = "connect"
    failure = "connect"


class UpstreamTLSError(UpstreamConnectError):
    """The TLS handshake failed (a certificate that does not verify, a protocol mismatch)."""

    failure = "tls"


class UpstreamTimeout(UpstreamError):
    """Connecting took longer than connect_timeout, or no data came within read_timeout."""

    kind = "timeout"
    failure = "first_byte_timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """Connecting took longer than connect_timeout."""

    failure = "connect_timeout"


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
