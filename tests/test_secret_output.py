"""No output holds a secret: user info in base URLs, and wrong-typed secret fields.

The CLI refuses to store a base URL with user info (``user:secret@``), but a
store written by hand may hold one; every command that prints a URL shows it
through redact_url (``***@``), unless ``--reveal`` asks for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import invoke

SECRET = "s3cret"
LEAKY_URL = "http://user:s3cret@127.0.0.1:9/v1?api-version=2024-10-21&api_key=s3cret"  # both kinds of URL secret

STORE = textwrap.dedent(f'''\
    schema = 1

    [sources.leaky]
    base_url = "{LEAKY_URL}"
    auth_value = "sk-upstream-1234"

    [sources.leaky.models]
    m1 = true

    [sources.clean]
    base_url = "http://127.0.0.1:9/v1"
    auth_value = "sk-clean-5678"

    [catalog."leaky/m1"]
    max_output = 100

    [catalog."leaky/m1".prices]
    input = "1e-6"
    output = "2e-6"

    [[routes]]
    agent = "triage"
    model_name = "alias"
    provider = "leaky"

    [[routes]]
    agent = "triage"
    model_name = "over"
    provider = "clean"
    base_url = "{LEAKY_URL}"
    passthrough = true
    ''')


@pytest.fixture
def leaky(gw, store_path):
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.write_text(STORE)
    store_path.chmod(0o600)
    return gw


def _clean(r) -> None:
    assert SECRET not in r.out, r.out
    assert SECRET not in r.err, r.err
    assert "Traceback" not in r.err


@pytest.fixture(params=[False, True], ids=["pipe", "tty"])
def tty(request):
    """Human output both ways: tab-separated lines (a pipe) and rich tables (a terminal)."""
    return request.param


READS = [
    ("source", "list"),
    ("source", "list", "--json"),
    ("source", "show", "leaky"),
    ("source", "show", "leaky", "--json"),
    ("source", "test", "leaky"),
    ("source", "test", "leaky", "--json"),
    ("source", "refresh", "leaky"),
    ("source", "refresh", "leaky", "--json"),
    ("source", "refresh", "--all"),
    ("source", "refresh", "--all", "--json"),
    ("route", "list"),
    ("route", "list", "--json"),
    ("route", "dry-run", "--model", "alias"),
    ("route", "dry-run", "--model", "alias", "--json"),
    ("route", "dry-run", "--model", "over"),
    ("route", "dry-run", "--model", "over", "--json"),
    ("route", "dry-run", "--model", "leaky/m1"),
    ("route", "dry-run", "--model", "leaky/m1", "--json"),
    ("route", "dry-run", "--agent", "triage", "--model", "over", "--path", "v1/chat"),
    ("catalog", "list"),
    ("catalog", "list", "--json"),
    ("catalog", "show", "leaky/m1"),
    ("catalog", "show", "leaky/m1", "--json"),
    ("catalog", "export"),
    ("catalog", "export", "--format", "json"),
    ("model", "list"),
    ("model", "list", "--json"),
    ("validate",),
    ("validate", "--json"),
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_no_command_prints_the_user_info_of_a_base_url(leaky, tty, args):
    r = invoke(list(args), force_tables=tty)
    _clean(r)
    assert r.code in (0, 1, 3), (r.code, r.err)


def test_masked_url_is_still_shown(leaky):
    listed = leaky("source", "list", "--json").json()
    shown = {s["name"]: s["base_url"] for s in listed}["leaky"]
    assert shown == "http://***@127.0.0.1:9/v1?api-version=2024-10-21&api_key=***"  # what is not secret stays
    assert "http://***@127.0.0.1:9/v1" in leaky("source", "show", "leaky").out
    assert leaky("route", "list", "--json").json()[1]["base_url"] == shown
    d = leaky("route", "dry-run", "--model", "over", "--json").json()
    assert d["upstream_url"] == "http://***@127.0.0.1:9/v1/chat/completions?api-version=2024-10-21&api_key=***"
    assert d["route"]["base_url"] == shown
    v = leaky("validate", "--json")
    assert v.code == 1
    wheres = {p["where"] for p in v.json()["problems"] if p["level"] == "error"}
    assert wheres == {"sources.leaky.base_url", "routes[1].base_url"}


def test_reveal_shows_the_whole_url(leaky):
    assert LEAKY_URL in leaky("source", "show", "leaky", "--reveal").out
    assert leaky("source", "show", "leaky", "--json", "--reveal").json()["base_url"] == LEAKY_URL
    d = leaky("route", "dry-run", "--model", "over", "--json", "--reveal").json()
    assert d["route"]["base_url"] == LEAKY_URL


def test_test_and_refresh_mask_the_url_in_their_messages(gw, store_path, upstream):
    # a reachable upstream answers, so the messages that quote the URL are printed
    url = upstream.url.replace("http://", f"http://user:{SECRET}@")
    store_path.parent.mkdir(parents=True)
    store_path.write_text(f'[sources.up]\nbase_url = "{url}"\nauth_value = "wrong-key-0000"\n')
    store_path.chmod(0o600)
    for args in (
        ("source", "test", "up"),
        ("source", "test", "up", "--json"),
        ("source", "refresh", "up"),
        ("source", "refresh", "up", "--json"),
        ("source", "refresh", "--all"),
    ):
        r = gw(*args)
        _clean(r)
        assert r.code == 1
    assert "***@" in gw("source", "test", "up", "--json").json()["url"]
    upstream.configure(fail_status=404)
    for args in (("source", "test", "up"), ("source", "test", "up", "--json"), ("source", "refresh", "up", "--json")):
        r = gw(*args)
        _clean(r)
        assert "***@" in r.out + r.err


def test_edit_of_a_source_with_user_info_masks_the_refusal(leaky, store_path):
    before = store_path.read_text()
    r = leaky("source", "edit", "leaky", "--passthrough")
    _clean(r)
    assert r.code == 1 and "credentials" in r.err and "***@" in r.err
    assert store_path.read_text() == before
    fixed = leaky("source", "edit", "leaky", "--base-url", "http://127.0.0.1:9/v1")
    _clean(fixed)
    assert fixed.code == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@127.0.0.1:9/v1",
        "http://user:s3cret@bad host/v1",
        "http://user:s3cret@127.0.0.1:99999/v1",
        "http://user:s3cret@127.0.0.1:9/v1#frag",
        "ftp://user:s3cret@127.0.0.1/v1",
    ],
)
def test_typed_urls_with_user_info_are_refused_masked(gw, url):
    r = gw("source", "add", "x", "--base-url", url)
    _clean(r)
    assert r.code == 1
    assert gw("source", "add", "ok", "--base-url", "http://127.0.0.1:9/v1").code == 0
    r = gw("route", "set", "triage", "--model-name", "m", "--provider", "ok", "--base-url", url)
    _clean(r)
    assert r.code == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@bad host/v1",
        "http://user:s3cret@127.0.0.1:99999/v1",
        "http://us\\ter:s3cret@127.0.0.1/v1",
    ],
)
def test_validate_masks_every_kind_of_bad_url(gw, store_path, url):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(f'[sources.a]\nbase_url = "{url}"\n')
    store_path.chmod(0o600)
    for args in (("validate",), ("validate", "--json"), ("source", "list"), ("source", "show", "a")):
        _clean(gw(*args))


# --- 3. the proxy refuses what validate calls an error ----------------------


def test_proxy_refuses_a_store_that_validate_rejects(leaky, monkeypatch):
    import gwctl.proxy.server as server

    served = []
    monkeypatch.setattr(server, "run", lambda *a, **k: served.append(a) or 0)  # never block the test on a real server
    leaky("key", "create", "k")
    r = leaky("proxy", "--port", "0")
    assert not served
    _clean(r)
    assert r.code == 1
    assert "sources.leaky.base_url" in r.err and "routes[1].base_url" in r.err
    assert "credentials" in r.err and "gwctl validate" in r.err
    assert "ready on" not in r.err


def test_proxy_refuses_as_a_subprocess_quickly(leaky, store_path, tmp_path):
    leaky("key", "create", "k")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "gwctl",
            "--store",
            str(store_path),
            "proxy",
            "--port",
            "0",
            "--activity",
            str(tmp_path / "a.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert SECRET not in p.stdout + p.stderr
    assert "gwctl validate" in p.stderr and "Traceback" not in p.stderr


def test_proxy_warnings_do_not_stop_it(gw, store_path, monkeypatch):
    import gwctl.proxy.server as server

    served = []
    monkeypatch.setattr(server, "run", lambda *a, **k: served.append(a) or 0)
    # a source without a credential and a catalog entry for a missing source: warnings only
    store_path.parent.mkdir(parents=True)
    store_path.write_text('[sources.a]\nbase_url = "http://h/v1"\n\n[catalog."ghost/m".prices]\ninput = "1e-6"\n')
    store_path.chmod(0o600)
    gw("key", "create", "k")
    v = gw("validate", "--json").json()
    assert v["ok"] and v["warnings"] >= 2
    r = gw("proxy", "--port", "0")
    assert r.code == 0 and len(served) == 1, r.err


# --- 2. wrong-typed secret fields: name the field and the type, never the value --


@pytest.mark.parametrize(
    "snippet, field, kind",
    [
        ('[sources.a]\nbase_url = "http://h/v1"\nauth_value = 987654321\n', "sources.a.auth_value", "an integer"),
        (
            '[sources.a]\nbase_url = "http://h/v1"\nauth_value = {key = "s3cret-abc"}\n',
            "sources.a.auth_value",
            "a table",
        ),
        ('[sources.a]\nbase_url = "http://h/v1"\nauth_value = ["s3cret-abc"]\n', "sources.a.auth_value", "an array"),
        ('[sources.a]\nbase_url = "http://h/v1"\nauth_value = 98765.4321\n', "sources.a.auth_value", "a float"),
        ('[sources.a]\nbase_url = "http://h/v1"\nauth_env = 987654321\n', "sources.a.auth_env", "an integer"),
        (
            '[sources.a]\nbase_url = "http://h/v1"\nheaders = {X-Team = 987654321}\n',
            "sources.a.headers.X-Team",
            "an integer",
        ),
        (
            '[sources.a]\nbase_url = "http://h/v1"\nheaders = {X-Team = {v = "s3cret-abc"}}\n',
            "sources.a.headers.X-Team",
            "a table",
        ),
        ('[sources.a]\nbase_url = "http://h/v1"\nheaders = "X-Token: s3cret-abc"\n', "sources.a.headers", "a string"),
        ('[sources.a]\nbase_url = {url = "http://u:s3cret-abc@h/v1"}\n', "sources.a.base_url", "a table"),
        ('[sources]\na = "s3cret-abc"\n', "sources.a", "a string"),
        (
            '[sources.a]\nbase_url = "http://h/v1"\n[[routes]]\nagent = "t"\nmodel_name = "m"\nprovider = "a"\n'
            "base_url = 987654321\n",
            "routes[0].base_url",
            "an integer",
        ),
        (
            '[sources.a]\nbase_url = "http://h/v1"\n[[routes]]\nagent = "t"\nmodel_name = "m"\nprovider = "a"\n'
            'base_url = ["http://u:s3cret-abc@h/v1"]\n',
            "routes[0].base_url",
            "an array",
        ),
        ("[keys.k]\nhash = 987654321\n", "keys.k.hash", "an integer"),
    ],
)
def test_wrong_typed_secret_field_names_field_and_type_not_value(gw, store_path, snippet, field, kind):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(snippet)
    store_path.chmod(0o600)
    for args in (
        ("source", "list"),
        ("validate",),
        ("validate", "--json"),
        ("source", "add", "b", "--base-url", "http://h/v1"),
    ):
        r = gw(*args)
        assert r.code == 1
        text = r.out + r.err
        for value in ("987654321", "98765", "4321", "s3cret"):
            assert value not in text, text
        assert field in text and kind in text, text
        assert "Traceback" not in text


def test_wrong_typed_plain_fields_still_show_the_value(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text('[catalog."a/m"]\ncontext_size = "lots"\n')
    store_path.chmod(0o600)
    r = gw("validate")
    assert r.code == 1 and "catalog" in r.err and "'lots'" in r.err and "a string" in r.err


def test_dry_run_json_reveal_and_mask_agree_on_credentials(leaky):
    masked = leaky("route", "dry-run", "--model", "alias", "--json").json()
    assert masked["credentials"]["value"].endswith("1234") and "upstream" not in masked["credentials"]["value"]
    assert json.dumps(masked).count(SECRET) == 0


def test_a_credential_put_in_auth_header_by_mistake_is_not_echoed(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        '[sources.a]\nbase_url = "http://127.0.0.1:9/v1"\nauth_header = "Bearer s3cret-abc"\n'
        'auth_value = "sk-upstream-1234"\n'
    )
    store_path.chmod(0o600)
    for args in (
        ("validate",),
        ("validate", "--json"),
        ("source", "edit", "a", "--passthrough"),
        ("source", "test", "a"),
        ("source", "test", "a", "--json"),
        ("source", "refresh", "a"),
        ("source", "refresh", "--all", "--json"),
    ):
        r = gw(*args)
        _clean(r)
        assert r.code == 1 and ("auth_header" in r.err + r.out or "auth header" in r.err + r.out)
    r = gw("source", "add", "b", "--base-url", "http://h/v1", "--auth-header", "Bearer s3cret-abc")
    _clean(r)
    assert r.code == 1 and "--auth-header" in r.err


def test_a_credential_put_in_auth_env_by_mistake_is_not_echoed(gw, store_path):
    # auth_env names a variable; a pasted key there is no name, and is masked like the credential it is
    store_path.parent.mkdir(parents=True)
    store_path.write_text('[sources.a]\nbase_url = "http://127.0.0.1:9/v1"\nauth_env = "sk-s3cret-abcd"\n')
    store_path.chmod(0o600)
    for args in (
        ("validate",),
        ("validate", "--json"),
        ("source", "list"),
        ("source", "list", "--json"),
        ("source", "show", "a"),
        ("source", "show", "a", "--json"),
        ("source", "test", "a"),
        ("source", "test", "a", "--json"),
        ("source", "refresh", "a", "--json"),
        ("route", "dry-run", "--model", "a/m"),
        ("route", "dry-run", "--model", "a/m", "--json"),
    ):
        r = gw(*args)
        _clean(r)
    v = gw("validate", "--json")
    assert v.code == 1
    assert any(p["where"] == "sources.a.auth_env" and p["level"] == "error" for p in v.json()["problems"])
    r = gw("source", "add", "b", "--base-url", "http://h/v1", "--auth-env", "sk-s3cret-abcd")
    _clean(r)
    assert r.code == 1 and "--auth-env" in r.err
    # a real variable name is shown as it is
    assert gw("source", "edit", "a", "--auth-env", "VLLM_KEY").code == 0
    assert "$VLLM_KEY" in gw("source", "show", "a").out
