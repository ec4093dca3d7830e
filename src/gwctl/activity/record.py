"""What one activity row is, and the small interface every backend offers.

The proxy's log writer process (:mod:`gwctl.activity.child`) inserts one row
per request (rejected ones too) through an :class:`ActivityLog`; the CLI reads
:class:`ActivityRecord` s and :class:`SummaryRow` s back through the same interface. Both
backends (SQLite, PostgreSQL) implement the same protocol on the same schema,
so nothing above this package knows which one is in use.

Records are checked when they are built, because a bad value found later, in
the log writer, could only be dropped: a naive datetime, a float cost, an
unknown usage kind or a negative count is a programming error and raises here.
"""

from __future__ import annotations

import builtins
import json
import math
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Protocol, Sequence

from gwctl.errors import GwctlError

USAGE_KINDS: tuple[str, ...] = (
    "input_tokens",
    "cached_input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "web_searches",
    "images",
)
"""Every usage counter a record may carry, in display order (a missing one is 0).

Each is also a column of the ``activity`` table with the same name.
"""
_USAGE_KIND_SET = frozenset(USAGE_KINDS)

INPUT_KINDS: tuple[str, ...] = (
    "input_tokens",
    "cached_input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "audio_input_tokens",
)
"""The usage kinds the summaries add up as input tokens."""

ROUTE_KINDS: tuple[str, ...] = ("passthrough", "managed", "rejected", "not_found", "error")
"""How the gateway handled a request."""

FORWARDED_KINDS: frozenset[str] = frozenset({"passthrough", "managed"})
"""Route kinds whose request reached an upstream."""

REJECTED_KINDS: frozenset[str] = frozenset({"rejected", "not_found"})
"""Route kinds the gateway answered itself, by its own rules."""

SUMMARY_BY: tuple[str, ...] = ("source", "model", "agent", "key", "day")
"""Every value ``ActivityLog.summary(by=...)`` accepts."""


class ActivityError(GwctlError):
    """The activity log could not be located, opened, migrated or read."""


class Attempt(NamedTuple):
    """One upstream target a request was tried on (a route with a plan of several targets: failover)."""

    target: str  # "SOURCE/MODEL_ID"
    status: int | None  # what the upstream answered; None: no answer (refused, timed out, broken)
    latency_ms: float
    error: str | None  # why the next target was tried; None for the answering attempt


_OPTIONAL_TEXT = ("key_name", "agent", "source", "model", "upstream_model", "rule", "error")


def _check_str(name: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"ActivityRecord.{name} must be a str, not {type(value).__name__}")


