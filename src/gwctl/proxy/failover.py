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
an attempt only reports a failure before it answers.

The answering target's decision becomes the request's (``flow.decision``), so
the row, its cost and the limits' settlement are the answering target's; the
attempts go into the row and the count into ``x-gwctl-attempts``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gwctl.core.config import FailoverPolicy
from gwctl.core.decision import Decision, PlanTarget
from gwctl.core.failover import attempt_order, pick, policy_for, retry_after_seconds, wait_hint
from gwctl.proxy.flow import Flow, InFlight, error_reply
from gwctl.proxy.forward import ATTEMPTS_HEADER, Failure, Forwarder
from gwctl.proxy.http import Reply

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

    def failed(self, ref: str, policy: FailoverPolicy, now: float, retry_after: float | None) -> None:
        h = self.targets.setdefault(ref, TargetHealth())
        h.failures += 1
        h.probing = False
        if retry_after is not None and policy.retry_after:
            h.retry_until = max(h.retry_until, now + retry_after)
        if h.failures >= policy.cooldown_after:
            h.cool_until = now + policy.cooldown_seconds

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


class Failover:
    """Executes plans for one process: the health of its targets and the round robin of each route."""

    def __init__(self, forwarder: Forwarder, inflight: InFlight, clock=time.monotonic):
        self.forwarder = forwarder
        self.inflight = inflight
        self.clock = clock
        self.health = Health()
        self._rounds: dict[tuple, list[int]] = {}  # (agent, model name, tier-0 refs) -> round robin counters

    def order(self, d: Decision, now: float) -> tuple[list[PlanTarget], float | None]:
        """The targets to try for this request, and when the first one left out comes back."""
        plan = d.plan
        out: dict[str, float] = {}
        for t in plan:
            until = self.health.out_until(t.ref, now)
            if until is not None:
                out[t.ref] = until
        tier0 = [(i, t) for i, t in enumerate(plan) if t.tier == 0]
        key = (d.route.agent if d.route else None, d.route.model_name if d.route else None, *(t.ref for _i, t in tier0))
        counters = self._rounds.get(key)
        if counters is None:
            if len(self._rounds) > 4096:
                self._rounds.clear()
            counters = self._rounds[key] = [0] * len(tier0)
        weights = [0 if t.skipped or t.ref in out else t.weight for _i, t in tier0]
        chosen = pick(weights, counters)
        first = tier0[chosen][0] if chosen is not None else None
        return attempt_order(plan, first, out), min(out.values(), default=None)

    async def run(self, flow: Flow) -> Reply | None:
        """Try the plan's targets in order until one answers (see the module's docstring)."""
        d = flow.decision
        assert d is not None and d.plan
        self.inflight.begin()
        try:
            started = self.clock()
            policy = policy_for(flow.snapshot, d.source)
            order, back_at = self.order(d, started)
            if not order:
                return self.none_available(flow, back_at, started)
            flow.attempts = []
            limit = min(len(order), policy.max_attempts)
            for n, target in enumerate(order[:limit]):
                last = n == limit - 1 or self.clock() - started >= policy.max_seconds
                result = await self._try(flow, target, last)
                if not isinstance(result, Failure):
                    return result
            raise AssertionError("the last attempt always answers")  # pragma: no cover
        finally:
            self.inflight.end()

    async def _try(self, flow: Flow, target: PlanTarget, last: bool) -> Reply | None | Failure:
        """One attempt on ``target``; its failure (when it moves on) is noted and its health updated."""
        flow.decision = target.decision
        tpolicy = policy_for(flow.snapshot, target.decision.source)
        self.health.trying(target.ref)
        t0 = time.perf_counter()
        try:
            result = await self.forwarder.attempt(flow, None if last else tpolicy.on, t0)
        except BaseException:  # the client went away (or a bug): no verdict on the target, but its probe is over
            self.health.release(target.ref)
            raise
        if isinstance(result, Failure):
            assert flow.attempts is not None
            flow.attempts.append((target.ref, result.status, (time.perf_counter() - t0) * 1000, result.error))
            now = self.clock()
            self.health.failed(target.ref, tpolicy, now, retry_after_seconds(result.retry_after, time.time()))
            return result
        status = flow.attempts[-1][1] if flow.attempts else None
        if status is None or status >= 500 or status == 429:
            self.health.failed(target.ref, tpolicy, self.clock(), None)
        else:
            self.health.answered(target.ref)
        return result

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
        reply = error_reply(503, message, "api_error", NO_TARGET, flow.rid)
        reply.headers.extend([("retry-after", str(wait)), (ATTEMPTS_HEADER, "0")])
        return reply
