"""Turn an upstream's token usage into an exact cost from a catalog entry.

The proxy, ``gwctl route dry-run`` and ``gwctl catalog price`` all price
through :func:`price`, so a request costs the same wherever it is shown.
Money is :class:`decimal.Decimal` throughout and nothing is ever rounded.

Reading usage (:func:`usage_from_openai_chat`, :func:`usage_from_responses`,
:func:`usage_from_anthropic`, :func:`detect_usage`):

* Missing or ``null`` counts are 0. A negative, fractional, boolean or textual
  count, or one over :data:`MAX_COUNT`, is refused (ValueError); a whole-number
  float such as ``12.0`` is read as 12.
* OpenAI Chat Completions: ``prompt_tokens`` *includes*
  ``prompt_tokens_details.cached_tokens`` and ``.audio_tokens``, so uncached
  input = prompt - cached - audio; cached tokens are billed at ``cached_input``,
  audio tokens at ``audio_input``; ``completion_tokens`` (reasoning and audio
  output included) at ``output``. Cached + audio above prompt is refused.
* OpenAI Responses: ``input_tokens`` *includes*
  ``input_tokens_details.cached_tokens`` (and ``.audio_tokens`` when present):
  the same split; ``output_tokens`` (reasoning included) at ``output``.
* Anthropic Messages: ``input_tokens`` *excludes* cache tokens.
  ``cache_read_input_tokens`` at ``cache_read``; ``cache_creation_input_tokens``
  at ``cache_write_5m`` unless the ``cache_creation`` breakdown gives
  ``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``: then each part
  at its own price, a remainder (total above the parts' sum) at 5m, and when
  the parts add up to more than the total the parts win.
  ``server_tool_use.web_search_requests`` at ``web_search``.
* :func:`detect_usage` takes a bare usage object or a whole response body (a
  chat completion, a Responses object, an Anthropic message, or a streaming
  ``response.completed`` / ``message_start`` event) and tells the shapes apart
  by their usage keys: ``prompt_tokens``/``completion_tokens`` -> OpenAI chat;
  ``cache_*``/``server_tool_use`` -> Anthropic; ``*_tokens_details`` or
  ``total_tokens`` -> Responses. A bare ``input_tokens``/``output_tokens`` pair
  (both readings give the same usage) is Responses when the body says
  ``"object": "response"``, else Anthropic.
* Every parsed response is one request (``Usage.requests == 1``); the
  ``per_request`` price is charged once per request.

Pricing (:func:`price`):

* No catalog entry -> unbilled (total None, never 0), and so is an entry that
  sets no price. A well-known model id is never priced from a public price
  list: there is no built-in price table, only the entry counts.
* One line item per usage kind with a quantity above 0, in this order:
  input, cached_input, cache_read, cache_write_5m, cache_write_1h, output,
  audio_input, web_search, image, per_request (the last only when the entry
  sets a per_request price).
* A kind whose own price is unset falls back, first set price wins:
  cached_input -> cache_read -> input; cache_read -> cached_input -> input;
  cache_write_5m -> input; cache_write_1h -> cache_write_5m -> input;
  audio_input -> input. input, output, web_search and image have no fallback:
  the line shows no unit price, amount 0 and a note ("no output price set;
  not charged"). ``price_kind`` and ``note`` say which price was applied.
* amount = quantity x unit price and total = sum of amounts, computed in an
  exact decimal context that traps any rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from operator import attrgetter
from typing import Any, Mapping

from gwctl.core.catalog_values import format_price, format_usd
from gwctl.core.config import PRICE_KINDS, CatalogEntry

__all__ = [
    "Usage",
    "LineItem",
    "Cost",
    "USAGE_KINDS",
    "FALLBACKS",
    "SHAPES",
    "usage_from_openai_chat",
    "usage_from_responses",
    "usage_from_anthropic",
    "detect_usage",
    "price",
]

# Every operation is exact or raises: Inexact/Rounded are trapped.
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, Inexact, Rounded, Overflow],
)

SHAPES: tuple[str, ...] = ("openai_chat", "openai_responses", "anthropic")


@dataclass(frozen=True)
class Usage:
    """What one or more requests consumed, split by how each part is billed."""

    input_tokens: int = 0  # uncached, non-audio prompt tokens, billed at `input`
    cached_input_tokens: int = 0  # OpenAI cached prompt tokens, billed at `cached_input`
    cache_read_tokens: int = 0  # Anthropic cache_read_input_tokens, billed at `cache_read`
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0  # includes reasoning tokens
    reasoning_tokens: int = 0  # informational only (already inside output_tokens)
    audio_input_tokens: int = 0
    web_searches: int = 0
    images: int = 0
    requests: int = 1

    def __post_init__(self) -> None:
        for name in _USAGE_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value < 0:  # bool is not an int here
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    continue  # an int subclass is fine
                raise ValueError(f"usage {name} must be a non-negative whole number; got {value!r}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def counts(self) -> tuple[int, ...]:
        """Every count in :data:`USAGE_FIELDS` order (what the proxy ships to its log writer)."""
        return _counts_of(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """The inverse of :meth:`as_dict`; missing fields take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown usage field(s) {', '.join(unknown)}; known fields are: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: object) -> Usage:
        # lets sum(usages) start from the integer 0
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented


_USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_counts_of = attrgetter(*_USAGE_FIELDS)
USAGE_FIELDS = _USAGE_FIELDS
"""Usage's field names in order: the positions of :meth:`Usage.counts`."""
_PRICE_KIND_SET = frozenset(PRICE_KINDS)
_USAGE_DEFAULTS = {f.name: f.default for f in fields(Usage)}


def _read_usage(**counts: int) -> Usage:
    """A Usage from counts the readers below have already checked (each came through _count or
    _split_prompt: a non-negative int), without checking them again: the proxy reads one per request."""
    usage = object.__new__(Usage)
    usage.__dict__.update(_USAGE_DEFAULTS)
    usage.__dict__.update(counts)
    return usage


_FIELD_INDEX = {name: i for i, name in enumerate(_USAGE_FIELDS)}


USAGE_KINDS: tuple[tuple[str, str], ...] = (
    ("input", "input_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write_5m", "cache_write_5m_tokens"),
    ("cache_write_1h", "cache_write_1h_tokens"),
    ("output", "output_tokens"),
    ("audio_input", "audio_input_tokens"),
    ("web_search", "web_searches"),
    ("image", "images"),
    ("per_request", "requests"),
)
"""(line item kind, Usage field) in line-item order; each kind is also the price kind."""

FALLBACKS: Mapping[str, tuple[str, ...]] = {
    "input": (),
    "cached_input": ("cache_read", "input"),
    "cache_read": ("cached_input", "input"),
    "cache_write_5m": ("input",),
    "cache_write_1h": ("cache_write_5m", "input"),
    "output": (),
    "audio_input": ("input",),
    "web_search": (),
    "image": (),
    "per_request": (),
}
"""Prices tried, in order, when a kind's own price is unset."""


@dataclass(frozen=True)
class LineItem:
    kind: str  # usage kind, see USAGE_KINDS
    quantity: int
    unit_price: Decimal | None  # None when no price (and no fallback) applies
    amount: Decimal  # quantity * unit_price exactly (0 when unit_price is None)
    price_kind: str | None  # which catalog price was applied
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantity": self.quantity,
            "unit_price": None if self.unit_price is None else format_price(self.unit_price),
            "amount": format_usd(self.amount),
            "price_kind": self.price_kind,
            "note": self.note,
        }


