"""The proxy's activity writer, in a child process of its own.

Writing the log in a thread of the proxy's process cost the proxy about as
much CPU as everything else it does per request (benchmarks/README.md): the
thread and the event loop took turns on one GIL for every row. So each proxy
worker starts one child (``python -m gwctl.activity.child``) and hands it the
raw facts of each request: :meth:`ChildWriter.submit` appends a
:class:`~gwctl.activity.entry.LogEntry` (as a plain tuple) to a list, and every ``batch_rows`` rows or
``flush_interval`` seconds the list goes down the child's stdin as one pickled
frame, without blocking the event loop. The child prices the usage (exact
Decimals, at the catalog entry the request was decided with), turns each row
into a :class:`~gwctl.activity.entry.LogRow` and that into insert parameters (the backends' ``row()``, the same mapping their
``write_many`` uses) and writes through a
:class:`~gwctl.activity.writer.LogSink` with the writer's retry policy.

The child runs in a session of its own and ignores SIGINT and SIGTERM (a
Ctrl-C signals the terminal's whole process group, a service manager the
whole cgroup): it stops when its stdin closes, after writing what it was
sent, so the parent's drain decides when logging ends, and a parent that
dies still gets its rows written.

When the database is unavailable (down, restarting, locked past SQLite's
busy timeout, disk full) no row is lost up to a bound, and none silently
past it:

1. the child logs that the log is unavailable (and how many rows wait), keeps
   reading and holds up to ``--max-pending-rows`` rows (100,000 by default,
   about 45 MB), retrying with exponential backoff from 0.05 s up to
   ``--retry-max-delay`` (5 s), so rows are written at most that long after
   the database is back, and logs the recovery with the number of rows that
   were waiting;
2. past that it stops reading: the OS pipe, then the proxy's buffer (up to
   ``max_buffer``, 64 MiB of pickled rows, about half a million rows) hold
   the rest;
3. past that the proxy drops rows, counts them (:meth:`ChildWriter.health`)
   and logs how many (at most every 10 s, and once more when it stops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Callable

from gwctl.activity.dsn import parse_dsn
from gwctl.activity.entry import LogEntry, LogRow
from gwctl.activity.record import USAGE_KINDS
from gwctl.core.catalog_values import format_usd
from gwctl.core.pricing import USAGE_FIELDS, price_plan
from gwctl.core.request import shape_text
from gwctl.core.text import printable
from gwctl.logs import json_line

if TYPE_CHECKING:
    from gwctl.proxy.metrics import WriterMetrics

log = logging.getLogger("gwctl.activity")

WIRE_FIELDS = LogEntry._fields
"""The fields of one submitted row, a :class:`~gwctl.activity.entry.LogEntry`."""

_FRAME = struct.Struct(">I")
_WARN_EVERY_S = 10.0
_RESTART_EVERY_S = 5.0
MAX_PENDING_ROWS = 100_000
"""Rows the writer process holds while the database is unavailable (neutral rows, ~450 bytes each)."""
_WRITE_ROWS = 1024  # rows per transaction when the writer catches up on many
_STILL_DOWN_EVERY_S = 30.0
_READ_SIZE = 1 << 20
# The writer runs at a lower priority than the proxy: it is background work that batches, so when both
# want a core the proxy should get it at once. At the same priority a woken writer took a full time slice
# (a batch of rows is milliseconds of work) while requests on that core waited: at 32 connections on two
# cores, lowering it gave ~10% more requests per second and a shorter tail (benchmarks/README.md). It still
# gets the CPU it needs whenever a core has any to spare, and keeps up (the rows lag the requests by one
# batch in a 20 s saturation run).
_NICENESS = 10


class ChildWriter:
    """The parent's side: batch rows in the event loop, ship them to the child."""

    def __init__(
        self,
        dsn: str | None,
        *,
        access_log: bool = False,
        batch_rows: int = 1024,
        flush_interval: float = 0.05,
        max_buffer: int = 64 * 1024 * 1024,
        close_timeout: float = 10.0,
        max_pending_rows: int = MAX_PENDING_ROWS,
        retry_max_delay: float = 5.0,
        log_format: str = "text",
        metrics_dir: str | None = None,
    ):
        if dsn is None and not access_log:
            raise ValueError("ChildWriter needs an activity DSN, an access log, or both")
        if dsn is not None:
            parse_dsn(dsn)  # a malformed DSN fails here, at startup
        self.dsn = dsn
        self.access_log = access_log
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.close_timeout = close_timeout
        self.max_pending_rows = max_pending_rows
        self.retry_max_delay = retry_max_delay
        self.log_format = log_format  # the child's own lines and the access log: text or json (gwctl.logs)
        self.metrics_dir = metrics_dir  # the proxy's metrics run directory: the child publishes its figures there
        self.submitted = 0
        self.dropped = 0
        self._unreported = 0  # dropped rows not yet in a log line
        self._drop_reason = ""
        self._drop_timer: asyncio.TimerHandle | None = None
        self._rows: list[tuple] = []
        self._timer: asyncio.TimerHandle | None = None
        self._proc: subprocess.Popen | None = None
        self._pipe: asyncio.WriteTransport | None = None
        self._closed = False
        self._last_warn = 0.0
        self._last_start = 0.0
        self._restarting = False
        self._restart_task: asyncio.Task | None = None

    async def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "gwctl.activity.child",
            "--close-timeout",
            str(self.close_timeout),
            "--max-pending-rows",
            str(self.max_pending_rows),
            "--retry-max-delay",
            str(self.retry_max_delay),
        ]
        if self.dsn is not None:
            args += ["--dsn", self.dsn]
        if self.access_log:
            args.append("--access-log")
        if self.log_format != "text":
            args += ["--log-format", self.log_format]
        if self.metrics_dir is not None:
            args += ["--metrics-dir", self.metrics_dir]
        # The child must not die of the signals meant for the proxy. It runs in a session of its own, so a
        # Ctrl-C (SIGINT to the terminal's foreground process group) never reaches it, not even while it
        # starts; and a shell sets SIGINT/SIGTERM to ignored before exec'ing Python, which keeps them ignored,
        # for whoever signals it by pid or by cgroup (a service manager). Not the loop's spawn (libuv resets
        # dispositions) and not preexec_fn (unsafe once the proxy has threads); setsid is done by
        # subprocess in C, safely.
        self._last_start = time.monotonic()
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", 'trap "" INT TERM; exec "$0" "$@"', *args], stdin=subprocess.PIPE, start_new_session=True
        )
        loop = asyncio.get_running_loop()
        self._pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, self._proc.stdin)

    def submit(self, row: tuple) -> None:
        """Queue one row, a :class:`~gwctl.activity.entry.LogEntry` (or its wire form, a tuple in its field
        order); never blocks, never raises."""
        if self._closed:
            self._drop(1, "the activity writer is closed")
            return
        self.submitted += 1
        rows = self._rows
        rows.append(row)
        if len(rows) >= self.batch_rows:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Send what is queued to the child now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._rows = self._rows, []
        if not rows:
            return
        pipe = self._pipe
        try:
            if pipe is None or self._proc is None or pipe.is_closing() or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.poll()
                raise ConnectionError(f"the activity writer process is not running (exit code {code})")
            if pipe.get_write_buffer_size() > self.max_buffer:
                raise BufferError(f"the activity writer process is {self.max_buffer} bytes behind")
            data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)  # LogEntry's wire form: see _wire_entry
            pipe.write(_FRAME.pack(len(data)) + data)
        except Exception as exc:  # never raise into a request
            self._drop(len(rows), str(exc))
            self._maybe_restart()

    def health(self) -> dict:
        """The writer's counters, for a health check: nothing here blocks or raises.

        ``submitted`` rows handed to :meth:`submit`; ``dropped`` rows lost (the
        writer process was not running, the backlog was over its limit, or the
        writer was closed), each also in a log line; ``writer_alive`` whether
        the writer process runs; ``backlog_bytes`` pickled rows sent to it that
        it has not taken yet (it stops taking them while the database is
        unavailable and it holds ``max_pending_rows``), against
        ``backlog_limit_bytes``, past which rows are dropped; ``queued_rows``
        rows batched here and not sent yet.
        """
        proc, pipe = self._proc, self._pipe
        try:
            alive = proc is not None and proc.poll() is None
        except Exception:  # pragma: no cover - poll() only fails on a broken interpreter
            alive = False
        try:
            backlog = 0 if pipe is None else pipe.get_write_buffer_size()
        except Exception:  # pragma: no cover - a closed transport
            backlog = 0
        return {
            "submitted": self.submitted,
            "dropped": self.dropped,
            "writer_alive": alive,
            "backlog_bytes": backlog,
            "backlog_limit_bytes": self.max_buffer,
            "queued_rows": len(self._rows),
        }

    def _drop(self, n: int, reason: str) -> None:
        """Count ``n`` dropped rows and say so: at once, or (within _WARN_EVERY_S of the last line) a bit later."""
        self.dropped += n
        self._unreported += n
        self._drop_reason = reason
        now = time.monotonic()
        if now - self._last_warn >= _WARN_EVERY_S:
            self._report_drops()
        elif self._drop_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - submit and flush run on the loop
                return
            self._drop_timer = loop.call_later(self._last_warn + _WARN_EVERY_S - now, self._report_drops)

    def _report_drops(self) -> None:
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._drop_timer = None
        if self._unreported:
            self._last_warn = time.monotonic()
            log.error(
                "dropped %d activity row(s): %s (%d dropped in total)",
                self._unreported,
                self._drop_reason,
                self.dropped,
            )
            self._unreported = 0

    def revive(self) -> None:
        """Start a writer process that died again (at most every few seconds), with or without rows to send: a
        readiness probe calls this, so a proxy that load balancers stopped sending to still recovers."""
        self._maybe_restart()

    def _maybe_restart(self) -> None:
        """A writer process that died (killed, out of memory) is started again, at most every few seconds."""
        proc = self._proc
        if self._closed or proc is None or proc.poll() is None or self._restarting:
            return
        now = time.monotonic()
        if now - self._last_start < _RESTART_EVERY_S:
            return
        self._restarting = True

        async def restart() -> None:
            try:
                log.warning("the activity writer process exited with code %s; starting a new one", proc.poll())
                if self._pipe is not None:
                    self._pipe.close()
                await self.start()
            except Exception as exc:
                log.error("cannot start the activity writer process again: %s", exc)
            finally:
                self._restarting = False

        self._restart_task = asyncio.get_running_loop().create_task(restart())

    async def close(self, timeout: float | None = None) -> bool:
        """Send the rest, close the child's stdin and wait for it to write everything; True when it did."""
        if self._restart_task is not None and not self._restart_task.done():
            await self._restart_task
        self.flush()
        self._closed = True
        self._report_drops()
        proc, pipe = self._proc, self._pipe
        if proc is None or pipe is None:
            return self.dropped == 0
        deadline = time.monotonic() + (self.close_timeout + 5.0 if timeout is None else timeout)
        while not pipe.is_closing() and pipe.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        pipe.close()
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        code = proc.poll()
        if code is None:
            log.error("the activity writer process did not finish in time; stopping it")
            proc.kill()
            proc.wait()
            return False
        if code != 0:
            log.error("the activity writer process exited with code %s", code)
        return code == 0 and self.dropped == 0


