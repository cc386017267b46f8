"""The job report printed at the end of ``zactor mr run``: counters as Hadoop prints them."""

from __future__ import annotations

from apps.mapreduce.protocol import JobStatus

_LABELS = [
    ("Map-Reduce Framework", [
        ("input_bytes", "Input split bytes"),
        ("map_output_records", "Map output records"),
        ("map_output_bytes", "Map output bytes"),
        ("combine_input_records", "Combine input records"),
        ("combine_output_records", "Combine output records"),
        ("spills", "Spills"),
        ("spilled_records", "Spilled records"),
        ("shuffle_bytes", "Reduce shuffle bytes"),
        ("reduce_input_groups", "Reduce input groups"),
        ("reduce_input_records", "Reduce input records"),
        ("reduce_output_records", "Reduce output records"),
    ]),
    ("Job", [
        ("reexecuted_maps", "Re-executed map tasks (output lost)"),
        ("fetch_failures", "Failed shuffle fetches"),
        ("reassigned_tasks", "Tasks reassigned (timeout or dead worker)"),
        ("workers_lost_supervisor", "Dead workers seen by the supervisor"),
        ("workers_lost_probe", "Dead workers found by liveness checks"),
        ("workers_lost_fetch", "Dead workers found by reducers"),
        ("backup_tasks", "Backup tasks"),
    ]),
]


def job_report(status: JobStatus) -> str:
    """Counters, per-phase wall time and each worker's peak RSS, one per line, indented as Hadoop does."""
    lines = [f"Job {status.phase}: {status.maps_total} map tasks, {status.reduces_total} reduce tasks", "Counters:"]
    for group, labels in _LABELS:
        lines.append(f"\t{group}")
        lines.extend(f"\t\t{label}={status.counters.get(key, 0)}" for key, label in labels)
    lines.append("\tWall time (s)")
    lines.extend(f"\t\t{phase}={seconds:.2f}" for phase, seconds in status.phase_seconds.items())
    if status.worker_peak_rss:
        lines.append("\tPeak RSS per worker (MB)")
        lines.extend(f"\t\t{w}={rss / 1e6:.0f}" for w, rss in sorted(status.worker_peak_rss.items()))
    return "\n".join(lines)
