"""``metaprune bench train --density D``: the compacted/sparse population loop against the dense one.

At each density the population is what an evaluation trains: tickets of several pruning methods (their
real masks: SynFlow-UMS, SNIP, random, magnitude, pruned from each seed's θ0) on LeNet-300-100 / mnist5k.
Each figure is ``repeats`` interleaved pairs (dense run, compacted run, dense run, …) of the same
``train_population`` call — stacking, compaction, ``epochs`` epochs of steps and the final evaluation,
without early stopping — differing only in ``TrainConfig.dense_training``; a speed-up is the median of
the per-pair ratios, with their min and max (``bench.measure``).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from metaprune.bench.measure import interleaved, load_average, ratio_stats
from metaprune.config import require_positive
from metaprune.datasets import DataSplits, load_dataset
from metaprune.provenance import package_versions
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import check_density
from metaprune.pruning.method import parse_method
from metaprune.training import TrainConfig, resolve_device, train_population

BENCH_DENSITIES = (0.005, 0.01, 0.05, 0.2)
BENCH_METHODS = ("synflow@ums", "snip", "random", "magnitude")
TARGETS = {0.005: 4.0, 0.05: 2.0}  # speed-up of the population step; never below 1 at any density


def parse_densities(densities: Sequence[float] | None) -> tuple[float, ...]:
    """The densities to measure (each checked; none given: 0.005, 0.01, 0.05, 0.2)."""
    if not densities:
        return BENCH_DENSITIES
    return tuple(check_density(d) for d in densities)


class MaskedPopulation:
    """The tickets of ``methods`` × ``seeds`` at one density, trained as one population either way."""

    def __init__(self, data: DataSplits, device: torch.device, density: float, methods, seeds, epochs: int) -> None:
        tickets = [t for m in methods for t in prune_seeds(parse_method(m), "lenet_300_100", data, density, seeds)]
        self.nets = [t.net for t in tickets]
        self.masks = [t.mask for t in tickets]
        self.methods = [str(t.method) for t in tickets]
        self.data, self.device = data.to(device), device
        self.config = TrainConfig(epochs=epochs, early_stopping=False)
        self.paths: dict = {}
        for dense in (True, False):  # warm-up of both paths
            self.run(dense, epochs=1)

    def run(self, dense: bool, epochs: int | None = None) -> float:
        """Network-samples per second of one ``train_population`` call."""
        config = replace(self.config, dense_training=dense, epochs=epochs or self.config.epochs)
        r = train_population(self.nets, self.data, config, 0, masks=self.masks, device=self.device)
        if not dense:
            self.paths = r.extra["training_paths"]
        return r.samples / r.seconds


def bench_sparse_train(
    densities: Sequence[float] | None = None,
    methods: Sequence[str] = BENCH_METHODS,
    seeds: int = 4,
    epochs: int = 3,
    repeats: int = 5,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Speed-up of the compacted/sparse population loop over the dense one at each density (see module)."""
    require_positive(seeds=seeds, epochs=epochs, repeats=repeats)
    chosen = parse_densities(densities)
    say = progress if progress is not None else (lambda what: None)
    load_before = load_average()
    dev = resolve_device(device)
    data = load_dataset("mnist5k", device="cpu")
    rows = {}
    for density in chosen:
        say(f"density {density:g}: pruning {len(methods)} methods x {seeds} seeds")
        pop = MaskedPopulation(data, dev, density, methods, tuple(range(seeds)), epochs)
        say(f"density {density:g}: {repeats} pairs, dense run then compacted run")
        dense, compact = interleaved(lambda p=pop: p.run(True), lambda p=pop: p.run(False), repeats)
        rows[f"{density:g}"] = {
            "population": len(pop.nets),
            "dense_samples_per_s": statistics.median(dense),
            "compact_samples_per_s": statistics.median(compact),
            "speedup": ratio_stats(dense, compact),
            "training_paths": pop.paths,
        }
    targets = {}
    for density, row in rows.items():
        need = TARGETS.get(float(density), 1.0)
        targets[density] = {"value": row["speedup"]["median"], "target": need, "met": row["speedup"]["median"] >= need}
    return {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default)"),
        "network": "lenet_300_100",
        "dataset": "mnist5k",
        "methods": list(methods),
        "seeds": list(range(seeds)),
        "epochs_per_run": epochs,
        "repeats": repeats,
        "densities": rows,
        "targets": targets,
        "load_average": {"before": load_before, "after": load_average(), "cpus": os.cpu_count()},
        "versions": package_versions(),
    }
