"""Translation meets mid-stream errors and failover: the real SDKs -> a real proxy -> loopback upstreams.

Mid-stream errors come from a raw scripted upstream (tests/rawupstream.py) that writes each SSE event on its
own, with pauses: an Anthropic-only one that sends ``event: error`` after some text, to an OpenAI client
through a source ``--api anthropic``; an OpenAI-only one that sends an error chunk, cuts the connection, or
ends its body early, to an Anthropic client through a source ``--api openai``.

Failover runs across APIs: a route's primary is a source of one API that answers 503 (or refuses
connections), its fallback a source of the other API (or an untranslated ``both`` source). The failing
upstream is a stand-in configured to fail, the answering one a stand-in that answers; each records what it
received, so every attempt is checked to have reached its upstream in that upstream's own API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx2  # the SDKs' HTTP client
import openai
import pytest

from gwctl.core.translate.streams import CUT_SHORT
from gwctl.testing.thread import StandinConfig, start_standin
from proxyrun import ProxyProcess, StoreRig, closed_port
from rawupstream import RawUpstream, Received, Script

UP_KEY = "sk-up"
USAGE = {"input_tokens": 1000, "cached_tokens": 200, "output_tokens": 50}
GOOD = ("--price", "input=3e-6", "--price", "output=1.5e-5", "--price", "cached_input=1.5e-6")
DEAR = ("--price", "input=3e-4", "--price", "output=1.5e-3")  # the failing targets: 100x, so a wrong bill shows
SYSTEM = "be brief"
PAUSE = 0.05  # seconds between the raw upstream's events

# route agent -> [(source, upstream model)] in plan order: every target but the last fails
ROUTES = {
    "an-to-oa": [("an_bad", "bad-m"), ("oa_ok", "good-m")],
    "oa-to-an": [("oa_bad", "bad-m"), ("an_ok", "good-m")],
    "refused-an-to-oa": [("an_dead", "x"), ("oa_ok", "good-m")],
    "both-to-an": [("both_bad", "bad-m"), ("an_ok", "good-m")],
    "an-to-both": [("an_bad", "bad-m"), ("both_ok", "good-m")],
    "an-oa-both": [("an_bad", "bad-m"), ("oa_bad", "bad-m"), ("both_ok", "good-m")],
}
# a primary that answers 200 and fails mid-stream: never failed over (its script is in the request)
MIDSTREAM = {
    "raw-an-to-oa": [("an_raw", "m"), ("oa_ok", "good-m")],
    "raw-oa-to-an": [("oa_raw", "m"), ("an_ok", "good-m")],
}
FAILING = {
    "an-then-oa-fail": [("an_bad", "bad-m"), ("oa_bad", "bad-m")],
    "oa-then-an-fail": [("oa_bad", "bad-m"), ("an_bad", "bad-m")],
}
SOURCE_API = {"an": "anthropic", "oa": "openai", "both": "both"}


# --- the raw upstream's scripts ---------------------------------------------------------------------------


def _chunked(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + head + b"\r\n"


def _piece(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def an_event(payload: dict) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (payload["type"].encode(), json.dumps(payload).encode())


def oa_event(payload: dict) -> bytes:
    return b"data: %s\n\n" % json.dumps(payload).encode()


def an_text_events(texts: list[str]) -> list[bytes]:
    """An Anthropic stream's opening: message_start (input usage), a text block, its deltas."""
    message = {"id": "msg_up", "type": "message", "role": "assistant", "model": "m", "content": []}
    message |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1000, "output_tokens": 1}}
    out = [an_event({"type": "message_start", "message": message})]
    out.append(an_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    for t in texts:
        out.append(an_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}))
    return out


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def oa_chunk(delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return oa_event({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]})


def oa_text_events(texts: list[str]) -> list[bytes]:
    return [oa_chunk({"role": "assistant", "content": ""})] + [oa_chunk({"content": t}) for t in texts]


OA_ERROR = {"error": {"message": "The server had an error", "type": "server_error", "code": None, "param": None}}


