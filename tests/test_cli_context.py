"""One Env per invocation: nothing about a gwctl run outlives it."""

from __future__ import annotations

import sys

from conftest import invoke, run_cli
from gwctl.cli import main
from gwctl.context import Env, current


def test_store_option_does_not_outlive_its_invocation(tmp_path, store_path):
    other = tmp_path / "other.toml"
    assert run_cli("--store", str(other), "paths", "--json").json()["store"] == str(other)
    assert run_cli("paths", "--json").json()["store"] == str(store_path)


def test_the_env_is_current_only_during_the_call():
    outside = current()
    env = Env.captured()
    assert main(["--version"], env) == 0
    assert env.stdout.getvalue().startswith("gwctl ")
    assert current() is not env and current().stdout is outside.stdout is sys.stdout
    assert sys.stdin is outside.stdin


def test_environ_comes_from_the_env_not_the_process(tmp_path, monkeypatch):
    store = tmp_path / "from-env.toml"
    monkeypatch.delenv("GWCTL_STORE")
    env = Env.captured(environ={"GWCTL_STORE": str(store), "GWCTL_ACTIVITY": "sqlite:///x.db"})
    assert main(["paths", "--json"], env) == 0
    assert '"store": "%s"' % store in env.stdout.getvalue()
    assert "sqlite:///x.db" in env.stdout.getvalue()


def test_force_tables_is_per_invocation(gw):
    gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1")
    tables = invoke(["source", "list"], force_tables=True).out
    assert "NAME" in tables  # a table with its header, as on a terminal
    assert "NAME" not in run_cli("source", "list").out  # the next run pipes again
