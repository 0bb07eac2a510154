"""Stacked scoring (thesis algorithm 1): score with B a network whose weights are A's scores."""

from __future__ import annotations

import copy

import torch
from torch import nn

from metaprune.networks import prunable_layout, prunable_weights
from metaprune.pruning.scorers import PruneData, score


def stacked_scores(
    a: str,
    b: str,
    net: nn.Module,
    mask: torch.Tensor | None,
    data: PruneData | None,
    seed: int,
    keep: int | list[int] | None = None,
) -> torch.Tensor:
    """S_B evaluated on a copy of ``net`` whose prunable weights are S_A = A(masked theta0).

    The thesis swapped the scores into the model and restored theta0 afterwards; working on a copy makes
    the restore exact by construction (``net`` is never written). ``keep`` reaches B (a sized scorer).
    """
    s_a = score(a, net, mask, data, seed)
    stacked = copy.deepcopy(net)
    with torch.no_grad():
        for w, part in zip(prunable_weights(stacked), prunable_layout(stacked).split(s_a), strict=True):
            w.copy_(part.to(device=w.device, dtype=w.dtype))
    return score(b, stacked, mask, data, seed, keep=keep)
