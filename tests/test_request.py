import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.request import APIS, RequestFeatures, api_for_path, features
from gwctl.core.tokens import estimate_prompt_tokens


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/responses", "responses"),
        ("/v1/messages", "messages"),
        ("/v1/embeddings", "embeddings"),
        ("/api/v1/messages", "messages"),
        ("/openai/deployments/gpt/chat/completions?api-version=2024-06-01", "chat"),
        ("/v1/chat/completions/", "chat"),
        ("/v1/messages?beta=true", "messages"),
        ("/chat/completions", "chat"),
        ("/v1/models", "other"),
        ("/v1/messages/count_tokens", "other"),
        ("/v1/responses/resp_123", "other"),
        ("/v1/xchat/completions", "completions"),
        ("/healthz", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_api_from_path(path, api):
    assert api_for_path(path) == api
    assert features(path, {}).api == api


def test_nothing_used_in_an_empty_body():
    f = features("/v1/chat/completions", None)
    assert f == RequestFeatures(
        api="chat",
        model=None,
        stream=False,
        output_budget=None,
        output_param=None,
        uses_vision=False,
        uses_tools=False,
        uses_reasoning=False,
        uses_json_output=False,
        uses_audio=False,
        params=frozenset(),
        prompt_tokens_estimate=0,
    )


def test_model_params_and_estimate():
    body = {"model": "local/llama", "messages": [{"role": "user", "content": "hello there"}], "temperature": 0.2}
    f = features("/v1/chat/completions", body)
    assert f.model == "local/llama"
    assert f.params == {"model", "messages", "temperature"}
    assert f.prompt_tokens_estimate == estimate_prompt_tokens("chat", body) > 0
    assert features("/v1/chat/completions", {"model": 5}).model is None


# --- output budget ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "budget", "param"),
    [
        ("/v1/chat/completions", {"max_tokens": 100}, 100, "max_tokens"),
        ("/v1/chat/completions", {"max_completion_tokens": 200}, 200, "max_completion_tokens"),
        ("/v1/chat/completions", {"max_tokens": 100, "max_completion_tokens": 200}, 200, "max_completion_tokens"),
        ("/v1/chat/completions", {"max_tokens": 100, "max_completion_tokens": None}, 100, "max_tokens"),
        ("/v1/chat/completions", {"max_output_tokens": 100}, None, None),
        ("/v1/completions", {"max_tokens": 16}, 16, "max_tokens"),
        ("/v1/completions", {"max_completion_tokens": 16}, None, None),
        ("/v1/responses", {"max_output_tokens": 300}, 300, "max_output_tokens"),
        ("/v1/responses", {"max_tokens": 300}, None, None),
        ("/v1/messages", {"max_tokens": 1024}, 1024, "max_tokens"),
        ("/v1/embeddings", {"max_tokens": 1024}, None, None),
        ("/v1/other", {"max_tokens": 1024}, None, None),
        ("/v1/chat/completions", {"max_tokens": 0}, 0, "max_tokens"),
        ("/v1/chat/completions", {"max_tokens": -1}, None, None),
        ("/v1/chat/completions", {"max_tokens": True}, None, None),
        ("/v1/chat/completions", {"max_tokens": 100.0}, None, None),
        ("/v1/chat/completions", {"max_tokens": "100"}, None, None),
        ("/v1/chat/completions", {"max_tokens": None}, None, None),
    ],
)
def test_output_budget(path, body, budget, param):
    f = features(path, body)
    assert (f.output_budget, f.output_param) == (budget, param)


# --- streaming ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("true", False), (1, False), (None, False)]
)
def test_stream_only_when_exactly_true(value, expected):
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions"):
        assert features(path, {"stream": value}).stream is expected


# --- vision ---------------------------------------------------------------------------

IMAGE_CHAT = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        }
    ]
}
IMAGE_RESPONSES = {
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/y.png"},
            ],
        }
    ]
}
IMAGE_ANTHROPIC = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "text", "text": "look"},
            ],
        }
    ]
}
IMAGE_IN_TOOL_RESULT = {
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
                    ],
                }
            ],
        }
    ]
}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", IMAGE_CHAT, True),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image", "image": "x"}]}]}, True),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "an image_url in text"}]}, False),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, False),
        ("/v1/responses", IMAGE_RESPONSES, True),
        ("/v1/responses", {"input": [{"type": "input_image", "image_url": "x"}]}, True),
        (
            "/v1/responses",
            {
                "input": [
                    {
                        "type": "computer_call_output",
                        "call_id": "c",
                        "output": {"type": "computer_screenshot", "image_url": "x"},
                    }
                ]
            },
            True,
        ),
        (
            "/v1/responses",
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "x"}],
                    }
                ]
            },
            True,
        ),
        ("/v1/responses", {"input": "describe an input_image"}, False),
        ("/v1/messages", IMAGE_ANTHROPIC, True),
        ("/v1/messages", IMAGE_IN_TOOL_RESULT, True),
        (
            "/v1/messages",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "A"},
                            }
                        ],
                    }
                ]
            },
            False,
        ),
        ("/v1/messages", IMAGE_CHAT, False),  # an OpenAI part on the Anthropic endpoint is not an Anthropic image
        ("/v1/chat/completions", IMAGE_ANTHROPIC, True),  # {"type": "image"} parts are accepted by some chat servers
        ("/v1/embeddings", IMAGE_CHAT, False),
    ],
)
def test_vision(path, body, expected):
    assert features(path, body).uses_vision is expected


