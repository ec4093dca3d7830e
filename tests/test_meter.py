"""The stream meter: usage captured, the usage the client did not ask for hidden in every server's shape,
the terminal event noticed, whatever way the bytes are split."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.proxy.meter import StreamMeter


def ev(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
CONTENT = ev({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
SHAPES = {
    "openai": ev({"id": "c", "choices": [], "usage": USAGE}),
    "vllm": ev(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": USAGE}
    ),
    "litellm": ev({"id": "c", "choices": [{"index": 0, "delta": {}}], "usage": USAGE}),
    "litellm_null_finish": ev(
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}],
            "usage": USAGE,
        }
    ),
}


def run(meter: StreamMeter, data: bytes, cuts: list[int]) -> bytes:
    out, last = b"", 0
    for c in sorted(set(cuts)) + [len(data)]:
        out += meter.feed(data[last:c])
        last = c
    return out + meter.finish()


def test_every_usage_only_shape_is_hidden_when_the_client_did_not_ask():
    for name, chunk in SHAPES.items():
        m = StreamMeter("chat", strip_usage_chunk=True)
        out = run(m, CONTENT + chunk + b"data: [DONE]\n\n", [])
        assert b'"usage"' not in out, name
        assert m.usage().counts() and m.raw_usage == USAGE and m.terminal, name
        assert out == CONTENT + b"data: [DONE]\n\n", name


def test_a_chunk_with_output_and_usage_keeps_its_output():
    last = ev(
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}], "usage": USAGE}
    )
    m = StreamMeter("chat", strip_usage_chunk=True)
    out = run(m, CONTENT + last + b"data: [DONE]\n\n", [])
    assert b'"usage"' not in out and b'"content":"!"' in out and b'"finish_reason":"stop"' in out
    assert m.raw_usage == USAGE


def test_null_usage_on_every_chunk_keeps_every_chunk():
    """OpenAI (and vLLM) put "usage": null on every chunk of a stream that asked for usage: those chunks, the
    first one with only the role included, reach the client as they came; only the real usage chunk goes."""
    role = ev({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None})
    text = ev({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], "usage": None})
    done = ev({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
    m = StreamMeter("chat", strip_usage_chunk=True)
    out = run(m, role + text + done + SHAPES["openai"] + b"data: [DONE]\n\n", [])
    assert out == role + text + done + b"data: [DONE]\n\n"
    assert m.raw_usage == USAGE


def test_usage_is_passed_on_when_the_client_asked():
    for chunk in SHAPES.values():
        m = StreamMeter("chat", strip_usage_chunk=False)
        data = CONTENT + chunk + b"data: [DONE]\n\n"
        assert run(m, data, []) == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SHAPES)), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_splitting_never_changes_what_the_client_gets(shape, cuts, crlf):
    data = CONTENT + SHAPES[shape] + b"data: [DONE]\n\n"
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    whole = StreamMeter("chat", strip_usage_chunk=True)
    expected = run(whole, data, [])
    split = StreamMeter("chat", strip_usage_chunk=True)
    assert run(split, data, [c % (len(data) + 1) for c in cuts]) == expected
    assert split.raw_usage == USAGE and split.terminal


def test_terminal_events_of_each_api():
    m = StreamMeter("messages")
    m.feed(b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"message_stop"}}\n\n')
    assert not m.terminal  # the word in the text is not the event
    m.feed(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    assert m.terminal
    r = StreamMeter("responses")
    r.feed(b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n')
    assert not r.terminal
    r.feed(
        b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
    )
    assert r.terminal and r.usage() is not None
    c = StreamMeter("chat")
    c.feed(ev({"choices": [{"delta": {"content": "data: [DONE]"}}]}))
    assert not c.terminal
    c.feed(b"data:[DONE]\n\n")
    assert c.terminal


def test_an_error_event_is_noted_in_either_api_and_text_about_errors_is_not():
    quoted = ev({"id": "c", "choices": [{"index": 0, "delta": {"content": '{"error": "no"} is JSON'}}]})
    tool = ev(
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": '{"error"'}}]}}]}
    )
    m = StreamMeter("chat")
    assert run(m, quoted + tool, [5, 40]) == quoted + tool and m.failure is None
    openai_error = ev({"error": {"message": "The server had an error", "type": "server_error"}})
    m = StreamMeter("chat")
    assert run(m, CONTENT + openai_error, [3]) == CONTENT + openai_error
    assert m.failure == "upstream stream error: The server had an error (server_error)"
    anthropic_error = (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    m = StreamMeter("messages")
    run(m, anthropic_error, [10])
    assert m.failure == "upstream stream error: Overloaded (overloaded_error)" and not m.terminal
    # an event that merely has an "error" field of another meaning (a Responses failure carries its own)
    m = StreamMeter("messages")
    run(m, ev({"type": "content_block_delta", "error": {"message": "x"}}), [])
    assert m.failure is None
