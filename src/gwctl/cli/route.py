"""`gwctl route …`: agents' model configurations and the dry-run of the decision."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, NoReturn, Optional

import orjson
import typer

from gwctl.cli.common import ActivityOpt, JsonOpt, YesOpt, confirm, edit, fail, load, need_source, read_input
from gwctl.context import current
from gwctl.core.catalog_values import format_usd
from gwctl.core.refs import AGENT_RE
from gwctl.core.request import MAX_JSON_DEPTH, too_deep
from gwctl.core.validate import base_url_problem, store_errors
from gwctl.render import message, print_json, print_table, url

app = typer.Typer(
    help="Agent routes, the fallback source, and the dry-run of the routing decision.\n\nExample: gwctl route set triage/summarizer --model-name child-alias --provider custom --passthrough",
    no_args_is_help=True,
    rich_markup_mode=None,
)

AgentArg = Annotated[
    str, typer.Argument(metavar="AGENT", help="triage (a root agent) or triage/summarizer (a subagent).")
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
    str, typer.Option("--provider", metavar="SOURCE", help="The source that serves it (its credentials are used).")
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


@app.command("set")
def set_cmd(
    agent: AgentArg,
    model_name: ModelNameOpt,
    provider: ProviderOpt,
    model: UpstreamModelOpt = None,
    base_url: RouteBaseUrlOpt = None,
    passthrough: PassthroughOpt = None,
    inherit_passthrough: InheritPassthroughOpt = False,
) -> None:
    """Create or update an agent's route.

    A root agent's route is keyed by NAME (the model string it sends), so two
    root agents cannot claim the same NAME; a subagent's by AGENT + NAME.

    Example: gwctl route set triage --model-name customer-alias --provider custom --base-url https://customer-litellm.example/v1 --passthrough
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    _check_set_options(agent, model_name, base_url, passthrough, inherit_passthrough)
    fields = _route_fields(agent, model_name, provider, model, base_url, passthrough, inherit_passthrough)
    with edit() as (doc, snap):
        need_source(snap, provider)
        _check_root_name(snap, agent, model_name)
        index = _find(snap, agent, model_name)
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
    }


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
    for r in items:
        eff = r["effective_passthrough"]
        pt = ("passthrough" if eff else "managed") + (" (source)" if r["passthrough"] is None else "")
        rows.append([r["agent"], r["model_name"], r["provider"], r["upstream_model"], r["base_url"] or "-", pt])
    print_table(
        ["AGENT", "MODEL NAME", "PROVIDER", "UPSTREAM MODEL", "BASE URL", "MODE"],
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
        typer.Argument(metavar="[SOURCE]", help="Send requests no route or reference matches to this source."),
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
        Optional[str], typer.Option("--model", metavar="M", help="The model string the agent sends.")
    ] = None,
    agent: Annotated[
        Optional[str],
        typer.Option("--agent", metavar="AGENT", help="The calling agent (as in the X-Gwctl-Agent header)."),
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
        typer.Option("--key", metavar="NAME", help="The gateway key the request presents: its scope and limits."),
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

    snap = load()
    _warn_if_invalid(snap)
    if requests is not None:
        if request is not None:
            fail("give --request or --requests, not both")
        raise typer.Exit(_dry_run_many(snap, requests, model, agent, path, json_, reveal))
    if model is None and request is None:
        fail("--model is required (or give a --request whose body names the model)")
    body = _body(request, model)
    d = decide(snap, agent, path, body)
    if key is not None and key not in snap.keys:
        fail(f"no key named '{key}'", "see gwctl key list")
    verdict = _limits_verdict(snap, d, key, activity) if d.forwarded and (key or snap.limits) else None
    _show_dry_run(d, verdict, key, json_, reveal)
    if not d.forwarded or (verdict is not None and verdict.refusal is not None):
        raise typer.Exit(1)


def _show_dry_run(d, verdict, key: str | None, json_: bool, reveal: bool) -> None:
    from gwctl.explain import decision_json, limits_json, print_limits, print_report

    if json_:
        doc = decision_json(d, reveal)
        if verdict is not None:
            doc["limits"] = limits_json(verdict, key)
        print_json(doc)
        return
    print_report(d, reveal, out=current().stdout)
    if verdict is not None:
        print_limits(verdict, key, out=current().stdout)


def _limits_verdict(snap, d, key: str | None, activity: str | None):
    """What the key's scope and the limits say about the decided request ``d``, with the spend in the log
    (the same functions the proxy admits with: gwctl.core.limits)."""
    import time

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
        d.entry, (feats.prompt_tokens_estimate or 0) if feats else 0, feats.output_budget if feats else None
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
    from gwctl.explain import decision_json

    text = read_input(file)
    results = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        body, a, p = _jsonl_request(file, n, line, model, agent, default_path)
        results.append((n, decide(snap, a, p, body)))
    rejected = sum(1 for _, d in results if not d.forwarded)
    billed = [d.estimate.total for _, d in results if d.estimate is not None and d.estimate.total is not None]
    total = sum(billed, start=Decimal(0))
    if as_json:
        print_json(
            {
                "results": [{"line": n, **decision_json(d, reveal)} for n, d in results],
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
