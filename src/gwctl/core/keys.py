"""Gateway keys: random, shown once, stored only as a SHA-256 hash.

A key is ``gwk_`` + 43 URL-safe characters (32 random bytes, 256 bits). SHA-256
without a salt is enough here because the key itself is high-entropy; the
comparison runs over every stored hash with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Mapping

from gwctl.core.model import GatewayKey

PREFIX = "gwk_"


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def shown_prefix(key: str) -> str:
    return key[: len(PREFIX) + 4]


def verify(keys: Mapping[str, GatewayKey], presented: str | None) -> str | None:
    """The name of the key ``presented`` matches, or None."""
    if not presented:
        return None
    want = digest(presented).encode()
    found = None
    for key in keys.values():
        if hmac.compare_digest(key.hash.encode(), want):
            found = key.name
    return found


def from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client sent: ``Authorization: Bearer K`` (OpenAI SDKs) or ``x-api-key: K`` (Anthropic SDKs)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
