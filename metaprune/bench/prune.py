"""``metaprune bench prune``: timing of the pruning hot paths on LeNet-300-100 against their targets."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from metaprune.config import require_positive
from metaprune.datasets import DataSplits
from metaprune.features import FEATURE_GROUPS, compute_features
from metaprune.fit.learned import cached_model, with_intended_use
from metaprune.networks import build_network, prunable_layout
from metaprune.provenance import package_versions
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import make_mask
from metaprune.pruning.method import Method, learned_method
from metaprune.pruning.schedules import ScheduleConfig
from metaprune.pruning.scorers import PruneData, score
from metaprune.pruning.warmup import warm_up
from metaprune.seeds import generator
from metaprune.training import TrainConfig

# `metaprune bench prune`: the planning targets x 1.5, seconds on one CPU thread (LeNet-300-100)
BENCH_TARGETS: dict[str, float] = {
    "snip": 0.075,
    "grasp": 0.225,
    "synflow_100_rounds": 0.54,
    "topk_266200": 0.010,
    "warmup_3_epochs_dynamics": 1.0,  # issue targets, not plan x 1.5
    "learned_ums_20_rounds": 5.0,
}
BENCH_LABELS: dict[str, str] = {
    "snip": "snip (one scoring)",
    "grasp": "grasp (one scoring)",
    "synflow": "synflow, one round",
    "synflow_100_rounds": "synflow, 100 rounds (UMS to 0.005)",
    "topk_266200": "exact top-k, 266,200 weights, ties",
    "warmup_3_epochs_dynamics": "3-epoch warm-up (mnist5k size) + dynamics features",
    "learned_ums_20_rounds": "learned:MODEL@ums, 20 rounds, one seed",
}


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
    record = warm_up(net, splits, TrainConfig(), 3, 0)
    return compute_features(net, data, 0, density=0.005, warmup=record, names=FEATURE_GROUPS["dynamics"])


def _learned(method: Method, splits: DataSplits) -> None:
    prune_seeds(method, "lenet_300_100", splits, 0.005, (0,), schedule=ScheduleConfig(rounds=20))


def bench_prune_report(repeats: int = 5, model: str | None = None) -> dict:
    """``bench_prune`` next to the planning targets (x 1.5), with pass/fail per item."""

    require_positive(repeats=repeats)
    learned = None if model is None else with_intended_use(learned_method(model, "ums"))
    seconds = bench_prune(repeats=repeats, learned=learned)
    items = []
    for key, value in seconds.items():
        target = BENCH_TARGETS.get(key)
        items.append(
            {
                "item": key,
                "label": BENCH_LABELS.get(key, key),
                "seconds": value,
                "target_s": target,
                "passed": None if target is None else bool(value <= target),
            }
        )
    checked = [i["passed"] for i in items if i["passed"] is not None]
    return {
        "items": items,
        "all_passed": all(checked),
        "repeats": repeats,
        "threads": 1,
        **({} if model is None else {"learned_predictor": learned_predictor(model)}),
        "versions": package_versions(),
    }


def learned_predictor(model_dir: str) -> str:
    """What a learned scorer predicts with: a LightGBM model through its compiled trees where a C compiler
    builds them (``fit.compiled_trees``), else LightGBM's own predictor; other models themselves."""
    regressor = cached_model(model_dir).model
    if not hasattr(type(regressor), "compiled"):
        return regressor.name
    if regressor.compiled is not None:
        return "lightgbm, trees compiled to C"
    return "lightgbm, its own predictor (no C compiler, or a model the compiler does not cover)"
