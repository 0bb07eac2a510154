"""What every scorer shares: the registry, the pruning batch, and the conventions of ``pruning.scorers``.

A scorer module imports its registration (``register_scorer``), the pruning batch (``PruneData``) and the
constants of the scoring conventions from here, never from ``pruning.scorers``, which imports the scorer
modules to register them: that keeps the scorer modules and the registry's home free of import cycles.
The registry is complete once ``pruning.scorers`` is imported (``scorers.score`` and every caller of it do).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.config import PER_CLASS
from metaprune.errors import MetapruneError
from metaprune.networks import prunable_layout, prunable_weights
from metaprune.registry import Registry
from metaprune.seeds import generator

if TYPE_CHECKING:
    from metaprune.pruning.warmup import WarmupRecord

SCORING_MODE = "eval"
CHUNK = 256


@dataclass(frozen=True)
class PruneData:
    """The pruning batch: inputs ``x`` [N, ...] and integer labels ``y`` [N].

    ``warmup`` carries the record of a method's warm-up to the scorers that read a trajectory (``delta``,
    ``movement``, ``abs_grad``) and to a learned scorer reading dynamics features; None when the method
    has none.
    """

    x: torch.Tensor
    y: torch.Tensor
    warmup: WarmupRecord | None = None
    # the training split (x, y), for a scorer that learns from it (``ScorerSpec.epochs``: GEM-MINER); else None
    train: tuple[torch.Tensor, torch.Tensor] | None = None


def pruning_batch(
    x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, seed: int, per_class: int = PER_CLASS
) -> PruneData:
    """A class-balanced sample of ``per_class`` examples of every class (thesis: 10 x classes).

    Drawn from the ``prune_batch`` stream of ``seed`` so that it is independent of the init and data order.
    """
    y_all = torch.as_tensor(y_train).reshape(-1)
    if int(per_class) < 1:
        raise MetapruneError(f"bad examples per class {per_class!r}; accepted: a positive integer")
    g = generator(seed, "prune_batch")
    chosen = []
    for c in range(int(num_classes)):
        idx = torch.nonzero(y_all.cpu() == c).squeeze(1)
        if idx.numel() < per_class:
            raise MetapruneError(
                f"class {c} has {idx.numel()} training examples, fewer than the {per_class} per class the "
                "pruning batch needs; accepted: a smaller per-class count or a larger training set"
            )
        chosen.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    sel = torch.cat(chosen).to(y_all.device)
    return PruneData(torch.as_tensor(x_train)[sel], y_all[sel])


# ----------------------------------------------------------------------------------------- registry

Scorer = Callable[[nn.Module, torch.Tensor, "PruneData | None", int], torch.Tensor]


@dataclass(frozen=True)
class ScorerSpec:
    fn: Scorer
    needs_data: bool
    description: str
    passes: float = 0.0  # forward+backward passes over the pruning batch per call (compute accounting)
    reads_weights: bool = True  # False: a warm-up cannot change the scores (random)
    needs_warmup: bool = False  # True: scores a warm-up's trajectory, so the method must have one
    # for a scorer that may read a warm-up, known only once its model is read (a learned model's dynamics
    # features): asked when pruning, never at parsing
    reads_warmup: Callable[[], bool] | None = None
    # (layout, density) -> per-layer kept counts: the scorer's own learned budget (``#learned``), if any
    layer_budget: Callable[[Any, float], list[int]] | None = None
    default_schedule: str = "uss"  # the schedule a bare name means (``synflow`` = ``synflow@ums``)
    default_rounds: int | None = None  # its multi-shot rounds (None: the schedule config's)
    # True: each prune ranks every weight, pruned ones included, so a pruned weight can come back (FORCE);
    # the scores of pruned weights are then not 0
    revives: bool = False
    # True: the scorer ranks only as many weights as the prune keeps (PHEW's walks stop there); ``fn`` takes
    # the keyword ``keep`` (a total, or per-layer counts), which only a method's last scorer is given
    sized: bool = False
    fits: Callable[[nn.Module], None] | None = None  # refuses a network the scorer cannot score (one line)
    # epochs over the training split (``PruneData.train``) per call: the scorer learns (GEM-MINER's mask
    # learning); its cost in dense epochs, beside ``passes`` over the pruning batch
    epochs: float = 0.0

    def warms_up(self) -> bool:
        """The scorer reads a warm-up's trajectory (``needs_warmup``, or a model that turns out to)."""
        return self.needs_warmup or (self.reads_warmup is not None and self.reads_warmup())


