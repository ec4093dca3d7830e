"""The proxy's activity writer process (gwctl.activity.child), with a real child and a real SQLite file.

The parent side runs on an event loop as in the proxy; the child is the real
``python -m gwctl.activity.child``. What matters: every submitted row lands,
priced exactly in the child at the entry it was decided with; close() waits
for the child; the child outlives signals to the process group and a parent
that dies; a dead child costs dropped rows, counted, never an exception.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from types import MappingProxyType as MP

import pytest

from gwctl.activity import open_log, sqlite_dsn
from gwctl.activity.child import ChildWriter, neutral_row
from gwctl.activity.entry import LogEntry
from gwctl.core.config import CatalogEntry
from gwctl.core.pricing import Usage

ENTRY = CatalogEntry("src", "m1", prices=MP({"input": Decimal("3e-6"), "output": Decimal("1.5e-5")}))


def row(
    i: int, usage: Usage | None = Usage(input_tokens=1000, output_tokens=100), entry=ENTRY, status=200, kind="managed"
):
    return LogEntry(
        time.time(),
        f"req{i:08d}",
        "ci",
        "triage/sub",
        kind,
        "src",
        "src/m1",
        "m1",
        "/v1/chat/completions",
        status,
        1.25,
        None if usage is None else usage.counts(),
        entry,
        "src/m1",
        None,
        None,
        False,
        None,
    )


def run(coro):
    return asyncio.run(coro)


def test_rows_are_priced_exactly_and_written_by_the_child(tmp_path):
    dsn = sqlite_dsn(tmp_path / "a.db")

    async def main():
        w = ChildWriter(dsn, batch_rows=7, flush_interval=0.01)
        await w.start()
        for i in range(20):
            w.submit(row(i))
        w.submit(row(20, usage=None, entry=None, status=400, kind="rejected"))
        w.submit(row(21, entry=None, kind="passthrough"))  # no catalog entry: unbilled, not zero
        return await w.close(10), w

    ok, w = run(main())
    assert ok and w.submitted == 22 and w.dropped == 0
    log = open_log(dsn, create=False)
    recs = {r.request_id: r for r in log.list(limit=None)}
    log.close()
    assert len(recs) == 22
    assert recs["req00000003"].cost == Decimal("0.0045")  # 1000 x 3e-6 + 100 x 1.5e-5, exact
    assert recs["req00000003"].usage == {"input_tokens": 1000, "output_tokens": 100}
    assert recs["req00000003"].agent == "triage/sub" and recs["req00000003"].key_name == "ci"
    assert recs["req00000020"].cost is None and recs["req00000020"].route_kind == "rejected"
    assert recs["req00000021"].cost is None and recs["req00000021"].usage == {
        "input_tokens": 1000,
        "output_tokens": 100,
    }


def test_the_writer_is_out_of_reach_of_the_terminals_ctrl_c_from_its_first_instant(tmp_path):
    """Its own session and process group: a Ctrl-C to the proxy's group cannot reach it, even while
    it starts (before Python runs and ignores the signal)."""

    async def main():
        w = ChildWriter(sqlite_dsn(tmp_path / "a.db"), flush_interval=0.01)
        await w.start()
        pid = w._proc.pid
        ids = os.getsid(pid), os.getpgid(pid)
        os.killpg(os.getpgid(0), 0)  # our own group still exists: only the writer left it
        w.submit(row(1))
        assert await w.close(10)
        return pid, ids

    pid, (sid, pgid) = run(main())
    assert sid == pid and pgid == pid
    assert pgid != os.getpgid(0)


def test_the_writer_runs_at_a_lower_priority_than_the_proxy(tmp_path):
    """Background work: when both want a core, the proxy gets it (benchmarks/README.md)."""
    from gwctl.activity.child import _NICENESS

    async def main():
        w = ChildWriter(sqlite_dsn(tmp_path / "a.db"), flush_interval=0.01)
        await w.start()
        w.submit(row(1))
        deadline = time.monotonic() + 10
        niceness = None
        while time.monotonic() < deadline:  # until the child has run its first lines
            with open(f"/proc/{w._proc.pid}/cmdline", "rb") as f:
                started = b"gwctl.activity.child" in f.read()
            niceness = os.getpriority(os.PRIO_PROCESS, w._proc.pid)
            if started and niceness != os.getpriority(os.PRIO_PROCESS, 0):
                break
            await asyncio.sleep(0.02)
        await w.close(10)
        return niceness

    assert run(main()) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + _NICENESS)


def test_a_row_is_priced_at_the_entry_it_carries():
    cheap = CatalogEntry("src", "m1", prices=MP({"input": Decimal("1e-9")}))
    priced = neutral_row(row(1, usage=Usage(input_tokens=7), entry=cheap))
    assert priced.cost == Decimal("7E-9") and priced.time.tzinfo is not None


def test_the_recorder_hands_over_the_attempts_in_the_wire_row():
    """A failover request's attempts go to the writer as the flow has them (encoded in the writer process);
    one answered by its first target, a request without a plan, and a rejected one carry None."""
    from types import SimpleNamespace

    from gwctl.core.config import Snapshot
    from gwctl.core.request import features, request_shape
    from gwctl.proxy.flow import Flow
    from gwctl.proxy.http import Request
    from gwctl.proxy.recorder import Recorder

    rows: list = []
    recorder = Recorder(SimpleNamespace(submit=rows.append))
    req = Request(None, "POST", "/v1/chat/completions", "", [], {}, b"{}", True, False, False)
    decision = SimpleNamespace(
        agent="triage",
        kind="managed",
        source="b",
        client_model="m",
        upstream_model="y",
        forwarded=True,
        entry=None,
        catalog_ref=None,
        features=features("/v1/chat/completions", {"model": "m", "tools": [{"type": "function"}], "messages": []}),
    )
    tried = [("a/x", 503, 12.3, "upstream answered 503"), ("b/y", 200, 40.0, None)]
    for attempts in (tried, tried[1:], None):
        flow = Flow(req, "rid", time.perf_counter(), Snapshot())
        flow.decision = decision  # type: ignore[assignment]
        flow.attempts = attempts
        recorder.record(flow, 200, None, None, None)
    recorder.rejected("rid2", None, req, time.perf_counter(), 401, "invalid_api_key", "no key")
    assert all(type(r) is tuple and len(r) == len(LogEntry._fields) for r in rows)
    assert [LogEntry(*r).attempts for r in rows] == [tried, None, None, None]
    assert rows[0][LogEntry._fields.index("attempts")] is tried  # passed through: nothing encoded on the proxy's core
    assert neutral_row(LogEntry(*rows[0])).attempts is tried
    # the request's shape: one tuple object for the three rows of one shape (pickled once a batch), none for
    # the request refused before its decision; the writer encodes it
    shapes = [LogEntry(*r).shape for r in rows]
    assert shapes[0] == request_shape(decision.features) and shapes[0] is shapes[1] is shapes[2] and shapes[3] is None
    assert '"uses":["tools"]' in (neutral_row(LogEntry(*rows[0])).shape or "")


def test_the_access_log_is_printed_by_the_child(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_activity_child import row
        from gwctl.activity.child import ChildWriter
        async def main():
            w = ChildWriter(None, access_log=True, flush_interval=0.01)
            await w.start()
            w.submit(row(5))
            assert await w.close(10)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stderr.splitlines() if "req00000005" in ln)
    assert " 200 /v1/chat/completions agent=triage/sub model=src/m1 managed " in line and "cost=0.0045" in line


def test_the_child_ignores_group_signals_and_writes_after_its_parent_is_killed(tmp_path):
    """A Ctrl-C or a service manager signals the whole group; a SIGKILLed parent closes the pipe."""
    dsn = sqlite_dsn(tmp_path / "a.db")
    script = textwrap.dedent(f"""
        import asyncio, os, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_activity_child import row
        from gwctl.activity.child import ChildWriter
        async def main():
            w = ChildWriter({dsn!r}, flush_interval=0.01)  # on uvloop, as in the proxy
            await w.start()
            print(w._proc.pid, flush=True)
            for i in range(50):
                w.submit(row(i))
            w.flush()
            while w._pipe.get_write_buffer_size():
                await asyncio.sleep(0.01)
            print("sent", flush=True)
            await asyncio.sleep(60)
        import uvloop
        uvloop.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + 20  # until the writer runs Python (its log file appears)
        while not (tmp_path / "a.db").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child_pid, signal.SIGTERM)
        os.kill(child_pid, signal.SIGINT)
        time.sleep(0.2)
        os.kill(child_pid, 0)  # still alive
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child did not exit after its parent died")
    finally:
        parent.kill()
    log = open_log(dsn, create=False)
    try:
        assert len(log.list(limit=None)) == 50
    finally:
        log.close()


