"""Spend and rate limits: which apply to a request, what it reserves, and whether it is admitted.

A limit caps one target: a gateway key (``key:NAME``), an agent and its
subagents (``agent:PATH``), a source (``source:NAME``) or one model
(``model:SOURCE/MODEL_ID``). It may hold a budget in USD over a UTC calendar
window (day, ISO week from Monday, month, or the total), requests per minute
and tokens per minute. Every limit that applies to a request must admit it.

Admission is arithmetic on state the caller holds (the proxy's ledger, or the
activity log for the dry-run and ``gwctl limit status``): a request is admitted
when, for every budget, spent + reserved + its reservation <= the budget, and
for every rate, the minute's requests (and tokens) plus its own stay within
it. Its reservation (:func:`reservation`) is the most it can cost from what
is known before forwarding: the prompt estimate and the output budget it asks
for (else the entry's max output, else its context size, else
:data:`DEFAULT_OUTPUT_RESERVE` tokens) at the entry's dearest input price and
its output price, plus its per-request price. After the answer the
reservation is replaced by the exact cost.

Everything here is pure (no clock, no I/O): times are POSIX seconds the
caller passes in, money is Decimal.
"""

from __future__ import annotations

import calendar
import fnmatch
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

from gwctl.core.config import CatalogEntry, GatewayKey, Limit, Snapshot
from gwctl.core.numbers import float_text

TARGET_KINDS: tuple[str, ...] = ("key", "agent", "source", "model")
WINDOWS: tuple[str, ...] = ("day", "week", "month", "total")
UNBILLED_POLICIES: tuple[str, ...] = ("allow", "reject")
DEFAULT_OUTPUT_RESERVE = 4096
"""Output tokens reserved for a request that names no output budget, to a model whose entry gives
neither a max output nor a context size: the one case where a reservation is a guess, not a bound
(``gwctl validate`` warns about budgets over such models)."""

# Every price kind a prompt token may be billed at (cached, cache writes, audio): the reservation
# takes the dearest the entry sets, so no split of the prompt can cost more than reserved.
_INPUT_KINDS = ("input", "cached_input", "cache_read", "cache_write_5m", "cache_write_1h", "audio_input")

# the rule ids (activity log, dry-run, error codes)
KEY_EXPIRED = "key_expired"
KEY_SCOPE = "key_scope"
BUDGET_EXCEEDED = "budget_exceeded"
BUDGET_UNBILLED = "budget_unbilled"
RATE_LIMITED = "rate_limited"


def parse_target(text: str) -> tuple[str, str]:
    """``key:ci`` -> ("key", "ci"); ValueError with what a target looks like otherwise."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in TARGET_KINDS or not name:
        raise ValueError(
            f"'{text}' is not a limit target; use key:NAME, agent:PATH, source:NAME or model:SOURCE/MODEL_ID"
        )
    if kind == "model" and "/" not in name.strip("/"):
        raise ValueError(f"'{text}' names no model; use model:SOURCE/MODEL_ID, e.g. model:openai/gpt-4o-mini")
    return kind, name


def parse_budget(value: object) -> Decimal:
    """A budget in USD, exactly (``"25"``, ``"0.50"``, 25): a non-negative finite number, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"a budget must be a number of USD like 25 or 0.50; got {value!r}")
    text = budget_text(value)
    try:
        number = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"a budget must be a number of USD like 25 or 0.50; got {text!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"a budget must be a non-negative number of USD; got {text!r}")
    # bounded like a price: 1e999999999 overflowed the ledger's arithmetic, 1e999999 printed a million digits
    if number >= MAX_BUDGET:
        raise ValueError(f"a budget must be below {MAX_BUDGET} USD; got {text!r}")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if len(number.as_tuple().digits) > MAX_BUDGET_DIGITS or -exponent > MAX_BUDGET_DIGITS:
        raise ValueError(
            f"a budget must have at most {MAX_BUDGET_DIGITS} digits and {MAX_BUDGET_DIGITS} decimal places; "
            f"got {text if len(text) <= 40 else text[:37] + '...'!r}"
        )
    if number == 0:
        number = Decimal(0)  # "0E+5", "-0": plain zero
    return number


