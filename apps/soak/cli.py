"""``zactor soak SYSTEM``: a crash-recovery soak run with a verdict (exit 0 pass, 1 violation, 2 invalid)."""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.signals import setting
from apps.soak import netns, report
from apps.soak.run import SoakConfig, Status, stopped_early
from apps.soak.schedule import make_schedule, parse_nemeses
from apps.soak.verdict import EXIT_NAMES, INTERRUPTED, INVALID, slow_windows, window_throughputs

log = logging.getLogger(__name__)

SYSTEMS = {
    "kvraft": ("kill", "pause", "partition", "net", "disk", "burst", "vote", "stale", "membership"),
    "raft": ("kill", "pause", "partition", "net", "disk"),
    "mr": ("kill",),
    "etcd": ("kill", "pause", "partition"),
    "shardkv": ("kill", "pause", "partition", "net", "disk", "reconfig"),
}
"""Each system and the nemeses it takes."""
NETNS_ONLY = {"mr": ("partition", "net")}
"""Nemeses a system takes on namespace hosts only: mr's partitions and lossy links exist only as packet filters."""
LOCAL_ONLY = ("membership",)
"""Nemeses not built for ``--hosts netns`` (a new server would need a host of its own): ``all`` leaves them out there."""
MIN_THROUGHPUT = {"kvraft": 100.0, "etcd": 100.0, "raft": 50.0, "mr": 0.0, "shardkv": 50.0}
"""Default answered calls/s below which a run is invalid. raft's clients go through the lab harness's
``one()`` (an ask, then a wait for the applier to see a majority), a test driver rather than a client,
so its bar is lower; mr's unit is a whole job, and a run is invalid there only if no job completed."""
UNITS = {"kvraft": "calls answered", "etcd": "calls answered", "raft": "commands acknowledged", "mr": "jobs completed",
         "shardkv": "calls answered"}
"""What each system's throughput counts."""
BREAKS = ("ack-before-fsync", "stale-reads", "no-dedup-in-snapshot", "dedup-not-moved")
"""The broken variants of ``apps/soak/broken.py`` (named here so that --help stays instant)."""
BROKEN_FOR = {"dedup-not-moved": "shardkv"}
"""The system of each broken variant that is not kvraft's."""

EPILOG = """\
nemeses (each on a random schedule from the seed, each healed before the next):
  kill       SIGKILL of one server, the leader, a minority or all, then restart from disk
  pause      SIGSTOP of a server or the leader for longer than an election timeout, then SIGCONT
  partition  majority/minority, the leader isolated, a bridge; through the transport's fault rules
  net        the lab's unreliable network, and long reordering
  (--hosts netns, kvraft, raft, etcd and mr: each server in a network namespace of its own, the clients
   in another; partition drops the packets between hosts, net/unreliable drops 10% of every server's
   packets, net/long-reordering flaps every server's link; the report says `hosts: netns`. mr: each
   worker on a host, the coordinator on the clients'; partition cuts one worker's host off from the
   coordinator and the other workers)
  disk       servers on a lazy disk (writes reach the file only at fsync): kills that lose the
             unsynced tail; a flipped bit in a stopped server's journal, which it must refuse
  burst      the leader's AppendEntries held while a burst of writes reaches it, then it is isolated
             or killed (and restarted at the heal)
  vote       an election forced, a follower SIGKILLed the moment its term rises (its vote), restarted
  stale      everything one server sends its peers held 0.5-2.5 s and reordered, delivered after the
             others moved to a new term
  reconfig   shardkv only: a group leaves and joins again, shards move to a group, or a burst of both
             (lossy-churn: on the unreliable network; crash-churn: with one group killed through it;
             muted-leave: a group's answers to the clerks lost just before it leaves),
             while the clerks write to the shards on the move (shardkv's other faults hit one group
             or the controller, drawn from the seed; net hits the whole service)
  membership kvraft only: a server replaced while the clerks write. replace-one: a fresh, empty server
             is started on a new endpoint and added as a learner, promoted to a voter once it has
             caught up, then the old one is removed, SIGKILLed and its data directory deleted;
             replace-leader: the same for the leader, which removes itself and steps down;
             replace-dead: the old one SIGKILLed and its data deleted first (a dead disk), then
             replaced. The new server takes the old one's place as a target of the later faults;
             the report names who replaced whom (summary.json: replacements), and a replacement
             that fails (no leader in time) is the fault's error, finished at its heal
             (not with --hosts netns, where `all` leaves it out)
  (burst, vote, stale and membership are kvraft's; reconfig is shardkv's; the others are every system's)
  (mr takes kill: workers killed every few seconds; with --hosts netns also partition and net;
   etcd takes kill, pause, partition, its partitions through a TCP proxy in front of each member's
   peer port)

exit codes: 0 pass, 1 violation, 2 invalid run (too little traffic in the run or in any 10 s of it, or
no verdict), 130 interrupted (Ctrl-C or SIGTERM: the faults and traffic stop, everything is healed, the
windows recorded so far are checked, and the report and summary.json are written, marked interrupted;
a second Ctrl-C quits at once, without them)

history: DIR/history.jsonl holds every checked call (kvraft, etcd), as `zactor check` reads it

examples:
  zactor soak kvraft --minutes 10 --out soak-out        every nemesis, ten minutes
  zactor soak kvraft --minutes 1 --nemesis kill,disk --seed 7
  zactor soak mr --minutes 3
  zactor soak mr --hosts netns --minutes 3              workers on hosts: kill, partition, net
  zactor soak etcd --minutes 3                          the same workloads and verdict against etcd
  zactor soak shardkv --minutes 10                      a controller and 3 groups of 3, every nemesis
"""


