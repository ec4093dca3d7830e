"""The failover stage: execute a route's plan, one target after another, inside the forward stage.

The decision (:func:`gwctl.core.decision.decide`) gives a route with balance
or fallback targets an ordered plan. For each request this stage picks the
primary tier's target by smooth weighted round robin, orders the rest
(:func:`gwctl.core.failover.attempt_order`), leaves out the targets that are
cooling down or waiting out a Retry-After (:class:`Health`, this process's
memory of each target), and calls :meth:`Forwarder.attempt
<gwctl.proxy.forward.Forwarder.attempt>` on each in turn. A failure its policy
names moves on to the next target while one remains, the attempts are fewer
than ``max_attempts`` and ``max_seconds`` have not passed; anything else is
the answer. Nothing moves on once a byte of the answer has reached the client:
an attempt only reports a failure before it answers. A target whose source
speaks the other API, for a request that API cannot say (a translation rule
refuses it), is passed over like a target whose limits refuse, and not held
against its health; on the last target that refusal is the answer.

The answering target's decision becomes the request's (``flow.decision``), so
the row, its cost and the limits' settlement are the answering target's; the
attempts go into the row and the count into ``X-Gwctl-Attempts``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gwctl.core.config import FailoverPolicy, Snapshot
from gwctl.core.decision import Decision, PlanTarget
from gwctl.core.failover import attempt_order, pick, policy_for, retry_after_seconds, wait_hint
from gwctl.core.limits import Refusal
from gwctl.proxy.flow import Flow, InFlight, error_reply
from gwctl.proxy.forward import ATTEMPTS_HEADER, UNTRANSLATABLE, Failure, Forwarder
from gwctl.proxy.http import Reply
from gwctl.proxy.limiter import Limiter

if TYPE_CHECKING:
    from gwctl.proxy.metrics import WorkerMetrics

NO_TARGET = "no_target_available"  # the rule id when every target is cooling down or waiting out a Retry-After


@dataclass(slots=True)
class TargetHealth:
    """What this process knows of one target: failures in a row, and until when it is left out."""

    failures: int = 0
    cool_until: float = 0.0  # time.monotonic(): skipped until then after cooldown_after failures in a row
    retry_until: float = 0.0  # time.monotonic(): the target's own Retry-After
    probing: bool = False  # its cooldown is over and one request is trying it: the others still skip it


class Health:
    """Each target's :class:`TargetHealth` in this process (by SOURCE/MODEL_ID)."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetHealth] = {}

    def out_until(self, ref: str, now: float) -> float | None:
        """When ``ref`` may be tried again, if it is left out now (else None)."""
        h = self.targets.get(ref)
        if h is None:
            return None
        until = max(h.retry_until, h.cool_until)
        if until > now:
            return until
        if h.probing:  # another request is trying it after its cooldown
            return now + 1.0
        return None

    def trying(self, ref: str) -> None:
        """An attempt on ``ref`` starts: after a cooldown, it is the one request that tries it."""
        h = self.targets.get(ref)
        if h is not None and h.cool_until:
            h.probing = True

    def failed(self, ref: str, policy: FailoverPolicy, now: float, retry_after: float | None) -> bool:
        """Count a failure against ``ref``; True when it starts (or renews) the target's cooldown."""
        h = self.targets.setdefault(ref, TargetHealth())
        h.failures += 1
        h.probing = False
        if retry_after is not None and policy.retry_after:
            h.retry_until = max(h.retry_until, now + retry_after)
        if h.failures >= policy.cooldown_after:
            h.cool_until = now + policy.cooldown_seconds
            return True
        return False

    def release(self, ref: str) -> None:
        """An attempt on ``ref`` ended without a verdict (the client went away): another request may probe it."""
        h = self.targets.get(ref)
        if h is not None:
            h.probing = False

    def answered(self, ref: str) -> None:
        """``ref`` answered: its failures in a row are over."""
        h = self.targets.get(ref)
        if h is not None:
            h.failures, h.cool_until, h.probing = 0, 0.0, False


