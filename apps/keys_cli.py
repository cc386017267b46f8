"""``zactor keys``: manage a cluster keyring; and the ``--keys``/``--insecure`` options of every command.

Every command that serves or connects calls :func:`add_security_options` on
its parser and :func:`apply_security_options` on its parsed arguments (two
lines). The choice travels through the environment (``ZACTOR_KEYS``,
``ZACTOR_INSECURE``), so every ActorSystem the command makes, and every
process it starts, uses it without further plumbing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from transport.keys import (
    INSECURE_ENV,
    KEYS_ENV,
    ROLES,
    Keyring,
    KeyringError,
    Member,
    default_keyring_dir,
    init_keyring,
    read_members,
    valid_key,
    write_members,
)


def add_security_options(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """Add ``--keys DIR`` and ``--insecure`` to a command's parser.

    ``nested`` is for a sub-command's parser whose parent has the options too:
    its defaults are then left out, or argparse would let the sub-command's
    unset default overwrite a value given before the sub-command's name.
    """
    group = parser.add_argument_group("security")
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    group.add_argument(
        "--keys",
        metavar="DIR",
        **unset,
        help=f"the cluster keyring (default: ${KEYS_ENV}, else {default_keyring_dir()}, created on first use)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        **unset,
        help="turn CURVE authentication and encryption off (loopback and ipc:// only): "
        "anyone who can reach the endpoint can then run code in this process",
    )


def apply_security_options(args: argparse.Namespace) -> None:
    """Make the parsed ``--keys``/``--insecure`` this process's (and its children's) defaults."""
    keys = getattr(args, "keys", None)
    if keys:
        os.environ[KEYS_ENV] = str(Path(keys).expanduser().absolute())
    if getattr(args, "insecure", False):
        os.environ[INSECURE_ENV] = "1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor keys",
        description="Manage a cluster keyring: this machine's CURVE key pair and the public keys of the "
        "machines allowed in. A key in the keyring is trusted with code execution in every node that uses it.",
        epilog="two machines: on each, `zactor keys init` and copy the printed public key; on A, "
        "`zactor keys add b KEY-OF-B --host B-ADDRESS --role member`; on B, `zactor keys add a KEY-OF-A "
        "--host A-ADDRESS --role member`. A clerk or dashboard that only sends requests: "
        "`zactor keys add NAME KEY` (role client)",
    )
    sub = parser.add_subparsers(dest="op", metavar="OP", required=True)
    p = sub.add_parser("init", help="create a keyring (if missing) and print this machine's public key",
                       description="Create a keyring (if missing) and print this machine's public key.")
    p.add_argument("dir", nargs="?", help="where (the same as --keys DIR)")
    _keys_option(p)
    p = sub.add_parser("show", help="print this machine's public key (a line to copy to other machines)",
                       description="Print this machine's public key: the line to copy to the other machines.")
    _keys_option(p)
    p = sub.add_parser("add", help="allow a key in, with its role, and say which hosts it serves",
                       description="Allow a key in, with its role (client or member), and say which hosts it serves.")
    p.add_argument("name", help="a name for the member (e.g. its host name)")
    p.add_argument("public_key", metavar="PUBKEY", help="its public key, as `zactor keys show` prints it there")
    p.add_argument("--host", action="append", default=[], help="a host (name or address) it serves; repeatable")
    p.add_argument(
        "--role",
        choices=ROLES,
        default="client",
        help="client (default): may send requests (registered message classes and plain data) but never code; "
        "member: trusted with code execution (other machines of the cluster, node agents)",
    )
    _keys_option(p)
    p = sub.add_parser("list", help="list this machine's key and the members",
                       description="List this machine's key and the members of the keyring, with their roles.")
    _keys_option(p)
    p = sub.add_parser("revoke", help="remove a member; nodes refuse its new connections at once",
                       description="Remove a member; nodes refuse its new connections at once.")
    p.add_argument("name", help="the member's name, as `zactor keys list` shows it")
    _keys_option(p)
    return parser


def _keys_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="DIR", help=f"the keyring (default: ${KEYS_ENV}, else {default_keyring_dir()})")


def _dir(given: str | None) -> Path:
    return Path(given or os.environ.get(KEYS_ENV) or default_keyring_dir()).expanduser().absolute()


def _keys_as_operands(argv: list[str]) -> list[str]:
    """A Z85 key may begin with "-" (one in 85 does), which argparse would take
    for an option: such a key, pasted as ``add``'s PUBKEY, is moved behind a
    "--" at the end, where it can only be an operand."""
    if argv[:1] != ["add"] or "--" in argv:
        return argv
    keyish = [a for a in argv[1:] if a.startswith("-") and len(a) == 40 and _is_key(a)]
    if len(keyish) != 1:
        return argv
    rest = list(argv)
    rest.remove(keyish[0])
    return [*rest, "--", keyish[0]]


def _is_key(text: str) -> bool:
    try:
        valid_key(text)
    except KeyringError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_keys_as_operands(list(sys.argv[1:] if argv is None else argv)))
    try:
        if args.op == "init":
            if args.dir and args.keys and Path(args.dir).expanduser().absolute() != Path(args.keys).expanduser().absolute():
                parser.error(f"init: two different keyrings named: {args.dir} and --keys {args.keys}")
            directory = init_keyring(_dir(args.dir or args.keys))
            ring = Keyring(directory)
            print(f"keyring {directory}", file=sys.stderr)
            print(ring.public.decode())
            return 0
        ring = Keyring(_dir(args.keys))
        if args.op == "show":
            print(ring.public.decode())
        elif args.op == "list":
            print(f"# keyring {ring.directory}")
            print(f"self {ring.public.decode()} member (this machine; ipc:// and loopback)")
            for m in ring.members():
                print(f"{m.name} {m.public.decode()} {m.role} {','.join(m.hosts) or '(no hosts: may connect, serves none)'}")
        elif args.op == "add":
            return _add(ring, args.name, args.public_key, args.host, args.role)
        elif args.op == "revoke":
            members = list(read_members(ring.members_path)) if ring.members_path.exists() else []
            kept = [m for m in members if m.name != args.name]
            if len(kept) == len(members):
                print(f"zactor keys revoke: no member named {args.name!r} in {ring.directory}", file=sys.stderr)
                return 1
            write_members(ring.members_path, kept)
            print(f"revoked {args.name}", file=sys.stderr)
    except KeyringError as exc:
        print(f"zactor keys {args.op}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add(ring: Keyring, name: str, public_key: str, hosts: list[str], role: str) -> int:
    if not name.isprintable() or any(c.isspace() for c in name) or name.startswith("#"):
        print(f"zactor keys add: a member name has no spaces and does not start with #: {name!r}", file=sys.stderr)
        return 2
    key = valid_key(public_key)
    bad = [h for h in hosts if not h or "," in h or any(c.isspace() for c in h)]
    if bad:
        print(f"zactor keys add: bad --host {bad[0]!r}", file=sys.stderr)
        return 2
    members = list(read_members(ring.members_path)) if ring.members_path.exists() else []
    if any(m.name == name for m in members):
        print(f"zactor keys add: {name!r} is already a member; `zactor keys revoke {name}` first", file=sys.stderr)
        return 1
    members.append(Member(name, key, tuple(hosts), role))
    write_members(ring.members_path, members)
    print(f"added {name} as a {role}" + (f" serving {', '.join(hosts)}" if hosts else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
