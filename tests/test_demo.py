"""The README's first command: `gwctl demo` runs the product end to end."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GWCTL_STORE", "GWCTL_ACTIVITY")}
    env["HOME"] = str(tmp_path)  # the user's own store must not be touched
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    r = subprocess.run([sys.executable, "-m", "gwctl", "demo"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "connection ok" in out and "+ local/llama-3.1-8b" in out
    assert "[max_output]" in out and "total" in out and "0.00345" in out
    assert "-> 200: 'Hello from the'" in out and "-> 400: max_output" in out
    assert "unbilled" in out and "0.000138" in out  # two billed requests at 0.000069 each
    assert not (tmp_path / "cfg" / "gwctl").exists()


def test_demo_runs_behind_an_egress_proxy_setting(tmp_path):
    """A user whose environment sends HTTP through a proxy (here: one that is not even there) still gets
    a working demo: its stand-in is local, so the demo lists 127.0.0.1 in NO_PROXY for itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("GWCTL_STORE", "GWCTL_ACTIVITY")}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        HTTP_PROXY="http://127.0.0.1:9",
        no_proxy="corp.example",
    )
    r = subprocess.run([sys.executable, "-m", "gwctl", "demo"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "connection ok" in r.stdout and "-> 200: 'Hello from the'" in r.stdout
