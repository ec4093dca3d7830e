"""Helpers every command shares: the store, confirmation, option types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from gwctl.context import current
from gwctl.core.refs import close_matches
from gwctl.errors import GwctlError
from gwctl.store import file as store_file
from gwctl.store import paths

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ActivityOpt = Annotated[
    Optional[str],
    typer.Option(
        "--activity",
        metavar="DSN",
        help="The log: sqlite:///path, a path, or postgresql://… (default: $GWCTL_ACTIVITY, else the user data dir).",
    ),
]


def store_path() -> Path:
    """The store this invocation uses: --store, else $GWCTL_STORE, else the user config dir's."""
    env = current()
    return paths.store_path(env.store_option, env.environ)


def load():
    """The validated store snapshot (an empty one when the file is missing)."""
    return store_file.load(store_path()).snapshot


def edit():
    return store_file.edit(store_path())


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, proceed only with --yes."""
    if yes:
        return
    if not current().stdin_is_tty():
        raise GwctlError(
            "--yes is required when not running interactively", f"re-run with --yes to confirm: {question}"
        )
    if not typer.confirm(question, default=False, err=True):
        raise GwctlError("cancelled; nothing was changed")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A source or key name: letters, digits, '.', '_' and '-' (no '/': it splits references)."""


def read_input(path: str) -> str:
    """The text of a file the user named, or of stdin for '-'; a clear error when unreadable."""
    try:
        return current().stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        fail(f"cannot read {path}: it is not UTF-8 text (byte {exc.start})")


def fail(message: str, hint: str | None = None) -> NoReturn:
    raise GwctlError(message, hint)


def check_seconds(label: str, value: float | None) -> None:
    """A timeout option: a positive number of seconds up to a week (NaN, infinity or a huge value crashed the
    HTTP client with an OverflowError)."""
    from gwctl.store.schema import MAX_TIMEOUT_S

    if value is not None and not 0 < value <= MAX_TIMEOUT_S:  # NaN fails both comparisons
        fail(f"{label} must be a positive number of seconds up to {MAX_TIMEOUT_S:g} (a week), got {value:g}")


def no_control_characters(what: str, text: str, hint: str | None = None) -> None:
    """Refuse ``text`` (named ``what``) holding a control character: it would reach the terminal raw and break
    the tab-separated output, and no upstream names a model that way."""
    from gwctl.core.text import printable

    if printable(text, 0) != text:
        fail(f"{what} {printable(text)} has a control character (a newline, tab or escape)", hint)


def need_source(snapshot, name: str):
    src = snapshot.sources.get(name)
    if src is None:
        close = close_matches(name, snapshot.sources)
        hint = f"did you mean {', '.join(close)}?" if close else "list them with: gwctl source list"
        fail(f"no source named '{name}'", hint)
    return src
