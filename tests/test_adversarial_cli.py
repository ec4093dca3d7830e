"""Adversarial CLI inputs: each test pins a bug a user or a CI script could hit (and its fix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]

FAR_PAST_STORE = """\
schema = 1

[catalog."a/m".prices]
input = "1e-6"

[[catalog."a/m".price_sets]]
valid_from = 0001-01-01T00:00:00+05:00
input = "2e-6"
"""


def _no_traceback(r) -> None:
    assert "internal error" not in r.err and "Traceback" not in r.err, r.err


# --- times at the edges of the calendar -------------------------------------------------------------------


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_valid_from_beyond_the_calendar_in_utc_is_a_user_error(gw, when):
    """A --valid-from whose UTC form falls outside years 1-9999 used to crash with OverflowError."""
    r = gw("catalog", "set", "a/m", "--price", "input=1e-6", "--valid-from", when)
    _no_traceback(r)
    assert r.code == 1
    assert "--valid-from" in r.err


def test_price_at_beyond_the_calendar_in_utc_is_a_user_error(gw):
    assert gw("catalog", "set", "a/m", "--price", "input=1e-6").code == 0
    r = gw("catalog", "price", "a/m", "--input-tokens", "1", "--at", "0001-01-01T00:00:00+01:00")
    _no_traceback(r)
    assert r.code == 1
    assert "--at" in r.err


def test_store_with_a_price_set_beyond_the_calendar_reports_its_line(gw, store_path):
    """A hand-written valid_from that is before year 1 in UTC made every command (validate included) crash."""
    store_path.parent.mkdir(parents=True)
    store_path.write_text(FAR_PAST_STORE)
    store_path.chmod(0o600)
    for args in (("validate",), ("catalog", "list"), ("source", "add", "x", "--base-url", "http://127.0.0.1:9/v1")):
        r = gw(*args)
        _no_traceback(r)
        assert r.code != 0
        assert f"{store_path}:7" in r.err, r.err
    assert store_path.read_text() == FAR_PAST_STORE  # never overwritten


def test_import_of_a_price_set_beyond_the_calendar_is_refused(gw, tmp_path):
    f = tmp_path / "far.json"
    f.write_text(
        json.dumps({"catalog": {"a/m": {"price_sets": [{"valid_from": "0001-01-01T00:00:00+05:30", "input": "1"}]}}})
    )
    r = gw("catalog", "import", str(f))
    _no_traceback(r)
    assert r.code == 1
    assert "valid_from" in r.err and "nothing was imported" in r.err


# --- prices written as bare numbers are exact ----------------------------------------------------------------


def test_json_import_keeps_a_bare_number_price_exact(gw, tmp_path):
    """A JSON number price went through float: 0.0000030000000000000001 was silently imported as 3e-06."""
    f = tmp_path / "p.json"
    f.write_text('{"catalog": {"a/m": {"prices": {"input": 0.0000030000000000000001}}}}')
    assert gw("catalog", "import", str(f)).code == 0
    assert gw("catalog", "show", "a/m", "--json").json()["prices"]["input"] == "0.0000030000000000000001"


def test_toml_import_keeps_a_bare_number_price_exact(gw, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('schema = 1\n[catalog."a/m".prices]\ninput = 0.0000030000000000000001\n')
    assert gw("catalog", "import", str(f)).code == 0
    assert gw("catalog", "show", "a/m", "--json").json()["prices"]["input"] == "0.0000030000000000000001"


def test_store_bare_number_price_is_exact(gw, store_path):
    """A price typed into the store as a TOML float is priced at the digits written, not at the nearest float."""
    store_path.parent.mkdir(parents=True)
    store_path.write_text('schema = 1\n\n[catalog."a/m".prices]\ninput = 0.0000030000000000000001\n')
    store_path.chmod(0o600)
    r = gw("catalog", "price", "a/m", "--input-tokens", "10000000000000000000000", "--json")
    assert r.code == 0, r.err
    assert r.json()["total"] == "30000000000000001"  # 3e16 + 1e-22 * 1e22


def test_store_bare_number_budget_is_exact(gw, store_path):
    """A budget typed as a TOML float kept only the float's nearest digits."""
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        'schema = 1\n\n[[limits]]\ntarget = "key:ci"\nbudget = 25.000000000000000001\nwindow = "day"\n'
    )
    store_path.chmod(0o600)
    r = gw("limit", "list", "--json")
    assert r.code == 0, r.err
    assert r.json()[0]["budget"] == "25.000000000000000001"


