"""The shared bank of the limits' meters, on the activity log's database (SQLite or PostgreSQL).

Several proxy processes (workers, or instances on several machines) that log
to one database share every limit through two tables (migration 2):

* ``limit_meters``: one row per meter (a limit's budget in its UTC calendar
  window, or its requests or tokens in one minute), keyed by the ledger's
  :attr:`~gwctl.proxy.ledger.Meter.id`, with its capacity and ``settled``,
  the total every holder has reported as spent;
* ``limit_leases``: per meter and holder (a process), the part of the
  capacity it may spend without asking (granted, not yet settled), and when
  that lease expires.

:class:`SqlBank` is the :class:`~gwctl.proxy.ledger.Bank` of one process:
``sync`` settles what the process spent and grants its next lease, in one
transaction that serialises the holders of a meter (SQLite ``BEGIN
IMMEDIATE``; PostgreSQL ``SELECT .. FOR UPDATE`` on the meter's row). The
grant (:func:`grant`) covers what the process has in flight and needs now,
plus a slice (1/:data:`SHARE`) of what is left for the next requests; slices
shrink as the capacity runs out, so no holder sits on what others need, and
an idle holder's heartbeat returns its lease (it gets none). The
sum of what is settled and leased never exceeds the capacity, except by what
holders already had in flight when it ran out (a lease never shrinks below
its holder's reservations; the ledger then refuses new requests).

A lease lives :data:`LEASE_TTL` seconds past its last ``sync``: the ledger's
heartbeat renews it, and the lease of a holder that died (SIGKILL, a lost
machine) is freed when it expires; what it spent and had not yet settled is
lost to the meter (at most a heartbeat's worth).

A USD meter starts, when its row is created, from the exact sum of the costs
already in the activity log for its target and window: a restarted proxy, a
second instance or a limit added mid-window sees what was spent. Requests and
tokens meters (one minute) start at zero.

Time is the caller's clock (``time.time()``), not the database server's:
lease expiry compares one holder's clock with another's, which is right on one
machine and within NTP's error across machines (small next to the 10 s TTL).
Window bounds come from the caller too (the meter's ``start``/``end``).

:func:`meter_status` and :func:`spent_in_window` are read-only views for
``gwctl limit status`` and the dry-run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, cast

from gwctl.activity import open_log
from gwctl.activity.query import EXACT, Dialect
from gwctl.activity.record import FORWARDED_KINDS, REJECTED_KINDS, ActivityError, decimal_text
from gwctl.core.limits import parse_target

if TYPE_CHECKING:
    from gwctl.proxy.ledger import Meter

log = logging.getLogger("gwctl.proxy")

Amount = Decimal | int

USD = "usd"  # the ledger's measures (gwctl.proxy.ledger): usd, requests, tokens
LEASE_TTL = 10.0
"""Seconds a lease lives past its holder's last sync (the ledger syncs every second)."""
SHARE = 4
"""A grant adds 1/SHARE of what is left after the holder's need, as a slice for its next requests."""
RETAIN = 600.0
"""Seconds a meter's row is kept after its window ended (late settlements of retiring meters), then dropped."""

_FLOOR = Context(prec=28, rounding=ROUND_FLOOR)  # a slice is rounded down, never up


# --- the arithmetic ----------------------------------------------------------------


def grant(
    capacity: Amount, settled: Amount, others: Amount, reserved: Amount, need: Amount, share: int = SHARE
) -> Amount:
    """The lease for a holder that has ``reserved`` in flight and asks for ``need`` more.

    ``room`` is what nobody holds: capacity - settled - the other holders' leases. When it covers
    ``reserved + need`` (``want``) the grant is ``want`` plus a slice, ``(room - want) / share``
    (rounded down; integer floor for counts), which never exceeds ``room``. Otherwise it is ``room``,
    but never less than ``reserved``: what is in flight stays held even if that leaves the meter over
    its capacity (the caller refuses new requests). Pure; all ints give an int, else a Decimal.
    """
    with localcontext(EXACT):  # + and - never round (a trap would raise instead)
        room = capacity - settled - others
        want = reserved + need
        if room >= want:
            extra = room - want
            if isinstance(extra, int):
                part: Amount = extra // share
            else:
                part = _FLOOR.divide(extra, Decimal(share))
            return min(room, want + part)
        return max(reserved, room)


