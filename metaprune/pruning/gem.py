"""GEM-MINER (Sreenivasan et al., NeurIPS 2022, "Rare Gems: Finding Lottery Tickets at Initialization").

The weights stay frozen at θ0; a score p ∈ [0, 1] per weight is learned by SGD on the training split. The
forward pass uses the weights ``θ0 ⊙ [p > 0.5] ⊙ f``, where the flag ``f`` marks the weights not yet pruned;
the rounding passes its gradient straight through (``∂L/∂p = ∂L/∂(θ0 ⊙ s) ⊙ θ0 ⊙ f``). The loss adds
``λ Σ ‖p‖²``, which drives scores to 0, and scores are projected back to [0, 1] before every step and after
every epoch. Every ``T`` epochs the active weights of lowest score are pruned (their flag set to 0),
``P = ⌊(E − 1) / T⌋`` times in ``E`` epochs, geometrically down to the prune's count; the mask is the flags
at the end (the reference's ``unflag_before_finetune``: rounding the scores plays no further part). The
ticket then trains from θ0 like any other.

``gem`` is ``gem20``; ``gemE`` learns for ``E`` epochs and prunes every ``T = max(1, E // 30)`` epochs (the
reference's T = 5 at E = 150). As a scorer GEM-MINER is *sized* (``ScorerSpec.sized``, like PHEW): it is
given the prune's count (a total, or per-layer counts under a budget: ``gem#erk``) and ranks the weights
by when they were pruned (survivors highest, by their final score; pruned before it ran: 0), so the top k
is its mask. Its cost is its epochs of mask learning, counted as dense epochs: every step is one forward
and backward pass of the whole network over a batch (the rounded mask is applied densely).

The score-learning loop is a small one of its own, not the project's train loop: that loop trains weights
(a population stacked on one axis, its fused SGD, early stopping on validation), while here the weights are
constants and the parameters are the scores behind a rounding with a straight-through gradient, a penalty
on them, a projection and a pruning schedule.

As in the reference code (github.com/ksreenivasan/pruning_is_enough @ 8c4c9e8; ``main.py`` with
``algo='hc_iter'``, ``utils/linear_type.py`` ``SubnetLinear`` / ``GetSubnet`` with ``hc_quantized``,
``trainers/default.py`` ``train``, ``utils/net_utils.py`` ``get_regularization_loss('L2')``,
``prune(prune_type='BottomK')``, ``get_prune_rate``; its configs in ``configs/hypercube/resnet20``): scores
initialised U[0, 1] (``score_init: unif``), SGD lr 0.1 with momentum 0.9 and no weight decay, cosine
learning rate over the E epochs (stepped per epoch), batch 128, λ = 10⁻⁴, quantize threshold 0.5, global
bottom-k over the active weights (``BottomK``), every weight's score penalised (pruned ones too).

Deviations:

- The weights are this library's θ0 (Kaiming normal, zero biases, frozen), where the reference's configs
  use ``init: signed_constant``; biases are used as they are (the reference's layers have none).
- E = 20 and T = 1 by default (the reference: 150 and 5 on CIFAR-10, no MNIST setting) so that mask learning
  costs about one training of the thesis's networks; ``gemE`` sets E.
- Exact counts: prune j of P keeps ``round(a · (k / a)^(j / P))`` of the ``a`` weights active at the start
  (the last exactly k), ties broken by a seeded order, where the reference prunes ``⌈r · active⌉`` with
  ``r = 1 − (k / n)^(1 / P)`` and every weight tied at the threshold. Under a budget each layer shrinks to its
  count (the reference's ``LocalBottomK`` keeps one rate per layer).
- No validation pass per epoch (the reference evaluates the rounded network; it does not change the scores).
- Score init and data order from the ``gem`` seed stream; mask learning runs in eval mode (no BatchNorm in
  the MLPs; the reference trains the scores in train mode).

A method attaches the training split to its pruning batch (``PruneData.train``); a library call with a bare
pruning batch learns on that batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metaprune.errors import MetapruneError
from metaprune.networks import prunable_layout
from metaprune.pruning.masks import topk_mask
from metaprune.pruning.schedules import budget_steps
from metaprune.pruning.scoring import SCORERS, PruneData, ScorerSpec, need_data, register_scorer
from metaprune.seeds import generator

GEM_EPOCHS = 20
LR, MOMENTUM, LAMBDA, BATCH, THRESHOLD = 0.1, 0.9, 1e-4, 128, 0.5
PREFIX = "gem"


@dataclass(frozen=True)
class GemSettings:
    """GEM-MINER's mask learning: epochs, prune period (epochs) and the reference's hyperparameters."""

    epochs: int = GEM_EPOCHS
    period: int | None = None  # None: max(1, epochs // 30)
    lr: float = LR
    momentum: float = MOMENTUM
    lam: float = LAMBDA
    batch: int = BATCH

    @property
    def every(self) -> int:
        return self.period if self.period is not None else max(1, self.epochs // 30)

    @property
    def prunes(self) -> int:
        return (self.epochs - 1) // self.every


class _Round(torch.autograd.Function):
    """``[p > 0.5]`` forward, the gradient straight through (the reference's ``GetSubnet``)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.gt(scores, torch.ones_like(scores) * THRESHOLD).float()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def _weight_names(net: nn.Module) -> list[str]:
    return [layer.name for layer in prunable_layout(net).layers]


def _loss(net, names, weights, scores, flags, x, y, lam) -> torch.Tensor:
    """Cross-entropy of the network with weights θ0 ⊙ round(p) ⊙ f, plus λ Σ ‖p‖² (the reference's order)."""
    subs = {n: w * (_Round.apply(p) * f) for n, w, p, f in zip(names, weights, scores, flags, strict=True)}
    loss = F.cross_entropy(functional_call(net, subs, (x,)), y)
    reg = torch.tensor(0.0, device=x.device)
    for p in scores:
        reg += torch.norm(p, p=2) ** 2
    return loss + lam * reg


def learn_scores(
    net: nn.Module,
    flags: list[torch.Tensor],
    init: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    order: Callable[[int], torch.Tensor],
    settings: GemSettings,
    prune: Callable[[int, list[torch.Tensor], list[torch.Tensor]], list[torch.Tensor]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The reference's epochs: per batch project p to [0, 1] and take an SGD step; per epoch project, step the
    cosine learning rate and, every ``settings.every`` epochs (not the first), ``flags = prune(j, p, flags)``.

    ``net`` holds θ0 (frozen; eval mode), ``order(epoch)`` the epoch's permutation of the training examples.
    Returns the scores and the flags.
    """
    names = _weight_names(net)
    params = dict(net.named_parameters())
    weights = [params[n].detach() for n in names]
    scores = [p.detach().clone().requires_grad_(True) for p in init]
    flags = [f.detach().to(weights[0].dtype) for f in flags]
    opt = torch.optim.SGD(scores, lr=settings.lr, momentum=settings.momentum, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
    done = 0
    for epoch in range(settings.epochs):
        perm = order(epoch)
        for start in range(0, perm.numel(), settings.batch):
            idx = perm[start : start + settings.batch]
            with torch.no_grad():
                for p in scores:
                    p.clamp_(0.0, 1.0)
            loss = _loss(net, names, weights, scores, flags, x[idx], y[idx], settings.lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for p in scores:
                p.clamp_(0.0, 1.0)
        schedule.step()
        if epoch % settings.every == 0 and epoch != 0 and done < settings.prunes:
            done += 1
            flags = [f.to(weights[0].dtype) for f in prune(done, [p.detach() for p in scores], flags)]
    return [p.detach() for p in scores], flags


def _pruner(counts: list[list[int]], per_layer: bool, tie_gen: torch.Generator):
    """Prune j keeps ``counts[j - 1]`` (one total, or per layer) of the active weights, highest scores first."""

    def prune(j: int, scores: list[torch.Tensor], flags: list[torch.Tensor]) -> list[torch.Tensor]:
        target = counts[j - 1]
        if per_layer:
            return [
                topk_mask(p.reshape(-1), k, f.reshape(-1).bool(), tie_gen).view(p.shape)
                for p, f, k in zip(scores, flags, target, strict=True)
            ]
        flat = topk_mask(torch.cat([p.reshape(-1) for p in scores]), target[0], _cat(flags).bool(), tie_gen)
        parts = torch.split(flat, [p.numel() for p in scores])
        return [part.view(p.shape) for part, p in zip(parts, scores, strict=True)]

    return prune


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def gem_scores(
    net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int, keep, settings: GemSettings
) -> torch.Tensor:
    """GEM-MINER's ranking of the weights of ``net`` under ``mask`` for a prune keeping ``keep``."""
    data = need_data(data, f"{PREFIX}{settings.epochs}")
    layout = prunable_layout(net)
    net = _frozen_copy(net)
    device = next(net.parameters()).device
    # the training split (a method attaches it: ``PruneData.train``); a bare pruning batch otherwise
    x, y = (t.to(device) for t in (data.train if data.train is not None else (data.x, data.y)))
    x = x.to(next(net.parameters()).dtype)
    flags = [m.to(device) for m in layout.split(mask.bool())]
    g = generator(seed, "gem", 0)
    init = [torch.rand(layer.shape, generator=g).to(device) for layer in layout.layers]
    per_layer = not isinstance(keep, int)
    start = [int(f.sum()) for f in flags] if per_layer else [int(mask.sum())]
    end = [int(k) for k in keep] if per_layer else [int(keep)]
    counts = budget_steps(start, end, settings.prunes) if settings.prunes else []
    if not counts and start != end:
        raise MetapruneError(f"{PREFIX}{settings.epochs} has no epoch to prune in; accepted: gemE with E >= 2")
    order_gen = generator(seed, "gem", 1)

    def order(epoch: int) -> torch.Tensor:
        return torch.randperm(x.shape[0], generator=order_gen).to(device)

    pruner = _pruner(counts, per_layer, generator(seed, "gem", 2))
    scores, flags = learn_scores(net, flags, init, x, y, order, settings, pruner)
    return _ranking(scores, flags, mask, settings.prunes)


def _ranking(scores, flags, mask: torch.Tensor, prunes: int) -> torch.Tensor:
    """Survivors above every pruned weight (by final score); weights pruned before GEM-MINER ran: 0."""
    p, f = _cat(scores).cpu(), _cat(flags).bool().cpu()
    out = torch.where(f, prunes + 2 + p, 1.0 + p / 2)
    return torch.where(mask.cpu().bool(), out, torch.zeros_like(out)).float()


def _frozen_copy(net: nn.Module) -> nn.Module:
    import copy

    out = copy.deepcopy(net).eval()
    for p in out.parameters():
        p.requires_grad_(False)
        p.grad = None
    return out


def _spec(settings: GemSettings) -> ScorerSpec:
    def fn(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int, keep=None) -> torch.Tensor:
        if keep is None:
            raise MetapruneError("GEM-MINER prunes to a count; accepted: a prune's kept count (keep=)")
        return gem_scores(net, mask, data, seed, keep, settings)

    return ScorerSpec(
        fn,
        True,
        f"GEM-MINER (Sreenivasan et al. 2022): scores learned for {settings.epochs} epochs with θ0 frozen",
        sized=True,
        epochs=float(settings.epochs),
    )


def gem_spec(rest: str) -> ScorerSpec:
    """The scorer ``gemE`` (``rest`` = E, a positive whole number of mask-learning epochs)."""
    if not rest.isdigit() or int(rest) < 1:
        raise MetapruneError(
            f"bad GEM-MINER epochs {rest!r} in {PREFIX + rest!r}; accepted: gem (20 epochs) or gemE with E a "
            "positive whole number of mask-learning epochs, e.g. gem10"
        )
    return _spec(GemSettings(epochs=int(rest)))


_DEFAULT = _spec(GemSettings())
register_scorer(
    PREFIX,
    True,
    f"GEM-MINER (Sreenivasan et al. 2022): mask scores learned by SGD for {GEM_EPOCHS} epochs with θ0 frozen, "
    "pruned to the count every epoch; gemE learns for E epochs; cost: E dense epochs",
    sized=True,
    epochs=float(GEM_EPOCHS),
)(_DEFAULT.fn)
SCORERS.register_prefix(PREFIX, gem_spec, "GEM-MINER with E epochs of mask learning: gemE")
