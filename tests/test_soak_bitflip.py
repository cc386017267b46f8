"""The soak's bit-flip nemesis on real servers: a flipped bit in an acknowledged record is refused at
start, and a journal whose damage would read as a torn append is skipped rather than judged."""

from __future__ import annotations

import time

from actors.journal import Journal, record_spans
from apps.kvraft.testing import KVCluster
from apps.raft.storage import JOURNAL_NAME
from apps.soak.kvraft import KVRaftTarget
from apps.soak.run import FaultEvent
from apps.soak.schedule import Fault
from apps.soak.verdict import Findings


def _bitflip_event() -> FaultEvent:
    return FaultEvent(Fault(0.0, 1.0, "disk", "bitflip", (0,)), time.monotonic())


def test_a_flipped_bit_in_an_acknowledged_record_is_refused_and_the_heal_restores_the_server(tmp_path) -> None:
    with KVCluster(3, data_dir=tmp_path) as cluster:
        clerk = cluster.make_clerk()
        for k in range(5):
            clerk.put(f"k{k}", f"v{k}")
        findings = Findings()
        target = KVRaftTarget(cluster, seed=7, findings=findings)
        victim = 1
        journal = cluster.data_dir(victim) / JOURNAL_NAME
        event = _bitflip_event()
        target._bitflip(victim, event)
        assert target.corruptions == {"refused": 1, "loaded": 0, "skipped": 0}, event.note
        assert findings.violations == []
        assert "refused" in event.note
        assert len(record_spans(journal.read_bytes())) >= 2  # the undamaged journal is back in place
        cluster.start(victim)
        assert clerk.get("k4") == "v4"


def test_a_journal_of_one_record_is_skipped_not_flipped(tmp_path) -> None:
    with KVCluster(3, data_dir=tmp_path) as cluster:
        victim = 2
        cluster.crash(victim)
        journal = cluster.data_dir(victim) / JOURNAL_NAME
        j = Journal(journal)
        j.rewrite([b"only record"])  # followed by nothing: damage to it would read as a torn append
        j.append([])
        before = journal.read_bytes()
        target = KVRaftTarget(cluster, seed=7, findings=Findings())
        event = _bitflip_event()
        target._bitflip(victim, event)
        assert target.corruptions["skipped"] == 1
        assert target.corruptions["refused"] == target.corruptions["loaded"] == 0
        assert journal.read_bytes() == before
        assert "1 record(s): skipped" in event.note

