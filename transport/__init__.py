"""ZeroMQ messaging between OS processes, with the lab network's faults built in.

Knows nothing about actors: it moves :class:`Envelope` objects addressed to a
name on a node. See :mod:`transport.node` for the usage summary and the map
of the modules a node is built from.
"""

from transport.channel import Channel
from transport.codec import DEFAULT_MAX_FRAME_BYTES, CodecError, FrameTooLarge, MalformedFrame, decode, encode
from transport.control import ControlOp, ControlRequest
from transport.counters import Counters
from transport.envelope import CONTROL_NAME, Envelope, Failure, Kind, RemoteError, message_type
from transport.faults import FaultRule, FaultSpec, FaultTable, disconnected, flatten, long_reordering, unreliable
from transport.ipc import default_endpoint
from transport.keys import InsecureBindError, InsecureConnectError, Keyring, KeyringError, SecurityWarning, init_keyring, resolve_keyring
from transport.message import register_message
from transport.node import Node
from transport.timers import Timer

__all__ = [
    "CONTROL_NAME",
    "DEFAULT_MAX_FRAME_BYTES",
    "Channel",
    "CodecError",
    "ControlOp",
    "ControlRequest",
    "Counters",
    "Envelope",
    "Failure",
    "FaultRule",
    "FaultSpec",
    "FaultTable",
    "FrameTooLarge",
    "InsecureBindError",
    "InsecureConnectError",
    "Keyring",
    "KeyringError",
    "Kind",
    "MalformedFrame",
    "Node",
    "RemoteError",
    "SecurityWarning",
    "Timer",
    "decode",
    "default_endpoint",
    "disconnected",
    "encode",
    "flatten",
    "init_keyring",
    "long_reordering",
    "message_type",
    "register_message",
    "resolve_keyring",
    "unreliable",
]
