import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.checks import RULES, Check, advisory_warnings, first_failure, run_checks
from gwctl.core.config import CAPABILITIES, CatalogEntry, Source
from gwctl.core.request import RequestFeatures, features

LOCAL = Source(name="local", base_url="http://127.0.0.1:8000/v1")
STRICT = dataclasses.replace(LOCAL, catalog_only=True)


def entry(**kw) -> CatalogEntry:
    return CatalogEntry(source="local", model_id="llama", **kw)


def by_rule(checks: list[Check]) -> dict[str, Check]:
    rules = [c.rule for c in checks]
    assert len(rules) == len(set(rules)), "one check per rule"
    return {c.rule: c for c in checks}


CHAT = "/v1/chat/completions"


def test_rule_ids_are_stable():
    assert RULES == (
        "catalog_only",
        "max_output",
        "context_size",
        "capability_streaming",
        "capability_vision",
        "capability_tools",
        "capability_reasoning",
        "capability_json_output",
        "capability_audio",
    )


# --- catalog_only ---------------------------------------------------------------------


def test_catalog_only_without_entry_fails():
    checks = run_checks(STRICT, "llama", None, features(CHAT, {"model": "local/llama"}))
    assert len(checks) == 1
    check = checks[0]
    assert (check.rule, check.passed, check.param) == ("catalog_only", False, "model")
    assert "local/llama" in check.message and "'local'" in check.message
    assert "gwctl catalog set local/llama" in check.hint
    assert first_failure(checks) is check


def test_catalog_only_with_entry_passes():
    checks = run_checks(STRICT, "llama", entry(), features(CHAT, {}))
    assert [(c.rule, c.passed) for c in checks] == [("catalog_only", True)]


def test_no_entry_and_not_catalog_only_checks_nothing():
    body = {"max_tokens": 10**9, "stream": True, "tools": [{"type": "function"}]}
    assert run_checks(LOCAL, "llama", None, features(CHAT, body)) == []


def test_entry_with_nothing_set_checks_nothing():
    body = {"max_tokens": 10**9, "stream": True}
    assert run_checks(LOCAL, "llama", entry(), features(CHAT, body)) == []


# --- max_output --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"max_tokens": 9000}, "max_tokens"),
        (CHAT, {"max_completion_tokens": 9000, "max_tokens": 10}, "max_completion_tokens"),
        ("/v1/completions", {"max_tokens": 9000}, "max_tokens"),
        ("/v1/responses", {"max_output_tokens": 9000}, "max_output_tokens"),
        ("/v1/messages", {"max_tokens": 9000}, "max_tokens"),
    ],
)
def test_max_output_fails_above_the_limit_for_every_shape(path, body, param):
    checks = by_rule(run_checks(LOCAL, "llama", entry(max_output=4096), features(path, body)))
    check = checks["max_output"]
    assert not check.passed
    assert check.param == param
    assert check.message == f"{param} 9000 is above local/llama's max output of 4096"
    assert f"lower {param} to 4096" in check.hint


@pytest.mark.parametrize("budget", [0, 1, 4095, 4096])
def test_max_output_passes_within_the_limit(budget):
    check = by_rule(run_checks(LOCAL, "llama", entry(max_output=4096), features(CHAT, {"max_tokens": budget})))
    assert check["max_output"].passed


def test_max_output_passes_without_a_budget_and_for_embeddings():
    for path, body in [(CHAT, {}), ("/v1/embeddings", {"input": "x", "max_tokens": 10**6})]:
        check = by_rule(run_checks(LOCAL, "llama", entry(max_output=10), features(path, body)))["max_output"]
        assert check.passed


# --- context_size ------------------------------------------------------------------------


def feats(**kw) -> RequestFeatures:
    base = dict(
        api="chat",
        model="local/llama",
        stream=False,
        output_budget=None,
        output_param=None,
        uses_vision=False,
        uses_tools=False,
        uses_reasoning=False,
        uses_json_output=False,
        uses_audio=False,
        params=frozenset({"model", "messages"}),
        prompt_tokens_estimate=0,
    )
    base.update(kw)
    return RequestFeatures(**base)