def test_json_import_huge_number_is_named_as_written(gw, tmp_path):
    f = tmp_path / "p.json"
    f.write_text('{"catalog": {"a/m": {"prices": {"input": 1e400}}}}')
    r = gw("catalog", "import", str(f))
    _no_traceback(r)
    assert r.code == 1
    assert "'inf'" not in r.err, r.err


# --- the store behind a symlink -----------------------------------------------------------------------------


def test_edit_through_a_symlinked_store_writes_the_target(tmp_path, monkeypatch):
    """A store that is a symlink (dotfiles managers) was replaced by a regular file: the edit never reached
    the real file and the link was gone."""
    real = tmp_path / "dotfiles" / "gwctl.toml"
    real.parent.mkdir()
    real.write_text("# mine\nschema = 1\n")
    real.chmod(0o600)
    link = tmp_path / "cfg" / "gwctl.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    monkeypatch.setenv("GWCTL_STORE", str(link))
    r = run_cli("source", "add", "local", "--base-url", "http://127.0.0.1:9/v1")
    assert r.code == 0, r.err
    assert link.is_symlink()
    text = real.read_text()
    assert text.startswith("# mine\n") and "[sources.local]" in text
    assert oct(real.stat().st_mode & 0o777) == "0o600"


# --- completion is silent ---------------------------------------------------------------------------------


def _complete(words: str, store: Path) -> subprocess.CompletedProcess:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {
        **os.environ,
        "GWCTL_STORE": str(store),
        "_GWCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
        "PYTHONPATH": str(ROOT / "src"),
    }
    code = "import sys; sys.argv[0] = 'gwctl'; from gwctl.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_completion_with_a_world_readable_store_prints_nothing_on_stderr(tmp_path):
    """Pressing TAB with a store of mode 0644 printed the credentials warning into the user's command line."""
    store = tmp_path / "gw.toml"
    store.write_text('schema = 1\n\n[sources.local]\nbase_url = "http://127.0.0.1:9/v1"\n')
    store.chmod(0o644)
    out = _complete("gwctl source probe ", store)
    assert out.returncode == 0
    assert out.stdout.split() == ["local"]
    assert out.stderr == ""


def test_completion_with_a_store_beyond_the_calendar_prints_nothing(tmp_path):
    store = tmp_path / "gw.toml"
    store.write_text(FAR_PAST_STORE)
    store.chmod(0o600)
    out = _complete("gwctl catalog show ", store)
    assert out.returncode == 0
    assert out.stdout.strip() == "" and out.stderr == ""


# --- a dated set written by the CLI is in time order ------------------------------------------------------


def test_an_earlier_dated_set_is_written_before_later_ones(gw, store_path):
    """`catalog set --valid-from` appended an earlier set after a later one, then warned about its own
    write ("not written in time order")."""
    assert gw("catalog", "set", "a/m", "--price", "input=1e-6", "--price", "output=2e-6").code == 0
    later = gw("catalog", "set", "a/m", "--price", "input=3e-6", "--valid-from", "2027-06-01T00:00:00Z")
    assert later.code == 0, later.err
    earlier = gw("catalog", "set", "a/m", "--price", "input=2e-6", "--valid-from", "2027-01-01T00:00:00+01:00")
    assert earlier.code == 0, earlier.err
    assert "time order" not in earlier.err
    text = store_path.read_text()
    assert text.index("2026-12-31T23:00:00Z") < text.index("2027-06-01T00:00:00Z")
    assert "time order" not in gw("validate").err
    sets = gw("catalog", "show", "a/m", "--json").json()["price_sets"]
    assert [s["valid_from"] for s in sets] == ["2026-12-31T23:00:00Z", "2027-06-01T00:00:00Z"]
    assert [s["input"] for s in sets] == ["2e-6", "3e-6"]


