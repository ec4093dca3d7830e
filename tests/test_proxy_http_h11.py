"""Differential tests: the proxy's HTTP/1.1 server (llhttp through httptools, plus gwctl.proxy.http) against h11.

h11 (python-hyper's HTTP/1.1 state machine) is a careful, independent reading
of RFC 9112. Hypothesis generates request byte streams -- pipelines of up to
four requests with odd request lines, duplicate and conflicting framing
headers (Content-Length twice or different, Content-Length with
Transfer-Encoding, transfer codings other than chunked), chunked bodies with
extensions and trailers, obs-fold, bare LF and CR, huge fields, random byte
flips -- and feeds each stream, cut at random points, to both: to h11 as a
server, and to :class:`~gwctl.proxy.http.HttpProtocol` on a fake transport
in-process. For every stream, every request gwctl hands its handler must be
one h11 parsed identically (method, target, headers in order with their
values, body, HTTP/1.0 or 1.1), in the same order; where gwctl takes fewer,
it must have refused (an error status, after the answers owed, then close).
gwctl may be the stricter of the two, never the laxer.

Where the two differ by design, the comparison normalises, and each case is
argued here (all else is a failure):

* Empty lines (any CR and LF) before a request line are skipped by llhttp;
  h11 refuses them. RFC 9112 section 2.2 asks servers to ignore at least one
  empty line there, and nothing about the request that follows changes (no
  framing depends on them), so the h11 side skips them too.
* llhttp takes a run of spaces between method and target, or target and
  version, as one (``GET  /  HTTP/1.1``); h11 refuses it. A space can be
  none of the three parts (llhttp refuses one inside the target), so the
  line has one reading only, the one h11 gives it with the runs collapsed,
  and nothing about framing depends on it; the h11 side collapses them.
* An empty query (``/a?``) reaches the handler as path ``/a`` and query
  ``""``, the same as ``/a``: gwctl's Request has no way to tell them apart,
  and nothing the gateway does depends on the difference.
* h11 reports a Transfer-Encoding value lower-cased; gwctl keeps it as sent
  (both accept exactly one coding, ``chunked``, in any case).
* h11 does not keep HTTP/1.0 connections alive; gwctl does when the client
  asks (``Connection: keep-alive``, RFC 9112 appendix C.2.2), so after such a
  request only the requests h11 parsed are compared.
* A chunk size of more than 20 hex digits (leading zeros) is refused by h11,
  whose regular expression stops there; llhttp reads its value (and refuses
  one that overflows), which is the value h11 would read with the zeros
  dropped. gwctl cannot see the chunk-size line to count its digits, and
  nothing is read differently, so the streams here keep within 20 digits
  (test_a_chunk_size_with_many_leading_zeros_reads_the_same shows the case).

Differences this test found, fixed in gwctl.proxy.http (gwctl was the laxer,
or read a request otherwise): HTTP/1.1 requests without a Host header or
with two; transfer codings other than chunked before it (``gzip, chunked``),
which llhttp decodes as chunked; a Content-Length of more than 20 digits
(leading zeros); trailing whitespace kept in header values; trailer fields
turned into headers. gwctl is also stricter than h11 where h11 is lax:
versions other than HTTP/1.0 and 1.1 (505), bare LF line ends,
obs-fold, a repeated Content-Length, Content-Length with Transfer-Encoding,
unknown methods, chunk extensions that are not token[=value].
"""

from __future__ import annotations

import asyncio
import re
import string

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gwctl.proxy.http import HttpServer, Reply

BODY_LIMIT = 1 << 22  # far above anything generated: no 413 here
H11_MAX_HEAD = 1 << 20  # h11's own cap (16 KiB by default) raised above gwctl's 64 KiB


# --- gwctl, in-process on a fake transport ------------------------------------------


class FakeTransport:
    def __init__(self, loop):
        self.loop = loop
        self.protocol = None
        self.out = bytearray()
        self.closed = False
        self.eof = False  # the server ended its side (its lingering close: FIN, then it drops what comes)
        self.paused = False

    def write(self, data):
        if not self.closed and not self.eof:
            self.out += data

    def write_eof(self):
        self.eof = True

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_extra_info(self, name, default=None):
        return default