_NO_USAGE = (0,) * len(USAGE_KINDS)
# the activity columns' counts, picked from a Usage.counts() tuple
_ACTIVITY_COUNTS = itemgetter(*(USAGE_FIELDS.index(k) for k in USAGE_KINDS))


_wire_entry = partial(tuple.__new__, LogEntry)
"""A row off the pipe as a :class:`~gwctl.activity.entry.LogEntry`. The proxy submits each in its wire form, a
plain tuple in LogEntry's field order (gwctl.proxy.recorder): a NamedTuple pickles through a Python-level
``__getnewargs__`` per row (a 1024-row batch took ~5x as long to pickle), and building one costs the proxy's
core a second allocation per request."""


_SHAPES: dict[tuple, str] = {}


def _shape_text(shape: tuple) -> str:
    """A request shape's column text, encoded once per distinct shape."""
    text = _SHAPES.get(shape)
    if text is None:
        if len(_SHAPES) >= 4096:
            _SHAPES.clear()
        text = _SHAPES[shape] = shape_text(shape)
    return text


def neutral_row(row: LogEntry, plans: dict | None = None) -> LogRow:
    """A submitted row as the backends' neutral row, priced here, exactly.

    ``plans`` caches each catalog entry's :class:`~gwctl.core.pricing.PricePlan`
    by object identity: pass one dict per unpickled batch, whose rows share
    their entry objects (and keep them alive while the dict is used).
    """
    entry, usage = row.entry, row.usage
    cost = None
    if entry is not None and usage is not None:
        if entry.price_sets:  # priced at the set in force when the request was made
            entry = entry.at(row.time)
        plan = None if plans is None else plans.get(id(entry))
        if plan is None:
            plan = price_plan(entry, row.catalog_ref or "")
            if plans is not None:
                plans[id(entry)] = plan
        total = plan.total(usage)
        cost = None if total is None else Decimal(format_usd(total))  # exact, without trailing zeros
    return LogRow(
        time=datetime.fromtimestamp(row.time, timezone.utc),
        request_id=row.request_id,
        key_name=row.key_name,
        agent=row.agent,
        route_kind=row.route_kind,
        source=row.source,
        model=row.model,
        upstream_model=row.upstream_model,
        path=row.path,
        status=row.status,
        latency_ms=row.latency_ms,
        usage_counts=_NO_USAGE if usage is None else _ACTIVITY_COUNTS(usage),
        cost=cost,
        rule=row.rule,
        stream=row.stream,
        error=row.error,
        attempts=row.attempts,  # JSON-encoded by the backend's row(), here in the writer process
        shape=None if row.shape is None else _shape_text(row.shape),
    )


