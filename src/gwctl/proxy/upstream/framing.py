"""Response framing rules, stricter than llhttp where it is lax: pure functions of an answer's head.

llhttp (httptools) parses; these decide what it leaves open, as h11 would
(tests/test_upstream_differential.py holds the client against h11): one plain
``chunked`` Transfer-Encoding only, heads and trailer sections up to
``_MAX_HEAD``, no control characters in a reason phrase, framing fields never
as trailers, and whether the connection may carry another request. They take
header lists, not connections, so each rule reads (and is tested) alone.
"""

from __future__ import annotations

import re

from gwctl.proxy.upstream.errors import _Refused

# The most a response head (status line and fields, any 1xx answers before it included) and,
# separately, a trailer section may take; llhttp sets no limit of its own.
_MAX_HEAD = 64 * 1024
# Control characters a reason phrase may not hold (tab is allowed; CR and LF end the line).
_BAD_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


class _Trailers:
    """Where trailer fields go: checked, counted against _MAX_HEAD, then dropped (they cannot be relayed).

    The connection sets ``size`` to 0 when an answer's head is complete (its trailers start afresh).
    """

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def append(self, field_: tuple[str, str]) -> None:
        name = field_[0]
        self.size += len(name) + len(field_[1]) + 4
        if self.size > _MAX_HEAD:
            raise _Refused(f"a trailer section larger than {_MAX_HEAD // 1024} KiB")
        if name.lower() in ("transfer-encoding", "content-length"):  # framing is never a trailer (RFC 9110 6.5.1)
            raise _Refused(f"a {name} trailer field")


def _transfer_coding(headers: list[tuple[str, str]]) -> tuple[bool, str | None]:
    """(chunked?, what is wrong) from the Transfer-Encoding fields.

    One field whose value is ``chunked`` is all we accept, as h11 does: llhttp also takes
    ``gzip, chunked`` (and de-chunks, leaving a body in a coding nobody decodes), a coding
    list not ending in chunked (read to the close), and the field twice.
    """
    coding = None
    for k, v in headers:
        if len(k) == 17 and k.lower() == "transfer-encoding":
            if coding is not None:
                return False, "more than one Transfer-Encoding field"
            coding = v
    if coding is None:
        return False, None
    if coding.strip(" \t").lower() != "chunked":
        return False, f"Transfer-Encoding {coding[:40]!r}: only chunked is supported"
    return True, None


def _check_unkept(headers: list[tuple[str, str]], version: str) -> None:
    """The checks for an answer the connection ends after (or a HEAD answer): its version and framing."""
    if version not in ("1.1", "1.0"):
        raise _Refused(f"an HTTP/{version} status line on an HTTP/1.1 connection")
    problem = _transfer_coding(headers)[1]
    if problem is not None:
        raise _Refused(problem)


def _blank_run(data: bytes, limit: int = 16) -> int:
    """How many CR/LF octets end ``data`` (counting stops at ``limit``)."""
    n = 0
    end = len(data)
    while n < end and n < limit and data[end - 1 - n] in (10, 13):
        n += 1
    return n


def _ends_with(data: bytes, piece: bytes) -> bool:
    """Does ``data`` end exactly where its last body piece ``piece`` does (no CR/LF after it)?

    ``piece`` is a slice of ``data`` and anything after it is CR/LF only (see _Conn._check_end).
    When the piece holds some other octet, data ends with the piece exactly when nothing
    follows it (CR/LF octets after it would shift that octet); when it does not, we cannot
    tell: False.
    """
    return data.endswith(piece) and _blank_run(piece) < min(len(piece), 16)


def _close_delimited(headers: list[tuple[str, str]]) -> bool:
    """No Content-Length and not chunked: the body ends where the connection does."""
    for k, v in headers:
        lk = k.lower()
        if lk == "content-length":
            return False
        if lk == "transfer-encoding" and "chunked" in v.lower():
            return False
    return True


def _keep_alive(headers: list[tuple[str, str]], version: str) -> bool:
    """May the connection carry another request after this answer? (RFC 9112 9.3: "close" always wins.)"""
    keep = version == "1.1"
    for k, v in headers:
        if k.lower() == "connection":
            tokens = {t.strip().lower() for t in v.split(",")}
            if "close" in tokens:
                return False
            if "keep-alive" in tokens:
                keep = True
    return keep
