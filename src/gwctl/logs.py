"""The proxy's log lines: readable text, or one JSON object a line (``gwctl proxy --log-format json``).

Shared by the proxy's processes (the workers and their log writer processes), so every line the proxy
prints has the same shape in the same mode. JSON lines are ASCII (``ensure_ascii``): a client's string
with control characters, U+2028 or a forged quote cannot break a line or a field. Nothing logged here
carries a secret: the proxy never puts a credential or a gateway key into a message.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
# the process id tells the workers and log writers of one server apart (each reloads, each may fail alone)
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(message)s"


def json_line(doc: dict[str, Any]) -> str:
    """One log line: the object as ASCII JSON (every control character, and every non-ASCII one, escaped)."""
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"


def utc_now_text(when: float | None = None) -> str:
    t = datetime.now(timezone.utc) if when is None else datetime.fromtimestamp(when, timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, the process id, and ``request_id`` (and
    any other ``extra=`` field in :data:`EXTRA_FIELDS`) when the call gave one; a traceback as ``exception``."""

    EXTRA_FIELDS = ("request_id", "source", "model", "status")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": utc_now_text(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in self.EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json_line(doc).rstrip("\n")


def setup(log_format: str = "text", stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``; replaces earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
