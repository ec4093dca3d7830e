"""Shell completion of the names a store holds: sources, model references, agents, keys, limit targets.

Typer calls these while the user presses TAB (the shims in completions/ ask
gwctl itself), so they read the store quietly and never fail: a store that is
missing or broken completes nothing rather than printing an error into the
user's command line.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable

import typer

from gwctl.cli.common import load


def _store():
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # e.g. the store-mode warning: not into the command line
            return load()
    except Exception:  # noqa: BLE001 - completion never fails loudly (a broken store completes nothing)
        return None


def _matching(names: Iterable[str], incomplete: str) -> list[str]:
    return sorted(n for n in set(names) if n.startswith(incomplete))


def sources(incomplete: str) -> list[str]:
    """The store's source names."""
    snap = _store()
    return [] if snap is None else _matching(snap.sources, incomplete)


def refs(incomplete: str) -> list[str]:
    """SOURCE/MODEL_ID references the store knows: every source's listed models and the catalog's entries."""
    snap = _store()
    if snap is None:
        return []
    listed = (f"{s.name}/{m}" for s in snap.sources.values() for m in s.models)
    return _matching([*listed, *snap.catalog], incomplete)


def model_names(incomplete: str) -> list[str]:
    """What a client may send as its model: the routes' model names and every reference."""
    snap = _store()
    if snap is None:
        return []
    return _matching([r.model_name for r in snap.routes], incomplete) + refs(incomplete)


def agents(incomplete: str) -> list[str]:
    """The agents the routes name, and their root agents."""
    snap = _store()
    if snap is None:
        return []
    return _matching([r.agent for r in snap.routes] + [r.agent.split("/")[0] for r in snap.routes], incomplete)


def keys(incomplete: str) -> list[str]:
    """The gateway keys' names."""
    snap = _store()
    return [] if snap is None else _matching(snap.keys, incomplete)


def limit_targets(incomplete: str) -> list[str]:
    """Targets a limit can name: the store's keys, agents (and their roots), sources and catalog entries."""
    snap = _store()
    if snap is None:
        return []
    names = (
        [f"key:{k}" for k in snap.keys]
        + [f"agent:{a}" for a in agents("")]
        + [f"source:{s}" for s in snap.sources]
        + [f"model:{ref}" for ref in snap.catalog]
    )
    return [n for n in names if n.startswith(incomplete)]


def source_models(ctx: typer.Context, incomplete: str) -> list[str]:
    """The model ids the source named earlier on the command line lists."""
    snap = _store()
    src = None if snap is None else snap.sources.get(ctx.params.get("name") or "")
    return [] if src is None else _matching(src.models, incomplete)


def choices(values: Iterable[str]) -> Callable[[str], list[str]]:
    """A completer of fixed values (``--by``, ``--window`` …)."""
    fixed = list(values)
    return lambda incomplete: [v for v in fixed if v.startswith(incomplete)]
