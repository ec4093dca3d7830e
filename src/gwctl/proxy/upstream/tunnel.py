"""A CONNECT tunnel through an egress proxy, for an https upstream.

:func:`open_tunnel` asks the proxy for a tunnel, reads only the head of its
answer (anything but 200 is a connect error naming the proxy's status), then
runs TLS to the upstream over it, so the proxy sees neither the request nor its
answer. Only the proxy gets its ``Proxy-Authorization``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable, TypeVar

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gwctl.proxy.upstream.egress import _Proxy
from gwctl.proxy.upstream.errors import UpstreamConnectError, UpstreamProtocolError
from gwctl.proxy.upstream.target import _Target

_P = TypeVar("_P", bound=asyncio.Protocol)


class _TunnelOpening(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status, once the head is in (nothing more is read)."""

    def __init__(self) -> None:
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


async def open_tunnel(
    loop: asyncio.AbstractEventLoop,
    target: _Target,
    proxy: _Proxy,
    ctx: ssl.SSLContext,
    protocol_factory: Callable[[], _P],
) -> _P:
    """A CONNECT tunnel through ``proxy`` to ``target``, then TLS to the target over it: the protocol, connected."""
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
        protocol = protocol_factory()
        tls = await loop.start_tls(transport, protocol, ctx, server_hostname=target.host)
        protocol.connection_made(tls)  # type: ignore[arg-type]  # None only for a closed loop
        return protocol
    except BaseException:
        transport.abort()
        raise
