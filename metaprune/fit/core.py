"""``metaprune fit`` as a library function: one model fitted on the training seeds of harvest stores, scored
on the held-out seeds, saved with its card.

The jobs around it live beside it: the seed split (``fit.split``), the streamed data (``fit.sampler``),
the held-out metrics (``fit.assess``), cross-validation and grid search (``fit.cv``), the card
(``fit.persist.ModelCard``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError
from metaprune.feature_names import MULTI_SHOT_EXCLUDED
from metaprune.files import check_folder_writable
from metaprune.fit import portable
from metaprune.fit import preprocess as pp
from metaprune.fit.assess import evaluate_units, next_level_overlap, sibling_overlap
from metaprune.fit.budget import fit_store_budget
from metaprune.fit.config import FitConfig
from metaprune.fit.cv import cross_validate, select_by_cv
from metaprune.fit.models import REGRESSORS, Regressor, make_regressor
from metaprune.fit.persist import ModelCard, check_name, dynamics_features, save_model
from metaprune.fit.sampler import ProgressFn, SeedReader, StreamData, Unit, trajectory_units
from metaprune.fit.split import split_seeds
from metaprune.fit.stores import StoreView, open_stores, resolve_stores, select_target
from metaprune.pruning.method import IntendedUse
from metaprune.threads import limited_threads

TRAIN_EVAL_SEEDS = 8  # training seeds scored for the train R²/MSE (bounded time for big stores)


@dataclass
class FitResult:
    name: str
    path: Path | None  # None when not saved
    meta: dict[str, Any]  # the card's record (with the payload once saved)
    stores: list[str]
    default_store: bool  # True when the store was picked as the newest under datasets/
    card: ModelCard | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]


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
    views = select_target(open_stores(paths), config.target_method)
    features = _shared_features(config, views)
    config = config.with_rounds_of([v.levels for v in views])
    check_multi_shot_features(config.intended_use(), str(config.use), features)
    complete = sorted({s for v in views for s in v.complete_seeds})
    seeds = split_seeds(complete, config.train_seeds, config.test_seeds)
    store_hash = combined_hash(views)
    target_dir = Path(models_dir) / check_name(name or default_name(model_name, config, features, views, store_hash))
    if save and target_dir.exists() and not force:
        raise MetapruneError(f"model {str(target_dir)!r} exists; accepted: another --name, or --force to replace it")
    if save:
        check_folder_writable(models_dir, "models folder", "--models-dir")  # before the fit, not after it
    # probe the options before any work: a bad option fails in a second, not after the fit
    check_objective(make_regressor(model_name, config.options, config.seed, len(features), config.threads), config)
    check_states(config, views)
    check_siblings(config, views, [*seeds[0], *seeds[1]])
    reader = SeedReader(features, config.preprocess, config.target, pp.BASE_SCORES, config.sample_weight)
    with limited_threads(config.threads):
        # held-out metrics are taken on the dense state: how the ticket's top-k compares at θ0
        train_units, test_units = units_of(views, seeds[0], config.states), units_of(views, seeds[1])
        model, metrics = _fit_and_score(model_name, config, reader, train_units, test_units, progress)
    sibling = sibling_overlap(views)
    if sibling is not None:  # the target's noise ceiling, beside the model's own Jaccard
        metrics["sibling"] = sibling
    budget = fit_store_budget(views, seeds[0])  # the target's per-layer split (#learned)
    card = ModelCard.from_fit(target_dir, config, model, features, views, seeds, metrics, budget, store_hash)
    if not save:
        return FitResult(card.name, None, card.to_meta(), [str(v.path) for v in views], picked, card)
    card = ModelCard.read(save_model(model, card.to_meta(), target_dir, force=force))
    return FitResult(card.name, card.path, card.meta, [str(v.path) for v in views], picked, card)


def _shared_features(config: FitConfig, views: Sequence[StoreView]) -> tuple[str, ...]:
    """The features ``config`` selects (stored, or derived from stored ones: ``fit.portable``), which every
    store must hold, computed with the same settings in every store (``check_feature_configs``)."""
    stored = views[0].feature_names
    features = pp.resolve_features(config.features, stored, derived=portable.derivable(stored))
    for v in views[1:]:
        lacking = [f for f in portable.stored_columns(features) if f not in v.feature_names]
        if lacking:
            raise MetapruneError(f"store {v.path} lacks features {', '.join(lacking)}; stores must share a feature set")
    portable.check_preprocess(features, config.preprocess)
    check_feature_configs(views, features)
    return features


def check_feature_configs(views: Sequence[StoreView], features: Sequence[str]) -> None:
    """The stores must have computed the features the model reads with the same settings, since a model
    records one: the density and UMS rounds matter only to ``synflow_ums``, the warm-up only to the dynamics
    features. So stores of different networks harvested at different densities fit one model of the
    static or portable features."""
    stored = portable.stored_columns(features)
    ignored = set()
    if not any(f in MULTI_SHOT_EXCLUDED for f in stored):
        ignored |= {"density", "ums_rounds"}
    if not dynamics_features(stored):
        ignored.add("warmup")
    first = {k: v for k, v in views[0].feature_config.items() if k not in ignored}
    for v in views[1:]:
        other = {k: val for k, val in v.feature_config.items() if k not in ignored}
        if other != first:
            raise MetapruneError(
                f"stores {views[0].path} and {v.path} computed the model's features with different settings "
                f"({first} vs {other}); a model can record only one"
            )


def default_name(
    model_name: str, config: FitConfig, features: tuple[str, ...], views: Sequence[StoreView], store_hash: str
) -> str:
    """``<model>-<target>-<features>[-<preprocess>]-<hash>``: the store's config hash for one store."""
    name_hash = views[0].config_hash if len(views) == 1 else store_hash
    slug = pp.features_slug(config.features, features)
    suffix = "" if config.preprocess == "minmax" else f"-{config.preprocess}"
    return f"{model_name}-{config.target}-{slug}{suffix}-{name_hash}"


