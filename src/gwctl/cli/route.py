"""`gwctl route …`: agents' model configurations and the dry-run of the decision."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, NoReturn, Optional

import orjson
import typer

from gwctl.cli import complete
from gwctl.cli.common import ActivityOpt, JsonOpt, YesOpt, confirm, edit, fail, load, need_source, read_input
from gwctl.context import current
from gwctl.core.catalog_values import format_usd
from gwctl.core.refs import AGENT_RE, close_matches, split_ref
from gwctl.core.request import MAX_JSON_DEPTH, too_deep
from gwctl.core.validate import base_url_problem, store_errors
from gwctl.render import message, print_json, print_table, url, warn

app = typer.Typer(
    help="Agent routes, the fallback source, and the dry-run of the routing decision.\n\nExample: gwctl route set triage/summarizer --model-name child-alias --provider custom --passthrough",
    no_args_is_help=True,
    rich_markup_mode=None,
)

AgentArg = Annotated[
    str,
    typer.Argument(
        metavar="AGENT",
        help="triage (a root agent) or triage/summarizer (a subagent).",
        autocompletion=complete.agents,
    ),
]


def _check_agent(agent: str) -> None:

    if not AGENT_RE.match(agent):
        fail(f"'{agent}' is not an agent path", "name a root agent like triage or a subagent like triage/summarizer")


def _find(snap, agent: str, model_name: str) -> int | None:
    for i, r in enumerate(snap.routes):
        if r.agent == agent and r.model_name == model_name:
            return i
    return None


ModelNameOpt = Annotated[
    str, typer.Option("--model-name", metavar="NAME", help="The model string the agent sends (its alias).")
]
ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        metavar="SOURCE",
        help="The source that serves it (its credentials are used).",
        autocompletion=complete.sources,
    ),
]
UpstreamModelOpt = Annotated[
    Optional[str], typer.Option("--model", metavar="ID", help="Upstream model id (default: NAME unchanged).")
]
RouteBaseUrlOpt = Annotated[
    Optional[str], typer.Option("--base-url", metavar="URL", help="Override the source's base URL for this route.")
]
PassthroughOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--passthrough/--no-passthrough",
        help="Direct to the base URL (skip catalog checks), or managed. Unset: the source's flag.",
    ),
]
InheritPassthroughOpt = Annotated[
    bool,
    typer.Option("--inherit-passthrough", help="Unset the route's passthrough so it follows its source's flag."),
]


FallbackOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--fallback",
        metavar="SOURCE/MODEL_ID",
        help="A target tried when the primary tier fails; repeat for more, tried in the order given. "
        "Replaces the route's fallback list.",
        autocompletion=complete.refs,
    ),
]
BalanceOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--balance",
        metavar="SOURCE/MODEL_ID=WEIGHT",
        help="Another target in the primary tier, sharing its requests by weight; repeat for more. "
        "Replaces the route's balance list.",
        autocompletion=complete.refs,
    ),
]
WeightOpt = Annotated[
    Optional[str],
    typer.Option("--weight", metavar="N", help="The primary target's weight in the primary tier (default 1)."),
]
NoFallbackOpt = Annotated[bool, typer.Option("--no-fallback", help="Remove the route's fallback targets.")]
NoBalanceOpt = Annotated[bool, typer.Option("--no-balance", help="Remove the route's balance targets.")]


def _check_set_options(agent: str, model_name: str, base_url, passthrough, inherit_passthrough: bool) -> None:
    _check_agent(agent)
    if not model_name.strip():
        fail("--model-name must not be empty")
    if passthrough is not None and inherit_passthrough:
        fail("give --passthrough/--no-passthrough or --inherit-passthrough, not both")
    if base_url is not None and base_url != "":
        problem = base_url_problem(base_url)
        if problem:
            fail(problem)


def _check_root_name(snap, agent: str, model_name: str) -> None:
    """A root agent's route is keyed by its model name: no other root agent may claim it."""
    if "/" in agent:
        return
    for r in snap.routes:
        if r.is_root and r.model_name == model_name and r.agent != agent:
            fail(
                f"root agent {r.agent} already routes model name '{model_name}'",
                f"root routes are keyed by model name; pick another name or remove it: gwctl route remove {r.agent} --model-name {model_name}",
            )


def _route_fields(agent, model_name, provider, model, base_url, passthrough, inherit_passthrough) -> dict:
    """The route's fields as `route set` writes them (None removes one)."""
    fields = {"agent": agent, "model_name": model_name, "provider": provider}
    if model is not None:
        fields["model"] = model or None
    if base_url is not None:
        fields["base_url"] = base_url or None
    if passthrough is not None:
        fields["passthrough"] = passthrough
    if inherit_passthrough:
        fields["passthrough"] = None
    return fields