class _Plan:
    """What a plan's order needs, worked out once per plan: its primary tier, the static order of attempts
    (for when no target is left out and the tier has one usable target), the round robin's key."""

    __slots__ = ("plan", "tier0", "weights", "static", "key", "refs", "policies")

    def __init__(self, d: Decision, snapshot: Snapshot):
        plan = self.plan = d.plan
        self.tier0 = [(i, t) for i, t in enumerate(plan) if t.tier == 0]
        self.weights = [0 if t.skipped else t.weight for _i, t in self.tier0]
        usable = sum(1 for w in self.weights if w)
        self.static = attempt_order(plan, None) if usable <= 1 else None
        route = d.route
        self.key = (
            route.agent if route else None,
            route.model_name if route else None,
            *(t.ref for _i, t in self.tier0),
        )
        self.refs = [t.ref for t in plan]
        # each target's failover policy (its source's own, or the store's), and the primary's for the request
        self.policies = {t.ref: policy_for(snapshot, t.decision.source) for t in plan}
        self.policies[""] = policy_for(snapshot, d.source)


class Failover:
    """Executes plans for one process: the health of its targets and the round robin of each route."""

    def __init__(self, forwarder: Forwarder, inflight: InFlight, clock=time.monotonic):
        self.forwarder = forwarder
        self.inflight = inflight
        self.clock = clock
        self.health = Health()
        self._rounds: dict[tuple, list[int]] = {}  # (agent, model name, tier-0 refs) -> round robin counters
        self._plans: dict[int, _Plan] = {}  # id(plan) -> what its order needs
        self.metrics: WorkerMetrics | None = None  # set by gwctl.proxy.metrics.attach

    def _plan(self, d: Decision, snapshot: Snapshot) -> _Plan:
        found = self._plans.get(id(d.plan))
        if found is None or found.plan is not d.plan:  # a plan belongs to one snapshot: so do its policies
            if len(self._plans) > 4096:
                self._plans.clear()
            found = self._plans[id(d.plan)] = _Plan(d, snapshot)
        return found

    def order(self, d: Decision, now: float, snapshot: Snapshot | None = None) -> tuple[list[PlanTarget], float | None]:
        """The targets to try for this request, and when the first one left out comes back."""
        return self._order(self._plan(d, snapshot or Snapshot()), now)

    def _order(self, p: _Plan, now: float) -> tuple[list[PlanTarget], float | None]:
        out: dict[str, float] = {}
        if self.health.targets:
            for ref in p.refs:
                until = self.health.out_until(ref, now)
                if until is not None:
                    out[ref] = until
        if not out and p.static is not None:  # the common case: nothing to choose, nothing left out
            return p.static, None
        counters = self._rounds.get(p.key)
        if counters is None or len(counters) != len(p.tier0):
            if len(self._rounds) > 4096:
                self._rounds.clear()
            counters = self._rounds[p.key] = [0] * len(p.tier0)
        weights = [0 if t.ref in out else w for w, (_i, t) in zip(p.weights, p.tier0)] if out else p.weights
        chosen = pick(weights, counters)
        first = p.tier0[chosen][0] if chosen is not None else None
        return attempt_order(p.plan, first, out), min(out.values(), default=None)

    async def run(self, flow: Flow) -> Reply | None:
        """Try the plan's targets in order until one answers (see the module's docstring)."""
        d = flow.decision
        assert d is not None and d.plan
        self.inflight.begin()
        try:
            p = self._plan(d, flow.snapshot)
            started = time.perf_counter()
            order, back_at = self._order(p, self.clock()) if self.health.targets else (p.static, None)
            if order is None:  # the primary tier has several targets: the round robin picks
                order, back_at = self._order(p, self.clock())
            if not order:
                return self.none_available(flow, back_at, self.clock())
            policy = p.policies[""]
            flow.attempts = []
            refused: Refusal | None = None
            # the target the limits admitted the request for (None: the store has no limits to follow it)
            admitted = d if Limiter.applies(flow) else None
            limit = min(len(order), policy.max_attempts)
            for n, target in enumerate(order[:limit]):
                t0 = time.perf_counter() if n else started
                last = n == limit - 1 or (n > 0 and t0 - started >= policy.max_seconds)
                flow.decision = target.decision
                if admitted is not None and admitted is not target.decision:
                    refused = await self.moved(flow, admitted, target)
                    if refused is not None:  # this target's limits refuse the request: the next one may take it
                        continue
                    admitted = target.decision
                tpolicy = p.policies[target.ref]
                if self.health.targets:
                    self.health.trying(target.ref)
                if self.metrics is not None:
                    self.metrics.failover_attempt(target.ref)
                try:
                    result = await self.forwarder.attempt(flow, None if last else tpolicy.on, t0)
                except BaseException:  # the client went away (or a bug): no verdict, but its probe is over
                    self.health.release(target.ref)
                    raise
                if isinstance(result, Failure):
                    if result.failure == UNTRANSLATABLE:  # the request's fault, not the target's: no health verdict
                        flow.attempts.append((target.ref, result.status, 0.0, result.error))
                        self.health.release(target.ref)
                    else:
                        self.failed(flow, target, tpolicy, result, t0)
                    continue
                self.ended(flow, target, tpolicy)
                return result
            assert refused is not None  # only a limit's refusal on the last target ends the loop unanswered
            reply = self.forwarder.recorder.limited(flow, refused)
            reply.headers.append((ATTEMPTS_HEADER, str(len(flow.attempts))))
            return reply
        finally:
            self.inflight.end()

    async def moved(self, flow: Flow, before: Decision, target: PlanTarget) -> Refusal | None:
        """The request's limits follow it to ``target`` (its source's and model's, when they differ from the
        target it was admitted for); their refusal, noted as an attempt, or None."""
        limiter = self.forwarder.recorder.limiter
        assert limiter is not None
        refusal = await limiter.readmit(flow, before)
        if refusal is not None:
            assert flow.attempts is not None
            flow.attempts.append((target.ref, refusal.status, 0.0, f"refused by {refusal.rule} ({refusal.target})"))
        return refusal

    def failed(self, flow: Flow, target: PlanTarget, policy: FailoverPolicy, failure: Failure, t0: float) -> None:
        """An attempt failed in a way that moves on: note it, and count it against the target."""
        assert flow.attempts is not None
        flow.attempts.append((target.ref, failure.status, (time.perf_counter() - t0) * 1000, failure.error))
        wait = retry_after_seconds(failure.retry_after, time.time())
        cooling = self.health.failed(target.ref, policy, self.clock(), wait)
        if self.metrics is not None:
            self.metrics.failover_move(target.ref, failure.failure)
            if cooling:
                self.metrics.cooldown(target.ref)

    def ended(self, flow: Flow, target: PlanTarget, policy: FailoverPolicy) -> None:
        """The answer came from ``target`` (it is noted in the attempts): a failure status counts against it."""
        status = flow.attempts[-1][1] if flow.attempts else None
        if status is None or status >= 500 or status == 429:
            if self.health.failed(target.ref, policy, self.clock(), None) and self.metrics is not None:
                self.metrics.cooldown(target.ref)
        elif self.health.targets:
            self.health.answered(target.ref)

    def none_available(self, flow: Flow, back_at: float | None, now: float) -> Reply:
        """Every usable target is cooling down or waiting out a Retry-After: 503, with when to come back."""
        d = flow.decision
        assert d is not None
        wait = wait_hint((back_at or now + 1.0) - now)
        message = (
            f"every target of the route for {d.route.agent if d.route else 'this request'} is cooling down after "
            f"failures or asked to wait (Retry-After); the first comes back in {wait} s"
        )
        flow.attempts = []
        self.forwarder.recorder.record(flow, 503, None, NO_TARGET, message, kind="error")
        reply = error_reply(flow, 503, message, "api_error", NO_TARGET)
        reply.headers.extend([("retry-after", str(wait)), (ATTEMPTS_HEADER, "0")])
        return reply
