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


def verify(keys: Mapping[str, GatewayKey], presented: str | None, by_hash: Mapping[str, GatewayKey] | None = None) -> str | None:
    """The name of the key ``presented`` matches, or None.

    The lookup is by SHA-256 digest (the key has 256 bits of entropy, so
    nothing about it leaks from where a digest lands); the final comparison
    is :func:`hmac.compare_digest`. ``by_hash`` is the snapshot's index.
    """
    if not presented:
        return None
    want = digest(presented)
    if by_hash is None:
        by_hash = {k.hash: k for k in keys.values()}
    found = by_hash.get(want)
    if found is not None and hmac.compare_digest(found.hash.encode(), want.encode()):
        return found.name
    return None


def from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client sent: ``Authorization: Bearer K`` (OpenAI SDKs) or ``x-api-key: K`` (Anthropic SDKs)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
