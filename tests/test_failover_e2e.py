"""Failover and load balancing through a real proxy, against real loopback upstreams that fail in each way.

The failing targets are tests/faulty.py's upstream (a 429 with and without
Retry-After, 500, 503, a reset before the answer's head, an answer that never
comes) and a port nobody listens on; the target that answers is the stand-in
(gwctl.testing), which speaks chat completions, Responses and Anthropic
messages, streamed and not. The clients are the real openai and anthropic SDKs.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from faulty import FaultyUpstream, wait_until
from gwctl.testing.thread import StandinConfig, start_standin
from proxyrun import ProxyProcess, StoreRig, closed_port

UP_KEY = "sk-up"
USAGE = {"input_tokens": 1000, "cached_tokens": 200, "output_tokens": 50}
GOOD = ("--price", "input=3e-6", "--price", "output=1.5e-5", "--price", "cached_input=1.5e-6")
DEAR = ("--price", "input=3e-4", "--price", "output=1.5e-3")  # the failing targets: 100x, so a wrong bill shows

# agent -> (source, upstream model, the request's fault parameters): each primary fails its own way
FAULTS = {
    "refuse": ("dead", "x", {}),
    "reset": ("bad", "reset", {"at": "head"}),
    "hang": ("slow", "hang", {}),
    "429": ("bad", "status", {"status": 429}),
    "500": ("bad", "status", {"status": 500}),
    "503": ("bad", "status", {"status": 503}),
    "tls": ("tlsbad", "x", {}),  # https to a server that speaks plain HTTP: the handshake fails
    "passthrough": ("badpass", "status", {"status": 503}),  # a passthrough route fails over too
}


class Rig(StoreRig):
    def __init__(self, root: Path):
        self.faulty = FaultyUpstream().start()
        self.good = start_standin(StandinConfig(models=["good-m"], usage=USAGE, api_key=UP_KEY))
        self.other = start_standin(StandinConfig(models=["other-m"], usage=USAGE, api_key=UP_KEY))
        self.store = root / "cfg" / "gwctl.toml"
        self.db = root / "activity.sqlite3"
        self.cli("source", "add", "good", "--base-url", self.good.url, "--auth-value", UP_KEY)
        self.cli("source", "add", "other", "--base-url", self.other.url, "--auth-value", UP_KEY)
        self.cli("source", "add", "bad", "--base-url", self.faulty.url, "--auth-value", UP_KEY)
        self.cli("source", "add", "slow", "--base-url", self.faulty.url, "--auth-value", UP_KEY, "--read-timeout", "1")
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        self.cli("source", "add", "dead", "--base-url", dead, "--auth-value", UP_KEY)
        tls = self.good.url.replace("http://", "https://")
        self.cli("source", "add", "tlsbad", "--base-url", tls, "--auth-value", UP_KEY)
        self.cli("source", "add", "badpass", "--base-url", self.faulty.url, "--auth-value", UP_KEY, "--passthrough")
        for ref in ("good/good-m", "other/other-m"):
            self.cli("catalog", "set", ref, *GOOD)
        for ref in ("bad/status", "bad/reset", "slow/hang", "dead/x", "tlsbad/x", "badpass/status"):
            self.cli("catalog", "set", ref, *DEAR)
        for agent, (source, model, _fault) in FAULTS.items():
            self.route(agent, source, model, "--fallback", "good/good-m")
        self.route("direct", "good", "good-m")  # the same answer without failover: the price to expect
        self.route("midstream", "bad", "reset", "--fallback", "good/good-m")
        self.route("weighted", "good", "good-m", "--weight", "3", "--balance", "other/other-m=1")
        self.key = self.cli("key", "create", "tester", "--json").json()["key"]

    def policy(self, text: str) -> None:
        with open(self.store, "a") as f:
            f.write("\n[settings.failover]\n" + text + "\n")

    def start(self) -> ProxyProcess:
        self.proc = ProxyProcess(self.store, f"sqlite://{self.db}")
        return self.proc

    def close(self) -> None:
        self.good.stop()
        self.other.stop()
        self.faulty.stop()


@pytest.fixture
def fresh(tmp_path):
    """A rig of the test's own (its own proxy and health): ``fresh(policy)``; stopped after the test."""
    made = []

    def make(policy: str) -> Rig:
        made.append(Rig(tmp_path))
        made[-1].policy(policy)
        return made[-1]

    yield make
    for r in made:
        if getattr(r, "proc", None) is not None:
            r.proc.terminate()
        r.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("failover"))
    r.policy("cooldown_after = 1000")  # these tests look at single requests; the cooldown has its own test
    proc = r.start()
    r.proc = proc
    yield r
    proc.terminate()
    r.close()