def check_states(config: FitConfig, views: Sequence[StoreView]) -> None:
    """Trajectory states need stores that hold them."""
    if config.states != "trajectory":
        return
    flat = [v for v in views if len(v.states) < 2]
    if flat:
        raise MetapruneError(
            f"store {flat[0].path} holds no trajectory states (schema version {flat[0].store.schema_version}"
            f"{', harvested without one' if flat[0].store.schema_version > 1 else ''}); accepted: --states dense, "
            "or a store harvested by this metaprune"
        )


def check_siblings(config: FitConfig, views: Sequence[StoreView], seeds: Sequence[int]) -> None:
    """A target that reads the target's sibling needs one for every seed the fit reads: refused before any
    work, in the store's own words (``HarvestStore.sibling_mask``)."""
    if config.target not in pp.SIBLING_TARGETS:
        return
    for view in views:
        for seed in sorted(set(seeds) & set(view.complete_seeds)):
            if seed not in view.store.sibling_seeds:
                view.store.sibling_mask(seed)


def units_of(views: Sequence[StoreView], seeds: Sequence[int], states: str = "dense") -> list[Unit]:
    """The units of ``seeds`` in every store that holds them complete: their θ0 (dense) or every state."""
    wanted = set(seeds)
    if states == "trajectory":
        return [u for v in views for u in trajectory_units(v, [s for s in v.complete_seeds if s in wanted])]
    return [Unit(v, s) for v in views for s in v.complete_seeds if s in wanted]


def check_multi_shot_features(use: IntendedUse, spelled: str, features: Sequence[str]) -> None:
    """A model meant for multi-shot use recomputes its features every round; ``synflow_ums`` is itself a
    100-round UMS, so N outer rounds would cost 100·N SynFlow rounds. Such models leave it out."""
    if use.schedule != "ums":
        return
    quadratic = [f for f in features if f in MULTI_SHOT_EXCLUDED]
    if quadratic:
        raise MetapruneError(
            f"--use {spelled!r} recomputes the features every round, and {quadratic[0]} is itself a 100-round UMS "
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


def combined_hash(views: Sequence[StoreView]) -> str:
    if len(views) == 1:
        return views[0].content_hash
    text = ",".join(sorted(v.content_hash for v in views))
    return hashlib.sha256(text.encode()).hexdigest()[:8]
