"""Run an evaluation: for each seed, prune every (method, density), train the tickets as populations.

All methods of a seed share θ0 (per init) and the data order (the seed's ``data_order`` stream): a
paired design. Each seed is one task; a task writes its own units, so seeds can run in-process, in a
process pool or on a Dask cluster, and an interrupted evaluation resumes at the first missing unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from metaprune.datasets import DataSplits, dataset_info, load_dataset
from metaprune.errors import MetapruneError
from metaprune.evaluate.config import EvaluateConfig, planned_units
from metaprune.evaluate.results import ResultsDir, unit_name
from metaprune.fit.persist import ModelCard
from metaprune.networks import build_network, flat_weights, prunable_layout
from metaprune.provenance import to_jsonable
from metaprune.pruning.apply import (
    MASK_ABLATIONS,
    Ticket,
    ablated,
    initial_network,
    level_steps,
    prune_data_for,
    prune_seeds,
    warmup_epochs,
)
from metaprune.pruning.fits import check_method_for_network
from metaprune.pruning.masks import MaskReport, mask_report
from metaprune.pruning.method import Method, Unit
from metaprune.pruning.schedules import check_density_for_network
from metaprune.pruning.warmup import warmup_steps
from metaprune.rigl import RigL
from metaprune.training import MemberResult, resolve_device, train_population

MAX_POPULATION = 48  # members per trained population; larger populations fall out of cache on CPUs


@dataclass
class _Member:
    unit: str
    row: dict
    net: nn.Module
    mask: torch.Tensor | None
    dynamic: RigL | None = None  # dynamic sparse training (RigL): the mask changes while it trains


def _row_base(config: EvaluateConfig, seed: int, unit: Unit, density: float) -> dict:
    row = {"seed": seed, "method": str(unit), "density": density, "network": config.network}
    row["dataset"] = config.dataset
    if isinstance(unit, Method):
        m = unit
        row.update(scorers=">".join(m.scorers), schedule=m.schedule, init=m.init, ablation=m.ablation or "")
        row.update(warmup=m.warmup or 0.0, budget=m.budget or config.schedule.scope)
        row["dynamic_sparse"] = m.dynamic  # RigL: not pruning at init; a report gives it a section of its own
    else:
        row.update(scorers="", schedule="", init=unit.init, ablation="", warmup=0.0, budget="")
    return row


def _report_fields(report: MaskReport) -> dict:
    """The row fields of a ticket's mask report (computed once, with the ticket)."""
    out = {
        "kept": report.kept,
        "effective_density": report.effective_density,
        "collapsed": bool(report.collapsed_layers),
        "collapsed_layers": ";".join(report.collapsed_layers),
    }
    for i, layer in enumerate(report.layers):
        out[f"kept_l{i}"] = layer.kept
        out[f"effective_l{i}"] = layer.effective
        out[f"live_l{i}"] = layer.live
    return out


@dataclass
class _Shared:
    """What the units of one seed share: each method's ticket (its !shuffle and !reinit units are made from
    it) and the warm-up records of its methods (``PruneContext.warmups``)."""

    tickets: dict[tuple[str, float], Ticket] = field(default_factory=dict)
    warmups: dict = field(default_factory=dict)


Emit = Callable[[dict], None]


def _noop(event: dict) -> None:
    pass


