"""Prometheus metrics, counted cheaply: plain per-process Python structures, summed across processes on scrape.

Each worker counts in a :class:`WorkerMetrics` (dicts keyed by label tuples, int
adds; a histogram is a list of bucket counts with its sum last, found with
:func:`bisect.bisect_left`), fed by a few hook calls: the record stage counts
each request once (its decision gives the source, model and route kind), the
forward stage the upstream's time to its answer's head, the relay stage a
stream's first event, the failover stage its attempts, moves and cooldowns.
Nothing is counted when metrics are off (the hooks find ``metrics`` None).

Each log writer process (:mod:`gwctl.activity.child`) adds what only it knows,
in a :class:`WriterMetrics`: the exact cost (Decimal, as it priced the rows)
by source and model, and the rows written to the log.

Every process writes a snapshot of its figures to the server's run directory
about every second and when it stops (``worker-PID.json`` /
``writer-PID.json``, replaced atomically); the metrics listener
(:mod:`gwctl.proxy.metrics_http`) sums them on each scrape, so with
``--workers N`` the figures are the whole server's, and a process that is gone
still counts with its last snapshot (counters never go down). Gauges (requests
in flight, the log's queue) count only processes that are alive.

Label values come from the store and gwctl's own fixed sets, never from request
text: ``source`` a store source (``""`` before a decision named one), ``model``
the catalog entry's model id, else the id when the source lists it, else
``other`` (a client may name any model under a source that is not catalog-only);
``kind`` the route kind; ``status`` the status class; ``rule`` gwctl's own rule
ids (an upstream's status goes in the class only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from bisect import bisect_left
from decimal import Decimal
from operator import add
from typing import TYPE_CHECKING, Any

from gwctl.activity.query import EXACT
from gwctl.core.pricing import USAGE_FIELDS

ZERO = Decimal(0)

if TYPE_CHECKING:
    from gwctl.proxy.flow import Flow
    from gwctl.proxy.server import Gateway

log = logging.getLogger("gwctl.proxy")

PUBLISH_EVERY = 1.0  # seconds between a process's snapshots

# seconds; the request histogram spans a rejection (sub-millisecond) to a long stream
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

# name -> (type, help, label names)
SPECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gwctl_requests_total": (
        "counter",
        "Requests answered, each counted once when its activity row is recorded.",
        ("source", "model", "kind", "status", "rule"),
    ),
    "gwctl_request_duration_seconds": (
        "histogram",
        "Time from taking a request up to its answer's end (a stream's whole length).",
        ("source", "kind"),
    ),
    "gwctl_upstream_duration_seconds": (
        "histogram",
        "Time from sending a request upstream to the head of the upstream's answer.",
        ("source",),
    ),
    "gwctl_stream_first_byte_seconds": (
        "histogram",
        "Time from taking a streamed request up to its first event reaching the client.",
        ("source",),
    ),
    "gwctl_tokens_total": (
        "counter",
        "Tokens metered, by type (input excludes cached and cache reads; reasoning is part of output).",
        ("source", "model", "type"),
    ),
    "gwctl_cost_usd_total": (
        "counter",
        "Cost in USD as priced exactly for the activity log (rows with a catalog entry).",
        ("source", "model"),
    ),
    "gwctl_requests_in_flight": ("gauge", "Requests waiting on an upstream or a thread now.", ()),
    "gwctl_activity_queue_rows": ("gauge", "Activity rows batched in the workers, not yet sent to a writer.", ()),
    "gwctl_activity_backlog_bytes": (
        "gauge",
        "Activity rows sent to the writer processes and not taken yet (pickled bytes).",
        (),
    ),
    "gwctl_activity_rows_written_total": ("counter", "Activity rows written to the log.", ()),
    "gwctl_activity_rows_dropped_total": ("counter", "Activity rows lost (writer gone or too far behind).", ()),
    "gwctl_store_reloads_total": ("counter", "Store reloads that took effect (once per change, not per worker).", ()),
    "gwctl_store_reload_failures_total": (
        "counter",
        "Store reload attempts that failed (the last good store kept; the most any worker counted).",
        (),
    ),
    "gwctl_store_reload_failing": (
        "gauge",
        "1 while the store file has changed and cannot be loaded (the last good store is in use), else 0.",
        (),
    ),
    "gwctl_limit_refusals_total": ("counter", "Requests refused by a limit or a key's scope.", ("rule",)),
    "gwctl_failover_attempts_total": ("counter", "Attempts at a route plan's targets.", ("target",)),
    "gwctl_failover_moves_total": (
        "counter",
        "Attempts that failed and moved on to the plan's next target, by failure class.",
        ("target", "failure"),
    ),
    "gwctl_failover_cooldowns_total": (
        "counter",
        "Times a target was left out for its cooldown after failures in a row.",
        ("target",),
    ),
    "gwctl_failover_targets_cooling": (
        "gauge",
        "Targets cooling down now (summed over workers: each keeps its own health).",
        (),
    ),
}

_STATUS_CLASS = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_CLASS_OF = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}  # a status's hundreds -> its class
_NO_LABELS = ("", "")  # (source, model) of a request no decision named a source for
# the token counts of a Usage.counts() tuple, and their type labels
_TOKEN_FIELDS = tuple((i, f[: -len("_tokens")]) for i, f in enumerate(USAGE_FIELDS) if f.endswith("_tokens"))
OTHER = "other"


def status_class(status: int) -> str:
    return _STATUS_CLASS[status // 100] if 100 <= status < 600 else "other"


def failure_class(failure: str) -> str:
    """A failover failure's label: the class name, or an upstream status code's class."""
    return status_class(int(failure)) if failure.isdigit() else failure


def _hist() -> list:
    return [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]  # bucket counts, +Inf's, then the sum


def _observe(hists: dict, key: Any, seconds: float) -> None:
    h = hists.get(key)
    if h is None:
        h = hists[key] = _hist()
    h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    h[-1] += seconds


def _write_json(path: str, data: dict) -> None:
    """Replace ``path`` with ``data`` at once (a reader sees the old file or the new one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(data, separators=(",", ":")).encode())
    os.replace(tmp, path)