def scripted(events: list[bytes], end: str) -> Iterator[tuple[bytes, float]]:
    """Each event its own write after a pause; then ``end``: "clean" (the chunked body's end), "cut" (the
    connection closes mid-body) or "open" (nothing more, the connection left open)."""
    yield _chunked(b""), 0.0
    for ev in events:
        yield _piece(ev), PAUSE
    if end == "clean":
        yield b"0\r\n\r\n", PAUSE
    elif end == "cut":
        raise ConnectionResetError("cut by the test")  # the raw upstream closes the connection
    elif end == "open":
        yield b"", 10.0  # nothing more for longer than the source's read timeout


SCRIPTS: dict[str, tuple[list[bytes], str]] = {
    "an-error": (an_text_events(["Hel", "lo"]) + [an_event(OVERLOADED)], "clean"),
    "oa-error": (oa_text_events(["Hel", "lo"]) + [oa_event(OA_ERROR)], "clean"),
    "oa-cut": (oa_text_events(["Hel", "lo"]), "cut"),
    "oa-short": (oa_text_events(["Hel", "lo"]), "clean"),
    "an-short": (an_text_events(["Hel", "lo"]), "clean"),
    "an-cut": (an_text_events(["Hel", "lo"]), "cut"),
    "open-an-error": (an_text_events(["Hel", "lo"]) + [an_event(OVERLOADED)], "open"),
    "open-oa-error": (oa_text_events(["Hel", "lo"]) + [oa_event(OA_ERROR)], "open"),
}


def respond(rec: Received) -> Iterator[tuple[bytes, float]] | Script:
    body = json.loads(rec.body)
    text = json.dumps(body)
    for name, (events, end) in SCRIPTS.items():
        if f"script:{name}" in text:
            return scripted(events, end)
    payload = b'{"error": {"message": "no script", "type": "invalid_request_error"}}'
    return [
        (
            b"HTTP/1.1 400 X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload),
            0,
        )
    ]


# --- the rig -----------------------------------------------------------------------------------------------


class Rig(StoreRig):
    """One store and proxy for the module: sources ``an_*`` (``--api anthropic``), ``oa_*`` (openai) and
    ``both_*`` on the answering stand-in (``_ok``) and the failing one (``_bad``), ``an_raw`` and ``oa_raw``
    on the scripted upstream, ``an_dead`` on a port nobody listens on; a route per entry of ROUTES, FAILING
    and MIDSTREAM, and ``direct`` (both_ok, untranslated, no plan) for the price to expect."""

    def __init__(self, root: Path):
        self.good = start_standin(StandinConfig(models=["good-m"], usage=USAGE, api_key=UP_KEY))
        self.bad = start_standin(StandinConfig(models=["bad-m"], fail_status=503))
        self.raw = RawUpstream(respond)  # type: ignore[arg-type]  # a generator is a script too
        self.store = root / "cfg" / "gwctl.toml"
        self.db = root / "activity.sqlite3"
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        for prefix, api in SOURCE_API.items():
            self.cli("source", "add", f"{prefix}_ok", "--base-url", self.good.url, "--auth-value", UP_KEY, "--api", api)
            self.cli("source", "add", f"{prefix}_bad", "--base-url", self.bad.url, "--auth-value", UP_KEY, "--api", api)
            self.cli("catalog", "set", f"{prefix}_ok/good-m", *GOOD, "--max-output", "1000")
            self.cli("catalog", "set", f"{prefix}_bad/bad-m", *DEAR)
        for prefix in ("an", "oa"):  # the scripted upstream: one API each way
            self.cli(
                "source", "add", f"{prefix}_raw", "--base-url", self.raw.url, "--auth-value", UP_KEY,
                "--api", SOURCE_API[prefix], "--read-timeout", "3",
            )  # fmt: skip
            self.cli("catalog", "set", f"{prefix}_raw/m", *GOOD, "--max-output", "1000")
        self.cli("source", "add", "an_dead", "--base-url", dead, "--auth-value", UP_KEY, "--api", "anthropic")
        self.cli("catalog", "set", "an_dead/x", *DEAR)
        for agent, targets in (ROUTES | FAILING | MIDSTREAM).items():
            (source, model), rest = targets[0], targets[1:]
            fallbacks = [a for s, m in rest for a in ("--fallback", f"{s}/{m}")]
            self.route(agent, source, model, *fallbacks)
        self.route("direct", "both_ok", "good-m")  # the same answer, untranslated, without failover
        with open(self.store, "a") as f:
            f.write("\n[settings.failover]\ncooldown_after = 1000\n")  # every request tries the failing targets
        self.key = self.cli("key", "create", "tester", "--json").json()["key"]
        self.proc = ProxyProcess(self.store, f"sqlite://{self.db}")

    def oa(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proc.url + "/v1", api_key=self.key, max_retries=0, timeout=20)

    def an(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.proc.url, api_key=self.key, max_retries=0, timeout=20)

    def close(self) -> None:
        self.proc.terminate()
        self.good.stop()
        self.bad.stop()
        self.raw.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("translate-failover"))
    yield r
    r.close()


