"""The stand-in upstream: SDK-compatible shapes, deterministic usage, recording."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gwctl.testing.responses import EMBEDDING_DIM, TokenCounts, content_pieces, prompt_tokens, usage_for
from gwctl.testing.standin import StandinConfig, run_standin
from gwctl.testing.thread import start_standin

MESSAGES = [{"role": "user", "content": "Say hello to the stand-in, please."}]


@pytest.fixture(scope="module")
def standin():
    with start_standin(StandinConfig(models=["m-small", "org/m-large"])) as h:
        yield h


@pytest.fixture
def fresh(standin):
    standin.clear()
    yield standin
    standin.configure(
        api_key=None,
        auth_header=None,
        fail_status=None,
        usage=None,
        delay_ms=0,
        chunk_delay_ms=0,
        models_payload=None,
        strict_models=False,
        record=True,
        stream_chunks=3,
    )
    standin.clear()


def oai(h, key="unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=h.url, api_key=key, max_retries=0, timeout=10)


def ant(h, key="unused", base=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base or h.base, api_key=key, max_retries=0, timeout=10)


def expected_text(h) -> str:
    return "".join(content_pieces(h.config))


# ---------------------------------------------------------------- /models


def test_models_list_shape_and_sdk(fresh):
    r = httpx.get(fresh.url + "/models")
    assert r.status_code == 200
    assert r.json() == {
        "object": "list",
        "data": [
            {"id": "m-small", "object": "model", "created": 0, "owned_by": "standin"},
            {"id": "org/m-large", "object": "model", "created": 0, "owned_by": "standin"},
        ],
    }
    assert [m.id for m in oai(fresh).models.list()] == ["m-small", "org/m-large"]


def test_models_payload_override_raw_and_json(fresh):
    fresh.configure(models_payload="<html>not json</html>")
    r = httpx.get(fresh.url + "/models")
    assert r.status_code == 200 and r.text == "<html>not json</html>"
    fresh.configure(models_payload={"models": ["a"]})
    assert httpx.get(fresh.url + "/models").json() == {"models": ["a"]}


# ---------------------------------------------------------------- auth


def test_bearer_auth_required(fresh):
    fresh.configure(api_key="sk-right")
    assert httpx.get(fresh.url + "/models").status_code == 401
    bad = httpx.get(fresh.url + "/models", headers={"Authorization": "Bearer sk-wrong"})
    assert bad.status_code == 401
    err = bad.json()["error"]
    assert err["type"] == "authentication_error" and err["message"]
    ok = httpx.get(fresh.url + "/models", headers={"Authorization": "Bearer sk-right"})
    assert ok.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        oai(fresh, "sk-wrong").models.list()
    assert len(oai(fresh, "sk-right").models.list().data) == 2


def test_named_header_auth_is_raw(fresh):
    fresh.configure(api_key="k123", auth_header="X-Api-Token")
    h = {"x-api-token": "k123"}
    assert httpx.get(fresh.url + "/models", headers=h).status_code == 200
    # Bearer form is not accepted when a header name is configured
    r = httpx.get(fresh.url + "/models", headers={"Authorization": "Bearer k123"})
    assert r.status_code == 401
    r = httpx.get(fresh.url + "/models", headers={"x-api-token": "Bearer k123"})
    assert r.status_code == 401


def test_anthropic_sdk_with_x_api_key(fresh):
    # This anthropic SDK sends api_key as "Authorization: Bearer"; x-api-key is
    # what older SDKs and curl examples send, so pass it as a header here.
    fresh.configure(api_key="ak", auth_header="x-api-key")
    with pytest.raises(anthropic.AuthenticationError):
        ant(fresh, "ak").messages.create(model="m", max_tokens=5, messages=MESSAGES)
    client = anthropic.Anthropic(
        base_url=fresh.base, api_key="unused", max_retries=0, default_headers={"x-api-key": "ak"}
    )
    msg = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert msg.content[0].text == expected_text(fresh)
    assert fresh.received[-1].headers["x-api-key"] == "ak"


# ---------------------------------------------------------------- chat


def test_chat_non_stream_sdk(fresh):
    resp = oai(fresh).chat.completions.create(model="org/m-large", messages=MESSAGES)
    u = usage_for(fresh.config, "chat", {"messages": MESSAGES})
    assert resp.model == "org/m-large"
    assert resp.choices[0].message.content == expected_text(fresh)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == u.input_tokens == prompt_tokens(MESSAGES)
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == u.input_tokens + 3
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_stream_sdk_with_usage(fresh):
    stream = oai(fresh).chat.completions.create(
        model="m-small", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(fresh)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_none(fresh):
    chunks = list(oai(fresh).chat.completions.create(model="m-small", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_chat_stream_raw_sse_framing(fresh):
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(fresh.url + "/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    datas = [json.loads(e[len("data: ") :]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    # role chunk + 3 pieces + finish chunk + usage chunk
    assert len(datas) == 1 + 3 + 1 + 1
    assert datas[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_stream_chunks_controls_pieces_and_output_tokens(fresh):
    fresh.configure(stream_chunks=9)
    chunks = list(
        oai(fresh).chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == content_pieces(fresh.config) and len(pieces) == 9
    assert chunks[-1].usage.completion_tokens == 9


# ---------------------------------------------------------------- completions / embeddings


def test_completions_sdk(fresh):
    resp = oai(fresh).completions.create(model="m", prompt="Once upon a time")
    assert resp.choices[0].text == expected_text(fresh)
    assert resp.usage.prompt_tokens == prompt_tokens("Once upon a time")
    chunks = list(
        oai(fresh).completions.create(model="m", prompt="x", stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_text(fresh)
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings_sdk_base64_and_float(fresh):
    resp = oai(fresh).embeddings.create(model="emb", input=["a", "bb", "ccc"])
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert all(len(d.embedding) == EMBEDDING_DIM for d in resp.data)
    assert fresh.received[-1].body.get("encoding_format") == "base64"  # the SDK's default
    floats = oai(fresh).embeddings.create(model="emb", input=["a", "bb", "ccc"], encoding_format="float")
    assert [d.embedding for d in floats.data] == [d.embedding for d in resp.data]
    assert resp.usage.prompt_tokens == prompt_tokens(["a", "bb", "ccc"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens
    one = oai(fresh).embeddings.create(model="emb", input="single")
    assert len(one.data) == 1


# ---------------------------------------------------------------- responses


def test_responses_non_stream_sdk(fresh):
    resp = oai(fresh).responses.create(model="m-small", input="Hi there")
    assert resp.output_text == expected_text(fresh)
    assert resp.status == "completed"
    assert resp.usage.input_tokens == prompt_tokens("Hi there")
    assert resp.usage.output_tokens == 3
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + 3


def test_responses_stream_sdk_events(fresh):
    events = list(oai(fresh).responses.create(model="m-small", input="Hi", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == expected_text(fresh)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.usage.input_tokens == prompt_tokens("Hi") and done.usage.output_tokens == 3


def test_responses_stream_helper_accumulates(fresh):
    with oai(fresh).responses.stream(model="m-small", input="Hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == expected_text(fresh)
    assert final.usage.output_tokens == 3


# ---------------------------------------------------------------- anthropic messages


def test_messages_non_stream_sdk(fresh):
    msg = ant(fresh).messages.create(model="claude-x", max_tokens=50, messages=MESSAGES)
    assert msg.model == "claude-x"
    assert msg.content[0].type == "text" and msg.content[0].text == expected_text(fresh)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == prompt_tokens(MESSAGES)
    assert msg.usage.output_tokens == 3
    assert msg.usage.cache_read_input_tokens == 0
    assert msg.usage.cache_creation_input_tokens == 0
    assert fresh.received[-1].path == "/v1/messages"


def test_messages_stream_raw_events_and_helper(fresh):
    raw = list(ant(fresh).messages.create(model="c", max_tokens=50, messages=MESSAGES, stream=True))
    types = [e.type for e in raw]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("content_block_delta") == 3
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert raw[0].message.usage.input_tokens == prompt_tokens(MESSAGES)
    assert [e for e in raw if e.type == "message_delta"][0].usage.output_tokens == 3
    with ant(fresh).messages.stream(model="c", max_tokens=50, messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == expected_text(fresh) == final.content[0].text
    assert final.usage.output_tokens == 3
    assert final.usage.input_tokens == prompt_tokens(MESSAGES)


# ---------------------------------------------------------------- usage override


def test_usage_override_maps_to_every_shape(fresh):
    fresh.configure(usage={"input_tokens": 1000, "output_tokens": 250, "cached_tokens": 300, "cache_write_tokens": 100})
    c = oai(fresh).chat.completions.create(model="m", messages=MESSAGES)
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (1000, 250)
    assert c.usage.prompt_tokens_details.cached_tokens == 300
    r = oai(fresh).responses.create(model="m", input="x")
    assert (r.usage.input_tokens, r.usage.output_tokens) == (1000, 250)
    assert r.usage.input_tokens_details.cached_tokens == 300
    m = ant(fresh).messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert m.usage.input_tokens == 1000 - 300 - 100
    assert m.usage.cache_read_input_tokens == 300
    assert m.usage.cache_creation_input_tokens == 100
    assert m.usage.output_tokens == 250
    with ant(fresh).messages.stream(model="m", max_tokens=5, messages=MESSAGES) as s:
        final = s.get_final_message()
    assert final.usage.input_tokens == 600 and final.usage.cache_read_input_tokens == 300
    assert final.usage.output_tokens == 250


def test_partial_usage_override_keeps_computed_rest(fresh):
    fresh.configure(usage={"output_tokens": 7})
    c = oai(fresh).chat.completions.create(model="m", messages=MESSAGES)
    assert c.usage.completion_tokens == 7
    assert c.usage.prompt_tokens == prompt_tokens(MESSAGES)


def test_unknown_usage_key_rejected():
    with pytest.raises(ValueError, match="unknown usage keys"):
        StandinConfig(usage={"prompt_tokens": 3})


# ---------------------------------------------------------------- failures / errors


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_fail_status_every_endpoint(fresh, status):
    fresh.configure(fail_status=status)
    r = httpx.get(fresh.url + "/models")
    assert r.status_code == status and r.json()["error"]["message"]
    r = httpx.post(fresh.url + "/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == status and "error" in r.json()
    r = httpx.post(fresh.url + "/messages", json={"model": "m", "messages": []})
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["message"]
    with pytest.raises(openai.APIStatusError) as exc:
        oai(fresh).chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.status_code == status
    assert len(fresh.received) == 4  # failures are still recorded


def test_bad_requests(fresh):
    assert httpx.post(fresh.url + "/nope", json={}).status_code == 404
    assert httpx.get(fresh.url + "/chat/completions").status_code == 405
    bad = httpx.post(fresh.url + "/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    nomodel = httpx.post(fresh.url + "/chat/completions", json={"messages": []})
    assert nomodel.status_code == 400
    assert fresh.received[2].body is None and fresh.received[2].raw == b"{not json"


def test_strict_models(fresh):
    fresh.configure(strict_models=True)
    with pytest.raises(openai.NotFoundError):
        oai(fresh).chat.completions.create(model="ghost", messages=MESSAGES)
    ok = oai(fresh).chat.completions.create(model="org/m-large", messages=MESSAGES)
    assert ok.model == "org/m-large"


# ---------------------------------------------------------------- recording


def test_records_method_path_headers_body(fresh):
    httpx.post(
        fresh.url + "/chat/completions?trace=1&x=y",
        json={"model": "m", "messages": MESSAGES},
        headers={"Authorization": "Bearer sk-up", "X-Static": "v1", "X-Multi": "a"},
    )
    rec = fresh.received[-1]
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions?trace=1&x=y"
    assert rec.headers["authorization"] == "Bearer sk-up"
    assert rec.headers["x-static"] == "v1"
    assert all(k == k.lower() for k in rec.headers)
    assert rec.body == {"model": "m", "messages": MESSAGES}
    fresh.clear()
    assert fresh.received == []


def test_record_false_keeps_nothing(fresh):
    fresh.configure(record=False)
    oai(fresh).chat.completions.create(model="m", messages=MESSAGES)
    assert fresh.received == []


def test_control_endpoint_lists_and_clears(fresh):
    fresh.configure(api_key="secret")  # control endpoint needs no auth
    httpx.post(fresh.url + "/embeddings", json={"model": "e", "input": "x"}, headers={"authorization": "Bearer secret"})
    got = httpx.get(fresh.base + "/_standin/received").json()
    assert len(got) == 1 and got[0]["path"] == "/v1/embeddings"
    assert got[0]["body"] == {"model": "e", "input": "x"}
    assert httpx.delete(fresh.base + "/_standin/received").status_code == 200
    assert fresh.received == []


# ---------------------------------------------------------------- timing


def test_delay_ms_delays_answer(fresh):
    fresh.configure(delay_ms=150)
    t = time.perf_counter()
    httpx.get(fresh.url + "/models")
    assert time.perf_counter() - t >= 0.14
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fresh.url + "/models", timeout=0.05)


def test_chunk_delay_streams_events_separately(fresh):
    fresh.configure(chunk_delay_ms=60)
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    arrivals = []
    with httpx.stream("POST", fresh.url + "/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter())
    assert len(arrivals) == 6  # role + 3 pieces + finish + [DONE]
    # paced, not sent at once: the events span the delays (a busy machine can only stretch this,
    # though it may deliver two events in one read, so not every gap is checked)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert arrivals[-1] - arrivals[0] >= 0.15
    assert sum(g >= 0.03 for g in gaps) >= 2


# ---------------------------------------------------------------- prefixes / run modes


@pytest.mark.parametrize("prefix,anthropic_base", [("", ""), ("/api/v1", "/api"), ("/v1/", "")])
def test_prefixes(prefix, anthropic_base):
    with start_standin(StandinConfig(prefix=prefix, models=["a"])) as h:
        assert h.url == h.base + prefix.rstrip("/")
        assert [m.id for m in oai(h).models.list()] == ["a"]
        assert oai(h).chat.completions.create(model="a", messages=MESSAGES).choices
        if prefix == "":
            # the Anthropic SDK always adds /v1/messages: no route at the bare prefix
            assert httpx.post(h.base + "/v1/messages", json={"model": "a"}).status_code == 404
            assert httpx.post(h.base + "/messages", json={"model": "a", "messages": []}).status_code == 200
        else:
            msg = ant(h, base=h.base + anthropic_base).messages.create(model="a", max_tokens=5, messages=MESSAGES)
            assert msg.content[0].text
        assert httpx.get(h.base + "/elsewhere/models").status_code == 404


def test_run_standin_in_loop():
    async def go():
        s = await run_standin(StandinConfig(models=["x"]))
        try:
            async with httpx.AsyncClient() as c:
                r = await c.get(s.url + "/models")
            return r.json()["data"][0]["id"], len(s.received)
        finally:
            await s.close()

    assert asyncio.run(go()) == ("x", 1)


def test_stop_is_idempotent_and_frees_port():
    h = start_standin()
    url = h.url
    h.stop()
    h.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=2)


def test_subprocess_mode():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gwctl.testing", "--port", "0", "--models", "a,b/c", "--api-key", "K"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"gwctl standin listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert m, line
        url = m.group(1)
        r = httpx.get(url + "/models", headers={"Authorization": "Bearer K"})
        assert [d["id"] for d in r.json()["data"]] == ["a", "b/c"]
        assert httpx.get(url + "/models").status_code == 401
        rec = httpx.get(url.rsplit("/v1", 1)[0] + "/_standin/received").json()
        assert [x["headers"].get("authorization") for x in rec] == ["Bearer K", None]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# ---------------------------------------------------------------- properties

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=30))
messages_strategy = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=200)},
        optional={"name": st.text(max_size=10), "extra": json_scalars},
    ),
    min_size=0,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(messages_strategy)
def test_prompt_tokens_rule(messages):
    n = prompt_tokens(messages)
    canon = json.dumps(messages, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    assert n == max(1, len(canon) // 4)
    # independent of key order
    reordered = [dict(reversed(list(m.items()))) for m in messages]
    assert prompt_tokens(reordered) == n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=messages_strategy, indent=st.sampled_from([None, 2]), kind=st.sampled_from(["chat", "messages"]))
def test_reported_usage_matches_rule_whatever_the_serialisation(standin, messages, indent, kind):
    body = {"model": "m", "messages": messages, "max_tokens": 5}
    path = "/chat/completions" if kind == "chat" else "/messages"
    r = httpx.post(
        standin.url + path,
        content=json.dumps(body, indent=indent).encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200
    usage = r.json()["usage"]
    expected = usage_for(standin.config, kind, body)
    assert expected == TokenCounts(prompt_tokens(messages), 3, 0, 0)
    got = usage["prompt_tokens"] if kind == "chat" else usage["input_tokens"]
    assert got == expected.input_tokens


# ---------------------------------------------------------------- refusals (for the capability probe)


def test_refuse_each_feature_the_way_a_server_without_it_would():
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    cases = {
        "tools": {**chat, "tools": [{"type": "function", "function": {"name": "f"}}]},
        "json": {**chat, "response_format": {"type": "json_object"}},
        "images": {**chat, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}]},
        "stream": {**chat, "stream": True},
    }
    with start_standin(StandinConfig(refuse=frozenset(cases) | {"messages"})) as h:
        for feature, body in cases.items():
            resp = httpx.post(h.url + "/chat/completions", json=body, timeout=10)
            assert resp.status_code == 400, feature
            assert feature in resp.json()["error"]["message"]
        assert httpx.post(h.url + "/chat/completions", json=chat, timeout=10).status_code == 200
        assert httpx.post(h.url + "/messages", json={**chat, "max_tokens": 4}, timeout=10).status_code == 404
        h.configure(refuse=frozenset({"tools"}), refuse_status=503)
        assert httpx.post(h.url + "/chat/completions", json=cases["tools"], timeout=10).status_code == 503


def test_refused_stream_usage_is_ignored_and_unknown_features_rejected():
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with start_standin(StandinConfig(refuse=frozenset({"stream_usage"}))) as h:
        text = httpx.post(h.url + "/chat/completions", json=body, timeout=10).text
    assert text.endswith("data: [DONE]\n\n") and '"prompt_tokens"' not in text
    with pytest.raises(ValueError, match="unknown feature"):
        StandinConfig(refuse=frozenset({"telepathy"}))


@pytest.mark.parametrize("mode", ["included", "excluded"])
def test_cached_prompt_reports_a_repeated_prompt_as_cached(mode):
    body = {"model": "m", "messages": [{"role": "user", "content": "the same prompt, twice over"}]}
    with start_standin(StandinConfig(cached_prompt=mode)) as h:
        first, second = (httpx.post(h.url + "/chat/completions", json=body, timeout=10).json()["usage"] for _ in "ab")
    p = prompt_tokens(body["messages"])
    assert first["prompt_tokens"] == p and first["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["prompt_tokens_details"]["cached_tokens"] == p - 1
    assert second["prompt_tokens"] == (p if mode == "included" else 1)


def test_json_text_answers_a_request_for_json_output():
    body = {"model": "m", "messages": [], "response_format": {"type": "json_object"}}
    with start_standin(StandinConfig(json_text='{"ok":true}')) as h:
        asked = httpx.post(h.url + "/chat/completions", json=body, timeout=10).json()
        plain = httpx.post(h.url + "/chat/completions", json={"model": "m", "messages": []}, timeout=10).json()
    assert json.loads(asked["choices"][0]["message"]["content"]) == {"ok": True}
    assert plain["choices"][0]["message"]["content"] == "Hello from the"


def test_messages_refuse_features_and_answer_the_rest_like_an_anthropic_only_server():
    ask = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    tool = {"name": "f", "input_schema": {"type": "object"}}
    cases = {
        "tools": {**ask, "tools": [tool], "tool_choice": {"type": "tool", "name": "f"}},
        "images": {**ask, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}]},
        "stream": {**ask, "stream": True},
    }
    with start_standin(StandinConfig(refuse=frozenset(cases) | {"chat"}, tool_arguments="{}")) as h:
        assert httpx.post(h.url + "/chat/completions", json=ask, timeout=10).status_code == 404
        for feature, body in cases.items():
            resp = httpx.post(h.url + "/messages", json=body, timeout=10)
            assert resp.status_code == 400, feature
            assert resp.json()["type"] == "error" and feature in resp.json()["error"]["message"]
        h.configure(refuse=frozenset({"chat"}))
        called = httpx.post(h.url + "/messages", json=cases["tools"], timeout=10).json()
        assert called["content"] == [{"type": "tool_use", "id": "toolu_standin", "name": "f", "input": {}}]
        assert called["stop_reason"] == "tool_use"
        assert httpx.post(h.url + "/messages", json=cases["images"], timeout=10).json()["type"] == "message"


def test_refused_stream_usage_leaves_usage_out_of_a_messages_stream():
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with start_standin(StandinConfig()) as h:
        with_usage = httpx.post(h.url + "/messages", json=body, timeout=10).text
        h.configure(refuse=frozenset({"stream_usage"}))
        without = httpx.post(h.url + "/messages", json=body, timeout=10).text
    assert '"input_tokens"' in with_usage and '"output_tokens"' in with_usage
    assert "message_start" in without and "message_delta" in without and '"usage"' not in without


@pytest.mark.parametrize("mode", ["included", "excluded"])
def test_cached_prompt_on_messages_counts_the_system_blocks(mode):
    system = [{"type": "text", "text": "a long system prompt " * 20, "cache_control": {"type": "ephemeral"}}]
    body = {"model": "m", "max_tokens": 1, "system": system, "messages": MESSAGES}
    with start_standin(StandinConfig(cached_prompt=mode)) as h:
        first, second = (httpx.post(h.url + "/messages", json=body, timeout=10).json()["usage"] for _ in "ab")
    p = prompt_tokens([system, MESSAGES])
    assert first["input_tokens"] == p and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == p - 1
    assert second["input_tokens"] == (p if mode == "included" else 1)  # Anthropic's own convention: excluded
