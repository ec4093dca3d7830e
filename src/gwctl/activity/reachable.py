"""Whether the activity log's database answers now: the proxy's readiness check (``/readyz``).

A fresh connection and ``SELECT 1``, bounded in time: the same path the log writer and the shared limits
take to the database, so a database that is down, restarting, refusing logins or out of connections reads as
unreachable. SQLite is reachable when its file (or, before the first row, its directory) can be opened.
"""

from __future__ import annotations

import sqlite3
import time

from gwctl.activity.dsn import parse_dsn, redact_dsn


def check(dsn: str, timeout: float = 2.0) -> tuple[bool, str | None, float]:
    """(reachable, why not, milliseconds taken) for the log at ``dsn``; never raises."""
    started = time.perf_counter()
    try:
        _query(dsn, timeout)
        return True, None, (time.perf_counter() - started) * 1000
    except Exception as exc:  # whatever stops the query makes the log unreachable; the reason is reported
        text = " ".join(str(exc).split()) or exc.__class__.__name__
        return False, text.replace(dsn, redact_dsn(dsn))[:300], (time.perf_counter() - started) * 1000


def _query(dsn: str, timeout: float) -> None:
    target = parse_dsn(dsn)
    if target.kind == "sqlite":
        path = target.path
        assert path is not None
        if not path.exists():
            if not path.parent.is_dir():
                raise FileNotFoundError(f"the directory of {path} does not exist")
            return  # the writer creates the file with its first row
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            conn.execute("SELECT 1").fetchone()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as pg:
        pg.execute("SELECT 1").fetchone()
