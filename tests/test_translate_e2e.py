"""Translation end to end: the real SDKs -> proxy -> a stand-in source that speaks only the other API.

An Anthropic client reaches a source marked ``--api openai`` (the stand-in sees Chat Completions) and
an OpenAI client one marked ``--api anthropic`` (the stand-in sees Messages); each gets its answer in its
own API, and the activity row costs what the same counts cost untranslated.
"""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from conftest import run_cli
from test_proxy_e2e import UP_KEY, USAGE, activity_rows, start_with_key

PRICES = ["--price", "input=3e-6", "--price", "output=1.5e-5", "--price", "cached_input=1.5e-6"]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ARGS = '{"city": "Paris", "unit": "celsius"}'


@pytest.fixture
def gateway(tmp_path, upstream, monkeypatch):
    """Three sources on the one stand-in: ``oa`` speaks OpenAI only, ``an`` Anthropic only, ``plain`` both;
    every model has the same prices. Agent ``coder``'s model ``claude`` goes to oa, falling back to plain."""
    upstream.configure(usage=USAGE)
    gw = run_cli
    for name, api in (("oa", "openai"), ("an", "anthropic"), ("plain", "both")):
        args = ["source", "add", name, "--base-url", upstream.url, "--auth-value", UP_KEY, "--api", api]
        assert gw(*args).code == 0
        assert gw("catalog", "set", f"{name}/llama-3.1-8b", *PRICES, "--max-output", "1000").code == 0
    route = ["route", "set", "coder", "--model-name", "claude", "--provider", "oa", "--model", "llama-3.1-8b"]
    assert gw(*route, "--fallback", "plain/llama-3.1-8b").code == 0
    proc, key = start_with_key(tmp_path, monkeypatch, upstream)
    yield proc, key
    proc.terminate()


def an_client(proc, key):
    return anthropic.Anthropic(base_url=proc.url, api_key=key, max_retries=0, timeout=20)


