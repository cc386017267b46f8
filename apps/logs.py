"""How the ``zactor`` command logs: warnings by default, as text for people or JSON lines for machines.

Why warnings by default: a refused key, a request for an actor a server does
not host, a dropped message or a restart is what a user needs to see when
nothing answers, and the code that logs them does so once per cause
(:class:`transport.once.OncePerCause`), so the default level stays quiet
while all is well. ``--log-format json`` writes one JSON object per line
(time, level, logger, message, and the traceback if any), for a log shipper.
"""

from __future__ import annotations

import json
import logging
import os
import time

LOG_FORMATS = ("text", "json")
FORMAT_ENV = "ZACTOR_LOG_FORMAT"
"""Where the chosen format is left for child processes that set up logging themselves."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line."""

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


def configure(verbose: int = 0, log_format: str = "text") -> None:
    """Log to stderr at WARNING (``-v``: INFO, ``-vv``: DEBUG), in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], handlers=[handler], force=True)
    os.environ[FORMAT_ENV] = log_format
