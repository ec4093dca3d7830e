"""A fast stand-in upstream that speaks the OpenAI and Anthropic wire formats.

The demo, the test suite and the benchmarks need a real HTTP upstream on
127.0.0.1 that answers like a provider would (same JSON and SSE shapes the
official SDKs parse), reports deterministic token usage so cost figures can be
asserted exactly, and records what it was sent so tests can check what the
proxy forwarded. It never calls anything else.

Endpoints, under ``config.prefix`` (default ``/v1``)::

    GET  /models              OpenAI list of config.models
    POST /chat/completions    chat.completion, or SSE chunks + [DONE]
    POST /completions         text_completion, or SSE chunks + [DONE]
    POST /embeddings          list of embeddings (float or base64)
    POST /responses           Responses object, or Responses SSE events
    POST /messages            Anthropic Message, or Anthropic SSE events

plus, outside the prefix, ``GET /_standin/received`` (the recorded requests
as JSON) and ``DELETE /_standin/received`` (clear them), for when the
stand-in runs as a subprocess. Those two are never recorded or authenticated.

Deterministic usage (see :func:`usage_for`):

* input tokens = ``max(1, len(canonical_json(field)) // 4)`` where ``field``
  is ``messages`` (chat, messages), ``prompt`` (completions) or ``input``
  (embeddings, responses) and canonical JSON is compact, key-sorted and
  non-ASCII-preserving (:func:`prompt_tokens`);
* output tokens = ``stream_chunks`` (one token per content piece; 0 for
  embeddings), streamed or not;
* cached tokens = 0 and cache-write tokens = 0;
* ``config.usage`` overrides any of these by key: ``input_tokens``,
  ``output_tokens``, ``cached_tokens``, ``cache_write_tokens``.

These neutral counts follow OpenAI's convention (input includes cached).
Anthropic's shape splits them: ``input_tokens = input - cached - cache_write``
(never below 0), ``cache_read_input_tokens = cached``,
``cache_creation_input_tokens = cache_write``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_request import BaseRequest

__all__ = [
    "StandinConfig",
    "ReceivedRequest",
    "Usage",
    "Standin",
    "StandinHandle",
    "prompt_tokens",
    "usage_for",
    "content_pieces",
    "run_standin",
    "start_standin",
    "main",
]

CREATED = 1_700_000_000
"""The fixed ``created`` timestamp of every generated object (deterministic)."""

EMBEDDING_DIM = 8
"""Length of every embedding vector the stand-in returns."""

_WORDS = ("Hello", " from", " the", " gwctl", " stand-in", " upstream", ".")
_USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens"})
_MAX_BODY = 64 * 1024 * 1024
_CACHE_LIMIT = 4096
_CONTROL_PATH = "/_standin/received"


@dataclass
class StandinConfig:
    """How the stand-in behaves. Change it on a running server with
    :meth:`Standin.configure` / :meth:`StandinHandle.configure`."""

    models: list[str] = field(default_factory=lambda: ["standin-small", "standin-large"])
    api_key: str | None = None  # required credential, if set
    auth_header: str | None = None  # None: "Authorization: Bearer KEY"; else NAME: KEY (raw)
    prefix: str = "/v1"  # base path; "" and "/api/v1" work too
    stream_chunks: int = 3  # content pieces per answer (= output tokens)
    delay_ms: float = 0  # wait before answering (every endpoint)
    chunk_delay_ms: float = 0  # wait between SSE events (streams are then written one event at a time)
    usage: dict | None = None  # override of the neutral usage counts, see module docs
    fail_status: int | None = None  # answer every request with this status + error JSON
    models_payload: Any = None  # override GET /models body: str/bytes sent raw, else JSON
    strict_models: bool = False  # unknown "model" in a POST -> 404 model_not_found
    record: bool = True  # keep every request in .received (turn off for benchmarks)

    def __post_init__(self) -> None:
        p = (self.prefix or "").strip()
        p = p.rstrip("/")
        if p and not p.startswith("/"):
            p = "/" + p
        self.prefix = p
        if self.stream_chunks < 0:
            raise ValueError("stream_chunks must be >= 0")
        if self.usage is not None:
            unknown = set(self.usage) - _USAGE_KEYS
            if unknown:
                raise ValueError(
                    f"unknown usage keys {sorted(unknown)}; use {sorted(_USAGE_KEYS)}"
                )


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the stand-in saw it."""

    method: str
    path: str  # raw path including the query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: Any  # parsed JSON body, or None (empty / not JSON)
    raw: bytes  # the body bytes exactly as received

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "raw": self.raw.decode("utf-8", "replace"),
        }


