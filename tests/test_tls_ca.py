"""TLS to upstreams: per-source CA files, SSL_CERT_FILE, and what a failed certificate check says.

A trustme CA signs the certificate of a small https upstream on 127.0.0.1
(an OpenAI-shaped /v1/models and /v1/chat/completions). Without the CA the
pool, ``gwctl source test`` and the proxy say the certificate is not trusted
and how to fix it; with the source's ``--ca-file`` they succeed.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import trustme
import uvloop

from gwctl.proxy.upstream import UpstreamConnectError, UpstreamPool
from proxyrun import ProxyProcess, wait_for

HOST = "127.0.0.1"
UP_KEY = "sk-tls-upstream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits += 1
        if self.path.endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "m-one", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "no such path"}})

    def do_POST(self) -> None:
        self.server.hits += 1
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        self._send(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": req.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "over TLS"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            },
        )


class TlsUpstream:
    """An https server on 127.0.0.1 (a thread) presenting ``cert``."""

    def __init__(self, cert: trustme.LeafCert):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self.server = ThreadingHTTPServer((HOST, 0), _Handler)
        self.server.daemon_threads = True
        self.server.hits = 0
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://{HOST}:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> int:
        return self.server.hits

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A private CA (its PEM file) and two certificates: one for 127.0.0.1, one for localhost only."""
    ca = trustme.CA()
    where = tmp_path_factory.mktemp("pki")
    ca_pem = where / "private-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    other = trustme.CA()
    other_pem = where / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_pem))
    return {
        "ca": str(ca_pem),
        "other": str(other_pem),
        "ip": ca.issue_cert(HOST),
        "localhost": ca.issue_cert("localhost"),
    }


@pytest.fixture(scope="module")
def upstream(pki):
    up = TlsUpstream(pki["ip"])
    yield up
    up.close()


@pytest.fixture(scope="module")
def mismatched(pki):
    up = TlsUpstream(pki["localhost"])
    yield up
    up.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def _run(fn, timeout: float = 20.0):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(fn(), timeout))

    return _run


async def _get(pool: UpstreamPool, url: str, **kw) -> tuple[int, bytes]:
    async with await pool.request("GET", url + "/models", [], b"", connect_timeout=5, read_timeout=5, **kw) as r:
        return r.status, await r.read()


# --------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------


def test_pool_says_an_unknown_ca_is_not_trusted_and_trusts_the_source_ca_file(run, pki, upstream):
    async def go():
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamConnectError) as info:
                await _get(pool, upstream.url)
            ok = [await _get(pool, upstream.url, ca_file=pki["ca"]) for _ in range(3)]
            opened_with_ca = pool.connections_opened
            # a connection verified with the CA file is never handed to a request without it
            with pytest.raises(UpstreamConnectError) as again:
                await _get(pool, upstream.url)
            return info.value, ok, opened_with_ca, again.value, dict(pool._ca_contexts)
        finally:
            await pool.close()

    err, ok, opened, again, contexts = run(go)
    assert err.kind == "connect"
    assert f"TLS certificate of {HOST} is not trusted" in err.message
    assert "--ca-file" in err.message and "SSL_CERT_FILE" in err.message
    assert [status for status, _ in ok] == [200, 200, 200]
    assert opened == 1  # the three requests with the CA file shared one connection
    assert "not trusted" in again.message
    assert list(contexts) == [pki["ca"]]  # one context per CA file, cached


def test_the_ca_file_adds_to_the_system_store():
    """trust = the default store (as OpenSSL loads it) plus the file's CA, not the file alone."""
    from gwctl.tls import trust_context

    ca = trustme.CA()
    with ca.cert_pem.tempfile() as path:
        assert trust_context(path).cert_store_stats()["x509_ca"] == trust_context().cert_store_stats()["x509_ca"] + 1


def test_pool_with_a_different_ca_file_is_still_refused(run, pki, upstream):
    async def go():
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamConnectError) as info:
                await _get(pool, upstream.url, ca_file=pki["other"])
            return info.value
        finally:
            await pool.close()

    err = run(go)
    assert "is not trusted" in err.message and pki["other"] in err.message


