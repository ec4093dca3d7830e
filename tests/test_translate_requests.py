"""Request translation, Anthropic Messages <-> OpenAI Chat Completions: golden pairs and refusals."""

from __future__ import annotations

import json

import pytest

from gwctl.core.translate import (
    TOOL_ERROR_MARKER,
    TranslationError,
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)

PNG = "iVBORw0KGgo="


def a2o(body: dict, default: int = 1024):
    return anthropic_to_openai_request(body, default_max_tokens=default)


def o2a(body: dict, default: int = 1024):
    return openai_to_anthropic_request(body, default_max_tokens=default)


def test_text_and_system_string_both_ways():
    anthropic = {
        "model": "m",
        "system": "Be brief.",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    openai = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,
    }
    assert a2o(anthropic).body == openai
    assert o2a(openai).body == anthropic
    assert a2o(anthropic).warnings == ()


def test_system_blocks_become_text_parts_and_back():
    blocks = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    out = a2o({"model": "m", "system": blocks, "messages": []}).body
    assert out["messages"] == [{"role": "system", "content": blocks}]
    assert o2a(out).body["system"] == blocks


def test_several_openai_system_and_developer_messages_join_with_blank_lines():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "A"},
            {"role": "developer", "content": "B"},
            {"role": "user", "content": "q"},
        ],
    }
    out = o2a(body).body
    assert out["system"] == "A\n\nB"
    assert out["messages"] == [{"role": "user", "content": "q"}]


def test_images_base64_and_url_both_ways():
    anthropic_content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]
    openai_content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
    ]
    out = a2o({"model": "m", "messages": [{"role": "user", "content": anthropic_content}]}).body
    assert out["messages"] == [{"role": "user", "content": openai_content}]
    back = o2a({"model": "m", "messages": [{"role": "user", "content": openai_content}]}).body
    assert back["messages"] == [{"role": "user", "content": anthropic_content}]


TOOLS_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_two_parallel_tool_calls_and_their_results_both_ways():
    anthropic = {
        "model": "m",
        "max_tokens": 100,
        "tools": TOOLS_ANTHROPIC,
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
                ],
            },
        ],
    }
    openai_messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
    ]
    out = a2o(anthropic).body
    assert out["messages"] == openai_messages
    assert out["tools"] == TOOLS_OPENAI
    assert out["tool_choice"] == "auto"
    back = o2a(out).body
    assert back["tools"] == TOOLS_ANTHROPIC
    assert back["tool_choice"] == {"type": "auto"}
    # The two tool messages become ONE user turn with two tool_result blocks.
    assert back["messages"] == anthropic["messages"]


def test_tool_result_error_keeps_its_content_exactly_behind_a_marker():
    msg = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "city not found", "is_error": True}],
    }
    out = a2o({"model": "m", "messages": [msg]}).body
    assert out["messages"] == [
        {
            "role": "tool",
            "tool_call_id": "t1",
            "content": [{"type": "text", "text": TOOL_ERROR_MARKER}, {"type": "text", "text": "city not found"}],
        }
    ]
    back = o2a(out).body["messages"][0]["content"][0]
    assert "is_error" not in back  # OpenAI has no error flag
    assert back["content"][1] == {"type": "text", "text": "city not found"}


def test_tool_result_images_follow_as_a_user_message():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}
    msg = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "shot"}, image]},
            {"type": "text", "text": "Describe it."},
        ],
    }
    out = a2o({"model": "m", "messages": [msg]}).body["messages"]
    assert out[0] == {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "shot"}]}
    assert out[1]["role"] == "user"
    assert out[1]["content"][0] == {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}
    assert out[1]["content"][1] == {"type": "text", "text": "Describe it."}