def _add(a: Amount, b: Amount) -> Amount:
    """a + b, exactly (Decimal's default context keeps 28 digits)."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return EXACT.add(Decimal(a), Decimal(b))


# --- the target filter ---------------------------------------------------------------


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def target_where(target: str, ph: str) -> tuple[str, list[Any]]:
    """SQL (for ``WHERE``) matching the activity rows that count against ``target``, and its parameters.

    ``key:NAME`` -> key_name; ``agent:PATH`` -> the agent or any subagent (``PATH/...``); ``source:NAME``
    -> source; ``model:SOURCE/MODEL_ID`` -> source and upstream_model (the model id may hold ``/``).
    Subagents are matched by ``LIKE`` with its metacharacters escaped, and by an exact prefix comparison
    as well, since SQLite's LIKE ignores ASCII case. ValueError for a malformed target.
    """
    kind, name = parse_target(target)
    if kind == "key":
        return f"key_name = {ph}", [name]
    if kind == "source":
        return f"source = {ph}", [name]
    if kind == "model":
        source, _, model_id = name.partition("/")
        return f"(source = {ph} AND upstream_model = {ph})", [source, model_id]
    prefix = name + "/"
    return (
        f"(agent = {ph} OR (agent LIKE {ph} ESCAPE '\\' AND substr(agent, 1, CAST({ph} AS INTEGER)) = {ph}))",
        [name, _like_escape(prefix) + "%", len(prefix), prefix],
    )


def _window_where(dialect: Dialect, start: float, end: float | None) -> tuple[str, list[Any]]:
    ph, to_param = dialect.placeholder, dialect.time_param
    sql, params = f"time >= {ph}", [to_param(datetime.fromtimestamp(start, timezone.utc))]
    if end is not None:
        sql += f" AND time < {ph}"
        params.append(to_param(datetime.fromtimestamp(end, timezone.utc)))
    return sql, params


def _quoted(values: frozenset[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))  # our constants, not user input


# --- the database ------------------------------------------------------------------------


class _Db:
    """An open, migrated activity log and what the bank's SQL needs of its backend."""

    def __init__(self, dsn: str, *, create: bool = True):
        # a SqliteLog or a PostgresLog, migrated on opening; the bank uses its connection and error messages
        self.log: Any = cast(Any, open_log(dsn, create=create))
        self.dialect: Dialect = self.log.dialect
        self.sqlite = self.dialect.placeholder == "?"
        self.ph = self.dialect.placeholder
        self.db_error: type[Exception] = self.log.db_error
        self.conn: Any = self.log._connection()

    def amount(self, value: Amount) -> Any:
        """An amount as the backend stores it: exact decimal text (SQLite), numeric (PostgreSQL)."""
        return decimal_text(Decimal(value)) if self.sqlite else value

    @staticmethod
    def read(raw: Any, measure: str) -> Amount:
        value = Decimal(raw)
        return value if measure == USD else int(value)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", self.ph), params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        else:
            with self.conn.transaction():
                yield

    def error(self, what: str, e: BaseException) -> ActivityError:
        return self.log._error(what, e)

    def close(self) -> None:
        self.log.close()


def _spent(db: _Db, target: str, start: float, end: float | None) -> tuple[Decimal, int, int]:
    where, params = target_where(target, db.ph)
    window, wparams = _window_where(db.dialect, start, end)
    forwarded = _quoted(FORWARDED_KINDS)
    sql = (
        f"SELECT {db.dialect.cost_sum},"
        f" SUM(CASE WHEN cost IS NULL AND route_kind IN ({forwarded}) AND status < 400 THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN route_kind NOT IN ({_quoted(REJECTED_KINDS)}) THEN 1 ELSE 0 END)"
        f" FROM activity WHERE {window} AND {where}"
    )
    cost, unbilled, requests = db.conn.execute(sql, [*wparams, *params]).fetchone()
    return (Decimal(cost) if cost is not None else Decimal(0)), int(unbilled or 0), int(requests or 0)


# --- the bank ------------------------------------------------------------------------------------


