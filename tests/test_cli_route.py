"""`gwctl route …` and `gwctl key …` through the CLI."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def store(gw):
    assert (
        gw(
            "source",
            "add",
            "custom",
            "--base-url",
            "https://customer-litellm.example/v1",
            "--auth-value",
            "sk-custom-AAAA",
            "--passthrough",
        ).code
        == 0
    )
    assert gw("source", "add", "local", "--base-url", "http://127.0.0.1:8000/v1", "--auth-env", "VLLM_KEY").code == 0
    assert (
        gw(
            "catalog",
            "set",
            "local/llama",
            "--max-output",
            "100",
            "--price",
            "input=1e-6",
            "--price",
            "output=2e-6",
            "--capability",
            "vision=false",
        ).code
        == 0
    )
    return gw


def test_set_list_update_remove(store):
    gw = store
    assert gw("route", "set", "triage", "--model-name", "customer-alias", "--provider", "custom").code == 0
    assert (
        gw(
            "route",
            "set",
            "triage/summarizer",
            "--model-name",
            "child",
            "--provider",
            "local",
            "--model",
            "llama",
            "--no-passthrough",
        ).code
        == 0
    )
    routes = gw("route", "list", "--json").json()
    assert [(r["agent"], r["scope"], r["effective_passthrough"]) for r in routes] == [
        ("triage", "root", True),
        ("triage/summarizer", "subagent", False),
    ]
    # set again = update in place, not a duplicate
    assert (
        gw(
            "route", "set", "triage/summarizer", "--model-name", "child", "--provider", "local", "--inherit-passthrough"
        ).code
        == 0
    )
    routes = gw("route", "list", "--json").json()
    assert len(routes) == 2 and routes[1]["passthrough"] is None and routes[1]["model"] == "llama"
    assert gw("route", "remove", "triage", "--model-name", "customer-alias").code == 1  # needs --yes without a terminal
    assert gw("route", "remove", "triage", "--model-name", "customer-alias", "--yes").code == 0
    assert [r["agent"] for r in gw("route", "list", "--json").json()] == ["triage/summarizer"]


def test_two_root_agents_cannot_claim_one_model_name(store, store_path):
    gw = store
    gw("route", "set", "triage", "--model-name", "shared", "--provider", "local")
    before = store_path.read_bytes()
    r = gw("route", "set", "billing", "--model-name", "shared", "--provider", "custom")
    assert r.code == 1 and "root agent triage already routes model name 'shared'" in r.err
    assert store_path.read_bytes() == before
    # subagents are scoped: the same name is fine for them
    assert gw("route", "set", "billing/sub", "--model-name", "shared", "--provider", "custom").code == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["route", "set", "triage", "--model-name", "m", "--provider", "nope"], "no source named 'nope'"),
        (["route", "set", "bad agent", "--model-name", "m", "--provider", "local"], "not an agent path"),
        (["route", "set", "triage//x", "--model-name", "m", "--provider", "local"], "not an agent path"),
        (["route", "set", "triage", "--model-name", "m", "--provider", "local", "--base-url", "ftp://x"], "http(s)"),
        (["route", "remove", "triage", "--model-name", "ghost", "--yes"], "no route"),
        (["route", "fallback", "nope"], "no source named"),
        (["route", "dry-run"], "--model is required"),
    ],
)
def test_route_bad_input(store, store_path, args, words):
    before = store_path.read_bytes()
    r = store(*args)
    assert r.code == 1 and words in r.err, r.err
    assert store_path.read_bytes() == before


def test_dry_run_json_and_exit_codes(store, tmp_path):
    gw = store
    gw("route", "set", "triage/summarizer", "--model-name", "child", "--provider", "local", "--model", "llama")
    ok = gw("route", "dry-run", "--agent", "triage/summarizer", "--model", "child", "--json")
    assert ok.code == 0
    d = ok.json()
    assert d["kind"] == "managed" and d["upstream_model"] == "llama" and d["credentials"]["env"] == "VLLM_KEY"
    assert d["upstream_url"] == "http://127.0.0.1:8000/v1/chat/completions"
    assert {c["rule"] for c in d["checks"]} == {"max_output", "capability_vision"}
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 500}))
    bad = gw("route", "dry-run", "--agent", "triage/summarizer", "--model", "child", "--request", str(req), "--json")
    assert bad.code == 1 and bad.json()["rule"] == "max_output"
    assert bad.json()["error"]["code"] == "max_output"
    nf = gw("route", "dry-run", "--model", "child")  # the root agent has no such route
    assert nf.code == 1 and "model_not_found" in nf.out
    # passthrough: credentials masked, checks skipped
    pt = gw("route", "dry-run", "--model", "custom/anything", "--json").json()
    assert pt["kind"] == "passthrough" and pt["checks_skipped"] and pt["credentials"]["value"].endswith("AAAA")
    assert "sk-custom" not in json.dumps(pt)
    assert (
        gw("route", "dry-run", "--model", "custom/anything", "--json", "--reveal").json()["credentials"]["value"]
        == "sk-custom-AAAA"
    )
    # body from stdin
    r = gw(
        "route",
        "dry-run",
        "--request",
        "-",
        "--path",
        "/v1/messages",
        "--json",
        input=json.dumps(
            {
                "model": "local/llama",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
                        ],
                    }
                ],
            }
        ),
    )
    assert r.code == 1 and r.json()["rule"] == "capability_vision"


def test_dry_run_requests_jsonl_for_ci(store, tmp_path):
    gw = store
    f = tmp_path / "deploy.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"model": "local/llama", "messages": [], "max_tokens": 10}),
                json.dumps(
                    {
                        "agent": "triage",
                        "path": "/v1/messages",
                        "request": {"model": "custom/x", "max_tokens": 5, "messages": []},
                    }
                ),
                "# comments and blank lines are skipped",
                "",
                json.dumps({"model": "local/llama", "messages": [], "max_tokens": 1000}),
            ]
        )
    )
    r = gw("route", "dry-run", "--requests", str(f), "--json")
    assert r.code == 1
    doc = r.json()
    assert [x["kind"] for x in doc["results"]] == ["managed", "passthrough", "rejected"]
    assert [x["line"] for x in doc["results"]] == [1, 2, 5]
    assert doc["totals"]["rejected"] == 1 and doc["totals"]["forwarded"] == 2
    f.write_text(json.dumps({"model": "local/llama", "messages": [], "max_tokens": 10}) + "\n")
    ok = gw("route", "dry-run", "--requests", str(f))
    assert ok.code == 0 and "managed" in ok.out and "1 requests: 1 forwarded, 0 rejected" in ok.err


def test_fallback_setting(store):
    gw = store
    assert gw("route", "fallback", "--json").json() == {"fallback_source": None}
    assert gw("route", "fallback", "local").code == 0
    d = gw("route", "dry-run", "--model", "gpt-4o", "--json").json()
    assert d["matched_by"] == "fallback" and d["source"] == "local" and d["upstream_model"] == "gpt-4o"
    assert d["estimate"]["total"] is None  # unbilled, not zero
    assert gw("route", "fallback", "--unset").code == 0
    assert gw("route", "dry-run", "--model", "gpt-4o").code == 1


def test_keys(gw, store_path):
    r = gw("key", "create", "ci-bot", "--json")
    assert r.code == 0
    doc = r.json()
    key = doc["key"]
    assert doc["name"] == "ci-bot" and key.startswith("gwk_") and len(key) >= 4 + 43
    text = store_path.read_text()
    assert key not in text and "sha256:" in text
    listed = gw("key", "list", "--json").json()
    assert listed == [
        {"name": "ci-bot", "prefix": key[:8], "created": doc["created"], "agents": [], "models": [], "expires": None}
    ]
    assert key not in gw("key", "list").out
    assert gw("key", "create", "ci-bot").code == 1  # duplicate
    assert gw("key", "revoke", "ci-bot").code == 1  # needs --yes
    assert gw("key", "revoke", "ci-bot", "--yes").code == 0
    assert gw("key", "list", "--json").json() == []
    assert gw("key", "revoke", "ci-bot", "--yes").code == 1


def test_key_verification_is_by_hash():
    from gwctl.core import keys
    from gwctl.core.config import GatewayKey

    k = keys.generate()
    stored = {"a": GatewayKey(name="a", hash=keys.digest(k), prefix=keys.shown_prefix(k))}
    assert keys.verify(stored, k) == "a"
    assert keys.verify(stored, k + "x") is None and keys.verify(stored, None) is None
    assert keys.from_headers("Bearer " + k, None) == k and keys.from_headers(None, k) == k
    assert keys.from_headers("Basic abc", None) is None


def test_the_proxy_key_memo_verifies_as_verify_and_forgets_on_reload():
    from types import MappingProxyType as MP

    from gwctl.core import keys
    from gwctl.core.config import GatewayKey, Snapshot

    def snapshot(**named):
        return Snapshot(
            keys=MP({n: GatewayKey(name=n, hash=keys.digest(k), prefix=keys.shown_prefix(k)) for n, k in named.items()})
        )

    a, b = keys.generate(), keys.generate()
    first = snapshot(a=a, b=b)
    memo = keys.VerifiedKeys()
    for _ in range(2):  # the second round answers from memory
        assert memo.verify(first, a) == "a" and memo.verify(first, b) == "b"
        assert (
            memo.verify(first, a + "x") is None and memo.verify(first, "") is None and memo.verify(first, None) is None
        )
    assert sorted(memo._known) == sorted([a, b])  # only keys that matched are remembered
    revoked = snapshot(b=b)  # a reload that revoked a
    assert memo.verify(revoked, a) is None and memo.verify(revoked, b) == "b"
    assert list(memo._known) == [b]
