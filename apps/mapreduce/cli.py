"""``zactor mr``: run a MapReduce job, or its coordinator and workers as separate processes (the lab's shape)."""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections import deque
from pathlib import Path

from actors import ActorSystem
from apps.keys_cli import add_security_options, apply_security_options
from apps.mapreduce.app import AppError, load_app
from apps.mapreduce.coordinator import JobConfig, follow, start_coordinator
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.job import JobFailed, Progress, run_job
from apps.mapreduce.report import job_report
from apps.mapreduce.worker import worker_main
from transport.ipc import ipc_directory, ipc_directory_path
from transport.private_files import private_dirs

# In this user's 0700 socket directory (made when the coordinator binds), so with --insecure
# another local user still cannot reach it; one fixed name, so a worker finds it without flags.
DEFAULT_ENDPOINT = f"ipc://{ipc_directory_path()}/mr.sock"
APPS_HELP = "built-in (wc, wordcount, indexer, mtiming, rtiming, jobcount, early_exit, crash, nocrash), package.module, or a .py file"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zactor mr",
        description="MapReduce on the actor runtime: a coordinator hands map and reduce tasks to worker processes.",
        epilog="example: zactor mr sample-data books && zactor mr run --app wc --workers 4 --out out books/*.txt",
    )
    sub = parser.add_subparsers(dest="op", metavar="OP", required=True)
    sample = sub.add_parser(
        "sample-data", help="write generated text files to try a job on (no download)",
        description="Write generated text files to try a job on: words of several scripts drawn with a skew, as in "
        "prose, digits and punctuation, one file empty and one with bytes that are not UTF-8, as real inputs have. "
        "The same --seed writes the same files.",
    )
    sample.add_argument("dir", metavar="DIR", help="where to write them (made if missing)")
    sample.add_argument("--mb", type=float, default=2.0, help="about this many megabytes in all (default 2)")
    sample.add_argument("--files", type=int, default=8, help="how many files (default 8, at least 2)")
    sample.add_argument("--seed", type=int, default=1, help="seed of the text (default 1)")
    run = sub.add_parser("run", help="run a whole job: coordinator and N supervised workers, with progress")
    run.add_argument("--app", required=True, help=APPS_HELP)
    run.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    _job_options(run)
    run.add_argument("--backup-tasks", action="store_true", help="re-run the last stragglers on idle workers")
    run.add_argument("--no-combiner", action="store_true", help="ignore the app's combiner")
    run.add_argument("--quiet", action="store_true", help="no progress output and no job report")
    run.add_argument("--shared-dir", action="store_true", help="workers share one directory for map output (the lab's layout)")
    co = sub.add_parser(
        "coordinator", help="run only the coordinator (workers started separately, on this machine or others)",
        epilog="example: zactor mr coordinator --endpoint tcp://10.0.0.1:7000 --ship-input --out out data/*.txt",
    )
    co.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"where to listen, ipc:// or tcp://HOST:PORT (default {DEFAULT_ENDPOINT})")
    co.add_argument("--ship-input", action="store_true", help="serve the input files to workers (they need not see the paths)")
    co.add_argument("--fetch-timeout", type=float, default=5.0, help="seconds a reducer waits on a mapper before reporting it gone (default 5)")
    co.add_argument("--probe-every", type=float, default=JobConfig.probe_every,
                    help="seconds between pings of the workers holding map output, to find dead ones "
                         f"without waiting for a reducer; 0: off (default {JobConfig.probe_every:g})")
    co.add_argument("--probe-timeout", type=float, default=JobConfig.probe_timeout,
                    help="seconds a ping waits for a worker's answer; two unanswered pings and the worker is gone, "
                         f"its maps run again (default {JobConfig.probe_timeout:g}; too short on a busy machine "
                         "calls live workers dead)")
    co.add_argument("--min-workers", type=int, default=1, help="hand out no task until this many workers have asked (default 1)")
    co.add_argument("--hold-reduces", action="store_true", help=argparse.SUPPRESS)  # a test's hook: reduces wait for Release
    _job_options(co)
    wo = sub.add_parser(
        "worker", help="run one worker against a coordinator",
        epilog="example: zactor mr worker --coordinator tcp://10.0.0.1:7000 --workdir /tmp/mr --endpoint tcp://10.0.0.2:0 --app wc",
    )
    wo.add_argument("--coordinator", default=DEFAULT_ENDPOINT, help=f"the coordinator's endpoint (default {DEFAULT_ENDPOINT})")
    wo.add_argument("--app", required=True, help=APPS_HELP)
    wo.add_argument("--workdir", help="keep map output here and serve it to reducers (default: the coordinator's shared directory)")
    wo.add_argument("--endpoint", help="where this worker serves its map output, e.g. tcp://THIS-HOST:0 (default with --workdir: "
                    "tcp on the address that reaches a tcp coordinator, any free port; ipc for an ipc one)")
    wo.add_argument("--give-up-after", type=float, default=3.0, help="seconds without an answer from the coordinator before leaving (default 3)")
    for p in (run, co, wo):
        add_security_options(p)
    return parser


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reduce-tasks", type=int, default=10, help="number of reduce tasks and output files (default 10)")
    p.add_argument("--out", default=".", help="directory for mr-out-* (default: the current directory)")
    p.add_argument("--task-timeout", type=float, default=10.0, help="seconds before a task is handed to another worker (default 10)")
    p.add_argument("--split-mb", type=float, default=8.0, help="input MB per map task; bigger files are split (default 8)")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files, one map task each")


def _check_inputs(files: list[str]) -> str | None:
    missing = [f for f in files if not Path(f).is_file()]
    return f"input files not found: {', '.join(missing[:5])}" if missing else None