def access_line(row: LogRow) -> str:
    """One access-log line for a neutral row: one line, space-separated fields, whatever the client sent."""
    cost, rule = row.cost, row.rule
    return (
        f"{row.time.isoformat(timespec='milliseconds')} {row.request_id} {row.status} {_field(row.path)} "
        f"agent={_field(row.agent)} model={_field(row.model)} {row.route_kind} {row.latency_ms:.1f}ms"
        f"{' cost=' + str(cost) if cost is not None else ''}{' rule=' + _field(rule) if rule else ''}\n"
    )


def access_json(row: LogRow) -> str:
    """One access-log line as a JSON object (``--log-format json``): the row's facts, ASCII-escaped, no secret
    (the key's name, never the key)."""
    usage = dict(zip(USAGE_KINDS, row.usage_counts))
    return json_line(
        {
            "time": row.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": "access",
            "request_id": row.request_id,
            "status": row.status,
            "path": row.path,
            "key": row.key_name,
            "agent": row.agent,
            "route_kind": row.route_kind,
            "source": row.source,
            "model": row.model,
            "upstream_model": row.upstream_model,
            "latency_ms": round(row.latency_ms, 1),
            "stream": row.stream,
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
            "cost": None if row.cost is None else format_usd(row.cost),
            "rule": row.rule,
            "error": row.error,
        }
    )


