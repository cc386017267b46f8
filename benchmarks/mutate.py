"""The mutation campaign: how many classic Raft and KV bugs do our checkers catch, and how fast?

Each named mutant below is one classic bug, planted as a tiny text change in
a temporary copy of the tree; the campaign then runs the killing commands
against that copy, in order, and stops at the first that fails:

1. ``kv-sim``: the deterministic KV simulation (``apps/kvraft/sim.py``),
   seeds 1..N, stopping at the first failing seed;
2. ``raft-sim``: the Raft core's own simulation (``apps/raft/sim.py``: each
   seed picks its size, snapshots, reads, membership changes, crashes
   between send and write, starving), seeds 1..N, stopping likewise;
3. ``unit-tests``: :data:`UNIT_TESTS`, the Raft core's and the KV state
   machine's unit tests.

The two simulations share :data:`SIM_SHARE` of the budget, half each (the
Raft one also gets what the KV one left); the unit tests come last, so a
mutant they kill is counted for a simulation if one kills it too: the goal
is that the simulations alone find every bug.

A mutant is *killed* when a killer fails within the per-mutant budget, and
*survives* otherwise. Before any mutant, the same killers run on the clean
copy and must pass (a killer that fails on correct code kills nothing).
``zactor bench`` does not run this; run it on demand::

    python -m benchmarks.mutate                        every mutant, table on the terminal
    python -m benchmarks.mutate --target kvraft --json mutants.json
    python -m benchmarks.mutate --only figure8-commit-old-term --seeds 2000
    python -m benchmarks.mutate --list

A mutant marked ``equivalent`` cannot change behaviour in this code base
(its note says why); it is run all the same, and its survival is reported as
expected rather than as a gap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UNIT_TESTS = ("tests/test_raft_core.py", "tests/test_raft_read_index.py", "tests/test_raft_membership.py",
              "tests/test_kvraft_state.py")
"""The Raft core's and the KV state machine's unit tests (a second or so each): the last killer."""
SIM_SHARE = 0.9
"""The share of a mutant's budget the two simulations may use between them; the unit tests get the rest
(they take about 5 s on two loaded cores, so 18 s of a 3-minute budget is room enough)."""
COPIED = ("actors", "transport", "apps", "benchmarks", "tests", "setup.cfg", "pyproject.toml")
TARGETS = {
    "raft": ("apps/raft/core.py", "apps/raft/storage.py", "apps/raft/peer.py", "apps/raft/membership.py"),
    "kvraft": ("apps/kvraft/state.py", "apps/kvraft/server.py"),
}


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str
    """The safety property the bug breaks."""
    path: str
    old: str
    new: str
    equivalent: str = ""
    """Why the change cannot be observed, for a mutant that is equivalent; empty otherwise."""
    sims_miss: str = ""
    """For a mutant only a unit test kills within the budget: why neither simulation does (what it would take)."""


CORE, STORAGE, PEER = "apps/raft/core.py", "apps/raft/storage.py", "apps/raft/peer.py"
MEMBERSHIP = "apps/raft/membership.py"
STATE, SERVER = "apps/kvraft/state.py", "apps/kvraft/server.py"

MUTANTS: tuple[Mutant, ...] = (
    # ---- elections and vote durability
    Mutant("vote-ignores-log", "leader completeness (the election restriction, §5.4.1)", CORE,
           "granted = m.term == self.term and self.voted_for in (None, m.src) and up_to_date",
           "granted = m.term == self.term and self.voted_for in (None, m.src)"),
    Mutant("step-down-forgets-vote", "election safety (a leader that gives up leading keeps its term's vote)", CORE,
           "                self._become_follower(self.term, None)\n                self.election_elapsed = 0\n",
           "                self._become_follower(self.term, None)\n                self.voted_for = None\n"),
    Mutant("vote-twice-in-a-term", "election safety (one vote per term)", CORE,
           "granted = m.term == self.term and self.voted_for in (None, m.src) and up_to_date",
           "granted = m.term == self.term and up_to_date"),
    Mutant("vote-not-made-durable", "election safety (a vote survives a crash)", CORE,
           "                self.voted_for = m.src\n                self._hs_dirty = True\n",
           "                self.voted_for = m.src\n"),
    Mutant("stale-vote-reply-counted", "election safety (votes of an old term do not count)", CORE,
           "if self.role is not Role.CANDIDATE or m.term != self.term or not m.granted:",
           "if self.role is not Role.CANDIDATE or not m.granted:"),
    Mutant("vote-reply-before-persist", "vote durability (the Ready's contract: a grant leaves after the write)", CORE,
           "self._pending.after.append(RequestVoteReply(", "self._pending.messages.append(RequestVoteReply("),
    # ---- log matching and truncation
    Mutant("append-skips-prev-term-check", "log matching (prev_log_term must match)", CORE,
           "        if mine != prev_term:\n", "        if mine != prev_term and False:\n"),
    Mutant("stale-append-truncates", "log matching (a late AppendEntries must not cut newer entries)", CORE,
           "            if have == entry.term:\n                continue\n", ""),
    Mutant("replay-keeps-truncated-entries", "log truncation is durable (replay drops overwritten entries)", STORAGE,
           "                        del entries[first - base - 1 :]\n", ""),
    # ---- commit rules
    Mutant("figure8-commit-old-term", "leader completeness (Figure 8: count replicas only for the current term)", CORE,
           "if candidate > self.commit_index and self.log.term_at(candidate) == self.term:",
           "if candidate > self.commit_index:"),
    Mutant("follower-commits-beyond-match", "state machine safety (commit only what matches the leader)", CORE,
           "self.commit_index = max(self.commit_index, min(m.leader_commit, last_new))",
           "self.commit_index = max(self.commit_index, m.leader_commit)"),
    # ---- stale terms and stale messages
    Mutant("append-from-old-term-accepted", "log matching (a deposed leader's AppendEntries is refused)", CORE,
           "    def _on_append(self, m: AppendEntries) -> None:\n        if m.term < self.term:",
           "    def _on_append(self, m: AppendEntries) -> None:\n        if m.term < self.term - 1:"),
    Mutant("stale-append-reply-counted", "commit safety (replies of an old term do not count)", CORE,
           "    def _on_append_reply(self, m: AppendEntriesReply) -> None:\n        if self.role is not Role.LEADER or m.term != self.term:",
           "    def _on_append_reply(self, m: AppendEntriesReply) -> None:\n        if self.role is not Role.LEADER:"),
    # ---- ReadIndex
    Mutant("refusal-echoes-read-round", "linearizable reads (a refusal of an old-term message confirms no round)", CORE,
           "self._pending.messages.append(AppendEntriesReply(self.term, self.me, m.src, False, 0, 0, 0, 0))",
           "self._pending.messages.append(AppendEntriesReply(self.term, self.me, m.src, False, 0, 0, 0, m.read_round))"),
    Mutant("readindex-leader-alone-confirms", "linearizable reads (a majority confirms leadership)", CORE,
           "        confirmed = rounds[len(rounds) // 2]", "        confirmed = rounds[0]"),
    Mutant("readindex-before-term-commit", "linearizable reads (a new leader's commit index may be stale)", CORE,
           "        if self.log.term_at(self.commit_index) != self.term:\n            self._reads_need_commit",
           "        if False:\n            self._reads_need_commit"),
    Mutant("read-answered-before-applied", "linearizable reads (answer once the read index is applied)", SERVER,
           "            if index > self.applied:\n                still.append", "            if False:\n                still.append",
           equivalent="the core yields a read in the same Ready as the applies through its index, after them "
                      "(ready() collects applies up to the commit index, which is at least every read index it confirmed), "
                      "and the server applies a batch's entries before it answers the batch's reads, so a read never "
                      "arrives ahead of its index; the wait guards a shell that would deliver reads on their own"),
    # ---- snapshots and InstallSnapshot ordering
    Mutant("install-older-snapshot", "apply order (an InstallSnapshot behind the commit index is ignored)", CORE,
           "        if m.last_included_index > self.commit_index:", "        if m.last_included_index > self.log.snapshot_index:"),
    # ---- the duplicate table and exactly-once
    Mutant("dedup-off-by-one", "exactly-once (a retry of the latest request is a duplicate)", STATE,
           "if last is None or seq > last[0]:", "if last is None or seq >= last[0]:"),
    Mutant("dedup-left-out-of-snapshot", "exactly-once across snapshots", STATE,
           "return pickle.dumps((self.data, self.latest), protocol=pickle.HIGHEST_PROTOCOL)",
           "return pickle.dumps((self.data, {}), protocol=pickle.HIGHEST_PROTOCOL)"),
    Mutant("duplicate-answers-nothing", "exactly-once replies (a retry gets the first reply)", STATE,
           "return True, (last[1] if seq == last[0] else None)", "return True, None"),
    # ---- fsync and acknowledgement order
    Mutant("journal-without-fsync", "durability before acknowledgement", STORAGE,
           "fsync=fsync, lazy=lazy_disk)", "fsync=False, lazy=lazy_disk)"),
    Mutant("vote-journaled-only-with-entries", "vote durability (a term and vote record of its own)", STORAGE,
           "        if rd.hard_state is not None:\n            records.append",
           "        if rd.hard_state is not None and rd.entries:\n            records.append"),
    Mutant("send-before-fsync", "durability before acknowledgement (the shell's order)", PEER,
           "        if rd.must_sync:\n            storage.save(rd, core)  # durable before any acknowledgement or vote of this"
           " Ready is sent, or an apply\n        for msg in rd.messages_after_persist:\n            send(msg)\n",
           "        for msg in rd.messages_after_persist:\n            send(msg)\n"
           "        if rd.must_sync:\n            storage.save(rd, core)\n"),
    # ---- membership changes
    Mutant("conf-change-without-own-term-rule", "election safety across changes (the 2015 single-server bug)", MEMBERSHIP,
           "    if not own_term_committed:\n", "    if False:\n"),
    Mutant("two-conf-changes-in-flight", "election safety across changes (one change at a time)", MEMBERSHIP,
           "    if uncommitted:\n", "    if False:\n"),
    Mutant("server-number-reused", "election safety (a removed server's old votes count for a new one)", MEMBERSHIP,
           "        if s < next_id:\n", "        if False:\n"),
    Mutant("learner-counts-toward-commit", "state machine safety (only voters form a majority)", CORE,
           "for v in self.membership.voters), reverse=True)", "for v in self.membership.members), reverse=True)"),
    Mutant("deposed-remover-never-campaigns", "liveness (a server whose own removal is uncommitted may hold its only copy)",
           CORE, "        return self.me in self.membership.voters or self.me in self.committed_membership.voters\n",
           "        return self.me in self.membership.voters\n"),
    Mutant("removed-by-an-uncommitted-change", "membership (a server stops only once its removal has committed)", CORE,
           "        committed = self.committed_membership\n        return committed",
           "        committed = self.membership\n        return committed"),
    Mutant("removed-told-on-an-uncommitted-change", "membership (a peer tells a server it is removed only once that committed)",
           CORE, "        committed = self.committed_membership\n        if committed.excludes_for_good(msg.src):",
           "        committed = self.membership\n        if committed.excludes_for_good(msg.src):"),
    # ---- apply order and restarts
    Mutant("apply-uncommitted", "state machine safety (apply only committed entries)", CORE,
           "        upto = min(self.commit_index, self.log.last_index)\n", "        upto = self.log.last_index\n"),
    Mutant("restart-trusts-whole-log", "state machine safety (a restarted peer knows only its snapshot is committed)", CORE,
           "        self.commit_index = self.log.snapshot_index\n", "        self.commit_index = self.log.last_index\n"),
)


@dataclass
class Outcome:
    name: str
    breaks: str
    path: str
    status: str
    """killed, survived, or error (the patch did not apply)."""
    killed_by: str = ""
    seconds: float = 0.0
    detail: str = ""
    equivalent: str = ""
    sims_miss: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Each killer that ran: its name, seconds, and whether it failed (the last one run killed, if any)."""


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.name}: the text to change occurs {count} times in {mutant.path}, not once")
    path.write_text(text.replace(mutant.old, mutant.new))


