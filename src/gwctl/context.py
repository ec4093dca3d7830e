"""One CLI invocation's surroundings: streams, environment, store option, output mode.

In the spirit of httpie's ``Environment``: the entry point (``gwctl.cli.main``)
builds one ``Env`` (or is given one by a test or by ``gwctl demo``) and makes it
the current one for the length of that call only; commands and ``gwctl.render``
read it with :func:`current` instead of ``sys.stdout``, ``os.environ`` or
module globals. Nothing set here outlives the invocation.

This module imports only the standard library, so ``gwctl.render``,
``gwctl.demo`` and ``gwctl.cli`` can all depend on it without a cycle.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Mapping, TextIO


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Input(io.StringIO):
    """Text given to a captured invocation as its stdin: never a terminal."""

    def isatty(self) -> bool:
        return False


@dataclass
class Env:
    """What one gwctl invocation reads from and writes to."""

    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    store_option: str | None = None
    """--store, set by the root callback of this invocation."""
    force_tables: bool = False
    """Human output (tables, ``key: value``) even when stdout is not a terminal (`gwctl demo`)."""

    @classmethod
    def captured(cls, input: str | None = None, **kwargs) -> Env:
        """An Env whose stdout and stderr are kept in memory and whose stdin is ``input`` (tests, the demo)."""
        return cls(stdin=_Input(input or ""), stdout=io.StringIO(), stderr=io.StringIO(), **kwargs)

    def stdout_is_tty(self) -> bool:
        """Whether output is for a person: stdout is a terminal, or ``force_tables``."""
        return self.force_tables or _isatty(self.stdout)

    def stdout_is_terminal(self) -> bool:
        """Whether stdout really is a terminal (``force_tables`` aside)."""
        return _isatty(self.stdout)

    def stderr_is_tty(self) -> bool:
        return _isatty(self.stderr)

    def stdin_is_tty(self) -> bool:
        return _isatty(self.stdin)

    @contextlib.contextmanager
    def active(self) -> Iterator[Env]:
        """Make this the current Env for the block (one invocation), then restore the previous one.

        Code gwctl does not own (click's help and usage errors, prompts, the
        store's one-line warnings) writes to ``sys.stdout``/``sys.stderr``: for the
        block those are this Env's streams too, so a captured run sees all of it.
        """
        token = _CURRENT.set(self)
        try:
            with contextlib.ExitStack() as stack:
                if self.stdout is not sys.stdout:
                    stack.enter_context(contextlib.redirect_stdout(self.stdout))
                if self.stderr is not sys.stderr:
                    stack.enter_context(contextlib.redirect_stderr(self.stderr))
                if self.stdin is not sys.stdin:
                    stack.enter_context(_redirect_stdin(self.stdin))
                yield self
        finally:
            _CURRENT.reset(token)


@contextlib.contextmanager
def _redirect_stdin(stream: TextIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


_CURRENT: ContextVar[Env] = ContextVar("gwctl_env")


def current() -> Env:
    """The running invocation's Env; outside one, the process's own streams and environment."""
    env = _CURRENT.get(None)
    return env if env is not None else Env()