@dataclass(frozen=True)
class ActivityRecord:
    """One proxied request, as the activity log stores it.

    ``cost`` None means *unbilled* (no catalog entry: unknown, not zero).
    ``usage`` is normalised on construction: kinds in :data:`USAGE_KINDS`
    order, zero counts left out, so two records that mean the same compare
    equal and a record read back equals the one written.
    """

    time: datetime  # UTC, tz-aware (any tz-aware time is converted to UTC)
    request_id: str
    key_name: str | None  # gateway key name (None with --no-auth)
    agent: str | None  # "triage", "triage/summarizer" or None
    route_kind: str  # one of ROUTE_KINDS
    source: str | None
    model: str | None  # the model as the client asked for it
    upstream_model: str | None
    path: str  # e.g. /v1/chat/completions
    status: int  # HTTP status returned to the client
    latency_ms: float
    usage: Mapping[str, int] = field(hash=False)  # by kind, see USAGE_KINDS
    cost: Decimal | None  # exact USD; None = unbilled
    rule: str | None  # rejection rule id, e.g. "max_output"
    stream: bool = False
    error: str | None = None  # short message for rejections / upstream errors
    attempts: tuple[Attempt, ...] | None = None  # failover: the targets tried, the answering one last; None: no plan
    shape: str | None = None  # the decided request's shape (gwctl.core.request.shape_text); None: not kept
    original_cost: Decimal | None = None  # before `activity reprice --apply` rewrote ``cost`` (None: never was)
    repriced_at: datetime | None = None  # when it did

    def __post_init__(self) -> None:
        t = self.time
        if not isinstance(t, datetime):
            raise TypeError("ActivityRecord.time must be a datetime")
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("ActivityRecord.time must be timezone-aware (use datetime.now(timezone.utc))")
        if t.tzinfo is not timezone.utc:
            object.__setattr__(self, "time", t.astimezone(timezone.utc))
        _check_str("request_id", self.request_id, optional=False)
        _check_str("path", self.path, optional=False)
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                _check_str(name, value, optional=True)
        if self.route_kind not in ROUTE_KINDS:
            raise ValueError(f"ActivityRecord.route_kind {self.route_kind!r} is not one of {', '.join(ROUTE_KINDS)}")
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise TypeError("ActivityRecord.status must be an int")
        latency = self.latency_ms
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise TypeError("ActivityRecord.latency_ms must be a number")
        if not math.isfinite(latency) or latency < 0:
            raise ValueError("ActivityRecord.latency_ms must be a finite number >= 0")
        if not isinstance(latency, float):
            object.__setattr__(self, "latency_ms", float(latency))
        object.__setattr__(self, "usage", normalize_usage(self.usage))
        cost = self.cost
        if cost is not None:
            if isinstance(cost, bool) or isinstance(cost, float) or not isinstance(cost, (Decimal, int)):
                raise TypeError("ActivityRecord.cost must be a Decimal or None (never a float: money is exact)")
            if isinstance(cost, int):
                cost = Decimal(cost)
                object.__setattr__(self, "cost", cost)
            if not cost.is_finite():
                raise ValueError("ActivityRecord.cost must be a finite Decimal")
        if not isinstance(self.stream, bool):
            raise TypeError("ActivityRecord.stream must be a bool")
        if self.attempts is not None:
            object.__setattr__(self, "attempts", normalize_attempts(self.attempts))

    @property
    def forwarded(self) -> bool:
        """True when the request reached an upstream."""
        return self.route_kind in FORWARDED_KINDS


def _attempt(item: Any) -> Attempt:
    """One attempt from an Attempt, a (target, status, latency_ms, error) tuple or a mapping with those keys."""
    if isinstance(item, Mapping):
        item = Attempt(**item)
    elif isinstance(item, tuple):
        item = Attempt(*item)
    else:
        raise TypeError(f"an attempt must be a tuple or a mapping, not {type(item).__name__}")
    target, status, latency, error = item
    _check_str("attempts[].target", target, optional=False)
    _check_str("attempts[].error", error, optional=True)
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise TypeError("an attempt's status must be an int or None")
    if isinstance(latency, bool) or not isinstance(latency, (int, float)):
        raise TypeError("an attempt's latency_ms must be a number")
    if not math.isfinite(latency) or latency < 0:
        raise ValueError("an attempt's latency_ms must be a finite number >= 0")
    return Attempt(target, status, float(latency), error)


def normalize_attempts(attempts: Sequence[Any]) -> tuple[Attempt, ...]:
    """Attempts as a tuple of :class:`Attempt` (hashable, comparable); raises TypeError/ValueError for a bad one."""
    if isinstance(attempts, (str, bytes, Mapping)) or not isinstance(attempts, Sequence):
        raise TypeError("ActivityRecord.attempts must be a sequence of attempts or None")
    return tuple(_attempt(a) for a in attempts)


def attempts_text(attempts: Sequence[tuple] | None, clean: Callable[[Any], Any] | None = None) -> str | None:
    """Attempts as the ``attempts`` column stores them: a JSON array of objects (ASCII), or None.

    ``clean`` (gwctl.activity.query.clean_text) makes each string storable the way the text columns are."""
    if attempts is None:
        return None
    keep = clean or (lambda v: v)
    return json.dumps(
        [
            {"target": keep(target), "status": status, "latency_ms": latency, "error": keep(error)}
            for target, status, latency, error in attempts
        ]
    )


