"""How the benchmarks measure a speed-up on a machine whose load changes.

A speed-up is a ratio of two rates measured at different moments, so on a machine whose load changes
(other jobs, turbo, caches) the two rates drift apart: measured one after the other, the ratio swung
7x-11x between identical runs. Every figure is therefore measured in *pairs* with its reference,
interleaved (reference, candidate, reference, candidate, ...), and a speed-up is the median of the
per-pair ratios, reported with their min and max, beside the load average before and after.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable


def interleaved(
    reference: Callable[[], float], candidate: Callable[[], float], pairs: int
) -> tuple[list[float], list[float]]:
    """``pairs`` pairs of measurements in the order reference, candidate, reference, candidate, …"""
    ref: list[float] = []
    cand: list[float] = []
    for _ in range(pairs):
        ref.append(reference())
        cand.append(candidate())
    return ref, cand


def ratio_stats(reference: list[float], candidate: list[float]) -> dict:
    """Per-pair ratios candidate / reference, and their median, min and max."""
    ratios = [c / r for r, c in zip(reference, candidate, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "pairs": ratios}


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
