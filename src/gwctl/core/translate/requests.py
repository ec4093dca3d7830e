"""Request bodies: Anthropic Messages <-> OpenAI Chat Completions.

A field either maps, is dropped with a warning (advisory: the answer's meaning does not depend on
it, e.g. ``top_k``, ``seed``, ``cache_control``), or is refused with :class:`TranslationError`
(it would change the answer if silently dropped: audio, ``n`` > 1, logprobs, JSON modes, server
tools, documents the other side cannot read, unknown fields and block types). A base64 PDF maps
both ways (Anthropic ``document`` <-> OpenAI ``file`` part with a data URL); a plain-text document
becomes a text part.

Tool results that reported an error (Anthropic ``is_error: true``) have no OpenAI field; the
result's content is kept exactly and preceded by a separate text part :data:`TOOL_ERROR_MARKER`,
so the model (and a reader) can tell an error apart without the original text being rewritten.
OpenAI tool messages carry no error flag, so OpenAI -> Anthropic leaves ``is_error`` out.
"""

from __future__ import annotations

import re
from typing import Any

from gwctl.core.translate.common import (
    EFFORT_TO_BUDGET,
    JSON,
    MIN_THINKING_BUDGET,
    Translated,
    TranslationError,
    budget_to_effort,
    dump_arguments,
    parse_arguments,
)

TOOL_ERROR_MARKER = "Error:"
"""First text part of an OpenAI tool message whose Anthropic tool_result had ``is_error``."""

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)

_ANTHROPIC_ADVISORY = {"top_k", "service_tier"}
_ANTHROPIC_KNOWN = {"model", "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream"}
_ANTHROPIC_KNOWN |= {"temperature", "top_p", "tools", "tool_choice", "thinking"}

_OPENAI_ADVISORY = {"frequency_penalty", "presence_penalty", "seed", "service_tier", "store", "metadata"}
_OPENAI_ADVISORY |= {"prompt_cache_key", "safety_identifier", "verbosity", "prediction"}
_OPENAI_KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p"}
_OPENAI_KNOWN |= {"stream", "stream_options", "user", "reasoning_effort", "tools", "tool_choice"}
_OPENAI_KNOWN |= {"parallel_tool_calls", "n", "response_format", "logprobs", "top_logprobs", "modalities"}