def attempts_from_text(text: str | None) -> tuple[Attempt, ...] | None:
    """Inverse of :func:`attempts_text`."""
    if text is None:
        return None
    return tuple(Attempt(a["target"], a["status"], float(a["latency_ms"]), a["error"]) for a in json.loads(text))


def attempts_to_json(attempts: Sequence[Attempt] | None) -> list[dict[str, Any]] | None:
    """Attempts for ``--json`` output: a list of objects, or None."""
    if attempts is None:
        return None
    return [a._asdict() for a in attempts]


def attempts_line(attempts: Sequence[Attempt]) -> str:
    """Attempts in a few words: ``a/x 503 12ms -> b/y 200 40ms`` (``-`` for an attempt without an answer)."""
    return " -> ".join(f"{a.target} {'-' if a.status is None else a.status} {a.latency_ms:.0f}ms" for a in attempts)


def normalize_usage(usage: Mapping[str, int] | None) -> dict[str, int]:
    """Return usage with known kinds only, canonical order, zeros left out.

    Raises ValueError for an unknown kind or a negative count and TypeError
    for a non-integer count (bools are refused too).
    """
    if usage is None:
        return {}
    if all(type(v) is int and v > 0 for v in usage.values()) and _USAGE_KIND_SET.issuperset(usage):
        return {k: usage[k] for k in USAGE_KINDS if k in usage}  # the common case: already clean
    unknown = [k for k in usage if k not in USAGE_KINDS]
    if unknown:
        raise ValueError(
            f"unknown usage kind(s) {', '.join(map(repr, sorted(map(str, unknown))))}; "
            f"expected some of {', '.join(USAGE_KINDS)}"
        )
    out: dict[str, int] = {}
    for kind in USAGE_KINDS:
        n = usage.get(kind, 0)
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"usage[{kind!r}] must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"usage[{kind!r}] must be >= 0, got {n}")
        if n:
            out[kind] = n
    return out


@dataclass(frozen=True)
class SummaryRow:
    """Totals for one group of activity rows.

    ``usage`` holds every kind of :data:`USAGE_KINDS` (zeros included) so
    every row has the same shape. The counters overlap on purpose:

    - ``billed``: rows with a cost (``cost`` sums exactly those);
    - ``unbilled``: forwarded rows (passthrough/managed) without a cost that
      are not errors;
    - ``rejected``: route kind ``rejected``/``not_found``, or a rejection rule set;
    - ``errors``: route kind ``error`` or a status >= 500.
    """

    key: str | None  # the group value; "YYYY-MM-DD" (UTC) for by="day"
    requests: int
    usage: dict[str, int] = field(hash=False)
    cost: Decimal
    billed: int
    unbilled: int
    rejected: int
    errors: int


class DaySourceRow(NamedTuple):
    """Totals of one source on one UTC day (the report's day chart), counted as :class:`SummaryRow` counts."""

    day: str  # "YYYY-MM-DD", UTC
    source: str | None
    requests: int
    billed: int
    unbilled: int
    cost: Decimal  # exact sum of the billed rows' costs (0 when none was billed)


RouteKey = tuple[str | None, str | None]
"""(source, model) of a forwarded request."""


