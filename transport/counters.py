"""Per-node traffic counters, so tests can bound RPC counts and bytes."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Counters:
    """What one node sent, per message type, and what it dropped or refused.

    ``sent`` counts every message the node was asked to send, whether or not
    a fault rule then dropped it (as the lab network counts every call).
    """

    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    received: int = 0
    dropped_by_faults: int = 0
    malformed: int = 0
    unknown_actor: int = 0
    send_failures: int = 0
    control: int = 0
    """Control traffic (faults, counters, pings), kept out of ``sent``."""
    rejected: int = 0
    """Connections refused before a byte was decoded (failed CURVE handshake: no keys, a key not in the keyring)."""
    dropped_full: int = 0
    """Tells dropped because the actor's mailbox was at its bound."""
    busy: int = 0
    """Asks answered with MailboxFull because the actor's mailbox was at its bound."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_sent(self, mtype: str, nbytes: int) -> None:
        # Written from every thread that sends (callers, actor threads, the I/O
        # thread): every write and every read takes the one lock, so a count is
        # never lost and a snapshot never shows a message without its bytes.
        with self._lock:
            self.sent[mtype] += 1
            self.sent_bytes[mtype] += nbytes

    def count_received(self) -> None:
        with self._lock:
            self.received += 1

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (any thread)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict:
        """A plain, picklable copy for a remote reader."""
        with self._lock:
            return {
                "sent": dict(self.sent),
                "sent_bytes": dict(self.sent_bytes),
                "received": self.received,
                "dropped_by_faults": self.dropped_by_faults,
                "malformed": self.malformed,
                "unknown_actor": self.unknown_actor,
                "send_failures": self.send_failures,
                "control": self.control,
                "rejected": self.rejected,
                "dropped_full": self.dropped_full,
                "busy": self.busy,
                "messages_total": sum(self.sent.values()),
                "bytes_total": sum(self.sent_bytes.values()),
            }

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.sent_bytes.clear()
            self.received = self.dropped_by_faults = self.malformed = 0
            self.unknown_actor = self.send_failures = self.control = 0
            self.rejected = self.dropped_full = self.busy = 0
