"""How a process of the runtime logs: text for people or JSON lines for machines, the same in every child.

A child process (a server, a worker, a spawned actor's host) starts from the
fork server, not from its parent's memory, so it does not inherit the
parent's logging setup: without help, its warnings came out as bare
messages in no format while the parent's were timestamped or JSON. The
parent's choice is therefore written into the environment
(:func:`configure` does it) and every child applies it before it runs
(:func:`configure_from_env`, called by the supervisor's child entry point).
A process that never chose (a library user's script) is left as Python
leaves it.
"""

from __future__ import annotations

import json
import logging
import os
import time

FORMATS = ("text", "json")
FORMAT_ENV = "ZACTOR_LOG_FORMAT"
LEVEL_ENV = "ZACTOR_LOG_LEVEL"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, process, traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: int, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format``, here and in every child process started from now on."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    os.environ[FORMAT_ENV] = log_format
    os.environ[LEVEL_ENV] = logging.getLevelName(level)


def configure_from_env() -> None:
    """In a child: the logging its parent chose, if it chose (an unknown value is ignored, not fatal)."""
    log_format = os.environ.get(FORMAT_ENV)
    if log_format not in FORMATS:
        return
    level = logging.getLevelName(os.environ.get(LEVEL_ENV, "WARNING"))
    configure(level if isinstance(level, int) else logging.WARNING, log_format)