# --- tools ------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"tools": [TOOL]}, True),
        ("/v1/chat/completions", {"tools": []}, False),
        ("/v1/chat/completions", {"tools": None}, False),
        ("/v1/chat/completions", {"tools": "f"}, False),
        ("/v1/chat/completions", {"functions": [{"name": "f"}]}, True),
        ("/v1/chat/completions", {"functions": []}, False),
        ("/v1/chat/completions", {"tool_choice": "required"}, True),
        ("/v1/chat/completions", {"tool_choice": {"type": "function", "function": {"name": "f"}}}, True),
        ("/v1/chat/completions", {"tool_choice": "auto"}, False),
        ("/v1/chat/completions", {"tool_choice": "none"}, False),
        ("/v1/chat/completions", {"tool_choice": None}, False),
        ("/v1/chat/completions", {"function_call": {"name": "f"}}, True),
        ("/v1/chat/completions", {"function_call": "auto"}, False),
        ("/v1/chat/completions", {"function_call": "none"}, False),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}, False),
        ("/v1/responses", {"tools": [{"type": "web_search"}]}, True),
        ("/v1/responses", {"tool_choice": "required"}, True),
        ("/v1/responses", {"functions": [{"name": "f"}]}, False),
        ("/v1/messages", {"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, True),
        ("/v1/messages", {"tool_choice": {"type": "any"}}, True),
        ("/v1/messages", {"tool_choice": {"type": "tool", "name": "f"}}, True),
        ("/v1/messages", {"tool_choice": {"type": "auto"}}, False),
        ("/v1/messages", {"tool_choice": {"type": "none"}}, False),
        ("/v1/completions", {"tools": [TOOL]}, False),
        ("/v1/embeddings", {"tools": [TOOL]}, False),
    ],
)
def test_tools(path, body, expected):
    assert features(path, body).uses_tools is expected


# --- reasoning --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"reasoning_effort": "high"}, True),
        ("/v1/chat/completions", {"reasoning_effort": "minimal"}, True),
        ("/v1/chat/completions", {"reasoning_effort": "none"}, False),
        ("/v1/chat/completions", {"reasoning_effort": None}, False),
        ("/v1/chat/completions", {"reasoning_effort": 3}, False),
        ("/v1/chat/completions", {"reasoning": {"effort": "low"}}, True),
        ("/v1/chat/completions", {"reasoning": {"effort": "none"}}, False),
        ("/v1/chat/completions", {"reasoning": {"enabled": False}}, False),
        ("/v1/chat/completions", {"reasoning": True}, True),
        ("/v1/chat/completions", {"reasoning": False}, False),
        ("/v1/chat/completions", {"reasoning": "high"}, True),
        ("/v1/chat/completions", {"reasoning": None}, False),
        ("/v1/responses", {"reasoning": {"effort": "medium", "summary": "auto"}}, True),
        ("/v1/responses", {"reasoning": {}}, True),
        ("/v1/responses", {"reasoning": None}, False),
        ("/v1/messages", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, True),
        ("/v1/messages", {"thinking": {"type": "adaptive"}}, True),
        ("/v1/messages", {"thinking": {"type": "disabled"}}, False),
        ("/v1/messages", {"thinking": None}, False),
        ("/v1/messages", {"thinking": "yes"}, False),
        ("/v1/completions", {"reasoning_effort": "high"}, True),
        ("/v1/embeddings", {"reasoning_effort": "high"}, False),
    ],
)
def test_reasoning(path, body, expected):
    assert features(path, body).uses_reasoning is expected


# --- JSON output ----------------------------------------------------------------------

SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, True),
        ("/v1/chat/completions", {"response_format": SCHEMA}, True),
        ("/v1/chat/completions", {"response_format": {"type": "text"}}, False),
        ("/v1/chat/completions", {"response_format": "json_object"}, False),
        ("/v1/chat/completions", {"response_format": {"type": ["json_object"]}}, False),
        ("/v1/completions", {"response_format": {"type": "json_object"}}, True),
        ("/v1/responses", {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, True),
        ("/v1/responses", {"text": {"format": {"type": "json_object"}}}, True),
        ("/v1/responses", {"text": {"format": {"type": "text"}}}, False),
        ("/v1/responses", {"response_format": {"type": "json_object"}}, False),
        ("/v1/messages", {"output_format": {"type": "json_schema", "schema": {}}}, True),
        ("/v1/messages", {"output_config": {"format": {"type": "json_schema", "schema": {}}}}, True),
        ("/v1/messages", {"output_config": {"effort": "high"}}, False),
        ("/v1/embeddings", {"response_format": {"type": "json_object"}}, False),
    ],
)
def test_json_output(path, body, expected):
    assert features(path, body).uses_json_output is expected


# --- audio ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}],
                    }
                ]
            },
            True,
        ),
        ("/v1/chat/completions", {"modalities": ["text", "audio"]}, True),
        ("/v1/chat/completions", {"modalities": ["text"]}, False),
        ("/v1/chat/completions", {"modalities": "audio"}, False),
        ("/v1/chat/completions", {"audio": {"voice": "alloy", "format": "wav"}}, True),
        ("/v1/chat/completions", {"audio": None}, False),
        ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, True),
        ("/v1/responses", {"modalities": ["audio"]}, False),
        ("/v1/messages", {"modalities": ["audio"]}, False),
    ],
)
def test_audio(path, body, expected):
    assert features(path, body).uses_audio is expected


# --- robustness -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
interesting_keys = st.sampled_from(
    [
        "model",
        "messages",
        "input",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "reasoning_effort",
        "reasoning",
        "thinking",
        "response_format",
        "text",
        "output_format",
        "output_config",
        "modalities",
        "audio",
        "content",
        "type",
        "prompt",
        "system",
    ]
)
paths = st.sampled_from(
    ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/embeddings", "/v1/models", "/x"]
)


@settings(max_examples=200, deadline=None)
@given(path=paths, body=st.dictionaries(interesting_keys | st.text(max_size=5), json_values, max_size=8))
def test_junk_never_raises_and_types_hold(path, body):
    f = features(path, body)
    assert f.api in APIS
    for flag in (f.stream, f.uses_vision, f.uses_tools, f.uses_reasoning, f.uses_json_output, f.uses_audio):
        assert flag is True or flag is False
    assert f.output_budget is None or (type(f.output_budget) is int and f.output_budget >= 0)
    assert (f.output_budget is None) == (f.output_param is None)
    assert f.params == frozenset(body)
    assert f.prompt_tokens_estimate >= 0


@settings(max_examples=400, deadline=None)
@given(path=paths, body=st.dictionaries(interesting_keys | st.text(max_size=5), json_values, max_size=8))
def test_the_key_shortcuts_never_change_a_flag(path, body):
    """features() skips a detector when none of the keys it reads is in the body: the flags must be
    exactly what the detectors say when always run."""
    from gwctl.core import request as rq

    api = rq.api_for_path(path)
    f = features(path, body, estimate_tokens=False)
    parts = rq._part_types(api, body)
    assert f.uses_tools == rq._uses_tools(api, body)
    assert f.uses_reasoning == (api in rq._GENERATIVE and rq._uses_reasoning(body))
    assert f.uses_json_output == rq._uses_json_output(api, body)
    assert f.uses_vision == bool(parts & rq._IMAGE_PARTS.get(api, frozenset()))
    assert f.uses_audio == (bool(parts & rq._AUDIO_PARTS.get(api, frozenset())) or rq._asks_audio_output(api, body))


@settings(max_examples=100, deadline=None)
@given(path=paths, body=json_values)
def test_non_mapping_bodies_are_empty(path, body):
    if isinstance(body, dict):
        return
    f = features(path, body)
    assert f.params == frozenset() and f.output_budget is None and not f.stream


def test_features_built_fast_equal_the_dataclass_and_stay_frozen():
    from dataclasses import FrozenInstanceError, fields

    import pytest

    from gwctl.core.frozen import builder
    from gwctl.core.pricing import Usage
    from gwctl.core.request import RequestFeatures, features

    f = features(
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "tools": [{"type": "function"}],
        },
        body_bytes=100,
    )
    assert f == RequestFeatures(**{x.name: getattr(f, x.name) for x in fields(RequestFeatures)})
    assert f.uses_tools and f.output_budget == 5 and f.prompt_tokens_ceiling == 600
    with pytest.raises(FrozenInstanceError):
        f.api = "other"
    with pytest.raises(TypeError):
        builder(Usage)  # it has a __post_init__: the fast path would skip its checks
    with pytest.raises(TypeError):
        builder(RequestFeatures)({"api": "chat"})  # required fields missing
