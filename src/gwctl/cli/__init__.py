"""The command tree and the one error boundary.

This module imports typer, click, the standard library and two small gwctl
modules (context, errors): command groups are imported when they run (see
``GROUPS``), and within them the heavy stacks (rich, httpx, tomlkit, the
server) are imported by the command that needs them, so ``gwctl --help``
stays fast.

Every invocation runs against one :class:`gwctl.context.Env` (streams,
environment, --store, output mode) that :func:`main` makes current for the
call; nothing about an invocation is kept in module globals.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Optional

import click
import typer

from gwctl import __version__
from gwctl.context import Env, current
from gwctl.errors import GwctlError

# gwctl prints plain click help (fast, and what scripts and `less` expect);
# typer would otherwise import rich for every --help and escape "[required]".
typer.core.HAS_RICH = False

app = typer.Typer(
    name="gwctl",
    help=(
        "Administer an LLM gateway from one TOML file, dry-run its routing, and run it.\n\n"
        "Example: gwctl source add local --base-url http://127.0.0.1:8000/v1 --auth-env VLLM_KEY --test"
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        current().stdout.write(f"gwctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    store: Annotated[
        Optional[str],
        typer.Option(
            "--store",
            metavar="PATH",
            help="The store file (default: $GWCTL_STORE, else the user config dir's gwctl/gwctl.toml).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    current().store_option = store


# Command groups are imported only when used: `gwctl --help` lists them from
# this table, `gwctl source add` imports just gwctl.cli.source.
GROUPS: dict[str, tuple[str, str]] = {
    "source": ("gwctl.cli.source", "Add, edit, test and refresh upstream sources."),
    "model": ("gwctl.cli.model", "List, enable and disable discovered models; the organisation default."),
    "catalog": ("gwctl.cli.catalog", "The custom model catalog: prices, limits, capabilities, pricing."),
    "route": ("gwctl.cli.route", "Agent routes, the fallback source, and the routing dry-run."),
    "key": ("gwctl.cli.key", "Create, list and revoke gateway keys."),
    "limit": ("gwctl.cli.limit", "Budgets and rate limits on keys, agents, sources and models."),
    "proxy": ("gwctl.cli.proxy", "Run the gateway (OpenAI- and Anthropic-compatible proxy)."),
    "activity": ("gwctl.cli.activity", "Read the activity log: requests, tokens, exact cost."),
    "validate": ("gwctl.cli.misc", "Check the whole store; exit 1 on problems."),
    "paths": ("gwctl.cli.misc", "Print where gwctl keeps the store and the activity log."),
    "demo": ("gwctl.cli.misc", "Run gwctl end to end against a local stand-in upstream."),
}


class _LazyGroup(typer.core.TyperGroup):
    def list_commands(self, ctx):
        return list(GROUPS)

    def get_command(self, ctx, name):
        if name not in GROUPS:
            return None
        module = importlib.import_module(GROUPS[name][0])
        if hasattr(module, "app"):
            cmd = typer.main.get_command(module.app)
        else:
            cmd = typer.main.get_command(getattr(module, "single_app")(name))
        cmd.name = name
        return cmd

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in GROUPS.items()])


app.info.cls = _LazyGroup


def main(argv: list[str] | None = None, env: Env | None = None) -> int:
    """Run gwctl once against ``env`` (default: this process's streams and environment).

    Every user mistake becomes one sentence on stderr and an exit code. Tests
    and `gwctl demo` pass an :meth:`Env.captured` to run it in-process.
    """
    env = Env() if env is None else env
    store_file = sys.modules.get("gwctl.store.file")  # not imported yet: nothing was warned about
    if store_file is not None:
        store_file.reset_warnings()  # a warning about the store is given once per command
    with env.active():
        return _run(argv, env)


def _run(argv: list[str] | None, env: Env) -> int:
    """The error boundary around one invocation."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="gwctl", standalone_mode=False)
    except GwctlError as exc:
        from gwctl.render import error  # only on an error: --help does not load the renderer

        error(exc.message, exc.hint)
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        env.stderr.write("aborted\n")
        return 1
    except click.ClickException as exc:
        exc.show(file=env.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        env.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        if env.environ.get("GWCTL_DEBUG"):
            raise
        import traceback  # only for an internal error

        env.stderr.write("error: gwctl hit an internal error (this is a bug; please report it)\n")
        env.stderr.write(traceback.format_exc().splitlines()[-1] + "\n")
        env.stderr.write("hint: set GWCTL_DEBUG=1 to see the full traceback\n")
        return 70
    return rv if isinstance(rv, int) else 0
