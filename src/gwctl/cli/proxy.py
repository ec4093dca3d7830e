"""`gwctl proxy`."""

from __future__ import annotations


def register(app) -> None:
    pass
