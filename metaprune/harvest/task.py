"""One harvest task: a population of seeds, from θ0 to features and targets (by default SynFlow-IMS) in the
store, and the targets' siblings of the seeds that have one.

A task gets only (store path, its seeds, the config) plus execution settings (device, data root). It
reads which of its seeds are already complete, trains the *whole* population anyway (a seed's numbers
must not depend on which of its population-mates happen to be done already: the batched training's
floating-point results can depend on the population size), and writes only the incomplete seeds, each
into its own region, committing each with ``complete`` after its data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from metaprune.executor import Emit


@dataclass(frozen=True)
class TaskSpec:
    store: str
    seeds: tuple[int, ...]  # the population (all seeds of one task id)
    config: dict  # HarvestConfig.identity()
    task_id: int = 0
    device: str | None = None
    data_root: str | None = None


@dataclass
class SeedStats:
    seed: int
    features_s: float
    target_s: float  # this seed's share of the population's target computation
    train_s: float  # ... of which training (the rest: SynFlow pruning rounds)
    write_s: float
    total_s: float
    levels_at_chance: tuple[int, ...] = ()  # the target's levels (from 1) whose training ended at chance


@dataclass
class TaskResult:
    task_id: int
    seeds: tuple[int, ...]
    written: tuple[int, ...]
    skipped: tuple[int, ...]
    seconds: float
    target_s: float = 0.0
    train_s: float = 0.0
    prune_s: float = 0.0
    setup_s: float = 0.0
    stats: list[SeedStats] = field(default_factory=list)


def trajectory_features(net, data, seed: int, cfg, removed_at: torch.Tensor, warmup) -> np.ndarray:
    """Features of θ0 under the target's mask after s levels, s = 1 .. levels - 1: float32 [S, rows, F].

    The mask after s levels keeps exactly the weights with ``removed_at > s``; row r of state s holds
    the r-th of them (flat order), and the rows past their count are NaN (``store.state_rows``).
    """
    from metaprune.features import FEATURE_GROUPS, alive_features
    from metaprune.harvest.store import state_rows

    n = int(removed_at.numel())
    count = len(cfg.state_densities())
    out = np.full((count, state_rows(cfg, n), len(cfg.features)), np.nan, dtype=np.float32)
    # without a warm-up the dynamics columns stay NaN, as compute_features leaves them
    names = [f for f in cfg.features if warmup is not None or f not in FEATURE_GROUPS["dynamics"]]
    columns = [list(cfg.features).index(f) for f in names]
    for state in range(1, count + 1):
        alive = removed_at.reshape(-1) > state
        rows = alive_features(
            net, data, seed, density=cfg.density, ums_rounds=cfg.ums_rounds, mask=alive, warmup=warmup, names=names
        )
        view = out[state - 1]
        view[: rows.shape[0], columns] = rows
    return out


def target_context(cfg, splits, device):
    """The harvest target's ``PruneContext``: the store's network, schedule, training and pruning batch."""
    from metaprune.pruning.context import PruneContext

    return PruneContext(cfg.network, splits, cfg.target_schedule(), cfg.train, cfg.per_class, device)


def run_task(spec: TaskSpec, emit: Emit | None = None) -> TaskResult:
    from metaprune.datasets import load_dataset
    from metaprune.harvest.config import HarvestConfig
    from metaprune.harvest.store import read_plan
    from metaprune.training import resolve_device

    emit = emit or (lambda event: None)
    t0 = time.perf_counter()
    cfg = HarvestConfig.from_dict(spec.config)
    seeds = tuple(int(s) for s in spec.seeds)
    planned, _, complete = read_plan(spec.store)
    done = {s for s, c in zip(planned, complete, strict=True) if c}
    if not any(s not in done for s in seeds):
        return TaskResult(spec.task_id, seeds, (), seeds, time.perf_counter() - t0)
    context = target_context(cfg, load_dataset(cfg.dataset, data_root=spec.data_root), resolve_device(spec.device))
    datas = [context.prune_data(s) for s in seeds]
    setup_s = time.perf_counter() - t0
    emit({"event": "task_start", "task": spec.task_id, "seeds": list(seeds), "levels": cfg.levels})
    tickets, target_s, prune_s = _target(context, cfg, seeds, spec.task_id, emit)
    siblings, sibling_s = _siblings(context, cfg, [s for s in seeds if planned.index(s) < cfg.siblings], done)
    target_s += sibling_s
    k = len(seeds)
    result = TaskResult(
        spec.task_id,
        seeds,
        (),
        tuple(s for s in seeds if s in done),
        0.0,
        target_s=target_s,
        train_s=target_s - prune_s,
        prune_s=prune_s,
        setup_s=setup_s,
    )
    written = []
    share = (target_s + setup_s) / k  # the population's setup and target time, per seed
    for i, s in enumerate(seeds):
        if s in done:
            continue
        ticket = tickets[i]
        sibling = siblings.get(s)
        features_s, write_s, chance = _write_seed(
            spec.store, context, cfg, ticket.net, datas[i], s, ticket.outcome, share, sibling
        )
        written.append(s)
        result.stats.append(
            SeedStats(
                s, features_s, target_s / k, (target_s - prune_s) / k, write_s, features_s + share + write_s, chance
            )
        )
        emit({"event": "seed", "task": spec.task_id, "seed": s})
    result.written = tuple(written)
    result.seconds = time.perf_counter() - t0
    return result


def _target(context, cfg, seeds, task_id: int, emit: Emit):
    """The target's tickets of the whole population (``HarvestConfig.target_method``, trained together on
    the config's data order): (tickets, seconds, of which scoring seconds)."""
    from metaprune.pruning.apply import prune_in_context

    def level_done(level: int, levels: int) -> None:
        emit({"event": "level", "task": task_id, "level": level, "levels": levels, "seeds": list(seeds)})

    t_target = time.perf_counter()
    tickets = prune_in_context(
        cfg.target_method(), context, cfg.density, seeds, data_seed=cfg.data_seed, progress=level_done
    )
    return tickets, time.perf_counter() - t_target, sum(t.score_seconds for t in tickets)


