"""`gwctl activity report --html`: the page's numbers against `activity summary --json` and by hand, the
escaping of client strings, that it fetches nothing, and the page opened in headless Chromium.

``test_log_*`` run on SQLite here and on PostgreSQL in test_activity_views_postgres.py (``log_dsn``).

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
selenium (the ``test`` extra). Without them it is skipped on a developer's machine, and it fails in CI
(``CI`` set), where a skip would hide that the page was never opened.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_cli
from gwctl.activity import exact_sum, open_log, sqlite_dsn
from gwctl.activity.insights import calendar, percentile
from records import record

T0 = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
HOSTILE_AGENT = "<script>window.pwned=1</script>"
HOSTILE_MODEL = '<img src=x onerror="window.pwned=1">'
HOSTILE_RULE = "rule\"'><b>bold</b>"


@pytest.fixture
def log_dsn(tmp_path):
    return sqlite_dsn(tmp_path / "report" / "activity.sqlite3")


def seed(dsn: str) -> None:
    """Two sources over three days (a quiet one between), subagents, an unbilled-only agent, rejections
    by two rules, latencies to take percentiles of, and hostile names."""
    latencies = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 1000.0]
    rows = [
        record(time=T0, agent="triage", source="local", latency_ms=ms, cost=Decimal("0.0001"))
        for ms in latencies  # local/llama: p50 50, p95 1000
    ]
    rows += [
        record(time=T0, agent="triage/summarizer", source="cloud", model="cloud/big", latency_ms=5.0, cost=Decimal("0.001")),
        record(time=T0 + timedelta(days=2), agent="triage/summarizer", source="cloud", model="cloud/big", cost=Decimal("0.25")),
        record(time=T0 + timedelta(days=2), agent="research/web", source="cloud", model="cloud/big", cost=None, route_kind="passthrough"),
        record(time=T0, agent=HOSTILE_AGENT, model=HOSTILE_MODEL, source="local", cost=Decimal("0.0000000000000000000000000000003")),
        record(time=T0, agent="triage", cost=None, route_kind="rejected", rule="max_output", status=400, source=None),
        record(time=T0, agent="triage", cost=None, route_kind="rejected", rule="max_output", status=400, source=None),
        record(time=T0, agent="triage", cost=None, route_kind="rejected", rule=HOSTILE_RULE, status=400, source=None),
        record(time=T0 + timedelta(days=2), agent=None, source="local", cost=None, route_kind="error", status=502),
    ]  # fmt: skip
    log = open_log(dsn)
    log.write_many(rows)
    log.close()


class Page(HTMLParser):
    """The elements of a page by id, and every element's attributes, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if "id" in a:
            self.by_id[a["id"] or ""] = a

    def handle_data(self, data):
        self.text.append(data)


def make_report(dsn: str, path: Path, *extra: str) -> Page:
    r = run_cli("activity", "report", "--html", str(path), "--activity", dsn, *extra)
    assert r.code == 0, r.err
    assert f"wrote {path}" in r.err
    return Page(path.read_text(encoding="utf-8"))


def test_percentile_is_nearest_rank():
    values = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 1000.0]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 1000.0
    assert percentile([7.0], 50) == percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0


def test_calendar_fills_quiet_days():
    assert calendar(["2025-02-27", "2025-03-02"]) == ["2025-02-27", "2025-02-28", "2025-03-01", "2025-03-02"]
    assert calendar([]) == []


def test_log_report_numbers_match_the_summary_and_hand_sums(log_dsn, tmp_path):
    seed(log_dsn)
    page = make_report(log_dsn, tmp_path / "report.html")
    summary = run_cli("activity", "summary", "--json", "--activity", log_dsn).json()["total"]
    totals = page.by_id["totals"]
    assert Decimal(totals["data-cost"]) == Decimal(summary["cost"])
    # by hand: 10 x 0.0001 (triage) + 0.001 + 0.25 (triage/summarizer) + 3e-31 (the hostile agent)
    assert Decimal(totals["data-cost"]) == Decimal("0.2520000000000000000000000000003")
    assert int(totals["data-requests"]) == summary["requests"] == 18
    assert int(totals["data-unbilled"]) == summary["unbilled"] == 1
    assert int(totals["data-rejected"]) == summary["rejected"] == 3

    # spend per day, stacked by source: the bars add up to the total; the quiet day is on the axis
    days = {a["data-day"]: a for tag, a in page.elements if tag == "g" and "data-day" in a}
    assert list(days) == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert exact_sum(Decimal(a["data-cost"]) for a in days.values()) == Decimal(totals["data-cost"])
    assert Decimal(days["2025-03-02"]["data-cost"]) == 0

    # the agent tree: triage's total includes its subagent; research has no rows of its own
    agents = {a["data-agent"]: a for tag, a in page.elements if tag == "tr" and "data-agent" in a}
    assert Decimal(agents["triage"]["data-cost"]) == Decimal("0.252")
    assert agents["triage"]["class"] == "parent" and agents["triage/summarizer"]["data-depth"] == "1"
    assert agents["research"]["data-cost"] == ""  # unbilled only: unknown, not 0
    assert HOSTILE_AGENT in agents or any(k.startswith("<script>") for k in agents)

    # unbilled share: 1 of the 14 forwarded requests (13 billed); the upstream error is neither
    assert page.by_id["unbilled"]["data-unbilled"] == "1" and page.by_id["unbilled"]["data-billed"] == "13"
    assert Decimal(page.by_id["unbilled"]["data-share"]) == Decimal(1) / Decimal(14)

    # rejections by rule, most first; they add up to the rejected count
    rules = [a["data-rule"] for tag, a in page.elements if tag == "tr" and "data-rule" in a]
    assert rules == ["max_output", HOSTILE_RULE]

    # latency per source/model: nearest-rank p50/p95 of the forwarded rows
    lat = {(a["data-source"], a["data-model"]): a for tag, a in page.elements if tag == "tr" and "data-p95" in a}
    assert (lat[("local", "local/llama")]["data-p50"], lat[("local", "local/llama")]["data-p95"]) == ("50.0", "1000.0")
    assert next(iter(lat)) == ("local", "local/llama")  # the slowest first