def target_of(request) -> bytes:
    path = request.path.encode("latin-1")
    return path + b"?" + request.query.encode("latin-1") if request.query else path


async def _gwctl(pieces: list[bytes]):
    loop = asyncio.get_running_loop()
    seen = []

    def handler(request):
        seen.append(
            (
                request.method.encode(),
                target_of(request),
                [(k.encode("latin-1").lower(), v.encode("latin-1")) for k, v in request.raw_headers],
                request.body,
                request.http10,
            )
        )
        return Reply(200, b"", content_type=None)

    server = HttpServer(handler, body_limit=BODY_LIMIT, head_timeout=3600, body_timeout=3600)
    conn = server()
    transport = FakeTransport(loop)
    transport.protocol = conn
    conn.connection_made(transport)
    pending = bytearray()

    async def settle():
        for _ in range(6):
            await asyncio.sleep(0)

    for piece in pieces:
        pending += piece
        for _ in range(50):  # delivered as the protocol takes it (it may pause reading)
            if transport.closed or transport.eof or transport.paused or not pending:
                break
            data, pending = bytes(pending), bytearray()
            conn.data_received(data)
            await settle()
        if transport.closed or transport.eof:
            break
    await settle()
    closed = transport.closed or transport.eof
    await server.shutdown(0)
    await settle()
    return seen, parse_answers(bytes(transport.out)), closed


def parse_answers(out: bytes) -> list[tuple[int, dict[str, str]]]:
    """Status and headers of each answer written (100 Continue left out); bodies skipped by Content-Length."""
    answers = []
    i = 0
    while i < len(out):
        end = out.index(b"\r\n\r\n", i)
        lines = out[i:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        i = end + 4 + int(headers.get("content-length", "0"))
        if status != 100:
            answers.append((status, headers))
    return answers


def run_gwctl(pieces: list[bytes]):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_gwctl(pieces))
    finally:
        loop.close()


# --- h11 ------------------------------------------------------------------------------


_SPACED_LINE = re.compile(rb"[!-~]+ +[!-~]+ +HTTP/[!-~]*\r?")


def _as_llhttp_reads_it(conn: h11.Connection) -> None:
    """Before a request line: drop CR and LF bytes, and collapse runs of spaces between method, target and
    version, as llhttp does (both argued in the module docstring).

    h11 has no option for either, so this edits its receive buffer (h11 >= 0.14) while it waits for a
    request line (it takes a head only once the whole of it is in)."""
    buf = conn._receive_buffer
    data = buf._data
    n = 0
    while n < len(data) and data[n] in b"\r\n":
        n += 1
    if n:
        buf._extract(n)
        data = buf._data
    end = data.find(b"\n")
    if end > 0 and b"  " in data[:end] and _SPACED_LINE.fullmatch(data[:end]):
        data[:end] = re.sub(rb" {2,}", b" ", bytes(data[:end]))
        buf._next_line_search = buf._multiple_lines_search = 0