def _attempts(row: dict) -> list[dict] | None:
    raw = row.get("attempts")
    return json.loads(raw) if raw else None


def _quick(started: float, limit: float = 10.0) -> None:
    """The client's call came back well inside its own timeout: nothing hung until a timeout ended it."""
    assert time.monotonic() - started < limit


# --- 1. mid-stream errors ------------------------------------------------------------------------------------


def test_an_anthropic_upstreams_mid_stream_error_reaches_an_openai_client_as_openais_error_chunk(rig):
    """message_start, "Hel", "lo", then ``event: error`` (overloaded_error): the OpenAI SDK yields the text
    chunks, then raises APIError with the error payload OpenAI streams (``{"error": {...}}``), no finish."""
    started = time.monotonic()
    stream = rig.oa().chat.completions.create(
        model="an_raw/m", stream=True, messages=[{"role": "user", "content": "script:an-error"}]
    )
    rid = stream.response.headers["x-gwctl-request-id"]
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk)
    _quick(started)
    assert not isinstance(err.value, openai.APIStatusError)  # raised from the stream's data, not a status
    assert err.value.message == "Overloaded"
    assert err.value.body == {
        "message": "Overloaded",
        "type": "overloaded_error",
        "code": "overloaded_error",
        "param": None,
    }
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello"
    assert [c.choices[0].finish_reason for c in got if c.choices] == [None, None, None]  # never a clean finish
    assert all(c.usage is None for c in got)
    seen = rig.raw.received[-1]
    assert seen.head.startswith(b"POST /v1/messages ")
    row = rig.row(rid)
    assert row["stream"] == 1 and row["source"] == "an_raw"
    assert row["input_tokens"] == 1000  # message_start's usage, metered in Anthropic's shape


def test_an_openai_upstreams_error_chunk_reaches_an_anthropic_client_as_an_error_event(rig):
    """Chunks "Hel", "lo", then ``data: {"error": {...}}``: ``messages.stream`` yields the text, then raises
    (the SDK's status error for an ``event: error``), never a message_stop."""
    started = time.monotonic()
    kinds = []
    with rig.an().messages.stream(
        model="oa_raw/m", max_tokens=64, messages=[{"role": "user", "content": "script:oa-error"}]
    ) as stream:
        rid = stream.response.headers["x-gwctl-request-id"]
        with pytest.raises(anthropic.APIStatusError) as err:
            for event in stream:
                kinds.append(event.type)
        text = stream.current_message_snapshot.content[0].text
    _quick(started)
    assert err.value.body == {"type": "error", "error": {"type": "api_error", "message": "The server had an error"}}
    assert text == "Hello"
    assert "message_stop" not in kinds and "message_delta" not in kinds
    assert kinds[0] == "message_start" and "text" in kinds
    seen = rig.raw.received[-1]
    assert seen.head.startswith(b"POST /v1/chat/completions ")
    assert json.loads(seen.body)["stream_options"] == {"include_usage": True}
    row = rig.row(rid)
    assert row["stream"] == 1 and row["source"] == "oa_raw"


