"""`gwctl limit …`: budgets and rate limits on keys, agents, sources and models."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gwctl.cli import complete
from gwctl.cli.common import ActivityOpt, JsonOpt, YesOpt, confirm, edit, fail, load
from gwctl.core import limits as lim
from gwctl.core.config import Limit, Snapshot
from gwctl.core.limits import iso
from gwctl.render import message, print_json, print_table, warn

app = typer.Typer(
    help="Budgets and rate limits on keys, agents, sources and models, enforced by gwctl proxy.\n\n"
    "Example: gwctl limit set key:ci --budget 25 --window month --rpm 60",
    no_args_is_help=True,
    rich_markup_mode=None,
)


TargetArg = Annotated[
    str,
    typer.Argument(
        help="What the limit caps: key:NAME, agent:PATH (the agent and its subagents), source:NAME or "
        "model:SOURCE/MODEL_ID.",
        autocompletion=complete.limit_targets,
    ),
]
BudgetOpt = Annotated[Optional[str], typer.Option("--budget", help="USD the target may spend per window.")]
WindowOpt = Annotated[
    Optional[str],
    typer.Option(
        "--window",
        help="The budget's UTC calendar window: day, week (from Monday), month or total.",
        autocompletion=complete.choices(lim.WINDOWS),
    ),
]
RpmOpt = Annotated[Optional[int], typer.Option("--rpm", help="Requests per minute.")]
TpmOpt = Annotated[Optional[int], typer.Option("--tpm", help="Tokens per minute (prompt estimate + output budget).")]
UnbilledOpt = Annotated[
    Optional[str],
    typer.Option(
        "--unbilled",
        help="Requests to models without a price under a budget: allow (default; counted apart) or reject.",
        autocompletion=complete.choices(lim.UNBILLED_POLICIES),
    ),
]


def check_target(snap: Snapshot, target: str) -> None:
    """Refuse a target that names nothing in the store (a model not yet listed only warns)."""
    try:
        kind, name = lim.parse_target(target)
    except ValueError as exc:
        fail(str(exc))
    source, _, model_id = name.partition("/")
    if not lim.target_exists(snap, kind, name):
        if kind == "key":
            fail(f"no key named '{name}'", "see gwctl key list, or create it with: gwctl key create " + name)
        if kind == "agent":
            fail(
                f"no agent '{name}': no route names it or one of its subagents",
                f"add a route first (gwctl route set {name} ...), or see gwctl route list",
            )
        fail(f"no source named '{source}'" + (f" (in {target})" if kind == "model" else ""), "see gwctl source list")
    if kind == "model" and model_id not in snap.sources[source].models and name not in snap.catalog:
        warn(f"{name} is not listed by source {source} yet and has no catalog entry")


def _fields(
    current: Limit | None,
    budget: str | None,
    window: str | None,
    rpm: int | None,
    tpm: int | None,
    unbilled: str | None,
) -> dict:
    """The store fields to write, each value checked; a clear error for the first bad one."""
    if budget is None and window is None and rpm is None and tpm is None and unbilled is None:
        fail("nothing to set", "give --budget USD --window WINDOW, --rpm N, --tpm N or --unbilled allow|reject")
    out: dict = {}
    if budget is not None:
        try:
            lim.parse_budget(budget)
        except ValueError as exc:
            fail(str(exc), "for example: --budget 25 or --budget 0.50")
        out["budget"] = budget.strip().removeprefix("$")
    if window is not None:
        if window not in lim.WINDOWS:
            fail(f"unknown window '{window}'", "use day, week, month or total")
        out["window"] = window
    elif budget is not None and (current is None or current.budget is None):
        fail("a budget needs a window", "add --window day, week, month or total")
    if window is not None and budget is None and (current is None or current.budget is None):
        fail("--window applies to a budget, and this limit has none", "add --budget USD")
    for flag, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None:
            if value < 1:
                fail(f"--{flag} must be at least 1; got {value}", "remove the limit with gwctl limit remove instead")
            out[flag] = value
    if unbilled is not None:
        if unbilled not in lim.UNBILLED_POLICIES:
            fail(f"unknown --unbilled policy '{unbilled}'", "use allow or reject")
        out["unbilled"] = unbilled
    return out


def describe(limit: Limit) -> str:
    parts = []
    if limit.budget is not None:
        parts.append(
            f"budget ${limit.budget_text} per {limit.window}"
            if limit.window != "total"
            else f"budget ${limit.budget_text} in total"
        )
        if limit.unbilled == "reject":
            parts.append("unbilled requests refused")
    if limit.rpm is not None:
        parts.append(f"{limit.rpm} request{'' if limit.rpm == 1 else 's'}/min")
    if limit.tpm is not None:
        parts.append(f"{limit.tpm} token{'' if limit.tpm == 1 else 's'}/min")
    return ", ".join(parts) or "nothing"


@app.command("set")
def set_cmd(
    target: TargetArg,
    budget: BudgetOpt = None,
    window: WindowOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    unbilled: UnbilledOpt = None,
) -> None:
    """Set (or change) the limit on TARGET; a running proxy applies it within seconds.

    Example: gwctl limit set agent:triage --budget 100 --window day --unbilled reject
    """
    from gwctl.store import document  # tomlkit: only commands that write the store load it

    with edit() as (doc, snap):
        check_target(snap, target)
        current = snap.limits.get(target)
        document.put_limit(doc, target, _fields(current, budget, window, rpm, tpm, unbilled))
    limit = load().limits[target]
    message(f"limit on {target}: {describe(limit)}")


def limit_json(limit: Limit) -> dict:
    return {
        "target": limit.target,
        "budget": limit.budget_text,
        "window": limit.window,
        "rpm": limit.rpm,
        "tpm": limit.tpm,
        "unbilled": limit.unbilled,
    }


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List the limits, in the store's order.

    Example: gwctl limit list --json
    """
    limits = list(load().limits.values())
    if json_:
        print_json([limit_json(x) for x in limits])
        return
    print_table(
        ["TARGET", "BUDGET", "WINDOW", "RPM", "TPM", "UNBILLED"],
        [
            [
                x.target,
                "" if x.budget is None else "$" + (x.budget_text or ""),
                x.window or "",
                x.rpm or "",
                x.tpm or "",
                x.unbilled if x.budget is not None else "",
            ]
            for x in limits
        ],
        empty="no limits; set one with: gwctl limit set TARGET --budget USD --window month",
    )


