"""`gwctl limit …`, scoped keys, the dry-run's limits section and validate's limit checks, through the CLI."""

from __future__ import annotations

import re
import time
import tomllib
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import invoke
from gwctl.activity import ActivityRecord, open_log, sqlite_dsn
from gwctl.core.limits import iso, window_bounds
from records import record


@pytest.fixture
def store(gw, store_path):
    """A source with a priced model (capped output), a route for triage/sub, and a key `ci`."""
    assert gw("source", "add", "local", "--base-url", "http://127.0.0.1:8000/v1", "--auth-env", "VLLM_KEY").code == 0
    assert (
        gw(
            "catalog", "set", "local/llama", "--max-output", "100", "--price", "input=1e-6", "--price", "output=2e-6"
        ).code
        == 0
    )
    assert gw("route", "set", "triage/sub", "--model-name", "m", "--provider", "local", "--model", "llama").code == 0
    assert gw("key", "create", "ci").code == 0
    return gw


def write_rows(tmp_path, *records: ActivityRecord) -> None:
    with open_log(sqlite_dsn(tmp_path / "activity.sqlite3")) as log:
        log.write_many(list(records))


def rec(when: float, **kw) -> ActivityRecord:
    return record(time=datetime.fromtimestamp(when, timezone.utc), **{"model": "m", **kw})


def assert_refused(res, store_path, before: bytes | None, message_part: str) -> None:
    """Exit 1, one `error:` sentence naming the problem (plus an optional hint), the store untouched."""
    assert res.code == 1, res
    lines = res.err.strip().splitlines()
    assert lines[0].startswith("error: "), res.err
    assert message_part in lines[0], res.err
    assert all(line.startswith("hint: ") for line in lines[1:]), res.err
    assert "Traceback" not in res.err and res.out == ""
    after = store_path.read_bytes() if store_path.exists() else None
    assert after == before


# --- set / list / remove ------------------------------------------------------


def test_set_list_remove_round_trip(store, store_path):
    gw = store
    res = gw("limit", "set", "key:ci", "--budget", "25", "--window", "month", "--rpm", "60")
    assert res.code == 0 and "limit on key:ci: budget $25 per month, 60 requests/min" in res.err
    assert gw("limit", "set", "agent:triage", "--budget", "0.50", "--window", "total", "--unbilled", "reject").code == 0
    assert gw("limit", "set", "source:local", "--tpm", "1000").code == 0
    assert gw("limit", "list", "--json").json() == [
        {"target": "key:ci", "budget": "25", "window": "month", "rpm": 60, "tpm": None, "unbilled": "allow"},
        {"target": "agent:triage", "budget": "0.50", "window": "total", "rpm": None, "tpm": None, "unbilled": "reject"},
        {"target": "source:local", "budget": None, "window": None, "rpm": None, "tpm": 1000, "unbilled": "allow"},
    ]
    res = gw("limit", "remove", "agent:triage", "--yes")
    assert res.code == 0 and "removed the limit on agent:triage" in res.err
    assert [x["target"] for x in gw("limit", "list", "--json").json()] == ["key:ci", "source:local"]
    assert gw("limit", "remove", "key:ci", "--yes").code == 0
    assert gw("limit", "remove", "source:local", "--yes").code == 0
    assert gw("limit", "list", "--json").json() == []
    assert "[[limits]]" not in store_path.read_text()  # the last one removed leaves no empty array behind


def test_budget_dollar_sign_is_stripped(store, store_path):
    assert store("limit", "set", "key:ci", "--budget", "$5", "--window", "day").code == 0
    assert store("limit", "list", "--json").json()[0]["budget"] == "5"
    assert 'budget = "5"' in store_path.read_text()


