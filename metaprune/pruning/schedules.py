"""The four pruning schedules of the thesis (5.1.1): USS, UMS, ISS (= IMP with magnitude) and IMS.

A schedule applies a score function ``(network, alive mask) -> scores`` until the mask keeps the target
density (fraction of ALL prunable weights kept):

- ``uss`` upfront single-shot: score once on θ0, keep the top k.
- ``ums`` upfront multi-shot: ``rounds`` score/prune rounds without training, densities on an
  exponential schedule from the *current* density to the target (SynFlow: 100 rounds).
- ``iss`` iterative single-shot: ``levels`` times train (the one train loop, from θ0 under the current
  mask), score the trained checkpoint, prune single-shot to the level's density, rewind to θ0.
- ``ims`` iterative multi-shot: as ISS with a UMS prune at each level, interpolating from the current
  density to the level's density (the SynFlow code restarted each level from density 1.0).
- ``gss``, ``gms`` gradual: ISS and IMS without rewinding. Each level trains on from the state the last
  one ended in, under the mask so far, on a data order of its own (the seed's ``gradual_order`` stream,
  level l), as gradual magnitude pruning does (Zhu and Gupta 2017); the mask, not the trained state, is
  the outcome, and the ticket still trains from θ0.

Level densities are exponential: level l of L keeps ``density ** (l / L)``. Pruned weights never come
back (every top-k is taken among the alive weights), except under a scorer that revives them (FORCE ranks
every weight at each UMS round). Rewinding is exact by construction: training works
on copies, so θ0 is never written to.

A member whose training diverges (validation loss never finite, or not finite at its checkpoint) is an
error naming the seed, the level and the method: there are no trained weights to score.

Every outcome records ``removed_at``: the step (round for UMS, level for ISS/IMS, 1 for USS) at which
each weight was pruned; survivors get the last step + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from metaprune.config import ScheduleConfig  # noqa: F401 (its home; re-exported)
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
from metaprune.networks import prunable_layout
from metaprune.pruning import masks
from metaprune.pruning.masks import (
    check_density_for_network,  # noqa: F401 (its home is masks; re-exported)
    make_mask,
)
from metaprune.registry import Registry
from metaprune.seeds import generator
from metaprune.training import (
    MemberResult,
    ProgressFn,
    StepHook,
    TrainConfig,
    load_member_state,
    train_population,
)

ScoreFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScheduleSpec:
    iterative: bool
    multi_shot: bool
    description: str


SCHEDULES: Registry[ScheduleSpec] = Registry("schedule")
SCHEDULES.register("uss", ScheduleSpec(False, False, "upfront single-shot: score θ0 once, keep the top k"))
SCHEDULES.register(
    "ums",
    ScheduleSpec(
        False,
        True,
        "upfront multi-shot: N score/prune rounds without training (exponential); snip@ums60 is iterative SNIP "
        "(de Jorge et al. 2021)",
    ),
)
SCHEDULES.register(
    "iss", ScheduleSpec(True, False, "iterative single-shot: train, prune, rewind to θ0, over k levels (IMP)")
)
SCHEDULES.register(
    "ims", ScheduleSpec(True, True, "iterative multi-shot: ISS with a UMS prune at each level (thesis target)")
)
SCHEDULES.register(
    "gss", ScheduleSpec(True, False, "gradual single-shot: ISS without rewinding, each level trains on (GMP)")
)
SCHEDULES.register("gms", ScheduleSpec(True, True, "gradual multi-shot: IMS without rewinding"))
GRADUAL_ORDER = "gradual_order"  # the data-order stream of a gradual level (sub-key: the level)


@dataclass
class PruneOutcome:
    mask: torch.Tensor  # bool [n]
    scores: torch.Tensor  # the scores the final mask was taken from (pruned weights included, as scored)
    removed_at: torch.Tensor  # int16 [n]: step at which each weight was pruned; survivors: steps + 1
    densities: list[float] = field(default_factory=list)  # density after each step
    level_results: list = field(default_factory=list)  # iterative: per level, the training MemberResult


def exponential_densities(start: float, end: float, steps: int) -> list[float]:
    """``steps`` densities from ``start`` (exclusive) to ``end`` (inclusive), geometric.

    Step i of N is ``start * (end / start) ** (i / N)``; the last step is ``end`` itself (not a float
    product that might round next to it), so the final mask keeps exactly ``keep_count(end, n)``.
    """
    out = [start * (end / start) ** (i / steps) for i in range(1, steps + 1)]
    if out:
        out[-1] = end
    return out


def _prune_step(
    score_fn: ScoreFn,
    net: nn.Module,
    alive: torch.Tensor,
    density: float,
    scope: str,
    tie_gen: torch.Generator,
    name: str,
    layer_counts: Sequence[int] | None = None,
    revive: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One prune: score the alive network, keep the top of the ranking (of every weight when ``revive``)."""
    layout = prunable_layout(net)
    if getattr(score_fn, "sized", False):  # PHEW: its walks stop once this step's count is reached
        scores = score_fn(net, alive, keep=step_keep(layout, density, scope, layer_counts))
    else:
        scores = score_fn(net, alive)
    mask = make_mask(
        scores.detach().cpu(),
        layout,
        density,
        scope=scope,
        alive=None if revive else alive,
        generator=tie_gen,
        scorer=name,
        layer_counts=layer_counts,
    )
    return mask, scores.detach().cpu()


