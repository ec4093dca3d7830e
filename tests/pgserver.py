"""A throwaway PostgreSQL server for the activity-log tests.

Used when GWCTL_TEST_POSTGRES is not set, so a developer can just run pytest:
it finds the server binaries (Debian's /usr/lib/postgresql/*/bin, pg_config,
or PATH), runs initdb in a temp dir (as the ``postgres`` user, or a created
``gwctltest`` user, when running as root: initdb refuses root), starts the
server on 127.0.0.1 on a free port with trust auth and no Unix socket, and
creates a database. ``.ci/postgres.sh`` does the same from bash for CI.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DBNAME = "gwctl_test"
_NEEDED = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates: list[str] = []
    if os.environ.get("GWCTL_PG_BINDIR"):
        candidates.append(os.environ["GWCTL_PG_BINDIR"])

    def version(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for c in candidates:
        if c and all(os.access(os.path.join(c, b), os.X_OK) for b in _NEEDED):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """None when we are not root; else a non-root user to run the server as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "gwctltest"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "gwctltest"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return "gwctltest"


@dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int
    user: str | None
    dbname: str = DBNAME
    _stopped: bool = field(default=False, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run(
                self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start(bindir: Path, *, attempts: int = 3) -> PgServer:
    """initdb + start + createdb; raises RuntimeError with the server log on failure."""
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix="gwctl-pg-"))
    os.chmod(base, 0o700)
    if user:
        shutil.chown(base, user, user)
    server = PgServer(bindir=bindir, base=base, port=0, user=user)
    try:
        init = subprocess.run(
            server._cmd(
                str(bindir / "initdb"),
                "-D",
                str(base / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        with open(base / "data" / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# gwctl test server: loopback only, no durability needed\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        last = ""
        for _ in range(attempts):
            server.port = _free_port()
            logfile = base / "server.log"
            run = subprocess.run(
                server._cmd(
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(base / "data"),
                    "-l",
                    str(logfile),
                    "-o",
                    f"-p {server.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ),
                capture_output=True,
                text=True,
                timeout=90,
            )
            if run.returncode == 0:
                break
            last = run.stdout + run.stderr + (logfile.read_text(errors="replace") if logfile.exists() else "")
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{last}")
        _wait_ready(server)
        import psycopg

        with psycopg.connect(server.admin_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {server.dbname}")
        return server
    except BaseException:
        server.stop()
        raise


def _wait_ready(server: PgServer, timeout: float = 30.0) -> None:
    isready = server.bindir / "pg_isready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isready.exists():
            r = subprocess.run(
                [str(isready), "-h", "127.0.0.1", "-p", str(server.port), "-t", "2"], capture_output=True, timeout=10
            )
            if r.returncode == 0:
                return
        else:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL on port {server.port} was not ready after {timeout:.0f} s")


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with its ``options`` set to make ``schema`` the search path: a log of its own on a shared server."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def new_schema(server_dsn: str, prefix: str) -> tuple[str, str]:
    """A fresh schema named ``prefix`` + a random suffix on the server, and a DSN whose search path is it."""
    import uuid

    import psycopg

    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    return schema, with_search_path(server_dsn, schema)
