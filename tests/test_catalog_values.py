"""Price parsing, printing, capability flags and catalog lint warnings."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core import catalog_values
from gwctl.core.catalog_values import (
    MAX_PRICE,
    format_price,
    format_usd,
    lint_entry,
    parse_capability_assignment,
    parse_price,
    parse_price_assignment,
    price_unit,
)
from gwctl.core.config import CAPABILITIES, PRICE_KINDS, CatalogEntry

# --- parse_price: accepted -------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.000003", Decimal("0.000003")),
        ("3.0e-6", Decimal("3.0e-6")),
        ("3E-6", Decimal("3e-6")),
        ("0", Decimal(0)),
        (" 1.5e-5 ", Decimal("1.5e-5")),
        ("+2.5e-6", Decimal("2.5e-6")),
        (".5", Decimal("0.5")),
        ("1e+2", Decimal(100)),
    ],
)
def test_parse_price_accepts_decimal_and_exponent_text(text, expected):
    got = parse_price(text, "input")
    assert isinstance(got, Decimal)
    assert got == expected


def test_parse_price_keeps_the_decimal_as_written():
    got = parse_price("3.0e-6", "output")
    assert got.as_tuple() == Decimal("3.0e-6").as_tuple()
    assert format_price(got) == "0.0000030"


def test_parse_price_int_decimal_and_toml_float():
    assert parse_price(0, "input") == Decimal(0)
    assert parse_price(2, "per_request") == Decimal(2)
    d = Decimal("0.0000150")
    assert parse_price(d, "output").as_tuple() == d.as_tuple()
    # hand-edited TOML floats go through repr(), never through binary float value
    assert parse_price(3e-6, "input") == Decimal("0.000003")
    assert parse_price(0.1, "image") == Decimal("0.1")
    assert parse_price(1.5e-05, "input") == Decimal("1.5e-5")


def test_negative_zero_becomes_zero():
    got = parse_price("-0", "input")
    assert got == 0 and not got.is_signed()
    assert format_price(parse_price("-0.0", "input")) == "0.0"


# --- parse_price: refused ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["input", "cache_write_1h", "web_search"])
@pytest.mark.parametrize(
    "value, fragment",
    [
        ("-1", "must not be negative"),
        ("-3e-6", "must not be negative"),
        (-1, "must not be negative"),
        (Decimal("-0.1"), "must not be negative"),
        (-0.5, "must not be negative"),
        ("nan", "finite"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("inf", "finite"),
        ("-Infinity", "finite"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("abc", "got 'abc'"),
        ("", "empty"),
        ("   ", "empty"),
        (True, "boolean true"),
        (False, "boolean false"),
        (None, "NoneType"),
        ("1_000", "got '1_000'"),
        ("3e-6 USD", "got '3e-6 USD'"),
        ("$3", "got '$3'"),
        ("\u0663", "non-negative number"),  # Arabic-Indic digit three
        ("1e999999999999999999999999", "reasonable exponent"),
        ("1e9", "below 1000000000"),
        ("1e-61", "decimal places"),
        ("0." + "1" * 61, "decimal places"),
    ],
)
def test_parse_price_refusals_name_the_kind(kind, value, fragment):
    with pytest.raises(ValueError) as info:
        parse_price(value, kind)
    message = str(info.value)
    assert f"price {kind} " in message
    assert fragment in message
    assert "\n" not in message


def test_refusal_says_what_is_allowed_with_the_right_unit():
    with pytest.raises(ValueError, match=r"USD per token, like 0\.000003 or 3e-6; got 'abc'"):
        parse_price("abc", "input")
    with pytest.raises(ValueError, match="USD per request"):
        parse_price("abc", "per_request")
    with pytest.raises(ValueError, match="USD per web search"):
        parse_price("-1", "web_search")
    with pytest.raises(ValueError, match="USD per image"):
        parse_price("x", "image")


@pytest.mark.parametrize("kind", ["inptu", "Input", "", "per-request", "price"])
def test_unknown_kind_lists_valid_kinds(kind):
    with pytest.raises(ValueError) as info:
        parse_price("1e-6", kind)
    message = str(info.value)
    assert "unknown price kind" in message
    assert repr(kind) in message
    for valid in PRICE_KINDS:
        assert valid in message


def test_unknown_kind_suggests_the_close_one():
    with pytest.raises(ValueError, match=r"did you mean input\?"):
        parse_price("1", "inptu")


def test_check_price_kind():
    assert catalog_values.check_price_kind("cache_read") == "cache_read"
    with pytest.raises(ValueError, match="unknown price kind 'cache'"):
        catalog_values.check_price_kind("cache")


def test_price_unit():
    assert price_unit("input") == "USD per token"
    assert price_unit("per_request") == "USD per request"
    with pytest.raises(ValueError, match="unknown price kind"):
        price_unit("nope")


# --- parse_price_assignment --------------------------------------------------------


def test_parse_price_assignment():
    kind, value, text = parse_price_assignment("input=3.0e-6")
    assert (kind, text) == ("input", "3.0e-6")
    assert value.as_tuple() == Decimal("3.0e-6").as_tuple()
    assert parse_price_assignment(" cache_write_1h = 6E-6 ") == ("cache_write_1h", Decimal("6e-6"), "6E-6")
    assert parse_price_assignment("OUTPUT=1.5e-5")[0] == "output"


def test_parse_price_assignment_missing_equals_names_the_form():
    with pytest.raises(ValueError) as info:
        parse_price_assignment("input3e-6")
    assert "KIND=USD" in str(info.value)
    assert "input3e-6" in str(info.value)


def test_parse_price_assignment_empty_kind():
    with pytest.raises(ValueError, match="KIND=USD"):
        parse_price_assignment("=3e-6")


def test_parse_price_assignment_bad_parts():
    with pytest.raises(ValueError, match="unknown price kind 'cost'"):
        parse_price_assignment("cost=1")
    with pytest.raises(ValueError, match="price output must not be negative"):
        parse_price_assignment("output=-1e-6")
    with pytest.raises(ValueError, match="price input .*empty"):
        parse_price_assignment("input=")


# --- format_price / format_usd -----------------------------------------------------


@pytest.mark.parametrize(
    "d, text",
    [
        (Decimal("3.0e-6"), "0.0000030"),
        (Decimal("3e-6"), "0.000003"),
        (Decimal("1E+2"), "100"),
        (Decimal("0"), "0"),
        (Decimal("0E-5"), "0.00000"),
        (Decimal("12.50"), "12.50"),
    ],
)
def test_format_price(d, text):
    assert format_price(d) == text


@pytest.mark.parametrize(
    "d, text",
    [
        (Decimal("0.0034500"), "0.00345"),
        (Decimal("0.00345"), "0.00345"),
        (Decimal("2.000"), "2"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0E-9"), "0"),
        (Decimal("1E-30"), "0.000000000000000000000000000001"),
        (
            Decimal("123456789012345678901234567890.123456789012345678900"),
            "123456789012345678901234567890.1234567890123456789",
        ),
    ],
)
def test_format_usd(d, text):
    assert format_usd(d) == text
    assert Decimal(text) == d  # no value lost, even beyond 28 digits


@pytest.mark.parametrize("fn", [format_price, format_usd])
@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 0.5, "1"])
def test_formatters_refuse_non_decimals(fn, bad):
    with pytest.raises(ValueError):
        fn(bad)


# --- hypothesis properties ----------------------------------------------------------

accepted_prices = st.one_of(
    st.builds(  # long and tiny: up to 40 digits, 32..60 decimal places
        lambda digits, exp: Decimal(f"{digits}E{exp}"),
        st.integers(0, 10**40),
        st.integers(-60, -32),
    ),
    st.builds(  # everyday: up to 9 digits, 0..30 decimal places
        lambda digits, exp: Decimal(f"{digits}E{exp}"),
        st.integers(0, 10**8),
        st.integers(-30, 0),
    ),
    st.builds(
        lambda digits, exp: Decimal(f"{digits}E{exp}"),
        st.integers(0, 99_999),
        st.integers(0, 4),
    ),
    st.decimals(min_value=0, max_value=10**8, allow_nan=False, allow_infinity=False, places=12),
)


@settings(max_examples=200, deadline=None)
@given(accepted_prices, st.sampled_from(PRICE_KINDS))
def test_format_then_parse_is_exact(d, kind):
    text = format_price(d)
    assert "e" not in text.lower()
    back = parse_price(text, kind)
    assert back == d
    if d.as_tuple().exponent <= 0 and not d.is_zero():
        assert back.as_tuple() == d.as_tuple()  # digits and trailing zeros kept
    assert Decimal(format_usd(d)) == d


number_text = st.builds(
    lambda lead, whole, frac, exp_mark, exp_sign, exp, pad_l, pad_r: (
        f"{pad_l}{lead}{whole}{frac}{exp_mark}{exp_sign if exp_mark else ''}{exp if exp_mark else ''}{pad_r}"
    ),
    st.sampled_from(["", "+"]),
    st.from_regex(r"[0-9]{1,8}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,12}", fullmatch=True)),
    st.sampled_from(["", "e", "E"]),
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 20),
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["", " ", "\n"]),
)


@settings(max_examples=200, deadline=None)
@given(number_text)
def test_parse_of_generated_text_equals_decimal(text):
    expected = Decimal(text.strip())
    if expected >= MAX_PRICE or -expected.as_tuple().exponent > 60:
        with pytest.raises(ValueError, match="price input"):
            parse_price(text, "input")
    else:
        got = parse_price(text, "input")
        assert got == expected
        if not expected.is_zero():
            assert got.as_tuple() == expected.as_tuple()


@settings(max_examples=100, deadline=None)
@given(st.decimals(max_value=Decimal("-1E-30"), allow_nan=False, allow_infinity=False))
def test_every_negative_is_refused(d):
    with pytest.raises(ValueError, match="price cache_read must not be negative"):
        parse_price(d, "cache_read")
    with pytest.raises(ValueError, match="price cache_read must not be negative"):
        parse_price(str(d), "cache_read")


# --- capabilities -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("vision=true", ("vision", True)),
        ("vision=false", ("vision", False)),
        ("vision=unset", ("vision", None)),
        ("tools=YES", ("tools", True)),
        ("tools=No", ("tools", False)),
        ("streaming=on", ("streaming", True)),
        ("streaming=OFF", ("streaming", False)),
        ("json_output=1", ("json_output", True)),
        ("audio=0", ("audio", False)),
        (" reasoning = Unset ", ("reasoning", None)),
        ("Vision=TRUE", ("vision", True)),
    ],
)
def test_parse_capability_assignment(text, expected):
    assert parse_capability_assignment(text) == expected


@pytest.mark.parametrize("name", ["vison", "images", "", "stream"])
def test_unknown_capability_lists_valid_names(name):
    with pytest.raises(ValueError) as info:
        parse_capability_assignment(f"{name}=true")
    message = str(info.value)
    assert "unknown capability" in message
    assert repr(name) in message
    for valid in CAPABILITIES:
        assert valid in message


@pytest.mark.parametrize("value", ["maybe", "", "2", "truthy", "none"])
def test_bad_capability_value_names_the_choices(value):
    with pytest.raises(ValueError) as info:
        parse_capability_assignment(f"tools={value}")
    message = str(info.value)
    assert "capability tools" in message
    for word in ("true", "false", "unset"):
        assert word in message


def test_capability_without_equals_names_the_form():
    with pytest.raises(ValueError, match=r"NAME=true\|false\|unset"):
        parse_capability_assignment("vision")


# --- lint ---------------------------------------------------------------------------


def _entry(**kw) -> CatalogEntry:
    prices = {k: Decimal(v) for k, v in kw.pop("prices", {}).items()}
    return CatalogEntry(source="local", model_id="qwen/qwen3", prices=prices, **kw)


def test_lint_clean_entry_has_no_warnings():
    entry = _entry(
        prices={
            "input": "3e-6",
            "output": "1.5e-5",
            "cache_read": "3e-7",
            "cache_write_5m": "3.75e-6",
            "cache_write_1h": "6e-6",
            "per_request": "5",
        },
        context_size=200_000,
        max_output=64_000,
    )
    assert lint_entry(entry) == []


@pytest.mark.parametrize(
    "kind", ["input", "output", "cached_input", "cache_read", "cache_write_5m", "cache_write_1h", "audio_input"]
)
def test_lint_per_million_price(kind):
    prices = {"input": "1e-6", "output": "2e-6", kind: "3"}
    warnings = lint_entry(_entry(prices=prices))
    hits = [w for w in warnings if "per-million" in w]
    assert len(hits) == 1
    assert hits[0].startswith("local/qwen/qwen3: ")
    assert f" {kind} price 3 " in hits[0]
    assert "3e-6 for $3/M" in hits[0]


def test_lint_threshold_is_exclusive_and_skips_non_token_kinds():
    at = _entry(prices={"input": "0.001", "output": "0.001"})
    assert not any("per-million" in w for w in lint_entry(at))
    big = _entry(
        prices={"input": "1e-6", "output": "2e-6", "per_request": "0.5", "web_search": "0.01", "image": "0.04"}
    )
    assert lint_entry(big) == []


def test_lint_uses_the_written_price_text():
    entry = CatalogEntry(
        source="s",
        model_id="m",
        prices={"input": Decimal("3.0"), "output": Decimal("1.5e-5")},
        price_text={"input": "3.0"},
    )
    (warning,) = lint_entry(entry)
    assert "input price 3.0 USD per token" in warning


def test_lint_cache_read_above_input():
    warnings = lint_entry(_entry(prices={"input": "1e-6", "output": "2e-6", "cache_read": "2e-6"}))
    assert len(warnings) == 1
    assert "local/qwen/qwen3" in warnings[0] and "cache_read" in warnings[0] and "input" in warnings[0]


def test_lint_cached_input_above_input():
    warnings = lint_entry(_entry(prices={"input": "1e-6", "output": "2e-6", "cached_input": "2e-6"}))
    assert len(warnings) == 1 and "cached_input" in warnings[0]


def test_lint_cache_write_1h_below_5m():
    warnings = lint_entry(
        _entry(prices={"input": "1e-6", "output": "2e-6", "cache_write_5m": "4e-6", "cache_write_1h": "3e-6"})
    )
    assert len(warnings) == 1
    assert "cache_write_1h" in warnings[0] and "cache_write_5m" in warnings[0]
    equal = _entry(prices={"input": "1e-6", "output": "2e-6", "cache_write_5m": "4e-6", "cache_write_1h": "4e-6"})
    assert lint_entry(equal) == []


def test_lint_output_missing():
    warnings = lint_entry(_entry(prices={"input": "1e-6"}))
    assert warnings == [
        "local/qwen/qwen3: output price is not set although input is; output tokens will not be charged"
    ]
    assert lint_entry(_entry(prices={"per_request": "0.01"})) == []


def test_lint_max_output_above_context():
    warnings = lint_entry(_entry(context_size=8192, max_output=16384))
    assert len(warnings) == 1
    assert "max_output 16384" in warnings[0] and "context_size 8192" in warnings[0]
    assert lint_entry(_entry(context_size=8192, max_output=8192)) == []
    assert lint_entry(_entry(max_output=16384)) == []


def test_lint_collects_every_warning():
    entry = _entry(
        prices={"input": "3", "cache_read": "4", "cache_write_5m": "2e-6", "cache_write_1h": "1e-6"},
        context_size=10,
        max_output=20,
    )
    warnings = lint_entry(entry)
    assert len(warnings) == 6  # input and cache_read per-million, cache_read>input, 1h<5m, no output, max_output
    assert all(w.startswith("local/qwen/qwen3: ") for w in warnings)


# --- purity --------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["catalog_values", "pricing"])
def test_core_modules_import_nothing_impure(module):
    path = Path(catalog_values.__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {
        "__future__",
        "dataclasses",
        "datetime",
        "decimal",
        "difflib",
        "operator",
        "re",
        "typing",
        "gwctl",
    }
    assert "float(" not in path.read_text()
