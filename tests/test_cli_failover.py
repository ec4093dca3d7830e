"""Failover and load balancing through the CLI: route set's plan options, the store's failover tables,
validate's plan checks and the dry-run's plan."""

from __future__ import annotations

import pytest

from conftest import invoke


@pytest.fixture
def store(gw, store_path):
    """Sources a (literal credential, models x and w listed) and b (credential from $BKEY, model y listed)."""
    assert gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1", "--auth-value", "sk-secret-AAAA").code == 0
    assert gw("source", "add", "b", "--base-url", "http://127.0.0.1:10/v1", "--auth-env", "BKEY").code == 0
    text = store_path.read_text()
    text = (
        text.replace("[sources.b]", '[sources.a.models]\n"x" = true\n"w" = true\n\n[sources.b]')
        + '\n[sources.b.models]\n"y" = true\n"z" = true\n'
    )
    store_path.write_text(text)
    return gw


def set_route(gw, *extra: str):
    return gw("route", "set", "t", "--model-name", "m", "--provider", "a", "--model", "x", *extra)


def assert_refused(res, store_path, before: bytes, part: str) -> None:
    """Exit 1, one `error:` sentence naming the problem (and maybe a hint), the store untouched."""
    assert res.code == 1, res
    lines = res.err.strip().splitlines()
    assert lines[0].startswith("error: ") and part in lines[0], res.err
    assert all(line.startswith("hint: ") for line in lines[1:]), res.err
    assert "Traceback" not in res.err and res.out == ""
    assert store_path.read_bytes() == before


# --- route set / list ---------------------------------------------------------------------------


def test_route_set_writes_the_plan_and_keeps_comments(store, store_path):
    assert set_route(store).code == 0
    store_path.write_text(store_path.read_text().replace("[[routes]]", "# the triage route\n[[routes]]"))
    res = set_route(store, "--weight", "3", "--balance", "b/y=2", "--fallback", "b/z", "--fallback", "a/w")
    assert res.code == 0 and "updated route t -> m via a" in res.err
    text = store_path.read_text()
    assert "# the triage route\n[[routes]]" in text
    assert "weight = 3\n" in text
    assert 'balance = [{target = "b/y", weight = 2}]\n' in text
    assert 'fallback = ["b/z", "a/w"]\n' in text
    [route] = store("route", "list", "--json").json()
    assert route["plan"] == [
        {"tier": 0, "target": "a/x", "weight": 3},
        {"tier": 0, "target": "b/y", "weight": 2},
        {"tier": 1, "target": "b/z", "weight": 1},
        {"tier": 2, "target": "a/w", "weight": 1},
    ]
    assert route["fallbacks"] == ["b/z", "a/w"] and route["balance"] == [{"target": "b/y", "weight": 2}]
    table = store("route", "list")
    assert table.out == "t\tm\ta\tx\t-\tmanaged (source)\ta/x=3 b/y=2 -> b/z -> a/w\n"


def test_route_set_keeps_replaces_and_clears_lists(store, store_path):
    assert set_route(store, "--balance", "b/y=2", "--fallback", "b/z", "--weight", "2").code == 0
    assert set_route(store, "--no-passthrough").code == 0  # no plan options: the plan is kept
    [route] = store("route", "list", "--json").json()
    assert (route["weight"], route["fallbacks"], route["passthrough"]) == (2, ["b/z"], False)
    assert set_route(store, "--fallback", "a/w", "--weight", "1").code == 0  # given: replaces
    [route] = store("route", "list", "--json").json()
    assert route["fallbacks"] == ["a/w"] and route["balance"] == [{"target": "b/y", "weight": 2}]
    assert "\nweight =" not in store_path.read_text().split("[[routes]]")[1]  # 1 is the default: not written
    assert route["weight"] == 1
    assert set_route(store, "--no-fallback", "--no-balance").code == 0
    [route] = store("route", "list", "--json").json()
    assert route["plan"] == [] and route["balance"] == [] and route["fallbacks"] == []
    routes_part = store_path.read_text().split("[[routes]]")[1]
    assert "balance" not in routes_part and "fallback" not in routes_part
    assert store("route", "list").out.count("\t") == 5  # no PLAN column without a plan


