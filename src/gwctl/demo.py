"""`gwctl demo`: the whole product end to end on this machine, in a temporary store.

It starts the bundled OpenAI-compatible stand-in upstream on 127.0.0.1, then
runs the real commands a platform engineer would type, printing each one and
its output, and finally sends requests through `gwctl proxy` and reads the
activity log. Nothing outside a temporary directory is touched.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UPSTREAM_KEY = "sk-demo-upstream-5678"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _gw(args: list[str], show: bool = True, expect: int | None = 0, stdin: str | None = None) -> tuple[int, str]:
    from gwctl.cli import main, state

    if show:
        _say(f"\n$ gwctl {' '.join(shlex.quote(a) for a in args)}")
    out, err = io.StringIO(), io.StringIO()
    state.STORE_OPTION = None
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        sys.stdin = old_stdin
    text = out.getvalue() + err.getvalue()
    if show:
        for line in text.rstrip("\n").splitlines():
            _say("  " + line)
        if code:
            _say(f"  (exit {code})")
    if expect is not None and code != expect:
        raise RuntimeError(f"gwctl {' '.join(args)} exited {code}, expected {expect}:\n{text}")
    return code, out.getvalue()


def run_demo(keep: bool = False, with_proxy: bool = True) -> int:
    from gwctl import render
    from gwctl.testing.thread import StandinConfig, start_standin

    render.FORCE_TABLES = True

    tmp = Path(tempfile.mkdtemp(prefix="gwctl-demo-"))
    store = tmp / "gwctl.toml"
    activity = tmp / "activity.sqlite3"
    saved = {k: os.environ.get(k) for k in ("GWCTL_STORE", "GWCTL_ACTIVITY", "DEMO_UPSTREAM_KEY", "no_proxy", "NO_PROXY")}
    os.environ["GWCTL_STORE"] = str(store)
    os.environ["GWCTL_ACTIVITY"] = f"sqlite://{activity}"
    os.environ["DEMO_UPSTREAM_KEY"] = UPSTREAM_KEY
    for name in ("no_proxy", "NO_PROXY"):  # the stand-in is local: never through an egress proxy the user has set
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1"]))
    upstream = start_standin(StandinConfig(models=["llama-3.1-8b", "qwen/qwen3", "mistral-7b"], api_key=UPSTREAM_KEY))
    proxy = None
    try:
        _say(f"gwctl demo: a stand-in OpenAI-compatible upstream is listening on {upstream.url}")
        _say(f"            (temporary store {store})")
        _gw(["source", "add", "local", "--base-url", upstream.url, "--auth-env", "DEMO_UPSTREAM_KEY", "--test"])
        _gw(["source", "refresh", "local"])
        _gw(["model", "list"])
        _gw(["catalog", "set", "local/llama-3.1-8b", "--price", "input=3e-6", "--price", "output=1.5e-5",
             "--price", "cached_input=1.5e-6", "--context-size", "8192", "--max-output", "1024",
             "--capability", "vision=false"])
        _gw(["route", "set", "triage", "--model-name", "assistant", "--provider", "local", "--model", "llama-3.1-8b"])
        _gw(["route", "dry-run", "--agent", "triage", "--model", "assistant"])
        req = tmp / "too-long.json"
        req.write_text('{"messages": [{"role": "user", "content": "Summarise the incident"}], "max_tokens": 4096}')
        _say(f"\n# a request asking for more output than the catalog allows ({req.name}: max_tokens 4096)")
        _gw(["route", "dry-run", "--agent", "triage", "--model", "assistant", "--request", str(req)], expect=1)
        _gw(["catalog", "price", "local/llama-3.1-8b", "--input-tokens", "800", "--cached-tokens", "200", "--output-tokens", "50"])
        if with_proxy:
            _, key = _gw(["key", "create", "demo"], show=False)
            key = key.strip()
            _say("\n$ gwctl key create demo\n  gwk_…  (printed once; only its hash is stored)")
            proxy, url = _start_proxy(store, activity)
            _say(f"\n$ gwctl proxy --port 0   # running at {url}")
            _send(url, key)
            time.sleep(0.5)  # the log is written in batches off the request path
            _stop_proxy(proxy)
            proxy = None
            _gw(["activity", "list"])
            _gw(["activity", "summary", "--by", "model"])
        _say("\ndemo finished: every step above ran the real gwctl against a real local server.")
        if keep:
            _say(f"store kept at {store}; try: GWCTL_STORE={store} gwctl source list")
        return 0
    except Exception as exc:  # a demo that breaks should say where
        _say(f"\ndemo failed: {exc}")
        return 1
    finally:
        if proxy is not None:
            _stop_proxy(proxy)
        upstream.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _start_proxy(store: Path, activity: Path):
    cmd = [sys.executable, "-m", "gwctl", "--store", str(store), "proxy", "--port", "0",
           "--activity", f"sqlite://{activity}", "--grace", "5"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("gwctl proxy exited before it was ready")
            continue
        m = re.search(r"ready on (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("gwctl proxy did not start within 20 s")


def _stop_proxy(proc) -> None:
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _send(url: str, key: str) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}", "X-Gwctl-Agent": "triage"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        body = {"model": "assistant", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 100}
        r = client.post("/v1/chat/completions", json=body)
        text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
        _say(f"  POST /v1/chat/completions model=assistant -> {r.status_code}: {text!r}")
        pieces = []
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    import json

                    chunk = json.loads(line[6:])
                    for c in chunk.get("choices", []):
                        pieces.append(c.get("delta", {}).get("content") or "")
        _say(f"  POST /v1/chat/completions stream=true -> {s.status_code}: streamed {''.join(pieces)!r}")
        r = client.post("/v1/chat/completions", json={**body, "max_tokens": 4096})
        _say(f"  POST /v1/chat/completions max_tokens=4096 -> {r.status_code}: {r.json()['error']['code']}")
        r = client.post("/v1/chat/completions", json={**body, "model": "local/mistral-7b"})
        _say(f"  POST /v1/chat/completions model=local/mistral-7b -> {r.status_code} (no catalog entry: unbilled)")
