"""``zactor hosts``: make test hosts (network namespaces), run commands on them, break their network.

    zactor hosts up 5                       # h1..h5 on a bridge, 10.213.0.11 ..
    zactor hosts exec h2 -- zactor node --endpoint tcp://10.213.0.12:7070
    zactor hosts partition h1,h2 / h3,h4,h5
    zactor hosts heal
    zactor hosts down

Hosts made here outlive the command (the state file records them) and stay
until ``down``. Several sets can exist; commands act on the only one the CLI
made, or on ``--set PREFIX``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from apps.hosts.netns import Hosts, HostsError, Instance, available, instances, remove, state_dir, sweep_stale
from apps.hosts.probe import delivered

EPILOG = """\
examples:
  zactor hosts up 3
  zactor hosts exec h1 -- ip addr
  zactor hosts partition h1 / h2,h3        h1 alone, h2 and h3 together
  zactor hosts one-way h1 h2               h1's packets to h2 dropped, h2's to h1 pass
  zactor hosts loss h3 20                  20% of h3's packets in and out dropped
  zactor hosts isolate h2                  h2 cut off completely
  zactor hosts flap h2 --down 1 --up 1 --for 30
  zactor hosts probe h1 h2                 how many of 200 UDP datagrams get through
  zactor hosts heal
  zactor hosts down                        remove every namespace, link, rule and process

needs root, `ip` (iproute2) and `nft` (nftables). The hosts' addresses are private
to their bridge; nothing is routed out and the machine's own network is untouched.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor hosts",
        description="Test hosts: network namespaces on a private bridge that stand in for machines, "
        "with packet-level faults (nftables) between them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--set", dest="prefix", help="which set of hosts (a prefix from `list`; default: the one the CLI made)")
    sub = parser.add_subparsers(dest="op", metavar="OP", required=True)
    p = sub.add_parser("up", help="make N hosts h1..hN")
    p.add_argument("n", type=int)
    sub.add_parser("list", help="every set of hosts, its owner and its faults")
    p = sub.add_parser("exec", help="run a command inside a host: exec h2 -- CMD ARGS")
    p.add_argument("host")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("partition", help="split hosts into groups that cannot reach each other: h1,h2 / h3")
    p.add_argument("groups", nargs="+")
    p = sub.add_parser("one-way", help="drop the packets from SRC to DST only")
    p.add_argument("src")
    p.add_argument("dst")
    p = sub.add_parser("loss", help="drop PCT percent of a host's packets at random (0 ends it)")
    p.add_argument("host")
    p.add_argument("pct", type=int)
    p = sub.add_parser("isolate", help="cut a host off completely")
    p.add_argument("host")
    p = sub.add_parser("flap", help="take a host's link down and up in turn, in the foreground")
    p.add_argument("host")
    p.add_argument("--down", type=float, default=0.5, help="seconds down each time (default 0.5)")
    p.add_argument("--up", type=float, default=0.5, help="seconds up each time (default 0.5)")
    p.add_argument("--for", dest="duration", type=float, default=10.0, help="seconds to flap, then heal the link (default 10)")
    p = sub.add_parser("probe", help="count UDP datagrams that get from SRC to DST")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--count", type=int, default=200)
    sub.add_parser("heal", help="end every fault")
    sub.add_parser("down", help="remove the hosts and everything in them")
    sub.add_parser("sweep", help="remove every set whose owning process died (tests killed half-way)")
    return parser


def _chosen(prefix: str | None) -> Hosts:
    if prefix:
        return Hosts.attach(prefix)
    mine = [i for i in instances() if i.owner is None]
    if not mine:
        raise HostsError("no hosts made by `zactor hosts up` (see `zactor hosts list`)")
    if len(mine) > 1:
        raise HostsError(f"several sets of hosts: pick one with --set ({', '.join(i.prefix for i in mine)})")
    return Hosts(mine[0])


def _describe(inst: Instance) -> str:
    owner = "cli (until `down`)" if inst.owner is None else f"pid {inst.owner}" + (" DEAD: `sweep` removes it" if inst.stale else "")
    faults = []
    if inst.drops:
        faults.append("drops " + " ".join(f"{a}->{b}" for a, b in inst.drops))
    faults += [f"loss {h} {p}%" for h, p in sorted(inst.loss.items())]
    faults += [f"cut {h}" for h in inst.cut]
    return f"{inst.prefix}  {len(inst.hosts)} hosts  owner {owner}  faults: {'; '.join(faults) or 'none'}"


def _groups(words: list[str]) -> list[list[str]]:
    groups = [[h for h in part.split(",") if h] for part in " ".join(words).replace(" ", ",").split("/")]
    if len(groups) < 2 or any(not g for g in groups):
        raise HostsError("partition wants two or more non-empty groups separated by /, e.g. h1,h2 / h3")
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.op == "exec" and (not args.cmd or args.cmd == ["--"]):
        parser.error("exec needs a command: zactor hosts exec h2 -- CMD ARGS")
    why = available() if args.op == "up" else None
    if why:
        print(f"zactor hosts: cannot make hosts: {why}", file=sys.stderr)
        return 1
    try:
        if args.op == "up":
            hosts = Hosts().up(args.n, owned=False)
            print(f"{args.n} hosts, set {hosts.prefix} (state in {state_dir()})")
            for h in hosts.names:
                print(f"  {h}  {hosts.address(h)}  netns {hosts.namespace(h)}")
            print("note: CURVE clients find a host's key through the keyring; for these addresses add this machine's key:")
            print("  zactor keys add hosts $(cat KEYRING/public.key) " + " ".join(f"--host {hosts.address(h)}" for h in hosts.names))
            return 0
        if args.op == "list":
            found = instances()
            if not found:
                print("no hosts")
            for inst in found:
                print(_describe(inst))
            return 0
        if args.op == "sweep":
            removed = sweep_stale()
            print(f"removed {len(removed)} stale set(s) {' '.join(removed)}".rstrip())
            return 0
        hosts = _chosen(args.prefix)
        if args.op == "exec":
            cmd = args.cmd[1:] if args.cmd[0] == "--" else args.cmd
            return subprocess.call(hosts.command(args.host, cmd))
        if args.op == "down":
            remove(hosts.instance)
            print(f"removed {hosts.prefix}")
            return 0
        if args.op == "partition":
            hosts.partition(_groups(args.groups))
        elif args.op == "one-way":
            hosts.one_way(args.src, args.dst)
        elif args.op == "loss":
            hosts.loss(args.host, args.pct)
        elif args.op == "isolate":
            hosts.isolate(args.host)
        elif args.op == "heal":
            hosts.heal()
        elif args.op == "probe":
            got = delivered(hosts, args.src, args.dst, args.count)
            print(f"{args.src} -> {args.dst}: {got}/{args.count} datagrams delivered")
            return 0
        elif args.op == "flap":
            if args.duration <= 0:
                parser.error("--for must be positive seconds")
            hosts.flap(args.host, args.down, args.up)
            print(f"{args.host} flapping ({args.down} s down, {args.up} s up) for {args.duration} s", flush=True)
            try:
                time.sleep(args.duration)
            finally:
                hosts.stop_flapping()
            print(f"{args.host} link up again")
            return 0
        print(_describe(hosts.instance))
        return 0
    except HostsError as exc:
        print(f"zactor hosts: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # flap's link is up again by now (its finally)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