def test_pool_names_the_expected_host_and_the_certificate_names_on_a_mismatch(run, pki, mismatched):
    async def go():
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamConnectError) as info:
                await _get(pool, mismatched.url, ca_file=pki["ca"])
            return info.value
        finally:
            await pool.close()

    err = run(go)
    assert (
        f"TLS certificate for {HOST} does not match: certificate is for localhost (IP address mismatch)" in err.message
    )


def test_pool_reports_a_missing_ca_file(run, tmp_path, upstream):
    missing = str(tmp_path / "nope.pem")

    async def go():
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamConnectError) as info:
                await _get(pool, upstream.url, ca_file=missing)
            return info.value
        finally:
            await pool.close()

    err = run(go)
    assert f"cannot use the CA file {missing}" in err.message


def test_pool_picks_up_a_rewritten_ca_file(run, pki, upstream, tmp_path):
    path = tmp_path / "ca.pem"
    path.write_bytes(open(pki["other"], "rb").read())

    async def go():
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamConnectError):
                await _get(pool, upstream.url, ca_file=str(path))
            path.write_bytes(open(pki["ca"], "rb").read() + b"\n")  # renewed in place: new size and mtime
            return await _get(pool, upstream.url, ca_file=str(path))
        finally:
            await pool.close()

    assert run(go)[0] == 200


