"""Per-layer budgets that need no scores: RigL's Erdős–Rényi-kernel split (``#erk``).

ERK (Evci et al., ICML 2020) gives layer l a density proportional to (sum of its kernel's dimensions) /
(product of them): ``eps * sum(shape) / prod(shape)``, with ``eps`` chosen so that the kept total equals
the uniform split's. A layer whose density would exceed 1 is kept dense and ``eps`` is solved again for the
rest, the layers of the largest raw density first. ``erk_sparsities`` follows the reference
(github.com/google-research/rigl, ``rigl/sparse_utils.py``, ``get_sparsities_erdos_renyi`` with
``include_kernel=True``, ``erk_power_scale=1.0``, no custom layers) operation for operation, so its
sparsities equal the reference's to the bit (tests/fixtures/erk_rigl.json).

Counts: RigL keeps ``n - floor(sparsity * n)`` weights of a layer, so its total can differ from the
uniform split's by a few weights. Here, as every mask of this library, the total is exactly
``round(density * n)`` (``masks.keep_count``): dense layers keep every weight and the rest of the count is
shared over the other layers in proportion to their ERK densities by largest remainder (ties to the
earlier layer). A layer whose share rounds to no weight would cut the network and is refused by name.
"""

from __future__ import annotations

import math

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.networks import PrunableLayout
from metaprune.pruning.masks import keep_count

ERK_POWER_SCALE = 1.0  # RigL's DEFAULT_ERK_SCALE


def erk_sparsities(layout: PrunableLayout, density: float, power_scale: float = ERK_POWER_SCALE) -> list[float]:
    """Per-layer sparsities (fraction pruned) of RigL's ERK split at global ``density``, as RigL computes them.

    At density 1 every layer is dense (RigL's loop would divide by zero there).
    """
    if density >= 1.0:
        return [0.0] * len(layout.layers)
    default_sparsity = 1.0 - density
    dense: set[int] = set()
    while True:
        divisor = 0
        rhs = 0
        raw: dict[int, float] = {}
        for i, layer in enumerate(layout.layers):
            shape = list(layer.shape)
            n_param = np.prod(shape)
            n_zeros = int(np.floor(default_sparsity * n_param))
            if i in dense:
                rhs -= n_zeros
            else:
                rhs += n_param - n_zeros
                raw[i] = (np.sum(shape) / np.prod(shape)) ** power_scale
                divisor += raw[i] * n_param
        eps = rhs / divisor
        max_prob = np.max(list(raw.values()))
        if max_prob * eps <= 1:
            break
        dense.update(i for i, p in raw.items() if p == max_prob)
        if len(dense) == len(layout.layers):  # pragma: no cover - needs density 1, handled above
            return [0.0] * len(layout.layers)
    return [0.0 if i in dense else 1.0 - eps * raw[i] for i in range(len(layout.layers))]


def erk_counts(layout: PrunableLayout, density: float, method: str = "#erk") -> list[int]:
    """Kept weights per layer under the ERK split: exactly ``round(density * n)`` in all, dense layers whole.

    Refuses (one line, naming the layer) a split that keeps no weight of some layer; ``method`` names the
    method in that message.
    """
    sparsities = erk_sparsities(layout, density)
    total = keep_count(density, layout.total)
    sizes = [layer.size for layer in layout.layers]
    dense = [s == 0.0 for s in sparsities]
    counts = [n if d else 0 for n, d in zip(sizes, dense, strict=True)]
    rest = total - sum(counts)
    ideal = [0.0 if d else (1.0 - s) * n for s, n, d in zip(sparsities, sizes, dense, strict=True)]
    scale = max(rest, 0) / sum(ideal) if sum(ideal) > 0 else 0.0
    shares = [x * scale for x in ideal]
    for i, share in enumerate(shares):
        if not dense[i]:
            counts[i] = min(sizes[i], math.floor(share))
    left = total - sum(counts)
    order = sorted(
        (i for i in range(len(sizes)) if not dense[i]), key=lambda i: (-(shares[i] - math.floor(shares[i])), i)
    )
    while left > 0:
        room = [i for i in order if counts[i] < sizes[i]]
        for i in room[:left]:
            counts[i] += 1
        left = total - sum(counts)
    if sum(counts) != total:  # the dense layers alone hold more than the kept count
        raise MetapruneError(
            f"budget erk keeps {sum(counts)} weights in its dense layers, more than the {total} that density "
            f"{density:g} keeps, so method {method} cannot keep exactly that many; accepted: a lower density"
        )
    for layer, k, share in zip(layout.layers, counts, shares, strict=True):
        if k == 0:
            raise MetapruneError(
                f"budget erk keeps no weight of layer {layer.name} ({layer.size} weights, an ERK share of "
                f"{share:.3g}) at density {density:g}, so method {method} would cut the network; accepted: a "
                "higher density, where every layer keeps at least one weight"
            )
    return counts
