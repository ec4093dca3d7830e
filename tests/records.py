"""Activity records for tests that seed a log: one valid record whose every field can be overridden."""

from __future__ import annotations

import itertools
from decimal import Decimal

from gwctl.activity.record import ActivityRecord

_ids = itertools.count()


def record(**kw) -> ActivityRecord:
    """A managed, billed (0.001 USD) request of key ``ci`` to source ``local``; ``kw`` overrides any field
    (``time`` is required: every test means a particular moment)."""
    base = dict(
        request_id=f"r{next(_ids)}",
        key_name="ci",
        agent=None,
        route_kind="managed",
        source="local",
        model="local/llama",
        upstream_model="llama",
        path="/v1/chat/completions",
        status=200,
        latency_ms=1.0,
        usage={},
        cost=Decimal("0.001"),
        rule=None,
        stream=False,
        error=None,
    )
    base.update(kw)
    return ActivityRecord(**base)
