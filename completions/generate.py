"""Regenerate the shell completion files from the app: python completions/generate.py

The files are typer's completion shims for bash, zsh and fish; they ask gwctl
itself for candidates, so they follow the command tree. tests/test_completions.py
fails when a checked-in file differs from what this script writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {"bash": "gwctl.bash", "zsh": "_gwctl", "fish": "gwctl.fish"}


def render(shell: str) -> str:
    env = {**os.environ, "_GWCTL_COMPLETE": f"source_{shell}"}
    code = "import sys; sys.argv[0] = 'gwctl'; from gwctl.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def main() -> None:
    for shell, name in FILES.items():
        (HERE / name).write_text(render(shell))
        print(f"wrote completions/{name}")


if __name__ == "__main__":
    main()
