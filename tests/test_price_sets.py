"""Effective-dated prices: an entry's dated price sets, the set in force at a request's time, the store's
form, the CLI (catalog set --valid-from, show, export/import, price --at), the linter, and the log writer
pricing each row at the set in force when its request was made."""

from __future__ import annotations

import pickle
import time
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType as MP

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwctl.activity.child import neutral_row
from gwctl.activity.entry import LogEntry
from gwctl.core.catalog_values import lint_entry
from gwctl.core.config import CatalogEntry, PriceSet
from gwctl.core.pricing import Usage
from gwctl.store.file import load
from gwctl.store.schema import SchemaError, parse_entry

NOV = datetime(2026, 11, 1, tzinfo=timezone.utc)
DEC = datetime(2026, 12, 1, tzinfo=timezone.utc)


def pset(start: datetime, **prices: str) -> PriceSet:
    return PriceSet(start, MP({k: Decimal(v) for k, v in prices.items()}), MP(dict(prices)))


ENTRY = CatalogEntry(
    "src",
    "m1",
    prices=MP({"input": Decimal("1e-6"), "output": Decimal("2e-6")}),
    price_sets=(pset(DEC, input="3e-6", output="4e-6"), pset(NOV, input="2e-6", output="2e-6")),
)


def test_the_set_in_force_at_its_boundaries():
    nov, dec = NOV.timestamp(), DEC.timestamp()
    assert ENTRY.at(nov - 1e-6) is ENTRY  # before the first dated set: the undated prices
    assert ENTRY.at(nov).prices["input"] == Decimal("2e-6")  # from the very instant of valid_from
    assert ENTRY.at(dec - 1e-6).prices["input"] == Decimal("2e-6")
    assert ENTRY.at(dec).prices == {"input": Decimal("3e-6"), "output": Decimal("4e-6")}
    assert ENTRY.at(dec + 86400 * 365).prices["input"] == Decimal("3e-6")
    assert ENTRY.at(dec) is ENTRY.at(dec + 5)  # one entry object per set: price plans are remembered by object
    assert ENTRY.set_at(nov - 1) is None and ENTRY.set_at(dec).valid_from == DEC
    assert [s.valid_from for s in ENTRY.schedule] == [NOV, DEC] and ENTRY.price_sets[0].valid_from == DEC
    plain = CatalogEntry("src", "m2", prices=MP({"input": Decimal(1)}))
    assert plain.at(0) is plain and plain.set_at(0) is None


def test_of_two_sets_with_one_start_the_later_written_wins():
    e = CatalogEntry("s", "m", price_sets=(pset(DEC, input="1"), pset(DEC, input="2")))
    assert e.at(DEC.timestamp()).prices["input"] == Decimal(2)
    assert any("several price sets start at 2026-12-01T00:00:00Z" in w for w in lint_entry(e))


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=6), st.integers(0, 2 * 10**9))
def test_at_picks_the_latest_start_not_after_the_time(starts, when):
    sets = tuple(pset(datetime.fromtimestamp(s, timezone.utc), input=str(i + 1)) for i, s in enumerate(starts))
    e = CatalogEntry("s", "m", prices=MP({"input": Decimal(0)}), price_sets=sets)
    started = [(s, i) for i, s in enumerate(starts) if s <= when]
    expected = Decimal(0) if not started else Decimal(max(started)[1] + 1)
    # the latest start wins; of equal starts, the later written (max over (start, index))
    assert e.at(when).prices["input"] == expected


def test_entries_with_sets_pickle_for_the_log_writer():
    again = pickle.loads(pickle.dumps(ENTRY))
    assert again.price_sets == ENTRY.price_sets and again.at(DEC.timestamp()).prices == ENTRY.at(DEC.timestamp()).prices


def _row(when: float, entry=ENTRY) -> LogEntry:
    usage = Usage(input_tokens=1000, output_tokens=100).counts()
    return LogEntry(when, "r1", None, None, "managed", "src", "src/m1", "m1", "/v1/chat/completions", 200, 1.0,
                    usage, entry, "src/m1", None, None, False, None)  # fmt: skip


