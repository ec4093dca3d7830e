"""Usage parsing (OpenAI chat, Responses, Anthropic) and exact pricing."""

from __future__ import annotations

import json
from dataclasses import fields
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.catalog_values import parse_price
from gwctl.core.config import PRICE_KINDS, CatalogEntry
from gwctl.core.pricing import (
    FALLBACKS,
    USAGE_KINDS,
    Cost,
    LineItem,
    Usage,
    detect_usage,
    price,
    price_plan,
    usage_from_anthropic,
    usage_from_openai_chat,
    usage_from_responses,
)

GOLDEN = Path(__file__).parent / "golden"


def entry_with(ref: str = "local/m", **texts: str) -> CatalogEntry:
    source, _, model_id = ref.partition("/")
    return CatalogEntry(
        source=source,
        model_id=model_id,
        prices={k: parse_price(v, k) for k, v in texts.items()},
        price_text=dict(texts),
    )


# --- the pinned example ---------------------------------------------------------------


def test_pinned_openai_cost_is_exact():
    entry = entry_with(input="3e-6", output="1.5e-5", cached_input="1.5e-6")
    usage = usage_from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 200},
        }
    )
    cost = price(entry, usage)
    assert cost.billed
    assert cost.total == Decimal("0.00345")
    assert isinstance(cost.total, Decimal)
    assert cost.to_json()["total"] == "0.00345"
    assert [(i.kind, i.quantity) for i in cost.items] == [("input", 800), ("cached_input", 200), ("output", 50)]
    assert [i.amount for i in cost.items] == [Decimal("0.0024"), Decimal("0.0003"), Decimal("0.00075")]


# --- golden fixtures --------------------------------------------------------------------


GOLDEN_FILES = sorted(GOLDEN.glob("usage_*.json"))


def test_golden_fixtures_exist():
    names = {p.name for p in GOLDEN_FILES}
    assert {
        "usage_openai_chat.json",
        "usage_openai_responses.json",
        "usage_anthropic.json",
        "usage_anthropic_cache_web.json",
    } <= names


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden(path):
    case = json.loads(path.read_text())
    shape, usage = detect_usage(case["body"])
    assert shape == case["expected_shape"]
    assert usage.as_dict() == case["expected_usage"]
    entry = entry_with(case["ref"], **case["prices"])
    cost = price(entry, usage)
    assert cost.to_json() == case["expected_cost"]
    # the shape-specific reader gives the same usage as detection
    reader = {
        "openai_chat": usage_from_openai_chat,
        "openai_responses": usage_from_responses,
        "anthropic": usage_from_anthropic,
    }[shape]
    inner = case["body"].get("usage", case["body"])
    assert reader(inner) == usage
    # the JSON round-trips exactly
    assert Decimal(cost.to_json()["total"]) == cost.total
    assert sum((Decimal(i["amount"]) for i in cost.to_json()["items"]), Decimal(0)) == cost.total


# --- usage readers ---------------------------------------------------------------------


def test_openai_chat_split():
    u = usage_from_openai_chat(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 30, "audio_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 25, "audio_tokens": 5},
        }
    )
    assert u == Usage(
        input_tokens=50, cached_input_tokens=30, audio_input_tokens=20, output_tokens=40, reasoning_tokens=25
    )


def test_openai_chat_nulls_and_missing_are_zero():
    u = usage_from_openai_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": None,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
    )
    assert u == Usage(input_tokens=10)
    assert usage_from_openai_chat({}) == Usage()


def test_openai_chat_cached_above_prompt_is_refused():
    with pytest.raises(ValueError, match="cached_tokens .* exceed prompt_tokens"):
        usage_from_openai_chat({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}})


def test_responses_split():
    u = usage_from_responses(
        {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 64},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": 110,
        }
    )
    assert u == Usage(input_tokens=36, cached_input_tokens=64, output_tokens=10, reasoning_tokens=7)
    with pytest.raises(ValueError, match="exceed input_tokens"):
        usage_from_responses({"input_tokens": 1, "input_tokens_details": {"cached_tokens": 2}})


