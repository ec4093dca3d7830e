"""The one routing decision: store snapshot + agent + path + request -> what happens.

``gwctl route dry-run`` prints a :class:`Decision`; ``gwctl proxy`` executes
one. Both call :func:`decide` and nothing else decides, so what the dry-run
says is what the proxy does.

Order (README, "Routing: one decision for the dry-run and the proxy"):

1. The agent's route. A root agent (``triage``) or an unnamed caller is
   routed by the model string it sends (root routes are keyed by model
   name); a subagent (``triage/summarizer``) only by its own scoped route
   (agent path + model name), never by its root's or a sibling's.
2. Else a ``SOURCE/MODEL_ID`` reference (split at the first ``/``) to a
   known source; the model sent upstream is ``MODEL_ID``.
3. Else the store's fallback source (``settings.fallback_source``), model
   unchanged.
4. Else not found (404).

A request without ``model`` uses the organisation default model
(``settings.default_model``) when one is set.

Passthrough (the route's flag, else its source's; references and the
fallback follow their source's flag) sends the request straight to the
route's base URL (or the source's) with that source's credentials and static
headers and skips the catalog checks; it is still priced when an entry
matches. Managed runs the catalog checks first. Credentials always come from
the source the route names, never from another route.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Mapping

from gwctl.core.checks import Check, advisory_warnings, first_failure, fits_context_by_size, run_checks
from gwctl.core.config import CatalogEntry, Route, Secret, Snapshot, Source
from gwctl.core.frozen import builder
from gwctl.core.pricing import Cost, Usage, price
from gwctl.core.request import RequestFeatures, features
from gwctl.core.tokens import estimate_prompt_tokens
from gwctl.core.urls import join_upstream

PASSTHROUGH = "passthrough"
MANAGED = "managed"
REJECTED = "rejected"
NOT_FOUND = "not_found"

from gwctl.core.refs import AGENT_RE  # noqa: E402  (re-exported)


@dataclass(frozen=True)
class Decision:
    """Everything the proxy will do with one request, and why."""

    kind: str  # passthrough | managed | rejected | not_found
    status: int  # 200 when forwarded; else the status the proxy answers with
    agent: str | None
    path: str
    client_model: str | None
    matched_by: str  # route | reference | fallback | default_model+… | none
    route: Route | None = None
    source: str | None = None
    passthrough: bool = False
    upstream_url: str | None = None
    upstream_model: str | None = None
    rewrite_model: bool = False  # replace the body's "model" with upstream_model
    auth_header: str | None = None  # the header that carries the credential
    auth_scheme: str | None = None  # "Bearer" when the header is Authorization by default
    credential: Secret | None = None  # masked for display; resolved by the proxy
    static_headers: Mapping[str, str] = field(default_factory=dict)
    catalog_ref: str | None = None
    entry: CatalogEntry | None = None
    checks: tuple[Check, ...] = ()
    warnings: tuple[str, ...] = ()
    rule: str | None = None  # the failed rule id, when rejected
    message: str = ""
    hint: str = ""
    param: str | None = None
    features: RequestFeatures | None = None
    estimate: Cost | None = None  # estimated cost (prompt estimate + output budget)
    connect_timeout: float | None = None
    read_timeout: float | None = None
    # a route with balance or fallback targets: every target in order (the primary tier's, then each
    # fallback), each with its own decision; the fields above are the first target that may be forwarded
    plan: tuple[PlanTarget, ...] = ()
    # "anthropic->openai" or "openai->anthropic" when the target source speaks only the other API: the proxy
    # translates the request (and upstream_url has the translated path), and the answer back
    translate: str | None = None

    @property
    def forwarded(self) -> bool:
        return self.kind in (PASSTHROUGH, MANAGED)

    def error_body(self) -> dict[str, Any]:
        """The JSON error the proxy answers a rejected / not-found request with."""
        return {
            "error": {
                "message": self.message + (f" ({self.hint})" if self.hint else ""),
                "type": "invalid_request_error",
                "code": self.rule,
                "param": self.param,
            }
        }


_decision = builder(Decision)  # the frozen dataclass without its per-field __init__ (gwctl.core.frozen)


@dataclass(frozen=True)
class PlanTarget:
    """One target of a route's plan: its tier (0: the primary tier, weighted; 1, 2, ...: the fallbacks in
    order), its weight in the tier, and its own decision (upstream URL and model, the credentials and
    static headers of its own source, its own catalog checks). A target whose decision is not forwarded
    is skipped; its decision says why."""

    tier: int
    ref: str  # SOURCE/MODEL_ID
    weight: int
    decision: Decision

    @property
    def skipped(self) -> bool:
        return not self.decision.forwarded


def _reject(
    base: dict[str, Any],
    rule: str,
    message: str,
    hint: str = "",
    param: str | None = None,
    status: int = 400,
    kind: str = REJECTED,
) -> Decision:
    return _decision(
        {**base, "kind": kind, "status": status, "rule": rule, "message": message, "hint": hint, "param": param}
    )


def find_route(snapshot: Snapshot, agent: str | None, model: str) -> Route | None:
    """The agent's own route for ``model``: scoped for a subagent, by model name for a root."""
    if agent and "/" in agent:
        return snapshot.route_index.get((agent, model))
    return snapshot.route_index.get((None, model))


