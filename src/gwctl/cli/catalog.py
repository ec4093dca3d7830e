"""`gwctl catalog …`: prices, limits and capabilities per SOURCE/MODEL_ID."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from typing import Annotated, Optional

import typer

from gwctl.cli import complete
from gwctl.cli.common import (
    NAME_RE,
    JsonOpt,
    YesOpt,
    confirm,
    edit,
    fail,
    load,
    no_control_characters,
    read_input,
)
from gwctl.context import current
from gwctl.core.catalog_values import (
    check_price_kind,
    format_price,
    format_usd,
    lint_entry,
    parse_capability_assignment,
    parse_price_assignment,
    price_unit,
    utc_text,
)
from gwctl.core.config import CAPABILITIES, PRICE_KINDS
from gwctl.core.numbers import ExactFloat
from gwctl.core.refs import close_matches, split_ref
from gwctl.render import message, print_fields, print_json, print_table, warn
from gwctl.store.schema import SchemaError, parse_entry

app = typer.Typer(
    help="The custom model catalog: prices, limits, capabilities.\n\nExample: gwctl catalog set local/llama-3.1-8b --price input=3e-6 --price output=1.5e-5 --max-output 4096",
    no_args_is_help=True,
    rich_markup_mode=None,
)

RefArg = Annotated[
    str, typer.Argument(metavar="REF", help="SOURCE/MODEL_ID, e.g. local/llama-3.1-8b.", autocompletion=complete.refs)
]


def _ref(ref: str) -> str:

    try:
        split_ref(ref)
    except ValueError as exc:
        fail(str(exc))
    return ref


def _new_ref(ref: str, snap) -> str:
    """A reference `catalog set` or `catalog import` may create: no control characters (they would reach the
    terminal and break the tab-separated output), and a source that exists or that `source add` accepts."""
    _ref(ref)
    no_control_characters("the reference", ref, "write SOURCE/MODEL_ID as the upstream lists the model")
    source, _ = split_ref(ref)
    if source not in snap.sources and not NAME_RE.match(source):
        fail(
            f"'{source}' in {ref} is not a valid source name, so the entry could never apply",
            "source names use letters, digits, '.', '_' and '-', e.g. local-vllm",
        )
    return ref


def _pos_int(name: str, value: int | None) -> int | None:
    if value is not None and value <= 0:
        fail(f"{name} must be a positive number of tokens, got {value}")
    return value


def _lint(snap, refs) -> None:

    for ref in refs:
        entry = snap.catalog.get(ref)
        if entry:
            for w in lint_entry(entry):
                warn(w)


def _assignments(price: list[str], capability: list[str]) -> tuple[dict[str, str | None], dict]:
    """--price KIND=USD (None for KIND=unset) and --capability NAME=VALUE, parsed."""
    prices: dict[str, str | None] = {}
    try:
        for item in price:
            kind, _, value = item.partition("=")
            if value.strip().lower() == "unset":
                prices[check_price_kind(kind.strip().lower())] = None
                continue
            kind, _, text = parse_price_assignment(item)
            prices[kind] = text
        caps = dict(parse_capability_assignment(item) for item in capability)
    except ValueError as exc:
        fail(str(exc))
    return prices, caps


DisplayNameOpt = Annotated[
    Optional[str], typer.Option("--display-name", metavar="S", help="A human-readable label ('' removes it).")
]
ContextSizeOpt = Annotated[Optional[int], typer.Option("--context-size", metavar="N", help="Context window in tokens.")]
MaxOutputOpt = Annotated[
    Optional[int], typer.Option("--max-output", metavar="N", help="Maximum output tokens per request.")
]
PriceOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--price",
        metavar="KIND=USD",
        help="A price in USD per unit, e.g. input=3e-6 (repeatable; KIND=unset removes one). KIND: input output cached_input cache_read cache_write_5m cache_write_1h per_request web_search image audio_input.",
    ),
]
CapabilityOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--capability",
        metavar="NAME=true|false|unset",
        help="A capability flag (repeatable). NAME: streaming vision tools reasoning json_output audio.",
    ),
]
SupportedParamsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--supported-params", metavar="a,b,c", help="Advisory list of accepted request parameters ('' removes it)."
    ),
]
ValidFromOpt = Annotated[
    Optional[str],
    typer.Option(
        "--valid-from",
        metavar="TIME",
        help="Write the --price values as a dated price set in force from TIME (UTC, e.g. 2026-12-01T00:00:00Z) "
        "until the next set; a new set starts from the prices in force at TIME.",
    ),
]
UnsetContextSizeOpt = Annotated[bool, typer.Option("--unset-context-size", help="Remove the context size.")]
UnsetMaxOutputOpt = Annotated[bool, typer.Option("--unset-max-output", help="Remove the max output.")]


def _entry_fields(
    display_name, context_size, max_output, supported_params, unset_context_size, unset_max_output
) -> dict:
    """The entry fields `catalog set` changes (None removes one)."""
    fields: dict = {}
    if display_name is not None:
        fields["display_name"] = display_name or None
    if context_size is not None:
        fields["context_size"] = context_size
    if max_output is not None:
        fields["max_output"] = max_output
    if unset_context_size:
        fields["context_size"] = None
    if unset_max_output:
        fields["max_output"] = None
    if supported_params is not None:
        params = [p.strip() for p in supported_params.split(",") if p.strip()]
        fields["supported_params"] = params or None
    return fields


@app.command("set")
def set_cmd(
    ref: RefArg,
    display_name: DisplayNameOpt = None,
    context_size: ContextSizeOpt = None,
    max_output: MaxOutputOpt = None,
    price: PriceOpt = None,
    capability: CapabilityOpt = None,
    supported_params: SupportedParamsOpt = None,
    unset_context_size: UnsetContextSizeOpt = False,
    unset_max_output: UnsetMaxOutputOpt = False,
    valid_from: ValidFromOpt = None,
) -> None:
    """Create or update a catalog entry (only the given fields change).

    Prices are USD per token (per request / search / image for those kinds),
    in decimal or exponent notation; they are stored as written and computed
    exactly. With --valid-from the prices go into a dated set: requests from
    that time on are priced at it (a change ahead of time, or a late correction).

    Example: gwctl catalog set local/llama-3.1-8b --price input=3e-6 --price output=1.5e-5 --context-size 131072 --max-output 8192 --capability vision=false
    """
    import time

    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    _new_ref(ref, load())
    _pos_int("--context-size", context_size)
    _pos_int("--max-output", max_output)
    prices, caps = _assignments(price or [], capability or [])
    fields = _entry_fields(
        display_name, context_size, max_output, supported_params, unset_context_size, unset_max_output
    )
    start = _valid_from(valid_from, prices) if valid_from is not None else None
    dated = None
    with edit() as (doc, snap):
        entry = snap.catalog.get(ref)
        created = entry is None
        if start is None:
            document.put_entry(doc, ref, fields, prices, caps)
        else:
            document.put_entry(doc, ref, fields, {}, caps)
            dated = _write_price_set(document, doc, ref, entry, start, prices)
    snap = load()
    source, _ = split_ref(ref)
    if source not in snap.sources:
        warn(f"there is no source named '{source}' yet; the entry applies once it exists")
    _lint(snap, [ref])
    if dated is not None:
        message(f"{dated} price set from {utc_text(start)} of catalog entry {ref}")  # type: ignore[arg-type]
        return
    in_force = snap.catalog[ref].set_at(time.time())
    if prices and in_force is not None:
        warn(
            f"{ref} is priced at its set from {utc_text(in_force.valid_from)} now; the undated prices you changed "
            f"apply only before its first dated set (change a set with --valid-from)"
        )
    message(f"{'created' if created else 'updated'} catalog entry {ref}")


def _valid_from(text: str, prices: dict):
    """--valid-from as an aware UTC datetime; it needs --price values to date."""
    from gwctl.store.schema import valid_from

    if not prices:
        fail("--valid-from dates the --price values given with it; give at least one --price KIND=USD")
    try:
        return valid_from(text, ("--valid-from",))
    except SchemaError:
        fail(f"--valid-from must be a UTC time like 2026-12-01T00:00:00Z, not '{text}'")


def _write_price_set(document, doc, ref: str, entry, start, prices: dict) -> str:
    """Add the dated set from ``start`` (beginning with the prices in force then) or change the one that starts
    exactly then; ``prices`` maps a kind to its text, or None to remove it. Says which it did."""
    same = None
    before = None
    base: dict[str, str] = {}
    if entry is not None:
        starts = [s.valid_from for s in entry.price_sets]
        if starts == sorted(starts):  # keep sets written in time order so (a hand-ordered file is left as is)
            before = next((i for i, t in enumerate(starts) if t > start), None)
        for i, s in enumerate(entry.price_sets):
            if s.valid_from == start:
                same = i  # the last written with that start is the one in force
        if same is not None:
            found = entry.price_sets[same]
            base = {k: found.price_text.get(k) or str(found.prices[k]) for k in found.prices}
        else:
            now = entry.at(start.timestamp())
            base = {k: now.price_text.get(k) or str(now.prices[k]) for k in now.prices}
    for kind, text in prices.items():
        if text is None:
            base.pop(kind, None)
        else:
            base[kind] = text
    if not base:
        fail(f"the price set from {utc_text(start)} would have no prices left", "set at least one --price KIND=USD")
    document.put_price_set(doc, ref, utc_text(start), base, same, before)
    return "added" if same is None else "updated"


def entry_json(entry) -> dict:
    """An entry as the export/import file writes it (prices as written)."""
    out: dict = {}
    if entry.display_name is not None:
        out["display_name"] = entry.display_name
    if entry.context_size is not None:
        out["context_size"] = entry.context_size
    if entry.max_output is not None:
        out["max_output"] = entry.max_output
    if entry.supported_params is not None:
        out["supported_params"] = list(entry.supported_params)
    if entry.prices:
        out["prices"] = {k: entry.price_text.get(k) or str(entry.prices[k]) for k in entry.prices}
    if entry.capabilities:
        out["capabilities"] = dict(entry.capabilities)
    if entry.price_sets:
        out["price_sets"] = [
            {"valid_from": utc_text(s.valid_from), **{k: s.price_text.get(k) or str(s.prices[k]) for k in s.prices}}
            for s in entry.price_sets
        ]
    return out


def _need_entry(snap, ref):
    entry = snap.catalog.get(ref)
    if entry is None:
        close = close_matches(ref, snap.catalog)
        fail(
            f"no catalog entry for {ref}",
            f"did you mean {', '.join(close)}?"
            if close
            else f"create it with: gwctl catalog set {ref} --price input=…",
        )
    return entry


@app.command("show")
def show(ref: RefArg, json_: JsonOpt = False) -> None:
    """Show one catalog entry.

    Example: gwctl catalog show local/llama-3.1-8b --json
    """
    snap = load()
    entry = _need_entry(snap, _ref(ref))
    if json_:
        print_json({"ref": ref, "source": entry.source, "model_id": entry.model_id, **entry_json(entry)})
        return
    pairs = [
        ("ref", ref),
        ("display_name", entry.display_name or "-"),
        ("context_size", entry.context_size or "-"),
        ("max_output", entry.max_output or "-"),
    ]
    for kind in PRICE_KINDS:
        if kind in entry.prices:
            pairs.append((f"price.{kind}", f"{entry.price_text.get(kind) or entry.prices[kind]} {price_unit(kind)}"))
    if entry.price_sets:
        import time

        in_force = entry.set_at(time.time())
        if entry.schedule and in_force is None:
            pairs.append(
                ("prices_in_force", f"the undated prices above, until {utc_text(entry.schedule[0].valid_from)}")
            )
        for s in entry.schedule:
            label = f"from {utc_text(s.valid_from)}" + (" (in force)" if s is in_force else "")
            text = " ".join(f"{k}={s.price_text.get(k) or s.prices[k]}" for k in PRICE_KINDS if k in s.prices)
            pairs.append((f"price_set {label}", text or "(no prices: unbilled)"))
    for cap in CAPABILITIES:
        v = entry.capabilities.get(cap)
        pairs.append((f"capability.{cap}", "unset" if v is None else ("true" if v else "false")))
    if entry.supported_params is not None:
        pairs.append(("supported_params", ",".join(entry.supported_params)))
    print_fields(pairs)


@app.command("list")
def list_cmd(
    source: Annotated[
        Optional[str],
        typer.Option("--source", metavar="NAME", help="Only this source's entries.", autocompletion=complete.sources),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List catalog entries.

    Example: gwctl catalog list --source local
    """
    snap = load()
    entries = [e for e in snap.catalog.values() if source is None or e.source == source]
    if json_:
        print_json([{"ref": e.ref, "source": e.source, "model_id": e.model_id, **entry_json(e)} for e in entries])
        return

    def caps(e):
        return " ".join(("" if v else "!") + k for k, v in e.capabilities.items()) or "-"

    rows = [
        [
            e.ref,
            e.display_name or "",
            e.context_size or "",
            e.max_output or "",
            e.price_text.get("input", ""),
            e.price_text.get("output", ""),
            caps(e),
        ]
        for e in entries
    ]
    print_table(
        ["REF", "NAME", "CONTEXT", "MAX OUT", "INPUT $/TOK", "OUTPUT $/TOK", "CAPABILITIES"],
        rows,
        empty="the catalog is empty; add an entry with: gwctl catalog set SOURCE/MODEL_ID --price input=3e-6",
    )


