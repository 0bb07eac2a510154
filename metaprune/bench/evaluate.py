"""``metaprune bench evaluate``: wall time and tickets per minute of an evaluation."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from metaprune.evaluate.api import build_config
from metaprune.evaluate.config import planned_units
from metaprune.evaluate.run import run_evaluation
from metaprune.provenance import package_versions
from metaprune.pruning.method import Method


def bench_evaluate(preset: str | None = None, out_root: Path | None = None, device: str | None = None) -> dict:
    """Wall time and tickets/minute of the quick-start evaluation (or a preset) in a fresh directory."""
    config = build_config(preset=preset, models_dir=Path("models"))
    with tempfile.TemporaryDirectory(dir=out_root) as tmp:
        t0 = time.perf_counter()
        results = run_evaluation(config, Path(tmp) / "bench", device=device)
        seconds = time.perf_counter() - t0
        rows = results.rows()
    tickets = sum(isinstance(unit, Method) for unit, _ in planned_units(config)) * len(config.seeds)
    return {
        "preset": preset or "quickstart",
        "methods": [str(m) for m in config.methods],
        "densities": list(config.densities),
        "seeds": list(config.seeds),
        "tickets": tickets,
        "trained_networks": len(rows),
        "seconds": seconds,
        "tickets_per_minute": 60 * tickets / seconds,
        "device": str(rows["device"].iloc[0]) if "device" in rows else "",
        "versions": package_versions(),
    }
