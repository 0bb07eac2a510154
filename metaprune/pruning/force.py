"""FORCE (de Jorge et al., ICLR 2021, "Progressive skeletonization"): foresight connection sensitivity.

FORCE scores a weight by ``|θ0 ⊙ g|`` where ``g`` is the loss gradient of the *pruned* network (the weights
pruned so far set to 0, their gradients not blocked) and θ0 is the weight's initial value — pruned weights
included. Re-ranking every weight at each of ``T`` exponentially spaced rounds, a weight pruned in one
round can come back in a later one: FORCE's exploration. This module gives the scorer; the revival is the
schedule's (``ScorerSpec.revives``: under ``ums`` each round keeps the top of every weight's score, not
only of the alive ones).

Iterative SNIP, the paper's other procedure, is SNIP re-applied to the masked network with pruned weights
held out: in this grammar it is ``snip@ums60`` (each round's top-k among the alive weights).

As in the reference code (github.com/naver/force @ 7494eed, ``pruning/pruning_algos.py``,
``iterative_pruning`` with ``prune_method=3`` and its README's commands):

- ``T = 60`` rounds (``--num_steps 60`` in every command of the README; the argparse default is 10) on the
  exponential schedule from dense, round i keeping ``density ** (i / T)``: ``force`` means ``force@ums60``.
- One batch for the gradient (``--num_batches 1``): here the pruning batch.
- θ0 is the dense initial weight and the mask is recomputed from scratch each round.

Deviations:

- The loss is the cross-entropy, as the paper defines it. The reference applies ``F.nll_loss`` to its
  models' raw outputs (none ends in a log-softmax), i.e. it differentiates ``−mean(logit_y)``; on a network
  whose output is a log-softmax the two agree, which is how the fixture pins this module to the reference.
- Exact top-k (``round(density · n)`` kept, ties broken by a seeded random order) where the reference keeps
  every weight scoring at least the k-th score of ``int(density · n)``.
- Scores are sum-normalised as SNIP's are (the ranking is the reference's).

Cost (``passes``): one forward and backward pass over the pruning batch per round, as SNIP.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.networks import prunable_weights
from metaprune.pruning.scoring import PruneData, flat, loss_grads, masked_copy, need_data, register_scorer

FORCE_ROUNDS = 60  # T: --num_steps in the reference README's commands


def force_saliency(net: nn.Module, mask: torch.Tensor, data: PruneData) -> torch.Tensor:
    """``|θ ⊙ g|`` with ``g`` the gradient of the masked network and θ ``net``'s own (unmasked) weights."""
    theta = [w.detach() for w in prunable_weights(net)]
    with torch.enable_grad():
        cnet, weights = masked_copy(net, mask)
        grads = loss_grads(cnet, weights, data)
    return flat([(g.detach() * t.to(g.device)).abs() for g, t in zip(grads, theta, strict=True)])


@register_scorer(
    "force",
    True,
    f"FORCE |theta0 * g| of the pruned network, every weight re-ranked each round so pruned ones can return "
    f"(de Jorge et al. 2021), {FORCE_ROUNDS} UMS rounds, sum-normalised",
    passes=1.0,
    default_schedule="ums",
    default_rounds=FORCE_ROUNDS,
    revives=True,
)
def force_scores(net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int) -> torch.Tensor:
    s = force_saliency(net, mask, need_data(data, "force"))
    total = s.sum()
    if total > 0:
        s = s / total
    return s.float()
