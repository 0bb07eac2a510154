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

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import flat_weights, prunable_layout
from metaprune.pruning.masks import check_finite, check_mask, check_weight_axis, infer_input_shape
from metaprune.pruning.scoring import (
    CHUNK,
    SCORERS,
    SCORING_MODE,
    PruneData,
    Scorer,
    ScorerSpec,
    chunks,
    flat,
    full_mask,
    linearised_copy,
    loss_grads,
    masked_copy,
    need_data,
    pruning_batch,
    register_scorer,
)
from metaprune.seeds import generator

__all__ = [
    "CHUNK",
    "GRASP_EPS",
    "GRASP_TEMPERATURE",
    "SCORERS",
    "SCORING_MODE",
    "PruneData",
    "Scorer",
    "ScorerSpec",
    "full_mask",
    "need_data",
    "pruning_batch",
    "register_scorer",
    "score",
]

GRASP_TEMPERATURE = 200.0
GRASP_EPS = 1e-10

# Registration, the pruning batch and the gradient helpers live in ``pruning.scoring`` (scorer modules
# import them from there); this module's import registers every built-in scorer.


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


# ------------------------------------------------------------------------------------------ scorers


@register_scorer("random", False, "uniform noise from the random_scorer stream (a control)", reads_weights=False)
def random_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    n = prunable_layout(net).total
    noise = torch.rand(n, generator=generator(seed, "random_scorer"))
    return noise * mask.cpu().to(noise.dtype)


@register_scorer("magnitude", False, "|theta| (the basis of IMP)", aliases=("mag",))
def magnitude_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    w = flat_weights(net)
    return (w.abs() * mask.to(w.device).to(w.dtype)).float()


@register_scorer(
    "snip", True, "SNIP connection sensitivity |dL/dc| = |g * theta| (Lee et al. 2019), sum-normalised", passes=1.0
)
def snip_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    data = need_data(data, "snip")
    with torch.enable_grad():
        cnet, weights = masked_copy(net, mask)
        grads = loss_grads(cnet, weights, data)
        s = flat([(g * w).detach().abs() for g, w in zip(grads, weights, strict=True)])
    total = s.sum()
    if total > 0:
        s = s / total
    return s.float()


def _grasp_raw(net: nn.Module, mask: torch.Tensor, data: PruneData | None, name: str) -> torch.Tensor:
    """theta * Hg / (|sum| + eps) with Hg = d/dtheta (g_stop . g) on logits / 200 (SynFlow code)."""
    data = need_data(data, name)
    with torch.enable_grad():
        cnet, weights = masked_copy(net, mask)
        masks = prunable_layout(cnet).split(mask.to(weights[0].device))
        # the masked network's gradient w.r.t. the kept weights only (pruned directions are fixed at 0)
        stop = [
            g.detach() * m.to(g.dtype)
            for g, m in zip(loss_grads(cnet, weights, data, temperature=GRASP_TEMPERATURE), masks, strict=True)
        ]
        hg = [torch.zeros_like(w) for w in weights]
        w0 = weights[0]
        for x, y, frac in chunks(data, w0.device, w0.dtype):
            loss = F.cross_entropy(cnet(x) / GRASP_TEMPERATURE, y) * frac
            gs = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
            z = sum((s * g).sum() for s, g in zip(stop, gs, strict=True) if g is not None)
            if not isinstance(z, torch.Tensor) or not z.requires_grad:
                continue
            hs = torch.autograd.grad(z, weights, allow_unused=True)
            hg = [a if h is None else a + h for a, h in zip(hg, hs, strict=True)]
        s = flat([(w * h).detach() for w, h in zip(weights, hg, strict=True)])
    return (s / (s.sum().abs() + GRASP_EPS)).float()


@register_scorer(
    "grasp",
    True,
    "GraSP theta * Hg, keep the highest (Wang et al. 2020; = remove the highest -theta*Hg)",
    passes=3.0,
)
def grasp_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _grasp_raw(net, mask, data, "grasp")


@register_scorer(
    "grasp_abs", True, "|GraSP| = |theta * Hg| (the thesis found it much stronger than signed GraSP)", passes=3.0
)
def grasp_abs_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    """Absolute value of the (|sum|-normalised) GraSP score; the constant does not change the ranking."""
    return _grasp_raw(net, mask, data, "grasp_abs").abs()


@register_scorer(
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
        cnet, weights = linearised_copy(net, mask)
        x = torch.ones(1, *shape, dtype=torch.float64, device=weights[0].device)
        grads = torch.autograd.grad(cnet(x).sum(), weights, allow_unused=True)
        s = flat(
            [
                (w * (torch.zeros_like(w) if g is None else g)).detach().abs()
                for w, g in zip(weights, grads, strict=True)
            ]
        )
    return s


# ------------------------------------------------------------------------------- warm-up dynamics


def _record(data: PruneData | None, name: str):
    """The warm-up record the scorer ``name`` reads; one line where the method has none."""
    record = None if data is None else data.warmup
    if record is None:
        raise MetapruneError(f"scorer {name!r} reads a warm-up; accepted: a method with one, e.g. {name}+w3")
    return record


def _dynamics(net: nn.Module, mask: torch.Tensor, data: PruneData | None, name: str) -> torch.Tensor:
    values = check_weight_axis(_record(data, name).dynamics(name), prunable_layout(net).total, "warm-up")
    return values.to(torch.float32) * mask.cpu().to(torch.float32)


@register_scorer("delta", True, "|theta_E - theta0| after a warm-up of E epochs (write delta+wE)", needs_warmup=True)
def delta_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "delta")


@register_scorer(
    "movement",
    True,
    "movement pruning -sum_t g_t * theta_t over a warm-up (Sanh et al. 2020; write movement+wE)",
    needs_warmup=True,
)
def movement_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "movement")


@register_scorer("abs_grad", True, "accumulated |g_t| over a warm-up (write abs_grad+wE)", needs_warmup=True)
def abs_grad_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    return _dynamics(net, mask, data, "abs_grad")


@register_scorer(
    "mag_increase",
    True,
    "magnitude increase |theta_E| - |theta0| over a warm-up (Zhou et al. 2019; write mag_increase+wE)",
    needs_warmup=True,
)
def mag_increase_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    """Negative where a weight shrank; only alive weights are ranked (``make_mask``), so the 0 of a pruned
    weight never outranks them."""
    record = _record(data, "mag_increase")
    theta_e = flat_weights(record.network).to("cpu", torch.float64)
    total = prunable_layout(net).total
    theta0 = check_weight_axis(record.theta0, total, "warm-up")
    values = (check_weight_axis(theta_e, total, "warm-up").abs() - theta0.abs()).to(torch.float32)
    return values * mask.cpu().to(values.dtype)


# ------------------------------------------------------------------------------- in modules of their own

# ProsPr (meta-gradient through M SGD steps) and the later peers live in modules of their own; importing
# them registers them.
import metaprune.pruning.force  # noqa: E402, F401
import metaprune.pruning.gem  # noqa: E402, F401
import metaprune.pruning.ntksap  # noqa: E402, F401
import metaprune.pruning.phew  # noqa: E402, F401
import metaprune.pruning.prospr  # noqa: E402, F401
