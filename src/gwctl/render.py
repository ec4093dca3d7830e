"""Output: JSON documents, tables on a terminal, tab-separated lines otherwise.

Data goes to stdout; messages (success chatter, warnings, errors) to stderr.
Secrets are masked here, at display time, unless the caller asked to reveal.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable, Sequence

import orjson

from gwctl.context import current
from gwctl.core.headers import mask_secret
from gwctl.core.urls import redact_url


def stdout_is_tty() -> bool:
    """Whether output is for a person: stdout is a terminal, or the invocation asked for tables."""
    return current().stdout_is_tty()


def stderr_is_tty() -> bool:
    return current().stderr_is_tty()


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "items"):
        return dict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any) -> str:
    try:
        return orjson.dumps(
            obj,
            default=_default,
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS,
        ).decode()
    except TypeError:  # e.g. an int beyond 64 bits: the slower encoder handles it
        return json.dumps(obj, indent=2, default=_default, ensure_ascii=False)


def print_json(obj: Any) -> None:
    out = current().stdout
    out.write(dumps(obj) + "\n")
    out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, empty: str | None = None
) -> None:
    """A rich table on a terminal; tab-separated lines (no header) otherwise. No rows: ``empty`` on stderr,
    on a pipe too (as kubectl says "No resources found"), so an empty answer is not mistaken for a silent one."""
    rows = [[_cell(v) for v in row] for row in rows]
    env = current()
    if not rows and empty:
        message(empty)
        return
    if not env.stdout_is_tty():
        for row in rows:
            env.stdout.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        return
    # rich is imported only when a table is shown on a terminal (it costs ~40 ms)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        # plain Text: a cell is shown as it is, never read as rich markup ("[link=…]" in a model name stays text)
        table.add_row(*(Text(c) for c in row), end_section=False)
    Console(file=env.stdout, highlight=False, width=160 if env.force_tables else None).print(table)


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """``key: value`` lines (terminal) or ``key<TAB>value`` lines (pipe)."""
    pairs = [(k, _cell(v)) for k, v in pairs]
    env = current()
    if env.stdout_is_tty():
        width = max((len(k) for k, _ in pairs), default=0)
        for k, v in pairs:
            env.stdout.write(f"{k + ':':<{width + 1}} {v}\n")
    else:
        for k, v in pairs:
            env.stdout.write(f"{k}\t{v}\n")


def message(text: str) -> None:
    """Success chatter and progress, on stderr."""
    current().stderr.write(text + "\n")


def warn(text: str) -> None:
    current().stderr.write(f"warning: {text}\n")


def error(text: str, hint: str | None = None) -> None:
    err = current().stderr
    err.write(f"error: {text}\n")
    if hint:
        err.write(f"hint: {hint}\n")


def mask(value: str | None, reveal: bool = False) -> str:
    if not value:
        return ""
    if reveal:
        return value
    return mask_secret(value)


def url(value: str | None, reveal: bool = False) -> str | None:
    """A URL for display: its user info (``user:secret@``) masked as ``***@`` unless revealed."""
    if value is None or reveal:
        return value
    return redact_url(value)