def estimated_output_tokens(entry: CatalogEntry | None, feats: RequestFeatures) -> int:
    """The output the estimate assumes: the request's budget, else the entry's max output; none for embeddings."""
    if feats.api == "embeddings":
        return 0
    if feats.output_budget is not None:
        return feats.output_budget
    return entry.max_output if entry and entry.max_output else 0


def _estimate(entry: CatalogEntry | None, feats: RequestFeatures, ref: str) -> Cost:
    assert feats.prompt_tokens_estimate is not None  # made whenever the estimate is asked for
    usage = Usage(input_tokens=feats.prompt_tokens_estimate, output_tokens=estimated_output_tokens(entry, feats))
    return price(entry, usage, ref)


def decide(
    snapshot: Snapshot,
    agent: str | None,
    path: str,
    body: Mapping[str, Any] | None,
    estimate: bool = True,
    body_bytes: int | None = None,
    at: float | None = None,
) -> Decision:
    """Decide what happens to one request. Pure: no I/O, no environment.

    ``estimate=False`` (the proxy) skips what only informs the dry-run: the
    estimated cost and the messages of passed checks; the prompt-size
    estimate is still made whenever a check needs it, so the outcome is the
    same either way. ``body_bytes`` (the JSON
    text's size) lets the context check pass without an estimate when the
    size alone proves the prompt fits. ``at`` (a Unix time) prices the
    estimate at the catalog's prices in force then (its dated price sets);
    None: the undated prices.
    """
    return _decide(
        snapshot, agent, path, body, features(path, body, estimate_tokens=False, body_bytes=body_bytes), estimate, at
    )


def decide_features(snapshot: Snapshot, agent: str | None, path: str, feats: RequestFeatures) -> Decision:
    """Decide a request known only by its features (a logged request's shape, replayed against another catalog
    by ``gwctl activity reprice``): the same rules as :func:`decide`, with ``feats.prompt_tokens_estimate`` as
    the prompt's size (set it: the body is not there to estimate from)."""
    return _decide(snapshot, agent, path, None, feats, False)


def _decide(
    snapshot: Snapshot,
    agent: str | None,
    path: str,
    body: Mapping[str, Any] | None,
    feats: RequestFeatures,
    estimate: bool,
    at: float | None = None,
) -> Decision:
    agent = agent.strip() if agent else None
    model = feats.model
    base = {"agent": agent or None, "path": path, "client_model": model, "matched_by": "none", "features": feats}
    if agent and not AGENT_RE.match(agent):
        return _reject(
            base,
            "invalid_agent",
            f"agent '{agent}' is not an agent path",
            "name a root agent like triage or a subagent like triage/summarizer",
        )
    matched_prefix = ""
    if not model:
        if snapshot.settings.default_model:
            model = snapshot.settings.default_model
            matched_prefix = "default_model+"
            base["client_model"] = None
        else:
            return _reject(
                base,
                "model_missing",
                "the request names no model and the store has no default model",
                'send "model" in the request body, or set one with: gwctl model default SOURCE/MODEL_ID',
                "model",
            )
    target = _target(snapshot, agent, model, base, matched_prefix)
    if isinstance(target, Decision):
        return target
    ask = _Ask(snapshot, path, body, feats, estimate, at)
    route = target[0]
    if route is not None and (route.balance or route.fallbacks):
        return _planned(ask, base, matched_prefix, target)
    return _routed(ask, base, matched_prefix, target)


