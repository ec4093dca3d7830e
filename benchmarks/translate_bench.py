"""What translating between the Anthropic and OpenAI APIs costs the proxy: CPU per request and the first SSE event.

Starts one stand-in upstream (it answers both APIs; streams paced
--chunk-delay-ms apart) and one `gwctl proxy` (one worker, metering on, SQLite
activity log) on a store built with the CLI: three sources on that same
stand-in, each with a priced catalog entry for the same model:

* ``plain`` (``--api both``): forwarded in the client's API, untranslated;
* ``oa`` (``--api openai``): an Anthropic client's ``/v1/messages`` is sent as
  ``/v1/chat/completions`` and the answer translated back;
* ``an`` (``--api anthropic``): an OpenAI client's ``/v1/chat/completions`` is
  sent as ``/v1/messages`` and the answer translated back.

The bodies are small but give translation something to do: a system prompt,
three messages (user, assistant, user) and one tool definition.

* CPU per request: the proxy's process tree CPU (worker and log writer) per
  request over a wrk burst (32 connections, non-streamed), for an Anthropic
  body on /v1/messages to ``plain`` against ``oa``, and an OpenAI body on
  /v1/chat/completions to ``plain`` against ``an``. --repeat pairs of
  --duration-second bursts per direction, the order alternating between
  pairs; the figure is the median of the pairs' ratios (translated over
  untranslated), as benchmarks/limits_bench.py does. --aa sends both bursts
  of each pair to ``plain``: the ratio the method reads from noise alone.
* First event: the time from writing a streamed request to having its first
  complete SSE event, over --streams sequential requests per target on one
  keep-alive connection each, the four targets in turns (--rounds rounds, so
  the machine's drift touches each alike); median per target, and the
  translated median minus the untranslated one per direction.

    python benchmarks/translate_bench.py [--duration 2] [--repeat 15] [--streams 400] [--quick]

Targets (issue): a translated non-streamed request costs at most 1.3x the proxy
CPU of an untranslated one; a translated stream adds under 0.5 ms to the first
event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from gwctl.core.decision import A2O, O2A
from gwctl.core.translate import anthropic_to_openai_request, openai_to_anthropic_request
from gwctl.proxy.meter import StreamMeter
from gwctl.proxy.translating import Translation

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_stack as hs  # noqa: E402  (wrk driver, process helpers)

MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"
SYSTEM = "You are a careful assistant for a weather service. Answer briefly; use the tool when a city is named."
TOOL_DESC = "Current weather for a city."
TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
ANTHROPIC_BODY = {
    "max_tokens": 256,
    "system": SYSTEM,
    "messages": [
        {"role": "user", "content": "Hello, what can you do for me today?"},
        {"role": "assistant", "content": "I can look up the current weather for any city you name."},
        {"role": "user", "content": "What is the weather like in Lisbon right now?"},
    ],
    "tools": [{"name": "get_weather", "description": TOOL_DESC, "input_schema": TOOL_SCHEMA}],
    "temperature": 0.2,
}
OPENAI_BODY = {
    "max_tokens": 256,
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hello, what can you do for me today?"},
        {"role": "assistant", "content": "I can look up the current weather for any city you name."},
        {"role": "user", "content": "What is the weather like in Lisbon right now?"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": TOOL_DESC, "parameters": TOOL_SCHEMA}}
    ],
    "temperature": 0.2,
}


class Target:
    """One kind of request: the client's API (path, body, headers) and the source it names."""

    def __init__(self, name: str, path: str, body: dict, source: str, key: str) -> None:
        self.name = name
        self.path = path
        self.body = {"model": f"{source}/{hs.MODEL}", **body}
        # streamed, an OpenAI client asks for usage: without it the proxy's meter (which then asks the upstream
        # for usage itself) drops the upstream's first chunk, the role delta, and the first event is the second
        self.stream_body = dict(self.body, stream_options={"include_usage": True}) if path == CHAT else self.body
        if path == MESSAGES:  # what the anthropic SDK sends
            self.auth: str | None = None
            self.headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        else:
            self.auth = "Bearer " + key
            self.headers = {}


