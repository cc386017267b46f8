"""The lab-3 harness's own checks, run as plain calls (no peers): fast, so they are in the developer's loop.

The lab ports that use the harness with real peers are in ``test_raft_*.py`` (slow-marked).
"""

from __future__ import annotations

import pickle

from apps.raft.testing import Cluster


def test_the_harness_refuses_a_snapshot_whose_commands_differ_from_the_committed_ones() -> None:
    """The digest snapshots are checked, not trusted: one that hides a different command is an apply error."""
    cfg = Cluster(3, snapshot=True, snapshot_every=1000)  # not entered: no peer runs, the applier's checks are plain calls
    try:
        with cfg._lock:
            for index, command in enumerate(("a", "b", "c"), start=1):
                cfg._check_apply(0, index, command)
            honest = cfg.digests[0]
            cfg._check_apply(1, 1, "a")
            cfg._check_apply(1, 2, "B")  # server 1's history differs at index 2 ...
            cfg._check_apply(1, 3, "c")
            forged = cfg.digests[1]
            cfg.errors.clear()  # ... which the apply check reports; now only the snapshot's own check is tested
            cfg._ingest_snapshot(2, pickle.dumps((3, forged)), 3)
            assert cfg.errors == ["server 2 installed a snapshot at index 3 whose commands differ from those committed"]
            cfg.errors.clear()
            cfg._ingest_snapshot(2, pickle.dumps((3, honest)), 3)
            assert not cfg.errors
            assert cfg.logs[2] == {1: "a", 2: "b", 3: "c"} and cfg.last_applied[2] == 3
            cfg._check_apply(2, 4, "d")  # applies go on from the snapshot, chained to its digest
            assert not cfg.errors and cfg.committed[4][1] == cfg.digests[2]
    finally:
        cfg.cleanup()