def test_route_set_warns_about_an_unlisted_target_model(store):
    res = set_route(store, "--fallback", "b/new-model")
    assert res.code == 0
    assert "warning: source b has not listed model new-model (yet)" in res.err


@pytest.mark.parametrize(
    ("extra", "part"),
    [
        (["--fallback", "nope/y"], "--fallback nope/y names source 'nope', which does not exist"),
        (["--balance", "nope/y=2"], "--balance nope/y names source 'nope', which does not exist"),
        (["--weight", "0"], "--weight must be a whole number of 1 or more, got '0'"),
        (["--weight", "two"], "--weight must be a whole number of 1 or more, got 'two'"),
        (["--weight", "-1"], "--weight must be a whole number of 1 or more"),
        (["--balance", "b/y=0"], "--balance b/y's weight must be a whole number of 1 or more, got '0'"),
        (["--balance", "b/y=1.5"], "--balance b/y's weight must be a whole number of 1 or more"),
        (["--balance", "b/y"], "--balance b/y has no weight; write SOURCE/MODEL_ID=WEIGHT"),
        (["--balance", "by=2"], "--balance: 'by' is not a model reference"),
        (["--fallback", "noslash"], "--fallback: 'noslash' is not a model reference"),
        (["--fallback", "a/x"], "--fallback a/x is the route's primary target"),
        (["--balance", "a/x=2"], "--balance a/x is the route's primary target"),
        (["--fallback", "b/y", "--fallback", "b/y"], "b/y is named twice in the route's plan (a fallback cycle)"),
        (["--balance", "b/y=1", "--fallback", "b/y"], "b/y is named twice in the route's plan (a fallback cycle)"),
        (["--fallback", "b/y", "--no-fallback"], "give --fallback or --no-fallback, not both"),
        (["--balance", "b/y=1", "--no-balance"], "give --balance or --no-balance, not both"),
    ],
)
def test_route_set_refuses_bad_plans(store, store_path, extra, part):
    assert set_route(store, "--fallback", "b/z").code == 0
    before = store_path.read_bytes()
    assert_refused(set_route(store, *extra), store_path, before, part)


def test_changing_the_primary_onto_a_kept_fallback_is_refused(store, store_path):
    assert set_route(store, "--fallback", "b/z").code == 0
    before = store_path.read_bytes()
    res = store("route", "set", "t", "--model-name", "m", "--provider", "b", "--model", "z")
    assert_refused(res, store_path, before, "--fallback b/z is the route's primary target")


def test_completion_offers_known_refs(store):
    from gwctl.cli.complete import refs
    from gwctl.context import Env

    with Env.captured(None).active():
        assert refs("b/") == ["b/y", "b/z"]
        assert refs("a/w") == ["a/w"]


# --- the store's failover tables ----------------------------------------------------------------


def test_failover_tables_parse_and_a_source_inherits_the_store_policy(store, store_path):
    from gwctl.store.file import load

    with store_path.open("a") as fh:
        fh.write(
            '\n[settings.failover]\non = ["connect", "503", "418"]\nmax_attempts = 5\nretry_after = false\n'
            "\n[sources.a.failover]\nmax_seconds = 2.5\ncooldown_after = 1\ncooldown_seconds = 0\n"
        )
    snap = load(store_path).snapshot
    store_policy = snap.settings.failover
    assert (store_policy.on, store_policy.max_attempts, store_policy.retry_after) == (
        frozenset({"connect", "503", "418"}),
        5,
        False,
    )
    assert (store_policy.max_seconds, store_policy.cooldown_after) == (30.0, 3)  # FailoverPolicy's defaults
    own = snap.sources["a"].failover
    assert own is not None and snap.sources["b"].failover is None
    assert (own.max_seconds, own.cooldown_after, own.cooldown_seconds) == (2.5, 1, 0.0)
    assert (own.on, own.max_attempts, own.retry_after) == (store_policy.on, 5, False)  # from [settings.failover]
    assert store("validate").code == 0