@dataclass(frozen=True)
class PlanEdit:
    """What `route set` changes of a route's plan; None keeps what the route has."""

    weight: int | None = None
    balance: list[tuple[str, int]] | None = None
    fallbacks: list[str] | None = None


def _weight(text: str, what: str) -> int:
    """A target's weight as the user typed it: a whole number of 1 or more."""
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        fail(f"{what} must be a whole number of 1 or more, got '{text}'")
    return int(value)


def _ref(ref: str, option: str) -> str:
    try:
        split_ref(ref)
    except ValueError as exc:
        fail(f"{option}: {exc}")
    return ref


def _plan_options(fallback, balance, weight, no_fallback: bool, no_balance: bool) -> PlanEdit:
    """The plan options, checked for form alone (the store is checked in :func:`_plan_fields`)."""
    if fallback and no_fallback:
        fail("give --fallback or --no-fallback, not both")
    if balance and no_balance:
        fail("give --balance or --no-balance, not both")
    pairs = None
    if balance:
        pairs = []
        for item in balance:
            ref, sep, w = item.rpartition("=")
            if not sep:
                fail(f"--balance {item} has no weight; write SOURCE/MODEL_ID=WEIGHT, like local/llama=2")
            pairs.append((_ref(ref, "--balance"), _weight(w, f"--balance {ref}'s weight")))
    refs = [_ref(r, "--fallback") for r in fallback] if fallback else None
    return PlanEdit(
        weight=None if weight is None else _weight(weight, "--weight"),
        balance=[] if no_balance else pairs,
        fallbacks=[] if no_fallback else refs,
    )


def _plan_fields(snap, index: int | None, provider: str, model: str | None, model_name: str, plan: PlanEdit) -> dict:
    """The route's plan after the edit, checked against the store: its fields as written (None removes one)."""
    from gwctl.store import document

    old = snap.routes[index] if index is not None else None
    balance = plan.balance if plan.balance is not None else list(old.balance if old else ())
    fallbacks = plan.fallbacks if plan.fallbacks is not None else list(old.fallbacks if old else ())
    upstream = (model or None) if model is not None else (old.model if old else None)
    primary = f"{provider}/{upstream or model_name}"
    seen = {primary}
    unlisted = []
    for option, ref in [("--balance", r) for r, _w in balance] + [("--fallback", r) for r in fallbacks]:
        src_name, _, model_id = ref.partition("/")
        src = snap.sources.get(src_name)
        if src is None:
            close = close_matches(src_name, snap.sources)
            hint = f"did you mean {', '.join(close)}?" if close else "list them with: gwctl source list"
            fail(f"{option} {ref} names source '{src_name}', which does not exist", hint)
        if ref == primary:
            fail(f"{option} {ref} is the route's primary target; a balance or fallback target must be another model")
        if ref in seen:
            fail(f"{ref} is named twice in the route's plan (a fallback cycle); name each target once")
        seen.add(ref)
        if model_id not in src.models:
            unlisted.append(ref)
    given = {r for r, _w in plan.balance or ()} | set(plan.fallbacks or ())
    for ref in (r for r in unlisted if r in given):  # warned once, when named
        src_name, _, model_id = ref.partition("/")
        warn(
            f"source {src_name} has not listed model {model_id} (yet); list its models with: gwctl source refresh {src_name}"
        )
    fields: dict = {}
    if plan.weight is not None:
        fields["weight"] = None if plan.weight == 1 else plan.weight  # 1 is the default: not written
    if plan.balance is not None:
        fields["balance"] = document.balance_value(balance) if balance else None
    if plan.fallbacks is not None:
        fields["fallback"] = fallbacks or None
    return fields


