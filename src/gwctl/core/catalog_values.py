"""Reading, printing and sanity-checking catalog prices and capability flags.

Prices are money, so they are :class:`decimal.Decimal` from the moment they are
read to the moment they are printed; a float is never produced. Rules:

* A price is a non-negative, finite number in USD per unit (per token for the
  token kinds, per request / web search / image for the others), written in
  decimal (``0.000003``) or exponent (``3.0e-6``, ``3E-6``) notation. Signs,
  ``NaN``, infinities, booleans, empty text, digit separators (``1_000``) and
  non-ASCII digits are refused with one sentence naming the price kind.
* The Decimal is kept exactly as written: ``3.0e-6`` stays ``Decimal("3.0E-6")``
  (same value as ``3e-6``, trailing zero kept), so the store can show it back.
  Only ``-0`` is turned into ``0``.
* Bounds that keep printing and arithmetic finite: a price is below
  1,000,000,000 USD, written with at most 60 digits, and at most 60 decimal
  places.
* :func:`format_price` prints a price without an exponent and with exactly the
  digits the Decimal holds (``3.0e-6`` -> ``0.0000030``), so
  ``parse_price(format_price(d), kind) == d`` for every accepted price.
* :func:`format_usd` prints an amount or total without an exponent and without
  trailing fractional zeros (``0.0034500`` -> ``0.00345``); the value is never
  rounded.
* :func:`lint_entry` only warns; it never refuses an entry.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from datetime import datetime, timezone
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    InvalidOperation,
)

from gwctl.core.config import CAPABILITIES, PRICE_KINDS, CatalogEntry
from gwctl.core.numbers import float_text

__all__ = [
    "MAX_PRICE",
    "MAX_PRICE_DIGITS",
    "MAX_PRICE_PLACES",
    "TOKEN_PRICE_KINDS",
    "PER_MILLION_THRESHOLD",
    "check_price_kind",
    "price_unit",
    "parse_price",
    "parse_price_assignment",
    "format_price",
    "format_usd",
    "parse_capability",
    "parse_capability_assignment",
    "lint_entry",
    "utc_text",
]

MAX_PRICE = Decimal(1_000_000_000)
"""Prices must be strictly below this (USD per unit)."""
MAX_PRICE_DIGITS = 60
"""At most this many digits in the written price."""
MAX_PRICE_PLACES = 60
"""At most this many digits after the decimal point."""
_MAX_TEXT = 200  # longer text cannot be a valid price; refused before Decimal() sees it

_PER_ITEM_UNITS = {"per_request": "USD per request", "web_search": "USD per web search", "image": "USD per image"}
TOKEN_PRICE_KINDS: tuple[str, ...] = tuple(k for k in PRICE_KINDS if k not in _PER_ITEM_UNITS)
"""Price kinds that are USD per single token: every kind but the per-request, per-search and per-image ones."""

PER_MILLION_THRESHOLD = Decimal("0.001")
"""A per-token price above this ($1000 per million tokens) is most likely a per-million price."""

_UNITS = {kind: "USD per token" for kind in TOKEN_PRICE_KINDS} | _PER_ITEM_UNITS
_EXAMPLES = {kind: "0.000003 or 3e-6" for kind in TOKEN_PRICE_KINDS}
_EXAMPLES.update(
    per_request="0.001 or 1e-3",
    web_search="0.01 or 1e-2",
    image="0.04 or 4e-2",
)

# Plain ASCII decimal or exponent notation; Decimal() alone would also take
# "1_000", "Infinity" and non-ASCII digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

# Exact arithmetic: additions and multiplications never round (Inexact traps).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation])

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_UNSET = frozenset({"unset"})


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_price_kind(kind: object) -> str:
    """``kind`` if it is one of :data:`PRICE_KINDS`, else ValueError listing them."""
    if not isinstance(kind, str) or kind not in PRICE_KINDS:
        shown = kind if isinstance(kind, str) else repr(kind)
        hint = _did_you_mean(shown, PRICE_KINDS) if isinstance(kind, str) else ""
        raise ValueError(f"unknown price kind {shown!r}{hint}; valid kinds are: {', '.join(PRICE_KINDS)}")
    return kind


_check_kind = check_price_kind  # kept: gwctl.cli.catalog imported it under this name


def price_unit(kind: str) -> str:
    """The unit a price of ``kind`` is in, e.g. ``"USD per token"``."""
    return _UNITS[_check_kind(kind)]


def _allowed(kind: str) -> str:
    return f"a non-negative number in {_UNITS[kind]}, like {_EXAMPLES[kind]}"


def _shown(value: object) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, Decimal):
        return repr(str(value))
    return repr(value)


def parse_price(value: object, kind: str) -> Decimal:
    """Read one price of ``kind`` (a str, int, Decimal or TOML float) exactly.

    Raises ValueError with one sentence naming ``kind`` and what is allowed.
    """
    kind = _check_kind(kind)
    if isinstance(value, bool):
        raise ValueError(f"price {kind} must be {_allowed(kind)}; got the boolean {str(value).lower()}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        # the digits written when read as an ExactFloat, else the shortest text that round-trips
        return parse_price(float_text(value), kind)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError(f"price {kind} must be {_allowed(kind)}; got an empty value")
        if len(text) > _MAX_TEXT or not _NUMBER.fullmatch(text):
            special = _special_value(text)
            if special is not None:
                raise ValueError(
                    f"price {kind} must be a finite number, not NaN or infinity: {_allowed(kind)}; got {_shown(value)}"
                )
            raise ValueError(f"price {kind} must be {_allowed(kind)}; got {_shown(value)}")
        try:
            number = Decimal(text)
        except (InvalidOperation, ValueError):  # exponent beyond Decimal's range
            raise ValueError(
                f"price {kind} must be {_allowed(kind)} with a reasonable exponent; got {_shown(value)}"
            ) from None
    else:
        raise ValueError(f"price {kind} must be {_allowed(kind)}; got a {type(value).__name__} ({_shown(value)})")

    if not number.is_finite():
        raise ValueError(
            f"price {kind} must be a finite number, not NaN or infinity: {_allowed(kind)}; got {_shown(value)}"
        )
    if number < 0:
        raise ValueError(f"price {kind} must not be negative; use {_allowed(kind)}; got {_shown(value)}")
    if number.is_signed():  # -0: same value as 0, shown without the sign
        number = number.copy_abs()
    if number >= MAX_PRICE:
        raise ValueError(f"price {kind} must be below {MAX_PRICE} {_UNITS[kind]}; got {_shown(value)}")
    digits, exponent = number.as_tuple().digits, number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if len(digits) > MAX_PRICE_DIGITS or -exponent > MAX_PRICE_PLACES:
        raise ValueError(
            f"price {kind} must have at most {MAX_PRICE_DIGITS} digits and "
            f"{MAX_PRICE_PLACES} decimal places; got {_shown(value)}"
        )
    if number == 0 and exponent > 0:  # "0E+5": plain zero
        number = Decimal(0)
    return number


def _special_value(text: str) -> Decimal | None:
    """``text`` as a non-finite Decimal (nan, inf, ...), else None."""
    if len(text) > 20:
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return None if number.is_finite() else number


def parse_price_assignment(text: str) -> tuple[str, Decimal, str]:
    """Read ``KIND=USD`` (the CLI's ``--price``) into (kind, price, value text as written)."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"a price must be written as KIND=USD, like input=3e-6; got {_shown(text)}")
    kind_text, _, value_text = text.partition("=")
    kind = kind_text.strip().lower()
    if not kind:
        raise ValueError(
            f"a price must be written as KIND=USD, like input=3e-6, with KIND one of: "
            f"{', '.join(PRICE_KINDS)}; got {_shown(text)}"
        )
    kind = _check_kind(kind)
    return kind, parse_price(value_text, kind), value_text.strip()


def format_price(d: Decimal) -> str:
    """A price as plain text: no exponent, exactly the digits ``d`` holds.

    ``Decimal("3.0e-6")`` -> ``"0.0000030"``; ``Decimal("1E+2")`` -> ``"100"``.
    """
    if not isinstance(d, Decimal) or not d.is_finite():
        raise ValueError(f"a price to print must be a finite Decimal; got {d!r}")
    if d.is_zero():
        d = d.copy_abs()
    return format(d, "f")


def format_usd(d: Decimal) -> str:
    """An amount or total as plain text: no exponent, no trailing fractional zeros.

    ``Decimal("0.0034500")`` -> ``"0.00345"``; ``Decimal("2.000")`` -> ``"2"``.
    The value is never rounded.
    """
    if not isinstance(d, Decimal) or not d.is_finite():
        raise ValueError(f"an amount to print must be a finite Decimal; got {d!r}")
    if d.is_zero():
        return "0"
    return format(d.normalize(_EXACT), "f")


def parse_capability(value: object, name: str) -> bool | None:
    """A capability value: true/yes/on/1, false/no/off/0 or unset (None)."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _UNSET:
        return None
    raise ValueError(
        f"capability {name} must be true, false or unset (yes/no, on/off and 1/0 also work); got {_shown(value)}"
    )


def parse_capability_assignment(text: str) -> tuple[str, bool | None]:
    """Read ``NAME=true|false|unset`` (the CLI's ``--capability``) into (name, flag)."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(
            f"a capability must be written as NAME=true|false|unset, like vision=false; got {_shown(text)}"
        )
    name_text, _, value_text = text.partition("=")
    name = name_text.strip().lower()
    if name not in CAPABILITIES:
        raise ValueError(
            f"unknown capability {name_text.strip()!r}{_did_you_mean(name, CAPABILITIES)}; "
            f"valid capabilities are: {', '.join(CAPABILITIES)}"
        )
    return name, parse_capability(value_text, name)


def _text(entry: CatalogEntry, kind: str) -> str:
    written = entry.price_text.get(kind)
    return written if written else format_price(entry.prices[kind])


def utc_text(when: datetime) -> str:
    """A price set's start as written back and shown: ISO 8601 in UTC with ``Z``."""
    text = when.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


def lint_entry(entry: CatalogEntry) -> list[str]:
    """Warnings about an entry that is valid but probably not what was meant: each price set's prices, the
    order of its dated sets, and its limits."""
    warnings = _lint_prices(entry, entry.ref)
    for s in entry.price_sets:
        dated = replace(entry, prices=s.prices, price_text=s.price_text, price_sets=())
        warnings += _lint_prices(dated, f"{entry.ref} (prices from {utc_text(s.valid_from)})")
    starts = [s.valid_from for s in entry.price_sets]
    if starts != sorted(starts):
        warnings.append(
            f"{entry.ref}: its price sets are not written in time order ({', '.join(utc_text(t) for t in starts)}); "
            f"each applies from its valid_from until the next later one, whatever the order"
        )
    for start in sorted({t for t in starts if starts.count(t) > 1}):
        warnings.append(
            f"{entry.ref}: several price sets start at {utc_text(start)}; only the last written applies, "
            f"remove the others"
        )
    if entry.max_output is not None and entry.context_size is not None and entry.max_output > entry.context_size:
        warnings.append(
            f"{entry.ref}: max_output {entry.max_output} is above context_size {entry.context_size}; "
            f"no request can use the whole output budget"
        )
    return warnings


def _lint_prices(entry: CatalogEntry, ref: str) -> list[str]:
    prices = entry.prices
    warnings: list[str] = []
    for kind in TOKEN_PRICE_KINDS:
        value = prices.get(kind)
        if value is not None and value > PER_MILLION_THRESHOLD:
            warnings.append(
                f"{ref}: {kind} price {_text(entry, kind)} USD per token is above "
                f"{PER_MILLION_THRESHOLD} and is likely a per-million price; per-token prices "
                f"are per single token, e.g. 3e-6 for $3/M"
            )
    for cheaper in ("cache_read", "cached_input"):
        if cheaper in prices and "input" in prices and prices[cheaper] > prices["input"]:
            warnings.append(
                f"{ref}: {cheaper} price {_text(entry, cheaper)} is above the input price "
                f"{_text(entry, 'input')}; cached prompt tokens are normally cheaper than uncached ones"
            )
    if (
        "cache_write_1h" in prices
        and "cache_write_5m" in prices
        and prices["cache_write_1h"] < prices["cache_write_5m"]
    ):
        warnings.append(
            f"{ref}: cache_write_1h price {_text(entry, 'cache_write_1h')} is below the "
            f"cache_write_5m price {_text(entry, 'cache_write_5m')}; a 1-hour cache write "
            f"normally costs more than a 5-minute one"
        )
    if "input" in prices and "output" not in prices:
        warnings.append(f"{ref}: output price is not set although input is; output tokens will not be charged")
    return warnings
