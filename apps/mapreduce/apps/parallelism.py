"""How many workers are in a phase at once, told by marker files in the working directory.

Shared by the map- and reduce-parallelism apps (mtiming, rtiming), as in the lab.
"""

from __future__ import annotations

import os
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_parallel(phase: str) -> int:
    """Mark this process as in ``phase``, count live markers, hold a second, unmark."""
    prefix = f"mr-worker-{phase}-"
    mine = f"{prefix}{os.getpid()}"
    with open(mine, "w"):
        pass
    running = 0
    for name in os.listdir("."):
        if name.startswith(prefix):
            try:
                if _alive(int(name[len(prefix):])):
                    running += 1
            except ValueError:
                continue
    time.sleep(1.0)
    os.remove(mine)
    return running
