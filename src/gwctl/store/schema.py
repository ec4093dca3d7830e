"""The store's TOML schema: plain parsed data -> a validated :class:`Snapshot`.

Reading goes through ``tomllib`` (fast) and this module; writing goes through
tomlkit (see :mod:`gwctl.store.document`), whose result is read back through
this same function before it may replace the file. So one set of type rules
guards both directions, and every error names the TOML key path at fault.

Layout (documented in the README)::

    schema = 1
    [settings]      auto_enable_models, default_model, fallback_source
    [settings.failover]  on = [..], max_attempts, max_seconds, cooldown_after,
                    cooldown_seconds, retry_after (missing: FailoverPolicy's defaults)
    [sources.NAME]  base_url, auth_header, auth_value | auth_env, passthrough,
                    catalog_only, headers = {..}, connect_timeout, read_timeout,
                    ca_file (an absolute path), api = "openai" | "anthropic"
                    (missing: "both", the client's API is forwarded as is)
    [sources.NAME.models]   "model-id" = true|false   (enabled?)
    [sources.NAME.failover] the source's own failover policy (keys as below;
                    a key it leaves out takes [settings.failover]'s value)
    [catalog."SOURCE/MODEL_ID"]  display_name, context_size, max_output,
                    supported_params = [..]
    [catalog."SOURCE/MODEL_ID".prices]        KIND = "3e-6"
    [catalog."SOURCE/MODEL_ID".capabilities]  NAME = true|false
    [[catalog."SOURCE/MODEL_ID".price_sets]]  valid_from = 2026-12-01T00:00:00Z, KIND = "3e-6", ..
                    (prices in force from that time; the undated prices before the first)
    [[routes]]      agent, model_name, provider, model, base_url, passthrough,
                    weight, balance = [{target = "S/M", weight = 2}, ..],
                    fallback = ["S/M", ..]
    [keys.NAME]     hash, prefix, created, agents = [..], models = [..], expires
    [[limits]]      target, budget = "25.00", window, rpm, tpm, unbilled
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Mapping, TypeVar, overload

from gwctl.core.config import (
    CAPABILITIES,
    PRICE_KINDS,
    SOURCE_APIS,
    CatalogEntry,
    FailoverPolicy,
    GatewayKey,
    Limit,
    PriceSet,
    Route,
    Secret,
    Settings,
    Snapshot,
    Source,
)
from gwctl.core.limits import WINDOWS, parse_budget, parse_target
from gwctl.core.limits import budget_text as limit_budget_text
from gwctl.core.numbers import float_text
from gwctl.core.refs import split_ref

T = TypeVar("T")

SCHEMA_VERSION = 1

SOURCE_KEYS = {
    "base_url",
    "auth_header",
    "auth_value",
    "auth_env",
    "passthrough",
    "catalog_only",
    "headers",
    "models",
    "connect_timeout",
    "read_timeout",
    "ca_file",
    "response_headers",
    "failover",
    "api",
}
ENTRY_KEYS = {"display_name", "context_size", "max_output", "prices", "capabilities", "supported_params", "price_sets"}
ROUTE_KEYS = {"agent", "model_name", "provider", "model", "base_url", "passthrough", "weight", "balance", "fallback"}
BALANCE_KEYS = {"target", "weight"}
SETTINGS_KEYS = {"auto_enable_models", "default_model", "fallback_source", "failover"}
FAILOVER_KEYS = {"on", "max_attempts", "max_seconds", "cooldown_after", "cooldown_seconds", "retry_after"}
KEY_KEYS = {"hash", "prefix", "created", "agents", "models", "expires"}
LIMIT_KEYS = {"target", "budget", "window", "rpm", "tpm", "unbilled"}
TOP_KEYS = {"schema", "settings", "sources", "catalog", "routes", "keys", "limits"}


KeyPath = tuple[str | int, ...]
"""A TOML key path: table keys, and the index of an array-of-tables item."""


class SchemaError(ValueError):
    """A value in the store has the wrong type or shape.

    ``path`` is the TOML key path (e.g. ``("sources", "local", "base_url")``)
    so the caller can point at the line.
    """

    def __init__(self, message: str, path: KeyPath = ()):
        super().__init__(message)
        self.message = message
        self.path = path


def _dotted(path: KeyPath) -> str:
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out[-1] = f"{out[-1]}[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum():
            out.append(part)
        else:
            out.append('"' + part + '"')
    return ".".join(out)


def _toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, with its article."""
    import datetime

    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return f"a {type(value).__name__}"