def _progress_printer(interactive: bool):
    last = [0.0]

    def show(p: Progress) -> None:
        s = p.status
        line = (
            f"map {s.maps_done}/{s.maps_total}  reduce {s.reduces_done}/{s.reduces_total}  "
            f"workers alive {p.workers_alive}  restarts {p.restarts}  reassigned {s.reassigned}  {p.elapsed:.1f}s"
        )
        if interactive:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif p.elapsed - last[0] >= 2.0 or s.phase in ("done", "failed"):
            last[0] = p.elapsed
            print(line, file=sys.stderr, flush=True)

    return show


def _sample_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.files < 2 or not 0 < args.mb <= 10_000:
        parser.error("sample-data needs --files of at least 2 and --mb between 0 and 10000")
    paths = generate_corpus(args.dir, total_bytes=int(args.mb * 1e6), n_files=args.files, seed=args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e6:.1f} MB, to {args.dir}/", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_security_options(args)
    if getattr(args, "reduce_tasks", 1) < 1 or getattr(args, "task_timeout", 1) <= 0:
        parser.error("--reduce-tasks must be at least 1 and --task-timeout positive")
    if getattr(args, "split_mb", 1) <= 0 or getattr(args, "fetch_timeout", 1) <= 0 or getattr(args, "give_up_after", 1) <= 0:
        parser.error("--split-mb, --fetch-timeout and --give-up-after must be positive")
    if getattr(args, "probe_every", 0) < 0:
        parser.error("--probe-every must be 0 (off) or positive seconds")
    if getattr(args, "probe_timeout", 1) <= 0:
        parser.error("--probe-timeout must be positive seconds")
    if args.op == "worker":
        return _worker(args)
    if args.op == "sample-data":
        return _sample_data(parser, args)
    problem = _check_inputs(args.files)
    if problem:
        print(f"zactor mr {args.op}: {problem}", file=sys.stderr)
        return 2
    if args.op == "run":
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        interactive = sys.stderr.isatty() and not args.quiet
        try:
            result = run_job(
                args.app, args.files, workers=args.workers, n_reduce=args.reduce_tasks, outdir=args.out,
                task_timeout=args.task_timeout, backup_tasks=args.backup_tasks, use_combiner=not args.no_combiner,
                progress=None if args.quiet else _progress_printer(interactive),
                split_bytes=int(args.split_mb * 1e6), shared_dir=args.shared_dir,
            )
        except AppError as exc:
            print(f"zactor mr run: {exc}", file=sys.stderr)
            return 2
        except JobFailed as exc:
            print(f"\nzactor mr run: job failed: {exc}", file=sys.stderr)
            return 1
        if interactive:
            print(file=sys.stderr)
        print(f"done in {result.seconds:.2f} s: {len(result.outputs)} output files in {Path(args.out).resolve()}", file=sys.stderr)
        if not args.quiet:
            print(job_report(result.status), file=sys.stderr)
        return 0
    return _coordinator(args)


def _worker(args: argparse.Namespace) -> int:
    try:
        load_app(args.app)
    except AppError as exc:
        print(f"zactor mr worker: {exc}", file=sys.stderr)
        return 2
    endpoint = args.endpoint
    if endpoint is None and args.workdir is not None:
        endpoint = _reachable_endpoint(args.coordinator)
    try:
        outcome = worker_main(args.coordinator, args.app, args.give_up_after, args.workdir, endpoint)
    except OSError as exc:
        print(f"zactor mr worker: {exc}", file=sys.stderr)
        return 1
    if not outcome.reached:
        print(f"zactor mr worker: no coordinator answered at {args.coordinator} within {args.give_up_after:g} s", file=sys.stderr)
        return 1
    return 0


def _reachable_endpoint(coordinator: str) -> str | None:
    """tcp on this machine's address toward a tcp coordinator (so reducers elsewhere can reach us); else None."""
    if not coordinator.startswith("tcp://"):
        return None
    host = coordinator[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # no packet is sent: this only picks the route
            return f"tcp://{s.getsockname()[0]}:0"
    except OSError:
        return None


def _coordinator(args: argparse.Namespace) -> int:
    config = JobConfig(
        tuple(str(Path(f).resolve()) for f in args.files), n_reduce=args.reduce_tasks,
        workdir=str(Path(args.out).resolve()), outdir=str(Path(args.out).resolve()), task_timeout=args.task_timeout,
        split_bytes=int(args.split_mb * 1e6), ship_input=args.ship_input, fetch_timeout=args.fetch_timeout,
        hold_reduces=args.hold_reduces, min_workers=args.min_workers, probe_every=args.probe_every,
        probe_timeout=args.probe_timeout,
    )
    private_dirs(args.out)
    try:
        if args.endpoint == DEFAULT_ENDPOINT:
            ipc_directory()
        system = ActorSystem(args.endpoint)
    except OSError as exc:
        print(f"zactor mr coordinator: {exc}", file=sys.stderr)
        return 1
    with system:
        coordinator = start_coordinator(system, config)
        # The bound endpoint (a :0 port is resolved here), so a script can start workers against it.
        print(f"zactor mr coordinator: listening on {system.endpoint}", file=sys.stderr, flush=True)
        status = deque(follow(coordinator), maxlen=1).pop()  # the last one: the job done or failed
        time.sleep(config.linger)  # keep answering Exit so the workers leave promptly
    if status.phase == "failed":
        print(f"zactor mr coordinator: job failed: {status.error}", file=sys.stderr)
        return 1
    print(job_report(status), file=sys.stderr)
    return 0