@pytest.mark.parametrize(
    ("table", "part"),
    [
        ("[settings.failover]\nmax_attempts = 0\n", "settings.failover.max_attempts must be a positive integer"),
        ("[settings.failover]\nmax_attempts = true\n", "settings.failover.max_attempts must be a positive integer"),
        ("[settings.failover]\nmax_seconds = 0\n", "settings.failover.max_seconds must be a positive number"),
        ("[settings.failover]\ncooldown_seconds = -1\n", "settings.failover.cooldown_seconds must be a number"),
        ("[settings.failover]\ncooldown_after = 1.5\n", "settings.failover.cooldown_after must be a positive integer"),
        ("[settings.failover]\nretry_after = 1\n", "settings.failover.retry_after must be true or false"),
        ('[settings.failover]\non = ["teapot"]\n', "settings.failover.on: 'teapot' is not a failure"),
        ('[settings.failover]\non = ["200"]\n', "settings.failover.on: '200' is not a failure"),
        ('[settings.failover]\non = "503"\n', "settings.failover.on must be an array"),
        ("[settings.failover]\nretries = 2\n", "settings.failover.retries is not a known setting"),
        ("[sources.b.failover]\nmax_attempts = -2\n", "sources.b.failover.max_attempts must be a positive integer"),
        ("[sources.b.failover]\nwhen = 1\n", "sources.b.failover.when is not a known setting"),
    ],
)
def test_bad_failover_tables_are_store_errors(store, store_path, table, part):
    with store_path.open("a") as fh:
        fh.write("\n" + table)
    before = store_path.read_bytes()
    res = store("validate")
    assert res.code == 1 and part in res.err, res.err
    assert f"{store_path}:" in res.err  # the file and line
    assert set_route(store).code == 1 and store_path.read_bytes() == before  # never overwritten


@pytest.mark.parametrize(
    ("route_lines", "part"),
    [
        ("weight = 0\n", "routes[0].weight must be a positive integer"),
        ('weight = "2"\n', "routes[0].weight must be a positive integer"),
        ('balance = [{target = "b/y", weight = 0}]\n', "routes[0].balance[0].weight must be a positive integer"),
        ('balance = [{target = "b/y", share = 2}]\n', "routes[0].balance[0].share is not a known setting"),
        ("balance = [{weight = 2}]\n", "routes[0].balance[0] has no target"),
        ('balance = ["b/y"]\n', "routes[0].balance[0] must be a table"),
        ('fallback = "b/y"\n', "routes[0].fallback must be an array"),
        ('fallback = ["by"]\n', "routes[0].fallback[0]: 'by' is not a model reference"),
    ],
)
def test_bad_route_plans_in_a_hand_edited_store_are_store_errors(store, store_path, route_lines, part):
    assert set_route(store).code == 0
    store_path.write_text(store_path.read_text() + route_lines)
    res = store("validate")
    assert res.code == 1 and part in res.err, res.err


# --- validate ------------------------------------------------------------------------------------


def test_validate_reports_plan_errors_and_warnings(store, store_path):
    assert set_route(store).code == 0
    store_path.write_text(
        store_path.read_text()
        + 'balance = [{target = "a/x", weight = 2}, {target = "gone/y"}]\n'
        + 'fallback = ["b/y", "b/new", "b/y"]\n'
    )
    res = store("validate", "--json")
    assert res.code == 1
    problems = {(p["level"], p["where"], p["message"]) for p in res.json()["problems"] if "route" in p["message"]}
    assert problems == {
        ("error", "routes[0].balance[0]", "route t -> m names its primary target a/x again"),
        ("error", "routes[0].balance[1]", "route t -> m names target gone/y, whose source 'gone' does not exist"),
        ("error", "routes[0].fallback[2]", "route t -> m names target b/y twice (a fallback cycle)"),
        ("warning", "routes[0].fallback[1]", "route t -> m: target b/new has not been discovered"),
    }


def test_validate_accepts_a_good_plan(store, store_path):
    assert set_route(store, "--balance", "b/y=2", "--fallback", "a/w").code == 0
    res = store("validate", "--json")
    assert res.code == 0 and not [p for p in res.json()["problems"] if p["where"].startswith("routes")]


def test_validate_refuses_a_weight_below_one_in_a_snapshot():
    from gwctl.core.config import Route, Snapshot, Source
    from gwctl.core.validate import validate

    src = Source("a", "http://127.0.0.1:9/v1", models={"x": True, "y": True})
    snap = Snapshot(sources={"a": src}, routes=(Route("t", "m", "a", "x", weight=0, balance=(("a/y", -1),)),))
    errors = {(p.where, p.message) for p in validate(snap) if p.level == "error"}
    assert errors == {
        ("routes[0].weight", "route t -> m has weight 0; a weight must be 1 or more"),
        ("routes[0].balance[0]", "route t -> m gives target a/y weight -1; a weight must be 1 or more"),
    }