@pytest.mark.parametrize(
    ("written", "hint"),
    [("2026-12-01", "2026-12-01T00:00:00Z"), ("12:30:00", "2026-12-01T12:30:00Z")],
)
def test_a_toml_local_date_or_time_as_valid_from_says_what_to_write(gw, tmp_path, written, hint):
    """A TOML local date was reported as "got a date/time datetime.date(2026, 12, 1)" (a Python repr)."""
    f = tmp_path / "p.toml"
    f.write_text(f'schema = 1\n[[catalog."a/m".price_sets]]\nvalid_from = {written}\ninput = "1e-6"\n')
    r = gw("catalog", "import", str(f))
    assert r.code == 1
    assert "datetime." not in r.err and hint in r.err, r.err


@pytest.mark.parametrize("kind", ["symlink loop", "through a file", "name too long"])
def test_an_unreadable_store_path_is_a_user_error(tmp_path, monkeypatch, kind):
    """A store path that is a symlink loop, passes through a regular file, or has a too-long name crashed
    every command with an OSError traceback."""
    if kind == "symlink loop":
        store = tmp_path / "loop.toml"
        store.symlink_to(store)
    elif kind == "through a file":
        (tmp_path / "afile").write_text("x")
        store = tmp_path / "afile" / "gwctl.toml"
    else:
        store = tmp_path / ("a" * 300) / "gwctl.toml"
    monkeypatch.setenv("GWCTL_STORE", str(store))
    for args in (("source", "list"), ("validate",), ("source", "add", "x", "--base-url", "http://127.0.0.1:9/v1")):
        r = run_cli(*args)
        _no_traceback(r)
        assert r.code == 1, r
        assert r.err.startswith("error: cannot read the store "), r.err


@pytest.mark.parametrize("ref", ["a/m\nx", "a/m\x1b[31m", "a/m\tx"])
def test_catalog_set_refuses_a_reference_with_a_control_character(gw, store_path, ref):
    """A newline or escape in a reference was stored and then printed raw: it broke `catalog list`'s
    tab-separated rows and reached the terminal as an escape sequence."""
    r = gw("catalog", "set", ref, "--price", "input=1e-6")
    assert r.code == 1 and "control character" in r.err
    assert "\x1b" not in r.err
    assert not store_path.exists()


def test_catalog_import_refuses_a_reference_with_a_control_character(gw, store_path, tmp_path):
    f = tmp_path / "c.json"
    f.write_text(
        json.dumps({"catalog": {"a/ok": {"prices": {"input": "1"}}, "a/m\x1b[2J": {"prices": {"input": "1"}}}})
    )
    r = gw("catalog", "import", str(f))
    assert r.code == 1 and "control character" in r.err
    assert not store_path.exists()  # nothing half-written


def test_catalog_set_refuses_a_source_that_could_never_exist(gw, store_path):
    """`catalog set é/m` was accepted with "the entry applies once it exists", though `source add é` is refused."""
    r = gw("catalog", "set", "é/m", "--price", "input=1e-6")
    assert r.code == 1 and "not a valid source name" in r.err
    assert not store_path.exists()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "1e300"])
@pytest.mark.parametrize("command", ["test", "probe"])
def test_a_timeout_that_is_not_a_sane_number_of_seconds_is_a_user_error(gw, command, value):
    """`source test --timeout -1 / nan / 1e300` and `source probe --timeout inf` crashed in the HTTP client
    (ValueError / OverflowError tracebacks)."""
    assert gw("source", "add", "s", "--base-url", "http://127.0.0.1:9/v1").code == 0
    args = ["source", command, "s"] + (["m", "--yes"] if command == "probe" else []) + ["--timeout", value]
    r = gw(*args)
    _no_traceback(r)
    assert r.code == 1 and "--timeout must be a positive number of seconds" in r.err, r.err


