"""A decision as JSON and as a readable report (secrets masked).

The dry-run prints this; the proxy's equivalence tests compare it with what the
upstream actually received.
"""

from __future__ import annotations

import sys
from typing import Any

from gwctl.core.config import FAILURE_CLASSES, FailoverPolicy
from gwctl.core.decision import Decision, PlanTarget, estimated_output_tokens
from gwctl.core.headers import mask_secret
from gwctl.core.urls import redact_url
from gwctl.core.validate import shown_env


def credential_display(d: Decision, reveal: bool = False) -> str | None:
    if d.credential is None:
        return None
    if d.credential.env:
        return f"${d.credential.env}" if reveal else shown_env(d.credential.env)
    value = d.credential.value or ""
    return value if reveal else mask_secret(value)


def _url(value: str | None, reveal: bool) -> str | None:
    """A URL as shown: user info (``user:secret@``) is a credential, masked unless revealed."""
    return value if value is None or reveal else redact_url(value)


def decision_json(d: Decision, reveal: bool = False, failover: FailoverPolicy | None = None) -> dict[str, Any]:
    """The decision as JSON; a route with a plan adds ``plan`` (and ``failover``, the primary source's
    policy, when given)."""
    doc = _decision_json(d, reveal)
    if d.plan:
        doc["plan"] = [_target_json(t, reveal) for t in d.plan]
        if failover is not None:
            doc["failover"] = failover_json(failover)
    return doc


def _on_list(policy: FailoverPolicy) -> list[str]:
    """The failures that move on, in FAILURE_CLASSES' order, then other statuses in number order."""
    known = [f for f in FAILURE_CLASSES if f in policy.on]
    return known + sorted(policy.on - set(known), key=lambda v: int(v) if v.isdigit() else 0)


def failover_json(policy: FailoverPolicy) -> dict[str, Any]:
    return {
        "on": _on_list(policy),
        "max_attempts": policy.max_attempts,
        "max_seconds": policy.max_seconds,
        "cooldown_after": policy.cooldown_after,
        "cooldown_seconds": policy.cooldown_seconds,
        "retry_after": policy.retry_after,
    }


def _checks_text(d: Decision) -> str:
    """A plan target's checks in a word: passed, skipped for passthrough, or the rule that failed."""
    if d.kind == "passthrough":
        return "skipped (passthrough)"
    failed = next((c for c in d.checks if not c.passed), None)
    if failed is not None:
        return f"failed: {failed.rule}"
    return "passed" if d.forwarded else "-"


def _target_json(t: PlanTarget, reveal: bool) -> dict[str, Any]:
    d = t.decision
    return {
        "tier": t.tier,
        "target": t.ref,
        "weight": t.weight,
        "kind": d.kind,
        "source": d.source,
        "upstream_url": _url(d.upstream_url, reveal),
        "translate": d.translate,
        "upstream_model": d.upstream_model,
        "credential": credential_display(d, reveal),
        "checks": _checks_text(d),
        "warnings": list(d.warnings),
        "skipped": t.skipped,
        "rule": d.rule,
        "message": d.message or None,
    }


def _decision_json(d: Decision, reveal: bool) -> dict[str, Any]:
    feats = d.features
    return {
        "kind": d.kind,
        "forwarded": d.forwarded,
        "status": d.status,
        "agent": d.agent,
        "path": d.path,
        "model": d.client_model,
        "matched_by": d.matched_by,
        "route": None
        if d.route is None
        else {
            "agent": d.route.agent,
            "model_name": d.route.model_name,
            "provider": d.route.provider,
            "model": d.route.model,
            "base_url": _url(d.route.base_url, reveal),
            "passthrough": d.route.passthrough,
        },
        "source": d.source,
        "passthrough": d.passthrough,
        "upstream_url": _url(d.upstream_url, reveal),
        "translate": d.translate,
        "upstream_model": d.upstream_model,
        "model_rewritten": d.rewrite_model,
        "credentials": None
        if d.credential is None
        else {
            "source": d.source,
            "header": d.auth_header,
            "scheme": d.auth_scheme,
            "env": (d.credential.env if reveal else shown_env(d.credential.env)[1:]) if d.credential.env else None,
            "value": credential_display(d, reveal),
        },
        "static_headers": dict(d.static_headers),
        "catalog_ref": d.catalog_ref,
        "catalog_entry": d.entry is not None,
        "checks": [
            {"rule": c.rule, "passed": c.passed, "message": c.message, "hint": c.hint, "param": c.param}
            for c in d.checks
        ],
        "checks_skipped": d.kind == "passthrough",
        "warnings": list(d.warnings),
        "rule": d.rule,
        "message": d.message or None,
        "hint": d.hint or None,
        "error": None if d.forwarded else d.error_body()["error"],
        "estimate": None
        if d.estimate is None
        else {
            "prompt_tokens": feats.prompt_tokens_estimate if feats else None,
            "output_tokens": estimated_output_tokens(d.entry, feats) if feats else None,
            **d.estimate.to_json(),
        },
    }