def test_an_openai_upstream_cut_mid_stream_breaks_the_anthropic_clients_stream(rig):
    """The OpenAI upstream closes its connection after "Hel", "lo": the Anthropic client's stream breaks
    (an error, not a message_stop), and the row is the 502 of a broken stream."""
    started = time.monotonic()
    kinds = []
    with rig.an().messages.stream(
        model="oa_raw/m", max_tokens=64, messages=[{"role": "user", "content": "script:oa-cut"}]
    ) as stream:
        rid = stream.response.headers["x-gwctl-request-id"]
        with pytest.raises((httpx2.HTTPError, anthropic.APIError)):
            for event in stream:
                kinds.append(event.type)
        text = stream.current_message_snapshot.content[0].text
    _quick(started)
    assert text == "Hello" and "message_stop" not in kinds
    row = rig.row(rid)
    assert row["status"] == 502 and "broke the stream" in row["error"] and row["source"] == "oa_raw"


def test_an_openai_upstream_ending_early_is_not_a_clean_end_for_an_anthropic_client(rig):
    """The OpenAI upstream ends its body after "Hel", "lo" (no finish_reason, no [DONE]): the Anthropic
    client must not get a made-up ``end_turn`` and message_stop, as if the answer were whole."""
    started = time.monotonic()
    kinds = []
    with rig.an().messages.stream(
        model="oa_raw/m", max_tokens=64, messages=[{"role": "user", "content": "script:oa-short"}]
    ) as stream:
        with pytest.raises(anthropic.APIStatusError) as err:
            for event in stream:
                kinds.append(event.type)
        text = stream.current_message_snapshot.content[0].text
    _quick(started)
    assert text == "Hello" and "message_stop" not in kinds and "message_delta" not in kinds
    assert err.value.body == {"type": "error", "error": {"type": "api_error", "message": CUT_SHORT}}


def test_an_anthropic_upstream_ending_early_is_not_a_clean_end_for_an_openai_client(rig):
    """The Anthropic upstream ends its body after "Hel", "lo" (no message_delta, no message_stop): the
    OpenAI client must not get a made-up ``finish_reason: "stop"`` and [DONE]."""
    started = time.monotonic()
    got = []
    stream = rig.oa().chat.completions.create(
        model="an_raw/m", stream=True, messages=[{"role": "user", "content": "script:an-short"}]
    )
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk)
    _quick(started)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello"
    assert all(c.choices[0].finish_reason is None for c in got if c.choices)
    assert not isinstance(err.value, openai.APIStatusError) and err.value.message == CUT_SHORT
    assert err.value.body == {"message": CUT_SHORT, "type": "api_error", "code": None, "param": None}


@pytest.mark.parametrize(
    "client,model,script,message",
    [
        ("openai", "an_raw/m", "an-error", "Overloaded"),
        ("anthropic", "oa_raw/m", "oa-error", "The server had an error"),
        ("anthropic", "an_raw/m", "an-error", "Overloaded"),
        ("anthropic", "oa_raw/m", "oa-short", ""),
        ("openai", "an_raw/m", "an-short", ""),
    ],
    ids=[
        "translated-anthropic-error",
        "translated-openai-error",
        "untranslated-anthropic-error",
        "translated-openai-ended-early",
        "translated-anthropic-ended-early",
    ],
)
def test_the_activity_row_of_a_stream_that_failed_mid_way_says_so(rig, client, model, script, message):
    """A stream whose upstream sent an error event instead of its end (or ended its body before its end) is the
    upstream's failure in the activity log: not a 200 without an error, nor the client's disconnection."""
    content = [{"role": "user", "content": f"script:{script}"}]
    if client == "openai":
        stream = rig.oa().chat.completions.create(model=model, stream=True, messages=content)
        rid = stream.response.headers["x-gwctl-request-id"]
        with pytest.raises(openai.APIError):
            list(stream)
    else:
        with rig.an().messages.stream(model=model, max_tokens=64, messages=content) as an_stream:
            rid = an_stream.response.headers["x-gwctl-request-id"]
            with pytest.raises(anthropic.APIStatusError):
                list(an_stream)
    row = rig.row(rid)
    assert row["status"] == 502 and row["error"] and "client disconnected" not in row["error"], row
    assert message in row["error"] and row["rule"] == "upstream_stream_error"


