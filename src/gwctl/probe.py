"""Send `gwctl source probe`'s requests to a source (httpx); the core decides what the answers mean.

The upstream is reached the way `source test` and the proxy reach it: the
source's credential and static headers, its CA file on top of the system
trust, the environment's egress proxy. Each request is bounded by the
timeout: connecting and each read may take at most that long, and an answer
still trickling in once it has passed is cut off.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Callable, Mapping

import httpx

from gwctl.core.config import Source
from gwctl.core.probe import ANTHROPIC_VERSION, MESSAGES_PATH, Outcome, Probe, ProbeRequest, Reply, interpret
from gwctl.core.urls import join_upstream
from gwctl.discovery import _classify_connect, _egress_proxy
from gwctl.errors import GwctlError
from gwctl.store.secrets import auth_headers
from gwctl.tls import trust_context

_MAX_ANSWER = 1 << 20  # a probe's answer is small; more than this is not read


class Sender:
    """One client for every probe of one source."""

    def __init__(self, source: Source, environ: Mapping[str, str], timeout: float) -> None:
        self.source = source
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", **dict(source.headers), **auth_headers(source, environ)}
        verify: ssl.SSLContext | bool = True
        if source.base_url.strip()[:8].lower() == "https://":
            try:
                verify = trust_context(source.ca_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise GwctlError(
                    f"cannot use the CA file {source.ca_file} ({exc})",
                    f"point it at a PEM CA file with: gwctl source edit {source.name} --ca-file PATH",
                ) from None
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), verify=verify, trust_env=True)

    def close(self) -> None:
        self.client.close()

    def send(self, request: ProbeRequest) -> Reply:
        """One request's reply, or the reason there was none, within the timeout."""
        url = join_upstream(self.source.base_url, request.path)
        headers = dict(self.headers)
        if request.path == MESSAGES_PATH:
            headers["anthropic-version"] = ANTHROPIC_VERSION
        deadline = time.monotonic() + self.timeout
        try:
            with self.client.stream("POST", url, content=request.body, headers=headers) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if time.monotonic() > deadline:
                        return Reply(failure=f"the answer took longer than {self.timeout:g} s")
                    if len(body) > _MAX_ANSWER:
                        break
                return Reply(resp.status_code, resp.headers.get("content-type", ""), bytes(body))
        except httpx.TimeoutException:
            return Reply(failure=f"no answer within {self.timeout:g} s")
        except (httpx.ConnectError, httpx.NetworkError, httpx.ProtocolError) as exc:
            proxy = _egress_proxy(url, os.environ)
            _kind, message, _hint = _classify_connect(exc, url, self.source, proxy is None, self.timeout)
            return Reply(failure=message + (f" (through the egress proxy {proxy})" if proxy else ""))


def run(
    sender: Sender,
    first: tuple[Probe, ...],
    second: tuple[Probe, ...],
    sent: Callable[[Probe], None] = lambda p: None,
) -> tuple[str, dict[str, tuple[Outcome, list[Reply]]]]:
    """The form the questions were asked in, and each probe's outcome and replies, in order.

    ``first`` and ``second`` are the two forms' probes, each beginning with its
    own endpoint's baseline and ending with the other's. The starting form's
    baseline goes first and, when it answers, the rest of that form follows.
    When its endpoint is missing (404/405) the other endpoint's baseline is
    tried, and when that answers the other form's questions follow: the
    upstream speaks only that API. Any other baseline failure stops the run.
    """
    out: dict[str, tuple[Outcome, list[Reply]]] = {}

    def ask(probe: Probe) -> Outcome:
        replies = [sender.send(r) for r in probe.requests]
        sent(probe)
        out[probe.name] = (interpret(probe.name, replies, probe.form), replies)
        return out[probe.name][0]

    baseline = first[0]
    if ask(baseline).result == "yes":
        form, rest = first, first[1:]
    elif out[baseline.name][1][0].status in (404, 405) and ask(second[0]).result == "yes":
        form, rest = second, second[1:-1]  # its last probe is the baseline already asked
    else:
        return baseline.form, out
    for probe in rest:
        ask(probe)
    return form[0].form, out