# --- dry-run -----------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_with_masked_credentials(store, store_path):
    assert set_route(store, "--balance", "b/y=2", "--fallback", "b/gone", "--fallback", "a/w").code == 0
    assert store("model", "disable", "a/w").code == 0
    res = store("route", "dry-run", "--model", "m")
    assert res.code == 0, res.err
    plan = res.out.split("plan\n", 1)[1].splitlines()
    assert plan[0].split() == ["TIER", "TARGET", "WEIGHT", "UPSTREAM", "TRANSLATE", "CREDENTIALS", "CHECKS", "SKIPPED"]
    rows = [line.split(None, 7) for line in plan[1:5]]
    assert rows[0][:2] == ["primary", "a/x"] and rows[0][2:5] == ["1", "http://127.0.0.1:9/v1/chat/completions", "-"]
    assert rows[1][:3] == ["primary", "b/y", "2"] and "$BKEY" in plan[2]
    assert plan[3].split()[:3] == ["fallback", "1", "b/gone"]
    assert plan[4].split()[:3] == ["fallback", "2", "a/w"] and "[model_disabled] model a/w is disabled" in plan[4]
    assert "sk-secret-AAAA" not in res.out and "AAAA" in plan[1]  # masked: the last 4 characters only
    assert plan[5].startswith("failover  up to 3 attempts within 30s, moving on at connect, tls,")
    revealed = store("route", "dry-run", "--model", "m", "--reveal")
    assert "sk-secret-AAAA" in revealed.out.split("plan\n", 1)[1]


def test_dry_run_json_has_the_plan_and_the_primary_sources_policy(store, store_path):
    assert set_route(store, "--fallback", "b/y").code == 0
    with store_path.open("a") as fh:
        fh.write('\n[sources.a.failover]\nmax_attempts = 2\non = ["503", "connect"]\n')
    doc = store("route", "dry-run", "--model", "m", "--json").json()
    assert [(t["tier"], t["target"], t["weight"], t["skipped"]) for t in doc["plan"]] == [
        (0, "a/x", 1, False),
        (1, "b/y", 1, False),
    ]
    primary, fallback = doc["plan"]
    assert primary["upstream_url"] == "http://127.0.0.1:9/v1/chat/completions"
    assert primary["credential"] != "sk-secret-AAAA" and primary["credential"].endswith("AAAA")
    assert fallback["credential"] == "$BKEY" and fallback["rule"] is None and fallback["checks"] == "passed"
    assert doc["failover"] == {
        "on": ["connect", "503"],
        "max_attempts": 2,
        "max_seconds": 30.0,
        "cooldown_after": 3,
        "cooldown_seconds": 30.0,
        "retry_after": True,
    }
    revealed = store("route", "dry-run", "--model", "m", "--json", "--reveal").json()
    assert revealed["plan"][0]["credential"] == "sk-secret-AAAA"


def test_dry_run_without_a_plan_is_unchanged(store):
    assert set_route(store).code == 0
    doc = store("route", "dry-run", "--model", "m", "--json").json()
    assert "plan" not in doc and "failover" not in doc
    text = invoke(["route", "dry-run", "--model", "m"]).out
    assert "plan" not in text and "failover" not in text
    assert text.splitlines()[0].startswith("decision")


def test_source_show_gives_a_sources_own_failover_policy(store, store_path):
    gw = store
    store_path.write_text(
        store_path.read_text() + '\n[sources.a.failover]\nmax_attempts = 5\non = ["503", "connect"]\n'
    )
    assert gw("source", "edit", "a", "--read-timeout", "5").code == 0  # an edit keeps the table
    shown = gw("source", "show", "a", "--json").json()["failover"]
    assert shown["on"] == ["connect", "503"] and shown["max_attempts"] == 5
    assert gw("source", "show", "b", "--json").json()["failover"] is None  # the store's applies
    text = gw("source", "show", "a").out
    assert "up to 5 attempts" in text and "connect, 503" in text
