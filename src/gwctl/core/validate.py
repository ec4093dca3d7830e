"""Whole-store checks beyond types: references that dangle, conflicts, lint.

Types and shapes are already enforced when the store is read
(:mod:`gwctl.store.schema`); this finds what only makes sense across tables.
Errors make ``gwctl validate`` exit 1; warnings never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection

from gwctl.core.config import Route, Snapshot, Source
from gwctl.core.limits import target_exists
from gwctl.core.refs import AGENT_RE


@dataclass(frozen=True)
class Problem:
    level: str  # "error" | "warning"
    where: str  # a TOML key path, e.g. sources.local.base_url
    message: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "where": self.where, "message": self.message, "hint": self.hint}


def base_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable base URL (None when it is), never quoting its user info.

    The URL is checked with its user info already masked (``***@``): the
    verdict is the same (a URL with user info is refused either way, and the
    masked part is not checked for anything else), and whatever the message
    quotes is safe to print.
    """
    from gwctl.core.urls import redact_url, validate_base_url

    try:
        validate_base_url(redact_url(url) if isinstance(url, str) else url)
    except ValueError as exc:
        return str(exc)
    return None


ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable's name, as auth_env holds it."""


def env_name_problem(name: str, label: str = "auth_env", cli: bool = False) -> str | None:
    """Why ``name`` cannot be auth_env (None when it can), never quoting it: it may be a pasted credential."""
    if ENV_NAME_RE.fullmatch(name or ""):
        return None
    where = "--auth-value -" if cli else "auth_value"
    return (
        f"{label} is not an environment variable name (letters, digits and _, like VLLM_KEY); "
        f"if it holds the credential itself, give that with {where} instead"
    )


def shown_env(name: str) -> str:
    """``$NAME`` for display; a value that is no variable name (a pasted credential?) is masked."""
    if ENV_NAME_RE.fullmatch(name or ""):
        return f"${name}"
    from gwctl.core.headers import mask_secret

    return "$" + mask_secret(name)


def auth_header_problem(name: str, label: str = "auth_header", cli: bool = False) -> str | None:
    """Why ``name`` cannot be a source's auth header (None when it can), never quoting it.

    A credential pasted into the header's name by mistake (``Bearer sk-…``)
    must not be printed back, so the message says what is wrong in general.
    """
    from gwctl.core.headers import validate_header_name

    try:
        validate_header_name(name)
    except ValueError:
        where = "--auth-value or --auth-env" if cli else "auth_value or auth_env"
        return (
            f"{label} is not a header name (one word of letters, digits and !#$%&'*+-.^_`|~, like X-Api-Key); "
            f"if it holds the credential, put that in {where} and leave the header blank"
        )
    return None


