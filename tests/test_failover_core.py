"""The pure part of failover (gwctl.core.failover) and the proxy's ordering of a plan (gwctl.proxy.failover)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.config import FailoverPolicy, Route, Settings, Snapshot, Source
from gwctl.core.decision import decide
from gwctl.core.failover import moves_on, parse_on, pick, policy_for, retry_after_seconds
from gwctl.proxy.failover import Failover

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_smooth_round_robin_gives_each_its_weight_in_every_round():
    current = [0, 0, 0]
    picks = [pick([5, 1, 1], current) for _ in range(7 * 40)]
    assert Counter(picks) == {0: 200, 1: 40, 2: 40}
    assert picks[:7].count(0) == 5 and picks[:7] != [0] * 5 + [1, 2]  # spread out, not a burst
    assert pick([0, 0], [0, 0]) is None
    assert [pick([0, 2], c := [0, 0]) for _ in range(3)] == [1, 1, 1] and c == [0, 0]


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_seconds("7", 0) == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_seconds("99999", 0) == 3600.0
    assert retry_after_seconds("soon", 0) is None and retry_after_seconds(None, 0) is None


def test_the_policy_names_what_moves_on():
    assert parse_on(["429", "connect", " 404 "]) == frozenset({"429", "connect", "404"})
    with pytest.raises(ValueError, match="not a failure"):
        parse_on(["200"])
    with pytest.raises(ValueError, match="not a failure"):
        parse_on(["oops"])
    policy = FailoverPolicy()
    assert moves_on(policy, "503") and moves_on(policy, "first_byte_timeout") and not moves_on(policy, "400")


def test_a_sources_own_policy_wins_over_the_stores():
    own = FailoverPolicy(max_attempts=5)
    snap = Snapshot(
        settings=Settings(failover=FailoverPolicy(max_attempts=2)),
        sources={"a": Source("a", "http://a/v1", failover=own), "b": Source("b", "http://b/v1")},
    )
    assert policy_for(snap, "a") is own and policy_for(snap, "b").max_attempts == 2


def _snapshot(n_sources: int, balance, fallbacks) -> Snapshot:
    sources = {f"s{i}": Source(f"s{i}", f"http://s{i}/v1") for i in range(n_sources)}
    route = Route("t/x", "m", "s0", model="m0", weight=balance[0], balance=tuple(balance[1]), fallbacks=fallbacks)
    return Snapshot(sources=sources, routes=(route,))


refs = st.tuples(st.integers(0, 3), st.integers(0, 2)).map(lambda t: f"s{t[0]}/m{t[1]}")


@settings(max_examples=200, deadline=None)
@given(
    weight=st.integers(1, 5),
    balance=st.lists(st.tuples(refs, st.integers(1, 5)), max_size=3, unique_by=lambda t: t[0]),
    fallbacks=st.lists(refs, max_size=3, unique=True),
    out=st.sets(refs, max_size=3),
    requests=st.integers(1, 12),
    max_attempts=st.integers(1, 6),
)
def test_the_proxys_order_is_a_valid_execution_of_the_dry_runs_plan(
    weight, balance, fallbacks, out, requests, max_attempts
):
    """Whatever the health, every request's attempts are usable plan targets, each once, the primary tier
    before the fallbacks and the fallbacks in plan order, at most max_attempts of them."""
    balance = [(r, w) for r, w in balance if r != "s0/m0"]
    fallbacks = (*(r for r in fallbacks if r != "s0/m0" and r not in dict(balance)), "s1/m9")  # a plan, always
    snap = _snapshot(3, (weight, balance), fallbacks)  # s3 does not exist: its targets are skipped
    d = decide(snap, "t/x", CHAT, BODY)  # what the dry-run shows
    assert d.plan and d.plan[0].ref == "s0/m0"
    fo = Failover(forwarder=None, inflight=None)  # type: ignore[arg-type]  # order() touches neither
    for ref in out:
        fo.health.failed(ref, FailoverPolicy(cooldown_after=1, cooldown_seconds=100), 0.0, None)
    for _ in range(requests):
        order, _back = fo.order(d, 1.0)
        tried = order[:max_attempts]
        assert len({t.ref for t in tried}) == len(tried)
        assert all(not t.skipped and t.ref not in out and t in d.plan for t in tried)
        tiers = [t.tier for t in tried]
        assert tiers == sorted(tiers)
        fallback_pos = [d.plan.index(t) for t in tried if t.tier > 0]
        assert fallback_pos == sorted(fallback_pos)
        usable = [t for t in d.plan if not t.skipped and t.ref not in out]
        assert {t.ref for t in order} == {t.ref for t in usable}  # nothing usable is left out of the order


def test_the_primary_tier_is_shared_by_weight_across_requests():
    snap = _snapshot(3, (3, [("s1/m1", 1)]), ("s2/m2",))
    d = decide(snap, "t/x", CHAT, BODY)
    fo = Failover(forwarder=None, inflight=None)  # type: ignore[arg-type]
    firsts = Counter(fo.order(d, 1.0)[0][0].ref for _ in range(400))
    assert firsts == {"s0/m0": 300, "s1/m1": 100}
    order, _ = fo.order(d, 1.0)
    assert order[-1].ref == "s2/m2"