class WorkerMetrics:
    """One worker's counters (see the module's docstring); ``gateway`` gives the gauges."""

    def __init__(self, gateway: Gateway, run_dir: str):
        self.gateway = gateway
        self.run_dir = run_dir
        self.requests: dict[tuple, int] = {}
        self.request_seconds: dict[tuple, list] = {}
        self.upstream_seconds: dict[str, list] = {}
        self.first_byte_seconds: dict[str, list] = {}
        self.tokens: dict[tuple, tuple[int, ...]] = {}  # (source, model) -> summed Usage.counts()
        self.limit_refusals: dict[str, int] = {}
        self.failover_attempts: dict[str, int] = {}
        self.failover_moves: dict[tuple, int] = {}
        self.failover_cooldowns: dict[str, int] = {}
        self._labels: dict[tuple, tuple[str, str]] = {}  # (source, catalog ref, upstream model) -> labels
        self._snap: object = None  # the snapshot _labels is for
        self._task: asyncio.Task | None = None
        self.path = ""

    # --- the hooks -----------------------------------------------------------

    def request(self, flow: Flow, status: int, counts: tuple | None, rule: str | None, kind: str | None) -> None:
        """A decided request's answer (the record stage); ``kind`` replaces the decision's route kind. Kept
        lean (~1-2 µs): the key holds the status's hundreds and the rule as given, turned into labels only
        when a snapshot is taken."""
        d = flow.decision
        if d is None:  # pragma: no cover - a refusal before the decision goes through rejected()
            return
        kind = kind or d.kind
        if flow.snapshot is not self._snap:
            self._snap, self._labels = flow.snapshot, {}
        lk = (d.source, d.catalog_ref, d.upstream_model)
        labels = self._labels.get(lk) or self._label(flow.snapshot, lk)
        key = (labels, kind, status // 100, rule)
        c = self.requests
        c[key] = c.get(key, 0) + 1
        seconds = time.perf_counter() - flow.start
        hk = (labels[0], kind)
        h = self.request_seconds.get(hk)
        if h is None:
            h = self.request_seconds[hk] = _hist()
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-1] += seconds
        if counts is not None:
            t = self.tokens
            acc = t.get(labels)
            t[labels] = counts if acc is None else tuple(map(add, acc, counts))

    def _label(self, snap: Any, lk: tuple) -> tuple[str, str]:
        """The (source, model) labels of a decision, from the store alone."""
        source_name, ref, upstream_model = lk
        src = snap.sources.get(source_name) if source_name else None
        if src is None:
            labels = _NO_LABELS
        elif ref and ref in snap.catalog:
            labels = (source_name, ref.partition("/")[2])
        elif upstream_model and upstream_model in src.models:
            labels = (source_name, upstream_model)
        else:
            labels = (source_name, OTHER)
        if len(self._labels) >= 4096:  # the keys hold client text (a made-up model): bounded
            self._labels.clear()
        self._labels[lk] = labels
        return labels

    def rejected(self, status: int, code: str, start: float) -> None:
        """A request answered before any decision (no key, not JSON, refused by the HTTP server)."""
        key = (_NO_LABELS, "rejected", status // 100, code)
        c = self.requests
        c[key] = c.get(key, 0) + 1
        _observe(self.request_seconds, ("", "rejected"), time.perf_counter() - start)

    def upstream(self, source: str, seconds: float) -> None:
        _observe(self.upstream_seconds, source, seconds)

    def first_byte(self, flow: Flow) -> None:
        d = flow.decision
        _observe(self.first_byte_seconds, (d.source if d is not None else None) or "", time.perf_counter() - flow.start)

    def limited(self, rule: str) -> None:
        self.limit_refusals[rule] = self.limit_refusals.get(rule, 0) + 1

    def failover_attempt(self, target: str) -> None:
        self.failover_attempts[target] = self.failover_attempts.get(target, 0) + 1

    def failover_move(self, target: str, failure: str) -> None:
        key = (target, failure_class(failure))
        self.failover_moves[key] = self.failover_moves.get(key, 0) + 1

    def cooldown(self, target: str) -> None:
        self.failover_cooldowns[target] = self.failover_cooldowns.get(target, 0) + 1

    # --- snapshots -----------------------------------------------------------

    def snapshot(self) -> dict[str, list]:
        """The figures as ``{metric name: [[label values, value], ...]}`` (a histogram's value: its list)."""
        g = self.gateway
        out: dict[str, list] = {
            "gwctl_requests_total": [
                [[*labels, kind, _CLASS_OF.get(hundreds, OTHER), rule or ""], v]
                for (labels, kind, hundreds, rule), v in list(self.requests.items())
            ],
            "gwctl_request_duration_seconds": [[list(k), list(h)] for k, h in list(self.request_seconds.items())],
            "gwctl_upstream_duration_seconds": [[[k], list(h)] for k, h in list(self.upstream_seconds.items())],
            "gwctl_stream_first_byte_seconds": [[[k], list(h)] for k, h in list(self.first_byte_seconds.items())],
            "gwctl_tokens_total": [
                [[k[0], k[1], name], acc[i]]
                for k, acc in list(self.tokens.items())
                for i, name in _TOKEN_FIELDS
                if acc[i]
            ],
            "gwctl_limit_refusals_total": [[[k], v] for k, v in list(self.limit_refusals.items())],
            "gwctl_failover_attempts_total": [[[k], v] for k, v in list(self.failover_attempts.items())],
            "gwctl_failover_moves_total": [[list(k), v] for k, v in list(self.failover_moves.items())],
            "gwctl_failover_cooldowns_total": [[[k], v] for k, v in list(self.failover_cooldowns.items())],
            "gwctl_store_reloads_total": [[[], g.watcher.reloads]],
            "gwctl_store_reload_failures_total": [[[], g.watcher.reload_failures]],
            "gwctl_store_reload_failing": [[[], int(g.watcher.reload_failure is not None)]],
            "gwctl_requests_in_flight": [[[], g.flights.count]],
        }
        writer = g.writer
        if writer is not None:
            health = writer.health()
            out["gwctl_activity_rows_dropped_total"] = [[[], health["dropped"]]]
            out["gwctl_activity_queue_rows"] = [[[], health["queued_rows"]]]
            out["gwctl_activity_backlog_bytes"] = [[[], health["backlog_bytes"]]]
        failover = g.forwarder.failover
        if failover is not None:
            now = failover.clock()
            cooling = sum(1 for h in list(failover.health.targets.values()) if h.cool_until > now)
            out["gwctl_failover_targets_cooling"] = [[[], cooling]]
        return out

    def publish(self) -> None:
        try:
            _write_json(self.path, self.snapshot())
        except Exception:  # never let the metrics take the worker down
            log.exception("cannot write the metrics snapshot")

    def start(self) -> None:
        """Publish every :data:`PUBLISH_EVERY` seconds until :meth:`stop`."""
        self.path = os.path.join(self.run_dir, f"worker-{os.getpid()}.json")
        self.publish()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            self.publish()

    def stop(self) -> None:
        """The last snapshot (the worker is done: nothing in flight, the log flushed)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.path:
            self.publish()


def attach(gateway: Gateway, run_dir: str) -> WorkerMetrics:
    """Metrics for ``gateway``'s stages: the hooks find them on the recorder, forwarder and failover stages."""
    m = WorkerMetrics(gateway, run_dir)
    gateway.recorder.metrics = m
    gateway.forwarder.metrics = m
    if gateway.forwarder.failover is not None:
        gateway.forwarder.failover.metrics = m
    return m


class WriterMetrics:
    """A log writer process's figures: exact cost by (source, model), rows written."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, f"writer-{os.getpid()}.json")
        self.cost: dict[tuple[str, str], Decimal] = {}
        self.written = 0
        self.dirty = True
        self.next_at = 0.0

    def priced(self, source: str | None, catalog_ref: str | None, cost: Decimal | None) -> None:
        """One row's cost, as the writer priced it (rows with a catalog entry have one)."""
        if cost is None or not source:
            return
        key = (source, catalog_ref.partition("/")[2] if catalog_ref else OTHER)
        self.cost[key] = EXACT.add(self.cost.get(key, ZERO), cost)  # never rounded, however many rows
        self.dirty = True

    def wrote(self, n: int) -> None:
        if n:
            self.written += n
            self.dirty = True

    def timeout(self, wait: float | None) -> float | None:
        """How long the writer may wait for rows: no longer than until its next snapshot is due."""
        if not self.dirty:
            return wait
        due = max(0.0, self.next_at - time.monotonic())
        return due if wait is None else min(wait, due)

    def maybe_publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or (self.dirty and now >= self.next_at)):
            return
        self.next_at = now + PUBLISH_EVERY
        self.dirty = False
        data = {
            "gwctl_cost_usd_total": [[list(k), str(v)] for k, v in self.cost.items()],
            "gwctl_activity_rows_written_total": [[[], self.written]],
        }
        try:
            _write_json(self.path, data)
        except Exception:
            log.exception("cannot write the metrics snapshot")