def default_holder() -> str:
    """A holder id unique to this process: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class SqlBank:
    """The :class:`~gwctl.proxy.ledger.Bank` of one process on the activity log's database.

    One connection, opened on the first ``sync`` and reopened after a database error; one call at a
    time (a lock: the ledger calls ``sync`` from worker threads). Errors are :class:`ActivityError`.
    """

    shared = True

    def __init__(
        self,
        dsn: str,
        holder: str | None = None,
        *,
        ttl: float = LEASE_TTL,
        share: int = SHARE,
        clock: Callable[[], float] = time.time,
    ):
        if ttl <= 0 or share < 1:
            raise ValueError("a lease's ttl must be positive and share at least 1")
        self.dsn = dsn
        self.holder = holder or default_holder()
        self.ttl = ttl
        self.share = share
        self.clock = clock
        self._lock = threading.Lock()
        self._db: _Db | None = None

    def sync(self, meter: Meter, delta: Amount, need: Amount, keep: Amount = 0) -> tuple[Amount, Amount]:
        """Settle ``delta`` on the meter and replace this holder's lease; return (lease, settled).

        The lease is :func:`grant`'s, except for a holder that asks for nothing, has nothing in flight
        and admitted nothing since its last sync (``meter.used_since_sync`` false: the ledger's heartbeat
        returning an unused lease): it gets none, so an idle process holds nothing and stops syncing.
        Otherwise the lease is at least ``keep`` (what the holder may have admitted against while this
        call was on its way) as far as the capacity left allows.
        """
        with self._lock:
            if self._db is None:
                self._db = _Db(self.dsn)
            db = self._db
            try:
                lease, settled, created = self._sync(db, meter, delta, need, keep)
            except db.db_error as e:  # the connection may be broken: the next call reconnects
                self._drop()
                raise db.error(f"cannot settle limit {meter.target} in", e) from e
            except BaseException:
                self._drop()
                raise
            if created:
                self._forget_old(db, meter.id)
            return lease, settled

    def _sync(self, db: _Db, meter: Meter, delta: Amount, need: Amount, keep: Amount) -> tuple[Amount, Amount, bool]:
        now = self.clock()
        measure = meter.measure
        lock = "" if db.sqlite else " FOR UPDATE"
        select = f"SELECT settled FROM limit_meters WHERE meter_id = ?{lock}"
        created = False
        with db.transaction():
            row = db.execute(select, (meter.id,)).fetchone()
            if row is None:
                initial: Amount = _spent(db, meter.target, meter.start, meter.end)[0] if measure == USD else 0
                db.execute(
                    "INSERT INTO limit_meters (meter_id, target, measure, window_start, window_end, capacity,"
                    " settled, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO NOTHING",
                    (
                        meter.id,
                        meter.target,
                        measure,
                        meter.start,
                        meter.end,
                        db.amount(meter.capacity),
                        db.amount(initial),
                        now,
                    ),
                )
                row = db.execute(select, (meter.id,)).fetchone()
                created = True
            settled = _add(db.read(row[0], measure), delta)
            db.execute("DELETE FROM limit_leases WHERE meter_id = ? AND expires < ?", (meter.id, now))
            others = db.read(0, measure)
            for (amount,) in db.execute(
                "SELECT amount FROM limit_leases WHERE meter_id = ? AND holder <> ?", (meter.id, self.holder)
            ).fetchall():
                others = _add(others, db.read(amount, measure))
            if need == 0 and meter.reserved == 0 and not meter.used_since_sync:
                lease = db.read(0, measure)  # nothing used since the last sync, nothing asked: returned
            else:
                lease = grant(meter.capacity, settled, others, meter.reserved, need, self.share)
                room = meter.capacity - settled - others
                if keep > lease and room > lease:
                    lease = min(keep, room)
            db.execute(
                "UPDATE limit_meters SET settled = ?, capacity = ?, updated = ? WHERE meter_id = ?",
                (db.amount(settled), db.amount(meter.capacity), now, meter.id),
            )
            if lease > 0:
                db.execute(
                    "INSERT INTO limit_leases (meter_id, holder, amount, expires) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (meter_id, holder) DO UPDATE SET amount = excluded.amount, expires = excluded.expires",
                    (meter.id, self.holder, db.amount(lease), now + self.ttl),
                )
            else:
                db.execute("DELETE FROM limit_leases WHERE meter_id = ? AND holder = ?", (meter.id, self.holder))
        return lease, settled, created

    def _forget_old(self, db: _Db, keep: str) -> None:
        """Drop meters (but ``keep``, just synced) whose window ended :data:`RETAIN` seconds ago, and their
        leases (best effort: a failure is logged, the next new meter tries again)."""
        cutoff = self.clock() - RETAIN
        try:
            with db.transaction():
                db.execute("DELETE FROM limit_meters WHERE window_end < ? AND meter_id <> ?", (cutoff, keep))
                db.execute(
                    "DELETE FROM limit_leases WHERE NOT EXISTS"
                    " (SELECT 1 FROM limit_meters m WHERE m.meter_id = limit_leases.meter_id)"
                )
        except db.db_error:
            log.warning("cannot drop finished limit meters from the activity log", exc_info=True)
            self._drop()

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass

    def close(self) -> None:
        """Close the connection (the leases stay until they expire; a later ``sync`` reopens it)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> SqlBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- read-only views -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterStatus:
    """One meter as the database holds it: ``settled`` by every holder, ``leased`` the live leases' sum
    (granted, not yet settled, part of it in flight), held by ``holders`` processes."""

    meter_id: str
    target: str
    measure: str
    window_start: float
    window_end: float | None
    capacity: Amount
    settled: Amount
    leased: Amount
    holders: int

    @property
    def left(self) -> Amount:
        """What no holder has spent or leased (negative when in-flight requests overran the capacity)."""
        return self.capacity - self.settled - self.leased


