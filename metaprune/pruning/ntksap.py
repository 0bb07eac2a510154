"""NTK-SAP (Wang, Li and Sun, ICLR 2023): the saliency of the NTK trace, data-free, over fresh random weights.

For a mask ``c`` (ones on the kept weights) the trace of the network's neural tangent kernel is estimated
by a finite difference: with weights θ, a perturbation ξ ~ N(0, 1) and Gaussian inputs x,

    J(c) = Σ_x ‖ f(x; c ⊙ θ) − f(x; c ⊙ (θ + ε ξ)) ‖²

and the score of a weight is ``|∂J/∂c|`` summed over ``R`` draws of (θ, ξ, x). θ is drawn afresh for every
draw from the network's initialisation (Kaiming normal, fan-in, ReLU gain), so the scores depend on the
mask and the architecture only, not on θ0's values ("data-free and weight-agnostic"); biases are the
network's own. A weight already pruned scores 0.

As in the reference code (github.com/YiteWang/NTK-SAP @ e23682b, ``Pruners/pruners.py``, ``NTKSAP.score``,
with ``main.py``'s defaults and ``scripts/run.sh``):

- ``ε = 0.01`` (``--ntksap_epsilon``), ``R = 1`` draw per round (``--ntksap_R``; the sample script's 5 is
  for CIFAR-10 only, its README says), ``T = 20`` rounds (``--prune-epochs 20`` in ``scripts/run.sh``) on
  the exponential schedule from dense: ``ntksap`` means ``ntksap@ums20``.
- As many Gaussian inputs as the pruning batch holds (the reference draws ``randn_like`` of each pruning
  batch: 10 examples per class); with no pruning batch (a data-free run) 10 per class of the network's
  output units.
- Weights are redrawn for every draw of every round (``_initialize_weights`` inside the loop); here each
  draw comes from the ``ntksap`` seed stream keyed by the number of weights alive when it scores (a UMS
  round never repeats it) and the draw's index, so the scores are a pure function of (network, mask,
  seed) and every round sees fresh weights.
- BatchNorm: the reference scores in eval mode with running statistics just reset and recomputed (momentum
  1) from the same random batch through the unperturbed network; so does this module. The thesis
  networks have no BatchNorm.

Deviations: the draws come from this library's seed streams, not the global torch RNG; BatchNorm's affine
parameters are the network's own (the reference resets them to 1 and 0, which is what θ0 holds here).

Cost (``passes``): per draw, a forward pass of the network and of its perturbed copy over the inputs and
one backward pass through both: 2 passes over a pruning batch's worth of examples.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from metaprune.networks import prunable_layout
from metaprune.pruning.masks import infer_input_shape
from metaprune.pruning.scoring import PruneData, register_scorer
from metaprune.seeds import generator

NTKSAP_EPSILON = 0.01  # ε: --ntksap_epsilon default
NTKSAP_DRAWS = 1  # R: --ntksap_R default
NTKSAP_ROUNDS = 20  # T: --prune-epochs in the reference's scripts/run.sh
NTKSAP_PER_CLASS = 10  # --prune-dataset-ratio: inputs per class when there is no pruning batch


@dataclass(frozen=True)
class NtkDraw:
    """One draw: fresh prunable weights θ and perturbation ξ (layer order), Gaussian inputs x."""

    weights: tuple[torch.Tensor, ...]
    noise: tuple[torch.Tensor, ...]
    x: torch.Tensor


def ntksap_draws(
    net: nn.Module, mask: torch.Tensor, seed: int, inputs: int, input_shape: tuple[int, ...], draws: int
) -> list[NtkDraw]:
    """``draws`` draws from the ``ntksap`` stream of ``seed``, keyed by the alive count of ``mask``."""
    layout = prunable_layout(net)
    alive = int(mask.sum())
    out = []
    for r in range(int(draws)):
        g = generator(seed, "ntksap", alive, r)
        weights = tuple(
            nn.init.kaiming_normal_(torch.empty(layer.shape), mode="fan_in", nonlinearity="relu", generator=g)
            for layer in layout.layers
        )
        x = torch.randn(int(inputs), *input_shape, generator=g)
        noise = tuple(torch.randn(layer.shape, generator=g) for layer in layout.layers)
        out.append(NtkDraw(weights, noise, x))
    return out


def _refresh_batchnorm(net: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> None:
    """Running statistics := the statistics of ``x`` through ``net`` with ``params`` (reset, momentum 1)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        functional_call(net, {k: v.detach() for k, v in params.items()}, (x,))
    net.eval()


def ntksap_saliency(
    net: nn.Module, mask: torch.Tensor, draws: list[NtkDraw], epsilon: float = NTKSAP_EPSILON
) -> torch.Tensor:
    """``|Σ_draws ∂J/∂c|`` at ``c = mask``, flat, in ``net``'s dtype; pruned weights get 0. Pure."""
    cnet = copy.deepcopy(net).eval()
    layout = prunable_layout(cnet)
    base = {k: v.detach() for k, v in cnet.named_parameters()}
    first = next(iter(base.values()))
    device, dtype = first.device, first.dtype
    keep = [m.to(device=device, dtype=dtype) for m in layout.split(mask.reshape(-1).float())]
    with torch.enable_grad():
        c = [m.clone().requires_grad_(True) for m in keep]
        total = [torch.zeros_like(m) for m in keep]
        for draw in draws:
            x = draw.x.to(device=device, dtype=dtype)
            theta = [w.to(device=device, dtype=dtype) for w in draw.weights]
            moved = [t + epsilon * xi.to(device=device, dtype=dtype) for t, xi in zip(theta, draw.noise, strict=True)]
            plain = {**base, **{n: ci * t for n, ci, t in zip(layout.names, c, theta, strict=True)}}
            perturbed = {**base, **{n: ci * t for n, ci, t in zip(layout.names, c, moved, strict=True)}}
            _refresh_batchnorm(cnet, plain, x)
            diff = functional_call(cnet, plain, (x,)) - functional_call(cnet, perturbed, (x,))
            trace = (torch.norm(diff, dim=-1) ** 2).sum()
            grads = torch.autograd.grad(trace, c)
            total = [t + g for t, g in zip(total, grads, strict=True)]
    return torch.cat([(t * m).detach().abs().reshape(-1) for t, m in zip(total, keep, strict=True)])


@register_scorer(
    "ntksap",
    False,
    f"NTK-SAP |dJ/dc|, J = finite-difference NTK trace (eps {NTKSAP_EPSILON:g}) over fresh Kaiming weights and "
    f"Gaussian inputs (Wang et al. 2023), {NTKSAP_ROUNDS} UMS rounds",
    passes=2.0 * NTKSAP_DRAWS,
    reads_weights=False,  # θ is redrawn: a warm-up cannot change the scores
    default_schedule="ums",
    default_rounds=NTKSAP_ROUNDS,
)
def ntksap_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    if data is not None:
        inputs, shape = int(data.x.shape[0]), tuple(data.x.shape[1:])
    else:
        inputs = NTKSAP_PER_CLASS * prunable_layout(net).layers[-1].shape[0]
        shape = infer_input_shape(net)
    draws = ntksap_draws(net, mask, seed, inputs, shape, NTKSAP_DRAWS)
    return ntksap_saliency(net, mask, draws).float()
