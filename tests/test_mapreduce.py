"""MapReduce parts and features beyond the lab script: apps, loading, task files, failures, backups."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from apps.mapreduce import App, AppError, JobFailed, load_app, read_output_lines, run_job, run_sequential
from apps.mapreduce import files as mrfiles
from apps.mapreduce.corpus import generate_corpus
from apps.mapreduce.tasks import TaskError, fold, run_map, run_reduce, shared_runs
from apps.mapreduce.text import words
from tests.processes import Processes, listening


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return [str(p) for p in generate_corpus(tmp_path_factory.mktemp("in"), total_bytes=300_000, n_files=6, seed=3)]


@pytest.mark.slow
def test_words_are_exactly_runs_of_isalpha_over_all_of_unicode() -> None:
    for cp in range(0x110000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        assert words(f"1{ch}2") == ([ch] if ch.isalpha() else []), f"U+{cp:04X}"
    assert words("Ça va? x_y 3rd ²abc½ Ⅻ日本") == ["Ça", "va", "x", "y", "rd", "abc", "日本"]


@pytest.mark.slow
def test_corpus_is_deterministic_and_has_the_odd_files(tmp_path: Path) -> None:
    a = generate_corpus(tmp_path / "a", total_bytes=50_000, n_files=8, seed=9)
    b = generate_corpus(tmp_path / "b", total_bytes=50_000, n_files=8, seed=9)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    sizes = [p.stat().st_size for p in a]
    assert sizes.count(0) == 1 and len(set(sizes)) == 8
    assert any(b"\xff" in p.read_bytes() for p in a)
    assert {p.name for p in a} >= {"pg-sherlock_holmes.txt", "pg-tom_sawyer.txt"}


@pytest.mark.parametrize("n_reduce", [1, 10])
@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.slow
def test_tasks_equal_the_sequential_reference(tmp_path: Path, corpus: list[str], n_reduce: int, combine: bool) -> None:
    app = load_app("wc")
    if not combine:
        app = App(app.name, app.map, app.reduce, None)
    for m, f in enumerate(corpus):
        run_map(app, m, f, n_reduce, tmp_path / "work")
    outs = [run_reduce(app, r, shared_runs(tmp_path / "work", r, len(corpus)), tmp_path / "out").path for r in range(n_reduce)]
    ref = run_sequential(load_app("wc"), corpus, tmp_path / "ref.txt")
    assert read_output_lines(outs) == read_output_lines([ref])


def test_combiner_leaves_one_value_per_key(tmp_path: Path, corpus: list[str]) -> None:
    app = load_app("wc")
    source = next(f for f in corpus if os.path.getsize(f))
    run_map(app, 0, source, 1, tmp_path / "with")
    run_map(App(app.name, app.map, app.reduce, None), 0, source, 1, tmp_path / "without")
    combined = list(mrfiles.read_run(tmp_path / "with" / "mr-0-0"))
    raw = list(mrfiles.read_run(tmp_path / "without" / "mr-0-0"))
    n_words = len(words(open(source, encoding="utf-8", errors="replace").read()))
    assert all(len(values) == 1 for _, values in combined)
    assert sum(len(values) for _, values in raw) == n_words > len(combined)
    assert (tmp_path / "with" / "mr-0-0").stat().st_size < (tmp_path / "without" / "mr-0-0").stat().st_size


def test_a_combiner_folds_copies_of_one_value_in_few_short_calls() -> None:
    seen: list[list[str]] = []

    def add(key: str, values: list[str]) -> list[str]:
        seen.append(list(values))
        return [str(sum(int(v) for v in values))]

    for n in (8, 9, 1000, 1024, 65537):
        seen.clear()
        assert fold(add, "k", ["1"] * n) == [str(n)]
        assert sum(map(len, seen)) < 4 * n.bit_length() and max(map(len, seen)) <= n.bit_length()
    seen.clear()
    assert fold(add, "k", ["1"] * 7) == ["7"] and seen == [["1"] * 7]  # too few copies to bother


def test_fold_hands_values_that_are_not_copies_to_the_combiner_unchanged() -> None:
    calls: list[list[object]] = []

    def keep(key: str, values: list[object]) -> list[object]:
        calls.append(values)
        return values

    mixed: list[object] = [1] * 9 + [True]  # equal to 1, but not the same object: must not become a 1
    equal_strings = ["xy"] + ["".join(["x", "y"]) for _ in range(9)]  # equal, different objects
    for values in (mixed, equal_strings, ["b", "a"] * 10):
        calls.clear()
        assert fold(keep, "k", list(values)) == values and calls == [values]


def test_fold_stops_calling_once_the_combiner_leaves_nothing() -> None:
    calls: list[list[str]] = []

    def drop(key: str, values: list[str]) -> list[str]:
        calls.append(values)
        assert values, "the combiner was called with no values"
        return []

    assert fold(drop, "k", ["1"] * 100) == []
    assert len(calls) == 1


def test_map_output_with_the_folding_combiner_counts_every_value(tmp_path: Path, corpus: list[str]) -> None:
    app = load_app("wc")
    source = max(corpus, key=os.path.getsize)
    result = run_map(app, 0, source, 1, tmp_path)
    counts = Counter(words(open(source, encoding="utf-8", errors="replace").read()))
    repeated = {w: n for w, n in counts.items() if n > 1}  # a key's only value is not combined
    assert result.counters["map_output_records"] == sum(counts.values())
    assert result.counters["combine_input_records"] == sum(repeated.values())
    assert result.counters["combine_output_records"] == len(repeated)
    combined = dict(mrfiles.read_run(tmp_path / "mr-0-0"))
    assert {w: int(v) for w, (v,) in combined.items()} == counts


def test_partition_is_the_same_in_every_process() -> None:
    keys = ["a", "hello", "日本", "ß", "x" * 100]
    code = f"from apps.mapreduce.files import partition; print([partition(k, 10) for k in {keys!r}])"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert outs == {f"{[mrfiles.partition(k, 10) for k in keys]}\n"}


def test_invalid_utf8_and_empty_inputs_are_read(tmp_path: Path) -> None:
    bad, empty = tmp_path / "bad.txt", tmp_path / "empty.txt"
    bad.write_bytes(b"good \xff\xfe words \xc3")
    empty.write_bytes(b"")
    app = load_app("wc")
    for m, f in enumerate((bad, empty)):
        run_map(app, m, str(f), 1, tmp_path)
    out = run_reduce(app, 0, shared_runs(tmp_path, 0, 2), tmp_path).path
    assert read_output_lines([out]) == ["good 1", "words 1"]


def test_a_crash_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mr-out-0"

    def die(*args: object) -> None:
        raise KeyboardInterrupt  # stands for the process dying between write and rename

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        mrfiles.write_atomically(target, b"half")
    assert os.listdir(tmp_path) == []


def test_raising_map_is_a_task_error_with_traceback_and_input(tmp_path: Path) -> None:
    def boom(filename: str, contents: str) -> list:
        raise ZeroDivisionError("user bug")

    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(TaskError, match=r"map task 3 \(input .*in.txt\)") as info:
        run_map(App("boom", boom, lambda k, v: ""), 3, str(tmp_path / "in.txt"), 2, tmp_path)
    assert "ZeroDivisionError: user bug" in str(info.value) and "Traceback" in str(info.value)


def test_missing_intermediate_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mr-0-1"):
        run_reduce(load_app("wc"), 1, shared_runs(tmp_path, 1, 1), tmp_path)


# ---- loading applications ---------------------------------------------------------------


def test_load_every_builtin_and_each_spec_form(tmp_path: Path) -> None:
    for name in ("wc", "indexer", "mtiming", "rtiming", "jobcount", "early_exit", "crash", "nocrash"):
        assert callable(load_app(name).map)
    assert load_app("apps.mapreduce.apps.indexer").reduce("w", ["b", "a"]) == "2 a,b"
    user = tmp_path / "myapp.py"
    user.write_text("def map(f, c):\n    return [('n', str(len(c)))]\ndef reduce(k, v):\n    return '+'.join(v)\n")
    assert load_app(str(user)).map("f", "abc") == [("n", "3")]
    assert load_app((len, str)).map is len


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_app_anywhere", "no application"),
        ("/nowhere/app.py", "not found"),
        ("json", "has no map"),
        ((len,), "must be"),
    ],
)
def test_load_errors_say_what_is_wrong(spec: object, message: str) -> None:
    with pytest.raises(AppError, match=message):
        load_app(spec)


def test_app_from_a_file_travels_to_another_process(tmp_path: Path) -> None:
    user = tmp_path / "shout.py"
    user.write_text("def map(f, c):\n    return [(w.upper(), '1') for w in c.split()]\ndef reduce(k, v):\n    return str(len(v))\n")
    import cloudpickle

    blob = cloudpickle.dumps(load_app(str(user)))
    (tmp_path / "blob").write_bytes(blob)
    os.rename(user, tmp_path / "gone.py")  # the other side cannot import it: it must travel by value
    code = f"import cloudpickle; app = cloudpickle.loads(open({str(tmp_path / 'blob')!r}, 'rb').read()); print(app.map('f', 'a b'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[('A', '1'), ('B', '1')]", out.stderr


# ---- whole jobs ----------------------------------------------------------------------------


def test_run_job_with_functions_defined_here(tmp_path: Path, corpus: list[str]) -> None:
    def first_letters(filename: str, contents: str) -> list[tuple[str, str]]:
        return [(w[0].lower(), "1") for w in words(contents)]

    def count(key: str, values: list[str]) -> str:
        return str(len(values))

    result = run_job((first_letters, count), corpus, workers=2, n_reduce=3, outdir=tmp_path)
    ref = run_sequential(App("x", first_letters, count), corpus, tmp_path / "ref.txt")
    assert read_output_lines(result.outputs) == read_output_lines([ref])
    assert result.status.phase == "done" and len(result.outputs) == 3
    counters = result.status.counters
    assert counters["input_bytes"] == sum(os.path.getsize(f) for f in corpus)
    assert counters["map_output_records"] == counters["reduce_input_records"] > 0
    assert counters["shuffle_bytes"] > 0 and counters["reexecuted_maps"] == 0
    assert result.status.worker_peak_rss and all(10e6 < v < 1e9 for v in result.status.worker_peak_rss.values())


def test_a_map_that_always_raises_fails_the_job_naming_the_input(tmp_path: Path) -> None:
    (tmp_path / "fine.txt").write_text("fine")
    (tmp_path / "poison.txt").write_text("poison")

    def picky(filename: str, contents: str) -> list:
        if "poison" in filename:
            raise ValueError("cannot digest this")
        return [("ok", "1")]

    started = time.monotonic()
    with pytest.raises(JobFailed, match=r"(?s)map task \d \(input .*poison.txt\) failed 3 times.*ValueError: cannot digest"):
        run_job((picky, lambda k, v: str(len(v))), [tmp_path / "fine.txt", tmp_path / "poison.txt"], workers=2, outdir=tmp_path / "out")
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_cli_run_reports_failure_and_bad_arguments(tmp_path: Path) -> None:
    def zactor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "apps.cli", "mr", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)

    bad_app = tmp_path / "bad.py"
    bad_app.write_text("def map(f, c):\n    raise RuntimeError('broken map')\ndef reduce(k, v):\n    return ''\n")
    (tmp_path / "in.txt").write_text("words")
    out = zactor("run", "--app", str(bad_app), "--workers", "1", "--quiet", "in.txt")
    assert out.returncode == 1 and "broken map" in out.stderr and "in.txt" in out.stderr
    assert zactor("run", "--app", "wc", "missing.txt").returncode == 2
    assert zactor("run", "--app", "nonesuch", "in.txt").returncode == 2
    assert zactor("run", "--app", "wc", "--workers", "0", "in.txt").returncode == 2
    ok = zactor("run", "--app", "wc", "--quiet", "--out", "o", "in.txt")
    assert ok.returncode == 0, ok.stderr
    assert read_output_lines(sorted((tmp_path / "o").glob("mr-out-*"))) == ["words 1"]
    (tmp_path / "big.txt").write_text("one two two\n" * 5000)
    reported = zactor("run", "--app", "wc", "--split-mb", "0.01", "--out", "r", "big.txt")
    assert reported.returncode == 0, reported.stderr
    assert read_output_lines(sorted((tmp_path / "r").glob("mr-out-*"))) == ["one 5000", "two 10000"]
    assert "Job done: 6 map tasks, 10 reduce tasks" in reported.stderr  # 60 000 bytes in 10 000-byte splits
    assert "Map output records=15000" in reported.stderr and "Combine output records=" in reported.stderr
    assert "Peak RSS per worker (MB)" in reported.stderr
    assert zactor("run", "--app", "wc", "--split-mb", "0", "in.txt").returncode == 2


def test_coordinator_and_worker_meet_at_the_default_endpoint_in_the_private_socket_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no endpoint flags the two find each other, and the socket is in the user's 0700 directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the default lives under $TMPDIR: this test's own copy of it
    sockets = tmp_path / f"zactor-{os.getuid()}"
    (tmp_path / "in.txt").write_text("one two two\n")
    procs = Processes(tmp_path, 60.0)
    try:
        coordinator = procs.start("mr", "coordinator", "--out", "out", "in.txt")
        assert listening(coordinator) == f"ipc://{sockets}/mr.sock"
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        worker = procs.start("mr", "worker", "--app", "wc")
        assert procs.wait(coordinator) == 0, coordinator.stderr.read().decode() if coordinator.stderr else ""
        assert procs.wait(worker) == 0
    finally:
        procs.kill_all()
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == ["one 1", "two 2"]


@pytest.mark.slow
def test_a_second_coordinator_at_the_default_endpoint_is_refused_and_the_first_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libzmq would silently take a live ipc endpoint over: the second coordinator must say so and leave."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (tmp_path / "in.txt").write_text("one two two\n")
    procs = Processes(tmp_path, 60.0)
    try:
        first = procs.start("mr", "coordinator", "--out", "out", "in.txt")
        endpoint = listening(first)
        second = procs.start("mr", "coordinator", "--out", "out2", "in.txt")
        assert procs.wait(second) == 1
        assert second.stderr is not None
        assert f"cannot bind node endpoint {endpoint}: a node (or another program) already listens there" in (
            second.stderr.read().decode()
        )
        worker = procs.start("mr", "worker", "--app", "wc")
        assert procs.wait(first) == 0, first.stderr.read().decode() if first.stderr else ""
        assert procs.wait(worker) == 0
    finally:
        procs.kill_all()
    assert read_output_lines(sorted((tmp_path / "out").glob("mr-out-*"))) == ["one 1", "two 2"]


def straggler_map(filename: str, contents: str) -> list[tuple[str, str]]:
    """The first attempt at the "slow" file stalls for the seconds the file holds, as on a sick machine,
    and leaves a ".finished" file when it is done; later attempts are quick."""
    if filename.endswith("slow.txt"):
        try:
            fd = os.open(Path(filename).with_suffix(".claimed"), os.O_CREAT | os.O_EXCL)
            os.close(fd)
            time.sleep(float(contents))
            Path(filename).with_suffix(".finished").touch()
        except FileExistsError:
            pass
    return [("n", "1")]


@pytest.mark.parametrize("backups", [False, True])
@pytest.mark.slow
def test_backup_tasks_take_the_straggler_off_the_critical_path(tmp_path: Path, backups: bool) -> None:
    """Without backups the job waits out the straggler's 8 s; with them it is done while the straggler's
    first attempt (50 s) still runs: an event, not a wall-clock race against a loaded machine."""
    stall = 50.0 if backups else 8.0
    inputs = []
    for name, text in (("a.txt", "a"), ("b.txt", "b"), ("slow.txt", f"{stall}")):
        (tmp_path / name).write_text(text)
        inputs.append(tmp_path / name)
    result = run_job(
        (straggler_map, lambda k, v: str(len(v))), inputs, workers=3, n_reduce=2,
        outdir=tmp_path / "out", task_timeout=60, backup_tasks=backups,
    )
    assert read_output_lines(result.outputs) == ["n 3"]
    assert (tmp_path / "slow.claimed").exists()  # the straggler's first attempt did start
    if backups:
        assert result.status.backups >= 1
        assert not (tmp_path / "slow.finished").exists(), f"the job waited for the straggler ({result.seconds:.1f} s)"
    else:
        assert result.status.backups == 0
        assert (tmp_path / "slow.finished").exists() and result.seconds >= stall


def hanging_map(filename: str, contents: str) -> list[tuple[str, str]]:
    """The first attempt at the "hang" file writes its worker's pid and hangs (until killed); later ones are quick."""
    if filename.endswith("hang.txt"):
        try:
            fd = os.open(Path(filename).with_suffix(".claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(120)
    return [("n", "1")]


@pytest.mark.slow
def test_a_worker_killed_mid_task_has_its_task_reassigned_from_the_supervisor_event(tmp_path: Path) -> None:
    inputs = []
    for name in ("a.txt", "b.txt", "c.txt", "hang.txt"):
        (tmp_path / name).write_text(name)
        inputs.append(tmp_path / name)
    claimed = tmp_path / "hang.claimed"
    killed: list[int] = []

    def kill_the_hanging_worker(progress: object) -> None:
        if killed or not claimed.exists():
            return
        text = claimed.read_text()
        if text:  # written just after the file was created
            os.kill(int(text), signal.SIGKILL)
            killed.append(int(text))

    # The task timeout is far beyond the job's: only the supervisor's event can get the task reassigned in time.
    result = run_job(
        (hanging_map, lambda k, v: str(len(v))), inputs, workers=2, n_reduce=2,
        outdir=tmp_path / "out", task_timeout=600, timeout=120, progress=kill_the_hanging_worker,
    )
    assert killed, "the hanging map never started"
    assert read_output_lines(result.outputs) == ["n 4"]
    counters = result.status.counters
    assert counters["workers_lost_supervisor"] == 1
    assert counters["reassigned_tasks"] == 1
    assert result.restarts == 1


# ---- splits, spills, the fast path, the file server ----------------------------------------


@pytest.mark.parametrize("split_bytes", [1, 7, 100, 4096, 10**9])
def test_splits_cover_every_line_exactly_once(tmp_path: Path, split_bytes: int) -> None:
    path = tmp_path / "in.txt"
    data = b"first line\n\nshort\n" + "ünïcödé wörds here\n".encode() * 50 + b"no newline at the end"
    path.write_bytes(data)
    splits = mrfiles.make_splits([str(path)], split_bytes)
    read_at, close = mrfiles.local_reader(str(path))
    try:
        parts = [mrfiles.read_split(s, read_at) for s in splits]
    finally:
        close()
    assert b"".join(parts) == data
    assert all(p == b"" or p.startswith((*(line + b"\n" for line in data.split(b"\n")), b"no newline")) for p in parts)
    for p in parts:
        p.decode("utf-8")  # a split never cuts a character


def test_an_empty_file_is_one_map_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (splits,) = [mrfiles.make_splits([str(tmp_path / "empty")], 10)]
    assert len(splits) == 1
    assert mrfiles.read_split(splits[0], lambda o, n: b"") == b""


@pytest.mark.parametrize("combine", [True, False])
def test_a_small_buffer_spills_runs_that_merge_to_the_same_output(tmp_path: Path, corpus: list[str], combine: bool) -> None:
    app = load_app("wc")
    if not combine:
        app = App(app.name, app.map, app.reduce, None)
    source = max(corpus, key=os.path.getsize)
    whole = run_map(app, 0, source, 3, tmp_path / "whole")
    spilled = run_map(app, 0, source, 3, tmp_path / "spilled", buffer_records=1000)
    assert whole.counters["spills"] == 1 and spilled.counters["spills"] > 3
    assert spilled.counters["spilled_records"] > whole.counters["spilled_records"]
    for r in range(3):
        a = list(mrfiles.read_run(tmp_path / "whole" / f"mr-0-{r}"))
        b = list(mrfiles.read_run(tmp_path / "spilled" / f"mr-0-{r}"))
        assert [k for k, _ in a] == sorted(k for k, _ in a)
        assert {k: sum(map(int, v)) for k, v in a} == {k: sum(map(int, v)) for k, v in b}
    assert not list((tmp_path / "spilled").glob(".spill-*")), "spill files left behind"


def test_many_runs_are_merged_in_passes_with_the_same_result(tmp_path: Path, corpus: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.mapreduce import tasks

    app = load_app("wc")
    for m, f in enumerate(corpus):
        run_map(app, m, f, 1, tmp_path / "work")
    direct = run_reduce(app, 0, shared_runs(tmp_path / "work", 0, len(corpus)), tmp_path / "direct").path
    monkeypatch.setattr(tasks, "MAX_FAN_IN", 2)  # 6 runs: 3, then 2, then the final merge
    passes = run_reduce(app, 0, shared_runs(tmp_path / "work", 0, len(corpus)), tmp_path / "passes").path
    assert passes.read_bytes() == direct.read_bytes()
    assert not list((tmp_path / "work").glob(".merge-*")), "merge scratch left behind"


def test_a_map_returning_counts_takes_the_fast_path_and_reduce_sees_the_same(tmp_path: Path, corpus: list[str]) -> None:
    fast = load_app("wordcount")
    for m, f in enumerate(corpus):
        result = run_map(fast, m, f, 2, tmp_path / "work")
        assert result.counters["combine_input_records"] == 0  # nothing left to combine
    outs = [run_reduce(fast, r, shared_runs(tmp_path / "work", r, len(corpus)), tmp_path / "out").path for r in range(2)]
    ref = run_sequential(load_app("wc"), corpus, tmp_path / "ref.txt")
    assert read_output_lines(outs) == read_output_lines([ref])
    assert read_output_lines([run_sequential(fast, corpus, tmp_path / "ref2.txt")]) == read_output_lines([ref])


def test_file_server_serves_runs_in_chunks_and_refuses_other_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actors import ActorSystem
    from apps.mapreduce import shuffle
    from apps.mapreduce.protocol import ReadChunk

    monkeypatch.setattr(shuffle, "CHUNK", 1000)  # many chunks for a small file
    data = os.urandom(5500)
    (tmp_path / "mr-3-1").write_bytes(data)
    (tmp_path / "secret").write_bytes(b"no")
    with ActorSystem() as server_side, ActorSystem() as client_side:
        server_side.spawn(shuffle.FileServer, shuffle.intermediate_resolver(tmp_path), name="files")
        ref = client_side.ref(server_side.endpoint, "files")
        assert shuffle.fetch_to_file(ref, "mr-3-1", tmp_path / "copy", timeout=5) == 5500
        assert (tmp_path / "copy").read_bytes() == data
        for name in ("secret", "../mr-3-1", "mr-9-9"):
            with pytest.raises(shuffle.FetchError):
                shuffle.fetch_to_file(ref, name, tmp_path / "nope", timeout=5)
        assert not (tmp_path / "nope").exists() and not list(tmp_path.glob(".nope*"))
        for bad in (ReadChunk("mr-3-1", -1, 10), ReadChunk("mr-3-1", 0, 1 << 40), "junk"):
            assert isinstance(ref.ask(bad, timeout=5), shuffle.Refused)
        ref.tell("junk")  # a bad tell neither kills the server nor stops it serving
        assert ref.ask(ReadChunk("mr-3-1", 5000, 1000), timeout=5) == data[5000:]
        gone = client_side.ref("ipc:///nonexistent/zactor-none.sock", "files")
        with pytest.raises(shuffle.FetchError, match="did not answer"):
            shuffle.fetch_to_file(gone, "mr-3-1", tmp_path / "x", timeout=0.3)


def test_one_round_of_pings_names_every_silent_file_server_and_spares_the_live_one(tmp_path: Path) -> None:
    from actors import ActorSystem
    from apps.mapreduce import shuffle
    from apps.mapreduce.protocol import Ping

    dead = ["ipc:///nonexistent/zactor-a.sock", "ipc:///nonexistent/zactor-b.sock"]
    with ActorSystem() as server_side, ActorSystem() as client_side:
        server_side.spawn(shuffle.FileServer, shuffle.intermediate_resolver(tmp_path), name=shuffle.FILES_NAME)
        assert client_side.ref(server_side.endpoint, shuffle.FILES_NAME).ask(Ping(), timeout=5) is True
        asked = [dead[0], server_side.endpoint, dead[1], dead[0], "garbage"]
        assert shuffle.unreachable(client_side, asked, timeout=0.5) == [dead[0], dead[1], "garbage"]
        assert shuffle.unreachable(client_side, [server_side.endpoint], timeout=5) == []


def test_the_coordinator_counts_a_death_once_reassigns_at_once_and_ignores_bad_reports(tmp_path: Path) -> None:
    from actors import ActorSystem
    from apps.mapreduce.coordinator import JobConfig, start_coordinator
    from apps.mapreduce.protocol import FetchFailed, MapTask, ReduceTask, RequestTask, Status, TaskDone, WorkerLost

    (tmp_path / "a.txt").write_text("a")
    config = JobConfig((str(tmp_path / "a.txt"),), n_reduce=1, workdir=str(tmp_path), outdir=str(tmp_path),
                       task_timeout=600, probe_every=0)
    where = "ipc:///nonexistent/w1.sock"
    with ActorSystem() as system:
        coord = start_coordinator(system, config)

        def ask(message: object) -> object:
            return coord.ask(message, timeout=5)

        first = ask(RequestTask("w1"))
        assert isinstance(first, MapTask)
        ask(TaskDone("w1", "map", first.id, first.attempt, where))
        assert ask(Status()).phase == "reduce"
        for bad in (WorkerLost("nonsense", "x", worker="w1"), WorkerLost("probe", "x", endpoint=7)):  # type: ignore[arg-type]
            assert ask(bad) is False
        assert ask(WorkerLost("supervisor", "exit -9", worker="w1")) is True
        st = ask(Status())
        assert (st.phase, st.reexecuted, st.counters["workers_lost_supervisor"]) == ("map", 1, 1)
        ask(FetchFailed("w2", 0, 1, (where,), "did not answer"))  # the same death, reported late by a reducer
        st = ask(Status())
        assert (st.reexecuted, st.counters["fetch_failures"], st.counters["workers_lost_fetch"]) == (1, 1, 0)
        again = ask(RequestTask("w2"))
        assert isinstance(again, MapTask) and again.id == first.id
        ask(WorkerLost("supervisor", "exit -9", worker="w2"))  # dies mid-map: the map is free at once
        ask(TaskDone("w2", "map", again.id, again.attempt, "ipc:///nonexistent/w2.sock"))  # sent before it died
        assert ask(Status()).maps_done == 0, "a dead worker's map output was taken as done"
        third = ask(RequestTask("w3"))
        assert isinstance(third, MapTask) and third.id == first.id
        assert ask(Status()).reassigned == 1
        ask(TaskDone("w3", "map", third.id, third.attempt, "ipc:///nonexistent/w3.sock"))
        reduce = ask(RequestTask("w3"))
        assert isinstance(reduce, ReduceTask)
        ask(TaskDone("w3", "reduce", reduce.id, reduce.attempt))
        ask(WorkerLost("supervisor", "exit 0", worker="w3"))  # workers leave when the job is over: no loss
        st = ask(Status())
        assert (st.phase, st.reexecuted, st.counters["workers_lost_supervisor"]) == ("done", 1, 2)


def test_an_idle_workers_request_waits_at_the_coordinator_until_there_is_work(tmp_path: Path) -> None:
    # Before: an idle worker got Wait(0.1) at once and polled, so a reduce started up to 0.1 s after the
    # last map, and a job's end waited on polls. The tick is made long here: only a change may answer.
    from actors import ActorSystem
    from apps.mapreduce.coordinator import JobConfig, start_coordinator
    from apps.mapreduce.protocol import MapTask, ReduceTask, Release, RequestTask, Status, TaskDone, Wait

    (tmp_path / "a.txt").write_text("a")
    config = JobConfig((str(tmp_path / "a.txt"),), n_reduce=1, workdir=str(tmp_path), outdir=str(tmp_path),
                       task_timeout=600, probe_every=0, hold_reduces=True, tick=600)
    with ActorSystem() as system:
        coord = start_coordinator(system, config)
        task = coord.ask(RequestTask("w1"), timeout=5)
        assert isinstance(task, MapTask)
        coord.ask(TaskDone("w1", "map", task.id, task.attempt), timeout=5)
        before = coord.ask(Status(), timeout=5)
        assert (before.phase, before.held) == ("reduce", True)
        follower = coord.ask(Status(newer_than=before.version), block=False, timeout=30)
        first = coord.ask(RequestTask("w1"), block=False, timeout=30)
        second = coord.ask(RequestTask("w1"), block=False, timeout=30)  # the first one's asker gave up
        coord.ask(Status(), timeout=5)  # handled after the three above: had they been answered, it shows
        assert first.get(timeout=5) == Wait(0.0), "a worker's earlier request was kept after it asked again"
        assert not second.done and not follower.done, "answered with nothing changed (a poll)"
        coord.ask(Release(), timeout=5)
        assert second.get(timeout=5) == Wait(0.0)
        after = follower.get(timeout=5)
        assert after.version > before.version and not after.held
        assert isinstance(coord.ask(RequestTask("w1"), timeout=5), ReduceTask)


def test_a_message_the_coordinator_ignores_is_not_a_change(tmp_path: Path) -> None:
    # Before: anything that was not a request bumped the version, so a stray or malformed tell
    # woke every held request and every follower of the job for nothing.
    from actors import ActorSystem
    from apps.mapreduce.coordinator import JobConfig, start_coordinator
    from apps.mapreduce.protocol import MapTask, Release, RequestTask, Status, Wait, WorkerLost

    (tmp_path / "a.txt").write_text("a")
    config = JobConfig((str(tmp_path / "a.txt"),), n_reduce=1, workdir=str(tmp_path), outdir=str(tmp_path),
                       task_timeout=600, probe_every=0, tick=600)
    with ActorSystem() as system:
        coord = start_coordinator(system, config)
        assert isinstance(coord.ask(RequestTask("w1"), timeout=5), MapTask)
        held = coord.ask(RequestTask("w1"), block=False, timeout=30)  # the only map is running
        version = coord.ask(Status(), timeout=5).version
        follower = coord.ask(Status(newer_than=version), block=False, timeout=30)
        assert coord.ask("what is this?", timeout=5) is None
        assert coord.ask(WorkerLost("nobody-knows-this", "boom", worker="w1"), timeout=5) is False
        assert coord.ask(Status(), timeout=5).version == version
        assert not held.done and not follower.done, "an ignored message woke the waiters"
        assert coord.ask(Release(), timeout=5) is True
        assert held.get(timeout=5) == Wait(0.0)
        assert follower.get(timeout=5).version == version + 1


def test_the_coordinator_answers_a_waiting_request_at_its_tick_with_nothing_changed(tmp_path: Path) -> None:
    # A worker's ask times out after 1 s: a request held longer would hand work to nobody.
    from actors import ActorSystem
    from apps.mapreduce.coordinator import JobConfig, start_coordinator
    from apps.mapreduce.protocol import MapTask, RequestTask, Status, Wait

    (tmp_path / "a.txt").write_text("a")
    config = JobConfig((str(tmp_path / "a.txt"),), n_reduce=1, workdir=str(tmp_path), outdir=str(tmp_path),
                       task_timeout=600, probe_every=0, tick=0.05)
    with ActorSystem() as system:
        coord = start_coordinator(system, config)
        assert isinstance(coord.ask(RequestTask("w1"), timeout=5), MapTask)
        version = coord.ask(Status(), timeout=5).version
        idle = coord.ask(RequestTask("w2"), block=False, timeout=30)  # the only map is running: nothing to do
        assert idle.get(timeout=5) == Wait(0.0)
        now = coord.ask(Status(), timeout=5).version
        assert now == version + 1, "a worker joining is a change"
        assert coord.ask(Status(newer_than=now), timeout=5).version == now  # answered at the tick all the same
        with pytest.raises(ValueError, match="tick"):
            JobConfig(("a",), tick=0)


def test_the_coordinators_pings_wait_their_own_probe_timeout_not_the_fetch_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the probe waited fetch_timeout, so the soak's 1 s fetches made every busy worker look dead.
    import queue

    from actors import Actor, ActorSystem
    from apps.mapreduce.cli import main as mr_main
    from apps.mapreduce.coordinator import PROBER_NAME, Coordinator, JobConfig
    from apps.mapreduce.protocol import MapTask, Probe, RequestTask, TaskDone

    seen: queue.SimpleQueue[Probe] = queue.SimpleQueue()

    class RecordingProber(Actor):  # stands in for the Prober: what was it asked to do?
        def on_receive(self, message: object) -> list[str]:
            if isinstance(message, Probe):
                seen.put(message)
            return []

    (tmp_path / "a.txt").write_text("a")
    config = JobConfig((str(tmp_path / "a.txt"),), n_reduce=1, workdir=str(tmp_path), outdir=str(tmp_path),
                       task_timeout=600, fetch_timeout=0.5, probe_every=0.05, probe_timeout=7.5)
    where = "ipc:///nonexistent/w1.sock"
    with ActorSystem() as system:
        system.spawn(RecordingProber, name=PROBER_NAME)
        coord = system.spawn(Coordinator, config, name="coordinator")
        task = coord.ask(RequestTask("w1"), timeout=5)
        assert isinstance(task, MapTask)
        coord.ask(TaskDone("w1", "map", task.id, task.attempt, where), timeout=5)
        probe = seen.get(timeout=10)
    assert (probe.endpoints, probe.timeout) == ((where,), 7.5)

    with pytest.raises(ValueError, match="probe_timeout"):
        JobConfig(("a",), probe_timeout=0)
    with pytest.raises(SystemExit) as exit_info:
        mr_main(["coordinator", "--probe-timeout", "0", str(tmp_path / "a.txt")])
    assert exit_info.value.code == 2
    assert "--probe-timeout must be positive" in capsys.readouterr().err