def _field(text: str | None) -> str:
    """A client's string as one access-log field: control characters escaped (no forged lines, no terminal
    escapes) and spaces too (no forged fields); ``-`` when absent."""
    if not text:
        return "-"
    return printable(text).replace(" ", "\\x20")


def _write_rows(target, rows: list) -> None:
    target.write_rows([target.row(r) for r in rows])


def _fill(fd: int, buf: bytearray, timeout: float | None) -> bool:
    """Append what the pipe has to ``buf``, waiting up to ``timeout`` (None: until something comes); False at EOF."""
    if timeout is not None:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return True
    try:
        data = os.read(fd, _READ_SIZE)
    except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
        return True
    if not data:
        return False
    buf += data
    return True


def _frames(buf: bytearray) -> list[bytes]:
    """Take the complete frames off the front of ``buf``."""
    out = []
    pos, size = 0, len(buf)
    while size - pos >= _FRAME.size:
        (n,) = _FRAME.unpack_from(buf, pos)
        if size - pos - _FRAME.size < n:
            break
        out.append(bytes(buf[pos + _FRAME.size : pos + _FRAME.size + n]))
        pos += _FRAME.size + n
    if pos:
        del buf[:pos]
    return out


class _Outage:
    """Whether the log is taking rows, the backoff while it is not, and the lines that say so."""

    def __init__(self, label: str, max_delay: float):
        self.label = label
        self.max_delay = max_delay
        self.since: float | None = None  # when writes began to fail (monotonic)
        self.delay = 0.05
        self.next_try = 0.0
        self.last_said = 0.0
        self.said_full = False

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, waiting: int, error: str | None) -> None:
        now = time.monotonic()
        error = error or "unknown error"
        named = "" if self.label in error else f" ({self.label})"  # the backends' messages name the log already
        if self.since is None:
            self.since = self.last_said = now
            self.delay = 0.05
            log.warning(
                "the activity log%s is unavailable: %s; %d row(s) waiting, retrying every %g s at most",
                named,
                error,
                waiting,
                self.max_delay,
            )
        elif now - self.last_said >= _STILL_DOWN_EVERY_S:
            self.last_said = now
            log.warning(
                "the activity log%s is still unavailable after %.0f s: %s; %d row(s) waiting",
                named,
                now - self.since,
                error,
                waiting,
            )
        self.next_try = now + self.delay
        self.delay = min(self.delay * 2, self.max_delay)

    def full(self, held: int, limit: int) -> None:
        if self.down and not self.said_full:
            self.said_full = True
            log.warning(
                "the activity writer holds %d row(s), past its limit of %d: the next ones wait in the "
                "proxy, which drops them past its buffer and says so",
                held,
                limit,
            )

    def recovered(self, waited: int) -> None:
        if self.since is not None:
            log.warning(
                "the activity log (%s) is available again after %.1f s unavailable; "
                "wrote the %d row(s) that were waiting",
                self.label,
                time.monotonic() - self.since,
                waited,
            )
        self.since = None
        self.delay = 0.05
        self.next_try = 0.0
        self.said_full = False


