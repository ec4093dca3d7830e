"""Model references (``SOURCE/MODEL_ID``) and shell-style globs over them.

A reference splits at the *first* ``/``: model ids may themselves contain
``/`` (``local/qwen/qwen3`` is model ``qwen/qwen3`` of source ``local``).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Iterable

GLOB_CHARS = frozenset("*?[")


def split_ref(ref: str) -> tuple[str, str]:
    source, sep, model_id = ref.partition("/")
    if not sep or not source or not model_id:
        raise ValueError(f"'{ref}' is not a model reference; write SOURCE/MODEL_ID, like local/llama-3.1-8b")
    return source, model_id


def is_glob(pattern: str) -> bool:
    return any(ch in GLOB_CHARS for ch in pattern)


def match_refs(pattern: str, refs: Iterable[str]) -> list[str]:
    """Refs matching a literal ref or a shell-style glob (case-sensitive)."""
    if not is_glob(pattern):
        return [r for r in refs if r == pattern]
    return [r for r in refs if fnmatch.fnmatchcase(r, pattern)]


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


AGENT_RE = __import__("re").compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
"""An agent path: ``triage`` (root agent) or ``triage/summarizer`` (subagent)."""
