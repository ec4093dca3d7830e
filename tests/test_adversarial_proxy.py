"""Hostile and unusual clients and upstreams against a real proxy: translation, the stream relay, raw HTTP.

One module-wide rig: a raw scripted upstream (tests/rawupstream.py) behind three sources, ``oa`` (``--api
openai``), ``an`` (``--api anthropic``) and ``both`` (untranslated). A request names its script with
``script:NAME`` anywhere in its body; the script is a list of byte pieces written one at a time (so an event
can be split anywhere). Requests go out with httpx (exact status and bytes) or a raw socket.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from gwctl.core.translate.requests import anthropic_to_openai_request, openai_to_anthropic_request
from gwctl.core.translate.streams import OpenAIToAnthropicStream
from proxyrun import ProxyProcess, StoreRig
from rawupstream import RawUpstream, Received

UP_KEY = "sk-up"
PRICES = ("--price", "input=3e-6", "--price", "output=1.5e-5", "--price", "cached_input=1.5e-6")

SCRIPTS: dict[str, list[bytes]] = {}  # script name -> the answer's pieces, each its own write


def oa_event(payload: dict) -> bytes:
    return b"data: %s\n\n" % json.dumps(payload).encode()


def an_event(payload: dict) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (payload["type"].encode(), json.dumps(payload).encode())


def oa_chunk(delta: dict | None, finish: str | None = None, **extra) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]} | extra


OA_USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked(pieces: list[bytes]) -> list[bytes]:
    """The answer's head, each piece as its own chunk of a chunked body, then the body's end."""
    return [sse_head()] + [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p] + [b"0\r\n\r\n"]


def json_answer(body: bytes, status: int = 200, ctype: str = "application/json") -> list[bytes]:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return [head + body]


def respond(rec: Received):
    text = rec.body.decode("utf-8", "replace")
    for name, pieces in SCRIPTS.items():
        if f"script:{name}\\" in text or f'script:{name}"' in text:
            return [(p, 0.01) for p in pieces]
    return [(json_answer(b'{"error": {"message": "no script", "type": "invalid_request_error"}}', 400)[0], 0.0)]


class Rig(StoreRig):
    def __init__(self, root: Path):
        self.raw = RawUpstream(respond)  # type: ignore[arg-type]
        self.store = root / "cfg" / "gwctl.toml"
        self.db = root / "activity.sqlite3"
        for name, api in (("oa", "openai"), ("an", "anthropic"), ("both", "both")):
            self.cli(
                "source", "add", name, "--base-url", self.raw.url, "--auth-value", UP_KEY,
                "--api", api, "--read-timeout", "5",
            )  # fmt: skip
            self.cli("catalog", "set", f"{name}/m", *PRICES, "--max-output", "1000")
        self.key = self.cli("key", "create", "tester", "--json").json()["key"]
        self.proc = ProxyProcess(self.store, f"sqlite://{self.db}")
        self.http = httpx.Client(base_url=self.proc.url, timeout=20, headers={"Authorization": f"Bearer {self.key}"})

    def messages(self, body: dict) -> httpx.Response:
        return self.http.post("/v1/messages", content=json.dumps(body).encode(), headers={"x-api-key": self.key})

    def chat(self, body: dict) -> httpx.Response:
        return self.http.post("/v1/chat/completions", content=json.dumps(body).encode())

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.raw.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("adversarial"))
    yield r
    r.close()


def script(name: str, pieces: list[bytes]) -> str:
    SCRIPTS[name] = pieces
    return f"script:{name}"


def an_body(text: str, **extra) -> dict:
    return {"model": "oa/m", "max_tokens": 100, "messages": [{"role": "user", "content": text}]} | extra


def oa_body(text: str, **extra) -> dict:
    return {"model": "an/m", "messages": [{"role": "user", "content": text}]} | extra


def row_of(rig: Rig, resp: httpx.Response) -> dict:
    return rig.row(resp.headers["x-gwctl-request-id"])


# --- hostile client bodies: a field of the wrong type is the client's 400, never the gateway's 500 ------------

A2O_BAD_SHAPES = {
    "stop_sequences number": {"stop_sequences": 5},
    "metadata string": {"metadata": "x"},
    "tools number": {"tools": 5},
    "system number": {"system": 5},
    "user content number": {"messages": [{"role": "user", "content": 5}]},
    "assistant content number": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]},
    "tool_result content number": {
        "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]
    },
}
O2A_BAD_SHAPES = {
    "stop number": {"stop": 5},
    "stream_options string": {"stream": True, "stream_options": "x"},
    "reasoning_effort list": {"reasoning_effort": ["high"]},
    "system content number": {"messages": [{"role": "system", "content": 5}, {"role": "user", "content": "a"}]},
    "user content number": {"messages": [{"role": "user", "content": 5}]},
    "tool content number": {"messages": [{"role": "tool", "tool_call_id": "t", "content": 5}]},
    "tool_calls number": {"messages": [{"role": "assistant", "tool_calls": 5}]},
    "tool call function string": {"messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]},
    "tool function string": {"tools": [{"type": "function", "function": "x"}]},
    "tool_choice function string": {"tool_choice": {"type": "function", "function": "x"}},
    "tools number": {"tools": 5},
}


@pytest.mark.parametrize("case", sorted(A2O_BAD_SHAPES))
def test_anthropic_body_of_wrong_shapes_is_a_400_with_a_rule(rig, case):
    r = rig.messages(an_body("hi") | A2O_BAD_SHAPES[case])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("case", sorted(O2A_BAD_SHAPES))
def test_openai_body_of_wrong_shapes_is_a_400_with_a_rule(rig, case):
    r = rig.chat(oa_body("hi") | O2A_BAD_SHAPES[case])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_a_stop_sequence_given_as_one_string_is_not_split_into_letters():
    """Anthropic's ``stop_sequences`` is a list; a bare string used to become one stop per letter (the answer
    would stop at the first E, N or D): a wrong shape is refused, not reinterpreted."""
    from gwctl.core.translate import TranslationError

    body = an_body("hi", stop_sequences="END")
    with pytest.raises(TranslationError) as exc:
        anthropic_to_openai_request(body, default_max_tokens=10)
    assert exc.value.rule == "invalid_request" and exc.value.param == "stop_sequences"
    with pytest.raises(TranslationError):
        openai_to_anthropic_request(oa_body("hi", stop={"END": 1}), default_max_tokens=10)
    ok = openai_to_anthropic_request(oa_body("hi", stop="END"), default_max_tokens=10)
    assert ok.body["stop_sequences"] == ["END"]


# --- hostile upstream answers: what cannot be translated is the upstream's 502, never the gateway's 500 ------


def test_a_whole_openai_answer_of_the_wrong_shape_is_a_502_not_a_500(rig):
    """An OpenAI upstream whose answer has ``choices: [null]`` (and usage): the Anthropic client gets a 502 in
    its own error shape; the row is the upstream's failure, and keeps the usage the answer carried."""
    body = json.dumps({"id": "x", "choices": [None], "usage": OA_USAGE}).encode()
    r = rig.messages(an_body(script("oa-null-choice", json_answer(body))))
    assert r.status_code == 502, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"
    row = row_of(rig, r)
    assert row["status"] == 502 and row["rule"] != "internal_error"
    assert row["output_tokens"] == 50 and row["cost"] is not None and float(row["cost"]) > 0


