"""The replicated states' digests depend on what a state holds, not on how its objects came to be.

The soak compares replicas by these digests after the final heal. They were
pickles, and pickle writes one object referenced twice differently from two
equal copies: a replica that had restored a snapshot (its strings copies of
one another) and then moved on digested differently from one that had not,
and the soak reported "replicas differ" about replicas in the same state.
Each test builds that pair: the same log applied to a state and to a copy
restored from its snapshot half-way.
"""

from __future__ import annotations

from apps.kvraft.state import KVState, canonical_digest
from apps.kvsrv.messages import Append, Put
from apps.shardctrler.messages import NSHARDS, Join, Leave, Move, ShardConfig
from apps.shardctrler.state import CtrlerState
from apps.shardkv.messages import DeleteShards, InstallShards, NewConfig, ShardsReleased
from apps.shardkv.state import SERVING, ShardKVState

G, H = 100, 101


def config(num: int, mine: int) -> ShardConfig:
    """Shards 0..mine-1 in group G, the rest in H."""
    return ShardConfig(num, tuple([G] * mine + [H] * (NSHARDS - mine)), {G: ("g",), H: ("h",)})


def test_a_shard_group_restored_from_a_snapshot_digests_as_the_one_that_was_not():
    live = ShardKVState(G)
    live.apply_config(NewConfig(config(1, 5)))  # shards 0-4 new here: SERVING, the module's own string
    restored = ShardKVState.restore(live.snapshot())  # its statuses: one unpickled "serving", not the constant
    for st in (live, restored):
        st.apply_config(NewConfig(config(2, 6)))  # shard 5 comes from H
        st.install(InstallShards(2, {5: ({"k": "v"}, {7: (1, None)})}))
        st.released(ShardsReleased(2, (5,)))  # shard 5 SERVING: the constant again, beside the unpickled ones
        st.apply_config(NewConfig(config(3, 4)))  # shards 4 and 5 go to H
        st.delete(DeleteShards(3, (4,)))
    assert restored.status == live.status and restored.status[0] == SERVING and restored.status[5] == "giving"
    assert restored.digest() == live.digest()
    other = ShardKVState.restore(live.snapshot())
    other.delete(DeleteShards(3, (5,)))
    assert other.digest() != live.digest()  # and it still tells different states apart


def test_a_kv_replica_restored_from_a_snapshot_digests_as_the_one_that_was_not():
    value = "x" * 20
    live = KVState()
    live.apply(Put("a", value, client=1, seq=1))
    live.apply(Append("a", "y", client=2, seq=1))  # client 2's reply: that value
    restored = KVState.restore(live.snapshot())  # its copy of it
    for st in (live, restored):
        st.apply(Put("b", value, client=3, seq=1))  # in live the very object client 2's reply is; in restored, not
        st.apply(Append("b", "z", client=1, seq=2))
    assert restored.digest() == live.digest()
    restored.apply(Append("b", "!", client=1, seq=3))
    assert restored.digest() != live.digest()


def test_a_controller_restored_from_a_snapshot_digests_as_the_one_that_was_not():
    servers = ("s1", "s2")
    live = CtrlerState()
    live.apply(Join({G: servers}, client=1, seq=1))
    restored = CtrlerState.restore(live.snapshot())  # G's servers: an equal copy
    for st in (live, restored):
        st.apply(Join({H: servers}, client=1, seq=2))  # in live the very tuple G has; in restored, not
        st.apply(Move(3, H, client=2, seq=1))
        st.apply(Leave((H,), client=1, seq=3))
    assert restored.digest() == live.digest()
    restored.apply(Move(0, G, client=2, seq=2))
    assert restored.digest() != live.digest()


def test_the_digest_reads_values_not_identities():
    one = "v" * 30
    shared = [one, one]
    copies = [one, "".join(["v"] * 30)]
    assert shared == copies and canonical_digest(shared) == canonical_digest(copies)
