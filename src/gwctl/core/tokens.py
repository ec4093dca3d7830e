"""Offline, low-side estimate of a prompt's size in tokens.

The catalog's ``context_size`` check needs the prompt's size before the
request is forwarded, without a tokenizer download or a network call, and
for models whose tokenizer gwctl does not know. The estimate must ERR ON THE
LOW SIDE: a borderline request is let through (the upstream then decides)
rather than a valid one rejected.

How it works. Byte-level BPE tokenizers (cl100k, o200k, Llama 3, Qwen)
first cut text into pre-tokens: letter runs (with one leading space or
punctuation mark), digit groups of at most 3, punctuation runs, whitespace
runs; no token crosses those cuts. The estimator cuts the text the same way
(``_UNIT``, built from the coarsest of those tokenizers' rules, so it cuts
no finer than they do) and gives each piece a low guess:

* a letter run: 1, or more for long runs: ASCII letters count
  1/:data:`WORD_ASCII_CHARS` each, CJK characters 1/:data:`WORD_CJK_CHARS`,
  other letters 1/:data:`WORD_OTHER_CHARS`; rounded down;
* a digit run of n digits: ceil(n/3), exactly what every such tokenizer needs at least;
* a punctuation run: 1, or 1 per :data:`PUNCT_ASCII_CHARS` ASCII marks
  (after collapsing repeats like ``=====``, which are single tokens) and
  1 per :data:`PUNCT_OTHER_CHARS` other symbols (emoji, CJK punctuation);
* a whitespace run: 1 when it is longer than one space or a line break, else 0
  (a single space is part of the next word).

Measured against exact counts (``benchmarks/token_estimate.py``, default
seed: 4000 samples of English, European and other scripts, CJK,
Python/JS/Rust code, JSON, SQL/HTML/YAML, logs, numbers, base64, hex ids,
emoji and mixtures, 1 to ~2000 characters each; ratio = estimate / exact):

==============  =====  =====  =====  ==============  ===========
encoding        mean   p5     p95    over-estimated  worst ratio
==============  =====  =====  =====  ==============  ===========
cl100k_base     0.72   0.25   1.00   0 of 4000       1.00
o200k_base      0.78   0.44   1.00   0 of 4000       1.00
llama3          0.75   0.34   1.00   0 of 4000       1.00
qwen3           0.69   0.33   1.00   0 of 4000       1.00
==============  =====  =====  =====  ==============  ===========

Over 8 seeds (128,000 sample x encoding pairs) it never over-estimated. By
kind the mean ratio is about 0.9 for English prose and code, 0.85-0.9 for
JSON, markup and logs, 0.65 for CJK on o200k/Llama 3/Qwen, and low (0.25-0.6)
where a tokenizer is inefficient: Cyrillic, Hindi, Thai and Hebrew on
cl100k, emoji, base64 and random strings, and digits on Qwen (one token per
digit). So the context check only rejects a request that is certainly too
big, and lets some too-big ones through to the upstream. Speed: about 4-7
million characters per second (1 MB of English text in 0.15-0.25 s).

Prompt shapes (:func:`estimate_prompt_tokens`): the text of messages,
system prompts, instructions and tool definitions is counted; each message
adds :data:`MESSAGE_OVERHEAD`; each image counts :data:`IMAGE_TOKENS` (a
low-detail OpenAI image; real images usually cost more); audio and files
count 0. For a batch (a list of prompts to ``/v1/completions`` or of inputs
to ``/v1/embeddings``) it is the largest item, since each item is its own
sequence for the context limit. Token-id arrays count their length.
Anything of an unexpected type counts 0; nothing here raises.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

IMAGE_TOKENS = 85
"""Tokens counted per image (OpenAI's low-detail image cost; a floor, not an average)."""
CEILING_PER_BYTE = 6
"""No body's estimate exceeds this many tokens per byte of its JSON text (see :func:`prompt_tokens_ceiling`)."""
MESSAGE_OVERHEAD = 3
"""Tokens per chat message for its role and delimiters (OpenAI documents 3; Llama 3 and Qwen templates use more)."""
# Characters per token assumed for each kind of text; calibrated with
# benchmarks/token_estimate.py, each with some margin beyond its measured best.
WORD_ASCII_CHARS = 10.0
WORD_CJK_CHARS = 2.0
WORD_OTHER_CHARS = 7.0
PUNCT_ASCII_CHARS = 6.0
PUNCT_OTHER_CHARS = 1.5
_MAX_DEPTH = 64  # deeper JSON is not walked (counts 0)

_MARKS = (  # combining marks and the Indic/Thai/... blocks whose vowel signs are marks
    "\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
    "\u0900-\u0963\u0966-\u0dff\u0e00-\u0e7f\u0e80-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff"
    "\u1ab0-\u1aff\u1dc0-\u1dff\u200c\u200d\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f"
)
_CJK = (  # Hangul Jamo, kana, Hangul compatibility, CJK ideographs, Hangul syllables
    "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff"
)
_UNIT = re.compile(
    # a letter run, with one leading non-letter/non-digit/non-newline character
    # (a space or a punctuation mark) and an English contraction suffix
    rf"((?:[^\w\r\n]|_)?[^\W\d_](?:[^\W\d_]|[{_MARKS}])*(?i:'(?:s|t|re|ve|m|ll|d)(?![^\W\d_]))?)"
    r"|(\d+)"  # a digit run
    r"|((?:[^\w\s]|_)+[\r\n]*)"  # a punctuation/symbol run, with the line breaks right after it
    r"|(\s+)"  # a whitespace run
)
_CJK_RE = re.compile(f"[{_CJK}]")
_REPEAT = re.compile(r"(.)\1{2,}", re.DOTALL)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def estimate_text_tokens(text: str) -> int:
    """A low-side estimate of how many BPE tokens ``text`` is (see the module docstring)."""
    if not isinstance(text, str) or not text:
        return 0
    total = 0
    for word, digits, punct, space in _UNIT.findall(text):
        if word:
            if word.isascii():
                est = len(word) / WORD_ASCII_CHARS
            else:
                cjk = len(_CJK_RE.findall(word))
                other = len(_NON_ASCII.findall(word)) - cjk
                est = (len(word) - cjk - other) / WORD_ASCII_CHARS + cjk / WORD_CJK_CHARS + other / WORD_OTHER_CHARS
            total += max(1, int(est))
        elif digits:
            total += -(-len(digits) // 3)
        elif punct:
            if len(punct) >= 2 * PUNCT_ASCII_CHARS:
                punct = _REPEAT.sub(r"\1\1", punct)
            punct = punct.rstrip("\r\n")
            other = 0 if punct.isascii() else len(_NON_ASCII.findall(punct))
            total += max(1, int((len(punct) - other) / PUNCT_ASCII_CHARS + other / PUNCT_OTHER_CHARS))
        elif len(space) > 1 or space in ("\n", "\r"):
            total += 1
    return total


def estimate_prompt_tokens(api: str, body: Any) -> int:
    """A low-side estimate of the prompt tokens of a request body of API shape ``api``.

    ``api`` is one of ``chat``, ``completions``, ``responses``, ``messages``,
    ``embeddings`` (see :func:`gwctl.core.request.features`); any other
    value, or a body that is not a mapping, gives 0.
    """
    if not isinstance(body, dict):
        return 0
    if api == "chat":
        return _chat(body)
    if api == "completions":
        return _batch(body.get("prompt")) + _text(body.get("suffix"))
    if api == "responses":
        return _responses(body)
    if api == "messages":
        return _anthropic(body)
    if api == "embeddings":
        return _batch(body.get("input"))
    return 0


def _text(value: Any) -> int:
    return estimate_text_tokens(value) if isinstance(value, str) else 0


def _strings(value: Any, depth: int = 0) -> int:
    """Every string in a JSON value, keys included (tool schemas, tool inputs)."""
    if depth > _MAX_DEPTH:
        return 0
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if isinstance(value, dict):
        return sum(_text(k) + _strings(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return sum(_strings(v, depth + 1) for v in value)
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _batch(value: Any, nested: bool = False) -> int:
    """A prompt/input: a string, a list of strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if not isinstance(value, list) or not value:
        return 0
    if all(type(v) is int for v in value):
        return len(value)
    if nested:
        return 0
    return max(_batch(v, nested=True) for v in value)


def _tools(body: Mapping[str, Any]) -> int:
    return _strings(body.get("tools")) + _strings(body.get("functions"))


def _chat(body: Mapping[str, Any]) -> int:
    total = _tools(body)
    for message in _list(body.get("messages")):
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD + _text(message.get("name")) + _chat_content(message.get("content"))
        calls = _list(message.get("tool_calls")) + [message.get("function_call")]
        for call in calls:
            fn = call.get("function", call) if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += _text(fn.get("name")) + _text(fn.get("arguments"))
    return total


def _chat_content(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for part in _list(content):
        if isinstance(part, str):
            total += estimate_text_tokens(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind in ("image_url", "image"):
                total += IMAGE_TOKENS
            else:
                total += _text(part.get("text")) + _text(part.get("refusal"))
    return total


def _responses(body: Mapping[str, Any]) -> int:
    total = _text(body.get("instructions")) + _tools(body)
    items = body.get("input")
    if isinstance(items, str):
        return total + estimate_text_tokens(items)
    for item in _list(items):
        if isinstance(item, str):
            total += estimate_text_tokens(item)
        elif isinstance(item, dict):
            total += _responses_item(item)
    return total


def _responses_item(item: Mapping[str, Any]) -> int:
    kind = item.get("type")
    if kind in (None, "message") and "content" in item:
        return MESSAGE_OVERHEAD + _responses_content(item.get("content"))
    if kind in ("function_call", "custom_tool_call"):
        return _text(item.get("name")) + _text(item.get("arguments")) + _text(item.get("input"))
    if kind in ("function_call_output", "custom_tool_call_output"):
        return _responses_content(item.get("output"))
    if kind == "reasoning":
        return sum(_text(s.get("text")) for s in _list(item.get("summary")) if isinstance(s, dict))
    return _responses_content([item])


def _responses_content(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for part in _list(content):
        if isinstance(part, dict):
            if part.get("type") in ("input_image", "computer_screenshot"):
                total += IMAGE_TOKENS
            else:
                total += _text(part.get("text")) + _text(part.get("refusal"))
    return total


def _anthropic(body: Mapping[str, Any]) -> int:
    total = _blocks(body.get("system")) + _tools(body)
    for message in _list(body.get("messages")):
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + _blocks(message.get("content"))
    return total


def _blocks(content: Any, depth: int = 0) -> int:
    """Anthropic content: a string or a list of blocks (text, image, tool_use, tool_result ...)."""
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if depth > 4:
        return 0
    total = 0
    for block in _list(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "image":
            total += IMAGE_TOKENS
        elif kind == "tool_use":
            total += _text(block.get("name")) + _strings(block.get("input"))
        elif kind == "tool_result":
            total += _blocks(block.get("content"), depth + 1)
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                total += _text(source.get("data"))
        else:
            total += _text(block.get("text")) + _text(block.get("thinking"))
    return total


def prompt_tokens_ceiling(body_bytes: int) -> int:
    """An upper bound on :func:`estimate_prompt_tokens` from the JSON body's size alone, at no cost.

    Every counted piece stays under :data:`CEILING_PER_BYTE` tokens per byte of
    the JSON that carries it: a string counts at most one token per character
    and takes at least a byte per character; a token id takes at least a
    byte; a message's overhead (3) needs at least ``{}``; an image
    (85 tokens) needs at least ``{"type":"image"}`` (16 bytes). So a request
    whose ceiling plus output fits the context needs no estimate at all.
    """
    return CEILING_PER_BYTE * max(0, body_bytes)