def test_context_size_prompt_plus_budget():
    e = entry(context_size=8192)
    ok = run_checks(
        LOCAL, "llama", e, feats(prompt_tokens_estimate=4000, output_budget=4192, output_param="max_tokens")
    )
    assert by_rule(ok)["context_size"].passed
    bad = by_rule(
        run_checks(LOCAL, "llama", e, feats(prompt_tokens_estimate=4000, output_budget=4193, output_param="max_tokens"))
    )["context_size"]
    assert not bad.passed
    assert bad.param == "max_tokens"
    assert "~4000" in bad.message and "8193" in bad.message and "8192" in bad.message
    assert "estimate" in bad.message
    assert "lower max_tokens to 4192" in bad.hint


def test_context_size_reserves_the_entrys_max_output_when_no_budget():
    e = entry(context_size=8192, max_output=4096)
    assert by_rule(run_checks(LOCAL, "llama", e, feats(prompt_tokens_estimate=4096)))["context_size"].passed
    bad = by_rule(run_checks(LOCAL, "llama", e, feats(prompt_tokens_estimate=4097)))["context_size"]
    assert not bad.passed
    assert bad.param == "messages"
    assert "set max_tokens to at most 4095" in bad.hint
    # a request that sets a small budget is judged by that budget instead
    small = feats(prompt_tokens_estimate=4097, output_budget=100, output_param="max_tokens")
    assert by_rule(run_checks(LOCAL, "llama", e, small))["context_size"].passed


def test_context_size_prompt_alone_too_big():
    bad = by_rule(run_checks(LOCAL, "llama", entry(context_size=100), feats(prompt_tokens_estimate=101)))
    assert not bad["context_size"].passed
    assert bad["context_size"].hint.startswith("shorten the prompt")
    assert bad["context_size"].param == "messages"


@pytest.mark.parametrize(
    ("api", "param"),
    [("completions", "prompt"), ("responses", "input"), ("messages", "messages"), ("embeddings", "input")],
)
def test_context_size_blames_the_prompt_param_of_each_shape(api, param):
    bad = by_rule(run_checks(LOCAL, "llama", entry(context_size=10), feats(api=api, prompt_tokens_estimate=11)))
    assert bad["context_size"].param == param


def test_context_size_embeddings_reserve_no_output():
    e = entry(context_size=512, max_output=4096)
    f = feats(api="embeddings", prompt_tokens_estimate=500)
    assert by_rule(run_checks(LOCAL, "llama", e, f))["context_size"].passed


def test_context_size_with_real_bodies_for_each_shape():
    long_text = "word " * 2000  # about 2000 tokens
    e = entry(context_size=1000)
    bodies = {
        CHAT: {"messages": [{"role": "user", "content": long_text}]},
        "/v1/completions": {"prompt": long_text},
        "/v1/responses": {"input": long_text},
        "/v1/messages": {"messages": [{"role": "user", "content": long_text}], "max_tokens": 10},
        "/v1/embeddings": {"input": [long_text]},
    }
    for path, body in bodies.items():
        f = features(path, body)
        assert f.prompt_tokens_estimate >= 1500, path
        assert not by_rule(run_checks(LOCAL, "llama", e, f))["context_size"].passed, path
        short = features(path, {k: (v if k == "max_tokens" else "hi") for k, v in body.items()})
        assert by_rule(run_checks(LOCAL, "llama", e, short))["context_size"].passed, path


# --- capabilities -------------------------------------------------------------------------

