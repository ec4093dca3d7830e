"""The limit stage, between decide and forward: the key's scope, then every limit that applies.

A decided request is admitted when its gateway key may make it (agents and
model globs, :func:`gwctl.core.limits.scope_refusal`) and every limit on its
key, agent (and the agent's ancestors), source and model admits its
reservation (:func:`gwctl.core.limits.admit`, against this process's
:class:`~gwctl.proxy.ledger.Ledger`). When it is done, the record stage
settles it: the reservation is replaced by the exact cost and tokens of the
usage that arrived (a stream cut short included); when no usage arrived from
an answer that started, the reservation itself is billed, so a budget never
counts a stream as $0. An answer that failed before it started bills nothing.

Passthrough requests go through the same stage: a passthrough route is no
way around a limit.
"""

from __future__ import annotations

import time
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING

from gwctl.core import limits as lim
from gwctl.core.pricing import USAGE_FIELDS, PlanCache
from gwctl.core.tokens import estimate_prompt_tokens, prompt_tokens_ceiling
from gwctl.proxy.flow import REQUEST_ID_HEADER, Flow, error_bytes
from gwctl.proxy.http import Reply
from gwctl.proxy.ledger import Ledger, Ticket

if TYPE_CHECKING:
    from gwctl.core.config import CatalogEntry, Limit
    from gwctl.core.decision import Decision

# A request's shape's answers: the key's scope refusal, the limits that apply, whether one counts tokens.
_Shape = tuple["lim.Refusal | None", "tuple[Limit, ...]", bool]

# Where the usage's tokens sit in Usage.counts() (what a tokens-per-minute limit counts); reasoning is
# inside output.
_TOKEN_INDEXES = tuple(i for i, f in enumerate(USAGE_FIELDS) if f.endswith("_tokens") and f != "reasoning_tokens")
_token_counts = itemgetter(*_TOKEN_INDEXES)


def usage_tokens(counts: tuple[int, ...]) -> int:
    """The tokens a usage given as :meth:`Usage.counts` holds."""
    return sum(_token_counts(counts))