def build_store(tmp: Path, up_url: str) -> tuple[Path, str]:
    """A store (built with the CLI) with the three sources on the stand-in, each with a priced entry for
    hs.MODEL, and a gateway key; the store's path and the key."""
    store = tmp / "translate.toml"
    for source, api in (("plain", "both"), ("oa", "openai"), ("an", "anthropic")):
        hs.gwctl(store, "source", "add", source, "--base-url", up_url, "--auth-value", hs.UPSTREAM_KEY, "--api", api)
        hs.gwctl(store, "catalog", "set", f"{source}/{hs.MODEL}", "--price", "input=3e-6", "--price", "output=1.5e-5")
        hs.gwctl(store, "catalog", "set", f"{source}/{hs.MODEL}", "--max-output", "4096", "--context-size", "131072")
    key = json.loads(hs.gwctl(store, "key", "create", "bench", "--json"))["key"]
    return store, key


def check_decisions(store: Path, tmp: Path, targets: dict[str, Target]) -> None:
    """The dry-run agrees with the names: ``plain`` is forwarded as is, ``oa`` and ``an`` translated."""
    for name, t in targets.items():
        req = tmp / f"{name}.json"
        req.write_text(json.dumps(t.body))
        out = json.loads(hs.gwctl(store, "route", "dry-run", "--request", str(req), "--path", t.path, "--json"))
        translated = bool(out.get("translate"))
        if translated != name.endswith("->"):
            raise RuntimeError(f"{name}: dry-run says translate={out.get('translate')!r}")


def check_answers(base: str, targets: dict[str, Target]) -> None:
    """Each target answers 200 in the client's API, whole and streamed."""
    with httpx.Client(timeout=10) as c:
        for name, t in targets.items():
            headers = dict(t.headers, **({"Authorization": t.auth} if t.auth else {}))
            r = c.post(base + t.path, json=t.body, headers=headers)
            doc = r.json()
            shape = doc.get("type") == "message" if t.path == MESSAGES else doc.get("object") == "chat.completion"
            if r.status_code != 200 or not shape:
                raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
            r = c.post(base + t.path, json=dict(t.stream_body, stream=True), headers=headers)
            end = b"event: message_stop" if t.path == MESSAGES else b"data: [DONE]"
            if r.status_code != 200 or end not in r.content:
                raise RuntimeError(f"{name} (stream): {r.status_code} {r.text[:300]}")


def burst(proxy_pid: int, base: str, t: Target, duration: float) -> tuple[float, float]:
    """(req/s, proxy CPU µs per request) over one wrk burst at 32 connections."""
    cpu = hs.tree_cpu_seconds(proxy_pid)
    res = hs.wrk(base + t.path, 32, duration, t.auth, t.body, t.headers)
    cpu = hs.tree_cpu_seconds(proxy_pid) - cpu
    if res.errors:
        raise RuntimeError(f"{t.name}: {res.errors} wrk errors or non-2xx answers")
    return res.rps, cpu / (res.rps * max(1, round(duration))) * 1e6


def cpu_pairs(proxy_pid: int, base: str, pairs: list[tuple[str, Target, Target]], args) -> dict[str, list]:
    """Per direction, a list of ((rps, µs) untranslated, (rps, µs) translated), one per pair of bursts."""
    for _label, a, b in pairs:  # warm-up: pools, memo, caches
        hs.wrk(base + a.path, 32, 1, a.auth, a.body, a.headers)
        hs.wrk(base + b.path, 32, 1, b.auth, b.body, b.headers)
    out: dict[str, list] = {label: [] for label, _a, _b in pairs}
    for pair in range(args.repeat):
        for label, a, b in pairs:
            got = {}
            for i, t in ((0, a), (1, b)) if pair % 2 == 0 else ((1, b), (0, a)):
                got[i] = burst(proxy_pid, base, t, args.duration)
            out[label].append((got[0], got[1]))
            print(
                f"{label}, pair {pair + 1}: {got[0][1]:.0f} -> {got[1][1]:.0f} us CPU/req"
                f" ({got[0][0]:.0f} / {got[1][0]:.0f} req/s)",
                file=sys.stderr,
            )
    return out


