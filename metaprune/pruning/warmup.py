"""A short dense warm-up from θ0 whose trajectory informs which weights to keep (``+wE`` in a method).

The warm-up trains a copy of θ0 for E epochs (fractions are whole SGD steps: ``round(E * batches per
epoch)``; ``+wNs`` spells N steps directly) with the evaluation's training config, through the one train
loop, on a data order drawn from the ``warmup_order`` stream of the seed: independent of the
``data_order`` stream the ticket later trains on. The ticket itself always trains from θ0; the warm-up
only decides the mask.

Along the way it records, per prunable weight (flat weight axis, float64, CPU):

- ``delta``      |θ_E − θ0|
- ``movement``   −Σ_t g_t ⊙ θ_t (movement pruning, Sanh et al. 2020: weights moving away from zero score high)
- ``abs_grad``   Σ_t |g_t|
- ``sign_flips`` how many steps changed the weight's sign

with g_t recovered from the update as (θ_t − θ_{t+1}) / lr: exactly the gradient under plain SGD (the
thesis optimiser, and the default); under momentum or Adam it is the update direction scaled by 1/lr.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
from metaprune.networks import flat_weights, prunable_layout
from metaprune.training import TrainConfig, train_population

ORDER_STREAM = "warmup_order"
SETUP = ("epochs", "lr", "batch_size", "optimizer")  # WarmupRecord.setup(): what decides the trajectory
DYNAMICS = ("delta", "movement", "abs_grad", "sign_flips")


@dataclass(frozen=True)
class WarmupRecord:
    epochs: float
    steps: int
    lr: float
    batch_size: int
    optimizer: str
    cost_epochs: float  # steps / steps per epoch: the epochs actually trained
    network: nn.Module  # θ_E: the warmed-up copy
    initial: nn.Module  # θ0 itself (not a copy; never written)
    theta0: torch.Tensor  # flat prunable weights of θ0
    delta: torch.Tensor
    movement: torch.Tensor
    abs_grad: torch.Tensor
    sign_flips: torch.Tensor
    seconds: float

    def dynamics(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    def setup(self) -> dict:
        """What decides the trajectory besides θ0 and the data (compared with a learned model's record)."""
        return {key: getattr(self, key) for key in SETUP}

    @staticmethod
    def setup_of(epochs: float, train: TrainConfig) -> dict:
        """``setup()`` of a warm-up of ``epochs`` under ``train``, without running it (what a harvest's
        dynamics features were computed with, from its config)."""
        return {
            "epochs": float(epochs),
            "lr": float(train.lr),
            "batch_size": int(train.batch_size),
            "optimizer": str(train.optimizer),
        }


def steps_per_epoch(splits: DataSplits, train: TrainConfig) -> int:
    return math.ceil(int(splits.train_x.shape[0]) / train.batch_size)


def warmup_steps(epochs: float, splits: DataSplits, train: TrainConfig, *, in_steps: bool = False) -> int:
    """SGD steps of an ``epochs`` warm-up (``in_steps``: ``epochs`` counts steps already); one-line errors
    for a warm-up the training config cannot hold."""
    e = float(epochs)
    per_epoch = steps_per_epoch(splits, train)
    if in_steps:
        if not (e >= 1 and e.is_integer()):
            raise MetapruneError(f"bad warm-up of {epochs!r} steps; accepted: a whole number of SGD steps")
        if e > train.epochs * per_epoch:
            raise MetapruneError(
                f"warm-up of {e:g} steps is longer than the training config's {train.epochs} epochs "
                f"({per_epoch} steps each); accepted: at most {train.epochs * per_epoch} steps"
            )
        return int(e)
    if not (e > 0 and math.isfinite(e)):
        raise MetapruneError(f"bad warm-up of {epochs!r} epochs; accepted: a positive number of epochs")
    if e > train.epochs:
        raise MetapruneError(
            f"warm-up of {e:g} epochs is longer than the training config's {train.epochs} epochs; "
            f"accepted: at most {train.epochs}"
        )
    steps = int(round(e * per_epoch))
    if steps < 1:
        raise MetapruneError(
            f"warm-up of {e:g} epochs is less than one SGD step ({per_epoch} steps per epoch); "
            f"accepted: at least {1 / per_epoch:.3g} epochs"
        )
    return steps


class Trajectory:
    """Accumulates the dynamics from consecutive stacked states (member 0 of a one-member population).

    Works in the training dtype on the training device, in place: the hook runs after every step. Across
    several trainings (the levels of a gradual schedule, ``movement@gss+w3``) it keeps accumulating;
    ``restart()`` between them makes the next training's first state the new starting point (the level's
    mask has just zeroed the weights it pruned: that is no SGD step).
    """

    def __init__(self, names: list[str], lr: float) -> None:
        self.names = names
        self.lr = lr
        self.prev: list[torch.Tensor] = []
        self.state: dict[str, torch.Tensor] = {}
        self.movement: list[torch.Tensor] = []
        self.abs_grad: list[torch.Tensor] = []
        self.flips: list[torch.Tensor] = []
        self.steps = 0  # SGD steps seen

    @torch.no_grad()
    def __call__(self, params: dict, buffers: dict) -> None:
        now = [params[n][0] for n in self.names]
        if not self.movement:
            self.movement = [torch.zeros_like(w) for w in now]
            self.abs_grad = [torch.zeros_like(w) for w in now]
            self.flips = [torch.zeros_like(w) for w in now]
        if not self.prev:
            self.prev = [w.detach().clone() for w in now]
        else:
            self.steps += 1
            for before, after, mov, grad_sum, flips in zip(
                self.prev, now, self.movement, self.abs_grad, self.flips, strict=True
            ):
                step = before - after  # = lr * g_t
                mov.addcmul_(step, before, value=-1.0 / self.lr)
                grad_sum.add_(step.abs_(), alpha=1.0 / self.lr)
                flips.add_(torch.signbit(before) != torch.signbit(after))
                before.copy_(after)
        self.state = {**params, **buffers}

    def restart(self) -> None:
        """The next call starts a new training: its state is a starting point, not a step."""
        self.prev = []

    def flat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([p.reshape(-1) for p in parts]).to("cpu", torch.float64)

    def record(
        self, initial: nn.Module, network: nn.Module, train: TrainConfig, steps: int, per_epoch: int, **more
    ) -> WarmupRecord:
        """The ``WarmupRecord`` of the trajectory so far: from θ0 ``initial`` to ``network`` (θ_E) after
        ``steps`` SGD steps of ``per_epoch`` per epoch (``more``: e.g. ``epochs`` as spelled, ``seconds``)."""
        theta0, theta_e = (flat_weights(net).to("cpu", torch.float64) for net in (initial, network))
        fields = {**WarmupRecord.setup_of(steps / per_epoch, train), "seconds": 0.0, **more}
        return WarmupRecord(
            **fields,
            steps=steps,
            cost_epochs=steps / per_epoch,
            network=network,
            initial=initial,
            theta0=theta0,
            delta=(theta_e - theta0).abs(),
            movement=self.flat(self.movement),
            abs_grad=self.flat(self.abs_grad),
            sign_flips=self.flat(self.flips),
        )


def warm_up(
    net: nn.Module,
    splits: DataSplits,
    train: TrainConfig,
    epochs: float,
    seed: int,
    *,
    device: torch.device | str | None = None,
    in_steps: bool = False,
) -> WarmupRecord:
    """Train a copy of ``net`` (θ0) densely for ``epochs`` (``in_steps``: that many SGD steps) and record
    its trajectory; ``net`` is untouched. A warm-up in steps records its length in epochs as
    steps / steps per epoch (a model fitted on ``+w3`` accepts ``+w{3 * steps per epoch}s``)."""
    t0 = time.perf_counter()
    steps = warmup_steps(epochs, splits, train, in_steps=in_steps)
    layout = prunable_layout(net)
    trajectory = Trajectory([layer.name for layer in layout.layers], train.lr)
    per_epoch = steps_per_epoch(splits, train)
    config = replace(train, early_stopping=False, epochs=math.ceil(steps / per_epoch))
    train_population(
        [net],
        splits,
        config,
        seed,
        device=device,
        max_steps=steps,
        step_hook=trajectory,
        order_stream=ORDER_STREAM,
    )
    warmed = copy.deepcopy(net)
    with torch.no_grad():
        current = dict(warmed.named_parameters())
        current.update(dict(warmed.named_buffers()))
        for key, value in trajectory.state.items():
            current[key].copy_(value[0].to(device=current[key].device, dtype=current[key].dtype))
    spelled = {} if in_steps else {"epochs": float(epochs)}
    return trajectory.record(net, warmed, train, steps, per_epoch, seconds=time.perf_counter() - t0, **spelled)