class _Child:
    """The writer process's state: the bytes read and not yet framed, the rows not yet in the log, and
    whether (and until when) it is closing."""

    def __init__(
        self,
        sink,
        label: str,
        outage: _Outage,
        *,
        access_log: bool,
        limit: int,
        close_timeout: float,
        access_format: Callable[[LogRow], str] = access_line,
    ):
        self.sink = sink  # a LogSink, or None: the access log only
        self.label = label
        self.outage = outage
        self.access_log = access_log
        self.access_format = access_format
        self.limit = limit
        self.close_timeout = close_timeout
        self.fd = sys.stdin.fileno()
        self.buf = bytearray()
        self.eof = False
        self.closing_by: float | None = None  # after EOF: the deadline for what is still unwritten
        self.bad = 0
        self.pending: list[LogRow] = []  # neutral rows not yet in the log
        self.metrics: WriterMetrics | None = None  # gwctl.proxy.metrics: exact cost, rows written

    def run(self) -> int:
        """Read, price and write until EOF and all is written (or the close timeout); 0 when nothing was lost."""
        while not self._done():
            if not self.eof and len(self.pending) < self.limit:
                self._read()
            elif self.pending:
                self._wait()
            if self.pending and time.monotonic() >= self.outage.next_try:
                self._write()
            if self.metrics is not None:
                self.metrics.maybe_publish()
        if self.sink is not None:
            self.sink.close()
        if self.metrics is not None:
            self.metrics.maybe_publish(force=True)
        return 0 if not self.pending and not self.bad else 1

    def _done(self) -> bool:
        """After EOF: True once nothing is pending, or the close timeout (counted from EOF) is over."""
        if not self.eof:
            return False
        if not self.pending:
            return True
        now = time.monotonic()
        if self.closing_by is None:
            self.closing_by = now + self.close_timeout
        elif now >= self.closing_by:
            log.error("activity writer closed with %d record(s) unwritten (%s)", len(self.pending), self.label)
            return True
        return False

    def _read(self) -> None:
        """Read what the pipe has (waiting for it while nothing is pending) and take the whole frames."""
        pending, outage = self.pending, self.outage
        if not pending:
            timeout = None  # nothing to do until rows come
        elif outage.down:
            timeout = outage.next_try - time.monotonic()  # read on until the next try
        else:
            timeout = 0.0
        if self.metrics is not None:  # figures not yet published: wake up for them
            timeout = self.metrics.timeout(timeout)
        self.eof = not _fill(self.fd, self.buf, timeout)
        frames = _frames(self.buf)
        for data in frames:
            self._take(data)
        if frames and self.access_log:
            sys.stderr.flush()
        if self.eof and self.buf:
            log.error("the proxy closed the activity pipe in the middle of a batch")
            self.buf.clear()

    def _wait(self) -> None:
        """Holding its limit of rows (or closing): wait for the next try, not reading."""
        outage = self.outage
        if not self.eof:
            outage.full(len(self.pending), self.limit)
        wait = outage.next_try - time.monotonic()
        if self.closing_by is not None:
            wait = min(wait, self.closing_by - time.monotonic())
        if wait > 0:
            time.sleep(wait)

    def _take(self, data: bytes) -> None:
        """One frame's rows, priced, to the access log and the pending rows."""
        plans: dict = {}
        for row in map(_wire_entry, pickle.loads(data)):
            try:
                rec = neutral_row(row, plans)
            except Exception:  # a bug, never a client's fault: keep the others
                self.bad += 1
                log.exception("could not build an activity record")
                continue
            if self.access_log:
                sys.stderr.write(self.access_format(rec))
            if self.sink is not None:
                self.pending.append(rec)
            if self.metrics is not None:
                self.metrics.priced(row.source, row.catalog_ref, rec.cost)

    def _write(self) -> None:
        """Write what is pending, a transaction per _WRITE_ROWS rows; on failure keep the rest and back off."""
        pending, sink = self.pending, self.sink
        waiting = len(pending)
        done = 0
        while done < len(pending):
            chunk = pending[done : done + _WRITE_ROWS]
            ok, written, _refused = sink.write(chunk)
            if self.metrics is not None:
                self.metrics.wrote(written)
            if not ok:
                self.pending = sink.unwritten + pending[done + len(chunk) :]
                self.outage.failed(len(self.pending), sink.last_error)
                return
            done += len(chunk)
        self.pending = []
        self.outage.recovered(waiting)


