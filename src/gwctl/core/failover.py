"""Failover and load balancing, the pure part: which policy applies, what moves on, the order to try.

A route with balance or fallback targets decides to a plan
(:class:`gwctl.core.decision.PlanTarget`, in :func:`gwctl.core.decision.decide`).
The proxy executes it: one target of the primary tier by smooth weighted
round robin (:func:`pick`), then the rest of that tier, then each fallback
in order (:func:`attempt_order`), leaving out targets that are skipped,
cooling down, or asked not to be called before a Retry-After. A failure
moves on to the next target when the policy names it (:func:`moves_on`),
and never once a byte of the answer has reached the client.

Everything here is pure: times are seconds the caller passes in.
"""

from __future__ import annotations

import email.utils
import math
from typing import TYPE_CHECKING, Iterable, Sequence

from gwctl.core.config import FAILURE_CLASSES, FailoverPolicy, Snapshot

if TYPE_CHECKING:
    from gwctl.core.decision import PlanTarget

STATUS_CLASSES = frozenset(FAILURE_CLASSES) - {"connect", "tls", "connect_timeout", "reset", "first_byte_timeout"}
MAX_RETRY_AFTER = 3600.0  # a Retry-After further away than this is taken as this (an hour)


def policy_for(snapshot: Snapshot, source: str | None) -> FailoverPolicy:
    """The failover policy of targets of ``source``: its own when it sets one, else the store's."""
    src = snapshot.sources.get(source) if source else None
    if src is not None and src.failover is not None:
        return src.failover
    return snapshot.settings.failover


def status_failure(status: int) -> str | None:
    """The failure class of an upstream answer's status (``"503"``), or None for one that is not a failure."""
    return str(status) if 400 <= status <= 599 else None


def moves_on(policy: FailoverPolicy, failure: str) -> bool:
    """Whether ``failure`` (a class of :data:`FAILURE_CLASSES`, or a status code as text) tries the next
    target under ``policy``."""
    return failure in policy.on


def parse_on(values: Iterable[str]) -> frozenset[str]:
    """A policy's ``on`` list, checked: each a failure class or an HTTP error status (400-599)."""
    out = set()
    for raw in values:
        value = str(raw).strip().lower()
        if value in FAILURE_CLASSES or (value.isdigit() and 400 <= int(value) <= 599):
            out.add(value)
            continue
        raise ValueError(
            f"'{raw}' is not a failure that can move on; use {', '.join(FAILURE_CLASSES)} or an HTTP status 400-599"
        )
    return frozenset(out)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header's delay in seconds (delta-seconds or an HTTP date), capped; None if absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def pick(weights: Sequence[int], current: list[int]) -> int | None:
    """Smooth weighted round robin: the index to use next, updating ``current`` (one counter per weight,
    kept by the caller between requests). Over any run of sum(weights) picks each index is chosen
    exactly its weight's number of times, spread out rather than in bursts. A weight of 0 (a target out
    for now) is never chosen; None when every weight is 0."""
    total = 0
    best = -1
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        current[i] += w
        total += w
        if best < 0 or current[i] > current[best]:
            best = i
    if best < 0:
        return None
    current[best] -= total
    return best


def attempt_order(plan: Sequence[PlanTarget], first: int | None, unavailable: Iterable[str] = ()) -> list[PlanTarget]:
    """The targets to try, in order: the primary tier's ``first`` (the index into ``plan`` that
    :func:`pick` chose), then the rest of the primary tier by weight (heaviest first, plan order on a tie),
    then the fallbacks in tier order; without the skipped targets and those in ``unavailable`` (refs
    cooling down or waiting out a Retry-After)."""
    out = set(unavailable)
    usable = [(i, t) for i, t in enumerate(plan) if not t.skipped and t.ref not in out]
    tier0 = [(i, t) for i, t in usable if t.tier == 0]
    tier0.sort(key=lambda it: (it[0] != first, -it[1].weight, it[0]))
    rest = sorted(((i, t) for i, t in usable if t.tier > 0), key=lambda it: (it[1].tier, it[0]))
    return [t for _i, t in tier0 + rest]


def wait_hint(seconds: float) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, math.ceil(seconds))
