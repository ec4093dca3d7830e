"""The counters behind the limits, as one proxy process holds them: meters, leases and a bank.

A :class:`Meter` is one capacity in one window: a limit's budget in USD for
its calendar window, or its requests or tokens for the current minute. Of a
meter's capacity, this process holds a *lease* (granted by the bank, not yet
settled); it spends from the lease locally, with no I/O per request:

    free here = lease - delta - reserved

where ``delta`` is what finished requests used since the last settlement and
``reserved`` what requests in flight hold. A :class:`Bank` settles and
re-grants (``sync``): it adds ``delta`` to the meter's ``settled`` total and
grants a new lease out of what is left (capacity - settled - every other
holder's lease). While a meter syncs with a shared bank (one round trip),
admissions on it wait for the new lease: one admitted against the lease being
replaced would be missing from the new one.

* :class:`LocalBank`, for a proxy without a shared log: one holder, so the
  lease is everything left.
* A shared bank (:mod:`gwctl.activity.meters`, on the activity log's SQLite or
  PostgreSQL database): each process leases a slice of what is left, slices
  shrink as the capacity runs out, an unused lease is returned on the next
  heartbeat and a dead holder's lease expires.

The ledger is asyncio code for one event loop; the bank's calls run in a
thread (they may touch a database).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from decimal import Decimal
from typing import Mapping, Protocol, Sequence

from gwctl.core.config import Limit
from gwctl.core.limits import (
    LimitState,
    Refusal,
    Reservation,
    admit,
    budget_fits,
    previous_weight,
    rate_fits,
    window_bounds,
)

log = logging.getLogger("gwctl.proxy")

USD, REQUESTS, TOKENS = "usd", "requests", "tokens"
ZERO = Decimal(0)
LIMITS_UNAVAILABLE = "limits_unavailable"  # the rule id of a request refused because the bank is unreachable
HEARTBEAT = 1.0  # seconds between settlements of what was spent (and returns of unused leases)
RENEW = 3.0  # a held lease is renewed at least this often (a shared bank's leases expire after 10 s)


class Meter:
    """One capacity (a budget, a minute's requests or tokens) in one window, as this process sees it."""

    __slots__ = (
        "id",
        "target",
        "measure",
        "capacity",
        "start",
        "end",
        "settled",
        "lease",
        "delta",
        "reserved",
        "free",
        "unbilled",
        "used_since_sync",
        "synced_at",
        "syncing",
        "returning",
        "admitted",
    )

    def __init__(self, target: str, measure: str, capacity: Decimal | int, start: float, end: float | None):
        self.id = f"{target}|{measure}|{int(start)}-{'' if end is None else int(end)}"  # one row per window
        self.target = target
        self.measure = measure
        self.capacity = capacity
        self.start = start
        self.end = end
        zero: Decimal | int = ZERO if measure == USD else 0
        self.settled = zero  # the meter's settled total (every holder's), as of the last sync
        self.lease = zero  # held by this process: granted, not yet settled
        self.delta = zero  # used by finished requests since the last sync
        self.reserved = zero  # held by requests in flight
        self.free = zero  # lease - delta - reserved, kept up to date: what admission reads
        self.unbilled = 0  # unbilled requests let through (budgets only)
        self.used_since_sync = False  # anything admitted since the last sync (else the lease is returned)
        self.synced_at = 0.0  # time.monotonic() of the last sync: a held lease is renewed before it expires
        self.returning = False  # a sync is returning this idle meter's lease: admissions wait for it
        self.admitted = 0  # admissions so far (tells whether any came while a sync was on its way)
        self.syncing: asyncio.Future[None] | None = None


def _count(meter: Meter) -> int:
    """A finished minute's requests or tokens, as this process last knew them."""
    return int(meter.settled + meter.delta + meter.reserved)


class Bank(Protocol):
    """Settles what a holder spent and grants its next lease; may block (it runs in a thread)."""

    shared: bool  # True when other processes hold leases on the same meters

    def sync(
        self, meter: Meter, delta: Decimal | int, need: Decimal | int, keep: Decimal | int = 0
    ) -> tuple[Decimal | int, Decimal | int]:
        """Settle ``delta`` and grant a lease covering ``meter.reserved + need`` if there is room (more, as a
        slice for the next requests, when there is plenty); return (the new lease, the meter's settled total).
        A lease never shrinks below ``meter.reserved``, nor below ``keep`` while there is room for it."""
        ...


class LocalBank:
    """One process alone: nothing to share, the lease is all the capacity that is left."""

    shared = False

    def __init__(self) -> None:
        self.settled: dict[str, Decimal | int] = {}

    def sync(
        self, meter: Meter, delta: Decimal | int, need: Decimal | int, keep: Decimal | int = 0
    ) -> tuple[Decimal | int, Decimal | int]:
        settled = self.settled.get(meter.id, ZERO if meter.measure == USD else 0) + delta
        self.settled[meter.id] = settled
        return max(meter.capacity - settled, meter.reserved), settled


class Ticket:
    """One admitted request's hold on its gate's meters (its reservation on each), until it is settled;
    ``needs_cost`` and ``needs_tokens`` say whether settling it needs the answer's exact cost, or its token
    count. The gate keeps the meters of the windows it was admitted in, so a request that ends after its
    window rolled over settles there."""

    __slots__ = ("gate", "reservation", "billed", "needs_cost", "needs_tokens")

    def __init__(self, gate: Gate, reservation: Reservation):
        self.gate: Gate | None = gate
        self.reservation = reservation
        self.billed = reservation.usd is not None
        self.needs_cost = self.billed and gate.has_budgets
        self.needs_tokens = gate.counts_tokens


class Gate:
    """The meters one set of limits admits against, for as long as their windows last: admission walks
    these instead of looking every meter up again (one minute at most, as a rate's meter is the minute's).

    ``budgets`` are the USD meters; ``rates`` the (meter, the meter of the minute before or None, whether
    a request counts 1 or its tokens) of the rates; ``metered`` each limit with its meters, for the
    refusal's full account."""

    __slots__ = (
        "limits",
        "epoch",
        "start",
        "until",
        "minute",
        "budgets",
        "rates",
        "metered",
        "rejects_unbilled",
        "has_budgets",
        "counts_tokens",
    )

    def __init__(self, limits: Sequence[Limit], epoch: int, metered: list, previous: Mapping, now: float):
        self.limits = limits
        self.epoch = epoch
        self.metered = metered
        meters = [m for _limit, ms in metered for m in ms if m is not None]
        self.start = max((m.start for m in meters), default=float("-inf"))
        self.until = min((m.end for m in meters if m.end is not None), default=float("inf"))
        self.minute = window_bounds("minute", now)[0]
        self.budgets = tuple(usd for _limit, (usd, _r, _t) in metered if usd is not None)
        self.rejects_unbilled = any(x.budget is not None and x.unbilled == "reject" for x, _ms in metered)
        rates = []
        for _limit, (_usd, req, tok) in metered:
            for meter, per_request in ((req, True), (tok, False)):
                if meter is not None:
                    prev = previous.get((meter.target, meter.measure))
                    rates.append((meter, prev if prev is not None and prev.end == self.minute else None, per_request))
        self.rates = tuple(rates)
        self.has_budgets = bool(self.budgets)
        self.counts_tokens = any(not per_request for _m, _prev, per_request in rates)


class Ledger:
    """The meters of one process, their bank, and admission against them."""

    def __init__(self, bank: Bank):
        self.bank = bank
        self.meters: dict[tuple[str, str], Meter] = {}  # (target, measure) -> the current window's meter
        self.retiring: list[Meter] = []  # meters of past windows still to settle
        self.previous: dict[tuple[str, str], Meter] = {}  # the minute before's requests/tokens meters
        self.gates: dict[int, Gate] = {}  # id(limits) -> their gate
        self.epoch = 0  # bumped when a meter is replaced or retired: every gate is built again
        self._warned_at = float("-inf")

    # --- meters ---------------------------------------------------------------

    def _meter(self, limit: Limit, measure: str, now: float) -> Meter:
        window = (limit.window or "total") if measure == USD else "minute"
        capacity: Decimal | int | None = (
            limit.budget if measure == USD else limit.rpm if measure == REQUESTS else limit.tpm
        )
        assert capacity is not None
        meter = self.meters.get((limit.target, measure))
        if meter is not None and (meter.end is None or now < meter.end) and now >= meter.start:
            if meter.capacity != capacity:  # the limit was edited: same window, new capacity
                meter.capacity = capacity
            return meter
        start, end = window_bounds(window, now)
        self.epoch += 1
        if meter is not None:
            self.retiring.append(meter)
            if measure != USD:
                self.previous[(limit.target, measure)] = meter
        meter = self.meters[(limit.target, measure)] = Meter(limit.target, measure, capacity, start, end)
        return meter

    def meters_of(self, limit: Limit, now: float) -> tuple[Meter | None, Meter | None, Meter | None]:
        """The limit's (budget, requests, tokens) meters for ``now``; None for what it does not cap."""
        return (
            self._meter(limit, USD, now) if limit.budget is not None else None,
            self._meter(limit, REQUESTS, now) if limit.rpm is not None else None,
            self._meter(limit, TOKENS, now) if limit.tpm is not None else None,
        )

    def state(self, limit: Limit, meters: tuple[Meter | None, Meter | None, Meter | None], now: float) -> LimitState:
        """The limit as this process can admit against it: what it may still spend is its lease's rest; the
        previous minute's counts (for the sliding rate window) are what it used as this process last knew."""
        usd, req, tok = meters
        minute = window_bounds("minute", now)[0]
        spent = reserved = ZERO
        start, end = 0.0, None
        unbilled = 0
        if usd is not None:
            spent = Decimal(usd.settled + usd.delta)
            # in flight, and leased elsewhere; never below zero: a budget can be overspent (requests in flight
            # cost more than their reservations, or the budget was lowered), and then nothing is free either
            reserved = max(ZERO, Decimal(usd.capacity - usd.free) - spent)
            start, end, unbilled = usd.start, usd.end, usd.unbilled
        requests = 0 if req is None else int(req.capacity - req.free)
        tokens = 0 if tok is None else int(tok.capacity - tok.free)
        return LimitState(
            limit,
            start,
            end,
            spent,
            reserved,
            unbilled,
            minute,
            requests,
            tokens,
            self._previous_count(limit.target, REQUESTS, minute),
            self._previous_count(limit.target, TOKENS, minute),
        )

    def _previous_count(self, target: str, measure: str, minute: float) -> int:
        prev = self.previous.get((target, measure))
        if prev is None or prev.end != minute:  # not the minute just before this one
            return 0
        return _count(prev)

    def gate(self, limits: Sequence[Limit], now: float) -> Gate:
        """The gate of ``limits`` at ``now`` (the one built before, while its windows and meters last)."""
        gate = self.gates.get(id(limits))
        if gate is None or gate.limits is not limits or gate.epoch != self.epoch or not gate.start <= now < gate.until:
            metered = [(limit, self.meters_of(limit, now)) for limit in limits]
            if len(self.gates) > 4096:
                self.gates.clear()
            gate = self.gates[id(limits)] = Gate(limits, self.epoch, metered, self.previous, now)
        return gate

    # --- admission -------------------------------------------------------------

    def try_admit(self, limits: Sequence[Limit], res: Reservation, now: float) -> Ticket | None:
        """The common case without a coroutine: a ticket when every meter admits ``res`` from what this
        process holds and none is returning its lease; None when :meth:`admit` must decide (a refusal, or
        more lease to ask the bank for). The same rules as :func:`gwctl.core.limits.check`, read straight
        off the meters: what a limit has left here is what its lease leaves (``free``, as in :meth:`state`)."""
        gate = self.gate(limits, now)
        usd = res.usd
        if usd is None:
            if gate.rejects_unbilled:
                return None
        else:
            for m in gate.budgets:
                if m.returning or not budget_fits(m.free, usd):
                    return None
        if gate.rates:
            tokens = res.tokens if gate.counts_tokens else 0
            for m, prev, per_request in gate.rates:
                if m.returning or not rate_fits(
                    m.free,
                    0 if prev is None else _count(prev),
                    0.0 if prev is None else previous_weight(gate.minute, now),
                    1 if per_request else tokens,
                ):
                    return None
        return self._reserve(gate, res)

    async def admit(
        self, limits: Sequence[Limit], res: Reservation, now: float
    ) -> tuple[Refusal | None, Ticket | None]:
        """Admit a request reserving ``res`` under every one of ``limits``, or say which refuses it.

        When this process's leases are too small and the bank is shared, it asks the bank for more (one
        round trip, shared by the requests that wait for the same meter) before refusing.
        """
        gate = self.gate(limits, now)
        metered = gate.metered
        for attempt in (0, 1):
            await self._quiet(metered)
            states = [self.state(limit, meters, now) for limit, meters in metered]
            refusal = admit(states, res, now)
            if refusal is None:
                return None, self._reserve(gate, res)
            if attempt:
                return refusal, None
            try:
                if not await self._grow(metered, res, refusal):
                    return refusal, None
            except Exception as exc:  # the bank (the log's database) is unreachable: refuse, do not guess
                return self._unavailable(refusal, exc), None
        return None, None  # pragma: no cover - the loop always returns

    @staticmethod
    async def _quiet(metered: list) -> None:
        """Wait until none of these meters is returning its lease to the bank. A request admitted against a
        lease being returned would be covered by no lease the bank knows of: it could grant that part to
        another process as well. (Other syncs keep the lease whole: admissions go on meanwhile.)"""
        while True:
            pending = [m.syncing for _limit, ms in metered for m in ms if m is not None and m.returning]
            if not pending:
                return
            await asyncio.shield(pending[0])

    def _unavailable(self, refusal: Refusal, exc: Exception) -> Refusal:
        """The 503 for a request this process cannot admit without the bank, which is unreachable."""
        now = time.monotonic()
        if now - self._warned_at > 5.0:  # one line every few seconds, not one per request
            self._warned_at = now
            log.warning("cannot reach the activity log's database to admit against %s: %s", refusal.target, exc)
        why = getattr(exc, "message", None) or exc.__class__.__name__
        return Refusal(
            LIMITS_UNAVAILABLE,
            503,
            "api_error",
            f"the gateway cannot check {refusal.target}'s limit now: its counters are in the activity log's "
            f"database, which it cannot reach ({why})",
            "retry shortly",
            refusal.target,
            1,
            (("retry-after", "1"),),
        )

    async def _grow(self, metered: list, res: Reservation, refusal: Refusal) -> bool:
        """Ask the bank for bigger leases on the meters that are short; True when it was asked."""
        if refusal.target is None or refusal.rule not in ("budget_exceeded", "rate_limited"):
            return False
        asked = False
        for limit, (usd, req, tok) in metered:
            if limit.target != refusal.target:
                continue
            for meter, need in ((usd, res.usd), (req, 1), (tok, res.tokens)):
                if meter is not None and need is not None and meter.free < need:
                    await self.sync(meter, need)
                    asked = True
        return asked

    @staticmethod
    def _reserve(gate: Gate, res: Reservation) -> Ticket:
        usd = res.usd
        for m in gate.budgets:
            if usd is None:
                m.unbilled += 1
            else:
                m.reserved += usd
                m.free -= usd
            m.used_since_sync = True
            m.admitted += 1
        if gate.rates:
            tokens = res.tokens if gate.counts_tokens else 0
            for m, _prev, per_request in gate.rates:
                n = 1 if per_request else tokens
                m.reserved += n
                m.free -= n
                m.used_since_sync = True
                m.admitted += 1
        return Ticket(gate, res)

    @staticmethod
    def cancel(ticket: Ticket) -> None:
        """Give a request's reservations back as if it had never been admitted (a failover moves it to a
        target under other limits, where it is admitted again: it counts once, there)."""
        gate = ticket.gate
        if gate is None:
            return
        ticket.gate = None
        usd = ticket.reservation.usd
        for m in gate.budgets:
            m.admitted -= 1
            if usd is None:
                m.unbilled -= 1
            else:
                m.reserved -= usd
                m.free += usd
        held = ticket.reservation.tokens if gate.counts_tokens else 0
        for m, _prev, per_request in gate.rates:
            n = 1 if per_request else held
            m.reserved -= n
            m.free += n
            m.admitted -= 1

    @staticmethod
    def settle(ticket: Ticket, cost: Decimal | None, tokens: int | None) -> None:
        """Replace a request's reservations by what it used: ``cost`` (None: unknown, the reservation is
        billed) and ``tokens`` (None: unknown, the reserved tokens count)."""
        gate = ticket.gate
        if gate is None:
            return
        ticket.gate = None
        res = ticket.reservation
        usd = res.usd
        if usd is not None:
            spent = usd if cost is None else cost
            for m in gate.budgets:
                m.reserved -= usd
                m.delta += spent
                m.free += usd - spent
        if gate.rates:
            held = res.tokens if gate.counts_tokens else 0
            used = held if tokens is None else tokens
            for m, _prev, per_request in gate.rates:
                if per_request:
                    m.reserved -= 1
                    m.delta += 1
                else:
                    m.reserved -= held
                    m.delta += used
                    m.free += held - used

    # --- the bank ------------------------------------------------------------------

    async def sync(self, meter: Meter, need: Decimal | int = 0) -> None:
        """Settle the meter's delta with the bank and take a new lease (one call at a time per meter)."""
        while meter.syncing is not None:
            await asyncio.shield(meter.syncing)
        loop = asyncio.get_running_loop()
        meter.syncing = loop.create_future()
        delta = meter.delta
        admitted = meter.admitted
        # An idle meter (nothing admitted since the last sync, nothing asked) returns its lease, and admissions
        # wait meanwhile (_quiet). Any other sync keeps the lease whole (``keep``: what it held, less what is
        # settled now), so requests admitted while it is on its way stay covered by it.
        meter.returning = not meter.used_since_sync and not need
        keep = 0 if meter.returning else max(meter.lease - delta, 0)
        try:
            if self.bank.shared:
                # the bank reads what is in flight as of ``delta``'s capture: a request that ends during the
                # round trip moves from ``reserved`` to ``delta`` and must stay covered by the new lease
                call = asyncio.ensure_future(asyncio.to_thread(self.bank.sync, copy.copy(meter), delta, need, keep))
                try:
                    lease, settled = await asyncio.shield(call)
                except asyncio.CancelledError:
                    # the call goes on in its thread and may commit: its outcome is applied before the cancel
                    # goes through, or the next sync (the proxy's closing one) would settle ``delta`` again
                    lease, settled = await call
                    _synced(meter, delta, admitted, lease, settled)
                    raise
            else:
                lease, settled = self.bank.sync(meter, delta, need, keep)
            _synced(meter, delta, admitted, lease, settled)
        finally:
            meter.returning = False
            meter.syncing.set_result(None)
            meter.syncing = None

    async def heartbeat(self) -> None:
        """Settle every meter with something to settle, return unused leases, forget settled past windows."""
        shared = self.bank.shared
        stale = time.monotonic() - RENEW
        for meter in [*self.meters.values(), *self.retiring]:
            if (
                meter.delta
                or (shared and not meter.used_since_sync and meter.lease > meter.reserved)
                or (shared and meter.lease and meter.synced_at < stale)  # in use: renew before it expires
            ):
                try:
                    await self.sync(meter)
                except Exception:  # the bank is unreachable: keep spending the lease held, try again next beat
                    log.warning("cannot settle limit %s with the activity log; retrying", meter.target, exc_info=True)
        self.retiring = [m for m in self.retiring if m.reserved or m.delta or (shared and m.lease)]

    def keep_only(self, limits: Mapping[str, Limit]) -> None:
        """After a reload: the meters of limits that are gone (or no longer cap that measure) retire, so
        their leases are returned on the next heartbeat instead of renewed."""
        for (target, measure), meter in list(self.meters.items()):
            limit = limits.get(target)
            capped = (
                limit is not None
                and (limit.budget if measure == USD else limit.rpm if measure == REQUESTS else limit.tpm) is not None
            )
            if not capped:
                self.epoch += 1
                del self.meters[(target, measure)]
                self.previous.pop((target, measure), None)
                meter.used_since_sync = False
                self.retiring.append(meter)

    async def close(self) -> None:
        """Settle everything and return every unused lease (the proxy is stopping), then close the bank."""
        for meter in [*self.meters.values(), *self.retiring]:
            meter.used_since_sync = False
        try:
            await self.heartbeat()
        finally:
            close = getattr(self.bank, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


def _synced(meter: Meter, delta: Decimal | int, admitted: int, lease: Decimal | int, settled: Decimal | int) -> None:
    """What a sync that settled ``delta`` leaves the meter with: the delta gone, the new lease and settled
    amount, ``free`` recomputed; ``admitted`` was the meter's admission count when the sync began."""
    meter.delta -= delta
    meter.lease, meter.settled = lease, settled
    meter.free = meter.lease - meter.delta - meter.reserved
    meter.used_since_sync = meter.admitted != admitted  # admissions during the round trip count as use
    meter.synced_at = time.monotonic()
