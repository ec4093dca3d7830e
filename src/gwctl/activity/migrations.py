"""The activity schema, as an ordered list of versioned migrations.

Opening a log applies the migrations its ``schema_migrations`` table does not
list yet, in order, in one transaction taken under a lock (SQLite
``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so two processes opening the
same log at once cannot both apply one. A migration is never edited once
released: a schema change is a new entry at the end of :data:`MIGRATIONS`.

Both backends get the same table and column names; the types differ only
where the engines do: SQLite keeps ``time`` as fixed-width UTC text (it sorts
chronologically) and ``cost`` as an exact decimal string, PostgreSQL uses
``timestamptz`` and ``numeric``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gwctl.activity.record import USAGE_KINDS


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


def _usage_columns(int_type: str) -> str:
    return ",\n    ".join(f"{k} {int_type} NOT NULL DEFAULT 0" for k in USAGE_KINDS)


_V1_SQLITE = f"""
CREATE TABLE activity (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT,
    agent TEXT,
    route_kind TEXT NOT NULL,
    source TEXT,
    model TEXT,
    upstream_model TEXT,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    {_usage_columns("INTEGER")},
    cost TEXT,
    rule TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    error TEXT
)
"""

_V1_POSTGRES = f"""
CREATE TABLE activity (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT,
    agent TEXT,
    route_kind TEXT NOT NULL,
    source TEXT,
    model TEXT,
    upstream_model TEXT,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    {_usage_columns("BIGINT")},
    cost NUMERIC,
    rule TEXT,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    error TEXT
)
"""

# Version 2: the shared counters of spend and rate limits (gwctl.activity.meters). Amounts (capacity,
# settled, a lease) are exact: decimal text in SQLite, numeric in PostgreSQL (USD, or a whole count of
# requests or tokens, by the meter's measure); times are POSIX seconds (window_end NULL: never ends).
_V2_SQLITE = (
    """
CREATE TABLE limit_meters (
    meter_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    measure TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL,
    capacity TEXT NOT NULL,
    settled TEXT NOT NULL,
    updated REAL NOT NULL
)
""",
    """
CREATE TABLE limit_leases (
    meter_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    amount TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (meter_id, holder)
)
""",
)

_V2_POSTGRES = (
    """
CREATE TABLE limit_meters (
    meter_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    measure TEXT NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    window_end DOUBLE PRECISION,
    capacity NUMERIC NOT NULL,
    settled NUMERIC NOT NULL,
    updated DOUBLE PRECISION NOT NULL
)
""",
    """
CREATE TABLE limit_leases (
    meter_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (meter_id, holder)
)
""",
)

# Version 3: a failover request's attempts (gwctl.activity.record.Attempt), as JSON text on both backends
# (not jsonb: the text is stored and read back as it is, the same on both), NULL for a request without a plan.
# Version 4: the decided request's shape (gwctl.core.request.shape_text: what a later catalog's checks read, so
# `activity reprice` can replay it; NULL for rows written before, or refused before the decision), and for a row
# whose cost `activity reprice --apply` rewrote, the cost it had first and when it was rewritten.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "activity table",
        sqlite=(_V1_SQLITE, "CREATE INDEX activity_time_idx ON activity (time)"),
        postgres=(_V1_POSTGRES, "CREATE INDEX activity_time_idx ON activity (time)"),
    ),
    Migration(2, "limit meters and leases", sqlite=_V2_SQLITE, postgres=_V2_POSTGRES),
    Migration(
        3,
        "activity attempts (failover)",
        sqlite=("ALTER TABLE activity ADD COLUMN attempts TEXT",),
        postgres=("ALTER TABLE activity ADD COLUMN attempts TEXT",),
    ),
    Migration(
        4,
        "activity request shape and repricing",
        sqlite=(
            "ALTER TABLE activity ADD COLUMN shape TEXT",
            "ALTER TABLE activity ADD COLUMN original_cost TEXT",
            "ALTER TABLE activity ADD COLUMN repriced_at TEXT",
        ),
        postgres=(
            "ALTER TABLE activity ADD COLUMN shape TEXT",
            "ALTER TABLE activity ADD COLUMN original_cost NUMERIC",
            "ALTER TABLE activity ADD COLUMN repriced_at TIMESTAMPTZ",
        ),
    ),
)

LATEST: int = MIGRATIONS[-1].version

SCHEMA_MIGRATIONS_SQLITE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)
SCHEMA_MIGRATIONS_POSTGRES = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def pending(applied: set[int]) -> list[Migration]:
    """The migrations still to apply, in order."""
    return [m for m in MIGRATIONS if m.version not in applied]


def too_new_message(found: int) -> str:
    return f"the activity log has schema version {found}, newer than this gwctl understands (up to {LATEST})"


def _check_order() -> None:
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1, "migration versions must increase"


_check_order()
