"""Latency summaries, computed the same way by every benchmark."""

from __future__ import annotations

import statistics


def p50_p99(samples: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile (nearest rank from below) of ``samples``, in their unit."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
