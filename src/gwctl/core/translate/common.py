"""Shared pieces of the Anthropic Messages <-> OpenAI Chat Completions translation.

Kept apart from the request, response and stream translators because all three need the same
error type, stop-reason tables, usage arithmetic and tool-argument parsing, and a difference
between them would make a streamed answer disagree with the same answer given whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gwctl.core.request import too_deep

JSON = dict[str, Any]
"""A decoded JSON object, as both APIs speak it."""


class TranslationError(ValueError):
    """Input that has no counterpart on the other side and would change the answer if dropped.

    ``rule`` is a stable id (``untranslatable_content``, ``untranslatable_param``,
    ``invalid_request``) the caller can put in its own error body; ``param`` names the offending
    field (a dotted path such as ``messages.2.content.0``) or is None.
    """

    def __init__(self, rule: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Translated:
    """A translated request body with what was dropped on the way.

    ``warnings`` lists advisory fields that were dropped (the answer does not depend on them in
    a way the client could rely on). ``hidden_usage`` is True when the request streams and the
    client did not ask for a usage chunk in its own API's terms, so the caller (or the stream
    translator) must consume the upstream's usage rather than pass it on.
    """

    body: JSON
    warnings: tuple[str, ...] = ()
    hidden_usage: bool = False


# Anthropic `thinking.budget_tokens` <-> OpenAI `reasoning_effort`.
#
#   budget_tokens  -> reasoning_effort      reasoning_effort -> budget_tokens
#   <= 2048        -> "low"                 "minimal", "low" -> 1024
#   <= 8192        -> "medium"              "medium"         -> 4096
#   >  8192        -> "high"                "high"           -> 16384
#                                           "xhigh"          -> 32768
#                                           "none"           -> no thinking
#
# The budgets sit inside the effort bands, so effort -> budget -> effort is the identity (except
# "minimal" and "xhigh", which Anthropic's budget cannot tell apart from "low" and "high").
EFFORT_TO_BUDGET = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024


def budget_to_effort(budget: int) -> str:
    """OpenAI reasoning effort for an Anthropic thinking budget (see the table above)."""
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


# Anthropic stop_reason -> OpenAI finish_reason. `pause_turn` (a server tool paused the turn)
# has no OpenAI counterpart; the turn did end, so it reads as "stop".
_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI does not say whether a stop sequence matched, so "stop" reads as `end_turn`.
_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI finish_reason for an Anthropic stop_reason (unknown ones read as "stop")."""
    if stop_reason is None:
        return None
    return _STOP_TO_FINISH.get(stop_reason, "stop")


def stop_reason(finish: str | None) -> str | None:
    """Anthropic stop_reason for an OpenAI finish_reason (unknown ones read as `end_turn`)."""
    if finish is None:
        return None
    return _FINISH_TO_STOP.get(finish, "end_turn")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage(usage: JSON | None) -> JSON:
    """Anthropic usage from OpenAI usage.

    OpenAI's ``prompt_tokens`` includes the cached tokens (``prompt_tokens_details.cached_tokens``)
    while Anthropic's ``input_tokens`` excludes them, so the cached part is moved, not copied.
    OpenAI reports no cache writes, so ``cache_creation_input_tokens`` is 0.
    """
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens"))
    return {
        "input_tokens": max(_int(usage.get("prompt_tokens")) - cached, 0),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def openai_usage(usage: JSON | None) -> JSON:
    """OpenAI usage from Anthropic usage: prompt tokens are input plus both cache counts."""
    usage = usage or {}
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cache_read + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def parse_arguments(arguments: Any) -> JSON:
    """An Anthropic tool ``input`` object from OpenAI ``function.arguments``.

    Anthropic needs an object. An empty string is ``{}``; text that is not a JSON object (a model
    can emit broken JSON), or one nested deeper than a request body may be (``gwctl.core.request.MAX_JSON_DEPTH``,
    which no JSON writer of the gateway's chokes on), is kept whole as ``{"_raw": text}`` so nothing is lost and the client
    can see what the model wrote, rather than failing the whole answer.
    """
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {} if not arguments else {"_raw": str(arguments)}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's parser
        return {"_raw": arguments}
    if not isinstance(value, dict) or too_deep(arguments.encode(), value):  # deeper than a request may nest
        return {"_raw": arguments}
    return value


def dump_arguments(value: Any) -> str:
    """OpenAI ``function.arguments`` (a JSON string) from an Anthropic tool ``input``."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False, separators=(",", ":"))


def error_message(body: Any) -> str:
    """The human message in either API's error body, or the body itself as text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
        return json.dumps(body)
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body)
