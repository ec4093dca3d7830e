import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.urls import VERSION_SEGMENT, join_upstream, models_url, strip_version, validate_base_url

VALID = [
    "https://gateway.example/v1",
    "http://127.0.0.1:8000/v1",
    "http://localhost:11434",
    "https://h",
    "https://h/",
    "http://[::1]:8000/v1",
    "http://[2001:db8::1]/api",
    "https://api.example.com:443/openai/deployments/gpt/v1beta?api-version=2024-06-01",
    "HTTPS://Gateway.Example/V1",
    "https://my_host.internal/v1",
    "https://h.example./v1",
    "http://10.0.0.12:8443/v1",
]


@pytest.mark.parametrize("url", VALID)
def test_valid_base_urls_are_returned_unchanged(url):
    assert validate_base_url(url) == url


def test_surrounding_whitespace_is_stripped():
    assert validate_base_url("  https://h/v1\n") == "https://h/v1"


INVALID = [
    ("", "empty"),
    ("   ", "empty"),
    ("gateway.example/v1", "http(s) with a host"),
    ("ftp://h/v1", "http(s) with a host"),
    ("file:///etc/passwd", "http(s) with a host"),
    ("https://", "no host"),
    ("https:///v1", "no host"),
    ("https://:8000/v1", "no host"),
    ("https://user:pass@h/v1", "credentials"),
    ("https://token@h/v1", "credentials"),
    ("https://h/v1#frag", "fragment"),
    ("https://h/v 1", "spaces"),
    ("https://h/v1\r\nX-Injected: 1", "line break"),
    ("https://h\n/v1", "line break"),
    ("https://h/\tv1", "spaces or control"),
    ("https://h/v1\x00", "spaces or control"),
    ("https://h:0/v1", "invalid port"),
    ("https://h:70000/v1", "invalid port"),
    ("https://h:80a/v1", "invalid port"),
    ("https://h:/v1", "invalid port"),
    ("http://[::1/v1", "unclosed IPv6"),
    ("http://[nothex::1]/v1", "invalid IPv6"),
    ("http://[::1]x/v1", "junk after the IPv6"),
    ("http://999.1.1.1/v1", "invalid IPv4"),
    ("https://bad!host/v1", "invalid host"),
    ("https://h..example/v1", "invalid host"),
    ("https://-h/v1", "invalid host"),
    ("https://gatewäy.example/v1", "invalid host"),
]


@pytest.mark.parametrize(("url", "fragment"), INVALID)
def test_invalid_base_urls_say_what_is_wrong(url, fragment):
    with pytest.raises(ValueError) as err:
        validate_base_url(url)
    assert fragment in str(err.value)


def test_invalid_message_shows_an_example_and_the_input():
    with pytest.raises(ValueError) as err:
        validate_base_url("ftp://h/v1")
    assert "https://gateway.example/v1" in str(err.value)
    assert "'ftp://h/v1'" in str(err.value)


def test_credentials_in_the_url_are_not_repeated_in_the_error():
    with pytest.raises(ValueError) as err:
        validate_base_url("https://alice:s3cret@h/v1")
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value)
    assert "'https://***@h/v1'" in str(err.value)


def test_non_string_is_refused():
    with pytest.raises(ValueError):
        validate_base_url(None)  # type: ignore[arg-type]