def main(argv: list[str] | None = None) -> int:
    """The child: read frames from stdin until EOF, write them, exit 0 when all were written.

    One thread: what has arrived is turned into records and written before
    more is read (a writer thread beside the reader cost more in GIL hand-offs
    than it saved). While the database is unavailable the child retries with
    backoff and, between tries, reads on and holds up to ``--max-pending-rows``
    rows; then it stops reading, so the pipe and then the parent's buffer take
    the rows (the parent drops and counts them past its limit). See the
    module's docstring for the bound.
    """
    import argparse

    from gwctl.activity import open_log, redact_dsn
    from gwctl.activity.writer import LogSink

    ap = argparse.ArgumentParser(prog="python -m gwctl.activity.child")
    ap.add_argument("--dsn")
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--log-format", choices=("text", "json"), default="text")
    ap.add_argument("--close-timeout", type=float, default=10.0)
    ap.add_argument("--retry-max-delay", type=float, default=5.0)
    ap.add_argument("--max-pending-rows", type=int, default=MAX_PENDING_ROWS)
    ap.add_argument("--metrics-dir")
    args = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.nice(_NICENESS)
    except OSError:  # pragma: no cover - lowering one's own priority is always allowed on POSIX
        pass
    from gwctl.logs import setup

    setup(args.log_format)
    dsn = args.dsn
    label = redact_dsn(dsn) if dsn else ""
    sink = (
        LogSink(lambda: open_log(dsn), label, write=_write_rows, ident=lambda r: r.request_id, quiet=True)
        if dsn
        else None
    )
    child = _Child(
        sink,
        label,
        _Outage(label, args.retry_max_delay),
        access_log=args.access_log,
        access_format=access_json if args.log_format == "json" else access_line,
        limit=max(1, args.max_pending_rows),
        close_timeout=args.close_timeout,
    )
    if args.metrics_dir:
        from gwctl.proxy.metrics import WriterMetrics

        child.metrics = WriterMetrics(args.metrics_dir)
    return child.run()


if __name__ == "__main__":
    raise SystemExit(main())