def test_ssl_cert_file_is_honoured_by_the_default_context(run, pki, upstream, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", pki["ca"])

    async def go():
        pool = UpstreamPool()
        try:
            return await _get(pool, upstream.url)
        finally:
            await pool.close()

    assert run(go)[0] == 200


def test_plain_http_ignores_the_ca_file(run, tmp_path):
    """A CA file only matters for https: an http URL with one pools with the rest."""
    from gwctl.proxy.upstream.target import _split_url

    target, _ = _split_url("http://127.0.0.1:9/v1", {})
    assert not target.tls  # the pool keys http connections by (scheme, host, port) alone


# --------------------------------------------------------------------------
# gwctl source add|edit|show|test|refresh, gwctl validate
# --------------------------------------------------------------------------


def test_source_ca_file_is_stored_absolute_shown_and_cleared(gw, pki, tmp_path, monkeypatch, store_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_bytes(open(pki["ca"], "rb").read())
    r = gw(
        "source",
        "add",
        "tls",
        "--base-url",
        "https://127.0.0.1:9/v1",
        "--auth-value",
        UP_KEY,
        "--ca-file",
        "~/pki/ca.pem",
    )
    assert r.code == 0, r.err
    stored = str(tmp_path / "pki" / "ca.pem")
    assert f'ca_file = "{stored}"' in store_path.read_text()
    assert gw("source", "show", "tls", "--json").json()["ca_file"] == stored
    show = gw("source", "show", "tls")
    assert "ca_file" in show.out and stored in show.out
    monkeypatch.chdir(tmp_path / "pki")
    assert gw("source", "edit", "tls", "--ca-file", "ca.pem").code == 0  # relative to the current directory
    assert gw("source", "show", "tls", "--json").json()["ca_file"] == stored
    assert gw("source", "edit", "tls", "--read-timeout", "5").code == 0  # other edits keep it
    assert gw("source", "show", "tls", "--json").json()["ca_file"] == stored
    assert gw("source", "edit", "tls", "--ca-file", "").code == 0
    assert gw("source", "show", "tls", "--json").json()["ca_file"] is None
    assert "ca_file" not in store_path.read_text()


def test_source_ca_file_must_exist_and_hold_a_certificate(gw, tmp_path):
    r = gw("source", "add", "tls", "--base-url", "https://127.0.0.1:9/v1", "--ca-file", str(tmp_path / "missing.pem"))
    assert r.code != 0 and "does not exist" in r.err
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    r = gw("source", "add", "tls", "--base-url", "https://127.0.0.1:9/v1", "--ca-file", str(junk))
    assert r.code != 0 and "no usable PEM certificate" in r.err
    assert "tls" not in gw("source", "list", "--json").out


def test_validate_reports_a_missing_ca_file_naming_the_source(gw, pki, tmp_path):
    path = tmp_path / "ca.pem"
    path.write_bytes(open(pki["ca"], "rb").read())
    assert (
        gw(
            "source",
            "add",
            "tls",
            "--base-url",
            "https://127.0.0.1:9/v1",
            "--auth-value",
            UP_KEY,
            "--ca-file",
            str(path),
        ).code
        == 0
    )
    assert gw("validate").code == 0
    path.unlink()
    r = gw("validate", "--json")
    assert r.code == 1
    (problem,) = [p for p in r.json()["problems"] if p["level"] == "error"]
    assert problem["where"] == "sources.tls.ca_file"
    assert "source tls" in problem["message"] and "does not exist" in problem["message"]
    assert "gwctl source edit tls --ca-file" in problem["hint"]


def test_source_test_and_refresh_use_the_ca_file(gw, pki, upstream):
    assert gw("source", "add", "tls", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    r = gw("source", "test", "tls", "--json")
    assert r.code == 1
    result = r.json()
    assert result["error"] == "tls"
    assert f"TLS certificate of {HOST} is not trusted" in result["message"]
    assert "gwctl source edit tls --ca-file PATH" in result["hint"] and "SSL_CERT_FILE" in result["hint"]
    assert gw("source", "refresh", "tls").code != 0
    assert gw("source", "edit", "tls", "--ca-file", pki["ca"]).code == 0
    r = gw("source", "test", "tls", "--json")
    assert r.code == 0 and r.json()["ok"], r.out
    assert gw("source", "refresh", "tls").code == 0
    assert gw("model", "list", "--json").json()[0]["ref"] == "tls/m-one"


def test_source_test_honours_ssl_cert_file(gw, pki, upstream, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", pki["ca"])
    assert gw("source", "add", "tls", "--base-url", upstream.url, "--auth-value", UP_KEY).code == 0
    r = gw("source", "test", "tls", "--json")
    assert r.code == 0, r.out


def test_source_test_names_the_host_on_a_mismatch(gw, pki, mismatched):
    assert (
        gw("source", "add", "tls", "--base-url", mismatched.url, "--auth-value", UP_KEY, "--ca-file", pki["ca"]).code
        == 0
    )
    r = gw("source", "test", "tls", "--json")
    assert r.code == 1
    result = r.json()
    assert result["error"] == "tls"
    assert result["message"] == (
        f"TLS certificate for {HOST} does not match: certificate is for localhost (IP address mismatch)"
    )
    assert "localhost" in result["hint"]


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


def test_proxy_uses_the_source_ca_file_and_answers_502_naming_the_trust_problem(
    gw, pki, upstream, tmp_path, monkeypatch
):
    assert (
        gw("source", "add", "tls", "--base-url", upstream.url, "--auth-value", UP_KEY, "--ca-file", pki["ca"]).code == 0
    )
    assert gw("source", "refresh", "tls").code == 0
    key = gw("key", "create", "tester", "--json").json()["key"]
    activity = f"sqlite://{tmp_path / 'activity.sqlite3'}"
    monkeypatch.setenv("GWCTL_ACTIVITY", activity)
    proc = ProxyProcess(tmp_path / "cfg" / "gwctl.toml", activity)
    try:

        def chat():
            return httpx.post(
                proc.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "tls/m-one", "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            )

        r = chat()
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "over TLS"
        assert gw("source", "edit", "tls", "--ca-file", "").code == 0

        def refused():
            got = chat()
            return got if got.status_code == 502 else None

        r = wait_for(refused, timeout=10)
        assert r is not None, "the proxy kept using the CA file after it was removed"
        message = r.json()["error"]["message"]
        assert f"TLS certificate of {HOST} is not trusted" in message
        assert "--ca-file" in message and "SSL_CERT_FILE" in message
        assert gw("source", "edit", "tls", "--ca-file", pki["ca"]).code == 0
        assert wait_for(lambda: chat().status_code == 200, timeout=10)
    finally:
        assert proc.terminate() == 0