def test_a_whole_anthropic_answer_with_a_server_tool_block_is_a_502_not_a_500(rig):
    """An Anthropic upstream answering with a block OpenAI has no form for (``server_tool_use``): the
    translator refuses it; that refusal is the upstream answer's 502 (with the rule), not an internal error."""
    answer = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
        "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }  # fmt: skip
    r = rig.chat(oa_body(script("an-server-tool", json_answer(json.dumps(answer).encode()))))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "untranslatable_content"
    row = row_of(rig, r)
    assert row["status"] == 502 and row["rule"] == "untranslatable_content" and row["output_tokens"] == 5


def test_an_openai_stream_chunk_of_the_wrong_shape_ends_in_an_error_event(rig):
    """Mid-stream, an OpenAI chunk whose choice is null: the Anthropic client's stream ends in an ``error``
    event (not a cut connection), and the row is the upstream's stream error (502) with the usage that came."""
    events = [
        oa_event(oa_chunk({"role": "assistant", "content": "Hel"})),
        oa_event({"id": "c1", "object": "chat.completion.chunk", "choices": [None]}),
        oa_event(oa_chunk({}, "stop")),
        oa_event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": OA_USAGE}),
        b"data: [DONE]\n\n",
    ]
    r = rig.messages(an_body(script("oa-null-chunk", chunked(events)), stream=True))
    assert r.status_code == 200
    text = r.text
    assert "event: error" in text and "message_stop" not in text, text
    row = row_of(rig, r)
    assert row["status"] == 502 and row["rule"] == "upstream_stream_error"
    assert row["output_tokens"] == 50


