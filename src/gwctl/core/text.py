"""Text that is safe to print: control characters escaped, URL user info masked.

Strings that come from clients (a model name, an agent path, an error
message) end up in the activity log and from there in a person's terminal.
A newline in one forges a line; an ANSI escape rewrites the screen (or, with
OSC 8, plants a link). :func:`printable` shows such characters as visible
escapes instead. :func:`redact_urls` masks the user info of every URL found
in a message (the same ``***@`` as :func:`gwctl.core.urls.redact_url`).
"""

from __future__ import annotations

import re
from typing import Iterable

ELLIPSIS = "\u2026"

_LINE_SEPARATORS = frozenset({0x2028, 0x2029})
_BIDI_CONTROLS = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
"""Bidirectional overrides and isolates: they reorder what follows them on the line."""


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:  # C0, DEL, C1
        return f"\\x{code:02x}"
    if code in _LINE_SEPARATORS or code in _BIDI_CONTROLS:
        return f"\\u{code:04x}"
    return ch


def printable(text: str, limit: int = 200) -> str:
    """``text`` with control characters shown as ``\\xNN`` / ``\\uNNNN``, cut to ``limit`` characters.

    Escaped: C0 (including tab, CR and LF), DEL, C1, the line and paragraph
    separators U+2028/U+2029, and the bidirectional controls. Printable ASCII
    (backslash included) and other text come through unchanged. A longer
    result is cut so that it ends with an ellipsis and is ``limit`` characters
    long; an escape is never cut in half. ``limit <= 0`` means no limit.
    """
    if not isinstance(text, str):
        text = str(text)
    pieces = [_escape(ch) for ch in text]
    total = sum(len(p) for p in pieces)
    if limit <= 0 or total <= limit:
        return "".join(pieces)
    out: list[str] = []
    room = limit - 1  # the ellipsis takes one
    for piece in pieces:
        if len(piece) > room:
            break
        out.append(piece)
        room -= len(piece)
    return "".join(out) + ELLIPSIS


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s'\"<>]*)@")


def redact_urls(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with the user info of URLs masked as ``***@``.

    Any ``scheme://user:secret@`` found in the text is masked. ``urls`` are
    URLs the caller knows the text may quote (a source's base URL); their
    user info and credential query values (:func:`gwctl.core.urls.url_secrets`)
    are masked wherever they appear, even when they hold characters (spaces,
    quotes) that the pattern would not take for part of a URL.
    """
    from gwctl.core.urls import url_secrets

    for url in urls:
        for secret in url_secrets(url):
            text = text.replace(secret + "@", "***@").replace(secret, "***")
    return _URL_USERINFO.sub(lambda m: m.group(1) + "***@", text)
