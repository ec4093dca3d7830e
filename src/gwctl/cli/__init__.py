"""The command tree and the one error boundary.

Command modules import only typer and the standard library at import time;
everything heavy (rich, httpx, tomlkit, the server) is imported inside the
command that needs it, so ``gwctl --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from gwctl import __version__
from gwctl.cli import state

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
        sys.stdout.write(f"gwctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    store: Annotated[
        Optional[str],
        typer.Option("--store", metavar="PATH", help="The store file (default: $GWCTL_STORE, else the user config dir's gwctl/gwctl.toml)."),
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    state.STORE_OPTION = store


# Command groups are imported only when used: `gwctl --help` lists them from
# this table, `gwctl source add` imports just gwctl.cli.source.
GROUPS: dict[str, tuple[str, str]] = {
    "source": ("gwctl.cli.source", "Add, edit, test and refresh upstream sources."),
    "model": ("gwctl.cli.model", "List, enable and disable discovered models; the organisation default."),
    "catalog": ("gwctl.cli.catalog", "The custom model catalog: prices, limits, capabilities, pricing."),
    "route": ("gwctl.cli.route", "Agent routes, the fallback source, and the routing dry-run."),
    "key": ("gwctl.cli.key", "Create, list and revoke gateway keys."),
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
        import importlib

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


def main(argv: list[str] | None = None) -> int:
    """Run gwctl; every user mistake becomes one sentence on stderr and an exit code."""
    import click

    from gwctl.errors import GwctlError

    store_file = sys.modules.get("gwctl.store.file")  # not imported yet: nothing was warned about
    if store_file is not None:
        store_file.reset_warnings()  # a warning about the store is given once per command
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="gwctl", standalone_mode=False)
    except GwctlError as exc:
        from gwctl.render import error

        error(exc.message, exc.hint)
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        if os.environ.get("GWCTL_DEBUG"):
            raise
        import traceback

        sys.stderr.write("error: gwctl hit an internal error (this is a bug; please report it)\n")
        sys.stderr.write(traceback.format_exc().splitlines()[-1] + "\n")
        sys.stderr.write("hint: set GWCTL_DEBUG=1 to see the full traceback\n")
        return 70
    return rv if isinstance(rv, int) else 0