def _planned(ask: _Ask, base: dict[str, Any], matched_prefix: str, target: _Target) -> Decision:
    """A route with more targets: each decided on its own, in plan order. The decision is the first target
    that may be forwarded (the primary's when it may), carrying the whole plan; when none may, the
    primary's refusal."""
    route = target[0]
    assert route is not None
    primary = _routed(ask, dict(base), matched_prefix, target)
    targets = [PlanTarget(0, f"{route.provider}/{route.upstream_model}", route.weight, primary)]
    for ref, weight in route.balance:
        targets.append(PlanTarget(0, ref, weight, _plan_target(ask, base, route, ref)))
    for tier, ref in enumerate(route.fallbacks, 1):
        targets.append(PlanTarget(tier, ref, 1, _plan_target(ask, base, route, ref)))
    first = next((t.decision for t in targets if t.decision.forwarded), primary)
    return _decision({**first.__dict__, "plan": tuple(targets)})


def _plan_target(ask: _Ask, base: dict[str, Any], route: Route, ref: str) -> Decision:
    """One balance or fallback target's own decision: its source's URL, credentials and headers, its entry."""
    src_name, _sep, model_id = ref.partition("/")
    source = ask.snapshot.sources.get(src_name)
    here = {**base, "matched_by": "route", "route": route}
    if source is None:  # validate refuses this; the plan says why it is skipped
        return _reject(
            here,
            "route_source_missing",
            f"the route for {route.agent} -> {route.model_name} names target {ref}, whose source does not exist",
            "fix the route with gwctl route set, or add the source",
            status=502,
        )
    if source.models.get(model_id) is False:
        return _reject(
            {**here, "source": source.name},
            "model_disabled",
            f"model {ref} is disabled",
            f"enable it with: gwctl model enable {ref}",
            "model",
        )
    passthrough = source.passthrough if route.passthrough is None else route.passthrough
    return _routed(ask, dict(base), "", (route, source, passthrough, model_id, source.base_url, "route"))


_Target = tuple[Route | None, Source, bool, str, str, str]
"""Where a request goes: (route, source, passthrough, upstream model, base URL, matched by)."""


@dataclass(frozen=True, slots=True)
class _Ask:
    """One request as the steps after the target see it: the store, the path, the body and its features,
    and whether the dry-run's explanations are wanted."""

    snapshot: Snapshot
    path: str
    body: Mapping[str, Any] | None
    feats: RequestFeatures
    estimate: bool
    at: float | None = None  # the time the estimate is priced at (None: the undated prices)


