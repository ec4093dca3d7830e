"""Differential tests: gwctl's upstream client against h11, on the same response bytes.

Hypothesis draws a response *plan* (interim answers, status line, headers,
framing, body, chunking, trailers, anomalies, bytes after the answer), renders
it to the exact bytes a loopback asyncio server writes -- cut at random
points, with small pauses -- to :meth:`UpstreamPool.request`, and feeds the
same bytes to ``h11.Connection(h11.CLIENT)``. The verdicts must agree, or
gwctl must be the stricter one:

* gwctl refuses (an :class:`UpstreamProtocolError`, at the head or while
  reading the body): always allowed, except for a *clean* plan (a
  well-formed, ordinary answer), which gwctl must accept.
* gwctl accepts: h11 must accept too, with the same status, headers and
  body; and gwctl may pool the connection only when h11 would go on to the
  next request on it (no byte left over, no close needed).

Where the two disagree and gwctl is *not* the stricter, the difference is one
of these, each documented where :func:`_compare` allows it:

E1 ``pad``: a chunk size written with more than 20 hex digits (zero padding).
   h11's chunk-size pattern stops at 20 digits, an implementation cap;
   RFC 9112 section 7.1 allows any number (``chunk-size = 1*HEXDIG``), and
   llhttp reads the value with an overflow check (tests below). The value is
   the same, so is the body: gwctl must give exactly what h11 gives for the
   same stream with the padding removed.
E2 ``bigext``: a chunk extension longer than h11's line buffer. h11 buffers
   the whole chunk-size line and so caps it; llhttp passes over extensions
   without buffering them (no memory grows) and gwctl ignores them, as RFC
   9112 section 7.1.1 lets a recipient. The body must equal h11's for the
   stream without the extension.
E3 ``blank``: empty lines between an interim (1xx) answer and the next one.
   llhttp skips CR and LF octets between messages (and only those: any other
   octet starts a message, parsed strictly), h11 refuses them. An empty line
   carries no status, header or body octet, so the answer must equal h11's
   for the stream without them. (Empty lines *before* the first answer, or
   *after* the final one, are refused / make the connection unusable: those
   are what a desynchronised connection looks like.)
E4 ``http10``: an HTTP/1.0 answer with ``Connection: keep-alive`` and an
   explicit length. h11 never reuses an HTTP/1.0 connection; gwctl (llhttp)
   does, as RFC 9112 section 9.3 and RFC 2068 section 19.7.1 allow. The
   answer's end is explicit, so the next answer starts in sync.
E5 trailing whitespace of a header value: llhttp keeps it, h11 strips it
   (RFC 9110 section 5.5: it is not part of the value). Values are compared
   with trailing spaces and tabs removed.

Trailer fields are not compared: gwctl drops them (it has no way to relay
them), but must refuse the answer where h11 does.

The default run is bounded (max_examples below); ``pytest -m long`` runs
the long variant with many more examples.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import h11
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _hypothesis_event
from hypothesis import note as _hypothesis_note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from gwctl.proxy.upstream import UpstreamError, UpstreamPool, UpstreamProtocolError

HOST = "127.0.0.1"
HEAD_LIMIT = 64 * 1024  # gwctl's cap on a response head (and on trailers); h11 is given the same
HOLD = 0.12  # seconds the server keeps a connection open after its last byte, when h11 needs the close
PATIENCE = 3.0  # ... and when h11 does not (the client closes it first, unless it disagrees)
BIG, SMALL = 100_000, 12_000  # "huge" field sizes: well above and well below HEAD_LIMIT, never near it


def note(text: str) -> None:
    """hypothesis's note, also callable from the example-based tests below (where it does nothing)."""
    try:
        _hypothesis_note(text)
    except InvalidArgument:
        pass


def event(text: str) -> None:
    try:
        _hypothesis_event(text)
    except InvalidArgument:
        pass


# --------------------------------------------------------------------------
# Plans and their bytes
# --------------------------------------------------------------------------


def _short(v) -> str:
    """repr with long bytes shortened, so a falsifying example stays readable."""
    if isinstance(v, (bytes, bytearray)) and len(v) > 80:
        return f"{bytes(v[:40])!r}...({len(v)} bytes)"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return repr(v)


