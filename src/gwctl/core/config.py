"""The gateway's configuration, the store's data model, as plain immutable dataclasses.

Everything the decision, the catalog checks and the pricing need is here, with
no I/O: the store layer builds a :class:`Snapshot` from the TOML document, the
CLI and the proxy hand that snapshot to pure functions.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Mapping

PRICE_KINDS: tuple[str, ...] = (
    "input",
    "output",
    "cached_input",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "per_request",
    "web_search",
    "image",
    "audio_input",
)
"""Every price kind a catalog entry may set, in display order.

Token kinds are USD per token; ``per_request`` is USD per request,
``web_search`` USD per search, ``image`` USD per image, ``audio_input``
USD per audio input token.
"""

CAPABILITIES: tuple[str, ...] = (
    "streaming",
    "vision",
    "tools",
    "reasoning",
    "json_output",
    "audio",
)
"""Every capability flag a catalog entry may set (true, false or unset)."""


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Secret:
    """A credential: either a literal value or the name of an env var.

    ``value`` is what the user stored (literal); ``env`` names the variable to
    read at use time. At most one is set; neither means "no credential".
    """

    value: str | None = None
    env: str | None = None

    @property
    def is_set(self) -> bool:
        return bool(self.value) or bool(self.env)


FAILURE_CLASSES: tuple[str, ...] = (
    "connect",  # connection refused, reset while connecting, DNS failure
    "tls",  # the TLS handshake failed
    "connect_timeout",
    "reset",  # the connection broke before the answer's head
    "first_byte_timeout",  # no answer head within the read timeout
    "429",
    "500",
    "502",
    "503",
    "504",
)
"""The failures a failover may move on from; an HTTP status of 400-599 may be named too."""


@dataclass(frozen=True)
class FailoverPolicy:
    """When a route's plan moves on to its next target (``[settings.failover]``, or a source's own).

    ``on`` names the failures that move on (:data:`FAILURE_CLASSES` or a status code as text);
    ``max_attempts`` caps the targets one request tries, ``max_seconds`` the time it may spend on them;
    a target that failed ``cooldown_after`` times in a row is skipped for ``cooldown_seconds`` (then one
    request tries it again); a 429 or 503 with Retry-After keeps its target out until then.
    """

    on: frozenset[str] = frozenset(FAILURE_CLASSES)
    max_attempts: int = 3
    max_seconds: float = 30.0
    cooldown_after: int = 3
    cooldown_seconds: float = 30.0
    retry_after: bool = True  # honour Retry-After


SOURCE_APIS = ("both", "openai", "anthropic")
"""What ``[sources.NAME] api`` may say; "both" (the default) is never written."""


@dataclass(frozen=True)
class Source:
    """A custom provider: an OpenAI-compatible upstream."""

    name: str
    base_url: str
    auth_header: str = ""  # blank means "Authorization: Bearer <value>"
    auth: Secret = field(default_factory=Secret)
    passthrough: bool = False
    catalog_only: bool = False
    headers: Mapping[str, str] = field(default_factory=_empty)
    models: Mapping[str, bool] = field(default_factory=_empty)  # discovered model id -> enabled
    connect_timeout: float | None = None
    read_timeout: float | None = None
    response_headers: tuple[
        str, ...
    ] = ()  # upstream response headers (lower case) passed to clients beyond the default set
    ca_file: str | None = None  # PEM CAs trusted for this source's https upstream, on top of the system store
    failover: FailoverPolicy | None = None  # this source's own policy ([sources.NAME.failover]); None: the store's
    # the API the upstream speaks: "both" forwards in the client's API; "openai" or "anthropic" has the proxy
    # translate requests in the other API (Messages <-> Chat Completions)
    api: str = "both"

    @property
    def effective_auth_header(self) -> str:
        return self.auth_header or "Authorization"


@dataclass(frozen=True)
class PriceSet:
    """Prices in force from ``valid_from`` (UTC) until the next set's: a price change written ahead of time,
    or a late correction, so each request is priced at what was in force when it was made."""

    valid_from: datetime  # timezone-aware
    prices: Mapping[str, Decimal] = field(default_factory=_empty)
    price_text: Mapping[str, str] = field(default_factory=_empty)

    @property
    def timestamp(self) -> float:
        return self.valid_from.timestamp()


@dataclass(frozen=True)
class CatalogEntry:
    """Prices, limits and capabilities for one ``SOURCE/MODEL_ID``.

    Prices are exact Decimals (USD per unit, see :data:`PRICE_KINDS`);
    ``price_text`` keeps what the user wrote so it can be shown unchanged.
    A capability missing from ``capabilities`` is unset (never rejects).
    ``prices`` is the undated set: in force before the earliest of
    ``price_sets`` (kept in the order written; of two with the same start the
    later written wins), always when there are none; :meth:`at` picks the set
    in force at a time.
    """

    source: str
    model_id: str
    display_name: str | None = None
    context_size: int | None = None
    max_output: int | None = None
    prices: Mapping[str, Decimal] = field(default_factory=_empty)
    price_text: Mapping[str, str] = field(default_factory=_empty)
    capabilities: Mapping[str, bool] = field(default_factory=_empty)
    supported_params: tuple[str, ...] | None = None
    price_sets: tuple[PriceSet, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.source}/{self.model_id}"

    def at(self, when: float) -> CatalogEntry:
        """The entry with the prices in force at ``when`` (a Unix time) as its ``prices``: itself before the
        first dated set (or without any), else one entry object per set, made once, so callers that remember
        a price plan per entry object keep doing so."""
        if not self.price_sets:
            return self
        i = bisect_right(self._starts, when) - 1
        return self if i < 0 else self._dated[i]

    def set_at(self, when: float) -> PriceSet | None:
        """The dated set in force at ``when``; None while the undated prices are."""
        if not self.price_sets:
            return None
        i = bisect_right(self._starts, when) - 1
        return None if i < 0 else self.schedule[i]

    @cached_property
    def schedule(self) -> tuple[PriceSet, ...]:
        """The dated sets in time order (stable: of two with the same start, the later written comes last)."""
        return tuple(sorted(self.price_sets, key=lambda s: s.timestamp))

    @cached_property
    def _starts(self) -> tuple[float, ...]:
        return tuple(s.timestamp for s in self.schedule)

    @cached_property
    def _dated(self) -> tuple[CatalogEntry, ...]:
        return tuple(replace(self, prices=s.prices, price_text=s.price_text, price_sets=()) for s in self.schedule)

    def __reduce__(self) -> tuple[Callable[..., CatalogEntry], tuple[Any, ...]]:
        """Picklable (the read-only mappings are not): the proxy ships entries to its log writer process."""
        return (
            _catalog_entry,
            (
                self.source,
                self.model_id,
                self.display_name,
                self.context_size,
                self.max_output,
                dict(self.prices),
                dict(self.price_text),
                dict(self.capabilities),
                self.supported_params,
                tuple((s.valid_from, dict(s.prices), dict(s.price_text)) for s in self.price_sets),
            ),
        )


def _catalog_entry(
    source: str,
    model_id: str,
    display_name: str | None,
    context_size: int | None,
    max_output: int | None,
    prices: Mapping[str, Decimal],
    price_text: Mapping[str, str],
    capabilities: Mapping[str, bool],
    supported_params: tuple[str, ...] | None,
    price_sets: tuple[tuple[datetime, dict[str, Decimal], dict[str, str]], ...] = (),
) -> CatalogEntry:
    return CatalogEntry(
        source,
        model_id,
        display_name,
        context_size,
        max_output,
        MappingProxyType(prices),
        MappingProxyType(price_text),
        MappingProxyType(capabilities),
        supported_params,
        tuple(PriceSet(at, MappingProxyType(p), MappingProxyType(t)) for at, p, t in price_sets),
    )


@dataclass(frozen=True)
class Route:
    """An agent's model configuration.

    ``agent`` is ``triage`` (root) or ``triage/summarizer`` (subagent).
    ``passthrough`` None means "take the source's flag".
    """

    agent: str
    model_name: str
    provider: str
    model: str | None = None  # upstream model id; None = model_name
    base_url: str | None = None
    passthrough: bool | None = None
    weight: int = 1  # the primary target's weight in the primary tier
    balance: tuple[tuple[str, int], ...] = ()  # more targets in the primary tier: (SOURCE/MODEL_ID, weight)
    fallbacks: tuple[str, ...] = ()  # SOURCE/MODEL_ID targets tried in order when the primary tier fails

    @property
    def is_root(self) -> bool:
        return "/" not in self.agent

    @property
    def upstream_model(self) -> str:
        return self.model or self.model_name


@dataclass(frozen=True)
class GatewayKey:
    """A client key of the proxy; only its hash is ever stored."""

    name: str
    hash: str  # "sha256:<hex>"
    prefix: str  # the first characters, for recognising a key in a list
    created: str = ""
    agents: tuple[str, ...] = ()  # scope: only these agents (and their subagents) may use it; () = any
    models: tuple[str, ...] = ()  # scope: only models matching these globs; () = any
    expires: str | None = None  # UTC timestamp as stored (2026-12-31T00:00:00Z); None = never
    expires_at: float | None = None  # the same as POSIX seconds


@dataclass(frozen=True)
class Limit:
    """A spend or rate limit on one target (``key:ci``, ``agent:triage``, ``source:NAME``, ``model:S/M``).

    ``budget`` is USD over ``window`` (day, week, month: UTC calendar windows; total: ever);
    ``rpm``/``tpm`` cap requests and tokens per minute. ``unbilled`` says whether a request
    without a price may pass a budget (allow) or not (reject).
    """

    target: str
    budget: Decimal | None = None
    budget_text: str | None = None  # as the user wrote it, for display
    window: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    unbilled: str = "allow"


@dataclass(frozen=True)
class Settings:
    auto_enable_models: bool = True
    default_model: str | None = None
    fallback_source: str | None = None
    failover: FailoverPolicy = field(default_factory=lambda: FailoverPolicy())  # [settings.failover]


@dataclass(frozen=True)
class Snapshot:
    """The whole store, read-only, as the pure core sees it."""

    settings: Settings = field(default_factory=Settings)
    sources: Mapping[str, Source] = field(default_factory=_empty)
    catalog: Mapping[str, CatalogEntry] = field(default_factory=_empty)  # keyed by "SOURCE/MODEL_ID"
    routes: tuple[Route, ...] = ()
    keys: Mapping[str, GatewayKey] = field(default_factory=_empty)
    limits: Mapping[str, Limit] = field(default_factory=_empty)  # by target, in store order

    def entry(self, source: str, model_id: str) -> CatalogEntry | None:
        return self.catalog.get(f"{source}/{model_id}")

    @cached_property
    def route_index(self) -> Mapping[tuple[str | None, str], Route]:
        """Routes by key: (None, model_name) for root agents, (agent, model_name) for subagents.

        Built once per snapshot, so finding a route costs one lookup however
        many routes the store has. The first route wins on a duplicate key
        (validate reports duplicates).
        """
        index: dict[tuple[str | None, str], Route] = {}
        for r in self.routes:
            index.setdefault((None if r.is_root else r.agent, r.model_name), r)
        return MappingProxyType(index)

    @cached_property
    def keys_by_hash(self) -> Mapping[str, GatewayKey]:
        return MappingProxyType({k.hash: k for k in self.keys.values()})
