"""Members of a masked MLP population trained on the compacted path: the train loop's view of them.

A group owns a ``CompactStep`` (its members' live subnetworks and kernels), the columns of the data its
members read (the union of their live pixels, gathered once), and the population's starting stacked
parameters, from which a checkpoint is expanded back to full size (``compaction.expand``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metaprune.compaction import CompactMember, compact, expand
from metaprune.sparse_step import CompactStep


def layer_names(n_layers: int) -> tuple[list[str], list[str]]:
    return [f"layers.{i}.weight" for i in range(n_layers)], [f"layers.{i}.bias" for i in range(n_layers)]


def compact_population(
    params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], n_layers: int
) -> list[CompactMember]:
    """Each member's compact form from stacked ``[K, …]`` parameters (pruned weights already zero) and masks."""
    w_names, b_names = layer_names(n_layers)
    k = params[w_names[0]].shape[0]
    ones = {name: torch.ones(params[name].shape[1:], dtype=torch.bool, device=params[name].device) for name in w_names}
    out = []
    with torch.no_grad():
        for i in range(k):
            layer_masks = [masks[n][i].bool() if n in masks else ones[n] for n in w_names]
            out.append(compact([params[n][i] for n in w_names], [params[n][i] for n in b_names], layer_masks))
    return out


def _columns(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    if pixels.numel() == flat.shape[1]:  # every pixel: no gather
        return flat
    return flat.index_select(1, pixels)


class CompactGroup:
    """The train loop's interface to a compacted group: step, logits, checkpoints, early-stopping selection."""

    def __init__(
        self,
        rows: Sequence[int],
        members: Sequence[CompactMember],
        kinds: Sequence[str],
        lr: float,
        start: dict[str, torch.Tensor],
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> None:
        self.stepper = CompactStep([members[i] for i in rows], kinds, lr)
        self.start = start  # the population's starting parameters [K, …]: what compaction leaves alone
        self.n_layers = len(kinds)
        device = self.stepper.pixels.device
        self.members = torch.tensor(list(rows), dtype=torch.long, device=device)
        self.data = data
        self.y = data[1]
        self._gather()

    def _gather(self) -> None:
        """The columns of the data the members read (after a member leaves, perhaps fewer)."""
        x_train, _, x_val, x_test = self.data
        pixels = self.stepper.pixels
        self.x, self.x_val, self.x_test = (_columns(x, pixels) for x in (x_train, x_val, x_test))

    def __len__(self) -> int:
        return len(self.stepper)

    def step(self, idx: torch.Tensor) -> None:
        self.stepper.step(self.x, self.y, idx)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.stepper.logits(x)

    def snapshot(self, row: int) -> tuple[int, CompactMember]:
        return int(self.members[row]), self.stepper.current(row)

    def expand(self, snapshot: tuple[int, CompactMember]) -> dict[str, torch.Tensor]:
        """The full-size state dict (CPU) of a snapshot: live values written into the member's start."""
        member, cm = snapshot
        w_names, b_names = layer_names(self.n_layers)
        with torch.no_grad():
            weights, biases = expand(
                cm, [self.start[n][member] for n in w_names], [self.start[n][member] for n in b_names]
            )
        state = dict(zip(w_names, weights, strict=True)) | dict(zip(b_names, biases, strict=True))
        return {name: state[name].detach().to("cpu") for name in self.start}

    def select(self, keep: torch.Tensor) -> None:
        before = self.stepper.pixels
        self.stepper = self.stepper.select(keep)
        self.members = self.members[keep]
        if not torch.equal(before, self.stepper.pixels):
            self._gather()
