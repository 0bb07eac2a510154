"""The one train/eval loop: a *population* of K networks of one architecture trained at once.

Parameters of the K members are stacked on a leading axis (``torch.func.stack_module_state``). MLPs run
through a hand-written batched-matmul step (``metaprune.mlp_step``: one GEMM for the shared first layer,
``baddbmm`` after, plain SGD fused into the gradient GEMMs); every other network runs through
``vmap(functional_call)`` and autograd. One element-wise optimiser (SGD or Adam) updates the stacked
tensors, which is the same as K separate optimisers because neither mixes entries.

Masked MLPs under plain SGD train compacted unless ``TrainConfig.dense_training``: each member reduced to
its live subnetwork (``compaction``), the population split into groups whose layers run dense or CSR
kernels (``sparse_plan``, ``sparse_step``, ``compact_group``), the rest on the dense path above; on a
CPU, a population of small compacted groups trains on one thread (``sparse_plan.single_thread``). The loop
below sees groups only: each steps on the same batch, evaluates its members and hands out checkpoints,
expanded to full size at the end.

Members share the data order (a paired design): every epoch is a permutation drawn from the
``data_order`` stream of ``data_seed``. Pruned weights are exactly zero and never influence training:
``mask_mode="grad"`` zeroes them once and masks their gradients (cheapest; under plain SGD the MLP step
re-zeroes them after each fused update instead, which is the same step); ``mask_mode="forward"``
multiplies the mask in the forward pass. Both give identical trajectories for element-wise optimisers
whose update is zero when parameter and gradient are zero (SGD with or without momentum/weight decay,
Adam) — a test pins this.

Early stopping is per member: after every epoch the validation loss is measured; a member's checkpoint
is the state with the lowest validation loss so far, and a member stops after ``patience`` epochs
without improvement. Stopped members leave the population (it is compacted), so they cost nothing.
The test accuracy reported for a member is the one at its checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from metaprune import sparse_plan
from metaprune.compact_group import CompactGroup, compact_population
from metaprune.compaction import has_path
from metaprune.config import OPTIMIZERS, TRAIN_PRESETS, TrainConfig, train_preset  # noqa: F401 (their home)
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError, MetapruneWarning
from metaprune.mlp_step import MLPStep
from metaprune.networks import MLP, prunable_layout
from metaprune.rigl import RigL, rigl_update
from metaprune.seeds import generator
from metaprune.threads import limited_threads

# A member within this much test accuracy of the most-frequent-class answer is "at chance": a point is 10
# images of mnist5k's test split and 3.6 of digits', the noise of a near-constant answer, not learning.
AT_CHANCE_MARGIN = 0.01
AT_CHANCE_MEANING = f"test accuracy within {100 * AT_CHANCE_MARGIN:g} point of always answering the most frequent class"
AT_CHANCE_NOTE = (
    f"at chance ({AT_CHANCE_MEANING}): the training diverged or stalled, or the mask leaves no working path; "
    "the numbers stay in, and a smaller --lr may train it"
)


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``auto``: CUDA when available, else CPU. Unknown or unavailable names are an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MetapruneError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise MetapruneError(f"unsupported device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MetapruneError(f"device {name!r} requested but CUDA is not available; accepted here: cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MetapruneError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPUs")
    return device


@dataclass(frozen=True)
class MemberResult:
    """One member's outcome at its checkpoint (best validation loss, or the end without early stopping)."""

    test_acc: float
    test_loss: float
    val_acc: float
    val_loss: float
    best_iteration: int
    best_epoch: int
    epochs_trained: int
    collapsed: bool = False  # an MLP mask with no path of kept weights from input to output
    # its test accuracy is within AT_CHANCE_MARGIN of always answering the most frequent class: it learned
    # nothing (training diverged or stalled, or the mask leaves no working path); its numbers still count
    at_chance: bool = False


@dataclass
class PopulationResult:
    members: list[MemberResult]
    states: list[dict[str, torch.Tensor]] | None = None  # checkpoint weights (CPU), when asked for
    iterations: int = 0  # optimiser steps taken by the population as a whole
    samples: int = 0  # network-samples processed in training steps
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    # the mask at each member's checkpoint where training changed it (``dynamic`` members); None elsewhere
    masks: list[torch.Tensor | None] | None = None


