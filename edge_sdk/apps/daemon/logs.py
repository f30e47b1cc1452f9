"""The daemon's and the gateway's logs: one line an event, as text for people or JSON for log collectors.

A line's structured fields travel as `extra=` on the log call (route, reason, item, attempt, ...): the text
format shows the message, the JSON format adds every field as a key, so a collector can filter on them without
parsing sentences. uvicorn's own loggers (startup, access lines) go through the same handler.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Literal

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"  # beside uvicorn's own "INFO:     ..." lines
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send every logger (ours and uvicorn's) to stderr at `level`, in `fmt`; replaces what was configured."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # no handlers of their own: one format for all
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level.upper())
