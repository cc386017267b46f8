"""The process's open-file limit: raised to the hard limit when the first node of a process starts.

Why: every connection costs a server one descriptor, and the soft limit a
shell hands out is often 1,024. A stranger who opened that many idle
connections (each refused only at its handshake) left a server with none to
accept its own members, and an fd-starved Raft leader kept sending heartbeats
while its clients failed. The hard limit is the ceiling the administrator
set; going up to it needs no privilege. Child processes started afterwards
inherit the raised limit.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

_CEILING = 1 << 20
"""Used when the hard limit is unlimited (Linux refuses an unlimited soft limit for open files)."""


def raise_open_files() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (once it is raised, again is a no-op); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as exc:  # a container's own cap below the hard limit: keep what we have
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft
