"""PHEW (Patil and Dovrolis, ICML 2021): a sparse network built from path-weighted random walks, data-free.

Random walks cross the network, alternately forward from an input unit and backward from an output unit
(each taken round-robin); at every layer a forward walk at input unit j moves to output unit i with
probability ``|w_ij| / Σ_i |w_ij|``, a backward walk at output unit i to input unit j with probability
``|w_ij| / Σ_j |w_ij|`` (uniform where that sum is 0), and every connection a walk crosses is kept.
Walks are added until the network holds the target number of connections. The walks favour heavy
weights but spread over every input and output unit, so PHEW keeps layers wide.

As a scorer, PHEW ranks the connections by when a walk first crossed them (earlier = higher; never
crossed: 0), and the walks stop once the prune's count is reached (``ScorerSpec.sized``: the schedule
passes the count, per layer under a budget, where every layer's count must be reached). The top k of that
ranking is the reference's mask when k is the reference's final count (tests/fixtures/phew_reference.json).

As in the reference code (github.com/ShreyasMalakarjunPatil/PHEW @ c4a0d40, ``PHEW/phew.py``,
``phew_masks`` with ``kernel_conserved=False``): probabilities from |θ| in float64 with the reference's
arithmetic (sequential sums; numpy's ``choice``: cumulative sum, renormalised, one uniform draw per step,
``searchsorted`` to the right), the first walk forward from input unit 0, the next backward from output
unit 0, round-robin starts. Given the same uniform draws the walks are the reference's step for step.

Deviations:

- Exactly k connections: the reference adds whole walks and stops once it holds at least
  ``int(density · n)``, so it overshoots by up to (depth − 1) connections; here the ranking is cut inside
  the last walk, at ``round(density · n)`` as every mask of this library.
- Uniform draws from the ``phew`` seed stream (numpy's PCG64), not numpy's global Mersenne Twister.
- Networks of Linear layers only (the MLPs): the reference's handling of convolution kernels (a kernel
  position drawn per step, conv-to-linear unit mapping, random skips over ResNet shortcuts) is not ported,
  so convolutional networks are refused before any work.
- On a masked network (a UMS round, or ``A>phew``) the walks follow |θ ⊙ m|; a pruned weight is never
  ranked. A walk stalls nowhere: 65,536 walks in a row that add no connection end the walking (a weight of
  magnitude 0 is never crossed), and the connections still missing rank by the seeded tie-break.

Cost: no pass over data (``passes`` 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import prunable_layout, prunable_weights
from metaprune.pruning.scoring import PruneData, register_scorer
from metaprune.seeds import stream_seed

MAX_BATCH = 65536  # walks simulated at once; also the stall limit

Uniforms = Callable[[int], np.ndarray]


def _row_cdfs(rows: np.ndarray) -> np.ndarray:
    """Per row, the cumulative distribution numpy's ``choice`` builds from the reference's probabilities."""
    total = np.cumsum(rows, axis=1)[:, -1:]  # sequential, as Python's sum() in the reference
    safe = np.where(total > 0, total, 1.0)
    p = np.where(total > 0, rows / safe, 1.0 / rows.shape[1])
    cdf = np.cumsum(p, axis=1)
    return cdf / cdf[:, -1:]


def _step(cdfs: np.ndarray, units: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Next units: ``searchsorted(cdf, u, side='right')`` row by row."""
    return (cdfs[units] <= u[:, None]).sum(axis=1)


