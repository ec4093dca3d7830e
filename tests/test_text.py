"""printable(): client strings cannot forge lines or drive a terminal; redact_urls(): no user info."""

from __future__ import annotations

import string
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from gwctl.core.text import ELLIPSIS, printable, redact_urls

DANGEROUS = {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)} | {"\u2028", "\u2029"}


def _has_control(text: str) -> bool:
    return any(ch in DANGEROUS or unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_output_never_holds_a_control_character_or_a_line_break(text, limit):
    out = printable(text, limit)
    assert not _has_control(out)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert len(out) <= limit
    assert out.splitlines() in ([out], [])


@given(st.text(alphabet=string.printable[:95]))  # printable ASCII: letters, digits, punctuation, space
def test_printable_ascii_is_unchanged(text):
    assert printable(text, limit=0) == text
    if len(text) <= 200:
        assert printable(text) == text


@given(st.text())
def test_without_a_limit_nothing_is_lost(text):
    out = printable(text, limit=0)
    assert not _has_control(out)
    assert ELLIPSIS not in out or ELLIPSIS in text
    if text.isascii() and "\\" not in text:  # the escapes decode back to the input
        assert out.encode().decode("unicode_escape") == text


@given(st.text(min_size=1), st.integers(min_value=1, max_value=50))
def test_a_cut_ends_with_an_ellipsis_and_keeps_a_prefix(text, limit):
    full = printable(text, limit=0)
    out = printable(text, limit)
    if len(full) <= limit:
        assert out == full
    else:
        assert out.endswith(ELLIPSIS) and len(out) <= limit
        assert full.startswith(out[:-1])


def test_examples():
    assert printable("gpt-4o\n2024-01-01 forged line") == "gpt-4o\\x0a2024-01-01 forged line"
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("a\u2028b\u2029c\x85d\x7f") == "a\\u2028b\\u2029c\\x85d\\x7f"
    assert printable("left\u202eright") == "left\\u202eright"
    assert printable("x" * 300) == "x" * 199 + ELLIPSIS
    assert printable("ab\ncd", limit=4) == "ab" + ELLIPSIS  # the escape is not cut in half
    assert printable("modèle/日本") == "modèle/日本"
    assert printable("back\\slash") == "back\\slash"


def test_redact_urls():
    assert (
        redact_urls("GET http://user:s3cret@h:9/v1/models answered 401") == "GET http://***@h:9/v1/models answered 401"
    )
    assert redact_urls("got 'https://a:b@h'") == "got 'https://***@h'"
    assert redact_urls("mail me at someone@example.com") == "mail me at someone@example.com"
    assert redact_urls("no url here") == "no url here"
    odd = "http://us er:s3 cret@h/v1"
    assert "s3 cret" not in redact_urls(f"cannot reach {odd}/models", [odd])


# --- the CLI's human tables print client strings through printable() --------

import pytest  # noqa: E402

from conftest import invoke  # noqa: E402

EVIL_MODEL = "[bold]gpt-4o[/bold]\n2025-03-01 12:00:00\tforged\x1b[31m\u2028"
EVIL_AGENT = "triage\x1b]8;;http://evil.example\x07click\x1b]8;;\x07"
EVIL_ERROR = "upstream said\r\nerror: fake\x9b2J"


@pytest.fixture
def evil_log(tmp_path, monkeypatch):
    from datetime import datetime, timezone
    from decimal import Decimal

    from gwctl.activity import ActivityRecord, open_log, sqlite_dsn

    dsn = sqlite_dsn(tmp_path / "evil.sqlite3")
    monkeypatch.setenv("GWCTL_ACTIVITY", dsn)
    record = ActivityRecord(
        time=datetime(2025, 3, 1, 12, tzinfo=timezone.utc),
        request_id="req-1",
        key_name="ci",
        agent=EVIL_AGENT,
        route_kind="error",
        source="local",
        model=EVIL_MODEL,
        upstream_model="x",
        path="/v1/chat/completions",
        status=502,
        latency_ms=1.0,
        usage={"input_tokens": 1},
        cost=Decimal("0"),
        rule=None,
        stream=False,
        error=EVIL_ERROR,
    )
    with open_log(dsn) as log:
        log.write_many([record])
    return dsn


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])
@pytest.mark.parametrize(
    "args",
    [("activity", "list"), ("activity", "summary", "--by", "model"), ("activity", "summary", "--by", "agent")],
    ids=" ".join,
)
def test_activity_tables_escape_client_strings(evil_log, tty, args):
    r = invoke(list(args), force_tables=tty)
    assert r.code == 0, r.err
    lines = [line for line in r.out.splitlines() if line.strip()]
    assert not any(ch in r.out for ch in "\x1b\x07\r\x9b\u2028")
    if not tty:
        assert len(lines) == 1  # one record, one line: nothing forged
        assert "forged" not in r.out or "\\x0a" in r.out
    if args[1] == "list":
        assert "\\x1b" in r.out  # visible, not executed
    if args[-1] == "model":
        assert "[bold]gpt-4o[/bold]" in r.out  # shown as typed, not taken for rich markup


def test_activity_list_shows_the_error_escaped(gw, evil_log):
    r = gw("activity", "list")
    assert "upstream said\\x0d\\x0aerror: fake\\x9b2J" in r.out
    assert gw("activity", "list", "--json").json()[0]["model"] == EVIL_MODEL  # JSON keeps the exact string
