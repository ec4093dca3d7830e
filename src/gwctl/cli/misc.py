"""Top-level commands: validate, paths, demo."""

from __future__ import annotations

from typing import Annotated, Any, Callable

import typer

from gwctl.cli.common import JsonOpt, store_path
from gwctl.context import current
from gwctl.core.validate import validate as check
from gwctl.errors import StoreError
from gwctl.render import print_fields, print_json
from gwctl.store.file import load
from gwctl.store.paths import ACTIVITY_ENV, default_activity_path


def single_app(name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    commands: dict[str, Callable[..., Any]] = {"validate": validate, "paths": paths, "demo": demo}
    app.command(name)(commands[name])
    return app


def validate(json_: JsonOpt = False) -> None:
    """Check the whole store; exit 1 when it has errors (warnings never fail).

    Example: gwctl validate --json
    """
    env = current()
    path = store_path()
    try:
        loaded = load(path)
    except StoreError as exc:
        if json_:
            print_json(
                {
                    "store": str(path),
                    "ok": False,
                    "errors": 1,
                    "warnings": 0,
                    "problems": [{"level": "error", "where": "", "message": exc.message, "hint": exc.hint or ""}],
                }
            )
            raise typer.Exit(1)
        raise
    problems = check(loaded.snapshot, frozenset(env.environ))
    errors = sum(1 for p in problems if p.level == "error")
    warnings = len(problems) - errors
    if json_:
        print_json(
            {
                "store": str(path),
                "exists": loaded.text is not None,
                "ok": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "problems": [p.to_json() for p in problems],
            }
        )
    else:
        for p in problems:
            env.stderr.write(f"{p.level}: {p.where}: {p.message}\n")
            if p.hint:
                env.stderr.write(f"  hint: {p.hint}\n")
        s = loaded.snapshot
        summary = (
            f"{path}: {len(s.sources)} sources, {sum(len(x.models) for x in s.sources.values())} models, "
            f"{len(s.catalog)} catalog entries, {len(s.routes)} routes, {len(s.keys)} keys, {len(s.limits)} limits; "
            f"{errors} errors, {warnings} warnings"
        )
        env.stdout.write(("ok: " if errors == 0 else "invalid: ") + summary + "\n")
    if errors:
        raise typer.Exit(1)


def paths(json_: JsonOpt = False) -> None:
    """Print where gwctl keeps the store and the activity log.

    Example: gwctl paths
    """
    activity = current().environ.get(ACTIVITY_ENV) or str(default_activity_path())
    data = {"store": str(store_path()), "activity": activity}
    if json_:
        print_json(data)
    else:
        print_fields(data.items())


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's temporary store and print its path.")] = False,
    proxy: Annotated[
        bool,
        typer.Option(
            "--proxy/--no-proxy", help="Also start gwctl proxy and send requests through it with the OpenAI SDK."
        ),
    ] = True,
) -> None:
    """Run gwctl end to end against a local stand-in upstream (no network needed).

    Starts an OpenAI-compatible stand-in on 127.0.0.1, then runs: source add
    --test, source refresh, model list, catalog set, route set, route dry-run,
    and (with --proxy) a request through gwctl proxy and activity summary.
    Everything happens in a temporary store; your own store is not touched.

    Example: gwctl demo
    """
    from gwctl.cli import main  # the parent package (a module-level import would be a cycle); handed to the demo
    from gwctl.demo import run_demo  # the stand-in server and httpx: only for `gwctl demo`

    raise typer.Exit(run_demo(main, current(), keep=keep, with_proxy=proxy))