@dataclass(frozen=True)
class Cost:
    items: tuple[LineItem, ...]
    total: Decimal | None  # None = unbilled (never 0 for unbilled)
    unbilled_reason: str | None

    @property
    def billed(self) -> bool:
        return self.total is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: Decimals as exact plain strings, an unbilled total as null."""
        return {
            "billed": self.billed,
            "currency": "USD",
            "total": None if self.total is None else format_usd(self.total),
            "unbilled_reason": self.unbilled_reason,
            "items": [item.to_json() for item in self.items],
        }


# --- reading usage ---------------------------------------------------------


MAX_COUNT = 10**12
"""The largest count a usage field may hold. No request comes near a trillion tokens; a larger count is an
upstream's garbage, and one past 2**63 would not even fit the activity log's integers (its row could never be
written)."""


def _count(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the usual answer, checked first (one per request)
        return value
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"usage field {where}{key} must be a whole number of tokens; got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"usage field {where}{key} must be a whole number of tokens; got {value!r}")
    if value < 0:
        raise ValueError(f"usage field {where}{key} must not be negative; got {value}")
    if value > MAX_COUNT:
        raise ValueError(f"usage field {where}{key} is over {MAX_COUNT} tokens; got {value}")
    return value


def _section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) and not isinstance(value, Mapping):  # dict first: the ABC check is slow
        raise ValueError(f"usage field {key} must be an object; got {type(value).__name__}")
    return value


def _require_mapping(obj: object, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict) and not isinstance(obj, Mapping):
        raise ValueError(f"{what} must be a JSON object; got {type(obj).__name__}")
    return obj


def _split_prompt(total: int, cached: int, audio: int, names: tuple[str, str, str]) -> int:
    rest = total - cached - audio
    if rest < 0:
        raise ValueError(
            f"usage is inconsistent: {names[1]} ({cached}) plus {names[2]} ({audio}) "
            f"exceed {names[0]} ({total}), which includes them"
        )
    return rest


def usage_from_openai_chat(obj: Mapping[str, Any]) -> Usage:
    """Usage from an OpenAI Chat Completions ``usage`` object."""
    obj = _require_mapping(obj, "an OpenAI chat usage")
    prompt = _count(obj, "prompt_tokens", "")
    completion = _count(obj, "completion_tokens", "")
    p_details = _section(obj, "prompt_tokens_details")
    c_details = _section(obj, "completion_tokens_details")
    cached = _count(p_details, "cached_tokens", "prompt_tokens_details.")
    audio = _count(p_details, "audio_tokens", "prompt_tokens_details.")
    reasoning = _count(c_details, "reasoning_tokens", "completion_tokens_details.")
    _count(c_details, "audio_tokens", "completion_tokens_details.")  # validated; inside completion
    uncached = _split_prompt(
        prompt,
        cached,
        audio,
        ("prompt_tokens", "prompt_tokens_details.cached_tokens", "prompt_tokens_details.audio_tokens"),
    )
    return _read_usage(
        input_tokens=uncached,
        cached_input_tokens=cached,
        audio_input_tokens=audio,
        output_tokens=completion,
        reasoning_tokens=reasoning,
    )


def usage_from_responses(obj: Mapping[str, Any]) -> Usage:
    """Usage from an OpenAI Responses API ``usage`` object."""
    obj = _require_mapping(obj, "an OpenAI Responses usage")
    total_in = _count(obj, "input_tokens", "")
    output = _count(obj, "output_tokens", "")
    i_details = _section(obj, "input_tokens_details")
    o_details = _section(obj, "output_tokens_details")
    cached = _count(i_details, "cached_tokens", "input_tokens_details.")
    audio = _count(i_details, "audio_tokens", "input_tokens_details.")
    reasoning = _count(o_details, "reasoning_tokens", "output_tokens_details.")
    uncached = _split_prompt(
        total_in,
        cached,
        audio,
        ("input_tokens", "input_tokens_details.cached_tokens", "input_tokens_details.audio_tokens"),
    )
    return _read_usage(
        input_tokens=uncached,
        cached_input_tokens=cached,
        audio_input_tokens=audio,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )


def usage_from_anthropic(obj: Mapping[str, Any]) -> Usage:
    """Usage from an Anthropic Messages ``usage`` object."""
    obj = _require_mapping(obj, "an Anthropic usage")
    creation_total = _count(obj, "cache_creation_input_tokens", "")
    breakdown = obj.get("cache_creation")
    if breakdown is None:
        write_5m, write_1h = creation_total, 0
    else:
        breakdown = _section(obj, "cache_creation")
        part_5m = _count(breakdown, "ephemeral_5m_input_tokens", "cache_creation.")
        part_1h = _count(breakdown, "ephemeral_1h_input_tokens", "cache_creation.")
        # The remainder, if the parts do not cover the total, is billed at 5m;
        # parts adding up to more than the total win (they are the finer data).
        write_5m = part_5m + max(0, creation_total - part_5m - part_1h)
        write_1h = part_1h
    tools = _section(obj, "server_tool_use")
    return _read_usage(
        input_tokens=_count(obj, "input_tokens", ""),
        cache_read_tokens=_count(obj, "cache_read_input_tokens", ""),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=_count(obj, "output_tokens", ""),
        web_searches=_count(tools, "web_search_requests", "server_tool_use."),
    )


_CHAT_KEYS = frozenset({"prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"})
_ANTHROPIC_KEYS = frozenset(
    {"cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation", "server_tool_use"}
)
_RESPONSES_KEYS = frozenset({"input_tokens_details", "output_tokens_details", "total_tokens"})
_COMMON_KEYS = frozenset({"input_tokens", "output_tokens"})

_PARSERS = {
    "openai_chat": usage_from_openai_chat,
    "openai_responses": usage_from_responses,
    "anthropic": usage_from_anthropic,
}


def _unwrap(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """The usage object inside ``obj`` (or ``obj`` itself) and a shape hint from the envelope."""
    for _ in range(2):  # a body, or an event wrapping a body; never deeper
        if "usage" in obj:
            usage = obj["usage"]
            if usage is None:
                raise ValueError("the response carries no usage (its usage field is null)")
            usage = _require_mapping(usage, "the response's usage field")
            hint = None
            if obj.get("object") == "response":
                hint = "openai_responses"
            elif obj.get("type") == "message":
                hint = "anthropic"
            return usage, hint
        event = obj.get("type")
        event = event if isinstance(event, str) else ""
        inner = obj.get("response") if event.startswith("response.") else None
        if inner is None and event == "message_start":
            inner = obj.get("message")
        if not isinstance(inner, dict) and not isinstance(inner, Mapping):
            break
        obj = inner
    return obj, None


def detect_usage(obj: Mapping[str, Any]) -> tuple[str, Usage]:
    """Recognise a usage object (or a response body holding one) and read it.

    Returns the shape name (``openai_chat``, ``openai_responses`` or
    ``anthropic``) and the :class:`Usage`.
    """
    obj = _require_mapping(obj, "usage")
    usage, hint = _unwrap(obj)
    keys = set(usage)
    if keys & _CHAT_KEYS:
        shape = "openai_chat"
    elif keys & _ANTHROPIC_KEYS:
        shape = "anthropic"
    elif keys & _RESPONSES_KEYS:
        shape = "openai_responses"
    elif keys & _COMMON_KEYS:
        shape = hint or "anthropic"
    else:
        shown = ", ".join(sorted(str(k) for k in keys)[:12]) or "none"
        raise ValueError(
            "not recognised as OpenAI chat, OpenAI Responses or Anthropic usage: expected "
            f"prompt_tokens/completion_tokens or input_tokens/output_tokens; got keys: {shown}"
        )
    return shape, _PARSERS[shape](usage)


# --- pricing -----------------------------------------------------------------


def _entry_price(entry: CatalogEntry, kind: str) -> Decimal | None:
    value = entry.prices.get(kind)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(
            f"catalog entry {entry.ref} has an invalid {kind} price {value!r}; prices must be non-negative Decimals"
        )
    return value


@dataclass(frozen=True)
class PricePlan:
    """One entry's prices resolved once: for each usage kind, the price applied (its own or a fallback).

    :func:`price` itemises a bill from it; :meth:`total` is the same sum without
    the line items, for the proxy's log, which prices every request.
    """

    ref: str
    # (usage kind, Usage field, applied price kind or None, unit price or None), in USAGE_KINDS order;
    # per_request appears only when it has a price of its own
    steps: tuple[tuple[str, str, str | None, Decimal | None], ...]
    unbilled_reason: str | None  # set when the entry has no prices at all
    # the priced steps as (position in Usage.counts(), unit price): what total() sums, per row of the log
    terms: tuple[tuple[int, Decimal], ...] = ()
    # the same unit prices as integers of 10**-scale USD (None: a price too fine for that to be cheap):
    # integer products are exact and several times cheaper than Decimal ones, for a sum made per request
    scaled: tuple[tuple[int, int], ...] | None = None
    scale: int = 0

    def total(self, counts: tuple[int, ...]) -> Decimal | None:
        """The exact total of a usage given as :meth:`Usage.counts` (None: unbilled)."""
        if self.unbilled_reason is not None:
            return None
        scaled = self.scaled
        if scaled is not None:
            units = 0
            for index, unit in scaled:
                quantity = counts[index]
                if quantity > 0:
                    units += quantity * unit
            return Decimal(units).scaleb(-self.scale, _EXACT)
        total = Decimal(0)
        add, multiply = _EXACT.add, _EXACT.multiply
        for index, price in self.terms:
            quantity = counts[index]
            if quantity > 0:
                total = add(total, multiply(quantity, price))
        return total


_MAX_SCALE = 60  # prices finer than 10**-60 USD are summed as Decimals


def _scaled(terms: tuple[tuple[int, Decimal], ...]) -> tuple[tuple[tuple[int, int], ...] | None, int]:
    """``terms``' unit prices as integers of 10**-scale USD, and the scale (the finest price's decimals)."""
    scale = max((-int(unit.as_tuple().exponent) for _index, unit in terms), default=0)
    if scale > _MAX_SCALE:
        return None, 0
    scale = max(scale, 0)
    return tuple((index, int(unit.scaleb(scale, _EXACT))) for index, unit in terms), scale


def price_plan(entry: CatalogEntry, ref: str = "") -> PricePlan:
    """Resolve ``entry``'s prices and fallbacks once (raises ValueError for an invalid price)."""
    ref = ref or entry.ref
    prices = {
        kind: p for kind in entry.prices if kind in _PRICE_KIND_SET and (p := _entry_price(entry, kind)) is not None
    }
    if not prices:
        return PricePlan(ref, (), f"catalog entry {ref} sets no prices")
    steps = []
    for kind, field_name in USAGE_KINDS:
        if kind == "per_request" and kind not in prices:
            continue
        applied = next((k for k in (kind, *FALLBACKS[kind]) if k in prices), None)
        steps.append((kind, field_name, applied, None if applied is None else prices[applied]))
    terms = tuple((_FIELD_INDEX[field_name], unit) for _kind, field_name, _applied, unit in steps if unit is not None)
    scaled, scale = _scaled(terms)
    return PricePlan(ref, tuple(steps), None, terms, scaled, scale)


