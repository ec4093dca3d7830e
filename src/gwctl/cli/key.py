"""`gwctl key …`: the gateway keys clients use to call `gwctl proxy`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer

from gwctl.cli.common import NAME_RE, JsonOpt, YesOpt, confirm, edit, fail, load
from gwctl.context import current
from gwctl.core import keys
from gwctl.render import message, print_json, print_table

app = typer.Typer(
    help="Create, list and revoke gateway keys (stored only as hashes).\n\nExample: gwctl key create ci --json",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for who uses the key (shown in the activity log).")],
    json_: JsonOpt = False,
) -> None:
    """Create a key and print it once; only its hash is stored.

    Example: gwctl key create triage-bot
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if not NAME_RE.match(name):
        fail(f"'{name}' is not a valid key name", "use letters, digits, '.', '_' and '-'")
    key = keys.generate()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    with edit() as (doc, snap):
        if name in snap.keys:
            fail(
                f"a key named '{name}' already exists",
                f"revoke it first (gwctl key revoke {name}) or pick another name",
            )
        document.put_key(doc, name, {"hash": keys.digest(key), "prefix": keys.shown_prefix(key), "created": created})
    if json_:
        print_json({"name": name, "key": key, "prefix": keys.shown_prefix(key), "created": created})
    else:
        current().stdout.write(key + "\n")
        message(f"created key {name}; copy it now, it is not shown again")


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List keys (name, prefix, creation time; never the key).

    Example: gwctl key list
    """
    snap = load()
    items = [{"name": k.name, "prefix": k.prefix, "created": k.created} for k in snap.keys.values()]
    if json_:
        print_json(items)
        return
    print_table(
        ["NAME", "PREFIX", "CREATED"],
        [[i["name"], i["prefix"] + "…", i["created"]] for i in items],
        empty="no keys; create one with: gwctl key create NAME",
    )


@app.command("revoke")
def revoke(name: str, yes: YesOpt = False) -> None:
    """Revoke a key; a running proxy refuses it within seconds.

    Example: gwctl key revoke triage-bot --yes
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if name not in load().keys:
        fail(f"no key named '{name}'", "see gwctl key list")
    confirm(f"Revoke key {name}? Clients using it get 401.", yes)
    with edit() as (doc, snap):
        if name not in snap.keys:
            fail(f"no key named '{name}'")
        document.remove_key(doc, name)
    message(f"revoked key {name}")
