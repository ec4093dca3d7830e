"""Whole-response and error-body translation, Anthropic Messages <-> OpenAI Chat Completions."""

from __future__ import annotations

import json

import pytest

from gwctl.core.translate import (
    TranslationError,
    anthropic_error_to_openai,
    anthropic_to_openai_response,
    gateway_error_to_anthropic,
    openai_error_to_anthropic,
    openai_to_anthropic_response,
)

OPENAI_TOOLS_RESPONSE = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me check.",
                "reasoning_content": "Two cities, two calls.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": '{"city":"Rome"}'}},
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}

ANTHROPIC_TOOLS_RESPONSE = {
    "id": "msg_chatcmpl-abc",
    "type": "message",
    "role": "assistant",
    "model": "client-model",
    "content": [
        {"type": "thinking", "thinking": "Two cities, two calls.", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "w", "input": {"city": "Rome"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 20,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
    },
}


def test_openai_response_to_anthropic_golden():
    assert openai_to_anthropic_response(OPENAI_TOOLS_RESPONSE, model="client-model") == ANTHROPIC_TOOLS_RESPONSE


def test_anthropic_response_to_openai_golden():
    out = anthropic_to_openai_response(ANTHROPIC_TOOLS_RESPONSE, model="client-model", created=7)
    assert out == {
        "id": "chatcmpl-msg_chatcmpl-abc",
        "object": "chat.completion",
        "created": 7,
        "model": "client-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "Two cities, two calls.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": '{"city":"Rome"}'}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }


def test_anthropic_usage_counts_cache_writes_in_prompt_tokens():
    resp = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 5,
            "output_tokens": 2,
            "cache_read_input_tokens": 40,
            "cache_creation_input_tokens": 300,
        },
    }
    usage = anthropic_to_openai_response(resp, model="m")["usage"]
    assert usage == {
        "prompt_tokens": 345,
        "completion_tokens": 2,
        "total_tokens": 347,
        "prompt_tokens_details": {"cached_tokens": 40},
    }
    assert anthropic_to_openai_response(resp, model="m")["id"] == "chatcmpl-msg_1"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_finish_reasons_map_both_ways(finish, stop):
    resp = {"id": "x", "choices": [{"message": {"content": "t"}, "finish_reason": finish}]}
    assert openai_to_anthropic_response(resp, model="m")["stop_reason"] == stop
    back = anthropic_to_openai_response({"content": [], "stop_reason": stop}, model="m")
    assert back["choices"][0]["finish_reason"] == finish


def test_stop_sequence_reads_as_stop():
    back = anthropic_to_openai_response({"content": [], "stop_reason": "stop_sequence"}, model="m")
    assert back["choices"][0]["finish_reason"] == "stop"


def test_openai_refusal_becomes_text_with_refusal_stop():
    resp = {"id": "x", "choices": [{"message": {"content": None, "refusal": "I can't."}, "finish_reason": "stop"}]}
    out = openai_to_anthropic_response(resp, model="m")
    assert out["content"] == [{"type": "text", "text": "I can't."}]
    assert out["stop_reason"] == "refusal"


def test_invalid_tool_arguments_are_kept_raw():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}
    resp = {"id": "x", "choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    block = openai_to_anthropic_response(resp, model="m")["content"][0]
    assert block == {"type": "tool_use", "id": "c", "name": "f", "input": {"_raw": '{"a": 1'}}


def test_tool_only_anthropic_answer_has_null_content():
    resp = {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"}
    message = anthropic_to_openai_response(resp, model="m")["choices"][0]["message"]
    assert message["content"] is None
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {}


def test_server_tool_blocks_are_refused():
    resp = {"content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}
    with pytest.raises(TranslationError) as caught:
        anthropic_to_openai_response(resp, model="m")
    assert caught.value.rule == "untranslatable_content" and caught.value.param == "content.0"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (422, "invalid_request_error"),
    ],
)
def test_openai_error_to_anthropic(status, kind):
    body = {"error": {"message": "nope", "type": "whatever", "code": "c", "param": None}}
    assert openai_error_to_anthropic(status, body) == {"type": "error", "error": {"type": kind, "message": "nope"}}


def test_openai_error_from_a_non_json_body():
    out = openai_error_to_anthropic(502, b"Bad Gateway")
    assert out == {"type": "error", "error": {"type": "api_error", "message": "Bad Gateway"}}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (429, "rate_limit_error"), (529, "server_error")],
)
def test_anthropic_error_to_openai(status, kind):
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = anthropic_error_to_openai(status, body)
    assert out == {"error": {"message": "Overloaded", "type": kind, "code": "overloaded_error", "param": None}}


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "api_error"),
        (408, "invalid_request_error"),
    ],
)
def test_the_gateways_own_error_in_anthropics_shape(status, etype):
    own = {"error": {"message": "why", "type": "invalid_request_error", "code": "some_rule", "param": "messages.0"}}
    assert gateway_error_to_anthropic(status, own) == {
        "type": "error",
        "error": {"type": etype, "message": "why", "code": "some_rule", "param": "messages.0"},
    }
    bare = {"error": {"message": "why", "type": "api_error", "code": None, "param": None}}
    assert gateway_error_to_anthropic(status, bare) == {"type": "error", "error": {"type": etype, "message": "why"}}