def test_comment_above_limits_survives_set_and_remove(store, store_path):
    gw = store
    assert gw("limit", "set", "key:ci", "--rpm", "5").code == 0
    text = store_path.read_text()
    assert text.count("[[limits]]") == 1
    store_path.write_text(text.replace("[[limits]]", "# CI may not run away\n[[limits]]"))
    assert gw("limit", "set", "source:local", "--rpm", "7").code == 0
    assert gw("limit", "set", "key:ci", "--rpm", "6").code == 0
    text = store_path.read_text()
    assert '# CI may not run away\n[[limits]]\ntarget = "key:ci"' in text
    assert gw("limit", "remove", "source:local", "--yes").code == 0
    assert "# CI may not run away\n[[limits]]" in store_path.read_text()
    assert [(x["target"], x["rpm"]) for x in gw("limit", "list", "--json").json()] == [("key:ci", 6)]


def test_editing_keeps_the_other_fields(store):
    gw = store
    assert (
        gw("limit", "set", "key:ci", "--budget", "10", "--window", "week", "--rpm", "5", "--unbilled", "reject").code
        == 0
    )
    assert gw("limit", "set", "key:ci", "--tpm", "900").code == 0
    assert gw("limit", "set", "key:ci", "--budget", "12").code == 0  # the window is kept
    assert gw("limit", "set", "key:ci", "--window", "day").code == 0  # the budget is kept
    assert gw("limit", "list", "--json").json() == [
        {"target": "key:ci", "budget": "12", "window": "day", "rpm": 5, "tpm": 900, "unbilled": "reject"}
    ]


@pytest.mark.parametrize("target", ["key:ci", "source:local", "agent:triage", "agent:triage/sub", "model:local/llama"])
def test_set_on_each_existing_kind(store, target):
    res = store("limit", "set", target, "--rpm", "3")
    assert res.code == 0 and "warning" not in res.err
    assert store("limit", "list", "--json").json()[0]["target"] == target


def test_model_not_listed_only_warns(store):
    res = store("limit", "set", "model:local/not-yet", "--rpm", "3")
    assert res.code == 0
    assert "warning: local/not-yet is not listed by source local yet and has no catalog entry" in res.err
    assert [x["target"] for x in store("limit", "list", "--json").json()] == ["model:local/not-yet"]


def test_list_human_table(store):
    assert store("limit", "set", "key:ci", "--budget", "3", "--window", "day", "--rpm", "9").code == 0
    res = invoke(["limit", "list"], force_tables=True)
    assert res.code == 0
    assert "key:ci" in res.out and "$3" in res.out and "day" in res.out and "9" in res.out


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["key:ci", "--budget", "-1", "--window", "day"], "a budget must be a non-negative number of USD"),
        (["key:ci", "--budget", "abc", "--window", "day"], "a budget must be a number of USD"),
        (["key:ci", "--budget", "nan", "--window", "day"], "a budget must be a non-negative number of USD"),
        (["key:ci", "--budget", "5", "--window", "year"], "unknown window 'year'"),
        (["key:ci", "--window", "day"], "--window applies to a budget, and this limit has none"),
        (["key:ci", "--budget", "5"], "a budget needs a window"),
        (["key:ci", "--rpm", "0"], "--rpm must be at least 1; got 0"),
        (["key:ci", "--tpm", "-1"], "--tpm must be at least 1; got -1"),
        (["key:ci", "--budget", "5", "--window", "day", "--unbilled", "maybe"], "unknown --unbilled policy 'maybe'"),
        (["ci", "--rpm", "1"], "'ci' is not a limit target"),
        (["user:ci", "--rpm", "1"], "'user:ci' is not a limit target"),
        (["key:", "--rpm", "1"], "'key:' is not a limit target"),
        (["model:llama", "--rpm", "1"], "'model:llama' names no model"),
        (["model:nosuch/llama", "--rpm", "1"], "no source named 'nosuch' (in model:nosuch/llama)"),
        (["key:nope", "--rpm", "1"], "no key named 'nope'"),
        (["source:nope", "--rpm", "1"], "no source named 'nope'"),
        (["agent:nope", "--rpm", "1"], "no agent 'nope'"),
        (["agent:triag", "--rpm", "1"], "no agent 'triag'"),  # a prefix of a name is not an ancestor
        (["key:ci"], "nothing to set"),
    ],
)
def test_set_refuses_bad_input(store, store_path, args, part):
    before = store_path.read_bytes()
    assert_refused(store("limit", "set", *args), store_path, before, part)


