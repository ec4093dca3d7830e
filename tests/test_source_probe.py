"""`gwctl source probe`: capability probes against loopback stand-ins that support or refuse each one."""

from __future__ import annotations

import difflib
import json
import time
from decimal import Decimal

import pytest

from conftest import invoke
from gwctl.core.probe import Reply, interpret, interpret_anthropic

KEY = "sk-upstream-1234"
MODEL = "llama-3.1-8b"
REF = f"up/{MODEL}"
FLAGGED = {"streaming": "streaming", "tools": "tools", "vision": "vision", "json_output": "json_output"}


@pytest.fixture
def up(upstream, gw):
    """The stand-in as source 'up', supporting everything the probes ask about."""
    upstream.configure(tool_arguments="{}", json_text='{"ok": true}', cached_prompt="included")
    assert gw("source", "add", "up", "--base-url", upstream.url, "--auth-value", KEY).code == 0
    assert gw("source", "refresh", "up").code == 0
    upstream.clear()
    return upstream


def probe(gw, *extra: str):
    res = gw("source", "probe", "up", MODEL, "--yes", "--json", *extra)
    assert res.code == 0, res.err
    return res.json()


def results(doc) -> dict[str, str]:
    return {p["name"]: p["result"] for p in doc["probes"]}


def test_an_upstream_that_supports_everything(up, gw):
    doc = probe(gw)
    assert results(doc) == {
        "chat": "yes",
        "streaming": "yes",
        "stream_usage": "yes",
        "cached_in_prompt_tokens": "yes",
        "tools": "yes",
        "vision": "yes",
        "json_output": "yes",
        "messages": "yes",
    }
    assert doc["api"] == "both" and doc["applied"] is False
    assert {p["name"]: p["flag"] for p in doc["probes"] if p["flag"]} == FLAGGED
    assert all(p["current"] is None for p in doc["probes"])
    # one request per probe, two for the cached-token one; every one small and sent with the credential
    assert len(up.received) == 9
    assert all(r.body["max_tokens"] <= 16 and r.headers["authorization"] == f"Bearer {KEY}" for r in up.received)
    assert up.received[-1].path == "/v1/messages" and up.received[-1].headers["anthropic-version"]


@pytest.mark.parametrize(
    "refuse, probe_name",
    [
        ("stream", "streaming"),
        ("stream_usage", "stream_usage"),
        ("tools", "tools"),
        ("images", "vision"),
        ("json", "json_output"),
        ("messages", "messages"),
    ],
)
def test_each_refusal_is_a_no(up, gw, refuse, probe_name):
    up.configure(refuse=frozenset({refuse}))
    doc = probe(gw)
    got = results(doc)
    assert got.pop(probe_name) == "no"
    if refuse == "stream":  # no stream, so no usage in one either
        assert got.pop("stream_usage") == "no"
    assert set(got.values()) == {"yes"}, got
    assert doc["api"] == ("openai" if refuse == "messages" else "both")


def test_table_shows_result_beside_the_current_flag(up, gw):
    assert gw("catalog", "set", REF, "--capability", "tools=true", "--capability", "vision=false").code == 0
    up.configure(refuse=frozenset({"tools"}))
    res = gw("source", "probe", "up", MODEL, "--yes")
    assert res.code == 0, res.err
    rows = {line.split("\t")[0]: line.split("\t") for line in res.out.splitlines()}
    assert rows["tools"][1:2] + rows["tools"][3:] == ["no", "tools", "true"]
    assert "refuse tools" in rows["tools"][2]
    assert rows["vision"][1:2] + rows["vision"][3:] == ["yes", "vision", "false"]
    assert rows["api"][1:2] + rows["api"][3:] == ["both", "api", "both"]
    assert "tools=false" in res.err and "vision=true" in res.err and "--apply" in res.err
    shown = invoke(["source", "probe", "up", MODEL, "--yes"], force_tables=True)
    assert "CAPABILITY" in shown.out and "CURRENT" in shown.out


