"""The catalog checks: may this request go to this model, given its entry?

One list of :class:`Check` results serves both the dry-run (which prints
every check with pass/fail) and the proxy (which answers 400 with the first
failure's ``rule`` as the error code and its ``param``). The checks run on
the managed pipeline only; passthrough routes skip them.

Rules chosen here:

* Which checks appear: ``catalog_only`` only on a catalog-only source; with
  no entry on a source that is not catalog-only there is nothing to check
  and the list is empty (the request is unbilled, not refused). With an entry,
  one check per field that is set: ``max_output`` when ``max_output`` is set,
  ``context_size`` when ``context_size`` is set, ``capability_X`` when the
  flag X is true or false. An unset flag produces no check and never rejects.
* max_output: the requested output budget (see
  :mod:`gwctl.core.request`) must not exceed the entry's max output; no
  budget in the request passes.
* context_size: the prompt estimate (low-side, :mod:`gwctl.core.tokens`)
  plus the requested output must fit; the requested output is the request's
  budget, or the entry's max output when the request sets none. Embeddings
  and unknown APIs generate nothing, so for them it is the prompt alone.
* capability_X: fails only when the flag is false and the request uses X.
* Order (and so which failure the proxy reports): catalog_only, max_output,
  context_size, then the capabilities in :data:`gwctl.core.config.CAPABILITIES` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from gwctl.core.config import CAPABILITIES, CatalogEntry, Source
from gwctl.core.request import RequestFeatures

RULES: tuple[str, ...] = (
    "catalog_only",
    "max_output",
    "context_size",
    *(f"capability_{name}" for name in CAPABILITIES),
)
"""Every rule id, in check order; the proxy returns the failing one as the error ``code``."""

BASIC_PARAMS = frozenset({"model", "messages", "input", "prompt", "stream", "system", "instructions"})
"""Request params that carry the request itself; never reported as unsupported."""

_PROMPT_PARAM = {
    "chat": "messages",
    "completions": "prompt",
    "responses": "input",
    "messages": "messages",
    "embeddings": "input",
}

_BUDGET_PARAM = {
    "chat": "max_tokens",
    "completions": "max_tokens",
    "responses": "max_output_tokens",
    "messages": "max_tokens",
}

# capability -> (RequestFeatures attribute, what the request does, what to remove, params to blame in order)
_CAPABILITY_USE: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "streaming": ("stream", "asks for a streamed response", "stream: true", ("stream",)),
    "vision": ("uses_vision", "sends images", "the images", ()),
    "tools": ("uses_tools", "uses tools", "the tools", ("tools", "tool_choice", "functions", "function_call")),
    "reasoning": (
        "uses_reasoning",
        "asks for reasoning",
        "the reasoning params",
        ("reasoning_effort", "reasoning", "thinking"),
    ),
    "json_output": (
        "uses_json_output",
        "asks for JSON output",
        "the JSON output format",
        ("response_format", "text", "output_format", "output_config"),
    ),
    "audio": ("uses_audio", "uses audio", "the audio", ("modalities", "audio")),
}


@dataclass(frozen=True)
class Check:
    """One catalog check's outcome."""

    rule: str  # stable rule id, one of RULES
    passed: bool
    message: str  # one sentence
    hint: str = ""  # how to fix it (failures only)
    param: str | None = None  # request param at fault, for the OpenAI-style error "param"


def run_checks(
    source: Source, model_id: str, entry: CatalogEntry | None, feats: RequestFeatures, explain: bool = True
) -> list[Check]:
    """Every check that applies to this request on ``source``/``model_id``, passed or failed.

    ``explain=False`` (the proxy) leaves passed checks' messages empty: only a
    failure's message is ever sent, and the outcome is the same either way.
    """
    ref = f"{source.name}/{model_id}"
    if entry is None:
        if not source.catalog_only:
            return []
        return [
            Check(
                "catalog_only",
                False,
                f"{ref} has no catalog entry and source {source.name!r} only allows catalog models",
                f"add one with `gwctl catalog set {ref}`, or turn catalog-only off for {source.name!r}",
                "model",
            )
        ]
    checks: list[Check] = []
    if source.catalog_only:
        checks.append(Check("catalog_only", True, f"{ref} has a catalog entry" if explain else ""))
    if entry.max_output is not None:
        checks.append(_max_output(ref, entry.max_output, feats, explain))
    if entry.context_size is not None:
        checks.append(_context_size(ref, entry, feats, explain))
    for name in CAPABILITIES:
        flag = entry.capabilities.get(name)
        if flag is True or flag is False:
            checks.append(_capability(ref, name, flag, feats, explain))
    return checks


def first_failure(checks: Iterable[Check]) -> Check | None:
    """The first failed check (the one the proxy reports), or None when all passed."""
    return next((c for c in checks if not c.passed), None)