def test_bad_input_on_an_existing_limit_changes_nothing(store, store_path):
    assert store("limit", "set", "key:ci", "--budget", "5", "--window", "day").code == 0
    before = store_path.read_bytes()
    assert_refused(store("limit", "set", "key:ci", "--budget", "6", "--rpm", "0"), store_path, before, "--rpm")
    assert_refused(store("limit", "set", "key:ci", "--window", "fortnight"), store_path, before, "unknown window")


def test_remove_refusals(store, store_path):
    before = store_path.read_bytes()
    assert_refused(store("limit", "remove", "key:ci", "--yes"), store_path, before, "no limit on 'key:ci'")
    assert store("limit", "set", "key:ci", "--rpm", "2").code == 0
    before = store_path.read_bytes()
    res = store("limit", "remove", "key:ci")  # not a terminal, no --yes
    assert_refused(res, store_path, before, "--yes is required when not running interactively")
    assert len(store("limit", "list", "--json").json()) == 1


# --- keys -------------------------------------------------------------------------


def test_key_create_with_scope_and_expiry(gw, store_path):
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    res = gw(
        "key", "create", "bot", "--agent", "triage", "--agent", "ops/x", "--agent", "triage",
        "--model", "local/*", "--expires", "2h", "--json",
    )  # fmt: skip
    t1 = datetime.now(timezone.utc).replace(microsecond=0)
    assert res.code == 0, res.err
    doc = res.json()
    assert set(doc) == {"name", "key", "prefix", "created", "agents", "models", "expires"}
    assert doc["name"] == "bot" and doc["key"].startswith(doc["prefix"])
    assert doc["agents"] == ["triage", "ops/x"] and doc["models"] == ["local/*"]
    expires = doc["expires"]
    assert len(expires) == 20 and expires.endswith("Z")
    when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert t0 + timedelta(hours=2) <= when <= t1 + timedelta(hours=2)
    stored = tomllib.loads(store_path.read_text())["keys"]["bot"]
    assert stored["agents"] == ["triage", "ops/x"] and stored["models"] == ["local/*"]
    assert stored["expires"] == expires
    assert doc["key"] not in store_path.read_text()
    listed = gw("key", "list", "--json").json()
    assert listed == [
        {
            "name": "bot",
            "prefix": doc["prefix"],
            "created": doc["created"],
            "agents": ["triage", "ops/x"],
            "models": ["local/*"],
            "expires": expires,
        }
    ]


def test_key_without_scope_lists_empty_scope(gw):
    doc = gw("key", "create", "plain", "--json").json()
    assert (doc["agents"], doc["models"], doc["expires"]) == ([], [], None)
    assert gw("key", "list", "--json").json()[0] | {"created": None} == {
        "name": "plain",
        "prefix": doc["prefix"],
        "created": None,
        "agents": [],
        "models": [],
        "expires": None,
    }


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["--agent", "triage//x"], "'triage//x' is not an agent path"),
        (["--agent", "/triage"], "'/triage' is not an agent path"),
        (["--agent", "tri age"], "'tri age' is not an agent path"),
        (["--expires", "tomorrow"], "--expires: invalid duration 'tomorrow'"),
        (["--expires", "0d"], "--expires: invalid duration '0d'"),
        (["--expires", "-3h"], "--expires: invalid duration '-3h'"),
        (["--model", " "], "--model needs a glob"),
    ],
)
def test_key_create_refuses_bad_scope(store, store_path, args, part):
    before = store_path.read_bytes()
    assert_refused(store("key", "create", "bot", *args), store_path, before, part)


def test_key_revoke_removes_its_limit(store, store_path):
    gw = store
    assert gw("limit", "set", "key:ci", "--rpm", "5").code == 0
    assert gw("limit", "set", "source:local", "--rpm", "5").code == 0
    res = gw("key", "revoke", "ci", "--yes")
    assert res.code == 0 and "revoked key ci and removed its limit" in res.err
    assert [x["target"] for x in gw("limit", "list", "--json").json()] == ["source:local"]
    assert gw("key", "create", "other").code == 0
    res = gw("key", "revoke", "other", "--yes")
    assert res.code == 0 and "revoked key other" in res.err and "limit" not in res.err
    assert [x["target"] for x in gw("limit", "list", "--json").json()] == ["source:local"]


