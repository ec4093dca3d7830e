"""The activity views (agent tree, day chart, HTML report) on PostgreSQL: every ``test_log_*`` of
test_activity_views.py and test_activity_report.py again, each on a log in a schema of its own."""

from __future__ import annotations

import uuid

import psycopg
import pytest

import test_activity_report
import test_activity_views
from pgserver import with_search_path

pytestmark = pytest.mark.postgres

for _module in (test_activity_views, test_activity_report):
    globals().update({k: v for k, v in vars(_module).items() if k.startswith("test_log_")})


@pytest.fixture
def log_dsn(pg_server_dsn):
    schema = f"gwctl_v_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(pg_server_dsn, autocommit=True, connect_timeout=10)
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(pg_server_dsn, schema)
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
