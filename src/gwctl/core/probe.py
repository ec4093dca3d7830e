"""What `gwctl source probe` sends and what the answers mean (pure, no I/O).

A catalog's capability flags are usually copied from a model card, and a
self-hosted upstream often differs from the card (a vLLM without a tool
parser, a gateway that drops ``stream_options``). The probe asks the
upstream itself with a few minimal requests (``max_tokens`` 1-16 each) and
turns each answer into ``yes``, ``no`` or ``unknown``:

* ``yes`` / ``no``: the upstream did it, or refused it (400/422; 404/405 for
  an endpoint it does not have);
* ``unknown``: no answer in time, a 5xx, a 401/403/429, or an answer that
  shows neither. Unknown results are never written to the store.

The questions come in two forms: OpenAI chat completions and Anthropic
Messages. An upstream that speaks only one API is asked in its own form (a
catalog entry behind an Anthropic-only source still has flags worth knowing).
Each form's probes begin with its own endpoint's plain request (the
baseline) and end with the other endpoint's, which tells the source's api.

The cost ceiling bills each request's whole JSON body as input tokens (a
byte-level BPE token is at least one byte, and a low-detail image's tokens
fit in its part's bytes) plus its ``max_tokens`` as output tokens, at the
catalog entry's prices through :func:`gwctl.core.pricing.price`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gwctl.core.config import CatalogEntry
from gwctl.core.pricing import Cost, Usage, price

MAX_TOKENS = 16
"""No probe asks for more output than this."""

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"

TOOL_NAME = "gwctl_probe"
# a 1x1 PNG: the smallest image every vision API accepts
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
# long enough (~1,200 tokens) for providers that cache only prompts of 1,024 tokens or more
_LONG_PROMPT = "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(100))
_ASK = "Reply with the word ok."

OPENAI, ANTHROPIC = "openai", "anthropic"
FORMS = (OPENAI, ANTHROPIC)
ROW_ORDER = (
    "chat",
    "streaming",
    "stream_usage",
    "cached_in_prompt_tokens",
    "tools",
    "vision",
    "json_output",
    "messages",
)
"""The order results are shown in, whichever form asked."""
_ENDPOINTS = ("chat", "messages")
_NO_JSON = "not asked: the Messages API has no response_format"
_ANTHROPIC_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"}
)


@dataclass(frozen=True)
class ProbeRequest:
    """One HTTP request of a probe: its path, exact body bytes and output budget."""

    path: str
    body: bytes
    max_tokens: int

    @property
    def prompt_bound(self) -> int:
        """At most this many prompt tokens: one per body byte."""
        return len(self.body)


@dataclass(frozen=True)
class Probe:
    """One question to the upstream, the catalog flag its answer sets (None: only reported)."""

    name: str
    what: str
    flag: str | None
    requests: tuple[ProbeRequest, ...]
    form: str = "openai"  # the API the question is asked in: "openai" or "anthropic"


@dataclass(frozen=True)
class Reply:
    """What one request got: a status and body, or why there was none (``failure``)."""

    status: int | None = None
    content_type: str = ""
    body: bytes = b""
    failure: str | None = None  # e.g. "no answer within 20 s"


@dataclass(frozen=True)
class Outcome:
    """A probe's result: yes, no or unknown, and the evidence in a few words."""

    result: str
    detail: str

    @property
    def value(self) -> bool | None:
        """The flag value to write (None: unknown, never written)."""
        return {"yes": True, "no": False}.get(self.result)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _chat(model: str, max_tokens: int, content: Any = _ASK, **extra: Any) -> ProbeRequest:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}
    return ProbeRequest(CHAT_PATH, _json(body), max_tokens)


def _messages(model: str, max_tokens: int, content: Any = _ASK, **extra: Any) -> ProbeRequest:
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}], **extra}
    return ProbeRequest(MESSAGES_PATH, _json(body), max_tokens)


def _chat_baseline(model: str) -> Probe:
    return Probe("chat", "plain chat (the baseline)", None, (_chat(model, 8),))


def _messages_baseline(model: str) -> Probe:
    return Probe("messages", "Anthropic /v1/messages", None, (_messages(model, 8),), ANTHROPIC)


def probes(model: str, form: str = OPENAI) -> tuple[Probe, ...]:
    """The probes of ``form`` in the order they are sent: its own endpoint's baseline first, the other's last."""
    if form == ANTHROPIC:
        return anthropic_probes(model)
    return openai_probes(model)