def test_the_log_writer_prices_each_row_at_the_set_in_force_at_its_time():
    plans: dict = {}
    before = neutral_row(_row(NOV.timestamp() - 0.001), plans)
    on = neutral_row(_row(NOV.timestamp()), plans)
    later = neutral_row(_row(DEC.timestamp() + 10), plans)
    assert before.cost == Decimal("0.0012")  # 1000 * 1e-6 + 100 * 2e-6
    assert on.cost == Decimal("0.0022")  # 1000 * 2e-6 + 100 * 2e-6
    assert later.cost == Decimal("0.0034")  # 1000 * 3e-6 + 100 * 4e-6


def test_store_form_errors_name_the_field():
    with pytest.raises(SchemaError, match="needs a valid_from"):
        parse_entry("a/m", {"price_sets": [{"input": "1e-6"}]})
    with pytest.raises(SchemaError, match="needs a UTC offset"):
        parse_entry("a/m", {"price_sets": [{"valid_from": datetime(2026, 12, 1), "input": "1e-6"}]})
    with pytest.raises(SchemaError, match="must be a time like"):
        parse_entry("a/m", {"price_sets": [{"valid_from": "next tuesday", "input": "1e-6"}]})
    with pytest.raises(SchemaError, match="is not a price kind"):
        parse_entry("a/m", {"price_sets": [{"valid_from": "2026-12-01T00:00:00Z", "inptu": "1e-6"}]})
    e = parse_entry("a/m", {"price_sets": [{"valid_from": "2026-12-01T01:00:00+01:00", "input": "1e-6"}]})
    assert e.price_sets[0].valid_from == DEC and e.price_sets[0].price_text == {"input": "1e-6"}


def test_the_linter_reads_every_set():
    e = parse_entry(
        "a/m",
        {
            "prices": {"input": "1e-6", "output": "2e-6"},
            "price_sets": [
                {"valid_from": "2026-12-01T00:00:00Z", "input": "3", "output": "4e-6"},
                {"valid_from": "2026-11-01T00:00:00Z", "input": "1e-6"},
            ],
        },
    )
    warnings = lint_entry(e)
    assert any("a/m (prices from 2026-12-01T00:00:00Z): input price 3 USD per token" in w for w in warnings)
    assert any("a/m (prices from 2026-11-01T00:00:00Z): output price is not set" in w for w in warnings)
    assert any("not written in time order" in w for w in warnings)


# --- the CLI ------------------------------------------------------------------------------------


def test_catalog_set_valid_from_adds_and_changes_sets(gw, store_path):
    assert gw("catalog", "set", "a/m", "--price", "input=1e-6", "--price", "output=2e-6").code == 0
    store_path.write_text(
        store_path.read_text().replace('[catalog."a/m".prices]', '# our model\n[catalog."a/m".prices]')
    )
    res = gw("catalog", "set", "a/m", "--price", "input=3e-6", "--valid-from", "2026-11-01T00:00:00Z")
    assert res.code == 0 and "added price set from 2026-11-01T00:00:00Z of catalog entry a/m" in res.err
    res = gw("catalog", "set", "a/m", "--price", "output=5e-6", "--valid-from", "2027-01-01T00:00:00Z")
    assert res.code == 0
    res = gw(
        "catalog",
        "set",
        "a/m",
        "--price",
        "output=unset",
        "--price",
        "cache_read=1e-7",
        "--valid-from",
        "2026-11-01T00:00:00Z",
    )
    assert res.code == 0 and "updated price set" in res.err
    text = store_path.read_text()
    assert "# our model\n" in text
    e = load(store_path).snapshot.catalog["a/m"]
    assert e.prices == {"input": Decimal("1e-6"), "output": Decimal("2e-6")}  # the undated set is untouched
    assert [(s.valid_from, dict(s.price_text)) for s in e.price_sets] == [
        (NOV, {"input": "3e-6", "cache_read": "1e-7"}),
        # a new set starts from the prices in force at its start (November's set, then), plus the change
        (datetime(2027, 1, 1, tzinfo=timezone.utc), {"input": "3e-6", "output": "5e-6"}),
    ]
    assert store_path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["--valid-from", "2026-12-01T00:00:00Z"], "give at least one --price"),
        (["--price", "input=1e-6", "--valid-from", "tomorrow"], "--valid-from must be a UTC time"),
        (["--price", "input=1e-6", "--valid-from", "2026-12-01T00:00:00"], "--valid-from must be a UTC time"),
        (["--price", "input=unset", "--valid-from", "2026-12-01T00:00:00Z"], "would have no prices left"),
    ],
)
def test_catalog_set_valid_from_refusals(gw, store_path, args, part):
    assert gw("catalog", "set", "b/m", "--display-name", "B").code == 0
    before = store_path.read_bytes()
    res = gw("catalog", "set", "b/m", *args)
    assert res.code != 0 and part in res.err and "Traceback" not in res.err
    assert store_path.read_bytes() == before


