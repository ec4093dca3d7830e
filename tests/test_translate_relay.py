"""The relay's translating meter: upstream SSE bytes in any cut -> the client's events, metered upstream."""

from __future__ import annotations

import json

from gwctl.core.decision import A2O, O2A
from gwctl.proxy.translating import Translation
from gwctl.testing.responses import TokenCounts, _message_stream, chat_tool_call

COUNTS = TokenCounts(input_tokens=1000, output_tokens=50, cached_tokens=200)
ARGS = '{"city": "Paris"}'


def fed_byte_by_byte(meter, upstream: bytes) -> bytes:
    out = b"".join(meter.feed(upstream[i : i + 1]) for i in range(len(upstream)))
    return out + meter.finish()


def events(sse: bytes) -> list[tuple[str | None, object]]:
    out = []
    for block in sse.decode().split("\n\n"):
        if not block:
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = lines["data"]
        out.append((lines.get("event"), data if data == "[DONE]" else json.loads(data)))
    return out


def test_an_openai_tool_call_stream_becomes_anthropic_events_whatever_the_cuts():
    upstream = b"".join(chat_tool_call("m", "get_weather", ARGS, COUNTS, True, True))
    meter = Translation(A2O, "oa/m", hidden_usage=True).stream_meter("rid1")
    got = events(fed_byte_by_byte(meter, upstream))
    names = [name for name, _ in got]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert meter.terminal
    start = next(p for n, p in got if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    pieces = [p["delta"]["partial_json"] for n, p in got if n == "content_block_delta"]
    assert json.loads("".join(pieces)) == json.loads(ARGS)
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    usage = meter.usage()  # metered as the OpenAI upstream sent it
    assert usage is not None and usage.input_tokens == 800 and usage.cached_input_tokens == 200
    assert usage.output_tokens == 50


def test_an_anthropic_stream_becomes_openai_chunks_without_the_usage_not_asked_for():
    upstream = b"".join(_message_stream("m", ["Hel", "lo"], COUNTS))
    hidden = Translation(O2A, "an/m", hidden_usage=True).stream_meter("rid2")
    got = events(fed_byte_by_byte(hidden, upstream))
    assert got[-1] == (None, "[DONE]") and hidden.terminal
    assert all(name is None for name, _ in got)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for _, p in got[:-1] if p["choices"]) == "Hello"
    assert not any("usage" in p and p["usage"] for _, p in got[:-1])
    assert hidden.usage() is not None and hidden.usage().output_tokens == 50
    shown = Translation(O2A, "an/m", hidden_usage=False).stream_meter("rid3")
    got = events(fed_byte_by_byte(shown, upstream))
    assert got[-2][1]["usage"]["completion_tokens"] == 50


def test_a_cut_stream_still_ends_in_the_clients_api():
    upstream = b"".join(chat_tool_call("m", "f", ARGS, COUNTS, True, True))
    cut = upstream[: upstream.index(b"data: [DONE]")]
    cut = cut[: cut.rindex(b"data: ")]  # the usage chunk and [DONE] never came
    meter = Translation(A2O, "oa/m", hidden_usage=True).stream_meter("rid4")
    got = events(fed_byte_by_byte(meter, cut))
    assert [n for n, _ in got][-2:] == ["message_delta", "message_stop"]