@app.command("set")
def set_cmd(
    agent: AgentArg,
    model_name: ModelNameOpt,
    provider: ProviderOpt,
    model: UpstreamModelOpt = None,
    base_url: RouteBaseUrlOpt = None,
    passthrough: PassthroughOpt = None,
    inherit_passthrough: InheritPassthroughOpt = False,
    fallback: FallbackOpt = None,
    balance: BalanceOpt = None,
    weight: WeightOpt = None,
    no_fallback: NoFallbackOpt = False,
    no_balance: NoBalanceOpt = False,
) -> None:
    """Create or update an agent's route.

    A root agent's route is keyed by NAME (the model string it sends), so two
    root agents cannot claim the same NAME; a subagent's by AGENT + NAME.
    --fallback and --balance replace the route's list when given (--no-fallback,
    --no-balance empty it); left out, an update keeps the route's list.

    Example: gwctl route set triage --model-name customer-alias --provider custom --base-url https://customer-litellm.example/v1 --passthrough

    Example: gwctl route set triage --model-name fast --provider local --model llama --balance other/llama=2 --fallback cloud/gpt-4o-mini
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    _check_set_options(agent, model_name, base_url, passthrough, inherit_passthrough)
    plan = _plan_options(fallback, balance, weight, no_fallback, no_balance)
    fields = _route_fields(agent, model_name, provider, model, base_url, passthrough, inherit_passthrough)
    with edit() as (doc, snap):
        need_source(snap, provider)
        _check_root_name(snap, agent, model_name)
        index = _find(snap, agent, model_name)
        fields.update(_plan_fields(snap, index, provider, model, model_name, plan))
        document.put_route(doc, index, fields)
    message(f"{'updated' if index is not None else 'added'} route {agent} -> {model_name} via {provider}")


def route_json(r, snap) -> dict:

    src = snap.sources.get(r.provider)
    effective = r.passthrough if r.passthrough is not None else (src.passthrough if src else None)
    return {
        "agent": r.agent,
        "scope": "root" if r.is_root else "subagent",
        "model_name": r.model_name,
        "provider": r.provider,
        "model": r.model,
        "upstream_model": r.upstream_model,
        "base_url": url(r.base_url),
        "passthrough": r.passthrough,
        "effective_passthrough": effective,
        "weight": r.weight,
        "balance": [{"target": ref, "weight": w} for ref, w in r.balance],
        "fallbacks": list(r.fallbacks),
        "plan": route_plan(r),
    }


def route_plan(r) -> list[dict]:
    """The route's targets in plan order (as the decision's plan has them); empty without balance or fallbacks."""
    if not r.balance and not r.fallbacks:
        return []
    tier0 = [(f"{r.provider}/{r.upstream_model}", r.weight), *r.balance]
    return [{"tier": 0, "target": ref, "weight": w} for ref, w in tier0] + [
        {"tier": tier, "target": ref, "weight": 1} for tier, ref in enumerate(r.fallbacks, 1)
    ]


def _plan_text(plan: list[dict]) -> str:
    """A plan in one cell: the primary tier as TARGET=WEIGHT, then each fallback after '->'."""
    tier0 = " ".join(f"{t['target']}={t['weight']}" for t in plan if t["tier"] == 0)
    return " -> ".join([tier0] + [t["target"] for t in plan if t["tier"] > 0])


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List routes (passthrough shows the effective value; '(source)' when inherited).

    Example: gwctl route list --json
    """
    snap = load()
    items = [route_json(r, snap) for r in snap.routes]
    if json_:
        print_json(items)
        return
    rows = []
    planned = any(r["plan"] for r in items)  # the PLAN column only when some route has one
    for r in items:
        eff = r["effective_passthrough"]
        pt = ("passthrough" if eff else "managed") + (" (source)" if r["passthrough"] is None else "")
        rows.append([r["agent"], r["model_name"], r["provider"], r["upstream_model"], r["base_url"] or "-", pt])
        if planned:
            rows[-1].append(_plan_text(r["plan"]) if r["plan"] else "-")
    print_table(
        ["AGENT", "MODEL NAME", "PROVIDER", "UPSTREAM MODEL", "BASE URL", "MODE"] + (["PLAN"] if planned else []),
        rows,
        empty="no routes; add one with: gwctl route set AGENT --model-name NAME --provider SOURCE",
    )


