"""The pruning context: what every method and seed of one pruning run shares.

``prune``, ``evaluate`` and the harvest's target each build one ``PruneContext`` at their boundary and pass
it down (``pruning.apply``), instead of the network spec, the splits, the schedule settings, the training
config, the pruning batch's size and the device travelling as loose arguments through every call.
``prune_module`` builds one around a user's module and pruning batch instead of a spec and a dataset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from metaprune.config import PER_CLASS, ScheduleConfig, TrainConfig
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
from metaprune.networks import build_network
from metaprune.pruning.method import Method
from metaprune.pruning.scoring import PruneData, pruning_batch


def check_per_class(per_class: int) -> int:
    """The pruning batch's examples per class: a non-negative integer (0: no pruning batch)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
        raise MetapruneError(f"bad examples per class {per_class!r}; accepted: 0 (no pruning batch) or more")
    return per_class


@dataclass(frozen=True, eq=False)
class PruneContext:
    """The shared settings of a pruning run (validated by whoever builds it; trusted below).

    ``train`` is the training of iterative schedules and of warm-ups; ``per_class`` the examples of every
    class in each seed's pruning batch (0: no pruning batch, so only data-free scorers can run).

    A user's module (``prune_module``) comes as ``network`` itself: its weights are θ0 of every seed, and
    ``batch`` is every seed's pruning batch; ``splits`` may then be None (no training set, so no method
    that trains: ``check_trains``).
    """

    network: str | nn.Module  # a network spec (``networks.validate_network``), or a module: θ0 itself
    splits: DataSplits | None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    per_class: int = PER_CLASS
    device: torch.device | str | None = None
    batch: PruneData | None = None  # the pruning batch of every seed; None: drawn from ``splits`` per seed
    # warm-up records its methods share (``apply.shared_warm_up``): the same θ0, length and seed follow the same
    # trajectory, so methods of one seed (evaluate) warm up once; None: every method warms up itself
    warmups: dict | None = None

    def __post_init__(self) -> None:
        check_per_class(self.per_class)

    @property
    def n_train(self) -> int:
        """Examples in the training split (the unit of the cost in dense epochs; 0 without one)."""
        return 0 if self.splits is None else int(self.splits.train_x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape (without the batch axis)."""
        if self.batch is not None:
            return tuple(self.batch.x.shape[1:])
        return tuple(self.splits.input_shape)  # type: ignore[union-attr]  # one of the two is always given

    def theta0(self, seed: int) -> nn.Module:
        """θ0 of ``seed``: the spec built and initialised from its ``init`` stream, or a copy of the module."""
        if isinstance(self.network, nn.Module):
            return copy.deepcopy(self.network)
        splits = self.splits
        return build_network(self.network, splits.input_shape, splits.num_classes, seed)  # type: ignore[union-attr]

    def prune_data(self, seed: int) -> PruneData | None:
        """The pruning batch of ``seed`` (its ``prune_batch`` stream, or the given ``batch``); None without one
        (``per_class=0``)."""
        if self.batch is not None:
            return self.batch
        if self.per_class == 0:
            return None
        splits = self.splits
        return pruning_batch(splits.train_x, splits.train_y, splits.num_classes, seed, self.per_class)  # type: ignore[union-attr]

    def check_trains(self, method: Method) -> None:
        """Refuse a method that trains (``Method.trains``) when there is no training set, before any work."""
        if self.splits is None and method.trains:
            raise MetapruneError(
                f"method {method} trains (an iterative schedule or a warm-up), which needs a training set, and "
                "none was given; accepted: an upfront method without warm-up (e.g. snip, synflow@ums), or training data"
            )
