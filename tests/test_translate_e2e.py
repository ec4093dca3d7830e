"""Translation end to end: the real SDKs -> proxy -> a stand-in source that speaks only the other API.

An Anthropic client reaches a source marked ``--api openai`` (the stand-in sees Chat Completions) and
an OpenAI client one marked ``--api anthropic`` (the stand-in sees Messages); each gets its answer in its
own API, and the activity row costs what the same counts cost untranslated.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import run_cli
from proxyrun import ProxyProcess
from test_proxy_e2e import UP_KEY, USAGE, activity_rows

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
    every model has the same prices."""
    upstream.configure(usage=USAGE)
    gw = run_cli
    for name, api in (("oa", "openai"), ("an", "anthropic"), ("plain", "both")):
        args = ["source", "add", name, "--base-url", upstream.url, "--auth-value", UP_KEY, "--api", api]
        assert gw(*args).code == 0
        assert gw("catalog", "set", f"{name}/llama-3.1-8b", *PRICES, "--max-output", "1000").code == 0
    key = gw("key", "create", "tester", "--json").json()["key"]
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    monkeypatch.setenv("GWCTL_ACTIVITY", activity)
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", activity)
    upstream.clear()
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