def test_an_anthropic_stream_event_of_the_wrong_shape_ends_in_an_error_payload(rig):
    start = {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 10, "output_tokens": 1}}}
    events = [
        an_event(start),
        an_event({"type": "content_block_start", "index": 0, "content_block": "text"}),
        an_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
        an_event({"type": "message_stop"}),
    ]
    r = rig.chat(oa_body(script("an-str-block", chunked(events)), stream=True))
    assert r.status_code == 200
    assert '"error"' in r.text and "[DONE]" not in r.text, r.text
    row = row_of(rig, r)
    assert row["status"] == 502 and row["rule"] == "upstream_stream_error"
    assert row["output_tokens"] == 7


# --- streamed tool calls as OpenAI-compatible servers really send them ------------------------------------------


def sse_events(text: str) -> list[dict]:
    """The JSON payloads of an SSE body, in order."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                out.append(json.loads(line[5:]))
    return out


def anthropic_blocks(events: list[dict]) -> list[dict]:
    """The content blocks an Anthropic client assembles from a stream's events (tool inputs parsed)."""
    blocks: dict[int, dict] = {}
    for ev in events:
        if ev["type"] == "content_block_start":
            blocks[ev["index"]] = dict(ev["content_block"]) | {"_json": ""}
        elif ev["type"] == "content_block_delta" and ev["delta"]["type"] == "input_json_delta":
            blocks[ev["index"]]["_json"] += ev["delta"]["partial_json"]
    for b in blocks.values():
        if b["type"] == "tool_use":
            b["input"] = json.loads(b.pop("_json") or "{}")
    return [blocks[i] for i in sorted(blocks)]


def test_parallel_tool_calls_without_an_index_stay_separate_calls(rig):
    """Gemini's and Ollama's OpenAI-compatible streams send each tool call whole in one chunk, without
    ``index``: two calls (two ids) must be two tool_use blocks, not one block named after the first call whose
    input is both argument strings glued together."""
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "alpha", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "beta", "arguments": '{"y": 2}'}},
    ]
    events = [
        oa_event(oa_chunk({"role": "assistant", "tool_calls": [calls[0]]})),
        oa_event(oa_chunk({"tool_calls": [calls[1]]}, "tool_calls")),
        oa_event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": OA_USAGE}),
        b"data: [DONE]\n\n",
    ]
    r = rig.messages(an_body(script("oa-no-index", chunked(events)), stream=True))
    blocks = anthropic_blocks(sse_events(r.text))
    assert [(b["id"], b["name"], b["input"]) for b in blocks] == [
        ("call_a", "alpha", {"x": 1}),
        ("call_b", "beta", {"y": 2}),
    ]
    stream = OpenAIToAnthropicStream("m", "id")  # index null: the same
    out = []
    for call in calls:
        out += stream.feed(oa_chunk({"tool_calls": [call | {"index": None}]}))
    out += stream.feed(oa_chunk({}, "tool_calls")) + stream.feed("[DONE]")
    assert [b["name"] for b in anthropic_blocks([p for _, p in out if isinstance(p, dict)])] == ["alpha", "beta"]