def step_keep(layout, density: float, scope: str, layer_counts: Sequence[int] | None) -> int | list[int]:
    """What a prune step keeps: per-layer counts under a budget or layer scope, else one global count."""
    if layer_counts is not None:
        return [int(c) for c in layer_counts]
    if scope == "layer":
        return masks.layer_keep_counts(density, layout)
    return masks.keep_count(density, layout.total)


def budget_steps(start: Sequence[int], end: Sequence[int], steps: int) -> list[list[int]]:
    """Per-layer kept counts for ``steps`` prune steps from ``start`` to the budget ``end``.

    Each layer shrinks geometrically, as the global density does under UMS: step i of N keeps
    ``round(a * (c / a) ** (i / N))`` of its ``a`` alive weights, and the last step exactly ``c``.
    """
    out = []
    for i in range(1, steps + 1):
        row = [c if i == steps else int(round(a * (c / a) ** (i / steps))) for a, c in zip(start, end, strict=True)]
        out.append(row)
    return out


def prune_upfront(
    score_fn: ScoreFn,
    net: nn.Module,
    density: float,
    seed: int,
    *,
    multi_shot: bool = False,
    config: ScheduleConfig = ScheduleConfig(),
    alive: torch.Tensor | None = None,
    name: str = "scorer",
    step_offset: int = 0,
    removed_at: torch.Tensor | None = None,
    layer_counts: Sequence[int] | None = None,
    revive: bool = False,
) -> PruneOutcome:
    """USS or UMS from the current mask ``alive`` (default: dense) down to ``density``.

    ``layer_counts`` (a budget) fixes how many weights each layer keeps at the end; multi-shot rounds
    then shrink every layer geometrically towards its count (``budget_steps``). ``revive`` (FORCE) ranks
    every weight at each round, so a weight pruned in one round can come back in a later one.
    """
    config = config.validate()
    layout = prunable_layout(net)
    n = layout.total
    mask = torch.ones(n, dtype=torch.bool) if alive is None else alive.reshape(-1).cpu().bool().clone()
    removed = torch.zeros(n, dtype=torch.int16) if removed_at is None else removed_at.clone()
    start = mask.sum().item() / n
    steps = exponential_densities(start, density, config.rounds) if multi_shot else [density]
    counts: list[list[int] | None] = [None] * len(steps)
    if layer_counts is not None:
        alive_counts = [int(part.sum()) for part in layout.split(mask)]
        counts = budget_steps(alive_counts, list(layer_counts), len(steps))  # type: ignore[assignment]
    tie_gen = generator(seed, "tie_break", step_offset)
    scores = torch.zeros(n)
    for i, (d, c) in enumerate(zip(steps, counts, strict=True), start=1):
        new, scores = _prune_step(score_fn, net, mask, d, config.scope, tie_gen, name, c, revive)
        removed[mask & ~new] = step_offset + i
        mask = new
    survivors_step = step_offset + len(steps) + 1
    removed[mask] = survivors_step
    return PruneOutcome(mask=mask, scores=scores, removed_at=removed, densities=list(steps))


