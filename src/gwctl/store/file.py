"""Reading and writing the store file safely.

* Reads parse with ``tomllib`` (fast) into a validated :class:`Snapshot`.
* Edits run inside :func:`edit`: an inter-process lock around the whole
  read-modify-write, a tomlkit document (hand-written comments and key order
  survive), re-validation of the result, and an atomic replace (temp file in
  the same directory, fsync, rename, mode 0600).
* A store that does not parse or validate is reported with its file and line
  and is never overwritten.
* The store holds credentials: reading one that group or other users may
  read or write draws a warning (once per command); a temp file left by a
  write that was killed is removed by the next write, which holds the lock.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from gwctl.core.config import Snapshot
from gwctl.core.numbers import ExactFloat
from gwctl.errors import StoreError
from gwctl.store.schema import KeyPath, SchemaError, snapshot_from_data

if TYPE_CHECKING:
    from filelock import FileLock

LOCK_TIMEOUT_S = 60.0
HEADER = (
    "# gwctl store: the gateway's sources, models, catalog, routes and keys.\n"
    "# Edit by hand or with gwctl; comments and order are kept. Schema: see gwctl's README.\n"
)


@dataclass(frozen=True)
class Loaded:
    path: Path
    text: str | None  # None: the file does not exist (an empty store)
    snapshot: Snapshot


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StoreError(f"the store path {path} is a directory", "point --store or GWCTL_STORE at a file") from None
    except PermissionError:
        raise StoreError(
            f"cannot read the store {path}: permission denied", "check the file's owner and mode"
        ) from None
    except UnicodeDecodeError as exc:
        raise StoreError(f"the store {path} is not UTF-8 text (byte {exc.start})", "fix or restore the file") from None
    except OSError as exc:  # a symlink loop, a path through a file, a name too long …
        raise StoreError(
            f"cannot read the store {path}: {exc.strerror or exc}", "point --store or GWCTL_STORE at a readable file"
        ) from None


_LINE_RE = re.compile(r"at line (\d+)")


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=ExactFloat)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _LINE_RE.search(msg)
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise StoreError(
            f"{where}: the store is not valid TOML ({msg})",
            "fix that line by hand; gwctl will not overwrite a store it cannot read",
        ) from None


def _snapshot(path: Path, text: str, data: dict[str, Any]) -> Snapshot:
    try:
        return snapshot_from_data(data)
    except SchemaError as exc:
        line = locate(text, exc.path)
        where = f"{path}:{line}" if line else str(path)
        raise StoreError(
            f"{where}: {exc.message}",
            "fix that line by hand; gwctl will not overwrite a store that fails validation",
        ) from None


def exposure(path: Path) -> str | None:
    """Why others may get at the store's credentials (None when they may not, or it does not exist).

    E.g. ``/etc/gw.toml is readable by other users (mode 0644)``: any bit for
    group or other to read, else to write, counts (write: they could redirect
    the credentials to a host of theirs). Only on POSIX, where modes mean this.
    """
    if os.name != "posix":
        return None
    try:
        st_mode = os.stat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(st_mode):  # a directory (or a device) is reported as what it is, not as a mode to fix
        return None
    mode = stat.S_IMODE(st_mode)
    if mode & 0o044:
        what = "readable"
    elif mode & 0o022:
        what = "writable"
    else:
        return None
    return f"{path} is {what} by other users (mode {mode:04o})"


EXPOSURE_FIX = "chmod 600 {path}"

_warned: set[str] = set()


def reset_warnings() -> None:
    """Forget which stores were warned about (the CLI calls this once per command)."""
    _warned.clear()


def warn_if_exposed(path: Path) -> None:
    """Warn on stderr, once per command, when others may read or write the store."""
    key = str(path)
    if key in _warned:
        return
    problem = exposure(path)
    if problem is None:
        return
    _warned.add(key)
    sys.stderr.write(f"warning: {problem}; it holds credentials: {EXPOSURE_FIX.format(path=path)}\n")


def load(path: Path) -> Loaded:
    """Read and validate the store; a missing file is an empty store."""
    warn_if_exposed(path)
    text = _read_text(path)
    if text is None:
        return Loaded(path, None, Snapshot())
    return Loaded(path, text, _snapshot(path, text, _parse(path, text)))


def _split_key(header: str) -> tuple[str, ...]:
    parts: list[str] = []
    for m in re.finditer(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*(?:\.|$)', header):
        parts.append(next(g for g in m.groups() if g is not None))
    return tuple(parts)


_TABLE_RE = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_.-]+)\s*=')


def locate(text: str, path: KeyPath) -> int | None:
    """Best-effort 1-based line of a TOML key path (for error messages)."""
    if not path:
        return None
    table: KeyPath = ()
    counts: dict[KeyPath, int] = {}
    best: tuple[int, int] | None = None  # (depth matched, line)
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _TABLE_RE.match(line)
        if m and not line.lstrip().startswith("#"):
            keys: KeyPath = _split_key(m.group(2))
            if m.group(1) == "[[":
                idx = counts.get(keys, -1) + 1
                counts[keys] = idx
                table = keys + (idx,)
            else:
                table = keys
            depth = _prefix_len(table, path)
            if depth == len(table) and (best is None or depth > best[0]):
                best = (depth, lineno)
            continue
        k = _KEY_RE.match(line)
        if k:
            keys = table + _split_key(k.group(1))
            depth = _prefix_len(keys, path)
            if depth == len(keys) and (best is None or depth > best[0]):
                best = (depth, lineno)
    return best[1] if best else None


def _prefix_len(keys: KeyPath, path: KeyPath) -> int:
    n = 0
    for a, b in zip(keys, path):
        if a != b:
            break
        n += 1
    return n


def _lock(path: Path) -> FileLock:
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S, mode=0o600)


TEMP_SUFFIX = ".tmp"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives its temp files: ``.NAME.`` + tempfile's 8 random ``[a-z0-9_]`` + ``.tmp``."""
    return re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temp files of this store left by a write that was killed; return them.

    Only safe while holding the store's lock: every write holds it from
    before its temp file exists until the rename, so any temp file of this
    store found then is stale. It may hold the store's secrets, so it goes.
    """
    pattern = _temp_pattern(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError:  # pragma: no cover - e.g. a read-only directory: the write will fail and say so
            continue
        removed.append(Path(entry.path))
    return removed


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename), mode 0600.

    The temp file is created 0600 (mkstemp, whatever the umask), so the
    secrets are never readable by others, not even before the rename.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


@contextmanager
def edit(path: Path) -> Iterator[tuple[Any, Snapshot]]:
    """Lock, load, let the caller change the tomlkit document, validate, replace.

    Raising inside the block writes nothing. The changed document must still
    validate, otherwise nothing is written and the error says why.
    """
    import tomlkit
    from tomlkit.exceptions import ParseError

    if path.is_symlink():  # write the file it points at (a dotfiles link stays a link), and lock that one
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store's directory {path.parent}: {exc.strerror}") from None
    try:
        lock = _lock(path)
        lock.acquire()
    except PermissionError:
        raise StoreError(f"cannot lock the store {path}: permission denied") from None
    except Exception as exc:  # filelock.Timeout
        raise StoreError(f"timed out waiting for the store lock {path}.lock ({exc})") from None
    try:
        remove_stale_temps(path)  # we hold the lock: no other write is in progress
        old = load(path)
        if old.text is None:
            doc = tomlkit.document()
            for line in HEADER.splitlines():
                doc.add(tomlkit.comment(line.lstrip("# ")))
            doc.add("schema", 1)
        else:
            try:
                doc = tomlkit.parse(old.text)
            except ParseError as exc:  # tomllib accepted it; tomlkit did not
                raise StoreError(f"{path}:{exc.line}: the store could not be parsed for editing ({exc})") from None
        yield doc, old.snapshot
        new_text = tomlkit.dumps(doc)
        if "\n\n\n" not in (old.text or ""):
            # tomlkit sometimes separates a new table with two blank lines; keep one,
            # unless the person who wrote the file uses wider gaps themselves
            new_text = re.sub(r"\n{3,}", "\n\n", new_text)
        if new_text == old.text:
            return
        try:
            snapshot_from_data(tomllib.loads(new_text, parse_float=ExactFloat))
        except (SchemaError, tomllib.TOMLDecodeError) as exc:
            msg = getattr(exc, "message", str(exc))
            raise StoreError(f"refusing to write an invalid store: {msg}") from None
        if old.text is not None and b"\r\n" in path.read_bytes():  # read with universal newlines: a CRLF
            new_text = new_text.replace("\n", "\r\n")  # store (a Windows checkout) keeps its line endings
        try:
            atomic_write(path, new_text)
        except OSError as exc:
            raise StoreError(f"cannot write the store {path}: {exc.strerror}") from None
    finally:
        lock.release()
