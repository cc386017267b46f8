"""The KV server actor: every put and append takes effect exactly once, in bounded memory.

Clerks number their puts and appends per client (``client`` id, ``seq``
counting up, one operation at a time). The server remembers, per client, the
last sequence number it applied; a request with that number again is a retry
whose first attempt took effect, and one with a lower number is a stale
duplicate the client no longer waits for. Neither is applied again. Gets
change nothing and are not remembered at all, so a client that only reads
leaves no trace.

A retried append must return the old value its first attempt saw. Storing
that value would double the memory of a big key (the lab's memory tests
forbid it), so the server stores where it is instead: "the first n
characters of key k". That stays true while k only grows by appends; a put
to k first turns the pending references to k into real strings.

Bad requests (wrong types, unknown messages) get a ``BadRequest`` reply and
change nothing: the server never raises on input, so a garbage *tell* cannot
make pykka stop it and lose the data.
"""

from __future__ import annotations

import gc
import logging
import resource
import tracemalloc
from typing import Any

from actors import Actor
from actors.host import Hosted, host
from apps.kvsrv.messages import Append, BadRequest, Get, MemoryUsage, Put

log = logging.getLogger(__name__)


class KVServer(Actor):
    inline = True  # in memory, never blocks: served on the node's I/O thread, one wake-up per request

    def __init__(self, trace_memory: bool = False) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self._applied: dict[int, int] = {}  # client -> last applied seq
        # client -> (seq, key, prefix length) or (seq, None, the old value itself)
        self._append_reply: dict[int, tuple[int, str | None, Any]] = {}
        self._prefix_refs: dict[str, set[int]] = {}  # key -> clients whose reply is a prefix of it
        if trace_memory and not tracemalloc.is_tracing():
            tracemalloc.start()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Get):
            if type(message.key) is not str:
                return BadRequest(f"key must be a string, not {type(message.key).__name__}")
            return self.data.get(message.key, "")
        if isinstance(message, (Put, Append)):
            problem = _check(message)
            if problem:
                return BadRequest(problem)
            if isinstance(message, Put):
                return self._put(message)
            return self._append(message)
        if isinstance(message, MemoryUsage):
            return _memory_in_use()
        log.warning("KV server: ignored a %s, which is not a request", type(message).__name__)
        return BadRequest(f"not a KV request: {type(message).__name__}")

    def _put(self, req: Put) -> None:
        last = self._applied.get(req.client, -1)
        if req.seq <= last:
            return None
        self._forget_reply(req.client)
        self._materialize(req.key)
        self.data[req.key] = req.value
        self._applied[req.client] = req.seq
        return None

    def _append(self, req: Append) -> str:
        last = self._applied.get(req.client, -1)
        if req.seq < last:
            return ""  # a stale duplicate: its client has moved on and will not read this
        if req.seq == last:
            cached = self._append_reply.get(req.client)
            if cached is None or cached[0] != req.seq:
                return ""  # seq was a put; nobody reads an append reply for it
            _, key, where = cached
            return self.data[key][:where] if key is not None else where
        self._forget_reply(req.client)
        old = self.data.get(req.key, "")
        self.data[req.key] = old + req.value
        self._applied[req.client] = req.seq
        self._append_reply[req.client] = (req.seq, req.key, len(old))
        self._prefix_refs.setdefault(req.key, set()).add(req.client)
        return old

    def _forget_reply(self, client: int) -> None:
        cached = self._append_reply.pop(client, None)
        if cached is not None and cached[1] is not None:
            refs = self._prefix_refs.get(cached[1])
            if refs is not None:
                refs.discard(client)
                if not refs:
                    del self._prefix_refs[cached[1]]

    def _materialize(self, key: str) -> None:
        """Before ``key`` is overwritten, turn prefix references to it into values."""
        current = self.data.get(key, "")
        for client in self._prefix_refs.pop(key, ()):
            seq, _, length = self._append_reply[client]
            self._append_reply[client] = (seq, None, current[:length])


def _check(req: Put | Append) -> str | None:
    if type(req.key) is not str:
        return f"key must be a string, not {type(req.key).__name__}"
    if type(req.value) is not str:
        return f"value must be a string, not {type(req.value).__name__}"
    if type(req.client) is not int or type(req.seq) is not int or req.seq < 0:
        return "client must be an integer id and seq a non-negative integer"
    return None


def _memory_in_use() -> int:
    """Bytes held after a collection: traced Python memory if tracing, else peak RSS."""
    gc.collect()
    if tracemalloc.is_tracing():
        return tracemalloc.get_traced_memory()[0]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(endpoint: str, trace_memory: bool = False, announce: bool = False) -> None:
    """Child-process target (and ``zactor kv serve``): a KV server named ``kv`` at ``endpoint``.

    ``announce`` says on stderr where it listens, once the endpoint is bound (a bind error comes first).
    """
    announcement = "KV server listening on {endpoint} (Ctrl-C stops it)" if announce else None
    host(endpoint, [Hosted("kv", KVServer, (trace_memory,))], announce=announcement)