STRIP = [
    ("https://h/v1", "https://h"),
    ("https://h/api/v1/", "https://h/api"),
    ("https://h", "https://h"),
    ("https://h/", "https://h"),
    ("https://h/v1/", "https://h"),
    ("https://h/v1//", "https://h"),
    ("https://h/version1", "https://h/version1"),
    ("https://v1.example/", "https://v1.example"),
    ("https://v1.example", "https://v1.example"),
    ("https://h/v2", "https://h"),
    ("https://h/v1beta", "https://h"),
    ("https://h/v1alpha1", "https://h"),
    ("https://h/v1beta2/", "https://h"),
    ("https://h/api/v10", "https://h/api"),
    ("https://h/v1/v1", "https://h/v1"),  # only ONE segment is stripped
    ("https://h/v", "https://h/v"),
    ("https://h/V1", "https://h/V1"),
    ("https://h/v1-beta", "https://h/v1-beta"),
    ("https://h/v1.0", "https://h/v1.0"),
    ("https://h/apiv1", "https://h/apiv1"),
    ("https://h/v1/chat", "https://h/v1/chat"),
    ("http://[::1]:8000/v1", "http://[::1]:8000"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
    ("https://h/v1?api-version=1", "https://h?api-version=1"),
    ("https://h/openai/v1?x=/v1", "https://h/openai?x=/v1"),
]


@pytest.mark.parametrize(("base", "expected"), STRIP)
def test_strip_version(base, expected):
    assert strip_version(base) == expected


JOIN = [
    ("https://h/v1", "/v1/messages", "https://h/v1/messages"),
    ("https://h/api/v1/", "/v1/chat/completions", "https://h/api/v1/chat/completions"),
    ("https://h", "/v1/models", "https://h/v1/models"),
    ("https://h/", "/v1/models", "https://h/v1/models"),
    ("https://customer-litellm.example/v1", "/v1/messages", "https://customer-litellm.example/v1/messages"),
    ("https://h/v1beta", "/v1beta/models", "https://h/v1beta/models"),
    ("https://v1.example", "/v1/embeddings", "https://v1.example/v1/embeddings"),
    ("http://[::1]:8000/v1", "/v1/responses", "http://[::1]:8000/v1/responses"),
    ("https://h/v1", "/v1/models?limit=5", "https://h/v1/models?limit=5"),
    ("https://h/v1?api-version=2", "/v1/chat/completions", "https://h/v1/chat/completions?api-version=2"),
    ("https://h/v1?api-version=2", "/v1/models?limit=5", "https://h/v1/models?api-version=2&limit=5"),
    ("https://h/v1", "/v1/models#frag", "https://h/v1/models"),
    ("https://h/v1", "//evil.example/v1", "https://h//evil.example/v1"),
]


@pytest.mark.parametrize(("base", "path", "expected"), JOIN)
def test_join_upstream(base, path, expected):
    assert join_upstream(base, path) == expected


@pytest.mark.parametrize("path", ["v1/messages", "", "?x=1", "/v1/ messages", "/v1/\r\nHost: x", None])
def test_join_upstream_refuses_bad_client_paths(path):
    with pytest.raises(ValueError):
        join_upstream("https://h/v1", path)


MODELS = [
    ("https://h/v1", "https://h/v1/models"),
    ("https://h/v1/", "https://h/v1/models"),
    ("https://h", "https://h/models"),
    ("http://127.0.0.1:8000/v1//", "http://127.0.0.1:8000/v1/models"),
    ("https://h/v1?api-version=2", "https://h/v1/models?api-version=2"),
]


@pytest.mark.parametrize(("base", "expected"), MODELS)
def test_models_url(base, expected):
    assert models_url(base) == expected


# --- properties -------------------------------------------------------------

_label = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hosts = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.just("[::1]"),
    st.builds(lambda a, b: f"10.{a}.{b}.1", st.integers(0, 255), st.integers(0, 255)),
)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
versions = st.from_regex(r"v[0-9]{1,2}([a-z]{1,6}[0-9]{0,2})?", fullmatch=True)
plain_segments = st.from_regex(r"[A-Za-z0-9_.~-]{1,10}", fullmatch=True).filter(
    lambda s: not VERSION_SEGMENT.fullmatch(s)
)
prefixes = st.lists(plain_segments, max_size=3)
client_tails = st.lists(plain_segments, min_size=1, max_size=3)
queries = st.one_of(st.just(""), st.from_regex(r"\?[a-z]{1,5}=[a-z0-9]{0,5}", fullmatch=True))
_ADJACENT_VERSIONS = re.compile(r"/v\d+(?:[a-z]+\d*)?/v\d+(?:[a-z]+\d*)?(?:/|$|\?)")


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=hosts,
    port=ports,
    prefix=prefixes,
    base_version=st.one_of(st.none(), versions),
    trailing=st.sampled_from(["", "/", "//"]),
    client_version=versions,
    tail=client_tails,
    query=queries,
)
def test_join_never_doubles_the_version(
    scheme, host, port, prefix, base_version, trailing, client_version, tail, query
):
    origin = f"{scheme}://{host}{port}"
    segments = prefix + ([base_version] if base_version else [])
    base = origin + "".join(f"/{s}" for s in segments) + trailing
    assert validate_base_url(base) == base
    client_path = f"/{client_version}/" + "/".join(tail) + query
    joined = join_upstream(base, client_path)
    assert joined.startswith(origin)
    assert joined.endswith(client_path)
    assert not _ADJACENT_VERSIONS.search(joined[len(origin) :]), joined
    # the prefix path the user chose survives, exactly
    assert joined == origin + "".join(f"/{s}" for s in prefix) + client_path


@settings(max_examples=200, deadline=None)
@given(base=st.text(max_size=60), path=st.text(max_size=30))
def test_strip_and_models_url_never_raise(base, path):
    stripped = strip_version(base)
    assert isinstance(stripped, str)
    assert isinstance(models_url(base), str)
    try:
        join_upstream(base, "/" + path)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(url=st.text(max_size=80))
def test_validate_either_accepts_a_clean_http_url_or_raises_value_error(url):
    try:
        result = validate_base_url(url)
    except ValueError:
        return
    assert result == url.strip()
    assert result.lower().startswith(("http://", "https://"))
    assert not any(ch in result for ch in " \r\n\t\x00#@")