@pytest.mark.parametrize("mode, expected", [("included", "yes"), ("excluded", "no"), (None, "unknown")], ids=str)
def test_cached_tokens_in_prompt_tokens(up, gw, mode, expected):
    up.configure(cached_prompt=mode)
    doc = probe(gw)
    row = next(p for p in doc["probes"] if p["name"] == "cached_in_prompt_tokens")
    assert row["result"] == expected and row["flag"] is None
    first, second = (r.body for r in up.received[3:5])
    assert first == second and len(first["messages"][0]["content"]) > 4000  # the same long prompt, twice


STORE = """\
# hand-written, keep me
schema = 1

[sources.up]
base_url = "{url}"
auth_value = "{key}"  # the stand-in's key

[sources.up.models]
"{model}" = true

[catalog."{ref}"]
display_name = "Llama"  # a label

[catalog."{ref}".capabilities]
# what we believed
tools = true     # from the model card
vision = false
"""


def test_apply_writes_exactly_the_detected_flags_and_api(up, gw, store_path):
    store_path.parent.mkdir(parents=True, exist_ok=True)
    before = STORE.format(url=up.url, key=KEY, model=MODEL, ref=REF)
    store_path.write_text(before)
    store_path.chmod(0o600)
    up.configure(refuse=frozenset({"tools", "messages"}))
    doc = probe(gw, "--apply")
    assert doc["applied"] is True and doc["api"] == "openai"
    after = store_path.read_text()
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert sorted(changed) == sorted(
        [
            "-tools = true     # from the model card",
            "+tools = false     # from the model card",
            '+api = "openai"',
            "+streaming = true",
            "+json_output = true",
            "-vision = false",
            "+vision = true",
        ]
    )
    assert "# hand-written, keep me" in after and "# what we believed" in after
    shown = gw("catalog", "show", REF, "--json").json()
    assert shown["capabilities"] == {"tools": False, "vision": True, "streaming": True, "json_output": True}
    assert gw("source", "show", "up", "--json").json()["api"] == "openai"
    # a second run finds nothing to change and writes nothing
    again = gw("source", "probe", "up", MODEL, "--yes", "--apply")
    assert again.code == 0 and "nothing to change" in again.err
    assert store_path.read_text() == after


def test_apply_sets_api_back_to_both_by_removing_it(up, gw, store_path):
    assert gw("source", "edit", "up", "--api", "openai").code == 0
    probe(gw, "--apply")
    assert "api =" not in store_path.read_text()
    assert gw("source", "show", "up", "--json").json()["api"] == "both"


def test_unknown_results_are_never_written(up, gw, store_path):
    assert gw("catalog", "set", REF, "--capability", "vision=false").code == 0
    up.configure(refuse=frozenset({"images", "tools", "messages"}), refuse_status=503)
    doc = probe(gw, "--apply")
    got = results(doc)
    assert got["vision"] == got["tools"] == got["messages"] == "unknown"
    assert doc["api"] is None
    caps = gw("catalog", "show", REF, "--json").json()["capabilities"]
    assert caps == {"vision": False, "streaming": True, "json_output": True}  # tools unset, vision untouched
    assert "api" not in store_path.read_text()


def test_accepted_but_not_done_is_unknown(up, gw):
    up.configure(tool_arguments=None, json_text=None)  # tools and JSON accepted, answered with plain words
    doc = probe(gw, "--apply")
    rows = {p["name"]: p for p in doc["probes"]}
    assert rows["tools"]["result"] == rows["json_output"]["result"] == "unknown"
    assert "no tool" in rows["tools"]["detail"] and "not JSON" in rows["json_output"]["detail"]
    caps = gw("catalog", "show", REF, "--json").json()["capabilities"]
    assert "tools" not in caps and "json_output" not in caps and caps["streaming"] is True


def test_without_a_terminal_and_without_yes_nothing_is_sent(up, gw, store_path):
    assert gw("catalog", "set", REF, "--price", "input=3e-6").code == 0
    before = store_path.read_text()
    res = gw("source", "probe", "up", MODEL, "--apply")
    assert res.code == 1 and res.out == ""
    assert "--yes is required" in res.err and "Traceback" not in res.err
    assert "at most" in res.err  # the plan and its cost were shown before refusing
    assert up.received == []
    assert store_path.read_text() == before


