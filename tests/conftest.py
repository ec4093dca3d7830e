"""Shared fixtures: an isolated store per test, an in-process CLI runner, a stand-in upstream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run_cli(*args: str, input: str | None = None) -> Result:
    """Run gwctl in-process through its real entry point (error boundary included)."""
    return invoke(list(args), input=input)


def invoke(argv: list[str], *, input: str | None = None, force_tables: bool = False) -> Result:
    """run_cli with the invocation's output mode chosen (force_tables: human output, as on a terminal)."""
    from gwctl.cli import main
    from gwctl.context import Env

    env = Env.captured(input, force_tables=force_tables)
    code = main(argv, env)
    return Result(code, env.stdout.getvalue(), env.stderr.getvalue())


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own store and activity log; the user's are never touched."""
    store = tmp_path / "cfg" / "gwctl.toml"
    monkeypatch.setenv("GWCTL_STORE", str(store))
    monkeypatch.setenv("GWCTL_ACTIVITY", str(tmp_path / "activity.sqlite3"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("GWCTL_DEBUG", raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):  # the tests' upstreams are on loopback;
        monkeypatch.delenv(name, raising=False)  # a test that wants an egress proxy sets one
        monkeypatch.delenv(name.upper(), raising=False)
    yield


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "cfg" / "gwctl.toml"


@pytest.fixture
def gw():
    return run_cli


@pytest.fixture(scope="session")
def standin():
    """One stand-in upstream for the session (tests reconfigure and clear it)."""
    from gwctl.testing.thread import StandinConfig, start_standin

    handle = start_standin(
        StandinConfig(models=["llama-3.1-8b", "qwen/qwen3", "mistral-7b"], api_key="sk-upstream-1234")
    )
    yield handle
    handle.stop()


@pytest.fixture
def upstream(standin):
    """The session stand-in, reset to its defaults for this test."""
    standin.configure(
        models=["llama-3.1-8b", "qwen/qwen3", "mistral-7b"],
        api_key="sk-upstream-1234",
        auth_header=None,
        fail_status=None,
        models_payload=None,
        delay_ms=0,
        usage=None,
        tool_arguments=None,
        refuse=frozenset(),
        refuse_status=None,
        slow=None,
        cached_prompt=None,
        json_text=None,
    )
    standin.clear()
    return standin


@pytest.fixture(scope="session")
def pg_server_dsn():
    """A PostgreSQL server for the session: GWCTL_TEST_POSTGRES, else one started from the installed binaries."""
    import os

    import pgserver

    env = os.environ.get("GWCTL_TEST_POSTGRES", "").strip()
    if env:
        yield env
        return
    bindir = pgserver.find_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed: "
            "run `bash .ci/postgres.sh` (or apt-get install postgresql), or set GWCTL_TEST_POSTGRES"
        )
    server = pgserver.start(bindir)
    try:
        yield server.dsn
    finally:
        server.stop()
