"""`gwctl source probe`: ask an upstream model what it supports, show it beside the catalog, optionally write it."""

from __future__ import annotations

import typer

from gwctl.cli.common import check_seconds, confirm, edit, fail, load, need_source, no_control_characters
from gwctl.context import current
from gwctl.core.catalog_values import format_usd
from gwctl.core.probe import (
    ANTHROPIC,
    CHAT_PATH,
    MAX_TOKENS,
    MESSAGES_PATH,
    OPENAI,
    ROW_ORDER,
    Outcome,
    Probe,
    ceiling,
    detected_api,
    flag_changes,
    probes,
)
from gwctl.core.refs import split_ref
from gwctl.core.urls import redact_url
from gwctl.render import error, message, print_json, print_table, warn


def _model(src, model: str | None) -> str:
    """MODEL, else the source's only listed model."""
    if model:
        no_control_characters("the model id", model)
        if src.models and model not in src.models:
            warn(
                f"{src.name} does not list {model}; probing it anyway (refresh the list: gwctl source refresh {src.name})"
            )
        return model
    if len(src.models) == 1:
        return next(iter(src.models))
    listed = f"it lists {len(src.models)} models" if src.models else "it lists no models yet"
    fail(
        f"name the model to probe: {listed}",
        f"e.g. gwctl source probe {src.name} MODEL_ID (see gwctl model list --source {src.name})",
    )


def _flag_text(value: bool | None) -> str:
    return "unset" if value is None else ("true" if value else "false")


_FORM_NAMES = {OPENAI: "OpenAI chat-completions", ANTHROPIC: "Anthropic Messages"}


def _plan(src, ref: str, first: tuple[Probe, ...], second: tuple[Probe, ...], cost, timeout: float) -> str:
    """Print what will be sent and the most it can cost; returns the cost as the question shows it.

    Only the starting form's requests are listed; the count and the cost are
    the larger of the two forms', as the run may switch to the other.
    """
    requests = max(sum(len(p.requests) for p in form) for form in (first, second))
    message(
        f"probe {ref}: up to {requests} requests to {redact_url(src.base_url)}, "
        f"max_tokens 1-{MAX_TOKENS} each, {timeout:g} s each at most"
    )
    for p in first:
        for r in p.requests:
            message(f"  {p.name:<24} POST {r.path:<21} <= {r.prompt_bound} prompt + {r.max_tokens} output tokens")
        if not p.requests:
            message(f"  {p.name:<24} {p.what}")
    path, other = first[0].requests[0].path, second[0].requests[0].path
    message(
        f"if {path} is missing (404/405) and {other} answers, the same questions go to {other} "
        f"in {_FORM_NAMES[second[0].form]} form instead"
    )
    if cost.total is None:
        message(f"unbilled: cost unknown ({cost.unbilled_reason})")
        return "cost unknown"
    shown = f"at most {format_usd(cost.total)} USD"
    message(
        f"{shown} (each body byte priced as an input token, max_tokens as output, at {ref}'s catalog prices, "
        "in the dearer of the two forms)"
    )
    return shown


def run(name: str, model: str | None, apply: bool, yes: bool, as_json: bool, timeout: float) -> None:
    from gwctl import probe as sending  # httpx (~80 ms): only when a source is contacted

    check_seconds("--timeout", timeout)
    snap = load()
    src = need_source(snap, name)
    model_id = _model(src, model)
    ref = f"{name}/{model_id}"
    try:
        split_ref(ref)
    except ValueError as exc:
        fail(str(exc))
    start = ANTHROPIC if src.api == ANTHROPIC else OPENAI  # "both" and "openai" start with chat completions
    first, second = probes(model_id, start), probes(model_id, OPENAI if start == ANTHROPIC else ANTHROPIC)
    cost = ceiling(model_id, snap.catalog.get(ref), ref)
    shown = _plan(src, ref, first, second, cost, timeout)
    sender = sending.Sender(src, current().environ, timeout)  # a missing credential fails before the question
    try:
        confirm(f"Send these requests to {name} ({shown})?", yes)
        form, results = sending.run(sender, first, second)
    finally:
        sender.close()
    outcomes = {n: o for n, (o, _replies) in results.items()}
    if outcomes[first[0].name].result != "yes" and form == start:
        _baseline_failed(name, ref, first[0], outcomes)
    asked = tuple(sorted(first if form == start else second, key=lambda p: ROW_ORDER.index(p.name)))
    api = detected_api(outcomes["chat"], outcomes["messages"])
    entry = snap.catalog.get(ref)
    current_flags = dict(entry.capabilities) if entry else {}
    changes = flag_changes(asked, outcomes, current_flags)
    api_change = api if api is not None and api != src.api else None
    if apply:
        _apply(name, ref, changes, api_change)
    _show(name, model_id, src.api, form, asked, outcomes, current_flags, api, cost.total, apply, as_json)
    _report(name, ref, changes, api_change, apply)


