"""Property tests: conversations and usage keep their meaning through a translation and back."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.translate import (
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)

TEXT = st.text(min_size=1, max_size=20)
NAME = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8
)
ARGS = st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=4)


@st.composite
def tool_calls(draw: Any, counter: list[int]) -> list[tuple[str, str, dict]]:
    calls = []
    for _ in range(draw(st.integers(0, 3))):
        counter[0] += 1
        calls.append((f"call_{counter[0]}", draw(NAME), draw(ARGS)))
    return calls


@st.composite
def anthropic_conversations(draw: Any) -> list[dict]:
    """Alternating turns; a user turn answers the previous turn's tool calls first, then may add text."""
    counter = [0]
    messages: list[dict] = []
    pending: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        results = [
            {
                "type": "tool_result",
                "tool_use_id": tool_id,
                "content": draw(
                    st.text(max_size=10)
                    | st.lists(TEXT.map(lambda t: {"type": "text", "text": t}), min_size=1, max_size=2)
                ),
            }
            for tool_id in pending
        ]
        texts = [{"type": "text", "text": t} for t in draw(st.lists(TEXT, min_size=0 if results else 1, max_size=2))]
        if not results and len(texts) == 1 and draw(st.booleans()):
            messages.append({"role": "user", "content": texts[0]["text"]})
        else:
            messages.append({"role": "user", "content": results + texts})
        calls = draw(tool_calls(counter))
        texts = [{"type": "text", "text": t} for t in draw(st.lists(TEXT, min_size=0 if calls else 1, max_size=2))]
        uses = [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
        messages.append({"role": "assistant", "content": texts + uses})
        pending = [i for i, _, _ in calls]
    return messages


def anthropic_meaning(messages: list[dict]) -> list[tuple]:
    """Roles in order, and per turn the texts, tool uses and tool results, ignoring the form."""
    out = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        items = []
        for block in blocks:
            if block["type"] == "text":
                items.append(("text", block["text"]))
            elif block["type"] == "tool_use":
                items.append(("tool_use", block["id"], block["name"], json.dumps(block["input"], sort_keys=True)))
            else:
                result = block["content"]
                texts = (result,) if isinstance(result, str) else tuple(b["text"] for b in result)
                items.append(("tool_result", block["tool_use_id"], texts))
        out.append((message["role"], tuple(items)))
    return out


@settings(max_examples=150, deadline=None)
@given(messages=anthropic_conversations(), system=st.none() | TEXT)
def test_anthropic_openai_anthropic_keeps_the_conversation(messages: list[dict], system: str | None) -> None:
    body: dict = {"model": "m", "max_tokens": 100, "messages": messages}
    if system is not None:
        body["system"] = system
    there = anthropic_to_openai_request(body, default_max_tokens=1)
    json.dumps(there.body)  # plain JSON all the way down
    back = openai_to_anthropic_request(there.body, default_max_tokens=1).body
    assert back.get("system") == system
    assert back["max_tokens"] == 100
    assert anthropic_meaning(back["messages"]) == anthropic_meaning(messages)


@st.composite
def openai_conversations(draw: Any) -> list[dict]:
    """user, assistant (maybe with tool calls), the tool answers, then again; may end on tools."""
    counter = [0]
    messages: list[dict] = []
    after_tools = False
    for _ in range(draw(st.integers(1, 4))):
        if not after_tools or draw(st.booleans()):
            messages.append({"role": "user", "content": draw(TEXT)})
        calls = draw(tool_calls(counter))
        assistant: dict = {"role": "assistant", "content": draw(TEXT) if not calls or draw(st.booleans()) else None}
        if calls:
            assistant["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in calls
            ]
        messages.append(assistant)
        messages.extend({"role": "tool", "tool_call_id": i, "content": draw(st.text(max_size=10))} for i, _, _ in calls)
        after_tools = bool(calls)
    return messages


def openai_meaning(messages: list[dict]) -> list[tuple]:
    out = []
    for message in messages:
        calls = tuple(
            (c["id"], c["function"]["name"], json.dumps(json.loads(c["function"]["arguments"]), sort_keys=True))
            for c in message.get("tool_calls", [])
        )
        out.append((message["role"], message.get("content"), calls, message.get("tool_call_id")))
    return out


@settings(max_examples=150, deadline=None)
@given(messages=openai_conversations(), system=st.none() | TEXT)
def test_openai_anthropic_openai_keeps_the_conversation(messages: list[dict], system: str | None) -> None:
    if system is not None:
        messages = [{"role": "system", "content": system}] + messages
    there = openai_to_anthropic_request({"model": "m", "messages": messages}, default_max_tokens=64).body
    roles = [m["role"] for m in there["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:])), "Anthropic turns must alternate"
    back = anthropic_to_openai_request(there, default_max_tokens=1).body
    assert back["max_completion_tokens"] == 64
    assert openai_meaning(back["messages"]) == openai_meaning(messages)


COUNT = st.integers(0, 10**7)


@given(prompt=COUNT, cached=COUNT, completion=COUNT)
def test_openai_usage_round_trips_exactly(prompt: int, cached: int, completion: int) -> None:
    prompt += cached  # OpenAI's prompt tokens include the cached ones
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    resp = {"id": "x", "choices": [{"message": {"content": "t"}, "finish_reason": "stop"}], "usage": usage}
    anthropic = openai_to_anthropic_response(resp, model="m")
    assert anthropic["usage"]["input_tokens"] + anthropic["usage"]["cache_read_input_tokens"] == prompt
    assert anthropic_to_openai_response(anthropic, model="m")["usage"] == usage


@given(inp=COUNT, read=COUNT, write=COUNT, out=COUNT)
def test_anthropic_usage_keeps_every_token(inp: int, read: int, write: int, out: int) -> None:
    usage = {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read}
    usage["cache_creation_input_tokens"] = write
    openai = anthropic_to_openai_response({"content": [], "usage": usage}, model="m")["usage"]
    assert openai["prompt_tokens"] == inp + read + write
    assert openai["total_tokens"] == inp + read + write + out
    resp = {"id": "x", "choices": [{"message": {"content": "t"}, "finish_reason": "stop"}], "usage": openai}
    back = openai_to_anthropic_response(resp, model="m")["usage"]
    # OpenAI cannot tell cache writes from plain input, so they come back as input; nothing is lost.
    assert back == {
        "input_tokens": inp + write,
        "output_tokens": out,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": read,
    }