# --- status -----------------------------------------------------------------------


def test_status_without_a_log_warns_and_shows_zeros(store, tmp_path):
    gw = store
    assert gw("limit", "set", "key:ci", "--budget", "5", "--window", "month", "--rpm", "3").code == 0
    before = time.time()
    res = gw("limit", "status", "--json")
    assert res.code == 0
    assert "warning: cannot read the activity log" in res.err and "spend taken as $0" in res.err
    [row] = res.json()
    now = time.time()
    start, end = window_bounds("month", now)
    assert row["target"] == "key:ci"
    assert (row["spent"], row["reserved"], row["left"], row["unbilled_requests"]) == ("0", "0", "5", 0)
    assert (row["window_start"], row["resets_at"]) == (iso(start), iso(end))
    assert (row["requests"], row["tokens"]) == (0, 0)
    assert set(row) == {
        "target", "budget", "rpm", "tpm", "window", "window_start", "resets_at", "spent", "reserved", "left",
        "unbilled", "unbilled_requests", "minute_start", "requests", "tokens",
    }  # fmt: skip
    assert row["minute_start"] in {iso(window_bounds("minute", t)[0]) for t in (before, now)}
    assert not (tmp_path / "activity.sqlite3").exists()  # a read-only command leaves no log behind


def test_status_no_limits(gw):
    res = gw("limit", "status", "--json")
    assert res.code == 0 and res.json() == []


def test_status_unknown_target(store):
    res = store("limit", "status", "key:ci")
    assert res.code == 1 and res.err.startswith("error: no limit on 'key:ci'")


@pytest.mark.parametrize("window", ["day", "week", "month", "total"])
def test_status_counts_the_window_only(store, tmp_path, window):
    gw = store
    assert gw("limit", "set", "key:ci", "--budget", "1", "--window", window).code == 0
    now = time.time()
    start, end = window_bounds(window, now)
    inside = max(start, now - 5)
    outside = start - 1 if window != "total" else None
    rows = [
        rec(inside, cost=Decimal("0.1")),
        rec(inside, cost=Decimal("0.0000002")),
        rec(inside, cost=None),  # unbilled
        rec(inside, cost=None, route_kind="passthrough"),  # unbilled too
        rec(inside, cost=None, route_kind="rejected", status=429, rule="budget_exceeded"),  # not unbilled
        rec(inside, cost=None, status=502),  # failed upstream: not unbilled
        rec(inside, key_name="other", cost=Decimal("7")),  # another key
    ]
    if outside is not None:
        rows += [rec(outside, cost=Decimal("3")), rec(outside, cost=None)]
    write_rows(tmp_path, *rows)
    res = gw("limit", "status", "key:ci", "--json")
    assert res.code == 0 and res.err == ""
    assert res.json() == [
        {
            "target": "key:ci",
            "budget": "1",
            "rpm": None,
            "tpm": None,
            "window": window,
            "window_start": iso(start),
            "resets_at": iso(end),
            "spent": "0.1000002",
            "reserved": "0",
            "left": "0.8999998",
            "unbilled": "allow",
            "unbilled_requests": 2,
        }
    ]
    if window == "total":
        assert res.json()[0]["window_start"] == "1970-01-01T00:00:00Z" and res.json()[0]["resets_at"] is None