@dataclass
class Chunk:
    data: bytes
    pad: int = 0  # leading zeros on the size
    upper: bool = False
    ext: bytes = b""
    end: bytes = b"\r\n"  # what follows the data

    def __repr__(self) -> str:
        return "Chunk(" + ", ".join(f"{k}={_short(v)}" for k, v in vars(self).items()) + ")"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints falsifying examples with this
        printer.text(repr(self))


@dataclass
class Plan:
    method: str = "GET"
    leading: bytes = b""
    interims: list = field(default_factory=list)  # (status bytes, headers, blank lines after)
    version: bytes = b"HTTP/1.1"
    status: bytes = b"200"
    reason: bytes | None = b"OK"
    headers: list = field(default_factory=list)  # (name, value) pairs, in order
    body: bytes = b""
    send_body: bool = True  # body bytes on the wire (False for HEAD/204/304 when clean)
    chunked: bool = False
    chunks: list = field(default_factory=list)
    last: Chunk = field(default_factory=lambda: Chunk(b""))
    trailers: list = field(default_factory=list)
    fold_at: int = -1  # index of a header continued with obs-fold
    lf_at: int = -1  # index of a line (0 = status line) ended by a bare LF
    extra: bytes = b""  # bytes after the answer
    close_after: bool = False  # the server closes right after its last byte
    clean: bool = True
    exempt: set = field(default_factory=set)
    mutate: tuple | None = None  # (position, byte) replaced in the rendered stream
    features: list = field(default_factory=list)  # what is unusual about it, for the statistics

    def __repr__(self) -> str:
        return "Plan(" + ", ".join(f"{k}={_short(v)}" for k, v in vars(self).items()) + ")"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def render(p: Plan, normal: bool = False) -> tuple[bytes, int]:
    """The answer's bytes and where the final answer ends; ``normal`` removes what E1-E3 allow."""
    out = bytearray(p.leading)
    for status, headers, blank in p.interims:
        out += b"HTTP/1.1 " + status + b" Info\r\n"
        for k, v in headers:
            out += k + b": " + v + b"\r\n"
        out += b"\r\n"
        if not normal:
            out += blank
    line_no = 0

    def eol() -> bytes:
        nonlocal line_no
        line_no += 1
        return b"\n" if line_no - 1 == p.lf_at else b"\r\n"

    out += p.version + b" " + p.status + (b"" if p.reason is None else b" " + p.reason) + eol()
    for i, (k, v) in enumerate(p.headers):
        out += k + b": " + v
        if i == p.fold_at:
            out += b"\r\n folded"
        out += eol()
    out += eol()
    if p.send_body:
        if p.chunked:
            for c in p.chunks + [p.last]:
                size = (b"%X" if c.upper else b"%x") % len(c.data)
                pad = c.pad
                if normal and pad + len(size) > 20:
                    pad = 0
                ext = b"" if normal and len(c.ext) > 1000 else c.ext
                out += b"0" * pad + size + ext + b"\r\n"
                if c is not p.last:
                    out += c.data + c.end
            for k, v in p.trailers:
                out += k + b": " + v + b"\r\n"
            out += b"\r\n"
        else:
            out += p.body
    end = len(out)
    out += p.extra
    if p.mutate is not None:
        pos, byte = p.mutate
        pos %= len(out)
        out[pos] = byte
    return bytes(out), end


