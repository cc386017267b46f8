"""The shard controller of lab 5A: a Raft-replicated service that keeps the history of shard configurations.

``CtrlerClerk`` joins, leaves, moves and queries; each server is lab 4's
replicated server (``apps.kvraft.server``) running :class:`CtrlerState`.
"""

from apps.shardctrler.client import CtrlerClerk
from apps.shardctrler.messages import EMPTY, NSHARDS, ShardConfig
from apps.shardctrler.server import CtrlerServer, serve

__all__ = ["EMPTY", "NSHARDS", "CtrlerClerk", "CtrlerServer", "ShardConfig", "serve"]