def test_log_report_escapes_client_strings_and_fetches_nothing(log_dsn, tmp_path):
    seed(log_dsn)
    path = tmp_path / "report.html"
    page = make_report(log_dsn, path)
    text = path.read_text(encoding="utf-8")
    for raw in ("<script", "<img", "<b>bold", 'onerror="'):
        assert raw not in text
    assert "&lt;script&gt;window.pwned=1&lt;" in text
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in text
    assert not any(tag in ("script", "img", "link", "iframe", "b") for tag, _ in page.elements)
    # self-contained: nothing to fetch (the SVG namespace is a name, not a request)
    assert text.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    assert "url(" not in text and "@import" not in text and "src=" not in text.replace("src=x", "")
    # the strings read back exactly from the attributes
    assert HOSTILE_MODEL in {a.get("data-model") for _, a in page.elements}


def test_log_report_since_leaves_older_rows_out(log_dsn, tmp_path):
    log = open_log(log_dsn)
    now = datetime.now(timezone.utc)
    log.write_many(
        [record(time=now - timedelta(days=10)), record(time=now - timedelta(minutes=5), cost=Decimal("0.5"))]
    )
    log.close()
    page = make_report(log_dsn, tmp_path / "r.html", "--since", "1d")
    assert page.by_id["totals"]["data-requests"] == "1"
    assert page.by_id["totals"]["data-cost"] == "0.5"
    assert "the last 1d" in "".join(page.text)


def test_report_of_an_empty_log_and_errors(tmp_path):
    path = tmp_path / "empty.html"
    r = run_cli("activity", "report", "--html", str(path))  # no log recorded yet
    assert r.code == 0, r.err
    page = Page(path.read_text())
    assert page.by_id["totals"]["data-requests"] == "0" and page.by_id["totals"]["data-cost"] == "0"
    bad = run_cli("activity", "report", "--html", str(tmp_path / "no" / "such" / "dir" / "r.html"))
    assert bad.code == 1 and "cannot write" in bad.err and "Traceback" not in bad.err
    since = run_cli("activity", "report", "--html", str(path), "--since", "soon")
    assert since.code == 1 and "invalid duration" in since.err
    missing = run_cli("activity", "report")
    assert missing.code != 0 and "--html" in missing.err


# ---------------------------------------------------------------------------
# the page in a real browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip():
    """selenium's webdriver module; a skip without a browser on a developer's machine, a failure in CI."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
        webdriver = None
    if missing:
        reason = f"no headless browser: missing {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs them, so CI must have them")
        pytest.skip(reason)
    return webdriver


@pytest.fixture
def browser():
    webdriver = _browser_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1600",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_in_headless_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    dsn = sqlite_dsn(tmp_path / "browser" / "activity.sqlite3")
    seed(dsn)
    path = tmp_path / "report.html"
    make_report(dsn, path)
    summary = run_cli("activity", "summary", "--json", "--activity", dsn).json()["total"]

    browser.get(path.as_uri())
    assert browser.title == "gwctl activity report"
    errors = [e for e in browser.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert errors == []

    # the totals as the page shows them, and as its attributes carry them, are the summary's
    assert Decimal(browser.find_element(By.ID, "total-cost").text) == Decimal(summary["cost"])
    assert int(browser.find_element(By.ID, "total-requests").text) == summary["requests"]
    assert int(browser.find_element(By.ID, "total-unbilled").text) == summary["unbilled"]
    assert int(browser.find_element(By.ID, "total-rejected").text) == summary["rejected"]
    totals = browser.find_element(By.ID, "totals")
    assert Decimal(totals.get_attribute("data-cost")) == Decimal(summary["cost"])

    # the hostile names are text on the page, and nothing of theirs ran
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.execute_script("return document.scripts.length + document.images.length") == 0
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE_MODEL in body and "<script>window.pwned=1<" in body

    # the chart was drawn: one bar segment per source and day with a cost, with a size
    rects = browser.find_elements(By.CSS_SELECTOR, "#spend-chart g.day rect")
    assert len(rects) == 3  # 03-01: local and cloud, 03-03: cloud
    assert all(r.size["height"] > 0 for r in rects[:1])
    assert browser.find_element(By.ID, "agents").is_displayed()
