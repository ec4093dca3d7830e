"""What a request asks of a model, read from its path and JSON body.

The catalog checks compare an entry's limits and capability flags with what
a request uses. Clients speak several API shapes (OpenAI chat completions,
legacy completions, Responses, Anthropic messages, embeddings), and each
puts the same idea in a different place, so detection is shape-aware.
Detection is total: a body of the wrong shape or with junk values never
raises, the junk simply does not count (a feature is only "used" when the
request clearly asks for it, so an odd body is never rejected for it).

Rules (``api`` comes from the path's tail, query ignored, so
``/api/v1/messages`` is ``messages``):

* api: ``.../chat/completions`` -> chat, ``.../completions`` -> completions,
  ``.../responses`` -> responses, ``.../messages`` -> messages,
  ``.../embeddings`` -> embeddings, anything else -> other.
* output budget: chat -> ``max_completion_tokens``, else ``max_tokens``
  (the first that is a valid value); completions and messages ->
  ``max_tokens``; responses -> ``max_output_tokens``; embeddings and other ->
  none. Only a non-negative int counts (``true`` and ``100.0`` do not).
* stream: ``"stream": true`` exactly.
* vision: chat content parts of type ``image_url``/``image``; Responses
  input items or content parts of type ``input_image`` or a
  ``computer_screenshot`` output; Anthropic ``image`` blocks, also inside
  ``tool_result`` content. Documents (PDF) do not count.
* tools: a non-empty ``tools`` list (chat, responses, messages) or
  ``functions`` list (legacy chat), or a tool choice that forces a call:
  ``tool_choice`` ``"required"``/``"any"``/an object naming a tool (not
  ``"auto"``, ``"none"``, ``{"type": "auto"|"none"}``), or a legacy
  ``function_call`` other than ``"auto"``/``"none"``. Tool-call history in
  the messages alone does not count: the model is not asked to call anything.
* reasoning (chat, completions, responses, messages): ``reasoning_effort``
  set and not ``"none"``; ``reasoning`` set (an object, a string or true)
  unless it is ``"none"``, ``false`` or an object with ``effort: "none"`` or
  ``enabled: false``; ``thinking`` set unless ``false`` or
  ``{"type": "disabled"}``.
* json_output: chat/completions ``response_format.type`` ``json_object`` or
  ``json_schema``; Responses ``text.format.type`` the same; Anthropic
  ``output_format.type`` or ``output_config.format.type`` ``json_schema``
  (or ``json_object``).
* audio: chat content parts of type ``input_audio``, ``modalities``
  containing ``"audio"``, or an ``audio`` output object; Responses input parts
  of type ``input_audio``.
* params: the body's top-level keys; prompt_tokens_estimate:
  :func:`gwctl.core.tokens.estimate_prompt_tokens`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Mapping

from gwctl.core.frozen import builder
from gwctl.core.tokens import estimate_prompt_tokens, prompt_tokens_ceiling

APIS: tuple[str, ...] = ("chat", "completions", "responses", "messages", "embeddings", "other")

_PATH_TAILS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat"),
    ("/completions", "completions"),
    ("/responses", "responses"),
    ("/messages", "messages"),
    ("/embeddings", "embeddings"),
)
_BUDGET_PARAMS: Mapping[str, tuple[str, ...]] = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
}
_GENERATIVE = frozenset(_BUDGET_PARAMS)
_JSON_TYPES = ("json_object", "json_schema")
_IMAGE_PARTS: Mapping[str, frozenset[str]] = {
    "chat": frozenset({"image_url", "image"}),
    "responses": frozenset({"input_image", "computer_screenshot"}),
    "messages": frozenset({"image"}),
}
_AUDIO_PARTS: Mapping[str, frozenset[str]] = {
    "chat": frozenset({"input_audio"}),
    "responses": frozenset({"input_audio"}),
}


@dataclass(frozen=True)
class RequestFeatures:
    """What one request uses; built by :func:`features`."""

    api: str  # chat | completions | responses | messages | embeddings | other
    model: str | None
    stream: bool
    output_budget: int | None  # the requested output budget, if any
    output_param: str | None  # which param gave it: max_tokens | max_completion_tokens | max_output_tokens
    uses_vision: bool
    uses_tools: bool
    uses_reasoning: bool
    uses_json_output: bool
    uses_audio: bool
    params: frozenset[str]  # top-level keys of the body
    prompt_tokens_estimate: int | None  # None: not computed (see features(estimate_tokens=...))
    prompt_tokens_ceiling: int | None = None  # an upper bound from the body's size, when it is known


_features = builder(RequestFeatures)
USES = ("uses_vision", "uses_tools", "uses_reasoning", "uses_json_output", "uses_audio")
"""The features' flags of what a request uses, in field order."""
# The top-level keys each detector below reads: a body with none of them does not use the feature,
# which a set test on the body's keys tells without running the detector (most bodies use few).
_TOOL_KEYS = frozenset({"tools", "tool_choice", "functions", "function_call"})
_REASONING_KEYS = frozenset({"reasoning_effort", "reasoning", "thinking"})
_JSON_OUTPUT_KEYS = frozenset({"response_format", "text", "output_format", "output_config"})
_AUDIO_OUTPUT_KEYS = frozenset({"modalities", "audio"})
_NO_PARTS: frozenset[str] = frozenset()


