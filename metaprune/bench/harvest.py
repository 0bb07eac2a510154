"""``metaprune bench harvest``: time a small harvest, measure the store's size and the reader's memory.

1. Harvest ``seeds`` seeds (default config: LeNet-300-100 / mnist5k) into a temporary store and split the
   time into target training, the target's SynFlow pruning rounds, features and writing (the overhead
   target: features + writing + setup <= 20 % of the target computation).
2. Store bytes on disk against the raw float32 size of the seed data (target <= 75 %).
3. Peak memory to open and iterate a 100-seed store: a synthetic store whose seeds are hard links to the
   harvested seeds' chunk files (no extra disk), opened and iterated (all features) in a fresh
   interpreter that imports only the reader (no torch): its peak RSS during the iteration (VmHWM after
   resetting it, the imports included in the resident set) and its tracemalloc peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metaprune.config import require_positive
from metaprune.errors import RuntimeFailure
from metaprune.harvest.inspect import store_bytes

if TYPE_CHECKING:  # pragma: no cover
    from metaprune.harvest.config import HarvestConfig

# Targets: features + writing + setup <= 20 % of the target computation; store <= 75 % of raw float32;
# iterating a 100-seed store peaks below 1 GiB resident.
TARGETS = {"overhead_fraction": 0.20, "store_fraction": 0.75, "iterate_peak_bytes": 1 << 30}


def raw_float32_bytes(store) -> int:
    """Values of the per-seed data (features and the three targets) of complete seeds x 4 bytes."""
    n, f = store.n_weights, len(store.feature_names)
    return len(store.complete_seeds) * n * (f + 3) * 4


def data_bytes(path: Path) -> int:
    return sum(store_bytes(path / v) for v in ("features", "target_round", "target_mask", "target_score"))


def _link_tree(src: Path, dst: Path) -> None:
    for root, _, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            target = dst / rel / name
            if not target.exists():
                os.link(Path(root) / name, target)


def synthetic_store(source: Path, dest: Path, n_seeds: int) -> None:
    """A store with ``n_seeds`` complete seeds whose chunks are hard links to ``source``'s seeds.

    Uses the Zarr v3 default chunk-key layout (``<array>/c/<seed index>/...``) of the seed arrays.
    """
    from metaprune.harvest.store import SEED_VARS, apply_plan, create_store, open_store
    from metaprune.networks import build_network, prunable_layout

    with open_store(source) as src:
        cfg = src.config
        positions = [src.planned_seeds.index(s) for s in src.complete_seeds]
    from metaprune.datasets import dataset_info

    shape, classes = dataset_info(cfg.dataset)
    create_store(dest, cfg, prunable_layout(build_network(cfg.network, shape, classes, 0)))
    apply_plan(dest, list(range(n_seeds)), [j // cfg.seeds_per_task for j in range(n_seeds)])
    for j in range(n_seeds):
        i = positions[j % len(positions)]
        for var in SEED_VARS:
            if var == "task":
                continue
            src_chunk = source / var / "c" / str(i)
            dst_chunk = dest / var / "c" / str(j)
            if src_chunk.is_dir():
                _link_tree(src_chunk, dst_chunk)
            elif src_chunk.is_file():
                dst_chunk.parent.mkdir(parents=True, exist_ok=True)
                os.link(src_chunk, dst_chunk)


_CHILD = r"""
import json, sys, time, tracemalloc

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

from metaprune.harvest.store import open_store  # the reader alone: numpy, xarray, zarr (no torch)

import numpy, xarray, zarr  # noqa: F401  (imported before the baseline)
base_rss = status("VmRSS")
try:  # reset the peak-RSS mark so that it covers the iteration only (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
tracemalloc.start()
t = time.perf_counter()
seeds, checksum = 0, 0.0
with open_store(sys.argv[1]) as store:
    for _, x, target in store.iter_seeds():
        seeds += 1
        checksum += float(x[:, 0].sum()) + int(target["target_mask"].sum())