def test_an_anthropic_upstream_cut_mid_stream_breaks_the_openai_clients_stream(rig):
    """The Anthropic upstream closes its connection after "Hel", "lo": the OpenAI client's stream breaks
    (an error, no finish_reason, no [DONE]), and the row is the 502 of a broken stream."""
    started = time.monotonic()
    got = []
    stream = rig.oa().chat.completions.create(
        model="an_raw/m", stream=True, messages=[{"role": "user", "content": "script:an-cut"}]
    )
    rid = stream.response.headers["x-gwctl-request-id"]
    with pytest.raises((httpx2.HTTPError, openai.APIError)):
        for chunk in stream:
            got.append(chunk)
    _quick(started)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello"
    assert all(c.choices[0].finish_reason is None for c in got if c.choices)
    row = rig.row(rid)
    assert row["status"] == 502 and "broke the stream" in row["error"] and row["source"] == "an_raw"


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_an_error_event_reaches_the_client_at_once_though_the_upstream_keeps_its_connection_open(rig, client):
    """After its error event the upstream sends nothing more and keeps its connection open (the source's
    read timeout is 3 s): the client has its error as soon as the event came, not after a timeout."""
    started = time.monotonic()
    if client == "openai":
        stream = rig.oa().chat.completions.create(
            model="an_raw/m", stream=True, messages=[{"role": "user", "content": "script:open-an-error"}]
        )
        with pytest.raises(openai.APIError) as oa_err:
            list(stream)
        assert oa_err.value.body["type"] == "overloaded_error"
    else:
        with rig.an().messages.stream(
            model="oa_raw/m", max_tokens=64, messages=[{"role": "user", "content": "script:open-oa-error"}]
        ) as an_stream:
            with pytest.raises(anthropic.APIStatusError) as an_err:
                list(an_stream)
        assert an_err.value.body["error"]["message"] == "The server had an error"
    _quick(started, 2.0)


@pytest.mark.parametrize("agent", list(MIDSTREAM))
def test_a_primary_failing_mid_stream_across_apis_is_not_failed_over(rig, agent):
    """The primary (translated) answers 200, sends text, then its error: the client's stream ends in that
    error in its own API; the fallback is never asked, and the row names the primary alone."""
    (primary, _m), (fallback, _fm) = MIDSTREAM[agent]
    headers = {"X-Gwctl-Agent": f"t/{agent}"}
    marker = f"hi {uuid.uuid4().hex}"
    started = time.monotonic()
    if primary == "an_raw":  # an OpenAI client, translated to the Anthropic upstream
        content = f"script:an-error {marker}"
        stream = rig.oa().chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": content}], extra_headers=headers
        )
        got_headers = stream.response.headers
        got = []
        with pytest.raises(openai.APIError) as oa_err:
            for chunk in stream:
                got.append(chunk)
        assert oa_err.value.body["type"] == "overloaded_error"
        text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    else:  # an Anthropic client, translated to the OpenAI upstream
        content = f"script:oa-error {marker}"
        with rig.an().messages.stream(
            model="m", max_tokens=64, messages=[{"role": "user", "content": content}], extra_headers=headers
        ) as an_stream:
            got_headers = an_stream.response.headers
            with pytest.raises(anthropic.APIStatusError) as an_err:
                list(an_stream)
            text = an_stream.current_message_snapshot.content[0].text
        assert an_err.value.body["error"]["message"] == "The server had an error"
    _quick(started)
    assert text == "Hello" and got_headers["x-gwctl-attempts"] == "1"
    seen = [r for r in rig.raw.received if marker.encode() in r.body]
    assert len(seen) == 1
    assert seen[0].head.startswith(b"POST /v1/messages " if primary == "an_raw" else b"POST /v1/chat/completions ")
    assert _received(rig.good, marker) == []  # the fallback never asked
    row = rig.row(got_headers["x-gwctl-request-id"])
    assert row["source"] == primary and _attempts(row) is None