NAMES = [b"Content-Type", b"X-Request-Id", b"Server", b"Date", b"x-ratelimit-remaining-tokens", b"Set-Cookie", b"Link"]
ODD_NAMES = [b"X Bad", b"", b"X-\x01", b"Caf\xe9", b"X-A\t", b"X:Y", b"(x)"]
VALUES = st.one_of(
    st.binary(max_size=20).map(lambda b: b"v" + bytes(c for c in b if 0x21 <= c <= 0x7E)),
    st.sampled_from([b"application/json", b"text/event-stream", b"a b", b"", b"sk=1; Path=/", b"x\x80\xff"]),
)
ODD_VALUES = [b"a\x01b", b"a\x7fb", b"a\x00b", b"trailing  ", b"tab\t", b"  lead", b"a\rb", b"caf\xe9"]
FRAMINGS = [
    "cl",
    "cl",
    "cl",
    "chunked",
    "chunked",
    "chunked",
    "none",
    "cl_zero",
    "cl_short",
    "cl_long",
    "cl_dup_same",
    "cl_dup_diff",
    "cl_te",
    "cl_bad",
    "cl_ws",
    "te_gzip",
    "te_gzip_chunked",
    "te_chunked_gzip",
    "te_dup",
    "te_case",
    "te_identity",
]
EXTRAS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"garbage",
    b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nab",
]