_API_OF_PATH: dict[str, str] = {}  # the proxy sees a handful of paths: remember their shapes


def api_for_path(path: str) -> str:
    """The API shape of a request path, from its tail (query and fragment ignored)."""
    if not isinstance(path, str):
        return "other"
    api = _API_OF_PATH.get(path)
    if api is None:
        api = _api_for_path(path)
        if len(_API_OF_PATH) >= 1024:
            _API_OF_PATH.clear()
        _API_OF_PATH[path] = api
    return api


def _api_for_path(path: str) -> str:
    clean = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    for tail, api in _PATH_TAILS:
        if clean.endswith(tail):
            return api
    return "other"


def features(
    path: str, body: Mapping[str, Any] | None, estimate_tokens: bool = True, body_bytes: int | None = None
) -> RequestFeatures:
    """Read what a request uses from its path and parsed JSON body (rules in the module docstring).

    ``estimate_tokens=False`` skips the prompt estimate (the costliest part) for
    callers that fill it in only when a check needs it (the decision does).
    ``body_bytes``, the size of the JSON text, gives ``prompt_tokens_ceiling``.
    """
    api = api_for_path(path)
    if not isinstance(body, dict):
        body = {}
    budget, budget_param = _output_budget(api, body)
    part_types = _part_types(api, body)
    model = body.get("model")
    keys = frozenset(k for k in body if isinstance(k, str))
    return _features(
        {
            "api": api,
            "model": model if isinstance(model, str) else None,
            "stream": body.get("stream") is True,
            "output_budget": budget,
            "output_param": budget_param,
            "uses_vision": bool(part_types and part_types & _IMAGE_PARTS.get(api, _NO_PARTS)),
            "uses_tools": not _TOOL_KEYS.isdisjoint(keys) and _uses_tools(api, body),
            "uses_reasoning": api in _GENERATIVE and not _REASONING_KEYS.isdisjoint(keys) and _uses_reasoning(body),
            "uses_json_output": not _JSON_OUTPUT_KEYS.isdisjoint(keys) and _uses_json_output(api, body),
            "uses_audio": bool(part_types and part_types & _AUDIO_PARTS.get(api, _NO_PARTS))
            or (not _AUDIO_OUTPUT_KEYS.isdisjoint(keys) and _asks_audio_output(api, body)),
            "params": keys,
            "prompt_tokens_estimate": estimate_prompt_tokens(api, body) if estimate_tokens else None,
            "prompt_tokens_ceiling": None if body_bytes is None else prompt_tokens_ceiling(body_bytes),
        }
    )


def _count(value: Any) -> bool:
    """A valid token count: a non-negative int (bool is not an int here)."""
    return type(value) is int and value >= 0


def _output_budget(api: str, body: Mapping[str, Any]) -> tuple[int | None, str | None]:
    for param in _BUDGET_PARAMS.get(api, ()):
        value = body.get(param)
        if _count(value):
            return value, param
    return None, None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _parts(container: Any) -> list[Any]:
    """The content parts of a message-like mapping (a string content has none)."""
    return _list(_mapping(container).get("content"))


def _type(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


def _types(parts: list[Any]) -> set[str | None]:
    return {_type(p) for p in parts}


def _part_types(api: str, body: Mapping[str, Any]) -> set[str | None]:
    """The ``type`` of every content part/item/block in the prompt, per API shape."""
    types: set[str | None] = set()
    if api == "chat":
        for message in _list(body.get("messages")):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):  # a string content has no parts (the common case: no set built)
                types |= _types(content)
    elif api == "responses":
        for item in _list(body.get("input")):
            if isinstance(item, dict):
                output = item.get("output")
                types |= {_type(item)} | _types(_parts(item)) | _types(_list(output) + [output])
    elif api == "messages":
        for message in _list(body.get("messages")):
            for block in _parts(message):
                types.add(_type(block))
                if _type(block) == "tool_result":
                    types |= _types(_parts(block))
    return types