@app.command("remove")
def remove(
    agent: AgentArg,
    model_name: Annotated[str, typer.Option("--model-name", metavar="NAME", help="The route's model name.")],
    yes: YesOpt = False,
) -> None:
    """Remove a route.

    Example: gwctl route remove triage/summarizer --model-name child-alias --yes
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if _find(load(), agent, model_name) is None:
        fail(f"no route for {agent} -> {model_name}", "see gwctl route list")
    confirm(f"Remove route {agent} -> {model_name}?", yes)
    with edit() as (doc, snap):
        index = _find(snap, agent, model_name)
        if index is None:
            fail(f"no route for {agent} -> {model_name}")
        document.remove_route(doc, index)
    message(f"removed route {agent} -> {model_name}")


@app.command("fallback")
def fallback(
    source: Annotated[
        Optional[str],
        typer.Argument(
            metavar="[SOURCE]",
            help="Send requests no route or reference matches to this source.",
            autocompletion=complete.sources,
        ),
    ] = None,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the fallback: unmatched requests get 404.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Show or set the fallback (default) source for requests nothing else matches.

    Example: gwctl route fallback local
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    if source is None and not unset:
        env = current()
        current_source = load().settings.fallback_source
        if json_:
            print_json({"fallback_source": current_source})
        elif current_source:
            env.stdout.write(current_source + "\n")
        else:
            message("no fallback source: unmatched requests are answered 404")
        return
    if source is not None and unset:
        fail("give a SOURCE or --unset, not both")
    with edit() as (doc, snap):
        if source is not None:
            need_source(snap, source)
        document.set_setting(doc, "fallback_source", source)
    message(f"fallback source: {source}" if source else "fallback source unset")


def _too_deep(where: str) -> NoReturn:
    """Refuse a request nested deeper than the proxy takes, as the proxy does (400 invalid_json)."""
    fail(
        f"{where}: the request nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; "
        "the proxy refuses it (invalid_json)"
    )


def _body(path: str | None, model: str | None) -> dict:
    if path is None:
        body: dict = {"messages": [{"role": "user", "content": "Hello"}]}
    else:
        text = read_input(path)
        try:
            body = orjson.loads(text)  # the proxy's parser: what it refuses, the dry-run refuses
        except orjson.JSONDecodeError as exc:
            if "depth" in exc.msg:  # deeper than orjson's own limit
                _too_deep(path)
            fail(f"{path}:{exc.lineno}: the request is not valid JSON ({exc.msg})")
        if not isinstance(body, dict):
            fail(f"{path}: the request must be a JSON object")
        if too_deep(text.encode(), body):
            _too_deep(path)
    if model is not None:
        body = {**body, "model": model}
    return body


@app.command("dry-run")
def dry_run(
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", metavar="M", help="The model string the agent sends.", autocompletion=complete.model_names
        ),
    ] = None,
    agent: Annotated[
        Optional[str],
        typer.Option(
            "--agent",
            metavar="AGENT",
            help="The calling agent (as in the X-Gwctl-Agent header).",
            autocompletion=complete.agents,
        ),
    ] = None,
    request: Annotated[
        Optional[str], typer.Option("--request", metavar="FILE|-", help="The request body (JSON); '-' for stdin.")
    ] = None,
    path: Annotated[
        str, typer.Option("--path", metavar="PATH", help="The client's request path.")
    ] = "/v1/chat/completions",
    requests: Annotated[
        Optional[str],
        typer.Option(
            "--requests",
            metavar="FILE.jsonl",
            help='Many requests, one JSON per line: {"agent", "path", "request"} or a bare body.',
        ),
    ] = None,
    key: Annotated[
        Optional[str],
        typer.Option(
            "--key",
            metavar="NAME",
            help="The gateway key the request presents: its scope and limits.",
            autocompletion=complete.keys,
        ),
    ] = None,
    activity: ActivityOpt = None,
    json_: JsonOpt = False,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show literal credentials (and user info in URLs) unmasked.")
    ] = False,
) -> None:
    """Show what the proxy would do with a request; exit 1 if it would be rejected.

    Prints the route kind, upstream URL and model, whose credentials (masked),
    static headers, every catalog check, and the estimated cost.

    Example: gwctl route dry-run --agent triage/summarizer --model child-alias --request req.json
    """
    # the decision engine and its token estimator (~50 ms): only the dry-run loads them
    from gwctl.core.decision import decide
    from gwctl.core.translate.target import with_translation

    snap = load()
    _warn_if_invalid(snap)
    if requests is not None:
        if request is not None:
            fail("give --request or --requests, not both")
        raise typer.Exit(_dry_run_many(snap, requests, model, agent, path, json_, reveal))
    if model is None and request is None:
        fail("--model is required (or give a --request whose body names the model)")
    body = _body(request, model)
    d = with_translation(decide(snap, agent, path, body, at=time.time()), body)
    if key is not None and key not in snap.keys:
        fail(f"no key named '{key}'", "see gwctl key list")
    verdict = _limits_verdict(snap, d, key, activity) if d.forwarded and (key or snap.limits) else None
    _show_dry_run(d, verdict, key, json_, reveal, _failover(snap, d))
    if not d.forwarded or (verdict is not None and verdict.refusal is not None):
        raise typer.Exit(1)


def _failover(snap, d):
    """The failover policy of a planned decision's primary source (its own, else the store's); None without a plan."""
    from gwctl.core.failover import policy_for

    if not d.plan or d.route is None:
        return None
    return policy_for(snap, d.route.provider)


def _show_dry_run(d, verdict, key: str | None, json_: bool, reveal: bool, failover=None) -> None:
    from gwctl.explain import decision_json, limits_json, print_limits, print_report

    if json_:
        doc = decision_json(d, reveal, failover)
        if verdict is not None:
            doc["limits"] = limits_json(verdict, key)
        print_json(doc)
        return
    print_report(d, reveal, out=current().stdout, failover=failover)
    if verdict is not None:
        print_limits(verdict, key, out=current().stdout)


def _limits_verdict(snap, d, key: str | None, activity: str | None):
    """What the key's scope and the limits say about the decided request ``d``, with the spend in the log
    (the same functions the proxy admits with: gwctl.core.limits)."""
    from gwctl.activity import resolve_dsn
    from gwctl.activity.limit_status import limit_reports_or_fresh
    from gwctl.core import limits as lim
    from gwctl.render import warn
    from gwctl.store.paths import default_activity_path

    now = time.time()
    limits = lim.applicable(snap.limits, lim.request_targets(key, d.agent, d.source, d.catalog_ref))
    dsn = resolve_dsn(activity, current().environ, default_activity_path())
    states = [r.state for r in limit_reports_or_fresh(dsn, limits, now, warn)] if limits else []
    feats = d.features
    res = lim.reservation(
        d.entry.at(now) if d.entry is not None else None,
        (feats.prompt_tokens_estimate or 0) if feats else 0,
        feats.output_budget if feats else None,
    )
    return lim.evaluate(snap.keys.get(key) if key else None, d.agent, d.catalog_ref, states, res, now)


def _warn_if_invalid(snap) -> None:
    """The proxy refuses to start on (and to reload to) a store with validate errors: say so beside the dry-run."""
    errors = store_errors(snap, current().environ)
    if errors:
        current().stderr.write(
            f"warning: gwctl validate reports {len(errors)} error(s) in this store; the proxy will not "
            f"start on it (or reload to it) until they are fixed: run gwctl validate\n"
        )


def _jsonl_request(file: str, n: int, line: str, model, agent, default_path) -> tuple[dict, str | None, str]:
    """One line of a --requests file: its body (--model applied), agent and path."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg:  # deeper than orjson's own limit
            _too_deep(f"{file}:{n}")
        fail(f"{file}:{n}: not valid JSON ({exc.msg})")
    if too_deep(line.encode(), item):
        _too_deep(f"{file}:{n}")
    if not isinstance(item, dict):
        fail(f"{file}:{n}: each line must be a JSON object")
    if "request" in item:
        body = item["request"]
        if not isinstance(body, dict):
            fail(f'{file}:{n}: "request" must be a JSON object')
        a = item.get("agent", agent)
        p = item.get("path", default_path)
    else:
        body, a, p = item, agent, default_path
    if model is not None:
        body = {**body, "model": model}
    return body, a, p