def _may_hold_secret(path: KeyPath) -> bool:
    """Whether a value at ``path`` may be (or hold) a secret, so no message may repeat it.

    Everything under a source (its credential, its base URL with user info,
    its static headers) and under a gateway key; a route's base URL override.
    """
    if not path:
        return False
    if path[0] in ("sources", "keys"):
        return True
    return path[0] == "routes" and "base_url" in path[2:3]


def _got(value: Any, path: KeyPath) -> str:
    """What a wrong value was, for an error message: its type, and the value itself only when that is safe and short."""
    kind = _toml_type(value)
    if _may_hold_secret(path) or isinstance(value, (dict, list)):
        return kind
    return f"{kind} {value!r}"


@overload
def _expect(value: Any, kind: type[T], path: KeyPath, what: str) -> T: ...
@overload
def _expect(value: Any, kind: tuple[type, ...], path: KeyPath, what: str) -> Any: ...
def _expect(value: Any, kind: type | tuple[type, ...], path: KeyPath, what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise SchemaError(f"{_dotted(path)} must be {what}, not a boolean", path)
    if not isinstance(value, kind):
        raise SchemaError(f"{_dotted(path)} must be {what}, got {_got(value, path)}", path)
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str], path: KeyPath) -> None:
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise SchemaError(f"{_dotted(path + (key,))} is not a known setting (known: {known})", path + (key,))


def _opt_str(table: Mapping[str, Any], key: str, path: KeyPath) -> str | None:
    if key not in table:
        return None
    return _expect(table[key], str, path + (key,), "a string")


def _opt_bool(table: Mapping[str, Any], key: str, path: KeyPath) -> bool | None:
    if key not in table:
        return None
    return _expect(table[key], bool, path + (key,), "true or false")


def _opt_pos_int(table: Mapping[str, Any], key: str, path: KeyPath) -> int | None:
    if key not in table:
        return None
    value = _expect(table[key], int, path + (key,), "a positive integer")
    if not 0 < value <= MAX_TOML_INT:
        raise SchemaError(
            f"{_dotted(path + (key,))} must be a positive integer up to {MAX_TOML_INT}, got {value}", path + (key,)
        )
    return value


MAX_TOML_INT = 2**63 - 1
"""TOML integers are 64-bit: a larger one reads in Python but other TOML tools refuse the whole file."""


MAX_TIMEOUT_S = 604800.0
"""The longest connect or read timeout: a week (a larger one, or infinity, overflows the HTTP clients)."""


def _opt_timeout(table: Mapping[str, Any], key: str, path: KeyPath) -> float | None:
    if key not in table:
        return None
    value = _expect(table[key], (int, float), path + (key,), "a number of seconds")
    if not 0 < value <= MAX_TIMEOUT_S:  # NaN fails both comparisons
        raise SchemaError(
            f"{_dotted(path + (key,))} must be a positive number of seconds up to {MAX_TIMEOUT_S:g} (a week)",
            path + (key,),
        )
    return float(value)


def _table(value: Any, path: KeyPath) -> Mapping[str, Any]:
    return _expect(value, dict, path, "a table")