@app.command("remove")
def remove(ref: RefArg, yes: YesOpt = False) -> None:
    """Remove a catalog entry (its model becomes unbilled).

    Example: gwctl catalog remove local/llama-3.1-8b --yes
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    _need_entry(load(), _ref(ref))
    confirm(f"Remove catalog entry {ref}? Its requests become unbilled.", yes)
    with edit() as (doc, snap):
        _need_entry(snap, ref)
        document.remove_entry(doc, ref)
    message(f"removed catalog entry {ref}")


def export_data(snap, source: str | None) -> dict:
    return {
        "schema": 1,
        "catalog": {e.ref: entry_json(e) for e in snap.catalog.values() if source is None or e.source == source},
    }


@app.command("export")
def export(
    source: Annotated[
        Optional[str],
        typer.Option("--source", metavar="NAME", help="Only this source's entries.", autocompletion=complete.sources),
    ] = None,
    format_: Annotated[str, typer.Option("--format", metavar="toml|json", help="Output format.")] = "toml",
) -> None:
    """Write the catalog to stdout as TOML or JSON (what `catalog import` reads).

    Example: gwctl catalog export --format json > prices.json
    """
    data = export_data(load(), source)
    if format_ == "json":
        print_json(data)
    elif format_ == "toml":
        import tomlkit  # ~10 ms: only for a TOML export

        doc = tomlkit.document()
        doc.add(tomlkit.comment("gwctl catalog export; import with: gwctl catalog import FILE"))
        doc.add("schema", 1)
        cat = tomlkit.table(is_super_table=True)
        for ref, entry in data["catalog"].items():
            t = tomlkit.table()
            for k, v in entry.items():
                t[k] = v
            cat[ref] = t
        doc["catalog"] = cat
        current().stdout.write(tomlkit.dumps(doc))
    else:
        fail(f"--format must be toml or json, not '{format_}'")


def read_catalog_file(path: str) -> dict:
    """The ``catalog`` table of a file in `catalog export`'s shape (TOML or JSON; '-' for stdin), unparsed."""
    text = read_input(path)
    stripped = text.lstrip()
    if path.endswith(".json") or stripped.startswith("{"):
        try:
            data = json.loads(text, parse_float=ExactFloat)
        except json.JSONDecodeError as exc:
            fail(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})")
    else:
        try:
            data = tomllib.loads(text, parse_float=ExactFloat)
        except tomllib.TOMLDecodeError as exc:
            fail(f"{path}: not valid TOML ({exc})")
    if isinstance(data, dict) and "schema" in data and "catalog" not in data:
        data = {**data, "catalog": {}}  # an export of an empty catalog
    if not isinstance(data, dict) or not isinstance(data.get("catalog"), dict):
        fail(
            f"{path} has no catalog table",
            "the file must look like gwctl catalog export's output (see gwctl catalog schema)",
        )
    extra = set(data) - {"schema", "catalog"}
    if extra:
        fail(f"{path} has unknown top-level keys: {', '.join(sorted(extra))}", "expected only schema and catalog")
    if data.get("schema", 1) != 1:
        fail(f"{path} has schema {data.get('schema')!r}; this gwctl reads schema 1")
    return data["catalog"]


