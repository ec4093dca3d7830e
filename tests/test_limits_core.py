"""The pure limit arithmetic (gwctl.core.limits) and one process's ledger (gwctl.proxy.ledger)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core import limits as lim
from gwctl.core.config import CatalogEntry, GatewayKey, Limit
from gwctl.proxy.ledger import Ledger, LocalBank


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


ENTRY = CatalogEntry(
    "openai",
    "gpt-x",
    max_output=1000,
    context_size=8000,
    prices={"input": D("0.000002"), "cache_write_1h": D("0.000004"), "output": D("0.00001")},
)


# --- targets and windows --------------------------------------------------------


def test_targets_parse_and_refuse_what_is_not_one():
    assert lim.parse_target("key:ci") == ("key", "ci")
    assert lim.parse_target("model:openai/gpt-4o") == ("model", "openai/gpt-4o")
    for bad in ("ci", "team:x", "key:", "model:gpt-4o"):
        with pytest.raises(ValueError, match="limit target|names no model"):
            lim.parse_target(bad)


def test_an_agent_counts_against_itself_and_every_ancestor_in_check_order():
    assert lim.agent_targets("triage/summarizer/x") == (
        "agent:triage/summarizer/x",
        "agent:triage/summarizer",
        "agent:triage",
    )
    assert lim.request_targets("ci", "triage/x", "openai", "openai/gpt-x") == (
        "key:ci",
        "agent:triage/x",
        "agent:triage",
        "source:openai",
        "model:openai/gpt-x",
    )
    assert lim.request_targets(None, None, None, None) == ()


@pytest.mark.parametrize(
    "window, now, start, end",
    [
        ("day", "2026-12-01T13:45:00Z", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"),
        ("week", "2026-12-03T10:00:00Z", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"),  # Monday to Monday
        ("month", "2026-02-15T10:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
        ("month", "2028-02-29T23:59:59Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"),  # a leap February
        ("month", "2026-12-31T23:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("minute", "2026-12-01T13:45:59Z", "2026-12-01T13:45:00Z", "2026-12-01T13:46:00Z"),
    ],
)
def test_windows_are_utc_calendar_windows(window, now, start, end):
    assert lim.window_bounds(window, ts(now)) == (ts(start), ts(end))


def test_the_total_window_never_ends_and_unknown_windows_are_refused():
    assert lim.window_bounds("total", 1e9) == (0.0, None)
    with pytest.raises(ValueError, match="unknown window"):
        lim.window_bounds("year", 1e9)


# --- keys ------------------------------------------------------------------------


def test_key_expiry_is_inclusive():
    key = GatewayKey("ci", "sha256:x", "gwk_", expires="2026-12-01T00:00:00Z", expires_at=ts("2026-12-01T00:00:00Z"))
    assert not lim.key_expired(key, ts("2026-11-30T23:59:59Z"))
    assert lim.key_expired(key, ts("2026-12-01T00:00:00Z"))
    assert not lim.key_expired(GatewayKey("x", "h", "p"), 1e12)


def test_key_scope_by_agent_subtree_and_model_glob():
    key = GatewayKey("bot", "h", "p", agents=("triage",), models=("openai/gpt-4o*", "claude-*"))
    assert lim.scope_refusal(key, "triage", "openai/gpt-4o-mini") is None
    assert lim.scope_refusal(key, "triage/summarizer", "anthropic/claude-3") is None  # the bare id matches
    assert "not agent triager" in lim.scope_refusal(key, "triager", "openai/gpt-4o")  # not a prefix match
    assert "without X-Gwctl-Agent" in lim.scope_refusal(key, None, "openai/gpt-4o")
    assert "not openai/o3" in lim.scope_refusal(key, "triage", "openai/o3")
    assert lim.scope_refusal(GatewayKey("any", "h", "p"), None, None) is None


# --- reservations ---------------------------------------------------------------


def test_a_reservation_is_the_prompt_at_the_dearest_input_price_plus_the_output_budget():
    res = lim.reservation(ENTRY, 100, 50)
    assert (res.output_tokens, res.output_from) == (50, "request")
    assert res.usd == D("0.000004") * 100 + D("0.00001") * 50
    assert lim.reservation(ENTRY, 100, None).output_tokens == 1000  # the entry's max output
    assert lim.reservation(ENTRY, 100, 5000).output_tokens == 1000  # never above it
    ctx_only = CatalogEntry("s", "m", context_size=300, prices={"input": D("1"), "per_request": D("0.5")})
    res = lim.reservation(ctx_only, 100, None)
    assert (res.output_tokens, res.output_from, res.usd) == (200, "context_size", D("100.5"))
    bare = lim.reservation(None, 100, None)
    assert (bare.output_tokens, bare.output_from, bare.usd) == (lim.DEFAULT_OUTPUT_RESERVE, "default", None)
    assert lim.reservation(CatalogEntry("s", "m"), 1, 1).usd is None  # an entry without prices is unbilled


# --- admission ------------------------------------------------------------------------


NOW = ts("2026-12-01T12:00:30Z")


def state(limit: Limit, **kw) -> lim.LimitState:
    start, end = lim.window_bounds(limit.window or "total", NOW)
    return lim.LimitState(limit, start, end, minute_start=lim.window_bounds("minute", NOW)[0], **kw)


def test_budget_admits_up_to_the_budget_exactly_and_refuses_past_it():
    limit = Limit("key:ci", budget=D("1"), window="day")
    res = lim.Reservation(0, 0, "request", D("0.25"))
    assert lim.check(state(limit, spent=D("0.5"), reserved=D("0.25")), res, NOW) is None  # exactly 1
    refusal = lim.check(state(limit, spent=D("0.5"), reserved=D("0.26")), res, NOW)
    assert (refusal.rule, refusal.status, refusal.etype) == ("budget_exceeded", 429, "insufficient_quota")
    assert "spent $0.5" in refusal.message and "of $1 this day" in refusal.message
    assert refusal.retry_after == 12 * 3600 - 30 and ("retry-after", str(12 * 3600 - 30)) in refusal.headers


def test_unbilled_requests_pass_a_budget_only_when_allowed():
    res = lim.Reservation(10, 10, "default", None)
    allow = Limit("key:ci", budget=D("1"), window="day")
    reject = Limit("key:ci", budget=D("1"), window="day", unbilled="reject")
    assert lim.check(state(allow, spent=D("5")), res, NOW) is None
    refusal = lim.check(state(reject), res, NOW)
    assert (refusal.rule, refusal.status) == ("budget_unbilled", 403)


def test_rate_limits_refuse_the_request_over_the_minute_with_retry_after_and_openai_headers():
    limit = Limit("agent:triage", rpm=3, tpm=1000)
    res = lim.Reservation(100, 100, "request", None)
    assert lim.check(state(limit, requests=2, tokens=800), res, NOW) is None
    refusal = lim.check(state(limit, requests=3), res, NOW)
    assert (refusal.rule, refusal.status, refusal.retry_after) == ("rate_limited", 429, 30)
    headers = dict(refusal.headers)
    assert headers["retry-after"] == "30"
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    tokens = lim.check(state(limit, requests=0, tokens=801), res, NOW)
    assert tokens.rule == "rate_limited" and "tokens per minute" in tokens.message
    huge = lim.check(state(limit), lim.Reservation(900, 200, "request", None), NOW)
    assert huge.retry_after is None and "more than agent:triage's 1000 per minute" in huge.message


def test_the_first_refusing_limit_in_order_is_the_answer():
    a = Limit("key:ci", rpm=10)
    b = Limit("source:openai", budget=D("0"), window="total")
    res = lim.Reservation(0, 0, "request", D("0.01"))
    refusal = lim.admit([state(a), state(b)], res, NOW)
    assert refusal.target == "source:openai" and refusal.retry_after is None  # a total budget never resets


# --- the ledger (one process) --------------------------------------------------------------


def run(coro):
    return asyncio.run(coro)


def test_the_ledger_holds_a_budget_with_requests_in_flight_and_settles_exact_costs():
    limit = Limit("key:ci", budget=D("1"), window="day")
    res = lim.Reservation(0, 0, "request", D("0.3"))

    async def go():
        ledger = Ledger(LocalBank())
        tickets = []
        for _ in range(5):
            refusal, ticket = await ledger.admit([limit], res, NOW)
            if ticket:
                tickets.append(ticket)
        assert len(tickets) == 3  # 0.9 reserved; a fourth would make 1.2
        for t in tickets:
            ledger.settle(t, D("0.1"), 10)
        refusal, ticket = await ledger.admit([limit], res, NOW)  # 0.3 spent: room again
        assert refusal is None
        ledger.settle(ticket, None, None)  # nothing known: the reservation is billed
        await ledger.heartbeat()
        st_ = ledger.state(limit, ledger.meters_of(limit, NOW), NOW)
        assert (st_.spent, st_.reserved) == (D("0.6"), D("0"))
        tomorrow = NOW + 86400
        st2 = ledger.state(limit, ledger.meters_of(limit, tomorrow), tomorrow)
        assert st2.spent == 0  # a new window

    run(go())


def test_the_ledger_rate_window_frees_as_it_slides():
    limit = Limit("key:ci", rpm=2)
    res = lim.Reservation(1, 1, "request", None)

    async def go():
        ledger = Ledger(LocalBank())
        outcomes = []
        for when in (NOW, NOW + 1, NOW + 2, NOW + 30, NOW + 60):
            refusal, ticket = await ledger.admit([limit], res, when)
            outcomes.append(refusal.rule if refusal else "ok")
            if ticket:
                ledger.settle(ticket, None, 2)
        # NOW + 30 starts the next minute, where the previous one still counts whole; 30 s later half of it
        assert outcomes == ["ok", "ok", "rate_limited", "rate_limited", "ok"]

    run(go())


@settings(max_examples=150, deadline=None)
@given(
    budget=st.decimals(min_value=D("0"), max_value=D("5"), places=3),
    steps=st.lists(
        st.tuples(
            st.decimals(min_value=D("0"), max_value=D("2"), places=3),  # reservation
            st.floats(min_value=0, max_value=1.5),  # actual cost as a share of it (above 1: the source overran)
            st.booleans(),  # settle now (else stays in flight)
        ),
        max_size=40,
    ),
)
def test_admitted_spend_never_exceeds_the_budget_plus_what_requests_overran(budget, steps):
    """The bound: spent + reserved <= budget + the sum of each admitted request's cost above its reservation."""
    limit = Limit("key:ci", budget=budget, window="total")

    async def go():
        ledger = Ledger(LocalBank())
        overrun = D(0)
        total = D(0)
        for reserve, share, settle in steps:
            refusal, ticket = await ledger.admit([limit], lim.Reservation(0, 0, "request", reserve), NOW)
            if ticket is None:
                continue
            if settle:
                cost = (reserve * D(str(round(share, 3)))).quantize(D("0.001"))
                overrun += max(D(0), cost - reserve)
                ledger.settle(ticket, cost, 0)
                total += cost
            else:
                total += reserve
            st_ = ledger.state(limit, ledger.meters_of(limit, NOW), NOW)
            assert st_.spent + st_.reserved <= budget + overrun
            assert total <= budget + overrun

    run(go())


