"""State-machine safety over a whole soak run: no two servers ever apply different commands at one index.

Each KV server appends ``INDEX DIGEST`` for every command it applies to its
own file (``ServerConfig.apply_log``; one line per applied command, written
a batch at a time, so a SIGKILL never leaves half a line). This checker
reads the files as they grow, while the run goes on, and remembers the first
digest seen at each index; any other digest at that index, from another
server or from the same server after a restart, is a violation.

Comparing the final states after the heal is not enough: a follower that
applied an entry a deposed leader never committed, and later took a
snapshot from the new leader, ends with the right state and leaves no trace
in the clients' history. Its apply log keeps the trace.

Memory is 10 bytes per index (the digest, and who applied it first), in
arrays indexed by the log index, which grows by one per command. Servers
added while the run goes on (the ``membership`` nemesis) are read from the
moment :meth:`AppliedChecker.grow` names them.
"""

from __future__ import annotations

import threading
from array import array
from pathlib import Path
from typing import Any

from apps.soak.verdict import Findings

APPLY_SUFFIX = ".applied"
MAX_REPORTED = 10
"""Conflicting indexes named one by one in the findings (the rest are counted)."""


class AppliedChecker:
    """Reads the servers' apply logs in ``directory``; conflicts go into ``findings.violations`` as they are found."""

    def __init__(self, directory: Path, servers: int, findings: Findings) -> None:
        self.directory = directory
        self.servers = servers
        self.findings = findings
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"*{APPLY_SUFFIX}"):  # a rerun into the same report directory starts afresh
            old.unlink()
        self._offsets = [0] * servers
        self._digests = array("Q")  # by index; 0: nothing seen yet there
        self._first = array("h")  # by index: the server that applied it first
        self.applies = [0] * servers
        """Commands each server applied (a restarted server applies its log again from its snapshot)."""
        self._highest = [0] * servers  # by server: the highest index it applied so far
        self.reapplied = 0
        """Applies of an index the same server had applied before (after a restart, from its snapshot on)."""
        self.conflicts = 0
        self.malformed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def grow(self, servers: int) -> None:
        """Read the apply logs of servers numbered up to ``servers`` too (servers added to the cluster)."""
        with self._lock:
            more = servers - self.servers
            if more > 0:
                self._offsets.extend([0] * more)
                self.applies.extend([0] * more)
                self._highest.extend([0] * more)
                self.servers = servers

    def path(self, i: int) -> Path:
        return self.directory / f"server-{i}{APPLY_SUFFIX}"

    def start(self, every: float = 1.0) -> None:
        """Check as the run goes (``--fail-fast`` then stops at a conflict within a second or so)."""
        self._thread = threading.Thread(target=self._run, args=(every,), name="soak-applied", daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.poll()

    def poll(self) -> None:
        """Read what every server appended since the last poll and check it."""
        with self._lock:
            for i in range(self.servers):
                self._read(i)

    def _read(self, i: int) -> None:
        try:
            with self.path(i).open("rb") as f:
                f.seek(self._offsets[i])
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only; the rest is read again next time
        self._offsets[i] += end
        for line in data[:end].splitlines():
            parts = line.split()
            try:
                index, digest = int(parts[0]), int(parts[1], 16)
            except (IndexError, ValueError):
                self.malformed += 1
                continue
            self.applies[i] += 1
            self._check(i, index, digest)

    def _check(self, i: int, index: int, digest: int) -> None:
        if index >= len(self._digests):
            grow = index + 1 - len(self._digests)
            self._digests.extend([0] * grow)
            self._first.extend([-1] * grow)
        if index <= self._highest[i]:
            self.reapplied += 1
        else:
            self._highest[i] = index
        known = self._digests[index]
        if known == 0:
            self._digests[index] = digest
            self._first[index] = i
            return
        if known == digest:
            return
        self.conflicts += 1
        if self.conflicts <= MAX_REPORTED:
            first = self._first[index]
            who = "it had itself applied before" if first == i else f"server {first} applied"
            self.findings.violations.append(
                f"state machine safety: server {i} applied command {digest:016x} at index {index}, where {who} "
                f"command {known:016x}"
            )
        elif self.conflicts == MAX_REPORTED + 1:
            self.findings.violations.append("state machine safety: more conflicting indexes (see summary.json)")

    def finish(self) -> dict[str, Any]:
        """Stop the thread, read the files to their end, and say what was checked (for summary.json)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.poll()
        indexes = sum(1 for d in self._digests if d)
        return {
            "indexes_checked": indexes,
            "applies_recorded": list(self.applies),
            "reapplied_after_restart": self.reapplied,
            "conflicting_indexes": self.conflicts,
            "malformed_lines": self.malformed,
            "apply_logs": str(self.directory),
        }
