"""What the stand-in upstream answers: deterministic usage and the JSON / SSE bodies.

Pure functions, no server: the same JSON and SSE shapes the official OpenAI
and Anthropic SDKs parse, built from a model name, the answer's text pieces
and the usage counts.

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

import base64
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gwctl.core.translate.responses import ANTHROPIC_ERROR_TYPES

if TYPE_CHECKING:
    from gwctl.testing.standin import StandinConfig

__all__ = [
    "CREATED",
    "EMBEDDING_DIM",
    "USAGE_KEYS",
    "TokenCounts",
    "prompt_tokens",
    "usage_for",
    "input_value",
    "content_pieces",
    "dumps",
    "answer",
    "error_body",
]

CREATED = 1_700_000_000
"""The fixed ``created`` timestamp of every generated object (deterministic)."""

EMBEDDING_DIM = 8
"""Length of every embedding vector the stand-in returns."""

USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens"})
"""The keys ``StandinConfig.usage`` may override."""

_WORDS = ("Hello", " from", " the", " gwctl", " stand-in", " upstream", ".")


@dataclass(frozen=True)
class TokenCounts:
    """Neutral token counts (OpenAI convention: input includes cached)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0


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


def usage_for(config: StandinConfig, kind: str, body: Any) -> TokenCounts:
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
    return TokenCounts(**counts)


def input_value(kind: str, body: dict) -> Any:
    """The request field the input tokens are counted from."""
    return body.get(_INPUT_FIELD[kind])


def content_pieces(config: StandinConfig) -> list[str]:
    """The text pieces of an answer; joined, they are the non-stream text."""
    return [_WORDS[i % len(_WORDS)] for i in range(config.stream_chunks)]


def _openai_usage(u: TokenCounts) -> dict:
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


def _responses_usage(u: TokenCounts) -> dict:
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


def _anthropic_usage(u: TokenCounts) -> dict:
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_tokens - u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


def dumps(obj: Any) -> bytes:
    """Compact, non-ASCII-preserving JSON bytes (the stand-in's body encoding)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse_data(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


def _chat_body(model: str, text: str, u: TokenCounts) -> bytes:
    return dumps(
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


def _chat_stream(model: str, pieces: list[str], u: TokenCounts, include_usage: bool) -> list[bytes]:
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


def chat_tool_call(model: str, name: str, arguments: str, u: TokenCounts, stream: bool, include_usage: bool) -> Any:
    """A chat answer that calls tool ``name`` with ``arguments`` (JSON text): a body, or SSE events whose
    arguments come in three pieces, so a client (or a translator) has to reassemble them."""
    call = {"id": "call_standin", "type": "function", "function": {"name": name, "arguments": arguments}}
    base = {"id": "chatcmpl-standin", "created": CREATED, "model": model, "system_fingerprint": "standin"}
    if not stream:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        return dumps({**base, "object": "chat.completion", "choices": [choice], "usage": _openai_usage(u)})

    def chunk(delta: dict, finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse_data({**base, "object": "chat.completion.chunk", "choices": [choice]})

    third = max(1, len(arguments) // 3)
    pieces = [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
    head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [head]}, None)]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, None) for p in pieces]
    events.append(chunk({}, "tool_calls"))
    if include_usage:
        usage_chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": _openai_usage(u)}
        events.append(_sse_data(usage_chunk))
    events.append(b"data: [DONE]\n\n")
    return events


def _completion_body(model: str, text: str, u: TokenCounts) -> bytes:
    return dumps(
        {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _openai_usage(u),
        }
    )


def _completion_stream(model: str, pieces: list[str], u: TokenCounts, include_usage: bool) -> list[bytes]:
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


def _embeddings_body(model: str, count: int, u: TokenCounts, b64: bool) -> bytes:
    data = []
    for i in range(count):
        vec = _embedding_vector(i)
        emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens},
        }
    )


def _response_object(model: str, status: str, text: str | None, u: TokenCounts | None) -> dict:
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


def _responses_body(model: str, text: str, u: TokenCounts) -> bytes:
    return dumps(_response_object(model, "completed", text, u))


def _responses_stream(model: str, pieces: list[str], u: TokenCounts) -> list[bytes]:
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


def _message_body(model: str, text: str, u: TokenCounts) -> bytes:
    return dumps(
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


def message_tool_use(model: str, name: str, arguments: str, u: TokenCounts) -> bytes:
    """An Anthropic message that calls tool ``name`` with ``arguments`` (JSON text) as its input."""
    try:
        tool_input = json.loads(arguments or "{}")
    except ValueError:
        tool_input = {"_raw": arguments}  # a deliberately broken argument text stays visible
    block = {"type": "tool_use", "id": "toolu_standin", "name": name, "input": tool_input}
    body = json.loads(_message_body(model, "", u))
    return dumps({**body, "content": [block], "stop_reason": "tool_use"})


def _message_stream(model: str, pieces: list[str], u: TokenCounts, include_usage: bool = True) -> list[bytes]:
    """Anthropic SSE events; without ``include_usage``, none carries usage (a server that drops it)."""
    au = _anthropic_usage(u)
    start_usage = {**au, "output_tokens": min(1, u.output_tokens)}
    usage = (lambda figures: {"usage": figures}) if include_usage else (lambda figures: {})
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
                    **usage(start_usage),
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
                **usage(au),
            },
        ),
        _sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def _openai_error(message: str, etype: str, code: str | None) -> bytes:
    return dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})


def _anthropic_error(message: str, etype: str) -> bytes:
    return dumps({"type": "error", "error": {"type": etype, "message": message}})


def error_body(status: int, message: str, anthropic: bool, code: str | None = None) -> bytes:
    """The error JSON for ``status``, in Anthropic's shape or OpenAI's."""
    etype = ANTHROPIC_ERROR_TYPES.get(status, "api_error")  # the same names for both shapes
    return _anthropic_error(message, etype) if anthropic else _openai_error(message, etype, code)


def answer(
    kind: str, model: str, u: TokenCounts, pieces: list[str], stream: bool, include_usage: bool, extra: Any
) -> Any:
    """The answer to a request of ``kind``: body bytes, or a list of SSE events when ``stream``.

    ``extra`` is, for embeddings, ``(count, base64)``.
    """
    text = "".join(pieces)
    if kind == "chat":
        return _chat_stream(model, pieces, u, include_usage) if stream else _chat_body(model, text, u)
    if kind == "completions":
        return _completion_stream(model, pieces, u, include_usage) if stream else _completion_body(model, text, u)
    if kind == "embeddings":
        return _embeddings_body(model, extra[0], u, extra[1])
    if kind == "responses":
        return _responses_stream(model, pieces, u) if stream else _responses_body(model, text, u)
    return _message_stream(model, pieces, u, include_usage) if stream else _message_body(model, text, u)
