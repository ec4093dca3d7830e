"""Writing the activity log a batch at a time, so that a database outage never takes the proxy down.

The proxy's writer process (:mod:`gwctl.activity.child`) writes each batch
it receives through a :class:`LogSink`. The failure policy:

- a batch that fails is retried once on a fresh connection, then written
  record by record: records the database refuses on their own twice while
  others go in are dropped (logged at ERROR with their request id); if none
  can be written, the database is taken to be down and the caller keeps the
  batch and retries later (the writer process backs off exponentially and
  holds the rows meanwhile, then the pipe and the proxy's bounded buffer
  hold them; past that buffer the proxy drops and counts them);
- an error that says the database itself is unavailable (SQLite locked, full
  or unreadable; PostgreSQL unreachable, restarting or out of disk) never
  drops a record, even when others went in one by one before it: the rows not
  written are handed back (:attr:`LogSink.unwritten`) to be retried;
- a log that cannot be opened is the same as a database that is down.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Any, Callable

from gwctl.activity.record import ActivityLog

log = logging.getLogger("gwctl.activity")


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database is unavailable, not that a record is bad."""
    psycopg = sys.modules.get("psycopg")  # only loaded when a PostgreSQL log was opened
    kinds: tuple = (sqlite3.OperationalError,)
    if psycopg is not None:
        kinds += (psycopg.OperationalError, psycopg.InterfaceError)
    e: BaseException | None = exc
    for _ in range(8):  # the ActivityError and the driver's error it was raised from
        if e is None:
            return False
        if isinstance(e, kinds):
            return True
        e = e.__cause__ or e.__context__
    return False


class LogSink:
    """An activity log opened lazily and written a batch at a time, with the failure policy above.

    ``write`` says how a batch goes in (by default ``write_many`` of
    ActivityRecords; the writer process passes neutral rows to the backend's
    ``write_rows``) and ``ident`` names a record in the log (its request id).
    ``quiet`` leaves the "cannot open / cannot write, will retry" lines to the
    caller (at DEBUG here), which says when the log went away and came back;
    :attr:`last_error` is what the last failure said.
    """

    def __init__(
        self,
        opener: Callable[[], ActivityLog],
        label: str,
        write: Callable[[ActivityLog, list], None] | None = None,
        ident: Callable[[Any], str] | None = None,
        *,
        quiet: bool = False,
    ):
        self._opener = opener
        self._label = label
        self._log: ActivityLog | None = None
        # what a batch holds: ActivityRecords by default; the writer process passes neutral rows
        self._write_to = write or (lambda target, batch: target.write_many(batch))
        self._ident = ident or (lambda r: r.request_id)
        self._retry_level = logging.DEBUG if quiet else logging.WARNING
        self.last_error: str | None = None
        self.unwritten: list = []  # after a write that was not done: the records still to write

    def close(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except Exception:
                pass
            self._log = None

    def _open(self) -> ActivityLog | None:
        if self._log is None:
            try:
                self._log = self._opener()
            except Exception as e:
                self.last_error = _said(e)
                log.log(self._retry_level, "cannot open the activity log (%s): %s; will retry", self._label, e)
                return None
        return self._log

    def _unavailable(self, rows: list, error: BaseException | None) -> tuple[bool, int, int]:
        if error is not None:
            self.last_error = _said(error)
            log.log(self._retry_level, "cannot write to the activity log (%s): %s; will retry", self._label, error)
        self.close()
        self.unwritten = rows
        return False, 0, 0

    def write(self, batch: list) -> tuple[bool, int, int]:
        """Write one batch: (done, written, refused).

        done False means "database unavailable, retry later": the records not
        written are in :attr:`unwritten` (the whole batch, unless some went in
        one by one before the database went away; written counts those).
        """
        self.unwritten = []
        first_error: Exception | None = None
        for _attempt in range(2):  # once, then once more on a fresh connection
            target = self._open()
            if target is None:
                self.unwritten = batch
                return False, 0, 0
            try:
                self._write_to(target, batch)
            except Exception as e:
                first_error = first_error or e
                self.close()
                continue
            return True, len(batch), 0
        assert first_error is not None  # both attempts failed
        if database_unavailable(first_error):  # not the records' fault: keep them all
            return self._unavailable(batch, first_error)
        # The batch failed twice: find out whether some records are the problem.
        target = self._open()
        if target is None:
            self.unwritten = batch
            return False, 0, 0
        refused: list[tuple[Any, Exception]]
        written, refused = 0, []
        for i, r in enumerate(batch):
            try:
                self._write_to(target, [r])
                written += 1
            except Exception as e:
                if database_unavailable(e):  # it went away meanwhile: the rest waits, nothing is dropped
                    left = [x for x, _ in refused] + list(batch[i:])
                    self._unavailable(left, e)
                    return False, written, 0
                refused.append((r, e))
        if refused and written:
            # a second chance, in case the failures were a passing hiccup
            again: list[tuple[Any, Exception]] = []
            for j, (r, e0) in enumerate(refused):
                try:
                    self._write_to(target, [r])
                    written += 1
                except Exception as e:
                    if database_unavailable(e):
                        left = [x for x, _ in again] + [x for x, _ in refused[j:]]
                        self._unavailable(left, e)
                        return False, written, 0
                    again.append((r, e))
            refused = again
        if written == 0:
            return self._unavailable(batch, first_error)
        for r, err in refused:
            log.error("activity record %s refused by the log and dropped: %s", self._ident(r), err)
        return True, written, len(refused)


def _said(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