def _forces_tool(choice: Any) -> bool:
    """A tool_choice / function_call that makes the model call a tool."""
    if isinstance(choice, str):
        return choice not in ("auto", "none", "")
    if isinstance(choice, dict):
        return choice.get("type") not in ("auto", "none")
    return False


def _uses_tools(api: str, body: Mapping[str, Any]) -> bool:
    if api not in ("chat", "responses", "messages"):
        return False
    if _list(body.get("tools")) or _forces_tool(body.get("tool_choice")):
        return True
    return api == "chat" and (bool(_list(body.get("functions"))) or _forces_tool(body.get("function_call")))


def _uses_reasoning(body: Mapping[str, Any]) -> bool:
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort not in ("none", ""):
        return True
    reasoning = body.get("reasoning")
    if reasoning is True or (isinstance(reasoning, str) and reasoning not in ("none", "")):
        return True
    if isinstance(reasoning, dict) and reasoning.get("effort") != "none" and reasoning.get("enabled") is not False:
        return True
    thinking = body.get("thinking")
    if thinking is True:
        return True
    return isinstance(thinking, dict) and thinking.get("type") != "disabled"


def _uses_json_output(api: str, body: Mapping[str, Any]) -> bool:
    if api in ("chat", "completions"):
        kind = _mapping(body.get("response_format")).get("type")
    elif api == "responses":
        kind = _mapping(_mapping(body.get("text")).get("format")).get("type")
    elif api == "messages":
        kind = _mapping(body.get("output_format")).get("type") or _mapping(
            _mapping(body.get("output_config")).get("format")
        ).get("type")
    else:
        return False
    return kind in _JSON_TYPES


def _asks_audio_output(api: str, body: Mapping[str, Any]) -> bool:
    if api != "chat":
        return False
    modalities = body.get("modalities")
    return (isinstance(modalities, list) and "audio" in modalities) or isinstance(body.get("audio"), dict)


MAX_JSON_DEPTH = 128
"""The deepest nesting of objects and arrays a request body may have. Real requests (tool schemas
included) stay far below it; deeper bodies are refused as invalid JSON before anything else reads
them, so no later step (a detector, the re-serialisation for forwarding, a log writer) meets one."""


def too_deep(raw: bytes, doc: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``doc`` (parsed from ``raw``) nests objects and arrays more than ``limit`` levels deep.

    Counting brackets in ``raw`` (C speed) rules out nearly every body at once;
    only a body with more brackets than the limit is walked, without recursion.
    """
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


# --- the request's shape, as the activity log keeps it -------------------------------------------

_SHAPE_FIELDS = ("api", "stream", "output_budget", "output_param", *USES, "params")
request_shape = attrgetter(*_SHAPE_FIELDS)
"""What of a request's features its activity row keeps, as a tuple of plain values: everything the decision
reads except the model (a column of its own) and the prompt's size (its usage says it better), so a later
catalog can be replayed against the request (``gwctl activity reprice``)."""


def shape_text(shape: tuple[Any, ...]) -> str:
    """A :data:`request_shape` tuple as the ``shape`` column's JSON text (keys sorted, params sorted)."""
    doc = dict(zip(_SHAPE_FIELDS, shape))
    doc["uses"] = [u.removeprefix("uses_") for u in USES if doc.pop(u)]
    doc["params"] = sorted(doc["params"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def features_from_shape(text: str, model: str | None, prompt_tokens: int) -> RequestFeatures:
    """The features a row's ``shape`` (:func:`shape_text`) says its request had, with its model and its
    prompt's size (from its usage) as the prompt estimate. Raises ValueError for a shape it cannot read."""
    try:
        doc = json.loads(text)
        uses = set(doc["uses"])
        return _features(
            {
                "api": str(doc["api"]),
                "model": model,
                "stream": bool(doc["stream"]),
                "output_budget": doc["output_budget"],
                "output_param": doc["output_param"],
                **{u: u.removeprefix("uses_") in uses for u in USES},
                "params": frozenset(doc["params"]),
                "prompt_tokens_estimate": prompt_tokens,
                "prompt_tokens_ceiling": None,
            }
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable request shape {text!r}: {exc}") from None
