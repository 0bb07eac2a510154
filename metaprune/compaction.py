"""What of a masked MLP can matter to its training: the live subnetwork, and the way back to full size.

Under masked-gradient SGD a hidden unit none of whose kept outgoing weights reaches a live unit gets a
zero gradient, so the weights and bias feeding it never change, and its activation reaches no logit.
Liveness therefore runs backwards from the outputs (all of them: every logit takes part in the softmax):
a unit is *live* when it has a kept weight into a live unit of the next layer, an input pixel is live
when a kept weight reads it into a live unit. A live unit without any kept incoming weight still carries
its bias (a constant activation that trains); it stays, as an empty row.

A member's compact form keeps, per layer, only the kept weights between live units (``rows``/``cols``
index the live lists; row-major order), the biases of the live units, and the live index lists needed to
write them back. Everything else keeps the value it started with — θ0 under the mask (pruned weights 0)
— which is exactly what the dense path leaves there, so :func:`expand` gives the dense path's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class CompactMember:
    """The live subnetwork of one masked MLP: kept weights between live units, and their live biases."""

    units: tuple[torch.Tensor, ...]  # per boundary (input, hidden…, output): sorted live indices
    rows: tuple[torch.Tensor, ...]  # per layer: index into units[l + 1] of each kept live weight
    cols: tuple[torch.Tensor, ...]  # per layer: index into units[l]
    values: list[torch.Tensor]  # per layer: those weights, in row-major order
    biases: list[torch.Tensor]  # per layer: the biases of units[l + 1]
    collapsed: bool  # no path of kept weights from the input to the output

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(u.numel()) for u in self.units)

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(int(v.numel()) for v in self.values)

    def with_values(self, values: list[torch.Tensor], biases: list[torch.Tensor]) -> CompactMember:
        return CompactMember(self.units, self.rows, self.cols, values, biases, self.collapsed)


def live_units(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Live indices per boundary for per-layer ``[out, in]`` bool masks (outputs are always live)."""
    live = torch.ones(masks[-1].shape[0], dtype=torch.bool, device=masks[-1].device)
    out = [live]
    for m in reversed(masks):
        live = (m & live[:, None]).any(0)
        out.append(live)
    return [torch.nonzero(b).squeeze(1) for b in reversed(out)]


def has_path(masks: Sequence[torch.Tensor]) -> bool:
    """True when some chain of kept weights links an input to an output."""
    reach = torch.ones(masks[0].shape[1], dtype=torch.bool, device=masks[0].device)
    for m in masks:
        reach = (m & reach[None, :]).any(1)
    return bool(reach.any())


def compact(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> CompactMember:
    """The compact form of one member: ``weights``/``masks`` are per-layer ``[out, in]``, ``biases`` ``[out]``."""
    units = live_units(masks)
    rows, cols, values, live_biases = [], [], [], []
    for layer, (w, b, m) in enumerate(zip(weights, biases, masks, strict=True)):
        out_u, in_u = units[layer + 1], units[layer]
        r, c = torch.nonzero(m[out_u][:, in_u], as_tuple=True)  # row-major
        rows.append(r)
        cols.append(c)
        values.append(w[out_u[r], in_u[c]].clone())
        live_biases.append(b[out_u].clone())
    return CompactMember(tuple(units), tuple(rows), tuple(cols), values, live_biases, not has_path(masks))


def expand(
    member: CompactMember, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Full-size weights and biases: copies of the starting ones with the compact values written back."""
    full_w = [w.clone() for w in weights]
    full_b = [b.clone() for b in biases]
    for layer in range(len(full_w)):
        out_u, in_u = member.units[layer + 1], member.units[layer]
        w, b = full_w[layer], full_b[layer]
        w[out_u[member.rows[layer]], in_u[member.cols[layer]]] = member.values[layer].to(w.device, w.dtype)
        b[out_u] = member.biases[layer].to(b.device, b.dtype)
    return full_w, full_b