def _siblings(context, cfg, seeds: list[int], done: set[int]) -> tuple[dict[int, np.ndarray], float]:
    """The final masks of the target's siblings of ``seeds`` (``HarvestConfig.sibling_method``), trained
    together as a population of their own (always the same seeds, so a resumed task computes the same
    numbers): ({seed: mask}, seconds). Nothing when every one of them is complete already."""
    from metaprune.pruning.apply import prune_in_context

    if not seeds or all(s in done for s in seeds):
        return {}, 0.0
    t = time.perf_counter()
    tickets = prune_in_context(cfg.sibling_method(), context, cfg.density, seeds, data_seed=cfg.data_seed)
    masks = {s: ticket.mask.numpy().astype(bool) for s, ticket in zip(seeds, tickets, strict=True)}
    return masks, time.perf_counter() - t


def _write_seed(
    store, context, cfg, net, data, seed: int, outcome, share: float, sibling: np.ndarray | None = None
) -> tuple[float, float, tuple[int, ...]]:
    """Features (θ0 and the trajectory states), targets and the sibling's mask (if any) of one seed,
    written and committed to the store: (features seconds, write seconds, the target's levels at chance)."""
    from metaprune.features import compute_features
    from metaprune.harvest.store import LEVELS_AT_CHANCE, write_seed
    from metaprune.pruning.warmup import warm_up

    t = time.perf_counter()
    record = warm_up(net, context.splits, cfg.warmup_train, cfg.warmup_epochs, seed, device=context.device)
    x = compute_features(
        net, data, seed, density=cfg.density, ums_rounds=cfg.ums_rounds, warmup=record, columns=cfg.features
    ).numpy()
    states = trajectory_features(net, data, seed, cfg, outcome.removed_at, record)
    features_s = time.perf_counter() - t
    raw = outcome.scores.detach().to(torch.float64).cpu()
    total = raw.sum()
    target_score = (raw / total if total > 0 else raw).to(torch.float32).numpy()
    at_chance = np.array([r.at_chance for r in outcome.level_results], dtype=bool)  # per level, from 1
    t = time.perf_counter()
    write_seed(
        store,
        seed,
        {
            "features": x,
            "state_features": states,
            "target_round": outcome.removed_at.numpy().astype(np.int16),
            "target_mask": outcome.mask.numpy().astype(bool),
            "target_score": target_score,
            LEVELS_AT_CHANCE: at_chance,
            **({} if sibling is None else {"sibling_mask": sibling}),
        },
        seconds=features_s + share,
    )
    return features_s, time.perf_counter() - t, tuple(int(level) for level in np.flatnonzero(at_chance) + 1)
