"""What the SQLite and PostgreSQL logs share: writing records, reading rows back (list, summary, the report's
groups and latencies).

The SQL itself comes from :mod:`gwctl.activity.query` for either dialect; a
backend supplies its dialect, its driver's error class, how a stored time
reads back, how a neutral row (:class:`~gwctl.activity.entry.LogRow`) becomes insert parameters (``row``), the
transaction that inserts them (``write_rows``), how a long result is read a row at a time (``_stream``),
a lock and a connection.
"""

from __future__ import annotations

import builtins
from array import array
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, ContextManager, Iterator, Sequence

from gwctl.activity import query as q
from gwctl.activity.record import ActivityRecord, DaySourceRow, RouteKey, SummaryRow


class SqlReads:
    dialect: ClassVar[q.Dialect]
    db_error: ClassVar[type[Exception]]
    to_time: ClassVar[staticmethod[[Any], datetime]]

    if TYPE_CHECKING:  # what a backend supplies
        _lock: ContextManager[Any]

        def _connection(self) -> Any: ...
        def _error(self, what: str, e: BaseException) -> Exception: ...
        def _stream(self, sql: str, params: Any) -> Iterator[Any]: ...
        @staticmethod
        def row(r: q.LogRow) -> tuple[Any, ...]: ...
        def write_rows(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
        def close(self) -> None: ...

    def write_many(self, records: Sequence[ActivityRecord]) -> None:
        """Append records in one transaction, through the backend's ``row`` mapping."""
        self.write_rows([self.row(q.record_fields(r)) for r in records])

    def _fetch(self, sql: str, params: Any) -> list:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except self.db_error as e:
                raise self._error("cannot read", e) from e

    def list(
        self,
        *,
        since: datetime | None = None,
        source: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        key: str | None = None,
        limit: int | None = 100,
    ) -> builtins.list[ActivityRecord]:
        f = q.Filters(since=since, source=source, model=model, agent=agent, key=key)
        to_time = type(self).to_time
        return [
            q.record_from_row(r, to_time=to_time, to_cost=Decimal)
            for r in self._fetch(*q.list_sql(f, limit, self.dialect))
        ]

    def scan(self, *, since: datetime | None = None) -> Iterator[ActivityRecord]:
        """Every record of the period, newest first, read a row at a time (``_stream``): for a reader that
        goes through a whole period once (what-if repricing) without holding it. The log is locked until
        the iterator is exhausted or closed."""
        to_time = type(self).to_time
        for r in self._streamed(*q.list_sql(q.Filters(since=since), None, self.dialect)):
            yield q.record_from_row(r, to_time=to_time, to_cost=Decimal)

    def _streamed(self, sql: str, params: Any) -> Iterator[Any]:
        """The result a row at a time (``_stream``), the log locked meanwhile; a driver error is the log's."""
        with self._lock:
            try:
                yield from self._stream(sql, params)
            except self.db_error as e:
                raise self._error("cannot read", e) from e

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
        f = q.Filters(since=since, source=source, model=model, agent=agent, key=key)
        rows = self._fetch(*q.summary_sql(by, f, self.dialect))
        return q.order_summary((q.summary_row(r, Decimal) for r in rows), by)

    def day_sources(self, *, since: datetime | None = None) -> builtins.list[DaySourceRow]:
        rows = self._fetch(*q.day_source_sql(q.Filters(since=since), self.dialect))
        return [q.day_source_row(r, Decimal) for r in rows]

    def rejections(self, *, since: datetime | None = None) -> builtins.list[tuple[str | None, int]]:
        return [(rule, int(n)) for rule, n in self._fetch(*q.rejections_sql(q.Filters(since=since), self.dialect))]

    def route_latencies(self, *, since: datetime | None = None) -> dict[RouteKey, array[float]]:
        """Streamed (``_stream``) under the lock, so a period of millions of rows costs 8 bytes a row."""
        out: dict[RouteKey, array[float]] = {}
        for source, model, ms in self._streamed(*q.latencies_sql(q.Filters(since=since), self.dialect)):
            values = out.get((source, model))
            if values is None:
                values = out[(source, model)] = array("d")
            values.append(ms)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
