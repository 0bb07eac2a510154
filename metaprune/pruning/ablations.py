"""Sanity-check ablations of pruning at init (Frankle et al. 2021; Su et al. 2020).

If shuffling a mask within layers, re-initialising the kept weights, or inverting the scores does not
hurt, the method's per-weight choices carry no information beyond per-layer densities.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metaprune.networks import PrunableLayout, prunable_layout, prunable_weights
from metaprune.seeds import generator


def shuffle_within_layers(mask: torch.Tensor, layout: PrunableLayout, seed: int) -> torch.Tensor:
    """Each layer's mask entries under a seeded random permutation: per-layer counts kept, positions not.

    (The SynFlow code's layer-wise shuffle was a no-op; this one returns a new mask.)
    """
    g = generator(seed, "shuffle")
    flat = mask.reshape(-1)
    out = torch.empty_like(flat)
    for layer in layout.layers:
        sl = slice(layer.offset, layer.offset + layer.size)
        perm = torch.randperm(layer.size, generator=g).to(flat.device)
        out[sl] = flat[sl][perm]
    return out


@torch.no_grad()
def reinit_kept(net: nn.Module, mask: torch.Tensor, seed: int) -> None:
    """Kept prunable weights <- fresh Kaiming-normal draws (std sqrt(2/fan_in), as ``init_standard``).

    A full tensor is drawn per layer so a weight's new value does not depend on the rest of the mask.
    Pruned weights are left as they are (the mask zeroes them in training).
    """
    g = generator(seed, "reinit")
    layout = prunable_layout(net)
    for layer, w, m in zip(layout.layers, prunable_weights(net), layout.split(mask.reshape(-1)), strict=True):
        fresh = torch.randn(layer.shape, generator=g) * math.sqrt(2.0 / layer.fan_in)
        m = m.to(w.device).bool()
        w[m] = fresh.to(device=w.device, dtype=w.dtype)[m]


def invert_scores(scores: torch.Tensor) -> torch.Tensor:
    """The reversed ranking (-scores): top-k of the result is the bottom-k of the input.

    Negation, not the reciprocal the SynFlow code used, which reverses only all-positive scores and
    blows up at 0.
    """
    return -scores
