"""`gwctl demo`: the whole product end to end on this machine, in a temporary store.

It starts the bundled OpenAI-compatible stand-in upstream on 127.0.0.1, then
runs the real commands a platform engineer would type, printing each one and
its output, and finally sends requests through `gwctl proxy` and reads the
activity log. Nothing outside a temporary directory is touched.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import httpx

from gwctl.context import Env
from gwctl.testing import proxyproc
from gwctl.testing.thread import StandinConfig, start_standin

UPSTREAM_KEY = "sk-demo-upstream-5678"

Gwctl = Callable[[list[str], Env], int]
"""gwctl's entry point (``gwctl.cli.main``), handed in by the command: this module does not import the CLI."""


class _Session:
    """The demo's gwctl: each command runs in-process through the entry point, in the demo's environment."""

    def __init__(self, gwctl: Gwctl, out, environ: Mapping[str, str]):
        self.gwctl, self.out, self.environ = gwctl, out, environ

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self, args: list[str], show: bool = True, expect: int | None = 0) -> tuple[int, str]:
        if show:
            self.say(f"\n$ gwctl {' '.join(shlex.quote(a) for a in args)}")
        env = Env.captured(environ=self.environ, force_tables=True)  # captured, but the output is for a person
        code = self.gwctl(args, env)
        assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)  # captured
        out = env.stdout.getvalue()
        text = out + env.stderr.getvalue()
        if show:
            for line in text.rstrip("\n").splitlines():
                self.say("  " + line)
            if code:
                self.say(f"  (exit {code})")
        if expect is not None and code != expect:
            raise RuntimeError(f"gwctl {' '.join(args)} exited {code}, expected {expect}:\n{text}")
        return code, out


def _with_loopback(value: str | None) -> str:
    return ",".join(filter(None, [value, "127.0.0.1"]))


def demo_environ(base: Mapping[str, str], store: Path, activity: Path) -> dict[str, str]:
    """The environment the demo's commands and its proxy run in: the user's, pointed at the temporary store."""
    environ = {
        **base,
        "GWCTL_STORE": str(store),
        "GWCTL_ACTIVITY": f"sqlite://{activity}",
        "DEMO_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    for name in ("no_proxy", "NO_PROXY"):  # the stand-in is local: never through an egress proxy the user has set
        environ[name] = _with_loopback(base.get(name))
    return environ


@contextlib.contextmanager
def _loopback_not_proxied() -> Iterator[None]:
    """For the block, NO_PROXY lists 127.0.0.1 in this process's environment too.

    httpx (under `source add --test` and `source refresh`) reads egress proxy
    settings from os.environ only, not from the Env the commands get.
    """
    saved = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    for name, value in saved.items():
        os.environ[name] = _with_loopback(value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(gwctl: Gwctl, env: Env, keep: bool = False, with_proxy: bool = True) -> int:
    """Run the demo, printing to ``env.stdout``; ``gwctl`` runs one command line (``gwctl.cli.main``)."""
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-demo-"))
    store, activity = tmp / "gwctl.toml", tmp / "activity.sqlite3"
    session = _Session(gwctl, env.stdout, demo_environ(env.environ, store, activity))
    upstream = start_standin(StandinConfig(models=["llama-3.1-8b", "qwen/qwen3", "mistral-7b"], api_key=UPSTREAM_KEY))
    try:
        with _loopback_not_proxied():
            _steps(session, upstream.url, tmp, with_proxy)
        if keep:
            session.say(f"store kept at {store}; try: GWCTL_STORE={store} gwctl source list")
        return 0
    except Exception as exc:  # a demo that breaks should say where
        session.say(f"\ndemo failed: {exc}")
        return 1
    finally:
        upstream.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _steps(session: _Session, upstream_url: str, tmp: Path, with_proxy: bool) -> None:
    say, gw = session.say, session.run
    say(f"gwctl demo: a stand-in OpenAI-compatible upstream is listening on {upstream_url}")
    say(f"            (temporary store {tmp / 'gwctl.toml'})")
    gw(["source", "add", "local", "--base-url", upstream_url, "--auth-env", "DEMO_UPSTREAM_KEY", "--test"])
    gw(["source", "refresh", "local"])
    gw(["model", "list"])
    gw(
        [
            "catalog",
            "set",
            "local/llama-3.1-8b",
            "--price",
            "input=3e-6",
            "--price",
            "output=1.5e-5",
            "--price",
            "cached_input=1.5e-6",
            "--context-size",
            "8192",
            "--max-output",
            "1024",
            "--capability",
            "vision=false",
        ]
    )
    gw(["route", "set", "triage", "--model-name", "assistant", "--provider", "local", "--model", "llama-3.1-8b"])
    gw(["route", "dry-run", "--agent", "triage", "--model", "assistant"])
    req = tmp / "too-long.json"
    req.write_text('{"messages": [{"role": "user", "content": "Summarise the incident"}], "max_tokens": 4096}')
    say(f"\n# a request asking for more output than the catalog allows ({req.name}: max_tokens 4096)")
    gw(["route", "dry-run", "--agent", "triage", "--model", "assistant", "--request", str(req)], expect=1)
    gw(
        [
            "catalog",
            "price",
            "local/llama-3.1-8b",
            "--input-tokens",
            "800",
            "--cached-tokens",
            "200",
            "--output-tokens",
            "50",
        ]
    )
    if with_proxy:
        _through_the_proxy(session, tmp)
    say("\ndemo finished: every step above ran the real gwctl against a real local server.")


def _through_the_proxy(session: _Session, tmp: Path) -> None:
    say, gw = session.say, session.run
    _, key = gw(["key", "create", "demo"], show=False)
    key = key.strip()
    say("\n$ gwctl key create demo\n  gwk_…  (printed once; only its hash is stored)")
    proxy, url = _start_proxy(tmp / "gwctl.toml", tmp / "activity.sqlite3", session.environ)
    try:
        say(f"\n$ gwctl proxy --port 0   # running at {url}")
        _send(say, url, key)
        time.sleep(0.5)  # the log is written in batches off the request path
    finally:
        proxyproc.stop(proxy)
    gw(["activity", "list"])
    gw(["activity", "summary", "--by", "model"])


def _start_proxy(store: Path, activity: Path, environ: Mapping[str, str]):
    cmd = proxyproc.proxy_command(str(store), f"sqlite://{activity}", "--grace", "5")
    return proxyproc.start(cmd, environ, 20, [])


def _send(say: Callable[[str], None], url: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}", "X-Gwctl-Agent": "triage"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        body = {"model": "assistant", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 100}
        r = client.post("/v1/chat/completions", json=body)
        text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
        say(f"  POST /v1/chat/completions model=assistant -> {r.status_code}: {text!r}")
        pieces = []
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    for c in chunk.get("choices", []):
                        pieces.append(c.get("delta", {}).get("content") or "")
        say(f"  POST /v1/chat/completions stream=true -> {s.status_code}: streamed {''.join(pieces)!r}")
        r = client.post("/v1/chat/completions", json={**body, "max_tokens": 4096})
        say(f"  POST /v1/chat/completions max_tokens=4096 -> {r.status_code}: {r.json()['error']['code']}")
        r = client.post("/v1/chat/completions", json={**body, "model": "local/mistral-7b"})
        say(f"  POST /v1/chat/completions model=local/mistral-7b -> {r.status_code} (no catalog entry: unbilled)")
