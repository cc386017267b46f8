"""Word count three ways over one corpus: one process, a multiprocessing Pool, and zactor MapReduce.

All three split words the same way (maximal runs of letters) and produce
the same counts; the run checks that. The Pool baseline maps files to
Counters on N processes and merges them; zactor runs the ``wc`` app with N
worker processes and R reduce tasks, combiner on. Also timed: a job on a
tiny input, which shows the fixed cost of starting a job.

    python -m benchmarks.mapreduce [--json] [--mb 100] [--workers 2] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from apps.mapreduce import run_job
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.sequential import read_output_lines
from apps.mapreduce.text import words


def _count_file(path: str) -> Counter:
    with open(path, encoding="utf-8", errors="replace") as f:
        return Counter(words(f.read()))


def _single(files: list[str]) -> Counter:
    total: Counter = Counter()
    for f in files:
        total.update(_count_file(f))
    return total


def _pool(files: list[str], workers: int) -> Counter:
    total: Counter = Counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for part in pool.imap_unordered(_count_file, files):
            total.update(part)
    return total


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def run(mb: float = 100.0, workers: int = 2, corpus: str | None = None, n_reduce: int = 10, progress: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zactor-bench-mr-") as tmp:
        if corpus:
            files = sorted(str(p) for p in Path(corpus).iterdir() if p.is_file())
            if not files:
                raise ValueError(f"no files in {corpus}")
        else:
            if progress:
                print(f"  generating {mb:g} MB corpus ...", file=sys.stderr, flush=True)
            files = [str(p) for p in generate_corpus(Path(tmp) / "in", total_bytes=int(mb * 1e6), n_files=max(8, 4 * workers), seed=1)]
        size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        single_s, reference = _timed(_single, files)
        pool_s, pooled = _timed(_pool, files, workers)
        zactor_s, result = _timed(lambda: run_job("wc", files, workers=workers, n_reduce=n_reduce, outdir=Path(tmp) / "out"))
        expected = sorted(f"{w} {n}" for w, n in reference.items())
        if pooled != reference or read_output_lines(result.outputs) != expected:
            raise AssertionError("the three word counts disagree")
        tiny = [Path(tmp) / f"tiny-{i}.txt" for i in range(3)]
        for i, path in enumerate(tiny):
            path.write_text(f"tiny input number {i}, the quick brown fox\n" * 10)
        tiny_s, _ = _timed(lambda: run_job("wc", tiny, workers=workers, n_reduce=n_reduce, outdir=Path(tmp) / "tiny-out"))
    return {
        "mb": round(size_mb, 1),
        "files": len(files),
        "workers": workers,
        "reduce_tasks": n_reduce,
        "single_s": round(single_s, 2),
        "pool_s": round(pool_s, 2),
        "zactor_s": round(zactor_s, 2),
        "zactor_vs_pool": round(zactor_s / pool_s, 2),
        "tiny_job_s": round(tiny_s, 2),
    }


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"mapreduce: word count over {result['mb']} MB in {result['files']} files, {result['workers']} workers",
            f"  {'single process':24}{result['single_s']:>8.2f} s",
            f"  {'multiprocessing Pool':24}{result['pool_s']:>8.2f} s",
            f"  {'zactor':24}{result['zactor_s']:>8.2f} s   {result['zactor_vs_pool']:.2f}x the Pool (target <= 1.25)",
            f"  {'zactor, tiny job':24}{result['tiny_job_s']:>8.2f} s   (target < 1 s)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zactor bench mr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated corpus in MB (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the Pool and for zactor (default 2)")
    parser.add_argument("--corpus", help="use the files in this directory instead (e.g. the Gutenberg books)")
    args = parser.parse_args(argv)
    if args.mb <= 0 or args.workers < 1:
        parser.error("--mb and --workers must be positive")
    if args.corpus and not Path(args.corpus).is_dir():
        parser.error(f"--corpus {args.corpus}: not a directory")
    result = run(args.mb, args.workers, args.corpus, progress=not args.json)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
