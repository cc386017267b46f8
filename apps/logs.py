"""How the ``zactor`` command logs: warnings by default, as text for people or JSON lines for machines.

Why warnings by default: a refused key, a request for an actor a server does
not host, a dropped message or a restart is what a user needs to see when
nothing answers, and the code that logs them does so once per cause
(:class:`transport.once.OncePerCause`), so the default level stays quiet
while all is well. ``--log-format json`` writes one JSON object per line
(time, level, logger, message, process, and the traceback if any), for a log
shipper; the command's child processes log the same way (``actors.logs``).
"""

from __future__ import annotations

import logging

from actors.logs import FORMATS as LOG_FORMATS
from actors.logs import configure as configure_logging


def configure(verbose: int = 0, log_format: str = "text") -> None:
    """Log to stderr at WARNING (``-v``: INFO, ``-vv``: DEBUG), in ``log_format``, children included."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    configure_logging([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], log_format)
