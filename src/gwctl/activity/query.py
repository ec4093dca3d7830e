"""The SQL both backends share, and the pure helpers around it.

SQLite and PostgreSQL run the same statements on the same columns; only the
placeholder style, the time representation, the "UTC day" expression and
the exact cost sum differ, and those are passed in as a :class:`Dialect`.
Keeping one builder means a filter or a counter cannot mean one thing on
one backend and another thing on the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import Any, Callable, Iterable, Sequence

from gwctl.activity.entry import LogRow
from gwctl.activity.record import (
    FORWARDED_KINDS,
    REJECTED_KINDS,
    SUMMARY_BY,
    USAGE_KINDS,
    ActivityRecord,
    DaySourceRow,
    SummaryRow,
    attempts_from_text,
    attempts_text,
)

TABLE = "activity"

COLUMNS: tuple[str, ...] = (
    "time",
    "request_id",
    "key_name",
    "agent",
    "route_kind",
    "source",
    "model",
    "upstream_model",
    "path",
    "status",
    "latency_ms",
    *USAGE_KINDS,
    "cost",
    "rule",
    "stream",
    "error",
    "attempts",
    "shape",
    "original_cost",
    "repriced_at",
)
"""Columns written and read, in this order (``id`` is the table's own key)."""

# Addition in this context is exact: nothing is ever rounded, and if it were
# the Inexact/Rounded traps would raise rather than return a wrong total.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact, Rounded])


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """Sum Decimals with no rounding at all (the default context keeps 28 digits)."""
    total = Decimal(0)
    for v in values:
        total = EXACT.add(total, v)
    return total


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``"45s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` -> timedelta.

    One whole positive number and one unit; anything else raises ValueError
    with a sentence that says what is accepted.
    """
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(
            f"invalid duration {text!r}: use a whole number followed by s, m, h, d or w "
            "(for example 45s, 30m, 12h, 7d, 2w)"
        )
    n = int(m.group(1))
    if n <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be greater than zero (for example 30m)")
    try:
        return timedelta(**{_UNITS[m.group(2).lower()]: n})
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: it is too long") from None


def clean_text(value: str | None) -> str | None:
    """Make a string storable on both backends, identically.

    PostgreSQL refuses NUL characters and neither driver can encode a lone
    surrogate; such characters become U+FFFD instead of failing the batch.
    """
    if value is None or (value.isascii() and "\x00" not in value):
        return value  # the common case: nothing to replace, nothing that cannot be encoded
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends, for the shared statements."""

    placeholder: str  # "?" or "%s"
    day_expr: str  # SQL for the "YYYY-MM-DD" UTC day of the row
    cost_sum: str  # SQL aggregate giving an exact total of ``cost``
    time_param: Callable[[datetime], Any]  # how a datetime is passed as a parameter


@dataclass(frozen=True)
class Filters:
    """Row filters shared by list and summary; every one set must match exactly."""

    since: datetime | None = None
    source: str | None = None
    model: str | None = None
    agent: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None and (self.since.tzinfo is None or self.since.utcoffset() is None):
            raise ValueError("since must be a timezone-aware datetime")


def where_clause(f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or an empty string) and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        parts.append(f"time >= {d.placeholder}")
        params.append(d.time_param(f.since))
    for column, value in (
        ("source", f.source),
        ("model", f.model),
        ("agent", f.agent),
        ("key_name", f.key),
    ):
        if value is not None:
            parts.append(f"{column} = {d.placeholder}")
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def insert_sql(d: Dialect) -> str:
    marks = ", ".join([d.placeholder] * len(COLUMNS))
    return f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({marks})"


def reprice_sql(d: Dialect) -> str:
    """Rewrite one row's cost (``activity reprice --apply``): its first cost is kept in ``original_cost`` the
    first time (SET reads the row as it was), the time of the correction in ``repriced_at``. Parameters: the
    new cost, the correction's time, the row's request id and time."""
    p = d.placeholder
    return (
        f"UPDATE {TABLE} SET original_cost = CASE WHEN repriced_at IS NULL THEN cost ELSE original_cost END, "
        f"cost = {p}, repriced_at = {p} WHERE request_id = {p} AND time = {p}"
    )


def list_sql(f: Filters, limit: int | None, d: Dialect) -> tuple[str, list[Any]]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError("limit must be a positive whole number, or None for no limit")
    where, params = where_clause(f, d)
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY time DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {d.placeholder}"
        params.append(limit)
    return sql, params


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


def _group_expr(by: str, d: Dialect) -> str:
    if by not in SUMMARY_BY:
        raise ValueError(f"cannot summarise by {by!r}: use one of {', '.join(SUMMARY_BY)}")
    return {"source": "source", "model": "model", "agent": "agent", "key": "key_name", "day": d.day_expr}[by]


# The counters of SummaryRow, as SQL over one row (the constants are ours, not user input).
_IS_ERROR = "(route_kind = 'error' OR status >= 500)"
_IS_FORWARDED = f"route_kind IN ({_quoted(FORWARDED_KINDS)})"
_IS_REJECTED = f"(route_kind IN ({_quoted(REJECTED_KINDS)}) OR rule IS NOT NULL)"
_BILLED = "SUM(CASE WHEN cost IS NOT NULL THEN 1 ELSE 0 END)"
_UNBILLED = f"SUM(CASE WHEN cost IS NULL AND {_IS_FORWARDED} AND NOT {_IS_ERROR} THEN 1 ELSE 0 END)"
_COUNTERS = (
    _BILLED,
    _UNBILLED,
    f"SUM(CASE WHEN {_IS_REJECTED} THEN 1 ELSE 0 END)",
    f"SUM(CASE WHEN {_IS_ERROR} THEN 1 ELSE 0 END)",
)


def summary_sql(by: str, f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """One row per group: key, requests, each usage kind, cost, billed, unbilled, rejected, errors."""
    group = _group_expr(by, d)
    where, params = where_clause(f, d)
    cols = [
        f"{group} AS group_key",
        "COUNT(*)",
        *(f"SUM({k})" for k in USAGE_KINDS),
        d.cost_sum,
        *_COUNTERS,
    ]
    return f"SELECT {', '.join(cols)} FROM {TABLE}{where} GROUP BY 1", params


def _where_also(f: Filters, d: Dialect, condition: str) -> tuple[str, list[Any]]:
    """:func:`where_clause` with one more condition of ours."""
    where, params = where_clause(f, d)
    return (f"{where} AND {condition}" if where else f" WHERE {condition}"), params


def day_source_sql(f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """One row per (UTC day, source): day, source, requests, billed, unbilled, exact billed cost. The report's
    day chart, grouped by the server so the reader holds groups, not rows; the day is ``summary --by day``'s."""
    where, params = where_clause(f, d)
    cols = f"{d.day_expr}, source, COUNT(*), {_BILLED}, {_UNBILLED}, {d.cost_sum}"
    return f"SELECT {cols} FROM {TABLE}{where} GROUP BY 1, 2", params


def day_source_row(values: Sequence[Any], to_decimal: Callable[[Any], Decimal]) -> DaySourceRow:
    """Build a DaySourceRow from one result row of :func:`day_source_sql`."""
    day, source, requests, billed, unbilled, cost = values
    return DaySourceRow(
        day,
        source,
        int(requests),
        int(billed or 0),
        int(unbilled or 0),
        Decimal(0) if cost is None else to_decimal(cost),
    )


def rejections_sql(f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """Rule, count: the rows the summary counts as ``rejected``, grouped by rule (NULL: rejected without one)."""
    where, params = _where_also(f, d, _IS_REJECTED)
    return f"SELECT rule, COUNT(*) FROM {TABLE}{where} GROUP BY rule", params


def latencies_sql(f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """Source, model, latency of every forwarded row, unordered: three narrow columns to stream, not records."""
    where, params = _where_also(f, d, _IS_FORWARDED)
    return f"SELECT source, model, latency_ms FROM {TABLE}{where}", params


def summary_row(values: Sequence[Any], to_decimal: Callable[[Any], Decimal]) -> SummaryRow:
    """Build a SummaryRow from one result row of :func:`summary_sql`."""
    n = len(USAGE_KINDS)
    key = values[0]
    usage = {k: int(v or 0) for k, v in zip(USAGE_KINDS, values[2 : 2 + n])}
    cost_raw = values[2 + n]
    billed, unbilled, rejected, errors = (int(v or 0) for v in values[3 + n : 7 + n])
    return SummaryRow(
        key=key,
        requests=int(values[1]),
        usage=usage,
        cost=to_decimal(cost_raw) if cost_raw is not None else Decimal(0),
        billed=billed,
        unbilled=unbilled,
        rejected=rejected,
        errors=errors,
    )


def order_summary(rows: Iterable[SummaryRow], by: str) -> list[SummaryRow]:
    """The order both backends return: by day oldest first; otherwise the most
    expensive group first, then the busiest, then by name (no value last)."""
    rows = list(rows)
    if by == "day":
        return sorted(rows, key=lambda r: (r.key is None, r.key or ""))
    return sorted(rows, key=lambda r: (r.cost.copy_negate(), -r.requests, r.key is None, r.key or ""))


def insert_values(
    r: LogRow, time_value: Any, cost_value: Any, stream_value: Any, to_db: Callable[[Any], Any] = lambda v: v
) -> tuple:
    """The parameters of :func:`insert_sql` in COLUMNS order for a neutral row, its text cleaned; the time,
    cost and stream as the backend stores them; the attempts as JSON text (encoded here, in the writer
    process, never on the proxy's core)."""
    attempts = r.attempts
    return (
        time_value,
        clean_text(r.request_id),
        clean_text(r.key_name),
        clean_text(r.agent),
        r.route_kind,
        clean_text(r.source),
        clean_text(r.model),
        clean_text(r.upstream_model),
        clean_text(r.path),
        r.status,
        r.latency_ms,
        *r.usage_counts,
        cost_value,
        clean_text(r.rule),
        stream_value,
        clean_text(r.error),
        None if attempts is None else attempts_text(attempts, clean_text),
        r.shape,
        None if r.original_cost is None else to_db(r.original_cost),
        None if r.repriced_at is None else to_db(r.repriced_at),
    )


def record_fields(r: ActivityRecord) -> LogRow:
    """A record as the neutral row the backends' ``row()`` takes."""
    return LogRow(
        r.time,
        r.request_id,
        r.key_name,
        r.agent,
        r.route_kind,
        r.source,
        r.model,
        r.upstream_model,
        r.path,
        r.status,
        r.latency_ms,
        tuple(r.usage.get(k, 0) for k in USAGE_KINDS),
        r.cost,
        r.rule,
        r.stream,
        r.error,
        r.attempts,
        r.shape,
        r.original_cost,
        r.repriced_at,
    )


ROW_FIELDS = LogRow._fields
"""A neutral row's fields (:class:`~gwctl.activity.entry.LogRow`). Each backend's ``row()`` turns one into insert
parameters."""


def record_from_row(
    row: Sequence[Any],
    *,
    to_time: Callable[[Any], datetime],
    to_cost: Callable[[Any], Decimal],
) -> ActivityRecord:
    """Inverse of :func:`insert_values` for a row selected with COLUMNS."""
    n = len(USAGE_KINDS)
    usage = {k: int(v) for k, v in zip(USAGE_KINDS, row[11 : 11 + n]) if v}
    cost = row[11 + n]
    return ActivityRecord(
        time=to_time(row[0]),
        request_id=row[1],
        key_name=row[2],
        agent=row[3],
        route_kind=row[4],
        source=row[5],
        model=row[6],
        upstream_model=row[7],
        path=row[8],
        status=int(row[9]),
        latency_ms=float(row[10]),
        usage=usage,
        cost=to_cost(cost) if cost is not None else None,
        rule=row[12 + n],
        stream=bool(row[13 + n]),
        error=row[14 + n],
        attempts=attempts_from_text(row[15 + n]),
        shape=row[16 + n],
        original_cost=None if row[17 + n] is None else to_cost(row[17 + n]),
        repriced_at=None if row[18 + n] is None else to_time(row[18 + n]),
    )
