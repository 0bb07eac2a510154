"""The pruning context: what every method and seed of one pruning run shares.

``prune``, ``evaluate`` and the harvest's target each build one ``PruneContext`` at their boundary and pass
it down (``pruning.apply``), instead of the network spec, the splits, the schedule settings, the training
config, the pruning batch's size and the device travelling as loose arguments through every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metaprune.config import PER_CLASS, ScheduleConfig, TrainConfig
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
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
    """

    network: str  # a network spec (``networks.validate_network``)
    splits: DataSplits
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    per_class: int = PER_CLASS
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        check_per_class(self.per_class)

    @property
    def n_train(self) -> int:
        """Examples in the training split (the unit of the cost in dense epochs)."""
        return int(self.splits.train_x.shape[0])

    def prune_data(self, seed: int) -> PruneData | None:
        """The pruning batch of ``seed`` (its ``prune_batch`` stream); None without one (``per_class=0``)."""
        if self.per_class == 0:
            return None
        return pruning_batch(self.splits.train_x, self.splits.train_y, self.splits.num_classes, seed, self.per_class)