def test_status_all_targets_and_agent_subtree(store, tmp_path):
    gw = store
    assert gw("route", "set", "triage2", "--model-name", "m", "--provider", "local", "--model", "llama").code == 0
    assert gw("limit", "set", "agent:triage", "--budget", "10", "--window", "day").code == 0
    assert gw("limit", "set", "source:local", "--budget", "10", "--window", "total", "--rpm", "100").code == 0
    assert gw("limit", "set", "model:local/llama", "--budget", "10", "--window", "month").code == 0
    at = time.time()
    write_rows(
        tmp_path,
        rec(at, agent="triage", cost=Decimal("1")),
        rec(at, agent="triage/sub", cost=Decimal("0.25")),
        rec(at, agent="triage/sub/deeper", cost=Decimal("0.05")),
        rec(at, agent="triage2", cost=Decimal("4")),  # a sibling whose name starts with "triage": not counted
        rec(at, agent="Triage", cost=Decimal("8")),  # case matters
        rec(at, agent=None, source="other", upstream_model="llama", cost=Decimal("16")),
        rec(at, agent=None, upstream_model="qwen", cost=Decimal("32")),
    )
    res = gw("limit", "status", "--json")
    assert res.code == 0 and res.err == ""
    got = {r["target"]: (r["spent"], r["left"]) for r in res.json()}
    assert got == {
        "agent:triage": ("1.30", "8.70"),
        "source:local": ("45.30", "-35.30"),
        "model:local/llama": ("13.30", "-3.30"),
    }
    assert [r["target"] for r in res.json()] == ["agent:triage", "source:local", "model:local/llama"]
    if window_bounds("minute", time.time())[0] == window_bounds("minute", at)[0]:  # not across a minute
        assert res.json()[1]["requests"] == 6  # this minute's admitted requests of source local, from the log
    assert store("limit", "status", "agent:triage/sub", "--json").code == 1  # no limit on the subagent itself


# --- route dry-run --key -------------------------------------------------------------


def dry(gw, *extra):
    return gw("route", "dry-run", "--agent", "triage/sub", "--model", "m", "--json", *extra)


def test_dry_run_key_scope_refusal(store):
    gw = store
    assert gw("key", "create", "bot", "--agent", "ops").code == 0
    res = dry(gw, "--key", "bot")
    assert res.code == 1
    limits = res.json()["limits"]
    assert limits["key"] == "bot" and limits["admitted"] is False
    assert (limits["rule"], limits["status"]) == ("key_scope", 403)
    assert limits["key_check"]["rule"] == "key_scope"
    assert gw("key", "create", "modelbot", "--model", "openai/*").code == 0
    res = dry(gw, "--key", "modelbot")
    assert res.code == 1 and res.json()["limits"]["rule"] == "key_scope"
    assert gw("key", "create", "ok", "--agent", "triage", "--model", "local/ll*").code == 0
    res = dry(gw, "--key", "ok")
    assert res.code == 0 and res.json()["limits"]["admitted"] is True and res.json()["limits"]["key_check"] is None


def test_dry_run_expired_key(store, store_path):
    gw = store
    assert gw("key", "create", "old", "--expires", "1h").code == 0
    text = store_path.read_text()
    text, n = re.subn(r'expires = "[^"]+"', 'expires = "2020-01-01T00:00:00Z"', text)
    assert n == 1
    store_path.write_text(text)
    res = dry(gw, "--key", "old")
    assert res.code == 1
    limits = res.json()["limits"]
    assert (limits["rule"], limits["status"]) == ("key_expired", 401)
    assert "expired at 2020-01-01T00:00:00Z" in limits["message"]


def test_dry_run_budget_nearly_spent(store, tmp_path):
    gw = store
    assert gw("limit", "set", "source:local", "--budget", "1", "--window", "day").code == 0
    now = time.time()
    write_rows(tmp_path, rec(max(window_bounds("day", now)[0], now - 5), cost=Decimal("0.9999")))
    res = dry(gw, "--key", "ci")
    assert res.code == 1
    limits = res.json()["limits"]
    assert (limits["rule"], limits["status"], limits["admitted"]) == ("budget_exceeded", 429, False)
    assert "spent $0.9999 of $1 this day" in limits["message"]
    [source] = limits["limits"]
    assert source["target"] == "source:local" and source["left"] == "0.0001" and source["admits"] is False
    assert source["rule"] == "budget_exceeded"
    usd = Decimal(limits["reservation"]["usd"])
    assert usd > Decimal("0.0001")  # what it may cost is more than what is left
    assert limits["reservation"]["output_tokens"] == 100 and limits["reservation"]["output_from"] == "max_output"
    # human output names the refusal too
    human = invoke(["route", "dry-run", "--agent", "triage/sub", "--model", "m", "--key", "ci"])
    assert human.code == 1 and "REFUSE 429 [budget_exceeded]" in human.out


