"""Exit codes and the one error type every user-facing failure raises.

The CLI boundary (``gwctl.cli.main``) turns a :class:`GwctlError` into one
sentence on stderr plus an optional hint, and exits with its code. Anything
else escaping is a bug and shows a traceback only with ``GWCTL_DEBUG=1``.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1  # the operation failed or was refused
    USAGE = 2  # the command line itself was wrong
    PARTIAL = 3  # refresh --all: some sources failed, others succeeded


class GwctlError(Exception):
    """A user-facing failure: what went wrong, and how to fix it."""

    def __init__(self, message: str, hint: str | None = None, code: int = Exit.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = int(code)

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class StoreError(GwctlError):
    """The store could not be read, parsed or validated; it is never overwritten."""