def parse_source(name: str, table: Any, store_failover: FailoverPolicy | None = None) -> Source:
    """One ``[sources.NAME]`` table; its failover table's missing keys take ``store_failover``'s values."""
    path = ("sources", name)
    table = _table(table, path)
    _unknown(table, SOURCE_KEYS, path)
    if "base_url" not in table:
        raise SchemaError(f"{_dotted(path)} has no base_url", path)
    base_url = _expect(table["base_url"], str, path + ("base_url",), "a string")
    value = _opt_str(table, "auth_value", path)
    env = _opt_str(table, "auth_env", path)
    if value and env:
        raise SchemaError(f"{_dotted(path)} sets both auth_value and auth_env; keep one", path + ("auth_env",))
    headers_raw = table.get("headers", {})
    headers = dict(_table(headers_raw, path + ("headers",)))
    for key, val in headers.items():
        _expect(val, str, path + ("headers", key), "a string")
    models_raw = _table(table.get("models", {}), path + ("models",))
    models = {}
    for model_id, enabled in models_raw.items():
        models[model_id] = _expect(enabled, bool, path + ("models", model_id), "true (enabled) or false (disabled)")
    return Source(
        name=name,
        base_url=base_url,
        auth_header=_opt_str(table, "auth_header", path) or "",
        auth=Secret(value=value or None, env=env or None),
        passthrough=bool(_opt_bool(table, "passthrough", path)),
        catalog_only=bool(_opt_bool(table, "catalog_only", path)),
        headers=MappingProxyType(headers),
        models=MappingProxyType(models),
        connect_timeout=_opt_timeout(table, "connect_timeout", path),
        read_timeout=_opt_timeout(table, "read_timeout", path),
        ca_file=_opt_str(table, "ca_file", path) or None,
        response_headers=_response_headers(table.get("response_headers", []), path + ("response_headers",)),
        api=_source_api(table, path),
        failover=None
        if "failover" not in table
        else parse_failover(table["failover"], path + ("failover",), store_failover or FailoverPolicy()),
    )


def _source_api(table: Mapping[str, Any], path: KeyPath) -> str:
    """The API a source speaks; a value the proxy could not act on is refused here, not guessed at."""
    api = _opt_str(table, "api", path)
    if api is None:
        return "both"
    if api not in SOURCE_APIS:
        raise SchemaError(
            f"{_dotted(path + ('api',))} must be one of {', '.join(SOURCE_APIS)}, not '{api}'", path + ("api",)
        )
    return api


def _response_headers(value: Any, path: KeyPath) -> tuple[str, ...]:
    """A source's extra response header names: a list of header names, kept lower case."""
    from gwctl.core.headers import validate_header_name

    if not isinstance(value, list):
        raise SchemaError(f"{_dotted(path)} must be a list of header names, got {_got(value, path)}", path)
    out = []
    for i, name in enumerate(value):
        try:
            out.append(validate_header_name(name).lower())
        except ValueError as exc:
            raise SchemaError(f"{_dotted(path)}[{i}]: {exc}", path) from None
    return tuple(dict.fromkeys(out))


def _price_value(value: Any, kind: str, path: KeyPath) -> tuple[Decimal, str]:
    from gwctl.core.catalog_values import parse_price

    if isinstance(value, float):
        text = float_text(value)  # the digits written, when read with ExactFloat
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value)
    else:
        raise SchemaError(f'{_dotted(path)} must be a price like "3e-6", got {_got(value, path)}', path)
    try:
        return parse_price(text, kind), text.strip()
    except ValueError as exc:
        raise SchemaError(f"{_dotted(path)}: {exc}", path) from None


def parse_entry(ref: str, table: Any) -> CatalogEntry:
    path = ("catalog", ref)
    table = _table(table, path)
    _unknown(table, ENTRY_KEYS, path)
    try:
        source, model_id = split_ref(ref)
    except ValueError as exc:
        raise SchemaError(f"catalog key {exc}", path) from None
    prices, texts = _prices(_table(table.get("prices", {}), path + ("prices",)), path + ("prices",), ())
    caps: dict[str, bool] = {}
    for name, value in _table(table.get("capabilities", {}), path + ("capabilities",)).items():
        if name not in CAPABILITIES:
            raise SchemaError(
                f"{_dotted(path + ('capabilities', name))} is not a capability (valid: {', '.join(CAPABILITIES)})",
                path + ("capabilities", name),
            )
        caps[name] = _expect(value, bool, path + ("capabilities", name), "true or false (delete the key for unset)")
    params = None
    if "supported_params" in table:
        raw = _expect(table["supported_params"], list, path + ("supported_params",), "a list of strings")
        for i, item in enumerate(raw):
            _expect(item, str, path + ("supported_params", i), "a string")
        params = tuple(raw)
    return CatalogEntry(
        source=source,
        model_id=model_id,
        display_name=_opt_str(table, "display_name", path),
        context_size=_opt_pos_int(table, "context_size", path),
        max_output=_opt_pos_int(table, "max_output", path),
        prices=MappingProxyType(prices),
        price_text=MappingProxyType(texts),
        capabilities=MappingProxyType(caps),
        supported_params=params,
        price_sets=_price_sets(table.get("price_sets"), path + ("price_sets",)),
    )