class _Warnings:
    """Collects dropped-field warnings once each, in the order first seen."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def _refuse_content(what: str, param: str) -> TranslationError:
    return TranslationError("untranslatable_content", f"{what} has no counterpart in the other API", param)


def _refuse_param(what: str, param: str) -> TranslationError:
    return TranslationError("untranslatable_param", f"{what} has no counterpart in the other API", param)


# ---------------------------------------------------------------------------------------------
# Anthropic -> OpenAI
# ---------------------------------------------------------------------------------------------


def anthropic_to_openai_request(body: JSON, *, default_max_tokens: int) -> Translated:
    """OpenAI chat request for an Anthropic Messages request.

    Streaming always asks the upstream for usage (``stream_options.include_usage``) because an
    Anthropic client always gets usage; ``hidden_usage`` is then True: the usage chunk is for the
    stream translator, not for the client.
    """
    warn = _Warnings()
    _check_keys(body, _ANTHROPIC_KNOWN, _ANTHROPIC_ADVISORY, warn)
    out: JSON = {"model": body.get("model")}
    out["messages"] = _a2o_system(body.get("system"), warn) + _a2o_messages(body.get("messages"), warn)
    max_tokens = body.get("max_tokens")
    out["max_completion_tokens"] = max_tokens if isinstance(max_tokens, int) else default_max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = _stop_list(stops, "stop_sequences", allow_string=False)
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id is not None:
        out["user"] = user_id
    _a2o_thinking(body.get("thinking"), out)
    _a2o_tools(body, out)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return Translated(out, tuple(warn.items), hidden_usage=bool(body.get("stream")))


def _stop_list(stops: Any, param: str, *, allow_string: bool) -> list[str]:
    """Stop sequences as a list of strings. OpenAI's ``stop`` may be one string; anything else that is not a
    list of strings is refused (``list()`` of a string or an object would make a stop of each letter or key)."""
    if isinstance(stops, str) and allow_string:
        return [stops]
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise TranslationError("invalid_request", f"{param} must be a list of strings", param)
    return list(stops)


def _check_keys(body: JSON, known: set[str], advisory: set[str], warn: _Warnings) -> None:
    """Refuse unknown top-level fields; note the advisory ones that are dropped."""
    if not isinstance(body, dict):
        raise TranslationError("invalid_request", "request body must be a JSON object")
    for key in body:
        if key in advisory:
            warn.add(f"{key} dropped: no counterpart")
        elif key not in known:
            raise _refuse_param(f"field {key!r}", key)


def _a2o_system(system: Any, warn: _Warnings) -> list[JSON]:
    """One OpenAI system message: a string stays a string, text blocks become text parts."""
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    parts = [_a2o_text_part(block, f"system.{i}", warn) for i, block in enumerate(system)]
    return [{"role": "system", "content": parts}]


def _a2o_text_part(block: Any, param: str, warn: _Warnings) -> JSON:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _refuse_content(f"block type {_type_of(block)!r}", param)
    _note_extras(block, warn)
    return {"type": "text", "text": block.get("text", "")}


def _type_of(block: Any) -> str:
    return str(block.get("type")) if isinstance(block, dict) else type(block).__name__


def _note_extras(block: JSON, warn: _Warnings) -> None:
    if "cache_control" in block:
        warn.add("cache_control dropped: no counterpart")
    if block.get("citations"):
        warn.add("citations dropped: no counterpart")


def _a2o_messages(messages: Any, warn: _Warnings) -> list[JSON]:
    if not isinstance(messages, list):
        raise TranslationError("invalid_request", "messages must be a list", "messages")
    out: list[JSON] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            out.extend(_a2o_user(message.get("content"), f"messages.{i}", warn))
        elif role == "assistant":
            out.append(_a2o_assistant(message.get("content"), f"messages.{i}", warn))
            if i == len(messages) - 1:
                warn.add("final assistant message sent as history: OpenAI does not continue a prefilled answer")
        else:
            raise TranslationError("invalid_request", f"unknown role {role!r}", f"messages.{i}.role")
    return out


def _a2o_user(content: Any, param: str, warn: _Warnings) -> list[JSON]:
    """Tool messages for the tool_result blocks first (OpenAI wants them right after the calls),
    then one user message with the rest; images inside tool results go to that user message,
    because OpenAI tool messages can hold text only."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content or []):
        where = f"{param}.content.{j}"
        if _type_of(block) == "tool_result":
            message, images = _a2o_tool_result(block, where, warn)
            tools.append(message)
            parts.extend(images)
        else:
            parts.append(_a2o_user_part(block, where, warn))
    if not parts:
        return tools
    if all(p["type"] == "text" for p in parts) and len(parts) == 1:
        return tools + [{"role": "user", "content": parts[0]["text"]}]
    return tools + [{"role": "user", "content": parts}]


def _a2o_user_part(block: Any, param: str, warn: _Warnings) -> JSON:
    kind = _type_of(block)
    if kind == "text":
        return _a2o_text_part(block, param, warn)
    if kind == "image":
        _note_extras(block, warn)
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), param)}}
    if kind == "document":
        return _a2o_document(block, param, warn)
    raise _refuse_content(f"block type {kind!r}", param)