def _walk_batch(
    fwd: list[np.ndarray], bwd: list[np.ndarray], shapes: list[tuple[int, int]], offsets: list[int], first: int, u
) -> np.ndarray:
    """Flat connection indices crossed by walks ``first``, ``first + 1``, …, one row per walk, in step order."""
    count, depth = u.shape
    index = np.arange(first, first + count)
    edges = np.empty((count, depth), dtype=np.int64)
    ahead = np.nonzero(index % 2 == 0)[0]
    units = (index[ahead] // 2) % shapes[0][1]
    for k in range(depth):
        nxt = _step(fwd[k], units, u[ahead, k])
        edges[ahead, k] = offsets[k] + nxt * shapes[k][1] + units
        units = nxt
    back = np.nonzero(index % 2 == 1)[0]
    units = (index[back] // 2) % shapes[-1][0]
    for s in range(depth):
        k = depth - 1 - s
        prv = _step(bwd[k], units, u[back, s])
        edges[back, s] = offsets[k] + units * shapes[k][1] + prv
        units = prv
    return edges


def phew_first_visits(
    magnitudes: list[np.ndarray], alive: np.ndarray, keep: int | list[int], uniforms: Uniforms
) -> tuple[np.ndarray, int]:
    """The step at which a walk first crossed each connection (-1: never), and the steps walked.

    ``magnitudes``: per layer |w| as float64 [out, in] (a chain: each layer's ``in`` is the previous
    ``out``); ``alive``: flat bool; walking stops once ``keep`` alive connections were crossed (per layer
    for a list). ``uniforms(n)`` gives the next n draws in [0, 1), one per step.
    """
    shapes = [m.shape for m in magnitudes]
    sizes = [m.size for m in magnitudes]
    offsets = list(np.cumsum([0, *sizes[:-1]]))
    bounds = np.cumsum([0, *sizes])
    fwd = [_row_cdfs(m.T) for m in magnitudes]
    bwd = [_row_cdfs(m) for m in magnitudes]
    depth = len(magnitudes)
    first = np.full(int(bounds[-1]), -1, dtype=np.int64)
    need = np.asarray(keep if isinstance(keep, list) else [keep])
    have = np.zeros(len(need), dtype=np.int64)
    walks, stalled = 0, 0
    batch = int(min(MAX_BATCH, max(64, 2 * (int(need.sum()) // depth + 1))))
    while (have < need).any() and stalled < MAX_BATCH:
        edges = _walk_batch(fwd, bwd, shapes, offsets, walks, uniforms(batch * depth).reshape(batch, depth))
        seq = edges.reshape(-1)
        uniq, at = np.unique(seq, return_index=True)
        new = first[uniq] < 0
        first[uniq[new]] = walks * depth + at[new]
        added = uniq[new][alive[uniq[new]]]
        if isinstance(keep, list):
            have += np.histogram(added, bins=bounds)[0]
        else:
            have += added.size
        stalled = 0 if added.size else stalled + batch
        walks += batch
        batch = min(MAX_BATCH, 2 * batch)
    return first, walks * depth


def check_chain(net: nn.Module) -> None:
    """PHEW here walks chains of Linear layers; refuse any other network in one line."""
    layout = prunable_layout(net)
    modules = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    chained = all(a.shape[0] == b.shape[1] for a, b in zip(layout.layers, layout.layers[1:], strict=False))
    if any(isinstance(m, nn.Conv2d) for m in modules) or not chained:
        raise MetapruneError(
            f"scorer 'phew' walks chains of Linear layers, and {type(net).__name__} has convolutions or "
            "branches; accepted: an MLP network (lenet_300_100, mlp:W1-W2-...)"
        )


def phew_ranking(net: nn.Module, mask: torch.Tensor, keep: int | list[int], uniforms: Uniforms) -> torch.Tensor:
    """Scores ranking the alive connections by first crossing (earlier = higher), float64, flat; 0 else."""
    check_chain(net)
    alive = mask.reshape(-1).cpu().numpy().astype(bool)
    layout = prunable_layout(net)
    parts = layout.split(torch.from_numpy(alive))
    magnitudes = [
        np.abs(w.detach().cpu().float().numpy()).astype(np.float64) * part.numpy()
        for w, part in zip(prunable_weights(net), parts, strict=True)
    ]
    first, steps = phew_first_visits(magnitudes, alive, keep, uniforms)
    scores = np.where((first >= 0) & alive, steps - first, 0).astype(np.float64)
    return torch.from_numpy(scores)


@register_scorer(
    "phew",
    False,
    "PHEW: connections crossed first by |theta|-weighted random walks, alternately forward from each input "
    "and backward from each output unit (Patil and Dovrolis 2021), data-free; MLPs",
    fits=check_chain,
    sized=True,
)
def phew_scores(
    net: nn.Module, mask: torch.Tensor, data: PruneData | None, seed: int, keep: int | list[int] | None = None
) -> torch.Tensor:
    if keep is None:
        raise MetapruneError(
            "scorer 'phew' walks until the network holds the count a prune keeps, and none was given; accepted: "
            "phew as a method's last scorer (e.g. phew, magnitude>phew, phew#erk), or keep=COUNT"
        )
    rng = np.random.Generator(np.random.PCG64(stream_seed(seed, "phew", int(mask.sum()))))
    return phew_ranking(net, mask, keep, rng.random)
