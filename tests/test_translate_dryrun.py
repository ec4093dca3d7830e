"""The dry-run shows what translation does to a request: the way, the dropped advisory fields as warnings,
an untranslatable request refused with its rule, and a plan's target that cannot take it skipped, from the
same translation function the proxy's forward stage calls (gwctl.core.translate.target)."""

from __future__ import annotations

import copy
import json

import pytest

from gwctl.core.decision import decide
from gwctl.core.translate.target import DEFAULT_MAX_TOKENS, translate_for, with_translation
from gwctl.store.file import load

ADVISORY = {
    "model": "claude",
    "max_tokens": 100,
    "top_k": 5,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
}
UNTRANSLATABLE = {
    "model": "claude",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": [{"type": "container_upload", "file_id": "f1"}]}],
}


@pytest.fixture
def store(gw, tmp_path):
    """oa speaks OpenAI only, an Anthropic only, plain both; route coder/claude: oa/m1, falling back to plain/m1."""
    for name, api in (("oa", "openai"), ("an", "anthropic"), ("plain", "both")):
        assert gw("source", "add", name, "--base-url", "http://127.0.0.1:9/v1", "--api", api).code == 0
    assert (
        gw("catalog", "set", "oa/m1", "--price", "input=1e-6", "--price", "output=2e-6", "--max-output", "900").code
        == 0
    )
    res = gw(
        "route", "set", "coder", "--model-name", "claude", "--provider", "oa", "--model", "m1", "--fallback", "plain/m1"
    )
    assert res.code == 0, res
    return gw


def write(tmp_path, body) -> str:
    path = tmp_path / "req.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_dropped_advisory_fields_are_dry_run_warnings(store, tmp_path):
    res = store(
        "route", "dry-run", "--agent", "coder", "--path", "/v1/messages", "--request", write(tmp_path, ADVISORY)
    )
    assert res.code == 0, res
    lines = res.out.splitlines()
    assert "translate    anthropic -> openai" in lines
    assert "warning      translation: top_k dropped: no counterpart" in lines
    assert "warning      translation: cache_control dropped: no counterpart" in lines
    doc = store(
        "route",
        "dry-run",
        "--agent",
        "coder",
        "--path",
        "/v1/messages",
        "--request",
        write(tmp_path, ADVISORY),
        "--json",
    ).json()
    assert doc["translate"] == "anthropic->openai" and doc["forwarded"] is True
    assert doc["warnings"] == [
        "translation: top_k dropped: no counterpart",
        "translation: cache_control dropped: no counterpart",
    ]
    assert [t["translate"] for t in doc["plan"]] == ["anthropic->openai", None]
    assert doc["plan"][0]["warnings"] == doc["warnings"] and doc["plan"][1]["warnings"] == []


def test_a_plan_target_that_cannot_take_the_request_is_skipped(store, tmp_path):
    req = write(tmp_path, UNTRANSLATABLE)
    res = store("route", "dry-run", "--agent", "coder", "--path", "/v1/messages", "--request", req)
    assert res.code == 0, res  # the fallback takes it untranslated
    assert "source       plain" in res.out.splitlines()
    table = res.out[res.out.index("plan\n") :].splitlines()
    assert "TRANSLATE" in table[1]
    primary = next(line for line in table if line.strip().startswith("primary"))
    assert "anthropic -> openai" in primary and "[untranslatable_content]" in primary and "container_upload" in primary
    doc = store("route", "dry-run", "--agent", "coder", "--path", "/v1/messages", "--request", req, "--json").json()
    assert doc["source"] == "plain" and doc["translate"] is None and doc["forwarded"] is True
    assert doc["plan"][0]["skipped"] is True and doc["plan"][0]["rule"] == "untranslatable_content"
    assert doc["plan"][1]["skipped"] is False


def test_an_untranslatable_request_is_a_rejection_in_the_dry_run(store, tmp_path):
    req = write(tmp_path, UNTRANSLATABLE)
    res = store("route", "dry-run", "--model", "oa/m1", "--path", "/v1/messages", "--request", req)
    assert res.code == 1
    assert "decision     REJECT 400" in res.out
    assert (
        "reason       [untranslatable_content] translating anthropic -> openai: block type 'container_upload'"
        in res.out
    )
    doc = store("route", "dry-run", "--model", "oa/m1", "--path", "/v1/messages", "--request", req, "--json").json()
    assert doc["forwarded"] is False and doc["status"] == 400 and doc["rule"] == "untranslatable_content"
    assert doc["error"]["code"] == "untranslatable_content" and doc["error"]["param"] == "messages.0.content.0"
    many = tmp_path / "many.jsonl"
    many.write_text(
        json.dumps({"path": "/v1/messages", "request": {**UNTRANSLATABLE, "model": "oa/m1"}})
        + "\n"
        + json.dumps({"path": "/v1/messages", "request": {**ADVISORY, "model": "oa/m1"}})
        + "\n"
    )
    res = store("route", "dry-run", "--requests", str(many), "--json")
    assert res.code == 1
    results = res.json()["results"]
    assert [r["rule"] for r in results] == ["untranslatable_content", None]
    assert results[1]["warnings"][0] == "translation: top_k dropped: no counterpart"


def test_openai_to_anthropic_in_the_dry_run(store, tmp_path):
    body = {"model": "an/m1", "messages": [{"role": "user", "content": "hi", "name": "bob"}], "n": 2}
    res = store("route", "dry-run", "--request", write(tmp_path, body), "--json")
    doc = res.json()
    assert res.code == 1 and doc["translate"] == "openai->anthropic" and doc["rule"] == "untranslatable_param"
    body.pop("n")
    doc = store("route", "dry-run", "--request", write(tmp_path, body), "--json").json()
    assert doc["forwarded"] and doc["upstream_url"] == "http://127.0.0.1:9/v1/messages"
    assert doc["warnings"] == ["translation: message name dropped: no counterpart"]


def test_with_translation_leaves_the_body_and_untranslated_decisions_alone(store, store_path):
    assert store("catalog", "set", "an/m2", "--price", "input=1e-6", "--max-output", "900").code == 0
    snap = load(store_path).snapshot
    body = copy.deepcopy(ADVISORY)
    d = decide(snap, "coder", "/v1/messages", body)
    assert with_translation(d, body) is not d and body == ADVISORY
    plain = decide(snap, None, "/v1/messages", {**ADVISORY, "model": "plain/m1"})
    assert with_translation(plain, ADVISORY) is plain
    chat = {"model": "an/m1", "messages": [{"role": "user", "content": "hi"}]}
    d = decide(snap, None, "/v1/chat/completions", chat)
    assert translate_for(d, chat).body["max_tokens"] == DEFAULT_MAX_TOKENS  # no entry for an/m1: the default
    chat["model"] = "an/m2"
    d = decide(snap, None, "/v1/chat/completions", chat)
    assert translate_for(d, chat).body["max_tokens"] == 900  # the entry's max output
