"""`gwctl model …`: references, globs, enable/disable, the organisation default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwctl.core.refs import match_refs, split_ref


@pytest.fixture
def seeded(gw, upstream):
    assert gw("source", "add", "local", "--base-url", upstream.url, "--auth-value", "sk-upstream-1234").code == 0
    upstream.configure(models=["llama-3.1-8b", "llama-3.1-70b", "qwen/qwen3", "qwen/qwen3-coder", "mistral-7b"])
    assert gw("source", "refresh", "local").code == 0
    return gw


def enabled(gw):
    return {m["ref"] for m in gw("model", "list", "--enabled", "--json").json()}


def test_disable_glob_and_enable_literal_with_slash(seeded):
    gw = seeded
    assert gw("model", "disable", "local/llama-*", "local/qwen/*").code == 0
    assert enabled(gw) == {"local/mistral-7b"}
    assert gw("model", "enable", "local/qwen/qwen3").code == 0
    assert enabled(gw) == {"local/mistral-7b", "local/qwen/qwen3"}
    disabled = {m["ref"] for m in gw("model", "list", "--disabled", "--json").json()}
    assert disabled == {"local/llama-3.1-8b", "local/llama-3.1-70b", "local/qwen/qwen3-coder"}


def test_unknown_model_lists_close_matches_and_changes_nothing(seeded, store_path):
    before = store_path.read_bytes()
    r = seeded("model", "enable", "local/llama-3.1-8", "local/mistral-7b")
    assert r.code == 1 and "local/llama-3.1-8b" in r.err and "did you mean" in r.err
    assert store_path.read_bytes() == before


def test_glob_matching_nothing_is_an_error(seeded):
    r = seeded("model", "disable", "local/gpt-*")
    assert r.code == 1 and "matches no model" in r.err


def test_unknown_source_in_ref(seeded):
    r = seeded("model", "enable", "nope/x")
    assert r.code == 1 and "no source named 'nope'" in r.err


def test_not_a_reference(seeded):
    r = seeded("model", "enable", "llama")
    assert r.code == 1 and "SOURCE/MODEL_ID" in r.err


def test_default_model(seeded):
    gw = seeded
    assert gw("model", "default", "--json").json() == {"default_model": None}
    assert gw("model", "default", "local/qwen/qwen3").code == 0
    assert gw("model", "default").out.strip() == "local/qwen/qwen3"
    rows = {m["ref"]: m["default"] for m in gw("model", "list", "--json").json()}
    assert rows["local/qwen/qwen3"] is True and sum(rows.values()) == 1
    gw("model", "disable", "local/mistral-7b")
    r = gw("model", "default", "local/mistral-7b")
    assert r.code == 1 and "disabled" in r.err
    assert gw("model", "default", "--unset").code == 0
    assert gw("model", "default", "--json").json() == {"default_model": None}


def test_list_filters_by_source(seeded, upstream):
    gw = seeded
    gw("source", "add", "other", "--base-url", upstream.url, "--auth-value", "sk-upstream-1234")
    upstream.configure(models=["x"])
    gw("source", "refresh", "other")
    assert [m["ref"] for m in gw("model", "list", "--source", "other", "--json").json()] == ["other/x"]
    r = gw("model", "list", "--source", "local")
    assert r.code == 0 and "other/x" not in r.out and "local/mistral-7b\tyes" in r.out


ident = st.text(alphabet=st.sampled_from("abcxyz019-_."), min_size=1, max_size=8)


@given(ident, st.lists(ident, min_size=1, max_size=4))
def test_split_ref_splits_at_first_slash(source, parts):
    model_id = "/".join(parts)
    assert split_ref(f"{source}/{model_id}") == (source, model_id)


@given(st.text(max_size=20).filter(lambda s: "/" not in s))
def test_split_ref_refuses_without_slash(text):
    with pytest.raises(ValueError):
        split_ref(text)


@given(ident, ident)
def test_literal_ref_matches_only_itself(a, b):
    refs = [f"{a}/{b}", f"{a}/{b}x", f"{a}x/{b}"]
    assert match_refs(f"{a}/{b}", refs) == [f"{a}/{b}"]