seconds = time.perf_counter() - t
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({
    "seeds": seeds,
    "seconds": seconds,
    "tracemalloc_peak_bytes": peak,
    "rss_after_imports_bytes": base_rss,
    "peak_rss_bytes": status("VmHWM"),
    "peak_rss_covers_iteration_only": reset,
    "torch_imported": "torch" in sys.modules,
    "checksum": checksum,
}))
"""


def measure_iteration(path: Path) -> dict:
    """Open and iterate the store (all features) in a fresh interpreter; its peak RSS and tracemalloc peak."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeFailure(f"the store-iteration benchmark failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_harvest(
    seeds: int = 4,
    config: HarvestConfig | None = None,
    iterate_seeds: int = 100,
    device: str | None = None,
    workdir: str | Path | None = None,
    progress=None,
) -> dict:
    import torch

    from metaprune.harvest.config import HarvestConfig
    from metaprune.harvest.run import harvest
    from metaprune.harvest.store import open_store
    from metaprune.provenance import package_versions
    from metaprune.training import resolve_device

    require_positive(seeds=seeds, iterate_seeds=iterate_seeds)
    cfg = (config or HarvestConfig()).validate()
    with tempfile.TemporaryDirectory(prefix="metaprune-bench-", dir=workdir) as tmp:
        path = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        result = harvest(cfg, range(seeds), out=path, device=device, progress=progress)
        wall = time.perf_counter() - t0
        timing = result.timing()
        target = timing["train_s"] + timing["target_prune_s"]
        overhead = timing["features_s"] + timing["write_s"] + timing["setup_s"]
        with open_store(path) as store:
            raw = raw_float32_bytes(store)
            n_weights, n_features = store.n_weights, len(store.feature_names)
        disk = store_bytes(path)
        data_disk = data_bytes(path)
        synth = Path(tmp) / "synthetic.zarr"
        synthetic_store(path, synth, iterate_seeds)
        iteration = measure_iteration(synth)
        features_per_seed = [s.features_s for s in result.seed_stats]
        out = {
            "network": cfg.network,
            "dataset": cfg.dataset,
            "device": str(resolve_device(device)),
            "threads": torch.get_num_threads(),
            "seeds": seeds,
            "config": cfg.identity(),
            "n_weights": n_weights,
            "n_features": n_features,
            "wall_s": wall,
            "seconds_per_seed": wall / seeds,
            "timing": timing,
            "features_s_per_seed_median": float(np.median(features_per_seed)) if features_per_seed else None,
            "target_s": target,
            "overhead_s": overhead,
            "overhead_fraction_of_target": overhead / target if target > 0 else None,
            "overhead_fraction_of_training_incl_target_pruning": (overhead + timing["target_prune_s"])
            / timing["train_s"]
            if timing["train_s"] > 0
            else None,
            "share": {
                k: v / max(timing["task_s"], 1e-9)
                for k, v in (
                    ("train", timing["train_s"]),
                    ("target_prune", timing["target_prune_s"]),
                    ("features", timing["features_s"]),
                    ("write", timing["write_s"]),
                    ("setup", timing["setup_s"]),
                )
            },
            "store_bytes": disk,
            "store_data_bytes": data_disk,
            "raw_float32_bytes": raw,
            "store_fraction_of_raw": disk / raw if raw else None,
            "store_data_fraction_of_raw": data_disk / raw if raw else None,
            "iterate": {"store_seeds": iterate_seeds, **iteration},
            "targets": dict(TARGETS),
            "versions": package_versions(),
        }
    out["checks"] = checks(out)
    return out


def checks(result: dict) -> dict[str, dict]:
    """Each of ``TARGETS`` against its measure: ``{"value", "target" (as text), "met"}`` (None never meets)."""
    overhead, store, peak = TARGETS["overhead_fraction"], TARGETS["store_fraction"], TARGETS["iterate_peak_bytes"]
    rows = {
        "overhead": (result["overhead_fraction_of_target"], f"<= {100 * overhead:.0f} %", lambda v: v <= overhead),
        "store": (result["store_fraction_of_raw"], f"<= {100 * store:.0f} %", lambda v: v <= store),
        "iterate_peak": (result["iterate"]["peak_rss_bytes"], f"< {peak / 2**20:.0f} MiB", lambda v: v < peak),
    }
    return {
        name: {"value": value, "target": text, "met": value is not None and bool(met(value))}
        for name, (value, text, met) in rows.items()
    }