def test_cost_ceiling_is_prompt_bytes_and_max_tokens_at_catalog_prices(up, gw):
    prices = {"input": "3e-6", "output": "1.5e-5", "per_request": "0.001"}
    args = [a for k, v in prices.items() for a in ("--price", f"{k}={v}")]
    assert gw("catalog", "set", REF, *args).code == 0
    res = gw("source", "probe", "up", MODEL, "--yes", "--json")
    assert res.code == 0, res.err
    sent = up.received
    assert len(sent) == 9
    by_hand = (
        Decimal("3e-6") * sum(len(r.raw) for r in sent)
        + Decimal("1.5e-5") * sum(r.body["max_tokens"] for r in sent)
        + Decimal("0.001") * len(sent)
    )
    assert Decimal(res.json()["cost_ceiling"]) == by_hand
    assert f"at most {by_hand.normalize():f} USD" in res.err
    for r in sent:  # each request is listed in the plan with its bounds
        assert f"<= {len(r.raw)} prompt + {r.body['max_tokens']} output tokens" in res.err


def test_no_catalog_entry_is_unbilled_cost_unknown(up, gw):
    res = gw("source", "probe", "up", MODEL, "--yes", "--json")
    assert res.code == 0
    assert "unbilled: cost unknown" in res.err and res.json()["cost_ceiling"] is None


def test_a_slow_probe_is_cut_off_at_its_timeout(up, gw):
    up.configure(slow={"tools": 4000})
    start = time.monotonic()
    doc = probe(gw, "--timeout", "0.5", "--apply")
    elapsed = time.monotonic() - start
    row = next(p for p in doc["probes"] if p["name"] == "tools")
    assert row["result"] == "unknown" and "no answer within 0.5 s" in row["detail"]
    assert elapsed < 3.0, elapsed  # not the stand-in's 4 s
    assert results(doc)["json_output"] == "yes"  # later probes still ran
    assert "tools" not in gw("catalog", "show", REF, "--json").json()["capabilities"]


ANTHROPIC_YES = {
    "chat": "no",
    "streaming": "yes",
    "stream_usage": "yes",
    "cached_in_prompt_tokens": "yes",
    "tools": "yes",
    "vision": "yes",
    "json_output": "unknown",  # the Messages API has no response_format: not asked
    "messages": "yes",
}