@pytest.mark.parametrize(
    ("anthropic", "openai"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_both_ways(anthropic, openai):
    out = a2o({"model": "m", "messages": [], "tools": TOOLS_ANTHROPIC, "tool_choice": anthropic}).body
    assert out["tool_choice"] == openai
    assert "parallel_tool_calls" not in out
    assert o2a(out).body["tool_choice"] == anthropic


def test_disable_parallel_tool_use_both_ways():
    choice = {"type": "any", "disable_parallel_tool_use": True}
    out = a2o({"model": "m", "messages": [], "tools": TOOLS_ANTHROPIC, "tool_choice": choice}).body
    assert out["parallel_tool_calls"] is False
    assert o2a(out).body["tool_choice"] == choice
    only_flag = o2a({"model": "m", "messages": [], "tools": TOOLS_OPENAI, "parallel_tool_calls": False}).body
    assert only_flag["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_max_tokens_default_and_precedence():
    assert a2o({"model": "m", "messages": []}, default=777).body["max_completion_tokens"] == 777
    assert o2a({"model": "m", "messages": []}, default=777).body["max_tokens"] == 777
    assert o2a({"model": "m", "messages": [], "max_tokens": 5}).body["max_tokens"] == 5
    assert o2a({"model": "m", "messages": [], "max_tokens": 5, "max_completion_tokens": 9}).body["max_tokens"] == 9


def test_stop_sampling_user_both_ways():
    anthropic = {
        "model": "m",
        "messages": [],
        "max_tokens": 10,
        "stop_sequences": ["END", "\n\n"],
        "temperature": 0.3,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1"},
    }
    out = a2o(anthropic).body
    assert out["stop"] == ["END", "\n\n"] and out["temperature"] == 0.3 and out["top_p"] == 0.9
    assert out["user"] == "u-1"
    assert o2a(out).body == anthropic
    assert o2a({"model": "m", "messages": [], "stop": "END"}).body["stop_sequences"] == ["END"]


def test_openai_temperature_above_one_is_lowered_with_a_warning():
    out = o2a({"model": "m", "messages": [], "temperature": 1.7})
    assert out.body["temperature"] == 1.0
    assert any("temperature" in w for w in out.warnings)


def test_streaming_flags():
    streamed = a2o({"model": "m", "messages": [], "stream": True})
    assert streamed.body["stream"] is True
    assert streamed.body["stream_options"] == {"include_usage": True}
    assert streamed.hidden_usage is True
    assert a2o({"model": "m", "messages": []}).hidden_usage is False
    plain = o2a({"model": "m", "messages": [], "stream": True})
    assert plain.body["stream"] is True and "stream_options" not in plain.body
    assert plain.hidden_usage is True
    asked = o2a({"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert asked.hidden_usage is False


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "low"), (2049, "medium"), (8192, "medium"), (8193, "high")]
)
def test_thinking_budget_to_reasoning_effort(budget, effort):
    body = {"model": "m", "messages": [], "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert a2o(body).body["reasoning_effort"] == effort


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_to_thinking_budget_and_back(effort, budget):
    out = o2a({"model": "m", "messages": [], "reasoning_effort": effort, "max_tokens": 32000}).body
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert a2o(out).body["reasoning_effort"] == effort


def test_reasoning_effort_respects_max_tokens_and_thinking_limits():
    capped = o2a({"model": "m", "messages": [], "reasoning_effort": "high", "max_tokens": 3000}).body
    assert capped["thinking"]["budget_tokens"] == 2999
    too_small = o2a({"model": "m", "messages": [], "reasoning_effort": "low", "max_tokens": 500})
    assert "thinking" not in too_small.body and too_small.warnings
    hot = o2a({"model": "m", "messages": [], "reasoning_effort": "low", "max_tokens": 4000, "temperature": 0.2})
    assert "temperature" not in hot.body
    assert o2a({"model": "m", "messages": [], "reasoning_effort": "none"}).body.get("thinking") is None


def test_advisory_fields_are_dropped_with_warnings():
    out = a2o({"model": "m", "messages": [], "top_k": 5})
    assert "top_k" not in out.body and out.warnings == ("top_k dropped: no counterpart",)
    back = o2a({"model": "m", "messages": [], "seed": 1, "frequency_penalty": 0.5})
    assert "seed" not in back.body and "frequency_penalty" not in back.body
    assert len(back.warnings) == 2


def test_cache_control_and_thinking_history_are_dropped_with_warnings():
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "a"}],
            },
            {"role": "user", "content": "more"},
        ],
    }
    out = a2o(body)
    assert out.body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "S"}]}
    assert out.body["messages"][2] == {"role": "assistant", "content": "a"}
    assert len(out.warnings) == 2


def test_consecutive_same_role_messages_merge_for_anthropic():
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    out = o2a(body).body["messages"]
    assert out == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_tool_results_then_user_text_form_one_turn():
    body = {
        "model": "m",
        "messages": [
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
            {"role": "user", "content": "thanks"},
        ],
    }
    out = o2a(body).body["messages"]
    assert len(out) == 1 and out[0]["role"] == "user"
    assert [b["type"] for b in out[0]["content"]] == ["tool_result", "tool_result", "text"]