def test_show_export_import_and_price_at(gw, store_path, tmp_path):
    gw("catalog", "set", "a/m", "--price", "input=1e-6", "--price", "output=2e-6")
    gw("catalog", "set", "a/m", "--price", "input=2e-6", "--valid-from", "2020-01-01T00:00:00Z")
    gw("catalog", "set", "a/m", "--price", "input=9e-6", "--valid-from", "2999-01-01T00:00:00Z")
    shown = gw("catalog", "show", "a/m").out
    assert "price_set from 2020-01-01T00:00:00Z (in force)\tinput=2e-6 output=2e-6" in shown
    assert "price_set from 2999-01-01T00:00:00Z\tinput=9e-6 output=2e-6" in shown
    doc = gw("catalog", "show", "a/m", "--json").json()
    assert doc["price_sets"] == [
        {"valid_from": "2020-01-01T00:00:00Z", "input": "2e-6", "output": "2e-6"},
        {"valid_from": "2999-01-01T00:00:00Z", "input": "9e-6", "output": "2e-6"},
    ]
    for fmt in ("toml", "json"):
        exported = gw("catalog", "export", "--format", fmt).out
        path = tmp_path / f"cat.{fmt}"
        path.write_text(exported)
        gw("catalog", "remove", "a/m", "--yes")
        res = gw("catalog", "import", str(path))
        assert res.code == 0, res
        assert gw("catalog", "show", "a/m", "--json").json() == doc
    priced = {
        at: gw("catalog", "price", "a/m", "--input-tokens", "1000", "--at", at, "--json").json()
        for at in ("2019-12-31T23:59:59Z", "2020-01-01T00:00:00Z", "3000-01-01T00:00:00Z")
    }
    assert [p["total"] for p in priced.values()] == ["0.001", "0.002", "0.009"]
    assert [p["price_set"] for p in priced.values()] == [None, "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"]
    now = gw("catalog", "price", "a/m", "--input-tokens", "1000", "--json").json()
    assert now["total"] == "0.002"


def test_changing_undated_prices_under_a_set_in_force_warns(gw):
    gw("catalog", "set", "a/m", "--price", "input=1e-6", "--price", "output=1e-6")
    gw("catalog", "set", "a/m", "--price", "input=2e-6", "--valid-from", "2020-01-01T00:00:00Z")
    res = gw("catalog", "set", "a/m", "--price", "input=5e-6")
    assert res.code == 0 and "is priced at its set from 2020-01-01T00:00:00Z now" in res.err


def test_the_dry_run_estimates_at_the_prices_in_force(gw, tmp_path):
    gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1")
    gw("catalog", "set", "a/m", "--price", "input=1", "--price", "output=1", "--max-output", "10")
    gw("catalog", "set", "a/m", "--price", "input=2", "--price", "output=2", "--valid-from", "2020-01-01T00:00:00Z")
    doc = gw("route", "dry-run", "--model", "a/m", "--json").json()
    est = doc["estimate"]
    assert Decimal(est["total"]) == 2 * (est["prompt_tokens"] + est["output_tokens"]), est
    assert time.time() > datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
