"""`gwctl source …` against a real stand-in upstream on 127.0.0.1."""

from __future__ import annotations

import pytest

from proxyrun import closed_port

KEY = "sk-upstream-1234"


def add(gw, upstream, name="local", *extra):
    return gw("source", "add", name, "--base-url", upstream.url, "--auth-value", KEY, *extra)


def test_add_test_refresh_list(gw, upstream):
    assert add(gw, upstream, "local", "--test").code == 0
    r = gw("source", "refresh", "local")
    assert r.code == 0
    assert "+ local/llama-3.1-8b" in r.out and "+ local/qwen/qwen3" in r.out
    models = gw("model", "list", "--json").json()
    assert {m["ref"] for m in models} == {"local/llama-3.1-8b", "local/qwen/qwen3", "local/mistral-7b"}
    assert all(m["enabled"] for m in models)
    # the upstream saw our credential as a bearer token on GET /v1/models
    seen = [r for r in upstream.received if r.path.endswith("/models")]
    assert seen and seen[-1].headers["authorization"] == f"Bearer {KEY}"


def test_refresh_reports_removed_and_respects_auto_enable(gw, upstream):
    add(gw, upstream)
    gw("source", "refresh", "local")
    assert gw("model", "auto-enable", "off").code == 0
    upstream.configure(models=["llama-3.1-8b", "new-model"])
    r = gw("source", "refresh", "local", "--json")
    assert r.code == 0
    rep = r.json()["sources"][0]
    assert rep["added"] == ["new-model"]
    assert set(rep["removed"]) == {"qwen/qwen3", "mistral-7b"}
    assert rep["unchanged"] == 1
    models = {m["ref"]: m["enabled"] for m in gw("model", "list", "--json").json()}
    assert models == {"local/llama-3.1-8b": True, "local/new-model": False}


def test_named_auth_header_sends_raw_value(gw, upstream):
    upstream.configure(auth_header="X-Api-Key")
    assert (
        gw(
            "source",
            "add",
            "k",
            "--base-url",
            upstream.url,
            "--auth-header",
            "X-Api-Key",
            "--auth-value",
            KEY,
            "--test",
        ).code
        == 0
    )
    assert upstream.received[-1].headers["x-api-key"] == KEY
    assert "authorization" not in upstream.received[-1].headers


def test_static_headers_sent(gw, upstream):
    add(gw, upstream, "h", "--header", "X-Team: ml", "--headers-json", '{"X-Env": "prod"}')
    assert gw("source", "test", "h").code == 0
    h = upstream.received[-1].headers
    assert h["x-team"] == "ml" and h["x-env"] == "prod"


def test_auth_env_reference_resolved_at_use(gw, upstream, monkeypatch, store_path):
    assert gw("source", "add", "e", "--base-url", upstream.url, "--auth-env", "GW_TEST_KEY").code == 0
    assert KEY not in store_path.read_text() and 'auth_env = "GW_TEST_KEY"' in store_path.read_text()
    monkeypatch.delenv("GW_TEST_KEY", raising=False)
    r = gw("source", "test", "e")
    assert r.code == 1 and "$GW_TEST_KEY" in r.err and "not set" in r.err
    monkeypatch.setenv("GW_TEST_KEY", KEY)
    assert gw("source", "test", "e").code == 0


def test_auth_value_from_stdin(gw, upstream, store_path):
    r = gw("source", "add", "s", "--base-url", upstream.url, "--auth-value", "-", input=KEY + "\n")
    assert r.code == 0
    assert f'auth_value = "{KEY}"' in store_path.read_text()


def test_add_test_failure_saves_nothing(gw, upstream, store_path):
    r = gw("source", "add", "bad", "--base-url", upstream.url, "--auth-value", "wrong", "--test")
    assert r.code == 1 and "credential" in r.err and "nothing was saved" in r.err
    assert not store_path.exists()


