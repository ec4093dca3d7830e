"""What-if repricing: the activity log's recorded usage priced again under another catalog.

Pure (no I/O): the CLI reads the rows and the proposed catalog, this module prices each forwarded row's usage
at the proposed entry's prices in force at the row's time (the same :mod:`gwctl.core.pricing` the log writer
priced it with), and replays the row's request shape through the same decision function as the proxy
(:func:`gwctl.core.decision.decide_features`) to find the requests the proposed catalog's checks would refuse.
Money stays exact: every sum and difference is taken in :data:`gwctl.activity.query.EXACT` (never rounded),
and the log is read once, a record at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from gwctl.activity.query import EXACT, exact_sum
from gwctl.activity.record import FORWARDED_KINDS, INPUT_KINDS, ActivityRecord
from gwctl.core.catalog_values import format_usd
from gwctl.core.config import CatalogEntry, Snapshot
from gwctl.core.decision import decide_features
from gwctl.core.pricing import PlanCache, Usage
from gwctl.core.request import features_from_shape

REPRICE_BY = ("source", "model", "agent", "key")
"""What ``activity reprice --by`` groups by (the columns of the same names; ``key`` is the key's name)."""


@dataclass
class Group:
    """One group's requests priced both ways. ``current`` and ``proposed`` sum the billed rows only: an
    unbilled request's cost is unknown, not zero, and is counted apart."""

    key: str | None
    requests: int = 0
    current: Decimal = Decimal(0)
    proposed: Decimal = Decimal(0)
    current_unbilled: int = 0
    proposed_unbilled: int = 0

    @property
    def difference(self) -> Decimal:
        return EXACT.subtract(self.proposed, self.current)  # the default context would keep 28 digits

    @property
    def percent(self) -> Decimal | None:
        """The change in percent of the current cost (None when there was none to change)."""
        if self.current == 0:
            return None
        return (self.difference * 100 / self.current).quantize(Decimal("0.01"))


@dataclass
class Repricing:
    """The whole what-if: per group, the total, and the requests whose standing changes."""

    by: str
    groups: list[Group]
    total: Group
    became_billed: int = 0  # unbilled now, billed under the proposal
    became_billed_cost: Decimal = Decimal(0)
    became_unbilled: int = 0  # billed now, unbilled under the proposal
    became_unbilled_cost: Decimal = Decimal(0)  # what they cost now
    rejected: Counter[str] = field(default_factory=Counter)  # rule id -> requests the proposal would refuse
    not_replayable: int = 0  # forwarded rows logged without their request's shape (before gwctl kept it)
    skipped: int = 0  # rows that were not forwarded, or failed: nothing to price either way
    changed: int = 0  # rows whose cost changes
    # those rows as (request id, time, proposed cost), what ``--apply`` rewrites (kept only when asked for)
    changes: list[tuple[str, datetime, Decimal | None]] = field(default_factory=list)
    keep_changes: bool = True

    def increase_over(self, max_increase: Decimal) -> bool:
        """True when the proposed total is more than ``max_increase`` percent above the current one (any rise
        from a current total of zero is over)."""
        t = self.total
        if t.current == 0:
            return t.proposed > 0
        return EXACT.multiply(t.difference, 100) > EXACT.multiply(max_increase, t.current)


def _usage(record: ActivityRecord) -> Usage:
    return Usage(**dict(record.usage))


def _group_key(record: ActivityRecord, by: str) -> str | None:
    return {"source": record.source, "model": record.model, "agent": record.agent, "key": record.key_name}[by]


class _Prices:
    """The proposed catalog's price plans, made once per entry object (a dated set is its own object)."""

    def __init__(self, catalog: Mapping[str, CatalogEntry]):
        self.catalog = catalog
        self._plans = PlanCache()

    def cost(self, record: ActivityRecord) -> Decimal | None:
        if record.source is None or record.upstream_model is None:
            return None
        entry = self.catalog.get(f"{record.source}/{record.upstream_model}")
        if entry is None:
            return None
        total = self._plans.total(entry.at(record.time.timestamp()), _usage(record).counts())
        return None if total is None else Decimal(format_usd(total))  # as the log writer stores it


def _replay(snapshot: Snapshot, record: ActivityRecord) -> str | None:
    """The rule the proposed store's decision refuses the logged request with, or None when it forwards it.
    The prompt's size is the row's input tokens (every kind of them), which is what the request really sent."""
    assert record.shape is not None
    prompt = sum(record.usage.get(k, 0) for k in INPUT_KINDS)
    feats = features_from_shape(record.shape, record.model, prompt)
    d = decide_features(snapshot, record.agent, record.path, feats)
    return None if d.forwarded else (d.rule or d.kind)


def reprice(
    records: Iterable[ActivityRecord], snapshot: Snapshot, by: str = "source", keep_changes: bool = True
) -> Repricing:
    """Every forwarded, answered row of ``records`` priced at ``snapshot``'s catalog (the proposal) and its
    request replayed against ``snapshot``'s rules; grouped ``by`` one of :data:`REPRICE_BY`. Without
    ``keep_changes`` (a what-if only) the changed rows are counted, not listed: nothing is held per row."""
    if by not in REPRICE_BY:
        raise ValueError(f"cannot reprice by {by!r}: use one of {', '.join(REPRICE_BY)}")
    prices = _Prices(snapshot.catalog)
    groups: dict[str | None, Group] = {}
    total = Group("total")
    out = Repricing(by, [], total, keep_changes=keep_changes)
    for r in records:  # read once, a record at a time: a period of millions of rows is never held
        if r.route_kind not in FORWARDED_KINDS or r.status >= 400:
            out.skipped += 1
            continue
        key = _group_key(r, by)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key)
        proposed = prices.cost(r)
        _count(out, g, r, r.cost, proposed)
        if r.shape is None:
            out.not_replayable += 1
        else:
            try:
                rule = _replay(snapshot, r)
            except ValueError:
                out.not_replayable += 1
            else:
                if rule is not None:
                    out.rejected[rule] += 1
    for g in groups.values():
        total.requests += g.requests
        total.current_unbilled += g.current_unbilled
        total.proposed_unbilled += g.proposed_unbilled
    total.current = exact_sum(g.current for g in groups.values())
    total.proposed = exact_sum(g.proposed for g in groups.values())
    out.groups = sorted(groups.values(), key=lambda g: (-abs(g.difference), g.key is None, g.key or ""))
    return out