class DenseTrainingFallback(MetapruneWarning):
    """A masked MLP population trains on the dense path because the compacted path cannot reproduce its
    optimiser exactly (momentum, weight decay, Adam)."""


StepHook = Callable[[dict, dict], None]
ProgressFn = Callable[[int, int, int], None]  # (epoch, active members, total members)


class _Stack:
    """Stacked parameters and buffers of the active members and the forward over them."""

    def __init__(self, template: nn.Module, params: dict, buffers: dict, masks: dict, mask_mode: str):
        self.template = template
        self.params = params
        self.buffers = buffers
        self.masks = masks  # name -> bool/float tensor [K, *shape]
        self.mask_mode = mask_mode
        self.mlp_layers = len(template.layers) if isinstance(template, MLP) else 0

    def effective(self) -> dict[str, torch.Tensor]:
        if self.mask_mode != "forward" or not self.masks:
            return self.params
        out = dict(self.params)
        for name, m in self.masks.items():
            out[name] = self.params[name] * m
        return out

    def logits(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        params = self.effective() if params is None else params
        if self.mlp_layers:
            return _mlp_forward(params, self.mlp_layers, x)
        meta = self.template

        def call(p: dict, b: dict, inp: torch.Tensor) -> torch.Tensor:
            return functional_call(meta, (p, b), (inp,))

        return vmap(call, in_dims=(0, 0, None), randomness="different")(params, self.buffers, x)

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.buffers}

    def select(self, keep: torch.Tensor) -> None:
        self.params = {k: v.detach()[keep].clone().requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v[keep].clone() for k, v in self.buffers.items()}
        self.masks = {k: v[keep].clone() for k, v in self.masks.items()}


def _mlp_forward(params: dict[str, torch.Tensor], n_layers: int, x: torch.Tensor) -> torch.Tensor:
    h = x.flatten(1)
    w0 = params["layers.0.weight"]
    k, out0, in0 = w0.shape
    # The first layer sees the same input for every member: one GEMM over all K·out rows.
    h = torch.addmm(params["layers.0.bias"].reshape(-1), h, w0.reshape(k * out0, in0).t())
    h = h.view(h.shape[0], k, out0).transpose(0, 1)
    for i in range(1, n_layers):
        h = torch.relu(h)
        w = params[f"layers.{i}.weight"]
        h = torch.baddbmm(params[f"layers.{i}.bias"].unsqueeze(1), h, w.transpose(1, 2))
    return h