def _target(
    snapshot: Snapshot, agent: str | None, model: str, base: dict[str, Any], matched_prefix: str
) -> _Target | Decision:
    """Steps 1-4 of the order: the agent's route, a SOURCE/MODEL_ID reference, the fallback; else a refusal."""
    route = find_route(snapshot, agent, model)
    source: Source | None = None
    if route is not None:
        source = snapshot.sources.get(route.provider)
        if source is None:  # validate refuses this; the proxy must still not guess
            return _reject(
                {**base, "matched_by": matched_prefix + "route", "route": route},
                "route_source_missing",
                f"the route for {route.agent} -> {route.model_name} names source '{route.provider}', which does not exist",
                "fix the route with gwctl route set, or add the source",
                status=502,
            )
        passthrough = source.passthrough if route.passthrough is None else route.passthrough
        return route, source, passthrough, route.upstream_model, route.base_url or source.base_url, "route"
    src_name, sep, model_id = model.partition("/")
    if sep and model_id and src_name in snapshot.sources:
        source = snapshot.sources[src_name]
        if source.models.get(model_id) is False:
            return _reject(
                {**base, "matched_by": matched_prefix + "reference", "source": source.name},
                "model_disabled",
                f"model {model} is disabled",
                f"enable it with: gwctl model enable {model}",
                "model",
            )
        return None, source, source.passthrough, model_id, source.base_url, "reference"
    if snapshot.settings.fallback_source and snapshot.settings.fallback_source in snapshot.sources:
        source = snapshot.sources[snapshot.settings.fallback_source]
        return None, source, source.passthrough, model, source.base_url, "fallback"
    who = f"agent {agent}" if agent else "this request"
    return _reject(
        base,
        "model_not_found",
        f"no route for {who} and model '{model}', it is not a SOURCE/MODEL_ID reference to a known source, and there is no fallback source",
        "add a route (gwctl route set), use SOURCE/MODEL_ID, or set a fallback (gwctl route fallback SOURCE)",
        "model",
        status=404,
        kind=NOT_FOUND,
    )


A2O = "anthropic->openai"
O2A = "openai->anthropic"
_TRANSLATED_PATHS = {A2O: ("/messages", "/chat/completions"), O2A: ("/chat/completions", "/messages")}


def translation(client_api: str, source_api: str) -> str | None:
    """Which way a request must be translated for a source that speaks one API (None: sent as it came).
    Only Messages and Chat Completions translate; any other API goes as it came."""
    if client_api == "messages" and source_api == "openai":
        return A2O
    if client_api == "chat" and source_api == "anthropic":
        return O2A
    return None


def translated_path(path: str, translate: str) -> str:
    """The client's path with its API's endpoint swapped for the other API's (prefix and query kept):
    ``/v1/messages?beta=true`` -> ``/v1/chat/completions?beta=true``."""
    old, new = _TRANSLATED_PATHS[translate]
    route_path, sep, query = path.partition("?")
    if route_path.endswith(old):
        route_path = route_path[: -len(old)] + new
    return route_path + sep + query


def _routed(ask: _Ask, base: dict[str, Any], matched_prefix: str, target: _Target) -> Decision:
    """The decision for a request with a target: its upstream URL, then passthrough, or managed by the checks."""
    route, source, passthrough, upstream_model, base_url, matched_by = target
    path, feats, estimate = ask.path, ask.feats, ask.estimate
    ref = f"{source.name}/{upstream_model}"
    entry = ask.snapshot.catalog.get(ref)
    translate = translation(feats.api, source.api) if source.api != "both" else None
    try:  # before any estimate: a request refused for its path is decided by its shape alone (DecisionMemo)
        upstream_url = join_upstream(base_url, translated_path(path, translate) if translate else path)
    except ValueError as exc:
        return _reject(
            {**base, "matched_by": matched_prefix + matched_by, "route": route, "source": source.name},
            "invalid_path",
            str(exc),
            "the path must start with '/', like /v1/chat/completions",
        )
    if feats.prompt_tokens_estimate is None and (
        estimate or (entry is not None and not passthrough and not fits_context_by_size(entry, feats))
    ):
        feats = replace(feats, prompt_tokens_estimate=estimate_prompt_tokens(feats.api, ask.body))
        base["features"] = feats
    values = {
        **base,
        "matched_by": matched_prefix + matched_by,
        "route": route,
        "source": source.name,
        "passthrough": passthrough,
        "upstream_url": upstream_url,
        "upstream_model": upstream_model,
        "rewrite_model": upstream_model != feats.model,
        "auth_header": source.effective_auth_header if source.auth.is_set else None,
        "auth_scheme": "Bearer" if source.auth.is_set and not source.auth_header else None,
        "credential": source.auth if source.auth.is_set else None,
        "static_headers": source.headers,
        "catalog_ref": ref,
        "entry": entry,
        "estimate": _estimate(entry if ask.at is None or entry is None else entry.at(ask.at), feats, ref)
        if estimate
        else None,
        "connect_timeout": source.connect_timeout,
        "read_timeout": source.read_timeout,
        "translate": translate,
    }
    if passthrough:
        return _decision({**values, "kind": PASSTHROUGH, "status": 200})
    return _managed(values, source, upstream_model, entry, feats, estimate)


