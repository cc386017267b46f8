"""Word count over one corpus: a multiprocessing Pool against zactor MapReduce, side by side.

Every system splits the input the same way (8 MB splits at line ends, as
the MapReduce job does) and counts words the same way (maximal runs of
letters); the run checks that all counts agree. Timed, in interleaved
rounds so every system sees the same noise; a ratio is the median of the
per-round ratios to the Pool (``--repeats`` rounds), with their spread:

- ``pool``: ``multiprocessing.Pool`` with N processes mapping splits to
  ``Counter``s, merged in the parent (the baseline);
- ``zactor`` (``wordcount`` app): N worker processes, R reduce tasks, Map
  returns a Counter per split (the framework's fast path);
- ``zactor wc`` (the lab's ``wc``): one (word, "1") pair per word plus a
  combiner, the pair path;
- ``pool map`` (with the pair path): the same Pool running only the lab
  ``wc``'s own Map function over each split and dropping its pairs. No
  system that calls that function can be faster, so its ratio to the Pool
  is the floor under the pair path's ratio (the Pool baseline counts with
  ``Counter``, which needs no pairs at all).

Also reported: each zactor worker's peak RSS (the largest over the run,
against ``--rss-bound``) and a job on a tiny input (the fixed cost of a job).

    python -m benchmarks.mapreduce [--json] [--mb 100] [--workers 2] [--repeats 3] [--corpus DIR]
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from apps.mapreduce import run_job
from apps.mapreduce.app import load_app
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.files import Split, local_reader, make_splits, read_split
from apps.mapreduce.sequential import read_output_lines
from apps.mapreduce.text import words
from benchmarks import bench_parser

SPLIT_BYTES = 8_000_000


def _count_split(split: Split) -> Counter:
    read_at, close = local_reader(split.filename)
    try:
        return Counter(words(read_split(split, read_at).decode("utf-8", errors="replace")))
    finally:
        close()


def _pool(files: list[str], workers: int) -> Counter:
    total: Counter = Counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for part in pool.imap_unordered(_count_split, make_splits(files, SPLIT_BYTES)):
            total.update(part)
    return total


def _wc_map_split(split: Split) -> int:
    read_at, close = local_reader(split.filename)
    try:
        text = read_split(split, read_at).decode("utf-8", errors="replace")
    finally:
        close()
    return len(load_app("wc").map(split.filename, text))


def _pool_map(files: list[str], workers: int) -> int:
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        return sum(pool.imap_unordered(_wc_map_split, make_splits(files, SPLIT_BYTES)))


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def run(
    mb: float = 100.0, workers: int = 2, corpus: str | None = None, n_reduce: int = 10, repeats: int = 3,
    progress: bool = False, pair_path: bool = True,
) -> dict[str, Any]:
    def say(text: str) -> None:
        if progress:
            print(f"  {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="zactor-bench-mr-") as tmp:
        if corpus:
            files = sorted(str(p) for p in Path(corpus).iterdir() if p.is_file())
            if not files:
                raise ValueError(f"no files in {corpus}")
        else:
            say(f"generating {mb:g} MB corpus ...")
            files = [str(p) for p in generate_corpus(Path(tmp) / "in", total_bytes=int(mb * 1e6), n_files=max(8, 4 * workers), seed=1)]
        size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        systems = ["pool", "zactor"] + (["zactor_wc", "pool_map"] if pair_path else [])
        times: dict[str, list[float]] = {s: [] for s in systems}
        rss: dict[str, int] = {}
        reference: Counter | None = None
        first_output: dict[str, list[str]] = {}
        for round_no in range(repeats):
            order = systems if round_no % 2 == 0 else list(reversed(systems))
            for name in order:
                say(f"round {round_no + 1}/{repeats}: {name} ...")
                if name == "pool":
                    seconds, counts = _timed(_pool, files, workers)
                    if reference is not None and counts != reference:
                        raise AssertionError("the Pool's counts changed between rounds")
                    reference = counts
                elif name == "pool_map":
                    seconds, n_pairs = _timed(_pool_map, files, workers)
                    if reference is not None and n_pairs != reference.total():
                        raise AssertionError(f"the wc Map made {n_pairs} pairs for {reference.total()} words")
                else:
                    app = "wordcount" if name == "zactor" else "wc"
                    out = Path(tmp) / f"out-{name}"
                    seconds, job = _timed(lambda: run_job(app, files, workers=workers, n_reduce=n_reduce, outdir=out, split_bytes=SPLIT_BYTES))
                    for worker, peak in job.status.worker_peak_rss.items():
                        rss[worker] = max(rss.get(worker, 0), peak)
                    first_output.setdefault(name, read_output_lines(job.outputs))
                times[name].append(seconds)
        assert reference is not None
        expected = sorted(f"{w} {n}" for w, n in reference.items())
        for name, got in first_output.items():
            if got != expected:
                raise AssertionError(f"{name}'s word count disagrees with the Pool's")
        tiny = [Path(tmp) / f"tiny-{i}.txt" for i in range(3)]
        for i, path in enumerate(tiny):
            path.write_text(f"tiny input number {i}, the quick brown fox\n" * 10)
        tiny_s, _ = _timed(lambda: run_job("wc", tiny, workers=workers, n_reduce=n_reduce, outdir=Path(tmp) / "tiny-out"))
    med = {s: statistics.median(v) for s, v in times.items()}
    # Rounds are pairs that saw the same noise: the ratio is the median of the per-round ratios.
    ratios = {s: [t / p for t, p in zip(times[s], times["pool"], strict=True)] for s in systems if s != "pool"}
    result: dict[str, Any] = {
        "mb": round(size_mb, 1),
        "files": len(files),
        "workers": workers,
        "reduce_tasks": n_reduce,
        "repeats": repeats,
        "pool_s": round(med["pool"], 2),
        "zactor_s": round(med["zactor"], 2),
        "zactor_vs_pool": round(statistics.median(ratios["zactor"]), 3),
        "zactor_vs_pool_spread": [round(min(ratios["zactor"]), 3), round(max(ratios["zactor"]), 3)],
        "tiny_job_s": round(tiny_s, 2),
        "worker_peak_rss_mb": {w: round(v / 1e6) for w, v in sorted(rss.items())},
        "max_worker_peak_rss_mb": round(max(rss.values()) / 1e6) if rss else None,
        "all_times_s": {s: [round(t, 2) for t in v] for s, v in times.items()},
    }
    if pair_path:
        result["zactor_wc_s"] = round(med["zactor_wc"], 2)
        result["zactor_wc_vs_pool"] = round(statistics.median(ratios["zactor_wc"]), 3)
        result["zactor_wc_vs_pool_spread"] = [round(min(ratios["zactor_wc"]), 3), round(max(ratios["zactor_wc"]), 3)]
        result["pool_map_s"] = round(med["pool_map"], 2)
        result["wc_map_floor_vs_pool"] = round(statistics.median(ratios["pool_map"]), 3)
    return result


def report(result: dict[str, Any], rss_bound_mb: float = 300.0) -> str:
    lines = [
        f"mapreduce: word count over {result['mb']} MB in {result['files']} files, {result['workers']} workers, "
        f"median of {result['repeats']} interleaved rounds",
        f"  {'multiprocessing Pool':26}{result['pool_s']:>8.2f} s",
        f"  {'zactor (wordcount)':26}{result['zactor_s']:>8.2f} s   {result['zactor_vs_pool']:.2f}x the Pool "
        f"(rounds {result['zactor_vs_pool_spread'][0]:.2f}-{result['zactor_vs_pool_spread'][1]:.2f}; target <= 1.25)",
    ]
    if "zactor_wc_s" in result:
        lines.append(f"  {'zactor (lab wc, pairs)':26}{result['zactor_wc_s']:>8.2f} s   {result['zactor_wc_vs_pool']:.2f}x the Pool (target <= 1.25)")
        lines.append(f"  {'Pool, wc Map alone':26}{result['pool_map_s']:>8.2f} s   {result['wc_map_floor_vs_pool']:.2f}x the Pool "
                     "(the floor under the pair path: its own Map function, nothing else)")
    lines.append(f"  {'zactor, tiny job':26}{result['tiny_job_s']:>8.2f} s   (target < 1 s)")
    peak = result["max_worker_peak_rss_mb"]
    lines.append(f"  worker peak RSS (MB): {result['worker_peak_rss_mb']}  max {peak} "
                 f"({'under' if peak is not None and peak <= rss_bound_mb else 'OVER'} the {rss_bound_mb:g} MB bound)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("mr", __doc__)
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated corpus in MB (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the Pool and for zactor (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; times are medians (default 3)")
    parser.add_argument("--rss-bound", type=float, default=300.0, help="peak RSS per worker to hold, in MB (default 300)")
    parser.add_argument("--no-pairs", action="store_true", help="skip the lab's wc (pair per word) runs")
    parser.add_argument("--corpus", help="use the files in this directory instead (e.g. the Gutenberg books)")
    args = parser.parse_args(argv)
    if args.mb <= 0 or args.workers < 1 or args.repeats < 1 or args.rss_bound <= 0:
        parser.error("--mb, --workers, --repeats and --rss-bound must be positive")
    if args.corpus and not Path(args.corpus).is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory")
    result = run(args.mb, args.workers, args.corpus, repeats=args.repeats, progress=not args.json, pair_path=not args.no_pairs)
    result["rss_bound_mb"] = args.rss_bound
    result["rss_within_bound"] = result["max_worker_peak_rss_mb"] is not None and result["max_worker_peak_rss_mb"] <= args.rss_bound
    print(json.dumps(result) if args.json else report(result, args.rss_bound))
    return 0 if result["rss_within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