USES = {
    "streaming": (CHAT, {"stream": True}, "stream"),
    "vision": (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages",
    ),
    "tools": (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    "reasoning": (CHAT, {"reasoning_effort": "high"}, "reasoning_effort"),
    "json_output": (CHAT, {"response_format": {"type": "json_object"}}, "response_format"),
    "audio": (CHAT, {"modalities": ["text", "audio"]}, "modalities"),
}

USES_OTHER_SHAPES = [
    (
        "vision",
        "/v1/responses",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input",
    ),
    (
        "vision",
        "/v1/messages",
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        "messages",
    ),
    ("tools", "/v1/responses", {"tools": [{"type": "web_search"}]}, "tools"),
    ("tools", "/v1/messages", {"tool_choice": {"type": "any"}}, "tool_choice"),
    ("tools", CHAT, {"functions": [{"name": "f"}]}, "functions"),
    ("reasoning", "/v1/responses", {"reasoning": {"effort": "low"}}, "reasoning"),
    ("reasoning", "/v1/messages", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ("json_output", "/v1/responses", {"text": {"format": {"type": "json_schema"}}}, "text"),
    ("json_output", "/v1/messages", {"output_format": {"type": "json_schema"}}, "output_format"),
    ("json_output", "/v1/completions", {"response_format": {"type": "json_object"}}, "response_format"),
    ("streaming", "/v1/messages", {"stream": True}, "stream"),
    ("streaming", "/v1/completions", {"stream": True}, "stream"),
    ("audio", "/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input"),
    ("audio", CHAT, {"audio": {"voice": "alloy"}}, "audio"),
]


@pytest.mark.parametrize("name", CAPABILITIES)
def test_capability_false_and_used_fails(name):
    path, body, param = USES[name]
    checks = run_checks(LOCAL, "llama", entry(capabilities={name: False}), features(path, body))
    check = by_rule(checks)[f"capability_{name}"]
    assert not check.passed
    assert check.param == param
    assert f"{name}=false" in check.message and "local/llama" in check.message
    assert f"--capability {name}=true" in check.hint
    assert first_failure(checks) is check


@pytest.mark.parametrize(("name", "path", "body", "param"), USES_OTHER_SHAPES)
def test_capability_false_and_used_fails_for_other_shapes(name, path, body, param):
    check = by_rule(run_checks(LOCAL, "llama", entry(capabilities={name: False}), features(path, body)))
    assert not check[f"capability_{name}"].passed
    assert check[f"capability_{name}"].param == param


@pytest.mark.parametrize("name", CAPABILITIES)
def test_capability_false_and_unused_passes(name):
    check = by_rule(run_checks(LOCAL, "llama", entry(capabilities={name: False}), features(CHAT, {})))
    assert check[f"capability_{name}"].passed


@pytest.mark.parametrize("name", CAPABILITIES)
def test_capability_true_passes_and_unset_is_not_checked(name):
    path, body, _ = USES[name]
    f = features(path, body)
    assert by_rule(run_checks(LOCAL, "llama", entry(capabilities={name: True}), f))[f"capability_{name}"].passed
    assert run_checks(LOCAL, "llama", entry(capabilities={}), f) == []


def test_embeddings_never_trip_generation_capabilities():
    e = entry(capabilities={name: False for name in CAPABILITIES})
    f = features(
        "/v1/embeddings",
        {
            "input": "x",
            "tools": [{"type": "function"}],
            "reasoning_effort": "high",
            "response_format": {"type": "json_object"},
        },
    )
    assert first_failure(run_checks(LOCAL, "llama", e, f)) is None


# --- ordering, first failure ---------------------------------------------------------------


def test_every_rule_in_order_and_first_failure_is_the_first_listed():
    e = entry(context_size=100, max_output=50, capabilities={name: False for name in CAPABILITIES})
    body = {
        "stream": True,
        "max_tokens": 500,
        "tools": [{"type": "function"}],
        "reasoning_effort": "high",
        "response_format": {"type": "json_object"},
        "modalities": ["audio"],
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    }
    checks = run_checks(STRICT, "llama", e, features(CHAT, body))
    assert [c.rule for c in checks] == list(RULES)
    assert [c.passed for c in checks] == [True] + [False] * (len(RULES) - 1)
    assert first_failure(checks).rule == "max_output"
    assert first_failure([c for c in checks if c.passed]) is None
    assert first_failure([]) is None


def test_messages_are_one_sentence_and_failures_have_hints():
    e = entry(context_size=100, max_output=50, capabilities={"streaming": False, "tools": True})
    checks = run_checks(STRICT, "llama", e, features(CHAT, {"stream": True, "max_tokens": 500}))
    for check in checks:
        assert check.message and "\n" not in check.message
        if not check.passed:
            assert check.hint and check.param


# --- unset never rejects --------------------------------------------------------------------

flags = st.dictionaries(st.sampled_from(CAPABILITIES), st.sampled_from([True, None]), max_size=len(CAPABILITIES))
feature_sets = st.builds(
    RequestFeatures,
    api=st.sampled_from(["chat", "completions", "responses", "messages", "embeddings", "other"]),
    model=st.none() | st.text(max_size=10),
    stream=st.booleans(),
    output_budget=st.none(),
    output_param=st.none(),
    uses_vision=st.booleans(),
    uses_tools=st.booleans(),
    uses_reasoning=st.booleans(),
    uses_json_output=st.booleans(),
    uses_audio=st.booleans(),
    params=st.frozensets(st.sampled_from(["model", "messages", "stream", "tools", "temperature"])),
    prompt_tokens_estimate=st.integers(0, 10**6),
)


@settings(max_examples=200, deadline=None)
@given(caps=flags, f=feature_sets)
def test_unset_or_true_capabilities_never_reject(caps, f):
    e = entry(capabilities={k: v for k, v in caps.items() if v is not None})
    checks = run_checks(LOCAL, "llama", e, f)
    assert first_failure(checks) is None
    assert {c.rule for c in checks} == {f"capability_{k}" for k, v in caps.items() if v is True}


@settings(max_examples=200, deadline=None)
@given(
    caps=st.dictionaries(st.sampled_from(CAPABILITIES), st.booleans(), max_size=len(CAPABILITIES)),
    f=feature_sets,
)
def test_a_capability_fails_exactly_when_false_and_used(caps, f):
    used = {
        "streaming": f.stream,
        "vision": f.uses_vision,
        "tools": f.uses_tools,
        "reasoning": f.uses_reasoning,
        "json_output": f.uses_json_output,
        "audio": f.uses_audio,
    }
    checks = run_checks(LOCAL, "llama", entry(capabilities=caps), f)
    failed = {c.rule for c in checks if not c.passed}
    assert failed == {f"capability_{k}" for k, v in caps.items() if v is False and used[k]}


# --- advisory --------------------------------------------------------------------------------


def test_advisory_warnings_list_unsupported_params_only():
    e = entry(supported_params=("temperature", "max_tokens"))
    body = {"model": "m", "messages": [], "stream": True, "temperature": 0.1, "top_k": 5, "logit_bias": {}}
    warnings = advisory_warnings(e, features(CHAT, body))
    assert len(warnings) == 2
    assert "'logit_bias'" in warnings[0] and "'top_k'" in warnings[1]
    assert all("local/llama" in w and "advisory" in w for w in warnings)
    # and they never become checks
    assert first_failure(run_checks(LOCAL, "llama", e, features(CHAT, body))) is None


def test_advisory_warnings_need_an_entry_with_a_list():
    f = features(CHAT, {"top_k": 5})
    assert advisory_warnings(None, f) == []
    assert advisory_warnings(entry(), f) == []
    assert advisory_warnings(entry(supported_params=()), f) == [
        "param 'top_k' is not in local/llama's supported params (advisory: it is forwarded anyway)"
    ]
    anthropic = features("/v1/messages", {"model": "m", "system": "s", "messages": [], "max_tokens": 5})
    assert advisory_warnings(entry(supported_params=("max_tokens",)), anthropic) == []
