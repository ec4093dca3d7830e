"""The store file: location, comments kept, atomic 0600 writes, locking, bad files never overwritten."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest


def test_missing_store_is_empty_and_first_write_creates_it_0600(gw, store_path):
    assert not store_path.exists()
    r = gw("source", "list", "--json")
    assert r.code == 0 and r.json() == []
    assert not store_path.exists()  # reads never create it
    assert gw("source", "add", "a", "--base-url", "http://127.0.0.1:1/v1").code == 0
    assert store_path.exists()
    assert stat.S_IMODE(os.stat(store_path).st_mode) == 0o600


def test_store_option_beats_env(gw, tmp_path, store_path):
    other = tmp_path / "other.toml"
    assert gw("--store", str(other), "source", "add", "a", "--base-url", "http://h/v1").code == 0
    assert other.exists() and not store_path.exists()


def test_default_location_is_platformdirs_config(monkeypatch, tmp_path):
    monkeypatch.delenv("GWCTL_STORE")
    from gwctl.store.paths import store_path

    p = store_path(None)
    assert p.name == "gwctl.toml" and "gwctl" in str(p.parent)


def test_comments_and_order_survive_edits(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        textwrap.dedent("""\
        # my gateway, reviewed by the platform team
        schema = 1

        [sources.zeta]  # the old one
        base_url = "https://zeta.example/v1"  # keep this comment
        passthrough = false

        [sources.alpha]
        base_url = "https://alpha.example/v1"
        """)
    )
    assert gw("source", "edit", "zeta", "--base-url", "https://zeta2.example/v1").code == 0
    assert gw("catalog", "set", "alpha/m", "--price", "input=3e-6").code == 0
    text = store_path.read_text()
    assert "# my gateway, reviewed by the platform team" in text
    assert "# the old one" in text
    assert 'base_url = "https://zeta2.example/v1"  # keep this comment' in text
    assert text.index("[sources.zeta]") < text.index("[sources.alpha]")
    assert 'input = "3e-6"' in text


def test_a_new_table_goes_into_a_section_split_by_another(gw, store_path):
    """[sources.x] tables apart in the file read back through tomlkit's proxy, which has no add()."""
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        'schema = 1\n\n[sources.a]\nbase_url = "https://a.example/v1"\n\n[settings]\n\n'
        '[sources.b]\nbase_url = "https://b.example/v1"\n\n[catalog."a/m"]\ncontext_size = 8\n\n'
        '[keys]\n\n[catalog."b/m"]\ncontext_size = 8\n'
    )
    assert gw("source", "add", "c", "--base-url", "https://c.example/v1").code == 0
    assert gw("catalog", "set", "c/m", "--context-size", "16").code == 0
    text = store_path.read_text()
    assert "[sources.c]" in text and '[catalog."c/m"]' in text
    assert gw("validate").code == 0


def test_a_source_whose_own_tables_are_apart_in_the_file_can_be_edited(gw, store_path):
    """[sources.a.failover] (or .models) written below another source: tomlkit reads [sources.a] back as a
    proxy without add(); editing the source and setting its models keep every table and its comment."""
    import tomlkit

    from gwctl.store import document

    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        'schema = 1\n\n[sources.a]\nbase_url = "https://a.example/v1"\n\n[sources.b]\n'
        'base_url = "https://b.example/v1"\n\n[sources.a.failover]\n# ours\nmax_attempts = 5\n'
    )
    assert gw("source", "edit", "a", "--read-timeout", "5").code == 0
    data = tomlkit.parse(store_path.read_text())
    assert data["sources"]["a"]["read_timeout"] == 5.0 and data["sources"]["a"]["failover"]["max_attempts"] == 5
    assert "# ours" in store_path.read_text()
    doc = tomlkit.parse(store_path.read_text())
    document.set_models(doc, "a", {"m1": True, "m2": False})
    again = tomlkit.parse(tomlkit.dumps(doc))["sources"]["a"]
    assert dict(again["models"]) == {"m1": True, "m2": False} and again["failover"]["max_attempts"] == 5
    assert gw("validate").code == 0


