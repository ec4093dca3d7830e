"""`gwctl key …`: the gateway keys clients use to call `gwctl proxy`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from gwctl.cli import complete
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
    agent: Annotated[
        Optional[list[str]],
        typer.Option("--agent", help="Only this agent and its subagents may use the key (repeatable)."),
    ] = None,
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", help="Only models matching this glob, as SOURCE/MODEL_ID or MODEL_ID (repeatable)."),
    ] = None,
    expires: Annotated[
        Optional[str], typer.Option("--expires", help="The key stops working after this long: 12h, 30d, 2w.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create a key and print it once; only its hash is stored.

    Example: gwctl key create triage-bot --agent triage --model 'openai/gpt-4o*' --expires 30d
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if not NAME_RE.match(name):
        fail(f"'{name}' is not a valid key name", "use letters, digits, '.', '_' and '-'")
    scope = _scope(agent or [], model or [], expires)
    key = keys.generate()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    with edit() as (doc, snap):
        if name in snap.keys:
            fail(
                f"a key named '{name}' already exists",
                f"revoke it first (gwctl key revoke {name}) or pick another name",
            )
        fields = {"hash": keys.digest(key), "prefix": keys.shown_prefix(key), "created": created, **scope}
        document.put_key(doc, name, fields)
    if json_:
        print_json(
            {
                "name": name,
                "key": key,
                "prefix": keys.shown_prefix(key),
                "created": created,
                "agents": scope.get("agents", []),
                "models": scope.get("models", []),
                "expires": scope.get("expires"),
            }
        )
    else:
        current().stdout.write(key + "\n")
        message(f"created key {name}; copy it now, it is not shown again")


def _scope(agents: list[str], models: list[str], expires: str | None) -> dict:
    """The key's scope fields for the store, each checked."""
    from datetime import timedelta

    from gwctl.activity.query import parse_duration
    from gwctl.core.refs import AGENT_RE

    out: dict = {}
    for a in agents:
        if not AGENT_RE.match(a):
            fail(f"'{a}' is not an agent path", "use triage or triage/summarizer: letters, digits, '.', '_', '-'")
    for m in models:
        if not m.strip():
            fail("--model needs a glob, like 'openai/gpt-4o*'")
    if agents:
        out["agents"] = list(dict.fromkeys(agents))
    if models:
        out["models"] = list(dict.fromkeys(models))
    if expires is not None:
        try:
            span: timedelta = parse_duration(expires)
        except ValueError as exc:
            fail(f"--expires: {exc}")
        try:
            when = datetime.now(timezone.utc).replace(microsecond=0) + span
        except OverflowError:
            fail(f"--expires: invalid duration {expires!r}: it reaches past the year 9999", "give a shorter --expires")
        out["expires"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List keys (name, prefix, creation time; never the key).

    Example: gwctl key list
    """
    snap = load()
    items = [
        {
            "name": k.name,
            "prefix": k.prefix,
            "created": k.created,
            "agents": list(k.agents),
            "models": list(k.models),
            "expires": k.expires,
        }
        for k in snap.keys.values()
    ]
    if json_:
        print_json(items)
        return
    print_table(
        ["NAME", "PREFIX", "CREATED", "AGENTS", "MODELS", "EXPIRES"],
        [
            [
                i["name"],
                i["prefix"] + "…",
                i["created"],
                ",".join(i["agents"]),
                ",".join(i["models"]),
                i["expires"] or "",
            ]
            for i in items
        ],
        empty="no keys; create one with: gwctl key create NAME",
    )


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key to revoke.", autocompletion=complete.keys)], yes: YesOpt = False
) -> None:
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
        dropped = document.remove_limit(doc, "key:" + name)
    message(f"revoked key {name}" + (" and removed its limit" if dropped else ""))