class ActivityLog(Protocol):
    """What every backend offers. Open one with :func:`gwctl.activity.open_log`."""

    dsn: str

    def write_many(self, records: Sequence[ActivityRecord]) -> None:
        """Append records in one transaction (all or nothing)."""

    def reprice(self, updates: Sequence[tuple[str, datetime, Decimal | None]], at: datetime) -> int:
        """Rewrite the costs of rows (request id, time, new cost) in one transaction, keeping each row's first
        cost and the time ``at`` of the correction; the number of rows changed."""

    def row(self, r: Any) -> tuple:
        """Insert parameters for a neutral row (:class:`gwctl.activity.entry.LogRow`), unvalidated:
        for writers whose rows come from gwctl's own proxy (the log writer process)."""

    def write_rows(self, rows: Sequence[tuple]) -> None:
        """Append prepared :meth:`row` tuples in one transaction (all or nothing)."""

    def list(
        self,
        *,
        since: datetime | None = None,
        source: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        key: str | None = None,
        limit: int | None = 100,
    ) -> "list[ActivityRecord]":
        """Matching records, newest first; ``limit=None`` returns them all."""

    def scan(self, *, since: datetime | None = None) -> Iterator[ActivityRecord]:
        """Every record of the period, newest first, a row at a time (the log locked until it is exhausted)."""

    def summary(
        self,
        *,
        by: str,
        since: datetime | None = None,
        source: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        key: str | None = None,
    ) -> builtins.list[SummaryRow]:
        """Totals per group; see :func:`gwctl.activity.query.order_summary` for the order."""

    def day_sources(self, *, since: datetime | None = None) -> builtins.list[DaySourceRow]:
        """Totals per (UTC day, source), unordered, grouped by the database (one row per group)."""

    def rejections(self, *, since: datetime | None = None) -> builtins.list[tuple[str | None, int]]:
        """Rejected rows (the summary's ``rejected``) counted by rule, unordered."""

    def route_latencies(self, *, since: datetime | None = None) -> dict[RouteKey, array[float]]:
        """The latency of every forwarded row, per (source, model), unordered: streamed from the database
        into 8 bytes a row, never one record per row."""

    def close(self) -> None:
        """Release the connection; the log is unusable afterwards."""


def record_to_json(record: ActivityRecord) -> dict[str, Any]:
    """A JSON-ready dict: ISO time with ``Z``, cost as an exact decimal string or null."""
    return {
        "time": format_utc(record.time),
        "request_id": record.request_id,
        "key_name": record.key_name,
        "agent": record.agent,
        "route_kind": record.route_kind,
        "source": record.source,
        "model": record.model,
        "upstream_model": record.upstream_model,
        "path": record.path,
        "status": record.status,
        "latency_ms": record.latency_ms,
        "usage": dict(record.usage),
        "cost": decimal_text(record.cost) if record.cost is not None else None,
        "rule": record.rule,
        "stream": record.stream,
        "error": record.error,
        "attempts": attempts_to_json(record.attempts),
        "shape": None if record.shape is None else json.loads(record.shape),
        "original_cost": None if record.original_cost is None else decimal_text(record.original_cost),
        "repriced_at": None if record.repriced_at is None else format_utc(record.repriced_at),
    }


def summary_cost_known(row: SummaryRow) -> bool:
    """False for a group whose forwarded requests were all unbilled: its cost is unknown, not zero."""
    return row.billed > 0 or row.unbilled == 0


def summary_to_json(row: SummaryRow) -> dict[str, Any]:
    """A JSON-ready dict; ``cost`` is an exact decimal string (the billed rows' sum), or null when the
    group had forwarded requests and none of them was billed."""
    return {
        "key": row.key,
        "requests": row.requests,
        "usage": dict(row.usage),
        "cost": decimal_text(row.cost) if summary_cost_known(row) else None,
        "billed": row.billed,
        "unbilled": row.unbilled,
        "rejected": row.rejected,
        "errors": row.errors,
    }


def decimal_text(value: Decimal) -> str:
    """Exact, plain (never exponent) notation: ``Decimal('1E-7')`` -> ``'0.0000001'``."""
    return format(value, "f")


def format_utc(t: datetime) -> str:
    """Fixed-width UTC text, ``2024-05-01T12:00:00.000000Z``: sorts as it is ordered in time."""
    if t.tzinfo is not timezone.utc:
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("a timezone-aware datetime is required")
        t = t.astimezone(timezone.utc)
    # %-formatting: half the cost of isoformat() or an f-string here, and the log formats one per row
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)


def parse_utc(text: str) -> datetime:
    """Inverse of :func:`format_utc`."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)
