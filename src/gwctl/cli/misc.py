"""Top-level commands: validate, demo, paths."""

from __future__ import annotations


def register(app) -> None:
    pass
