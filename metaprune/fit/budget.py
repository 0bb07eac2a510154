"""The learned budget (``#learned``): per-layer kept counts predicted from layer-level features.

A per-weight scorer with one global top-k gets the per-layer split wrong (the Jackpot I run: a 22-feature
model put 673 of 1,331 kept weights into LeNet-300-100's 1,000-weight last layer; the harvest target keeps
344 there on average over 16 seeds), and the split alone moves a ticket by points. So ``fit`` also fits
how the *target* splits its weights: for every training seed and every level l of the target (density d_l
after l levels, from ``target_round``), each layer j contributes one row

    features  b_j = [log(n_j / n), log fan_in_j, log fan_out_j, depth_j / (L - 1), is_last_j];
              x_j = [b_j, b_j · log d_l, b_j · (log d_l)², log d_l, (log d_l)², 1]
    target    y_j = log((kept_j + 1/2) / n_j) - log d_l      (the layer's density relative to the global one)

and a ridge regression maps x to y: per layer, a quadratic in log density (a line missed the target's
split at its last level by tens of weights in LeNet-300-100's small last layer). At prune time the
predicted relative densities are turned into counts that sum to exactly ``keep_count(d, n)`` (largest
remainder, at least one and at most n_j per layer). The fit is a few dozen rows, so it is stored in the
model card as plain numbers (no payload).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaprune.errors import MetapruneError

RIDGE = 1e-3
BUDGET_VERSION = 2
LAYER_FEATURES = ("log_share", "log_fan_in", "log_fan_out", "rel_depth", "is_last")


def layer_features(sizes: Sequence[int], fan_in: Sequence[int], fan_out: Sequence[int], density: float) -> np.ndarray:
    """The rows ``x_j`` of one network at ``density``: float64 [layers, 3 * 5 + 3]."""
    n = float(sum(sizes))
    count = len(sizes)
    base = np.array(
        [
            [
                math.log(s / n),
                math.log(max(fi, 1)),
                math.log(max(fo, 1)),
                j / (count - 1) if count > 1 else 0.0,
                1.0 if j == count - 1 else 0.0,
            ]
            for j, (s, fi, fo) in enumerate(zip(sizes, fan_in, fan_out, strict=True))
        ]
    )
    ld = math.log(float(density))
    return np.hstack(
        [base, base * ld, base * ld * ld, np.full((count, 1), ld), np.full((count, 1), ld * ld), np.ones((count, 1))]
    )


def fit_budget(rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Ridge fit of the relative log densities; ``rows`` = (features [layers, F], targets [layers]) pairs."""
    x = np.vstack([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    reg = RIDGE * np.eye(x.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the intercept
    coef = np.linalg.solve(x.T @ x + reg, x.T @ y)
    pred = x @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    return {
        "version": BUDGET_VERSION,
        "layer_features": list(LAYER_FEATURES),
        "coef": [float(c) for c in coef],
        "ridge": RIDGE,
        "rows": int(x.shape[0]),
        "r2": 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0,
    }


def target_rows(
    target_round: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    fan_in: Sequence[int],
    fan_out: Sequence[int],
    level_densities: Sequence[float],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (features, targets) pair per target level of one seed: the alive counts after each level."""
    sizes = [size for _, size in bounds]
    out = []
    for level, density in enumerate(level_densities, start=1):
        alive = target_round > level
        kept = np.array([alive[o : o + s].sum() for o, s in bounds], dtype=np.float64)
        y = np.log((kept + 0.5) / np.asarray(sizes, dtype=np.float64)) - math.log(density)
        out.append((layer_features(sizes, fan_in, fan_out, density), y))
    return out


def apportion(weights: np.ndarray, total: int, caps: Sequence[int]) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total``, each in [1, cap] (largest remainder)."""
    caps_arr = np.asarray(caps, dtype=np.int64)
    if total < len(caps_arr):
        raise MetapruneError(
            f"a learned budget keeps at least one weight per layer, but the density keeps only {total} weights "
            f"of {len(caps_arr)} layers; accepted: a higher density"
        )
    counts = np.ones(len(caps_arr), dtype=np.int64)
    free = np.asarray(weights, dtype=np.float64).copy()
    left = total - len(caps_arr)
    while left > 0:
        room = caps_arr - counts
        open_ = room > 0
        share = np.where(open_, free, 0.0)
        if share.sum() <= 0:
            share = open_.astype(np.float64)
        ideal = left * share / share.sum()
        add = np.minimum(np.floor(ideal).astype(np.int64), room)
        if add.sum() == 0:  # hand out the remainders, largest first
            order = np.argsort(-(ideal - np.floor(ideal)), kind="stable")
            for j in order:
                if left == 0:
                    break
                if room[j] > 0:
                    add[j] += 1
                    left -= 1
            counts += add
            continue
        counts += add
        left -= int(add.sum())
    return [int(c) for c in counts]


def predict_counts(budget: dict[str, Any], layout, density: float) -> list[int]:
    """Per-layer kept counts of ``layout`` at ``density`` from a fitted budget (``fit_budget``)."""
    from metaprune.pruning.masks import keep_count

    if int(budget.get("version", 0)) != BUDGET_VERSION:
        raise MetapruneError(f"budget model version {budget.get('version')!r}; accepted: {BUDGET_VERSION} (refit)")
    sizes = [layer.size for layer in layout.layers]
    x = layer_features(sizes, [la.fan_in for la in layout.layers], [la.fan_out for la in layout.layers], density)
    rel = x @ np.asarray(budget["coef"], dtype=np.float64)
    wanted = np.asarray(sizes, dtype=np.float64) * float(density) * np.exp(rel)
    return apportion(wanted, keep_count(density, layout.total), sizes)


def level_densities(density: float, levels: int) -> list[float]:
    from metaprune.pruning.schedules import exponential_densities

    return exponential_densities(1.0, float(density), int(levels))


def fit_store_budget(views: Sequence[Any], seeds: Sequence[int]) -> dict[str, Any] | None:
    """The learned budget of the target in ``views`` over ``seeds`` (None when a store records no levels)."""
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    wanted = set(int(s) for s in seeds)
    for view in views:
        if view.levels is None or view.density is None:
            return None
        table = view.store.layer_table()
        fan_in = [int(v) for v in table["fan_in"]]
        fan_out = [int(v) for v in table["fan_out"]]
        densities = level_densities(view.density, view.levels)
        for seed in view.complete_seeds:
            if seed not in wanted:
                continue
            rounds = view.store.target_round(seed)
            rows.extend(target_rows(rounds, view.layer_bounds, fan_in, fan_out, densities))
    return fit_budget(rows) if rows else None