def print_plan(d: Decision, reveal: bool, failover: FailoverPolicy | None, out: Any) -> None:
    """A route's plan as a table (one row per target, in plan order), then the failover policy."""
    rows = [["TIER", "TARGET", "WEIGHT", "UPSTREAM", "TRANSLATE", "CREDENTIALS", "CHECKS", "SKIPPED"]]
    for t in d.plan:
        td = t.decision
        rows.append(
            [
                "primary" if t.tier == 0 else f"fallback {t.tier}",
                t.ref,
                str(t.weight),
                _url(td.upstream_url, reveal) or "-",
                td.translate.replace("->", " -> ") if td.translate else "-",
                credential_display(td, reveal) or "none",
                _checks_text(td),
                f"[{td.rule}] {td.message}" if t.skipped else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out.write("plan\n")
    for row in rows:
        out.write("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    if failover is not None:
        out.write(f"failover  {failover_text(failover)}\n")


def failover_text(p: FailoverPolicy) -> str:
    on = ", ".join(_on_list(p)) or "nothing"
    return (
        f"up to {p.max_attempts} attempts within {p.max_seconds:g}s, moving on at {on}; a target failing "
        f"{p.cooldown_after} times in a row rests {p.cooldown_seconds:g}s; "
        f"Retry-After {'honoured' if p.retry_after else 'ignored'}"
    )


def _estimate_text(d: Decision) -> str:
    from gwctl.core.catalog_values import format_usd

    assert d.estimate is not None
    if d.estimate.total is None:
        return f"unbilled ({d.estimate.unbilled_reason})"
    feats = d.features
    return f"{format_usd(d.estimate.total)} USD (≈{feats.prompt_tokens_estimate if feats else '?'} prompt tokens, estimated)"


def print_report(d: Decision, reveal: bool = False, out=None, failover: FailoverPolicy | None = None) -> None:
    """The decision as ``key  value`` lines; a route with a plan adds its table (:func:`print_plan`)."""
    out = out or sys.stdout
    tty = out.isatty() if hasattr(out, "isatty") else False
    ok, bad = ("✓", "✗") if tty else ("pass", "FAIL")
    lines: list[tuple[str, str]] = []
    verdict = {
        "passthrough": "forward (passthrough)",
        "managed": "forward (managed)",
        "rejected": f"REJECT {d.status}",
        "not_found": f"REJECT {d.status} (not found)",
    }[d.kind]
    lines.append(("decision", verdict))
    lines.append(("agent", d.agent or "(root / none)"))
    if d.route is not None:
        lines.append(("matched", f"route {d.route.agent} -> {d.route.model_name}"))
    else:
        lines.append(("matched", d.matched_by))
    if d.source:
        lines.append(("source", d.source))
    if d.upstream_url:
        lines.append(("upstream", f"POST {_url(d.upstream_url, reveal)}"))
    if d.translate:
        lines.append(("translate", d.translate.replace("->", " -> ")))
    if d.upstream_model:
        change = "rewritten" if d.rewrite_model else "unchanged"
        lines.append(("model", f"{d.client_model or '(default)'} -> {d.upstream_model} ({change})"))
    if d.source and d.upstream_url:
        cred = credential_display(d, reveal)
        if cred is None:
            lines.append(("credentials", f"none (source {d.source} has no credential)"))
        else:
            scheme = "Bearer " if d.auth_scheme else ""
            lines.append(("credentials", f"{d.auth_header}: {scheme}{cred}  (source {d.source})"))
        for k, v in d.static_headers.items():
            lines.append(("header", f"{k}: {v}"))
    if d.kind == "passthrough":
        lines.append(("checks", "skipped (passthrough: the upstream gateway governs it)"))
    for c in d.checks:
        lines.append(("check", f"{ok if c.passed else bad} {c.rule}: {c.message}"))
    for w in d.warnings:
        lines.append(("warning", w))
    if d.estimate is not None:
        lines.append(("estimate", _estimate_text(d)))
    if not d.forwarded:
        lines.append(("reason", f"[{d.rule}] {d.message}"))
        if d.hint:
            lines.append(("hint", d.hint))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        out.write(f"{k:<{width}}  {v}\n")
    if d.plan:
        print_plan(d, reveal, failover, out)


# --- limits (the dry-run with --key, or a store with limits) ----------------------------------


def _usd(value: Any) -> str:
    from gwctl.core.limits import usd_text

    return "unbilled" if value is None else usd_text(value)


def _state_text(state: Any) -> list[str]:
    """One limit's state in words: its budget, then its rates."""
    limit = state.limit
    parts = []
    if limit.budget is not None:
        per = "in total" if limit.window == "total" else f"per {limit.window}"
        left = state.left
        parts.append(
            f"budget {_usd(limit.budget)} {per}: spent {_usd(state.spent)}, reserved {_usd(state.reserved)}, "
            f"left {_usd(left)}" + (f"; {state.unbilled} unbilled" if state.unbilled else "")
        )
    if limit.rpm is not None:
        parts.append(f"rpm {limit.rpm}: {state.requests} this minute")
    if limit.tpm is not None:
        parts.append(f"tpm {limit.tpm}: {state.tokens} tokens this minute")
    return parts


def limits_json(verdict: Any, key: str | None) -> dict[str, Any]:
    """The limits' part of the dry-run's JSON: the key check, each limit, the reservation and the answer."""
    from gwctl.activity.limit_status import LimitReport

    res = verdict.reservation
    refusal = verdict.refusal
    return {
        "key": key,
        "key_check": None if verdict.key is None else {"rule": verdict.key.rule, "message": verdict.key.message},
        "reservation": {
            "usd": None if res.usd is None else f"{res.usd:f}",
            "prompt_tokens": res.prompt_tokens,
            "output_tokens": res.output_tokens,
            "output_from": res.output_from,
        },
        "limits": [
            {**LimitReport(state, state.reserved, 0).to_json(), "admits": r is None, "rule": r.rule if r else None}
            for state, r in verdict.checks
        ],
        "admitted": refusal is None,
        "rule": refusal.rule if refusal else None,
        "status": refusal.status if refusal else None,
        "message": refusal.message if refusal else None,
    }


def print_limits(verdict: Any, key: str | None, out: Any = None) -> None:
    """The limits' part of the dry-run's report."""
    out = out or sys.stdout
    lines: list[tuple[str, str]] = []
    if key is not None:
        lines.append(
            ("key", f"{key}: " + ("ok" if verdict.key is None else f"[{verdict.key.rule}] {verdict.key.message}"))
        )
    res = verdict.reservation
    lines.append(
        (
            "reservation",
            f"{_usd(res.usd)} (≈{res.prompt_tokens} prompt tokens, {res.output_tokens} output tokens from {res.output_from})",
        )
    )
    for state, refusal in verdict.checks:
        lines.append(
            (state.limit.target, "admits" if refusal is None else f"REFUSES [{refusal.rule}] {refusal.message}")
        )
        lines.extend(("", "  " + text) for text in _state_text(state))
    if not verdict.checks:
        lines.append(("limits", "none apply"))
    refusal = verdict.refusal
    lines.append(
        ("admission", "admitted" if refusal is None else f"REFUSE {refusal.status} [{refusal.rule}] {refusal.message}")
    )
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        out.write(f"{k:<{width}}  {v}\n")
