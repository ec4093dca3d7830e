"""Streamed answers: Anthropic Messages events <-> OpenAI chat completion chunks, incrementally.

Both translators take one parsed SSE event at a time (its JSON payload as a dict, or the string
``"[DONE]"``) and return the events to send, as ``(event_name, payload)`` pairs: the name is the
SSE ``event:`` line (always None for OpenAI) and the payload a dict or ``"[DONE]"``. They keep no
more state than the open block and the counts, so memory does not grow with the answer.
"""

from __future__ import annotations

from typing import Any

from gwctl.core.translate.common import JSON, anthropic_usage, finish_reason, openai_usage, stop_reason

DONE = "[DONE]"
CUT_SHORT = "the upstream's stream ended before the answer did"
Event = tuple[str | None, JSON | str]
"""One output event: SSE event name (None for OpenAI) and payload (a dict, or "[DONE]")."""


class OpenAIToAnthropicStream:
    """OpenAI chat chunks -> Anthropic Messages events.

    Anthropic puts input usage in ``message_start``, which must go out before OpenAI reports any
    usage (in its last chunk), so ``message_start`` carries zeros and the real counts go in
    ``message_delta.usage`` (input, cache read and output tokens), which is where Anthropic's own
    stream carries its final counts too. The usage chunk (empty ``choices``) is always consumed:
    an Anthropic client has no other place for it, so ``hide_usage`` changes nothing here; it is
    taken so both translators are built from the same request flags.

    Each OpenAI tool call ``index`` becomes its own tool_use block (id and name at its start,
    arguments only as ``input_json_delta`` pieces); a chunk with a new ``id`` at an index already
    seen starts another block (servers that send whole calls without an ``index``, or with null). A block is closed before one of another kind
    (or another tool call) opens. Arguments for a tool call whose block was already closed (no
    known server interleaves them) are sent to that block's index.

    A stream that ends (:meth:`finish` without ``"[DONE]"``) before any choice said its
    ``finish_reason`` was cut short: it ends with an ``error`` event, not a made-up ``end_turn``, so
    the client sees a failure rather than a whole answer.
    """

    def __init__(self, model: str, message_id: str, hide_usage: bool = True) -> None:
        self.model = model
        self.message_id = message_id
        self.hide_usage = hide_usage
        self._started = False
        self._done = False
        self._next_block = 0
        self._open: tuple[str, int] | None = None  # (kind, OpenAI tool index or -1), block index
        self._open_index = -1
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> its (latest) block's index
        self._tool_ids: dict[int, str | None] = {}  # OpenAI tool call index -> the id its call started with
        self._finish: str | None = None
        self._usage: JSON | None = None

    def feed(self, event: JSON | str) -> list[Event]:
        """Translate one OpenAI chunk (or ``"[DONE]"``)."""
        if self._done:
            return []
        if event == DONE or not isinstance(event, dict):
            return self._end()
        if isinstance(event.get("error"), dict):
            return self._error(str(event["error"].get("message", "")))
        out = self._start()
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        for choice in event.get("choices") or []:
            if choice.get("index", 0) == 0:
                out.extend(self._delta(choice.get("delta") or {}))
                if choice.get("finish_reason"):
                    self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[Event]:
        """The upstream's stream ended: close the open block and end the message, or, when no
        ``finish_reason`` came (the stream was cut short), end with an ``error`` event (idempotent)."""
        if self._done:
            return []
        if self._finish is None:
            return self._error(CUT_SHORT)
        return self._end()

    def fail(self, message: str) -> list[Event]:
        """End the client's stream with an error event (the upstream's stream cannot be translated further)."""
        return [] if self._done else self._error(message)

    def _error(self, message: str) -> list[Event]:
        self._done = True
        return [("error", {"type": "error", "error": {"type": "api_error", "message": message}})]

    def _end(self) -> list[Event]:
        if self._done:
            return []
        out = self._start() + self._close()
        self._done = True
        usage = anthropic_usage(self._usage)
        delta_usage = usage if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": stop_reason(self._finish) or "end_turn", "stop_sequence": None}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: JSON = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model}
        message |= {"content": [], "stop_reason": None, "stop_sequence": None}
        message["usage"] = {"input_tokens": 0, "output_tokens": 0}
        return [("message_start", {"type": "message_start", "message": message})]

    def _delta(self, delta: JSON) -> list[Event]:
        out: list[Event] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._open_block(("thinking", -1), {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._block_delta(self._open_index, {"type": "thinking_delta", "thinking": reasoning}))
        text = delta.get("content") or delta.get("refusal")
        if isinstance(text, str) and text:
            out += self._open_block(("text", -1), {"type": "text", "text": ""})
            out.append(self._block_delta(self._open_index, {"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or []:
            out += self._tool_delta(call)
        return out

    def _tool_delta(self, call: JSON) -> list[Event]:
        found = call.get("index")
        index = found if isinstance(found, int) else -1  # Gemini and Ollama send whole calls without an index
        function = call.get("function") or {}
        out: list[Event] = []
        call_id = call.get("id")
        if index not in self._tool_blocks or (call_id and call_id != self._tool_ids.get(index)):
            # a call's first chunk; a new id at a known index is another call (whole calls without an index)
            tool_id = call_id or f"toolu_{self.message_id}_{self._next_block}"
            block: JSON = {"type": "tool_use", "id": tool_id, "name": function.get("name") or "", "input": {}}
            out += self._open_block(("tool", self._next_block), block)
            self._tool_blocks[index] = self._open_index
            self._tool_ids[index] = call_id
        pieces = function.get("arguments")
        if isinstance(pieces, str) and pieces:
            piece = {"type": "input_json_delta", "partial_json": pieces}
            out.append(self._block_delta(self._tool_blocks[index], piece))
        return out

    def _open_block(self, kind: tuple[str, int], block: JSON) -> list[Event]:
        if self._open == kind:
            return []
        out = self._close()
        self._open, self._open_index = kind, self._next_block
        self._next_block += 1
        start = {"type": "content_block_start", "index": self._open_index, "content_block": block}
        return out + [("content_block_start", start)]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._open_index})]

    @staticmethod
    def _block_delta(index: int, delta: JSON) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


class AnthropicToOpenAIStream:
    """Anthropic Messages events -> OpenAI chat chunks.

    A role chunk first; text as ``delta.content``; thinking as ``delta.reasoning_content``;
    each tool_use block as a tool call with its own ``index`` (0, 1, ... in block order) whose
    first chunk carries id, type, name and ``arguments: ""`` and later ones the ``partial_json``
    pieces. ``finish_reason`` goes out on ``message_delta``; a usage chunk (empty ``choices``,
    OpenAI counting: prompt tokens include cache reads and writes) only when ``include_usage``;
    then ``"[DONE]"``. ``ping`` and signature, citation and redacted-thinking events are dropped.
    An ``error`` event becomes an OpenAI error payload (``{"error": {...}}``, as OpenAI sends
    mid-stream) and ends the stream without ``"[DONE]"``, so clients see a failure, not an end; so
    does a stream that ends (:meth:`finish` without ``message_stop``) before ``message_delta`` said
    its ``stop_reason``: it was cut short.
    """

    def __init__(self, model: str, chunk_id: str, include_usage: bool, created: int = 0) -> None:
        self.model = model
        self.chunk_id = chunk_id
        self.include_usage = include_usage
        self.created = created
        self._done = False
        self._role_sent = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._usage: JSON = {}
        self._finished = False

    def feed(self, event: JSON | str) -> list[Event]:
        """Translate one Anthropic event payload (``"[DONE]"`` is taken as the end)."""
        if self._done:
            return []
        if not isinstance(event, dict):
            return self._end()
        kind = event.get("type")
        if kind == "error":
            err = event.get("error") or {}
            return self._error(str(err.get("message", "")), err.get("type"))
        if kind == "message_start":
            self._usage.update((event.get("message") or {}).get("usage") or {})
            return self._role()
        if kind == "content_block_start":
            return self._role() + self._block_start(event)
        if kind == "content_block_delta":
            return self._role() + self._block_delta(event)
        if kind == "message_delta":
            return self._role() + self._message_delta(event)
        if kind == "message_stop":
            return self._end()
        return []

    def finish(self) -> list[Event]:
        """The upstream's stream ended: the usage chunk when asked for, then ``"[DONE]"``; or, when no
        ``stop_reason`` came (the stream was cut short), an error payload (idempotent)."""
        if self._done:
            return []
        if not self._finished:
            return self._error(CUT_SHORT, None)
        return self._end()

    def fail(self, message: str) -> list[Event]:
        """End the client's stream with an error payload (the upstream's stream cannot be translated further)."""
        return [] if self._done else self._error(message, None)

    def _error(self, message: str, kind: Any) -> list[Event]:
        self._done = True
        payload = {"message": message, "type": kind or "api_error"}
        return [(None, {"error": payload | {"code": kind, "param": None}})]

    def _end(self) -> list[Event]:
        if self._done:
            return []
        out = self._role()
        self._done = True
        if not self._finished:
            out.append(self._chunk({}, finish="stop"))
        if self.include_usage:
            out.append((None, self._payload([]) | {"usage": openai_usage(self._usage)}))
        out.append((None, DONE))
        return out

    def _payload(self, choices: list[JSON]) -> JSON:
        payload: JSON = {"id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created}
        payload |= {"model": self.model, "choices": choices}
        if self.include_usage:
            payload["usage"] = None
        return payload

    def _chunk(self, delta: JSON, finish: str | None = None) -> Event:
        return (None, self._payload([{"index": 0, "delta": delta, "finish_reason": finish}]))

    def _role(self) -> list[Event]:
        if self._role_sent:
            return []
        self._role_sent = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: JSON) -> list[Event]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            tool_index = len(self._tools)
            self._tools[event.get("index", 0)] = tool_index
            function = {"name": block.get("name"), "arguments": ""}
            call = {"index": tool_index, "id": block.get("id"), "type": "function", "function": function}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        return []

    def _block_delta(self, event: JSON) -> list[Event]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tools.get(event.get("index", 0))
            if tool_index is None:
                return []
            call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_delta(self, event: JSON) -> list[Event]:
        usage: Any = event.get("usage") or {}
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        reason = (event.get("delta") or {}).get("stop_reason")
        if reason is None or self._finished:
            return []
        self._finished = True
        return [self._chunk({}, finish=finish_reason(reason))]