@pytest.mark.parametrize("option", ["--connect-timeout", "--read-timeout"])
def test_a_source_timeout_beyond_a_week_is_refused(gw, store_path, option):
    """`source edit --read-timeout 1e400` stored `inf`, after which `source test` crashed with OverflowError."""
    assert gw("source", "add", "s", "--base-url", "http://127.0.0.1:9/v1").code == 0
    before = store_path.read_text()
    for value in ("1e400", "1e300", "604801"):
        r = gw("source", "edit", "s", option, value)
        _no_traceback(r)
        assert r.code == 1 and f"{option} must be a positive number of seconds up to 604800" in r.err
    assert store_path.read_text() == before
    assert gw("source", "edit", "s", option, "604800").code == 0


def test_a_hand_written_infinite_timeout_is_reported_with_its_line(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text('schema = 1\n\n[sources.s]\nbase_url = "http://127.0.0.1:9/v1"\nread_timeout = inf\n')
    store_path.chmod(0o600)
    r = gw("source", "test", "s")
    _no_traceback(r)
    assert r.code == 1 and f"{store_path}:5" in r.err


def _seeded_log(tmp_path) -> str:
    from datetime import datetime, timezone
    from decimal import Decimal

    from gwctl.activity import open_log
    from records import record

    dsn = f"sqlite://{tmp_path / 'probe-activity.sqlite3'}"
    usage = {"input_tokens": 1000, "output_tokens": 100}
    when = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    row = record(time=when, source="a", upstream_model="m", model="a/m", usage=usage, cost=Decimal("0.0012"))
    with open_log(dsn) as log:
        log.write_many([row])
    return dsn


@pytest.mark.parametrize("limit", ["-1", "99999999999999999999"])
def test_activity_list_limit_out_of_range_is_a_user_error(gw, tmp_path, limit):
    """`activity list --limit -1` (ValueError) and a limit beyond SQLite's integer (OverflowError) crashed."""
    r = gw("activity", "list", "--limit", limit, "--activity", _seeded_log(tmp_path))
    _no_traceback(r)
    assert r.code == 1 and "--limit must be a number of rows" in r.err


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["summary"],
        ["summary", "--by", "day", "--chart"],
        ["reprice"],
        ["report", "--html", "REPORT"],
    ],
)
def test_a_since_reaching_before_year_one_is_a_user_error(gw, tmp_path, args):
    """`--since 3000000d` (before the year 1) crashed every activity view with OverflowError."""
    args = [str(tmp_path / "r.html") if a == "REPORT" else a for a in args]
    r = gw("activity", *args, "--since", "3000000d", "--activity", _seeded_log(tmp_path))
    _no_traceback(r)
    assert r.code == 1 and "before the year 1" in r.err


def test_key_expires_beyond_year_9999_is_a_user_error(gw, store_path):
    r = gw("key", "create", "ci", "--expires", "2900000w")
    _no_traceback(r)
    assert r.code == 1 and "--expires" in r.err and "9999" in r.err
    assert not store_path.exists()


@pytest.mark.parametrize("budget", ["1e999999999999999999", "1e999999", "1e-999999"])
def test_a_budget_with_an_absurd_exponent_is_refused(gw, store_path, budget):
    """--budget 1e999999999999999999 was stored, then `limit status` crashed with decimal.Overflow (and
    1e999999 printed a million digits)."""
    assert gw("key", "create", "ci").code == 0
    before = store_path.read_text()
    r = gw("limit", "set", "key:ci", "--budget", budget, "--window", "day")
    _no_traceback(r)
    assert r.code == 1 and "a budget must" in r.err
    assert store_path.read_text() == before


