"""`gwctl proxy` as a child process, for the demo and the tests: started, waited for until it says it is
ready, and stopped, each within a bound."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from typing import Mapping, Sequence

_READY = re.compile(r"ready on (http://\S+)")


def proxy_command(store: str, activity: str, *extra: str) -> list[str]:
    """The command line of a proxy on a free loopback port with ``store`` and the log ``activity``."""
    return [sys.executable, "-m", "gwctl", "--store", store, "proxy", "--port", "0", "--activity", activity, *extra]


def start(cmd: Sequence[str], env: Mapping[str, str], timeout: float, lines: list[str]) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` and read its stderr (into ``lines``) until its "ready on URL" line: the process and the URL.
    A proxy that exits first, or is not ready within ``timeout`` seconds (then killed), is a RuntimeError
    carrying what it printed."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(env))
    assert proc.stderr is not None  # stderr=PIPE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("gwctl proxy exited before it was ready:\n" + "".join(lines))
            continue
        lines.append(line)
        m = _READY.search(line)
        if m:
            return proc, m.group(1)
    proc.kill()
    proc.wait(timeout=5)
    raise RuntimeError(f"gwctl proxy was not ready within {timeout:g} s:\n" + "".join(lines))


def stop(proc: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM (the proxy drains and flushes its log), then SIGKILL after ``timeout`` seconds: the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)