SCORERS: Registry[ScorerSpec] = Registry("scorer")


def register_scorer(
    name: str,
    needs_data: bool,
    description: str,
    aliases: tuple[str, ...] = (),
    *,
    passes: float = 0.0,
    reads_weights: bool = True,
    needs_warmup: bool = False,
    **behaviour: Any,
):
    """Decorator: register a scorer function under ``name`` in :data:`SCORERS`; ``behaviour`` sets the spec's
    other fields (``default_schedule``, ``default_rounds``, ``revives``, ``sized``, ``fits``, ``epochs``)."""

    def wrap(fn: Scorer) -> Scorer:
        spec = ScorerSpec(fn, needs_data, description, passes, reads_weights, needs_warmup, **behaviour)
        SCORERS.register(name, spec, description, aliases)
        return fn

    return wrap


def full_mask(net: nn.Module) -> torch.Tensor:
    return torch.ones(prunable_layout(net).total, dtype=torch.bool)


def need_data(data: PruneData | None, name: str) -> PruneData:
    """The pruning batch of a scorer that needs one; a one-line error naming the scorer without it."""
    if data is None:
        raise MetapruneError(f"scorer {name!r} needs a pruning batch (data); accepted: PruneData from pruning_batch")
    return data


# ------------------------------------------------------------------ helpers shared by gradient scorers


def masked_copy(net: nn.Module, mask: torch.Tensor, dtype: torch.dtype | None = None):
    """Deep copy in eval mode with prunable weights = weight * mask, requiring grad, no stale grads."""
    net = copy.deepcopy(net)
    if dtype is not None:
        net = net.to(dtype)
    net.train(SCORING_MODE == "train")
    weights = prunable_weights(net)
    layout = prunable_layout(net)
    with torch.no_grad():
        for p in net.parameters():
            p.grad = None
        for w, m in zip(weights, layout.split(mask.to(weights[0].device)), strict=True):
            w.mul_(m.to(w.dtype))
            w.requires_grad_(True)
    return net, weights


def linearised_copy(net: nn.Module, mask: torch.Tensor):
    """SynFlow's linearised network: a float64 ``masked_copy`` in eval mode with every floating parameter
    and buffer replaced by its absolute value (the SynFlow code takes ``abs`` of the whole state dict)."""
    cnet, weights = masked_copy(net, mask, torch.float64)
    cnet.eval()
    with torch.no_grad():
        for t in list(cnet.parameters()) + list(cnet.buffers()):
            if t.is_floating_point():
                t.abs_()
    return cnet, weights


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def chunks(data: PruneData, device: torch.device, dtype: torch.dtype):
    n = data.x.shape[0]
    for i in range(0, n, CHUNK):
        x = data.x[i : i + CHUNK].to(device=device, dtype=dtype)
        y = data.y[i : i + CHUNK].to(device=device, dtype=torch.long)
        yield x, y, x.shape[0] / n


def loss_grads(net, weights, data, create_graph=False, temperature=1.0):
    """Gradient of the mean cross-entropy (logits / temperature) w.r.t. the prunable weights."""
    w0 = weights[0]
    total = [torch.zeros_like(w) for w in weights]
    for x, y, frac in chunks(data, w0.device, w0.dtype):
        loss = F.cross_entropy(net(x) / temperature, y) * frac
        gs = torch.autograd.grad(loss, weights, create_graph=create_graph, allow_unused=True)
        total = [t + (torch.zeros_like(w) if g is None else g) for t, g, w in zip(total, gs, weights, strict=True)]
    return total