@st.composite
def plans(draw) -> Plan:
    p = Plan()
    odd = lambda n: draw(st.integers(0, n - 1)) == n - 1  # noqa: E731  (about once in n; shrinks to "no")

    def dirty(name: str) -> None:
        p.clean = False
        p.features.append(name)

    p.method = draw(st.sampled_from(["GET", "POST", "POST", "HEAD"]))
    if odd(25):
        p.leading = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n"]))
        dirty("leading blank line")
    for _ in range(draw(st.integers(0, 2)) if odd(4) else 0):
        status = draw(st.sampled_from([b"100", b"102", b"103", b"103", b"101", b"199"]))
        headers = [(b"Link", b"</a.css>; rel=preload")] if draw(st.booleans()) else []
        if status in (b"101", b"199"):
            dirty(f"interim {status.decode()}")
        if odd(8):
            headers.append((b"Transfer-Encoding", b"gzip"))
            dirty("interim with Transfer-Encoding")
        blank = b""
        if odd(8):
            blank = draw(st.sampled_from([b"\r\n", b"\n"]))
            p.exempt.add("blank")
            dirty("blank line after interim")
        p.interims.append((status, headers, blank))

    if odd(12):
        p.version = draw(
            st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/0.9", b"HTTP/1.1 "])
        )
        if p.version != b"HTTP/1.0":
            dirty(f"version {p.version!r}")
    if odd(6):
        p.status = draw(
            st.sampled_from([b"201", b"204", b"304", b"404", b"500", b"099", b"600", b"999", b"20", b"2000", b"abc"])
        )
        if p.status not in (b"201", b"204", b"304", b"404", b"500"):
            dirty(f"status {p.status!r}")
    if odd(8):
        p.reason = draw(
            st.sampled_from([None, b"", b"Not Found", b"O\x01K", b"O\x00K", b"O\x7fK", b"O\tK", b"caf\xe9", b"O\x0bK"])
        )
        if p.reason not in (None, b"", b"Not Found", b"caf\xe9"):
            dirty(f"reason {p.reason!r}")

    headers = []
    for _ in range(draw(st.integers(0, 4))):
        headers.append((draw(st.sampled_from(NAMES)), draw(VALUES)))
    if odd(12):
        headers.append((draw(st.sampled_from(ODD_NAMES)), b"1"))
        dirty("odd header name")
    if odd(10):
        headers.append((b"X-Odd", draw(st.sampled_from(ODD_VALUES))))
        if headers[-1][1] not in (b"trailing  ", b"tab\t", b"  lead", b"caf\xe9"):
            dirty("odd header value")
    if odd(12):
        size = draw(st.sampled_from([SMALL, BIG]))
        for _ in range(draw(st.integers(1, 2))):
            headers.append((b"X-Huge", b"h" * size))
        if size == BIG:
            dirty("huge header")
    connection = draw(
        st.sampled_from([None, None, None, b"close", b"keep-alive", b"Keep-Alive, close", b"upgrade", b"foo"])
    )
    if connection is not None:
        headers.append((b"Connection", connection))
        if connection == b"upgrade":
            headers.append((b"Upgrade", b"websocket"))

    body = draw(
        st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: b + b"\r\n"), st.just(b"z" * 70_000))
    )
    if p.method == "HEAD" or p.status in (b"204", b"304"):
        p.send_body = False
        if odd(4):
            p.send_body = True  # a body where none may be
            dirty("body after HEAD/204/304")
    p.body = body
    framing = draw(st.sampled_from(FRAMINGS))
    if framing not in ("cl", "chunked", "none", "cl_zero"):
        dirty(f"framing {framing}")
    n = len(body)
    if framing == "cl_zero":
        p.body = body = b""
        n = 0
    if framing in ("cl", "cl_zero"):
        headers.append((b"Content-Length", b"%d" % n))
    elif framing == "cl_short":
        headers.append((b"Content-Length", b"%d" % max(0, n - 3)))
    elif framing == "cl_long":
        headers.append((b"Content-Length", b"%d" % (n + 3)))
    elif framing == "cl_dup_same":
        headers += [(b"Content-Length", b"%d" % n)] * 2
    elif framing == "cl_dup_diff":
        headers += [(b"Content-Length", b"%d" % n), (b"Content-Length", b"%d" % (n + 1))]
    elif framing == "cl_bad":
        headers.append(
            (b"Content-Length", draw(st.sampled_from([b"+%d" % n, b"%d, %d" % (n, n), b"0x10", b"-1", b"", b"1" * 30])))
        )
    elif framing == "cl_ws":
        headers.append((b"Content-Length", b"%d " % n))
    elif framing == "cl_te":
        headers += [(b"Content-Length", b"%d" % n), (b"Transfer-Encoding", b"chunked")]
    elif framing == "te_gzip":
        headers.append((b"Transfer-Encoding", b"gzip"))
    elif framing == "te_identity":
        headers.append((b"Transfer-Encoding", b"identity"))
    elif framing == "te_gzip_chunked":
        headers.append((b"Transfer-Encoding", b"gzip, chunked"))
    elif framing == "te_chunked_gzip":
        headers.append((b"Transfer-Encoding", b"chunked, gzip"))
    elif framing == "te_dup":
        headers += [(b"Transfer-Encoding", b"chunked")] * 2
    elif framing in ("chunked", "te_case"):
        headers.append(
            (
                b"Transfer-Encoding",
                b"chunked" if framing == "chunked" else draw(st.sampled_from([b"Chunked", b"CHUNKED"])),
            )
        )
    p.chunked = framing in ("chunked", "te_case", "cl_te", "te_gzip_chunked", "te_dup")
    if framing == "none" and p.send_body and p.method != "HEAD" and p.status not in (b"204", b"304"):
        p.features.append("close-delimited body")
    p.headers = draw(st.permutations(headers)) if len(headers) < 6 else headers

    if p.chunked:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=5))))
        bounds = [0] + [c for c in cuts if 0 < c < len(body)] + [len(body)]
        for a, b in zip(bounds, bounds[1:]):
            if a == b:
                continue  # an empty chunk would be the last one
            c = Chunk(body[a:b], upper=draw(st.booleans()))
            if odd(10):
                c.pad = draw(st.sampled_from([1, 3, 22]))
                if c.pad + len(b"%x" % len(c.data)) > 20:
                    p.exempt.add("pad")
                    dirty("long zero-padded chunk size")
            if odd(8):
                c.ext = draw(
                    st.sampled_from(
                        [
                            b";a=b",
                            b";a",
                            b';a="x y"',
                            b";a=b;c",
                            b"; a=b",
                            b";\x01",
                            b";a=" + b"e" * BIG,
                            b";a=" + b"e" * SMALL,
                        ]
                    )
                )
                if c.ext in (b"; a=b", b";\x01"):
                    dirty("odd chunk extension")
                if len(c.ext) > 1000:
                    p.exempt.add("bigext")
                    dirty("long chunk extension")
            if odd(25):
                c.end = draw(st.sampled_from([b"\n", b"", b"XX"]))
                dirty("bad chunk end")
            p.chunks.append(c)
        if odd(10):
            p.last.pad = draw(st.sampled_from([2, 25]))
            if p.last.pad >= 20:
                p.exempt.add("pad")
                dirty("long zero-padded last chunk")
        if odd(6):
            p.trailers = draw(
                st.sampled_from(
                    [
                        [(b"X-Trailer", b"t")],
                        [(b"X-T", b"1"), (b"X-U", b"2")],
                        [(b"Content-Length", b"5")],
                        [(b"Transfer-Encoding", b"gzip")],
                        [(b"X T", b"1")],
                        [(b"X-Huge", b"h" * BIG)],
                        [(b"X-Big", b"h" * SMALL)],
                        [(b"X-Odd", b"a\x01b")],
                    ]
                )
            )
            if p.trailers[0][0] not in (b"X-Trailer", b"X-T", b"X-Big"):
                dirty("odd trailer")

    if odd(20):
        p.fold_at = draw(st.integers(0, max(0, len(p.headers) - 1))) if p.headers else -1
        if p.fold_at >= 0:
            dirty("obs-fold")
    if odd(20):
        p.lf_at = draw(st.integers(0, len(p.headers) + 1))
        dirty("bare LF")
    if odd(6):
        p.extra = draw(st.sampled_from(EXTRAS))
        dirty("bytes after the answer")
    p.close_after = draw(st.booleans())
    if not p.exempt and odd(12):
        p.mutate = (draw(st.integers(0, 10_000)), draw(st.sampled_from([0, 9, 10, 13, 32, 48, 58, 59, 72, 127, 255])))
        dirty("mutated byte")
    return p