def advisory_warnings(entry: CatalogEntry | None, feats: RequestFeatures) -> list[str]:
    """Request params missing from the entry's supported params: warnings, never rejections."""
    if entry is None or entry.supported_params is None:
        return []
    supported = set(entry.supported_params)
    return [
        f"param {param!r} is not in {entry.ref}'s supported params (advisory: it is forwarded anyway)"
        for param in sorted(feats.params - supported - BASIC_PARAMS)
    ]


def _max_output(ref: str, limit: int, feats: RequestFeatures, explain: bool = True) -> Check:
    budget, param = feats.output_budget, feats.output_param
    if budget is None:
        return Check(
            "max_output", True, f"the request sets no output budget ({ref}'s max output is {limit})" if explain else ""
        )
    if budget <= limit:
        return Check("max_output", True, f"{param} {budget} is within {ref}'s max output of {limit}" if explain else "")
    return Check(
        "max_output",
        False,
        f"{param} {budget} is above {ref}'s max output of {limit}",
        f"lower {param} to {limit} or raise the entry's max output (`gwctl catalog set {ref} --max-output N`)",
        param,
    )


def _context_output(entry: CatalogEntry, feats: RequestFeatures) -> tuple[int, str]:
    """The output tokens the context check adds to the prompt, and how to say where they come from."""
    if feats.output_budget is not None:
        return feats.output_budget, f"{feats.output_param} {feats.output_budget}"
    if feats.api in _BUDGET_PARAM and entry.max_output is not None:
        return entry.max_output, f"the entry's max output {entry.max_output} (no budget requested)"
    return 0, ""


def fits_context_by_size(entry: CatalogEntry, feats: RequestFeatures) -> bool:
    """True when the body's size alone proves the context check passes, so no prompt estimate is needed."""
    ceiling = feats.prompt_tokens_ceiling
    if entry.context_size is None:
        return True
    return ceiling is not None and ceiling + _context_output(entry, feats)[0] <= entry.context_size


def _context_size(ref: str, entry: CatalogEntry, feats: RequestFeatures, explain: bool = True) -> Check:
    limit = entry.context_size
    assert limit is not None  # run_checks calls this only for an entry with a context size
    output, output_text = _context_output(entry, feats)
    prompt = feats.prompt_tokens_estimate
    if prompt is None and fits_context_by_size(entry, feats):
        if not explain:
            return Check("context_size", True, "")
        assert feats.prompt_tokens_ceiling is not None  # it fits by its size
        total = feats.prompt_tokens_ceiling + output
        return Check(
            "context_size",
            True,
            f"a prompt of at most {feats.prompt_tokens_ceiling} tokens (by its size)"
            + (f" plus {output_text}" if output_text else "")
            + f" ({total}) fits {ref}'s context size of {limit}",
        )
    assert prompt is not None  # the size did not prove the fit: decide made an estimate
    total = prompt + output
    if total <= limit and not explain:
        return Check("context_size", True, "")
    sizes = f"an estimated prompt of ~{prompt} tokens" + (f" plus {output_text}" if output_text else "")
    if total <= limit:
        return Check("context_size", True, f"{sizes} ({total}) fits {ref}'s context size of {limit}")
    prompt_param = _PROMPT_PARAM.get(feats.api)
    if output and prompt < limit:
        if feats.output_param:
            hint = f"lower {feats.output_param} to {limit - prompt} or shorten the prompt"
        else:
            hint = f"set {_BUDGET_PARAM[feats.api]} to at most {limit - prompt} or shorten the prompt"
        param = feats.output_param or prompt_param
    else:
        hint = "shorten the prompt"
        param = prompt_param
    return Check(
        "context_size",
        False,
        f"{sizes} is {total} tokens, above {ref}'s context size of {limit} (the prompt size is a low-side estimate)",
        f"{hint}, or raise the entry's context size (`gwctl catalog set {ref} --context-size N`)",
        param,
    )


def _capability(ref: str, name: str, flag: bool, feats: RequestFeatures, explain: bool = True) -> Check:
    rule = f"capability_{name}"
    attribute, what, remove, params = _CAPABILITY_USE[name]
    if flag:
        return Check(rule, True, f"{ref} supports {name}" if explain else "")
    if not getattr(feats, attribute):
        return Check(rule, True, f"{ref} does not support {name}, and the request does not need it" if explain else "")
    param = next((p for p in params if p in feats.params), None) or _PROMPT_PARAM.get(feats.api)
    return Check(
        rule,
        False,
        f"the request {what} but {ref} does not support {name} (capability {name}=false)",
        f"remove {remove} from the request, or set the flag with `gwctl catalog set {ref} --capability {name}=true` "
        "(or =unset to let the upstream decide)",
        param,
    )