def _a2o_document(block: JSON, param: str, warn: _Warnings) -> JSON:
    """A PDF (base64) becomes an OpenAI ``file`` part with its data URL, named by the document's title; a
    plain-text document becomes a text part (its title and context are dropped with a warning). A PDF by
    URL or by file id, or a document of content blocks, has no Chat Completions counterpart."""
    _note_extras(block, warn)
    found = block.get("source")
    kind = _type_of(found)
    source: JSON = found if isinstance(found, dict) else {}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        file: JSON = {"file_data": f"data:application/pdf;base64,{source.get('data')}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        if block.get("context"):
            warn.add("document context dropped: no counterpart")
        return {"type": "file", "file": file}
    if kind == "text":
        if block.get("title") or block.get("context"):
            warn.add("document title and context dropped: no counterpart")
        return {"type": "text", "text": str(source.get("data") or "")}
    media = source.get("media_type")
    raise _refuse_content(f"a document from a {kind!r} source" + (f" ({media})" if media else ""), param)


def _image_url(source: Any, param: str) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if isinstance(source, dict) and source.get("type") == "url":
        return str(source.get("url"))
    raise _refuse_content(f"image source {_type_of(source)!r}", param)


def _a2o_tool_result(block: JSON, param: str, warn: _Warnings) -> tuple[JSON, list[JSON]]:
    """An OpenAI tool message and the images the result held (see the module docstring)."""
    _note_extras(block, warn)
    content = block.get("content")
    images: list[JSON] = []
    texts: list[JSON] = []
    if isinstance(content, str) or content is None:
        texts = [{"type": "text", "text": content or ""}]
    else:
        for k, part in enumerate(content):
            if _type_of(part) == "image":
                images.append(_a2o_user_part(part, f"{param}.content.{k}", warn))
            else:
                texts.append(_a2o_text_part(part, f"{param}.content.{k}", warn))
    if block.get("is_error"):
        texts = [{"type": "text", "text": TOOL_ERROR_MARKER}] + texts
    body: str | list[JSON] = texts
    if isinstance(content, str) and not block.get("is_error"):
        body = content
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": body}, images


def _a2o_assistant(content: Any, param: str, warn: _Warnings) -> JSON:
    """Text blocks become content (a string for one block, text parts for several), tool_use
    blocks become tool_calls in order; thinking cannot be sent back to OpenAI and is dropped."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[JSON] = []
    calls: list[JSON] = []
    for j, block in enumerate(content or []):
        kind = _type_of(block)
        if kind == "text":
            texts.append(_a2o_text_part(block, f"{param}.content.{j}", warn))
        elif kind == "tool_use":
            _note_extras(block, warn)
            function = {"name": block.get("name"), "arguments": dump_arguments(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            warn.add("thinking blocks in earlier turns dropped: OpenAI takes no reasoning input")
        else:
            raise _refuse_content(f"block type {kind!r}", f"{param}.content.{j}")
    message: JSON = {"role": "assistant", "content": None}
    if len(texts) == 1:
        message["content"] = texts[0]["text"]
    elif texts:
        message["content"] = texts
    if calls:
        message["tool_calls"] = calls
    return message


def _a2o_thinking(thinking: Any, out: JSON) -> None:
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return
    if kind != "enabled" or not isinstance(thinking.get("budget_tokens"), int):
        raise _refuse_param(f"thinking type {kind!r}", "thinking")
    out["reasoning_effort"] = budget_to_effort(thinking["budget_tokens"])


def _a2o_tools(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if tools:
        out["tools"] = [_a2o_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise _refuse_param(f"tool_choice type {kind!r}", "tool_choice")
    if choice.get("disable_parallel_tool_use") and tools:
        out["parallel_tool_calls"] = False


def _a2o_tool(tool: Any, param: str) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        raise _refuse_param(f"tool type {_type_of(tool)!r}", param)
    function: JSON = {"name": tool.get("name")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


# ---------------------------------------------------------------------------------------------
# OpenAI -> Anthropic
# ---------------------------------------------------------------------------------------------


def openai_to_anthropic_request(body: JSON, *, default_max_tokens: int) -> Translated:
    """Anthropic Messages request for an OpenAI chat request.

    System and developer messages, wherever they are, become the top-level ``system``; tool
    messages become tool_result blocks; consecutive messages of one role are merged because
    Anthropic wants user and assistant turns to alternate. ``hidden_usage`` is True when the
    client streams without ``stream_options.include_usage`` (Anthropic always reports usage).
    """
    warn = _Warnings()
    _check_keys(body, _OPENAI_KNOWN, _OPENAI_ADVISORY, warn)
    _o2a_refusals(body)
    out: JSON = {"model": body.get("model")}
    system, messages = _o2a_messages(body.get("messages"), warn)
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    limits = [body.get(key) for key in ("max_completion_tokens", "max_tokens")]
    out["max_tokens"] = next((n for n in limits if isinstance(n, int)), default_max_tokens)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = _stop_list(stop, "stop", allow_string=True)
    _o2a_sampling(body, out, warn)
    if body.get("user") is not None:
        out["metadata"] = {"user_id": body["user"]}
    _o2a_tools(body, out, warn)
    stream = bool(body.get("stream"))
    if stream:
        out["stream"] = True
    include = bool((body.get("stream_options") or {}).get("include_usage"))
    return Translated(out, tuple(warn.items), hidden_usage=stream and not include)


def _o2a_refusals(body: JSON) -> None:
    """Refuse the OpenAI fields that ask for something Anthropic cannot give."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _refuse_param("n > 1 (several choices)", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _refuse_param("logprobs", "logprobs" if body.get("logprobs") else "top_logprobs")
    if body.get("modalities") not in (None, ["text"]):
        raise _refuse_param("output modalities other than text", "modalities")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _refuse_param(f"response_format {_type_of(fmt)!r}", "response_format")


def _o2a_sampling(body: JSON, out: JSON, warn: _Warnings) -> None:
    """Temperature, top_p and reasoning effort, within what Anthropic accepts.

    OpenAI's temperature runs to 2, Anthropic's to 1: higher values are lowered to 1. Extended
    thinking needs ``budget_tokens`` >= 1024 and below ``max_tokens``, and allows neither a
    temperature other than 1 nor top_p below 0.95; those are dropped with a warning.
    """
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if isinstance(temperature, (int, float)) and temperature > 1:
        warn.add("temperature above 1 lowered to 1: Anthropic's range is 0..1")
        temperature = 1.0
    effort = body.get("reasoning_effort")
    if effort is not None and effort != "none":
        if effort not in EFFORT_TO_BUDGET:
            raise _refuse_param(f"reasoning_effort {effort!r}", "reasoning_effort")
        budget = min(EFFORT_TO_BUDGET[effort], out["max_tokens"] - 1)
        if budget < MIN_THINKING_BUDGET:
            warn.add("reasoning_effort dropped: max_tokens leaves no room for Anthropic's minimum thinking budget")
        else:
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
            if temperature is not None and temperature != 1:
                warn.add("temperature dropped: Anthropic allows none with thinking")
                temperature = None
            if top_p is not None and top_p < 0.95:
                warn.add("top_p dropped: Anthropic allows none below 0.95 with thinking")
                top_p = None
    if temperature is not None:
        out["temperature"] = temperature
    if top_p is not None:
        out["top_p"] = top_p


def _o2a_messages(messages: Any, warn: _Warnings) -> tuple[str | list[JSON] | None, list[JSON]]:
    if not isinstance(messages, list):
        raise TranslationError("invalid_request", "messages must be a list", "messages")
    system: list[str | list[JSON]] = []
    out: list[JSON] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        param = f"messages.{i}"
        if isinstance(message, dict) and message.get("name") is not None:
            warn.add("message name dropped: no counterpart")
        if role in ("system", "developer"):
            system.append(_o2a_system_content(message.get("content"), param))
        elif role == "user":
            _append(out, "user", _o2a_user_content(message.get("content"), param))
        elif role == "assistant":
            _append(out, "assistant", _o2a_assistant(message, param, warn))
        elif role == "tool":
            _append(out, "user", [_o2a_tool_result(message, param)])
        else:
            raise _refuse_content(f"role {role!r}", f"{param}.role")
    return _join_system(system), out


def _append(out: list[JSON], role: str, content: str | list[JSON]) -> None:
    """Add a message, merging it into the previous one when that has the same role."""
    if not out or out[-1]["role"] != role:
        out.append({"role": role, "content": content})
        return
    previous = out[-1]["content"]
    before = [{"type": "text", "text": previous}] if isinstance(previous, str) else previous
    after = [{"type": "text", "text": content}] if isinstance(content, str) else content
    out[-1]["content"] = before + after


def _join_system(system: list[str | list[JSON]]) -> str | list[JSON] | None:
    """One string (joined by blank lines) when every system message is a string, else blocks."""
    if not system:
        return None
    if all(isinstance(s, str) for s in system):
        return "\n\n".join(s for s in system if isinstance(s, str))
    blocks: list[JSON] = []
    for s in system:
        blocks.extend([{"type": "text", "text": s}] if isinstance(s, str) else s)
    return blocks


def _o2a_system_content(content: Any, param: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    return [_o2a_text(part, f"{param}.content.{k}") for k, part in enumerate(content or [])]


def _o2a_text(part: Any, param: str) -> JSON:
    kind = _type_of(part)
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    raise _refuse_content(f"content part {kind!r}", param)


def _o2a_user_content(content: Any, param: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    blocks: list[JSON] = []
    for k, part in enumerate(content or []):
        where = f"{param}.content.{k}"
        if _type_of(part) == "image_url":
            blocks.append(_o2a_image(part.get("image_url"), where))
        elif _type_of(part) == "file":
            blocks.append(_o2a_file(part.get("file"), where))
        else:
            blocks.append(_o2a_text(part, where))
    return blocks


def _o2a_file(file: Any, param: str) -> JSON:
    """An OpenAI ``file`` part with a PDF's data URL becomes a base64 document titled by its filename; a
    ``file_id`` (an upload to OpenAI) or another kind of file cannot be read by an Anthropic upstream."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str):
        raise _refuse_content("a file by file_id (an upload to the other API)", param)
    match = _DATA_URL.fullmatch(data)
    if match is None or match.group(1) != "application/pdf":
        raise _refuse_content("a file that is not a base64 PDF data URL", param)
    block: JSON = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": match.group(2)},
    }
    assert isinstance(file, dict)
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _o2a_image(image_url: Any, param: str) -> JSON:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise TranslationError("invalid_request", "image_url.url must be a string", param)
    match = _DATA_URL.fullmatch(url)
    if match:
        source = {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
        return {"type": "image", "source": source}
    if url.startswith("data:"):
        raise _refuse_content("a data URL that is not base64", param)
    return {"type": "image", "source": {"type": "url", "url": url}}


def _o2a_assistant(message: JSON, param: str, warn: _Warnings) -> str | list[JSON]:
    """Text (and refusal) parts, then tool_use blocks in the order of tool_calls."""
    if message.get("audio") or message.get("function_call"):
        raise _refuse_content("assistant audio or function_call", param)
    if message.get("reasoning_content") or message.get("reasoning"):
        warn.add("reasoning in earlier turns dropped: Anthropic needs signed thinking blocks")
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if isinstance(content, str) and not calls:
        return content
    blocks: list[JSON] = []
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        blocks.extend(_o2a_text(part, f"{param}.content.{k}") for k, part in enumerate(content))
    for k, call in enumerate(calls):
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _refuse_content(f"tool call type {_type_of(call)!r}", f"{param}.tool_calls.{k}")
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
        blocks.append(block | {"input": parse_arguments(function.get("arguments"))})
    return blocks


def _o2a_tool_result(message: JSON, param: str) -> JSON:
    content = message.get("content")
    result: JSON = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if isinstance(content, str) or content is None:
        result["content"] = content or ""
    else:
        result["content"] = [_o2a_text(part, f"{param}.content.{k}") for k, part in enumerate(content)]
    return result


def _o2a_tools(body: JSON, out: JSON, warn: _Warnings) -> None:
    tools = body.get("tools")
    if tools:
        out["tools"] = [_o2a_tool(tool, f"tools.{i}", warn) for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    mapped: JSON | None = None
    if isinstance(choice, str):
        if choice not in ("auto", "required", "none"):
            raise _refuse_param(f"tool_choice {choice!r}", "tool_choice")
        mapped = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not name:
            raise _refuse_param(f"tool_choice type {_type_of(choice)!r}", "tool_choice")
        mapped = {"type": "tool", "name": name}
    if body.get("parallel_tool_calls") is False and tools and (mapped or {}).get("type") != "none":
        mapped = (mapped or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    if mapped is not None:
        out["tool_choice"] = mapped


def _o2a_tool(tool: Any, param: str, warn: _Warnings) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise _refuse_param(f"tool type {_type_of(tool)!r}", param)
    function = tool.get("function") or {}
    if "strict" in function:
        warn.add("function.strict dropped: no counterpart")
    out: JSON = {"name": function.get("name")}
    if function.get("description") is not None:
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out