# --------------------------------------------------------------------------
# The two verdicts
# --------------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    message: str = ""
    status: int = 0
    headers: list = field(default_factory=list)  # (lower-case name, value) as bytes
    body: bytes = b""
    reusable: bool = False  # the next request may go on this connection
    version: bytes = b""
    keep_alive_10: bool = False  # an HTTP/1.0 answer that asked to be kept alive (E4)
    early: bool = False  # the answer ended before the connection did


def h11_verdict(wire: bytes, method: str, close_after: bool) -> Verdict:
    """What h11 makes of the bytes, fed 1 KiB at a time (so its buffer cap is a cap on event size)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    conn.send(h11.Request(method=method, target="/v1/x", headers=[("Host", HOST), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    v = Verdict(ok=False)
    body = bytearray()
    fed = 0

    def drain() -> bool:
        """Events until more data is needed (False) or the answer ended (True)."""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                return False
            if isinstance(ev, h11.Response):
                v.status, v.version = ev.status_code, ev.http_version
                v.headers = [(k, val) for k, val in ev.headers]
                tokens = {t.strip().lower() for k, val in ev.headers if k == b"connection" for t in val.split(b",")}
                v.keep_alive_10 = ev.http_version == b"1.0" and b"keep-alive" in tokens and b"close" not in tokens
            elif isinstance(ev, h11.Data):
                body.extend(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                return True
            elif isinstance(ev, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("closed before the answer ended")

    try:
        ended = False
        while fed < len(wire) and not ended:
            conn.receive_data(wire[fed : fed + 1024])
            fed = min(len(wire), fed + 1024)
            ended = drain()
        if ended:
            v.early = True
            left = conn.trailing_data[0] + wire[fed:]
            v.reusable = not close_after and not left and conn.our_state is h11.DONE and conn.their_state is h11.DONE
            v.keep_alive_10 = v.keep_alive_10 and not close_after and not left
        else:
            conn.receive_data(b"")
            if not drain():
                raise h11.RemoteProtocolError("incomplete")
            v.keep_alive_10 = False
    except h11.ProtocolError as exc:
        return Verdict(ok=False, message=f"{type(exc).__name__}: {exc}")
    v.ok = True
    v.body = bytes(body)
    return v


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return True


async def gwctl_verdict(p: Plan, wire: bytes, cuts: list[int], pause: float, hold: float) -> Verdict:
    """Serve ``wire`` (cut at ``cuts``) to one UpstreamPool request; what it made of it.

    After its last byte the server closes at once (``p.close_after``), or when the client
    does, or after ``hold`` seconds: short where the answer needs the close to end (h11
    says so), long where it does not -- so a slow run never closes a connection the
    client is still about to pool.
    """
    finished = asyncio.Event()
    serving = []

    async def serve(reader, writer):
        serving.append(asyncio.current_task())
        try:
            if await read_request(reader):
                last = 0
                for cut in cuts + [len(wire)]:
                    writer.write(wire[last:cut])
                    await writer.drain()
                    last = cut
                    if pause:
                        await asyncio.sleep(pause)
                finished.set()
                if not p.close_after:
                    try:
                        await asyncio.wait_for(reader.read(), hold)  # the client's EOF, or the hold ends
                    except TimeoutError:
                        pass
        except ConnectionError:
            pass
        finally:
            finished.set()
            writer.close()  # a FIN: the end of a close-delimited body

    server = await asyncio.start_server(serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool()
    try:
        body = b'{"x": 1}' if p.method == "POST" else b""
        try:
            r = await pool.request(p.method, f"http://{HOST}:{port}/v1/x", [], body, connect_timeout=5, read_timeout=5)
            status, headers = r.status, list(r.headers)
            data = await r.read()
            r.release()
        except UpstreamProtocolError as exc:
            return Verdict(ok=False, message=exc.message)
        await asyncio.wait_for(finished.wait(), 5)
        for _ in range(4):  # let whatever the server sent last arrive
            await asyncio.sleep(0.005)
        return Verdict(
            ok=True,
            status=status,
            body=data,
            reusable=pool.idle_count() == 1,
            headers=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        )
    finally:
        await pool.close()
        server.close()
        await asyncio.wait(serving, timeout=hold + 1) if serving else None


# --------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------


def _blank_tail(wire: bytes, end: int) -> int:
    """How many CR/LF octets end the final answer (an ending split inside them is judged conservatively)."""
    n = 0
    while n < end and wire[end - 1 - n] in b"\r\n":
        n += 1
    return n


def _compare(p: Plan, wire: bytes, end: int, cuts: list[int], g: Verdict, h: Verdict) -> None:
    note(f"wire ({len(wire)} bytes): {wire[:600]!r}{'...' if len(wire) > 600 else ''}")
    note(
        f"gwctl: {g.ok} {g.message} {g.status} reused={g.reusable}; h11: {h.ok} {h.message} {h.status} reusable={h.reusable}"
    )
    if not g.ok:
        assert not p.clean, f"gwctl refused a clean answer: {g.message}"
        event("gwctl refused" + (" (h11 too)" if not h.ok else " (h11 accepted: gwctl stricter)"))
        return
    ref = h
    if not h.ok:
        # E1-E3: gwctl must give what h11 gives for the stream without what h11 alone refuses.
        assert p.exempt, f"gwctl accepted an answer h11 refuses ({h.message})"
        normal, _ = render(p, normal=True)
        ref = h11_verdict(normal, p.method, p.close_after)
        assert ref.ok, f"gwctl accepted an answer h11 refuses even normalised ({h.message}; {ref.message})"
        event(f"equivalent: {', '.join(sorted(p.exempt))}")
    else:
        event("both accepted")
    assert g.status == ref.status

    # E5: trailing whitespace is not part of a field value; and h11 lower-cases the
    # value of Transfer-Encoding (the coding names are case-insensitive) where gwctl keeps it.
    def h11_like(k, v):
        v = v.rstrip(b" \t")
        return k, v.lower() if k == b"transfer-encoding" else v

    assert [h11_like(k, v) for k, v in g.headers] == ref.headers
    assert g.body == ref.body
    if g.reusable:
        # E4: HTTP/1.0 keep-alive with an explicit end
        assert ref.reusable or ref.keep_alive_10, "gwctl pooled a connection h11 would not reuse"
        if not ref.reusable:
            event("equivalent: http10 keep-alive reused")
    elif p.clean and ref.reusable:
        # Not pooling is always safe; for a clean answer it is allowed only where gwctl cannot
        # tell the answer's last CR/LF octets from bytes after it (upstream.connection._Conn._check_end):
        # the end was split inside its final CR/LF octets, or a Content-Length body is made of
        # CR/LF octets (or ends with 16 or more of them).
        blank = _blank_tail(wire, end)
        body_blank = (
            not p.chunked
            and p.send_body
            and p.body
            and (not p.body.strip(b"\r\n") or _blank_tail(p.body, len(p.body)) >= 16)
        )
        assert body_blank or any(end - blank <= c < end for c in cuts), (
            "gwctl did not pool a connection after a clean answer"
        )
        event("clean answer, conservatively not pooled")


def _run_one(p: Plan, cuts: list, pause: float, loop: str) -> None:
    wire, end = render(p)
    for feature in p.features:
        event(f"plan: {feature}")
    at = {len(wire) * k // 1000 if kind == "f" else (len(wire) if kind == "e" else end) - k for kind, k in cuts}
    cuts = sorted(c for c in at if 0 < c < len(wire))
    h = h11_verdict(wire, p.method, p.close_after)
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            g = runner.run(asyncio.wait_for(gwctl_verdict(p, wire, cuts, pause, PATIENCE if h.early else HOLD), 20))
        except UpstreamError as exc:  # a timeout, or a connect error: never expected here
            raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc
    _compare(p, wire, end, cuts, g, h)


CASE = dict(
    p=plans(),
    # where the server's writes are cut: a fraction of the stream, or a few bytes before its end
    # or before the final answer's end (so the last CR/LF octets are split too)
    cuts=st.lists(
        st.one_of(
            st.tuples(st.just("f"), st.integers(1, 999)), st.tuples(st.sampled_from(["e", "m"]), st.integers(1, 8))
        ),
        max_size=6,
    ),
    pause=st.sampled_from([0, 0, 0.001, 0.003]),
    loop=st.sampled_from(["asyncio", "uvloop"]),
)
SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
)


@settings(max_examples=200, **SETTINGS)
@given(**CASE)
def test_gwctl_agrees_with_h11_or_is_stricter(p, cuts, pause, loop):
    _run_one(p, cuts, pause, loop)


@pytest.mark.long
def test_gwctl_agrees_with_h11_or_is_stricter_long(request):
    if "long" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the long fuzz run: select it with -m long")

    @settings(max_examples=5000, **SETTINGS)
    @given(**CASE)
    def many(p, cuts, pause, loop):
        _run_one(p, cuts, pause, loop)

    many()


def _equivalence_plans() -> dict[str, Plan]:
    """One plan for each documented disagreement (E1-E4), so each is exercised on every run."""
    body = b'data: {"x": 1}\n\n'
    pad = Plan(
        headers=[(b"Transfer-Encoding", b"chunked")],
        body=body,
        chunked=True,
        chunks=[Chunk(body, pad=22)],
        clean=False,
        exempt={"pad"},
    )
    bigext = Plan(
        headers=[(b"Transfer-Encoding", b"chunked")],
        body=body,
        chunked=True,
        chunks=[Chunk(body, ext=b";a=" + b"e" * BIG)],
        clean=False,
        exempt={"bigext"},
    )
    blank = Plan(
        interims=[(b"103", [(b"Link", b"</a.css>; rel=preload")], b"\r\n")],
        headers=[(b"Content-Length", b"%d" % len(body))],
        body=body,
        clean=False,
        exempt={"blank"},
    )
    http10 = Plan(
        version=b"HTTP/1.0", headers=[(b"Connection", b"keep-alive"), (b"Content-Length", b"%d" % len(body))], body=body
    )
    return {"pad": pad, "bigext": bigext, "blank": blank, "http10": http10}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("name", sorted(_equivalence_plans()))
def test_each_documented_equivalence_holds(name, loop):
    """gwctl accepts these where h11 refuses (E1-E3) or does not reuse (E4), with h11's answer otherwise."""
    p = _equivalence_plans()[name]
    wire, end = render(p)
    h = h11_verdict(wire, p.method, p.close_after)
    assert (not h.ok) if name != "http10" else (h.ok and not h.reusable and h.keep_alive_10)
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        g = runner.run(asyncio.wait_for(gwctl_verdict(p, wire, [], 0, PATIENCE), 20))
    assert g.ok and g.body == p.body, g.message
    assert g.reusable  # each of these ends cleanly: gwctl pools the connection
    _compare(p, wire, end, [], g, h)
