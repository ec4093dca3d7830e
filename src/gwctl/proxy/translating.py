"""Translation in the forward and relay stages, for a source that speaks only the other API.

The decision says which way (``Decision.translate``); this module turns the client's body into the
upstream's API, and the upstream's answer (whole, error or streamed) back into the client's. The
upstream's answer is metered in the upstream's own shape before it is translated, so a translated
request costs exactly what an untranslated one with the same counts would. Nothing here runs for a
request whose decision does not translate.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gwctl.core.decision import A2O, Decision
from gwctl.core.pricing import Usage
from gwctl.core.translate import (
    DONE,
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_error_to_openai,
    anthropic_to_openai_response,
    openai_error_to_anthropic,
    openai_to_anthropic_response,
)
from gwctl.core.translate.target import translate_for
from gwctl.proxy.meter import StreamMeter, _data_of, _json_object, _split_events, stream_error

# what a translator raises on a field of the wrong JSON type (a string where a list or object belongs, a list
# where an object does, ...): in an upstream's answer or event that is the upstream's failure, not a bug of ours
_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


class Translation:
    """One translated attempt: which way, the model the client's answer names, and whether the upstream's
    usage is for the gateway only (the client streams without asking for it in its own API)."""

    __slots__ = ("way", "client_model", "hidden_usage", "upstream_api", "warnings")

    def __init__(self, way: str, client_model: str, hidden_usage: bool) -> None:
        self.way = way
        self.client_model = client_model
        self.hidden_usage = hidden_usage
        self.upstream_api = "chat" if way == A2O else "messages"  # the shape the upstream's answer is metered in
        self.warnings: tuple[str, ...] = ()  # the advisory fields dropped from the request (its answer's header)

    def answer(self, status: int, data: bytes) -> bytes:
        """A whole upstream answer (or error body) in the client's API; a body that is not a JSON object
        passes unchanged (the upstream's odd answer is shown as it came). Raises
        :class:`~gwctl.core.translate.TranslationError` for an answer that has no form in the client's API,
        whose fields have the wrong JSON types, or that is an error body sent with a success status (the
        upstream's fault, not the gateway's)."""
        doc = _json_object(data)
        if doc is None:
            return data
        try:
            return self._answer(status, doc)
        except TranslationError:
            raise
        except _SHAPE_ERRORS as exc:
            raise TranslationError(
                "untranslatable_answer", f"the upstream's answer has the wrong shape ({exc})"
            ) from exc

    def _answer(self, status: int, doc: dict[str, Any]) -> bytes:
        failure = stream_error(doc) if status < 400 and "choices" not in doc and "content" not in doc else None
        if failure is not None:  # an error body with a success status: not an (empty) answer
            raise TranslationError("untranslatable_answer", f"the upstream answered {status} with an error ({failure})")
        if self.way == A2O:
            if status >= 400:
                return orjson.dumps(openai_error_to_anthropic(status, doc))
            return orjson.dumps(openai_to_anthropic_response(doc, model=self.client_model))
        if status >= 400:
            return orjson.dumps(anthropic_error_to_openai(status, doc))
        return orjson.dumps(anthropic_to_openai_response(doc, model=self.client_model, created=int(time.time())))

    def stream_meter(self, rid: str) -> TranslatingMeter:
        """The relay's meter for this attempt's event stream."""
        return TranslatingMeter(self, rid)


def translate_request(d: Decision, body: dict[str, Any], already_hidden: bool) -> tuple[Translation, bytes]:
    """The body to send upstream, in the source's API, and the attempt's :class:`Translation`. Raises
    :class:`~gwctl.core.translate.TranslationError` for a request with no counterpart in the other API.
    ``already_hidden``: an earlier untranslated attempt asked usage for the gateway into ``body``."""
    translated = translate_for(d, body)
    client_model = d.client_model or str(body.get("model") or "")
    translation = Translation(d.translate or "", client_model, translated.hidden_usage or already_hidden)
    translation.warnings = translated.warnings
    return translation, orjson.dumps(translated.body)


class TranslatingMeter:
    """:class:`~gwctl.proxy.meter.StreamMeter`'s interface for a translated stream: the upstream's events
    are metered in its own API's shape, then each is translated and written in the client's API (Anthropic
    ``event: NAME`` + ``data: JSON``; OpenAI ``data: JSON`` and ``data: [DONE]``). ``terminal`` is the
    client's stream's end (message_stop or [DONE]) having been written."""

    __slots__ = ("_meter", "_stream", "terminal", "failure")

    def __init__(self, translation: Translation, rid: str) -> None:
        self._meter = StreamMeter(translation.upstream_api)
        self._stream: OpenAIToAnthropicStream | AnthropicToOpenAIStream
        if translation.way == A2O:
            self._stream = OpenAIToAnthropicStream(translation.client_model, f"msg_{rid}")
        else:
            self._stream = AnthropicToOpenAIStream(
                translation.client_model, f"chatcmpl-{rid}", not translation.hidden_usage, int(time.time())
            )
        self.terminal = False
        self.failure: str | None = None  # the error event the client got (the upstream's, or for a cut stream)

    def feed(self, data: bytes) -> bytes:
        """The client's events for every complete upstream event received so far."""
        return self._translate(self._meter.feed(data))

    @property
    def held(self) -> int:
        """Bytes of the upstream's stream held back: the start of an event whose end has not come."""
        return self._meter.held

    def finish(self) -> bytes:
        """The client's events for what is left, then, when the upstream's end never came, the client's: its
        API's end after an answer whose finish/stop reason came, else its API's error event (a stream cut short
        is not passed off as a whole answer)."""
        out = self._translate(self._meter.finish())
        if self.terminal:
            return out
        return out + self._write(self._stream.finish())

    def usage(self) -> Usage | None:
        return self._meter.usage()

    def _translate(self, upstream_events: bytes) -> bytes:
        if not upstream_events or self.terminal:
            return b""
        out = []
        for event in _split_events(upstream_events):
            raw = _data_of(event)
            if raw is None:
                if b"[DONE]" in event:
                    out.append(self._write(self._stream.feed(DONE)))
                continue
            payload = _json_object(raw)
            if payload is not None:
                try:
                    events = self._stream.feed(payload)
                except _SHAPE_ERRORS as exc:  # the upstream's event has the wrong shape: its failure
                    events = self._stream.fail(f"the upstream sent an event of the wrong shape ({exc})")
                out.append(self._write(events))
        return b"".join(out)

    def _write(self, events: list) -> bytes:
        """Translated events as SSE bytes; notes the client's terminal event."""
        parts = []
        for name, payload in events:
            if payload == DONE:
                parts.append(b"data: [DONE]\n\n")
                self.terminal = True
                continue
            data = orjson.dumps(payload)
            if self.failure is None and isinstance(payload, dict) and "error" in payload:
                self.failure = stream_error(payload)
            if name is None:
                parts.append(b"data: " + data + b"\n\n")
            else:
                parts.append(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")
                if name == "message_stop":
                    self.terminal = True
        return b"".join(parts)
