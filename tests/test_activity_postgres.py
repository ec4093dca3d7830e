"""Activity log on PostgreSQL: the shared contract plus PostgreSQL specifics.

The server is GWCTL_TEST_POSTGRES when set (CI: ``eval "$(bash
.ci/postgres.sh)"``); otherwise a throwaway one is started for the session
from the installed server binaries (tests/pgserver.py). The tests are skipped
only when there are no binaries to start one with. Every log gets its own
schema (via ``options=-csearch_path=...`` in the DSN), dropped afterwards, so
tests never see each other's rows even on a shared server.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from gwctl.activity import ActivityError, open_log, sqlite_dsn
from gwctl.activity.migrations import LATEST, MIGRATIONS, SCHEMA_MIGRATIONS_POSTGRES
from pgserver import with_search_path

pytestmark = pytest.mark.postgres

_HERE = Path(__file__).resolve().parent


def _load_by_path(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, _HERE / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_contract():
    """The SQLite test module, imported the way pytest imports it (so its
    asserts are rewritten); by file path as a last resort."""
    for name in ("test_activity_sqlite", "tests.test_activity_sqlite"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if Path(module.__file__).resolve() == _HERE / "test_activity_sqlite.py":
            return module
    return _load_by_path("gwctl_tests_activity_contract", "test_activity_sqlite.py")


pgserver = _load_by_path("gwctl_tests_pgserver", "pgserver.py")
contract = _load_contract()
rec = contract.rec

# Run every shared contract test here too, against PostgreSQL.
globals().update({k: v for k, v in vars(contract).items() if k.startswith("test_contract_")})


# ---------------------------------------------------------------------------
# fixtures (pg_server_dsn: tests/conftest.py)


@pytest.fixture
def new_dsn(pg_server_dsn):
    schemas: list[str] = []
    admin = psycopg.connect(pg_server_dsn, autocommit=True, connect_timeout=10)

    def make() -> str:
        schema = f"gwctl_t_{uuid.uuid4().hex[:16]}"
        admin.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return with_search_path(pg_server_dsn, schema)

    try:
        yield make
    finally:
        for schema in schemas:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


@pytest.fixture
def dsn(new_dsn):
    return new_dsn()


@pytest.fixture
def read_versions():
    def read(dsn: str) -> list[int]:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]

    return read


@pytest.fixture
def make_old_log():
    """A log made by an older gwctl: the migrations up to ``version`` applied, and ``records`` in it."""

    def make(dsn: str, version: int, records) -> None:
        from gwctl.activity.postgres import DIALECT, PostgresLog

        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn, conn.transaction():
            conn.execute(SCHEMA_MIGRATIONS_POSTGRES)
            for m in MIGRATIONS[:version]:
                for stmt in m.postgres:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,))
            with conn.cursor() as cur:
                cur.executemany(*contract.old_rows(records, DIALECT, PostgresLog.row, version))

    return make


# ---------------------------------------------------------------------------
# PostgreSQL specifics


def _columns(conn, table: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()


def test_same_schema_as_sqlite(dsn, tmp_path):
    open_log(dsn).close()
    with psycopg.connect(dsn) as conn:
        pg_cols = _columns(conn, "activity")
        assert _columns(conn, "schema_migrations")[0] == ("version", "integer")
    types = dict(pg_cols)
    assert types["cost"] == "numeric"  # exact, summed exactly by SUM()
    assert types["time"] == "timestamp with time zone"
    import sqlite3

    lite = tmp_path / "a.sqlite3"
    open_log(sqlite_dsn(lite)).close()
    with sqlite3.connect(str(lite)) as conn:
        lite_cols = [row[1] for row in conn.execute("PRAGMA table_info(activity)")]
    assert [name for name, _ in pg_cols] == lite_cols


def test_attempts_are_json_text(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(request_id="tried", attempts=contract.ATTEMPTS[:1]), rec(request_id="plain")])
    with psycopg.connect(dsn) as conn:
        assert dict(_columns(conn, "activity"))["attempts"] == "text"
        stored = dict(conn.execute("SELECT request_id, attempts FROM activity").fetchall())
    assert stored["plain"] is None
    assert json.loads(stored["tried"]) == [
        {"target": "a/x", "status": 503, "latency_ms": 12.3, "error": "upstream answered 503"}
    ]


def test_cost_sum_is_server_side_numeric(dsn):
    with open_log(dsn) as log:
        log.write_many([rec(cost=Decimal("0.1")) for _ in range(3)] + [rec(cost=Decimal("1E-7"))])
        (row,) = log.summary(by="source")
    assert row.cost == Decimal("0.3000001") and isinstance(row.cost, Decimal)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT pg_typeof(SUM(cost))::text FROM activity").fetchone()[0] == "numeric"


def test_unreachable_server_is_a_clear_error():
    port = pgserver._free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ActivityError) as e:
        open_log(f"postgresql://gw:hunter2@127.0.0.1:{port}/nope?connect_timeout=3")
    assert time.monotonic() - started < 10
    assert "hunter2" not in e.value.message and "***" in e.value.message
    assert e.value.hint


def test_schema_newer_than_code(dsn):
    open_log(dsn).close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (LATEST + 1,))
    with pytest.raises(ActivityError, match="newer"):
        open_log(dsn)


def test_writer_process_reconnects_after_losing_its_connection(dsn, pg_server_dsn):
    """The proxy's writer process outlives a PostgreSQL restart of its session: the rows after the
    loss are written on a fresh connection, none lost, none twice."""
    import asyncio

    from gwctl.activity.child import ChildWriter

    app = f"gwctl-writer-{uuid.uuid4().hex[:8]}"  # to find the child's own session
    parts = urlsplit(dsn)
    tagged = urlunsplit(parts._replace(query=urlencode(parse_qsl(parts.query) + [("application_name", app)])))
    wire_row = contract.wire_row

    def seen() -> list[str]:
        with open_log(dsn) as log:
            return sorted(r.request_id for r in log.list(limit=None))

    async def until(n: int) -> list[str]:
        deadline = time.monotonic() + 20
        got: list[str] = []
        while time.monotonic() < deadline and len(got) < n:
            got = seen()
            await asyncio.sleep(0.05)
        return got

    async def main():
        writer = ChildWriter(tagged, flush_interval=0.01)
        await writer.start()
        try:
            for i in range(5):
                writer.submit(wire_row(i))
            assert len(await until(5)) == 5
            with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (app,)
                ).fetchone()[0]
            assert killed == 1
            for i in range(5, 10):
                writer.submit(wire_row(i))
            return await until(10)
        finally:
            assert await writer.close(20) is True

    assert asyncio.run(main()) == sorted(f"w{i}" for i in range(10))


def test_schemas_isolate_tests(new_dsn):
    a, b = new_dsn(), new_dsn()
    with open_log(a) as log_a, open_log(b) as log_b:
        log_a.write_many([rec(request_id="only-a")])
        assert log_b.list() == []
        assert [r.request_id for r in log_a.list()] == ["only-a"]