def _prices(
    table: Mapping[str, Any], path: KeyPath, skip: tuple[str, ...]
) -> tuple[dict[str, Decimal], dict[str, str]]:
    """A table of prices by kind (keys in ``skip`` are not prices), as Decimals and as written."""
    prices: dict[str, Decimal] = {}
    texts: dict[str, str] = {}
    for kind, value in table.items():
        if kind in skip:
            continue
        if kind not in PRICE_KINDS:
            raise SchemaError(
                f"{_dotted(path + (kind,))} is not a price kind (valid: {', '.join(PRICE_KINDS)})", path + (kind,)
            )
        prices[kind], texts[kind] = _price_value(value, kind, path + (kind,))
    return prices, texts


def valid_from(value: Any, path: KeyPath) -> datetime:
    """A price set's start: a TOML datetime or an ISO 8601 text with a UTC offset (``Z``), as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise SchemaError(
                f"{_dotted(path)} must be a time like 2026-12-01T00:00:00Z, got {value!r}", path
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):  # a TOML local date: no time, no offset
        raise SchemaError(f"{_dotted(path)} needs a time and a UTC offset (write it as {value}T00:00:00Z)", path)
    if isinstance(value, time):  # a TOML local time: no day
        raise SchemaError(f"{_dotted(path)} needs a day and a UTC offset (like 2026-12-01T{value}Z)", path)
    if not isinstance(value, datetime):
        raise SchemaError(f"{_dotted(path)} must be a time like 2026-12-01T00:00:00Z, got {_got(value, path)}", path)
    if value.tzinfo is None or value.utcoffset() is None:
        raise SchemaError(f"{_dotted(path)} needs a UTC offset (write it as {value.isoformat()}Z)", path)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise SchemaError(
            f"{_dotted(path)} must be a time between the years 1 and 9999 in UTC, got {value.isoformat()}", path
        ) from None


def _price_sets(raw: Any, path: KeyPath) -> tuple[PriceSet, ...]:
    """``[[catalog."REF".price_sets]]``: each a ``valid_from`` and its prices, in the order written (the
    entry orders them by time; the price linter warns about sets out of order or with the same start)."""
    if raw is None:
        return ()
    items = _expect(raw, list, path, 'an array of tables ([[catalog."SOURCE/MODEL_ID".price_sets]])')
    sets = []
    for i, item in enumerate(items):
        here = path + (i,)
        table = _table(item, here)
        if "valid_from" not in table:
            raise SchemaError(f"{_dotted(here)} needs a valid_from time (like 2026-12-01T00:00:00Z)", here)
        prices, texts = _prices(table, here, ("valid_from",))
        start = valid_from(table["valid_from"], here + ("valid_from",))
        sets.append(PriceSet(start, MappingProxyType(prices), MappingProxyType(texts)))
    return tuple(sets)


def _opt_number(table: Mapping[str, Any], key: str, path: KeyPath, zero_ok: bool) -> float | None:
    if key not in table:
        return None
    what = "a number of seconds (0 or more)" if zero_ok else "a positive number of seconds"
    value = _expect(table[key], (int, float), path + (key,), what)
    if value < 0 or (value == 0 and not zero_ok) or value != value:  # NaN compares unequal to itself
        raise SchemaError(f"{_dotted(path + (key,))} must be {what}, got {value!r}", path + (key,))
    return float(value)


def parse_failover(value: Any, path: KeyPath, defaults: FailoverPolicy) -> FailoverPolicy:
    """A ``failover`` table (``[settings.failover]`` or a source's): a key it leaves out keeps ``defaults``'."""
    from gwctl.core.failover import parse_on

    table = _table(value, path)
    _unknown(table, FAILOVER_KEYS, path)
    on = defaults.on
    if "on" in table:
        raw = _expect(table["on"], list, path + ("on",), 'an array of failures (like ["connect", "503"])')
        for i, item in enumerate(raw):
            _expect(item, str, path + ("on", i), "a string")
        try:
            on = parse_on(raw)
        except ValueError as exc:
            raise SchemaError(f"{_dotted(path + ('on',))}: {exc}", path + ("on",)) from None
    attempts = _opt_pos_int(table, "max_attempts", path)
    seconds = _opt_number(table, "max_seconds", path, zero_ok=False)
    after = _opt_pos_int(table, "cooldown_after", path)
    cooldown = _opt_number(table, "cooldown_seconds", path, zero_ok=True)
    retry_after = _opt_bool(table, "retry_after", path)
    return FailoverPolicy(
        on=on,
        max_attempts=defaults.max_attempts if attempts is None else attempts,
        max_seconds=defaults.max_seconds if seconds is None else seconds,
        cooldown_after=defaults.cooldown_after if after is None else after,
        cooldown_seconds=defaults.cooldown_seconds if cooldown is None else cooldown,
        retry_after=defaults.retry_after if retry_after is None else retry_after,
    )


def _target_ref(value: Any, path: KeyPath) -> str:
    """A balance or fallback target: a SOURCE/MODEL_ID string (whether the source exists is validate's)."""
    ref = _expect(value, str, path, "a SOURCE/MODEL_ID reference")
    try:
        split_ref(ref)
    except ValueError as exc:
        raise SchemaError(f"{_dotted(path)}: {exc}", path) from None
    return ref


def _balance(value: Any, path: KeyPath) -> tuple[tuple[str, int], ...]:
    """A route's ``balance``: an array of ``{target = "S/M", weight = N}`` tables (weight 1 when left out)."""
    items = _expect(value, list, path, 'an array of tables like {target = "SOURCE/MODEL_ID", weight = 2}')
    out = []
    for i, item in enumerate(items):
        here = path + (i,)
        table = _expect(item, dict, here, 'a table like {target = "SOURCE/MODEL_ID", weight = 2}')
        _unknown(table, BALANCE_KEYS, here)
        if "target" not in table:
            raise SchemaError(f"{_dotted(here)} has no target", here)
        weight = _opt_pos_int(table, "weight", here)
        out.append((_target_ref(table["target"], here + ("target",)), 1 if weight is None else weight))
    return tuple(out)


def _fallbacks(value: Any, path: KeyPath) -> tuple[str, ...]:
    items = _expect(value, list, path, 'an array of SOURCE/MODEL_ID references (like ["local/llama"])')
    return tuple(_target_ref(item, path + (i,)) for i, item in enumerate(items))


def parse_route(index: int, table: Any) -> Route:
    path = ("routes", index)
    table = _table(table, path)
    _unknown(table, ROUTE_KEYS, path)
    for key in ("agent", "model_name", "provider"):
        if key not in table:
            raise SchemaError(f"{_dotted(path)} has no {key}", path)
    weight = _opt_pos_int(table, "weight", path)
    return Route(
        agent=_expect(table["agent"], str, path + ("agent",), "a string"),
        model_name=_expect(table["model_name"], str, path + ("model_name",), "a string"),
        provider=_expect(table["provider"], str, path + ("provider",), "a string"),
        model=_opt_str(table, "model", path) or None,
        base_url=_opt_str(table, "base_url", path) or None,
        passthrough=_opt_bool(table, "passthrough", path),
        weight=1 if weight is None else weight,
        balance=_balance(table.get("balance", []), path + ("balance",)),
        fallbacks=_fallbacks(table.get("fallback", []), path + ("fallback",)),
    )


def snapshot_from_data(data: Mapping[str, Any]) -> Snapshot:
    """Build the read-only model from parsed TOML, or raise :class:`SchemaError`."""
    _unknown(data, TOP_KEYS, ())
    version = data.get("schema", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"schema = {version!r} is not supported by this gwctl (it reads schema {SCHEMA_VERSION})", ("schema",)
        )
    settings_t = _table(data.get("settings", {}), ("settings",))
    _unknown(settings_t, SETTINGS_KEYS, ("settings",))
    auto = _opt_bool(settings_t, "auto_enable_models", ("settings",))
    settings = Settings(
        auto_enable_models=True if auto is None else auto,
        default_model=_opt_str(settings_t, "default_model", ("settings",)) or None,
        fallback_source=_opt_str(settings_t, "fallback_source", ("settings",)) or None,
        failover=parse_failover(settings_t.get("failover", {}), ("settings", "failover"), FailoverPolicy()),
    )
    sources = {
        name: parse_source(name, table, settings.failover)
        for name, table in _table(data.get("sources", {}), ("sources",)).items()
    }
    catalog = {ref: parse_entry(ref, table) for ref, table in _table(data.get("catalog", {}), ("catalog",)).items()}
    routes_raw = _expect(data.get("routes", []), list, ("routes",), "an array of tables ([[routes]])")
    routes = tuple(parse_route(i, t) for i, t in enumerate(routes_raw))
    keys = _parse_keys(data.get("keys", {}))
    limits_raw = _expect(data.get("limits", []), list, ("limits",), "an array of tables ([[limits]])")
    limits: dict[str, Limit] = {}
    for i, t in enumerate(limits_raw):
        limit = parse_limit(i, t)
        if limit.target in limits:
            raise SchemaError(f"limits[{i}] repeats target '{limit.target}'; one limit per target", ("limits", i))
        limits[limit.target] = limit
    return Snapshot(
        settings=settings,
        sources=MappingProxyType(sources),
        catalog=MappingProxyType(catalog),
        routes=routes,
        keys=MappingProxyType(keys),
        limits=MappingProxyType(limits),
    )


def _parse_keys(value: Any) -> dict[str, GatewayKey]:
    """The ``[keys.NAME]`` tables."""
    keys: dict[str, GatewayKey] = {}
    for name, table in _table(value, ("keys",)).items():
        path = ("keys", name)
        table = _table(table, path)
        _unknown(table, KEY_KEYS, path)
        digest = _opt_str(table, "hash", path)
        if not digest:
            raise SchemaError(f"{_dotted(path)} has no hash", path)
        created = table.get("created", "")
        expires = _opt_str(table, "expires", path) or None
        keys[name] = GatewayKey(
            name=name,
            hash=digest,
            prefix=_opt_str(table, "prefix", path) or "",
            created=str(created),
            agents=_str_list(table, "agents", path),
            models=_str_list(table, "models", path),
            expires=expires,
            expires_at=None if expires is None else _timestamp(expires, path + ("expires",)),
        )
    return keys


def _str_list(table: Mapping[str, Any], key: str, path: KeyPath) -> tuple[str, ...]:
    value = table.get(key, [])
    items = _expect(value, list, path + (key,), "an array of strings")
    for item in items:
        _expect(item, str, path + (key,), "an array of strings")
    return tuple(items)


def _timestamp(text: str, path: KeyPath) -> float:
    """A UTC timestamp as written in the store (``2026-12-31T00:00:00Z``) as POSIX seconds."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SchemaError(f"{_dotted(path)} = {text!r} is not a timestamp like 2026-12-31T00:00:00Z", path) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def parse_limit(index: int, table: Any) -> Limit:
    """One ``[[limits]]`` table; the target's form is checked here, whether it exists by validate."""
    path = ("limits", index)
    table = _table(table, path)
    _unknown(table, LIMIT_KEYS, path)
    target = _opt_str(table, "target", path)
    if not target:
        raise SchemaError(f"{_dotted(path)} has no target", path)
    try:
        parse_target(target)  # the form `gwctl limit set` accepts: a model target names SOURCE/MODEL_ID
    except ValueError:
        raise SchemaError(
            f"{_dotted(path)}.target = {target!r} is not key:NAME, agent:PATH, source:NAME or model:SOURCE/MODEL_ID",
            path + ("target",),
        ) from None
    budget = budget_text = None
    if "budget" in table:
        raw = table["budget"]
        try:
            budget = parse_budget(raw)
        except ValueError as exc:
            raise SchemaError(f"{_dotted(path + ('budget',))}: {exc}", path + ("budget",)) from None
        budget_text = limit_budget_text(raw)
    window = _opt_str(table, "window", path) or None
    if budget is not None and window is None:
        window = "total"
    if window is not None and window not in WINDOWS:
        raise SchemaError(f"{_dotted(path)}.window = {window!r} is not day, week, month or total", path + ("window",))
    unbilled = _opt_str(table, "unbilled", path) or "allow"
    if unbilled not in ("allow", "reject"):
        raise SchemaError(f"{_dotted(path)}.unbilled = {unbilled!r} is not allow or reject", path + ("unbilled",))
    return Limit(
        target=target,
        budget=budget,
        budget_text=budget_text,
        window=window,
        rpm=_opt_pos_int(table, "rpm", path),
        tpm=_opt_pos_int(table, "tpm", path),
        unbilled=unbilled,
    )
