"""The proxy's activity writer, in a child process of its own.

Writing the log in a thread of the proxy's process cost the proxy about as
much CPU as everything else it does per request (benchmarks/README.md): the
thread and the event loop took turns on one GIL for every row. So each proxy
worker starts one child (``python -m gwctl.activity.child``) and hands it the
raw facts of each request: :meth:`ChildWriter.submit` appends a tuple
(:data:`WIRE_FIELDS`) to a list, and every ``batch_rows`` rows or
``flush_interval`` seconds the list goes down the child's stdin as one pickled
frame, without blocking the event loop. The child prices the usage (exact
Decimals, at the catalog entry the request was decided with), turns each row
into insert parameters (the backends' ``row()``, the same mapping their
``write_many`` uses) and writes through a
:class:`~gwctl.activity.writer.LogSink` with the writer's retry policy.

The child runs in a session of its own and ignores SIGINT and SIGTERM (a
Ctrl-C signals the terminal's whole process group, a service manager the
whole cgroup): it stops when its stdin closes, after writing what it was
sent, so the parent's drain decides when logging ends, and a parent that
dies still gets its rows written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from operator import itemgetter
from datetime import datetime, timezone
from decimal import Decimal

from gwctl.activity.dsn import parse_dsn
from gwctl.activity.record import USAGE_KINDS
from gwctl.core.prices import format_usd
from gwctl.core.pricing import USAGE_FIELDS, price_plan

log = logging.getLogger("gwctl.activity")

WIRE_FIELDS = (
    "time", "request_id", "key_name", "agent", "route_kind", "source", "model", "upstream_model", "path", "status",
    "latency_ms", "usage", "entry", "catalog_ref", "rule", "error", "stream",
)
"""One submitted row, in order. ``time`` is epoch seconds, ``usage`` the
counts of a :class:`~gwctl.core.pricing.Usage` (:meth:`~gwctl.core.pricing.Usage.counts`)
or None, ``entry`` the :class:`~gwctl.core.model.CatalogEntry` to price at
(None: unbilled)."""

_FRAME = struct.Struct(">I")
_WARN_EVERY_S = 10.0
_RESTART_EVERY_S = 5.0
# The writer runs at a lower priority than the proxy: it is background work that batches, so when both
# want a core the proxy should get it at once. At the same priority a woken writer took a full time slice
# (a batch of rows is milliseconds of work) while requests on that core waited: at 32 connections on two
# cores, lowering it gave ~10% more requests per second and a shorter tail (benchmarks/README.md). It still
# gets the CPU it needs whenever a core has any to spare, and keeps up (the rows lag the requests by one
# batch in a 20 s saturation run).
_NICENESS = 10


class ChildWriter:
    """The parent's side: batch rows in the event loop, ship them to the child."""

    def __init__(self, dsn: str | None, *, access_log: bool = False, batch_rows: int = 1024,
                 flush_interval: float = 0.05, max_buffer: int = 64 * 1024 * 1024, close_timeout: float = 10.0):
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
        self.submitted = 0
        self.dropped = 0
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
        args = [sys.executable, "-m", "gwctl.activity.child", "--close-timeout", str(self.close_timeout)]
        if self.dsn is not None:
            args += ["--dsn", self.dsn]
        if self.access_log:
            args.append("--access-log")
        # The child must not die of the signals meant for the proxy. It runs in a session of its own, so a
        # Ctrl-C (SIGINT to the terminal's foreground process group) never reaches it, not even while it
        # starts; and a shell sets SIGINT/SIGTERM to ignored before exec'ing Python, which keeps them ignored,
        # for whoever signals it by pid or by cgroup (a service manager). Not the loop's spawn (libuv resets
        # dispositions) and not preexec_fn (unsafe once the proxy has threads); setsid is done by
        # subprocess in C, safely.
        self._last_start = time.monotonic()
        self._proc = subprocess.Popen(["/bin/sh", "-c", 'trap "" INT TERM; exec "$0" "$@"', *args],
                                      stdin=subprocess.PIPE, start_new_session=True)
        loop = asyncio.get_running_loop()
        self._pipe, _ = await loop.connect_write_pipe(asyncio.Protocol, self._proc.stdin)

    def submit(self, row: tuple) -> None:
        """Queue one row (see :data:`WIRE_FIELDS`); never blocks, never raises."""
        if self._closed:
            self.dropped += 1
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
            if pipe is None or pipe.is_closing() or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.poll()
                raise ConnectionError(f"the activity writer process is not running (exit code {code})")
            if pipe.get_write_buffer_size() > self.max_buffer:
                raise BufferError(f"the activity writer process is {self.max_buffer} bytes behind")
            data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
            pipe.write(_FRAME.pack(len(data)) + data)
        except Exception as exc:  # never raise into a request
            self.dropped += len(rows)
            now = time.monotonic()
            if now - self._last_warn >= _WARN_EVERY_S:
                self._last_warn = now
                log.error("dropped %d activity row(s): %s (%d dropped in total)", len(rows), exc, self.dropped)
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