def budget_text(value: str | int | float | Decimal) -> str:
    """A budget as written: the digits of a TOML/JSON number (read as an ExactFloat), else the text without ``$``."""
    return float_text(value) if isinstance(value, float) else str(value).strip().removeprefix("$")


MAX_BUDGET = Decimal(10**15)
"""Budgets are below a quadrillion USD."""
MAX_BUDGET_DIGITS = 60
"""... written with at most 60 digits and 60 decimal places."""


def agent_targets(agent: str | None) -> tuple[str, ...]:
    """The ``agent:`` targets whose limits count a request of ``agent``: the agent and each ancestor
    (``agent:triage`` counts triage and all its subagents)."""
    if not agent:
        return ()
    parts = agent.split("/")
    return tuple("agent:" + "/".join(parts[:n]) for n in range(len(parts), 0, -1))


def request_targets(key: str | None, agent: str | None, source: str | None, model_ref: str | None) -> tuple[str, ...]:
    """Every target a request counts against, in the order limits are checked (key, agent, source, model)."""
    out: list[str] = []
    if key:
        out.append("key:" + key)
    out.extend(agent_targets(agent))
    if source:
        out.append("source:" + source)
    if model_ref:
        out.append("model:" + model_ref)
    return tuple(out)


def target_exists(snapshot: Snapshot, kind: str, name: str) -> bool:
    """Whether the store has what a target names: the key, the source, an agent (a route names it or one of
    its subagents), or a model's source (its model may not be listed yet)."""
    if kind == "key":
        return name in snapshot.keys
    if kind == "source":
        return name in snapshot.sources
    if kind == "agent":
        return any(r.agent == name or r.agent.startswith(name + "/") for r in snapshot.routes)
    return name.partition("/")[0] in snapshot.sources


def applicable(limits: Mapping[str, Limit], targets: Iterable[str]) -> tuple[Limit, ...]:
    """The limits (by target) that apply to a request counting against ``targets``."""
    return tuple(limit for t in targets if (limit := limits.get(t)) is not None)


# --- windows -----------------------------------------------------------------


def window_bounds(window: str, now: float) -> tuple[float, float | None]:
    """The UTC calendar window holding ``now``: (start, end) in POSIX seconds; ``total`` never ends.

    ``minute`` is the rate limits' window; ``week`` starts on Monday.
    """
    if window == "total":
        return 0.0, None
    if window == "minute":
        start = math.floor(now / 60) * 60.0
        return start, start + 60.0
    t = datetime.fromtimestamp(now, timezone.utc)
    day = datetime(t.year, t.month, t.day, tzinfo=timezone.utc)
    if window == "day":
        return day.timestamp(), (day + timedelta(days=1)).timestamp()
    if window == "week":
        monday = day - timedelta(days=t.weekday())
        return monday.timestamp(), (monday + timedelta(days=7)).timestamp()
    if window == "month":
        first = day.replace(day=1)
        days = calendar.monthrange(t.year, t.month)[1]
        return first.timestamp(), (first + timedelta(days=days)).timestamp()
    raise ValueError(f"unknown window '{window}'; use day, week, month or total")


