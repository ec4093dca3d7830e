"""A fast stand-in upstream that speaks the OpenAI and Anthropic wire formats.

The demo, the test suite and the benchmarks need a real HTTP upstream on
127.0.0.1 that answers like a provider would (same JSON and SSE shapes the
official SDKs parse), reports deterministic token usage so cost figures can be
asserted exactly, and records what it was sent so tests can check what the
proxy forwarded. It never calls anything else.

Endpoints, under ``config.prefix`` (default ``/v1``)::

    GET  /models              OpenAI list of config.models
    POST /chat/completions    chat.completion, or SSE chunks + [DONE]
    POST /completions         text_completion, or SSE chunks + [DONE]
    POST /embeddings          list of embeddings (float or base64)
    POST /responses           Responses object, or Responses SSE events
    POST /messages            Anthropic Message, or Anthropic SSE events

plus, outside the prefix, ``GET /_standin/received`` (the recorded requests
as JSON) and ``DELETE /_standin/received`` (clear them), for when the
stand-in runs as a subprocess. Those two are never recorded or authenticated.

A request using a feature named in ``config.refuse`` (streaming, stream
usage, tools, images, JSON output, ``/chat/completions``, ``/messages``) is refused the way a server
without it would, so a capability probe can be tested against each refusal.

The bodies and the deterministic usage it reports are built in
:mod:`gwctl.testing.responses`; :mod:`gwctl.testing.thread` runs a stand-in
in a background thread, :mod:`gwctl.testing.cli` as a process
(``python -m gwctl.testing``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from gwctl.testing.responses import (
    USAGE_KEYS,
    TokenCounts,
    answer,
    chat_tool_call,
    content_pieces,
    dumps,
    error_body,
    input_value,
    message_tool_use,
    prompt_tokens,
    usage_for,
)

__all__ = ["StandinConfig", "ReceivedRequest", "Standin", "run_standin", "new_event_loop"]

_MAX_BODY = 64 * 1024 * 1024
_CACHE_LIMIT = 4096
_CONTROL_PATH = "/_standin/received"


@dataclass
class StandinConfig:
    """How the stand-in behaves. Change it on a running server with
    :meth:`Standin.configure` / :meth:`StandinHandle.configure`."""

    models: list[str] = field(default_factory=lambda: ["standin-small", "standin-large"])
    api_key: str | None = None  # required credential, if set
    auth_header: str | None = None  # None: "Authorization: Bearer KEY"; else NAME: KEY (raw)
    prefix: str = "/v1"  # base path; "" and "/api/v1" work too
    stream_chunks: int = 3  # content pieces per answer (= output tokens)
    delay_ms: float = 0  # wait before answering (every endpoint)
    chunk_delay_ms: float = 0  # wait between SSE events (streams are then written one event at a time)
    usage: dict | None = None  # override of the neutral usage counts, see gwctl.testing.responses
    fail_status: int | None = None  # answer every request with this status + error JSON
    models_payload: Any = None  # override GET /models body: str/bytes sent raw, else JSON
    strict_models: bool = False  # unknown "model" in a POST -> 404 model_not_found
    record: bool = True  # keep every request in .received (turn off for benchmarks)
    # a chat request with tools is answered with a call of its first tool with these JSON arguments
    # (streamed in pieces), a non-streamed /messages request with a tool_use block; None: answered with text
    tool_arguments: str | None = None
    # what it does not support, so `gwctl source probe` can be tested against each refusal: a request using
    # one of these features is refused (see FEATURES; "stream_usage" is ignored instead, as real servers do,
    # and leaves the usage out of a /messages stream; "chat" and "messages" are the two endpoints, answered 404)
    refuse: frozenset[str] = frozenset()
    refuse_status: int | None = None  # the refusal's status; None: 404 for an endpoint, 400 for the rest
    slow: dict[str, float] | None = None  # feature -> ms to wait before answering a request using it
    # a chat or /messages prompt seen before reports cached tokens (all but 1 of its input tokens): "included"
    # in prompt_tokens / input_tokens (OpenAI's convention) or "excluded" from them (Anthropic's); None: never
    cached_prompt: str | None = None
    json_text: str | None = None  # the text answering a chat request for JSON output (response_format); None: words

    def __post_init__(self) -> None:
        p = (self.prefix or "").strip()
        p = p.rstrip("/")
        if p and not p.startswith("/"):
            p = "/" + p
        self.prefix = p
        if self.stream_chunks < 0:
            raise ValueError("stream_chunks must be >= 0")
        if self.usage is not None:
            unknown = set(self.usage) - USAGE_KEYS
            if unknown:
                raise ValueError(f"unknown usage keys {sorted(unknown)}; use {sorted(USAGE_KEYS)}")
        self.refuse = frozenset(self.refuse)
        for name in (*self.refuse, *(self.slow or {})):
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r}; use {sorted(FEATURES)}")
        if self.cached_prompt not in (None, "included", "excluded"):
            raise ValueError("cached_prompt must be None, 'included' or 'excluded'")


FEATURES = frozenset({"chat", "stream", "stream_usage", "tools", "images", "json", "messages"})
"""What ``StandinConfig.refuse`` and ``.slow`` name."""


def request_features(kind: str, body: dict) -> frozenset[str]:
    """The FEATURES a request uses."""
    found = set()
    if kind in ("chat", "messages"):
        found.add(kind)
    if body.get("stream") is True:
        found.add("stream")
        opts = body.get("stream_options")
        if kind == "messages" or isinstance(opts, dict) and opts.get("include_usage") is True:
            found.add("stream_usage")  # an Anthropic stream always carries usage
    if body.get("tools"):
        found.add("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        found.add("json")
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "image") for p in content
        ):
            found.add("images")
    return frozenset(found)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the stand-in saw it."""

    method: str
    path: str  # raw path including the query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: Any  # parsed JSON body, or None (empty / not JSON)
    raw: bytes  # the body bytes exactly as received

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "raw": self.raw.decode("utf-8", "replace"),
        }


