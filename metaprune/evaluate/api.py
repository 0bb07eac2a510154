"""``metaprune evaluate`` and ``report`` as library functions."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

from metaprune.datasets import DATASETS, dataset_info
from metaprune.errors import MetapruneError, MetapruneWarning
from metaprune.evaluate.config import (
    BASELINES,
    CEILINGS,
    COMPOSITE,
    EvaluateConfig,
    Spelled,
    preset_methods,
    target_ceilings,
)
from metaprune.evaluate.report import Report, build_report, write_plots
from metaprune.evaluate.results import ResultsDir
from metaprune.evaluate.run import run_evaluation
from metaprune.fit.persist import ModelCard, newest_model
from metaprune.networks import build_network, validate_network
from metaprune.provenance import config_hash, to_jsonable
from metaprune.pruning.method import ABLATIONS, learned_name
from metaprune.pruning.schedules import ScheduleConfig


def quickstart_methods(network: str, dataset: str, models_dir: Path) -> tuple[tuple[Spelled, ...], int | None]:
    """The default evaluation: the baselines, the composite, the newest model as its card says and its
    target's own ticket (the ceiling, so the table shows the gap closed), with the target's levels.

    A newest model that cannot be read or does not fit the network is skipped with a
    ``MetapruneWarning`` naming it: it must not block the baselines.
    """
    newest = newest_model(models_dir)
    if newest is None:
        return BASELINES + (COMPOSITE,), None
    try:
        card = ModelCard.read(newest)
        shape, classes = dataset_info(dataset)
        card.check_fits(build_network(network, shape, classes, 0))
        ceilings, levels = target_ceilings((newest,))
    except MetapruneError as exc:
        warnings.warn(f"skipping the newest model {newest}: {exc}", MetapruneWarning, stacklevel=2)
        return BASELINES + (COMPOSITE,), None
    return BASELINES + (COMPOSITE, learned_name(newest), *ceilings), levels


def build_config(
    *,
    network: str = "lenet_300_100",
    dataset: str = "mnist5k",
    methods: tuple[Spelled, ...] = (),
    densities: tuple[float, ...] = (),
    seeds: tuple[int, ...] = (),
    preset: str | None = None,
    ceilings: bool = False,
    sanity: bool = False,
    models_dir: Path = Path("models"),
    models: tuple[str | Path, ...] = (),
    rounds: int | None = None,
    levels: int | None = None,
    scope: str | None = None,
    **fields,
) -> EvaluateConfig:
    """The evaluation a command line asks for: explicit methods, a preset, or the default evaluation.

    ``rounds``, ``levels`` and ``scope`` override the schedule config (a preset or the default evaluation
    takes its levels from the learned models' targets).
    """
    network, dataset = validate_network(network), DATASETS.canonical(dataset)  # argument errors come first
    if models and not preset:
        raise MetapruneError(
            "--model goes with --preset jackpot or warmup-sweep; accepted: -m learned:DIR for one method"
        )
    extra: dict = {}
    if preset:
        p_methods, p_densities, extra = preset_methods(preset, models_dir, tuple(models))
        methods = tuple(methods) + p_methods
        densities = tuple(densities) or p_densities
    elif not methods:
        methods, extra["levels"] = quickstart_methods(network, dataset, models_dir)
    if ceilings:
        methods = tuple(methods) + tuple(c.method for c in CEILINGS)
    target_levels = extra.pop("levels", None)
    if fields.get("schedule") is None:
        base = ScheduleConfig()
        fields["schedule"] = ScheduleConfig(
            rounds=base.rounds if rounds is None else rounds,
            levels=(target_levels or base.levels) if levels is None else levels,
            scope=scope or base.scope,
        )
    cfg_fields = {**extra, **{k: v for k, v in fields.items() if v is not None}}
    if seeds:
        cfg_fields["seeds"] = tuple(seeds)
    config = EvaluateConfig(
        network=network, dataset=dataset, methods=tuple(methods), densities=tuple(densities) or (0.005,), **cfg_fields
    )
    if sanity:
        variants = [m.variant(ablation=a) for m in config.methods if m.ablation is None for a in ABLATIONS]
        config = replace(config, methods=config.methods + tuple(variants))
    return config.validate()


def default_results_dir(config: EvaluateConfig, preset: str | None = None, root: Path = Path("results")) -> Path:
    """One directory per distinct evaluation: re-running the same command resumes it."""
    name = f"{preset or 'evaluate'}-{config.network.replace(':', '_')}-{config.dataset}"
    return root / f"{name}-{config_hash(to_jsonable(config))}"


def evaluate(
    config: EvaluateConfig,
    out: Path,
    **kwargs,
) -> Report:
    results = run_evaluation(config, out, **kwargs)
    report = build_report(results, config.reference, config.test)
    write_plots(report, results)
    return report


def report(path: Path, reference: str | None = None, test: str | None = None, plots: bool = True) -> Report:
    results = ResultsDir(Path(path))
    rep = build_report(results, reference, test)
    if plots:
        write_plots(rep, results)
    return rep