def test_a_removed_limit_retires_its_meters_so_their_leases_are_returned():
    budget = Limit("key:ci", budget=D("1"), window="day", rpm=5)
    res = lim.Reservation(0, 0, "request", D("0.1"))

    async def go():
        ledger = Ledger(LocalBank())
        refusal, ticket = await ledger.admit([budget], res, NOW)
        assert refusal is None and len(ledger.meters) == 2
        ledger.keep_only({"key:ci": Limit("key:ci", budget=D("1"), window="day")})  # the rpm is gone
        assert list(ledger.meters) == [("key:ci", "usd")] and len(ledger.retiring) == 1
        ledger.settle(ticket, D("0.05"), 1)
        await ledger.heartbeat()
        assert ledger.retiring == []  # settled and nothing held: forgotten
        ledger.keep_only({})
        assert ledger.meters == {}

    run(go())


def test_the_rate_window_slides_the_previous_minute_counts_by_the_share_still_inside_it():
    limit = Limit("key:ci", rpm=10)
    res = lim.Reservation(1, 1, "request", None)
    # 15 s into the minute, the previous one still weighs 3/4: 8 of it count as 6; with 3 now, 9 + 1 = 10 fits
    assert lim.check(state(limit, requests=3, prev_requests=8), res, NOW - 15) is None
    refusal = lim.check(state(limit, requests=4, prev_requests=8), res, NOW - 15)
    # 4 + 6 + 1 > 10: room for it when 8 x weight <= 10 - 4 - 1 = 5, i.e. weight 5/8, 22.5 s into the minute
    assert refusal.rule == "rate_limited" and refusal.retry_after == 8
    assert lim.check(state(limit, requests=4, prev_requests=8), res, NOW - 7) is None  # 23 s in: 8 x 37/60 < 5
    # the current minute alone at the cap: wait for its end, whatever the previous one did
    assert lim.check(state(limit, requests=10, prev_requests=0), res, NOW).retry_after == 30


