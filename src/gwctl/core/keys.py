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

from gwctl.core.config import GatewayKey, Snapshot

PREFIX = "gwk_"


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def shown_prefix(key: str) -> str:
    return key[: len(PREFIX) + 4]


def verify(
    keys: Mapping[str, GatewayKey], presented: str | None, by_hash: Mapping[str, GatewayKey] | None = None
) -> str | None:
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


class VerifiedKeys:
    """:func:`verify` for the proxy, remembering the keys that matched, per snapshot.

    Hashing a presented key costs a few microseconds a request and the same
    few keys come back all day. Only keys that matched are remembered (junk
    never grows the table), and everything is forgotten when the snapshot
    changes, so a revoked key stops working with the reload that revokes it.
    A remembered key is found by a dict lookup on the presented text: Python
    compares strings there only after their (per-process randomly keyed) hashes
    are equal, so a wrong key's timing says nothing about a right one. A key is
    first remembered only after :func:`verify` matched it in constant time.
    """

    __slots__ = ("snapshot", "_known")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._known: dict[str, str] = {}  # presented key that matched -> key name

    def verify(self, snapshot: Snapshot, presented: str | None) -> str | None:
        if not presented:
            return None
        if snapshot is not self.snapshot:
            self._known.clear()
            self.snapshot = snapshot
        name = self._known.get(presented)
        if name is not None:
            return name
        name = verify(snapshot.keys, presented, snapshot.keys_by_hash)
        if name is not None and len(self._known) < 1024:
            self._known[presented] = name
        return name


def from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client sent: ``Authorization: Bearer K`` (OpenAI SDKs) or ``x-api-key: K`` (Anthropic SDKs)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
