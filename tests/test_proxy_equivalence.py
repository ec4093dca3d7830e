"""What `gwctl route dry-run` prints is what `gwctl proxy` does, on many generated requests.

Two stand-in upstreams (one under /v1, one under /api/v1) record what they
receive; for each generated request the dry-run's JSON is compared with the
proxy's answer and with what the chosen upstream actually observed.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from gwctl.testing.thread import StandinConfig, start_standin
from proxyrun import ProxyProcess

SECRETS = {"s1": "sk-one-1111", "s2": "sk-two-2222", "s3": "sk-three-3333"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("equiv")
    store = d / "gwctl.toml"
    old = os.environ.get("GWCTL_STORE")
    os.environ["GWCTL_STORE"] = str(store)
    a = start_standin(StandinConfig(models=["m1", "m2"], prefix="/v1"))
    b = start_standin(StandinConfig(models=["m1", "m2"], prefix="/api/v1"))
    gw = run_cli
    assert (
        gw("source", "add", "s1", "--base-url", a.url, "--auth-value", SECRETS["s1"], "--header", "X-Src: s1").code == 0
    )
    assert (
        gw(
            "source",
            "add",
            "s2",
            "--base-url",
            a.base,
            "--auth-header",
            "X-Key",
            "--auth-value",
            SECRETS["s2"],
            "--passthrough",
            "--header",
            "X-Src: s2",
        ).code
        == 0
    )
    assert (
        gw(
            "source",
            "add",
            "s3",
            "--base-url",
            b.url,
            "--auth-value",
            SECRETS["s3"],
            "--catalog-only",
            "--header",
            "X-Src: s3",
        ).code
        == 0
    )
    for args in (
        ["triage", "--model-name", "alias", "--provider", "s1", "--model", "m1"],
        ["triage", "--model-name", "direct", "--provider", "s2"],
        ["ops", "--model-name", "elsewhere", "--provider", "s1", "--base-url", b.url, "--passthrough"],
        ["triage/summarizer", "--model-name", "alias", "--provider", "s2", "--model", "m2"],
        ["triage/classifier", "--model-name", "alias", "--provider", "s3", "--model", "m1"],
        ["triage/classifier", "--model-name", "strict", "--provider", "s3", "--model", "unpriced"],
    ):
        assert gw("route", "set", *args).code == 0
    assert (
        gw(
            "catalog",
            "set",
            "s1/m1",
            "--price",
            "input=1e-6",
            "--price",
            "output=2e-6",
            "--max-output",
            "500",
            "--capability",
            "tools=false",
        ).code
        == 0
    )
    assert (
        gw(
            "catalog", "set", "s3/m1", "--price", "input=1e-6", "--max-output", "300", "--capability", "streaming=false"
        ).code
        == 0
    )
    assert gw("catalog", "set", "s2/m2", "--max-output", "10").code == 0  # passthrough ignores it
    assert gw("route", "fallback", "s1").code == 0
    key = gw("key", "create", "eq", "--json").json()["key"]
    proc = ProxyProcess(store, f"sqlite://{d / 'a.db'}")
    yield {"a": a, "b": b, "proxy": proc, "key": key, "store": store}
    proc.terminate()
    a.stop()
    b.stop()
    if old is None:
        os.environ.pop("GWCTL_STORE", None)
    else:
        os.environ["GWCTL_STORE"] = old


requests_ = st.fixed_dictionaries(
    {
        "agent": st.sampled_from([None, "triage", "ops", "triage/summarizer", "triage/classifier", "triage/other"]),
        "path": st.sampled_from(
            ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions", "/v1/embeddings"]
        ),
        "model": st.sampled_from(
            [
                "alias",
                "direct",
                "elsewhere",
                "strict",
                "s1/m1",
                "s2/m2",
                "s3/m1",
                "s3/zz",
                "s1/qwen/q",
                "gpt-4o",
                "other/x",
            ]
        ),
        "max_tokens": st.one_of(st.none(), st.sampled_from([5, 50, 400, 1000])),
        "tools": st.booleans(),
        "stream": st.booleans(),
    }
)


def _body(r):
    path = r["path"]
    b: dict = {"model": r["model"]}
    if path == "/v1/responses":
        b["input"] = "hello"
        if r["max_tokens"] is not None:
            b["max_output_tokens"] = r["max_tokens"]
    elif path == "/v1/embeddings":
        b["input"] = "hello"
    elif path == "/v1/completions":
        b["prompt"] = "hello"
        if r["max_tokens"] is not None:
            b["max_tokens"] = r["max_tokens"]
    else:
        b["messages"] = [{"role": "user", "content": "hello"}]
        if r["max_tokens"] is not None:
            b["max_tokens"] = r["max_tokens"]
    if r["tools"] and path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        b["tools"] = (
            [{"type": "function", "function": {"name": "f", "parameters": {}}}]
            if path != "/v1/messages"
            else [{"name": "f", "input_schema": {"type": "object"}}]
        )
    if r["stream"] and path != "/v1/embeddings":
        b["stream"] = True
    return b


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(requests_)
def test_dry_run_equals_proxy(world, req):
    import os

    os.environ["GWCTL_STORE"] = str(world["store"])
    body = _body(req)
    args = ["route", "dry-run", "--json", "--request", "-", "--path", req["path"]]
    if req["agent"]:
        args += ["--agent", req["agent"]]
    dr = run_cli(*args, input=json.dumps(body))
    plan = dr.json()
    assert dr.code == (0 if plan["forwarded"] else 1)
    for s in (world["a"], world["b"]):
        s.clear()
    headers = {"Authorization": f"Bearer {world['key']}"}
    if req["agent"]:
        headers["X-Gwctl-Agent"] = req["agent"]
    resp = httpx.post(world["proxy"].url + req["path"], json=body, headers=headers, timeout=20)
    received = world["a"].received + world["b"].received
    if not plan["forwarded"]:
        assert resp.status_code == plan["status"]
        assert resp.json()["error"]["code"] == plan["rule"]
        assert received == []  # a rejection never reaches an upstream
        return
    assert resp.status_code == 200, resp.text
    assert len(received) == 1
    seen = received[0]
    url = urlsplit(plan["upstream_url"])
    assert seen.path == url.path
    upstream = world["a"] if f":{url.port}" in world["a"].base else world["b"]
    assert seen in upstream.received
    assert seen.body["model"] == plan["upstream_model"]
    cred = plan["credentials"]
    secret = SECRETS[plan["source"]]
    assert cred["value"].endswith(secret[-4:]) and secret not in json.dumps(plan)
    expected = f"Bearer {secret}" if cred["scheme"] == "Bearer" else secret
    assert seen.headers[cred["header"].lower()] == expected
    for k, v in plan["static_headers"].items():
        assert seen.headers[k.lower()] == v
    assert world["key"] not in json.dumps(seen.headers)
