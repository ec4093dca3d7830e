"""`gwctl activity reprice`: the logged usage priced again under a proposed catalog, against hand-computed
figures: per group, the total, requests that become billed or unbilled, requests the proposal's checks would
refuse (replayed through the proxy's decision), rows logged without a shape, effective-dated proposed prices,
the --max-increase gate for CI, and --apply's rewrite that keeps each row's first cost. Both backends."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gwctl.activity import open_log
from gwctl.core.request import features, request_shape, shape_text
from records import record

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PLAIN = shape_text(request_shape(features("/v1/chat/completions", {"model": "x", "max_tokens": 100, "messages": []})))
TOOLS = shape_text(
    request_shape(
        features(
            "/v1/chat/completions",
            {
                "model": "x",
                "max_tokens": 100,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "messages": [],
            },
        )
    )
)
BIG = shape_text(request_shape(features("/v1/chat/completions", {"model": "x", "max_tokens": 3000, "messages": []})))


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request, tmp_path, monkeypatch):
    if request.param == "sqlite":
        value = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    else:
        base = os.environ.get("GWCTL_TEST_POSTGRES")
        if not base:
            pytest.skip("set GWCTL_TEST_POSTGRES (bash .ci/postgres.sh) for the PostgreSQL backend")
        value = _fresh_pg(base)
    monkeypatch.setenv("GWCTL_ACTIVITY", value)
    return value


def _fresh_pg(base: str) -> str:
    """An empty database of its own on the test server (the log's tables are created by gwctl)."""
    import uuid

    import psycopg

    name = f"reprice_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def store(gw):
    """Sources a and b; a/m1 at input 1e-6 / output 2e-6, max output 2000; a/m2 at 5e-6 / 5e-6; b/free unpriced."""
    gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1")
    gw("source", "add", "b", "--base-url", "http://127.0.0.1:9/v1")
    gw("catalog", "set", "a/m1", "--price", "input=1e-6", "--price", "output=2e-6", "--max-output", "2000")
    gw("catalog", "set", "a/m2", "--price", "input=5e-6", "--price", "output=5e-6")
    return gw


def seed(dsn):
    """Rows with hand-known costs (usage 1000 in / 100 out unless said):
    a/m1 x3 (agent triage, 0.0012 each; one uses tools, one asked max_tokens 3000 - over the proposal's 1000),
    a/m2 x1 (agent triage/sub, 0.0055), b/free x2 (unbilled; one without a shape: logged before shapes),
    a rejected row, an upstream error (neither priced)."""
    usage = {"input_tokens": 1000, "output_tokens": 100}
    rows = [
        record(time=T0, source="a", upstream_model="m1", model="a/m1", agent="triage", usage=usage, cost=Decimal("0.0012"), shape=PLAIN),
        record(time=T0 + timedelta(hours=1), source="a", upstream_model="m1", model="a/m1", agent="triage", usage=usage, cost=Decimal("0.0012"), shape=TOOLS),
        record(time=T0 + timedelta(hours=2), source="a", upstream_model="m1", model="a/m1", agent="triage", usage=usage, cost=Decimal("0.0012"), shape=BIG),
        record(time=T0 + timedelta(hours=3), source="a", upstream_model="m2", model="a/m2", agent="triage/sub", usage=usage, cost=Decimal("0.0055"), shape=PLAIN),
        record(time=T0 + timedelta(hours=4), source="b", upstream_model="free", model="b/free", agent="other", usage=usage, cost=None, shape=PLAIN),
        record(time=T0 + timedelta(hours=5), source="b", upstream_model="free", model="b/free", agent="other", usage=usage, cost=None),
        record(time=T0 + timedelta(hours=6), source="a", upstream_model="m1", model="a/m1", route_kind="rejected", status=400, cost=None, rule="max_output"),
        record(time=T0 + timedelta(hours=7), source="a", upstream_model="m1", model="a/m1", route_kind="error", status=502, cost=None, rule="upstream_unreachable"),
    ]  # fmt: skip
    with open_log(dsn) as log:
        log.write_many(rows)


PROPOSED = {
    "schema": 1,
    "catalog": {
        # output doubles from the 20th 14:00 (a dated set): rows at 12:00 and 13:00 keep 2e-6, 14:00 gets 4e-6;
        # max output 1000 now refuses the row that asked 3000; tools switched off refuses the tools row
        "a/m1": {
            "prices": {"input": "1e-6", "output": "2e-6"},
            "price_sets": [{"valid_from": "2026-11-20T14:00:00Z", "input": "1e-6", "output": "4e-6"}],
            "max_output": 1000,
            "capabilities": {"tools": False},
        },
        # a/m2 left out: unbilled under the proposal
        "b/free": {"prices": {"input": "1e-7", "output": "1e-7"}},  # now priced: 1000e-7 + 100e-7 = 0.00011
    },
}


def write(tmp_path, doc, name="proposed.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_reprice_against_hand_computed_figures(store, dsn, tmp_path):
    seed(dsn)
    res = store("activity", "reprice", "--catalog", write(tmp_path, PROPOSED), "--json")
    assert res.code == 0, res
    doc = res.json()
    groups = {g["key"]: g for g in doc["groups"]}
    # source a: now 3 * 0.0012 + 0.0055 = 0.0091; proposed 0.0012 + 0.0012 + (0.001 + 0.0004) = 0.0038 (m2 unbilled)
    assert groups["a"] == {
        "key": "a",
        "requests": 4,
        "current": "0.0091",
        "proposed": "0.0038",
        "difference": "-0.0053",
        "percent": "-58.24",
        "current_unbilled": 0,
        "proposed_unbilled": 1,
    }
    # source b: nothing billed now; 2 * 0.00011 proposed
    assert groups["b"]["current"] == "0" and groups["b"]["proposed"] == "0.00022" and groups["b"]["percent"] is None
    assert doc["total"]["current"] == "0.0091" and doc["total"]["proposed"] == "0.00402"
    assert doc["total"]["requests"] == 6
    assert doc["became_billed"] == {"requests": 2, "proposed": "0.00022"}
    assert doc["became_unbilled"] == {"requests": 1, "current": "0.0055"}
    assert doc["would_be_rejected"] == {"requests": 2, "rules": {"capability_tools": 1, "max_output": 1}}
    assert doc["not_replayable"] == 1 and doc["not_priced"] == 2
    assert doc["catalog"].endswith("proposed.json") and doc["exceeded"] is None


def test_groups_by_agent_and_model(store, dsn, tmp_path):
    seed(dsn)
    doc = store("activity", "reprice", "--catalog", write(tmp_path, PROPOSED), "--by", "agent", "--json").json()
    assert {g["key"]: (g["current"], g["proposed"]) for g in doc["groups"]} == {
        "triage": ("0.0036", "0.0038"),
        "triage/sub": ("0.0055", "0"),
        "other": ("0", "0.00022"),
    }
    doc = store("activity", "reprice", "--catalog", write(tmp_path, PROPOSED), "--by", "model", "--json").json()
    assert {g["key"] for g in doc["groups"]} == {"a/m1", "a/m2", "b/free"}


def test_max_increase_gates_ci(store, dsn, tmp_path):
    seed(dsn)
    dearer = {"schema": 1, "catalog": {"a/m1": {"prices": {"input": "1.1e-6", "output": "2e-6"}}}}  # +0.0001 each
    path = write(tmp_path, dearer)
    # a/m1 rows: 0.0036 -> 0.0039; a/m2 left out of the file: unbilled (0.0055 -> 0). Total 0.0091 -> 0.0039.
    assert store("activity", "reprice", "--catalog", path, "--max-increase", "0").code == 0
    only_m1 = {"schema": 1, "catalog": {**dearer["catalog"], "a/m2": {"prices": {"input": "5e-6", "output": "5e-6"}}}}
    path = write(tmp_path, only_m1, "dearer.toml.json")
    res = store("activity", "reprice", "--catalog", path, "--max-increase", "3")
    # 0.0091 -> 0.0094: +3.30 % is over 3 %
    assert res.code == 1 and "+3.30%: over the --max-increase of 3%" in res.out
    res = store("activity", "reprice", "--catalog", path, "--max-increase", "3.5", "--json")
    assert res.code == 0 and res.json()["exceeded"] is False and res.json()["total"]["percent"] == "3.30"
    assert store("activity", "reprice", "--catalog", path, "--max-increase", "many").code == 1


def test_the_table_on_a_terminal(store, dsn, tmp_path):
    from conftest import invoke

    seed(dsn)
    res = invoke(["activity", "reprice", "--catalog", write(tmp_path, PROPOSED)], force_tables=True)
    assert res.code == 0
    assert "CURRENT USD" in res.out and "TOTAL" in res.out
    assert "became billed: 2 request(s), 0.00022 USD at the proposed prices" in res.out
    assert "became unbilled: 1 request(s) costing 0.0055 USD now" in res.out
    assert "would be rejected: 2 request(s) (capability_tools 1, max_output 1)" in res.out
    assert "not replayable: 1 request(s)" in res.out


def test_without_a_catalog_file_the_store_is_the_proposal(store, dsn):
    seed(dsn)
    doc = store("activity", "reprice", "--json").json()
    # the store prices the log as it was priced: nothing changes but b/free stays unbilled
    assert doc["total"]["current"] == doc["total"]["proposed"] == "0.0091"
    assert doc["would_be_rejected"]["requests"] == 1  # max_tokens 3000 over a/m1's max output of 2000
    assert doc["catalog"] == "store"


def test_apply_rewrites_costs_and_keeps_the_first(store, dsn):
    seed(dsn)
    store("catalog", "set", "a/m1", "--price", "output=3e-6", "--valid-from", "2026-11-20T12:30:00Z")  # late correction
    res = store("activity", "reprice", "--apply")
    assert res.code != 0 and "--yes" in res.err  # no terminal: it asks for --yes, changes nothing
    assert {
        r["cost"] for r in store("activity", "list", "--json").json() if r["model"] == "a/m1" and r["status"] == 200
    } == {"0.0012"}
    res = store("activity", "reprice", "--apply", "--yes")
    assert res.code == 0 and "rewrote the cost of 2 request(s)" in res.err
    rows = {r["time"]: r for r in store("activity", "list", "--json").json()}
    first, second, third = (rows[f"2026-11-20T{h}:00:00.000000Z"] for h in (12, 13, 14))
    assert first["cost"] == "0.0012" and first["original_cost"] is None and first["repriced_at"] is None  # before
    assert second["cost"] == "0.0013" and second["original_cost"] == "0.0012" and second["repriced_at"]
    assert third["cost"] == "0.0013" and third["original_cost"] == "0.0012"
    store("catalog", "set", "a/m1", "--price", "output=4e-6", "--valid-from", "2026-11-20T12:30:00Z")
    assert store("activity", "reprice", "--apply", "--yes").code == 0
    second = {r["time"]: r for r in store("activity", "list", "--json").json()}["2026-11-20T13:00:00.000000Z"]
    assert second["cost"] == "0.0014" and second["original_cost"] == "0.0012"  # the first cost, not the last
    summary = store("activity", "summary", "--json").json()
    assert Decimal(summary["total"]["cost"]) == Decimal("0.0012") + 2 * Decimal("0.0014") + Decimal("0.0055")
    res = store("activity", "reprice", "--apply", "--yes")
    assert res.code == 0 and "nothing to rewrite" in res.err


def test_apply_with_a_proposed_catalog_is_refused(store, dsn, tmp_path):
    seed(dsn)
    res = store("activity", "reprice", "--catalog", write(tmp_path, PROPOSED), "--apply", "--yes")
    assert res.code == 1 and "--catalog is only a what-if" in res.err
    assert {r["cost"] for r in store("activity", "list", "--json").json() if r["model"] == "a/m2"} == {"0.0055"}


def test_a_bad_catalog_file_is_a_clear_error(store, dsn, tmp_path):
    seed(dsn)
    bad = {"schema": 1, "catalog": {"a/m1": {"prices": {"input": "-1"}}}}
    res = store("activity", "reprice", "--catalog", write(tmp_path, bad))
    assert res.code == 1 and res.err.startswith("error: ") and "Traceback" not in res.err
    assert store("activity", "reprice", "--by", "day").code == 1


def test_an_empty_log(store):
    res = store("activity", "reprice", "--json")
    assert res.code == 0 and res.json()["total"]["requests"] == 0


def test_sums_and_differences_never_round_and_a_generator_is_read_once():
    """Costs with more digits than the default context's 28: the groups, the became-billed and
    became-unbilled figures and the difference are exact; the records come from a one-pass generator
    (as ``ActivityLog.scan`` streams them) and ``changes`` keeps what --apply needs, not the records."""
    from gwctl.activity.reprice import reprice
    from gwctl.core.config import Snapshot

    tiny = Decimal("1E-30")
    big = Decimal("12345678901234567890.123456789")
    usage = {"input_tokens": 1, "output_tokens": 1}
    rows = [
        record(time=T0, source="a", upstream_model="m", model="a/m", usage=usage, cost=big),
        record(time=T0, source="a", upstream_model="m", model="a/m", usage=usage, cost=tiny),
    ]
    taken = []

    def once():
        for r in rows:
            taken.append(r.request_id)
            yield r

    res = reprice(once(), Snapshot(), "source")  # an empty catalog: both become unbilled
    assert taken == [r.request_id for r in rows]
    exact = Decimal("12345678901234567890.123456789000000000000000000001")
    assert res.total.current == exact and res.total.proposed == 0
    assert res.total.difference == exact.copy_negate()  # the default context would have rounded it to 28 digits
    assert res.became_unbilled == 2 and res.became_unbilled_cost == exact
    assert res.changes == [(r.request_id, r.time, None) for r in rows] and res.changed == 2
    what_if = reprice(iter(rows), Snapshot(), "source", keep_changes=False)  # a what-if holds nothing per row
    assert what_if.changes == [] and what_if.changed == 2 and what_if.total == res.total


def test_scan_streams_the_same_records_as_list(store, dsn):
    """``scan`` (a row at a time) yields what ``list(limit=None)`` returns, newest first, honouring since."""
    seed(dsn)
    with open_log(dsn) as log:
        listed = log.list(limit=None)
        assert [r.request_id for r in log.scan()] == [r.request_id for r in listed]
        later = T0 + timedelta(hours=4)
        assert [r.request_id for r in log.scan(since=later)] == [r.request_id for r in listed if r.time >= later]
        assert [r.cost for r in log.scan()] == [r.cost for r in listed]