def test_anthropic_without_breakdown_writes_at_5m():
    u = usage_from_anthropic(
        {"input_tokens": 5, "output_tokens": 6, "cache_creation_input_tokens": 70, "cache_read_input_tokens": 80}
    )
    assert u == Usage(input_tokens=5, output_tokens=6, cache_write_5m_tokens=70, cache_read_tokens=80)


@pytest.mark.parametrize(
    "total, p5, p1, w5, w1",
    [
        (300, 100, 200, 100, 200),  # parts cover the total
        (300, 100, 150, 150, 150),  # remainder 50 billed at 5m
        (0, 100, 200, 100, 200),  # total missing: the parts count
        (250, 0, 250, 0, 250),  # all 1h
        (100, 80, 80, 80, 80),  # parts above the total win
        (40, None, None, 40, 0),  # empty breakdown: all at 5m
    ],
)
def test_anthropic_cache_creation_breakdown(total, p5, p1, w5, w1):
    u = usage_from_anthropic(
        {
            "input_tokens": 1,
            "cache_creation_input_tokens": total,
            "cache_creation": {"ephemeral_5m_input_tokens": p5, "ephemeral_1h_input_tokens": p1},
        }
    )
    assert (u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (w5, w1)


def test_anthropic_web_search_and_nulls():
    u = usage_from_anthropic(
        {
            "input_tokens": 3,
            "output_tokens": None,
            "cache_creation": None,
            "cache_read_input_tokens": None,
            "server_tool_use": {"web_search_requests": 2},
        }
    )
    assert u == Usage(input_tokens=3, web_searches=2)


@pytest.mark.parametrize("reader", [usage_from_openai_chat, usage_from_responses, usage_from_anthropic])
@pytest.mark.parametrize(
    "bad, fragment",
    [(-1, "must not be negative"), (1.5, "whole number"), ("12", "whole number"), (True, "whole number")],
)
def test_readers_refuse_bad_counts(reader, bad, fragment):
    key = "prompt_tokens" if reader is usage_from_openai_chat else "input_tokens"
    with pytest.raises(ValueError, match=fragment) as info:
        reader({key: bad})
    assert key in str(info.value)


def test_nested_bad_count_names_the_path():
    with pytest.raises(ValueError, match=r"prompt_tokens_details\.cached_tokens must not be negative"):
        usage_from_openai_chat({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": -2}})
    with pytest.raises(ValueError, match=r"server_tool_use\.web_search_requests"):
        usage_from_anthropic({"server_tool_use": {"web_search_requests": "3"}})
    with pytest.raises(ValueError, match="prompt_tokens_details must be an object"):
        usage_from_openai_chat({"prompt_tokens_details": [1]})


def test_integral_float_counts_are_read():
    assert usage_from_openai_chat({"prompt_tokens": 12.0}).input_tokens == 12


# --- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj, shape",
    [
        ({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, "openai_chat"),
        ({"completion_tokens": 2}, "openai_chat"),
        ({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}, "openai_responses"),
        ({"input_tokens": 1, "input_tokens_details": {"cached_tokens": 0}}, "openai_responses"),
        ({"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0}, "anthropic"),
        ({"output_tokens": 15}, "anthropic"),  # Anthropic message_delta usage
        ({"input_tokens": 1, "output_tokens": 2}, "anthropic"),
        ({"object": "response", "usage": {"input_tokens": 1, "output_tokens": 2}}, "openai_responses"),
        ({"type": "message", "usage": {"input_tokens": 1, "output_tokens": 2}}, "anthropic"),
        ({"object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 4}}, "openai_chat"),
        (
            {
                "type": "response.completed",
                "response": {"object": "response", "usage": {"input_tokens": 1, "output_tokens": 2}},
            },
            "openai_responses",
        ),
        (
            {"type": "message_start", "message": {"type": "message", "usage": {"input_tokens": 9, "output_tokens": 1}}},
            "anthropic",
        ),
    ],
)
def test_detect_usage_shapes(obj, shape):
    got_shape, usage = detect_usage(obj)
    assert got_shape == shape
    assert isinstance(usage, Usage) and usage.requests == 1


def test_bare_pair_reads_the_same_either_way():
    pair = {"input_tokens": 7, "output_tokens": 3}
    assert usage_from_anthropic(pair) == usage_from_responses(pair) == detect_usage(pair)[1]


@pytest.mark.parametrize(
    "obj, fragment",
    [
        ({}, "not recognised"),
        ({"tokens": 5}, "got keys: tokens"),
        ({"id": "x", "object": "chat.completion", "choices": []}, "not recognised"),
        ({"usage": None}, "no usage"),
        ({"usage": 5}, "must be a JSON object"),
        ([1, 2], "must be a JSON object"),
        ("prompt_tokens", "must be a JSON object"),
    ],
)
def test_detect_usage_refuses_unknown(obj, fragment):
    with pytest.raises(ValueError, match=fragment):
        detect_usage(obj)


def test_detect_usage_refuses_negative():
    with pytest.raises(ValueError, match="completion_tokens must not be negative"):
        detect_usage({"usage": {"prompt_tokens": 1, "completion_tokens": -1}})


# --- Usage -------------------------------------------------------------------------------------


def test_usage_add_and_sum():
    a = Usage(input_tokens=1, output_tokens=2, web_searches=1)
    b = Usage(input_tokens=10, cache_read_tokens=5, images=2)
    c = a + b
    assert c == Usage(input_tokens=11, output_tokens=2, cache_read_tokens=5, web_searches=1, images=2, requests=2)
    assert sum([a, b, a]) == a + b + a
    assert sum([a, b, a]).requests == 3
    with pytest.raises(TypeError):
        a + 1  # noqa: B018


def test_usage_as_dict_round_trip():
    u = Usage(input_tokens=3, reasoning_tokens=2, output_tokens=4, requests=0)
    d = u.as_dict()
    assert list(d) == [f.name for f in fields(Usage)]
    assert Usage.from_dict(d) == u
    with pytest.raises(ValueError, match="unknown usage field"):
        Usage.from_dict({"tokens": 1})


@pytest.mark.parametrize("bad", [-1, 1.0, "1", True, None])
def test_usage_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="usage output_tokens must be a non-negative whole number"):
        Usage(output_tokens=bad)


# --- price(): unbilled -------------------------------------------------------------------------


def test_no_entry_is_unbilled_not_zero():
    cost = price(None, Usage(input_tokens=100, output_tokens=10), "local/gpt-5.5")
    assert cost.total is None and not cost.billed
    assert cost.unbilled_reason == "no catalog entry for local/gpt-5.5"
    assert cost.items == ()
    assert cost.to_json() == {
        "billed": False,
        "currency": "USD",
        "total": None,
        "unbilled_reason": "no catalog entry for local/gpt-5.5",
        "items": [],
    }


def test_entry_without_prices_is_unbilled():
    entry = CatalogEntry(source="local", model_id="llama", context_size=8192)
    cost = price(entry, Usage(input_tokens=5))
    assert cost.total is None
    assert cost.unbilled_reason == "catalog entry local/llama sets no prices"
    assert price(entry, Usage(input_tokens=5), ref="alias").unbilled_reason == "catalog entry alias sets no prices"


@pytest.mark.parametrize("model_id", ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "o3"])
def test_well_known_ids_have_no_built_in_price(model_id):
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert price(None, usage, f"openai/{model_id}").total is None
    assert price(CatalogEntry(source="openai", model_id=model_id), usage).total is None
    only_input = entry_with(f"openai/{model_id}", input="1e-9")
    cost = price(only_input, usage)
    assert cost.total == Decimal("0.001")  # just the entry's input price; output not charged
    assert cost.items[1].unit_price is None and cost.items[1].note == "no output price set; not charged"


# --- price(): fallbacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, field_name, prices, applied",
    [
        ("cached_input", "cached_input_tokens", {"cache_read": "2e-7", "input": "1e-6"}, "cache_read"),
        ("cached_input", "cached_input_tokens", {"input": "1e-6"}, "input"),
        ("cache_read", "cache_read_tokens", {"cached_input": "3e-7", "input": "1e-6"}, "cached_input"),
        ("cache_read", "cache_read_tokens", {"input": "1e-6"}, "input"),
        ("cache_write_5m", "cache_write_5m_tokens", {"input": "1e-6", "cache_write_1h": "9e-6"}, "input"),
        ("cache_write_1h", "cache_write_1h_tokens", {"cache_write_5m": "4e-6", "input": "1e-6"}, "cache_write_5m"),
        ("cache_write_1h", "cache_write_1h_tokens", {"input": "1e-6"}, "input"),
        ("audio_input", "audio_input_tokens", {"input": "1e-6"}, "input"),
    ],
)
def test_fallbacks(kind, field_name, prices, applied):
    entry = entry_with(**prices)
    (item,) = price(entry, Usage(**{field_name: 1000}, requests=0)).items
    assert item.kind == kind
    assert item.price_kind == applied
    assert item.unit_price == Decimal(prices[applied])
    assert item.amount == 1000 * Decimal(prices[applied])
    assert item.note == f"no {kind} price; billed at {applied}"


def test_own_price_beats_fallback():
    entry = entry_with(input="1e-6", cached_input="1e-7", cache_read="2e-7")
    item = price(entry, Usage(cached_input_tokens=10, requests=0)).items[0]
    assert (item.price_kind, item.note) == ("cached_input", "")


@pytest.mark.parametrize(
    "kind, field_name",
    [("output", "output_tokens"), ("web_search", "web_searches"), ("image", "images"), ("input", "input_tokens")],
)
def test_no_fallback_kinds_are_not_charged(kind, field_name):
    others = {k: "0.5" for k in ("output", "web_search", "image", "input") if k != kind}
    entry = entry_with(**others)
    cost = price(entry, Usage(**{field_name: 7}, requests=0))
    (item,) = cost.items
    assert item == LineItem(kind, 7, None, Decimal(0), None, f"no {kind} price set; not charged")
    assert cost.total == 0 and cost.billed


def test_per_request_line_only_when_priced():
    usage = Usage(input_tokens=1, requests=3)
    assert [i.kind for i in price(entry_with(input="1e-6"), usage).items] == ["input"]
    items = price(entry_with(input="1e-6", per_request="0.002"), usage).items
    assert items[-1] == LineItem("per_request", 3, Decimal("0.002"), Decimal("0.006"), "per_request", "")
    assert price(entry_with(per_request="0.002"), Usage(requests=0)).items == ()


def test_line_items_follow_the_fixed_order():
    entry = entry_with(**{k: "1e-6" for k in PRICE_KINDS})
    usage = Usage(**{f.name: 1 for f in fields(Usage) if f.name != "reasoning_tokens"})
    kinds = [i.kind for i in price(entry, usage).items]
    assert kinds == [
        "input",
        "cached_input",
        "cache_read",
        "cache_write_5m",
        "cache_write_1h",
        "output",
        "audio_input",
        "web_search",
        "image",
        "per_request",
    ]
    assert [k for k, _ in USAGE_KINDS] == kinds
    assert set(FALLBACKS) == set(PRICE_KINDS)


def test_reasoning_tokens_are_not_billed_twice():
    entry = entry_with(output="1e-5")
    with_r = price(entry, Usage(output_tokens=100, reasoning_tokens=80))
    without = price(entry, Usage(output_tokens=100))
    assert with_r.total == without.total == Decimal("0.001")


def test_no_rounding_even_with_many_digits():
    p = "0.000000123456789012345678901234567890123456789"  # 45 decimal places, 39 digits
    entry = entry_with(input=p)
    n = 987_654_321_987_654_321
    cost = price(entry, Usage(input_tokens=n))
    exact = Decimal(f"{n * 123456789012345678901234567890123456789}E-45")  # built from text: exact
    assert cost.total == exact
    assert len(exact.as_tuple().digits) > 50  # more than any default context keeps


def test_invalid_entry_price_is_an_error_not_a_silent_zero():
    for bad in (Decimal("NaN"), Decimal("-1"), 0.5, "1e-6"):
        entry = CatalogEntry(source="s", model_id="m", prices={"input": bad})
        with pytest.raises(ValueError, match="catalog entry s/m has an invalid input price"):
            price(entry, Usage(input_tokens=1))


def test_int_entry_price_is_accepted():
    entry = CatalogEntry(source="s", model_id="m", prices={"per_request": 2})
    assert price(entry, Usage()).total == Decimal(2)


# --- hypothesis: exactness and additivity --------------------------------------------------------

price_values = st.builds(lambda digits, exp: Decimal(f"{digits}E{exp}"), st.integers(0, 10**12), st.integers(-18, 0))
entries = st.dictionaries(st.sampled_from(PRICE_KINDS), price_values, max_size=len(PRICE_KINDS)).map(
    lambda prices: CatalogEntry(source="h", model_id="m", prices=prices)
)
counts = st.integers(0, 10**9)
usages = st.builds(
    Usage,
    input_tokens=counts,
    cached_input_tokens=counts,
    cache_read_tokens=counts,
    cache_write_5m_tokens=counts,
    cache_write_1h_tokens=counts,
    output_tokens=counts,
    reasoning_tokens=counts,
    audio_input_tokens=counts,
    web_searches=st.integers(0, 1000),
    images=st.integers(0, 1000),
    requests=st.integers(0, 5),
)


def _no_float_anywhere(cost: Cost) -> None:
    assert cost.total is None or isinstance(cost.total, Decimal)
    for item in cost.items:
        assert isinstance(item.amount, Decimal)
        assert item.unit_price is None or isinstance(item.unit_price, Decimal)
        assert isinstance(item.quantity, int)
    assert "float" not in json.dumps(cost.to_json(), default=lambda o: f"float:{o!r}")


@settings(max_examples=200, deadline=None)
@given(entries, usages)
def test_total_is_the_exact_sum_of_items(entry, usage):
    cost = price(entry, usage)
    _no_float_anywhere(cost)
    if not entry.prices:
        assert cost.total is None
        return
    with localcontext(prec=1000):  # the test's own arithmetic must not round either
        assert cost.total == sum((i.amount for i in cost.items), Decimal(0))
    for item in cost.items:
        if item.unit_price is None:
            assert item.amount == 0 and item.price_kind is None
            continue
        _, digits, exp = item.unit_price.as_tuple()
        scaled = int("".join(map(str, digits)))
        assert item.amount == Decimal(f"{item.quantity * scaled}E{exp}")  # exact integer arithmetic
    back = cost.to_json()
    assert Decimal(back["total"]) == cost.total


@settings(max_examples=200, deadline=None)
@given(entries, usages, usages)
def test_pricing_is_additive(entry, u1, u2):
    """Usage.__add__ sums requests too, so prices of separate requests add up exactly."""
    c1, c2, both = price(entry, u1), price(entry, u2), price(entry, u1 + u2)
    if not entry.prices:
        assert c1.total is c2.total is both.total is None
        return
    with localcontext(prec=1000):
        assert both.total == c1.total + c2.total


@settings(max_examples=200, deadline=None)
@given(entries, usages, usages)
def test_one_request_with_merged_tokens_saves_one_per_request_charge(entry, u1, u2):
    """Two requests' tokens sent as ONE request cost the sum minus one per_request price."""
    one_each = Usage.from_dict({**u1.as_dict(), "requests": 1}), Usage.from_dict({**u2.as_dict(), "requests": 1})
    merged = Usage.from_dict({**(one_each[0] + one_each[1]).as_dict(), "requests": 1})
    if not entry.prices:
        return
    per_request = entry.prices.get("per_request", Decimal(0))
    with localcontext(prec=1000):
        separate = price(entry, one_each[0]).total + price(entry, one_each[1]).total
        assert price(entry, merged).total == separate - per_request


@settings(max_examples=300, deadline=None)
@given(entries, usages)
def test_the_plans_total_is_the_itemised_total(entry, usage):
    """The proxy's log prices with PricePlan.total; it must equal the itemised bill to the last digit."""
    plan = price_plan(entry)
    assert plan.total(usage.counts()) == price(entry, usage).total
    assert (plan.total(usage.counts()) is None) == (not entry.prices)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 100),
)
def test_readers_build_usages_that_pass_the_full_checks(
    prompt, completion, cached, audio, reasoning, cache_read, write, searches
):
    """The readers skip Usage's own checks (they validated each count): what they build must pass them."""
    prompt += cached + audio
    built = [
        usage_from_openai_chat(
            {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            }
        ),
        usage_from_responses(
            {
                "input_tokens": prompt,
                "output_tokens": completion,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens_details": {"reasoning_tokens": reasoning},
            }
        ),
        usage_from_anthropic(
            {
                "input_tokens": prompt,
                "output_tokens": completion,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": write,
                "server_tool_use": {"web_search_requests": searches},
            }
        ),
    ]
    for u in built:
        assert Usage(**vars(u)) == u and u.requests == 1
        assert all(type(n) is int and n >= 0 for n in u.counts())


@pytest.mark.parametrize("fine", ["1E-61", "3E-70", "0.5E-65"])
def test_the_plans_total_stays_exact_for_prices_too_fine_to_scale(fine):
    """Prices finer than the integer path's scale are summed as Decimals, still to the last digit."""
    entry = CatalogEntry("s", "m", prices={"input": Decimal(fine), "output": Decimal("0.000015")})
    plan = price_plan(entry)
    assert plan.scaled is None
    usage = Usage(input_tokens=123_456_789, output_tokens=7)
    with localcontext(prec=1000):
        expected = Decimal(fine) * 123_456_789 + Decimal("0.000105")
    assert plan.total(usage.counts()) == price(entry, usage).total == expected


def test_the_plans_integer_total_equals_the_decimal_sum():
    entry = CatalogEntry(
        "s", "m", prices={"input": Decimal("3E-6"), "output": Decimal("1.5E+1"), "cached_input": Decimal("0.00000075")}
    )
    plan = price_plan(entry)
    assert plan.scaled is not None and plan.scale == 8
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=3)
    assert plan.total(usage.counts()) == price(entry, usage).total


def test_plan_cache_prices_per_entry_object():
    from types import MappingProxyType as MP

    from gwctl.core.config import CatalogEntry
    from gwctl.core.pricing import PlanCache

    cache = PlanCache()
    counts = Usage(input_tokens=1000, output_tokens=100).counts()
    entry = CatalogEntry("s", "m", prices=MP({"input": Decimal("1e-6"), "output": Decimal("2e-6")}))
    assert cache.total(entry, counts) == Decimal("0.0012")
    dearer = CatalogEntry("s", "m", prices=MP({"input": Decimal("2e-6"), "output": Decimal("2e-6")}))
    assert cache.total(dearer, counts) == Decimal("0.0022")  # another object (a reload): its own plan
    assert cache.total(entry, counts) == Decimal("0.0012")
    broken = CatalogEntry("s", "m", prices=MP({"input": Decimal("-1")}))
    assert cache.total(broken, counts) is None  # an invalid price: no plan, no total
    assert cache.total(CatalogEntry("s", "m"), counts) is None  # no prices: unbilled