def _show(name, model_id, api_now, form, all_probes, outcomes, current_flags, api, ceiling, applied, as_json) -> None:
    """The probes' results beside the catalog's current flags: a table, or JSON."""
    if as_json:
        print_json(
            {
                "source": name,
                "model": model_id,
                "form": form,
                "probes": [
                    {
                        "name": p.name,
                        "result": outcomes[p.name].result,
                        "detail": outcomes[p.name].detail,
                        "flag": p.flag,
                        "current": None if p.flag is None else current_flags.get(p.flag),
                    }
                    for p in all_probes
                ],
                "api": api,
                "api_current": api_now,
                "cost_ceiling": ceiling,
                "applied": applied,
            }
        )
        return
    rows = [
        [
            p.name,
            outcomes[p.name].result,
            outcomes[p.name].detail,
            p.flag or "-",
            "-" if p.flag is None else _flag_text(current_flags.get(p.flag)),
        ]
        for p in all_probes
    ]
    rows.append(["api", api or "unknown", "which of the two APIs answered", "api", api_now])
    print_table(["CAPABILITY", "RESULT", "DETAIL", "FLAG", "CURRENT"], rows)


def _baseline_failed(name: str, ref: str, baseline: Probe, outcomes: dict[str, Outcome]) -> None:
    """Exit 1: the starting form's plain request failed (and the other endpoint, if tried, did not answer)."""
    failed = outcomes[baseline.name]
    what = "chat" if baseline.name == "chat" else MESSAGES_PATH
    error(f"{ref}: the plain {what} request failed ({failed.detail}); nothing else was probed")
    if "401" in failed.detail or "403" in failed.detail:
        hint = f"the credential was refused: rotate it with gwctl source edit {name} --auth-value -"
    elif failed.detail.startswith("HTTP 4"):
        hint = f"check the model id and the base URL (gwctl source test {name})"
    else:
        hint = f"is the upstream up? try gwctl source test {name}; a slow one can be given --timeout"
    other = next((n for n in outcomes if n != baseline.name), None)
    if other is not None:
        path = MESSAGES_PATH if other == "messages" else CHAT_PATH
        hint = f"{path} did not answer either ({outcomes[other].detail}); " + hint
    current().stderr.write(f"hint: {hint}\n")
    raise typer.Exit(1)


def _apply(name: str, ref: str, changes: dict[str, bool], api: str | None) -> None:
    """Write the changed flags and api through the locked store edit (other keys and comments stay)."""
    if not changes and api is None:
        return
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    with edit() as (doc, snap):
        need_source(snap, name)
        if changes:
            document.put_entry(doc, ref, {}, {}, changes)
        if api is not None:
            document.put_source(doc, name, {"api": None if api == "both" else api})


def _report(name: str, ref: str, changes: dict[str, bool], api: str | None, applied: bool) -> None:
    said = [f"{ref} {k}={'true' if v else 'false'}" for k, v in changes.items()]
    if api is not None:
        said.append(f"source {name} api={api}")
    if not said:
        message("the catalog already says what the probes found; nothing to change")
    elif applied:
        message("applied: " + ", ".join(said))
    else:
        message(f"to write {', '.join(said)}: re-run with --apply (unknown results are never written)")