def evaluate_seed(
    out: str | Path,
    config: EvaluateConfig,
    seed: int,
    device: str | None = None,
    data_root: str | None = None,
    max_population: int = MAX_POPULATION,
    emit: Emit = _noop,
) -> int:
    """Prune and train every missing unit of ``seed``; returns the number of units committed.

    ``emit`` receives progress events: ``{"event": "prune", "seed", "done", "total"}`` after each ticket,
    ``{"event": "epoch", "seed", "epoch", "active", "members", "prune_seconds", "train_seconds"}`` after
    each training epoch.
    """
    results = ResultsDir(Path(out))
    dev = resolve_device(device)
    splits = load_dataset(config.dataset, data_root=data_root)
    planned = planned_units(config)
    if all(results.done(seed, unit_name(m, d)) for m, d in planned):
        return 0
    # A population's numbers depend (in the last bits) on its size, so a partly committed seed retrains
    # its whole planned population and commits only the missing units: resumed == uninterrupted.
    t0 = time.perf_counter()
    shared = _Shared()
    members = [_prune_member(config, seed, m, d, splits, dev, shared) for m, d in _announced(planned, seed, emit)]
    prune_seconds = time.perf_counter() - t0
    splits_dev = splits.to(dev)
    committed = 0
    for start in range(0, len(members), max_population):
        group = members[start : start + max_population]
        t_train = time.perf_counter()

        def progress(epoch: int, active: int, total: int, t_train=t_train) -> None:
            emit({
                "event": "epoch", "seed": seed, "epoch": epoch, "active": active, "members": total,
                "prune_seconds": prune_seconds, "train_seconds": time.perf_counter() - t_train,
            })  # fmt: skip

        dynamic = [m.dynamic for m in group] if any(m.dynamic for m in group) else None
        result = train_population(
            [m.net for m in group], splits_dev, config.train, data_seed=seed, masks=[m.mask for m in group],
            device=dev, progress=progress, dynamic=dynamic,
        )  # fmt: skip
        for i, (member, outcome) in enumerate(zip(group, result.members, strict=True)):
            row = {**member.row, **_member_fields(outcome)}
            row.update(population=len(group), member=i, train_seconds=result.seconds, device=str(dev))
            if results.done(seed, member.unit):
                continue
            mask = member.mask
            if member.dynamic is not None and result.masks is not None:  # the mask RigL trained to
                mask = result.masks[i]
                row.update(_report_fields(mask_report(member.net, mask, input_shape=splits.input_shape)))
            kept = None if mask is None else flat_weights(member.net)[mask]
            results.commit(seed, member.unit, row, mask, kept)
            committed += 1
    return committed


def _announced(planned: list, seed: int, emit: Emit):
    """The planned units, each announced to ``emit`` once it has been pruned."""
    for i, unit in enumerate(planned):
        yield unit
        emit({"event": "prune", "seed": seed, "done": i + 1, "total": len(planned)})


def _prune_member(
    config: EvaluateConfig,
    seed: int,
    method: Unit,
    density: float,
    splits: DataSplits,
    device: torch.device,
    shared: _Shared,
) -> _Member:
    """One planned unit's network and mask: a dense network, or the method's ticket at ``density``."""
    row = _row_base(config, seed, method, density)
    t0 = time.perf_counter()
    if not isinstance(method, Method):  # a dense unit
        net = initial_network(method.init_method, config.network, splits, seed, prune_data_for(splits, seed))
        mask = None
        row.update(kept=prunable_layout(net).total, effective_density=1.0, collapsed=False, collapsed_layers="")
        row["cost_epochs"] = 0.0
    else:
        ticket = _ticket(method, density, seed, config, splits, device, shared)
        net, mask = ticket.net, ticket.mask
        row.update(_report_fields(ticket.report))
        row["cost_epochs"] = ticket.cost_epochs
        row["warmup"] = warmup_epochs(method, splits, config.train)  # +wNs in epochs: the sweep's axis
    row["prune_seconds"] = time.perf_counter() - t0
    dynamic = RigL(seed) if isinstance(method, Method) and method.dynamic else None
    return _Member(unit_name(method, density), row, net, mask, dynamic)


def _ticket(
    method: Method,
    density: float,
    seed: int,
    config: EvaluateConfig,
    splits: DataSplits,
    device: torch.device,
    shared: _Shared,
) -> Ticket:
    """The seed's ticket of ``method``; a shuffle or re-init of a method is made from that method's ticket
    (pruned once per seed and density, whether or not it is itself planned)."""
    base = replace(method, ablation=None) if method.ablation in MASK_ABLATIONS else method
    key, tickets = (base.canonical(), density), shared.tickets
    if key not in tickets:
        tickets[key] = prune_seeds(
            base,
            config.network,
            splits,
            density,
            (seed,),
            schedule=config.schedule,
            train=config.train,
            per_class=config.per_class,
            device=device,
            warmups=shared.warmups,
        )[0]
    if base is method:
        return tickets[key]
    return ablated(tickets[key], method, splits.input_shape)


def _member_fields(m: MemberResult) -> dict:
    return {
        "test_acc": m.test_acc,
        "test_loss": m.test_loss,
        "val_acc": m.val_acc,
        "val_loss": m.val_loss,
        "best_iteration": m.best_iteration,
        "best_epoch": m.best_epoch,
        "epochs_trained": m.epochs_trained,
        "at_chance": m.at_chance,
    }


