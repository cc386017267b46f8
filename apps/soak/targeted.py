"""Targeted nemeses: faults timed to a Raft event, not only to the clock.

A random kill or partition rarely lands in the few milliseconds where a
Raft bug shows. These three wait for the moment, or make it:

- ``burst``: the leader's AppendEntries are held back while a burst of
  writes reaches it, so it appends (and fsyncs) entries nobody else has; as
  soon as it holds them, it is isolated (``leader-isolated``) or SIGKILLed
  and restarted at the heal (``leader-crashed``). A new leader is elected,
  and the old one must throw its divergent tail away and apply what the
  others applied: never the entries only it had, not even after a restart.
- ``vote``: an election is forced (the leader's AppendEntries are held
  back), a follower is watched, and it is SIGKILLed as soon as its term
  rises, which is when it votes (for a candidate, or for itself), and
  restarted at once: its vote must have been durable before it was sent.
- ``stale``: everything one server (the leader, or any one) sends to its
  peers is held back 0.5-2.5 s, reordered, long enough for the others to
  elect a new leader and move on; then the messages of the old term arrive,
  and must change nothing.

They act through the harness's own controls: the transport's fault rules on
one peer (``Cluster.set_peer_rules``), partitions, crashes and restarts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from actors import ActorDeadError, AskTimeout
from apps.kvraft.testing import KVCluster
from apps.raft.testing import HarnessFailure
from transport import FaultRule

log = logging.getLogger(__name__)

TARGETED = ("burst", "vote", "stale")
"""The targeted nemeses (their variants and durations are in ``apps/soak/schedule.py``, with the others')."""
BURST = 48
"""Writes sent to the leader while its AppendEntries are held: more than one AppendEntries batch."""
_HOLD_APPENDS = [FaultRule("*", "out", types=("AppendEntries", "InstallSnapshot"), connected=False)]
_WATCH = 0.005
"""Seconds between looks at the watched follower's term."""
_WATCH_FOR = 3.0
STALE_DELAY = (0.5, 2.5)


def _term(cluster: KVCluster, i: int) -> int | None:
    try:
        return int(cluster.peer(i).status().term)
    except (AskTimeout, ActorDeadError):
        return None


def _last_index(cluster: KVCluster, i: int) -> int | None:
    try:
        return int(cluster.peer(i).status().last_index)
    except (AskTimeout, ActorDeadError):
        return None


def inflict(cluster: KVCluster, rng: random.Random, kind: str, variant: str, leader: int | None, event: Any,
            members: list[int]) -> None:
    """Start the targeted fault ``kind``; ``leader`` is who leads now (None if nobody does), ``members`` the
    servers in the cluster now (never one the ``membership`` nemesis took out)."""
    if kind == "burst":
        who = leader if leader is not None else rng.choice(members)
        event.targets = [who]
        subject = f"leader {who}" if leader is not None else f"no leader: server {who}"
        event.note = f"{subject} {_burst(cluster, who, members, crash=variant == 'leader-crashed')}"
    elif kind == "vote":
        followers = [i for i in members if i != leader and cluster.running[i]]
        victim = rng.choice(followers or members)
        event.targets = [victim]
        event.note = _vote(cluster, victim, leader)
    elif kind == "stale":
        who = leader if variant == "leader" and leader is not None else rng.choice(members)
        event.targets = [who]
        rules = [FaultRule(cluster.endpoints[j], "out", delay=STALE_DELAY) for j in members if j != who]
        cluster.set_peer_rules(who, rules)
        event.note = f"held back {STALE_DELAY[0]}-{STALE_DELAY[1]} s: everything server {who} sends to its peers"
    else:
        raise ValueError(f"no such targeted fault: {kind}/{variant}")


def heal(cluster: KVCluster, kind: str, targets: list[int]) -> None:
    """Undo the fault: the held rules off (messages already held still arrive, late), the network whole, all up."""
    for i in list(cluster.extra_rules):
        cluster.set_peer_rules(i, [])
    if kind == "burst":
        cluster.heal()  # after a crash too: the restart below connects the server again
    for i in targets:
        if i not in cluster.removed and (not cluster.running[i] or cluster.pid(i) is None):
            cluster.restart(i)


def _burst(cluster: KVCluster, leader: int, members: list[int], crash: bool) -> str:
    """Hold the leader's AppendEntries, send it a burst; once it has appended (or after 1 s) isolate or kill it."""
    before = _last_index(cluster, leader)
    cluster.set_peer_rules(leader, _HOLD_APPENDS)
    tag = f"burst{time.monotonic_ns()}"

    def write(k: int) -> None:
        clerk = cluster.make_clerk([leader], record=False)
        clerk.give_up_after = 1.0
        try:
            clerk.put(f"{tag}:{k}", "x")
        except Exception:  # nobody waits for these: the leader is about to be cut off, it may never answer
            pass

    threads = [threading.Thread(target=write, args=(k,), name=f"soak-burst-{k}", daemon=True) for k in range(BURST)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 1.0
    last = before
    while time.monotonic() < deadline:
        last = _last_index(cluster, leader)
        if before is not None and last is not None and last - before >= BURST // 2:
            break
        time.sleep(0.01)
    if crash:
        cluster.crash(leader)
    else:
        cluster.partition([[leader], [j for j in members if j != leader]])
    cluster.set_peer_rules(leader, [])
    appended = "?" if before is None or last is None else str(last - before)
    return f"appended {appended} entries nobody else has, then was {'killed' if crash else 'isolated'}"


def _vote(cluster: KVCluster, victim: int, leader: int | None) -> str:
    """Force an election, kill ``victim`` as soon as its term rises (its vote), and restart it at once."""
    start = _term(cluster, victim)
    if start is None:
        return f"server {victim} did not answer: not watched"
    if leader is not None:
        cluster.set_peer_rules(leader, _HOLD_APPENDS)  # no heartbeats: the followers' election timers run out
    began = time.monotonic()
    term = start
    try:
        while time.monotonic() - began < _WATCH_FOR:
            now = _term(cluster, victim)
            if now is not None and now > start:
                term = now
                break
            time.sleep(_WATCH)
        waited = time.monotonic() - began
        if term == start:
            return f"server {victim}'s term stayed {start} for {_WATCH_FOR} s: not crashed"
        cluster.crash(victim)
    finally:
        if leader is not None:
            cluster.set_peer_rules(leader, [])
    try:
        cluster.restart(victim)
    except HarnessFailure as exc:
        return f"server {victim} killed at term {term} ({waited * 1000:.0f} ms into the election); restart failed: {exc}"
    return f"server {victim} killed as its term rose {start}->{term} ({waited * 1000:.0f} ms into the election), restarted"
