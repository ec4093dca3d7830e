"""Shell completions are generated from the app and must not go stale."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen", ROOT / "completions" / "generate.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


@pytest.mark.parametrize("shell", sorted(gen.FILES))
def test_checked_in_completion_is_current(shell):
    current = (ROOT / "completions" / gen.FILES[shell]).read_text()
    assert current == gen.render(shell), f"completions/{gen.FILES[shell]} is stale: run python completions/generate.py"


def test_bash_completion_offers_subcommands():
    env = {**os.environ, "_GWCTL_COMPLETE": "complete_bash", "COMP_WORDS": "gwctl source re", "COMP_CWORD": "2"}
    code = "import sys; sys.argv[0] = 'gwctl'; from gwctl.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert set(out.stdout.split()) == {"refresh", "remove"}


def complete(words: str) -> list[str]:
    """What bash completion offers after ``words`` (a trailing space: a new word), from a real gwctl process."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {**os.environ, "_GWCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    code = "import sys; sys.argv[0] = 'gwctl'; from gwctl.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def test_names_from_the_store_complete(gw):
    """Sources, a source's models, references, agents, keys, limit targets and fixed choices complete like
    kubectl's resource names: from the store, filtered by what is typed."""
    assert gw("source", "add", "local", "--base-url", "http://127.0.0.1:9/v1").code == 0
    assert gw("source", "add", "openrouter", "--base-url", "http://127.0.0.1:9/v1").code == 0
    assert gw("catalog", "set", "local/llama", "--price", "input=1e-6").code == 0
    assert gw("catalog", "set", "openrouter/qwen", "--price", "input=1e-6").code == 0
    assert gw("route", "set", "triage/sum", "--model-name", "fast", "--provider", "local", "--model", "llama").code == 0
    assert gw("key", "create", "ci").code == 0
    assert complete("gwctl source probe ") == ["local", "openrouter"]
    assert complete("gwctl source edit op") == ["openrouter"]
    assert complete("gwctl catalog show local/") == ["local/llama"]
    assert complete("gwctl route dry-run --agent ") == ["triage", "triage/sum"]
    assert complete("gwctl route dry-run --model f") == ["fast"]
    assert complete("gwctl key revoke ") == ["ci"]
    assert complete("gwctl limit set agent:") == ["agent:triage", "agent:triage/sum"]
    assert complete("gwctl activity summary --by d") == ["day"]
    assert complete("gwctl activity reprice --by ") == ["source", "model", "agent", "key"]


def test_a_broken_store_completes_nothing_and_prints_nothing(store_path):
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.write_text("[[[ not toml\n")
    assert complete("gwctl source show ") == []
