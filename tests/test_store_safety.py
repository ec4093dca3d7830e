"""The store holds credentials: its mode is watched, kept 0600, and no temp file of it outlives a write."""

from __future__ import annotations

import os
import stat

import pytest

STORE = '[sources.a]\nbase_url = "http://127.0.0.1:9/v1"\nauth_value = "sk-secret-9999"\n'


def _write(store_path, mode: int, text: str = STORE) -> None:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.write_text(text)
    store_path.chmod(mode)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _warning(store_path, what: str, mode: str) -> str:
    return (
        f"warning: {store_path} is {what} by other users (mode {mode}); it holds credentials: chmod 600 {store_path}\n"
    )


READS = [
    ("source", "list"),
    ("source", "list", "--json"),
    ("source", "show", "a"),
    ("model", "list"),
    ("catalog", "list"),
    ("route", "list"),
    ("route", "dry-run", "--model", "a/m", "--json"),
    ("key", "list"),
    ("validate",),
    ("validate", "--json"),
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_every_reading_command_warns_once_about_a_store_others_can_read(gw, store_path, args):
    _write(store_path, 0o644)
    r = gw(*args)
    assert r.code == 0, r.err
    assert r.err.count(_warning(store_path, "readable", "0644")) == 1, r.err
    assert "by other users" not in r.out
    again = gw(*args)  # once per invocation, not once per process
    assert again.err.count(_warning(store_path, "readable", "0644")) == 1


@pytest.mark.parametrize(
    "mode, what, shown",
    [
        (0o640, "readable", "0640"),
        (0o604, "readable", "0604"),
        (0o620, "writable", "0620"),
        (0o602, "writable", "0602"),
        (0o666, "readable", "0666"),
    ],
)
def test_group_or_other_access_is_named(gw, store_path, mode, what, shown):
    _write(store_path, mode)
    assert gw("source", "list").err == _warning(store_path, what, shown)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o711])
def test_private_store_draws_no_warning(gw, store_path, mode):
    _write(store_path, mode)
    r = gw("source", "list")
    assert r.code == 0 and r.err == ""


def test_missing_store_draws_no_warning(gw, store_path):
    r = gw("source", "list")  # only the empty listing's hint: nothing about the store not existing yet
    assert (
        r.code == 0 and r.out == "" and r.err == "no sources yet; add one with: gwctl source add NAME --base-url URL\n"
    )
    assert not store_path.exists()


def test_a_write_warns_once_and_leaves_the_store_0600(gw, store_path):
    _write(store_path, 0o644)
    r = gw("source", "add", "b", "--base-url", "http://127.0.0.1:9/v1")
    assert r.code == 0, r.err
    assert r.err.count("readable by other users") == 1
    assert _mode(store_path) == 0o600
    assert gw("source", "list").err == ""


def test_each_atomic_replace_keeps_0600(gw, store_path):
    assert gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1").code == 0
    assert _mode(store_path) == 0o600
    for i in range(3):
        assert gw("source", "edit", "a", "--header", f"X-N: {i}").code == 0
        assert _mode(store_path) == 0o600


def test_temp_file_is_0600_from_its_creation(gw, store_path, monkeypatch):
    import gwctl.store.file as storefile

    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(_mode(src))
        return real_replace(src, dst)

    real_fdopen = os.fdopen

    def spy_fdopen(fd, *a, **k):  # the mode when the first byte of the store is about to be written
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *a, **k)

    monkeypatch.setattr(storefile.os, "replace", spy)
    monkeypatch.setattr(storefile.os, "fdopen", spy_fdopen)
    old = os.umask(0)  # even a permissive umask must not widen it
    try:
        assert gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1", "--auth-value", "sk-x-1234").code == 0
    finally:
        os.umask(old)
    assert seen and all(m == 0o600 for m in seen), [oct(m) for m in seen]


def test_proxy_refuses_a_store_others_can_read(gw, store_path, monkeypatch):
    import gwctl.proxy.server as server

    served = []
    monkeypatch.setattr(server, "run", lambda *a, **k: served.append(a) or 0)
    _write(store_path, 0o600)
    assert gw("key", "create", "k").code == 0
    store_path.chmod(0o644)
    r = gw("proxy", "--port", "0")
    assert r.code == 1 and not served
    assert f"{store_path} is readable by other users (mode 0644); it holds credentials" in r.err
    assert f"chmod 600 {store_path}" in r.err
    assert "Traceback" not in r.err
    store_path.chmod(0o600)
    r = gw("proxy", "--port", "0")
    assert r.code == 0 and len(served) == 1, r.err


# --- stale temp files of an interrupted write --------------------------------


def test_stale_temp_file_of_the_store_is_removed_on_the_next_write(gw, store_path):
    _write(store_path, 0o600)
    stale = store_path.parent / f".{store_path.name}.k3x_9abc.tmp"  # tempfile's pattern: 8 of [a-z0-9_]
    stale.write_text(STORE + "# half-written by a process that was killed\n")
    stale.chmod(0o600)
    keep = [
        store_path.parent / f".{store_path.name}.notours.tmp",  # not 8 characters
        store_path.parent / f".{store_path.name}.ABCDEFGH.tmp",  # not tempfile's alphabet
        store_path.parent / f".{store_path.name}.k3x_9abc.tmp.bak",
        store_path.parent / ".other.toml.k3x_9abc.tmp",  # another file's temp
        store_path.parent / f"{store_path.name}.k3x_9abc.tmp",  # no leading dot
    ]
    for p in keep:
        p.write_text("x")
    r = gw("source", "add", "b", "--base-url", "http://127.0.0.1:9/v1")
    assert r.code == 0, r.err
    assert not stale.exists()
    assert all(p.exists() for p in keep)
    names = {s["name"] for s in gw("source", "list", "--json").json()}
    assert names == {"a", "b"}
    assert gw("validate").code == 0
    assert _mode(store_path) == 0o600


def test_stale_temp_file_is_removed_even_when_the_write_changes_nothing(gw, store_path):
    _write(store_path, 0o600)
    assert gw("route", "fallback", "a").code == 0
    stale = store_path.parent / f".{store_path.name}.abcdefgh.tmp"
    stale.write_text("secret")
    assert gw("route", "fallback", "a").code == 0  # same value: the text does not change
    assert not stale.exists()


def test_reads_never_touch_temp_files(gw, store_path):
    _write(store_path, 0o600)
    stale = store_path.parent / f".{store_path.name}.abcdefgh.tmp"
    stale.write_text("secret")
    assert gw("source", "list").code == 0
    assert stale.exists()  # a read holds no lock: a writer may be using it right now