def prune_iterative(
    score_fns: Sequence[ScoreFn],
    nets: Sequence[nn.Module],
    data: DataSplits,
    density: float,
    seeds: Sequence[int],
    train_config: TrainConfig,
    data_seed: int,
    *,
    multi_shot: bool = False,
    config: ScheduleConfig = ScheduleConfig(),
    name: str = "scorer",
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    train_progress: ProgressFn | None = None,
    dtype: torch.dtype = torch.float32,
    level_steps: Sequence[int] | None = None,
    rewind: bool = True,
    step_hook: StepHook | None = None,
) -> list[PruneOutcome]:
    """ISS or IMS for a population: all members train together at each level, then each is pruned.

    ``nets`` hold θ0 and are never modified (rewinding = the next level starts from them again).
    ``score_fns[i]`` scores member i and ``seeds[i]`` seeds its tie-breaking.
    ``progress(level, levels)`` is called after each level. ``dtype`` is the training dtype
    (float64 makes a population bit-comparable with solo runs; the checkpoint is cast back to θ0's dtype).
    ``level_steps`` (a budget the levels share, ``imp+w3``): level l trains ``level_steps[l - 1]`` SGD steps
    without early stopping and scores the state it ends in. ``rewind=False`` (gss, gms: gradual) starts each
    level from the state the last one ended in, on the data order ``gradual_order/<level>`` of ``data_seed``.
    ``step_hook`` (one member only) sees every level's training, as ``train_population`` says.
    """
    config = config.validate()
    k = len(nets)
    if k == 0 or len(score_fns) != k or len(seeds) != k or (step_hook is not None and k != 1):
        raise MetapruneError(
            f"iterative pruning needs one score function and one seed per network (one network with a step "
            f"hook); got {k} networks, {len(score_fns)} score functions, {len(seeds)} seeds"
        )
    n = prunable_layout(nets[0]).total
    levels = exponential_densities(1.0, density, config.levels)
    if level_steps is not None and len(level_steps) != len(levels):
        raise MetapruneError(f"{name}: {len(level_steps)} level budgets for {len(levels)} levels")
    run = _Levels(
        score_fns, seeds, name, config, multi_shot, [torch.ones(n, dtype=torch.bool) for _ in range(k)], n
    )
    starts = list(nets)
    for level, level_density in enumerate(levels, start=1):
        steps = None if level_steps is None else int(level_steps[level - 1])
        trained = train_population(
            starts,
            data,
            _level_config(train_config, data, steps),
            data_seed,
            masks=run.masks,
            device=device,
            dtype=dtype,
            keep_states=True,
            progress=train_progress,
            max_steps=steps,
            order_stream="data_order" if rewind else f"{GRADUAL_ORDER}/{level}",
            step_hook=step_hook,
        )
        checkpoints = [load_member_state(nets[i], trained.states[i]) for i in range(k)]
        run.prune(level, len(levels), level_density, trained.members, checkpoints)
        if not rewind:
            starts = checkpoints
        if progress is not None:
            progress(level, len(levels))
    return run.outcomes(len(levels))


@dataclass
class _Levels:
    """The masks, removal steps and scores of an iterative population as its levels prune it."""

    score_fns: Sequence[ScoreFn]
    seeds: Sequence[int]
    name: str
    config: ScheduleConfig
    multi_shot: bool
    masks: list[torch.Tensor]
    n: int
    removed: list[torch.Tensor] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    results: list[list] = field(default_factory=list)
    history: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = len(self.masks)
        self.removed = [torch.zeros(self.n, dtype=torch.int16) for _ in range(k)]
        self.scores = [torch.zeros(self.n) for _ in range(k)]
        self.results = [[] for _ in range(k)]
        self.history = [[] for _ in range(k)]

    def prune(self, level: int, levels: int, level_density: float, members: list, checkpoints: list) -> None:
        """Score each member's trained ``checkpoint`` and prune it to the level's density (in UMS rounds
        from its current density when multi-shot)."""
        for i, checkpoint in enumerate(checkpoints):
            check_trained(members[i], self.seeds[i], level, levels, self.name)
            self.results[i].append(members[i])
            if self.multi_shot:
                start = self.masks[i].sum().item() / self.n
                shots = exponential_densities(start, level_density, self.config.rounds)
            else:
                shots = [level_density]
            tie_gen = generator(self.seeds[i], "tie_break", level)
            for d in shots:
                new, self.scores[i] = _prune_step(
                    self.score_fns[i], checkpoint, self.masks[i], d, self.config.scope, tie_gen, self.name
                )
                self.removed[i][self.masks[i] & ~new] = level
                self.masks[i] = new
                self.history[i].append(d)

    def outcomes(self, levels: int) -> list[PruneOutcome]:
        for mask, removed in zip(self.masks, self.removed, strict=True):
            removed[mask] = levels + 1
        return [
            PruneOutcome(m, s, r, h, res)
            for m, s, r, h, res in zip(self.masks, self.scores, self.removed, self.history, self.results, strict=True)
        ]


def _level_config(train: TrainConfig, data: DataSplits, steps: int | None) -> TrainConfig:
    """The training config of a level: ``train``, or for a level of ``steps`` SGD steps (a shared budget)
    just enough epochs to hold them, without early stopping (the state the steps end in is scored)."""
    if steps is None:
        return train
    per_epoch = math.ceil(int(data.train_x.shape[0]) / train.batch_size)
    return replace(train, early_stopping=False, epochs=math.ceil(steps / per_epoch))


def check_trained(member: MemberResult, seed: int, level: int, levels: int, name: str) -> None:
    """Refuse to score a member that diverged: without this, a member whose validation loss was never
    finite keeps θ0 as its "checkpoint" (none is ever taken), and the level would silently score the
    untrained masked θ0; without early stopping the checkpoint would be the diverged weights themselves."""
    if math.isfinite(member.val_loss):
        return
    if member.best_epoch == 0:
        what = f"its validation loss was never finite in {member.epochs_trained} epoch(s), so no checkpoint exists"
    else:
        what = f"its validation loss at the checkpoint (epoch {member.best_epoch}) is {member.val_loss}"
    raise MetapruneError(
        f"{name}: seed {seed} diverged in training at level {level} of {levels} ({what}), so there are no "
        "trained weights to score; accepted: training that converges, e.g. a lower learning rate"
    )