def nemeses_of(system: str, hosts: str) -> tuple[str, ...]:
    """The nemeses ``system`` takes where it runs (``--hosts``)."""
    return SYSTEMS[system] + (NETNS_ONLY.get(system, ()) if hosts == "netns" else ())


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zactor soak",
        description="Run a system under a workload while a nemesis kills, pauses, partitions and corrupts it; "
        "check every recorded history; write a report. The seed replays the same faults at the same offsets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("system", choices=sorted(SYSTEMS), help="what to soak")
    p.add_argument("--minutes", type=_positive(float), default=1.0, help="how long the faults and traffic go on (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault schedule and workload (default: random, printed)")
    p.add_argument("--nemesis", default="all", help="comma-separated nemeses (each described below), 'all' (default) or 'none'")
    p.add_argument("--clients", type=_positive(int), default=8, help="workload client threads (default 8)")
    p.add_argument("--out", default=None, help="report directory (default soak-SYSTEM-SEED)")
    p.add_argument("--min-throughput", type=float, default=None,
                   help="answered calls per second below which the run is invalid (default: 100; raft 50; mr: no job completed)")
    p.add_argument("--throughput-window", type=_positive(int), default=10, metavar="SECONDS",
                   help="every full window of this many seconds must reach --min-throughput too, not only the "
                        "run's average: an outage makes the run invalid (default 10)")
    p.add_argument("--window", type=_positive(float), default=15.0, help="seconds of history per checked window (default 15)")
    p.add_argument("--groups", type=_positive(int), default=3, help="shardkv: replica groups of 3 servers (default 3)")
    p.add_argument("--maxraftstate", type=int, default=4000, help="kvraft, shardkv: snapshot at this many bytes of Raft state (default 4000)")
    p.add_argument("--no-history", action="store_true",
                   help="kvraft, etcd: do not write DIR/history.jsonl (about 1 KB per call, as an append's reply is the "
                        "list so far: some 250 MB per ten minutes; its windows are checked all the same)")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop the faults and traffic at the first violation found while they run, rather than at the "
                        "end of --minutes (the final checks and the report follow as usual)")
    p.add_argument("--broken", choices=BREAKS, default="",
                   help="test-only, kvraft (shardkv: dedup-not-moved): run a deliberately broken server variant, to check the checkers catch it")
    p.add_argument("--hosts", choices=("local", "netns"), default="local",
                   help="kvraft, raft, etcd, mr: where the servers (mr: the workers) run. local (default): all on this machine, partition and net "
                        "faults as the transport's fault rules. netns: each server in a network namespace of its own and "
                        "the clerks in another, partition and net faults as nftables packet filters (needs root, ip, nft)")
    p.add_argument("--schedule-only", action="store_true", help="print the fault schedule as JSON and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        nemeses = parse_nemeses(args.nemesis, nemeses_of(args.system, args.hosts))
    except ValueError as exc:
        extra = NETNS_ONLY.get(args.system, ()) if args.hosts != "netns" else ()
        parser.error(str(exc) + (f"; with --hosts netns also {', '.join(extra)}" if extra else ""))
    if args.hosts == "netns":
        if args.nemesis.strip() == "all":
            nemeses = tuple(n for n in nemeses if n not in LOCAL_ONLY)
        elif set(nemeses) & set(LOCAL_ONLY):
            parser.error(f"--hosts netns does not take the nemesis {', '.join(sorted(set(nemeses) & set(LOCAL_ONLY)))} yet "
                         "(a new server would need a host of its own)")
    if args.maxraftstate == 0 or args.maxraftstate < -1:
        parser.error(f"--maxraftstate must be -1 (never snapshot) or positive bytes, got {args.maxraftstate}")
    seed = args.seed if args.seed is not None else random.randrange(1, 10**9)
    out = Path(args.out or f"soak-{args.system}-{seed}")
    seconds = args.minutes * 60.0
    broken = args.broken
    if broken and args.system != BROKEN_FOR.get(broken, "kvraft"):
        parser.error(f"--broken {broken} is for {BROKEN_FOR.get(broken, 'kvraft')} only")
    command = shlex.join(
        ["zactor", "soak", args.system, "--minutes", f"{args.minutes:g}", "--seed", str(seed), "--nemesis", ",".join(nemeses) or "none",
         "--clients", str(args.clients), "--window", f"{args.window:g}",
         *(["--throughput-window", str(args.throughput_window)] if args.throughput_window != 10 else []),
         *(["--maxraftstate", str(args.maxraftstate)] if args.system in ("kvraft", "shardkv") else []),
         *(["--groups", str(args.groups)] if args.system == "shardkv" else []),
         *(["--fail-fast"] if args.fail_fast else []), *(["--broken", broken] if broken else []),
         *(["--hosts", args.hosts] if args.hosts != "local" else []), "--out", str(out)]
    )
    if args.schedule_only:

        servers = 5 if args.system in ("kvraft", "raft") else 3
        print(json.dumps([f.to_json() for f in make_schedule(seed, seconds, nemeses, servers)], indent=1))
        return 0

    try:
        report.require_plotly()
    except RuntimeError as exc:
        print(f"zactor soak: {exc}", file=sys.stderr)
        return INVALID
    min_tp = args.min_throughput if args.min_throughput is not None else MIN_THROUGHPUT[args.system]
    config = SoakConfig(
        system=args.system, seconds=seconds, seed=seed, nemeses=nemeses, clients=args.clients, out=out,
        min_throughput=min_tp, window=args.window, maxraftstate=args.maxraftstate, command=command, broken=broken,
        fail_fast=args.fail_fast, throughput_window=args.throughput_window, history=not args.no_history,
        servers=5 if args.system in ("kvraft", "raft") else 3, groups=args.groups, hosts=args.hosts,
    )
    if args.hosts == "netns":
        why = netns.unavailable(config)
        if why:
            print(f"zactor soak: --hosts netns: {why}", file=sys.stderr)
            return INVALID
    if broken:
        print(f"zactor soak: WARNING: the broken variant {broken} is switched on (test-only)", file=sys.stderr)
    print(f"zactor soak {args.system}: seed {seed}, {args.minutes:g} min, nemeses {','.join(nemeses) or 'none'}, report in {out}/",
          file=sys.stderr)
    print(f"  replay: {command}", file=sys.stderr)
    return run(config)


def run(config: SoakConfig) -> int:
    """The run, its verdict and its report; Ctrl-C or SIGTERM end it early with the report all the same (exit 130)."""
    previous = {sig: signal.signal(sig, _on_signal(config)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with netns.soak_hosts(config):  # --hosts netns: the hosts, removed at the end whatever happens
            return _run(config)
    except netns.HostsError as exc:
        print(f"zactor soak: --hosts netns: {exc}", file=sys.stderr)
        return INVALID
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _on_signal(config: SoakConfig) -> Callable[[int, Any], None]:
    """The first Ctrl-C or SIGTERM ends the timed part and cuts the final steps short; a second one quits at once."""

    def handle(signum: int, frame: Any) -> None:
        if config.interrupt.is_set():
            raise KeyboardInterrupt
        setting(config.interrupt)(signum, frame)
        print(f"\nzactor soak: {signal.Signals(signum).name}: stopping; healing, checking what was recorded and writing "
              "the report (again to quit at once, without a report)", file=sys.stderr, flush=True)

    return handle


def _run(config: SoakConfig) -> int:
    # Each system's runner is imported when its run starts: a run loads its own harness only.
    status = Status(config)
    started = time.time()
    if config.system == "kvraft":
        from apps.soak.kvraft import run_kvraft

        findings, extra = run_kvraft(config, status)
    elif config.system == "raft":
        from apps.soak.raft import run_raft

        findings, extra = run_raft(config, status)
    elif config.system == "shardkv":
        from apps.soak.shardkv import run_shardkv

        findings, extra = run_shardkv(config, status)
    elif config.system == "etcd":
        from apps.soak.etcd import run_etcd

        findings, extra = run_etcd(config, status, netns.etcd_members)
    else:
        from apps.soak.mr import run_mr

        findings, extra = run_mr(config, status)
    extra.update(netns.describe(config))
    ran = extra.get("seconds", config.seconds)
    extra.update(stopped_early(config, ran))
    answered = extra["samples"].answered
    throughput = answered / max(ran, 1e-9)
    extra["throughput"] = round(throughput, 1)
    if throughput < config.min_throughput:
        findings.invalid.append(f"throughput {throughput:.1f} answered calls/s is below the minimum {config.min_throughput:g}")
    per_window = window_throughputs(extra["samples"].series(ran)["ok"], ran, config.throughput_window)
    extra["window_throughputs"] = per_window
    findings.invalid.extend(slow_windows(per_window, config.throughput_window, config.min_throughput))
    code = INTERRUPTED if config.interrupt.is_set() else findings.exit_code()
    paths = report.write(config, findings, extra, code, started)
    verdict = EXIT_NAMES[code].upper()
    print(f"zactor soak {config.system}: {verdict} ({answered} {UNITS[config.system]}, {throughput:.1f}/s, "
          f"{len(extra.get('events', []))} faults)", file=sys.stderr)
    for line in expected_lines(extra):
        print(f"  {line}", file=sys.stderr)
    for v in findings.violations[:10]:
        print(f"  violation: {v}", file=sys.stderr)
    for v in findings.invalid[:10]:
        print(f"  invalid: {v}", file=sys.stderr)
    print(f"  report: {paths[0]}\n  replay: {config.command}", file=sys.stderr)
    return code


def expected_lines(extra: dict[str, Any]) -> list[str]:
    """One line per kind of expected trouble the faults caused: refused damaged journals, calls that gave up."""
    lines = []
    corrupt = extra.get("corrupt_journals") or {}
    if any(corrupt.values()):
        lines.append(f"damaged journals: {corrupt.get('refused', 0)} refused at start as they must be (CorruptStateError), "
                     f"{corrupt.get('loaded', 0)} loaded, {corrupt.get('skipped', 0)} not flipped (under two records)")
    partitioned = extra.get("after_partition")
    if partitioned:
        lines.append(f"jobs a partition overlapped (and no other fault): {partitioned['jobs']}, in which {partitioned['maps_run_again']} "
                     f"maps ran again and {partitioned['tasks_reassigned']} tasks went to another worker")
    kinds = extra.get("error_kinds") or {}
    if kinds:
        lines.append(f"calls that gave up during faults: {sum(kinds.values())} (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")")
    return lines


if __name__ == "__main__":
    sys.exit(main())