class PlanCache:
    """Each catalog entry's :class:`PricePlan`, made once per entry object (a reload, or a dated price set,
    is a new object): for callers that price many usages of a few entries (the limits' settlement, the
    what-if repricing). An entry with an invalid price has no plan, and its usages no total."""

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: dict[int, tuple[CatalogEntry, PricePlan | None]] = {}

    def total(self, entry: CatalogEntry, counts: tuple[int, ...]) -> Decimal | None:
        """The exact total of ``counts`` (:meth:`Usage.counts`) at ``entry``'s prices; None: unbilled."""
        found = self._plans.get(id(entry))
        if found is None or found[0] is not entry:  # an id is reused once its object is gone
            try:
                plan: PricePlan | None = price_plan(entry)
            except ValueError:
                plan = None
            if len(self._plans) >= 4096:
                self._plans.clear()
            found = self._plans[id(entry)] = (entry, plan)
        plan = found[1]
        return None if plan is None else plan.total(counts)


def price(entry: CatalogEntry | None, usage: Usage, ref: str = "") -> Cost:
    """The exact cost of ``usage`` at ``entry``'s prices (unbilled without prices)."""
    if entry is None:
        return Cost(items=(), total=None, unbilled_reason=f"no catalog entry for {ref or 'this model'}")
    plan = price_plan(entry, ref)
    if plan.unbilled_reason is not None:
        return Cost(items=(), total=None, unbilled_reason=plan.unbilled_reason)
    items: list[LineItem] = []
    total = Decimal(0)
    for kind, field_name, applied, unit in plan.steps:
        quantity = getattr(usage, field_name)
        if quantity <= 0:
            continue
        if unit is None:  # no price applies (applied is None)
            items.append(LineItem(kind, quantity, None, Decimal(0), None, f"no {kind} price set; not charged"))
            continue
        amount = _EXACT.multiply(Decimal(quantity), unit)
        note = "" if applied == kind else f"no {kind} price; billed at {applied}"
        items.append(LineItem(kind, quantity, unit, amount, applied, note))
        total = _EXACT.add(total, amount)
    return Cost(items=tuple(items), total=total, unbilled_reason=None)
