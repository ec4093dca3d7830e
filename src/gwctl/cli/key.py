"""`gwctl key …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="key commands.", no_args_is_help=True)