def test_a_dead_child_costs_counted_drops_never_an_exception(tmp_path, caplog):
    dsn = sqlite_dsn(tmp_path / "a.db")

    async def main():
        w = ChildWriter(dsn, flush_interval=0.01)
        await w.start()
        w._proc.kill()
        w._proc.wait()
        for i in range(3):
            w.submit(row(i))
        w.flush()  # must not raise
        ok = await w.close(5)
        return ok, w

    ok, w = run(main())
    assert not ok and w.dropped == 3
    assert "dropped 3 activity row(s)" in caplog.text


def test_a_writer_needs_somewhere_to_write():
    with pytest.raises(ValueError):
        ChildWriter(None)
    with pytest.raises(Exception):
        ChildWriter("mysql://nope")


def test_a_dead_writer_process_is_started_again(tmp_path, monkeypatch, caplog):
    import gwctl.activity.child as child_mod

    monkeypatch.setattr(child_mod, "_RESTART_EVERY_S", 0.0)
    dsn = sqlite_dsn(tmp_path / "a.db")

    async def main():
        w = ChildWriter(dsn, flush_interval=0.01)
        await w.start()
        first = w._proc
        first.kill()
        first.wait()
        w.submit(row(1))
        w.flush()  # dropped, and a new writer process is on its way
        for _ in range(200):
            if w._proc is not first and not w._restarting:
                break
            await asyncio.sleep(0.02)
        assert w._proc is not first and w._proc.poll() is None
        for i in range(2, 6):
            w.submit(row(i))
        ok = await w.close(10)
        return ok, w

    ok, w = run(main())
    assert w.dropped == 1 and not ok  # the one row sent while it was down is counted, not hidden
    assert "starting a new one" in caplog.text
    log = open_log(dsn, create=False)
    try:
        assert sorted(r.request_id for r in log.list(limit=None)) == [f"req{i:08d}" for i in range(2, 6)]
    finally:
        log.close()
