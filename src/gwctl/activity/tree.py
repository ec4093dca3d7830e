"""Agents as a tree: each root agent with its subagents under it, totals included.

An agent is ``root`` or ``root/sub/...``; ``activity summary --by agent`` groups
each one apart, and this module nests those groups by their ``/`` path. It is
pure (SummaryRows in, nodes out) so the CLI, the JSON output and the HTML report
show the same sums, and those sums are exact: costs are added with
:func:`~gwctl.activity.query.exact_sum`, never as floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable

from gwctl.activity.query import exact_sum
from gwctl.activity.record import USAGE_KINDS, SummaryRow, summary_to_json


@dataclass
class AgentNode:
    """One agent: its own rows' totals (None when it logged none itself) and its subagents'."""

    key: str | None  # the full agent path ("triage/summarizer"); None: requests without an agent
    own: SummaryRow | None
    children: list[AgentNode] = field(default_factory=list)
    total: SummaryRow | None = None  # own + every descendant; set by build_tree

    @property
    def totals(self) -> SummaryRow:
        assert self.total is not None, "build_tree sets every node's total"
        return self.total


def merge_rows(key: str | None, rows: Iterable[SummaryRow]) -> SummaryRow:
    """The totals of several groups as one: counts and tokens added, cost summed exactly.

    The counters keep their meaning, so a merged group whose forwarded requests
    were all unbilled is still unknown (:func:`~gwctl.activity.record.summary_cost_known`).
    """
    rows = list(rows)
    return SummaryRow(
        key=key,
        requests=sum(r.requests for r in rows),
        usage={k: sum(r.usage.get(k, 0) for r in rows) for k in USAGE_KINDS},
        cost=exact_sum(r.cost for r in rows),
        billed=sum(r.billed for r in rows),
        unbilled=sum(r.unbilled for r in rows),
        rejected=sum(r.rejected for r in rows),
        errors=sum(r.errors for r in rows),
    )


def _order(nodes: list[AgentNode]) -> list[AgentNode]:
    """The summary's order, on the totals: most expensive first, then busiest, then by name (no agent last)."""
    return sorted(nodes, key=lambda n: (n.totals.cost.copy_negate(), -n.totals.requests, n.key is None, n.key or ""))


def build_tree(rows: Iterable[SummaryRow]) -> list[AgentNode]:
    """Root agents (with their subagents nested by path) from ``summary(by="agent")`` rows.

    A subagent whose parent logged nothing itself still hangs under it: the parent
    gets a node with ``own=None`` whose total is its subagents'. Requests without
    an agent are one root of their own (key None).
    """
    nodes: dict[str | None, AgentNode] = {}
    roots: list[AgentNode] = []

    def node(key: str | None) -> AgentNode:
        found = nodes.get(key)
        if found is not None:
            return found
        made = nodes[key] = AgentNode(key, None)
        parent = key.rpartition("/")[0] if key is not None else ""
        if key is not None and "/" in key:
            node(parent).children.append(made)
        else:
            roots.append(made)
        return made

    for r in rows:
        n = node(r.key)
        n.own = r if n.own is None else merge_rows(r.key, [n.own, r])

    def finish(n: AgentNode) -> SummaryRow:
        parts = [finish(c) for c in n.children]
        if n.own is not None:
            parts.insert(0, n.own)
        n.total = merge_rows(n.key, parts)
        n.children = _order(n.children)
        return n.total

    for root in roots:
        finish(root)
    return _order(roots)


def walk(nodes: Iterable[AgentNode], depth: int = 0) -> Iterable[tuple[int, AgentNode]]:
    """Every node with its depth (roots are 0), parents before their subagents."""
    for n in nodes:
        yield depth, n
        yield from walk(n.children, depth + 1)


def _counts(row: SummaryRow) -> dict[str, Any]:
    out = summary_to_json(row)
    del out["key"]
    return out


def node_to_json(n: AgentNode) -> dict[str, Any]:
    """A node for ``--json``: its own totals (null when it logged nothing itself), the total with its
    subagents, and the subagents; costs as exact decimal strings, null where nothing was billed."""
    return {
        "key": n.key,
        "own": None if n.own is None else _counts(n.own),
        "total": _counts(n.totals),
        "children": [node_to_json(c) for c in n.children],
    }


def grand_total(roots: Iterable[AgentNode]) -> Decimal:
    """The exact cost of every root's total: the flat summary's total cost."""
    return exact_sum(n.totals.cost for n in roots)
