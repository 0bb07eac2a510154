"""Initialisations compared by ``evaluate``: standard Kaiming-normal, bimodal, and SaW (scores as weights).

All of them write the weights in place: setting the initial weights is their whole job.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import init_standard, prunable_layout, prunable_weights
from metaprune.pruning.scorers import PruneData, full_mask, score
from metaprune.registry import Registry
from metaprune.seeds import generator

Init = Callable[[nn.Module, int], None]
INITS: Registry[Init] = Registry("init")

INITS.register("standard", init_standard, "Kaiming-normal (fan-in, ReLU gain), zero biases", aliases=("kaiming",))


@torch.no_grad()
def init_bimodal(net: nn.Module, seed: int) -> None:
    """Weights from 1/2 N(+2s, (s/2)^2) + 1/2 N(-2s, (s/2)^2), s = sqrt(2 / fan_in) per layer.

    The thesis (5.4) proposes a bimodal init after seeing bimodal weights in good tickets but gives no
    parameters; this is our definition: modes at two Kaiming standard deviations, each a quarter as wide,
    so almost no weight lies near zero. Biases are 0 and BatchNorm is reset, as for ``standard``.
    """
    g = generator(seed, "init")
    for module in net.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            w = module.weight
            sigma = math.sqrt(2.0 / w[0].numel())
            sign = torch.randint(0, 2, w.shape, generator=g).mul_(2).sub_(1).to(torch.float64)
            z = torch.randn(w.shape, generator=g, dtype=torch.float64)
            w.copy_(sign * (2.0 * sigma + 0.5 * sigma * z))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
            module.reset_running_stats()


INITS.register("bimodal", init_bimodal, "two Gaussian modes at +-2 Kaiming std (width std/2), zero biases")


@torch.no_grad()
def saw_init(net: nn.Module, scorer: str, data: PruneData | None, seed: int) -> None:
    """SaW (thesis 3.4): weights <- sign(theta0) * |S| / max|S| per layer, S the scores on theta0.

    Signed scorers (``grasp``) contribute only their magnitude, so every sign comes from theta0 and the
    network keeps the sign pattern of its init. Scores are scaled in their own dtype (float64 for SynFlow)
    before the cast, so tiny scores do not underflow.
    """
    s = score(scorer, net, full_mask(net), data, seed)
    layout = prunable_layout(net)
    for layer, w, part in zip(layout.layers, prunable_weights(net), layout.split(s), strict=True):
        mag = part.abs().to(w.device)
        top = mag.max()
        if not top > 0:
            raise MetapruneError(
                f"SaW from scorer {scorer!r}: every score of layer {layer.name} is 0, so its weights would all be "
                "0; accepted: a scorer that scores this layer (e.g. magnitude or synflow)"
            )
        w.copy_((torch.sign(w).to(mag.dtype) * mag / top).to(w.dtype))