def meter_status(dsn: str, targets: Sequence[str] | None = None, now: float | None = None) -> list[MeterStatus]:
    """The meters whose window holds ``now`` (default: the current time), of ``targets`` (default: all),
    by target and measure. Read-only; a meter no proxy has synced in its window is not listed (see
    :func:`spent_in_window`). A missing SQLite log is an :class:`ActivityError`."""
    at = time.time() if now is None else now
    if targets is not None and not targets:
        return []
    db = _Db(dsn, create=False)
    try:
        # one statement: a consistent snapshot of the meters and their live leases on either backend
        sql = (
            "SELECT m.meter_id, m.target, m.measure, m.window_start, m.window_end, m.capacity, m.settled, l.amount"
            " FROM limit_meters m LEFT JOIN limit_leases l ON l.meter_id = m.meter_id AND l.expires >= ?"
            " WHERE m.window_start <= ? AND (m.window_end IS NULL OR m.window_end > ?)"
        )
        params: list[Any] = [at, at, at]
        if targets is not None:
            sql += f" AND m.target IN ({', '.join('?' * len(targets))})"
            params.extend(targets)
        try:
            rows = db.execute(sql + " ORDER BY m.target, m.measure, m.meter_id", params).fetchall()
        except db.db_error as e:
            raise db.error("cannot read the limit meters of", e) from e
    finally:
        db.close()
    out: dict[str, MeterStatus] = {}
    for meter_id, target, measure, start, end, capacity, settled, amount in rows:
        st = out.get(meter_id)
        if st is None:
            zero = db.read(0, measure)
            st = MeterStatus(
                meter_id,
                target,
                measure,
                float(start),
                None if end is None else float(end),
                db.read(capacity, measure),
                db.read(settled, measure),
                zero,
                0,
            )
        if amount is not None:
            lease = db.read(amount, measure)
            st = replace(st, leased=_add(st.leased, lease), holders=st.holders + (lease > 0))
        out[meter_id] = st
    return list(out.values())


def spent_in_window(dsn: str, target: str, start: float, end: float | None) -> tuple[Decimal, int, int]:
    """From the activity log alone, for ``target`` in [start, end) (end None: no end):
    (the exact sum of costs, unbilled requests, requests).

    Unbilled: rows without a cost that reached an upstream (managed or passthrough) with a status
    below 400. Requests: rows the gateway admitted (every route kind but rejected and not_found).
    The same target filter as a USD meter's starting total. A missing SQLite log is an
    :class:`ActivityError`; a malformed target a ValueError.
    """
    target_where(target, "?")  # a malformed target fails before anything is opened
    db = _Db(dsn, create=False)
    try:
        return _spent(db, target, start, end)
    except db.db_error as e:
        raise db.error(f"cannot read the spending of {target} in", e) from e
    finally:
        db.close()


__all__ = [
    "LEASE_TTL",
    "SHARE",
    "MeterStatus",
    "SqlBank",
    "default_holder",
    "grant",
    "meter_status",
    "spent_in_window",
    "target_where",
]