def test_dry_run_admitted_lists_each_limit_in_order(store, tmp_path):
    gw = store
    for target in ("model:local/llama", "source:local", "agent:triage", "agent:triage/sub", "key:ci"):
        assert gw("limit", "set", target, "--budget", "50", "--window", "month", "--rpm", "100").code == 0
    res = dry(gw, "--key", "ci")
    assert res.code == 0, res.out
    limits = res.json()["limits"]
    assert set(limits) == {"key", "key_check", "reservation", "limits", "admitted", "rule", "status", "message"}
    assert limits["admitted"] is True and limits["rule"] is None and limits["status"] is None
    assert limits["key"] == "ci" and limits["key_check"] is None and limits["message"] is None
    assert [x["target"] for x in limits["limits"]] == [
        "key:ci",
        "agent:triage/sub",
        "agent:triage",
        "source:local",
        "model:local/llama",
    ]
    assert all(x["admits"] and x["rule"] is None and x["left"] == "50" for x in limits["limits"])


def test_dry_run_without_key_still_evaluates_limits(store):
    gw = store
    assert gw("limit", "set", "agent:triage", "--rpm", "10").code == 0
    assert gw("limit", "set", "model:local/llama", "--tpm", "50").code == 0  # 100 output tokens alone exceed it
    assert gw("limit", "set", "key:ci", "--rpm", "1").code == 0  # no key presented: not applicable
    res = dry(gw)
    assert res.code == 1
    limits = res.json()["limits"]
    assert limits["key"] is None and limits["key_check"] is None
    assert [x["target"] for x in limits["limits"]] == ["agent:triage", "model:local/llama"]
    assert (limits["rule"], limits["status"]) == ("rate_limited", 429)


def test_dry_run_without_limits_or_key_has_no_limits_section(store):
    res = dry(store)
    assert res.code == 0 and "limits" not in res.json()


def test_dry_run_unknown_key(store):
    res = dry(store, "--key", "nope")
    assert res.code == 1 and res.err.startswith("error: no key named 'nope'") and res.out == ""


# --- validate ------------------------------------------------------------------------


def test_validate_warns_about_limits(store, store_path):
    gw = store
    assert gw("catalog", "set", "local/unbounded", "--price", "input=1e-6", "--price", "output=2e-6").code == 0
    assert gw("key", "create", "gone").code == 0
    assert gw("limit", "set", "key:gone", "--rpm", "1").code == 0
    assert gw("limit", "set", "source:local", "--budget", "10", "--window", "day").code == 0
    with store_path.open("a") as fh:
        fh.write('\n[[limits]]\ntarget = "agent:triage"\n')  # caps nothing
    store_path.write_text(store_path.read_text().replace("[keys.gone]", "[keys.gone-renamed]"))
    res = gw("validate", "--json")
    doc = res.json()
    warnings = {(p["where"], p["message"]) for p in doc["problems"] if p["level"] == "warning"}
    assert ("limits[0]", "the limit on key:gone applies to nothing: no such key") in warnings
    assert ("limits[2]", "the limit on agent:triage caps nothing") in warnings
    [budget] = [m for w, m in warnings if w == "limits[1]"]
    assert budget.startswith("the budget on source:local covers local/unbounded, whose entries set neither")
    assert len(warnings) == 4  # and VLLM_KEY unset; the capped entry local/llama is not named
    assert doc["errors"] == 0 and res.code == 0


def test_validate_key_with_bad_agent_is_an_error(store, store_path):
    text = store_path.read_text().replace("[keys.ci]\n", '[keys.ci]\nagents = ["triage//x"]\n')
    store_path.write_text(text)
    res = store("validate", "--json")
    assert res.code == 1
    errors = [p for p in res.json()["problems"] if p["level"] == "error"]
    assert [(p["where"], p["message"]) for p in errors] == [
        ("keys.ci.agents", "'triage//x' is not an agent path (triage or triage/summarizer)")
    ]


