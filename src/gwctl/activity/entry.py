"""The two records of the proxy's activity log: what a worker hands its log writer, and what a backend inserts.

:class:`LogEntry` is the raw facts of one request, made on the proxy's hot
path and pickled to the writer process (:mod:`gwctl.activity.child`) in
batches (in its wire form, a plain tuple in its field order: see
``gwctl.activity.child._wire_entry``); :class:`LogRow` is the same request priced (by the writer process),
which each backend's ``row()`` maps to its insert parameters by field name.
Both are ``typing.NamedTuple`` s: tuples that read by name.

Adding a column: a field here (in both, if the writer process passes it
through unchanged), a migration (:mod:`gwctl.activity.migrations`) and
:mod:`gwctl.activity.query` (its column list and the readers).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Sequence


class LogEntry(NamedTuple):
    """One request as the proxy worker submits it (:meth:`gwctl.activity.child.ChildWriter.submit`).

    Nothing here is priced or cleaned: the writer process does that, off the proxy's core.
    """

    time: float  # epoch seconds
    request_id: str
    key_name: str | None  # the gateway key's name; None with --no-auth or before it was checked
    agent: str | None
    route_kind: str  # one of gwctl.activity.record.ROUTE_KINDS
    source: str | None
    model: str | None  # as the client asked for it
    upstream_model: str | None
    path: str
    status: int  # the HTTP status the client got
    latency_ms: float
    usage: tuple | None  # gwctl.core.pricing.Usage.counts(), or None when the answer had none
    entry: Any  # the gwctl.core.config.CatalogEntry to price at; None: unbilled
    catalog_ref: str | None  # the reference the entry was found under (for its price plan)
    rule: str | None  # the rejection or failure rule id
    error: str | None  # a short message for rejections and failures
    stream: bool
    attempts: list | None  # a failover plan's attempts, as gwctl.proxy.flow.Flow.attempts; None without a plan
    shape: tuple | None = None  # gwctl.core.request.request_shape of a decided request (encoded by the writer)


class LogRow(NamedTuple):
    """One request as the backends insert it (a "neutral" row): :class:`~gwctl.activity.record.ActivityRecord`'s
    fields in column order, usage as counts in ``USAGE_KINDS`` order, time a UTC datetime, cost exact or None."""

    time: datetime
    request_id: str
    key_name: str | None
    agent: str | None
    route_kind: str
    source: str | None
    model: str | None
    upstream_model: str | None
    path: str
    status: int
    latency_ms: float
    usage_counts: tuple  # in gwctl.activity.record.USAGE_KINDS order
    cost: Decimal | None  # exact USD; None: unbilled
    rule: str | None
    stream: bool
    error: str | None
    attempts: Sequence[tuple] | None  # (target, status, latency_ms, error) each; None: no plan
    shape: str | None = None  # gwctl.core.request.shape_text; None: not kept (older rows, undecided requests)
    original_cost: Decimal | None = None  # the first cost of a row `activity reprice --apply` rewrote
    repriced_at: datetime | None = None  # when it was rewritten
