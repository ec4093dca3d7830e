"""The activity log: one row per proxied request, in SQLite or PostgreSQL.

Use :func:`resolve_dsn` to pick the log (``--activity`` > ``GWCTL_ACTIVITY`` >
the default SQLite file) and :func:`open_log` to read or write it. The proxy
writes through a writer process of its own (:mod:`gwctl.activity.child`),
with the failure policy of :class:`~gwctl.activity.writer.LogSink`.
"""

from __future__ import annotations

from gwctl.activity.dsn import ENV_VAR, Target, parse_dsn, redact_dsn, resolve_dsn, sqlite_dsn
from gwctl.activity.query import exact_sum, parse_duration
from gwctl.activity.record import (
    FORWARDED_KINDS,
    REJECTED_KINDS,
    ROUTE_KINDS,
    SUMMARY_BY,
    USAGE_KINDS,
    ActivityError,
    ActivityLog,
    ActivityRecord,
    SummaryRow,
    record_to_json,
    summary_to_json,
)

__all__ = [
    "ENV_VAR",
    "FORWARDED_KINDS",
    "REJECTED_KINDS",
    "ROUTE_KINDS",
    "SUMMARY_BY",
    "USAGE_KINDS",
    "ActivityError",
    "ActivityLog",
    "ActivityRecord",
    "SummaryRow",
    "Target",
    "exact_sum",
    "open_log",
    "parse_dsn",
    "parse_duration",
    "record_to_json",
    "redact_dsn",
    "resolve_dsn",
    "sqlite_dsn",
    "summary_to_json",
]


def open_log(dsn: str, *, create: bool = True) -> ActivityLog:
    """Open (and migrate) the log at ``dsn``; raises :class:`ActivityError`.

    With ``create=False`` a missing SQLite file is an error instead of being
    created (for read-only commands that should not leave files behind).
    PostgreSQL's driver is imported only when a PostgreSQL DSN is opened.
    """
    target = parse_dsn(dsn)
    if target.kind == "postgres":
        from gwctl.activity.postgres import PostgresLog

        assert target.conninfo is not None
        return PostgresLog(target.conninfo)
    from gwctl.activity.sqlite import SqliteLog

    assert target.path is not None
    return SqliteLog(target.path, create=create)