def neutral_row(row: tuple, plans: dict | None = None) -> tuple:
    """A submitted row as the backends' neutral row (gwctl.activity.query.ROW_FIELDS), priced here, exactly.

    ``plans`` caches each catalog entry's :class:`~gwctl.core.pricing.PricePlan`
    by object identity: pass one dict per unpickled batch, whose rows share
    their entry objects (and keep them alive while the dict is used).
    """
    (t, rid, key_name, agent, kind, source, model, upstream_model, path, status, latency, usage, entry, ref,
     rule, error, stream) = row
    cost = None
    if entry is not None and usage is not None:
        plan = None if plans is None else plans.get(id(entry))
        if plan is None:
            plan = price_plan(entry, ref or "")
            if plans is not None:
                plans[id(entry)] = plan
        total = plan.total(usage)
        cost = None if total is None else Decimal(format_usd(total))  # exact, without trailing zeros
    counts = _NO_USAGE if usage is None else _ACTIVITY_COUNTS(usage)
    return (datetime.fromtimestamp(t, timezone.utc), rid, key_name, agent, kind, source, model, upstream_model, path,
            status, latency, counts, cost, rule, stream, error)


def access_line(row: tuple) -> str:
    """One access-log line for a neutral row."""
    (t, rid, _key, agent, kind, _source, model, _up, path, status, latency, _counts, cost, rule, _stream, _error) = row
    return (f"{t.isoformat(timespec='milliseconds')} {rid} {status} {path} "
            f"agent={agent or '-'} model={model or '-'} {kind} {latency:.1f}ms"
            f"{' cost=' + str(cost) if cost is not None else ''}{' rule=' + rule if rule else ''}\n")


def _write_rows(target, rows: list) -> None:
    target.write_rows([target.row(*r) for r in rows])


def _read_exact(stream, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        piece = stream.read(n - len(buf))
        if not piece:
            return None
        buf += piece
    return buf


def main(argv: list[str] | None = None) -> int:
    """The child: read frames from stdin until EOF, write them, exit 0 when all were written.

    One thread: a frame is turned into records and written before the next is
    read (a writer thread beside the reader cost more in GIL hand-offs than it
    saved). While the database is unavailable the child retries with backoff
    and reads nothing, so the pipe and then the parent's buffer take the rows
    (the parent drops and counts them past its limit).
    """
    import argparse

    from gwctl.activity import open_log, redact_dsn
    from gwctl.activity.writer import LogSink

    ap = argparse.ArgumentParser(prog="python -m gwctl.activity.child")
    ap.add_argument("--dsn")
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--close-timeout", type=float, default=10.0)
    ap.add_argument("--retry-max-delay", type=float, default=5.0)
    args = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.nice(_NICENESS)
    except OSError:  # pragma: no cover - lowering one's own priority is always allowed on POSIX
        pass
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    dsn = args.dsn
    sink = LogSink(lambda: open_log(dsn), redact_dsn(dsn), write=_write_rows, ident=lambda r: r[1]) if dsn else None
    stdin = sys.stdin.buffer
    bad = 0
    pending: list[tuple] = []  # neutral rows

    def write(deadline: float | None) -> None:
        """Write what is pending; retry with backoff until done (or the deadline, when closing)."""
        nonlocal pending
        delay = 0.05
        while pending:
            done, _written, _refused = sink.write(pending)
            if done:
                pending = []
                return
            if deadline is not None and time.monotonic() + delay > deadline:
                log.error("activity writer closed with %d record(s) unwritten (%s)", len(pending), redact_dsn(dsn))
                return
            time.sleep(delay)
            delay = min(delay * 2, args.retry_max_delay)

    while True:
        head = _read_exact(stdin, _FRAME.size)
        if head is None:
            break
        data = _read_exact(stdin, _FRAME.unpack(head)[0])
        if data is None:
            log.error("the proxy closed the activity pipe in the middle of a batch")
            break
        plans: dict = {}
        for row in pickle.loads(data):
            try:
                rec = neutral_row(row, plans)
            except Exception:  # a bug, never a client's fault: keep the others
                bad += 1
                log.exception("could not build an activity record")
                continue
            if args.access_log:
                sys.stderr.write(access_line(rec))
            if sink is not None:
                pending.append(rec)
        if args.access_log:
            sys.stderr.flush()
        if sink is not None:
            write(None)
    if sink is not None:
        write(time.monotonic() + args.close_timeout)
        sink.close()
    return 0 if not pending and not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
