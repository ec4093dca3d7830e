"""Writing the activity log a batch at a time, so that a database outage never takes the proxy down.

The proxy's writer process (:mod:`gwctl.activity.child`) writes each batch
it receives through a :class:`LogSink`. The failure policy:

- a batch that fails is retried once on a fresh connection, then written
  record by record: records the database refuses on their own twice while
  others go in are dropped (logged at ERROR with their request id); if none
  can be written, the database is taken to be down and the caller keeps the
  batch and retries later (the writer process backs off exponentially, and
  meanwhile stops reading, so the pipe and then the proxy's bounded buffer
  hold the rows; past that buffer the proxy drops and counts them);
- a log that cannot be opened is the same as a database that is down.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from gwctl.activity.record import ActivityLog

log = logging.getLogger("gwctl.activity")


class LogSink:
    """An activity log opened lazily and written a batch at a time, with the failure policy above.

    ``write`` says how a batch goes in (by default ``write_many`` of
    ActivityRecords; the writer process passes neutral rows to the backend's
    ``write_rows``) and ``ident`` names a record in the log (its request id).
    """

    def __init__(self, opener: Callable[[], ActivityLog], label: str,
                 write: Callable[[ActivityLog, list], None] | None = None,
                 ident: Callable[[Any], str] | None = None):
        self._opener = opener
        self._label = label
        self._log: ActivityLog | None = None
        # what a batch holds: ActivityRecords by default; the writer process passes neutral rows
        self._write_to = write or (lambda target, batch: target.write_many(batch))
        self._ident = ident or (lambda r: r.request_id)

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
                log.warning("cannot open the activity log (%s): %s; will retry", self._label, e)
                return None
        return self._log

    def write(self, batch: list) -> tuple[bool, int, int]:
        """Write one batch: (done, written, refused); done False means "database unavailable, retry later"."""
        first_error: Exception | None = None
        for _attempt in range(2):  # once, then once more on a fresh connection
            target = self._open()
            if target is None:
                return False, 0, 0
            try:
                self._write_to(target, batch)
            except Exception as e:
                first_error = first_error or e
                self.close()
                continue
            return True, len(batch), 0
        # The batch failed twice: find out whether some records are the problem.
        target = self._open()
        if target is None:
            return False, 0, 0
        written, refused = 0, []
        for r in batch:
            try:
                self._write_to(target, [r])
                written += 1
            except Exception as e:
                refused.append((r, e))
        if refused and written:
            # a second chance, in case the failures were a passing hiccup
            again = []
            for r, _ in refused:
                try:
                    self._write_to(target, [r])
                    written += 1
                except Exception as e:
                    again.append((r, e))
            refused = again
        if written == 0:
            log.warning("cannot write to the activity log (%s): %s; will retry", self._label, first_error)
            self.close()
            return False, 0, 0
        for r, e in refused:
            log.error("activity record %s refused by the log and dropped: %s", self._ident(r), e)
        return True, written, len(refused)
