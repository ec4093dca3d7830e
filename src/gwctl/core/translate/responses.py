"""Whole (not streamed) responses and error bodies: Anthropic Messages <-> OpenAI Chat Completions.

Ids keep the upstream's id behind the other API's prefix (``msg_`` / ``chatcmpl-``) so a log line
on either side can be matched. Reasoning travels as a ``thinking`` block with an empty signature
(OpenAI gives none); such a block cannot be replayed to an Anthropic upstream, but the request
translator drops thinking blocks going to OpenAI, which is where it came from.
"""

from __future__ import annotations

from typing import Any

from gwctl.core.translate.common import (
    JSON,
    TranslationError,
    anthropic_usage,
    dump_arguments,
    error_message,
    finish_reason,
    openai_usage,
    parse_arguments,
    stop_reason,
)


def _prefixed(prefix: str, value: Any) -> str:
    text = str(value or "")
    return text if text.startswith(prefix) else prefix + text


def openai_to_anthropic_response(resp: JSON, *, model: str) -> JSON:
    """Anthropic message for an OpenAI chat completion (its first choice).

    Block order: thinking (``reasoning_content`` or ``reasoning``), text (or the refusal text),
    then one tool_use per tool call in order. Arguments that are not a JSON object are kept as
    ``{"_raw": text}`` (see :func:`parse_arguments`).
    """
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text") or p.get("refusal") or "") for p in text if isinstance(p, dict))
    text = text or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
        content.append(block | {"input": parse_arguments(function.get("arguments"))})
    reason = stop_reason(choice.get("finish_reason"))
    if message.get("refusal") and not message.get("content"):
        reason = "refusal"
    return {
        "id": _prefixed("msg_", resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": anthropic_usage(resp.get("usage")),
    }


def anthropic_to_openai_response(resp: JSON, *, model: str, created: int = 0) -> JSON:
    """OpenAI chat completion for an Anthropic message.

    Text blocks are concatenated into ``content`` (None when there is none, as OpenAI sends with
    tool calls), thinking into ``reasoning_content``; redacted thinking is dropped (it is opaque).
    Server-tool blocks have no OpenAI form and are refused. ``created`` is the caller's clock
    (this module reads none).
    """
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[JSON] = []
    for i, block in enumerate(resp.get("content") or []):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            function = {"name": block.get("name"), "arguments": dump_arguments(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind != "redacted_thinking":
            raise TranslationError("untranslatable_content", f"block type {kind!r} has no OpenAI form", f"content.{i}")
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(resp.get("stop_reason")) or "stop"}
    return {
        "id": _prefixed("chatcmpl-", resp.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": openai_usage(resp.get("usage")),
    }


# Anthropic error types by HTTP status; 529 is Anthropic's "overloaded" (the stand-in upstream answers with these too).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# OpenAI error types by HTTP status (the OpenAI SDKs pick the exception class by status, so the
# type is informational; these are the values OpenAI's own API uses).
_OPENAI_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error_to_anthropic(status: int, body: Any) -> JSON:
    """Anthropic error body for an OpenAI (or any) error response; the type follows the status."""
    if status in ANTHROPIC_ERROR_TYPES:
        kind = ANTHROPIC_ERROR_TYPES[status]
    else:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": error_message(body)}}


def gateway_error_to_anthropic(status: int, error: JSON) -> JSON:
    """gwctl's own error (an OpenAI-shaped ``{"error": {message, type, code, param}}``) as a
    ``/v1/messages`` client expects it: ``{"type": "error", "error": {type, message}}`` with the
    type following the status as Anthropic's own errors do. The rule id stays in ``error.code``
    (and the offending field in ``error.param``): the Anthropic SDKs ignore the extra keys and a
    script can still read which rule refused the request, whichever API it spoke."""
    found = error.get("error")
    inner: JSON = found if isinstance(found, dict) else {}
    if status in ANTHROPIC_ERROR_TYPES:
        kind = ANTHROPIC_ERROR_TYPES[status]
    else:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    out: JSON = {"type": kind, "message": error_message(error)}
    if inner.get("code") is not None:
        out["code"] = inner["code"]
    if inner.get("param") is not None:
        out["param"] = inner["param"]
    return {"type": "error", "error": out}


def anthropic_error_to_openai(status: int, body: Any) -> JSON:
    """OpenAI error body for an Anthropic (or any) error response.

    ``code`` carries Anthropic's own error type (e.g. ``overloaded_error``) so nothing is lost.
    """
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("type") if isinstance(err, dict) and isinstance(err.get("type"), str) else None
    if status in _OPENAI_ERROR_TYPES:
        kind = _OPENAI_ERROR_TYPES[status]
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": error_message(body), "type": kind, "code": code, "param": None}}