# --- 2. failover across APIs ---------------------------------------------------------------------------------


def _api_of(source: str, client: str) -> str:
    """The API the upstream of ``source`` is spoken to in: its own, or the client's for ``both``."""
    kind = source.split("_")[0]
    if kind == "both":
        return client
    return "messages" if kind == "an" else "chat"


def _call(rig, agent: str, client: str, stream: bool, marker: str) -> tuple[dict, str]:
    """One request with the real SDK for ``client``: (the answer's headers, its text)."""
    headers = {"X-Gwctl-Agent": f"t/{agent}"}
    if client == "messages":
        c = rig.an()
        kw = dict(model="m", max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": marker}])
        if stream:
            with c.messages.stream(extra_headers=headers, **kw) as s:
                kinds = [event.type for event in s]
                final = s.get_final_message()
                got_headers = dict(s.response.headers)
            assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
            assert final.stop_reason == "end_turn" and final.usage.output_tokens == 50
            assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == 1000
            return got_headers, final.content[0].text
        raw = c.messages.with_raw_response.create(extra_headers=headers, **kw)
        m = raw.parse()
        assert m.type == "message" and m.stop_reason == "end_turn" and m.usage.output_tokens == 50
        assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == 1000
        return dict(raw.headers), m.content[0].text
    c = rig.oa()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": marker}]
    if stream:
        s = c.chat.completions.create(
            model="m", stream=True, stream_options={"include_usage": True}, messages=messages, extra_headers=headers
        )
        chunks = list(s)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50
        assert chunks[-1].usage.prompt_tokens == 1000
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
        return dict(s.response.headers), "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=messages, extra_headers=headers)
    r = raw.parse()
    assert r.object == "chat.completion" and r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 50
    assert r.usage.prompt_tokens == 1000
    return dict(raw.headers), r.choices[0].message.content or ""


def _received(standin, marker: str) -> list:
    """The requests ``standin`` received for one call (its marker), in order."""
    return [r for r in standin.received if marker in json.dumps(r.body)]


def _check_shape(seen, source: str, client: str, stream: bool, marker: str) -> None:
    """The request as the upstream of ``source`` received it is in that upstream's own API."""
    body = seen.body
    api = _api_of(source, client)
    if api == "messages":
        assert seen.path == "/v1/messages"
        # the client's own limit, else (from a chat client, which sent none) the entry's max output, else 4096
        assert body["max_tokens"] == (64 if client == "messages" else 1000 if source.endswith("_ok") else 4096)
        assert body["system"] == SYSTEM and [m["role"] for m in body["messages"]] == ["user"]
        assert "stream_options" not in body and "max_completion_tokens" not in body
    else:
        assert seen.path == "/v1/chat/completions"
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in body["messages"]] == ["system", "user"] and "system" not in body
        assert "max_tokens" not in body and body.get("max_completion_tokens") == (64 if client == "messages" else None)
        if stream:
            assert body["stream_options"] == {"include_usage": True}
    assert bool(body.get("stream")) is stream
    assert marker in json.dumps(body["messages"][-1])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client", ["chat", "messages"])
