"""A fault-tolerant, linearizable key/value service on Raft (lab 4A and 4B).

Each server is one OS process hosting a Raft peer and the KV state machine
beside it (``apps.kvraft.server``); ``Clerk`` finds the leader and retries;
``apps.kvraft.testing.KVCluster`` is the lab's harness on real processes.
"""

from apps.kvraft.client import Clerk
from apps.kvraft.server import ServerConfig, serve
from apps.kvsrv.client import KVUnavailable

__all__ = ["Clerk", "KVUnavailable", "ServerConfig", "serve"]
