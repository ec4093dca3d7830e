import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.headers import (
    AUTH_HEADER_NAMES,
    HOP_BY_HOP,
    auth_header_pair,
    mask_secret,
    parse_header_option,
    parse_headers_json,
    validate_header_name,
    validate_header_value,
    validate_static_headers,
)


@pytest.mark.parametrize("name", ["X-Custom-Header", "x-a", "Accept", "X_Under", "a!#$%&'*+-.^_`|~9"])
def test_valid_header_names(name):
    assert validate_header_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("X A", "a space"),
        ("X:A", "a colon"),
        ("X\r\nY", "line break"),
        ("X\nY", "line break"),
        ("X\x00", "NUL"),
        ("X(A)", "'('"),
        ("Ünicode", "'Ü'"),
        ('X"', "'\"'"),
    ],
)
def test_invalid_header_names(name, fragment):
    with pytest.raises(ValueError) as err:
        validate_header_name(name)
    assert fragment in str(err.value)


def test_header_name_must_be_a_string():
    with pytest.raises(ValueError):
        validate_header_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "v", "a b\tc", "Bearer abc.def", "x" * 8000, "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"])
def test_valid_header_values(value):
    assert validate_header_value("X-A", value) == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a\r\nX-Evil: 1", "line break"),
        ("a\n", "line break"),
        ("\r", "line break"),
        ("a\x00b", "NUL"),
        ("a\x07b", "control character"),
        ("a\x7f", "control character"),
        ("café", "non-ASCII"),
        (5, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_invalid_header_values(value, fragment):
    with pytest.raises(ValueError) as err:
        validate_header_value("X-A", value)
    assert fragment in str(err.value)
    assert "'X-A'" in str(err.value)


def test_value_errors_never_repeat_the_value():
    secret = "sk-verysecret\n"
    with pytest.raises(ValueError) as err:
        validate_header_value("X-Key", secret)
    assert "verysecret" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("X-A: 1", ("X-A", "1")),
        ("X-A:1", ("X-A", "1")),
        ("  X-A  :   spaced value  ", ("X-A", "spaced value")),
        ("X-Url: https://h:8000/v1", ("X-Url", "https://h:8000/v1")),
        ("X-Empty:", ("X-Empty", "")),
        ("X-A: v\n", ("X-A", "v")),
    ],
)
def test_parse_header_option(text, expected):
    assert parse_header_option(text) == expected


@pytest.mark.parametrize("text", ["X-A 1", "", ": value", "   : v", "X A: 1", "X-A: a\r\nB: c"])
def test_parse_header_option_refuses(text):
    with pytest.raises(ValueError) as err:
        parse_header_option(text)
    message = str(err.value)
    assert "header" in message


def test_parse_header_option_message_shows_the_shape():
    with pytest.raises(ValueError) as err:
        parse_header_option("Authorization Bearer sk-secret")
    assert "header must look like 'Name: value'" in str(err.value)
    assert "sk-secret" not in str(err.value)


def test_parse_headers_json_ok():
    assert parse_headers_json('{"X-Custom-Header": "value", "X-B": ""}') == {"X-Custom-Header": "value", "X-B": ""}
    assert parse_headers_json("{}") == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"X-A": 1}', "the value of 'X-A' is a number"),
        ('{"X-A": 1.5}', "the value of 'X-A' is a number"),
        ('{"X-A": true}', "the value of 'X-A' is a boolean"),
        ('{"X-A": null}', "the value of 'X-A' is null"),
        ('{"X-A": ["a"]}', "the value of 'X-A' is a list"),
        ('{"X-A": {"b": "c"}}', "the value of 'X-A' is an object"),
        ('["X-A", "1"]', "got a list"),
        ('"X-A: 1"', "got a string"),
        ("3", "got a number"),
        ("null", "got null"),
        ("{bad json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"X-A": "1", "x-a": "2"}', "appears twice"),
        ('{"X-A": "1", "X-A": "2"}', "appears twice"),
    ],
)
def test_parse_headers_json_errors_are_precise(text, fragment):
    with pytest.raises(ValueError) as err:
        parse_headers_json(text)
    message = str(err.value)
    assert message.startswith("additional headers must be a JSON object of string keys to string values")
    assert fragment in message


def test_static_headers_ok_and_order_kept():
    headers = {"X-B": "2", "X-A": "1", "User-Agent": "gwctl"}
    out = validate_static_headers(headers, "")
    assert out == headers
    assert list(out) == ["X-B", "X-A", "User-Agent"]


