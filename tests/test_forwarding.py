"""The header rules of gwctl.core.forwarding, property-tested over generated header sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.forwarding import REQUEST_DROP, replaced_names, request_headers, response_headers

_names = st.sampled_from(
    [
        "X-Team",
        "x-team",
        "X-TEAM",
        "X-Up-Key",
        "x-up-key",
        "Authorization",
        "X-Api-Key",
        "Connection",
        "X-Hop",
        "x-hop",
        "X-Dup",
        "Via",
        "X-Forwarded-For",
        "Accept",
        "Cookie",
        "Content-Type",
        "Transfer-Encoding",
        "User-Agent",
        "OpenAI-Beta",
    ]
)
_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=12)
_headers = st.lists(st.tuples(_names, _values), max_size=14)

STATIC = {"X-Team": "ml"}
AUTH = {"X-Up-Key": "sekret"}


@settings(max_examples=400, deadline=None)
@given(_headers)
def test_source_headers_appear_once_and_client_copies_never(raw):
    replaced = replaced_names(STATIC, AUTH)
    out = request_headers(raw, replaced, [*STATIC.items(), *AUTH.items()])
    lower = [k.lower() for k, _ in out]
    assert lower.count("x-team") == 1 and ("X-Team", "ml") in out
    assert lower.count("x-up-key") == 1 and ("X-Up-Key", "sekret") in out
    assert not set(lower) & (REQUEST_DROP - {"accept-encoding", "content-type"})
    assert lower.count("content-type") == 1 and lower.count("accept-encoding") == 1


@settings(max_examples=400, deadline=None)
@given(_headers)
def test_everything_else_is_forwarded_in_order_with_duplicates(raw):
    out = request_headers(raw, frozenset(), [])
    hop = {t.strip().lower() for k, v in raw if k.lower() == "connection" for t in v.split(",")}
    expected = [(k, v) for k, v in raw if k.lower() not in REQUEST_DROP and k.lower() not in hop]
    assert out[: len(expected)] == expected


def test_connection_named_headers_are_hop_by_hop():
    raw = [("Connection", "keep-alive, X-Hop ,close"), ("X-Hop", "1"), ("x-hop", "2"), ("X-Keep", "3")]
    assert request_headers(raw, frozenset(), []) == [
        ("X-Keep", "3"),
        ("Accept-Encoding", "identity"),
        ("Content-Type", "application/json"),
    ]


def test_response_headers_are_an_allow_list_plus_a_source_s_additions():
    up = [
        ("Content-Type", "application/json"),
        ("x-litellm-model-api-base", "http://10.0.0.1"),
        ("Server", "x"),
        ("OpenAI-Processing-Ms", "3"),
        ("x-ratelimit-limit-requests", "5"),
        ("anthropic-organization-id", "o"),
        ("Retry-After", "2"),
        ("X-Request-Id", "r"),
        ("x-mine", "1"),
        ("Set-Cookie", "a=b"),
    ]
    assert response_headers(up) == [up[0], up[3], up[4], up[5], up[6], up[7]]
    assert ("x-mine", "1") in response_headers(up, frozenset({"x-mine"}))
