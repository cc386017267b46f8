"""The replicated state machine: the data and the table of each client's latest request.

Pure and deterministic, so every server that applies the same log holds the
same state, and the duplicate table travels in the snapshot with the data:
a Put or Append retried after a leader change or a restart is recognised
wherever it lands and answered from the table instead of applied twice.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from apps.kvsrv.messages import Append, Put


def canonical_digest(value: Any) -> str:
    """A digest of ``value`` (built of str, int, None, tuples and lists, dicts already sorted into lists) that
    depends on what it holds alone.

    Not pickle: pickle writes a second reference to one object as a back-reference but an equal copy in
    full, so two replicas in the same state got different digests when one had restored a snapshot (its
    strings copies, the other's shared): the soak reported replicas that differed and did not.
    """
    return hashlib.sha256(repr(value).encode()).hexdigest()


class KVState:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.latest: dict[int, tuple[int, str | None]] = {}
        """client -> (seq of its latest applied Put/Append, that request's reply)."""

    def get(self, key: str) -> str:
        return self.data.get(key, "")

    def duplicate(self, client: int, seq: int) -> tuple[bool, str | None]:
        """(True, reply) if ``client``'s request ``seq`` was applied already (older ones answer None)."""
        last = self.latest.get(client)
        if last is None or seq > last[0]:
            return False, None
        return True, (last[1] if seq == last[0] else None)

    def apply(self, op: Put | Append) -> str | None:
        """Apply a committed Put or Append exactly once; returns its reply."""
        seen, reply = self.duplicate(op.client, op.seq)
        if seen:
            return reply
        if isinstance(op, Put):
            self.data[op.key] = op.value
            reply = None
        else:
            reply = self.data.get(op.key, "")
            self.data[op.key] = reply + op.value
        self.latest[op.client] = (op.seq, reply)
        return reply

    def digest(self) -> str:
        """The same for every replica that applied the same log prefix, whatever order it built its dicts in."""
        return canonical_digest((sorted(self.data.items()), sorted(self.latest.items())))

    def snapshot(self) -> bytes:
        return pickle.dumps((self.data, self.latest), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> KVState:
        state = cls()
        data, latest = pickle.loads(blob)
        if not isinstance(data, dict) or not isinstance(latest, dict):
            raise ValueError("not a KV snapshot")
        state.data, state.latest = data, latest
        return state

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, KVState) and (self.data, self.latest) == (other.data, other.latest)
