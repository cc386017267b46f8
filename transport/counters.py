"""Per-node traffic counters, so tests can bound RPC counts and bytes."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field


class Tally:
    """The message counts of one writer: a thread, or whoever holds one lock.

    Every message is counted where it is sent or read, on many threads; one
    shared lock taken twice per message was a measurable share of a small
    message's cost. So each writer counts into a tally of its own, with no
    lock (only its owner writes it), and :class:`Counters` adds the tallies
    up when read. A message type's count and bytes are one tuple, replaced
    whole, so a reader's copy (one C call, atomic under the GIL) never holds
    a message without its bytes.
    """

    __slots__ = ("by_type", "received")

    def __init__(self) -> None:
        self.by_type: dict[str, tuple[int, int]] = {}
        """Message type -> (messages sent, bytes sent)."""
        self.received = 0

    def count_sent(self, mtype: str, nbytes: int) -> None:
        by_type = self.by_type
        n, size = by_type.get(mtype, (0, 0))
        by_type[mtype] = (n + 1, size + nbytes)

    def split(self) -> tuple[defaultdict[str, int], defaultdict[str, int]]:
        """(messages per type, bytes per type): the shape readers know (0 for a type never sent)."""
        sent: defaultdict[str, int] = defaultdict(int)
        sent_bytes: defaultdict[str, int] = defaultdict(int)
        for mtype, (n, size) in self.by_type.items():
            sent[mtype], sent_bytes[mtype] = n, size
        return sent, sent_bytes


@dataclass
class Counters:
    """What one node sent, per message type, and what it dropped or refused.

    ``sent`` counts every message the node was asked to send, whether or not
    a fault rule then dropped it (as the lab network counts every call).
    ``sent``, ``sent_bytes`` and ``received`` are the sums of the writers'
    tallies (see :class:`Tally`); the rest are rare and written under the lock.
    """

    dropped_by_faults: int = 0
    malformed: int = 0
    unknown_actor: int = 0
    send_failures: int = 0
    control: int = 0
    """Control traffic (faults, counters, pings), kept out of ``sent``."""
    rejected: int = 0
    """Connections refused before a byte was decoded (failed CURVE handshake: no keys, a key not in the keyring;
    also the probe of a node that checks whether this one still listens on its ipc endpoint)."""
    refused: int = 0
    """Frames from a client-role key that named a class it may not send (code, or an unregistered class):
    refused before any of it ran (see :mod:`transport.roles`)."""
    revoked: int = 0
    """Frames refused undecoded on a live connection whose key is no longer in the keyring (revoked),
    or whose key the node cannot check (see :mod:`transport.roles`)."""
    closed: int = 0
    """Live connections closed because a key that had logged in on this node was revoked (all of them: the
    members reconnect and log in again, the revoked key cannot; see :mod:`transport.auth`)."""
    accept_failed: int = 0
    """Connections the operating system would not let the node accept (out of open files, or of memory): while
    this grows, new clients cannot reach the node (a Raft leader steps down: see :meth:`Node.starved`)."""
    dropped_full: int = 0
    """Tells dropped because the actor's mailbox was at its bound."""
    busy: int = 0
    """Asks answered with MailboxFull because the actor's mailbox was at its bound."""
    cut_off: int = 0
    """Requests (and replies) dropped because their connection had left ``max_unread_bytes`` of replies unread
    and as many requests waiting as are held back for it (a peer that does not read: see :mod:`transport.unread`)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _shared: Tally = field(default_factory=Tally, repr=False, compare=False)
    """For writers without a tally of their own (counted under the lock)."""
    _tallies: list[Tally] = field(default_factory=list, repr=False, compare=False)
    _retired: Tally = field(default_factory=Tally, repr=False, compare=False)
    """What tallies that are gone (closed channels) had counted."""
    _zero: Tally = field(default_factory=Tally, repr=False, compare=False)
    """The totals at the last ``reset``: a writer's tally is never written by another thread, so a
    reset cannot clear it; it moves this baseline instead."""

    def tally(self) -> Tally:
        """A new tally for one writer, counted in every read from now on."""
        t = Tally()
        with self._lock:
            self._tallies.append(t)
        return t

    def retire(self, t: Tally) -> None:
        """Keep what ``t`` counted once its writer is gone (its owner must not write it any more)."""
        with self._lock:
            if t in self._tallies:
                self._tallies.remove(t)
                _add(self._retired, t)

    def count_sent(self, mtype: str, nbytes: int) -> None:
        """Count a sent message from a thread without a tally of its own."""
        with self._lock:
            self._shared.count_sent(mtype, nbytes)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (any thread)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def _total(self) -> Tally:
        """Everything counted since the last reset; callers hold the lock."""
        total = Tally()
        for t in (self._shared, self._retired, *self._tallies):
            _add(total, t)
        zero = self._zero
        total.received -= zero.received
        for mtype, (n, size) in zero.by_type.items():
            left = total.by_type[mtype][0] - n, total.by_type[mtype][1] - size
            if left == (0, 0):
                del total.by_type[mtype]
            else:
                total.by_type[mtype] = left
        return total

    @property
    def sent(self) -> defaultdict[str, int]:
        """Messages sent per type, as of now (a copy)."""
        with self._lock:
            return self._total().split()[0]

    @property
    def sent_bytes(self) -> defaultdict[str, int]:
        """Bytes sent per type, as of now (a copy)."""
        with self._lock:
            return self._total().split()[1]

    @property
    def received(self) -> int:
        with self._lock:
            return self._total().received

    def snapshot(self) -> dict:
        """A plain, picklable copy for a remote reader."""
        with self._lock:
            total = self._total()
            sent, sent_bytes = total.split()
            return {
                "sent": dict(sent),
                "sent_bytes": dict(sent_bytes),
                "received": total.received,
                "dropped_by_faults": self.dropped_by_faults,
                "malformed": self.malformed,
                "unknown_actor": self.unknown_actor,
                "send_failures": self.send_failures,
                "control": self.control,
                "rejected": self.rejected,
                "refused": self.refused,
                "revoked": self.revoked,
                "closed": self.closed,
                "accept_failed": self.accept_failed,
                "dropped_full": self.dropped_full,
                "busy": self.busy,
                "cut_off": self.cut_off,
                "messages_total": sum(sent.values()),
                "bytes_total": sum(sent_bytes.values()),
            }

    def reset(self) -> None:
        with self._lock:
            _add(self._zero, self._total())
            self.dropped_by_faults = self.malformed = 0
            self.unknown_actor = self.send_failures = self.control = 0
            self.rejected = self.dropped_full = self.busy = 0
            self.refused = self.revoked = self.cut_off = 0
            self.closed = self.accept_failed = 0


def _add(into: Tally, t: Tally) -> None:
    """``into += t``; ``t`` may be written meanwhile by its owner, so its dict is copied first, in
    one C call (a count lands either before the copy or after it, never half in it)."""
    into.received += t.received
    mine = into.by_type
    for mtype, (n, size) in dict(t.by_type).items():
        have = mine.get(mtype, (0, 0))
        mine[mtype] = (have[0] + n, have[1] + size)