def iso(ts: float | None) -> str | None:
    """A POSIX time as ``2026-12-01T00:00:00Z`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- keys ----------------------------------------------------------------------


def key_expired(key: GatewayKey, now: float) -> bool:
    """True when ``key`` has an expiry and ``now`` is at or past it."""
    return key.expires_at is not None and now >= key.expires_at


def scope_refusal(key: GatewayKey, agent: str | None, model_ref: str | None) -> str | None:
    """Why a scoped ``key`` may not make this request (the 403's message), or None when it may.

    ``--agent PATH`` admits the agent and its subagents; ``--model GLOB`` is matched (shell-style,
    case-sensitive) against the SOURCE/MODEL_ID the request resolves to, or the bare model id.
    """
    if key.agents and not (agent and any(agent == a or agent.startswith(a + "/") for a in key.agents)):
        who = f"agent {agent}" if agent else "a request without X-Gwctl-Agent"
        return f"key {key.name} may be used only by agents {', '.join(key.agents)}, not {who}"
    if key.models:
        bare = model_ref.partition("/")[2] if model_ref else None
        if not model_ref or not any(
            fnmatch.fnmatchcase(model_ref, g) or (bare is not None and fnmatch.fnmatchcase(bare, g)) for g in key.models
        ):
            return (
                f"key {key.name} may be used only for models {', '.join(key.models)}, not {model_ref or 'this request'}"
            )
    return None


# --- reservations ----------------------------------------------------------------


@dataclass(slots=True)  # made per request: slots, not frozen (a frozen dataclass's __init__ costs ~4x)
class Reservation:
    """What a request may cost at most, known before it is forwarded."""

    prompt_tokens: int  # the prompt estimate
    output_tokens: int  # the output budget reserved
    output_from: str  # request | max_output | context_size | default
    usd: Decimal | None  # None: unbilled (no entry, or an entry without prices)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def reservation(entry: CatalogEntry | None, prompt_tokens: int, output_budget: int | None) -> Reservation:
    """The most a request can cost: ``prompt_tokens`` at the entry's dearest input price, the output
    budget (``output_budget``, else the entry's max output, else what its context leaves, else
    :data:`DEFAULT_OUTPUT_RESERVE`) at its output price, and its per-request price."""
    if output_budget is not None and output_budget >= 0:
        out, source = output_budget, "request"
    elif entry is not None and entry.max_output:
        out, source = entry.max_output, "max_output"
    elif entry is not None and entry.context_size:
        out, source = max(0, entry.context_size - prompt_tokens), "context_size"
    else:
        out, source = DEFAULT_OUTPUT_RESERVE, "default"
    if entry is not None and entry.max_output and out > entry.max_output:
        out = entry.max_output
    return Reservation(prompt_tokens, out, source, _most_cost(entry, prompt_tokens, out))


def _most_cost(entry: CatalogEntry | None, prompt: int, output: int) -> Decimal | None:
    if entry is None:
        return None
    unit = _unit_prices(entry)
    if unit is None:
        return None
    dearest_in, out, per_request = unit
    return dearest_in * prompt + out * output + per_request


_UNITS: dict[int, tuple[CatalogEntry, tuple[Decimal, Decimal, Decimal] | None]] = {}


def _unit_prices(entry: CatalogEntry) -> tuple[Decimal, Decimal, Decimal] | None:
    """(the dearest input price, the output price, the per-request price) of ``entry``; None without prices.
    Remembered per entry object (a reload makes new ones), so the proxy works them out once."""
    cached = _UNITS.get(id(entry))
    if cached is not None and cached[0] is entry:
        return cached[1]
    prices = entry.prices
    units: tuple[Decimal, Decimal, Decimal] | None = None
    if any(isinstance(v, Decimal) for v in prices.values()):
        zero = Decimal(0)
        dearest_in = max((prices[k] for k in _INPUT_KINDS if k in prices), default=zero)
        units = (dearest_in, prices.get("output", zero), prices.get("per_request", zero))
    if len(_UNITS) > 4096:
        _UNITS.clear()
    _UNITS[id(entry)] = (entry, units)
    return units


# --- admission -----------------------------------------------------------------


@dataclass(slots=True)  # made per limit per request: slots, not frozen
class LimitState:
    """One limit's counters as the caller knows them at ``now``.

    ``spent`` is the exact cost settled in the budget's window, ``reserved`` what requests in flight
    hold; ``requests`` and ``tokens`` count the current minute (in-flight reservations included), and
    ``prev_requests``/``prev_tokens`` the minute before: a rate is a sliding window of 60 s, estimated as the
    current minute's count plus the previous minute's weighted by the share of it still inside the window.
    """

    limit: Limit
    window_start: float
    window_end: float | None
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    unbilled: int = 0  # unbilled requests let through in the window
    minute_start: float = 0.0
    requests: int = 0
    tokens: int = 0
    prev_requests: int = 0  # the minute before (a sliding window weighs it by the part of it still in the last 60 s)
    prev_tokens: int = 0

    @property
    def left(self) -> Decimal | None:
        budget = self.limit.budget
        return None if budget is None else budget - self.spent - self.reserved


def fresh_state(limit: Limit, now: float) -> LimitState:
    """``limit`` at ``now`` with nothing spent or reserved (no log to read it from)."""
    start, end = window_bounds(limit.window or "total", now)
    return LimitState(limit, start, end, minute_start=window_bounds("minute", now)[0])


@dataclass(frozen=True)
class Refusal:
    """Why a limit refuses a request, as the proxy answers it and the dry-run shows it."""

    rule: str
    status: int
    etype: str
    message: str
    hint: str = ""
    target: str | None = None
    retry_after: int | None = None  # seconds, for the Retry-After header
    headers: tuple[tuple[str, str], ...] = ()

    def error_body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.etype, "code": self.rule, "param": None}}


def _seconds_until(end: float | None, now: float) -> int | None:
    return None if end is None else max(1, math.ceil(end - now))


def usd_text(value: Decimal) -> str:
    """A USD amount as the limits show it: ``$0.05``, ``$25`` (exact, no trailing zeros)."""
    return f"${value.normalize():f}"


def budget_fits(left: Decimal, cost: Decimal) -> bool:
    """The budget rule: this request's most cost fits in what the budget has left (the budget less what
    is spent and reserved)."""
    return cost <= left


def previous_weight(minute_start: float, now: float) -> float:
    """The share of the previous minute still inside the sliding 60 s window ending at ``now``."""
    return max(0.0, 1.0 - (now - minute_start) / 60.0)


def rate_fits(room: int, previous: int, weight: float, need: int) -> bool:
    """The rate rule: what this request needs, plus the previous minute's count by ``weight``, fits in the
    room this minute leaves (the cap less this minute's count): a sliding window of 60 s."""
    return previous * weight + need <= room


def check(state: LimitState, res: Reservation, now: float) -> Refusal | None:
    """Whether one limit admits a request reserving ``res`` (None: it does)."""
    limit = state.limit
    if limit.budget is not None:
        if res.usd is None:
            if limit.unbilled == "reject":
                return Refusal(
                    BUDGET_UNBILLED,
                    403,
                    "permission_error",
                    f"{limit.target} has a budget and refuses unbilled requests; this model has no catalog price",
                    "price the model (gwctl catalog set) or allow unbilled requests "
                    f"(gwctl limit set {limit.target} --unbilled allow)",
                    limit.target,
                )
        elif not budget_fits(limit.budget - state.spent - state.reserved, res.usd):
            retry = _seconds_until(state.window_end, now)
            return Refusal(
                BUDGET_EXCEEDED,
                429,
                "insufficient_quota",
                f"budget of {limit.target} exceeded: spent {usd_text(state.spent)}"
                + (f" (+{usd_text(state.reserved)} reserved in flight)" if state.reserved else "")
                + f" of {usd_text(limit.budget)} this {limit.window}"
                + (f"; this request may cost up to {usd_text(res.usd)}" if res.usd else ""),
                f"the window resets at {iso(state.window_end)}" if state.window_end else "raise the budget",
                limit.target,
                retry,
                (("retry-after", str(retry)),) if retry is not None else (),
            )
    weight = previous_weight(state.minute_start, now)
    if limit.rpm is not None and not rate_fits(limit.rpm - state.requests, state.prev_requests, weight, 1):
        used = math.ceil(state.requests + state.prev_requests * weight)
        wait = _sliding_wait(state, state.requests, state.prev_requests, 1, limit.rpm, now)
        return _rate(limit, "requests", limit.rpm, used, wait)
    if limit.tpm is not None and not rate_fits(limit.tpm - state.tokens, state.prev_tokens, weight, res.tokens):
        reset = _sliding_wait(state, state.tokens, state.prev_tokens, res.tokens, limit.tpm, now)
        if res.tokens > limit.tpm:
            return Refusal(
                RATE_LIMITED,
                429,
                "rate_limit_error",
                f"this request may use {res.tokens} tokens, more than {limit.target}'s {limit.tpm} per minute",
                "ask for a smaller output budget (max_tokens), or raise --tpm",
                limit.target,
                None,
                _rate_headers("tokens", limit.tpm, limit.tpm - state.tokens, reset),
            )
        return _rate(limit, "tokens", limit.tpm, state.tokens, reset)
    return None


def _sliding_wait(state: LimitState, current: int, prev: int, need: int, cap: int, now: float) -> int:
    """Seconds until the sliding window has room for ``need`` more: when the previous minute's weight has
    shrunk enough, or else when the current minute ends (its own count alone is at the cap)."""
    end = state.minute_start + 60.0
    room = cap - current - need
    if room >= 0 and prev > 0:  # the previous minute's share must fall to ``room``: weight <= room / prev
        at = state.minute_start + 60.0 * (1.0 - room / prev)
        return max(1, math.ceil(at - now))
    return max(1, math.ceil(end - now))


def _rate_headers(unit: str, cap: int, remaining: int, reset: int) -> tuple[tuple[str, str], ...]:
    return (
        (f"x-ratelimit-limit-{unit}", str(cap)),
        (f"x-ratelimit-remaining-{unit}", str(max(0, remaining))),
        (f"x-ratelimit-reset-{unit}", f"{reset}s"),
    )


def _rate(limit: Limit, unit: str, cap: int, used: int, reset: int) -> Refusal:
    return Refusal(
        RATE_LIMITED,
        429,
        "rate_limit_error",
        f"rate limit of {limit.target} reached: {used} of {cap} {unit} per minute",
        f"retry after {reset} s",
        limit.target,
        reset,
        (("retry-after", str(reset)), *_rate_headers(unit, cap, cap - used, reset)),
    )


def admit(states: Sequence[LimitState], res: Reservation, now: float) -> Refusal | None:
    """The first limit (in ``states``' order) that refuses the request, or None: every limit admits it."""
    for state in states:
        refusal = check(state, res, now)
        if refusal is not None:
            return refusal
    return None


def key_refusal(key: GatewayKey, agent: str | None, model_ref: str | None, now: float) -> Refusal | None:
    """Whether ``key`` may make this request at ``now``: 401 key_expired, 403 key_scope, or None.

    The proxy checks the expiry when the request's head is in and the scope after the decision; the
    dry-run asks both here, so both say the same.
    """
    expired = expiry_refusal(key, now)
    if expired is not None:
        return expired
    return scope_check(key, agent, model_ref)


def scope_check(key: GatewayKey, agent: str | None, model_ref: str | None) -> Refusal | None:
    """The 403 for a request outside ``key``'s scope (:func:`scope_refusal`), or None."""
    why = scope_refusal(key, agent, model_ref)
    if why is None:
        return None
    return Refusal(KEY_SCOPE, 403, "permission_error", why, "use a key whose scope covers it", "key:" + key.name)


def expiry_refusal(key: GatewayKey, now: float) -> Refusal | None:
    """The 401 for an expired key, or None."""
    if not key_expired(key, now):
        return None
    return Refusal(
        KEY_EXPIRED,
        401,
        "authentication_error",
        f"gateway key {key.name} expired at {key.expires}",
        "create a new key (gwctl key create NAME --expires ...)",
        "key:" + key.name,
    )


@dataclass(frozen=True)
class Verdict:
    """Everything the limits say about one request, for the dry-run: the key's check, each applicable
    limit's state and its own answer, the reservation, and the answer the proxy would give."""

    key: Refusal | None
    checks: tuple[tuple[LimitState, Refusal | None], ...]
    reservation: Reservation
    refusal: Refusal | None


def evaluate(
    key: GatewayKey | None,
    agent: str | None,
    model_ref: str | None,
    states: Sequence[LimitState],
    res: Reservation,
    now: float,
) -> Verdict:
    """:func:`key_refusal`, then :func:`admit` over ``states``, each limit's own answer kept for display."""
    key_answer = key_refusal(key, agent, model_ref, now) if key is not None else None
    checks = tuple((state, check(state, res, now)) for state in states)
    refusal = key_answer or admit(states, res, now)
    return Verdict(key_answer, checks, res, refusal)


def needs_estimate(limits: Iterable[Limit]) -> bool:
    """True when any of ``limits`` has a budget or a token rate (the reservation needs the prompt estimate)."""
    return any(limit.budget is not None or limit.tpm is not None for limit in limits)