def _call(rig, agent: str, api: str, stream: bool, fault: dict) -> tuple[int, dict[str, str], str]:
    """One request through the proxy with the real SDK for ``api``: (status, headers, text of the answer)."""
    headers = {"X-Gwctl-Agent": f"t/{agent}"}
    extra = {"fault": fault} if fault else None
    if api == "messages":
        client = anthropic.Anthropic(base_url=rig.proc.url, api_key=rig.key, max_retries=0, timeout=20)
        kw = dict(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
        if stream:
            with client.messages.with_streaming_response.create(stream=True, extra_body=extra, **kw) as raw:
                return raw.status_code, dict(raw.headers), "".join(raw.iter_text())
        raw = client.messages.with_raw_response.create(extra_body=extra, **kw)
        return raw.status_code, dict(raw.headers), raw.parse().content[0].text
    client = openai.OpenAI(base_url=rig.proc.url + "/v1", api_key=rig.key, max_retries=0, timeout=20)
    if api == "responses":
        kw = dict(model="m", input="hi", extra_headers=headers, extra_body=extra)
        if stream:
            with client.responses.with_streaming_response.create(stream=True, **kw) as raw:
                return raw.status_code, dict(raw.headers), "".join(raw.iter_text())
        raw = client.responses.with_raw_response.create(**kw)
        return raw.status_code, dict(raw.headers), raw.parse().output_text
    kw = dict(model="m", messages=[{"role": "user", "content": "hi"}], extra_headers=headers, extra_body=extra)
    if stream:
        with client.chat.completions.with_streaming_response.create(stream=True, **kw) as raw:
            return raw.status_code, dict(raw.headers), "".join(raw.iter_text())
    raw = client.chat.completions.with_raw_response.create(**kw)
    return raw.status_code, dict(raw.headers), raw.parse().choices[0].message.content or ""


def _attempts(row: dict) -> list[dict] | None:
    raw = row.get("attempts")
    return json.loads(raw) if raw else None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
@pytest.mark.parametrize("agent", list(FAULTS))
def test_a_failing_primary_is_answered_by_the_fallback_at_the_fallbacks_price(rig, agent, api, stream):
    source, model, fault = FAULTS[agent]
    status, headers, text = _call(rig, agent, api, stream, fault)
    assert status == 200 and text
    assert headers["x-gwctl-attempts"] == "2"
    row = rig.row(headers["x-gwctl-request-id"])
    assert (row["status"], row["source"], row["upstream_model"]) == (200, "good", "good-m")
    # the answering target's price: the same as the same request routed straight to it
    d_status, d_headers, _ = _call(rig, "direct", api, stream, {})
    direct = rig.row(d_headers["x-gwctl-request-id"])
    assert d_status == 200 and "x-gwctl-attempts" not in d_headers
    assert row["cost"] is not None and Decimal(row["cost"]) == Decimal(direct["cost"]) > 0
    attempts = _attempts(row)
    assert attempts is not None and [a["target"] for a in attempts] == [f"{source}/{model}", "good/good-m"]
    assert attempts[1]["status"] == 200 and attempts[1]["error"] is None
    if agent in ("429", "500", "503", "passthrough"):
        assert attempts[0]["status"] == int(fault["status"])
    else:
        assert attempts[0]["status"] is None and attempts[0]["error"]
    if agent == "tls":
        assert "TLS" in attempts[0]["error"]


def test_no_failover_once_a_stream_has_started(rig):
    """The primary answers 200, sends one event, then resets: the client's stream ends broken; nothing is retried."""
    before = len([s for s in rig.good.received if s.path.endswith("/chat/completions")])
    with httpx.stream(
        "POST",
        rig.proc.url + "/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}], "fault": {"events": 1}},
        headers={"Authorization": f"Bearer {rig.key}", "X-Gwctl-Agent": "t/midstream"},
        timeout=20,
    ) as r:
        assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "1"
        got = b""
        with pytest.raises(httpx.HTTPError):
            for chunk in r.iter_raw():
                got += chunk
    assert b"data:" in got and b"[DONE]" not in got
    row = rig.row(r.headers["x-gwctl-request-id"])
    assert row["status"] == 502 and "broke the stream" in row["error"] and row["source"] == "bad"
    assert _attempts(row) is None  # one attempt: the row's source, status and error say it
    assert len([s for s in rig.good.received if s.path.endswith("/chat/completions")]) == before


def test_weights_split_the_primary_tier(rig):
    """good/good-m weight 3, other/other-m weight 1: 400 requests split 300/100 (smooth round robin)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    seen = {"good": 0, "other": 0}
    with httpx.Client(timeout=20) as c:
        for _ in range(400):
            r = c.post(
                rig.proc.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {rig.key}", "X-Gwctl-Agent": "t/weighted"},
            )
            assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "1"
            seen["good" if r.json()["model"] == "good-m" else "other"] += 1
    assert abs(seen["good"] - 300) <= 12 and abs(seen["other"] - 100) <= 12, seen


def _chat(proc, key, agent, fault=None) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if fault:
        body["fault"] = fault
    return httpx.post(
        proc.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", "X-Gwctl-Agent": f"t/{agent}"},
        timeout=20,
    )


def test_retry_after_keeps_a_target_out_until_then(fresh):
    rig = fresh("cooldown_after = 1000")
    proc = rig.start()
    r = _chat(proc, rig.key, "429", {"status": 429, "retry_after": 2})
    assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
    said = time.monotonic()
    tried = len(rig.faulty.seen)
    r = _chat(proc, rig.key, "429", {"status": 429, "retry_after": 2})  # bad/status is out: straight to good
    assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "1" and len(rig.faulty.seen) == tried
    time.sleep(max(0.0, 2.2 - (time.monotonic() - said)))
    r = _chat(proc, rig.key, "429", {"status": 429})  # after the Retry-After: tried again
    assert r.headers["x-gwctl-attempts"] == "2" and len(rig.faulty.seen) == tried + 1


def test_cooldown_is_entered_after_failures_in_a_row_and_left_by_one_request(fresh):
    rig = fresh("cooldown_after = 2\ncooldown_seconds = 1.5")
    proc = rig.start()
    for _ in range(2):
        r = _chat(proc, rig.key, "503", {"status": 503})
        assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
    cooled = time.monotonic()
    tried = len(rig.faulty.seen)
    r = _chat(proc, rig.key, "503", {"status": 503})
    assert r.headers["x-gwctl-attempts"] == "1" and len(rig.faulty.seen) == tried  # skipped while cooling
    time.sleep(max(0.0, 1.7 - (time.monotonic() - cooled)))
    r = _chat(proc, rig.key, "503", {"status": 503})  # one request tries it again, and it fails again
    assert r.headers["x-gwctl-attempts"] == "2" and len(rig.faulty.seen) == tried + 1
    r = _chat(proc, rig.key, "503")  # cooling again (one failure after a cooldown is enough)
    assert r.headers["x-gwctl-attempts"] == "1"


def test_when_every_target_is_out_the_answer_says_when_to_come_back(fresh):
    rig = fresh("cooldown_after = 1\ncooldown_seconds = 30")
    rig.route("both-bad", "bad", "status", "--fallback", "dead/x")
    proc = rig.start()
    r = _chat(proc, rig.key, "both-bad", {"status": 503})
    assert r.status_code == 502 and r.headers["x-gwctl-attempts"] == "2"  # the last target's failure
    r = _chat(proc, rig.key, "both-bad", {"status": 503})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_target_available"
    assert 1 <= int(r.headers["retry-after"]) <= 30 and r.headers["x-gwctl-attempts"] == "0"


def test_max_attempts_caps_the_targets_tried(fresh):
    rig = fresh("cooldown_after = 1000\nmax_attempts = 2")
    rig.route("three", "bad", "status", "--fallback", "dead/x", "--fallback", "good/good-m")
    proc = rig.start()
    r = _chat(proc, rig.key, "three", {"status": 503})
    assert r.status_code == 502 and r.headers["x-gwctl-attempts"] == "2"  # good/good-m is third: not tried
    row = rig.row(r.headers["x-gwctl-request-id"])
    assert [a["target"] for a in _attempts(row)] == ["bad/status", "dead/x"]


def test_a_budget_is_charged_once_at_the_answering_price(fresh):
    rig = fresh("cooldown_after = 1000")
    rig.cli("limit", "set", "key:tester", "--budget", "50", "--window", "day")
    proc = rig.start()
    r = _chat(proc, rig.key, "503", {"status": 503})
    assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
    row = rig.row(r.headers["x-gwctl-request-id"])

    def spent():
        out = rig.cli("limit", "status", "key:tester", "--activity", f"sqlite://{rig.db}", "--json").json()
        value = Decimal(out[0]["spent"])
        return value if value > 0 else None

    assert wait_until(spent, 15, 0.2) == Decimal(row["cost"])


def _spent(rig, target: str) -> Decimal:
    out = rig.cli("limit", "status", target, "--activity", f"sqlite://{rig.db}", "--json").json()
    return Decimal(out[0]["spent"])


def test_the_limits_of_the_answering_targets_source_are_charged_not_the_failed_ones(fresh):
    rig = fresh("cooldown_after = 1000")
    rig.cli("limit", "set", "source:bad", "--budget", "50", "--window", "day")
    rig.cli("limit", "set", "source:good", "--budget", "50", "--window", "day", "--rpm", "100")
    proc = rig.start()
    r = _chat(proc, rig.key, "503", {"status": 503})
    assert r.status_code == 200 and r.headers["x-gwctl-attempts"] == "2"
    cost = Decimal(rig.row(r.headers["x-gwctl-request-id"])["cost"])
    assert wait_until(lambda: _spent(rig, "source:good") == cost or None, 15, 0.2)
    assert _spent(rig, "source:bad") == 0


def test_a_fallback_whose_own_limit_refuses_is_passed_over(fresh):
    rig = fresh("cooldown_after = 1000")
    rig.cli("limit", "set", "source:good", "--budget", "0", "--window", "day")
    proc = rig.start()
    r = _chat(proc, rig.key, "503", {"status": 503})
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    assert r.headers["x-gwctl-attempts"] == "2"
    row = rig.row(r.headers["x-gwctl-request-id"])
    assert row["rule"] == "budget_exceeded" and row["route_kind"] == "rejected"
    assert [(a["target"], a["status"]) for a in _attempts(row)] == [("bad/status", 503), ("good/good-m", 429)]
    assert not [s for s in rig.good.received if s.path.endswith("/chat/completions")]
