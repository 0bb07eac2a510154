"""ProsPr (Alizadeh et al., ICLR 2022): the meta-gradient of the loss a few SGD steps ahead w.r.t. the mask.

With a continuous mask ``c`` on the prunable weights (ones on the kept ones) the network starts from
``w'_0 = c ⊙ θ0`` (biases and other parameters as they are), takes ``M`` plain SGD steps
``w'_{k+1} = w'_k − α ∇L(w'_k)`` on every trainable parameter, and the score is ``|∂L(w'_M) / ∂c|``,
differentiated *through* the steps (second order: each step's gradient is built with ``create_graph``).
Higher = keep. ``M = 0`` is SNIP: ``∂L(c ⊙ θ0)/∂c = g ⊙ θ0``.

As in the reference code (github.com/mil-ad/prospr, ``prospr.prune`` with its CLI defaults):

- ``M = 3`` inner steps, inner learning rate ``α = 0.1``, no momentum, no weight decay (``--inner-steps 3``,
  ``--inner-lr 0.1``, ``--inner-momentum 0``). α = 0.1 is also the thesis training lr (``TrainConfig.lr``),
  but it is this module's constant: a ``--lr`` given to training does not change the scores.
- The same batch in the inner steps and the outer loss (``--new-data-in-inner`` defaults to False); here it
  is the pruning batch (10 examples per class; the reference code draws one batch of 128), so no new seed
  stream is needed.
- The full second-order meta-gradient (``--meta-grads-mode full``), not the first-order approximation.
- Pruning in a single shot: the paper prunes once ("in a single shot", its abstract; ``prune`` scores once
  and keeps the top k), so ``prospr`` alone means ``prospr@uss``; ``prospr@ums`` re-scores per round.

Deviations, following this library's scorer conventions (``pruning.scorers``):

- EVAL mode: BatchNorm normalises with its running statistics (the reference code scores in train mode,
  with batch statistics). The thesis networks (MLPs, Conv-2/4, LeNet-5) have no BatchNorm, so there the
  two agree.
- A weight already pruned (mask 0, e.g. by an earlier UMS round) stays at 0 through the inner steps (its
  update is masked, as the ticket trains) and scores 0. Scoring from the dense network, as the paper
  does, nothing is held.
- The loss is the mean cross-entropy over the whole pruning batch, summed over chunks of ``CHUNK``.
- The scores are sum-normalised as SNIP's are; the paper's raw |∂L/∂c| ranks the same.

Cost (``passes``): ``2M + 1`` forward+backward passes over the pruning batch, counted as GraSP's
Hessian-vector product is: each inner step is one pass (forward, gradient with ``create_graph``), the outer
loss one pass, and the meta-backward through each inner gradient one pass more.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metaprune.networks import prunable_layout
from metaprune.pruning.scoring import CHUNK, SCORING_MODE, PruneData, need_data, register_scorer

PROSPR_STEPS = 3  # M: inner SGD steps (reference code: --inner-steps 3)
PROSPR_LR = 0.1  # α: inner learning rate (reference code: --inner-lr 0.1; also the thesis training lr)


def _batch_loss(net: nn.Module, params: dict[str, torch.Tensor], data: PruneData) -> torch.Tensor:
    """Mean cross-entropy of ``net`` run with ``params`` over the whole batch, summed over chunks."""
    first = next(iter(params.values()))
    n = data.x.shape[0]
    total = first.new_zeros(())
    for i in range(0, n, CHUNK):
        x = data.x[i : i + CHUNK].to(device=first.device, dtype=first.dtype)
        y = data.y[i : i + CHUNK].to(device=first.device, dtype=torch.long)
        total = total + F.cross_entropy(functional_call(net, params, (x,)), y) * (x.shape[0] / n)
    return total


def unrolled_loss(
    net: nn.Module,
    c: torch.Tensor,
    mask: torch.Tensor,
    data: PruneData,
    steps: int = PROSPR_STEPS,
    lr: float = PROSPR_LR,
) -> torch.Tensor:
    """L(w'_M) as a differentiable function of the flat continuous mask ``c`` (ProsPr's objective).

    ``net`` is used as given (callers pass a copy in eval mode); ``mask`` (bool, flat) holds pruned weights
    at 0 through the steps. Every step's gradient keeps its graph, so ``∂/∂c`` is the full meta-gradient.
    """
    layout = prunable_layout(net)
    named = dict(net.named_parameters())
    theta0 = {name: p.detach() for name, p in named.items()}
    c_parts = dict(zip(layout.names, layout.split(c), strict=True))
    keep = dict(zip(layout.names, layout.split(mask.to(device=c.device, dtype=c.dtype)), strict=True))
    fast: dict[str, torch.Tensor] = {}
    for name, value in theta0.items():
        fast[name] = value * c_parts[name] if name in c_parts else value.clone().requires_grad_(True)
    for _ in range(int(steps)):
        loss = _batch_loss(net, fast, data)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True, allow_unused=True)
        updated = {}
        for (name, value), g in zip(fast.items(), grads, strict=True):
            if g is None:
                updated[name] = value
                continue
            if name in keep:
                g = g * keep[name]
            updated[name] = value - lr * g
        fast = updated
    return _batch_loss(net, fast, data)


def prospr_meta_gradient(
    net: nn.Module,
    mask: torch.Tensor,
    data: PruneData,
    steps: int = PROSPR_STEPS,
    lr: float = PROSPR_LR,
) -> torch.Tensor:
    """The signed meta-gradient ∂L(w'_M)/∂c at c = mask, flat, in ``net``'s dtype; pruned weights get 0.

    Pure: works on a deep copy in the scoring mode (eval), reading no ``.grad``.
    """
    with torch.enable_grad():
        cnet = copy.deepcopy(net)
        cnet.train(SCORING_MODE == "train")
        w0 = next(iter(dict(cnet.named_parameters()).values()))
        for p in cnet.parameters():
            p.grad = None
        keep = mask.reshape(-1).to(device=w0.device, dtype=torch.bool)
        c = keep.to(w0.dtype).requires_grad_(True)
        loss = unrolled_loss(cnet, c, keep, data, steps, lr)
        (meta,) = torch.autograd.grad(loss, c)
    return meta.detach() * keep.to(meta.dtype)


@register_scorer(
    "prospr",
    True,
    f"ProsPr |dL(w'_M)/dc| through M={PROSPR_STEPS} SGD steps (lr {PROSPR_LR:g}) from c*theta0 "
    "(Alizadeh et al. 2022), sum-normalised",
    passes=2.0 * PROSPR_STEPS + 1.0,
)
def prospr_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    data = need_data(data, "prospr")
    s = prospr_meta_gradient(net, mask, data).abs()
    total = s.sum()
    if total > 0:
        s = s / total
    return s.float()
