"""`activity summary --by agent` as a tree and `--by day --chart`: the pure tree with hand sums, the CLI's
text and JSON on a terminal and on a pipe. ``log_dsn`` is a fresh SQLite log here and a PostgreSQL one in
test_activity_views_postgres.py, which runs every ``test_log_*`` below again."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import invoke, run_cli
from gwctl.activity import USAGE_KINDS, SummaryRow, open_log, sqlite_dsn
from gwctl.activity.tree import build_tree, grand_total, merge_rows, node_to_json, walk
from gwctl.cli.activity_views import bar
from records import record

T0 = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


def row(key, requests=1, cost="0", billed=None, unbilled=0, rejected=0, errors=0, inp=0, out=0) -> SummaryRow:
    usage = dict.fromkeys(USAGE_KINDS, 0)
    usage.update(input_tokens=inp, output_tokens=out)
    return SummaryRow(
        key=key,
        requests=requests,
        usage=usage,
        cost=Decimal(cost),
        billed=requests - unbilled - rejected if billed is None else billed,
        unbilled=unbilled,
        rejected=rejected,
        errors=errors,
    )


# ---------------------------------------------------------------------------
# the pure tree


def test_tree_nests_subagents_and_sums_exactly_by_hand():
    rows = [
        row("triage", 3, "0.1", inp=30, out=3),
        row("triage/summarizer", 2, "0.2", inp=20, out=2),
        row("triage/summarizer/quote", 1, "0.0000000000000000000000000000001", inp=1),  # beyond 28 digits
        row("triage/extract", 4, "0", billed=0, unbilled=4),  # unbilled only: unknown
        row("solo", 1, "1.5"),
    ]
    roots = build_tree(rows)
    assert [n.key for n in roots] == ["solo", "triage"]  # most expensive first, by the total
    triage = roots[1]
    assert triage.own == rows[0]
    assert [c.key for c in triage.children] == ["triage/summarizer", "triage/extract"]
    t = triage.totals
    # 0.1 + 0.2 + 1e-31 + 0, by hand
    assert t.cost == Decimal("0.3000000000000000000000000000001")
    assert (t.requests, t.billed, t.unbilled, t.usage["input_tokens"], t.usage["output_tokens"]) == (10, 6, 4, 51, 5)
    summarizer = triage.children[0]
    assert summarizer.totals.cost == Decimal("0.2000000000000000000000000000001")
    assert summarizer.totals.requests == 3
    assert grand_total(roots) == Decimal("1.8000000000000000000000000000001")
    assert [(d, n.key) for d, n in walk(roots)] == [
        (0, "solo"),
        (0, "triage"),
        (1, "triage/summarizer"),
        (2, "triage/summarizer/quote"),
        (1, "triage/extract"),
    ]


def test_a_root_with_no_rows_of_its_own_holds_its_subagents():
    roots = build_tree([row("research/web/fetch", 2, "0.25"), row("research/plan", 1, "0.5")])
    (research,) = roots
    assert research.own is None
    assert research.totals.cost == Decimal("0.75") and research.totals.requests == 3
    (web, plan) = research.children[1], research.children[0]
    assert plan.key == "research/plan"  # more expensive first
    assert web.own is None and web.totals.cost == Decimal("0.25")
    assert node_to_json(research)["own"] is None
    assert node_to_json(research)["total"]["cost"] == "0.75"


def test_unbilled_only_groups_stay_unknown_up_the_tree():
    roots = build_tree([row("a/x", 2, billed=0, unbilled=2), row("a/y", 1, billed=0, unbilled=1), row(None, 1)])
    a = next(n for n in roots if n.key == "a")
    assert node_to_json(a)["total"]["cost"] is None  # nothing forwarded was billed: unknown, not zero
    assert [node_to_json(c)["own"]["cost"] for c in a.children] == [None, None]
    # a billed child makes the parent's total known: the billed sum
    b = build_tree([row("b/x", 2, billed=0, unbilled=2), row("b/y", 1, "0.01")])[0]
    assert node_to_json(b)["total"]["cost"] == "0.01"
    # rejected-only groups cost 0: nothing was forwarded
    c = build_tree([row("c", 1, billed=0, rejected=1)])[0]
    assert node_to_json(c)["total"]["cost"] == "0"
    # requests without an agent are a root of their own
    assert roots[-1].key is None


def test_merge_rows_keeps_every_counter():
    m = merge_rows("k", [row("a", 2, "0.5", errors=1, rejected=1), row("b", 3, "0.25", unbilled=1)])
    assert (m.key, m.requests, m.cost, m.billed, m.unbilled, m.rejected, m.errors) == (
        "k",
        5,
        Decimal("0.75"),
        3,
        1,
        1,
        1,
    )


def test_bar_scales_to_the_width_in_eighths():
    assert bar(Decimal(10), Decimal(10), 20) == "█" * 20
    assert bar(Decimal(5), Decimal(10), 20) == "█" * 10
    assert bar(Decimal(1), Decimal(16), 2) == "▏"
    assert bar(Decimal("0.0000001"), Decimal(10), 20) == "▏"  # something is never drawn as nothing
    assert bar(Decimal(0), Decimal(10), 20) == ""


# ---------------------------------------------------------------------------
# the CLI, on a log (SQLite here; PostgreSQL in test_activity_views_postgres.py)


@pytest.fixture
def log_dsn(tmp_path):
    return sqlite_dsn(tmp_path / "views" / "activity.sqlite3")


def seed(dsn: str) -> None:
    log = open_log(dsn)
    log.write_many(
        [
            record(time=T0, agent="triage", cost=Decimal("0.0125"), usage={"input_tokens": 100, "output_tokens": 20}),
            record(time=T0 + timedelta(days=1), agent="triage", cost=Decimal("0.0125")),
            record(time=T0, agent="triage/summarizer", cost=Decimal("0.003"), usage={"input_tokens": 50}),
            record(time=T0 + timedelta(days=3), agent="triage/summarizer", cost=None, route_kind="passthrough"),
            record(time=T0, agent="research/web", cost=Decimal("0.0000001")),
            record(time=T0, agent="research/web", cost=None, route_kind="rejected", rule="max_output", status=400),
            record(time=T0 + timedelta(days=3), agent="free", cost=None, route_kind="passthrough"),
        ]
    )
    log.close()


def same(cells: list[str]) -> list[str]:
    """Cells with each decimal number normalised: a backend may keep trailing zeros (0.0250 is 0.025)."""
    return [format(Decimal(c).normalize(), "f") if "." in c and c[0].isdigit() else c for c in cells]


def cost(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def test_log_tree_on_a_terminal_json_and_pipe(log_dsn):
    seed(log_dsn)
    r = invoke(["activity", "summary", "--by", "agent", "--activity", log_dsn], force_tables=True)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == [
        "AGENT",
        "REQUESTS",
        "INPUT",
        "TOK",
        "OUTPUT",
        "TOK",
        "COST",
        "USD",
        "UNBILLED",
        "REJECTED",
    ]
    cells = {line.strip("└├│─ ").split()[0]: same(line.strip("└├│─ ").split()[1:]) for line in lines[1:]}
    # by hand: triage 0.0125 + 0.0125 + 0.003 = 0.028 over 4 requests, 1 unbilled
    assert cells["triage"] == ["4", "150", "20", "0.028", "1", "0", "incl.", "subagents"]
    assert cells["(own"] == ["requests)", "2", "100", "20", "0.025", "0", "0"]
    assert cells["triage/summarizer"] == ["2", "50", "0", "0.003", "1", "0"]
    assert cells["research"] == ["2", "0", "0", "0.0000001", "0", "1", "incl.", "subagents"]  # no rows of its own
    assert cells["free"] == ["1", "0", "0", "unbilled", "1", "0"]
    assert "└── research/web" in r.out

    # --json --tree: the same nesting, exact strings, null for unknown
    j = run_cli("activity", "summary", "--by", "agent", "--tree", "--json", "--activity", log_dsn).json()
    flat = run_cli("activity", "summary", "--by", "agent", "--json", "--activity", log_dsn).json()
    assert j["total"] == flat["total"]
    assert cost(flat["total"]["cost"]) == Decimal("0.0280001")
    by_key = {n["key"]: n for n in j["rows"]}
    assert cost(by_key["triage"]["total"]["cost"]) == Decimal("0.028")
    assert cost(by_key["triage"]["own"]["cost"]) == Decimal("0.025")
    assert [c["key"] for c in by_key["triage"]["children"]] == ["triage/summarizer"]
    assert by_key["research"]["own"] is None and by_key["research"]["total"]["rejected"] == 1
    assert by_key["free"]["total"]["cost"] is None and by_key["free"]["children"] == []

    # a pipe keeps the flat rows unless --tree; --flat keeps them on a terminal
    piped = run_cli("activity", "summary", "--by", "agent", "--activity", log_dsn)
    assert {line.split("\t")[0] for line in piped.out.splitlines()} == {
        "triage",
        "triage/summarizer",
        "research/web",
        "free",
    }
    flat_tty = invoke(["activity", "summary", "--by", "agent", "--flat", "--activity", log_dsn], force_tables=True)
    assert "incl. subagents" not in flat_tty.out and "BILLED" in flat_tty.out
    tree_piped = run_cli("activity", "summary", "--by", "agent", "--tree", "--activity", log_dsn)
    assert "incl. subagents" in tree_piped.out and "\t" not in tree_piped.out


def test_log_day_chart_on_a_terminal_and_a_pipe(log_dsn):
    seed(log_dsn)
    r = invoke(["activity", "summary", "--by", "day", "--chart", "--activity", log_dsn], force_tables=True)
    assert r.code == 0, r.err
    spend, requests = r.out.split("\n\n")
    spend_lines = spend.splitlines()
    assert spend_lines[0] == "spend per day (USD)"
    days = {line.split()[0]: line for line in spend_lines[1:]}
    assert list(days) == ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04"]  # the quiet day included
    assert Decimal(days["2025-03-01"].split()[-1]) == Decimal("0.0155001")  # 0.0125 + 0.003 + 0.0000001, exact
    assert Decimal(days["2025-03-02"].split()[-1]) == Decimal("0.0125")
    assert days["2025-03-03"].split() == ["2025-03-03", "-"]
    assert days["2025-03-04"].split() == ["2025-03-04", "unbilled"]  # forwarded, none billed: unknown, no bar
    full = days["2025-03-01"].split()[1]
    assert set(full) == {"█"} and len(full) > 100  # the largest bar fills the width (160 columns here)
    assert len(days["2025-03-02"].split()[1]) == pytest.approx(len(full) * 0.0125 / 0.0155001, abs=1)
    req_lines = requests.splitlines()
    assert req_lines[0] == "requests per day"
    assert [line.split()[-1] for line in req_lines[1:]] == ["4", "1", "0", "2"]
    assert all(len(line) <= 160 for line in r.out.splitlines())

    piped = run_cli("activity", "summary", "--by", "day", "--chart", "--activity", log_dsn)
    assert piped.code == 0
    assert [line.split("\t")[:2] for line in piped.out.splitlines()] == [
        ["2025-03-01", "4"],
        ["2025-03-02", "1"],
        ["2025-03-04", "2"],
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--by", "model", "--tree"], "--tree needs --by agent"),
        (["--by", "source", "--flat"], "--flat needs --by agent"),
        (["--by", "agent", "--chart"], "--chart needs --by day"),
        (["--by", "day", "--chart", "--json"], "choose one"),
    ],
)
def test_options_that_do_not_fit_are_refused(args, message):
    r = run_cli("activity", "summary", *args)
    assert r.code == 1 and message in r.err and "Traceback" not in r.err


def test_tree_escapes_client_names():
    log = open_log(os.environ["GWCTL_ACTIVITY"])  # the test's own default log (conftest)
    log.write_many([record(time=T0, agent="evil\x1b[31m/sub\nline")])
    log.close()
    r = invoke(["activity", "summary", "--by", "agent"], force_tables=True)
    assert "\x1b" not in r.out and "\\x1b" in r.out and "\\x0a" in r.out


def test_an_empty_answer_says_why_on_stderr_also_on_a_pipe(log_dsn):
    """Nothing to list: stdout stays empty for a script, stderr says whether the log is empty or the
    filters matched nothing (kubectl's "No resources found")."""
    log = open_log(log_dsn)
    log.write_many([record(time=T0, agent="triage", cost=Decimal("0.01"))])
    log.close()
    r = run_cli("activity", "list", "--activity", log_dsn, "--agent", "nobody")
    assert (r.code, r.out, r.err) == (0, "", "no requests match these filters\n")
    r = run_cli("activity", "summary", "--by", "model", "--since", "1h", "--activity", log_dsn)
    assert (r.code, r.out, r.err) == (0, "", "no requests match these filters\n")
    r = run_cli("activity", "list", "--activity", log_dsn)
    assert r.code == 0 and "triage" in r.out and r.err == ""


def test_an_empty_store_list_says_how_to_begin_also_on_a_pipe():
    r = run_cli("source", "list")
    assert (r.code, r.out) == (0, "") and r.err.startswith("no sources yet; add one with: gwctl source add")