def run_h11(pieces: list[bytes]):
    """The requests h11 parses, whether it refused the stream, and whether it stopped for a reason of its own."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=H11_MAX_HEAD)
    requests = []
    current = None
    stopped = None  # why h11 reads no further: "error", "close" (must close), "switch" (protocol switch), "http10"
    for piece in pieces:
        conn.receive_data(piece)
        while stopped is None:
            if conn.their_state is h11.IDLE:
                _as_llhttp_reads_it(conn)
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                stopped = "error"
                break
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                stopped = "switch"
                break
            if isinstance(event, h11.Request):
                current = [
                    event.method,
                    event.target,
                    [(k.lower(), v) for k, v in event.headers.raw_items()],
                    bytearray(),
                    event.http_version,
                ]
            elif isinstance(event, h11.Data):
                current[3] += event.data
            elif isinstance(event, h11.EndOfMessage):
                method, target, headers, body, version = current
                requests.append((method, target, headers, bytes(body), version == b"1.0"))
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                if conn.our_state is h11.SWITCHED_PROTOCOL:  # a 200 to CONNECT: the tunnel is open
                    stopped = "switch"
                    break
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                elif version == b"1.0":
                    stopped = "http10"
                else:
                    stopped = "close"
        if stopped is not None:
            break
    return requests, stopped


# --- the comparison ---------------------------------------------------------------------


def _normal(request):
    """What both must agree on, with the normalisations of the module docstring."""
    method, target, headers, body, http10 = request
    q = target.find(b"?")
    if q == len(target) - 1:  # an empty query
        target = target[:-1]
    headers = [(k, v.lower() if k == b"transfer-encoding" else v) for k, v in headers]
    return method, target, headers, body, http10


def keeps_http10_alive(request) -> bool:
    return request[4] and any(k == b"connection" and b"keep-alive" in v.lower() for k, v in request[2])


def compare(stream: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    ours, answers, closed = run_gwctl(pieces)
    theirs, stopped = run_h11(pieces)
    context = (
        f"stream {stream[:300]!r}{'...' if len(stream) > 300 else ''}\nh11 stopped: {stopped}\n"
        f"h11 parsed {len(theirs)}, gwctl handled {len(ours)}, gwctl answers {[a[0] for a in answers]}"
    )
    served = len(ours)
    if served > len(theirs):
        # gwctl took a request h11 did not: only HTTP/1.0 keep-alive (which h11 does not do) may explain it
        assert stopped == "http10" and theirs and keeps_http10_alive(theirs[-1]), (
            "gwctl accepted more than h11\n" + context
        )
    for i, (mine, h11s) in enumerate(zip(ours, theirs)):
        assert _normal(mine) == _normal(h11s), f"request {i} differs\n{mine!r}\n{h11s!r}\n" + context
    assert [status for status, _ in answers[:served]] == [200] * served, "answers out of order\n" + context
    if served < len(theirs):  # h11 took a request gwctl did not: gwctl must have refused it, and closed
        assert len(answers) == served + 1, "gwctl neither served nor refused a request h11 took\n" + context
    if len(answers) > served:  # a refusal: always the last answer, with Connection: close, and the connection closes
        status, headers = answers[-1]
        assert len(answers) == served + 1 and status >= 400 and headers.get("connection") == "close" and closed, context


# --- the streams ------------------------------------------------------------------------

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
TARGET_CHARS = string.ascii_letters + string.digits + "/?#=&%-._~:@!$'()*+,;[]{}|\\^`\" \t\x7f\x80\xff"
VALUE_CHARS = string.ascii_letters + string.digits + " \t!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\x80\xe9\xff"
ODD_BYTES = [b" ", b"\t", b"\r", b"\n", b":", b";", b",", b"\x00", b"\x7f", b"\x80", b"\xff", b"0", b"a", b"A", b"\x0b"]

methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.sampled_from(["get", "FOO", "CONNECT", "G\tET", "TRACE", "M-SEARCH", ""]),
)
targets = st.one_of(
    st.sampled_from(
        [
            "/",
            "/v1/chat/completions",
            "/a?b=c&d",
            "/a?",
            "*",
            "http://h:1/p?q",
            "//x",
            "/%zz",
            "/a#f",
            "h:443",
            "?a",
            "a",
            "/a?b?c",
        ]
    ),
    st.text(TARGET_CHARS, min_size=0, max_size=30).map(lambda t: "/" + t),
)
versions = st.one_of(
    st.just("HTTP/1.1"),
    st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.10", "HTTP/1", "HTTP/1.1 "]),
)
line_ends = st.one_of(st.just("\r\n"), st.sampled_from(["\n", "\r", "\r\r\n"]))
names = st.one_of(
    st.sampled_from(
        [
            "X-A",
            "Content-Type",
            "Authorization",
            "x-api-key",
            "Connection",
            "Expect",
            "Upgrade",
            "Trailer",
            "TE",
            "Accept",
            "X-Dup",
            "x-dup",
        ]
    ),
    st.text(TOKEN, min_size=1, max_size=12),
    st.sampled_from(["X Y", " X", "X ", "", "X\x00", "Host\t", "X:Y", "\x80"]),
)
values = st.one_of(
    st.text(VALUE_CHARS, max_size=24),
    st.sampled_from(
        [
            "close",
            "keep-alive",
            "Upgrade",
            "100-continue",
            "chunked",
            "h2c",
            "a\x00b",
            "a\x7fb",
            " lead",
            "trail ",
            "in  ner",
            "\x0b",
            "a\r\nb",
            "a\nb",
        ]
    ),
)
seps = st.one_of(st.just(": "), st.sampled_from([":", ":\t", ":  ", " :", ": \t"]))
content_lengths = st.sampled_from(
    [
        "{n}",
        "{n}",
        "0{n}",
        "{n} ",
        " {n}",
        "{n}, {n}",
        "+{n}",
        "{n}.0",
        "",
        "0000000000000000000000{n}",
        "-1",
        "99999999999999999999999",
    ]
)
codings = st.sampled_from(
    [
        "chunked",
        "chunked",
        "Chunked",
        "CHUNKED",
        " chunked",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "gzip",
        "chunked;q=1",
        "",
        "chunked, chunked",
    ]
)
chunk_exts = st.sampled_from(["", "", "", ";a=b", ";a", ';a="q s"', "; a=b", ";a=b c", ";;", ";a=", ";\x80", " ", "\t"])


@st.composite
def header_lines(draw, count=st.integers(0, 4)):
    lines = []
    for _ in range(draw(count)):
        value = draw(values)
        if draw(st.integers(0, 30)) == 0:
            value += draw(st.sampled_from(["\r\n folded", "\r\n\tfolded", "\n folded"]))  # obs-fold
        lines.append((draw(names), draw(seps), value))
    return lines


@st.composite
def chunked_body(draw):
    pieces = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
    out = []
    for piece in pieces:
        size = f"{len(piece):x}" if draw(st.booleans()) else f"{len(piece):X}"
        size = "0" * draw(st.sampled_from([0, 0, 0, 1, 2, 15])) + size  # at most 20 digits: see the docstring
        eol = draw(line_ends)
        tail = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "", "\r\n\r\n"]))
        out.append(f"{size}{draw(chunk_exts)}{eol}".encode("latin-1") + piece + tail.encode())
    last = draw(st.sampled_from(["0", "0", "00", "0;x=y", "0 "])) + draw(line_ends)
    trailers = "".join(f"{n}{s}{v}{draw(line_ends)}" for n, s, v in draw(header_lines(st.integers(0, 3))))
    if draw(st.integers(0, 6)) == 0:
        trailers += draw(
            st.sampled_from(
                [
                    "Content-Length: 5\r\n",
                    "Transfer-Encoding: chunked\r\n",
                    "Host: x\r\n",
                    "Connection: close\r\n",
                    "Transfer-Encoding: gzip\r\n",
                ]
            )
        )
    return b"".join(out) + (last + trailers + draw(line_ends)).encode("latin-1")


@st.composite
def request(draw):
    method = draw(methods)
    sp1, sp2 = draw(st.sampled_from([" ", " ", " ", " ", "  ", "\t"])), draw(st.sampled_from([" ", " ", " ", "  "]))
    eol = draw(line_ends)
    lines = [f"{method}{sp1}{draw(targets)}{sp2}{draw(versions)}"]
    host_count = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    headers = [("Host", ": ", draw(st.sampled_from(["example.com", "a", "h:1", ""]))) for _ in range(host_count)]
    headers += draw(header_lines())
    framing = draw(st.sampled_from(["none", "length", "length", "chunked", "chunked", "both", "two-lengths", "coding"]))
    body = b""
    if framing in ("length", "two-lengths", "both"):
        data = draw(st.binary(max_size=60))
        n = len(data) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, 5]))  # sometimes not what is sent
        form = draw(content_lengths)
        headers.append(("Content-Length", ": ", form.format(n=max(n, 0))))
        if framing == "two-lengths":
            headers.append(("Content-Length", ": ", str(max(n, 0) + draw(st.sampled_from([0, 1])))))
        body = data
    if framing in ("chunked", "both", "coding"):
        headers.append(("Transfer-Encoding", ": ", draw(codings) if framing == "coding" else "chunked"))
        body = draw(chunked_body())
    if draw(st.integers(0, 25)) == 0:  # a huge field: over gwctl's 64 KiB or h11's default 16 KiB
        headers.append(("X-Huge", ": ", "h" * draw(st.sampled_from([17_000, 66_000, 70_000]))))
    order = draw(st.permutations(range(len(headers))))
    for i in order:
        name, sep, value = headers[i]
        lines.append(f"{name}{sep}{value}")
    head = eol.join(lines) + eol + eol
    lead = draw(st.sampled_from(["", "", "", "", "\r\n", "\n", "\r"]))  # empty lines before the request line
    return (lead + head).encode("latin-1") + body


@st.composite
def streams(draw):
    raw = b"".join(draw(st.lists(request(), min_size=1, max_size=4)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):  # random byte flips
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw(st.sampled_from(ODD_BYTES))
        raw = raw[:at] + (b"" if op == "delete" else byte) + raw[at + (0 if op == "insert" else 1) :]
    cuts = draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=8))
    return raw, cuts


# --- the tests --------------------------------------------------------------------------------------

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=300, **SETTINGS)
@given(streams())
@example((b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", []))
@example(
    (
        b"\r\nPOST /a? HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
        [5, 40],
    )
)
@example((b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []))
@example((b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", []))
def test_gwctl_never_accepts_what_h11_refuses(case):
    compare(*case)


@pytest.mark.long
@pytest.mark.skipif("'long' not in config.getoption('markexpr')", reason="the long suite: pytest -m long")
@settings(max_examples=20_000, **SETTINGS)
@given(streams())
def test_gwctl_never_accepts_what_h11_refuses_long(case):
    compare(*case)


@pytest.mark.parametrize(
    "stream",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000000003\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: v \t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: t\r\n\r\n",
    ],
)
def test_what_the_comparison_found(stream):
    """Each a difference once (gwctl took what h11 refuses, or read it otherwise): now refused or read alike."""
    compare(stream, [])
    compare(stream, [len(stream) // 2])


def test_a_chunk_size_with_many_leading_zeros_reads_the_same():
    stream = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 24 + b"3\r\nabc\r\n0\r\n\r\n"
    ours, _answers, _closed = run_gwctl([stream])
    theirs, stopped = run_h11([stream])
    assert stopped == "error" and theirs == []  # h11's 20-digit bound
    trimmed, _ = run_h11([stream.replace(b"0" * 24 + b"3", b"3")])
    assert [_normal(r) for r in ours] == [_normal(r) for r in trimmed]  # gwctl reads what h11 reads without the zeros


def test_the_comparison_catches_a_laxer_parse():
    """The harness itself: a stream gwctl takes and h11 refuses is reported (here the one such case left,
    argued in the module docstring and kept out of the generated streams)."""
    stream = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 24 + b"3\r\nabc\r\n0\r\n\r\n"
    with pytest.raises(AssertionError, match="accepted more than h11"):
        compare(stream, [])


def test_the_comparison_sees_each_request_of_a_pipeline():
    stream = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /b?x=1 HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"
    )
    ours, answers, closed = run_gwctl([stream[:10], stream[10:]])
    theirs, stopped = run_h11([stream[:10], stream[10:]])
    assert [_normal(r) for r in ours] == [_normal(r) for r in theirs]
    assert [r[1] for r in ours] == [b"/a", b"/b?x=1"]
    assert ours[1][2] == [(b"host", b"a"), (b"x-dup", b"1"), (b"x-dup", b"2")]
    assert (stopped, closed, [a[0] for a in answers]) == (None, False, [200, 200])


def test_stream_generation_reaches_the_interesting_cases():
    """A sanity check on the strategy: trailers, chunk extensions and pipelines do come up."""
    seen = {"trailer": 0, "extension": 0, "pipeline": 0}

    @settings(max_examples=300, database=None, derandomize=True, **SETTINGS)  # a fixed draw: a check, not a lottery
    @given(streams())
    def probe(case):
        raw, _ = case
        if re.search(rb"\r\n0\r\n[A-Za-z]", raw):
            seen["trailer"] += 1
        if re.search(rb"\r\n[0-9a-fA-F]+;", raw):
            seen["extension"] += 1
        if raw.count(b" HTTP/1.1") >= 2:
            seen["pipeline"] += 1

    probe()
    assert all(seen.values()), seen
