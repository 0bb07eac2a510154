"""Cross-validation by seed (GroupKFold over the training units) and the grid search it decides: the
option combination of best mean cross-validated top-k Jaccard with the target ticket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.fit.assess import evaluate_units
from metaprune.fit.config import FitConfig
from metaprune.fit.models import make_regressor
from metaprune.fit.sampler import ProgressFn, SeedReader, StreamData, Unit


def grid_options(config: FitConfig) -> list[dict[str, Any]]:
    """Every combination of the grid's values over the config's own options."""
    import itertools

    keys = list(config.grid)
    return [
        {**dict(config.options), **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(list(config.grid[k]) for k in keys))
    ]


def select_by_cv(
    model_name: str, config: FitConfig, units: Sequence[Unit], reader: SeedReader, progress: ProgressFn | None
) -> tuple[FitConfig, dict[str, Any], dict[str, Any]]:
    """The grid's option combination of best mean cross-validated top-k Jaccard with the target ticket
    (what decides a ticket, rather than R²); ties go to the first. Returns the config with those options,
    the table of candidates and the chosen one's cross-validation."""
    from dataclasses import replace

    candidates = grid_options(config)
    for options in candidates:  # fail fast on a bad value, before any fold
        make_regressor(model_name, options, config.seed, len(reader.features), config.threads)
    results = [cross_validate(model_name, replace(config, options=o), units, reader, progress) for o in candidates]
    rows = [
        {"options": o, **{k: cv[k] for k in ("r2", "jaccard", "jaccard_std", "spearman")}}
        for o, cv in zip(candidates, results, strict=True)
    ]
    best = max(range(len(rows)), key=lambda i: (rows[i]["jaccard"], -i))
    chosen = replace(config, options=candidates[best], grid={})
    return chosen, {"by": "mean cv top-k Jaccard", "candidates": rows, "chosen": best}, results[best]


def cross_validate(
    model_name: str, config: FitConfig, units: Sequence[Unit], reader: SeedReader, progress: ProgressFn | None
) -> dict[str, Any]:
    """GroupKFold by seed number over the training units: one fresh model per fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.array([u.seed for u in units])
    k = int(config.cv)
    if len(set(groups.tolist())) < k:
        raise MetapruneError(
            f"--cv {k} needs at least {k} training seeds, got {len(set(groups.tolist()))}; accepted: a smaller K"
        )
    folds = []
    splits = GroupKFold(n_splits=k).split(np.zeros(len(units)), groups=groups)
    for fold, (tr, va) in enumerate(splits):
        m = make_regressor(model_name, config.options, config.seed, len(reader.features), config.threads)
        m.fit(StreamData([units[i] for i in tr], reader, config.seed, progress, f"cv fold {fold + 1}/{k}"))
        dense = [units[i] for i in va if units[i].state == 0]
        res = evaluate_units(m, dense, reader, progress=progress, stage=f"cv fold {fold + 1}/{k}")
        folds.append(
            {
                "train_seeds": sorted({units[i].seed for i in tr}),
                "val_seeds": sorted({units[i].seed for i in va}),
                **{key: res[key] for key in ("r2", "mse", "jaccard", "spearman")},
            }
        )
    summary: dict[str, Any] = {"k": k, "folds": folds}
    for key in ("r2", "mse", "jaccard", "spearman"):
        vals = np.array([f[key] for f in folds], dtype=np.float64)
        summary[key] = float(vals.mean())
        summary[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return summary
