"""A sharded key/value service (lab 5): replica groups of lab-4 servers, each serving the shards the controller gives it.

``Clerk(ctrler_endpoints)`` has the same ``get``/``put``/``append`` as the
other clerks; ``apps.shardkv.server`` is a group's server;
``apps.shardkv.testing.ShardCluster`` is the lab's harness.
"""

from apps.shardkv.client import Clerk
from apps.shardkv.messages import key2shard
from apps.shardkv.server import ShardServerConfig, serve

__all__ = ["Clerk", "ShardServerConfig", "key2shard", "serve"]