def test_the_ledger_carries_the_previous_minute_into_the_sliding_window():
    limit = Limit("key:ci", rpm=4)
    res = lim.Reservation(1, 1, "request", None)
    minute = lim.window_bounds("minute", NOW)[0]

    async def go():
        ledger = Ledger(LocalBank())
        for i in range(4):  # four in the last seconds of a minute
            refusal, ticket = await ledger.admit([limit], res, minute - 5 + i)
            assert refusal is None
            ledger.settle(ticket, None, 2)
        await ledger.heartbeat()
        refusal, _ = await ledger.admit([limit], res, minute + 1)  # a fixed window would admit 4 more here
        assert refusal is not None and refusal.rule == "rate_limited"
        refusal, _ = await ledger.admit([limit], res, minute + 30)  # half the previous minute still counts: 2
        assert refusal is None

    run(go())


@settings(max_examples=150, deadline=None)
@given(
    budget=st.one_of(st.none(), st.decimals(min_value=D("0"), max_value=D("3"), places=2)),
    rpm=st.one_of(st.none(), st.integers(1, 6)),
    tpm=st.one_of(st.none(), st.integers(1, 400)),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["fast", "slow", "settle", "cancel", "beat", "later"]),
            st.one_of(st.none(), st.decimals(min_value=D("0"), max_value=D("1"), places=2)),  # reservation USD
            st.integers(0, 150),  # tokens reserved, or used when settling
        ),
        max_size=40,
    ),
)
def test_the_coroutine_free_admission_agrees_with_the_full_check(budget, rpm, tpm, steps):
    """Ledger.try_admit (read straight off the meters) admits exactly when core.limits.admit over the
    ledger's states does, and each meter's ``free`` stays lease - delta - reserved through every step."""
    if budget is None and rpm is None and tpm is None:
        rpm = 3
    limit = Limit("key:ci", budget=budget, window="day" if budget is not None else None, rpm=rpm, tpm=tpm)
    limits = (limit,)

    async def go():
        ledger = Ledger(LocalBank())
        now = NOW
        held = []
        for op, usd, tokens in steps:
            res = lim.Reservation(tokens, 0, "request", usd)
            if op == "fast":
                states = [ledger.state(limit, ledger.meters_of(limit, now), now)]
                expected = lim.admit(states, res, now) is None
                ticket = ledger.try_admit(limits, res, now)
                assert (ticket is not None) == expected
                if ticket is not None:
                    held.append(ticket)
            elif op == "slow":
                _refusal, ticket = await ledger.admit(limits, res, now)
                if ticket is not None:
                    held.append(ticket)
            elif op == "settle" and held:
                ticket = held.pop(0)
                cost = None if usd is None else usd
                ledger.settle(ticket, cost, tokens)
            elif op == "cancel" and held:  # a failover moved it under other limits: as if never admitted
                ledger.cancel(held.pop(0))
            elif op == "beat":
                await ledger.heartbeat()
            elif op == "later":
                now += 20
            for meter in [*ledger.meters.values(), *ledger.retiring]:
                assert meter.free == meter.lease - meter.delta - meter.reserved

    run(go())


def test_a_cancelled_admission_leaves_no_trace():
    """Ledger.cancel (a failover moving a request under another source's limits) gives back the reservation
    and the request's count: the meters are as they were before it was admitted."""
    limit = Limit("key:ci", budget=D("1"), window="day", rpm=5, tpm=1000)
    res = lim.Reservation(100, 50, "request", D("0.25"))

    async def go():
        ledger = Ledger(LocalBank())
        _refusal, first = await ledger.admit([limit], res, NOW)
        meters = [m for m in ledger.meters.values()]
        before = [(m.reserved, m.free, m.delta, m.admitted) for m in meters]
        _refusal, second = await ledger.admit([limit], res, NOW)
        ledger.cancel(second)
        assert [(m.reserved, m.free, m.delta, m.admitted) for m in meters] == before
        ledger.cancel(second)  # twice is once
        assert [(m.reserved, m.free, m.delta, m.admitted) for m in meters] == before
        ledger.settle(first, D("0.1"), 120)
        assert ledger.state(limit, ledger.meters_of(limit, NOW), NOW).spent == D("0.1")

    run(go())
