"""The decide stage: is this a request the gateway serves, and what does the store say happens to it.

The endpoint, method, size and JSON checks are the gateway's own; everything
about routing and the catalog is :func:`gwctl.core.decision.decide` (the same
pure function as ``gwctl route dry-run``), through its per-shape memo.
"""

from __future__ import annotations

import asyncio

import orjson

from gwctl.core.config import Snapshot
from gwctl.core.decision import Decision, DecisionMemo, decide
from gwctl.core.request import MAX_JSON_DEPTH, too_deep
from gwctl.proxy.flow import REQUEST_ID_HEADER, Flow, error_bytes
from gwctl.proxy.http import Reply

POST_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"})
LARGE_BODY = 256 * 1024  # decide in a thread above this (the prompt estimate scans the text)


class Decider:
    """The request checks and the decision memo (for the current snapshot)."""

    def __init__(self, body_limit: int):
        self.body_limit = body_limit
        self._decisions = DecisionMemo()  # decide(), remembered per request shape for the current snapshot

    def parse(self, flow: Flow) -> tuple[int, str, str] | None:
        """Check the request's endpoint, method, size and body, and set ``flow.body``; None when all is well,
        else the ``(status, message, code)`` to answer it with."""
        request = flow.request
        path, method = request.path, request.method
        if path not in POST_PATHS:
            return 404, f"no such endpoint: {method} {path}", "unknown_endpoint"
        if method != "POST":
            return 405, f"{path} takes POST", "method_not_allowed"
        if request.too_large:
            return 413, f"the request body is over the {self.body_limit}-byte limit", "body_too_large"
        raw = request.body
        assert raw is not None  # read whole: only a body over the limit is not
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return 400, "the request body is not valid JSON", "invalid_json"
        if not isinstance(body, dict):
            return 400, "the request body must be a JSON object", "invalid_json"
        if too_deep(raw, body):
            return (
                400,
                f"the request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep",
                "invalid_json",
            )
        flow.body = body
        return None

    def decide(self, flow: Flow) -> Decision:
        """What the store says happens to the parsed request (remembered per request shape)."""
        request = flow.request
        assert request.body is not None  # parse read it
        full_path = request.path + (("?" + request.query) if request.query else "")
        return self._decisions.decide(
            flow.snapshot, request.headers.get("x-gwctl-agent"), full_path, flow.body, len(request.body)
        )

    @staticmethod
    def decide_aside(flow: Flow) -> asyncio.Future:
        """:meth:`decide` in a thread, for a big body (the prompt estimate takes a while): the loop serves the
        others meanwhile. Not remembered: the memo is for the many small requests of one shape."""
        request = flow.request
        assert request.body is not None  # parse read it
        full_path = request.path + (("?" + request.query) if request.query else "")
        return asyncio.get_running_loop().run_in_executor(
            None,
            decide,
            flow.snapshot,
            request.headers.get("x-gwctl-agent"),
            full_path,
            flow.body,
            False,
            len(request.body),
        )


def refusal(flow: Flow) -> Reply:
    """The answer to a request its decision rejects: the decision's own status and error body."""
    d = flow.decision
    assert d is not None  # decided
    return Reply(d.status, error_bytes(flow.request.path, d.status, d.error_body()), [(REQUEST_ID_HEADER, flow.rid)])


def models_reply(snap: Snapshot, rid: str) -> Reply:
    """``GET /v1/models``: every enabled model of every source, as ``SOURCE/MODEL_ID``."""
    data = [
        {"id": f"{s.name}/{m}", "object": "model", "created": 0, "owned_by": s.name}
        for s in snap.sources.values()
        for m, on in s.models.items()
        if on
    ]
    return Reply(200, orjson.dumps({"object": "list", "data": data}), [(REQUEST_ID_HEADER, rid)])
