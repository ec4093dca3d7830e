"""Stream translation, OpenAI chat chunks <-> Anthropic Messages events, event by event."""

from __future__ import annotations

import json

from gwctl.core.translate import DONE, AnthropicToOpenAIStream, OpenAIToAnthropicStream
from gwctl.core.translate.streams import CUT_SHORT


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": choices}
    return body | ({"usage": usage} if usage is not None else {})


def call(index: int, args: str, id_: str | None = None, name: str | None = None) -> dict:
    function: dict = {"arguments": args}
    piece: dict = {"index": index, "function": function}
    if id_ is not None:
        piece |= {"id": id_, "type": "function"}
        function["name"] = name
    return {"tool_calls": [piece]}


OPENAI_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Checking "}),
    chunk({"content": "both."}),
    chunk(call(0, "", "call_a", "weather")),
    chunk(call(0, '{"ci')),
    chunk(call(0, 'ty": "Paris"}')),
    chunk(call(1, "", "call_b", "weather")),
    chunk(call(1, '{"city"')),
    chunk(call(1, ': "Rome"}')),
    chunk({}, finish="tool_calls"),
    chunk(
        None,
        usage={
            "prompt_tokens": 50,
            "completion_tokens": 20,
            "total_tokens": 70,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    ),
    DONE,
]


def start(index: int, block: dict) -> tuple:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, d: dict) -> tuple:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})


def stop(index: int) -> tuple:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def json_piece(text: str) -> dict:
    return {"type": "input_json_delta", "partial_json": text}


EXPECTED_ANTHROPIC = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "client-model",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        },
    ),
    start(0, {"type": "text", "text": ""}),
    delta(0, {"type": "text_delta", "text": "Checking "}),
    delta(0, {"type": "text_delta", "text": "both."}),
    stop(0),
    start(1, {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}),
    delta(1, json_piece('{"ci')),
    delta(1, json_piece('ty": "Paris"}')),
    stop(1),
    start(2, {"type": "tool_use", "id": "call_b", "name": "weather", "input": {}}),
    delta(2, json_piece('{"city"')),
    delta(2, json_piece(': "Rome"}')),
    stop(2),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 40,
                "output_tokens": 20,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 10,
            },
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def run(translator, events) -> list:
    out = []
    for event in events:
        out.extend(translator.feed(event))
    return out + translator.finish()


def test_openai_stream_to_anthropic_exact_events():
    out = run(OpenAIToAnthropicStream("client-model", "msg_1", hide_usage=True), OPENAI_CHUNKS)
    assert out == EXPECTED_ANTHROPIC


def test_partial_json_concatenates_to_the_arguments():
    out = run(OpenAIToAnthropicStream("m", "msg_1"), OPENAI_CHUNKS)
    args: dict[int, str] = {}
    for name, payload in out:
        if name == "content_block_delta" and payload["delta"]["type"] == "input_json_delta":
            args[payload["index"]] = args.get(payload["index"], "") + payload["delta"]["partial_json"]
    assert {k: json.loads(v) for k, v in args.items()} == {1: {"city": "Paris"}, 2: {"city": "Rome"}}


def test_openai_reasoning_then_text_opens_a_thinking_block_first():
    events = [chunk({"reasoning_content": "think"}), chunk({"reasoning": " more"}), chunk({"content": "ok"}, "stop")]
    out = run(OpenAIToAnthropicStream("m", "msg_1"), events + [DONE])
    kinds = [(n, p.get("index"), p.get("delta", {}).get("type")) for n, p in out]
    assert kinds[1:7] == [
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "text_delta"),
    ]
    assert out[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert out[-2][1]["usage"] == {"output_tokens": 0}  # no usage chunk came


def test_openai_stream_cut_short_ends_with_an_error_not_a_made_up_end_turn():
    stream = OpenAIToAnthropicStream("m", "msg_1")
    stream.feed(chunk({"content": "partial"}))
    ending = stream.finish()  # no finish_reason came: the answer is not whole
    assert ending == [("error", {"type": "error", "error": {"type": "api_error", "message": CUT_SHORT}})]
    assert stream.finish() == [] and stream.feed(DONE) == []


def test_openai_stream_ended_after_its_finish_reason_still_ends_the_message_once():
    stream = OpenAIToAnthropicStream("m", "msg_1")
    stream.feed(chunk({"content": "whole"}, "stop"))
    ending = stream.finish()  # the usage chunk and [DONE] never came, the answer did
    assert [n for n, _ in ending] == ["content_block_stop", "message_delta", "message_stop"]
    assert ending[1][1]["delta"]["stop_reason"] == "end_turn"
    assert stream.finish() == [] and stream.feed(DONE) == []


def test_openai_error_chunk_becomes_an_anthropic_error_event():
    stream = OpenAIToAnthropicStream("m", "msg_1")
    out = stream.feed({"error": {"message": "boom", "type": "server_error"}})
    assert out == [("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})]
    assert stream.finish() == []


def a_event(kind: str, **fields) -> dict:
    return {"type": kind} | fields


ANTHROPIC_EVENTS = [
    a_event(
        "message_start",
        message={
            "id": "msg_9",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-x",
            "stop_reason": None,
            "usage": {
                "input_tokens": 12,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 3,
                "output_tokens": 1,
            },
        },
    ),
    a_event("ping"),
    a_event("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
    a_event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Hmm."}),
    a_event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig"}),
    a_event("content_block_stop", index=0),
    a_event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    a_event("content_block_delta", index=1, delta={"type": "text_delta", "text": "On it."}),
    a_event("content_block_stop", index=1),
    a_event(
        "content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}
    ),
    a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": ""}),
    a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"city": '}),
    a_event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '"Paris"}'}),
    a_event("content_block_stop", index=2),
    a_event(
        "content_block_start", index=3, content_block={"type": "tool_use", "id": "toolu_2", "name": "w", "input": {}}
    ),
    a_event("content_block_delta", index=3, delta={"type": "input_json_delta", "partial_json": '{"city": "Rome"}'}),
    a_event("content_block_stop", index=3),
    a_event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 42}),
    a_event("message_stop"),
]