def _make_optimizer(cfg: TrainConfig, tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(tensors, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(tensors, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _compact_optimizer(
    old: torch.optim.Optimizer, cfg: TrainConfig, old_t: list, new_t: list, keep: torch.Tensor, k_old: int
) -> torch.optim.Optimizer:
    new = _make_optimizer(cfg, new_t)
    for p_old, p_new in zip(old_t, new_t, strict=True):
        state = old.state.get(p_old)
        if not state:
            continue
        new.state[p_new] = {
            key: (v[keep].clone() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == k_old else v)
            for key, v in state.items()
        }
    return new


@torch.no_grad()
def _evaluate(
    logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean loss and accuracy on (x, y); ``logits_of(xb)`` is ``[K, B, C]``."""
    loss_sum = None
    correct = None
    for start in range(0, x.shape[0], batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        logits = logits_of(xb)
        k = logits.shape[0]
        losses = (
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(k), reduction="none").view(k, -1).sum(1)
        )
        hits = (logits.argmax(-1) == yb).sum(1)
        loss_sum = losses if loss_sum is None else loss_sum + losses
        correct = hits if correct is None else correct + hits
    return loss_sum.double() / x.shape[0], correct.double() / x.shape[0]


def stack_members(nets: Sequence[nn.Module], device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, dict, dict]:
    members = [copy.deepcopy(n).to(device=device, dtype=dtype) for n in nets]
    params, buffers = stack_module_state(members)
    template = copy.deepcopy(members[0]).to("meta")
    return template, params, buffers


def _stack_masks(
    masks: torch.Tensor | Sequence[torch.Tensor | None] | None,
    k_total: int,
    layout,
    params: dict,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Per-layer ``[K, ...]`` masks, with the pruned weights of ``params`` zeroed from the start."""
    if masks is None:
        return {}
    rows = []
    for i in range(k_total):
        m = masks[i]
        rows.append(torch.ones(layout.total, dtype=torch.bool) if m is None else m.to("cpu", torch.bool))
    flat = torch.stack(rows).to(device)
    if flat.shape[1] != layout.total:
        raise MetapruneError(f"mask has {flat.shape[1]} entries but the network has {layout.total} prunable weights")
    mask_dict = {layer.name: m.to(dtype) for layer, m in zip(layout.layers, layout.split(flat), strict=True)}
    with torch.no_grad():
        for name, m in mask_dict.items():
            params[name].mul_(m)
    return mask_dict


class _Checkpoints:
    """Per-member early-stopping state: the best validation loss so far and what was measured there.

    With ``keep_states`` each member's checkpoint is its group's snapshot, expanded to a full-size state
    dict only at the end (``states``).
    """

    def __init__(self, k: int, device: torch.device, keep_states: bool) -> None:
        def zeros(dtype):
            return torch.zeros(k, dtype=dtype, device=device)

        self.best_loss = torch.full((k,), float("inf"), dtype=torch.float64, device=device)
        self.best_acc, self.test_loss, self.test_acc = zeros(torch.float64), zeros(torch.float64), zeros(torch.float64)
        self.best_iter, self.best_epoch = zeros(torch.long), zeros(torch.long)
        self.epochs_trained, self.since_best = zeros(torch.long), zeros(torch.long)
        self.saved: list | None = [None] * k if keep_states else None
        self.masks: list[torch.Tensor | None] = [None] * k  # a dynamic member's mask at its checkpoint

    def start(self, group) -> None:
        """The starting state is every member's checkpoint until one improves on it."""
        for row, member in enumerate(group.members.tolist()):
            if self.saved is not None:
                self.saved[member] = (group, group.snapshot(row))
            if isinstance(group, _DynamicGroup):
                self.masks[member] = group.flat_mask(row)

    def update(self, group, labels: tuple, config: TrainConfig, it: int, epoch: int) -> None:
        """Evaluate on validation; members that improved take a checkpoint (test metrics, weights)."""
        y_val, y_test = labels
        members = group.members
        v_loss, v_acc = _evaluate(group.logits, group.x_val, y_val, config.eval_batch_size)
        improved = (
            v_loss < self.best_loss[members] if config.early_stopping else torch.ones_like(v_loss, dtype=torch.bool)
        )
        if bool(improved.any()):
            t_loss, t_acc = _evaluate(group.logits, group.x_test, y_test, config.eval_batch_size)
            rows = members[improved]
            self.best_loss[rows], self.best_acc[rows] = v_loss[improved], v_acc[improved]
            self.test_loss[rows], self.test_acc[rows] = t_loss[improved], t_acc[improved]
            self.best_iter[rows], self.best_epoch[rows] = it, epoch
            for row in torch.nonzero(improved).squeeze(1).tolist():
                if self.saved is not None:
                    self.saved[int(members[row])] = (group, group.snapshot(row))
                if isinstance(group, _DynamicGroup):
                    self.masks[int(members[row])] = group.flat_mask(row)
        self.since_best[members] = torch.where(improved, 0, self.since_best[members] + 1)

    def results(self, collapsed: Sequence[bool], majority_share: float) -> list[MemberResult]:
        return [
            MemberResult(
                test_acc=float(self.test_acc[i]),
                test_loss=float(self.test_loss[i]),
                val_acc=float(self.best_acc[i]),
                val_loss=float(self.best_loss[i]),
                best_iteration=int(self.best_iter[i]),
                best_epoch=int(self.best_epoch[i]),
                epochs_trained=int(self.epochs_trained[i]),
                collapsed=bool(collapsed[i]),
                at_chance=float(self.test_acc[i]) <= majority_share + AT_CHANCE_MARGIN,
            )
            for i in range(self.best_loss.shape[0])
        ]

    def states(self) -> list[dict[str, torch.Tensor]] | None:
        if self.saved is None:
            return None
        return [group.expand(snapshot) for group, snapshot in self.saved]


class _Stepper:
    """One SGD step of the whole population: the hand-written MLP step or autograd + torch.optim."""

    def __init__(self, stack: _Stack, config: TrainConfig, masks: dict[str, torch.Tensor]) -> None:
        self.stack, self.config = stack, config
        self.opt = _make_optimizer(config, list(stack.params.values()))
        self.mlp_step = None
        if stack.mlp_layers and not config.autograd:
            plain_sgd = config.optimizer == "sgd" and config.momentum == 0 and config.weight_decay == 0
            self.mlp_step = MLPStep(
                stack.mlp_layers, masks, config.mask_mode == "forward", config.lr if plain_sgd else None
            )

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, k_active: int) -> None:
        stack = self.stack
        if self.mlp_step is not None:
            self.mlp_step(stack.params, x, y, idx)
            if not self.mlp_step.applies_update:
                self.opt.step()
            return
        xb, yb = x[idx], y[idx]
        logits = stack.logits(xb)
        # Summed over members, each member's gradient is that of its own mean loss.
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(k_active), reduction="sum")
        loss = loss / yb.shape[0]
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if self.config.mask_mode == "grad":
            for name, m in stack.masks.items():
                stack.params[name].grad.mul_(m)
        self.opt.step()

    def select(self, keep: torch.Tensor, k_active: int) -> None:
        """Drop stopped members (``keep`` False) from the stack, the optimiser state and the MLP step."""
        old_t = list(self.stack.params.values())
        self.stack.select(keep)
        self.opt = _compact_optimizer(self.opt, self.config, old_t, list(self.stack.params.values()), keep, k_active)
        if self.mlp_step is not None:
            self.mlp_step.select(keep)

    def masks_changed(self, changed: dict[str, torch.Tensor]) -> None:
        """The stack's masks were rewritten in place (RigL): the MLP step reads them again, and the optimiser
        state of every weight whose mask changed (``changed[name]``, bool ``[K, …]``) restarts at 0."""
        if self.mlp_step is not None:
            self.mlp_step.masks = {name: self.stack.masks[name] for name in self.mlp_step.masks}
        for name, where in changed.items():
            for value in self.opt.state.get(self.stack.params[name], {}).values():
                if torch.is_tensor(value) and value.shape == where.shape:
                    value.masked_fill_(where, 0)


class _DenseGroup:
    """Members on the dense path: full-size stacked parameters through ``mlp_step`` or vmap + autograd."""

    def __init__(self, rows: torch.Tensor, stack: _Stack, config: TrainConfig, data: tuple) -> None:
        self.members = rows
        self.stack = stack
        self.stepper = _Stepper(stack, config, stack.masks)
        self.x, self.y, self.x_val, self.x_test = data

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def step(self, idx: torch.Tensor) -> None:
        self.stepper(self.x, self.y, idx, len(self))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.logits(x)

    def snapshot(self, row: int) -> dict[str, torch.Tensor]:
        return {name: value.detach()[row].clone() for name, value in self.stack.state().items()}

    def expand(self, snapshot: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: value.to("cpu") for name, value in snapshot.items()}

    def select(self, keep: torch.Tensor) -> None:
        self.stepper.select(keep, len(self))
        self.members = self.members[keep]


class _DynamicGroup(_DenseGroup):
    """Members whose masks change while they train (RigL, ``metaprune.rigl``), on the dense path, where their
    full-size weights, masks and optimiser state live. Before weight step t, when a mask update is due, the
    batch goes to the update instead of a weight step (RigL's algorithm 1): the dense gradient of each member's
    loss w.r.t. its masked weights, then ``rigl_update`` per layer and member."""

    def __init__(self, rows: torch.Tensor, stack: _Stack, config: TrainConfig, data: tuple, rigl: list, total: int):
        super().__init__(rows, stack, config, data)
        self.rigl = list(rigl)  # per member: its RigL settings and noise seed
        self.end = rigl[0].end_step(total)
        self.t = 0  # weight steps taken (the reference's global step)
        self.updated_at = -1

    def step(self, idx: torch.Tensor) -> None:
        if self.t != self.updated_at and self.rigl[0].due(self.t, self.end):
            self._update_masks(idx)
            self.updated_at = self.t
            return
        super().step(idx)
        self.t += 1

    def _update_masks(self, idx: torch.Tensor) -> None:
        stack = self.stack
        grads = _masked_weight_grads(stack, self.x[idx], self.y[idx])
        fraction = self.rigl[0].fraction(self.t, self.end)
        changed = {}
        with torch.no_grad():
            for layer, (name, grad) in enumerate(grads.items()):
                mask, weight = stack.masks[name], stack.params[name]
                new = torch.stack([
                    rigl_update(mask[row], weight[row], grad[row], fraction,
                                r.noise(self.t, layer, mask[row].shape, mask.device))
                    for row, r in enumerate(self.rigl)
                ])  # fmt: skip
                changed[name] = new != mask.bool()
                mask.copy_(new)
                weight.mul_(mask)  # dropped weights are 0 like every pruned one; grown ones start at 0
        self.stepper.masks_changed(changed)

    def flat_mask(self, row: int) -> torch.Tensor:
        """Member ``row``'s current mask on the flat prunable-weight axis (CPU)."""
        return torch.cat([m[row].reshape(-1) for m in self.stack.masks.values()]).bool().cpu()

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        self.rigl = [r for r, k in zip(self.rigl, keep.tolist(), strict=True) if k]


def _masked_weight_grads(stack: _Stack, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per member, the gradient of its mean loss on (x, y) w.r.t. its masked weights m ⊙ w, at every position."""
    params = {name: value.detach().requires_grad_(name in stack.masks) for name, value in stack.effective().items()}
    with torch.enable_grad():
        logits = stack.logits(x, params)
        k = logits.shape[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k), reduction="sum") / y.shape[0]
        grads = torch.autograd.grad(loss, [params[name] for name in stack.masks])
    return dict(zip(stack.masks, grads, strict=True))


def _collapsed(template: nn.Module, masks: dict[str, torch.Tensor], k: int) -> list[bool]:
    """Per member: its MLP mask leaves no path from input to output (False for other networks)."""
    if not isinstance(template, MLP) or not masks:
        return [False] * k
    names = [f"layers.{i}.weight" for i in range(len(template.layers))]
    return [not has_path([masks[n][i].bool() for n in names]) for i in range(k)]


def _dense_reason(template: nn.Module, masks: dict, config: TrainConfig, hooked: bool) -> str | None:
    """Why the whole population trains on the dense path (None: compaction is planned per member)."""
    if not isinstance(template, MLP):
        return "not an MLP"
    if not masks:
        return "no masks"
    if config.dense_training:
        return "dense training asked for"
    if config.autograd:
        return "autograd asked for"
    if hooked:
        return "a step hook reads the full-size parameters"
    reason = sparse_plan.unsupported(config)
    if reason is not None:
        warnings.warn(
            f"compacted/sparse MLP training runs plain SGD only; with {reason} masked MLPs train on the dense "
            "path (same numbers, dense cost)",
            DenseTrainingFallback,
            stacklevel=4,
        )
        return f"{reason}: the compacted path runs plain SGD only"
    return None


def _build_groups(
    template: nn.Module,
    params: dict,
    buffers: dict,
    masks: dict,
    config: TrainConfig,
    data: tuple,
    hooked: bool,
    dynamic: Sequence[RigL | None] | None = None,
) -> tuple[list, dict]:
    """The population's groups (dense path, compacted groups, dynamic groups) and a record of the paths."""
    k = next(iter(params.values())).shape[0]
    if dynamic is None or all(d is None for d in dynamic):
        return _static_groups(template, params, buffers, masks, config, data, hooked, list(range(k)))
    if hooked or not masks or len(dynamic) != k:
        raise MetapruneError(
            "dynamic sparse training needs one mask and one entry of `dynamic` (RigL or None) per member, "
            "and no step hook"
        )
    static = [i for i, d in enumerate(dynamic) if d is None]
    groups, paths = (
        _static_groups(template, params, buffers, masks, config, data, hooked, static) if static else ([], {})
    )
    n_batches = -(-int(data[1].shape[0]) // config.batch_size)
    by_settings: dict[tuple, list[int]] = {}
    for i, d in enumerate(dynamic):
        if d is not None:
            by_settings.setdefault(d.settings(), []).append(i)
    for rows in by_settings.values():
        stack = _Stack(template, *_rows_of(params, buffers, masks, rows), config.mask_mode)
        index = torch.tensor(rows, dtype=torch.long, device=next(iter(params.values())).device)
        rigl = [dynamic[i] for i in rows]
        groups.append(_DynamicGroup(index, stack, config, data, rigl, config.epochs * n_batches))  # type: ignore[arg-type]
    paths.pop("threads", None)  # RigL groups train dense: they keep the caller's threads
    paths["dynamic"] = {"members": [i for rows in by_settings.values() for i in rows], "path": "dense (RigL)"}
    return groups, paths


def _rows_of(params: dict, buffers: dict, masks: dict, rows: list[int]) -> tuple[dict, dict, dict]:
    """The stacked parameters, buffers and masks of members ``rows`` (copies; parameters require grad)."""
    index = torch.tensor(rows, dtype=torch.long, device=next(iter(params.values())).device)
    sub = {name: value.detach()[index].clone().requires_grad_(True) for name, value in params.items()}
    return sub, {n: b[index].clone() for n, b in buffers.items()}, {n: m[index].clone() for n, m in masks.items()}


def _static_groups(
    template: nn.Module, params: dict, buffers: dict, masks: dict, config: TrainConfig, data: tuple, hooked: bool,
    rows: list[int],
) -> tuple[list, dict]:  # fmt: skip
    """The groups of members ``rows``, whose masks stay fixed: the dense path, or compacted groups."""
    k = next(iter(params.values())).shape[0]
    device = next(iter(params.values())).device
    reason = _dense_reason(template, masks, config, hooked)
    if reason is not None:
        if len(rows) == k:
            stack = _Stack(template, params, buffers, masks, config.mask_mode)
        else:
            stack = _Stack(template, *_rows_of(params, buffers, masks, rows), config.mask_mode)
        return [_DenseGroup(torch.tensor(rows, device=device), stack, config, data)], {"dense_path": reason}
    n_layers = len(template.layers)
    compact = compact_population(params, masks, n_layers)
    full = [template.layers[0].in_features] + [layer.out_features for layer in template.layers]
    plan = sparse_plan.plan([compact[i] for i in rows], full, sparse_kernels=device.type == "cpu")
    groups: list = []
    for g in plan:
        members = [rows[i] for i in g.members]
        if g.kinds is None:
            stack = _Stack(template, *_rows_of(params, buffers, masks, members), config.mask_mode)
            groups.append(_DenseGroup(torch.tensor(members, dtype=torch.long, device=device), stack, config, data))
        else:
            groups.append(CompactGroup(members, compact, g.kinds, config.lr, params, data))
    paths: dict = {"groups": [g.describe([compact[i] for i in rows]) for g in plan]}
    if device.type == "cpu" and sparse_plan.single_thread(plan, [compact[i] for i in rows]):
        paths["threads"] = 1
    return groups, paths


def _stop_members(groups: list, checkpoints: _Checkpoints, patience: int) -> list:
    """Early stopping: members out of patience leave their group; empty groups leave the population."""
    remaining = []
    for group in groups:
        stop = checkpoints.since_best[group.members] >= patience
        if bool(stop.all()):
            continue
        if bool(stop.any()):
            group.select(~stop)
        remaining.append(group)
    return remaining


def train_population(
    nets: Sequence[nn.Module],
    data: DataSplits,
    config: TrainConfig,
    data_seed: int,
    masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    keep_states: bool = False,
    progress: ProgressFn | None = None,
    max_steps: int | None = None,
    step_hook: StepHook | None = None,
    order_stream: str = "data_order",
    dynamic: Sequence[RigL | None] | None = None,
) -> PopulationResult:
    """Train K networks of one architecture together; the given networks are not modified.

    ``masks``: None (dense), a bool tensor ``[K, n]`` on the flat prunable-weight axis, or a list with
    one flat mask (or None) per member. Returns one ``MemberResult`` per member in input order and,
    with ``keep_states``, each member's checkpoint weights as a state dict on the CPU. Masked MLPs train
    compacted (``sparse_plan``) unless ``config.dense_training``; ``extra["training_paths"]`` says how.

    A warm-up uses three more knobs: ``max_steps`` stops after that many SGD steps (without early stopping
    the state there is evaluated and is the checkpoint; with it, no evaluation after a partial epoch),
    ``step_hook(params, buffers)`` sees the stacked state before the first step and after every step, and
    ``order_stream`` names the seed stream of the data order (a warm-up draws its own, so the ticket's later
    training order is independent of it).

    ``dynamic`` (one entry per member) makes the members with a ``rigl.RigL`` entry train under RigL: their
    masks change during training (on the dense path, in groups of their own; the others train as they would
    without them), and ``PopulationResult.masks`` holds each one's mask at its checkpoint.
    """
    config = config.validate()
    if not nets:
        raise MetapruneError("a population needs at least one network")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    t_start = time.perf_counter()
    k_total = len(nets)
    template, params, buffers = stack_members(nets, device, dtype)
    mask_dict = _stack_masks(masks, k_total, prunable_layout(nets[0]), params, device, dtype)
    data = data.to(device)
    tensors = (data.train_x.to(dtype), data.train_y, data.val_x.to(dtype), data.test_x.to(dtype))
    groups, paths = _build_groups(template, params, buffers, mask_dict, config, tensors, step_hook is not None, dynamic)
    checkpoints = _Checkpoints(k_total, device, keep_states)
    for group in groups:
        checkpoints.start(group)
    loop = _Loop(config, data_seed, order_stream, max_steps, step_hook, progress)
    with limited_threads(1) if paths.get("threads") == 1 else contextlib.nullcontext():
        iterations, samples = loop.run(template, groups, checkpoints, (data.val_y, data.test_y), k_total)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return PopulationResult(
        members=checkpoints.results(_collapsed(template, mask_dict, k_total), data.majority_share()),
        states=checkpoints.states(),
        iterations=iterations,
        samples=samples,
        seconds=time.perf_counter() - t_start,
        extra={"training_paths": paths},
        masks=checkpoints.masks if dynamic is not None and any(d is not None for d in dynamic) else None,
    )


@dataclass
class _Loop:
    """The epochs of a population: shared data order, steps of every group, evaluation, early stopping."""

    config: TrainConfig
    data_seed: int
    order_stream: str
    max_steps: int | None
    step_hook: StepHook | None
    progress: ProgressFn | None

    def run(self, template: nn.Module, groups: list, checkpoints: _Checkpoints, labels: tuple, k_total: int):
        config, max_steps = self.config, self.max_steps
        n_train, bs = int(groups[0].y.shape[0]), config.batch_size
        iteration = samples = 0
        gen = generator(self.data_seed, self.order_stream)
        self._hook(groups)
        for epoch in range(1, config.epochs + 1):
            template.train()
            perm = torch.randperm(n_train, generator=gen).to(groups[0].members.device)
            k_active = sum(len(g) for g in groups)
            for start in range(0, n_train, bs):
                idx = perm[start : start + bs]
                for group in groups:
                    group.step(idx)
                iteration += 1
                samples += idx.shape[0] * k_active
                self._hook(groups)
                if max_steps is not None and iteration >= max_steps:
                    break
            for group in groups:
                checkpoints.epochs_trained[group.members] = epoch
            if max_steps is not None and iteration >= max_steps:
                if not config.early_stopping:  # the final state is the checkpoint (an IMP level of a budget)
                    template.eval()
                    for group in groups:
                        checkpoints.update(group, labels, config, iteration, epoch)
                break
            template.eval()
            if not config.early_stopping and epoch < config.epochs:
                if self.progress is not None:
                    self.progress(epoch, k_active, k_total)
                continue  # without early stopping only the final state counts
            for group in groups:
                checkpoints.update(group, labels, config, iteration, epoch)
            if self.progress is not None:
                self.progress(epoch, k_active, k_total)
            if config.early_stopping:
                groups = _stop_members(groups, checkpoints, config.patience)
                if not groups:
                    break
        return iteration, samples

    def _hook(self, groups: list) -> None:
        if self.step_hook is not None:
            self.step_hook(groups[0].stack.params, groups[0].stack.buffers)


def load_member_state(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``net`` carrying a checkpoint returned by ``train_population``."""
    out = copy.deepcopy(net)
    out.load_state_dict(
        {k: v.to(next(out.parameters()).dtype) if v.is_floating_point() else v for k, v in state.items()}
    )
    return out
