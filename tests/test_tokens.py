import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    estimate_prompt_tokens,
    estimate_text_tokens,
    prompt_tokens_ceiling,
)

# (text, the smallest exact count among cl100k_base, o200k_base, llama3 and qwen3),
# measured with quicktok-v1 (see benchmarks/token_estimate.py). The estimate must
# never be above it, and should not be uselessly far below it.
EXACT = [
    ("Hello, world!", 4),
    ("The quick brown fox jumps over the lazy dog.", 10),
    ("Operators keep the whole configuration in a single file that lives in version control.", 15),
    ("Internationalization and interoperability are counterintuitive misconfigurations.", 12),
    ("def price(entry, usage):\n    return sum(entry.prices[k] * n for k, n in usage.items())\n", 24),
    ('{"model": "local/llama", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]}', 33),
    ("网关在将每个请求转发给所选模型之前都会进行检查。", 16),
    ("ゲートウェイは、選択されたモデルにリクエストを転送する前に確認します。", 22),
    ("게이트웨이는 선택한 모델로 요청을 전달하기 전에 모든 요청을 확인합니다.", 19),
    ("Шлюз проверяет каждый запрос перед отправкой модели.", 12),
    ("3.14159265358979323846 1,234,567,890 2024-06-01T12:00:03Z", 31),
    ("aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IQ==", 34),
    ("7f3c9e2a-80aa-4b07-9c1d-2e5f6a7b8c9d", 33),
    ("Great job team 🎉🎉 the deploy went fine 👍", 12),
    ("=" * 80, 1),
    ("        indented = True\n\n\n", 6),
    ("getElementById clearTimeout XMLHttpRequest", 4),
    ("don't won't it's we're they've I'm you'll he'd", 8),
    ("SELECT a.source, COUNT(*) FROM activity AS a GROUP BY a.source;", 15),
    ("<p>All systems <strong>operational</strong>.</p>", 13),
]


@pytest.mark.parametrize(("text", "exact"), EXACT)
def test_estimate_is_at_most_the_exact_count(text, exact):
    estimate = estimate_text_tokens(text)
    assert estimate <= exact
    assert estimate >= exact * 0.4


def test_english_prose_is_close():
    prose = " ".join(text for text, _ in EXACT[:3])
    exact = sum(n for _, n in EXACT[:3])
    assert exact * 0.9 <= estimate_text_tokens(prose) <= exact


@pytest.mark.parametrize("value", ["", None, 5, b"bytes", ["a"]])
def test_empty_or_not_text_is_zero(value):
    assert estimate_text_tokens(value) == 0


def test_digits_count_in_groups_of_three():
    assert estimate_text_tokens("1") == 1
    assert estimate_text_tokens("123") == 1
    assert estimate_text_tokens("1234") == 2
    assert estimate_text_tokens("1234567") == 3


def test_long_words_count_more_than_short_ones():
    assert estimate_text_tokens("a") == 1
    assert estimate_text_tokens("x" * 100) == 10
    assert estimate_text_tokens("字" * 100) == 50


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_estimate_is_bounded_by_characters(text):
    n = estimate_text_tokens(text)
    assert 0 <= n <= len(text)
    if text.strip():
        assert n >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100), st.text(max_size=100))
def test_estimate_is_roughly_additive(a, b):
    # joining two texts can merge at most one piece at the seam
    joined = estimate_text_tokens(a + b)
    assert joined >= estimate_text_tokens(a) + estimate_text_tokens(b) - 2


def test_large_text_is_estimated_in_range():
    """A megabyte of text (its speed is benchmarks/token_estimate.py's figure, not a timed test here)."""
    text = ("The gateway checks every request before forwarding it; " * 20000)[:1_000_000]
    n = estimate_text_tokens(text)
    assert 150_000 < n < 250_000


# --- prompt shapes ------------------------------------------------------------

T = estimate_text_tokens


def test_chat_counts_messages_names_tool_calls_and_tools():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "name": "alice",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cats"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "A cat."},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Search."}}],
    }
    expected = (
        4 * MESSAGE_OVERHEAD
        + T("You are terse.")
        + T("alice")
        + T("What is in this picture?")
        + IMAGE_TOKENS
        + T("lookup")
        + T('{"q": "cats"}')
        + T("A cat.")
        + sum(T(s) for s in ["type", "function", "function", "name", "lookup", "description", "Search."])
    )
    assert estimate_prompt_tokens("chat", body) == expected


def test_chat_legacy_function_call_and_functions():
    body = {
        "messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
        "functions": [{"name": "f"}],
    }
    assert estimate_prompt_tokens("chat", body) == MESSAGE_OVERHEAD + T("f") + T("{}") + T("name") + T("f")


def test_completions_takes_the_largest_prompt_of_a_batch():
    assert estimate_prompt_tokens("completions", {"prompt": "one two three"}) == 3
    assert estimate_prompt_tokens("completions", {"prompt": ["a", "one two three four"]}) == 4
    assert estimate_prompt_tokens("completions", {"prompt": [1, 2, 3, 4, 5]}) == 5
    assert estimate_prompt_tokens("completions", {"prompt": [[1, 2], [1, 2, 3]]}) == 3
    assert estimate_prompt_tokens("completions", {"prompt": "a", "suffix": "b c"}) == 3


