"""Where ipc:// endpoints live, and the check that keeps a node from taking over a live one's.

Why a room: an ipc:// endpoint is a file, so it has an owner, a directory and
a life after its process: this user's sockets go in a 0700 directory another
user cannot even enter, and before a bind the file is probed, because libzmq
silently replaces an existing socket file (a second node on the same path
would steal the first one's traffic). None of this concerns tcp:// endpoints
or the node's loop.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import stat
import tempfile

from transport.private_files import socket_directory

_node_ids = itertools.count(1)


def ipc_directory_path() -> str:
    """Where :func:`ipc_directory` is, without making it (for a default shown in ``--help``)."""
    return os.path.join(tempfile.gettempdir(), f"zactor-{os.getuid()}")


def ipc_directory() -> str:
    """This user's directory for ipc:// sockets (mode 0700), made on first use.

    Another user cannot even reach a socket file inside it, whatever its mode;
    one who made it first is named in the refusal, with the way out.
    """
    return socket_directory(ipc_directory_path())


def check_ipc_free(endpoint: str) -> None:
    """Raise OSError (EADDRINUSE) if a process listens on the socket file of ``endpoint`` (ipc:// only).

    libzmq removes an existing file when it binds an ipc endpoint, so a second
    node on the same path would silently take the endpoint over from a live
    one. A file nobody listens on (its process killed) is left for the bind to
    replace, as before. Checked just before the bind: two binds racing within
    that moment are not caught. A live zactor node counts the probe as one
    refused connection (it never authenticates).
    """
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://") :]
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return  # no such file (or one we cannot see): the bind says what is wrong
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        how = "already listens there"
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: nothing listens (or the file just went)
    except OSError as exc:  # a full backlog (EAGAIN), a timeout: alive but busy, or not ours to take
        how = f"holds it ({exc.strerror or type(exc).__name__} on connect)"
    finally:
        probe.close()
    in_use = OSError(f"cannot bind node endpoint {endpoint}: a node (or another program) {how}; stop it or choose another endpoint")
    in_use.errno = errno.EADDRINUSE
    raise in_use


def default_endpoint() -> str:
    """A fresh ipc:// endpoint in this user's 0700 socket directory, unique to this process."""
    return f"ipc://{ipc_directory()}/{os.getpid()}-{next(_node_ids)}-{os.urandom(3).hex()}.sock"