# --- summing the snapshots ------------------------------------------------------

GAUGES = frozenset(n for n, s in SPECS.items() if s[0] == "gauge")
# every worker reloads the same store file: the server's figure is the most any worker counted, not the sum
# (N workers would make one change N reloads); still monotonic, a gone worker keeping its last count
HIGHEST = frozenset(("gwctl_store_reloads_total", "gwctl_store_reload_failures_total", "gwctl_store_reload_failing"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


def collect(run_dir: str) -> dict[str, dict[tuple, Any]]:
    """Every process's last snapshot in ``run_dir`` summed: ``{name: {label values: value}}``; costs as
    Decimal, a histogram as its list."""
    totals: dict[str, dict[tuple, Any]] = {name: {} for name in SPECS}
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:
        names = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(run_dir, name), "rb") as f:
                data = json.loads(f.read())
            pid = int(name.rsplit("-", 1)[1][: -len(".json")])
        except (OSError, ValueError):  # not one of ours
            continue
        alive = _alive(pid)
        for metric, samples in data.items():
            acc = totals.get(metric)
            if acc is None or (metric in GAUGES and not alive):
                continue
            for labels, value in samples:
                key = tuple(labels)
                if isinstance(value, str):
                    value = Decimal(value)
                have = acc.get(key)
                if have is None:
                    acc[key] = list(value) if isinstance(value, list) else value
                elif isinstance(value, list):
                    for i, v in enumerate(value):
                        have[i] += v
                elif metric in HIGHEST:
                    acc[key] = max(have, value)
                else:
                    acc[key] = EXACT.add(have, value) if isinstance(value, Decimal) else have + value
    return totals