def test_a_hand_written_budget_with_an_absurd_exponent_is_reported_with_its_line(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_text(
        'schema = 1\n\n[[limits]]\ntarget = "key:ci"\nbudget = "1e999999999999999999"\nwindow = "day"\n'
    )
    store_path.chmod(0o600)
    r = gw("limit", "status")
    _no_traceback(r)
    assert r.code == 1 and f"{store_path}:5" in r.err


def test_an_edit_keeps_crlf_line_endings(gw, store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b'# mine\r\nschema = 1\r\n\r\n[sources.b]\r\nbase_url = "http://127.0.0.1:9/v1" # b\r\n')
    store_path.chmod(0o600)
    assert gw("source", "add", "a", "--base-url", "http://127.0.0.1:9/v1").code == 0
    raw = store_path.read_bytes()
    assert b"# mine" in raw and b"# b" in raw
    assert raw.count(b"\n") == raw.count(b"\r\n")


def test_a_store_path_that_is_a_directory_gets_no_chmod_advice(tmp_path, monkeypatch):
    """A store path naming a directory (mode 0755) was also told "it holds credentials: chmod 600 DIR"."""
    d = tmp_path / "adir"
    d.mkdir()
    d.chmod(0o755)
    monkeypatch.setenv("GWCTL_STORE", str(d))
    r = run_cli("validate")
    assert r.code == 1 and "is a directory" in r.err
    assert "chmod" not in r.err, r.err


def test_an_empty_store_option_is_a_user_error(gw, store_path):
    """`gwctl --store "$UNSET" source add …` silently edited $GWCTL_STORE's (or the user's default) store."""
    r = gw("--store", "", "source", "add", "x", "--base-url", "http://127.0.0.1:9/v1")
    _no_traceback(r)
    assert r.code == 2 and "--store is empty" in r.err
    assert not store_path.exists()


def test_an_exact_float_survives_pickle_and_copy():
    """A number read with its text (ExactFloat) must survive what a snapshot may go through (pickle for a
    worker process, copy) with its digits."""
    import copy
    import pickle
    import tomllib

    from gwctl.core.numbers import ExactFloat, float_text

    x = tomllib.loads("a = 0.0000030000000000000001", parse_float=ExactFloat)["a"]
    for y in (pickle.loads(pickle.dumps(x)), copy.deepcopy(x), copy.copy(x)):
        assert float_text(y) == "0.0000030000000000000001" and y == x
    assert json.loads(json.dumps({"a": x})) == {"a": 3e-06}


# --- found later and fixed: credentials in a query, 64-bit integers, report to stdout, CRLF, percentages ---------


def test_a_query_string_credential_is_not_shown(gw):
    assert gw("source", "add", "s", "--base-url", "http://127.0.0.1:9/v1?api_key=qs-secret-456").code == 0
    assert "qs-secret-456" not in gw("source", "show", "s").out
    assert "qs-secret-456" not in gw("source", "list", "--json").out


def test_an_integer_beyond_64_bits_is_refused(gw):
    r = gw("catalog", "set", "a/m", "--price", "input=1e-6", "--context-size", str(10**26))
    assert r.code == 1


def test_report_to_dash_is_not_a_file_named_dash(gw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = gw("activity", "report", "--html", "-")
    assert not (tmp_path / "-").exists()
    assert r.code == 0 and r.out.lower().startswith("<!doctype html>") and r.out.rstrip().endswith("</html>")


def test_max_increase_is_echoed_as_written(gw, tmp_path):
    dsn = _seeded_log(tmp_path)
    assert gw("catalog", "set", "a/m", "--price", "input=2e-6", "--price", "output=2e-6").code == 0
    r = gw("activity", "reprice", "--activity", dsn, "--max-increase", "0.0000001")
    assert "1E-7" not in r.out + r.err and "0.0000001%" in r.out + r.err
    r = gw("activity", "reprice", "--activity", dsn, "--max-increase", "0.0000001", "--json")
    assert r.json()["max_increase"] == "0.0000001"
    r = gw("activity", "reprice", "--activity", dsn, "--max-increase", "1_0")
    assert r.code == 1 and "--max-increase must be a percentage" in r.err


def test_a_dsn_psycopg_cannot_parse_is_one_error_line_then_the_hint(gw):
    r = gw("activity", "list", "--activity", "postgresql://a b@/x")
    assert r.code != 0 and "Traceback" not in r.err
    lines = r.err.splitlines()
    assert lines[0].startswith("error: invalid PostgreSQL activity log DSN") and lines[1].startswith("hint: ")
