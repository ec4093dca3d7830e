"""Start `gwctl proxy` as a real subprocess for tests (bounded waits, always stopped)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gwctl.testing import proxyproc


class ProxyProcess:
    def __init__(self, store: Path, activity: str, *extra: str, env: dict | None = None):
        cmd = proxyproc.proxy_command(str(store), activity, "--reload-interval", "0.2", "--grace", "10", *extra)
        self.lines: list[str] = []
        self.proc, self.url = proxyproc.start(cmd, {**os.environ, **(env or {})}, 30, self.lines)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout: float = 20) -> int:
        return proxyproc.stop(self.proc, timeout)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def log_rows(db: Path) -> list[dict]:
    """Every row of a SQLite activity log, oldest first, read-only (none while the log does not exist yet)."""
    import sqlite3

    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM activity ORDER BY id")]
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return []
    finally:
        conn.close()


def log_row(db: Path, rid: str, timeout: float = 30) -> dict:
    """The row of request ``rid``, once the log writer has written it (waited for up to ``timeout`` seconds)."""
    got = wait_for(lambda: next((r for r in log_rows(db) if r["request_id"] == rid), None), timeout, 0.1)
    assert got is not None, f"no activity row for {rid}"
    return got


def closed_port() -> int:
    """A loopback port nobody listens on (bound for a moment, then let go): a dead upstream's."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class StoreRig:
    """What the end-to-end rigs share: the CLI on the rig's store (``self.store``), routes for the agents
    ``t/NAME``, and the rows of its SQLite activity log (``self.db``)."""

    store: Path
    db: Path

    def cli(self, *args: str):
        from conftest import run_cli

        r = run_cli("--store", str(self.store), *args)
        assert r.code == 0, r.err
        return r

    def route(self, agent: str, source: str, model: str, *more: str) -> None:
        # subagents: a root route is keyed by model name alone, a subagent's by its path and model name
        self.cli("route", "set", f"t/{agent}", "--model-name", "m", "--provider", source, "--model", model, *more)

    def rows(self) -> list[dict]:
        return log_rows(self.db)

    def row(self, rid: str) -> dict:
        return log_row(self.db, rid)
