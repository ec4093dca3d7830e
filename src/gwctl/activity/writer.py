"""Writing activity off the request path.

A caller's event loop must never wait on a database, so it only puts
records on a queue (:meth:`BatchWriter.submit`: no I/O, never raises) and a
daemon thread with its own connection writes them in batches: every
``batch_size`` records or ``flush_interval`` seconds after the first record
of a batch, whichever comes first. :meth:`BatchWriter.close` (called on
SIGTERM) writes whatever is queued before returning, within a deadline.

Failure policy, chosen so that a database outage never takes the proxy down
and never grows memory without bound:

- the queue is bounded (``max_queue``); a record submitted to a full queue is
  dropped, counted in ``stats().dropped`` and warned about (rate-limited);
- a batch that fails is retried once on a fresh connection, then written
  record by record: records the database refuses on their own twice while
  others go in are dropped (``failed``, logged at ERROR); if none can be
  written, the database is taken to be down and
  the batch is retried with exponential backoff (up to ``retry_max_delay``)
  until it succeeds or the writer is closed;
- records still unwritten when ``close`` gives up are counted in ``lost``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from gwctl.activity.dsn import parse_dsn, redact_dsn
from gwctl.activity.record import ActivityLog, ActivityRecord

log = logging.getLogger("gwctl.activity")

_STOP = object()
_WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class WriterStats:
    submitted: int  # accepted onto the queue
    written: int  # committed to the log
    dropped: int  # refused by submit (queue full, writer closed, not a record)
    failed: int  # refused by the database on their own, not retried
    lost: int  # still unwritten when close() gave up
    pending: int  # accepted but not yet written or given up


class BatchWriter:
    """Queue + daemon thread that writes :class:`ActivityRecord` s in batches.

    Pass a DSN (the thread opens it with :func:`gwctl.activity.open_log`) or
    an ``opener`` returning an :class:`ActivityLog` (tests, custom setups).
    The thread starts at once; it opens the log itself, so a log that cannot
    be opened delays writes (retried with backoff) but never the caller.
    Threads do not survive ``fork``: with several worker processes, create
    one writer in each worker, after it has started.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        opener: Callable[[], ActivityLog] | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        max_queue: int = 10_000,
        retry_max_delay: float = 5.0,
        name: str = "gwctl-activity-writer",
    ):
        if (dsn is None) == (opener is None):
            raise ValueError("give BatchWriter either a dsn or an opener")
        if batch_size < 1 or max_queue < 1 or flush_interval < 0 or retry_max_delay <= 0:
            raise ValueError("batch_size and max_queue must be >= 1, flush_interval >= 0, retry_max_delay > 0")
        if opener is None:
            from gwctl.activity import open_log

            parse_dsn(dsn)  # a malformed DSN fails here, at startup, not in the thread
            target = dsn

            def opener() -> ActivityLog:
                return open_log(target)  # type: ignore[arg-type]

        self._opener = opener
        self._label = redact_dsn(dsn) if dsn else getattr(opener, "__name__", "activity log")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.retry_max_delay = retry_max_delay

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._deadline: float | None = None  # monotonic; set by close()
        self._wake = threading.Event()  # interrupts a backoff sleep on close()
        self._done = threading.Condition()
        self._count_lock = threading.Lock()
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._failed = 0
        self._lost = 0
        self._last_warn = 0.0
        self._unwarned_drops = 0
        self._sink = LogSink(opener, self._label)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- caller side (event loop) -------------------------------------------

    def submit(self, record: ActivityRecord) -> bool:
        """Queue one record; True if accepted. Never blocks on I/O, never raises."""
        try:
            if self._closed:
                self._drop("the activity writer is closed")
                return False
            if not isinstance(record, ActivityRecord):
                self._drop(f"not an ActivityRecord: {type(record).__name__}")
                return False
            if self._queue.qsize() >= self.max_queue:
                self._drop(f"the activity queue is full ({self.max_queue} records)")
                return False
            with self._count_lock:
                self._submitted += 1
            self._queue.put(record)
            return True
        except Exception:  # pragma: no cover - belt and braces: never raise into the proxy
            return False

    def _drop(self, why: str) -> None:
        with self._count_lock:
            self._dropped += 1
            self._unwarned_drops += 1
        now = time.monotonic()
        if self._last_warn == 0.0 or now - self._last_warn >= _WARN_EVERY_S:
            n, self._unwarned_drops, self._last_warn = self._unwarned_drops, 0, now
            try:
                log.warning("dropped %d activity record(s): %s (%d dropped in total)", n, why, self._dropped)
            except Exception:  # pragma: no cover
                pass

    def stats(self) -> WriterStats:
        with self._done:
            settled = self._written + self._failed + self._lost
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                dropped=self._dropped,
                failed=self._failed,
                lost=self._lost,
                pending=max(0, self._submitted - settled),
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted so far is written (or given up); True if so."""
        target = self._submitted
        deadline = time.monotonic() + timeout
        with self._done:
            while self._written + self._failed + self._lost < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting records, write the queued ones, close the log.

        Returns True when everything accepted was written (or refused by the
        database); False when the deadline passed first (the rest is counted
        in ``lost`` and warned about). Safe to call more than once.
        """
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._deadline = time.monotonic() + max(0.0, timeout)
                self._queue.put(_STOP)
                self._wake.set()
        self._thread.join(max(0.0, (self._deadline or time.monotonic()) - time.monotonic()) + 0.5)
        with self._done:
            lost = self._submitted - (self._written + self._failed + self._lost)
            if lost > 0:
                self._lost += lost
                self._done.notify_all()
        if lost > 0:
            log.warning("activity writer closed with %d record(s) unwritten (%s)", lost, self._label)
        return lost <= 0 and self._lost == 0

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ------------------------------------------------------

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _collect(self) -> tuple[list[ActivityRecord], bool]:
        """Block for the next batch; returns it and whether close() was seen.

        After the first record the thread sleeps until the flush interval is
        up (or the batch is full, or close() is called), then takes what is
        queued in one sweep: one wake-up per batch rather than per record.
        """
        batch: list[ActivityRecord] = []
        item = self._queue.get()
        if item is _STOP:
            return batch, True
        batch.append(item)
        flush_at = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            try:
                while len(batch) < self.batch_size:
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        return batch, True
                    batch.append(item)
            except queue.Empty:
                pass
            left = flush_at - time.monotonic()
            if left <= 0 or self._deadline is not None or len(batch) >= self.batch_size:
                break
            self._wake.wait(min(left, 0.05))
        return batch, False

    def _run(self) -> None:
        stopping = False
        pending: list[ActivityRecord] = []
        delay = 0.05
        try:
            while True:
                if not pending:
                    if stopping:
                        # drain what was queued before close()
                        try:
                            while len(pending) < self.batch_size:
                                item = self._queue.get_nowait()
                                if item is not _STOP:
                                    pending.append(item)
                        except queue.Empty:
                            pass
                        if not pending:
                            break
                    else:
                        pending, stopping = self._collect()
                        if not pending:
                            continue
                if self._write(pending):
                    pending = []
                    delay = 0.05
                    continue
                if self._past_deadline():
                    break
                if self._deadline is None:
                    self._wake.wait(delay)  # close() cuts the backoff short
                else:
                    time.sleep(0.05)  # closing: keep trying until the deadline
                delay = min(delay * 2, self.retry_max_delay)
        except Exception:  # pragma: no cover - the thread must not die silently
            log.exception("activity writer stopped unexpectedly")
        finally:
            self._close_log()

    def _close_log(self) -> None:
        self._sink.close()

    def _settle(self, written: int, failed: int) -> None:
        with self._done:
            self._written += written
            self._failed += failed
            self._done.notify_all()

    def _write(self, batch: list[ActivityRecord]) -> bool:
        """Write one batch; False means "database unavailable, keep it and retry"."""
        done, written, failed = self._sink.write(batch)
        if done:
            self._settle(written, failed)
        return done


class LogSink:
    """An activity log opened lazily and written a batch at a time, with the failure policy above.

    Used by :class:`BatchWriter`'s thread and, synchronously, by the proxy's
    log writer process (gwctl.activity.child).
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