def check_for_network(config: EvaluateConfig, allow_seen_seeds: bool) -> None:
    """What the validated config cannot know alone, checked once before any work: every density keeps a
    weight of the network (per layer under layer scope); every learned model fits the network
    (``ModelCard.check_fits``, as at prune time) and was not fitted on the evaluation seeds of that
    network (unless explicitly allowed)."""
    shape, classes = dataset_info(config.dataset)
    net = build_network(config.network, shape, classes, 0)
    for density in config.densities:
        check_density_for_network(density, net, config.schedule.scope)
        for method in config.methods:
            check_method_for_network(method, net, density)
    for model_dir in [d for m in config.methods for d in m.learned_models]:
        card = ModelCard.read(model_dir)
        card.check_fits(net)
        overlap = sorted(card.seen_seeds & set(config.seeds))
        if overlap and not allow_seen_seeds and config.network in card.networks:
            raise MetapruneError(
                f"evaluation seeds {overlap[:5]} were used to fit {model_dir}; accepted: seeds outside its "
                "harvest (default 1000-1004), or --allow-seen-seeds"
            )


def check_warmups(config: EvaluateConfig, data_root: str | None = None) -> None:
    """Every warm-up (and every iterative method's budget), a budget method's included, fits the training
    config and the training split, checked before any work: one that does not would stop the run at its
    first seed."""
    parts = [p for m in config.methods for p in (m, m.budget_method) if p is not None and p.warmup is not None]
    splits = load_dataset(config.dataset, data_root=data_root) if parts else None
    for part in parts:
        if part.iterative:
            level_steps(part, config.schedule.levels, splits, config.train)  # type: ignore[arg-type]
        else:
            warmup_steps(part.warmup, splits, config.train, in_steps=part.warmup_in_steps)  # type: ignore[arg-type]


def units_committed(config: EvaluateConfig, out: str | Path) -> tuple[int, int]:
    """(units committed, units planned) of an evaluation in the results directory ``out``."""
    results = ResultsDir(Path(out))
    units = [unit_name(m, d) for m, d in planned_units(config)]
    return sum(results.done(s, u) for s in config.seeds for u in units), len(config.seeds) * len(units)


def run_evaluation(
    config: EvaluateConfig,
    out: str | Path,
    *,
    device: str | None = None,
    data_root: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    force: bool = False,
    allow_seen_seeds: bool = False,
    on_event: Emit | None = None,
    preset: str | None = None,
) -> ResultsDir:
    """Evaluate every (seed, method, density); resumable; returns the results directory.

    ``preset`` (the preset the config was built from, if any) is recorded with the directory: another
    preset, or the same preset for other learned models, is refused there (``ResultsDir.open_or_create``).
    ``on_event`` receives ``{"event": "start", "seeds", "units_done", "units_total", "executor"}`` once
    every check has passed (``units_done > 0``: the run resumes), the seeds' prune and epoch events
    (``evaluate_seed``), and ``{"event": "seed_done", "seed", "done", "total"}`` after each seed.
    """
    from metaprune.executor import get_executor

    config = config.validate()
    check_for_network(config, allow_seen_seeds)
    check_warmups(config, data_root)
    results = ResultsDir(Path(out))
    models = {str(d): ModelCard.read(d).sha256 for m in config.methods for d in m.learned_models}
    results.open_or_create(to_jsonable(config), force=force, preset=preset, models=models)
    emit = on_event or _noop
    seeds = list(config.seeds)
    done, total = units_committed(config, out)
    tasks = [(str(out), config, s, device, data_root) for s in seeds]
    with get_executor(workers=workers, scheduler=scheduler) as executor:
        emit({
            "event": "start", "seeds": len(seeds), "units_done": done, "units_total": total,
            "executor": executor.describe(),
        })  # fmt: skip
        for finished, (index, _) in enumerate(executor.map(_seed_task, tasks, on_event=emit), start=1):
            emit({"event": "seed_done", "seed": seeds[index], "done": finished, "total": len(seeds)})
    results.consolidate()
    return results


def _seed_task(args: tuple, emit: Emit = _noop) -> int:
    out, config, seed, device, data_root = args
    return evaluate_seed(out, config, seed, device=device, data_root=data_root, emit=emit)