@dataclass(frozen=True)
class Usage:
    """Neutral token counts (OpenAI convention: input includes cached)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0


# --------------------------------------------------------------------------
# Deterministic numbers and payload builders (pure)
# --------------------------------------------------------------------------

_INPUT_FIELD = {
    "chat": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "responses": "input",
    "messages": "messages",
}


def prompt_tokens(value: Any) -> int:
    """``max(1, len(compact, key-sorted JSON of value) // 4)``."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return max(1, len(text) // 4)


def usage_for(config: StandinConfig, kind: str, body: Any) -> Usage:
    """The usage the stand-in reports for a request of ``kind``.

    ``kind`` is one of chat, completions, embeddings, responses, messages.
    """
    value = body.get(_INPUT_FIELD[kind]) if isinstance(body, dict) else None
    counts = {
        "input_tokens": prompt_tokens(value),
        "output_tokens": 0 if kind == "embeddings" else config.stream_chunks,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
    }
    if config.usage:
        counts.update({k: int(v) for k, v in config.usage.items()})
    return Usage(**counts)


def content_pieces(config: StandinConfig) -> list[str]:
    """The text pieces of an answer; joined, they are the non-stream text."""
    return [_WORDS[i % len(_WORDS)] for i in range(config.stream_chunks)]


def _openai_usage(u: Usage) -> dict:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(u: Usage) -> dict:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _anthropic_usage(u: Usage) -> dict:
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_tokens - u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse_data(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


def _chat_body(model: str, text: str, u: Usage) -> bytes:
    return _dumps(
        {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _openai_usage(u),
            "system_fingerprint": "standin",
        }
    )


def _chat_stream(model: str, pieces: list[str], u: Usage, include_usage: bool) -> list[bytes]:
    def chunk(delta: dict, finish: str | None) -> dict:
        c = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    events = [_sse_data(chunk({"role": "assistant", "content": ""}, None))]
    events += [_sse_data(chunk({"content": p}, None)) for p in pieces]
    events.append(_sse_data(chunk({}, "stop")))
    if include_usage:
        events.append(
            _sse_data(
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": "standin",
                    "choices": [],
                    "usage": _openai_usage(u),
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _completion_body(model: str, text: str, u: Usage) -> bytes:
    return _dumps(
        {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _openai_usage(u),
        }
    )


def _completion_stream(
    model: str, pieces: list[str], u: Usage, include_usage: bool
) -> list[bytes]:
    def chunk(text: str, finish: str | None) -> dict:
        c = {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    events = [_sse_data(chunk(p, None)) for p in pieces]
    events.append(_sse_data(chunk("", "stop")))
    if include_usage:
        events.append(
            _sse_data(
                {
                    "id": "cmpl-standin",
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": _openai_usage(u),
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _embedding_vector(index: int) -> list[float]:
    # Exactly representable in float32, so base64 and float forms agree.
    return [((index + 1) * (d + 1) % 17) / 16.0 for d in range(EMBEDDING_DIM)]


def _embeddings_body(model: str, count: int, u: Usage, b64: bool) -> bytes:
    data = []
    for i in range(count):
        vec = _embedding_vector(i)
        emb: Any = (
            base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return _dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens},
        }
    )


def _response_object(model: str, status: str, text: str | None, u: Usage | None) -> dict:
    output = []
    if text is not None:
        output.append(_response_message(text, "completed"))
    return {
        "id": "resp_standin",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "completed_at": CREATED if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _responses_usage(u) if u is not None else None,
        "user": None,
        "metadata": {},
    }


def _response_message(text: str, status: str) -> dict:
    return {
        "id": "msg_standin",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _responses_body(model: str, text: str, u: Usage) -> bytes:
    return _dumps(_response_object(model, "completed", text, u))


def _responses_stream(model: str, pieces: list[str], u: Usage) -> list[bytes]:
    text = "".join(pieces)
    seq = iter(range(1_000_000))
    part_empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    part_done = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    loc = {"item_id": "msg_standin", "output_index": 0, "content_index": 0}

    def ev(name: str, **payload: Any) -> bytes:
        return _sse_event(name, {"type": name, "sequence_number": next(seq), **payload})

    events = [
        ev("response.created", response=_response_object(model, "in_progress", None, None)),
        ev("response.in_progress", response=_response_object(model, "in_progress", None, None)),
        ev(
            "response.output_item.added",
            output_index=0,
            item={**_response_message("", "in_progress"), "content": []},
        ),
        ev("response.content_part.added", **loc, part=part_empty),
    ]
    events += [ev("response.output_text.delta", **loc, delta=p, logprobs=[]) for p in pieces]
    events += [
        ev("response.output_text.done", **loc, text=text, logprobs=[]),
        ev("response.content_part.done", **loc, part=part_done),
        ev("response.output_item.done", output_index=0, item=_response_message(text, "completed")),
        ev("response.completed", response=_response_object(model, "completed", text, u)),
    ]
    return events


def _message_body(model: str, text: str, u: Usage) -> bytes:
    return _dumps(
        {
            "id": "msg_standin",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(u),
        }
    )


def _message_stream(model: str, pieces: list[str], u: Usage) -> list[bytes]:
    au = _anthropic_usage(u)
    start_usage = {**au, "output_tokens": min(1, u.output_tokens)}
    events = [
        _sse_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_standin",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        _sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _sse_event("ping", {"type": "ping"}),
    ]
    events += [
        _sse_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    events += [
        _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": au,
            },
        ),
        _sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def _openai_error(message: str, etype: str, code: str | None) -> bytes:
    return _dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})


def _anthropic_error(message: str, etype: str) -> bytes:
    return _dumps({"type": "error", "error": {"type": etype, "message": message}})


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------

_ROUTES = {
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
    "/responses": "responses",
    "/messages": "messages",
}

_JSON = "application/json"


class Standin:
    """The stand-in's request handler and its recorded requests.

    Create it, then ``await start(host, port)`` inside a running loop (or use
    :func:`run_standin` / :func:`start_standin`).
    """

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        self.received: list[ReceivedRequest] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.BaseRunner | None = None
        self._cache: dict[tuple, Any] = {}
        self._rebuild()

    # -- configuration -----------------------------------------------------
    def configure(self, **changes: Any) -> StandinConfig:
        """Replace config fields (e.g. ``fail_status=503``) on a live server."""
        self.config = dataclasses.replace(self.config, **changes)
        self._rebuild()
        return self.config

    def _rebuild(self) -> None:
        c = self.config
        self._cache = {}
        self._pieces = content_pieces(c)
        self._text = "".join(self._pieces)
        self._models = frozenset(c.models)
        routes = {c.prefix + p: kind for p, kind in _ROUTES.items()}
        self._post_routes = routes
        self._models_path = c.prefix + "/models"
        if c.models_payload is None:
            payload = {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "standin"}
                    for m in c.models
                ],
            }
            self._models_body = _dumps(payload)
        elif isinstance(c.models_payload, bytes):
            self._models_body = c.models_payload
        elif isinstance(c.models_payload, str):
            self._models_body = c.models_payload.encode()
        else:
            self._models_body = _dumps(c.models_payload)
        if c.api_key is None:
            self._auth: tuple[str, str] | None = None
        elif c.auth_header:
            self._auth = (c.auth_header.lower(), c.api_key)
        else:
            self._auth = ("authorization", f"Bearer {c.api_key}")

    # -- addresses -----------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + self.config.prefix

    def clear(self) -> None:
        self.received.clear()

    # -- lifecycle -------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "Standin":
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.host, self.port = host, sock.getsockname()[1]
        server = web.Server(
            self.handle,
            request_factory=self._make_request,
            access_log=None,
        )
        self._server = server
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> "Standin":
        if self._runner is None:
            await self.start(self.host, self.port)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _make_request(self, message, payload, protocol, writer, task) -> BaseRequest:
        return BaseRequest(
            message, payload, protocol, writer, task, asyncio.get_running_loop(),
            client_max_size=_MAX_BODY,
        )

    # -- request handling --------------------------------------------------------
    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        c = self.config
        path = request.path
        if path == _CONTROL_PATH:
            return self._control(request)
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        if c.record:
            headers: dict[str, str] = {}
            for k, v in request.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            self.received.append(
                ReceivedRequest(request.method, request.raw_path, headers, body, raw)
            )
        if c.delay_ms:
            await asyncio.sleep(c.delay_ms / 1000)

        method = request.method
        kind = self._post_routes.get(path)
        anthropic = kind == "messages"
        if c.fail_status is not None:
            return self._error(c.fail_status, f"stand-in configured to fail with {c.fail_status}", anthropic)
        if self._auth is not None:
            name, expected = self._auth
            if request.headers.get(name) != expected:
                return self._error(401, "invalid or missing API key", anthropic, "invalid_api_key")
        if path == self._models_path:
            if method != "GET":
                return self._error(405, f"method {method} not allowed", False)
            return web.Response(body=self._models_body, content_type=_JSON)
        if kind is None:
            return self._error(404, f"no such endpoint: {path}", False, "unknown_url")
        if method != "POST":
            return self._error(405, f"method {method} not allowed", anthropic)
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object", anthropic, "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(400, "'model' is required", anthropic, "missing_model")
        if c.strict_models and model not in self._models:
            return self._error(
                404, f"The model '{model}' does not exist", anthropic, "model_not_found"
            )
        return await self._answer(request, kind, model, body)

    async def _answer(
        self, request: BaseRequest, kind: str, model: str, body: dict
    ) -> web.StreamResponse:
        stream = body.get("stream") is True and kind != "embeddings"
        include_usage = False
        if stream and kind in ("chat", "completions"):
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        value = body.get(_INPUT_FIELD[kind])
        extra: Any = None
        if kind == "embeddings":
            count = len(value) if isinstance(value, list) and value and not isinstance(value[0], int) else 1
            extra = (count, body.get("encoding_format") == "base64")
        u_in = prompt_tokens(value)
        key = (kind, model, u_in, stream, include_usage, extra)
        out = self._cache.get(key)
        if out is None:
            u = usage_for(self.config, kind, body)
            out = self._build(kind, model, u, stream, include_usage, extra)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = out
        if not stream:
            return web.Response(body=out, content_type=_JSON)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        delay = self.config.chunk_delay_ms
        if delay:
            for i, event in enumerate(out):
                if i:
                    await asyncio.sleep(delay / 1000)
                await resp.write(event)
        else:
            await resp.write(b"".join(out))
        await resp.write_eof()
        return resp

    def _build(
        self, kind: str, model: str, u: Usage, stream: bool, include_usage: bool, extra: Any
    ) -> Any:
        pieces, text = self._pieces, self._text
        if kind == "chat":
            return _chat_stream(model, pieces, u, include_usage) if stream else _chat_body(model, text, u)
        if kind == "completions":
            return (
                _completion_stream(model, pieces, u, include_usage)
                if stream
                else _completion_body(model, text, u)
            )
        if kind == "embeddings":
            return _embeddings_body(model, extra[0], u, extra[1])
        if kind == "responses":
            return _responses_stream(model, pieces, u) if stream else _responses_body(model, text, u)
        return _message_stream(model, pieces, u) if stream else _message_body(model, text, u)

    def _error(
        self, status: int, message: str, anthropic: bool, code: str | None = None
    ) -> web.Response:
        etype = _ERROR_TYPES.get(status, "api_error")
        body = _anthropic_error(message, etype) if anthropic else _openai_error(message, etype, code)
        return web.Response(status=status, body=body, content_type=_JSON)

    def _control(self, request: BaseRequest) -> web.Response:
        if request.method == "DELETE":
            self.clear()
            return web.Response(body=b'{"cleared":true}', content_type=_JSON)
        return web.Response(
            body=_dumps([r.to_json() for r in list(self.received)]), content_type=_JSON
        )


async def run_standin(
    config: StandinConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Standin:
    """Start a stand-in in the running event loop and return it (serving).

    ``await standin.close()`` stops it; it is also an async context manager.
    """
    return await Standin(config).start(host, port)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class StandinHandle:
    """A stand-in running in a background thread with its own event loop."""

    def __init__(self, standin: Standin, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.standin = standin
        self._loop = loop
        self._thread = thread

    @property
    def url(self) -> str:
        """Base URL including the prefix, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.standin.url

    @property
    def base(self) -> str:
        """Scheme, host and port only, e.g. ``http://127.0.0.1:PORT``."""
        return self.standin.base

    @property
    def port(self) -> int:
        return self.standin.port

    @property
    def config(self) -> StandinConfig:
        return self.standin.config

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.standin.received

    def clear(self) -> None:
        self.standin.clear()

    def configure(self, **changes: Any) -> StandinConfig:
        return self._call(lambda: self.standin.configure(**changes))

    def _call(self, fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # pragma: no cover - passed back to caller
                box.append((False, exc))
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):  # pragma: no cover
            raise TimeoutError("stand-in loop did not respond")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.standin.close(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "StandinHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_standin(
    config: StandinConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> StandinHandle:
    """Run a stand-in in a daemon thread; returns once it accepts connections."""
    standin = Standin(config)
    loop = _new_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(standin.start(host, port))
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            # as asyncio.run ends: a request still being answered (a delayed one a client gave up on)
            # is cancelled and finished, not destroyed pending when the loop closes
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="gwctl-standin", daemon=True)
    thread.start()
    if not ready.wait(10):  # pragma: no cover
        raise TimeoutError("stand-in did not start within 10 s")
    if failure:
        raise failure[0]
    return StandinHandle(standin, loop, thread)


# --------------------------------------------------------------------------
# python -m gwctl.standin
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gwctl.standin",
        description="Run the OpenAI/Anthropic-compatible stand-in upstream (for demos, tests, benchmarks).",
        epilog="example: python -m gwctl.standin --port 8000 --models llama-3,qwen/qwen3 --api-key sk-local",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--models", default="standin-small,standin-large", help="comma-separated model ids")
    p.add_argument("--api-key", default=None, help="require this credential")
    p.add_argument("--auth-header", default=None, help="header carrying the raw key (default: Authorization: Bearer)")
    p.add_argument("--prefix", default="/v1", help="base path (default /v1)")
    p.add_argument("--stream-chunks", type=int, default=3)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--chunk-delay-ms", type=float, default=0)
    p.add_argument("--fail-status", type=int, default=None)
    p.add_argument("--strict-models", action="store_true")
    p.add_argument("--no-record", action="store_true", help="do not keep requests (benchmarks)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Prints ``gwctl standin listening on URL`` when ready."""
    args = _parser().parse_args(argv)
    config = StandinConfig(
        models=[m for m in args.models.split(",") if m],
        api_key=args.api_key,
        auth_header=args.auth_header,
        prefix=args.prefix,
        stream_chunks=args.stream_chunks,
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        fail_status=args.fail_status,
        strict_models=args.strict_models,
        record=not args.no_record,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                pass
        standin = await run_standin(config, args.host, args.port)
        print(f"gwctl standin listening on {standin.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await standin.close()

    loop = _new_loop()
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