def openai_probes(model: str) -> tuple[Probe, ...]:
    """The questions in chat-completions form; the first (plain chat) is the baseline."""
    cached = {
        "model": model,
        "messages": [{"role": "system", "content": _LONG_PROMPT}, {"role": "user", "content": _ASK}],
        "max_tokens": 1,
    }
    cached_request = ProbeRequest(CHAT_PATH, _json(cached), 1)
    tool = {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Call this to answer.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL_PNG}", "detail": "low"}}
    return (
        _chat_baseline(model),
        Probe("streaming", '"stream": true', "streaming", (_chat(model, 8, stream=True),)),
        Probe(
            "stream_usage",
            'a usage chunk with "stream_options": {"include_usage": true}',
            None,
            (_chat(model, 8, stream=True, stream_options={"include_usage": True}),),
        ),
        Probe(
            "cached_in_prompt_tokens",
            "the same long prompt twice: are cached tokens part of prompt_tokens?",
            None,
            (cached_request, cached_request),
        ),
        Probe(
            "tools",
            "a tool that tool_choice forces",
            "tools",
            (_chat(model, 16, tools=[tool], tool_choice={"type": "function", "function": {"name": TOOL_NAME}}),),
        ),
        Probe(
            "vision",
            "a 1x1 PNG image part",
            "vision",
            (_chat(model, 4, [{"type": "text", "text": "What colour is this pixel? One word."}, image]),),
        ),
        Probe(
            "json_output",
            'response_format {"type": "json_object"}',
            "json_output",
            (
                _chat(
                    model,
                    16,
                    'Reply with the JSON object {"ok": true} and nothing else.',
                    response_format={"type": "json_object"},
                ),
            ),
        ),
        _messages_baseline(model),
    )


def anthropic_probes(model: str) -> tuple[Probe, ...]:
    """The same questions in Messages form (no JSON output: the API has no response_format); chat last."""
    system = [{"type": "text", "text": _LONG_PROMPT, "cache_control": {"type": "ephemeral"}}]
    cached_request = _messages(model, 1, system=system)
    tool = {
        "name": TOOL_NAME,
        "description": "Call this to answer.",
        "input_schema": {"type": "object", "properties": {}},
    }
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL_PNG}}
    ask = [{"type": "text", "text": "What colour is this pixel? One word."}, image]

    def probe(name: str, what: str, flag: str | None, *requests: ProbeRequest) -> Probe:
        return Probe(name, what, flag, requests, ANTHROPIC)

    return (
        _messages_baseline(model),
        probe("streaming", '"stream": true', "streaming", _messages(model, 8, stream=True)),
        probe("stream_usage", "usage in message_start and message_delta", None, _messages(model, 8, stream=True)),
        probe(
            "cached_in_prompt_tokens",
            "the same long system prompt twice, cache_control ephemeral: are cache reads part of input_tokens?",
            None,
            cached_request,
            cached_request,
        ),
        probe(
            "tools",
            "a tool that tool_choice forces",
            "tools",
            _messages(model, 16, tools=[tool], tool_choice={"type": "tool", "name": TOOL_NAME}),
        ),
        probe("vision", "a 1x1 PNG base64 image block", "vision", _messages(model, 4, ask)),
        probe("json_output", _NO_JSON, "json_output"),
        _chat_baseline(model),
    )


def ceiling(model: str, entry: CatalogEntry | None, ref: str) -> Cost:
    """The most a probe run can cost, whichever form it ends up asking in: the dearer form's ceiling.

    Either form's probes include both endpoints' baselines, so each is a whole
    run's bound (a run that switches forms sends exactly the other form's probes).
    """
    costs = [cost_ceiling(probes(model, form), entry, ref) for form in FORMS]
    if any(c.total is None for c in costs):
        return next(c for c in costs if c.total is None)
    return max(costs, key=lambda c: c.total or 0)


def cost_ceiling(all_probes: tuple[Probe, ...], entry: CatalogEntry | None, ref: str) -> Cost:
    """The most the probes can cost: every body byte billed as an input token, every max_tokens as output."""
    requests = [r for p in all_probes for r in p.requests]
    usage = Usage(
        input_tokens=sum(r.prompt_bound for r in requests),
        output_tokens=sum(r.max_tokens for r in requests),
        requests=len(requests),
    )
    return price(entry, usage, ref)


# --- reading the answers --------------------------------------------------------------------------


def _body(reply: Reply) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError:
        return None


