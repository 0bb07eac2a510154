"""Timing of the pruning hot paths on LeNet-300-100 (a function, not a test: timings are not asserted)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from metaprune.datasets import DataSplits
from metaprune.networks import build_network, prunable_layout
from metaprune.pruning.masks import make_mask
from metaprune.pruning.method import Method
from metaprune.pruning.scorers import PruneData, score
from metaprune.seeds import generator
from metaprune.training import TrainConfig


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_prune(repeats: int = 5, learned: Method | None = None) -> dict[str, float]:
    """Median seconds per item on one CPU thread: snip, grasp, one SynFlow round, 100 SynFlow rounds
    (exponential schedule 1.0 -> 0.005 with exact top-k between rounds), one global top-k at 0.005, a
    3-epoch warm-up on a mnist5k-sized training split with its dynamics features, and, given a ``learned``
    method (``learned:MODEL@ums`` with the model's warm-up), that method with 20 rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
        layout = prunable_layout(net)
        g = generator(0, "split")
        data = PruneData(torch.randn(100, 1, 28, 28, generator=g), torch.arange(100) % 10)
        full = torch.ones(layout.total, dtype=torch.bool)

        def synflow_rounds(rounds: int = 100) -> torch.Tensor:
            mask = full
            tie = generator(0, "tie_break")
            for r in range(1, rounds + 1):
                s = score("synflow", net, mask, data, 0)
                mask = make_mask(s, layout, 0.005 ** (r / rounds), alive=mask, generator=tie, scorer="synflow")
            return mask

        tied = torch.randint(0, 1000, (layout.total,), generator=g).float()  # many ties at the threshold
        tie = generator(0, "tie_break")
        splits = _mnist5k_sized(g)
        extra = {}
        if learned is not None:
            _learned(learned, splits)  # untimed: imports and loading the model
            extra["learned_ums_20_rounds"] = _median_time(lambda: _learned(learned, splits), repeats)
        return {
            "snip": _median_time(lambda: score("snip", net, full, data, 0), repeats),
            "grasp": _median_time(lambda: score("grasp", net, full, data, 0), repeats),
            "synflow": _median_time(lambda: score("synflow", net, full, data, 0), repeats),
            "synflow_100_rounds": _median_time(synflow_rounds, repeats),
            "topk_266200": _median_time(lambda: make_mask(tied, layout, 0.005, generator=tie), repeats),
            "warmup_3_epochs_dynamics": _median_time(lambda: _warmup_dynamics(net, splits, data), repeats),
            **extra,
        }
    finally:
        torch.set_num_threads(threads)


def _mnist5k_sized(g: torch.Generator) -> DataSplits:
    """Random data of mnist5k's shapes (3,500 / 500 / 1,000 28x28 images): timing needs no real pixels."""

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10

    return DataSplits("bench", (1, 28, 28), 10, *split(3500), *split(500), *split(1000))


def _warmup_dynamics(net, splits: DataSplits, data: PruneData) -> torch.Tensor:
    from metaprune.features import FEATURE_GROUPS, compute_features
    from metaprune.pruning.warmup import warm_up

    record = warm_up(net, splits, TrainConfig(), 3, 0)
    return compute_features(net, data, 0, density=0.005, warmup=record, names=FEATURE_GROUPS["dynamics"])


def _learned(method: Method, splits: DataSplits) -> None:
    from metaprune.pruning.apply import prune_seeds
    from metaprune.pruning.schedules import ScheduleConfig

    prune_seeds(method, "lenet_300_100", splits, 0.005, (0,), schedule=ScheduleConfig(rounds=20))