@pytest.mark.parametrize(
    "setup, error",
    [
        (lambda up: dict(url=f"http://127.0.0.1:{closed_port()}/v1"), "refused"),
        (lambda up: dict(url="http://no-such-host.invalid/v1"), "DNS"),
        (lambda up: dict(url=up.base + "/nope/v1"), "404"),
        (lambda up: dict(url=up.url, key="wrong"), "credential"),
        (lambda up: dict(url=up.url, payload="<html>hi</html>"), "JSON"),
        (lambda up: dict(url=up.url, payload={"models": ["a"]}), "not an OpenAI model list"),
        (lambda up: dict(url=f"https://127.0.0.1:{up.base.rsplit(':', 1)[1].split('/')[0]}/v1"), "TLS"),
    ],
)
def test_connection_failures_are_classified(gw, upstream, setup, error):
    cfg = setup(upstream)
    if "payload" in cfg:
        upstream.configure(models_payload=cfg["payload"])
    assert gw("source", "add", "x", "--base-url", cfg["url"], "--auth-value", cfg.get("key", KEY)).code == 0
    r = gw("source", "test", "x")
    assert r.code == 1
    assert error in r.err, r.err


def test_a_failure_through_an_egress_proxy_says_so(gw, upstream, monkeypatch):
    """httpx sends the test through HTTP_PROXY: a refusal may be the proxy's, and the message must say
    the connection went through it; NO_PROXY makes it direct again."""
    assert gw("source", "add", "x", "--base-url", upstream.url, "--auth-value", KEY).code == 0
    dead = closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    r = gw("source", "test", "x")
    assert r.code == 1
    assert f"through the egress proxy 127.0.0.1:{dead} from the environment" in r.err and "NO_PROXY" in r.err
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert gw("source", "test", "x").code == 0


def test_timeout_is_classified(gw, upstream):
    upstream.configure(delay_ms=1500)
    add(gw, upstream, "slow")
    r = gw("source", "test", "slow", "--timeout", "0.3", "--json")
    assert r.code == 1 and r.json()["error"] == "timeout"


def test_404_hint_mentions_version_segment(gw, upstream):
    gw("source", "add", "nov", "--base-url", upstream.base, "--auth-value", KEY)
    r = gw("source", "test", "nov")
    assert r.code == 1 and "/v1" in r.err


def test_refresh_all_partial_failure(gw, upstream):
    add(gw, upstream, "good")
    gw("source", "add", "dead", "--base-url", f"http://127.0.0.1:{closed_port()}/v1")
    r = gw("source", "refresh", "--all", "--json")
    assert r.code == 3
    rep = {s["source"]: s for s in r.json()["sources"]}
    assert rep["good"]["ok"] and len(rep["good"]["added"]) == 3
    assert not rep["dead"]["ok"] and rep["dead"]["error"] == "refused"
    assert len(gw("model", "list", "--source", "good", "--json").json()) == 3


def test_show_masks_unless_reveal(gw, upstream):
    add(gw, upstream)
    r = gw("source", "show", "local", "--json")
    assert KEY not in r.out and r.json()["auth"]["value"].endswith("1234")
    assert r.json()["auth"]["value"].startswith("*")
    assert KEY not in gw("source", "list").out
    assert KEY not in gw("source", "show", "local").out
    r = gw("source", "show", "local", "--json", "--reveal")
    assert r.json()["auth"]["value"] == KEY


def test_edit_rotates_credentials_and_headers(gw, upstream, store_path):
    add(gw, upstream, "local", "--header", "X-A: 1")
    assert (
        gw("source", "edit", "local", "--auth-env", "ROTATED", "--header", "X-B: 2", "--remove-header", "X-A").code == 0
    )
    src = gw("source", "show", "local", "--json").json()
    assert src["auth"]["kind"] == "env" and src["auth"]["env"] == "ROTATED"
    assert src["headers"] == {"X-B": "2"}
    assert KEY not in store_path.read_text()