def test_streamed_tool_call_pieces_with_their_index_still_assemble(rig):
    """The usual OpenAI shape (id and name on a call's first chunk only, argument pieces by index, two calls
    interleaved) keeps working."""

    def tc(index, args, **first):
        return {"index": index, "function": {"arguments": args} | ({"name": first["name"]} if first else {})} | (
            {"id": first["id"], "type": "function"} if first else {}
        )

    events = [
        oa_event(oa_chunk({"tool_calls": [tc(0, "", id="call_a", name="alpha"), tc(1, "", id="call_b", name="beta")]})),
        oa_event(oa_chunk({"tool_calls": [tc(0, '{"x": ')]})),
        oa_event(oa_chunk({"tool_calls": [tc(1, '{"y": 2}')]})),
        oa_event(oa_chunk({"tool_calls": [tc(0, "1}")]})),
        oa_event(oa_chunk({}, "tool_calls")),
        b"data: [DONE]\n\n",
    ]
    r = rig.messages(an_body(script("oa-interleaved", chunked(events)), stream=True))
    blocks = anthropic_blocks(sse_events(r.text))
    assert [(b["id"], b["name"], b["input"]) for b in blocks] == [
        ("call_a", "alpha", {"x": 1}),
        ("call_b", "beta", {"y": 2}),
    ]


# --- tool arguments nested deeper than any JSON writer here goes ---------------------------------------------


def nested_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [300, 5000])
def test_an_answer_whose_tool_arguments_nest_very_deep_keeps_them_as_text(rig, depth):
    """A model's tool arguments nested 300 levels (past orjson's writer) or 5000 (past Python's parser): the
    Anthropic client gets the answer with the arguments kept whole as ``{"_raw": text}`` (as for broken JSON),
    not a 500 from a RecursionError or the re-serialisation."""
    arguments = nested_object(depth)
    call = {"id": "call_a", "type": "function", "function": {"name": "alpha", "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer = {
        "id": "x",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": OA_USAGE,
    }
    r = rig.messages(an_body(script(f"oa-deep-{depth}", json_answer(json.dumps(answer).encode()))))
    assert r.status_code == 200, r.text[:300]
    block = r.json()["content"][0]
    assert block["type"] == "tool_use" and block["input"] == {"_raw": arguments}


def test_a_client_tool_call_whose_arguments_nest_very_deep_is_not_a_500(rig):
    """The same arguments in an OpenAI client's earlier assistant turn (a string, so the body's own depth check
    never sees them): translated to Anthropic as ``{"_raw": text}``, not a 500."""
    arguments = nested_object(5000)
    call = {"id": "call_a", "type": "function", "function": {"name": "alpha", "arguments": arguments}}
    answer = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "done"}], "usage": {"input_tokens": 10, "output_tokens": 5},
    }  # fmt: skip
    name = script("an-after-deep-args", json_answer(json.dumps(answer).encode()))
    messages = [
        {"role": "user", "content": name},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_a", "content": "ok"},
    ]
    r = rig.chat({"model": "an/m", "messages": messages})
    assert r.status_code == 200, r.text[:300]
    sent = json.loads(rig.raw.received[-1].body)
    assert sent["messages"][1]["content"][0]["input"] == {"_raw": arguments}


# --- text a JSON parser stricter than the client's would drop ------------------------------------------------


def test_a_streamed_chunk_with_a_lone_surrogate_is_not_dropped_from_a_translated_stream(rig):
    """A server that cuts an emoji between two chunks can send a lone surrogate escape (``\\ud83d``) or raw
    bytes that are not UTF-8. An untranslated client's JSON parser takes such a chunk (the text shows a
    replacement character); a translated stream used to drop the whole chunk, text and finish reason with it,
    so the answer silently lost words (and the finish made it look cut short)."""
    lone = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel\\ud83d"},"finish_reason":null}]}\n\n'
    bad_utf8 = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo\xf0\x9f"},"finish_reason":"stop"}]}\n\n'
    events = [
        lone,
        bad_utf8,
        oa_event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": OA_USAGE}),
        b"data: [DONE]\n\n",
    ]
    r = rig.messages(an_body(script("oa-surrogate", chunked(events)), stream=True))
    payloads = sse_events(r.content.decode("utf-8"))
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "Hel\ufffdlo\ufffd", payloads
    assert [p["delta"]["stop_reason"] for p in payloads if p["type"] == "message_delta"] == ["end_turn"]
    row = row_of(rig, r)
    assert row["status"] == 200 and row["output_tokens"] == 50


# --- one very long event ----------------------------------------------------------------------------------