@pytest.mark.parametrize("name", sorted(AUTH_HEADER_NAMES) + ["AUTHORIZATION", "X-Api-Key", "Api-Key"])
def test_static_headers_refuse_auth_headers(name):
    with pytest.raises(ValueError) as err:
        validate_static_headers({name: "secret"}, "")
    assert str(err.value) == (
        f"static headers must not carry credentials: {name!r} is an auth header; use --auth-value or --auth-env"
    )


def test_static_headers_refuse_the_sources_own_auth_header_case_insensitively():
    with pytest.raises(ValueError) as err:
        validate_static_headers({"x-goog-api-key": "k"}, "X-Goog-Api-Key")
    assert "is an auth header" in str(err.value)
    # another source with another auth header may use it
    assert validate_static_headers({"x-goog-api-key": "k"}, "X-Other") == {"x-goog-api-key": "k"}


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP) + ["Connection", "Host", "Content-Length", "Transfer-Encoding"])
def test_static_headers_refuse_hop_by_hop(name):
    with pytest.raises(ValueError) as err:
        validate_static_headers({name: "x"}, "")
    assert "hop-by-hop" in str(err.value)


def test_static_headers_refuse_case_duplicates_bad_names_and_values():
    with pytest.raises(ValueError, match="same header"):
        validate_static_headers({"X-A": "1", "x-a": "2"}, "")
    with pytest.raises(ValueError, match="header name"):
        validate_static_headers({"X A": "1"}, "")
    with pytest.raises(ValueError, match="line break"):
        validate_static_headers({"X-A": "1\r\nAuthorization: Bearer x"}, "")
    with pytest.raises(ValueError, match="must be a string"):
        validate_static_headers({"X-A": 1}, "")
    with pytest.raises(ValueError):
        validate_static_headers(["X-A"], "")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-abcdef1234", "*********1234"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("ab", "****"),
        ("a", "****"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_secret(value, masked):
    assert mask_secret(value) == masked


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=5, max_size=60))
def test_mask_secret_shows_only_the_last_four(value):
    masked = mask_secret(value)
    assert masked.endswith(value[-4:])
    assert masked[:-4] == "*" * (len(value) - 4)


def test_auth_header_pair():
    assert auth_header_pair("", "sk-1") == ("Authorization", "Bearer sk-1")
    assert auth_header_pair("  ", "sk-1") == ("Authorization", "Bearer sk-1")
    assert auth_header_pair("x-api-key", "sk-1") == ("x-api-key", "sk-1")
    assert auth_header_pair("Authorization", "Token abc") == ("Authorization", "Token abc")
    with pytest.raises(ValueError):
        auth_header_pair("", "sk-1\r\nX-Evil: 1")
    with pytest.raises(ValueError):
        auth_header_pair("X Bad", "sk-1")


# --- CR/LF injection ----------------------------------------------------------

_safe = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_breaks = st.sampled_from(["\r", "\n", "\r\n", "\x00"])


@settings(max_examples=200, deadline=None)
@given(before=_safe, brk=_breaks, after=_safe)
def test_line_breaks_and_nul_in_values_are_always_refused(before, brk, after):
    value = before + brk + after
    with pytest.raises(ValueError):
        validate_header_value("X-A", value)
    with pytest.raises(ValueError):
        validate_static_headers({"X-A": value}, "")
    with pytest.raises(ValueError):  # surrounding whitespace is stripped, so keep the break inside
        parse_header_option(f"X-A: x{value}x")
    with pytest.raises(ValueError):
        validate_static_headers(parse_headers_json(json.dumps({"X-A": value})), "")
    with pytest.raises(ValueError):
        auth_header_pair("", value)
    with pytest.raises(ValueError):
        auth_header_pair("X-Key", value)


@settings(max_examples=200, deadline=None)
@given(before=_safe, brk=_breaks, after=_safe)
def test_line_breaks_in_names_are_always_refused(before, brk, after):
    with pytest.raises(ValueError):
        validate_header_name(before + brk + after)
    with pytest.raises(ValueError):
        validate_static_headers({before + brk + after: "v"}, "")


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=20), value=st.text(max_size=40))
def test_whatever_validates_is_one_clean_header_line(name, value):
    try:
        out = validate_static_headers({name: value}, "")
    except ValueError:
        return
    line = f"{name}: {out[name]}\r\n"
    assert line.count("\r") == 1 and line.count("\n") == 1
    assert line.isascii()
    assert name.lower() not in AUTH_HEADER_NAMES | HOP_BY_HOP