def _dry_run_many(snap, file: str, model, agent, default_path, as_json, reveal) -> int:
    from gwctl.core.decision import decide  # the decision engine (~50 ms): only the dry-run loads it
    from gwctl.core.translate.target import with_translation
    from gwctl.explain import decision_json

    text = read_input(file)
    now = time.time()
    results = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        body, a, p = _jsonl_request(file, n, line, model, agent, default_path)
        results.append((n, with_translation(decide(snap, a, p, body, at=now), body)))
    rejected = sum(1 for _, d in results if not d.forwarded)
    billed = [d.estimate.total for _, d in results if d.estimate is not None and d.estimate.total is not None]
    total = sum(billed, start=Decimal(0))
    if as_json:
        print_json(
            {
                "results": [{"line": n, **decision_json(d, reveal, _failover(snap, d))} for n, d in results],
                "totals": {
                    "requests": len(results),
                    "forwarded": len(results) - rejected,
                    "rejected": rejected,
                    "estimated_cost": format_usd(total),
                    "unbilled": len(results) - rejected - len(billed),
                },
            }
        )
    else:
        rows = [_many_row(n, d) for n, d in results]
        print_table(["LINE", "AGENT", "MODEL", "DECISION", "SOURCE", "UPSTREAM MODEL", "RULE", "EST. USD"], rows)
        current().stderr.write(
            f"{len(results)} requests: {len(results) - rejected} forwarded, {rejected} rejected; estimated {format_usd(total)} USD\n"
        )
    return 1 if rejected else 0


def _many_row(n: int, d) -> list:
    """One decision as a row of the --requests table."""
    est = "-" if d.estimate is None else (format_usd(d.estimate.total) if d.estimate.total is not None else "unbilled")
    return [
        n,
        d.agent or "-",
        d.client_model or "-",
        d.kind,
        d.source or "-",
        d.upstream_model or "-",
        d.rule or "",
        est,
    ]
