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
from operator import attrgetter
from typing import TYPE_CHECKING

import orjson

from gwctl.core import limits as lim
from gwctl.core.pricing import USAGE_FIELDS, PricePlan, Usage, price_plan
from gwctl.core.tokens import estimate_prompt_tokens, prompt_tokens_ceiling
from gwctl.proxy.flow import REQUEST_ID_HEADER, Flow
from gwctl.proxy.http import Reply
from gwctl.proxy.ledger import Ledger, Ticket

if TYPE_CHECKING:
    from gwctl.core.config import CatalogEntry, Limit

# Usage fields that are tokens (what a tokens-per-minute limit counts); reasoning is inside output.
_TOKEN_FIELDS = tuple(f for f in USAGE_FIELDS if f.endswith("_tokens") and f != "reasoning_tokens")
_token_counts = attrgetter(*_TOKEN_FIELDS)


def usage_tokens(usage: Usage) -> int:
    return sum(_token_counts(usage))


class Limiter:
    """Scope checks and admission for one process; ``ledger`` holds the counters."""

    def __init__(self, ledger: Ledger, clock=time.time):
        self.ledger = ledger
        self.clock = clock
        self._plans: dict[int, tuple[CatalogEntry, PricePlan | None]] = {}  # id(entry) -> its price plan
        self._limits_snapshot: object = None  # the snapshot _limits_memo is for
        self._limits_memo: dict[tuple[str | None, ...], tuple[Limit, ...]] = {}

    @staticmethod
    def applies(flow: Flow) -> bool:
        """Whether the stage has anything to check for this request (the common case: no)."""
        snap = flow.snapshot
        if snap.limits:
            return True
        key = snap.keys.get(flow.key_name) if flow.key_name else None
        return key is not None and bool(key.agents or key.models)

    def limits_for(self, flow: Flow) -> tuple[Limit, ...]:
        """The limits that apply to the request, remembered per (key, agent, source, model) for the snapshot."""
        d = flow.decision
        assert d is not None  # the decide stage set it
        snap = flow.snapshot
        if snap is not self._limits_snapshot:
            self._limits_snapshot, self._limits_memo = snap, {}
        shape = (flow.key_name, d.agent, d.source, d.catalog_ref)
        found = self._limits_memo.get(shape)
        if found is None:
            found = lim.applicable(snap.limits, lim.request_targets(*shape))
            if len(self._limits_memo) < 4096:
                self._limits_memo[shape] = found
        return found

    def refusal_reply(self, flow: Flow, refusal: lim.Refusal) -> Reply:
        headers = [(REQUEST_ID_HEADER, flow.rid), *refusal.headers]
        return Reply(refusal.status, orjson.dumps(refusal.error_body()), headers)

    def _applicable(self, flow: Flow) -> lim.Refusal | tuple[tuple[Limit, ...], bool] | None:
        """The key's scope refusal, or the limits that apply and whether one counts tokens (None: none apply)."""
        d = flow.decision
        assert d is not None
        snap = flow.snapshot
        key = snap.keys.get(flow.key_name) if flow.key_name else None
        if key is not None and (key.agents or key.models):
            refusal = lim.key_refusal(key, d.agent, d.catalog_ref, self.clock())
            if refusal is not None:
                return refusal
        limits = self.limits_for(flow)
        if not limits:
            return None
        return limits, any(x.tpm is not None for x in limits)

    def try_admit(self, flow: Flow) -> lim.Refusal | None | bool:
        """:meth:`admit` without a coroutine for the common case: None when admitted (``flow.ticket`` set),
        a Refusal for the key's scope, or True when :meth:`admit` must decide (a limit would refuse, or this
        process must ask the bank for more)."""
        found = self._applicable(flow)
        if not isinstance(found, tuple):
            return found
        limits, tokens = found
        ticket = self.ledger.try_admit(limits, self.reservation(flow, estimate=tokens), self.clock())
        if ticket is None:
            return True
        flow.ticket = ticket
        return None

    async def admit(self, flow: Flow) -> lim.Refusal | None:
        """Check the key's scope and every applicable limit; on admission ``flow.ticket`` holds the
        reservations until :meth:`settle`."""
        found = self._applicable(flow)
        if not isinstance(found, tuple):
            return found
        limits, tokens = found
        res = self.reservation(flow, estimate=tokens)
        refusal, ticket = await self.ledger.admit(limits, res, self.clock())
        if refusal is not None and refusal.rule == lim.BUDGET_EXCEEDED and not tokens:
            # the body-size ceiling did not fit: the estimate (what the dry-run reserves) may
            refusal, ticket = await self.ledger.admit(limits, self.reservation(flow, estimate=True), self.clock())
        flow.ticket = ticket
        return refusal

    @staticmethod
    def reservation(flow: Flow, estimate: bool) -> lim.Reservation:
        """What the request may cost at most. Without ``estimate`` the prompt is taken at its ceiling from
        the body's size (free, and never below the estimate: a request the ceiling admits, the estimate
        admits too); with it, the prompt estimate (the dry-run's), which a token rate needs and a budget
        falls back to when the ceiling does not fit."""
        d = flow.decision
        assert d is not None
        feats = d.features
        if not estimate:
            prompt = prompt_tokens_ceiling(len(flow.request.body or b""))
        elif feats is not None and feats.prompt_tokens_estimate is not None:
            prompt = feats.prompt_tokens_estimate
        else:
            prompt = estimate_prompt_tokens(feats.api if feats else "other", flow.body)
        return lim.reservation(d.entry, prompt, feats.output_budget if feats else None)

    def settle(self, flow: Flow, status: int, usage: Usage | None) -> None:
        """Replace the request's reservations by what it used (see the module's docstring)."""
        ticket: Ticket | None = flow.ticket
        if ticket is None:
            return
        flow.ticket = None
        assert flow.decision is not None
        if usage is not None:
            cost = self._cost(flow.decision.entry, usage) if ticket.billed else None
            self.ledger.settle(ticket, cost, usage_tokens(usage))
        elif status < 400 or status == 499:  # it was answered (or cut short), but told us nothing
            self.ledger.settle(ticket, None, None)
        else:
            self.ledger.settle(ticket, Decimal(0), 0)

    def _cost(self, entry: CatalogEntry | None, usage: Usage) -> Decimal | None:
        if entry is None:
            return None
        cached = self._plans.get(id(entry))
        if cached is None or cached[0] is not entry:
            try:
                plan: PricePlan | None = price_plan(entry)
            except ValueError:
                plan = None
            cached = self._plans[id(entry)] = (entry, plan)
        plan = cached[1]
        return None if plan is None else plan.total(usage.counts())
