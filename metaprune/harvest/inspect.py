"""``inspect_store``: what a harvest store holds, its targets, and how each feature correlates with them.

The correlation table is the thesis's figure 5.7b: Pearson and Spearman correlation of every feature
with ``target_round`` and with ``target_mask``. They are computed per seed over its weights and averaged
over (at most ``max_seeds``) complete seeds, streaming one seed at a time; a feature that is constant
within a seed has no correlation there (NaN, shown as "-").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaprune.harvest.store import LEVELS_AT_CHANCE, open_store
from metaprune.ranking import pearson, spearman


def store_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def correlations(store, seeds=None, max_seeds: int = 20) -> dict:
    """Mean over seeds of the per-seed Pearson/Spearman r of each feature with target_round / target_mask."""
    seeds = list(store.complete_seeds if seeds is None else seeds)[: max(0, int(max_seeds))]
    names = store.feature_names
    acc = {k: [] for k in ("pearson_round", "spearman_round", "pearson_mask", "spearman_mask")}
    for _, x, target in store.iter_seeds(seeds):
        x = x.astype(np.float64)
        targets = np.stack([target["target_round"], target["target_mask"]], axis=1).astype(np.float64)
        pr, sp = pearson(x, targets), spearman(x, targets)  # [F, 2]: round, mask
        acc["pearson_round"].append(pr[:, 0])
        acc["pearson_mask"].append(pr[:, 1])
        acc["spearman_round"].append(sp[:, 0])
        acc["spearman_mask"].append(sp[:, 1])
    rows = []
    for j, name in enumerate(names):
        row = {"feature": name}
        for key, values in acc.items():
            col = np.array([v[j] for v in values], dtype=np.float64)
            row[key] = float(np.nanmean(col)) if col.size and np.isfinite(col).any() else float("nan")
        rows.append(row)
    return {"seeds": seeds, "rows": rows, "averaged_over": "per-seed correlations, mean over seeds"}


def target_summary(store, seeds=None) -> dict:
    ds = store.dataset
    seeds = list(store.complete_seeds if seeds is None else seeds)
    table = store.layer_table()
    layer_index = np.asarray(ds["layer_index"].values, dtype=np.int64)
    n_layers = len(table)
    kept = []
    rounds: dict[int, float] = {}
    densities = []
    for seed in seeds:
        target = store.targets(seed)
        mask, rnd = target["target_mask"], target["target_round"]
        kept.append(np.bincount(layer_index, weights=mask.astype(np.float64), minlength=n_layers))
        densities.append(float(mask.mean()))
        values, counts = np.unique(rnd, return_counts=True)
        for v, c in zip(values, counts, strict=True):
            rounds[int(v)] = rounds.get(int(v), 0.0) + float(c) / max(len(seeds), 1)
    kept_arr = np.array(kept) if kept else np.zeros((0, n_layers))
    layers = []
    for j, row in enumerate(table.itertuples()):
        col = kept_arr[:, j] if kept_arr.size else np.zeros(0)
        layers.append(
            {
                "name": row.name,
                "size": int(row.size),
                "kept_mean": float(col.mean()) if col.size else float("nan"),
                "kept_min": int(col.min()) if col.size else 0,
                "kept_max": int(col.max()) if col.size else 0,
            }
        )
    return {
        "seeds": seeds,
        "method": store.config.target_method().canonical(),
        "density_target": float(store.attrs.get("density", float("nan"))),
        "density_mean": float(np.mean(densities)) if densities else float("nan"),
        "kept_per_seed": [int(round(d * store.n_weights)) for d in densities],
        "layers": layers,
        "round_counts_mean": dict(sorted(rounds.items())),
    }


def sibling_summary(store) -> dict | None:
    """The sibling's top-k Jaccard with the target per seed that has one, and the mean (None: no sibling)."""
    per_seed = store.sibling_jaccard()
    if not per_seed:
        return None
    values = list(per_seed.values())
    return {"seeds": list(per_seed), "jaccard_per_seed": values, "jaccard": float(np.mean(values))}


def schema_note(store) -> str:
    from metaprune.harvest.store import SCHEMA_VERSION

    if store.schema_version < SCHEMA_VERSION:
        return (
            f"old (schema version {store.schema_version}: no trajectory states; readable, fit --states dense only; "
            "harvest again for the trajectory)"
        )
    if len(store.states) < 2:
        return "current, harvested without trajectory states"
    stored = len(store.states) - 1  # state 0 is the dense θ0 of the `features` variable
    return (
        f"current, with trajectory states 0-{stored}: state 0 is the dense θ0 (`features`), states 1-{stored} "
        f"are the `state` dimension of `state_features` ({stored} entries)"
    )


def inspect_store(path: str | Path, max_seeds: int = 20) -> dict:
    """A JSON-able summary of the store at ``path``."""
    from metaprune.seeds import format_seeds

    with open_store(path) as store:
        planned, complete = store.planned_seeds, store.complete_seeds
        attrs = store.attrs
        return {
            "store": str(Path(path)),
            "schema_version": attrs.get("schema_version"),
            "schema_note": schema_note(store),
            "states": list(store.states),
            "state_densities": [1.0, *(float(d) for d in store.dataset["state_density"].values)]
            if "state_density" in store.dataset.coords
            else [1.0],
            "network": attrs.get("network"),
            "dataset": attrs.get("dataset"),
            "config_hash": attrs.get("config_hash"),
            "config": attrs.get("config"),
            "dims": {str(k): int(v) for k, v in store.dataset.sizes.items()},
            "planned": list(planned),
            "complete": list(complete),
            "planned_text": format_seeds(list(planned)),
            "complete_text": format_seeds(list(complete)) or "none",
            "features": list(store.feature_names),
            "target": target_summary(store),
            "sibling": sibling_summary(store),
            # JSON keys are strings; None: a store harvested before the levels at chance were recorded
            "levels_at_chance": {str(k): list(v) for k, v in store.levels_at_chance().items()}
            if LEVELS_AT_CHANCE in store.dataset
            else None,
            "correlation": correlations(store, max_seeds=max_seeds),
            "bytes_on_disk": store_bytes(path),
        }