def oa_client(proc, key):
    return openai.OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_anthropic_client_to_an_openai_source(gateway, upstream):
    proc, key = gateway
    client = an_client(proc, key)
    m = client.messages.create(
        model="oa/llama-3.1-8b", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    assert m.type == "message" and m.role == "assistant" and m.content[0].text == "Hello from the"
    assert m.stop_reason == "end_turn" and m.model == "oa/llama-3.1-8b"
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == 1000 and m.usage.output_tokens == 50
    seen = upstream.received[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert seen.body["max_completion_tokens"] == 100 and seen.body["model"] == "llama-3.1-8b"
    assert seen.headers["authorization"] == f"Bearer {UP_KEY}"
    untranslated = oa_client(proc, key).chat.completions.create(
        model="plain/llama-3.1-8b", messages=[{"role": "user", "content": "hi"}]
    )
    assert untranslated.usage.prompt_tokens == 1000
    rows = activity_rows(2)
    assert len({r["cost"] for r in rows}) == 1 and rows[0]["cost"] not in (None, "0")
    assert {r["usage"]["input_tokens"] for r in rows} == {800}


def test_anthropic_client_with_tools_to_an_openai_source(gateway, upstream):
    proc, key = gateway
    upstream.configure(tool_arguments=ARGS)
    m = an_client(proc, key).messages.create(
        model="oa/llama-3.1-8b",
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert m.stop_reason == "tool_use"
    block = m.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == json.loads(ARGS)
    sent = upstream.received[-1].body
    assert sent["tools"][0]["type"] == "function" and sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_anthropic_stream_reassembles_a_tool_input(gateway, upstream):
    proc, key = gateway
    upstream.configure(tool_arguments=ARGS)
    with an_client(proc, key).messages.stream(
        model="oa/llama-3.1-8b",
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "message_stop" in kinds
    tool = final.content[-1]
    assert tool.type == "tool_use" and tool.input == json.loads(ARGS) and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 50
    seen = upstream.received[-1]
    assert seen.path == "/v1/chat/completions" and seen.body["stream_options"] == {"include_usage": True}
    row = activity_rows(1)[0]
    assert row["stream"] is True and row["usage"]["input_tokens"] == 800 and row["usage"]["output_tokens"] == 50


def test_openai_client_to_an_anthropic_source(gateway, upstream):
    proc, key = gateway
    r = oa_client(proc, key).chat.completions.create(
        model="an/llama-3.1-8b",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    assert r.object == "chat.completion" and r.choices[0].message.content == "Hello from the"
    assert r.choices[0].finish_reason == "stop" and r.model == "an/llama-3.1-8b"
    assert r.usage.prompt_tokens == 1000 and r.usage.completion_tokens == 50
    seen = upstream.received[-1]
    assert seen.path == "/v1/messages" and seen.body["system"] == "be brief"
    assert seen.body["messages"] == [{"role": "user", "content": "hi"}] and seen.body["max_tokens"] == 1000
    an_client(proc, key).messages.create(
        model="plain/llama-3.1-8b", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    rows = activity_rows(2)
    assert len({r["cost"] for r in rows}) == 1 and rows[0]["cost"] not in (None, "0")


def test_openai_stream_with_usage_from_an_anthropic_source(gateway, upstream):
    proc, key = gateway
    chunks = list(
        oa_client(proc, key).chat.completions.create(
            model="an/llama-3.1-8b",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert upstream.received[-1].path == "/v1/messages"
    chunks = list(
        oa_client(proc, key).chat.completions.create(
            model="an/llama-3.1-8b", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert all(c.usage is None for c in chunks)  # not asked for: hidden
    rows = activity_rows(2)
    assert all(r["stream"] and r["usage"]["output_tokens"] == 50 for r in rows)


def test_an_untranslatable_request_is_refused_with_its_rule(gateway, upstream):
    proc, key = gateway
    with pytest.raises(openai.BadRequestError) as err:
        oa_client(proc, key).chat.completions.create(
            model="an/llama-3.1-8b", n=2, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 400
    assert upstream.received == [] or all(r.path != "/v1/messages" for r in upstream.received)
    row = activity_rows(1)[0]
    assert row["status"] == 400 and row["route_kind"] == "rejected" and row["rule"]


def test_upstream_errors_come_back_in_the_clients_shape(gateway, upstream):
    proc, key = gateway
    upstream.configure(fail_status=429)
    with pytest.raises(anthropic.RateLimitError) as err:
        an_client(proc, key).messages.create(
            model="oa/llama-3.1-8b", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError) as oerr:
        oa_client(proc, key).chat.completions.create(
            model="an/llama-3.1-8b", messages=[{"role": "user", "content": "hi"}]
        )
    assert oerr.value.body["type"] == "rate_limit_error"


def _anthropic_error(exc, status, etype, code):
    """An Anthropic SDK error whose body is Anthropic's error shape, with gwctl's rule id in ``error.code``."""
    assert exc.status_code == status
    body = exc.body
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert body["error"]["type"] == etype and body["error"]["message"]
    assert body["error"]["code"] == code
    assert exc.response.headers["x-gwctl-request-id"]
    return body["error"]


def test_the_gateways_own_rejections_on_messages_are_in_anthropics_shape(gateway, upstream):
    """Every answer gwctl gives on its own to a /v1/messages client (key, unknown model, a catalog check,
    an untranslatable request, a limit, a malformed body, an upgrade, a head too large) is in Anthropic's error shape,
    so the Anthropic SDK raises its own exception class; an OpenAI client keeps OpenAI's shape."""
    proc, key = gateway
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as err:
        an_client(proc, "sk-gw-wrong").messages.create(model="oa/llama-3.1-8b", max_tokens=10, messages=hi)
    _anthropic_error(err.value, 401, "authentication_error", "invalid_api_key")
    with pytest.raises(anthropic.NotFoundError) as err:
        an_client(proc, key).messages.create(model="nosuch/model", max_tokens=10, messages=hi)
    _anthropic_error(err.value, 404, "not_found_error", err.value.body["error"]["code"])
    with pytest.raises(anthropic.BadRequestError) as err:  # over the entry's max output: a catalog check
        an_client(proc, key).messages.create(model="plain/llama-3.1-8b", max_tokens=5000, messages=hi)
    rule = _anthropic_error(err.value, 400, "invalid_request_error", err.value.body["error"]["code"])["code"]
    assert rule and "max" in rule
    with pytest.raises(anthropic.BadRequestError) as err:  # no Chat Completions counterpart
        an_client(proc, key).messages.create(
            model="oa/llama-3.1-8b",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "container_upload", "file_id": "f1"}]}],
        )
    found = _anthropic_error(err.value, 400, "invalid_request_error", "untranslatable_content")
    assert found["param"] == "messages.0.content.0"
    assert all(r.path != "/v1/chat/completions" for r in upstream.received)
    raw = httpx.post(
        proc.url + "/v1/messages", content=b"{not json", headers={"x-api-key": key, "content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["type"] == "error"
    assert raw.json()["error"] == {
        "type": "invalid_request_error",
        "message": "the request body is not valid JSON",
        "code": "invalid_json",
    }
    upgrade = {"x-api-key": key, "connection": "upgrade", "upgrade": "h2c"}  # refused by the HTTP server itself
    up = httpx.post(proc.url + "/v1/messages", content=b"{}", headers=upgrade)
    assert up.status_code == 400 and up.json()["type"] == "error" and up.headers["x-gwctl-request-id"]
    assert (
        up.json()["error"]["type"] == "invalid_request_error" and up.json()["error"]["code"] == "upgrade_not_supported"
    )
    huge = httpx.post(proc.url + "/v1/messages", content=b"{}", headers={"x-api-key": key, "x-big": "a" * 70000})
    assert huge.status_code == 431 and huge.json()["type"] == "error" and huge.headers["x-gwctl-request-id"]
    assert huge.json()["error"]["code"] == "head_too_large"
    oa = httpx.post(proc.url + "/v1/chat/completions", content=b"{not json", headers={"authorization": f"Bearer {key}"})
    assert oa.json() == {
        "error": {
            "message": "the request body is not valid JSON",
            "type": "invalid_request_error",
            "code": "invalid_json",
            "param": None,
        }
    }
    assert run_cli("limit", "set", "key:tester", "--rpm", "1").code == 0
    deadline = time.monotonic() + 10
    limited = None
    while limited is None and time.monotonic() < deadline:  # the store reload takes up to a second
        try:
            an_client(proc, key).messages.create(model="plain/llama-3.1-8b", max_tokens=10, messages=hi)
        except anthropic.RateLimitError as exc:
            limited = exc
        time.sleep(0.1)
    assert limited is not None, "the rpm limit never refused"
    found = _anthropic_error(limited, 429, "rate_limit_error", limited.body["error"]["code"])
    assert found["code"] == "rate_limited" and limited.response.headers["retry-after"]


def test_dropped_advisory_fields_are_named_in_a_header(gateway, upstream):
    proc, key = gateway
    raw = an_client(proc, key).messages.with_raw_response.create(
        model="oa/llama-3.1-8b",
        max_tokens=10,
        extra_body={"top_k": 5},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    )
    assert raw.headers["x-gwctl-translation-warnings"] == (
        "top_k dropped: no counterpart; cache_control dropped: no counterpart"
    )
    assert raw.parse().content[0].text
    sent = upstream.received[-1].body
    assert "top_k" not in sent and sent["messages"][0]["content"] == "hi"
    clean = an_client(proc, key).messages.with_raw_response.create(
        model="oa/llama-3.1-8b", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert "x-gwctl-translation-warnings" not in clean.headers


def test_a_target_that_cannot_take_the_request_is_skipped_for_one_that_can(gateway, upstream, tmp_path):
    """The route's primary speaks only OpenAI and the request has a block with no OpenAI counterpart: the proxy
    moves on to the fallback (which takes Messages as they are), as the dry-run's plan says it will."""
    proc, key = gateway
    body = {
        "model": "claude",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}
        ],
    }
    req = proc.url + "/v1/messages"
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "x-gwctl-agent": "coder"}
    r = httpx.post(req, json=body, headers=headers, timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["x-gwctl-attempts"] == "2" and r.json()["type"] == "message"
    assert [x.path for x in upstream.received] == ["/v1/messages"]  # only the fallback was sent anything
    row = activity_rows(1)[0]
    assert row["source"] == "plain" and row["status"] == 200
    first = row["attempts"][0]
    assert (
        first["target"] == "oa/llama-3.1-8b" and first["status"] == 400 and "untranslatable_content" in first["error"]
    )
    req_file = tmp_path / "req.json"
    req_file.write_text(json.dumps(body))
    dry = run_cli(
        "route", "dry-run", "--agent", "coder", "--path", "/v1/messages", "--request", str(req_file), "--json"
    )
    doc = dry.json()
    assert doc["source"] == "plain" and doc["plan"][0]["skipped"] and doc["plan"][0]["rule"] == "untranslatable_content"
