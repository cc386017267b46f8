"""ZeroMQ messaging between OS processes, with the lab network's faults built in.

Knows nothing about actors: it moves :class:`Envelope` objects addressed to a
name on a node. See :mod:`transport.node` for the usage summary.
"""

from transport.codec import DEFAULT_MAX_FRAME_BYTES, CodecError, FrameTooLarge, MalformedFrame, decode, encode
from transport.counters import Counters
from transport.envelope import CONTROL_NAME, Envelope, Failure, Kind, RemoteError, message_type
from transport.faults import FaultRule, FaultTable, disconnected, long_reordering, unreliable
from transport.keys import InsecureBindError, InsecureConnectError, Keyring, KeyringError, SecurityWarning, init_keyring, resolve_keyring
from transport.message import register_message
from transport.node import Channel, ControlOp, ControlRequest, Node, Timer, default_endpoint

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
    "init_keyring",
    "long_reordering",
    "message_type",
    "register_message",
    "resolve_keyring",
    "unreliable",
]