def test_embeddings_takes_the_largest_input():
    assert estimate_prompt_tokens("embeddings", {"input": "hello world"}) == 2
    assert estimate_prompt_tokens("embeddings", {"input": ["a", "b c d"]}) == 3
    assert estimate_prompt_tokens("embeddings", {"input": [[5] * 7, [1]]}) == 7


def test_responses_counts_instructions_items_and_images():
    body = {
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                    {"type": "input_file", "file_id": "f"},
                ],
            },
            {"type": "function_call", "call_id": "c", "name": "get", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "sunny"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking hard"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        ],
    }
    expected = (
        T("Be brief.")
        + MESSAGE_OVERHEAD
        + T("Describe")
        + IMAGE_TOKENS
        + T("get")
        + T("{}")
        + T("sunny")
        + T("thinking hard")
        + MESSAGE_OVERHEAD
        + T("ok")
    )
    assert estimate_prompt_tokens("responses", body) == expected
    assert estimate_prompt_tokens("responses", {"input": "just text"}) == 2


def test_anthropic_messages_count_system_blocks_and_tool_results():
    body = {
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "Hi there"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "let me see", "signature": "sig"},
                    {"type": "tool_use", "id": "t", "name": "lookup", "input": {"q": "cats"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {"type": "text", "text": "A cat."},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        ],
                    },
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                ],
            },
        ],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    }
    expected = (
        T("You are terse.")
        + 3 * MESSAGE_OVERHEAD
        + T("Hi there")
        + T("let me see")
        + T("lookup")
        + T("q")
        + T("cats")
        + T("A cat.")
        + IMAGE_TOKENS
        + T("doc text")
        + sum(T(s) for s in ["name", "lookup", "input_schema", "type", "object"])
    )
    assert estimate_prompt_tokens("messages", body) == expected
    assert estimate_prompt_tokens("messages", {"system": "Be nice.", "messages": []}) == T("Be nice.")


def test_other_api_and_non_mapping_bodies_are_zero():
    assert estimate_prompt_tokens("other", {"messages": [{"content": "hello"}]}) == 0
    assert estimate_prompt_tokens("chat", None) == 0
    assert estimate_prompt_tokens("chat", ["x"]) == 0
    assert estimate_prompt_tokens("chat", "text") == 0


def test_deep_nesting_does_not_blow_the_stack():
    deep: object = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    body = {"tools": [deep], "messages": [{"role": "user", "content": "hi"}]}
    assert estimate_prompt_tokens("chat", body) >= MESSAGE_OVERHEAD + 1
    nested: object = [1]
    for _ in range(5000):
        nested = [nested]
    assert estimate_prompt_tokens("completions", {"prompt": nested}) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
shaped_keys = st.sampled_from(
    [
        "messages",
        "input",
        "prompt",
        "system",
        "instructions",
        "tools",
        "functions",
        "content",
        "role",
        "type",
        "text",
        "suffix",
        "tool_calls",
        "function",
        "arguments",
        "output",
        "summary",
        "source",
        "name",
    ]
)
bodies = st.dictionaries(shaped_keys, json_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(api=st.sampled_from(["chat", "completions", "responses", "messages", "embeddings", "other"]), body=bodies)
def test_junk_bodies_never_raise(api, body):
    n = estimate_prompt_tokens(api, body)
    assert isinstance(n, int) and n >= 0
    # and never more than the whole body's characters plus per-item constants
    size = len(json.dumps(body))
    assert n <= size * (IMAGE_TOKENS + MESSAGE_OVERHEAD)


image_parts = st.sampled_from(
    [
        {"type": "image_url"},
        {"type": "image"},
        {"type": "input_image"},
        {"type": "computer_screenshot"},
        {"type": "image_url", "image_url": {"url": "x"}},
    ]
)
content = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(
            image_parts,
            st.text(max_size=10),
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
        ),
        max_size=5,
    ),
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries({}),
        st.fixed_dictionaries({"content": content}),
        st.fixed_dictionaries({"role": st.just("user"), "content": content}),
    ),
    max_size=6,
)
shaped_bodies = st.one_of(
    bodies,
    st.fixed_dictionaries({"messages": messages}),
    st.fixed_dictionaries({"input": messages}),
    st.fixed_dictionaries({"messages": messages, "system": content}),
    st.fixed_dictionaries({"prompt": st.one_of(st.lists(st.integers(0, 9), max_size=20), st.text(max_size=40))}),
)


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(["chat", "completions", "responses", "messages", "embeddings", "other"]), body=shaped_bodies)
def test_the_size_ceiling_is_never_below_the_estimate(api, body):
    # the proxy skips the estimate when the ceiling already fits the context: it must be a true upper bound
    compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert estimate_prompt_tokens(api, body) <= prompt_tokens_ceiling(len(compact))


def test_the_ceiling_holds_for_the_densest_pieces():
    for api, body in [
        ("chat", {"messages": [{"content": [{"type": "image"}]}]}),
        ("responses", {"input": [{"content": [{"type": "input_image"}]}]}),
        ("messages", {"messages": [{}]}),
        ("completions", {"prompt": [1, 2, 3]}),
    ]:
        compact = json.dumps(body, separators=(",", ":")).encode()
        assert 0 < estimate_prompt_tokens(api, body) <= prompt_tokens_ceiling(len(compact)), api
