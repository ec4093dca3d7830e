"""The translation a decision calls for: the client's body in its target source's API.

One function for the proxy's forward stage and for ``gwctl route dry-run``, so the dry-run shows
the warnings and refusals the proxy would meet for the same body (a rule written once).
"""

from __future__ import annotations

from dataclasses import replace

from gwctl.core.decision import A2O, REJECTED, Decision
from gwctl.core.translate.common import JSON, Translated, TranslationError
from gwctl.core.translate.requests import anthropic_to_openai_request, openai_to_anthropic_request

DEFAULT_MAX_TOKENS = 4096
"""The output limit a translated request gets when the client's API lets it leave one out and the API it is
translated to needs one (Anthropic's ``max_tokens`` is required): the catalog entry's max output, else this."""


def translate_for(d: Decision, body: JSON) -> Translated:
    """``body`` in the API of ``d``'s source (``d.translate`` says which way; it must be set). Raises
    :class:`~gwctl.core.translate.TranslationError` for a request with no counterpart in that API;
    ``warnings`` name the advisory fields dropped on the way."""
    assert d.translate is not None
    entry = d.entry
    default_max = entry.max_output if entry is not None and entry.max_output else DEFAULT_MAX_TOKENS
    convert = anthropic_to_openai_request if d.translate == A2O else openai_to_anthropic_request
    try:
        return convert(body, default_max_tokens=default_max)
    except (TypeError, AttributeError) as exc:
        # a field of the wrong JSON type (a number where a list or object belongs, ...): the client's error, which
        # the untranslated path leaves to the upstream to refuse; here it is refused before anything is sent
        raise TranslationError("invalid_request", f"the request has a field of the wrong type ({exc})") from exc


def with_translation(d: Decision, body: JSON) -> Decision:
    """``d`` as the proxy meets it once ``body`` is translated for each target that needs it: the dropped
    advisory fields added to its warnings (``translation: ...``), and a target that cannot take the request
    in its API rejected 400 with the translation's rule (a plan's target skipped, as the proxy moves on
    from it). The dry-run shows this; the proxy translates in its forward stage with :func:`translate_for`."""
    if not d.plan:
        return _translated(d, body)
    targets = tuple(replace(t, decision=_translated(t.decision, body)) for t in d.plan)
    if all(t.decision is o.decision for t, o in zip(targets, d.plan)):
        return d
    first = next((t.decision for t in targets if t.decision.forwarded), targets[0].decision)
    return replace(first, plan=targets)


def _translated(d: Decision, body: JSON) -> Decision:
    if not d.translate or not d.forwarded:
        return d
    try:
        translated = translate_for(d, body)
    except TranslationError as exc:
        return replace(
            d,
            kind=REJECTED,
            status=400,
            rule=exc.rule,
            message=f"translating {d.translate.replace('->', ' -> ')}: {exc.message}",
            hint="send it to a source that speaks the client's API (--api both), or leave the field out",
            param=exc.param,
        )
    if not translated.warnings:
        return d
    return replace(d, warnings=d.warnings + tuple(f"translation: {w}" for w in translated.warnings))
