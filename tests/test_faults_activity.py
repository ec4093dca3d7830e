"""Activity log faults: SQLite locked or full, PostgreSQL restarted or down; serving goes on and no row is lost.

A real `gwctl proxy` serves a steady trickle of requests (tests/faulty.py
Traffic) while the log is made unavailable:

* SQLite locked: another connection holds ``BEGIN EXCLUSIVE`` (2 s: the
  writer waits in SQLite's 10 s busy timeout; long: 25 s, past the busy
  timeout of both tries of a batch, so the writer's retry path runs);
* SQLite disk full: the log lives on a small tmpfs and a filler file takes
  the rest of it, so SQLite's writes get ENOSPC and SQLITE_FULL ("database or
  disk is full") exactly as on a full disk, until the filler is deleted.
  Chosen over ``PRAGMA max_page_count`` from another connection, which does
  not work: that limit belongs to the connection that sets it (SQLite keeps
  it in that connection's pager, not in the file), so the writer's own
  connection never sees it. Mounting needs root (CAP_SYS_ADMIN), as the
  developers' machines and CI run; elsewhere the test is skipped;
* PostgreSQL restarted (``pg_ctl restart -m fast``), and PostgreSQL stopped
  for 3 s (long: 30 s) and started again, on a server of the module's own
  (tests/pgserver.py) so the session's shared server is never stopped.

Each time: every request is answered 200 meanwhile, every row is in the log
once the database is back (counted by request id: none lost, none twice),
within the writer's bound (it retries with backoff up to 5 s, so the rows
land within about that of the database's return), and the writer process
said on stderr that the log was unavailable and when it came back, with the
number of rows that were waiting. Past the buffer bound rows are dropped,
counted in ChildWriter.health() and logged (a ChildWriter on its own with a
small bound).

How to run the long suite:

    python -m pytest -m long tests/test_faults_activity.py -s

The whole long suite, every module: ``python -m pytest -m long -s`` (about 4 minutes
on the 2-core machine; without ``-n``, so the measured figures are not disturbed).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import time

import pytest

from faulty import FaultyUpstream, Traffic, figure, start_gateway, wait_until
from pgserver import new_schema

# the writer's retry backoff tops out at 5 s: rows land within that of the database's return, plus the
# time to write them; the tests allow for a slow, shared machine on top
WRITE_BOUND_S = 5.0
WAIT_S = WRITE_BOUND_S + 25.0


@pytest.fixture(scope="module")
def faulty():
    with FaultyUpstream() as up:
        yield up


def _all_ok(results) -> None:
    bad = [r for r in results if r[0] != 200]
    assert not bad, f"{len(bad)} of {len(results)} requests failed: {bad[:5]}"


def _sqlite_ids(db: str) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [r for (r,) in conn.execute("SELECT request_id FROM activity")]
    finally:
        conn.close()


def _all_rows_land(ids_now, results, started: float, what: str) -> float:
    """Wait until every answered request has its row; none twice. The seconds it took from ``started``."""
    want = {rid for _, rid in results}
    got = wait_until(lambda: (lambda ids: ids if want <= set(ids) else None)(ids_now()), WAIT_S, 0.1)
    took = time.monotonic() - started
    ids = ids_now()
    missing = want - set(ids)
    assert not missing, f"{len(missing)} of {len(want)} rows lost after {what}"
    assert got is not None and len(ids) == len(set(ids)), "a row was written twice"
    return took


def _said_unavailable_and_back(log: str) -> tuple[int, int]:
    """The writer's lines: the rows waiting when the log went away, and the rows it wrote when it came back."""
    down = re.search(r"the activity log( \(.*?\))? is unavailable: .*?; (\d+) row\(s\) waiting", log)
    back = re.search(
        r"the activity log \(.*?\) is available again after [\d.]+ s unavailable; "
        r"wrote the (\d+) row\(s\) that were waiting",
        log,
    )
    assert down, "the writer did not say the log was unavailable:\n" + log[-3000:]
    assert back, "the writer did not say the log was back:\n" + log[-3000:]
    return int(down.group(2)), int(back.group(1))


# ---------------------------------------------------------------------------
# SQLite