def first_events(port: int, targets: dict[str, Target], args) -> dict[str, list[float]]:
    """Milliseconds to the first complete SSE event per target, the targets in turns."""
    times: dict[str, list[float]] = {name: [] for name in targets}
    per_round = max(1, args.streams // args.rounds)

    async def run(t: Target, n: int) -> list[float]:
        coro = hs._first_chunk_times(port, t.path, t.auth, n, t.stream_body, t.headers)
        return await asyncio.wait_for(coro, 120)

    for t in targets.values():
        asyncio.run(run(t, 20))  # warm-up
    for rnd in range(args.rounds):
        order = list(targets.values())
        if rnd % 2:
            order.reverse()
        for t in order:
            times[t.name] += [s * 1000 for s in asyncio.run(run(t, per_round))]
    return times


def upstream_answers(up_url: str) -> dict[str, tuple[dict, bytes, list[bytes]]]:
    """Per way, the client's body and the stand-in's whole answer and stream (its SSE events) to the
    translated request, for the in-process measure."""
    out = {}
    headers = {"Authorization": "Bearer " + hs.UPSTREAM_KEY}
    with httpx.Client(timeout=10) as c:
        for way, body, convert, path in (
            (A2O, ANTHROPIC_BODY, anthropic_to_openai_request, CHAT),
            (O2A, OPENAI_BODY, openai_to_anthropic_request, MESSAGES),
        ):
            body = {"model": hs.MODEL, **body}
            upstream = convert(body, default_max_tokens=4096).body
            whole = c.post(up_url + path.removeprefix("/v1"), json=upstream, headers=headers).content
            stream = convert(dict(body, stream=True), default_max_tokens=4096).body
            with c.stream("POST", up_url + path.removeprefix("/v1"), json=stream, headers=headers) as r:
                events = [e + b"\n\n" for e in r.read().split(b"\n\n") if e.strip()]
            out[way] = (body, whole, events)
    return out


def per_call_us(fn, n: int) -> float:
    """``fn``'s microseconds per call: the best of 7 runs of ``n`` calls (as timeit reports)."""
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def in_process(answers: dict[str, tuple[dict, bytes, list[bytes]]], n: int) -> dict[str, tuple[float, ...]]:
    """Translation's own work per request, timed in this process: the request (convert, serialise), the
    whole answer (parse, convert, serialise: ``Translation.answer``), and a stream's events through the
    translating meter against the plain meter the untranslated stream goes through."""
    out = {}
    for way, (body, whole, events) in answers.items():
        convert = anthropic_to_openai_request if way == A2O else openai_to_anthropic_request
        upstream_api = "chat" if way == A2O else "messages"
        translation = Translation(way, body["model"], way == A2O)

        def request(body=body, convert=convert) -> None:
            orjson.dumps(convert(body, default_max_tokens=4096).body)

        def answer(translation=translation, whole=whole) -> None:
            translation.answer(200, whole)

        def plain_stream(events=events, api=upstream_api) -> None:
            m = StreamMeter(api)
            for e in events:
                m.feed(e)
            m.finish()

        def translated_stream(events=events, translation=translation) -> None:
            m = translation.stream_meter("0123456789abcdef")
            for e in events:
                m.feed(e)
            m.finish()

        def first_event(events=events, translation=translation) -> None:
            translation.stream_meter("0123456789abcdef").feed(events[0])

        def plain_first_event(events=events, api=upstream_api) -> None:
            StreamMeter(api).feed(events[0])

        out[way] = (
            per_call_us(request, n),
            per_call_us(answer, n),
            per_call_us(plain_stream, n // 4),
            per_call_us(translated_stream, n // 4),
            len(events),
            per_call_us(plain_first_event, n),
            per_call_us(first_event, n),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2, help="seconds per wrk burst (whole seconds)")
    ap.add_argument("--repeat", type=int, default=15, help="pairs of bursts per direction")
    ap.add_argument("--streams", type=int, default=400, help="streamed requests per target for the first event")
    ap.add_argument("--rounds", type=int, default=4, help="rounds the streamed requests are split into")
    ap.add_argument("--chunk-delay-ms", type=float, default=2, help="the stand-in's pace between stream events")
    ap.add_argument("--quick", action="store_true", help="a short run: 1 s bursts, 3 pairs, 100 streams")
    ap.add_argument(
        "--aa", action="store_true", help="both bursts of each pair untranslated: the ratio noise alone gives"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.streams, args.rounds = 1, 3, 100, 2
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    busy = hs.busy_others({os.getpid()})
    if busy:
        print("other processes are busy (figures will be noisier):", ", ".join(busy), file=sys.stderr)
    procs = hs.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwctl-translate-bench-"))
    try:
        up_url = hs.start_standin(procs, "--chunk-delay-ms", str(args.chunk_delay_ms))
        store, key = build_store(tmp, up_url)
        answers = upstream_answers(up_url)
        targets = {
            "anthropic": Target("anthropic", MESSAGES, ANTHROPIC_BODY, "plain", key),
            "anthropic->": Target("anthropic->", MESSAGES, ANTHROPIC_BODY, "oa", key),
            "openai": Target("openai", CHAT, OPENAI_BODY, "plain", key),
            "openai->": Target("openai->", CHAT, OPENAI_BODY, "an", key),
        }
        check_decisions(store, tmp, targets)
        proxy, base = hs.start_gwctl_proxy(procs, store, f"sqlite://{tmp / 'activity.sqlite3'}")
        check_answers(base, targets)
        second = {"anthropic": "anthropic", "openai": "openai"} if args.aa else {}
        pairs = [
            ("anthropic -> openai", targets["anthropic"], targets[second.get("anthropic", "anthropic->")]),
            ("openai -> anthropic", targets["openai"], targets[second.get("openai", "openai->")]),
        ]
        cpu = cpu_pairs(proxy.pid, base, pairs, args)
        firsts = first_events(int(base.rsplit(":", 1)[1]), targets, args)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    own = in_process(answers, 2000 if args.quick else 20000)

    med = statistics.median
    print()
    if busy:
        print("note: other processes were busy when the run started:", ", ".join(busy))
    print("CPU per non-streamed request (proxy worker + log writer, wrk at 32 connections)")
    print(
        f"{'direction':<22} {'untranslated us':>16} {'translated us':>14} {'ratio':>6} {'pairs IQR':>11}"
        f" {'target':>7} {'met':>4} {'req/s':>14}"
    )
    for label, runs in cpu.items():
        ratios = sorted(b[1] / a[1] for a, b in runs)
        q1, _q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        ratio = med(ratios)
        rps = f"{med(a[0] for a, _b in runs):.0f} / {med(b[0] for _a, b in runs):.0f}"
        print(
            f"{label + (' (A/A)' if args.aa else ''):<22} {med(a[1] for a, _b in runs):16.1f}"
            f" {med(b[1] for _a, b in runs):14.1f} {ratio:6.2f} {q1:5.2f}-{q3:.2f} {'<= 1.30':>7}"
            f" {'yes' if ratio <= 1.3 else 'NO':>4} {rps:>14}"
        )
    print()
    print(f"First complete SSE event, median over {len(firsts['openai'])} streams per target")
    print(f"{'direction':<22} {'untranslated ms':>16} {'translated ms':>14} {'added ms':>9} {'target':>7} {'met':>4}")
    for label, plain, trans in (
        ("anthropic -> openai", "anthropic", "anthropic->"),
        ("openai -> anthropic", "openai", "openai->"),
    ):
        a, b = med(firsts[plain]), med(firsts[trans])
        print(f"{label:<22} {a:16.3f} {b:14.3f} {b - a:+9.3f} {'< +0.5':>7} {'yes' if b - a < 0.5 else 'NO':>4}")
    print()
    print("Translation's own work, timed in this process (us, best of 7; on top of what an untranslated request costs)")
    print(
        f"{'direction':<22} {'request':>8} {'answer':>7} {'sum':>6}"
        f" {'stream: plain meter':>20} {'translating':>12} {'events':>7} {'1st event: plain':>17} {'translating':>12}"
    )
    for way, (req, ans, plain, trans, events, plain_first, first) in own.items():
        print(
            f"{way:<22} {req:8.1f} {ans:7.1f} {req + ans:6.1f} {plain:20.1f} {trans:12.1f} {events:7d}"
            f" {plain_first:17.1f} {first:12.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