class Limiter:
    """Scope checks and admission for one process; ``ledger`` holds the counters."""

    def __init__(self, ledger: Ledger, clock=time.time):
        self.ledger = ledger
        self.clock = clock
        self._plans = PlanCache()  # each entry's price plan, for the settlements
        self._snapshot: object = None  # the snapshot the memos below are for
        self._shapes: dict[tuple[str | None, ...], _Shape] = {}
        self._reservations: dict[tuple[int, int, int | None], tuple[CatalogEntry | None, lim.Reservation]] = {}

    @staticmethod
    def applies(flow: Flow) -> bool:
        """Whether the stage has anything to check for this request (the common case: no)."""
        snap = flow.snapshot
        if snap.limits:
            return True
        key = snap.keys.get(flow.key_name) if flow.key_name else None
        return key is not None and bool(key.agents or key.models)

    def _shape(self, flow: Flow) -> _Shape:
        """The key's scope answer and the limits that apply, remembered per (key, agent, source, model) for
        the snapshot: both follow from those four and the store alone (the key's expiry, which depends on the
        clock, is checked when the request's head is in)."""
        d = flow.decision
        assert d is not None  # the decide stage set it
        snap = flow.snapshot
        if snap is not self._snapshot:
            self._snapshot, self._shapes = snap, {}
        shape = (flow.key_name, d.agent, d.source, d.catalog_ref)
        found = self._shapes.get(shape)
        if found is None:
            key = snap.keys.get(flow.key_name) if flow.key_name else None
            scope = lim.scope_check(key, d.agent, d.catalog_ref) if key is not None else None
            limits = lim.applicable(snap.limits, lim.request_targets(*shape))
            found = (scope, limits, any(x.tpm is not None for x in limits))
            if len(self._shapes) < 4096:
                self._shapes[shape] = found
        return found

    def refusal_reply(self, flow: Flow, refusal: lim.Refusal) -> Reply:
        headers = [(REQUEST_ID_HEADER, flow.rid), *refusal.headers]
        return Reply(refusal.status, error_bytes(flow.request.path, refusal.status, refusal.error_body()), headers)

    def try_admit(self, flow: Flow) -> lim.Refusal | None | bool:
        """:meth:`admit` without a coroutine for the common case: None when admitted (``flow.ticket`` set, or
        no limit applies), a Refusal for the key's scope, or True when :meth:`admit` must decide (a limit would
        refuse, or this process must ask the bank for more)."""
        scope, limits, tokens = self._shape(flow)
        if scope is not None or not limits:
            return scope
        ticket = self.ledger.try_admit(limits, self.reservation(flow, estimate=tokens), self.clock())
        if ticket is None:
            return True
        flow.ticket = ticket
        return None

    async def admit(self, flow: Flow) -> lim.Refusal | None:
        """Check the key's scope and every applicable limit; on admission ``flow.ticket`` holds the
        reservations until :meth:`settle`."""
        scope, limits, tokens = self._shape(flow)
        if scope is not None or not limits:
            return scope
        res = self.reservation(flow, estimate=tokens)
        refusal, ticket = await self.ledger.admit(limits, res, self.clock())
        if refusal is not None and refusal.rule == lim.BUDGET_EXCEEDED and not tokens:
            # the body-size ceiling did not fit: the estimate (what the dry-run reserves) may
            refusal, ticket = await self.ledger.admit(limits, self.reservation(flow, estimate=True), self.clock())
        flow.ticket = ticket
        return refusal

    def reservation(self, flow: Flow, estimate: bool) -> lim.Reservation:
        """What the request may cost at most. Without ``estimate`` the prompt is taken at its ceiling from
        the body's size (free, and never below the estimate: a request the ceiling admits, the estimate
        admits too); with it, the prompt estimate (the dry-run's), which a token rate needs and a budget
        falls back to when the ceiling does not fit."""
        d = flow.decision
        assert d is not None
        feats = d.features
        output = feats.output_budget if feats else None
        entry = _in_force(d.entry)
        if estimate:
            if feats is not None and feats.prompt_tokens_estimate is not None:
                prompt = feats.prompt_tokens_estimate
            else:
                prompt = estimate_prompt_tokens(feats.api if feats else "other", flow.body)
            return lim.reservation(entry, prompt, output)
        # the ceiling's reservations repeat (one per entry, body size and output budget): made once each
        ceiling = feats.prompt_tokens_ceiling if feats is not None else None
        prompt = ceiling if ceiling is not None else prompt_tokens_ceiling(len(flow.request.body or b""))
        memo = (id(entry), prompt, output)
        found = self._reservations.get(memo)
        if found is None or found[0] is not entry:
            if len(self._reservations) > 4096:
                self._reservations.clear()
            found = self._reservations[memo] = (entry, lim.reservation(entry, prompt, output))
        return found[1]

    async def readmit(self, flow: Flow, admitted: Decision) -> lim.Refusal | None:
        """A failover moves the request from the target it was admitted for (``admitted``) to
        ``flow.decision``'s: when that changes which limits apply (another source or model), its reservations
        move there (given back, then admitted again: a request counts once, at the target that answers). A
        request whose reservations a refusal on an earlier target gave back (no ticket) is admitted afresh."""
        d = flow.decision
        assert d is not None
        if flow.ticket is not None:
            if (d.source, d.catalog_ref) == (admitted.source, admitted.catalog_ref):
                return None
            self.ledger.cancel(flow.ticket)
            flow.ticket = None
        verdict = self.try_admit(flow)
        if verdict is True:
            return await self.admit(flow)
        return verdict if isinstance(verdict, lim.Refusal) else None

    def settle(self, flow: Flow, status: int, counts: tuple[int, ...] | None) -> None:
        """Replace the request's reservations by what it used, its usage given as :meth:`Usage.counts`
        (see the module's docstring)."""
        ticket: Ticket | None = flow.ticket
        if ticket is None:
            return
        flow.ticket = None
        assert flow.decision is not None
        if counts is not None:
            cost = self._cost(flow.decision.entry, counts) if ticket.needs_cost else None
            self.ledger.settle(ticket, cost, usage_tokens(counts) if ticket.needs_tokens else None)
        elif status < 400 or status == 499:  # it was answered (or cut short), but told us nothing
            self.ledger.settle(ticket, None, None)
        else:
            self.ledger.settle(ticket, Decimal(0), 0)

    def _cost(self, entry: CatalogEntry | None, counts: tuple[int, ...]) -> Decimal | None:
        entry = _in_force(entry)
        return None if entry is None else self._plans.total(entry, counts)


def _in_force(entry: CatalogEntry | None) -> CatalogEntry | None:
    """``entry`` with the prices in force now (its dated price sets, when it has any)."""
    return entry.at(time.time()) if entry is not None and entry.price_sets else entry
