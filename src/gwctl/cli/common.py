"""Helpers every command shares: the store, confirmation, option types."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from gwctl.cli import state

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def store_path():
    from gwctl.store.paths import store_path as resolve

    return resolve(state.STORE_OPTION)


def load():
    """The validated store snapshot (an empty one when the file is missing)."""
    from gwctl.store.file import load as _load

    return _load(store_path()).snapshot


def edit():
    from gwctl.store.file import edit as _edit

    return _edit(store_path())


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, proceed only with --yes."""
    from gwctl.errors import GwctlError

    if yes:
        return
    if not sys.stdin.isatty():
        raise GwctlError("--yes is required when not running interactively", f"re-run with --yes to confirm: {question}")
    if not typer.confirm(question, default=False, err=True):
        raise GwctlError("cancelled; nothing was changed")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A source or key name: letters, digits, '.', '_' and '-' (no '/': it splits references)."""


def read_input(path: str) -> str:
    """The text of a file the user named, or of stdin for '-'; a clear error when unreadable."""
    from pathlib import Path

    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        fail(f"cannot read {path}: it is not UTF-8 text (byte {exc.start})")


def fail(message: str, hint: str | None = None):
    from gwctl.errors import GwctlError

    raise GwctlError(message, hint)


def need_source(snapshot, name: str):
    src = snapshot.sources.get(name)
    if src is None:
        from gwctl.core.refs import close_matches

        close = close_matches(name, snapshot.sources)
        hint = f"did you mean {', '.join(close)}?" if close else "list them with: gwctl source list"
        fail(f"no source named '{name}'", hint)
    return src
