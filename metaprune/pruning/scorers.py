"""Base scorers behind one registry: map (network, mask, pruning batch) to one score per prunable weight.

Conventions every scorer follows:

- Higher score = keep. Scores lie on the flat weight axis of ``prunable_layout`` (layer order).
- The scorer evaluates the MASKED network (prunable weights times the mask); pruned weights score 0.
- Pure: it works on a deep copy, so the caller's weights, buffers, ``.grad`` and train/eval flag are
  untouched, and a stale ``.grad`` (e.g. left over from training) can never leak into the scores (the
  SynFlow code accumulated into ``.grad``; here gradients come from ``torch.autograd.grad``).
- Data-based scorers run in EVAL mode (``SCORING_MODE``), as the SynFlow code does by default
  (``prune_loop`` calls ``model.eval()`` unless ``--prune-train-mode``): BatchNorm uses its running
  statistics, so the result does not depend on how the pruning batch is chunked and is deterministic.
  For networks without BatchNorm or dropout (the MLPs, Conv-2/4, LeNet-5) the mode makes no difference.
- The loss is the mean cross-entropy over the whole pruning batch, evaluated in chunks of
  ``CHUNK`` examples whose losses are summed with weight 1/N (exactly the full-batch mean).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import prunable_layout, prunable_weights
from metaprune.pruning.masks import check_finite, check_mask, infer_input_shape
from metaprune.registry import Registry
from metaprune.seeds import generator

SCORING_MODE = "eval"
CHUNK = 256
GRASP_TEMPERATURE = 200.0
GRASP_EPS = 1e-10


@dataclass(frozen=True)
class PruneData:
    """The pruning batch: inputs ``x`` [N, ...] and integer labels ``y`` [N].

    ``warmup`` carries the record of a method's warm-up (``pruning.warmup.WarmupRecord``) to the scorers
    that read a trajectory (``delta``, ``movement``, ``abs_grad``); None when the method has none.
    """

    x: torch.Tensor
    y: torch.Tensor
    warmup: Any = None


def pruning_batch(
    x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, seed: int, per_class: int = 10
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


SCORERS: Registry[ScorerSpec] = Registry("scorer")


def _register(
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
    """Register ``fn`` under ``name``; ``behaviour`` sets the spec's other fields (``default_schedule``,
    ``default_rounds``, ``revives``, ``sized``, ``fits``)."""

    def wrap(fn: Scorer) -> Scorer:
        spec = ScorerSpec(fn, needs_data, description, passes, reads_weights, needs_warmup, **behaviour)
        SCORERS.register(name, spec, description, aliases)
        return fn

    return wrap


def full_mask(net: nn.Module) -> torch.Tensor:
    return torch.ones(prunable_layout(net).total, dtype=torch.bool)


def score(
    name: str,
    net: nn.Module,
    mask: torch.Tensor | None,
    data: PruneData | None,
    seed: int,
    keep: int | list[int] | None = None,
) -> torch.Tensor:
    """Scores of ``name`` on the masked ``net`` (``mask=None``: nothing pruned), checked to be finite.

    ``name`` is a registered scorer or a prefixed one (``learned:DIR``) that the registry resolves.
    ``keep`` (the prune's kept total, or per-layer counts) reaches a sized scorer (PHEW) only.
    """
    canonical = SCORERS.canonical(name)
    spec = SCORERS.get(canonical)
    if mask is None:
        mask = full_mask(net)
    layout = prunable_layout(net)
    mask = check_mask(mask, layout)
    scores = spec.fn(net, mask, data, seed, keep=keep) if spec.sized else spec.fn(net, mask, data, seed)
    check_finite(scores, layout, canonical)
    return scores


# ------------------------------------------------------------------------------------------ helpers


def _masked_copy(net: nn.Module, mask: torch.Tensor, dtype: torch.dtype | None = None):
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


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _need_data(data: PruneData | None, name: str) -> PruneData:
    if data is None:
        raise MetapruneError(f"scorer {name!r} needs a pruning batch (data); accepted: PruneData from pruning_batch")
    return data


def _chunks(data: PruneData, device: torch.device, dtype: torch.dtype):
    n = data.x.shape[0]
    for i in range(0, n, CHUNK):
        x = data.x[i : i + CHUNK].to(device=device, dtype=dtype)
        y = data.y[i : i + CHUNK].to(device=device, dtype=torch.long)
        yield x, y, x.shape[0] / n


def _grads(net, weights, data, create_graph=False, temperature=1.0):
    """Gradient of the mean cross-entropy (logits / temperature) w.r.t. the prunable weights."""
    w0 = weights[0]
    total = [torch.zeros_like(w) for w in weights]
    for x, y, frac in _chunks(data, w0.device, w0.dtype):
        loss = F.cross_entropy(net(x) / temperature, y) * frac
        gs = torch.autograd.grad(loss, weights, create_graph=create_graph, allow_unused=True)
        total = [t + (torch.zeros_like(w) if g is None else g) for t, g, w in zip(total, gs, weights, strict=True)]
    return total


# ------------------------------------------------------------------------------------------ scorers


@_register("random", False, "uniform noise from the random_scorer stream (a control)", reads_weights=False)
def random_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    n = prunable_layout(net).total
    noise = torch.rand(n, generator=generator(seed, "random_scorer"))
    return noise * mask.cpu().to(noise.dtype)


@_register("magnitude", False, "|theta| (the basis of IMP)", aliases=("mag",))
def magnitude_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    w = torch.cat([p.detach().reshape(-1) for p in prunable_weights(net)])
    return (w.abs() * mask.to(w.device).to(w.dtype)).float()


@_register(
    "snip", True, "SNIP connection sensitivity |dL/dc| = |g * theta| (Lee et al. 2019), sum-normalised", passes=1.0
)
def snip_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    data = _need_data(data, "snip")
    with torch.enable_grad():
        cnet, weights = _masked_copy(net, mask)
        grads = _grads(cnet, weights, data)
        s = _flat([(g * w).detach().abs() for g, w in zip(grads, weights, strict=True)])
    total = s.sum()
    if total > 0:
        s = s / total
    return s.float()


def _grasp_raw(net: nn.Module, mask: torch.Tensor, data: PruneData | None, name: str) -> torch.Tensor:
    """theta * Hg / (|sum| + eps) with Hg = d/dtheta (g_stop . g) on logits / 200 (SynFlow code)."""
    data = _need_data(data, name)
    with torch.enable_grad():
        cnet, weights = _masked_copy(net, mask)
        masks = prunable_layout(cnet).split(mask.to(weights[0].device))
        # the masked network's gradient w.r.t. the kept weights only (pruned directions are fixed at 0)
        stop = [
            g.detach() * m.to(g.dtype)
            for g, m in zip(_grads(cnet, weights, data, temperature=GRASP_TEMPERATURE), masks, strict=True)
        ]
        hg = [torch.zeros_like(w) for w in weights]
        w0 = weights[0]
        for x, y, frac in _chunks(data, w0.device, w0.dtype):
            loss = F.cross_entropy(cnet(x) / GRASP_TEMPERATURE, y) * frac
            gs = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
            z = sum((s * g).sum() for s, g in zip(stop, gs, strict=True) if g is not None)
            if not isinstance(z, torch.Tensor) or not z.requires_grad:
                continue
            hs = torch.autograd.grad(z, weights, allow_unused=True)
            hg = [a if h is None else a + h for a, h in zip(hg, hs, strict=True)]
        s = _flat([(w * h).detach() for w, h in zip(weights, hg, strict=True)])
    return (s / (s.sum().abs() + GRASP_EPS)).float()


@_register(
    "grasp",
    True,
    "GraSP theta * Hg, keep the highest (Wang et al. 2020; = remove the highest -theta*Hg)",
    passes=3.0,
)
def grasp_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _grasp_raw(net, mask, data, "grasp")


@_register(
    "grasp_abs", True, "|GraSP| = |theta * Hg| (the thesis found it much stronger than signed GraSP)", passes=3.0
)
def grasp_abs_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    """Absolute value of the (|sum|-normalised) GraSP score; the constant does not change the ranking."""
    return _grasp_raw(net, mask, data, "grasp_abs").abs()


@_register(
    "synflow",
    True,
    "SynFlow |theta * dR/dtheta|, R = sum of the |theta| network on all-ones input",
    passes=0.01,  # one all-ones example, not the batch
    default_schedule="ums",  # its paper's 100-round upfront multi-shot
)
def synflow_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    """In float64 (products over depth underflow float32); uses ``data`` only for the input shape.

    Biases (and BatchNorm parameters and buffers) enter the forward pass as their absolute values, as
    in the SynFlow code, which takes ``abs`` of the whole ``state_dict``. The paper's R is the path sum
    of the weights alone. At θ0 the biases are zero (``networks.init_standard``) and the two agree; on a
    trained checkpoint (every level of ``synflow@ims``, hence the harvest target) |b| adds to each unit's
    flow: for an MLP, a weight's score is |θ| times (the flow into its input unit, including that unit's
    |b|) times (the flow from its output unit to the output). A test pins this.
    """
    shape = tuple(data.x.shape[1:]) if data is not None else infer_input_shape(net)
    with torch.enable_grad():
        cnet, weights = _masked_copy(net, mask, torch.float64)
        cnet.eval()
        with torch.no_grad():
            for t in list(cnet.parameters()) + list(cnet.buffers()):
                if t.is_floating_point():
                    t.abs_()
        x = torch.ones(1, *shape, dtype=torch.float64, device=weights[0].device)
        grads = torch.autograd.grad(cnet(x).sum(), weights, allow_unused=True)
        s = _flat(
            [
                (w * (torch.zeros_like(w) if g is None else g)).detach().abs()
                for w, g in zip(weights, grads, strict=True)
            ]
        )
    return s


# ------------------------------------------------------------------------------- warm-up dynamics


def _dynamics(net: nn.Module, mask: torch.Tensor, data: PruneData | None, name: str) -> torch.Tensor:
    record = None if data is None else data.warmup
    if record is None:
        raise MetapruneError(f"scorer {name!r} reads a warm-up; accepted: a method with one, e.g. {name}+w3")
    values = record.dynamics(name).to(torch.float32)
    if values.numel() != prunable_layout(net).total:
        raise MetapruneError(f"warm-up of {values.numel()} weights does not match the network's")
    return values * mask.cpu().to(values.dtype)


@_register("delta", True, "|theta_E - theta0| after a warm-up of E epochs (write delta+wE)", needs_warmup=True)
def delta_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "delta")


@_register(
    "movement",
    True,
    "movement pruning -sum_t g_t * theta_t over a warm-up (Sanh et al. 2020; write movement+wE)",
    needs_warmup=True,
)
def movement_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "movement")


@_register("abs_grad", True, "accumulated |g_t| over a warm-up (write abs_grad+wE)", needs_warmup=True)
def abs_grad_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "abs_grad")


# ------------------------------------------------------------------------------- in modules of their own

# ProsPr (meta-gradient through M SGD steps) and the later peers live in modules of their own; importing
# them registers them.
import metaprune.pruning.force  # noqa: E402, F401
import metaprune.pruning.ntksap  # noqa: E402, F401
import metaprune.pruning.phew  # noqa: E402, F401
import metaprune.pruning.prospr  # noqa: E402, F401
