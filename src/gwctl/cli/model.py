"""`gwctl model …`: discovered models, enabling them, the organisation default."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gwctl.cli import complete
from gwctl.cli.common import JsonOpt, edit, fail, load, need_source
from gwctl.context import current
from gwctl.core.refs import close_matches, is_glob, match_refs, split_ref
from gwctl.render import message, print_json, print_table

app = typer.Typer(
    help="List, enable and disable discovered models; set the organisation default.\n\nExample: gwctl model enable 'local/llama-*'",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def all_refs(snap) -> list[str]:
    return [f"{s.name}/{m}" for s in snap.sources.values() for m in s.models]


@app.command("list")
def list_cmd(
    source: Annotated[
        Optional[str],
        typer.Option("--source", metavar="NAME", help="Only this source's models.", autocompletion=complete.sources),
    ] = None,
    enabled: Annotated[bool, typer.Option("--enabled", help="Only enabled models.")] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="Only disabled models.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List discovered models as SOURCE/MODEL_ID references.

    Example: gwctl model list --source local --enabled
    """
    if enabled and disabled:
        fail("give --enabled or --disabled, not both")
    snap = load()
    sources = [need_source(snap, source)] if source else snap.sources.values()
    default = snap.settings.default_model
    catalog = snap.catalog
    items = []
    for s in sources:
        for m, on in s.models.items():
            if (enabled and not on) or (disabled and on):
                continue
            ref = f"{s.name}/{m}"
            items.append((ref, s.name, m, on, ref in catalog, ref == default))
    if json_:
        print_json(
            [
                {"ref": r, "source": s, "id": m, "enabled": on, "in_catalog": c, "default": d}
                for r, s, m, on, c, d in items
            ]
        )
        return
    print_table(
        ["MODEL", "ENABLED", "CATALOG", "DEFAULT"],
        [[r, on, c, "*" if d else ""] for r, _, _, on, c, d in items],
        empty="no models; discover them with: gwctl source refresh NAME",
    )


def _resolve(snap, patterns: list[str]) -> list[str]:
    """Every ref the patterns name; all-or-nothing, unknown ones listed with close matches."""
    refs = all_refs(snap)
    chosen: dict[str, None] = {}
    for pattern in patterns:
        if not is_glob(pattern):
            try:
                src, _ = split_ref(pattern)
            except ValueError as exc:
                fail(str(exc))
            need_source(snap, src)
        hits = match_refs(pattern, refs)
        if not hits:
            close = close_matches(pattern, refs)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else "see gwctl model list, or discover models with gwctl source refresh"
            )
            what = "matches no model" if is_glob(pattern) else "is not a known model"
            fail(f"{pattern} {what}", hint)
        for h in hits:
            chosen[h] = None
    return list(chosen)


def _set_enabled(patterns: list[str], value: bool) -> None:
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    with edit() as (doc, snap):
        refs = _resolve(snap, patterns)
        by_source: dict[str, dict[str, bool]] = {}
        for ref in refs:
            src, mid = split_ref(ref)
            by_source.setdefault(src, dict(snap.sources[src].models))[mid] = value
        for src, models in by_source.items():
            document.set_models(doc, src, models)
    verb = "enabled" if value else "disabled"
    message(
        f"{verb} {len(refs)} model{'s' if len(refs) != 1 else ''}: "
        + ", ".join(refs[:10])
        + (" …" if len(refs) > 10 else "")
    )


@app.command("enable")
def enable(
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="REF_OR_GLOB...",
            help="SOURCE/MODEL_ID or a shell glob like 'local/llama-*'.",
            autocompletion=complete.refs,
        ),
    ],
) -> None:
    """Enable models (quote globs so the shell leaves them alone).

    Example: gwctl model enable 'local/llama-*' local/qwen/qwen3
    """
    _set_enabled(refs, True)


@app.command("disable")
def disable(
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="REF_OR_GLOB...",
            help="SOURCE/MODEL_ID or a shell glob like 'local/llama-*'.",
            autocompletion=complete.refs,
        ),
    ],
) -> None:
    """Disable models.

    Example: gwctl model disable 'local/*-preview'
    """
    _set_enabled(refs, False)


@app.command("default")
def default(
    ref: Annotated[
        Optional[str],
        typer.Argument(
            metavar="[REF]",
            help="Set the organisation default model to this SOURCE/MODEL_ID.",
            autocompletion=complete.refs,
        ),
    ] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Clear the organisation default.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Show or set the organisation default model.

    Example: gwctl model default local/llama-3.1-8b
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if ref is None and not unset:
        default_model = load().settings.default_model
        if json_:
            print_json({"default_model": default_model})
        elif default_model:
            current().stdout.write(default_model + "\n")
        else:
            message("no default model; set one with: gwctl model default SOURCE/MODEL_ID")
        return
    if ref is not None and unset:
        fail("give a REF or --unset, not both")
    with edit() as (doc, snap):
        if ref is not None:
            hit = _resolve(snap, [ref])
            if len(hit) != 1:
                fail(f"{ref} names {len(hit)} models; the default must be exactly one")
            ref = hit[0]
            src, _, mid = ref.partition("/")
            if not snap.sources[src].models[mid]:
                fail(f"{ref} is disabled", f"enable it first: gwctl model enable {ref}")
        document.set_setting(doc, "default_model", ref)
    message(f"default model: {ref}" if ref else "default model unset")


@app.command("auto-enable")
def auto_enable(
    value: Annotated[
        Optional[str], typer.Argument(metavar="[on|off]", help="Enable newly discovered models automatically?")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show or set whether a refresh enables newly discovered models (default: on).

    Example: gwctl model auto-enable off
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if value is None:
        on = load().settings.auto_enable_models
        if json_:
            print_json({"auto_enable_models": on})
        else:
            current().stdout.write(("on" if on else "off") + "\n")
        return
    v = value.strip().lower()
    if v not in ("on", "off", "true", "false", "yes", "no"):
        fail(f"'{value}' is not on or off")
    on = v in ("on", "true", "yes")
    with edit() as (doc, _):
        document.set_setting(doc, "auto_enable_models", on)
    message(f"newly discovered models will be {'enabled' if on else 'disabled'}")