@app.command("remove")
def remove_cmd(target: TargetArg, yes: YesOpt = False) -> None:
    """Remove the limit on TARGET.

    Example: gwctl limit remove key:ci --yes
    """
    from gwctl.store import document

    if target not in load().limits:
        fail(f"no limit on '{target}'", "see gwctl limit list")
    confirm(f"Remove the limit on {target}?", yes)
    with edit() as (doc, _snap):
        document.remove_limit(doc, target)
    message(f"removed the limit on {target}")


def _money(value) -> str:
    return "" if value is None else lim.usd_text(value)


def _rate(used: int, cap: int | None) -> str:
    return "" if cap is None else f"{used}/{cap}"


@app.command("status")
def status_cmd(
    target: Annotated[
        Optional[str], typer.Argument(help="Only this target's limit.", autocompletion=complete.limit_targets)
    ] = None,
    activity: ActivityOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Each limit now: its window and reset (UTC), spent, reserved by running proxies, left; the minute's
    requests and tokens.

    Example: gwctl limit status key:ci --json
    """
    import time

    from gwctl.activity import resolve_dsn
    from gwctl.activity.limit_status import limit_reports_or_fresh
    from gwctl.context import current
    from gwctl.store.paths import default_activity_path

    snap = load()
    limits = list(snap.limits.values())
    if target is not None:
        if target not in snap.limits:
            fail(f"no limit on '{target}'", "see gwctl limit list")
        limits = [snap.limits[target]]
    dsn = resolve_dsn(activity, current().environ, default_activity_path())
    reports = limit_reports_or_fresh(dsn, limits, time.time(), warn) if limits else []
    if json_:
        print_json([r.to_json() for r in reports])
        return
    rows = []
    for r in reports:
        s, x = r.state, r.state.limit
        rows.append(
            [
                x.target,
                _money(x.budget),
                x.window or "",
                _money(s.spent) if x.budget is not None else "",
                _money(s.reserved) if x.budget is not None else "",
                _money(s.left),
                (iso(s.window_end) or "never") if x.budget is not None else "",
                s.unbilled if x.budget is not None else "",
                _rate(s.requests, x.rpm),
                _rate(s.tokens, x.tpm),
            ]
        )
    print_table(
        ["TARGET", "BUDGET", "WINDOW", "SPENT", "RESERVED", "LEFT", "RESETS", "UNBILLED", "RPM", "TPM"],
        rows,
        empty="no limits; set one with: gwctl limit set TARGET --budget USD --window month",
    )