def _flatten(entry: dict) -> dict:
    out = {}
    for k, v in entry.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = v2
        else:
            out[k] = v
    return out


def catalog_diff(old: dict[str, dict], new: dict[str, dict]) -> dict:
    """added / changed (field by field) / unchanged between export-shaped entries."""
    added, changed, unchanged = [], [], []
    for ref, entry in new.items():
        if ref not in old:
            added.append(ref)
            continue
        a, b = _flatten(old[ref]), _flatten(entry)
        fields = []
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                fields.append({"field": key, "old": a.get(key), "new": b.get(key)})
        if fields:
            changed.append({"ref": ref, "fields": fields})
        else:
            unchanged.append(ref)
    return {"added": added, "changed": changed, "unchanged": unchanged}


@app.command("import")
def import_cmd(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A TOML or JSON catalog file ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff; write nothing.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Import catalog entries: validate everything, print the diff, then write.

    Entries in the file replace the store's entries of the same REF; other
    entries are left alone. Nothing is written unless every entry is valid.

    Example: gwctl catalog import prices.toml --dry-run
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    raw = read_catalog_file(file)
    normalised = {}
    snap = load()
    for ref, table in raw.items():
        if ref not in snap.catalog:
            _new_ref(ref, snap)
        try:
            entry = parse_entry(ref, table)
        except SchemaError as exc:
            fail(f"{file}: {exc.message}", "nothing was imported")
        normalised[ref] = entry_json(entry)
    if dry_run:
        snap = load()
        diff = catalog_diff({r: entry_json(e) for r, e in snap.catalog.items()}, normalised)
    else:
        with edit() as (doc, snap):
            diff = catalog_diff({r: entry_json(e) for r, e in snap.catalog.items()}, normalised)
            for ref in diff["added"] + [c["ref"] for c in diff["changed"]]:
                document.replace_entry(doc, ref, normalised[ref])
    if json_:
        print_json({**diff, "dry_run": dry_run})
    else:
        out = current().stdout
        for ref in diff["added"]:
            out.write(f"+ {ref}\n")
        for c in diff["changed"]:
            out.write(f"~ {c['ref']}\n")
            for f in c["fields"]:
                old = "unset" if f["old"] is None else f["old"]
                new = "unset" if f["new"] is None else f["new"]
                out.write(f"    {f['field']}: {old} -> {new}\n")
        message(
            f"{len(diff['added'])} added, {len(diff['changed'])} changed, {len(diff['unchanged'])} unchanged"
            + (" (dry run: nothing written)" if dry_run else "")
        )
    if not dry_run:
        _lint(load(), diff["added"] + [c["ref"] for c in diff["changed"]])


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the catalog import/export file (for editors and CI).

    Example: gwctl catalog schema > gwctl-catalog.schema.json
    """
    from gwctl.catalog_schema import catalog_json_schema  # the schema builder: only for this command

    print_json(catalog_json_schema())


InputTokensOpt = Annotated[
    int, typer.Option("--input-tokens", metavar="N", help="Uncached input tokens (billed at input).")
]
OutputTokensOpt = Annotated[
    int, typer.Option("--output-tokens", metavar="N", help="Output tokens, reasoning included.")
]
CachedTokensOpt = Annotated[
    int, typer.Option("--cached-tokens", metavar="N", help="Cached input tokens (billed at cached_input).")
]
CacheReadTokensOpt = Annotated[
    int, typer.Option("--cache-read-tokens", metavar="N", help="Cache-read tokens (billed at cache_read).")
]
CacheWrite5mTokensOpt = Annotated[int, typer.Option("--cache-write-5m-tokens", metavar="N")]
CacheWrite1hTokensOpt = Annotated[int, typer.Option("--cache-write-1h-tokens", metavar="N")]
WebSearchesOpt = Annotated[int, typer.Option("--web-searches", metavar="N")]
ImagesOpt = Annotated[int, typer.Option("--images", metavar="N")]
AudioTokensOpt = Annotated[int, typer.Option("--audio-tokens", metavar="N", help="Audio input tokens.")]
RequestsOpt = Annotated[int, typer.Option("--requests", metavar="N", help="Number of requests (per_request price).")]
UsageFileOpt = Annotated[
    Optional[str],
    typer.Option(
        "--usage",
        metavar="FILE",
        help="An OpenAI chat, OpenAI Responses or Anthropic usage JSON (or a whole response); '-' for stdin.",
    ),
]


def _usage(counts: dict, usage_file: str | None, requests: int):
    """The usage to price and its shape: the count options, or the --usage file's (then only --requests)."""
    from gwctl.core.pricing import Usage, detect_usage

    for k, v in counts.items():
        if v < 0:
            fail(f"--{k.replace('_', '-')} must not be negative, got {v}")
    shape = "options"
    if usage_file is not None:
        if any(v for k, v in counts.items() if k != "requests"):
            fail("give token counts either as options or with --usage, not both")
        text = read_input(usage_file)
        try:
            shape, usage = detect_usage(json.loads(text))
        except json.JSONDecodeError as exc:
            fail(f"{usage_file}:{exc.lineno}: not valid JSON ({exc.msg})")
        except ValueError as exc:
            fail(f"{usage_file}: {exc}")
        if requests != 1:
            usage = replace(usage, requests=requests)
    else:
        usage = Usage(**counts)
    return shape, usage


def _print_cost(cost) -> None:
    """The cost's items and total as a table (or the reason it is unbilled)."""
    env = current()
    if cost.total is None:  # unbilled
        env.stdout.write(
            f"unbilled\t{cost.unbilled_reason}\n"
            if not env.stdout_is_terminal()
            else f"unbilled: {cost.unbilled_reason}\n"
        )
        return
    rows = [
        [i.kind, i.quantity, "-" if i.unit_price is None else format_price(i.unit_price), format_usd(i.amount), i.note]
        for i in cost.items
    ]
    print_table(["KIND", "QUANTITY", "UNIT USD", "AMOUNT USD", "NOTE"], rows)
    env.stdout.write(
        f"total\t{format_usd(cost.total)}\n"
        if not env.stdout_is_terminal()
        else f"total: {format_usd(cost.total)} USD\n"
    )


@app.command("price")
def price_cmd(
    ref: RefArg,
    input_tokens: InputTokensOpt = 0,
    output_tokens: OutputTokensOpt = 0,
    cached_tokens: CachedTokensOpt = 0,
    cache_read_tokens: CacheReadTokensOpt = 0,
    cache_write_5m_tokens: CacheWrite5mTokensOpt = 0,
    cache_write_1h_tokens: CacheWrite1hTokensOpt = 0,
    web_searches: WebSearchesOpt = 0,
    images: ImagesOpt = 0,
    audio_tokens: AudioTokensOpt = 0,
    usage_file: UsageFileOpt = None,
    requests: RequestsOpt = 1,
    at: Annotated[
        Optional[str],
        typer.Option("--at", metavar="TIME", help="Price at the prices in force at TIME (UTC); default: now."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Price a usage exactly (the proxy's own pricing function), or say it is unbilled.

    Example: gwctl catalog price local/llama-3.1-8b --input-tokens 800 --cached-tokens 200 --output-tokens 50
    """
    import time

    from gwctl.core.pricing import price  # the pricing engine: only for this command
    from gwctl.store.schema import valid_from

    _ref(ref)
    counts = dict(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_5m_tokens=cache_write_5m_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
        web_searches=web_searches,
        images=images,
        audio_input_tokens=audio_tokens,
        requests=requests,
    )
    when = time.time()
    if at is not None:
        try:
            when = valid_from(at, ("--at",)).timestamp()
        except SchemaError:
            fail(f"--at must be a UTC time like 2026-12-01T00:00:00Z, not '{at}'")
    shape, usage = _usage(counts, usage_file, requests)
    snap = load()
    entry = snap.catalog.get(ref)
    cost = price(entry.at(when) if entry is not None else None, usage, ref)
    if json_:
        in_force = entry.set_at(when) if entry is not None else None
        print_json(
            {
                "ref": ref,
                "usage_shape": shape,
                "usage": usage.as_dict(),
                "price_set": None if in_force is None else utc_text(in_force.valid_from),
                **cost.to_json(),
            }
        )
        return
    _print_cost(cost)
