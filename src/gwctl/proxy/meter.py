"""Usage capture from upstream responses, plain or streamed, without slowing the relay.

A stream is cut into SSE events at blank lines; complete events are passed on
at once (nothing waits for the end of the stream). Only events that mention
``"usage"`` are parsed as JSON:

* OpenAI chat / completions: the final chunk's ``usage`` (asked for with
  ``stream_options.include_usage``). When the client did not ask for it, the
  usage the gateway asked for is kept from the client in whatever shape the
  server sends it: a chunk that carries nothing else (``"choices": []`` as
  OpenAI and vLLM send it, or choices with empty deltas as LiteLLM does) is
  dropped; a chunk that also carries output loses only its ``usage`` key.
* Responses: ``response.completed`` carries ``response.usage``.
* Anthropic: ``message_start`` carries ``message.usage`` (input and cache
  tokens); ``message_delta`` carries the cumulative ``usage.output_tokens``.

The meter also notices the stream's terminal event (``data: [DONE]``,
Anthropic's ``message_stop``, the Responses API's ``response.completed``,
``.incomplete`` or ``.failed``): once that has reached the client, the answer
is whole, whatever happens to either connection afterwards.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from gwctl.core.pricing import Usage, usage_from_anthropic, usage_from_openai_chat, usage_from_responses

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def usage_of(api: str, raw: Any) -> Usage | None:
    """Normalise a raw usage object of one API shape; None when absent or malformed."""
    if not isinstance(raw, dict):
        return None
    try:
        if api == "messages":
            return usage_from_anthropic(raw)
        if api == "responses":
            return usage_from_responses(raw)
        if "input_tokens" in raw and "prompt_tokens" not in raw:
            # some OpenAI-compatible servers answer chat with Responses-style names
            return usage_from_responses(raw)
        return usage_from_openai_chat(raw)
    except ValueError:
        return None


def _json_object(data: bytes) -> dict | None:
    """``data`` parsed as a JSON object, or None when it is not one (an upstream's odd answer is not our error).
    Text that is not UTF-8 and lone surrogate escapes read as U+FFFD, as the clients' own parsers read them
    (a server that cuts a character between two chunks sends those): see :func:`_lenient_object`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = _lenient_object(data)
    return obj if isinstance(obj, dict) else None


def _lenient_object(data: bytes) -> Any:
    """What orjson refused, read the way Python's decoder with ``errors="replace"`` and ``json`` read it, its
    strings mended so orjson can write them again; None when it is not JSON even so (or holds what orjson
    cannot write, such as an integer past 64 bits)."""
    try:
        obj = _mended(json.loads(data.decode("utf-8", "replace")))
        orjson.dumps(obj)
    except (ValueError, TypeError, RecursionError):
        return None
    return obj


def _mended(value: Any) -> Any:
    """``value`` with every string's lone surrogates replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_mended(k): _mended(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mended(v) for v in value]
    return value


def usage_from_body(api: str, body: bytes) -> Usage | None:
    doc = _json_object(body)
    return None if doc is None else usage_of(api, doc.get("usage"))


class StreamMeter:
    """Split an SSE byte stream into events, capture usage, optionally drop the usage-only chunk."""

    __slots__ = ("api", "strip_usage_chunk", "_buf", "raw_usage", "terminal", "_marker", "failure")

    def __init__(self, api: str, strip_usage_chunk: bool = False):
        self.api = api
        self.strip_usage_chunk = strip_usage_chunk
        self._buf = bytearray()  # the start of an event whose end has not come yet
        self.raw_usage: dict | None = None
        self.terminal = False  # the stream's terminal event was among the bytes fed so far
        self._marker = _TERMINAL_MARKERS.get(api, b"[DONE]")
        self.failure: str | None = None  # the upstream's error event's message, when its stream ended in one

    def feed(self, data: bytes) -> bytes:
        """Bytes to send to the client now: every complete event received so far.

        What is held back (the start of an event) holds no separator, so only the new bytes, and the 3 held
        before them that a separator can start in, are searched; and they are added to it in place: a very
        long event costs time in proportion to its length, not to its length squared."""
        pending = self._buf
        buf: bytes | bytearray
        if pending:
            start = max(len(pending) - 3, 0)
            pending += data
            buf = pending
        else:
            start = 0
            buf = data
        cut = -1
        sep_len = 0
        for sep in _SEPARATORS:
            i = buf.rfind(sep, start)
            if i > cut:
                cut, sep_len = i, len(sep)
        if cut < 0:
            if buf is data:
                pending += data
            return b""
        end = cut + sep_len
        if buf is data:
            complete = data[:end]
            if end < len(data):
                pending += memoryview(data)[end:]
        else:
            complete = bytes(pending[:end])
            del pending[:end]
        if self._marker in complete and not self.terminal:
            self._find_terminal(complete)
        if b'"error"' in complete and self.failure is None:  # a key (in a JSON string it would read \"error\")
            self._find_error(complete)
        if b'"usage"' not in complete:
            return complete
        return self._inspect(complete)

    @property
    def held(self) -> int:
        """Bytes held back: the start of an event whose end has not come."""
        return len(self._buf)

    def finish(self) -> bytes:
        rest, self._buf = bytes(self._buf), bytearray()
        if rest and self._marker in rest and not self.terminal:
            self._find_terminal(rest)
        if rest and b'"error"' in rest and self.failure is None:
            self._find_error(rest)
        if rest and b'"usage"' in rest:
            return self._inspect(rest)
        return rest

    def _find_terminal(self, chunk: bytes) -> None:
        """A marker's bytes were seen: check whether an event really is the terminal one."""
        for event in _split_events(chunk):
            data = _raw_data_of(event)
            if data is None:
                continue
            if data.strip() == b"[DONE]":
                self.terminal = True
                return
            if self._marker in data:
                obj = _json_object(data)
                if obj is not None and obj.get("type") in _TERMINAL_TYPES:
                    self.terminal = True
                    return

    def _find_error(self, chunk: bytes) -> None:
        """An ``"error"`` key was seen: note the upstream's error event (OpenAI's ``{"error": {...}}`` chunk,
        Anthropic's ``{"type": "error", "error": {...}}``), whose stream failed however it ends."""
        for event in _split_events(chunk):
            if b'"error"' not in event:
                continue
            data = _raw_data_of(event)
            obj = _json_object(data) if data is not None else None
            if obj is not None:
                failure = stream_error(obj)
                if failure is not None:
                    self.failure = failure
                    return

    def usage(self) -> Usage | None:
        return usage_of(self.api, self.raw_usage)

    def _inspect(self, chunk: bytes) -> bytes:
        out = []
        for event in _split_events(chunk):
            if b'"usage"' in event:
                kept = self._take(event)
                if kept is not None:
                    event = kept  # b"": a usage-only chunk the client did not ask for; else the chunk without it
            out.append(event)
        return b"".join(out)

    def _take(self, event: bytes) -> bytes | None:
        """Record usage from one event; None to pass it on as is, else what to send instead."""
        data = _data_of(event)
        if data is None:
            return None
        obj = _json_object(data)
        if obj is None:
            return None
        if self.api == "messages":
            kind = obj.get("type")
            if kind == "message_start" and isinstance(obj.get("message"), dict):
                u = obj["message"].get("usage")
                if isinstance(u, dict):
                    self.raw_usage = {**(self.raw_usage or {}), **u}
            elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
                merged = dict(self.raw_usage or {})
                for k, v in obj["usage"].items():
                    if v is not None:
                        merged[k] = v
                self.raw_usage = merged
            return None
        if self.api == "responses":
            resp = obj.get("response")
            if isinstance(resp, dict) and isinstance(resp.get("usage"), dict):
                self.raw_usage = resp["usage"]
            return None
        u = obj.get("usage")
        if isinstance(u, dict):
            self.raw_usage = u
        if not self.strip_usage_chunk or not isinstance(u, dict):
            return None  # "usage": null (on every chunk of a stream that asked for usage) is passed on as it is
        if _carries_nothing_else(obj):
            return b""
        del obj["usage"]  # output and usage in one chunk: the client keeps the output
        return b"data: " + orjson.dumps(obj) + (event[len(event.rstrip(b"\r\n")) :] or b"\n\n")


_TERMINAL_MARKERS = {"messages": b"message_stop", "responses": b"response."}
_TERMINAL_TYPES = frozenset({"message_stop", "response.completed", "response.incomplete", "response.failed"})
_CHUNK_KEYS = frozenset(
    {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
        "service_tier",
        "provider",
        "obfuscation",
    }
)


def _carries_nothing_else(chunk: dict) -> bool:
    """True when a chat/completions chunk holds usage and no output: no choice says or finishes anything."""
    if not chunk.keys() <= _CHUNK_KEYS:
        return False
    choices = chunk.get("choices")
    if not choices:
        return True
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") or choice.get("text") or choice.get("logprobs"):
            return False
        delta = choice.get("delta")
        if delta is not None and (not isinstance(delta, dict) or any(v for k, v in delta.items() if k != "role")):
            return False
    return True


def _split_events(chunk: bytes) -> list[bytes]:
    """Events of a chunk that holds only complete events, each with its own separator, bytes unchanged."""
    parts = _EVENT_END.split(chunk)
    events = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2) if parts[i]]
    if parts[-1]:
        events.append(parts[-1])
    return events


_EVENT_END = re.compile(rb"(\r\n\r\n|\n\n|\r\r)")


def _raw_data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip(b" ") for line in event.replace(b"\r", b"\n").split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def _data_of(event: bytes) -> bytes | None:
    data = _raw_data_of(event)
    if data is None or data.strip() == b"[DONE]":
        return None
    return data


def stream_error(event: dict) -> str | None:
    """The message of a stream's error event in either API's shape (OpenAI ``{"error": {...}}``, Anthropic
    ``{"type": "error", "error": {...}}``), for the activity row; None for any other event."""
    err = event.get("error")
    if not isinstance(err, dict) or (event.get("type") not in (None, "error")):
        return None
    message = err.get("message")
    kind = err.get("type")
    text = message if isinstance(message, str) and message else "no message"
    return f"upstream stream error: {text}" + (f" ({kind})" if isinstance(kind, str) and kind else "")
