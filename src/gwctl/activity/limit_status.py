"""Each limit's state read from the activity log, for ``gwctl limit status`` and the dry-run.

Spent and unbilled requests come from the log's rows in the window (exact,
whatever proxies wrote them); what running proxies hold (their leases: the
reservations of requests in flight and the slices they may spend without
asking) and the minute's tokens come from the shared meters
(:mod:`gwctl.activity.meters`), when a proxy with that log has synced them.
The result is the same :class:`~gwctl.core.limits.LimitState` the proxy
admits against, so the dry-run's verdict is :func:`gwctl.core.limits.admit`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Sequence

from gwctl.activity.meters import meter_status, spent_in_window
from gwctl.activity.record import ActivityError
from gwctl.core.config import Limit
from gwctl.core.limits import LimitState, fresh_state, iso, window_bounds


@dataclass(frozen=True)
class LimitReport:
    """A limit's state and the figures shown beside it."""

    state: LimitState
    leased: Decimal  # held by running proxies (in flight and slices), part of ``state.reserved``
    proxies: int  # processes holding a lease on the budget

    def to_json(self) -> dict:
        s, limit = self.state, self.state.limit
        out: dict = {"target": limit.target, "budget": None, "rpm": limit.rpm, "tpm": limit.tpm}
        if limit.budget is not None:
            left = s.left
            out.update(
                budget=f"{limit.budget:f}",
                window=limit.window,
                window_start=iso(s.window_start),
                resets_at=iso(s.window_end),
                spent=f"{s.spent:f}",
                reserved=f"{s.reserved:f}",
                left=None if left is None else f"{left:f}",
                unbilled=limit.unbilled,
                unbilled_requests=s.unbilled,
            )
        if limit.rpm is not None or limit.tpm is not None:
            out.update(minute_start=iso(s.minute_start), requests=s.requests, tokens=s.tokens)
        return out


def limit_reports(dsn: str, limits: Sequence[Limit], now: float) -> list[LimitReport]:
    """Every one of ``limits`` as the log and the shared meters say at ``now``."""
    meters = {(m.target, m.measure): m for m in meter_status(dsn, [x.target for x in limits], now)}
    minute_start, minute_end = window_bounds("minute", now)
    out = []
    for limit in limits:
        start, end = window_bounds(limit.window or "total", now)
        spent, unbilled = Decimal(0), 0
        leased, proxies = Decimal(0), 0
        if limit.budget is not None:
            spent, unbilled, _ = spent_in_window(dsn, limit.target, start, end)
            usd = meters.get((limit.target, "usd"))
            if usd is not None:
                leased, proxies = Decimal(usd.leased), usd.holders
        requests = tokens = prev_requests = 0
        if limit.rpm is not None:
            req = meters.get((limit.target, "requests"))
            logged = spent_in_window(dsn, limit.target, minute_start, minute_end)[2]
            requests = max(logged, int(req.settled + req.leased) if req is not None else 0)
            prev_requests = spent_in_window(dsn, limit.target, minute_start - 60.0, minute_start)[2]
        if limit.tpm is not None:
            tok = meters.get((limit.target, "tokens"))
            tokens = int(tok.settled + tok.leased) if tok is not None else 0
        state = LimitState(
            limit, start, end, spent, leased, unbilled, minute_start, requests, tokens, prev_requests=prev_requests
        )
        out.append(LimitReport(state, leased, proxies))
    return out


def limit_reports_or_fresh(
    dsn: str, limits: Sequence[Limit], now: float, warn: Callable[[str], None]
) -> list[LimitReport]:
    """:func:`limit_reports`, or, when the log cannot be read (none yet), every limit with nothing spent
    and a warning through ``warn``."""
    try:
        return limit_reports(dsn, limits, now)
    except ActivityError as exc:
        warn(f"cannot read the activity log ({exc.message}); spend taken as $0")
        return [LimitReport(fresh_state(x, now), Decimal(0), 0) for x in limits]
