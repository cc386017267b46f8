"""Whose request is this: the role of the key behind every frame a node's ROUTER reads.

Why a room: the ZAP handler (:mod:`transport.auth`) admits a key once, at
the handshake, but a connection lives on after it: a key revoked later, or
made a client, would keep the rights it had when it connected. So the ZAP
handler names the key in the connection's ``User-Id`` (its Z85 public key),
libzmq attaches that to every frame the connection delivers, and the node
asks :meth:`Roles.trust` about each request before decoding it:

- a key of role ``member`` (and this machine's own): full decoding, code included;
- a key of role ``client``: decoded by the restricted unpickler
  (``decode(trusted=False)``), so a pickle that would run code is refused
  (:class:`~transport.codec.RefusedFrame`, counted in ``refused``) and an
  ask gets an error saying why;
- a key no longer in the keyring (revoked), or a frame with no ``User-Id``
  at all: refused undecoded and counted in ``revoked``.

The table behind that answer is a dict from key to trust, rebuilt when the
``members`` file changes; the node's I/O thread calls :meth:`Roles.refresh`
on a timer (every :data:`CHECK_EVERY` seconds: one ``lstat`` when nothing
changed), so a revocation reaches live sessions within that time. A members
file that can no longer be read safely (see :mod:`transport.keys`) leaves
only this machine's own key trusted, as the ZAP handler then admits no one.

A key that leaves the table is handed to ``on_revoked`` (the node's), which
closes the connections (:meth:`transport.auth.Admission.cut`): what the
revoked key sent before that, and anything it sends on a connection not yet
closed, is refused here, frame by frame, before a byte of it is unpickled.

Cost: reading a frame as a :class:`zmq.Frame` and its ``User-Id`` (about
0.2 us for the property, 0.7 us for the Frame, alone) came to about 2 us of
the server's CPU per ask (about 3%, paired runs on a loaded machine), inside
the spread of ``zactor bench transport``'s round trips. It is paid only with
security on: a revocation can only be enforced on every frame if every frame
names its key (a cache by routing id would trust a peer that takes over a
departed member's id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from transport.codec import RefusedFrame
from transport.counters import Counters
from transport.envelope import Failure
from transport.keys import Keyring, Member

log = logging.getLogger(__name__)

CHECK_EVERY = 0.25
"""Seconds between looks at the members file: a revocation reaches live connections within this."""

USER_ID = b"User-Id"
"""The frame property that names the sender's key (set by the ZAP handler's reply)."""


class Roles:
    """The trust of every key a node admits, kept current with the keyring; the I/O thread's alone."""

    def __init__(self, keyring: Keyring, counters: Counters) -> None:
        self._keyring = keyring
        self._counters = counters
        self._own = keyring.public.decode()
        self._seen: tuple[Member, ...] | None = None
        self._trust: dict[str, bool] = {self._own: True}
        self._logged: set[str] = set()
        self.on_revoked: Callable[[set[str]], Any] = lambda keys: None
        """Called (on the I/O thread) with the keys a refresh took out of the table."""
        self.label = "?"
        """The node's endpoint, for logs (set once the ROUTER is bound)."""
        self.refresh()

    def watch(self, call_later: Callable[[float, Callable[[], Any]], Any]) -> None:
        """Refresh every :data:`CHECK_EVERY` seconds, through the node's timers (which stop when it closes)."""

        def tick() -> None:
            self.refresh()
            call_later(CHECK_EVERY, tick)

        call_later(CHECK_EVERY, tick)

    def refresh(self) -> None:
        """Rebuild the table if the members file changed (the keyring re-reads it only then)."""
        try:
            members = self._keyring.members()
        except Exception as exc:  # a members file no longer safe to read: trust no one else
            if self._seen is not None or len(self._trust) != 1:
                log.error("node %s: refusing every key but this machine's own: %s", self.label, exc)
            self._replace(None, {self._own: True})
            return
        if members is self._seen:
            return
        trust = {m.public.decode(): m.role == "member" for m in members}
        trust[self._own] = True
        if self._seen is not None:
            log.info("node %s: the keyring's members changed (%d keys); live connections follow", self.label, len(trust))
        self._replace(members, trust)
        self._logged.clear()

    def _replace(self, members: tuple[Member, ...] | None, trust: dict[str, bool]) -> None:
        gone = self._trust.keys() - trust.keys()
        self._seen, self._trust = members, trust
        if gone:
            self.on_revoked(gone)

    def trust(self, frame: zmq.Frame) -> bool | None:
        """True (a member: decode in full), False (a client: decode restricted) or None (refuse it)."""
        try:
            user = frame.get(USER_ID)
        except zmq.ZMQError:  # no User-Id: not a connection our ZAP handler admitted
            return None
        return self._trust.get(user)

    def refuse(self, frame: zmq.Frame) -> None:
        """Count a frame refused undecoded (its key is no longer in the keyring); logged once per key."""
        self._counters.add("revoked")
        try:
            user = str(frame.get(USER_ID))
        except zmq.ZMQError:
            user = "(none)"
        if user not in self._logged and len(self._logged) < 1024:
            self._logged.add(user)
            log.warning("node %s: refused a frame from key %s: no longer in the keyring (revoked)", self.label, user)


def refusal(exc: RefusedFrame) -> Failure:
    """The error a client key gets back for an ask it may not make: what was refused and what would allow it."""
    return Failure.from_exception(
        PermissionError(
            f"{exc}; a client-role key may send only registered message classes (@message, "
            "transport.register_message) and plain data: register the class on the server, or give "
            "the key role member (`zactor keys add NAME KEY --role member`) if it is to run code here"
        )
    )