def test_an_anthropic_only_upstream_is_asked_in_anthropic_form(up, gw, store_path):
    up.configure(refuse=frozenset({"chat"}))
    doc = probe(gw, "--apply")
    assert results(doc) == ANTHROPIC_YES and list(results(doc)) == list(ANTHROPIC_YES)  # the fixed row order
    assert doc["form"] == "anthropic" and doc["api"] == "anthropic"
    details = {p["name"]: p["detail"] for p in doc["probes"]}
    assert details["tools"] == "the forced tool was called (Anthropic form)"
    assert "no response_format" in details["json_output"]
    paths = [r.path for r in up.received]
    assert paths == ["/v1/chat/completions"] + ["/v1/messages"] * 7  # baseline, 4 questions, the cached one twice
    anthropic = up.received[1:]
    assert all(r.headers["anthropic-version"] and r.body["max_tokens"] <= 16 for r in anthropic)
    assert "response_format" not in str([r.body for r in anthropic])
    assert anthropic[5].body["tool_choice"] == {"type": "tool", "name": "gwctl_probe"}
    assert anthropic[6].body["messages"][0]["content"][1]["source"]["media_type"] == "image/png"
    cached = [r.body for r in anthropic[3:5]]
    assert cached[0] == cached[1] and cached[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    # --apply: the known flags and the api; json_output stays unset
    caps = gw("catalog", "show", REF, "--json").json()["capabilities"]
    assert caps == {"streaming": True, "tools": True, "vision": True}
    assert 'api = "anthropic"' in store_path.read_text()


@pytest.mark.parametrize(
    "refuse, probe_name",
    [("stream", "streaming"), ("stream_usage", "stream_usage"), ("tools", "tools"), ("images", "vision")],
)
def test_each_refusal_is_a_no_in_anthropic_form(up, gw, refuse, probe_name):
    up.configure(refuse=frozenset({"chat", refuse}))
    doc = probe(gw)
    got, expected = results(doc), dict(ANTHROPIC_YES, **{probe_name: "no"})
    if refuse == "stream":  # no stream, so no usage in one either
        expected["stream_usage"] = "no"
    assert got == expected and doc["form"] == "anthropic"
    detail = next(p["detail"] for p in doc["probes"] if p["name"] == probe_name)
    assert detail.endswith("(Anthropic form)")
    if refuse != "stream_usage":
        assert detail.startswith("HTTP 400: stand-in configured to refuse")


@pytest.mark.parametrize("mode, expected", [("included", "yes"), ("excluded", "no"), (None, "unknown")], ids=str)
def test_cached_tokens_in_anthropic_form(up, gw, mode, expected):
    up.configure(refuse=frozenset({"chat"}), cached_prompt=mode)
    doc = probe(gw)
    assert results(doc)["cached_in_prompt_tokens"] == expected


def test_a_source_configured_anthropic_starts_in_anthropic_form(up, gw):
    assert gw("source", "edit", "up", "--api", "anthropic").code == 0
    res = gw("source", "probe", "up", MODEL, "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["form"] == "anthropic" and doc["api"] == "both"
    assert results(doc) == dict(ANTHROPIC_YES, chat="yes")
    paths = [r.path for r in up.received]
    assert paths == ["/v1/messages"] * 7 + ["/v1/chat/completions"]  # the chat endpoint checked last
    plan = res.err.splitlines()[1:10]
    assert [line.split()[0] for line in plan] == [
        "messages",
        "streaming",
        "stream_usage",
        "cached_in_prompt_tokens",
        "cached_in_prompt_tokens",
        "tools",
        "vision",
        "json_output",
        "chat",
    ]
    assert all("POST /v1/messages " in line for line in plan[:7]) and "POST /v1/chat/completions" in plan[-1]
    assert plan[7].split(None, 1)[1].startswith("not asked")
    assert "if /v1/messages is missing (404/405)" in res.err and "OpenAI chat-completions form" in res.err


def test_an_anthropic_source_without_messages_is_asked_in_openai_form(up, gw):
    assert gw("source", "edit", "up", "--api", "anthropic").code == 0
    up.configure(refuse=frozenset({"messages"}))
    doc = probe(gw)
    assert doc["form"] == "openai" and doc["api"] == "openai"
    assert results(doc) == dict((n, "yes") for n in ANTHROPIC_YES) | {"messages": "no"}
    assert [r.path for r in up.received][:2] == ["/v1/messages", "/v1/chat/completions"]


def test_the_ceiling_is_the_dearer_form(up, gw):
    prices = {"input": "3e-6", "output": "1.5e-5", "per_request": "0.001"}
    args = [a for k, v in prices.items() for a in ("--price", f"{k}={v}")]
    assert gw("catalog", "set", REF, *args).code == 0

    def by_hand(sent) -> Decimal:
        return (
            Decimal("3e-6") * sum(len(r.raw) for r in sent)
            + Decimal("1.5e-5") * sum(r.body["max_tokens"] for r in sent)
            + Decimal("0.001") * len(sent)
        )

    forms = {}
    for refused in (frozenset(), frozenset({"chat"})):  # everything in OpenAI form, then in Anthropic form
        up.clear()
        up.configure(refuse=refused)
        doc = probe(gw)
        forms[doc["form"]] = (by_hand(up.received), Decimal(doc["cost_ceiling"]))
    (openai, ceiling_1), (anthropic, ceiling_2) = forms["openai"], forms["anthropic"]
    assert ceiling_1 == ceiling_2 == max(openai, anthropic) and openai != anthropic


@pytest.mark.parametrize("status, hint", [(401, "credential"), (500, "source test")])
def test_a_failing_baseline_stops_with_one_clear_error(up, gw, store_path, status, hint):
    before = store_path.read_text()
    up.configure(fail_status=status)
    res = gw("source", "probe", "up", MODEL, "--yes", "--apply")
    assert res.code == 1 and res.out == "" and "Traceback" not in res.err
    assert f"the plain chat request failed (HTTP {status}" in res.err and hint in res.err
    assert len(up.received) == 1
    assert store_path.read_text() == before


def test_no_endpoint_answering_stops_after_both_baselines(up, gw):
    up.configure(refuse=frozenset({"chat", "messages"}))
    res = gw("source", "probe", "up", MODEL, "--yes", "--apply")
    assert res.code == 1 and "the plain chat request failed (HTTP 404" in res.err
    assert "/v1/messages did not answer either (HTTP 404" in res.err
    assert [r.path for r in up.received] == ["/v1/chat/completions", "/v1/messages"]


def test_model_defaults_to_the_only_listed_one(upstream, gw):
    upstream.configure(models=["solo"], tool_arguments="{}")
    assert gw("source", "add", "one", "--base-url", upstream.url, "--auth-value", KEY).code == 0
    assert gw("source", "refresh", "one").code == 0
    res = gw("source", "probe", "one", "--yes", "--json")
    assert res.code == 0 and res.json()["model"] == "solo"
    assert {r.body["model"] for r in upstream.received if r.body} == {"solo"}
    unlisted = gw("source", "probe", "one", "other", "--yes", "--json")
    assert unlisted.code == 0 and "one does not list other; probing it anyway" in unlisted.err


def test_usage_errors(up, gw):
    several = gw("source", "probe", "up", "--yes")
    assert several.code == 1 and "name the model to probe: it lists 3 models" in several.err
    missing = gw("source", "probe", "nope", MODEL, "--yes")
    assert missing.code == 1 and "no source named 'nope'" in missing.err
    bad = gw("source", "probe", "up", MODEL, "--yes", "--timeout", "0")
    assert bad.code == 1 and "--timeout must be a positive" in bad.err
    assert up.received == []
    assert json.loads(gw("source", "show", "up", "--json").out)["api"] == "both"


def test_on_a_terminal_it_asks_and_a_no_sends_nothing(up, gw, monkeypatch):
    import typer

    from gwctl.context import Env

    asked = []
    monkeypatch.setattr(Env, "stdin_is_tty", lambda self: True)
    monkeypatch.setattr(typer, "confirm", lambda question, **kw: asked.append(question) or False)
    res = gw("source", "probe", "up", MODEL)
    assert res.code == 1 and "cancelled" in res.err
    assert asked == ["Send these requests to up (cost unknown)?"]
    assert up.received == []


# --- what the answers mean (core.probe, no HTTP) ---------------------------------------------------


@pytest.mark.parametrize(
    "name, reply, result",
    [
        ("streaming", Reply(200, "application/json", b'{"choices": []}'), "no"),  # stream ignored
        ("streaming", Reply(200, "text/event-stream", b'data: {"choices": []}\n\ndata: [DONE]\n\n'), "yes"),
        ("tools", Reply(422, "application/json", b"{}"), "no"),
        ("tools", Reply(429, "application/json", b"{}"), "unknown"),
        ("tools", Reply(404, "application/json", b"{}"), "unknown"),  # only an endpoint's 404 is a no
        ("vision", Reply(502, "text/html", b"<html>"), "unknown"),
        ("vision", Reply(failure="connection to h was refused"), "unknown"),
        ("messages", Reply(405, "text/plain", b""), "no"),
        ("messages", Reply(401, "application/json", b"{}"), "unknown"),
        ("messages", Reply(200, "application/json", b'{"choices": []}'), "unknown"),
        (
            "json_output",
            Reply(200, "application/json", b'{"choices": [{"message": {"content": "{\\"ok\\":1}"}}]}'),
            "yes",
        ),
    ],
)
def test_interpret(name, reply, result):
    assert interpret(name, [reply]).result == result


def usage(prompt: int, cached: int) -> Reply:
    body = {"usage": {"prompt_tokens": prompt, "prompt_tokens_details": {"cached_tokens": cached}}}
    return Reply(200, "application/json", json.dumps(body).encode())


@pytest.mark.parametrize(
    "first, second, result",
    [
        (usage(1300, 0), usage(1300, 1280), "yes"),  # OpenAI: the same prompt_tokens, part of them cached
        (usage(1300, 0), usage(20, 1280), "no"),  # prompt_tokens + cached_tokens = the first time's
        (usage(1300, 0), usage(1300, 0), "unknown"),  # nothing cached: cannot tell
        (usage(1300, 0), Reply(503), "unknown"),
    ],
)
def test_interpret_cached_tokens(first, second, result):
    assert interpret("cached_in_prompt_tokens", [first, second]).result == result


def sse(*events: dict) -> Reply:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return Reply(200, "text/event-stream; charset=utf-8", body.encode())


START = {"type": "message_start", "message": {"type": "message", "usage": {"input_tokens": 9, "output_tokens": 1}}}
DELTA = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
TEXT = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}


def message(*content: dict) -> Reply:
    return Reply(200, "application/json", json.dumps({"type": "message", "content": list(content)}).encode())


@pytest.mark.parametrize(
    "name, replies, result",
    [
        ("streaming", [sse(START, TEXT, DELTA)], "yes"),
        ("streaming", [message({"type": "text", "text": "ok"})], "no"),  # stream ignored
        ("streaming", [Reply(200, "text/event-stream", b'data: {"choices": []}\n\n')], "no"),  # not Anthropic's
        ("stream_usage", [sse(START, TEXT, DELTA)], "yes"),
        ("stream_usage", [sse({"type": "message_start", "message": {}}, TEXT, {"type": "message_delta"})], "no"),
        ("stream_usage", [sse(START, TEXT, {"type": "message_delta"})], "unknown"),  # only half of it
        ("tools", [message({"type": "tool_use", "name": "gwctl_probe", "input": {}})], "yes"),
        ("tools", [message({"type": "text", "text": "ok"})], "unknown"),
        ("tools", [Reply(400, "application/json", b'{"type":"error","error":{"message":"no tools"}}')], "no"),
        ("tools", [Reply(404, "application/json", b"{}")], "unknown"),  # only an endpoint's 404 is a no
        ("vision", [message({"type": "text", "text": "black"})], "yes"),
        ("vision", [Reply(200, "application/json", b'{"choices": []}')], "unknown"),
        ("vision", [Reply(529, "application/json", b"{}")], "unknown"),
        ("vision", [Reply(failure="no answer within 20 s")], "unknown"),
        ("json_output", [], "unknown"),  # not asked
    ],
)
def test_interpret_anthropic(name, replies, result):
    outcome = interpret_anthropic(name, replies)
    assert outcome.result == result and outcome.detail.endswith("(Anthropic form)")
    assert interpret(name, replies, "anthropic") == outcome


def test_an_anthropic_error_body_gives_the_reason():
    refused = Reply(400, "application/json", b'{"type":"error","error":{"type":"x","message":"no images"}}')
    assert interpret_anthropic("vision", [refused]).detail == "HTTP 400: no images (Anthropic form)"


def anthropic_usage(read: int, uncached: int, created: int = 0) -> Reply:
    usage = {"input_tokens": uncached, "cache_read_input_tokens": read, "cache_creation_input_tokens": created}
    return message_with_usage(usage)


def message_with_usage(usage: dict) -> Reply:
    body = {"type": "message", "content": [], "usage": usage}
    return Reply(200, "application/json", json.dumps(body).encode())


@pytest.mark.parametrize(
    "first, second, result",
    [
        (anthropic_usage(0, 10, 1290), anthropic_usage(1290, 10), "no"),  # Anthropic: cache reads left out
        (anthropic_usage(0, 1300), anthropic_usage(1299, 1300), "yes"),  # counted in input_tokens
        (anthropic_usage(1290, 10), anthropic_usage(1290, 10), "no"),  # already cached the first time
        (anthropic_usage(0, 1300), anthropic_usage(0, 1300), "unknown"),  # nothing read from the cache
        (anthropic_usage(0, 1300), message_with_usage({"input_tokens": 1300}), "unknown"),  # no cache figures
        (anthropic_usage(0, 1300), Reply(503), "unknown"),
    ],
)
def test_interpret_anthropic_cached_tokens(first, second, result):
    assert interpret_anthropic("cached_in_prompt_tokens", [first, second]).result == result


def test_a_model_id_with_a_control_character_is_refused_before_anything_is_sent(up, gw):
    r = gw("source", "probe", "up", "m\x1b[31mRED", "--yes")
    assert r.code == 1 and "control character" in r.err and "\x1b" not in r.err
    assert not up.received  # nothing was sent
