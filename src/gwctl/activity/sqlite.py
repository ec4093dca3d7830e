"""The embedded backend: one SQLite file, safe for one proxy plus the CLI.

WAL mode lets the CLI read while the proxy writes; ``synchronous=NORMAL`` is
durable across application crashes (a power cut may lose the last commits,
which is acceptable for a request log) and a busy timeout turns brief lock
contention into waiting instead of errors. The file is created ``0600`` with
its parent directories, since rows name keys, agents and models.

Costs are stored as exact decimal text and summed by a Python aggregate
(``decimal_sum``) registered on the connection: SQLite's own SUM works in
binary floating point and is never used for money.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence

from gwctl.activity import query as q
from gwctl.activity.dsn import sqlite_dsn
from gwctl.activity.entry import LogRow
from gwctl.activity.migrations import LATEST, SCHEMA_MIGRATIONS_SQLITE, pending, too_new_message
from gwctl.activity.record import (
    ActivityError,
    decimal_text,
    format_utc,
    parse_utc,
)
from gwctl.activity.sqlbase import SqlReads

BUSY_TIMEOUT_MS = 10_000

DIALECT = q.Dialect(
    placeholder="?",
    day_expr="substr(time, 1, 10)",
    cost_sum="decimal_sum(cost)",
    time_param=format_utc,
)


class _DecimalSum:
    """SQLite aggregate: exact sum of decimal text, returned as decimal text."""

    def __init__(self) -> None:
        self.total = Decimal(0)
        self.seen = False

    def step(self, value: str | bytes | int | float | None) -> None:
        if value is None:
            return
        self.total = q.EXACT.add(self.total, Decimal(value if not isinstance(value, bytes) else value.decode()))
        self.seen = True

    def finalize(self) -> str | None:
        return decimal_text(self.total) if self.seen else None


def _text(value: Decimal | datetime) -> str:
    """A repriced row's original cost or time as SQLite keeps them: exact decimal text, fixed-width UTC text."""
    return format_utc(value) if isinstance(value, datetime) else decimal_text(value)


def _create_file(path: Path) -> None:
    """Create the parent dirs (0700) and an empty file (0600) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask said


def _enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL (a persistent setting), retrying while locked.

    Changing the journal mode needs an exclusive lock and SQLite reports
    "database is locked" at once instead of calling the busy handler, so
    several processes opening a new log together would otherwise fail.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class SqliteLog(SqlReads):
    """:class:`~gwctl.activity.record.ActivityLog` on a SQLite file."""

    dialect = DIALECT
    db_error = sqlite3.Error
    to_time = staticmethod(parse_utc)

    def __init__(self, path: Path, *, create: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.dsn = sqlite_dsn(self.path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if not self.path.exists():
            if not create:
                raise ActivityError(
                    f"there is no activity log at {self.path}",
                    hint="run `gwctl proxy` to record activity, or point --activity / GWCTL_ACTIVITY at the log",
                )
        try:
            if create:
                _create_file(self.path)
            conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
        except (OSError, sqlite3.Error) as e:
            raise self._error("cannot open", e) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            _enable_wal(conn, busy_timeout_ms / 1000)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.create_aggregate("decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]  # typeshed: finalize() -> int only
            self._migrate(conn)
        except ActivityError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._error("cannot open", e) from e
        self._conn = conn

    # -- helpers ---------------------------------------------------------

    def _error(self, what: str, e: BaseException) -> ActivityError:
        return ActivityError(
            f"{what} the activity log {self.path}: {e}",
            hint="check that the path is a writable file (or set --activity / GWCTL_ACTIVITY)",
        )

    @staticmethod
    def _applied(conn: sqlite3.Connection) -> set[int] | None:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
        if row is None:
            return None
        return {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}

    def _migrate(self, conn: sqlite3.Connection) -> None:
        applied = self._applied(conn)
        if applied is not None:
            if applied and max(applied) > LATEST:
                raise ActivityError(too_new_message(max(applied)), hint="upgrade gwctl")
            if not pending(applied):
                return  # up to date: no write lock taken
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(SCHEMA_MIGRATIONS_SQLITE)
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            if applied and max(applied) > LATEST:
                raise ActivityError(too_new_message(max(applied)), hint="upgrade gwctl")
            now = format_utc(datetime.now(timezone.utc))
            for m in pending(applied):
                for stmt in m.sqlite:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (m.version, now))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ActivityError(f"the activity log {self.path} is closed")
        return self._conn

    def _stream(self, sql: str, params: Sequence[object]) -> Iterator[Any]:
        """The result a row at a time (the caller holds the lock): SQLite steps the statement as it is read."""
        cur = self._connection().execute(sql, params)
        try:
            yield from cur
        finally:
            cur.close()

    # -- ActivityLog -----------------------------------------------------

    @staticmethod
    def row(r: LogRow) -> tuple:
        """Insert parameters for a neutral row: time and cost as text, stream as 0/1."""
        cost = r.cost
        return q.insert_values(
            r, format_utc(r.time), decimal_text(cost) if cost is not None else None, 1 if r.stream else 0, _text
        )

    def write_rows(self, rows: Sequence[tuple]) -> None:
        """Insert prepared parameter tuples (from :meth:`row`) in one transaction."""
        if not rows:
            return
        sql = q.insert_sql(DIALECT)
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error("cannot write to", e) from e

    def reprice(self, updates: Sequence[tuple[str, datetime, Decimal | None]], at: datetime) -> int:
        """Rewrite rows' costs in one transaction (see :func:`gwctl.activity.query.reprice_sql`); how many."""
        if not updates:
            return 0
        stamp = format_utc(at)
        params = [(None if c is None else decimal_text(c), stamp, rid, format_utc(t)) for rid, t, c in updates]
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.executemany(q.reprice_sql(DIALECT), params)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error("cannot write to", e) from e
        return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SqliteLog({str(self.path)!r})"