class _Found:
    """The problems found so far, in the order they were found."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def err(self, where: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("error", where, message, hint))

    def warn(self, where: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("warning", where, message, hint))


def validate(snapshot: Snapshot, environ_names: frozenset[str] | None = None) -> list[Problem]:
    """Every problem in the store; ``environ_names`` (if given) checks auth_env variables exist."""
    found = _Found()
    for src in snapshot.sources.values():
        _check_source(found, src, environ_names)
    _check_settings(found, snapshot)
    _check_routes(found, snapshot)
    _check_catalog(found, snapshot)
    _check_keys(found, snapshot)
    _check_limits(found, snapshot)
    return found.problems


def _check_source(found: _Found, src: Source, environ_names: frozenset[str] | None) -> None:
    from gwctl.core.headers import validate_static_headers

    where = f"sources.{src.name}"
    if "/" in src.name or not src.name:
        found.err(where, f"source name '{src.name}' must not contain '/'", "rename the table")
    problem = base_url_problem(src.base_url)
    if problem:
        found.err(where + ".base_url", problem)
    if src.auth_header:
        problem = auth_header_problem(src.auth_header)
        if problem:
            found.err(where + ".auth_header", problem)
    try:
        validate_static_headers(dict(src.headers), src.auth_header)
    except ValueError as exc:
        found.err(where + ".headers", str(exc))
    env_problem = src.auth.env and env_name_problem(src.auth.env)
    if env_problem:
        found.err(where + ".auth_env", env_problem)
    elif src.auth.env and environ_names is not None and src.auth.env not in environ_names:
        found.warn(
            where + ".auth_env",
            f"source {src.name} reads its credential from ${src.auth.env}, which is not set here",
            f"export {src.auth.env} wherever gwctl proxy runs",
        )
    if not src.auth.is_set:
        found.warn(
            where,
            f"source {src.name} has no credential",
            f"add one with: gwctl source edit {src.name} --auth-env VAR",
        )
    if src.ca_file:  # read here, not when the store loads: a missing file is reported, never fatal
        from gwctl.tls import ca_file_problem

        problem = ca_file_problem(src.ca_file)
        if problem:
            found.err(
                where + ".ca_file",
                f"source {src.name}: {problem}",
                f"point it at a PEM CA file with: gwctl source edit {src.name} --ca-file PATH (or --ca-file '' to drop it)",
            )


def _check_settings(found: _Found, snapshot: Snapshot) -> None:
    s = snapshot.settings
    if s.fallback_source and s.fallback_source not in snapshot.sources:
        found.err(
            "settings.fallback_source",
            f"the fallback source '{s.fallback_source}' does not exist",
            "set another with gwctl route fallback SOURCE, or --unset it",
        )
    if s.default_model:
        src_name, sep, mid = s.default_model.partition("/")
        if not sep or not mid:
            found.err(
                "settings.default_model", f"the default model '{s.default_model}' is not a SOURCE/MODEL_ID reference"
            )
        elif src_name not in snapshot.sources:
            found.err("settings.default_model", f"the default model's source '{src_name}' does not exist")
        elif snapshot.sources[src_name].models.get(mid) is False:
            found.warn(
                "settings.default_model",
                f"the default model {s.default_model} is disabled",
                f"gwctl model enable {s.default_model}",
            )
        elif mid not in snapshot.sources[src_name].models:
            found.warn(
                "settings.default_model",
                f"the default model {s.default_model} has not been discovered",
                f"gwctl source refresh {src_name}",
            )


def _check_routes(found: _Found, snapshot: Snapshot) -> None:
    roots: dict[str, str] = {}
    scoped: set[tuple[str, str]] = set()
    for i, r in enumerate(snapshot.routes):
        where = f"routes[{i}]"
        if not r.agent or not AGENT_RE.match(r.agent):  # the same pattern the decision applies to X-Gwctl-Agent
            found.err(
                where + ".agent",
                f"'{r.agent}' is not an agent path (triage or triage/summarizer: letters, digits, "
                "'.', '_' and '-' between slashes)",
            )
        if r.provider not in snapshot.sources:
            found.err(
                where + ".provider",
                f"route {r.agent} -> {r.model_name} names source '{r.provider}', which does not exist",
                "add the source or change the route's --provider",
            )
        if r.base_url:
            problem = base_url_problem(r.base_url)
            if problem:
                found.err(where + ".base_url", problem)
        _check_plan(found, snapshot, where, r)
        if r.is_root:
            if r.model_name in roots:
                found.err(
                    where,
                    f"root agents {roots[r.model_name]} and {r.agent} both claim model name '{r.model_name}'",
                    "root routes are keyed by model name: give one of them another name",
                )
            roots.setdefault(r.model_name, r.agent)
        else:
            if (r.agent, r.model_name) in scoped:
                found.err(where, f"subagent {r.agent} has two routes for model name '{r.model_name}'", "remove one")
            scoped.add((r.agent, r.model_name))


def _check_plan(found: _Found, snapshot: Snapshot, where: str, r: Route) -> None:
    """A route's balance and fallback targets: each names a source that exists, none is the primary, none
    twice, every weight is 1 or more; a target model its source has not listed (or disabled) is a warning."""
    name = f"route {r.agent} -> {r.model_name}"
    if r.weight < 1:
        found.err(where + ".weight", f"{name} has weight {r.weight}; a weight must be 1 or more")
    targets = [(f"{where}.balance[{j}]", ref, w) for j, (ref, w) in enumerate(r.balance)]
    targets += [(f"{where}.fallback[{j}]", ref, 1) for j, ref in enumerate(r.fallbacks)]
    primary = f"{r.provider}/{r.upstream_model}"
    seen = {primary}
    for at, ref, weight in targets:
        src_name, _, model_id = ref.partition("/")
        src = snapshot.sources.get(src_name)
        if weight < 1:
            found.err(at, f"{name} gives target {ref} weight {weight}; a weight must be 1 or more")
        if src is None:
            found.err(
                at,
                f"{name} names target {ref}, whose source '{src_name}' does not exist",
                "add the source or change the route's --balance/--fallback",
            )
        if ref == primary:
            found.err(at, f"{name} names its primary target {ref} again", "remove it from balance/fallback")
        elif ref in seen:
            found.err(at, f"{name} names target {ref} twice (a fallback cycle)", "name each target once")
        seen.add(ref)
        if src is not None and src.models.get(model_id) is False:
            found.warn(at, f"{name}: target {ref} is disabled, so the plan skips it", f"gwctl model enable {ref}")
        elif src is not None and model_id not in src.models:
            found.warn(at, f"{name}: target {ref} has not been discovered", f"gwctl source refresh {src_name}")


def _check_catalog(found: _Found, snapshot: Snapshot) -> None:
    from gwctl.core.catalog_values import lint_entry

    for ref, entry in snapshot.catalog.items():
        where = f'catalog."{ref}"'
        if entry.source not in snapshot.sources:
            found.warn(
                where,
                f"catalog entry {ref} names source '{entry.source}', which does not exist (yet)",
                f"add it with gwctl source add {entry.source} …, or remove the entry",
            )
        for w in lint_entry(entry):
            found.warn(where, w)


def _check_keys(found: _Found, snapshot: Snapshot) -> None:
    for key in snapshot.keys.values():
        for agent in key.agents:
            if not AGENT_RE.match(agent):
                found.err(
                    f"keys.{key.name}.agents",
                    f"'{agent}' is not an agent path (triage or triage/summarizer)",
                    "fix it, or remove it from the key's agents",
                )


def _check_limits(found: _Found, snapshot: Snapshot) -> None:
    """Limits that apply to nothing, cap nothing, or whose reservations are a guess rather than a bound."""
    for index, limit in enumerate(snapshot.limits.values()):
        where = f"limits[{index}]"
        kind, _, name = limit.target.partition(":")
        if not target_exists(snapshot, kind, name):
            found.warn(
                where,
                f"the limit on {limit.target} applies to nothing: no such {kind}",
                f"remove it (gwctl limit remove {limit.target}) or add the {kind}",
            )
        if limit.budget is None and limit.rpm is None and limit.tpm is None:
            found.warn(where, f"the limit on {limit.target} caps nothing", "give it a budget, rpm or tpm")
        if limit.budget is None:
            continue
        entries = [
            e
            for e in snapshot.catalog.values()
            if (kind == "model" and e.ref == name) or (kind == "source" and e.source == name)
        ]
        unbounded = [e.ref for e in entries if not e.max_output and not e.context_size]
        if unbounded:
            found.warn(
                where,
                f"the budget on {limit.target} covers {', '.join(unbounded)}, whose entries set neither max_output "
                "nor context_size: a request without max_tokens reserves a guessed 4096 output tokens, so the "
                "budget can be overrun",
                "set --max-output (or --context-size) on the entries",
            )


def store_errors(snapshot: Snapshot, environ: Collection[str]) -> list[Problem]:
    """The problems that stop the proxy: what ``gwctl validate`` calls an error, with ``environ``'s variable names."""
    return [p for p in validate(snapshot, frozenset(environ)) if p.level == "error"]
