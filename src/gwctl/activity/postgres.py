"""The shared backend: PostgreSQL, for several proxy instances on one log.

Same table and columns as SQLite; ``cost`` is ``numeric`` and summed by the
server's SUM, which is exact, and comes back as a Decimal. The connection
runs in autocommit mode with an explicit transaction per batch, so a reader
(the CLI) never sits idle inside a transaction. Migrations take a
transaction-scoped advisory lock keyed by the current schema, so instances
starting together apply each migration once.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gwctl.activity import query as q
from gwctl.activity.dsn import redact_dsn
from gwctl.activity.entry import LogRow
from gwctl.activity.migrations import LATEST, SCHEMA_MIGRATIONS_POSTGRES, pending, too_new_message
from gwctl.activity.record import ActivityError
from gwctl.activity.sqlbase import SqlReads

CONNECT_TIMEOUT_S = 10
STREAM_BATCH = 2_000  # rows a server-side cursor fetches a round trip
LOCK_CLASS = 0x67776374  # "gwct": first key of the migration advisory lock


def _utc(value: Any) -> datetime:
    return value.astimezone(timezone.utc)


DIALECT = q.Dialect(
    placeholder="%s",
    day_expr="to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    cost_sum="SUM(cost)",
    time_param=_utc,
)


class PostgresLog(SqlReads):
    """:class:`~gwctl.activity.record.ActivityLog` on a PostgreSQL database."""

    dialect = DIALECT
    db_error = psycopg.Error
    to_time = staticmethod(_utc)

    def __init__(self, conninfo: str):
        self.dsn = conninfo
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.Error as e:
            raise ActivityError(
                f"invalid PostgreSQL activity log DSN {redact_dsn(conninfo)!r}: {str(e).strip()}",
                hint="use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            ) from e
        extra: dict[str, Any] = {}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in given:
            extra["application_name"] = "gwctl"
        try:
            conn = psycopg.connect(conninfo, autocommit=True, **extra)
        except psycopg.Error as e:
            raise self._error("cannot connect to", e) from e
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _error(self, what: str, e: BaseException) -> ActivityError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ActivityError(
            f"{what} the activity log {redact_dsn(self.dsn)}: {msg}",
            hint="check the server is running and the DSN (--activity / GWCTL_ACTIVITY) is right",
        )

    def _migrate(self, conn: psycopg.Connection) -> None:
        try:
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is not None:  # type: ignore[index]  # SELECT without FROM: one row
                applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
                if applied and max(applied) > LATEST:
                    raise ActivityError(too_new_message(max(applied)), hint="upgrade gwctl")
                if not pending(applied):
                    return
            with conn.transaction():
                conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext(coalesce(current_schema(), '')))")
                conn.execute(SCHEMA_MIGRATIONS_POSTGRES)
                applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
                if applied and max(applied) > LATEST:
                    raise ActivityError(too_new_message(max(applied)), hint="upgrade gwctl")
                for m in pending(applied):
                    for stmt in m.postgres:
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,))
        except psycopg.Error as e:
            raise self._error("cannot prepare", e) from e

    def _connection(self) -> psycopg.Connection:
        if self._conn is None:
            raise ActivityError(f"the activity log {redact_dsn(self.dsn)} is closed")
        return self._conn

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        """The result a row at a time (the caller holds the lock), through a server-side cursor fetching
        STREAM_BATCH rows a round trip: a client cursor would receive the whole result at once. A named
        cursor lives in a transaction (read-only here)."""
        conn = self._connection()
        with conn.transaction(), conn.cursor(name="gwctl_stream") as cur:
            cur.itersize = STREAM_BATCH
            cur.execute(sql, params)
            yield from cur

    @staticmethod
    def row(r: LogRow) -> tuple:
        """Insert parameters for a neutral row: timestamptz, numeric and boolean as they are."""
        return q.insert_values(r, r.time, r.cost, r.stream)

    def write_rows(self, rows: Sequence[tuple]) -> None:
        """Insert prepared parameter tuples (from :meth:`row`) in one transaction."""
        if not rows:
            return
        sql = q.insert_sql(DIALECT)
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    with conn.cursor() as cur:
                        cur.executemany(sql, rows)
            except psycopg.Error as e:
                raise self._error("cannot write to", e) from e

    def reprice(self, updates: Sequence[tuple[str, datetime, Decimal | None]], at: datetime) -> int:
        """Rewrite rows' costs in one transaction (see :func:`gwctl.activity.query.reprice_sql`); how many."""
        if not updates:
            return 0
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(q.reprice_sql(DIALECT), [(c, at, rid, t) for rid, t, c in updates])
                    changed = cur.rowcount
            except psycopg.Error as e:
                raise self._error("cannot write to", e) from e
        return int(changed)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __repr__(self) -> str:
        return f"PostgresLog({redact_dsn(self.dsn)!r})"