def _sqlite_locked(tmp_path, faulty, hold_s: float) -> None:
    gw = start_gateway(tmp_path, faulty.url)
    try:
        traffic = Traffic(gw.url, gw.key).start()
        assert wait_until(lambda: gw.rows(), 20)  # the log exists
        locker = sqlite3.connect(gw.db, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        n0 = traffic.count()
        time.sleep(hold_s)
        during = traffic.count() - n0
        locker.execute("COMMIT")
        locker.close()
        released = time.monotonic()
        time.sleep(0.5)
        results = traffic.stop()
        _all_ok(results)
        assert during >= hold_s * 2  # requests were served all along (at 20 a second, at least 2 a second)
        took = _all_rows_land(lambda: _sqlite_ids(gw.db), results, released, "SQLite was locked")
        figure(
            f"SQLite locked {hold_s:.0f} s",
            f"{during} requests served meanwhile, all {len(results)} rows written {took:.1f} s after the lock went",
        )
        if hold_s > 20:  # past the busy timeout of a batch's two tries: the writer's retry path, with its lines
            _said_unavailable_and_back(gw.proc.log)
    finally:
        gw.proc.terminate()
    assert "Traceback" not in gw.proc.log


def test_sqlite_locked(tmp_path, faulty):
    _sqlite_locked(tmp_path, faulty, 2.0)


@pytest.mark.long
def test_sqlite_locked_long(tmp_path, faulty):
    _sqlite_locked(tmp_path, faulty, 25.0)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs: a filesystem that really fills up (needs root)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def _fill(path) -> int:
    """Take all the free space of the filesystem; the bytes written."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    written = 0
    block = b"\0" * 65536
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    written += os.write(fd, block[:size])
                except OSError:
                    break
    finally:
        os.close(fd)
    return written


def _sqlite_full(tmp_path, faulty, small_disk, full_s: float) -> None:
    db = small_disk / "activity.sqlite3"
    gw = start_gateway(tmp_path, faulty.url, activity=f"sqlite://{db}")
    gw.db = str(db)
    try:
        traffic = Traffic(gw.url, gw.key).start()
        assert wait_until(lambda: gw.rows(), 20)
        filler = small_disk / "filler"
        _fill(filler)
        n0 = traffic.count()
        assert wait_until(lambda: "database or disk is full" in gw.proc.log, 30), gw.proc.log[-2000:]
        time.sleep(full_s)
        during = traffic.count() - n0
        os.remove(filler)
        freed = time.monotonic()
        time.sleep(0.5)
        results = traffic.stop()
        _all_ok(results)
        took = _all_rows_land(lambda: _sqlite_ids(str(db)), results, freed, "the disk was full")
        waiting, wrote = _said_unavailable_and_back(gw.proc.log)
        figure(
            f"SQLite disk full {full_s:.0f} s",
            f"{during} requests served meanwhile, {wrote} rows waiting "
            f"written {took:.1f} s after space was freed, none lost",
        )
    finally:
        gw.proc.terminate()
    assert "Traceback" not in gw.proc.log


def test_sqlite_disk_full(tmp_path, faulty, small_disk):
    _sqlite_full(tmp_path, faulty, small_disk, 1.0)


@pytest.mark.long
def test_sqlite_disk_full_long(tmp_path, faulty, small_disk):
    _sqlite_full(tmp_path, faulty, small_disk, 30.0)


# ---------------------------------------------------------------------------
# PostgreSQL: a server of this module's own, stopped and started


@pytest.fixture(scope="module")
def own_pg():
    import pgserver

    bindir = pgserver.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (run `bash .ci/postgres.sh` or apt-get install postgresql)")
    server = pgserver.start(bindir)
    try:
        yield server
    finally:
        server.stop()


def _pg_ctl(server, *args: str) -> None:
    r = subprocess.run(
        server._cmd(str(server.bindir / "pg_ctl"), "-D", str(server.base / "data"), *args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def pg_stop(server) -> None:
    _pg_ctl(server, "-m", "fast", "-w", "-t", "60", "stop")


def pg_start(server) -> None:
    _pg_ctl(server, "-l", str(server.base / "server.log"), "-o", f"-p {server.port}", "-w", "-t", "60", "start")


def pg_restart(server) -> None:
    _pg_ctl(
        server,
        "-l",
        str(server.base / "server.log"),
        "-o",
        f"-p {server.port}",
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "restart",
    )


@pytest.fixture
def pg_dsn(own_pg):
    """A schema of its own on the module's server (a fresh log per test)."""
    pytest.importorskip("psycopg")
    return new_schema(own_pg.dsn, "gwctl_fault_")[1]


def _pg_ids(dsn: str) -> list[str]:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return [r for (r,) in conn.execute("SELECT request_id FROM activity")]
    except psycopg.Error:
        return []


@pytest.mark.postgres
def test_postgres_restarted(tmp_path, faulty, own_pg, pg_dsn):
    gw = start_gateway(tmp_path, faulty.url, activity=pg_dsn)
    try:
        traffic = Traffic(gw.url, gw.key).start()
        assert wait_until(lambda: _pg_ids(pg_dsn), 20)
        n0 = traffic.count()
        pg_restart(own_pg)
        back = time.monotonic()
        time.sleep(1.0)
        results = traffic.stop()
        _all_ok(results)
        took = _all_rows_land(lambda: _pg_ids(pg_dsn), results, back, "PostgreSQL restarted")
        figure(
            "PostgreSQL restarted",
            f"{len(results) - n0} requests after the restart began, all {len(results)} "
            f"rows in {took:.1f} s after it was back",
        )
    finally:
        gw.proc.terminate()
    assert "Traceback" not in gw.proc.log


def _postgres_down(tmp_path, faulty, own_pg, pg_dsn, down_s: float) -> None:
    gw = start_gateway(tmp_path, faulty.url, activity=pg_dsn)
    try:
        traffic = Traffic(gw.url, gw.key).start()
        assert wait_until(lambda: _pg_ids(pg_dsn), 20)
        pg_stop(own_pg)
        try:
            n0 = traffic.count()
            time.sleep(down_s)
            during = traffic.count() - n0
        finally:
            pg_start(own_pg)
        back = time.monotonic()
        time.sleep(0.5)
        results = traffic.stop()
        _all_ok(results)
        assert during >= down_s * 2
        took = _all_rows_land(lambda: _pg_ids(pg_dsn), results, back, f"PostgreSQL was down {down_s:.0f} s")
        waiting, wrote = _said_unavailable_and_back(gw.proc.log)
        assert wrote >= during * 0.5  # the rows of the outage were held by the writer and written on its return
        figure(
            f"PostgreSQL down {down_s:.0f} s",
            f"{during} requests served meanwhile (all 200), {wrote} rows "
            f"waiting written {took:.1f} s after it was back, none lost",
        )
    finally:
        gw.proc.terminate()
    assert "Traceback" not in gw.proc.log


@pytest.mark.postgres
def test_postgres_down(tmp_path, faulty, own_pg, pg_dsn):
    _postgres_down(tmp_path, faulty, own_pg, pg_dsn, 3.0)


@pytest.mark.postgres
@pytest.mark.long
def test_postgres_down_long(tmp_path, faulty, own_pg, pg_dsn):
    _postgres_down(tmp_path, faulty, own_pg, pg_dsn, 30.0)


# ---------------------------------------------------------------------------
# past the bound: dropped, counted, said


def _wire_row(i: int) -> tuple:
    from gwctl.activity.entry import LogEntry

    return LogEntry(
        time.time(),
        f"d{i:08d}",
        "k",
        "agent",
        "passthrough",
        "src",
        "src/m",
        "m",
        "/v1/chat/completions",
        200,
        1.0,
        None,
        None,
        None,
        None,
        None,
        False,
        None,
    )


@pytest.mark.postgres
def test_rows_past_the_bound_are_dropped_counted_and_said(own_pg, pg_dsn, caplog):
    """A writer that may hold 200 rows and a proxy-side buffer of 16 KiB, PostgreSQL down: the rows past
    that are dropped, and health() and the log say how many; the rest are all written when it returns."""
    from gwctl.activity.child import ChildWriter

    total = 6000

    async def main():
        w = ChildWriter(
            pg_dsn, flush_interval=0.01, batch_rows=100, max_buffer=16 * 1024, max_pending_rows=200, retry_max_delay=0.5
        )
        await w.start()
        try:
            for i in range(50):
                w.submit(_wire_row(i))
            w.flush()
            assert await asyncio.to_thread(wait_until, lambda: len(_pg_ids(pg_dsn)) == 50, 20)
            await asyncio.to_thread(pg_stop, own_pg)
            try:
                for i in range(50, total):
                    w.submit(_wire_row(i))
                    if i % 100 == 0:
                        await asyncio.sleep(0.01)  # let the pipe move
                w.flush()
                await asyncio.sleep(1.0)
                during = w.health()
            finally:
                await asyncio.to_thread(pg_start, own_pg)
            ok = await w.close(60)
            return ok, during, w.health()
        finally:
            if not w._closed:
                await w.close(10)

    with caplog.at_level("ERROR", logger="gwctl.activity"):
        ok, during, after = asyncio.run(main())
    assert set(during) == {
        "submitted",
        "dropped",
        "writer_alive",
        "backlog_bytes",
        "backlog_limit_bytes",
        "queued_rows",
    }
    assert during["writer_alive"] is True and during["submitted"] == total
    assert 0 < during["dropped"] < total and during["backlog_bytes"] > 0 and during["backlog_limit_bytes"] == 16 * 1024
    assert not ok and after["dropped"] == during["dropped"]  # nothing more was lost once it was back
    written = len(set(_pg_ids(pg_dsn)))
    assert written == total - after["dropped"]  # every row not counted as dropped is in the log
    assert f"({after['dropped']} dropped in total)" in caplog.text
    figure(
        "bounded buffer (writer holds 200 rows, proxy 16 KiB)",
        f"{written} of {total} rows written, {after['dropped']} dropped, counted and logged",
    )


def test_health_reports_the_writer(tmp_path):
    from gwctl.activity import sqlite_dsn
    from gwctl.activity.child import ChildWriter

    async def main():
        w = ChildWriter(sqlite_dsn(tmp_path / "a.db"), flush_interval=0.01)
        before = w.health()
        await w.start()
        for i in range(3):
            w.submit(_wire_row(i))
        running = w.health()
        assert await w.close(10)
        return before, running, w.health()

    before, running, after = asyncio.run(main())
    assert before == {
        "submitted": 0,
        "dropped": 0,
        "writer_alive": False,
        "backlog_bytes": 0,
        "backlog_limit_bytes": 64 * 1024 * 1024,
        "queued_rows": 0,
    }
    assert running["writer_alive"] is True and running["submitted"] == 3 and running["queued_rows"] == 3
    assert after["writer_alive"] is False and after["dropped"] == 0 and after["queued_rows"] == 0


# ---------------------------------------------------------------------------
# the sink's side of it: an unavailable database never costs a record


class _Log:
    """A fake log: ``fail(batch, calls)`` says what a write raises (None: it goes in)."""

    def __init__(self, fail):
        self.fail = fail
        self.rows: list[str] = []
        self.calls = 0

    def write_many(self, batch):
        self.calls += 1
        error = self.fail(batch, self.calls)
        if error is not None:
            raise error
        self.rows.extend(batch)

    def close(self):
        pass


def _wrapped(cause: Exception) -> Exception:
    from gwctl.activity import ActivityError

    try:
        raise ActivityError(f"cannot write to the activity log x: {cause}") from cause
    except ActivityError as e:
        return e


def _sink(fake):
    from gwctl.activity.writer import LogSink

    return LogSink(lambda: fake, "fake://", ident=lambda r: r, quiet=True)


def test_a_full_or_locked_database_keeps_the_whole_batch():
    fake = _Log(
        lambda batch, calls: _wrapped(sqlite3.OperationalError("database or disk is full")) if calls <= 2 else None
    )
    sink = _sink(fake)
    batch = ["a", "b", "c"]
    assert sink.write(batch) == (False, 0, 0)
    assert sink.unwritten == batch and sink.last_error.endswith("database or disk is full")
    assert fake.calls == 2  # not tried record by record: the records are not the problem
    assert sink.write(sink.unwritten) == (True, 3, 0) and fake.rows == batch


def test_a_database_that_goes_away_mid_way_keeps_what_was_not_written():
    def fail(batch, calls):
        if len(batch) > 1:
            return _wrapped(ValueError("a value it did not like"))  # a record's fault, it seems
        if batch == ["c"] or calls > 5:  # then the disk fills up after "a" and "b" went in one by one
            return _wrapped(sqlite3.OperationalError("database or disk is full"))
        return None

    fake = _Log(fail)
    sink = _sink(fake)
    assert sink.write(["a", "b", "c", "d", "e"]) == (False, 2, 0)
    assert fake.rows == ["a", "b"] and sink.unwritten == ["c", "d", "e"]  # nothing dropped, nothing twice