def test_api_is_stored_shown_and_edited(gw, store_path):
    assert gw("source", "add", "oa", "--base-url", "http://h/v1", "--api", "openai").code == 0
    assert 'api = "openai"' in store_path.read_text()
    assert gw("source", "show", "oa", "--json").json()["api"] == "openai"
    assert "anthropic" not in gw("source", "show", "oa").out and "openai" in gw("source", "show", "oa").out
    assert gw("source", "edit", "oa", "--api", "both").code == 0
    assert "api =" not in store_path.read_text()  # the default is not written
    assert [s["api"] for s in gw("source", "list", "--json").json()] == ["both"]
    assert gw("source", "edit", "oa", "--api", "anthropic").code == 0
    assert gw("source", "show", "oa", "--json").json()["api"] == "anthropic"


def test_remove_needs_yes_without_terminal(gw, upstream):
    add(gw, upstream)
    r = gw("source", "remove", "local")
    assert r.code == 1 and "--yes" in r.err
    assert gw("source", "remove", "local", "--yes").code == 0
    assert gw("source", "list", "--json").json() == []


def test_remove_refused_while_routes_use_it(gw, upstream):
    add(gw, upstream)
    gw("route", "set", "triage", "--model-name", "m", "--provider", "local")
    r = gw("source", "remove", "local", "--yes")
    assert r.code == 1 and "triage" in r.err


BAD = [
    (["source", "add", "x", "--base-url", "ftp://h/v1"], "http(s)"),
    (["source", "add", "x", "--base-url", "http:///v1"], "host"),
    (["source", "add", "x", "--base-url", "not a url"], "base URL"),
    (["source", "add", "a/b", "--base-url", "http://h/v1"], "not a valid source name"),
    (["source", "add", "x"], "--base-url is required"),
    (["source", "add", "x", "--base-url", "http://h", "--headers-json", "[1]"], "JSON object"),
    (["source", "add", "x", "--base-url", "http://h", "--headers-json", "{bad"], "JSON"),
    (["source", "add", "x", "--base-url", "http://h", "--headers-json", '{"X-A": 1}'], "X-A"),
    (["source", "add", "x", "--base-url", "http://h", "--header", "Authorization: Bearer x"], "auth header"),
    (["source", "add", "x", "--base-url", "http://h", "--auth-header", "X-Key", "--header", "x-key: v"], "auth header"),
    (["source", "add", "x", "--base-url", "http://h", "--header", "X-A: a\rb"], "X-A"),
    (["source", "add", "x", "--base-url", "http://h", "--header", "no colon"], "Name: value"),
    (["source", "add", "x", "--base-url", "http://h", "--auth-value", "a", "--auth-env", "B"], "not both"),
    (["source", "add", "x", "--base-url", "http://h", "--auth-env", "1BAD"], "environment variable"),
    (["source", "add", "x", "--base-url", "http://h", "--connect-timeout", "0"], "positive"),
    (["source", "add", "x", "--base-url", "http://h", "--api", "grpc"], "--api must be one of"),
    (["source", "edit", "dup", "--api", "OpenAI"], "--api must be one of"),
    (["source", "add", "dup", "--base-url", "http://h"], "already exists"),
    (["source", "edit", "nope", "--base-url", "http://h"], "no source named"),
    (["source", "show", "nope"], "no source named"),
    (["source", "test", "nope"], "no source named"),
    (["source", "refresh", "nope"], "no source named"),
    (["source", "refresh"], "--all"),
    (["source", "remove", "nope", "--yes"], "no source named"),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a[:3]) + f" [{i}]" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_clear_error_and_store_unchanged(gw, store_path, args, words):
    assert gw("source", "add", "dup", "--base-url", "http://h/v1", "--auth-value", "k").code == 0
    before = store_path.read_bytes()
    r = gw(*args)
    assert r.code == 1, r
    assert words in r.err, r.err
    assert r.err.startswith("error: ") and "Traceback" not in r.err
    assert store_path.read_bytes() == before
