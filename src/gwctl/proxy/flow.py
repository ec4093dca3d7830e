"""One request on its way through the gateway's stages, its id, and the answers built from it.

A :class:`Flow` is made once per request (after the health check) and passed
from stage to stage: authenticate (``key_name``), decide (``body``,
``decision``), limit (``ticket``), forward (``stream``, ``api``, ``strip_usage``, ``translation``), relay, record;
``trace`` is the request's span while tracing is on (:mod:`gwctl.proxy.tracing`).
A stage reads what the stages before it set and adds its own part, so a new
fact about a request is a new attribute here, not a new argument through
every stage.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import TYPE_CHECKING

import orjson

from gwctl.core.translate.responses import gateway_error_to_anthropic
from gwctl.proxy.http import Reply

if TYPE_CHECKING:
    from gwctl.core.config import Snapshot
    from gwctl.core.decision import Decision
    from gwctl.proxy.http import Request
    from gwctl.proxy.ledger import Ticket
    from gwctl.proxy.tracing import RequestTrace
    from gwctl.proxy.translating import Translation

REQUEST_ID_HEADER = "X-Gwctl-Request-Id"


class Flow:
    """One request: what it is, and what each stage found out about it."""

    __slots__ = (
        "request",
        "rid",
        "start",
        "snapshot",
        "key_name",
        "body",
        "decision",
        "stream",
        "api",
        "strip_usage",
        "ticket",
        "attempts",
        "translation",
        "trace",
        "recorded",
    )

    def __init__(self, request: Request, rid: str, start: float, snapshot: Snapshot):
        self.request = request  # what the client sent (gwctl.proxy.http.Request)
        self.rid = rid  # the request id: the answer's X-Gwctl-Request-Id and the activity row's
        self.start = start  # time.perf_counter() when the request was taken up (for the latency)
        self.snapshot = snapshot  # the store the request is decided and forwarded with, whatever reloads meanwhile
        self.key_name: str | None = None  # authenticate: the gateway key's name (None with --no-auth)
        self.body: dict | None = None  # decide: the parsed JSON body (forward may rewrite it)
        self.decision: Decision | None = None  # decide: gwctl.core.decision.decide's answer
        self.stream = False  # forward: the client asked for an event stream
        self.api = "other"  # forward: the API shape (chat, completions, messages, ...) for metering
        self.strip_usage = False  # forward: the usage chunk was asked for by us, not the client: relay drops it
        self.ticket: Ticket | None = None  # limit: the reservations held until the record stage settles them
        # forward, for a route with a plan: each attempt as (target SOURCE/MODEL_ID, status or None, latency in
        # ms, error or None), the answering one last; None for a request without a plan
        self.attempts: list[tuple[str, int | None, float, str | None]] | None = None
        # forward: how this attempt's request and answer are translated (gwctl.proxy.translating.Translation),
        # None when the source speaks the client's API
        self.translation: Translation | None = None
        # the request's span (gwctl.proxy.tracing.RequestTrace) while tracing is on, until the record stage ends it
        self.trace: RequestTrace | None = None
        self.recorded = False  # record: the request's row is written (a bug after that gets a row of its own)


MESSAGES_PATH = "/v1/messages"
INTERNAL_ERROR = "internal_error"  # the rule id of a request a bug of ours broke


def bug_message(exc: BaseException, where: str = "") -> str:
    """What the client and the activity row are told about a bug of ours (the traceback is in the log)."""
    return f"internal error in the gateway ({exc.__class__.__name__}){where}; see its log"


def error_bytes(path: str, status: int, error: dict) -> bytes:
    """The body of one of the gateway's own errors (``error`` in the OpenAI shape, as the core builds
    them) in the shape of the client's API: Anthropic's for ``/v1/messages``, else as it is."""
    if path == MESSAGES_PATH:
        return orjson.dumps(gateway_error_to_anthropic(status, error))
    return orjson.dumps(error)


def own_error(message: str, etype: str, code: str | None, param: str | None = None) -> dict:
    """One of the gateway's own errors as the core builds them (OpenAI's shape; :func:`error_bytes` gives it
    the client's API's)."""
    return {"error": {"message": message, "type": etype, "code": code, "param": param}}


def error_reply(flow: Flow, status: int, message: str, etype: str, code: str | None, param: str | None = None) -> Reply:
    """The gateway's own error answer to ``flow``, in its client's API's error shape, with the request id."""
    error = own_error(message, etype, code, param)
    return Reply(status, error_bytes(flow.request.path, status, error), [(REQUEST_ID_HEADER, flow.rid)])


class InFlight:
    """The requests that wait for something (upstream, a thread); the SIGTERM drain waits for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        """A request now waits for something: the drain waits for it until :meth:`end`."""
        self.count += 1
        self._idle.clear()

    def end(self) -> None:
        """The request :meth:`begin` counted is done."""
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until none is in flight; True when that happened within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def reseed_request_ids() -> None:
    """After fork: each worker gets its own prefix, so ids never collide."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = secrets.token_hex(4)
    _ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process run and cheap: a random prefix and a counter (16 hex digits)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"
