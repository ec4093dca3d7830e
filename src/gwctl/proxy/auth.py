"""The authenticate stage: which gateway key a request presents, checked against the current store."""

from __future__ import annotations

from gwctl.core import keys as gwkeys
from gwctl.core.config import Snapshot
from gwctl.core.limits import expiry_refusal
from gwctl.proxy.http import Request

MISSING_KEY = "missing gateway key: send Authorization: Bearer <key> or x-api-key: <key>"
INVALID_KEY = "invalid gateway key"


class Authenticator:
    """Gateway keys: ``required`` unless the proxy runs with --no-auth; ``keys`` remembers those that matched."""

    def __init__(self, required: bool):
        self.required = required
        self.keys = gwkeys.VerifiedKeys()  # gateway keys that matched, for the current snapshot

    def key_name(self, request: Request, snap: Snapshot) -> str | None:
        """The name of the valid gateway key the request presents (Authorization: Bearer or x-api-key);
        None when it presents none, or one that is not (or no longer) in the store."""
        headers = request.headers
        return self.keys.verify(snap, gwkeys.from_headers(headers.get("authorization"), headers.get("x-api-key")))

    @staticmethod
    def expired(snap: Snapshot, name: str, now: float) -> str | None:
        """The 401's message when key ``name`` has expired at ``now``, else None."""
        key = snap.keys.get(name)
        if key is None or key.expires_at is None or now < key.expires_at:
            return None
        refusal = expiry_refusal(key, now)
        return None if refusal is None else refusal.message

    @staticmethod
    def refusal_message(request: Request) -> str:
        """Why a request without a valid key is refused, in the words of the 401."""
        headers = request.headers
        presented = gwkeys.from_headers(headers.get("authorization"), headers.get("x-api-key"))
        return INVALID_KEY if presented else MISSING_KEY
