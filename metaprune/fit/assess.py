"""How well a fitted model ranks the weights of units: R²/MSE pooled, top-k Jaccard and Spearman per unit
against the target (and the base scores' as references), and the overlap of one more level along the
target's trajectory (what a multi-shot learned scorer is asked each round)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.fit import preprocess as pp
from metaprune.fit.metrics import RankingAccumulator, RegressionAccumulator
from metaprune.fit.models import Regressor
from metaprune.fit.sampler import ProgressFn, SeedReader, Unit, trajectory_units


def evaluate_units(
    model: Regressor,
    units: Sequence[Unit],
    reader: SeedReader,
    *,
    reference: bool = False,
    ranking: bool = True,
    progress: ProgressFn | None = None,
    stage: str = "evaluating",
) -> dict[str, Any]:
    """R²/MSE pooled over ``units``; top-k Jaccard and Spearman per unit (averaged); reference rows."""
    reg = RegressionAccumulator()
    rank = RankingAccumulator()
    refs: dict[str, RankingAccumulator] = {}
    t0 = time.perf_counter()
    rows = 0
    for i, unit in enumerate(units):
        x, targets, raw = reader.read(unit, with_reference=reference)
        pred, ranked = model.predict_and_rank(x) if ranking else (model.predict(x), None)
        if not np.all(np.isfinite(pred)):
            raise MetapruneError(f"model {model.name!r} predicted non-finite values on seed {unit.seed}")
        y = targets["y"]
        reg.add(y, pred)
        rows += y.size
        if ranking:  # by what the learned scorer keeps the top of: a saturated probability would tie
            rank.add(ranked, y, targets["target_mask"], unit.seed)
            if reference:
                for name in pp.BASE_SCORES:
                    if name in raw:
                        refs.setdefault(name, RankingAccumulator()).add(raw[name], y, targets["target_mask"], unit.seed)
        if progress is not None:
            progress(stage, i + 1, len(units))
    out: dict[str, Any] = {"r2": reg.r2, "mse": reg.mse, "rows": rows, "seeds": [u.seed for u in units]}
    if ranking:
        out.update(rank.summary())
    out["predict_rows_per_s"] = rows / max(time.perf_counter() - t0, 1e-9)
    if reference:
        out["reference"] = {name: acc.summary() for name, acc in refs.items()}
    return out


def next_level_overlap(
    model: Regressor, units: Sequence[Unit], reader: SeedReader, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """How well the model prunes one level from each state of the held-out seeds' trajectories: per
    (seed, state), the Jaccard overlap of its top-k (k = the weights the target keeps at the next level)
    with the weights the target keeps; the mean per state and overall. What a multi-shot learned scorer
    is asked each round (the dense top-k Jaccard asks a single-shot question)."""
    from metaprune.fit.metrics import topk_jaccard

    traj = [u for u0 in {(u.view.path, u.seed): u for u in units}.values()
            for u in trajectory_units(u0.view, [u0.seed])]
    per_state: dict[int, list[float]] = {}
    for i, unit in enumerate(traj):
        x, targets, _ = reader.read(unit)
        keep = targets["levels"] > 1
        per_state.setdefault(unit.state, []).append(topk_jaccard(model.rank_scores(x), keep, unit.seed))
        if progress is not None:
            progress("next-level overlap", i + 1, len(traj))
    means = {s: float(np.mean(v)) for s, v in sorted(per_state.items())}
    return {"jaccard": float(np.mean(list(means.values()))), "per_state": {str(k): v for k, v in means.items()}}


def sibling_overlap(views: Sequence[Any]) -> dict[str, Any] | None:
    """The noise ceiling of the stores' target (``HarvestStore.sibling_jaccard``): per seed with a stored
    sibling (the same method from the same θ0 with an independent data order and pruning batch), the top-k
    Jaccard of the sibling's final mask with the target's; the mean over those seeds. None when no store
    holds a sibling. It does not depend on the model, so every seed with a sibling counts, training seeds
    included."""
    per_seed = [(seed, value) for view in views for seed, value in view.store.sibling_jaccard().items()]
    if not per_seed:
        return None
    values = [v for _, v in per_seed]
    return {"jaccard": float(np.mean(values)), "jaccard_per_seed": values, "seeds": [s for s, _ in per_seed]}
