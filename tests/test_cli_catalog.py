"""`gwctl catalog …` through the CLI: set/show/list/remove, import/export, price, lint."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from gwctl.core.config import CAPABILITIES, PRICE_KINDS


def test_set_show_and_toml_keeps_what_was_written(gw, store_path):
    r = gw(
        "catalog",
        "set",
        "local/llama",
        "--price",
        "input=3e-6",
        "--price",
        "output=0.000015",
        "--context-size",
        "8192",
        "--max-output",
        "1024",
        "--capability",
        "vision=false",
        "--capability",
        "tools=true",
        "--supported-params",
        "temperature,top_p",
        "--display-name",
        "Llama",
    )
    assert r.code == 0
    assert "no source named 'local'" in r.err  # CI may write prices before the source exists
    text = store_path.read_text()
    assert 'input = "3e-6"' in text and 'output = "0.000015"' in text
    doc = gw("catalog", "show", "local/llama", "--json").json()
    assert doc["prices"] == {"input": "3e-6", "output": "0.000015"}
    assert doc["capabilities"] == {"vision": False, "tools": True}
    assert doc["context_size"] == 8192 and doc["max_output"] == 1024
    assert doc["supported_params"] == ["temperature", "top_p"]
    # unset removes a capability and a price
    assert gw("catalog", "set", "local/llama", "--capability", "tools=unset", "--price", "output=unset").code == 0
    doc = gw("catalog", "show", "local/llama", "--json").json()
    assert doc["capabilities"] == {"vision": False} and doc["prices"] == {"input": "3e-6"}


def test_model_id_with_slash(gw):
    assert gw("catalog", "set", "local/qwen/qwen3", "--price", "input=1e-7").code == 0
    doc = gw("catalog", "show", "local/qwen/qwen3", "--json").json()
    assert doc["source"] == "local" and doc["model_id"] == "qwen/qwen3"


BAD = [
    (["catalog", "set", "nolash", "--price", "input=1"], "SOURCE/MODEL_ID"),
    (["catalog", "set", "a/m", "--price", "input=-1e-6"], "input"),
    (["catalog", "set", "a/m", "--price", "input=nan"], "input"),
    (["catalog", "set", "a/m", "--price", "input=inf"], "input"),
    (["catalog", "set", "a/m", "--price", "input=abc"], "input"),
    (["catalog", "set", "a/m", "--price", "inptu=1e-6"], "input, output"),
    (["catalog", "set", "a/m", "--price", "input"], "KIND=USD"),
    (["catalog", "set", "a/m", "--capability", "vison=false"], "streaming, vision"),
    (["catalog", "set", "a/m", "--capability", "vision=maybe"], "true, false or unset"),
    (["catalog", "set", "a/m", "--context-size", "0"], "--context-size"),
    (["catalog", "set", "a/m", "--max-output", "-5"], "--max-output"),
    (["catalog", "show", "a/none"], "no catalog entry"),
    (["catalog", "remove", "a/none", "--yes"], "no catalog entry"),
    (["catalog", "price", "a/m", "--input-tokens", "-1"], "negative"),
]


@pytest.mark.parametrize("args, words", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_refused_values_leave_store_unchanged(gw, store_path, args, words):
    assert gw("catalog", "set", "a/m", "--price", "input=1e-6").code == 0
    before = store_path.read_bytes()
    r = gw(*args)
    assert r.code != 0 and words in r.err, r.err
    assert "Traceback" not in r.err
    assert store_path.read_bytes() == before


def test_list_and_remove(gw):
    gw("catalog", "set", "a/m1", "--price", "input=1e-6")
    gw("catalog", "set", "b/m2", "--price", "input=2e-6")
    assert [e["ref"] for e in gw("catalog", "list", "--json").json()] == ["a/m1", "b/m2"]
    assert [e["ref"] for e in gw("catalog", "list", "--source", "b", "--json").json()] == ["b/m2"]
    assert gw("catalog", "remove", "a/m1").code == 1  # no terminal, no --yes
    assert gw("catalog", "remove", "a/m1", "--yes").code == 0
    assert [e["ref"] for e in gw("catalog", "list", "--json").json()] == ["b/m2"]


def test_price_pinned_example_from_usage_file(gw, tmp_path):
    gw(
        "catalog",
        "set",
        "local/m",
        "--price",
        "input=3e-6",
        "--price",
        "output=1.5e-5",
        "--price",
        "cached_input=1.5e-6",
    )
    usage = tmp_path / "u.json"
    usage.write_text(
        json.dumps(
            {
                "prompt_tokens": 1000,
                "completion_tokens": 50,
                "total_tokens": 1050,
                "prompt_tokens_details": {"cached_tokens": 200},
            }
        )
    )
    r = gw("catalog", "price", "local/m", "--usage", str(usage), "--json")
    assert r.code == 0
    doc = r.json()
    assert doc["total"] == "0.00345" and doc["usage_shape"] == "openai_chat"
    assert Decimal(doc["total"]) == sum(Decimal(i["amount"]) for i in doc["items"])
    # same with options
    r = gw("catalog", "price", "local/m", "--input-tokens", "800", "--cached-tokens", "200", "--output-tokens", "50")
    assert r.out.strip().endswith("total\t0.00345")


def test_price_anthropic_usage_from_stdin(gw):
    gw(
        "catalog",
        "set",
        "a/claude",
        "--price",
        "input=3e-6",
        "--price",
        "output=1.5e-5",
        "--price",
        "cache_read=3e-7",
        "--price",
        "cache_write_5m=3.75e-6",
        "--price",
        "web_search=0.01",
    )
    usage = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
        "server_tool_use": {"web_search_requests": 2},
    }
    r = gw("catalog", "price", "a/claude", "--usage", "-", "--json", input=json.dumps(usage))
    doc = r.json()
    assert doc["usage_shape"] == "anthropic"
    # 100*3e-6 + 10*1.5e-5 + 1000*3e-7 + 200*3.75e-6 + 2*0.01
    assert Decimal(doc["total"]) == Decimal("0.0003") + Decimal("0.00015") + Decimal("0.0003") + Decimal(
        "0.00075"
    ) + Decimal("0.02")


def test_price_without_entry_is_unbilled_not_zero(gw):
    r = gw("catalog", "price", "local/gpt-4o", "--input-tokens", "1000", "--json")
    assert r.code == 0
    doc = r.json()
    assert doc["total"] is None and doc["billed"] is False and "no catalog entry" in doc["unbilled_reason"]
    assert gw("catalog", "price", "local/gpt-4o", "--input-tokens", "1").out.startswith("unbilled")


def test_price_bad_usage_file(gw, tmp_path):
    f = tmp_path / "u.json"
    f.write_text('{"foo": 1}')
    r = gw("catalog", "price", "a/m", "--usage", str(f))
    assert r.code == 1 and "error:" in r.err


def test_lint_warnings_do_not_fail(gw):
    r = gw("catalog", "set", "a/m", "--price", "input=3", "--price", "cache_read=5")
    assert r.code == 0 and "per-million" in r.err and "output" in r.err
    v = gw("validate", "--json").json()
    assert v["ok"] is True and any("per-million" in p["message"] for p in v["problems"])


def test_import_dry_run_diff_then_write(gw, tmp_path, store_path):
    gw("catalog", "set", "a/m", "--price", "input=1e-6", "--max-output", "100")
    f = tmp_path / "prices.toml"
    f.write_text(
        'schema = 1\n[catalog."a/m"]\nmax_output = 200\n[catalog."a/m".prices]\ninput = "1e-6"\noutput = "2e-6"\n'
        '[catalog."b/n".prices]\ninput = "5e-7"\n'
    )
    before = store_path.read_bytes()
    r = gw("catalog", "import", str(f), "--dry-run", "--json")
    assert r.code == 0 and store_path.read_bytes() == before
    diff = r.json()
    assert diff["added"] == ["b/n"]
    fields = {c["field"]: (c["old"], c["new"]) for c in diff["changed"][0]["fields"]}
    assert fields == {"max_output": (100, 200), "prices.output": (None, "2e-6")}
    r = gw("catalog", "import", str(f))
    assert r.code == 0 and "+ b/n" in r.out and "max_output: 100 -> 200" in r.out
    assert gw("catalog", "show", "b/n", "--json").json()["prices"] == {"input": "5e-7"}
    again = gw("catalog", "import", str(f), "--json").json()
    assert again["added"] == [] and again["changed"] == [] and set(again["unchanged"]) == {"a/m", "b/n"}


def test_import_validates_everything_before_writing(gw, tmp_path, store_path):
    gw("catalog", "set", "a/m", "--price", "input=1e-6")
    before = store_path.read_bytes()
    f = tmp_path / "bad.json"
    f.write_text(
        json.dumps({"catalog": {"a/new": {"prices": {"input": "1e-6"}}, "a/bad": {"prices": {"input": "-1"}}}})
    )
    r = gw("catalog", "import", str(f))
    assert r.code == 1 and "a/bad" in r.err and "nothing was imported" in r.err
    assert store_path.read_bytes() == before


def test_schema_is_json_schema(gw):
    doc = gw("catalog", "schema").json()
    assert doc["$schema"].startswith("https://json-schema.org/")
    props = doc["properties"]["catalog"]["additionalProperties"]["properties"]
    assert set(props["prices"]["properties"]) == set(PRICE_KINDS)
    assert set(props["capabilities"]["properties"]) == set(CAPABILITIES)


price_text = st.one_of(
    st.decimals(min_value=0, max_value=Decimal("0.01"), allow_nan=False, allow_infinity=False, places=10).map(str),
    st.builds(lambda m, e: f"{m}e-{e}", st.integers(1, 999), st.integers(1, 9)),
)
entry = st.fixed_dictionaries(
    {},
    optional={
        "display_name": st.text(alphabet="abc XYZ-", min_size=1, max_size=10),
        "context_size": st.integers(1, 2_000_000),
        "max_output": st.integers(1, 100_000),
        "supported_params": st.lists(st.sampled_from(["temperature", "top_p", "seed", "stop"]), unique=True),
        "prices": st.dictionaries(st.sampled_from(PRICE_KINDS), price_text, min_size=1),
        "capabilities": st.dictionaries(st.sampled_from(CAPABILITIES), st.booleans(), min_size=1),
    },
)
refs = st.builds(
    lambda s, m: f"{s}/{m}",
    st.sampled_from(["local", "gw", "x-1"]),
    st.text(alphabet="abcdefgh-./0123", min_size=1, max_size=12).filter(lambda m: not m.startswith("/")),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(refs, entry, max_size=5), st.sampled_from(["toml", "json"]))
def test_export_import_round_trips_exactly(tmp_path_factory, catalog, fmt):
    import os

    d = tmp_path_factory.mktemp("rt")
    src = d / "src.json"
    src.write_text(json.dumps({"schema": 1, "catalog": catalog}))
    os.environ["GWCTL_STORE"] = str(d / "a.toml")
    assert run_cli("catalog", "import", str(src)).code == 0
    exported = run_cli("catalog", "export", "--format", fmt).out
    f = d / f"export.{fmt}"
    f.write_text(exported)
    os.environ["GWCTL_STORE"] = str(d / "b.toml")
    assert run_cli("catalog", "import", str(f)).code == 0
    again = run_cli("catalog", "export", "--format", fmt).out
    assert again == exported
    got = json.loads(run_cli("catalog", "export", "--format", "json").out)["catalog"]
    want = {ref: {k: v for k, v in e.items()} for ref, e in catalog.items()}
    for ref in want:
        w = dict(want[ref])
        if "supported_params" in w:
            w["supported_params"] = list(w["supported_params"])
        assert got[ref] == w
