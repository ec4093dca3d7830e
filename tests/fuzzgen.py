"""A seeded generator of odd requests for the fuzz suite (tests/test_fuzz_requests.py).

Each :class:`Case` is the raw bytes of one HTTP/1.1 request, on a connection
of its own (``Connection: close``), in one of three kinds:

``wellformed``
    HTTP the parser accepts, every part odd: JSON bodies of odd shapes and
    types for model / messages / stream / tools / max_tokens and the other
    fields the decision reads, nesting up to 64 levels, huge and tiny numbers,
    lone surrogates and NULs, invalid JSON, non-UTF-8 bytes, bodies over the
    proxy's limit; header sets with odd names (every token character), obs-text
    bytes (0x80-0xFF) in values, duplicates (keys, agents, content types),
    X-Gwctl-Agent values of every sort, hop-by-hop headers, chunked bodies,
    ``Expect: 100-continue``, odd paths, queries and methods.
``deep``
    JSON nested 100 to 5,000 levels, at the top or inside a field.
``malformed``
    what the HTTP layer itself must refuse: bytes that are not HTTP/1.1
    (non-token header names, control characters, bad request lines, broken
    framing), heads over 64 KiB, upgrades and CONNECT.

The same seed gives the same cases: a failure names its seed and number.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

POST_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"]
MODELS = ["fz/ok", "fz/ok", "assistant", "child", "pt/anything", "pt/ok", "fz/unlisted"]
TOKEN_ODD = "!#$%&'*+-.^_`|~"


@dataclass
class Case:
    n: int
    kind: str
    raw: bytes
    note: str

    def __repr__(self) -> str:
        return f"Case({self.n}, {self.kind}, {self.note})"


class Gen:
    def __init__(self, seed: int, key: str, host: str, body_limit: int):
        self.r = random.Random(seed)
        self.key = key
        self.host = host
        self.body_limit = body_limit

    # --- values -----------------------------------------------------------------

    def string(self) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.25:
            return r.choice(
                [
                    "",
                    " ",
                    "x",
                    "fz/ok",
                    "assistant",
                    "/",
                    "//",
                    "fz/",
                    "/ok",
                    "a/b/c/d",
                    "..",
                    "../../etc",
                    "%00",
                    "\r\n",
                    "\t",
                    "null",
                    "true",
                    "0",
                    "-1",
                    "1e400",
                    "NaN",
                ]
            )
        if pick < 0.45:
            return "".join(r.choice("aé漢🙂\u202e\u200b\u0000\x7f\\\"'<>{}[]/ \n") for _ in range(r.randint(1, 40)))
        if pick < 0.5:
            return r.choice("ab") * r.choice([1000, 5000, 20000])
        return "".join(r.choice("abcdefghij -_/") for _ in range(r.randint(0, 24)))

    def number(self):
        return self.r.choice(
            [
                0,
                -1,
                1,
                2,
                7,
                1000,
                4096,
                10**6,
                2**31,
                2**31 - 1,
                2**53 + 1,
                2**63 - 1,
                2**64 - 1,
                -(2**63),
                10**30,
                -(10**30),
                0.5,
                -0.0,
                1e-308,
                1e308,
                -1e308,
                3.14,
                1e-9,
                99999.999,
            ]
        )

    def value(self, depth: int = 0):
        r = self.r
        pick = r.random()
        if depth > 3 or pick < 0.2:
            return r.choice([None, True, False])
        if pick < 0.4:
            return self.number()
        if pick < 0.7:
            return self.string()
        if pick < 0.85:
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.string()[:30]: self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def nest(self, inner, levels: int):
        for i in range(levels):
            inner = [inner] if (i + self.r.randint(0, 1)) % 2 else {"k": inner}
        return inner

    def odd(self, good):
        """Usually a sensible value, sometimes anything."""
        return good if self.r.random() < 0.5 else self.value()

    # --- request fields -------------------------------------------------------------

    def part(self):
        r = self.r
        kind = r.choice(
            [
                "text",
                "image_url",
                "input_audio",
                "image",
                "tool_use",
                "tool_result",
                "input_text",
                "input_image",
                "document",
                "thinking",
                self.string(),
            ]
        )
        part = {"type": self.odd(kind)}
        if kind == "text" or r.random() < 0.3:
            part["text"] = self.odd(self.string())
        if kind == "image_url":
            part["image_url"] = self.odd({"url": self.odd("data:image/png;base64,AAAA")})
        if kind == "image":
            part["source"] = self.odd({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        if kind == "input_audio":
            part["input_audio"] = self.odd({"data": "AAAA", "format": "wav"})
        if r.random() < 0.2:
            part[self.string()[:20]] = self.value()
        return part if r.random() < 0.9 else self.value()

    def message(self):
        r = self.r
        msg = {
            "role": self.odd(r.choice(["user", "assistant", "system", "tool", "developer", "function"])),
            "content": r.choice([self.string(), [self.part() for _ in range(r.randint(0, 4))], self.value()]),
        }
        if r.random() < 0.15:
            msg["tool_calls"] = self.odd(
                [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": self.odd("{}")}}]
            )
        if r.random() < 0.1:
            msg["function_call"] = self.value()
        if r.random() < 0.1:
            del msg["content"]
        return msg if r.random() < 0.92 else self.value()

    def tools(self):
        r = self.r
        good = [
            {"type": "function", "function": {"name": self.odd("f"), "parameters": self.odd({"type": "object"})}}
            for _ in range(r.randint(0, 3))
        ]
        return self.odd(good)

    FIELDS = [
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "functions",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "response_format",
        "reasoning_effort",
        "reasoning",
        "thinking",
        "audio",
        "modalities",
        "temperature",
        "n",
        "input",
        "prompt",
        "system",
        "metadata",
        "user",
        "seed",
        "logprobs",
        "parallel_tool_calls",
        "text",
        "instructions",
        "encoding_format",
        "dimensions",
        "stop",
    ]

    def field(self, name: str):
        r = self.r
        if name == "stream":
            return r.choice([True, True, False, "true", 1, 0, None, [], {}, "yes"])
        if name == "stream_options":
            return self.odd({"include_usage": self.odd(r.choice([True, False]))})
        if name in ("tools", "functions"):
            return self.tools()
        if name.startswith("max_"):
            return r.choice([self.number(), self.number(), self.value()])
        if name == "response_format":
            return self.odd({"type": r.choice(["json_object", "json_schema", "text", self.string()])})
        if name == "reasoning":
            return self.odd({"effort": self.odd("high")})
        if name == "thinking":
            return self.odd({"type": "enabled", "budget_tokens": self.odd(1024)})
        if name == "audio":
            return self.odd({"voice": "alloy", "format": "wav"})
        if name == "modalities":
            return self.odd(["text", "audio"])
        if name in ("input", "prompt"):
            return r.choice(
                [
                    self.string(),
                    [self.string() for _ in range(r.randint(0, 3))],
                    [self.message() for _ in range(r.randint(0, 3))],
                    self.value(),
                ]
            )
        return self.value()

    def body_obj(self, max_depth: int = 64) -> dict:
        r = self.r
        body: dict = {}
        if r.random() < 0.9:
            body["model"] = r.choice(MODELS) if r.random() < 0.75 else self.value()
        if r.random() < 0.85:
            body["messages"] = self.odd([self.message() for _ in range(r.randint(0, 5))])
        for name in r.sample(self.FIELDS, r.randint(0, 6)):
            body[name] = self.field(name)
        for _ in range(r.choice([0, 0, 0, 1, 3])):
            body[self.string()[:30]] = self.value()
        if r.random() < 0.1:  # nested somewhere, up to max_depth levels
            where = r.choice(list(body) or ["extra"])
            body[where] = self.nest(body.get(where), r.randint(1, max_depth))
        if r.random() < 0.03:  # a big prompt (decided in a thread), rarely over the proxy's body limit
            body.setdefault("messages", [])
            if isinstance(body["messages"], list):
                size = r.choice([300_000, 600_000, self.body_limit + 1000])
                body["messages"].append({"role": "user", "content": "lorem ipsum " * (size // 12)})
        return body

    def body_bytes(self) -> tuple[bytes, str]:
        r = self.r
        pick = r.random()
        if pick < 0.8:
            obj = self.body_obj()
            return json.dumps(obj, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass"), "json"
        if pick < 0.85:
            return r.choice(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b'"s"',
                    b"42",
                    b"[{}]",
                    b"{}",
                    b"\xef\xbb\xbf{}",
                    b'{"model": NaN}',
                    b'{"model": 1e400}',
                    b'{"a": "\\ud800"}',
                    b"{,}",
                    b'{"model": "fz/ok"',
                    b'{"model":"fz/ok"}garbage',
                    b'{"model":"fz/ok"}\n\n',
                ]
            ), "odd-json"
        if pick < 0.9:  # not UTF-8
            obj = json.dumps(self.body_obj()).encode()
            i = r.randint(0, len(obj))
            return obj[:i] + bytes(r.randint(0x80, 0xFF) for _ in range(r.randint(1, 8))) + obj[i:], "non-utf8"
        if pick < 0.95:  # Latin-1 text inside JSON strings
            return json.dumps(
                {"model": "fz/ok", "messages": [{"role": "user", "content": "café"}]}, ensure_ascii=False
            ).encode("latin-1"), "latin-1"
        return bytes(r.randint(0, 255) for _ in range(r.randint(1, 200))), "random-bytes"

    # --- headers ----------------------------------------------------------------------

    def agent(self) -> bytes:
        return self.r.choice(
            [
                b"triage",
                b"triage/sub",
                b"",
                b" ",
                b"/",
                b"//",
                b"triage/",
                b"/triage",
                b"a/../b",
                b"..",
                b"a" * 5000,
                b"\xe9t\xe9",
                "\u00e9t\u00e9".encode(),
                "漢字/🙂".encode(),
                b"triage\t/sub",
                b"tri age",
                b"triage/sub/x/y/z",
                b"TRIAGE",
                b"%2e%2e",
                b"null",
                bytes(range(0x80, 0x100)),
                b"x" * 60000,
            ]
        )

    def auth(self) -> list[tuple[bytes, bytes]]:
        r = self.r
        k = self.key.encode()
        pick = r.random()
        if pick < 0.75:
            return [(r.choice([b"Authorization", b"authorization", b"AUTHORIZATION"]), b"Bearer " + k)]
        if pick < 0.85:
            return [(b"x-api-key", k)]
        if pick < 0.9:
            return [(b"Authorization", b"Bearer " + k), (b"x-api-key", k)]
        if pick < 0.95:
            return [(b"Authorization", b"Bearer " + k), (b"Authorization", b"Bearer " + k)]
        return [
            (b"Authorization", r.choice([b"Bearer", b"Bearer ", b"Basic " + k, b"bearer " + k, b"Bearer \xff" + k]))
        ]

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        r = self.r
        out = []
        for _ in range(r.choice([0, 0, 1, 2, 5, 20])):
            name = r.choice(
                [
                    b"X-Odd" + TOKEN_ODD.encode(),
                    b"x-UPPER-lower",
                    b"X-Empty",
                    b"X-" + b"n" * 200,
                    b"Accept-Encoding",
                    b"TE",
                    b"Trailer",
                    b"Keep-Alive",
                    b"Proxy-Connection",
                    b"Upgrade",
                    b"Cookie",
                    b"Proxy-Authorization",
                    b"Host",
                    b"Content-Type",
                    b"X-Gwctl-Request-Id",
                    b"anthropic-version",
                    b"OpenAI-Beta",
                    b"X-Forwarded-For",
                    b"Via",
                    b"Date",
                    b"Server",
                    b"Connection",
                    b"".join(r.choice(TOKEN_ODD).encode() for _ in range(3)),
                ]
            )
            value = r.choice(
                [
                    b"",
                    b"1",
                    b"gzip, br",
                    b"trailers",
                    b"timeout=5",
                    b"h2c",
                    b"a=b",
                    b"application/json",
                    b"text/plain; charset=latin-1",
                    bytes(range(0x80, 0x100)),
                    b"\xe9",
                    b"v" * 8000,
                    b"close",
                    b"keep-alive",
                    b"2023-06-01",
                    b"assistants=v2",
                    b"a\tb",
                    b"  padded  ",
                ]
            )
            if name == b"Connection" and value not in (b"close", b"keep-alive"):
                value = b"keep-alive"
            if name == b"Upgrade":
                value = b"h2c"  # without Connection: upgrade it is only a header
            out.append((name, value))
        return out

    # --- whole requests -----------------------------------------------------------------

    def _head(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        return (
            method + b" " + target + b" HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        )

    def wellformed(self, n: int) -> Case:
        r = self.r
        body, what = self.body_bytes()
        path = (
            r.choice(POST_PATHS)
            if r.random() < 0.9
            else r.choice(
                [
                    "/v1/chat/completions/",
                    "/v1//chat/completions",
                    "/V1/chat/completions",
                    "/v1/models/x",
                    "/",
                    "/v1/nothing",
                    "/%2e%2e/v1/chat/completions",
                    "/v1/chat%2Fcompletions",
                    "/v1/messages;x",
                ]
            )
        )
        if r.random() < 0.1:
            path += r.choice(["?", "?a=1&b=%00", "?stream=true", "?" + "q" * 2000, "?x=%C3%A9&y=%FF", "?a=b=c&&"])
        method = b"POST" if r.random() < 0.93 else r.choice([b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])
        headers = [(b"Host", self.host.encode())]
        if r.random() < 0.9:
            headers.append(
                (
                    b"Content-Type",
                    r.choice(
                        [
                            b"application/json",
                            b"application/json; charset=utf-8",
                            b"text/plain",
                            b"",
                            b"application/x-www-form-urlencoded",
                        ]
                    ),
                )
            )
        if r.random() < 0.05:
            headers.append((b"Content-Type", b"application/xml"))
        headers += self.auth()
        for _ in range(r.choice([0, 1, 1, 1, 2])):
            headers.append((r.choice([b"X-Gwctl-Agent", b"x-gwctl-agent"]), self.agent()))
        headers += self.extra_headers()
        if r.random() < 0.05:
            headers.append((b"Expect", b"100-continue"))
        size_left = 60 * 1024 - sum(len(k) + len(v) + 4 for k, v in headers)
        if size_left < 0:  # keep the head under 64 KiB: that limit is the malformed kind's
            headers = [h for h in headers if len(h[1]) < 1000]
        chunked = r.random() < 0.08
        if chunked:
            pieces, i = [], 0
            while i < len(body):
                step = r.randint(1, 5000)
                pieces.append(b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step]))
                i += step
            payload = b"".join(pieces) + b"0\r\n\r\n"
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            payload = body
            headers.append((b"Content-Length", str(len(body)).encode()))
        headers.append((b"Connection", b"close"))
        if r.random() < 0.3:
            r.shuffle(headers)
        return Case(
            n,
            "wellformed",
            self._head(method, path.encode("latin-1"), headers) + payload,
            f"{method.decode()} {path[:60]} {what} {len(body)}B{' chunked' if chunked else ''}",
        )

    def nest_text(self, inner: str, levels: int) -> str:
        """``inner`` (JSON text) inside ``levels`` arrays and objects, as text (too deep for json.dumps)."""
        opens, closes = [], []
        for _ in range(levels):
            if self.r.random() < 0.5:
                opens.append("[")
                closes.append("]")
            else:
                opens.append('{"k":')
                closes.append("}")
        return "".join(opens) + inner + "".join(reversed(closes))

    def deep(self, n: int) -> Case:
        r = self.r
        levels = r.choice([100, 200, 256, 300, 500, 1000, 1023, 1024, 1025, 2000, 5000])
        inner = r.choice(['"hi"', "1", "null", '{"type":"text","text":"x"}'])
        obj = self.nest_text(inner, levels)
        where = r.choice(["top", "messages", "content", "tools", "model", "max_tokens", "metadata", "input"])
        if where == "top":
            body = obj
        elif where == "messages":
            body = '{"model":"fz/ok","messages":%s}' % obj
        elif where == "content":
            body = '{"model":"fz/ok","messages":[{"role":"user","content":%s}]}' % obj
        else:
            body = '{"model":"fz/ok","messages":[{"role":"user","content":"x"}],"%s":%s}' % (where, obj)
        body = body.encode()
        headers = [
            (b"Host", self.host.encode()),
            (b"Content-Type", b"application/json"),
            (b"Authorization", b"Bearer " + self.key.encode()),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]
        path = r.choice(POST_PATHS).encode()
        return Case(n, "deep", self._head(b"POST", path, headers) + body, f"{levels} levels in {where} {path.decode()}")

    def malformed(self, n: int) -> Case:
        r = self.r
        key = self.key.encode()
        host = self.host.encode()
        body = b'{"model": "fz/ok", "messages": []}'
        good = [(b"Host", host), (b"Authorization", b"Bearer " + key), (b"Content-Type", b"application/json")]
        cl = (b"Content-Length", str(len(body)).encode())
        variants = {
            "non-ASCII header name": self._head(b"POST", b"/v1/chat/completions", good + [(b"X-\xe9t\xe9", b"1"), cl])
            + body,
            "space in header name": self._head(b"POST", b"/v1/chat/completions", good + [(b"X Bad", b"1"), cl]) + body,
            "header without colon": b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nNoColon\r\n"
            + b"Authorization: Bearer "
            + key
            + b"\r\n\r\n",
            "control byte in value": self._head(
                b"POST", b"/v1/chat/completions", good + [(b"X-Gwctl-Agent", b"a\x01b"), cl]
            )
            + body,
            "NUL in value": self._head(b"POST", b"/v1/chat/completions", good + [(b"X-A", b"a\x00b"), cl]) + body,
            "NUL in path": self._head(b"POST", b"/v1/chat\x00/completions", good + [cl]) + body,
            "space in path": self._head(b"POST", b"/v1/chat completions", good + [cl]) + body,
            "non-ASCII in query": self._head(b"POST", "/v1/chat/completions?x=é".encode(), good + [cl]) + body,
            "bad version": b"POST /v1/chat/completions HTTP/9.9\r\nHost: h\r\n\r\n",
            "bad method": self._head(b"P@ST", b"/v1/chat/completions", good + [cl]) + body,
            "no version": b"POST /v1/chat/completions\r\nHost: h\r\n\r\n",
            "bad content-length": self._head(b"POST", b"/v1/chat/completions", good + [(b"Content-Length", b"abc")])
            + body,
            "negative content-length": self._head(b"POST", b"/v1/chat/completions", good + [(b"Content-Length", b"-1")])
            + body,
            "two content-lengths": self._head(b"POST", b"/v1/chat/completions", good + [cl, (b"Content-Length", b"3")])
            + body,
            "content-length and chunked": self._head(
                b"POST", b"/v1/chat/completions", good + [cl, (b"Transfer-Encoding", b"chunked")]
            )
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
            "bad chunk size": self._head(b"POST", b"/v1/chat/completions", good + [(b"Transfer-Encoding", b"chunked")])
            + b"zz\r\n"
            + body
            + b"\r\n0\r\n\r\n",
            "head over 64 KiB": self._head(
                b"POST", b"/v1/chat/completions", good + [(b"X-Big-%d" % i, b"v" * 8000) for i in range(10)] + [cl]
            )
            + body,
            "websocket upgrade": self._head(
                b"GET", b"/v1/chat/completions", good + [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
            ),
            "h2c upgrade": self._head(
                b"POST",
                b"/v1/chat/completions",
                good
                + [
                    (b"Connection", b"Upgrade, HTTP2-Settings"),
                    (b"Upgrade", b"h2c"),
                    (b"HTTP2-Settings", b"AAMAAABkAAQAAP__"),
                    cl,
                ],
            )
            + body,
            "CONNECT": b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
            "folded header": b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n"
            + b"Authorization: Bearer "
            + key
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body,
            "bare LF": b"POST /v1/chat/completions HTTP/1.1\nHost: h\nAuthorization: Bearer "
            + key
            + b"\nContent-Length: %d\n\n" % len(body)
            + body,
            "garbage": bytes(r.randint(0, 255) for _ in range(r.randint(10, 300))) + b"\r\n\r\n",
        }
        name = r.choice(sorted(variants))
        return Case(n, "malformed", variants[name], name)

    def cases(self, count: int, kind: str) -> list[Case]:
        make = {"wellformed": self.wellformed, "deep": self.deep, "malformed": self.malformed}[kind]
        return [make(i) for i in range(count)]
