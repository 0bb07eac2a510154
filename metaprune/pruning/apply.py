"""Apply a parsed method to a network: initialise, score (stacked or not) under its schedule, mask.

This is the one path from a parsed method to a ticket; ``prune``, ``evaluate`` and the harvest's target
(``HarvestConfig.target_method``) use it.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from metaprune.config import PER_CLASS
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout
from metaprune.pruning.ablations import invert_scores, reinit_kept, shuffle_within_layers
from metaprune.pruning.budgets import erk_counts
from metaprune.pruning.context import PruneContext
from metaprune.pruning.inits import INITS, saw_init
from metaprune.pruning.masks import MaskReport, layer_counts_of, layer_keep_counts, mask_report
from metaprune.pruning.method import Method
from metaprune.pruning.schedules import (
    PruneOutcome,
    ScheduleConfig,
    ScoreFn,
    prune_iterative,
    prune_upfront,
)
from metaprune.pruning.scorers import SCORERS, PruneData, pruning_batch, score
from metaprune.pruning.stacked import stacked_scores
from metaprune.pruning.warmup import Trajectory, WarmupRecord, steps_per_epoch, warm_up, warmup_steps
from metaprune.seeds import sibling_seed
from metaprune.training import TrainConfig


@dataclass
class Ticket:
    method: Method
    seed: int
    density: float
    net: nn.Module  # the weights the ticket trains from (θ0 after init, SaW or re-init)
    mask: torch.Tensor
    outcome: PruneOutcome
    report: MaskReport
    seconds: float  # wall time of init, scoring, schedule (and training) per seed, without the report
    cost_epochs: float = 0.0  # compute in dense-epoch equivalents (see ``Cost``)
    warmup_epochs: float = 0.0  # the part of the cost spent warming up
    score_seconds: float = 0.0  # wall time of this seed's scoring calls (the rest: training, masks, init)


@dataclass
class Cost:
    """What a mask cost, in dense-epoch equivalents of the training split.

    Warm-up epochs, plus the epochs trained inside iterative schedules, plus every scoring pass over
    the pruning batch as the fraction of an epoch it is (a pass = one forward and backward pass; each
    scorer's ``passes`` per call says how many it makes), plus the cost of a budget's method.
    """

    epochs: float = 0.0
    warmup: float = 0.0
    score_seconds: float = 0.0  # wall time, not compute: what a caller reports as time spent scoring

    def add_scoring(self, passes: float, batch: int, n_train: int, seconds: float = 0.0) -> None:
        if n_train > 0:  # without a training split (a user's module and batch) there is no epoch to count in
            self.epochs += passes * batch / n_train
        self.score_seconds += seconds


def warmup_epochs(method: Method, splits: DataSplits, train: TrainConfig) -> float:
    """The length of ``method``'s warm-up (or of an iterative method's training budget) in epochs of the
    training split, 0.0 without one: as spelled for ``+wE``, N / steps per epoch for ``+wNs``."""
    if method.warmup is None:
        return 0.0
    if method.warmup_in_steps:
        return float(method.warmup) / steps_per_epoch(splits, train)
    return float(method.warmup)


def level_steps(method: Method, levels: int, splits: DataSplits, train: TrainConfig) -> list[int] | None:
    """SGD steps of each level of an iterative ``method`` whose levels share a budget (``imp+w3``): the
    budget's S steps split as evenly as whole steps allow (level l of L ends at step ⌊l·S/L⌋); None
    without a budget (each level trains the training config's epochs with early stopping)."""
    if method.warmup is None or not method.iterative:
        return None
    total = warmup_steps(method.warmup, splits, train, in_steps=method.warmup_in_steps)
    if total < levels:
        raise MetapruneError(
            f"method {method}: a budget of {total} SGD steps cannot train its {levels} levels a step each; "
            f"accepted: at least {levels} steps (+w{levels}s) or fewer levels"
        )
    return [total * level // levels - total * (level - 1) // levels for level in range(1, levels + 1)]


def prune_data_for(splits: DataSplits, seed: int, per_class: int = PER_CLASS) -> PruneData:
    return pruning_batch(splits.train_x, splits.train_y, splits.num_classes, seed, per_class)


def needs_data(name: str) -> bool:
    return SCORERS.get(name).needs_data


def initial_network(method: Method, spec: str, splits: DataSplits, seed: int, data: PruneData | None) -> nn.Module:
    """θ0 of ``seed`` with the method's initialisation: standard, bimodal, or SaW from a scorer."""
    net = build_network(spec, splits.input_shape, splits.num_classes, seed)
    return with_init(method, net, seed, data)


def with_init(method: Method, net: nn.Module, seed: int, data: PruneData | None) -> nn.Module:
    """``net`` (θ0, written in place) under the method's initialisation: as it is, bimodal, or SaW."""
    if method.init == "bimodal":
        INITS.get("bimodal")(net, seed)
    elif method.saw:
        saw_init(net, method.init, data, seed)
    return net


def scorer_passes(name: str) -> float:
    return SCORERS.get(name).passes


def score_function(
    method: Method, data: PruneData | None, seed: int, cost: Cost | None = None, n_train: int = 0
) -> ScoreFn:
    inverted = method.ablation == "invert"
    passes = sum(scorer_passes(s) for s in method.scorers)
    epochs = sum(SCORERS.get(s).epochs for s in method.scorers)  # a scorer that learns (GEM-MINER)
    batch = 0 if data is None else int(data.x.shape[0])

    def fn(net: nn.Module, mask: torch.Tensor, keep: int | list[int] | None = None) -> torch.Tensor:
        t0 = time.perf_counter()
        if method.stacked:
            a, b = method.scorers
            s = stacked_scores(a, b, net, mask, data, seed, keep=keep)
        else:
            s = score(method.scorers[0], net, mask, data, seed, keep=keep)
        if cost is not None:
            cost.add_scoring(passes, batch, n_train, time.perf_counter() - t0)
            cost.epochs += epochs
        return invert_scores(s) if inverted else s

    fn.sized = SCORERS.get(method.scorers[-1]).sized  # type: ignore[attr-defined]  # schedules pass it keep
    return fn


def check_method_data(method: Method, data: PruneData | None) -> None:
    """A stack whose scorers need data it cannot get is refused before any work."""
    for name in (*method.scorers, *((method.init,) if method.saw else ())):
        if data is None and needs_data(name):
            raise MetapruneError(
                f"method {method} uses scorer {name!r}, which needs a pruning batch, but no data was given; "
                "accepted: a dataset with training examples"
            )


MASK_ABLATIONS = ("shuffle", "reinit")  # applied to a finished mask: their scoring is the base method's


def ablated(base: Ticket, method: Method, input_shape: tuple[int, ...]) -> Ticket:
    """The ticket of ``method`` (``base.method`` plus a mask ablation) from the base's ticket.

    A shuffle or a re-init acts on the finished outcome only, and the scoring draws nothing from the
    ablation, so pruning again would repeat the base's computation to the bit; its cost is the base's.
    """
    if method.ablation not in MASK_ABLATIONS or replace(method, ablation=None) != replace(base.method, ablation=None):
        raise MetapruneError(f"{method} is not a mask ablation of {base.method}")
    net, mask = finish(method, copy.deepcopy(base.net), base.outcome, base.seed)
    report = mask_report(net, mask, input_shape=input_shape)
    return replace(base, method=method, net=net, mask=mask, report=report)


def finish(method: Method, net: nn.Module, outcome: PruneOutcome, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """Apply the method's mask ablation (shuffle / re-init) to a finished outcome."""
    mask = outcome.mask
    if method.ablation == "shuffle":
        mask = shuffle_within_layers(mask, prunable_layout(net), seed)
    elif method.ablation == "reinit":
        reinit_kept(net, mask, seed)
    return net, mask


def prune_seeds(
    method: Method,
    spec: str,
    splits: DataSplits,
    density: float,
    seeds: tuple[int, ...],
    *,
    schedule: ScheduleConfig = ScheduleConfig(),
    train: TrainConfig = TrainConfig(),
    data_seed: int | None = None,
    per_class: int = PER_CLASS,
    device: torch.device | str | None = None,
    progress=None,
    dtype: torch.dtype = torch.float32,
    warmups: dict | None = None,
) -> list[Ticket]:
    """``prune_in_context`` with the context spelled out: network ``spec``, ``splits``, the ``schedule``
    settings, the ``train`` config of iterative schedules and warm-ups, ``per_class``, ``device`` and the
    ``warmups`` the caller's methods share (``PruneContext.warmups``)."""
    context = PruneContext(spec, splits, schedule, train, per_class, device, warmups=warmups)
    return prune_in_context(method, context, density, seeds, data_seed=data_seed, progress=progress, dtype=dtype)


def prune_in_context(
    method: Method,
    context: PruneContext,
    density: float,
    seeds: Sequence[int],
    *,
    data_seed: int | None = None,
    progress=None,
    dtype: torch.dtype = torch.float32,
) -> list[Ticket]:
    """Tickets of ``method`` at ``density`` for each seed (iterative schedules train the seeds together).

    ``context.per_class`` examples of every class form each seed's pruning batch; ``per_class=0`` means no
    pruning batch at all, so only data-free scorers (magnitude, random) are accepted. A context around a
    user's module gives its θ0 and its one batch instead (``PruneContext.theta0``, ``batch``). Everything
    that can be checked cheaply (data needs, a training set for a method that trains) is checked before any
    scoring (``method!sibling``: ``_draws``). ``density`` is trusted: callers check it
    against the network and scope at their boundary (``masks.check_density_for_network``).
    ``dtype`` is the training dtype of iterative schedules; ``progress(level, levels)`` follows their levels.
    """
    t0 = time.perf_counter()
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise MetapruneError("no seeds given; accepted: one or more non-negative seeds")
    schedule = context.schedule.validate()
    if method.rounds is not None:  # the method's own number of multi-shot rounds (ums20)
        schedule = replace(schedule, rounds=method.rounds)
    context = replace(context, schedule=schedule)
    context.check_trains(method)
    data_seed, datas = _draws(method, context, seeds, data_seed)
    if datas[0] is None:
        check_method_data(method, None)
    if any(SCORERS.get(s).epochs for s in (*method.scorers, *((method.init,) if method.saw else ()))):
        train = (context.splits.train_x, context.splits.train_y)  # a scorer learns on the training split
        datas = [None if d is None else replace(d, train=train) for d in datas]
    nets = [with_init(method, context.theta0(s), s, d) for s, d in zip(seeds, datas, strict=True)]
    costs = [Cost() for _ in seeds]
    if method.iterative:
        outcomes = _prune_iterative_seeds(
            method, context, density, seeds, nets, datas, costs, data_seed, progress, dtype
        )
    else:
        outcomes = [
            _prune_upfront_seed(method, context, net, d, density, s, cost)
            for net, d, s, cost in zip(nets, datas, seeds, costs, strict=True)
        ]
    finished = [finish(method, net, outcome, s) for net, outcome, s in zip(nets, outcomes, seeds, strict=True)]
    seconds = (time.perf_counter() - t0) / len(seeds)  # scoring, schedule and training; not the report
    return [
        Ticket(
            method,
            s,
            density,
            net,
            mask,
            outcome,
            mask_report(net, mask, input_shape=context.input_shape),
            seconds,
            cost.epochs,
            cost.warmup,
            cost.score_seconds,
        )
        for (net, mask), outcome, s, cost in zip(finished, outcomes, seeds, costs, strict=True)
    ]


def _draws(
    method: Method, context: PruneContext, seeds: tuple[int, ...], data_seed: int | None
) -> tuple[int, list[PruneData | None]]:
    """The seed of the data order (default: the first seed's) and each seed's pruning batch. A sibling
    (``method!sibling``) draws them from ``sibling_seed`` of those seeds (and warms up on the data order of
    ``sibling_seed(seed)``): the same method from the same θ0 with an independent data order and pruning
    batch; θ0 and tie-breaking stay the seed's."""
    draw = sibling_seed if method.sibling else int
    return draw(seeds[0] if data_seed is None else data_seed), [context.prune_data(draw(s)) for s in seeds]


def _prune_iterative_seeds(
    method: Method,
    context: PruneContext,
    density: float,
    seeds: tuple[int, ...],
    nets: list[nn.Module],
    datas: list,
    costs: list[Cost],
    data_seed: int,
    progress,
    dtype: torch.dtype,
) -> list[PruneOutcome]:
    """ISS/IMS (or gradual GSS/GMS) for the seeds together; each cost gains the epochs its levels trained,
    or the budget its levels share (``imp+w3``). A gradual method whose scorer reads a warm-up
    (``movement@gss+w3``, or a learned model with dynamics features) prunes each seed alone, its scorer reading
    the trajectory of the levels so far."""
    splits, schedule = context.splits, context.schedule
    budget = level_steps(method, schedule.levels, splits, context.train)  # imp+w3: the levels share 3 epochs

    def run(score_fns: list[ScoreFn], members: list[nn.Module], member_seeds: list[int], hook=None):
        return prune_iterative(
            score_fns,
            members,
            splits,
            density,
            member_seeds,
            context.train,
            data_seed,
            multi_shot=method.multi_shot,
            config=schedule,
            name=str(method),
            device=context.device,
            progress=progress,
            dtype=dtype,
            level_steps=budget,
            rewind=method.rewinds,
            step_hook=hook,
        )

    if not method.rewinds and any(SCORERS.get(s).warms_up() for s in method.scorers):
        outcomes = []
        for net, d, s, c in zip(nets, datas, seeds, costs, strict=True):
            trajectory = Trajectory([layer.name for layer in prunable_layout(net).layers], context.train.lr)
            outcomes += run([_trajectory_scores(method, d, s, c, context, net, trajectory)], [net], [s], trajectory)
    else:
        fns = [score_function(method, d, s, c, context.n_train) for d, s, c in zip(datas, seeds, costs, strict=True)]
        outcomes = run(fns, nets, list(seeds))
    for cost, outcome in zip(costs, outcomes, strict=True):
        if budget is None:
            cost.epochs += sum(r.epochs_trained for r in outcome.level_results)
        else:
            cost.epochs += sum(budget) / steps_per_epoch(splits, context.train)
    return outcomes


def _trajectory_scores(
    method: Method, data, seed: int, cost: Cost, context: PruneContext, theta0: nn.Module, trajectory: Trajectory
) -> ScoreFn:
    """The score function of a gradual method whose scorer reads a warm-up: each prune reads the trajectory
    from θ0 to the checkpoint it scores, over every level so far (movement pruning as Sanh et al. 2020 run
    it: scores accumulated while the network is pruned gradually)."""
    per_epoch = steps_per_epoch(context.splits, context.train)

    def fn(net: nn.Module, mask: torch.Tensor, keep=None) -> torch.Tensor:
        record = trajectory.record(theta0, net, context.train, trajectory.steps, per_epoch)
        trajectory.restart()  # the next level's first state is its start, not a step
        return score_function(method, replace(data, warmup=record), seed, cost, context.n_train)(net, mask, keep)

    fn.sized = SCORERS.get(method.scorers[-1]).sized  # type: ignore[attr-defined]
    return fn


def _prune_upfront_seed(
    method: Method,
    context: PruneContext,
    net: nn.Module,
    data: PruneData | None,
    density: float,
    seed: int,
    cost: Cost,
) -> PruneOutcome:
    """USS/UMS for one seed: the warm-up (scores read θ_E, the ticket keeps θ0) and the budget."""
    scoring_net = net
    if method.warmup is not None:
        if data is None:
            raise MetapruneError(f"method {method} warms up, which needs the training data; accepted: per_class >= 1")
        order = sibling_seed(seed) if method.sibling else seed  # a sibling warms up on another data order
        record = shared_warm_up(method, context, net, order)
        cost.epochs += record.cost_epochs
        cost.warmup += record.cost_epochs
        data = replace(data, warmup=record)
        scoring_net = record.network
    counts = budget_counts(method, context, net, density, seed, cost)
    return prune_upfront(
        score_function(method, data, seed, cost, context.n_train),
        scoring_net,
        density,
        seed,
        multi_shot=method.multi_shot,
        config=context.schedule,
        name=str(method),
        layer_counts=counts,
        revive=SCORERS.get(method.scorers[-1]).revives,
    )


def shared_warm_up(method: Method, context: PruneContext, net: nn.Module, seed: int) -> WarmupRecord:
    """The warm-up of ``method`` from θ0 ``net``, taken from ``context.warmups`` when a method of the same θ0
    (by content), length and seed ran it already: the trajectory depends on nothing else (the training config
    and splits are the context's). A stored record keeps a copy of θ0, so no later change to ``net`` reaches it."""
    if context.warmups is None:
        return _warm_up(method, context, net, seed)
    state = torch.cat([t.detach().reshape(-1).double().cpu() for t in net.state_dict().values()])
    key = (
        hashlib.blake2b(state.numpy().tobytes(), digest_size=16).hexdigest(),
        method.warmup,
        method.warmup_in_steps,
        seed,
    )
    if key not in context.warmups:
        record = _warm_up(method, context, net, seed)
        context.warmups[key] = replace(record, initial=copy.deepcopy(net))
    return context.warmups[key]


def _warm_up(method: Method, context: PruneContext, net: nn.Module, seed: int) -> WarmupRecord:
    train, steps = context.train, method.warmup_in_steps
    return warm_up(net, context.splits, train, method.warmup, seed, device=context.device, in_steps=steps)


def budget_counts(
    method: Method, context: PruneContext, net: nn.Module, density: float, seed: int, cost: Cost
) -> list[int] | None:
    """Per-layer kept counts of the method's budget, or None for one global top-k."""
    budget = method.budget or context.schedule.scope
    if budget == "global":
        return None
    layout = prunable_layout(net)
    if budget == "learned":  # the split the learned scorer's own budget model predicts
        scorer = SCORERS.get(method.scorers[-1])
        if scorer.layer_budget is None:  # pragma: no cover - parse_method refuses it
            raise MetapruneError(f"scorer {method.scorers[-1]!r} has no learned budget")
        return scorer.layer_budget(layout, density)
    if budget == "erk":  # RigL's Erdős–Rényi-kernel split
        return erk_counts(layout, density, str(method))
    inner = method.budget_method
    if inner is None:  # 'layer': the same fraction in every layer
        return layer_keep_counts(density, layout)
    ticket = prune_in_context(inner, context, density, (seed,))[0]
    shared = (
        (inner.warmup, inner.warmup_in_steps) == (method.warmup, method.warmup_in_steps)
        and method.warmup is not None
        and not inner.iterative  # an iterative method's +w is its levels' budget, no warm-up
    )
    # a budget method warming up as this one does follows the same trajectory (same θ0, seed and stream):
    # its warm-up is paid once
    cost.epochs += ticket.cost_epochs - (ticket.warmup_epochs if shared else 0.0)
    # the budget method's counts, a layer it cuts included: a control of its allocation reproduces its cut
    return layer_counts_of(ticket.mask, layout)
