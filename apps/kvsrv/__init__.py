"""An exactly-once, linearizable key/value server (lab 2) on the actor runtime."""

from apps.kvsrv.client import Clerk, KVUnavailable
from apps.kvsrv.messages import Append, BadRequest, Get, MemoryUsage, Put
from apps.kvsrv.server import KVServer, serve

__all__ = ["Append", "BadRequest", "Clerk", "Get", "KVServer", "KVUnavailable", "MemoryUsage", "Put", "serve"]
