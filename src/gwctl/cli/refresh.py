"""`gwctl source refresh`: fetch model lists (concurrently), then apply the diffs in one locked edit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Mapping

from gwctl.cli.common import edit, load, need_source
from gwctl.context import current
from gwctl.core.text import redact_urls
from gwctl.core.urls import redact_url
from gwctl.errors import Exit, GwctlError
from gwctl.render import error, print_json, stderr_is_tty, warn


def diff_models(
    current: dict[str, bool], listed: list[str], auto_enable: bool
) -> tuple[list[str], list[str], dict[str, bool]]:
    """(added, removed, new models table) for a refresh; order: kept ids first, then new ones as listed."""
    added = [m for m in listed if m not in current]
    listed_set = set(listed)
    removed = [m for m in current if m not in listed_set]
    new = {m: e for m, e in current.items() if m in listed_set}
    for m in added:
        new[m] = auto_enable
    return added, removed, new


def masked(result, src):
    """``result`` with any user info of the source's URL masked in its URL, message and hint (nothing printed holds it)."""
    known = [src.base_url, result.url]
    return replace(
        result,
        url=redact_url(result.url),
        message=redact_urls(result.message or "", known),
        hint=redact_urls(result.hint or "", known),
    )


def _fetch(src, environ: Mapping[str, str]):
    """One source's model list (run on a worker thread: the environment is passed, not read from the Env)."""
    from gwctl.discovery import TestResult, test_source  # httpx (~80 ms): only when a source is contacted

    try:
        return masked(test_source(src, environ), src)
    except GwctlError as exc:  # e.g. the credential's env var is missing
        return masked(
            TestResult(
                source=src.name,
                url=src.base_url,
                ok=False,
                error="credential",
                message=exc.message,
                hint=exc.hint or "",
            ),
            src,
        )


def run_refresh(name: str | None, as_json: bool) -> int:
    snap = load()
    sources = [need_source(snap, name)] if name else list(snap.sources.values())
    if not sources:
        if as_json:
            print_json({"sources": [], "failed": 0})
        else:
            warn("no sources to refresh; add one with: gwctl source add NAME --base-url URL")
        return 0
    report = _apply(_fetch_all(sources, show_progress=stderr_is_tty() and not as_json))
    failed = sum(1 for r in report if not r["ok"])
    if as_json:
        print_json({"sources": report, "failed": failed})
    else:
        _print_report(report)
    if failed == 0:
        return Exit.OK
    return Exit.FAILED if failed == len(report) else Exit.PARTIAL


def _fetch_all(sources, show_progress: bool) -> dict:
    """Each source's model list by name, fetched concurrently (with a progress bar on a terminal)."""
    env = current()
    fetch = partial(_fetch, environ=env.environ)
    if len(sources) == 1:
        return {sources[0].name: fetch(sources[0])}
    results = {}
    progress = None
    if show_progress:
        # rich (~40 ms) only for the progress bar on a terminal
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(transient=True, console=Console(file=env.stderr))
        task = progress.add_task("refreshing sources", total=len(sources))
        progress.start()
    try:
        with ThreadPoolExecutor(max_workers=min(16, len(sources))) as pool:
            for src, res in zip(sources, pool.map(fetch, sources)):
                results[src.name] = res
                if progress:
                    progress.advance(task)
    finally:
        if progress:
            progress.stop()
    return results


def _apply(results: dict) -> list[dict]:
    """Write every successful fetch's diff in one locked edit; one report entry per source."""
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    report = []
    with edit() as (doc, snap):
        auto = snap.settings.auto_enable_models
        for src_name, res in results.items():
            entry = {"source": src_name, "ok": res.ok}
            current_src = snap.sources.get(src_name)
            if not res.ok or current_src is None:
                entry.update(
                    error=res.error or "removed",
                    message=res.message or "the source was removed meanwhile",
                    hint=res.hint,
                )
                report.append(entry)
                continue
            added, removed, new = diff_models(dict(current_src.models), res.models, auto)
            if added or removed or list(new) != list(current_src.models):
                document.set_models(doc, src_name, new)
            entry.update(added=added, removed=removed, unchanged=len(new) - len(added), enabled_new=auto)
            default = snap.settings.default_model
            if default and default.startswith(src_name + "/") and default[len(src_name) + 1 :] in removed:
                entry["warning"] = f"the organisation default model {default} is no longer listed"
            report.append(entry)
    return report


def _print_report(report: list[dict]) -> None:
    out = current().stdout
    for r in report:
        if not r["ok"]:
            error(f"{r['source']}: {r['message']}", r.get("hint"))
            continue
        out.write(
            f"{r['source']}: +{len(r['added'])} added, -{len(r['removed'])} removed, {r['unchanged']} unchanged\n"
        )
        for m in r["added"]:
            out.write(f"+ {r['source']}/{m}" + ("" if r["enabled_new"] else " (disabled)") + "\n")
        for m in r["removed"]:
            out.write(f"- {r['source']}/{m} (no longer listed; removed)\n")
        if r.get("warning"):
            warn(r["warning"])
