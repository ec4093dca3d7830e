"""Where the activity log lives: choosing and reading its DSN.

Precedence is ``--activity`` > ``GWCTL_ACTIVITY`` > a SQLite file in the user
data dir. Accepted forms:

- ``postgresql://...`` or ``postgres://...``: a libpq connection URI, used as is;
- ``sqlite:///abs/path.sqlite3``: an absolute path (three slashes, like ``file:``);
- ``sqlite:/abs/path`` or ``sqlite:relative/path``: a path after the colon,
  relative ones against the current directory;
- anything without a ``scheme://`` prefix: a plain file path.

``~`` is expanded in paths. The path part is taken literally (no
percent-decoding, no query string). Every SQLite form is normalised to
``sqlite:///ABSOLUTE/PATH`` by :func:`resolve_dsn`, so the writer process
started later (or a log line) sees the same file whatever the working
directory. ``:memory:`` is refused: the proxy's writer and the CLI need a
log they can both open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gwctl.activity.record import ActivityError
from gwctl.errors import Exit

ENV_VAR = "GWCTL_ACTIVITY"

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FORMS_HINT = "use postgresql://USER@HOST/DB, sqlite:///ABSOLUTE/PATH, or a plain file path"


@dataclass(frozen=True)
class Target:
    """A parsed DSN: a SQLite file, or a PostgreSQL connection URI."""

    kind: Literal["sqlite", "postgres"]
    path: Path | None = None  # sqlite: absolute path
    conninfo: str | None = None  # postgres: the URI as given


def _bad(dsn: str, why: str, origin: str | None = None) -> ActivityError:
    where = f" (from {origin})" if origin else ""
    return ActivityError(
        f"invalid activity log location {redact_dsn(dsn)!r}{where}: {why}", hint=_FORMS_HINT, code=Exit.USAGE
    )


def _sqlite_path(raw: str, dsn: str, origin: str | None) -> Path:
    if not raw.strip():
        raise _bad(dsn, "the path is empty", origin)
    if raw.strip() == ":memory:":
        raise _bad(dsn, "an in-memory database cannot be shared by the proxy and the CLI", origin)
    if "\x00" in raw:
        raise _bad(dsn, "the path contains a NUL character", origin)
    return Path(os.path.abspath(os.path.expanduser(raw)))


def parse_dsn(dsn: str, *, origin: str | None = None) -> Target:
    """Read a DSN; raises :class:`ActivityError` (usage) when it is not one.

    ``origin`` (e.g. ``"--activity"``) is named in the error message.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise _bad(str(dsn or ""), "it is empty", origin)
    dsn = dsn.strip()
    lower = dsn.lower()
    if lower.startswith(("postgresql://", "postgres://")):
        return Target("postgres", conninfo=dsn)
    if lower.startswith("sqlite:"):
        rest = dsn[len("sqlite:") :]
        if rest.startswith("//"):
            after = rest[2:]
            if not after.startswith("/"):
                raise _bad(
                    dsn,
                    "sqlite:// must be followed by an absolute path (sqlite:///abs/path) or use sqlite:relative/path",
                    origin,
                )
            return Target("sqlite", path=_sqlite_path(after, dsn, origin))
        return Target("sqlite", path=_sqlite_path(rest, dsn, origin))
    m = _URL_SCHEME.match(dsn)
    if m:
        raise _bad(dsn, f"the scheme {m.group(1)!r} is not supported", origin)
    return Target("sqlite", path=_sqlite_path(dsn, dsn, origin))


def sqlite_dsn(path: Path | str) -> str:
    """The canonical DSN of a SQLite file: ``sqlite:///ABSOLUTE/PATH``."""
    p = os.path.abspath(os.path.expanduser(str(path)))
    return "sqlite://" + p if p.startswith("/") else "sqlite:///" + p


def resolve_dsn(cli_value: str | None, environ: Mapping[str, str], default_path: Path) -> str:
    """Choose the activity log: ``--activity`` > ``GWCTL_ACTIVITY`` > ``default_path``.

    An empty ``GWCTL_ACTIVITY`` counts as unset; an empty ``--activity`` is a
    usage error. SQLite DSNs come back as ``sqlite:///ABSOLUTE/PATH``,
    PostgreSQL ones unchanged.
    """
    if cli_value is not None:
        value, origin = cli_value, "--activity"
    elif environ.get(ENV_VAR, "").strip():
        value, origin = environ[ENV_VAR], ENV_VAR
    else:
        return sqlite_dsn(default_path)
    target = parse_dsn(value, origin=origin)
    if target.kind == "sqlite":
        assert target.path is not None
        return sqlite_dsn(target.path)
    return value.strip()


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, safe to print or log."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return dsn
    if not parts.scheme or "://" not in dsn or parts.scheme.lower() == "sqlite":
        return dsn
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