@pytest.mark.parametrize("agent", list(ROUTES))
def test_failover_across_apis(rig, agent, client, stream):
    targets = ROUTES[agent]
    marker = f"hi {uuid.uuid4().hex}"
    headers, text = _call(rig, agent, client, stream, marker)
    direct_headers, expected = _call(rig, "direct", client, stream, f"hi {uuid.uuid4().hex}")
    assert "x-gwctl-attempts" not in direct_headers
    assert text == expected and text
    assert headers["x-gwctl-attempts"] == str(len(targets))
    failing = [source for source, _model in targets[:-1] if source != "an_dead"]  # refused: reached nothing
    failed = _received(rig.bad, marker)
    assert len(failed) == len(failing)
    for source, seen in zip(failing, failed):
        _check_shape(seen, source, client, stream, marker)
    answering = targets[-1][0]
    (answered,) = _received(rig.good, marker)
    _check_shape(answered, answering, client, stream, marker)
    assert answered.headers["authorization"] == f"Bearer {UP_KEY}"
    row = rig.row(headers["x-gwctl-request-id"])
    assert (row["status"], row["source"], row["upstream_model"]) == (200, answering, "good-m")
    attempts = _attempts(row)
    assert attempts is not None and [a["target"] for a in attempts] == [f"{s}/{m}" for s, m in targets]
    for (source, _m), a in zip(targets[:-1], attempts):
        if source == "an_dead":
            assert a["status"] is None and a["error"]
        else:
            assert a["status"] == 503
    assert attempts[-1]["status"] == 200 and attempts[-1]["error"] is None
    # the answering target's price, metered in its upstream's API: what the untranslated request costs
    direct = rig.row(direct_headers["x-gwctl-request-id"])
    assert row["cost"] is not None and Decimal(row["cost"]) == Decimal(direct["cost"]) > 0
    assert (row["input_tokens"], row["output_tokens"]) == (direct["input_tokens"], direct["output_tokens"])


@pytest.mark.parametrize("client", ["chat", "messages"])
@pytest.mark.parametrize("agent", list(FAILING))
def test_when_every_target_fails_the_last_failure_comes_back_in_the_clients_api(rig, agent, client):
    """Both targets answer 503, one in each API: the client gets the last one's 503 in its own API's error
    shape (translated or not), with both attempts counted and listed."""
    marker = f"hi {uuid.uuid4().hex}"
    headers = {"X-Gwctl-Agent": f"t/{agent}"}
    started = time.monotonic()
    if client == "messages":
        with pytest.raises(anthropic.InternalServerError) as an_err:
            rig.an().messages.create(
                model="m", max_tokens=64, messages=[{"role": "user", "content": marker}], extra_headers=headers
            )
        err: anthropic.APIStatusError | openai.APIStatusError = an_err.value
        assert an_err.value.body["type"] == "error" and an_err.value.body["error"]["type"] == "overloaded_error"
        assert "stand-in configured to fail with 503" in an_err.value.body["error"]["message"]
    else:
        with pytest.raises(openai.InternalServerError) as oa_err:
            rig.oa().chat.completions.create(
                model="m", messages=[{"role": "user", "content": marker}], extra_headers=headers
            )
        err = oa_err.value
        assert (
            isinstance(oa_err.value.body, dict)
            and "stand-in configured to fail with 503" in oa_err.value.body["message"]
        )
    _quick(started)
    assert err.status_code == 503 and err.response.headers["x-gwctl-attempts"] == "2"
    targets = FAILING[agent]
    failed = _received(rig.bad, marker)
    assert [s.path for s in failed] == [
        "/v1/messages" if source.startswith("an") else "/v1/chat/completions" for source, _m in targets
    ]
    row = rig.row(err.response.headers["x-gwctl-request-id"])
    assert row["status"] == 503 and row["cost"] is None
    assert [(a["target"], a["status"]) for a in _attempts(row)] == [(f"{s}/{m}", 503) for s, m in targets]


@pytest.mark.parametrize("agent", ["an-to-oa", "oa-to-an", "both-to-an", "an-oa-both"])
def test_failover_keeps_the_usage_an_openai_client_did_not_ask_for_hidden(rig, agent):
    """An OpenAI client streams without ``include_usage``; whichever attempt asked its upstream for usage (an
    untranslated chat attempt adds ``stream_options``, a translated one meters Anthropic's events), the
    client sees no usage chunk, and the row has the answering upstream's counts."""
    targets = ROUTES[agent]
    marker = f"hi {uuid.uuid4().hex}"
    stream = rig.oa().chat.completions.create(
        model="m",
        stream=True,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": marker}],
        extra_headers={"X-Gwctl-Agent": f"t/{agent}"},
    )
    chunks = list(stream)
    assert stream.response.headers["x-gwctl-attempts"] == str(len(targets))
    assert chunks and all(c.usage is None and c.choices for c in chunks)  # no usage chunk, not even an empty one
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    failing = [source for source, _model in targets[:-1]]
    for source, seen in zip(failing, _received(rig.bad, marker), strict=True):
        _check_shape(seen, source, "chat", True, marker)
    (answered,) = _received(rig.good, marker)
    _check_shape(answered, targets[-1][0], "chat", True, marker)
    row = rig.row(stream.response.headers["x-gwctl-request-id"])
    assert row["status"] == 200 and row["output_tokens"] == 50 and row["input_tokens"] == 800


