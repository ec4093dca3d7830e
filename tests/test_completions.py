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
