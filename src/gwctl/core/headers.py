"""HTTP header rules for sources: names, values, static headers, credentials.

A source's static headers are stored in the store and sent on every
upstream request, so a bad one is refused when it is typed, not when the
proxy is already forwarding. Three things are refused:

* anything that would let a value inject another header line
  (CR, LF, NUL and other control characters; non-token characters in names);
* credentials hidden in static headers (they would bypass ``--auth-env``,
  masking and rotation), i.e. any of :data:`AUTH_HEADER_NAMES` or the
  source's own auth header, compared case-insensitively;
* hop-by-hop and framing headers (:data:`HOP_BY_HOP`), which belong to one
  connection and are set by the HTTP client itself.

Header values must be ASCII: HTTP clients encode header values as ASCII, so
anything else would fail at request time. Error messages never repeat a
header's value, because a rejected value may be a secret.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

AUTH_HEADER_NAMES = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})
"""Header names (lower case) that carry credentials; never allowed as static headers."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)
"""Header names (lower case) that belong to one connection; never allowed as static headers."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FORMAT_HINT = "header must look like 'Name: value'"
_JSON_SHAPE = "additional headers must be a JSON object of string keys to string values"


def validate_header_name(name: str) -> str:
    """Return ``name`` if it is an RFC 7230 token, else raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"header name must be a string; got {_json_type(name)}")
    if not name:
        raise ValueError(f"header name is empty; {_FORMAT_HINT}")
    if not _TOKEN.fullmatch(name):
        bad = next(ch for ch in name if not _TOKEN.fullmatch(ch))
        raise ValueError(
            f"header name {name!r} contains {_describe_char(bad)}; names may use letters, "
            "digits and !#$%&'*+-.^_`|~ only"
        )
    return name


def validate_header_value(name: str, value: str) -> str:
    """Return ``value`` if it can be sent safely as the value of header ``name``.

    Refuses non-strings, CR/LF/NUL and other control characters (tab is
    allowed) and non-ASCII text. The message names the header, never the value.
    """
    if not isinstance(value, str):
        raise ValueError(f"the value of header {name!r} must be a string; got {_json_type(value)}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"the value of header {name!r} contains a line break (CR or LF)")
    if "\x00" in value:
        raise ValueError(f"the value of header {name!r} contains a NUL character")
    match = _CONTROL.search(value)
    if match:
        raise ValueError(f"the value of header {name!r} contains a control character ({_describe_char(match.group())})")
    if not value.isascii():
        raise ValueError(
            f"the value of header {name!r} contains non-ASCII characters; HTTP header values must be ASCII"
        )
    return value


def parse_header_option(text: str) -> tuple[str, str]:
    """Parse ``--header 'Name: value'`` (split at the first colon, both sides stripped)."""
    if not isinstance(text, str):
        raise ValueError(f"{_FORMAT_HINT}; got {_json_type(text)}")
    if ":" not in text:
        raise ValueError(f"{_FORMAT_HINT}; there is no ':' in it")
    name, _, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not name:
        raise ValueError(f"{_FORMAT_HINT}; the name before ':' is empty")
    validate_header_name(name)
    validate_header_value(name, value)
    return name, value


def parse_headers_json(text: str) -> dict[str, str]:
    """Parse ``--headers-json``: a JSON object of string keys to string values.

    Names that differ only in case (``X-A`` and ``x-a``) are the same HTTP
    header, so they are refused as duplicates, like exact duplicate keys.
    Names and values are not checked further here: see :func:`validate_static_headers`.
    """
    if not isinstance(text, str):
        raise ValueError(f"{_JSON_SHAPE}; got {_json_type(text)}")
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{_JSON_SHAPE}; the text is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):
        raise ValueError(f"{_JSON_SHAPE}; the text is not valid JSON") from None
    if not isinstance(data, _Pairs):
        raise ValueError(f"{_JSON_SHAPE}; got {_json_type(data)}")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in data:
        if key.lower() in seen:
            raise ValueError(f"{_JSON_SHAPE}; the header {key!r} appears twice (names ignore case)")
        seen.add(key.lower())
        if not isinstance(value, str):
            raise ValueError(f"{_JSON_SHAPE}; the value of {key!r} is {_json_type(value)}")
        out[key] = value
    return out


def validate_static_headers(headers: Mapping[str, Any], auth_header: str) -> dict[str, str]:
    """Check a source's static headers; return them as a plain dict (same order).

    ``auth_header`` is the source's own auth header name (blank means
    ``Authorization``); it is refused like the well-known auth headers.
    """
    if not isinstance(headers, Mapping):
        raise ValueError(f"{_JSON_SHAPE}; got {_json_type(headers)}")
    own_auth = (auth_header or "").strip().lower()
    seen: dict[str, str] = {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        validate_header_name(name)
        lower = name.lower()
        if lower in AUTH_HEADER_NAMES or lower == own_auth:
            raise ValueError(
                f"static headers must not carry credentials: {name!r} is an auth header; use --auth-value or --auth-env"
            )
        if lower in HOP_BY_HOP:
            raise ValueError(f"static header {name!r} is a hop-by-hop header set by the HTTP client itself; remove it")
        if lower in seen:
            raise ValueError(f"static headers {seen[lower]!r} and {name!r} are the same header; keep one")
        validate_header_value(name, value)
        seen[lower] = name
        out[name] = value
    return out


def mask_secret(value: str | None) -> str:
    """Mask all but the last 4 characters: ``sk-abcdef1234`` -> ``*********1234``.

    Values of 4 characters or fewer are fully masked as ``****``; None and
    the empty string give the empty string.
    """
    if not value:
        return ""
    if len(value) <= 4:
        return "****"
    return "*" * (len(value) - 4) + value[-4:]


def auth_header_pair(auth_header: str, value: str) -> tuple[str, str]:
    """The header that carries a source's credential.

    A blank header name means ``Authorization: Bearer <value>``; a named
    header gets the value raw. Both are checked, so a credential read from
    the environment cannot inject a header line.
    """
    name = (auth_header or "").strip()
    if not name:
        validate_header_value("Authorization", value)
        return "Authorization", f"Bearer {value}"
    validate_header_name(name)
    validate_header_value(name, value)
    return name, value


class _Pairs(list[tuple[str, Any]]):
    """A JSON object kept as its (key, value) pairs, in order."""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (_Pairs, Mapping)):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _describe_char(ch: str) -> str:
    if ch == " ":
        return "a space"
    if ch == ":":
        return "a colon"
    if ch in "\r\n":
        return "a line break (CR or LF)"
    if ch == "\x00":
        return "a NUL character"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"the control character U+{ord(ch):04X}"
    return repr(ch)
