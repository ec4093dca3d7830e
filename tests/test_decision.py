"""The one decision: routing precedence, passthrough vs managed, credentials never mixed."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType as MP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwctl.core.config import CatalogEntry, Route, Secret, Settings, Snapshot, Source
from gwctl.core.decision import decide


def src(name, base="https://{n}.example/v1", passthrough=False, catalog_only=False, models=None, header=""):
    return Source(
        name=name,
        base_url=base.format(n=name),
        auth=Secret(value=f"key-of-{name}-0000"),
        passthrough=passthrough,
        catalog_only=catalog_only,
        auth_header=header,
        headers=MP({"X-Src": name}),
        models=MP(models or {}),
    )


def snap(sources, routes=(), catalog=(), **settings):
    return Snapshot(
        settings=Settings(**settings),
        sources=MP({s.name: s for s in sources}),
        catalog=MP({e.ref: e for e in catalog}),
        routes=tuple(routes),
    )


CHAT = "/v1/chat/completions"
BASE = snap(
    [src("custom", passthrough=True), src("managed"), src("child", base="https://child-litellm.example/v1")],
    routes=[
        Route(
            agent="triage",
            model_name="customer-alias",
            provider="custom",
            base_url="https://customer-litellm.example/v1",
            passthrough=True,
        ),
        Route(agent="triage/summarizer", model_name="child-alias", provider="child", passthrough=True),
        Route(agent="triage/classifier", model_name="child-alias", provider="managed", model="llama-3"),
        Route(agent="triage", model_name="inherits", provider="custom"),
    ],
)


def body(model, **kw):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(
    "agent, model, kind, source, url, upstream_model",
    [
        # root agents are keyed by the model string they send (with or without the header)
        (
            "triage",
            "customer-alias",
            "passthrough",
            "custom",
            "https://customer-litellm.example/v1/chat/completions",
            "customer-alias",
        ),
        (
            None,
            "customer-alias",
            "passthrough",
            "custom",
            "https://customer-litellm.example/v1/chat/completions",
            "customer-alias",
        ),
        # a subagent routes by its own scoped route
        (
            "triage/summarizer",
            "child-alias",
            "passthrough",
            "child",
            "https://child-litellm.example/v1/chat/completions",
            "child-alias",
        ),
        (
            "triage/classifier",
            "child-alias",
            "managed",
            "managed",
            "https://managed.example/v1/chat/completions",
            "llama-3",
        ),
        # a route whose passthrough is unset takes its source's flag
        ("triage", "inherits", "passthrough", "custom", "https://custom.example/v1/chat/completions", "inherits"),
        # SOURCE/MODEL_ID reference: MODEL_ID upstream, source's flag
        (
            "triage",
            "managed/qwen/qwen3",
            "managed",
            "managed",
            "https://managed.example/v1/chat/completions",
            "qwen/qwen3",
        ),
        ("triage/summarizer", "custom/m", "passthrough", "custom", "https://custom.example/v1/chat/completions", "m"),
    ],
)
def test_routing_table(agent, model, kind, source, url, upstream_model):
    d = decide(BASE, agent, CHAT, body(model))
    assert (d.kind, d.source, d.upstream_url, d.upstream_model) == (kind, source, url, upstream_model)
    assert d.credential == BASE.sources[source].auth
    assert dict(d.static_headers) == {"X-Src": source}


def test_subagent_route_never_applies_to_root_or_sibling():
    assert decide(BASE, "triage", CHAT, body("child-alias")).kind == "not_found"
    assert decide(BASE, None, CHAT, body("child-alias")).kind == "not_found"
    assert decide(BASE, "triage/other", CHAT, body("child-alias")).kind == "not_found"
    # and a root's route never applies to its subagents
    assert decide(BASE, "triage/summarizer", CHAT, body("customer-alias")).kind == "not_found"


def test_fallback_then_404():
    with_fallback = snap(list(BASE.sources.values()), BASE.routes, fallback_source="managed")
    d = decide(with_fallback, "triage/x", CHAT, body("gpt-4o"))
    assert d.kind == "managed" and d.matched_by == "fallback" and d.upstream_model == "gpt-4o" and d.source == "managed"
    d = decide(BASE, None, CHAT, body("gpt-4o"))
    assert d.kind == "not_found" and d.status == 404 and d.rule == "model_not_found"
    assert d.error_body()["error"]["code"] == "model_not_found"
    # a slash in the model with an unknown source prefix is not a reference
    assert decide(with_fallback, None, CHAT, body("openai/gpt-4o")).matched_by == "fallback"


def test_default_model_when_body_has_none():
    s = snap([src("managed")], default_model="managed/llama")
    d = decide(s, None, CHAT, {"messages": []})
    assert d.kind == "managed" and d.upstream_model == "llama" and d.rewrite_model
    d = decide(snap([src("managed")]), None, CHAT, {"messages": []})
    assert d.rule == "model_missing" and d.status == 400


def test_disabled_model_reference_rejected():
    s = snap([src("m", models={"a": True, "b": False})])
    assert decide(s, None, CHAT, body("m/a")).kind == "managed"
    d = decide(s, None, CHAT, body("m/b"))
    assert d.kind == "rejected" and d.rule == "model_disabled"


def test_catalog_only_and_checks_on_managed_but_not_passthrough():
    entry = CatalogEntry(
        source="m",
        model_id="llama",
        max_output=100,
        prices=MP({"input": Decimal("1e-6")}),
        capabilities=MP({"tools": False}),
    )
    s = snap(
        [src("m", catalog_only=True), src("p", passthrough=True)],
        catalog=[
            entry,
            CatalogEntry(source="p", model_id="llama", max_output=100, prices=MP({"input": Decimal("1e-6")})),
        ],
    )
    assert decide(s, None, CHAT, body("m/other")).rule == "catalog_only"
    d = decide(s, None, CHAT, body("m/llama", max_tokens=500))
    assert d.kind == "rejected" and d.rule == "max_output" and d.param == "max_tokens" and d.status == 400
    d = decide(s, None, CHAT, body("m/llama", tools=[{"type": "function", "function": {"name": "f"}}]))
    assert d.rule == "capability_tools"
    ok = decide(s, None, CHAT, body("m/llama", max_tokens=50))
    assert ok.kind == "managed" and all(c.passed for c in ok.checks) and ok.checks
    # passthrough: no checks, still priced when an entry matches
    d = decide(s, None, CHAT, body("p/llama", max_tokens=500))
    assert d.kind == "passthrough" and d.checks == () and d.estimate.billed


def test_unbilled_estimate_is_none_not_zero():
    d = decide(snap([src("m")]), None, CHAT, body("m/x"))
    assert d.estimate.total is None and not d.estimate.billed


def test_invalid_agent_header():
    d = decide(BASE, "bad agent!", CHAT, body("customer-alias"))
    assert d.kind == "rejected" and d.rule == "invalid_agent"


def test_named_auth_header_in_decision():
    s = snap([src("a", header="X-Api-Key")])
    d = decide(s, None, "/v1/messages", {"model": "a/claude", "max_tokens": 5, "messages": []})
    assert d.auth_header == "X-Api-Key" and d.auth_scheme is None
    assert d.upstream_url == "https://a.example/v1/messages"


names = st.sampled_from(["alpha", "beta", "gamma", "delta"])
agents = st.sampled_from([None, "triage", "ops", "triage/summarizer", "triage/classifier", "ops/x"])
model_names = st.sampled_from(["m1", "m2", "alias", "alpha/x", "beta/y/z", "zeta/q", "plain"])


@st.composite
def stores(draw):
    sources = [src(n, passthrough=draw(st.booleans())) for n in ["alpha", "beta", "gamma", "delta"]]
    routes, roots = [], set()
    for _ in range(draw(st.integers(0, 8))):
        agent = draw(st.sampled_from(["triage", "ops", "triage/summarizer", "triage/classifier", "ops/x"]))
        name = draw(st.sampled_from(["m1", "m2", "alias"]))
        if "/" not in agent:
            if name in roots:
                continue
            roots.add(name)
        elif any(r.agent == agent and r.model_name == name for r in routes):
            continue
        routes.append(
            Route(
                agent=agent,
                model_name=name,
                provider=draw(names),
                model=draw(st.sampled_from([None, "up-1", "up/2"])),
                base_url=draw(st.sampled_from([None, "https://override.example/api/v1"])),
                passthrough=draw(st.sampled_from([None, True, False])),
            )
        )
    fallback = draw(st.sampled_from([None, "gamma"]))
    return snap(sources, routes, fallback_source=fallback)


@settings(max_examples=300, deadline=None)
@given(stores(), agents, model_names, st.sampled_from([CHAT, "/v1/messages", "/v1/responses", "/v1/embeddings"]))
def test_credentials_never_mix_between_routes(store, agent, model, path):
    d = decide(store, agent, path, body(model))
    if not d.forwarded:
        assert d.credential is None or d.kind == "rejected"
        return
    source = store.sources[d.source]
    assert d.credential == source.auth  # always the chosen source's own credential
    assert dict(d.static_headers) == dict(source.headers)
    if d.route is not None:
        assert d.source == d.route.provider
        if agent and "/" in agent:
            assert d.route.agent == agent  # a subagent only ever uses its own scoped route
        else:
            assert d.route.is_root and d.route.model_name == model
    elif d.matched_by == "reference":
        assert model.startswith(d.source + "/")
    else:
        assert d.matched_by == "fallback" and d.source == store.settings.fallback_source
    assert "/v1/v1" not in d.upstream_url


def test_bad_client_path_is_a_rejection_not_a_crash():
    d = decide(BASE, None, "v1/chat/completions", body("customer-alias"))
    assert d.kind == "rejected" and d.rule == "invalid_path"


def _context_snap(context_size, max_output=None):
    entry = CatalogEntry(
        source="m",
        model_id="llama",
        context_size=context_size,
        max_output=max_output,
        prices=MP({"input": Decimal("1e-6")}),
    )
    return snap([src("m")], catalog=[entry])


def test_a_body_small_enough_skips_the_prompt_estimate():
    import json

    b = body("m/llama", max_tokens=100)
    size = len(json.dumps(b, separators=(",", ":")))
    d = decide(_context_snap(100_000), None, CHAT, b, estimate=False, body_bytes=size)
    check = next(c for c in d.checks if c.rule == "context_size")
    assert d.kind == "managed" and check.passed
    assert d.features.prompt_tokens_estimate is None and d.features.prompt_tokens_ceiling == 6 * size
    from gwctl.core.checks import run_checks  # explained, the check says why it passed without an estimate

    explained = run_checks(src("m"), "llama", _context_snap(100_000).catalog["m/llama"], d.features)
    assert "by its size" in next(c for c in explained if c.rule == "context_size").message
    # a context too small for the ceiling: the estimate is made, as without a size
    d = decide(_context_snap(6 * size), None, CHAT, b, estimate=False, body_bytes=size)
    assert d.features.prompt_tokens_estimate is not None and d.kind == "managed"


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=400),
    budget=st.none() | st.integers(0, 3000),
    context=st.integers(1, 4000),
    max_output=st.none() | st.integers(1, 3000),
)
def test_the_size_shortcut_never_changes_the_outcome(text, budget, context, max_output):
    import json

    extra = {} if budget is None else {"max_tokens": budget}
    b = {"model": "m/llama", "messages": [{"role": "user", "content": text}], **extra}
    s = _context_snap(context, max_output)
    full = decide(s, None, CHAT, b, estimate=True)
    fast = decide(
        s,
        None,
        CHAT,
        b,
        estimate=False,
        body_bytes=len(json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode()),
    )
    assert (fast.kind, fast.status, fast.rule, fast.param) == (full.kind, full.status, full.rule, full.param)


def test_the_fast_constructor_builds_the_same_decision_as_the_dataclass():
    from dataclasses import fields as dc_fields

    from gwctl.core.decision import Decision, _decision

    d = decide(BASE, "triage", CHAT, body("customer-alias"))
    again = Decision(**{f.name: getattr(d, f.name) for f in dc_fields(Decision)})
    assert d == again and repr(d) == repr(again) and vars(d) == vars(again)
    with pytest.raises(TypeError):
        _decision({"kind": "managed", "status": 200})  # agent, path, client_model, matched_by missing
    with pytest.raises(Exception):
        d.kind = "rejected"  # still frozen


@settings(max_examples=150, deadline=None)
@given(
    budget=st.none() | st.integers(0, 3000),
    context=st.integers(1, 4000),
    max_output=st.none() | st.integers(1, 3000),
    tools=st.booleans(),
    caps=st.dictionaries(st.sampled_from(["tools", "vision", "streaming"]), st.booleans()),
)
def test_the_proxy_mode_drops_only_passed_checks_messages(budget, context, max_output, tools, caps):
    entry = CatalogEntry(
        source="m",
        model_id="llama",
        context_size=context,
        max_output=max_output,
        prices=MP({"input": Decimal("1e-6")}),
        capabilities=MP(caps),
    )
    s = snap([src("m", catalog_only=True)], catalog=[entry])
    extra = {} if budget is None else {"max_tokens": budget}
    if tools:
        extra["tools"] = [{"type": "function", "function": {"name": "f"}}]
    b = body("m/llama", **extra)
    full, fast = decide(s, None, CHAT, b, estimate=True), decide(s, None, CHAT, b, estimate=False)
    assert [(c.rule, c.passed) for c in fast.checks] == [(c.rule, c.passed) for c in full.checks]
    assert (fast.kind, fast.rule, fast.message, fast.hint, fast.param) == (
        full.kind,
        full.rule,
        full.message,
        full.hint,
        full.param,
    )
    assert all(c.message == "" for c in fast.checks if c.passed) and all(c.message for c in full.checks)


@st.composite
def memo_requests(draw):
    """A request whose shape often repeats while its text (and so its size) varies."""
    extra = {}
    budget = draw(st.sampled_from([None, 10, 500, 2500]))
    if budget is not None:
        extra["max_tokens"] = budget
    if draw(st.booleans()):
        extra["tools"] = [{"type": "function", "function": {"name": "f"}}]
    if draw(st.booleans()):
        content = [
            {"type": "text", "text": draw(st.text(max_size=60))},
            {"type": "image_url", "image_url": {"url": "x"}},
        ]
    else:
        content = draw(st.text(max_size=600))
    b = {
        "model": draw(st.sampled_from(["m/llama", "m/other", "llama", None])),
        "messages": [{"role": "user", "content": content}],
        **extra,
    }
    if b["model"] is None:
        del b["model"]
    agent = draw(st.sampled_from([None, "triage", "triage/summarizer", "bad agent"]))
    path = draw(st.sampled_from([CHAT, "/v1/messages", "v1/chat/completions"]))
    return agent, path, b


@settings(max_examples=150, deadline=None)
@given(
    context=st.integers(1, 4000),
    max_output=st.none() | st.integers(1, 3000),
    caps=st.dictionaries(st.sampled_from(["tools", "vision"]), st.booleans()),
    passthrough=st.booleans(),
    default=st.sampled_from([None, "m/llama"]),
    requests=st.lists(memo_requests(), min_size=1, max_size=25),
    reload_at=st.integers(0, 25),
    reloaded_caps=st.dictionaries(st.sampled_from(["tools", "vision"]), st.booleans()),
)
def test_the_proxy_memo_decides_exactly_as_decide(
    context, max_output, caps, passthrough, default, requests, reload_at, reloaded_caps
):
    """DecisionMemo (what the proxy calls) equals decide(estimate=False) request by request, across
    repeated shapes of different sizes, bodies that need the estimate, and a reload."""
    import json

    from gwctl.core.decision import DecisionMemo

    def store(caps):
        entry = CatalogEntry(
            source="m",
            model_id="llama",
            context_size=context,
            max_output=max_output,
            prices=MP({"input": Decimal("1e-6")}),
            capabilities=MP(caps),
        )
        return snap(
            [src("m", passthrough=passthrough, catalog_only=True)],
            catalog=[entry],
            routes=[Route(agent="triage", model_name="llama", provider="m")],
            default_model=default,
        )

    s = store(caps)
    memo = DecisionMemo(limit=8)
    for i, (agent, path, b) in enumerate(requests * 2):
        if i == reload_at:
            s = store(reloaded_caps)  # a reload makes a new snapshot: nothing remembered may leak across
        size = len(json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode())
        assert memo.decide(s, agent, path, b, size) == decide(s, agent, path, b, estimate=False, body_bytes=size)


def test_the_proxy_memo_reuses_a_shape_only_while_the_size_proves_the_fit():
    import json

    from gwctl.core.decision import DecisionMemo

    s = _context_snap(2000, max_output=100)
    memo = DecisionMemo()
    small, big = body("m/llama", max_tokens=50), body("m/llama", max_tokens=50)
    big["messages"][0]["content"] = "word " * 400  # same shape; too big to pass by size, fits by estimate
    sizes = {id(b): len(json.dumps(b, separators=(",", ":")).encode()) for b in (small, big)}
    first = memo.decide(s, None, CHAT, small, sizes[id(small)])
    second = memo.decide(s, None, CHAT, big, sizes[id(big)])
    assert first.features.prompt_tokens_estimate is None and first.kind == "managed"
    assert second == decide(s, None, CHAT, big, estimate=False, body_bytes=sizes[id(big)])
    assert second.features.prompt_tokens_estimate is not None  # decided afresh, with the estimate
    again = memo.decide(s, None, CHAT, small, sizes[id(small)] - 1)  # a hit, with this request's own size
    assert again == decide(s, None, CHAT, small, estimate=False, body_bytes=sizes[id(small)] - 1)
    assert again.features.prompt_tokens_ceiling == 6 * (sizes[id(small)] - 1)


def test_a_source_of_one_api_gets_the_other_apis_requests_translated():
    from dataclasses import replace

    from gwctl.explain import decision_json, print_report

    oa = replace(src("oa"), api="openai")
    an = replace(src("an"), api="anthropic")
    both = src("both")
    store = snap([oa, an, both])
    d = decide(store, None, "/v1/messages", body("oa/gpt", max_tokens=10))
    assert d.translate == "anthropic->openai" and d.upstream_url == "https://oa.example/v1/chat/completions"
    d = decide(store, None, CHAT + "?x=1", body("an/claude"))
    assert d.translate == "openai->anthropic" and d.upstream_url == "https://an.example/v1/messages?x=1"
    for ref, path in (("oa/gpt", CHAT), ("an/claude", "/v1/messages"), ("both/m", "/v1/messages")):
        d = decide(store, None, path, body(ref, max_tokens=10))
        assert d.translate is None and d.upstream_url.endswith(path)
    assert decide(store, None, "/v1/embeddings", {"model": "an/e", "input": "x"}).translate is None
    d = decide(store, None, "/v1/messages", body("oa/gpt", max_tokens=10))
    assert decision_json(d)["translate"] == "anthropic->openai"
    import io

    out = io.StringIO()
    print_report(d, out=out)
    assert "translate    anthropic -> openai" in out.getvalue() or "anthropic -> openai" in out.getvalue()
    assert "/v1/chat/completions" in out.getvalue()


def test_each_plan_target_translates_for_its_own_source():
    from dataclasses import replace

    oa = replace(src("oa"), api="openai")
    store = snap(
        [oa, src("both")],
        routes=[Route(agent="triage", model_name="m", provider="both", model="x", fallbacks=("oa/y",))],
    )
    d = decide(store, "triage", "/v1/messages", body("m", max_tokens=10))
    assert [t.decision.translate for t in d.plan] == [None, "anthropic->openai"]
    assert d.plan[1].decision.upstream_url == "https://oa.example/v1/chat/completions"
    assert d.plan[0].decision.upstream_url == "https://both.example/v1/messages"
