"""``metaprune bench fit``: rows/s and peak memory of every model on one store.

Each model is fitted in its own fresh process (spawned), so its peak resident set size (``ru_maxrss``)
is its own; the figure includes the interpreter, PyTorch and the libraries (reported separately as the
baseline measured before the fit). Targets checked: peak ≤ 2 GiB for linear, sgd, mlp and lightgbm
(meant for a 100-seed LeNet-300-100 store); lightgbm and mlp fit 8 training seeds in ≤ 120 s.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError
from metaprune.fit.models import REGRESSORS
from metaprune.provenance import package_versions

MEMORY_TARGET_MB = 2048.0
MEMORY_MODELS = ("linear", "sgd", "mlp", "lightgbm")
TIME_TARGET_S = 120.0
TIME_MODELS = ("lightgbm", "mlp")
TIME_SEEDS = 8


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _bench_one(store: str, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: fit one model without saving, return timings and peak RSS."""
    import time

    import metaprune.fit.core as core
    import metaprune.fit.models  # noqa: F401  (import the libraries before the baseline)

    if model == "mlp":
        import torch  # noqa: F401
    if model == "lightgbm":
        import lightgbm  # noqa: F401

    baseline = _rss_mb()
    t0 = time.perf_counter()
    res = core.fit_model([store], core.FitConfig.for_recipe("thesis", model=model, **config), save=False)
    total = time.perf_counter() - t0
    m = res.metrics
    return {
        "model": model,
        "train_seeds": len(res.meta["train_seeds"]),
        "test_seeds": len(res.meta["test_seeds"]),
        "rows": m["fit"]["rows"],
        "rows_used": m["fit"]["rows_used"],
        "fit_seconds": m["fit"]["seconds"],
        "rows_per_s": m["fit"]["rows_per_s"],
        "rows_processed": m["fit"]["rows_processed"],
        "total_seconds": total,
        "peak_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
        "test_r2": m["test"]["r2"],
        "test_jaccard": m["test"]["jaccard"],
        "test_spearman": m["test"]["spearman"],
        "options": res.meta["options"],
    }


def model_options(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``MODEL:KEY=VALUE`` strings (``--option``) as ``{model: {key: value}}``, the ``options`` of ``bench_fit``."""
    per_model: dict[str, dict[str, str]] = {}
    for item in items:
        model_name, colon, pair = item.partition(":")
        key, eq, value = pair.partition("=")
        if not colon or not eq or not key:
            raise MetapruneError(f"bad --option {item!r}; accepted: MODEL:KEY=VALUE, e.g. mlp:epochs=1")
        per_model.setdefault(model_name.strip(), {})[key.strip()] = value.strip()
    return per_model


def bench_fit(
    store: str | Path | None = None,
    models: Sequence[str] | None = None,
    *,
    datasets_dir: str | Path = "datasets",
    target: str = "round",
    features: str = "all",
    preprocess: str = "minmax",
    train_seeds: str | None = None,
    test_seeds: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Fit every model (default: all six) on ``store`` (default: the newest) and measure each."""
    from metaprune.fit.stores import open_view, resolve_stores

    paths, picked = resolve_stores(store, datasets_dir)
    view = open_view(paths[0])
    names = [REGRESSORS.canonical(m) for m in (models or REGRESSORS.names())]
    results = []
    ctx = mp.get_context("spawn")
    for i, name in enumerate(names):
        if progress is not None:
            progress(f"fitting {name}", i, len(names))
        config = {
            "target": target,
            "features": features,
            "preprocess": preprocess,
            "train_seeds": train_seeds,
            "test_seeds": test_seeds,
            "options": dict((options or {}).get(name, {})),
            "threads": threads,
        }
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            results.append(pool.submit(_bench_one, str(paths[0]), name, config).result())
    if progress is not None:
        progress("done", len(names), len(names))
    checks = []
    for r in results:
        if r["model"] in MEMORY_MODELS:
            checks.append(
                {
                    "model": r["model"],
                    "target": f"peak RSS <= {MEMORY_TARGET_MB:.0f} MB",
                    "value": r["peak_rss_mb"],
                    "ok": r["peak_rss_mb"] <= MEMORY_TARGET_MB,
                    "seeds": r["train_seeds"],
                }
            )
        if r["model"] in TIME_MODELS and r["train_seeds"] == TIME_SEEDS:
            checks.append(
                {
                    "model": r["model"],
                    "target": f"fit on {TIME_SEEDS} seeds <= {TIME_TARGET_S:.0f} s",
                    "value": r["fit_seconds"],
                    "ok": r["fit_seconds"] <= TIME_TARGET_S,
                    "seeds": r["train_seeds"],
                }
            )
    return {
        "store": str(paths[0]),
        "store_picked_as_newest": picked,
        "network": view.network,
        "dataset": view.dataset,
        "complete_seeds": len(view.complete_seeds),
        "weights_per_seed": view.n_weights,
        "features": features,
        "target": target,
        "cpus": os.cpu_count(),
        "threads": threads,
        "results": results,
        "checks": checks,
        "versions": package_versions(),
    }