def _count(out: Repricing, g: Group, r: ActivityRecord, current: Decimal | None, proposed: Decimal | None) -> None:
    """One priced row into its group and the standing changes; every sum exact (EXACT: never rounded)."""
    g.requests += 1
    if current is None:
        g.current_unbilled += 1
    else:
        g.current = EXACT.add(g.current, current)
    if proposed is None:
        g.proposed_unbilled += 1
    else:
        g.proposed = EXACT.add(g.proposed, proposed)
    if current is None and proposed is not None:
        out.became_billed += 1
        out.became_billed_cost = EXACT.add(out.became_billed_cost, proposed)
    elif current is not None and proposed is None:
        out.became_unbilled += 1
        out.became_unbilled_cost = EXACT.add(out.became_unbilled_cost, current)
    if proposed != current:
        out.changed += 1
        if out.keep_changes:
            out.changes.append((r.request_id, r.time, proposed))


def with_catalog(snapshot: Snapshot, catalog: Mapping[str, CatalogEntry]) -> Snapshot:
    """The store with ``catalog`` in place of its own (a proposed catalog file, replayed with the store's routes,
    sources and settings)."""
    return replace(snapshot, catalog=MappingProxyType(dict(catalog)))


def _group_json(g: Group) -> dict[str, Any]:
    return {
        "key": g.key,
        "requests": g.requests,
        "current": format_usd(g.current),
        "proposed": format_usd(g.proposed),
        "difference": format_usd(g.difference),
        "percent": None if g.percent is None else str(g.percent),
        "current_unbilled": g.current_unbilled,
        "proposed_unbilled": g.proposed_unbilled,
    }


def repricing_json(r: Repricing, catalog: str, since: str | None, max_increase: Decimal | None) -> dict[str, Any]:
    """The what-if as JSON for CI: exact decimal strings, percent to two places."""
    return {
        "catalog": catalog,
        "since": since,
        "by": r.by,
        "groups": [_group_json(g) for g in r.groups],
        "total": _group_json(r.total),
        "became_billed": {"requests": r.became_billed, "proposed": format_usd(r.became_billed_cost)},
        "became_unbilled": {"requests": r.became_unbilled, "current": format_usd(r.became_unbilled_cost)},
        "would_be_rejected": {"requests": sum(r.rejected.values()), "rules": dict(sorted(r.rejected.items()))},
        "not_replayable": r.not_replayable,
        "not_priced": r.skipped,
        "max_increase": None if max_increase is None else f"{max_increase:f}",  # as written: 0.0000001, not 1E-7
        "exceeded": None if max_increase is None else r.increase_over(max_increase),
    }


def changed_costs(r: Repricing) -> list[tuple[str, datetime, Decimal | None]]:
    """The rows ``--apply`` rewrites: (request id, time, new cost), for the backend's ``reprice``."""
    return r.changes