# --- hand-written stores with bad [[limits]] ----------------------------------------------------


@pytest.mark.parametrize(
    ("table", "field", "part"),
    [
        ('target = "key:ci"\nrpm = 5\nburst = 3\n', "burst", "burst"),
        ('target = "key:ci"\nbudget = "abc"\nwindow = "day"\n', "budget", "a budget must be a number of USD"),
        ('target = "key:ci"\nbudget = "5"\nwindow = "year"\n', "window", "'year' is not day, week, month or total"),
        ('target = "key:ci"\nrpm = 0\n', "rpm", "rpm"),
        ('target = "key:ci"\nunbilled = "sometimes"\n', "unbilled", "'sometimes' is not allow or reject"),
        ('target = "robot:ci"\nrpm = 1\n', "target", "is not key:NAME"),
        ('target = "model:llama"\nrpm = 1\n', "target", "is not key:NAME"),
        ("rpm = 1\n", "[[limits]]", "limits[0] has no target"),
    ],
)
def test_bad_limits_table_is_reported_and_never_overwritten(store, store_path, table, field, part):
    gw = store
    original = store_path.read_text() + "\n# hand-written\n[[limits]]\n" + table
    store_path.write_text(original)
    line = original.splitlines().index(next(x for x in original.splitlines() if x.startswith(field))) + 1
    before = store_path.read_bytes()
    for args in (
        ("limit", "list"),
        ("limit", "set", "key:ci", "--rpm", "3"),
        ("limit", "remove", "key:ci", "--yes"),
        ("key", "create", "another"),
        ("key", "revoke", "ci", "--yes"),
    ):
        res = gw(*args)
        assert res.code == 1, (args, res)
        first = res.err.splitlines()[0]
        assert first.startswith(f"error: {store_path}:{line}: "), (first, line)
        assert "limits[0]" in first and part in first, first
        assert store_path.read_bytes() == before


def test_duplicate_limit_target_is_reported(store, store_path):
    original = (
        store_path.read_text() + '\n[[limits]]\ntarget = "key:ci"\nrpm = 1\n\n[[limits]]\ntarget = "key:ci"\nrpm = 2\n'
    )
    store_path.write_text(original)
    before = store_path.read_bytes()
    second = [i for i, x in enumerate(original.splitlines(), 1) if x == "[[limits]]"][1]
    for args in (("limit", "status"), ("limit", "set", "key:ci", "--rpm", "3"), ("validate",)):
        res = store(*args)
        assert res.code == 1
        first = res.err.splitlines()[0]
        assert "limits[1] repeats target 'key:ci'; one limit per target" in first, first
        assert f"{store_path}:{second}:" in first, (first, second)
        assert store_path.read_bytes() == before


def test_hand_written_model_target_without_slash(store, store_path, tmp_path):
    """The store refuses what `limit set` refuses (a model target with no SOURCE/), rather than
    `limit status` failing with an internal error once a log exists."""
    write_rows(tmp_path, rec(time.time()))
    original = store_path.read_text() + '\n[[limits]]\ntarget = "model:llama"\nrpm = 1\n'
    store_path.write_text(original)
    line = original.splitlines().index('target = "model:llama"') + 1
    res = store("limit", "status", "--json")
    assert res.code == 1 and "internal error" not in res.err
    assert res.err.startswith(f"error: {store_path}:{line}: limits[0].target = 'model:llama' is not key:NAME")


def test_hand_written_budget_with_dollar_sign(store, store_path):
    """`budget = "$5"` by hand means what `--budget $5` means: shown once as $5, not $$5."""
    store_path.write_text(store_path.read_text() + '\n[[limits]]\ntarget = "source:local"\nbudget = "$5"\n')
    assert store("limit", "list", "--json").json() == [
        {"target": "source:local", "budget": "5", "window": "total", "rpm": None, "tpm": None, "unbilled": "allow"}
    ]
    res = invoke(["limit", "list"], force_tables=True)
    assert "$5" in res.out and "$$" not in res.out
