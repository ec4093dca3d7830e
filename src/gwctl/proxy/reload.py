"""Hot reload: watch the store's file and load it again when it changes, keeping the last good one on failure."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Mapping

from gwctl.core.config import Snapshot
from gwctl.core.validate import store_errors
from gwctl.errors import GwctlError
from gwctl.store.file import load

log = logging.getLogger("gwctl.proxy")

RELOAD_RETRY_MAX = 5.0  # seconds at most between attempts to load a store that failed to load


class StoreWatcher:
    """The store file's last loaded state, and the failure (and backoff) of a reload that does not succeed."""

    def __init__(self, store_path: Path, environ: Mapping[str, str], reload_interval: float):
        self.store_path = store_path
        self.environ = environ
        self.reload_interval = reload_interval
        self._stamp = self._store_stamp()
        self.reload_failure: dict | None = None  # the reload failing now: error, since (UTC), attempts
        self._failed_stamp = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_reload_log = 0.0
        self.reloads = 0  # reloads that took effect, and that failed (for the metrics)
        self.reload_failures = 0

    def _store_stamp(self):
        """The file's (mtime, size, inode), or None when it cannot be stat'ed: a change of any is a change."""
        try:
            st = os.stat(self.store_path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def reload_if_changed(self) -> Snapshot | None:
        """The store loaded again when its file changed since it last loaded; None when nothing new is in use.

        A reload that fails, for any reason (the file is invalid or has what ``gwctl validate`` calls an
        error, is missing or empty, is unreadable for a moment, a descriptor limit), keeps the last good snapshot and
        is tried again until one succeeds: at once when the file changes again, else with a backoff of up to
        :data:`RELOAD_RETRY_MAX` seconds. A key revoked in the file is never forgotten because one read
        failed. The failure is logged and shown by ``/healthz`` (:meth:`health`) until a reload succeeds.
        """
        stamp = self._store_stamp()
        failure = self.reload_failure
        if stamp == self._stamp:
            if failure is not None:  # the file is back as it was when it last loaded: nothing is missed
                log.info("the store is back as last loaded; nothing to reload")
                self.reload_failure = None
            return None
        now = time.monotonic()
        if failure is not None and stamp == self._failed_stamp and now < self._retry_at:
            return None
        try:
            snapshot = self._load(stamp)
        except Exception as exc:  # noqa: BLE001 - whatever it was, keep serving with the last good store
            self._reload_failed(
                stamp, exc.message if isinstance(exc, GwctlError) else f"{type(exc).__name__}: {exc}", now
            )
            return None
        self._stamp = stamp
        self.reloads += 1
        if failure is not None:
            log.info("store reload succeeded after %d failed attempt(s)", failure["attempts"])
        self.reload_failure = None
        log.info(
            "store reloaded: %d sources, %d catalog entries, %d routes, %d keys",
            len(snapshot.sources),
            len(snapshot.catalog),
            len(snapshot.routes),
            len(snapshot.keys),
        )
        return snapshot

    def _load(self, stamp) -> Snapshot:
        """The store's snapshot, if it exists, loads and has nothing ``gwctl validate`` calls an error."""
        if stamp is None:
            raise GwctlError(f"the store {self.store_path} is missing", "restore the file")
        if stamp[1] == 0:  # a running proxy's store emptied is a write in progress (truncate, then write)
            raise GwctlError(f"the store {self.store_path} is empty", "write it whole (gwctl writes atomically)")
        snapshot = load(self.store_path).snapshot
        errors = store_errors(snapshot, self.environ)
        if errors:  # what `gwctl validate` calls an error never runs (the proxy refused to start on it, too)
            raise GwctlError(
                f"gwctl validate reports {len(errors)} error(s): "
                + "; ".join(f"{p.where}: {p.message}" for p in errors[:3]),
                "fix the store",
            )
        return snapshot

    def _reload_failed(self, stamp, message: str, now: float) -> None:
        """Remember a failed reload: count it, back off (doubling while the file stays as it is), log it
        (again when the error changes, else every 30 s at most)."""
        self.reload_failures += 1
        failure = self.reload_failure
        if failure is None or stamp != self._failed_stamp:
            attempts = 1 if failure is None else failure["attempts"] + 1
            self._backoff = self.reload_interval
        else:
            attempts = failure["attempts"] + 1
            self._backoff = min(self._backoff * 2, RELOAD_RETRY_MAX)
        self._failed_stamp = stamp
        self._retry_at = now + self._backoff
        since = failure["since"] if failure is not None else _utc_now()
        if failure is None or failure["error"] != message or now - self._last_reload_log >= 30.0:
            self._last_reload_log = now
            log.error("store changed but cannot be loaded; keeping the last good one and retrying: %s", message)
        self.reload_failure = {"error": message, "since": since, "attempts": attempts}

    def health(self) -> dict:
        """The store's part of ``/healthz``: ``{"reload": "ok"}``, or ``"failing"`` with the error (without the
        store's path: the endpoint needs no key), since when and how many attempts."""
        if self.reload_failure is None:
            return {"reload": "ok"}
        failure = dict(self.reload_failure)
        failure["error"] = failure["error"].replace(str(self.store_path), "the store")
        return {"reload": "failing", **failure}


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