def _managed(
    values: dict[str, Any],
    source: Source,
    upstream_model: str,
    entry: CatalogEntry | None,
    feats: RequestFeatures,
    estimate: bool,
) -> Decision:
    """A managed request: the catalog checks decide; the first that fails rejects it."""
    checks = tuple(run_checks(source, upstream_model, entry, feats, explain=estimate))
    warnings = tuple(advisory_warnings(entry, feats))
    failed = first_failure(checks)
    if failed is not None:
        return _decision(
            {
                **values,
                "kind": REJECTED,
                "status": 400,
                "checks": checks,
                "warnings": warnings,
                "rule": failed.rule,
                "message": failed.message,
                "hint": failed.hint,
                "param": failed.param,
            }
        )
    return _decision({**values, "kind": MANAGED, "status": 200, "checks": checks, "warnings": warnings})


# Every feature but the two sizes: with the agent and the path, what a decision made without a prompt
# estimate depends on (the size only through fits_context_by_size, which DecisionMemo re-checks).
_SHAPE = attrgetter(
    *(f.name for f in fields(RequestFeatures) if f.name not in ("prompt_tokens_estimate", "prompt_tokens_ceiling"))
)
_new = object.__new__


def _sized(d: Decision) -> tuple[CatalogEntry, ...]:
    """The entries whose context check a remembered decision (or its plan's targets) passed by the body's
    size, or would run for a bigger one: another body of the same shape must pass them by its own size."""
    decisions = (d, *(t.decision for t in d.plan)) if d.plan else (d,)
    return tuple(
        x.entry for x in decisions if x.entry is not None and not x.passthrough and x.entry.context_size is not None
    )


class DecisionMemo:
    """The proxy's :func:`decide` (``estimate=False``), remembered per request shape for one snapshot.

    Requests repeat their shape (agent, path, model, output budget, params,
    the kinds of content they carry) far more than their text, and for a
    given snapshot the decision made without a prompt estimate is a function
    of that shape alone, except through the body's size, which only matters
    when a catalog entry's context check runs: a remembered decision is reused
    when the new body's size also proves the prompt fits, and never when the
    decision needed an estimate. ``memo.decide(...) == decide(..., estimate=False)``
    always (a property test holds it); it saves the proxy most of the decision's
    cost. Forgets everything when the snapshot changes or ``limit`` shapes are held.
    Not thread-safe: one per event loop.
    """

    __slots__ = ("snapshot", "limit", "_memo")

    def __init__(self, limit: int = 4096):
        self.snapshot: Snapshot | None = None
        self.limit = limit
        self._memo: dict[tuple[Any, ...], tuple[Decision, tuple[CatalogEntry, ...]]] = {}

    def decide(
        self,
        snapshot: Snapshot,
        agent: str | None,
        path: str,
        body: Mapping[str, Any] | None,
        body_bytes: int | None = None,
    ) -> Decision:
        feats = features(path, body, estimate_tokens=False, body_bytes=body_bytes)
        memo = self._memo
        if snapshot is not self.snapshot:
            memo.clear()
            self.snapshot = snapshot
        key = (agent, path, _SHAPE(feats))
        found = memo.get(key)
        if found is not None:
            known, sized = found
            ceiling = feats.prompt_tokens_ceiling
            if known.features is not None and known.features.prompt_tokens_ceiling == ceiling:
                return known  # same shape and size, no estimate on either side: the features are equal
            if all(fits_context_by_size(entry, feats) for entry in sized):
                same = _new(Decision)  # the remembered decision, with this request's features (its size)
                same.__dict__.update(known.__dict__)
                same.__dict__["features"] = feats
                return same
        d = _decide(snapshot, agent, path, body, feats, False)
        if d.features is feats and all(t.decision.features is feats for t in d.plan):  # no prompt estimate
            # was made (for any target): the shape decided it
            if len(memo) >= self.limit:
                memo.clear()
            memo[key] = (d, _sized(d))
        return d