def test_one_very_long_event_is_metered_in_linear_time():
    """An upstream event of 24 MiB (an image's base64 in one chunk) arriving in 64 KiB reads: the meter used
    to join and search its whole buffer again on every read (quadratic: about 10 s of a worker's event loop,
    every other request stalled); it takes a fraction of a second and passes the event on whole."""
    from gwctl.proxy.meter import StreamMeter

    event = b'data: {"x": "' + b"A" * (24 << 20) + b'"}\r\n\r\n'
    for api, strip in (("chat", True), ("messages", False)):
        meter = StreamMeter(api, strip_usage_chunk=strip)
        started = time.perf_counter()
        out = [meter.feed(event[i : i + 65536]) for i in range(0, len(event), 65536)]
        out.append(meter.finish())
        assert time.perf_counter() - started < 3.0
        assert b"".join(out) == event and out[-2] != b"" and not any(out[:-2])


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_stream_split_anywhere_meters_and_relays_as_it_does_whole(newline):
    """Every split of a stream into reads (inside ``data:``, inside a UTF-8 character, between CR and LF)
    gives the client the same bytes and the meter the same usage as the stream read whole; comments,
    ``event:`` lines and ``data:`` without a space included; the usage-only chunk dropped either way."""
    import random

    from gwctl.proxy.meter import StreamMeter

    nl = newline
    stream = b"".join(
        [
            b": ping" + nl + nl,
            b"event: chunk"
            + nl
            + b"data:"
            + json.dumps(oa_chunk({"content": "héllo 😀"}), ensure_ascii=False).encode(),
            nl + nl,
            b"data: " + json.dumps(oa_chunk({}, "stop")).encode() + nl + nl,
            b"data: " + json.dumps({"id": "c1", "choices": [], "usage": OA_USAGE}).encode() + nl + nl,
            b"data: [DONE]" + nl + nl,
        ]
    )
    whole = StreamMeter("chat", strip_usage_chunk=True)
    expected = whole.feed(stream) + whole.finish()
    assert b"usage" not in expected and whole.usage() is not None and whole.terminal
    rng = random.Random(7)
    splits = [[i] for i in range(1, len(stream))] + [sorted(rng.sample(range(1, len(stream)), 12)) for _ in range(50)]
    for cuts in splits + [list(range(1, len(stream)))]:
        meter = StreamMeter("chat", strip_usage_chunk=True)
        bounds = [0, *cuts, len(stream)]
        out = b"".join(meter.feed(stream[a:b]) for a, b in zip(bounds, bounds[1:])) + meter.finish()
        assert out == expected and meter.usage() == whole.usage() and meter.terminal, cuts


# --- absurd usage counts --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["1" + "0" * 30, "1e30", str(2**63)])
def test_an_absurd_usage_count_does_not_jam_the_activity_log(rig, count):
    """An upstream reporting 10**30 prompt tokens (or 2**63): no request comes near, and the count does not fit
    the log's 64-bit integers. It used to be taken as usage: the log writer then failed on that row ("Python
    int too large to convert to SQLite INTEGER"), took the log for unavailable and backed off (the rows after
    it waiting), and in the end dropped the row: the request left no record. The count is now refused as
    malformed usage (the row says the answer, without usage or cost), and the next row is written."""
    answer = b'{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    answer += b'"usage":{"prompt_tokens":' + count.encode() + b',"completion_tokens":5,"total_tokens":5}}'
    r = rig.chat(
        {"model": "both/m", "messages": [{"role": "user", "content": script(f"huge-{count}", json_answer(answer))}]}
    )
    assert r.status_code == 200
    row = row_of(rig, r)
    assert row["status"] == 200 and row["cost"] is None and not row["input_tokens"]
    answer = json.dumps({"id": "y", "choices": [], "usage": OA_USAGE}).encode()
    after = rig.chat(
        {"model": "both/m", "messages": [{"role": "user", "content": script("after-huge", json_answer(answer))}]}
    )
    assert row_of(rig, after)["input_tokens"] == 1000


# --- media types are case-insensitive ------------------------------------------------------------------------


