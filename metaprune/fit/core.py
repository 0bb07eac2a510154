"""``metaprune fit`` as a library function: honest seed splits, streamed training, held-out metrics, saving.

Splits are by seed (a seed is one network initialisation; all its weights go to one side), and a seed
number means the same initialisation in every store of the same network, so when several stores are
combined the split is by seed number across all of them. Preprocessing is per network (``preprocess``),
so no statistic is ever fitted on held-out seeds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.feature_names import MULTI_SHOT_EXCLUDED
from metaprune.files import check_folder_writable
from metaprune.fit import preprocess as pp
from metaprune.fit.budget import fit_store_budget
from metaprune.fit.config import FitConfig
from metaprune.fit.metrics import RankingAccumulator, RegressionAccumulator
from metaprune.fit.models import REGRESSORS, Regressor, limited_threads, make_regressor
from metaprune.fit.persist import check_name, save_model
from metaprune.fit.stores import StoreView, open_stores, resolve_stores
from metaprune.provenance import package_versions
from metaprune.seeds import format_seeds, parse_seeds

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

QUERY_ROWS = 10_000  # LightGBM's cap on a ranking query: one query = at most this many rows of one layer
CACHE_BYTES = 256 * 2**20  # preprocessed training seeds kept in memory between passes (at most)
TRAIN_EVAL_SEEDS = 8  # training seeds scored for the train R²/MSE (bounded time for big stores)


@dataclass
class FitResult:
    name: str
    path: Path | None  # None when not saved
    meta: dict[str, Any]
    stores: list[str]
    default_store: bool  # True when the store was picked as the newest under datasets/

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]


# ------------------------------------------------------------------------------------------------ split


def _as_seeds(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_seeds(value)
    return tuple(sorted({int(s) for s in value}))


def split_seeds(
    complete: Sequence[int], train: str | Sequence[int] | None, test: str | Sequence[int] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Train and test seeds. Default test: the last quarter of the complete seeds (at least one)."""
    complete = tuple(sorted(set(complete)))
    tr, te = _as_seeds(train), _as_seeds(test)
    for label, seeds in (("train", tr), ("test", te)):
        if seeds is not None:
            missing = [s for s in seeds if s not in complete]
            if missing:
                raise MetapruneError(
                    f"--{label}-seeds {format_seeds(missing)} are not complete in the store(s); "
                    f"complete seeds: {format_seeds(complete) or 'none'}"
                )
    if tr is not None and te is not None:
        both = sorted(set(tr) & set(te))
        if both:
            raise MetapruneError(
                f"seeds {format_seeds(both)} are in both --train-seeds and --test-seeds; a held-out seed must "
                "never be trained on"
            )
    if te is None:
        rest = [s for s in complete if tr is None or s not in tr]
        if tr is None:
            if len(complete) < 2:
                raise MetapruneError(
                    f"too few complete seeds to hold any out ({len(complete)}: {format_seeds(complete) or 'none'}); "
                    "accepted: a store with at least 2 complete seeds"
                )
            n_test = max(1, len(complete) // 4)
            te = complete[-n_test:]
        else:
            te = tuple(rest)
    if tr is None:
        tr = tuple(s for s in complete if s not in te)
    if not te:
        raise MetapruneError("no seed left to test on; accepted: fewer --train-seeds or explicit --test-seeds")
    if not tr:
        raise MetapruneError("no seed left to train on; accepted: fewer --test-seeds or explicit --train-seeds")
    return tuple(tr), tuple(te)


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Unit:
    """One network: a seed of one store, in one state of the target's trajectory (0: dense θ0).

    ``rows`` are the weights alive in that state (all of them in state 0).
    """

    view: StoreView
    seed: int
    state: int = 0
    rows: int = -1

    @property
    def n_rows(self) -> int:
        return self.view.n_weights if self.rows < 0 else self.rows


def trajectory_units(view: StoreView, seeds: Sequence[int]) -> list[Unit]:
    """Every stored state of each seed, with its alive count (from ``target_round``, cheap to read)."""
    out = []
    for seed in seeds:
        rounds = view.store.target_round(seed)
        out.extend(Unit(view, seed, s, int((rounds > s).sum())) for s in view.states)
    return out


class SeedReader:
    """Reads, preprocesses and targets one unit at a time (the alive weights of its state)."""

    def __init__(
        self,
        features: tuple[str, ...],
        preprocess: str,
        target: str,
        reference: tuple[str, ...] = (),
        sample_weight: str = "none",
    ):
        self.features = features
        self.preprocess = preprocess
        self.target = target
        self.reference = tuple(r for r in reference if r not in features)
        self.sample_weight = sample_weight

    def read(self, unit: Unit, with_reference: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
        """(preprocessed X, targets dict incl. ``y``, ``levels`` to go, ``weight`` and ``layer`` per row, raw
        reference columns by name), all over the weights alive in the unit's state."""
        want = list(self.features)
        refs = [r for r in self.reference if with_reference and r in unit.view.feature_names]
        if unit.state == 0:
            x_raw, full = unit.view.read_seed(unit.seed, want + refs)
            alive = np.arange(x_raw.shape[0])
        else:
            alive, x_raw, full = unit.view.store.read_state(unit.seed, unit.state, want + refs)
        bounds = pp.alive_bounds(alive, unit.view.layer_bounds)
        x = pp.preprocess(x_raw[:, : len(want)], self.preprocess, bounds, want)
        raw_cols = {name: x_raw[:, i] for i, name in enumerate(want + refs)}
        targets = {k: np.asarray(v)[alive] for k, v in full.items()}
        targets["y"] = pp.make_target(targets, self.target, unit.view.levels, unit.state)
        targets["levels"] = pp.levels_to_go(targets, unit.state)
        targets["weight"] = pp.sample_weights(targets["levels"], self.sample_weight)
        targets["layer"] = np.repeat(np.arange(len(bounds)), [size for _, size in bounds])
        return x, targets, raw_cols


class StreamData:
    """``TrainData`` over a set of units: passes seed by seed (shuffled), or a bounded row subsample."""

    def __init__(self, units: Sequence[Unit], reader: SeedReader, seed: int, progress: ProgressFn | None, stage: str):
        self.units = list(units)
        self.reader = reader
        self.n_features = len(reader.features)
        self.rows = sum(u.n_rows for u in self.units)
        self.weighted = reader.sample_weight != "none"
        self.seed = seed
        self._progress = progress
        self.stage = stage
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(f"{self.stage}: {stage}", done, total)

    def _load(self, i: int, keep: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(X, y, extras: ``weight`` (or None), ``levels``, ``layer``) of unit ``i``."""
        if i in self._cache:
            return self._cache[i]
        x, t, _ = self.reader.read(self.units[i])
        y = t["y"]
        extras = {"weight": t["weight"], "levels": t["levels"].astype(np.int16), "layer": t["layer"].astype(np.int16)}
        size = x.nbytes + y.nbytes + sum(v.nbytes for v in extras.values() if v is not None)
        if keep and self._cached_bytes + size <= CACHE_BYTES:
            self._cache[i] = (x, y, extras)
            self._cached_bytes += size
        return x, y, extras

    def weighted_passes(
        self, n: int, *, shuffle: bool = True
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
        """As ``passes``, with each row's sample weight (None when the fit is unweighted)."""
        total = n * len(self.units)
        done = 0
        for p in range(n):
            order = np.arange(len(self.units))
            if shuffle:
                g = np.random.default_rng(_np_seed(self.seed, "shuffle", p))
                order = g.permutation(order)
            for i in order:
                x, y, extras = self._load(int(i), keep=n > 1)  # a single pass has nothing to reuse
                w = extras["weight"]
                if shuffle:
                    perm = np.random.default_rng(_np_seed(self.seed, "shuffle", p, int(i) + 1)).permutation(x.shape[0])
                    x, y = x[perm], y[perm]
                    w = None if w is None else w[perm]
                yield p, x, y, w
                done += 1
                self.report(f"pass {p + 1}/{n}", done, total)

    def passes(self, n: int, *, shuffle: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for p, x, y, _ in self.weighted_passes(n, shuffle=shuffle):
            yield p, x, y

    def _counts(self, max_rows: int) -> list[int]:
        """Rows drawn from each unit: the same share of every unit, exactly min(max_rows, rows) in all."""
        sizes = [u.n_rows for u in self.units]
        frac = min(1.0, max_rows / max(self.rows, 1))
        counts = [min(n, int(math.floor(frac * n))) for n in sizes]
        # hand out the rows lost to rounding so the sample has exactly min(max_rows, rows) rows
        short = min(max_rows, self.rows) - sum(counts)
        for i in range(len(counts)):
            if short <= 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                short -= 1
        return counts

    def sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = self.weighted_sample(max_rows)
        return x, y

    def weighted_sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As ``sample``, with each row's sample weight (None when the fit is unweighted)."""
        counts = self._counts(max_rows)
        x_out = np.empty((sum(counts), self.n_features), dtype=np.float32)
        y_out = np.empty(sum(counts), dtype=np.float32)
        w_out = np.empty(sum(counts), dtype=np.float32) if self.weighted else None
        pos = 0
        for i, c in enumerate(counts):
            x, y, extras = self._load(i, keep=False)
            w = extras["weight"]
            if c < x.shape[0]:
                pick = np.random.default_rng(_np_seed(self.seed, "shuffle", 10_000, i)).choice(
                    x.shape[0], c, replace=False
                )
                pick.sort()
                x, y = x[pick], y[pick]
                w = None if w is None else w[pick]
            x_out[pos : pos + c] = x
            y_out[pos : pos + c] = y
            if w_out is not None:
                w_out[pos : pos + c] = w
            pos += c
            self.report("reading", i + 1, len(self.units))
        self.release()
        return x_out, y_out, w_out

    def query_sample(self, max_rows: int, query_rows: int = QUERY_ROWS) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Ranking queries: per (unit, layer) at most ``query_rows`` alive weights, drawn uniformly, with
        their relevance = levels they outlive from the state (0 = removed by the next level). Returns
        (X, relevance int32, query sizes); at most about ``max_rows`` rows in all (the same share per unit)."""
        counts = self._counts(max_rows)
        xs, rels, groups = [], [], []
        for i, c in enumerate(counts):
            x, _, extras = self._load(i, keep=False)
            layer, levels = extras["layer"], extras["levels"]
            share = c / max(x.shape[0], 1)
            g = np.random.default_rng(_np_seed(self.seed, "query", i))
            for j in np.unique(layer):
                rows = np.flatnonzero(layer == j)
                take = min(rows.size, query_rows, max(2, int(round(share * rows.size))))
                pick = np.sort(g.choice(rows, take, replace=False)) if take < rows.size else rows
                xs.append(x[pick])
                rels.append(levels[pick].astype(np.int32) - 1)
                groups.append(int(pick.size))
            self.report("reading", i + 1, len(self.units))
        self.release()
        return np.concatenate(xs), np.concatenate(rels), groups

    def release(self) -> None:
        """Drop the cached seeds."""
        self._cache.clear()
        self._cached_bytes = 0


def _np_seed(master: int, stream: str, *extra: int) -> int:
    from metaprune.seeds import stream_seed

    return stream_seed(master, stream, *extra)


# ------------------------------------------------------------------------------------------ evaluation


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


# ------------------------------------------------------------------------------------------------ fit


def fit_model(
    stores: Sequence[str | Path] | str | Path | None = None,
    config: FitConfig | None = None,
    *,
    name: str | None = None,
    models_dir: str | Path = "models",
    datasets_dir: str | Path = "datasets",
    force: bool = False,
    save: bool = True,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Fit ``config.model`` on the training seeds of ``stores``, score it on the held-out seeds, save it.

    ``stores``: one or more harvest stores of the same feature set; None takes the newest store with
    complete seeds under ``datasets_dir``. The model goes to ``models_dir / name`` (default
    ``<model>-<target>-<features>-<store hash>``); an existing name is refused unless ``force``.
    """
    config = (config or FitConfig()).validate()
    model_name = REGRESSORS.canonical(config.model)
    paths, picked = resolve_stores(stores, datasets_dir)
    views = open_stores(paths)
    first = views[0]
    features = pp.resolve_features(config.features, first.feature_names)
    for v in views[1:]:
        lacking = [f for f in features if f not in v.feature_names]
        if lacking:
            raise MetapruneError(f"store {v.path} lacks features {', '.join(lacking)}; stores must share a feature set")
    check_multi_shot_features(config.use, features)
    complete = sorted({s for v in views for s in v.complete_seeds})
    train_seeds, test_seeds = split_seeds(complete, config.train_seeds, config.test_seeds)
    store_hash = combined_hash(views)
    name_hash = views[0].config_hash if len(views) == 1 else store_hash
    slug = pp.features_slug(config.features, features)
    suffix = "" if config.preprocess == "minmax" else f"-{config.preprocess}"
    name = check_name(name or f"{model_name}-{config.target}-{slug}{suffix}-{name_hash}")
    target_dir = Path(models_dir) / name
    if save and target_dir.exists() and not force:
        raise MetapruneError(f"model {str(target_dir)!r} exists; accepted: another --name, or --force to replace it")
    if save:
        check_folder_writable(models_dir, "models folder", "--models-dir")  # before the fit, not after it
    # probe the options before any work: a bad option fails in a second, not after the fit
    probe = make_regressor(model_name, config.options, config.seed, len(features), config.threads)
    check_objective(probe, config)

    if config.states == "trajectory":
        flat = [v for v in views if len(v.states) < 2]
        if flat:
            raise MetapruneError(
                f"store {flat[0].path} holds no trajectory states (schema version {flat[0].store.schema_version}"
                f"{', harvested without one' if flat[0].store.schema_version > 1 else ''}); accepted: --states dense, "
                "or a store harvested by this metaprune"
            )

    def units_of(seeds: Sequence[int], states: str = "dense") -> list[Unit]:
        wanted = set(seeds)
        if states == "trajectory":
            return [u for v in views for u in trajectory_units(v, [s for s in v.complete_seeds if s in wanted])]
        return [Unit(v, s) for v in views for s in v.complete_seeds if s in wanted]

    reader = SeedReader(features, config.preprocess, config.target, pp.BASE_SCORES, config.sample_weight)
    with limited_threads(config.threads):
        # held-out metrics are taken on the dense state: how the ticket's top-k compares at θ0
        model, metrics = _fit_and_score(
            model_name, config, reader, units_of(train_seeds, config.states), units_of(test_seeds), progress
        )
    meta = build_meta(name, model_name, model, config, features, views, store_hash, train_seeds, test_seeds, metrics)
    path = save_model(model, meta, target_dir, force=force) if save else None
    if path is not None:
        from metaprune.fit.persist import ModelCard

        meta = ModelCard.read(path).meta
    return FitResult(name, path, meta, [str(v.path) for v in views], picked)


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


def check_multi_shot_features(use: str, features: Sequence[str]) -> None:
    """A model meant for multi-shot use recomputes its features every round; ``synflow_ums`` is itself a
    100-round UMS, so N outer rounds would cost 100·N SynFlow rounds. Such models leave it out."""
    from metaprune.pruning.method import parse_use

    if parse_use(use).schedule != "ums":
        return
    quadratic = [f for f in features if f in MULTI_SHOT_EXCLUDED]
    if quadratic:
        raise MetapruneError(
            f"--use {use!r} recomputes the features every round, and {quadratic[0]} is itself a 100-round UMS "
            "(quadratic cost); accepted: features without synflow_ums and rank_synflow_ums for multi-shot use"
        )


def check_objective(model: Regressor, config: FitConfig) -> None:
    """Refuse a sample weighting the model cannot take, or a binary objective on a graded target."""
    if config.sample_weight != "none" and not model.weighted:
        accepted = ", ".join(e.name for e in REGRESSORS if e.value.weighted)
        raise MetapruneError(
            f"model {model.name!r} takes no sample weights (--sample-weight {config.sample_weight}); "
            f"accepted: {accepted}"
        )
    from metaprune.fit.models import BINARY_TARGETS

    # LightGBM's binary objective needs 0/1 labels; cross-entropy (LightGBM cross_entropy, the MLP's bce)
    # also takes a graded target in [0, 1] as soft labels
    binary = model.options.get("objective") == "binary"
    if binary and config.target not in BINARY_TARGETS:
        raise MetapruneError(
            f"a binary objective needs a 0/1 target, not --target {config.target}; accepted: "
            f"{', '.join(BINARY_TARGETS)}"
        )


def _fit_and_score(
    model_name: str,
    config: FitConfig,
    reader: SeedReader,
    train_units: list[Unit],
    test_units: list[Unit],
    progress: ProgressFn | None,
) -> tuple[Regressor, dict[str, Any]]:
    cv_result = None
    grid_result = None
    if config.grid:
        config, grid_result, cv_result = select_by_cv(model_name, config, train_units, reader, progress)
    elif config.cv:
        cv_result = cross_validate(model_name, config, train_units, reader, progress)
    model = make_regressor(model_name, config.options, config.seed, len(reader.features), config.threads)
    data = StreamData(train_units, reader, config.seed, progress, "fitting")
    model.import_libraries()
    t0 = time.perf_counter()
    model.fit(data)
    fit_seconds = time.perf_counter() - t0
    data.release()

    test = evaluate_units(model, test_units, reader, reference=True, progress=progress, stage="testing")
    reference = test.pop("reference", {})
    if config.states == "trajectory":
        test["next_level"] = next_level_overlap(model, test_units, reader, progress)
    train_eval = [u for u in train_units if u.state == 0][:TRAIN_EVAL_SEEDS]
    train = evaluate_units(model, train_eval, reader, ranking=False, progress=progress, stage="train metrics")
    metrics: dict[str, Any] = {
        "test": test,
        "train": train,
        "reference": reference,
        "fit": {
            "seconds": fit_seconds,
            "rows": data.rows,
            "rows_used": model.rows_used,
            "rows_processed": model.rows_seen,
            "rows_per_s": model.rows_used / max(fit_seconds, 1e-9),  # distinct training rows per second
            "threads": config.threads,
        },
    }
    if cv_result is not None:
        metrics["cv"] = cv_result
    if grid_result is not None:
        metrics["grid"] = grid_result
    return model, metrics


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


def combined_hash(views: Sequence[StoreView]) -> str:
    import hashlib

    if len(views) == 1:
        return views[0].content_hash
    text = ",".join(sorted(v.content_hash for v in views))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _dynamics_warmup(features: Sequence[str], feature_config: dict[str, Any]) -> float | None:
    from metaprune.features import DYNAMICS_FEATURES

    if not any(f.removeprefix("rank_") in DYNAMICS_FEATURES for f in features):
        return None
    warmup = feature_config.get("warmup")
    return None if warmup is None else float(warmup["epochs"])


def build_meta(
    name: str,
    model_name: str,
    model: Regressor,
    config: FitConfig,
    features: tuple[str, ...],
    views: Sequence[StoreView],
    store_hash: str,
    train_seeds: Sequence[int],
    test_seeds: Sequence[int],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    networks = sorted({v.network for v in views})
    datasets = sorted({v.dataset for v in views})
    return {
        "name": name,
        "model": model_name,
        "options": model.options,
        "grid": {k: list(v) for k, v in config.grid.items()},
        "target": config.target,
        "target_description": pp.TARGETS[config.target],
        "feature_spec": config.features if isinstance(config.features, str) else "+".join(config.features),
        "features": list(features),
        "preprocess": config.preprocess,
        "states": config.states,
        "sample_weight": config.sample_weight,
        "per_layer_normalised": pp.per_layer_normalised(features, config.preprocess),
        "network": networks[0] if len(networks) == 1 else networks,
        "dataset": datasets[0] if len(datasets) == 1 else datasets,
        "layouts": [json.loads(t) for t in sorted({json.dumps(v.layout) for v in views})],
        "feature_config": views[0].feature_config,
        "intended_use": config.intended_use(_dynamics_warmup(features, views[0].feature_config)).to_meta(),
        "feature_version": views[0].feature_version,
        "target_density": views[0].density,
        "levels": views[0].levels,
        # the target's own ticket, the ceiling a learned scorer is measured against
        "target_method": {"method": views[0].target_method.canonical(), "levels": views[0].levels},
        "budget": fit_store_budget(views, train_seeds),  # the target's per-layer split (#learned)
        "stores": [
            {
                "path": str(v.path),
                "abs_path": str(Path(v.path).absolute()),
                "hash": v.content_hash,
                "config_hash": v.config_hash,
                "complete_seeds": list(v.complete_seeds),
            }
            for v in views
        ],
        "store_hash": store_hash,
        "train_seeds": list(train_seeds),
        "test_seeds": list(test_seeds),
        "seed": config.seed,
        "metrics": metrics,
        "versions": package_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