def _run(cmd: list[str], tree: Path, timeout: float) -> tuple[bool, str]:
    """(failed, tail of output); a timeout is not a failure (the budget ran out first)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        return False, "budget ran out"
    out = (r.stdout + r.stderr).strip().splitlines()
    fails = [line for line in out if line.startswith(("FAIL", "FAILED", "E  "))]
    return r.returncode != 0, "\n".join(fails[:3] or out[-3:])


def killers(seeds: int) -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [
        # Scratch inside the copy: a sim killed when the budget runs out leaves nothing behind.
        ("kv-sim", [py, "-m", "apps.kvraft.sim", "--seeds", str(seeds), "--scratch", "."]),
        ("raft-sim", [py, "-m", "apps.raft.sim", "--seeds", str(seeds * 5), "--scratch", "."]),
        ("unit-tests", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *UNIT_TESTS]),
    ]


def allowance(k: int, budget: float, spent: float) -> float:
    """Seconds killer ``k`` may run, ``spent`` seconds into a mutant's budget.

    The KV simulation gets half of the simulations' share; the Raft simulation the rest of that share (its
    half, and whatever the KV one did not use); the unit tests whatever is left of the budget.
    """
    share = budget * SIM_SHARE
    if k == 0:
        return share / 2
    if k == 1:
        return share - spent
    return budget - spent


def run_killers(tree: Path, seeds: int, budget: float) -> tuple[str, float, str, list[dict[str, Any]]]:
    """(the first killer that failed or "", when it had run so far in seconds, its detail, every killer's run)."""
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    for k, (name, cmd) in enumerate(killers(seeds)):
        spent = time.monotonic() - started
        left = allowance(k, budget, spent)
        if left <= 0:
            continue
        t0 = time.monotonic()
        failed, detail = _run(cmd, tree, left)
        runs.append({"killer": name, "seconds": round(time.monotonic() - t0, 1), "failed": failed})
        if failed:
            return name, time.monotonic() - started, detail, runs
    return "", time.monotonic() - started, "", runs


def run_mutant(mutant: Mutant, seeds: int, budget: float) -> Outcome:
    out = Outcome(mutant.name, mutant.breaks, mutant.path, "survived", equivalent=mutant.equivalent, sims_miss=mutant.sims_miss)
    with tempfile.TemporaryDirectory(prefix="zactor-mutant-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        try:
            apply(mutant, tree)
        except ValueError as exc:
            out.status, out.detail = "error", str(exc)
            return out
        name, seconds, detail, out.runs = run_killers(tree, seeds, budget)
        if name:
            out.status, out.killed_by, out.detail = "killed", name, detail
        out.seconds = round(seconds, 1)
    return out


def check_clean(seeds: int, budget: float) -> list[str]:
    """The killers on the unmutated tree, each for as long as a mutant gives it: each must pass, or the
    campaign means nothing (a killer still running when its time is up has passed so far)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="zactor-mutant-clean-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for k, (name, cmd) in enumerate(killers(seeds)):
            failed, detail = _run(cmd, tree, allowance(k, budget, 0.0 if k < 2 else budget * SIM_SHARE))
            if failed:
                problems.append(f"{name} fails on the clean tree: {detail}")
    return problems


def table(outcomes: list[Outcome]) -> str:
    rows = [("mutant", "file", "result", "by", "time", "breaks")]
    for o in outcomes:
        result = o.status + (" (equivalent)" if o.equivalent and o.status == "survived" else "")
        rows.append((o.name, o.path.removeprefix("apps/"), result, o.killed_by or "-", f"{o.seconds:.0f} s", o.breaks))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    real = [o for o in outcomes if not o.equivalent and o.status != "error"]
    killed = [o for o in real if o.status == "killed"]
    return {
        "mutants": len(outcomes),
        "non_equivalent": len(real),
        "killed": len(killed),
        "kill_rate": round(len(killed) / len(real), 3) if real else None,
        "survivors": [o.name for o in real if o.status != "killed"],
        "equivalent": [o.name for o in outcomes if o.equivalent],
        "max_seconds_to_kill": max((o.seconds for o in killed), default=None),
        "killed_by": {k: sum(1 for o in killed if o.killed_by == k) for k, _ in killers(1)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.mutate",
        description="Plant each named Raft/KV bug in a copy of the tree and run the KV and Raft simulations and the unit tests "
        "against it; report which killer caught each bug and how fast. Exit 1 if a non-equivalent mutant survives.",
    )
    p.add_argument("--target", choices=["raft", "kvraft", "all"], default="all", help="which files' mutants (default all)")
    p.add_argument("--budget", type=float, default=3.0, help="minutes per mutant before it counts as surviving (default 3)")
    p.add_argument("--seeds", type=int, default=2000, help="KV simulation seeds per mutant (the Raft simulation runs 5 times as many; each stops at the first failure and when its time is up) (default 2000)")
    p.add_argument("--only", default="", help="comma-separated mutant names")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--skip-clean", action="store_true", help="do not first check that the killers pass the clean tree")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if args.target == "all" or m.path in TARGETS[args.target]]
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            p.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; see --list")
        chosen = [m for m in chosen if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:34} {m.path:24} {m.breaks}" + ("  [equivalent]" if m.equivalent else ""))
        return 0
    budget = args.budget * 60.0
    if not args.skip_clean:
        print(f"clean tree: the simulations ({args.seeds} KV and {args.seeds * 5} Raft seeds, or their time) and the unit tests ...", file=sys.stderr, flush=True)
        problems = check_clean(args.seeds, budget)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 2
    outcomes = []
    for k, m in enumerate(chosen, 1):
        print(f"[{k}/{len(chosen)}] {m.name} ...", file=sys.stderr, flush=True)
        o = run_mutant(m, args.seeds, budget)
        print(f"    {o.status} {('by ' + o.killed_by) if o.killed_by else ''} in {o.seconds:.0f} s  {o.detail.splitlines()[0] if o.detail else ''}",
              file=sys.stderr, flush=True)
        outcomes.append(o)
    print(table(outcomes))
    summary = score(outcomes)
    print(f"\nkilled {summary['killed']} of {summary['non_equivalent']} non-equivalent mutants"
          + (f" ({summary['kill_rate']:.0%})" if summary["kill_rate"] is not None else "")
          + (f"; survivors: {', '.join(summary['survivors'])}" if summary["survivors"] else ""))
    print("killed by " + ", ".join(f"{k} {n}" for k, n in summary["killed_by"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "mutants": [asdict(o) for o in outcomes],
                                               "budget_minutes": args.budget, "seeds": args.seeds}, indent=1))
    return 1 if summary["survivors"] else 0


if __name__ == "__main__":
    sys.exit(main())