def test_invalid_json_arguments_in_history_are_kept_raw():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{broken"}}
    body = {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    block = o2a(body).body["messages"][0]["content"][0]
    assert block["input"] == {"_raw": "{broken"}


@pytest.mark.parametrize(
    ("body", "rule", "param"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}],
                    }
                ]
            },
            "untranslatable_content",
            "messages.0.content.0",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "weird"}]}]}, "untranslatable_content", None),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "read"},
                            {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
                        ],
                    }
                ]
            },
            "untranslatable_content",
            "messages.0.content.1",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
                        ],
                    }
                ]
            },
            "untranslatable_content",
            "messages.0.content.0",
        ),
        (
            {"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "untranslatable_param",
            "tools.0",
        ),
        ({"messages": [], "thinking": {"type": "other"}}, "untranslatable_param", "thinking"),
        ({"messages": [], "mcp_servers": []}, "untranslatable_param", "mcp_servers"),
    ],
)
def test_anthropic_refusals(body, rule, param):
    with pytest.raises(TranslationError) as caught:
        a2o({"model": "m"} | body)
    assert caught.value.rule == rule
    if param is not None:
        assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "rule", "param"),
    [
        ({"n": 2}, "untranslatable_param", "n"),
        ({"logprobs": True}, "untranslatable_param", "logprobs"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "untranslatable_param", "response_format"),
        ({"response_format": {"type": "json_object"}}, "untranslatable_param", "response_format"),
        ({"audio": {"voice": "alloy"}}, "untranslatable_param", "audio"),
        ({"logit_bias": {"1": 5}}, "untranslatable_param", "logit_bias"),
        ({"reasoning_effort": "enormous"}, "untranslatable_param", "reasoning_effort"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "untranslatable_content",
            "messages.0.content.0",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
            "untranslatable_content",
            "messages.0.content.0",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]},
            "untranslatable_content",
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:text/csv;base64,YQ=="}}]}
                ]
            },
            "untranslatable_content",
            "messages.0.content.0",
        ),
    ],
)
def test_openai_refusals(body, rule, param):
    with pytest.raises(TranslationError) as caught:
        o2a({"model": "m", "messages": []} | body)
    assert caught.value.rule == rule
    assert caught.value.param == param


def test_n_equal_one_and_text_response_format_are_accepted():
    out = o2a({"model": "m", "messages": [], "n": 1, "response_format": {"type": "text"}})
    assert "n" not in out.body and "response_format" not in out.body


def test_arguments_are_compact_json_that_parse_back():
    msg = {"role": "assistant", "content": [{"type": "tool_use", "id": "i", "name": "f", "input": {"a": [1, "é"]}}]}
    args = a2o({"model": "m", "messages": [msg]}).body["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"a": [1, "é"]}


def test_empty_stop_sequences_send_no_stop():
    assert "stop" not in a2o({"model": "m", "messages": [], "stop_sequences": []}).body


def test_prefilled_assistant_answer_is_sent_with_a_warning():
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "{"}]}
    out = a2o(body)
    assert out.body["messages"][-1] == {"role": "assistant", "content": "{"}
    assert any("prefilled" in w for w in out.warnings)


def test_null_max_completion_tokens_falls_back_to_max_tokens():
    body = {"model": "m", "messages": [], "max_completion_tokens": None, "max_tokens": 12}
    assert o2a(body).body["max_tokens"] == 12


def test_text_modality_is_accepted_and_audio_refused():
    assert "modalities" not in o2a({"model": "m", "messages": [], "modalities": ["text"]}).body
    with pytest.raises(TranslationError) as caught:
        o2a({"model": "m", "messages": [], "modalities": ["text", "audio"]})
    assert caught.value.param == "modalities"


PDF = "JVBERi0xLjQK"


def test_pdf_documents_both_ways():
    """A base64 PDF: Anthropic's document block (title) <-> OpenAI's file part (data URL, filename)."""
    anthropic_content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "q3.pdf",
        },
        {"type": "text", "text": "Summarise it."},
    ]
    openai_content = [
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "q3.pdf"}},
        {"type": "text", "text": "Summarise it."},
    ]
    out = a2o({"model": "m", "messages": [{"role": "user", "content": anthropic_content}]})
    assert out.body["messages"] == [{"role": "user", "content": openai_content}] and out.warnings == ()
    back = o2a({"model": "m", "messages": [{"role": "user", "content": openai_content}]})
    assert back.body["messages"] == [{"role": "user", "content": anthropic_content}] and back.warnings == ()
    untitled = o2a(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}}],
                }
            ],
        }
    )
    assert untitled.body["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    ]


def test_a_plain_text_document_becomes_text_and_its_title_a_warning():
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."}}
    out = a2o({"model": "m", "messages": [{"role": "user", "content": [doc, {"type": "text", "text": "Colour?"}]}]})
    assert out.body["messages"][0]["content"] == [
        {"type": "text", "text": "The grass is green."},
        {"type": "text", "text": "Colour?"},
    ]
    assert out.warnings == ()
    titled = a2o(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{**doc, "title": "Facts", "citations": {"enabled": True}}]}],
        }
    )
    assert titled.warnings == (
        "citations dropped: no counterpart",
        "document title and context dropped: no counterpart",
    )