_ROUTES = {
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
    "/responses": "responses",
    "/messages": "messages",
}

_JSON = "application/json"


class Standin:
    """The stand-in's request handler and its recorded requests.

    Create it, then ``await start(host, port)`` inside a running loop (or use
    :func:`run_standin` / :func:`start_standin`).
    """

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        self.received: list[ReceivedRequest] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.BaseRunner | None = None
        self._cache: dict[tuple, Any] = {}
        self._seen_prompts: set[bytes] = set()
        self._rebuild()

    # -- configuration -----------------------------------------------------
    def configure(self, **changes: Any) -> StandinConfig:
        """Replace config fields (e.g. ``fail_status=503``) on a live server."""
        self.config = dataclasses.replace(self.config, **changes)
        self._rebuild()
        return self.config

    def _rebuild(self) -> None:
        c = self.config
        self._cache = {}
        self._pieces = content_pieces(c)
        self._models = frozenset(c.models)
        routes = {c.prefix + p: kind for p, kind in _ROUTES.items()}
        self._post_routes = routes
        self._models_path = c.prefix + "/models"
        if c.models_payload is None:
            payload = {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "standin"} for m in c.models],
            }
            self._models_body = dumps(payload)
        elif isinstance(c.models_payload, bytes):
            self._models_body = c.models_payload
        elif isinstance(c.models_payload, str):
            self._models_body = c.models_payload.encode()
        else:
            self._models_body = dumps(c.models_payload)
        if c.api_key is None:
            self._auth: tuple[str, str] | None = None
        elif c.auth_header:
            self._auth = (c.auth_header.lower(), c.api_key)
        else:
            self._auth = ("authorization", f"Bearer {c.api_key}")

    # -- addresses -----------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + self.config.prefix

    def clear(self) -> None:
        """Forget the recorded requests (and the prompts seen, for cached_prompt)."""
        self.received.clear()
        self._seen_prompts.clear()

    # -- lifecycle -------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "Standin":
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.host, self.port = host, sock.getsockname()[1]
        server = web.Server(
            self.handle,
            request_factory=self._make_request,
            access_log=None,
        )
        self._server = server
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> "Standin":
        if self._runner is None:
            await self.start(self.host, self.port)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _make_request(self, message, payload, protocol, writer, task) -> BaseRequest:
        return BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=_MAX_BODY,
        )

    # -- request handling --------------------------------------------------------
    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        c = self.config
        path = request.path
        if path == _CONTROL_PATH:
            return self._control(request)
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        if c.record:
            headers: dict[str, str] = {}
            for k, v in request.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            self.received.append(ReceivedRequest(request.method, request.raw_path, headers, body, raw))
        if c.delay_ms:
            await asyncio.sleep(c.delay_ms / 1000)

        method = request.method
        kind = self._post_routes.get(path)
        anthropic = kind == "messages"
        if c.fail_status is not None:
            return self._error(c.fail_status, f"stand-in configured to fail with {c.fail_status}", anthropic)
        if self._auth is not None:
            name, expected = self._auth
            if request.headers.get(name) != expected:
                return self._error(401, "invalid or missing API key", anthropic, "invalid_api_key")
        if path == self._models_path:
            if method != "GET":
                return self._error(405, f"method {method} not allowed", False)
            return web.Response(body=self._models_body, content_type=_JSON)
        if kind is None:
            return self._error(404, f"no such endpoint: {path}", False, "unknown_url")
        if method != "POST":
            return self._error(405, f"method {method} not allowed", anthropic)
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object", anthropic, "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(400, "'model' is required", anthropic, "missing_model")
        if c.strict_models and model not in self._models:
            return self._error(404, f"The model '{model}' does not exist", anthropic, "model_not_found")
        if c.refuse or c.slow:
            used = request_features(kind, body)
            wait = max((c.slow or {}).get(f, 0) for f in used) if used else 0
            if wait:
                await asyncio.sleep(wait / 1000)
            refused = sorted(used & c.refuse - {"stream_usage"})
            if refused:
                status = c.refuse_status or (404 if {"chat", "messages"} & set(refused) else 400)
                return self._error(status, f"stand-in configured to refuse {', '.join(refused)}", anthropic)
            if "stream_usage" in c.refuse and "stream_usage" in used:
                body = {**body, "stream_options": None}
        return await self._answer(request, kind, model, body)

    async def _answer(self, request: BaseRequest, kind: str, model: str, body: dict) -> web.StreamResponse:
        stream = body.get("stream") is True and kind != "embeddings"
        include_usage = False
        if stream and kind in ("chat", "completions"):
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        elif stream and kind == "messages":  # refusing stream_usage leaves the usage out of an Anthropic stream
            include_usage = "stream_usage" not in self.config.refuse
        value = input_value(kind, body)
        extra: Any = None
        if kind == "embeddings":
            count = len(value) if isinstance(value, list) and value and not isinstance(value[0], int) else 1
            extra = (count, body.get("encoding_format") == "base64")
        u_in = prompt_tokens(value)
        key = (kind, model, u_in, stream, include_usage, extra)
        out: Any = self._cache.get(key)
        tools = body.get("tools")
        if kind == "chat" and self.config.json_text is not None and "json" in request_features(kind, body):
            u = usage_for(self.config, kind, body)
            out = answer(kind, model, u, [self.config.json_text], stream, include_usage, extra)
        elif kind == "chat" and self.config.tool_arguments is not None and isinstance(tools, list) and tools:
            name = str((tools[0].get("function") or {}).get("name", "tool"))
            u = usage_for(self.config, kind, body)
            out = chat_tool_call(model, name, self.config.tool_arguments, u, stream, include_usage)
        elif kind == "messages" and self.config.tool_arguments is not None and tools and not stream:
            name = str(tools[0].get("name", "tool")) if isinstance(tools, list) else "tool"
            u = usage_for(self.config, kind, body)
            out = message_tool_use(model, name, self.config.tool_arguments, u)
        elif kind in ("chat", "messages") and self.config.cached_prompt is not None:
            prompt = [body.get("system"), value] if kind == "messages" else value
            u = self._cached_usage(usage_for(self.config, kind, body), prompt, kind == "messages")
            out = answer(kind, model, u, self._pieces, stream, include_usage, extra)
        elif out is None:
            u = usage_for(self.config, kind, body)
            out = answer(kind, model, u, self._pieces, stream, include_usage, extra)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = out
        if not stream:
            return web.Response(body=out, content_type=_JSON)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        delay = self.config.chunk_delay_ms
        if delay:
            for i, event in enumerate(out):
                if i:
                    await asyncio.sleep(delay / 1000)
                await resp.write(event)
        else:
            await resp.write(b"".join(out))
        await resp.write_eof()
        return resp

    def _cached_usage(self, u: TokenCounts, prompt: Any, anthropic: bool = False) -> TokenCounts:
        """``u`` with the prompt's earlier sight reported as cached tokens (see StandinConfig.cached_prompt).

        An Anthropic prompt (its system blocks too) is counted whole; Anthropic's
        usage leaves the cached tokens out of input_tokens, so "included" there
        has to report them on top.
        """
        seen = dumps(prompt)
        if anthropic:
            u = dataclasses.replace(u, input_tokens=prompt_tokens(prompt))
        if seen not in self._seen_prompts:
            self._seen_prompts.add(seen)
            return u
        cached = max(0, u.input_tokens - 1)
        if anthropic and self.config.cached_prompt == "included":
            return dataclasses.replace(u, input_tokens=u.input_tokens + cached, cached_tokens=cached)
        if self.config.cached_prompt == "excluded" and not anthropic:
            return dataclasses.replace(u, input_tokens=u.input_tokens - cached, cached_tokens=cached)
        return dataclasses.replace(u, cached_tokens=cached)

    def _error(self, status: int, message: str, anthropic: bool, code: str | None = None) -> web.Response:
        return web.Response(status=status, body=error_body(status, message, anthropic, code), content_type=_JSON)

    def _control(self, request: BaseRequest) -> web.Response:
        if request.method == "DELETE":
            self.clear()
            return web.Response(body=b'{"cleared":true}', content_type=_JSON)
        return web.Response(body=dumps([r.to_json() for r in list(self.received)]), content_type=_JSON)


async def run_standin(config: StandinConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> Standin:
    """Start a stand-in in the running event loop and return it (serving).

    ``await standin.close()`` stops it; it is also an async context manager.
    """
    return await Standin(config).start(host, port)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