@pytest.mark.parametrize(
    "content, line, words",
    [
        ('schema = 1\n[sources.a]\nbase_url = "http://h/v1"\npassthrough = maybe\n', 4, "not valid TOML"),
        ("schema = 1\n\n[sources.a]\nbase_url = 42\n", 4, "base_url must be a string"),
        ('[sources.a]\nbase_url = "http://h"\n\n[catalog."a/m".prices]\ninput = "-1"\n', 5, "non-negative"),
        ('[[routes]]\nagent = "t"\nmodel_name = "m"\nprovider = "a"\npassthrough = "yes"\n', 5, "true or false"),
        ('[sources.a]\nbase_url = "http://h"\nbogus = 1\n', 3, "not a known setting"),
    ],
)
def test_broken_store_reported_with_line_and_never_overwritten(gw, store_path, content, line, words):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(content)
    before = store_path.read_bytes()
    r = gw("source", "add", "b", "--base-url", "http://h/v1")
    assert r.code == 1
    assert f"{store_path}:{line}" in r.err and words in r.err
    assert "Traceback" not in r.err
    assert store_path.read_bytes() == before
    v = gw("validate")
    assert v.code == 1 and f":{line}" in v.err


def test_atomic_write_leaves_no_temp_files(gw, store_path):
    for i in range(5):
        assert gw("source", "add", f"s{i}", "--base-url", "http://h/v1").code == 0
    leftovers = [p.name for p in store_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_twenty_concurrent_writers_lose_no_update(tmp_path):
    store = tmp_path / "concurrent.toml"
    env = {**os.environ, "GWCTL_STORE": str(store)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gwctl", "source", "add", f"src{i}", "--base-url", f"http://h{i}.example/v1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(20)
    ]
    for p in procs:
        p.wait(timeout=120)
        assert p.returncode == 0, p.stderr.read().decode()
    r = subprocess.run(
        [sys.executable, "-m", "gwctl", "source", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    import json

    names = {s["name"] for s in json.loads(r.stdout)}
    assert names == {f"src{i}" for i in range(20)}


def test_unreadable_store_is_a_clear_error(gw, store_path):
    if os.geteuid() == 0:
        # root reads anything; a directory in its place is the unreadable case here
        store_path.mkdir(parents=True)
        r = gw("source", "list")
        assert r.code == 1 and "is a directory" in r.err
    else:  # pragma: no cover
        store_path.parent.mkdir(parents=True)
        store_path.write_text("schema = 1\n")
        store_path.chmod(0)
        r = gw("source", "list")
        assert r.code == 1 and "permission denied" in r.err


def test_validate_json_reports_problems(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        '[settings]\nfallback_source = "nope"\n\n[catalog."ghost/m".prices]\ninput = "3e-6"\noutput = "1e-5"\n'
    )
    r = gw("validate", "--json")
    assert r.code == 1
    doc = r.json()
    assert doc["ok"] is False and doc["errors"] == 1
    wheres = {p["where"]: p["level"] for p in doc["problems"]}
    assert wheres["settings.fallback_source"] == "error"
    assert wheres['catalog."ghost/m"'] == "warning"


def test_valid_store_validates(gw):
    assert gw("source", "add", "a", "--base-url", "http://h/v1", "--auth-value", "k").code == 0
    r = gw("validate", "--json")
    assert r.code == 0 and r.json()["ok"] is True


@pytest.mark.parametrize("agent", ["tri age", "triage/", "/x", "a//b", "émile"])
def test_validate_refuses_an_agent_path_the_proxy_could_never_match(gw, store_path, agent):
    # route set refuses these; a hand-edited store must not get them past validate either
    assert gw("source", "add", "a", "--base-url", "http://h/v1", "--auth-value", "k").code == 0
    with store_path.open("a") as f:
        f.write(f'\n[[routes]]\nagent = "{agent}"\nmodel_name = "m"\nprovider = "a"\n')
    r = gw("validate", "--json")
    assert r.code == 1
    assert any(p["where"] == "routes[0].agent" and p["level"] == "error" for p in r.json()["problems"])