def test_an_event_stream_whose_content_type_is_not_lower_case_is_still_a_stream(rig):
    """``Content-Type: Text/Event-Stream`` is an event stream (media types are case-insensitive, RFC 9110
    8.3.1). It used to be read whole as a JSON answer: a translated client got the upstream's own API's events
    untranslated, and the answer's usage was never metered (the row had no cost)."""
    events = [
        oa_event(oa_chunk({"role": "assistant", "content": "Hello"})),
        oa_event(oa_chunk({}, "stop")),
        oa_event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": OA_USAGE}),
        b"data: [DONE]\n\n",
    ]
    pieces = chunked(events)
    pieces[0] = pieces[0].replace(b"text/event-stream", b"Text/Event-Stream")
    r = rig.messages(an_body(script("oa-upper-ctype", pieces), stream=True))
    payloads = sse_events(r.text)
    assert [p["type"] for p in payloads][0] == "message_start" and payloads[-1]["type"] == "message_stop", r.text
    row = row_of(rig, r)
    assert row["status"] == 200 and row["input_tokens"] == 1000 and row["cost"] is not None


@pytest.mark.parametrize(
    "shape",
    [
        {"choices": {"first": {}}},  # an object where the list belongs: choices[0] was a KeyError
        {"choices": [{"message": {"tool_calls": {"a": 1}}}]},
    ],
)
def test_more_whole_openai_answers_of_the_wrong_shape_are_502s(rig, shape):
    body = json.dumps({"id": "x", "usage": OA_USAGE} | shape).encode()
    r = rig.messages(an_body(script(f"oa-shape-{len(body)}", json_answer(body))))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "untranslatable_answer"
    assert row_of(rig, r)["input_tokens"] == 1000


def test_an_anthropic_usage_of_the_wrong_shape_mid_stream_ends_in_an_error_payload(rig):
    """``message_start.message.usage`` as a list: the stream translator's dict update raised ValueError."""
    events = [
        an_event({"type": "message_start", "message": {"id": "m1", "usage": [["input_tokens"]]}}),
        an_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
        an_event({"type": "message_stop"}),
    ]
    r = rig.chat(oa_body(script("an-list-usage", chunked(events)), stream=True))
    assert '"error"' in r.text and "[DONE]" not in r.text, r.text
    assert row_of(rig, r)["status"] == 502


def test_a_translated_stream_cut_into_tiny_reads_reassembles(rig):
    """An OpenAI stream with CRLF line ends, ``data:`` without a space, ``: ping`` comments and ``event:``
    lines, written 7 bytes at a time (so reads end inside ``data:``, inside a UTF-8 character and between CR
    and LF): the Anthropic client gets the whole text, the stop reason and the usage, and the row the usage."""
    nl = b"\r\n"
    events = [
        b": ping" + nl + nl,
        b"event: chunk" + nl + b"data:" + json.dumps(oa_chunk({"content": "héllo 😀 "}), ensure_ascii=False).encode(),
        nl + nl,
        b"data:" + json.dumps(oa_chunk({"content": "wörld"}), ensure_ascii=False).encode() + nl + nl,
        b"data: " + json.dumps(oa_chunk({}, "length")).encode() + nl + nl,
        b"data: " + json.dumps({"id": "c1", "choices": [], "usage": OA_USAGE}).encode() + nl + nl,
        b"data: [DONE]" + nl + nl,
    ]
    body = b"".join(events)
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    r = rig.messages(an_body(script("oa-tiny-reads", chunked(pieces)), stream=True))
    payloads = sse_events(r.content.decode("utf-8"))
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "héllo 😀 wörld"
    [delta] = [p for p in payloads if p["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["input_tokens"] == 1000
    assert payloads[-1]["type"] == "message_stop"
    row = row_of(rig, r)
    assert row["status"] == 200 and row["input_tokens"] == 1000 and row["output_tokens"] == 50


def test_an_anthropic_stream_with_multi_line_data_cut_into_tiny_reads_reassembles(rig):
    """Anthropic events whose JSON spans two ``data:`` lines (legal SSE: the lines join with a newline), CRLF
    line ends, a ``ping`` event, written 5 bytes at a time, to an OpenAI client that asked for usage."""
    nl = b"\r\n"

    def ev(payload: dict) -> bytes:
        text = json.dumps(payload, ensure_ascii=False).encode()
        half = text.index(b",") + 1
        return (
            b"event: "
            + payload["type"].encode()
            + nl
            + b"data: "
            + text[:half]
            + nl
            + b"data: "
            + text[half:]
            + nl
            + nl
        )

    start = {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 900, "output_tokens": 1}}}
    events = [
        ev(start),
        ev({"type": "ping", "x": 1}),
        ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ev({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "grüß 🙂"}}),
        ev({"type": "content_block_stop", "index": 0}),
        ev({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 12}}),
        ev({"type": "message_stop", "x": 1}),
    ]
    body = b"".join(events)
    pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
    req = oa_body(script("an-tiny-reads", chunked(pieces)), stream=True, stream_options={"include_usage": True})
    r = rig.chat(req)
    payloads = sse_events(r.content.decode("utf-8"))
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert text == "grüß 🙂"
    assert [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]][-1] == "length"
    assert payloads[-1]["usage"]["prompt_tokens"] == 900 and payloads[-1]["usage"]["completion_tokens"] == 12
    assert r.text.rstrip().endswith("data: [DONE]")
    row = row_of(rig, r)
    assert row["status"] == 200 and row["input_tokens"] == 900 and row["output_tokens"] == 12


