"""Usage capture from upstream responses, plain or streamed, without slowing the relay.

A stream is cut into SSE events at blank lines; complete events are passed on
at once (nothing waits for the end of the stream). Only events that mention
``"usage"`` are parsed as JSON:

* OpenAI chat / completions: the final chunk's ``usage`` (asked for with
  ``stream_options.include_usage``). When the client did not ask for it, the
  usage-only chunk (empty ``choices``) is kept from the client.
* Responses: ``response.completed`` carries ``response.usage``.
* Anthropic: ``message_start`` carries ``message.usage`` (input and cache
  tokens); ``message_delta`` carries the cumulative ``usage.output_tokens``.
"""

from __future__ import annotations

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
    """``data`` parsed as a JSON object, or None when it is not one (an upstream's odd answer is not our error)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def usage_from_body(api: str, body: bytes) -> Usage | None:
    doc = _json_object(body)
    return None if doc is None else usage_of(api, doc.get("usage"))


class StreamMeter:
    """Split an SSE byte stream into events, capture usage, optionally drop the usage-only chunk."""

    __slots__ = ("api", "strip_usage_chunk", "_buf", "raw_usage")

    def __init__(self, api: str, strip_usage_chunk: bool = False):
        self.api = api
        self.strip_usage_chunk = strip_usage_chunk
        self._buf = b""
        self.raw_usage: dict | None = None

    def feed(self, data: bytes) -> bytes:
        """Bytes to send to the client now: every complete event received so far."""
        buf = self._buf + data if self._buf else data
        cut = -1
        sep_len = 0
        for sep in _SEPARATORS:
            i = buf.rfind(sep)
            if i > cut:
                cut, sep_len = i, len(sep)
        if cut < 0:
            self._buf = buf
            return b""
        end = cut + sep_len
        complete, self._buf = buf[:end], buf[end:]
        if b'"usage"' not in complete:
            return complete
        return self._inspect(complete)

    def finish(self) -> bytes:
        rest, self._buf = self._buf, b""
        if rest and b'"usage"' in rest:
            return self._inspect(rest)
        return rest

    def usage(self) -> Usage | None:
        return usage_of(self.api, self.raw_usage)

    def _inspect(self, chunk: bytes) -> bytes:
        out = []
        for event in _split_events(chunk):
            if b'"usage"' in event and self._take(event):
                continue  # dropped: a usage-only chunk the client did not ask for
            out.append(event)
        return b"".join(out)

    def _take(self, event: bytes) -> bool:
        """Record usage from one event; True when the event should be dropped."""
        data = _data_of(event)
        if data is None:
            return False
        obj = _json_object(data)
        if obj is None:
            return False
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
            return False
        if self.api == "responses":
            resp = obj.get("response")
            if isinstance(resp, dict) and isinstance(resp.get("usage"), dict):
                self.raw_usage = resp["usage"]
            return False
        u = obj.get("usage")
        if isinstance(u, dict):
            self.raw_usage = u
            choices = obj.get("choices")
            return self.strip_usage_chunk and not choices
        return False


def _split_events(chunk: bytes) -> list[bytes]:
    """Events of a chunk that holds only complete events, each with its separator."""
    text = chunk.replace(b"\r\n", b"\n")
    parts = text.split(b"\n\n")
    events = [p + b"\n\n" for p in parts[:-1] if p]
    if parts[-1]:
        events.append(parts[-1])
    return events


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    data = b"\n".join(lines)
    if data.strip() == b"[DONE]":
        return None
    return data
