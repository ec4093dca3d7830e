"""`gwctl activity …`."""

from __future__ import annotations

import typer

app = typer.Typer(help="activity commands.", no_args_is_help=True)