def _raw_post(rig, path: str, body: dict, agent: str) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {rig.key}", "x-api-key": rig.key, "X-Gwctl-Agent": f"t/{agent}"}
    return httpx2.post(rig.proc.url + path, json=body, headers=headers, timeout=20)


def test_a_target_that_cannot_take_the_request_untranslated_is_passed_over(rig):
    """``n: 2`` has no Anthropic counterpart: the primary (``--api anthropic``) cannot take it, the fallback
    (``--api openai``) can, untranslated. The plan passes over the primary, as it does a target whose limit
    refuses, and lists it among the attempts."""
    marker = f"hi {uuid.uuid4().hex}"
    body = {"model": "m", "n": 2, "messages": [{"role": "user", "content": marker}]}
    r = _raw_post(rig, "/v1/chat/completions", body, "an-to-oa")
    assert r.status_code == 200 and r.json()["object"] == "chat.completion", r.text
    assert r.headers["x-gwctl-attempts"] == "2"
    assert _received(rig.bad, marker) == []  # the primary's upstream never asked
    (answered,) = _received(rig.good, marker)
    assert answered.path == "/v1/chat/completions" and answered.body["n"] == 2
    row = rig.row(r.headers["x-gwctl-request-id"])
    assert (row["status"], row["source"]) == (200, "oa_ok")
    attempts = _attempts(row)
    assert attempts is not None and [(a["target"], a["status"]) for a in attempts] == [
        ("an_bad/bad-m", 400),
        ("oa_ok/good-m", 200),
    ]
    assert "untranslatable_param" in attempts[0]["error"]


@pytest.mark.parametrize("client", ["chat", "messages"])
def test_an_untranslatable_last_target_is_the_answer_with_every_attempt_counted(rig, client):
    """The primary answers 503 in the client's API; the fallback would need a translation the request has no
    counterpart for: the answer is the 400 with the translation rule's id in the client's API, and it carries
    ``X-Gwctl-Attempts: 2``; the row lists both attempts."""
    marker = f"hi {uuid.uuid4().hex}"
    if client == "chat":
        agent, path, rule = "oa-to-an", "/v1/chat/completions", "untranslatable_param"
        body: dict = {"model": "m", "n": 2, "messages": [{"role": "user", "content": marker}]}
        primary, fallback = "oa_bad/bad-m", "an_ok/good-m"
    else:
        agent, path, rule = "an-to-oa", "/v1/messages", "untranslatable_content"
        content = [{"type": "text", "text": marker}, {"type": "container_upload", "file_id": "f1"}]
        body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}
        primary, fallback = "an_bad/bad-m", "oa_ok/good-m"
    r = _raw_post(rig, path, body, agent)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == rule and error["type"] == "invalid_request_error"
    assert (r.json().get("type") == "error") is (client == "messages")  # the client's API's error shape
    assert [s.path for s in _received(rig.bad, marker)] == [path]  # the primary was asked, in the client's API
    assert _received(rig.good, marker) == []
    assert r.headers.get("x-gwctl-attempts") == "2"
    row = rig.row(r.headers["x-gwctl-request-id"])
    assert (row["status"], row["rule"], row["route_kind"]) == (400, rule, "rejected")
    attempts = _attempts(row)
    assert attempts is not None and [(a["target"], a["status"]) for a in attempts] == [(primary, 503), (fallback, 400)]