def oc(delta: dict, finish: str | None = None) -> tuple:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 5, "model": "client-model"}
    return (None, body | {"choices": [choice], "usage": None})


def tool_piece(index: int, args: str, id_: str | None = None) -> dict:
    if id_ is None:
        return {"tool_calls": [{"index": index, "function": {"arguments": args}}]}
    return {
        "tool_calls": [{"index": index, "id": id_, "type": "function", "function": {"name": "w", "arguments": args}}]
    }


EXPECTED_OPENAI = [
    oc({"role": "assistant", "content": ""}),
    oc({"reasoning_content": "Hmm."}),
    oc({"content": "On it."}),
    oc(tool_piece(0, "", "toolu_1")),
    oc(tool_piece(0, '{"city": ')),
    oc(tool_piece(0, '"Paris"}')),
    oc(tool_piece(1, "", "toolu_2")),
    oc(tool_piece(1, '{"city": "Rome"}')),
    oc({}, "tool_calls"),
    (
        None,
        {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "created": 5,
            "model": "client-model",
            "choices": [],
            "usage": {
                "prompt_tokens": 115,
                "completion_tokens": 42,
                "total_tokens": 157,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
        },
    ),
    (None, DONE),
]


def test_anthropic_stream_to_openai_exact_chunks():
    stream = AnthropicToOpenAIStream("client-model", "chatcmpl-9", include_usage=True, created=5)
    assert run(stream, ANTHROPIC_EVENTS) == EXPECTED_OPENAI


def test_anthropic_stream_without_usage_has_no_usage_chunk():
    out = run(AnthropicToOpenAIStream("m", "c", include_usage=False), ANTHROPIC_EVENTS)
    assert out[-1] == (None, DONE)
    assert all("usage" not in p for _, p in out[:-1])
    assert out[-2][1]["choices"][0]["finish_reason"] == "tool_calls"
    arguments: dict[int, str] = {}
    for _, payload in out[:-1]:
        for piece in payload["choices"][0]["delta"].get("tool_calls", []):
            arguments[piece["index"]] = arguments.get(piece["index"], "") + piece["function"]["arguments"]
    assert {k: json.loads(v) for k, v in arguments.items()} == {0: {"city": "Paris"}, 1: {"city": "Rome"}}


def test_anthropic_error_event_ends_the_stream_without_done():
    stream = AnthropicToOpenAIStream("m", "c", include_usage=False)
    stream.feed(ANTHROPIC_EVENTS[0])
    out = stream.feed(a_event("error", error={"type": "overloaded_error", "message": "Overloaded"}))
    assert out == [
        (
            None,
            {"error": {"message": "Overloaded", "type": "overloaded_error", "code": "overloaded_error", "param": None}},
        )
    ]
    assert stream.finish() == []


def test_anthropic_stream_cut_short_ends_with_an_error_not_a_made_up_stop():
    stream = AnthropicToOpenAIStream("m", "c", include_usage=False)
    stream.feed(ANTHROPIC_EVENTS[0])
    out = stream.finish()  # no message_delta with a stop_reason came: the answer is not whole
    assert out == [(None, {"error": {"message": CUT_SHORT, "type": "api_error", "code": None, "param": None}})]
    assert stream.finish() == [] and stream.feed(a_event("message_stop")) == []


def test_anthropic_stream_ended_after_its_stop_reason_still_finishes():
    stream = AnthropicToOpenAIStream("m", "c", include_usage=False)
    stream.feed(ANTHROPIC_EVENTS[0])
    stream.feed(a_event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}))
    out = stream.finish()  # message_stop never came, the answer did
    assert out == [(None, DONE)]


def test_streams_round_trip_openai_anthropic_openai_keeps_text_and_tools():
    anthropic = run(OpenAIToAnthropicStream("m", "msg_1"), OPENAI_CHUNKS)
    back = run(AnthropicToOpenAIStream("m", "c", include_usage=True), [p for _, p in anthropic])
    text = "".join(p["choices"][0]["delta"].get("content") or "" for _, p in back if p != DONE and p["choices"])
    assert text == "Checking both."
    assert back[-2][1]["usage"]["prompt_tokens"] == 50
    assert back[-2][1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 10}


def test_thinking_block_starts_with_an_empty_signature():
    out = OpenAIToAnthropicStream("m", "msg_1").feed(chunk({"reasoning_content": "x"}))
    assert out[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