# --- an error that comes with a success status ---------------------------------------------------------------


def test_an_error_body_with_status_200_is_not_passed_off_as_an_empty_answer(rig):
    """Some OpenAI-compatible servers answer 200 with ``{"error": {...}}`` and no choices. Translated, that
    became an Anthropic message with no content (a successful, empty answer, stop reason null); it is the
    upstream's failure, answered 502 with its message."""
    body = b'{"error": {"message": "model overloaded, try later", "type": "server_error", "code": 503}}'
    r = rig.messages(an_body(script("oa-200-error", json_answer(body))))
    assert r.status_code == 502, r.text
    assert "model overloaded, try later" in r.json()["error"]["message"]
    assert row_of(rig, r)["status"] == 502
    body = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    r = rig.chat(oa_body(script("an-200-error", json_answer(body))))
    assert r.status_code == 502 and "Overloaded" in r.json()["error"]["message"], r.text


def test_a_whole_answer_over_the_cap_fails_instead_of_filling_memory(monkeypatch):
    """An upstream that sends a whole answer without end: once more than MAX_ANSWER_BYTES is held the answer
    fails (the forward stage then answers 502 and hangs up), and what arrives afterwards is not kept."""
    import asyncio

    from gwctl.proxy.upstream import UpstreamError
    from gwctl.proxy.upstream import response as upstream_response

    monkeypatch.setattr(upstream_response, "MAX_ANSWER_BYTES", 1000)

    async def main():
        resp = upstream_response.UpstreamResponse(None, asyncio.get_running_loop(), "POST")  # type: ignore[arg-type]
        resp.head_done(200)
        reading = asyncio.ensure_future(resp.read())
        await asyncio.sleep(0)
        for _ in range(5):
            resp.feed(b"x" * 600)
        with pytest.raises(UpstreamError, match="larger than"):
            await reading
        return sum(map(len, resp._pieces))

    assert asyncio.run(main()) <= 1000


def test_a_stream_event_without_end_over_the_cap_is_the_upstreams_failure(monkeypatch):
    """A stream whose one event never ends: past MAX_EVENT_BYTES held back the relay gives up on the upstream
    (502, as for a broken stream) instead of holding it all."""
    import asyncio

    from gwctl.core.config import Snapshot
    from gwctl.proxy import relay
    from gwctl.proxy.flow import Flow

    monkeypatch.setattr(relay, "MAX_EVENT_BYTES", 1000)

    class Client:
        async def write(self, data):
            raise AssertionError("nothing complete to send")

        def end(self):
            pass

    class Req:
        path, headers = "/v1/chat/completions", {}

        def start_stream(self, status, headers):
            return Client()

    class Upstream:
        status = 200

        def __aiter__(self):
            return self._gen()

        async def _gen(self):
            yield b"data: {"
            for _ in range(10):
                yield b"x" * 600

        def abort(self):
            pass

    recorded = []
    recorder = type("R", (), {"metrics": None, "record": lambda self, *a: recorded.append(a)})()
    flow = Flow(Req(), "rid", 0.0, Snapshot())  # type: ignore[arg-type]
    flow.api = "chat"
    asyncio.run(relay.relay_stream(flow, Upstream(), [], recorder))
    [(_f, status, _usage, _rule, error)] = recorded
    assert status == 502 and "larger than" in error