def _error_text(reply: Reply) -> str:
    """A short reason from an error body (OpenAI's or Anthropic's shape), else ''."""
    body = _body(reply)
    err = body.get("error") if isinstance(body, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
    return f": {msg[:120]}" if isinstance(msg, str) and msg else ""


def _not_ok(reply: Reply, endpoint: bool = False) -> Outcome:
    """The outcome of a reply that is not a 2xx: a refusal (no) or a failure that says nothing (unknown)."""
    if reply.status is None:
        return Outcome("unknown", reply.failure or "no answer")
    refused = (400, 422) + ((404, 405) if endpoint else ())
    result = "no" if reply.status in refused else "unknown"
    return Outcome(result, f"HTTP {reply.status}{_error_text(reply)}")


def sse_data(body: bytes) -> list[Any]:
    """The JSON payloads of an SSE body's ``data:`` lines ([DONE] and non-JSON left out)."""
    out = []
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        try:
            out.append(json.loads(data))
        except ValueError:
            continue
    return out


def _choice_message(reply: Reply) -> dict[str, Any] | None:
    body = _body(reply)
    choices = body.get("choices") if isinstance(body, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        return message if isinstance(message, dict) else None
    return None


def _usage(reply: Reply) -> dict[str, Any] | None:
    body = _body(reply)
    usage = body.get("usage") if isinstance(body, dict) else None
    return usage if isinstance(usage, dict) else None


def _ok(reply: Reply) -> bool:
    return reply.status is not None and 200 <= reply.status < 300


def _message(reply: Reply) -> dict[str, Any] | None:
    """The reply's body when it is an Anthropic message (type "message", a content list)."""
    body = _body(reply)
    if isinstance(body, dict) and body.get("type") == "message" and isinstance(body.get("content"), list):
        return body
    return None


def interpret(name: str, replies: list[Reply], form: str = OPENAI) -> Outcome:
    """What the replies to probe ``name``, asked in ``form``, say about the upstream."""
    if form == ANTHROPIC and name not in _ENDPOINTS:
        return interpret_anthropic(name, replies)
    reply = replies[0]
    if name == "cached_in_prompt_tokens":
        return _cached(replies)
    if not _ok(reply):
        return _not_ok(reply, endpoint=name in _ENDPOINTS)
    if name in ("streaming", "stream_usage"):
        return _stream(name, reply)
    if name == "messages":
        if _message(reply) is not None:
            return Outcome("yes", f"HTTP {reply.status}, an Anthropic message")
        return Outcome("unknown", f"HTTP {reply.status}, but not an Anthropic message")
    message = _choice_message(reply)
    if message is None:
        return Outcome("unknown", f"HTTP {reply.status}, but not a chat completion")
    if name == "tools":
        calls = message.get("tool_calls")
        names = (
            [c.get("function", {}).get("name") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
        )
        if TOOL_NAME in names:
            return Outcome("yes", "the forced tool was called")
        return Outcome("unknown", "tools accepted, but the answer called no tool")
    if name == "json_output":
        content = message.get("content")
        try:
            json.loads(content if isinstance(content, str) else "")
        except ValueError:
            return Outcome("unknown", "response_format accepted, but the answer is not JSON")
        return Outcome("yes", "the answer is JSON")
    return Outcome("yes", f"HTTP {reply.status}")  # chat, vision


def _stream(name: str, reply: Reply) -> Outcome:
    events = sse_data(reply.body) if "text/event-stream" in reply.content_type.lower() else []
    chunks = [e for e in events if isinstance(e, dict) and "choices" in e]
    if not chunks:
        return Outcome("no", f"HTTP {reply.status}, {reply.content_type or 'no content type'}: no SSE chunks")
    if name == "streaming":
        return Outcome("yes", f"{len(chunks)} SSE chunks")
    if any(isinstance(e.get("usage"), dict) and "prompt_tokens" in e["usage"] for e in chunks):
        return Outcome("yes", "a usage chunk arrived")
    return Outcome("no", "the stream had no usage chunk")


def _cached(replies: list[Reply]) -> Outcome:
    """Whether prompt_tokens counts the cached tokens of a repeated prompt (yes: OpenAI's convention)."""
    for reply in replies:
        if not _ok(reply):
            return _not_ok(reply)
    first, second = (_usage(r) or {} for r in replies[:2])
    p1, p2 = first.get("prompt_tokens"), second.get("prompt_tokens")
    details = second.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not all(isinstance(v, int) for v in (p1, p2, cached)) or not cached:
        return Outcome("unknown", "the repeated prompt reported no cached tokens")
    assert isinstance(p1, int) and isinstance(p2, int) and isinstance(cached, int)
    if p2 + cached == p1 or p2 < cached:
        return Outcome("no", f"prompt_tokens {p2} + cached_tokens {cached} (first time {p1})")
    return Outcome("yes", f"prompt_tokens {p2} includes cached_tokens {cached}")


def interpret_anthropic(name: str, replies: list[Reply]) -> Outcome:
    """What the replies to a capability question asked in Messages form say; the detail names the form."""
    outcome = _anthropic(name, replies)
    return Outcome(outcome.result, f"{outcome.detail} (Anthropic form)")


def _anthropic(name: str, replies: list[Reply]) -> Outcome:
    if name == "json_output" or not replies:
        return Outcome("unknown", _NO_JSON)
    if name == "cached_in_prompt_tokens":
        return _anthropic_cached(replies)
    reply = replies[0]
    if not _ok(reply):
        return _not_ok(reply)
    if name in ("streaming", "stream_usage"):
        return _anthropic_stream(name, reply)
    message = _message(reply)
    if message is None:
        return Outcome("unknown", f"HTTP {reply.status}, but not an Anthropic message")
    if name == "tools":
        blocks = [b for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
        if any(b.get("name") == TOOL_NAME for b in blocks):
            return Outcome("yes", "the forced tool was called")
        return Outcome("unknown", "tools accepted, but the answer called no tool")
    return Outcome("yes", f"HTTP {reply.status}, an Anthropic message")  # vision


def _anthropic_stream(name: str, reply: Reply) -> Outcome:
    """An Anthropic stream's events; its usage: input_tokens in message_start, output_tokens in message_delta."""
    events = sse_data(reply.body) if "text/event-stream" in reply.content_type.lower() else []
    typed = [e for e in events if isinstance(e, dict) and e.get("type") in _ANTHROPIC_EVENTS]
    if not typed:
        what = reply.content_type or "no content type"
        return Outcome("no", f"HTTP {reply.status}, {what}: no Anthropic stream events")
    if name == "streaming":
        return Outcome("yes", f"{len(typed)} Anthropic stream events")
    starts = [e.get("message") for e in typed if e["type"] == "message_start"]
    inputs = [_int_field(m.get("usage") if isinstance(m, dict) else None, "input_tokens") for m in starts]
    outputs = [_int_field(e.get("usage"), "output_tokens") for e in typed if e["type"] == "message_delta"]
    has_in, has_out = any(v is not None for v in inputs), any(v is not None for v in outputs)
    if has_in and has_out:
        return Outcome("yes", "usage in message_start and message_delta")
    if not has_in and not has_out:
        return Outcome("no", "the stream carried no usage")
    return Outcome("unknown", f"the stream carried only {'input' if has_in else 'output'} usage")


def _int_field(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _anthropic_cached(replies: list[Reply]) -> Outcome:
    """Whether input_tokens counts a repeated prompt's cache reads (yes: unlike Anthropic's own convention)."""
    for reply in replies:
        if not _ok(reply):
            return _not_ok(reply)
    first, second = (_usage(r) or {} for r in replies[:2])
    read, in2 = _int_field(second, "cache_read_input_tokens"), _int_field(second, "input_tokens")
    if read is None or in2 is None or read <= 0:
        return Outcome("unknown", "the repeated prompt reported no cache reads")
    parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    first_total = sum(_int_field(first, k) or 0 for k in parts)
    if in2 < read or in2 + read == first_total:
        return Outcome("no", f"input_tokens {in2} + cache_read_input_tokens {read} (first time {first_total})")
    return Outcome("yes", f"input_tokens {in2} includes cache_read_input_tokens {read}")


def detected_api(chat: Outcome, messages: Outcome) -> str | None:
    """The source's api value from the two endpoints' results (None: not known)."""
    if chat.result == "yes" and messages.result == "yes":
        return "both"
    if chat.result == "yes" and messages.result == "no":
        return "openai"
    if chat.result == "no" and messages.result == "yes":
        return "anthropic"
    return None


def flag_changes(
    all_probes: tuple[Probe, ...], outcomes: dict[str, Outcome], current: dict[str, bool]
) -> dict[str, bool]:
    """The capability flags to write: known results that differ from the entry's current flags."""
    out = {}
    for p in all_probes:
        outcome = outcomes.get(p.name)
        if p.flag is None or outcome is None or outcome.value is None:
            continue
        if current.get(p.flag) != outcome.value:
            out[p.flag] = outcome.value
    return out
