"""RigL (Evci et al., ICML 2020): the mask update of dynamic sparse training, and its schedule.

A RigL member trains sparse from θ0 under its initial mask, and every ``update_every`` weight steps a batch
goes to a mask update instead of a weight step (the paper's algorithm 1): in every layer, of the ``n`` kept
weights the ``⌊f(t) · n⌋`` of smallest magnitude are dropped and as many connections are grown where the
dense gradient of the loss w.r.t. the masked weights is largest, so every layer keeps its count. The drop
fraction decays as a cosine, ``f(t) = α/2 · (1 + cos(π t / T_end))``; no update from ``T_end`` on.
The train loop (``training.train_population``, its ``dynamic`` members) calls :func:`rigl_update`.

As in the reference code (github.com/google-research/rigl @ d39fc7d: ``rigl/sparse_optimizers_base.py``
``SparseRigLOptimizerBase`` and ``_get_update_op``, the same arithmetic as ``rigl/rigl_tf2/mask_updaters.py``
``MaskUpdater.generic_mask_update`` with ``RigL``'s drop and grow scores; its MNIST defaults in
``rigl/mnist/mnist_train_eval.py``):

- Drop score ``|m ⊙ w| + ε`` over every position, ε ~ N(0, 10⁻⁵) ("a slight bit of randomness"); the
  ``n − ⌊f · n⌋`` highest stay (``top_k``: equal scores keep the lower index first; ``⌊f · n⌋`` in float32).
- Grow score ``|∂L/∂(m ⊙ w)|`` on the batch of the update, the positions kept by the drop lifted below every
  other (``min − 1``); the ``⌊f · n⌋`` highest grow, so a connection just dropped may grow back.
- A grown connection starts at 0 (``grow_init='zeros'``) with its optimiser state reset (``initial_acc_scale``
  0); α = 0.3, ``drop_fraction_anneal='cosine'``, ΔT = 100 (``maskupdate_frequency``), updates from step 0.

Deviations:

- Pruned weights are exactly 0 here (the train loop's invariant), where the reference keeps a dropped weight's
  value behind its mask: a dropped weight is zeroed and its optimiser state reset. Only a connection that the
  drop noise lifts above a kept weight of magnitude < 10⁻⁵ (and so keeps without growing it) restarts at 0 here
  where the reference restores its old value; every mask is the reference's.
- ``T_end`` = 75 % of the training's steps (the paper's ImageNet setting): the train config's ``epochs`` ×
  batches per epoch, since early stopping decides the end only as it happens (the MNIST script stops at
  step 50,000 of 120,000). Updates at t = 0, ΔT, 2ΔT, … while t < T_end (the paper's algorithm 1; the
  reference's ``t ≤ end_step`` adds one at T_end whose cosine drop fraction is 0).
- The drop fraction is computed in float64 (TF: float32), and the noise comes from the member's ``rigl``
  seed stream (keyed by step and layer) instead of TF's stateless generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from metaprune.seeds import generator

DROP_FRACTION = 0.3  # α
UPDATE_EVERY = 100  # ΔT, weight steps between mask updates
END_FRACTION = 0.75  # T_end as a fraction of the training's steps
NOISE_STD = 1e-5  # the drop scores' tie-breaking noise

HELP = (
    "RigL (Evci et al. 2020), dynamic sparse training, not pruning at init: METHOD@rigl trains the method's "
    "single-shot mask from θ0 and every 100 steps drops the smallest kept weights of each layer and grows as many "
    "where the gradient is largest (cosine-decayed fraction from 0.3, none after 75 % of the steps); 'rigl' = "
    "random@rigl#erk, its paper's random ERK mask; cost: one training"
)


@dataclass(frozen=True)
class RigL:
    """One member's dynamic sparse training: its ``seed`` (the drop noise's stream) and RigL's settings."""

    seed: int
    drop_fraction: float = DROP_FRACTION
    update_every: int = UPDATE_EVERY
    end_fraction: float = END_FRACTION

    def settings(self) -> tuple[float, int, float]:
        """What members must share to update their masks at the same steps (all but the seed)."""
        return self.drop_fraction, self.update_every, self.end_fraction

    def end_step(self, total_steps: int) -> int:
        return int(self.end_fraction * total_steps)

    def due(self, step: int, end: int) -> bool:
        """A mask update comes before weight step ``step`` (0-based)."""
        return step % self.update_every == 0 and step < end

    def fraction(self, step: int, end: int) -> float:
        """The cosine-decayed drop fraction at ``step`` (TF's ``cosine_decay`` with alpha 0)."""
        done = min(step, end) / end if end > 0 else 1.0
        return self.drop_fraction * 0.5 * (1.0 + math.cos(math.pi * done))

    def noise(self, step: int, layer: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The drop scores' noise of one layer at one update, from the member's ``rigl`` stream."""
        g = generator(self.seed, "rigl", step, layer)
        return (torch.randn(shape, generator=g) * NOISE_STD).to(device)


def drop_count(n_kept: int, fraction: float) -> int:
    """``⌊f · n⌋`` as the reference computes it: float32 product, truncated."""
    return int(np.float32(n_kept) * np.float32(fraction))


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """A bool mask of the ``count`` highest scores; equal scores keep the lower index first (TF ``top_k``).

    The same set as the first ``count`` of a stable descending sort, found from the ``count``-th score alone.
    """
    flat = scores.reshape(-1)
    if count <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).view(scores.shape)
    if count >= flat.numel():
        return torch.ones_like(flat, dtype=torch.bool).view(scores.shape)
    threshold = torch.topk(flat, count, sorted=False).values.min()
    out = flat > threshold
    tied = torch.nonzero(flat == threshold).squeeze(1)  # ascending index
    out[tied[: count - int(out.sum())]] = True
    return out.view(scores.shape)


def rigl_update(
    mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, fraction: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """One layer's new mask (bool, ``mask``'s shape): drop by magnitude, grow by gradient, same count.

    ``weight`` the layer's weights, ``grad`` the dense gradient w.r.t. the masked weights, ``noise`` added to
    the drop scores (None: none).
    """
    kept = mask.bool()
    n_prune = drop_count(int(kept.sum()), fraction)
    drop_score = (kept.to(weight.dtype) * weight).abs()
    if noise is not None:
        drop_score = drop_score + noise.to(drop_score.dtype)
    stay = _top(drop_score, int(kept.sum()) - n_prune)
    grow_score = grad.abs()
    lifted = torch.where(stay, grow_score.min() - 1, grow_score)
    grow = _top(lifted, n_prune)
    return stay | grow
