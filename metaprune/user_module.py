"""Prune a user's own ``nn.Module`` with any method of the grammar, masks applied by ``torch.nn.utils.prune``.

``prune_module(module, batch, method, density)`` runs the one path from a method to a ticket
(``pruning.apply.prune_in_context``) on a ``PruneContext`` built around the module itself (its weights are
θ0) and the user's pruning batch, instead of a registry network and a dataset. Every schedule, stack,
warm-up, SaW init, ablation and budget (``#layer``, ``#erk``, ``#from:M``, a learned scorer's) is therefore
the same code as for ``metaprune prune``: on a registry network's weights and its pruning batch the mask is
the same. Methods that train (``imp``, ``synflow@ims``, a warm-up ``+wE``) need a training set (``data``).

What it prunes: the ``weight`` of every ``nn.Linear`` and ``nn.Conv2d``, in ``named_modules()`` order (the
order of ``networks.prunable_layout``), which must be the order the forward runs them. Between them it
reads the layers of :data:`DENSE_KINDS` (activations that are the identity on non-negative inputs or close
to it, pooling, BatchNorm, flatten, dropout), which stay dense: the mask report counts input-to-output paths
through them, and SynFlow's path flow assumes them. Any other layer (an ``nn.LSTM``, ``nn.Embedding``,
``nn.LayerNorm``, ``nn.Conv1d``, ``nn.Tanh``, a parameter of the module's own) is refused by name before any
work: its weights would stay dense unnoticed, and the path counts through it would be wrong. Operations
the forward calls as functions (``torch.tanh(x)``) cannot be seen; the report assumes ReLU-like ones.

The result: every pruned layer carries ``weight_orig`` (θ0 as the method left it: SaW, bimodal and
``!reinit`` write it) and the ``weight_mask`` buffer, through ``prune.custom_from_mask``; the effective
weight is their product, so pruned weights stay 0 in the user's own training loop, and ``state_dict()``
saves and loads the masks as PyTorch users expect (``prune.identity`` on the fresh module's layers first).
The module is written only after every check and the whole pruning have succeeded.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from metaprune.config import PER_CLASS, ScheduleConfig, TrainConfig
from metaprune.datasets import DataSplits
from metaprune.errors import MetapruneError
from metaprune.networks import PrunableLayout, prunable_layout
from metaprune.provenance import package_versions, to_jsonable
from metaprune.pruning.apply import Ticket
from metaprune.pruning.masks import MaskReport
from metaprune.pruning.method import Method, parse_method
from metaprune.pruning.scoring import PruneData
from metaprune.seeds import check_seed

PRUNED_KINDS = (nn.Linear, nn.Conv2d)
# left dense and read by the scorers and the mask report: on non-negative inputs these are the identity
# (ReLU, LeakyReLU, dropout in eval mode, flatten), a positive rescaling (BatchNorm at its path-counting
# setting), a positive increasing map that is 0 at 0 (GELU, SiLU) or a pooling (max-pool counted as average)
DENSE_KINDS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Sequential,  # containers: an empty one is a leaf, and runs as the identity or not at all
    nn.ModuleList,
    nn.ModuleDict,
)
ACCEPTED_LAYERS = (
    "Linear and Conv2d (pruned); ReLU, LeakyReLU, GELU, SiLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
    "BatchNorm1d/2d (with running statistics), Flatten, Unflatten, Dropout, Identity (left dense); containers"
)


@dataclass
class ModulePruneResult:
    """What ``prune_module`` did to the module: its masks, their report, and what determined them."""

    method: Method
    density: float
    seed: int
    schedule: ScheduleConfig
    train: TrainConfig | None  # the training of iterative schedules and warm-ups; None when none ran
    data: str | None  # the training set's name, when one was given
    masks: dict[str, torch.Tensor]  # per pruned weight ("fc1.weight"): its bool mask, in the weight's shape
    mask: torch.Tensor  # the same on the flat prunable-weight axis (``networks.prunable_layout`` order)
    report: MaskReport  # per layer: kept, effective, dead and live units, collapse (as ``metaprune prune``)
    ticket: Ticket
    seconds: float
    versions: dict = field(default_factory=package_versions)

    def config(self) -> dict:
        """What determines the masks besides the module's weights and the batch (JSON-able)."""
        return {
            **self.method.schedule_settings(self.schedule),
            "density": self.density,
            "seed": self.seed,
            "train": to_jsonable(self.train) if self.train is not None else None,
            "data": self.data,
        }

    def to_dict(self) -> dict:
        return {
            "config": self.config(),
            "report": self.report.to_dict(),
            "seconds": self.seconds,
            "versions": self.versions,
        }


def prune_module(
    module: nn.Module,
    batch: PruneData | tuple[torch.Tensor, torch.Tensor],
    method: str | Method,
    density: float,
    seed: int = 0,
    *,
    scope: str = "global",
    rounds: int = 100,
    levels: int = 5,
    data: DataSplits | str | None = None,
    train: TrainConfig | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress=None,
) -> ModulePruneResult:
    """Prune ``module`` in place to ``density`` (fraction of its Linear/Conv2d weights kept) with ``method``.

    ``batch`` is the pruning batch: inputs ``[N, ...]`` the module runs on and integer class labels ``[N]``
    (the module returns class logits ``[N, classes]``). ``seed`` seeds every random stream (tie-breaks, the
    random scorer, NTK-SAP's draws, PHEW's walks, the training order); θ0 is the module's own weights.
    ``data`` (a ``DataSplits`` or a dataset name) is the training set of methods that train; ``train`` their
    training config (default: the thesis preset), ``device`` where they train. Every bad input is one
    ``MetapruneError`` before the module is touched.
    """
    from metaprune.fit.learned import with_intended_use  # a learned scorer's card says how it prunes
    from metaprune.pruning.apply import prune_in_context
    from metaprune.pruning.context import PruneContext
    from metaprune.pruning.fits import check_method_for_network
    from metaprune.pruning.masks import check_density_for_network
    from metaprune.training import resolve_device

    t0 = time.perf_counter()
    layout = check_module(module)
    pruning_data = check_batch(batch)
    classes = check_forward(module, pruning_data, layout)
    m = with_intended_use(method if isinstance(method, Method) else parse_method(method))
    seed = check_seed(seed)
    schedule = ScheduleConfig(rounds=rounds, levels=levels, scope=scope).validate()
    train_cfg = (train or TrainConfig()).validate()
    splits = training_set(data, pruning_data, classes, data_root)
    density = check_density_for_network(density, layout, schedule.scope)
    check_method_for_network(m, module, density)
    check_learned_fits(m, module)
    dev = resolve_device(device)
    context = PruneContext(module, splits, schedule, train_cfg, PER_CLASS, dev, batch=pruning_data)
    ticket = prune_in_context(m, context, density, (seed,), data_seed=seed, progress=progress)[0]
    masks = apply_masks(module, ticket, layout)
    return ModulePruneResult(
        method=m,
        density=density,
        seed=seed,
        schedule=schedule,
        train=train_cfg if m.trains else None,
        data=None if splits is None else splits.name,
        masks=masks,
        mask=ticket.mask.reshape(-1).bool().cpu(),
        report=ticket.report,
        ticket=ticket,
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------- checks


def _refuse_layer(label: str, module: nn.Module, why: str) -> MetapruneError:
    return MetapruneError(f"layer {label} ({type(module).__name__}) {why}; accepted: {ACCEPTED_LAYERS}")


def check_module(module: nn.Module) -> PrunableLayout:
    """The module's prunable layout, or a one-line error naming the first layer metaprune cannot read."""
    if not isinstance(module, nn.Module):
        raise MetapruneError(f"bad module {type(module).__name__}; accepted: a torch.nn.Module")
    for name, sub in module.named_modules():
        label = repr(name) if name else "(the module itself)"
        own = dict(sub.named_parameters(recurse=False))
        if isinstance(sub, PRUNED_KINDS):
            if "weight" not in own:
                raise _refuse_layer(
                    label,
                    sub,
                    "has a weight that is not a plain parameter (already pruned by torch.nn.utils.prune, "
                    "or parametrized; prune.remove(layer, 'weight') makes it plain)",
                )
            if isinstance(own["weight"], nn.parameter.UninitializedParameter):
                raise _refuse_layer(label, sub, "is not initialised yet (lazy); run one forward pass first")
            continue
        if isinstance(sub, nn.BatchNorm1d | nn.BatchNorm2d):
            if not sub.track_running_stats:
                raise _refuse_layer(label, sub, "keeps no running statistics, so eval mode normalises each batch")
            continue
        if own:
            raise _refuse_layer(
                label, sub, f"holds weights ({next(iter(own))}) that metaprune neither prunes nor reads"
            )
        if next(sub.children(), None) is None and not isinstance(sub, DENSE_KINDS):
            raise _refuse_layer(label, sub, "is a layer metaprune cannot count paths through")
    layout = prunable_layout(module)
    if not layout.layers:
        raise MetapruneError(
            f"module {type(module).__name__} has no prunable layer; accepted: a module with nn.Linear or "
            "nn.Conv2d layers"
        )
    params = dict(module.named_parameters())
    shared = [name for name in layout.names if name not in params]
    if shared:  # named_parameters lists a tensor registered twice under its first name only
        raise MetapruneError(
            f"layer {shared[0]!r} shares its weight with another layer; accepted: a module whose Linear and "
            "Conv2d layers each own their weight"
        )
    return layout


def check_batch(batch: PruneData | tuple[torch.Tensor, torch.Tensor]) -> PruneData:
    """The pruning batch as ``PruneData``: float inputs [N, ...] and non-negative integer labels [N]."""
    accepted = "a pair (inputs, labels): float inputs [N, ...] and integer class labels [N], N >= 1"
    if isinstance(batch, PruneData):
        x, y = batch.x, batch.y
    elif isinstance(batch, tuple | list) and len(batch) == 2:
        x, y = batch
    else:
        raise MetapruneError(f"bad batch of type {type(batch).__name__}; accepted: {accepted}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        what = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise MetapruneError(f"bad batch inputs ({what}); accepted: {accepted}")
    if (
        not isinstance(y, torch.Tensor)
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
        or tuple(y.shape) != (x.shape[0],)
    ):
        what = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise MetapruneError(f"bad batch labels ({what}) for {x.shape[0]} inputs; accepted: {accepted}")
    if int(y.min()) < 0:
        raise MetapruneError(f"bad batch label {int(y.min())}; accepted: class indices 0, 1, ...")
    return PruneData(x, y.long())


def check_forward(module: nn.Module, data: PruneData, layout: PrunableLayout) -> int:
    """Run a copy of the module on one example: it must return class logits, cover the labels, and run each
    prunable layer once in registration order (the order of the flat weight axis). Returns the classes."""
    net = copy.deepcopy(module).eval()
    layers = [m for m in net.modules() if isinstance(m, PRUNED_KINDS)]
    index = {id(m): i for i, m in enumerate(layers)}
    calls: list[int] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: calls.append(index[id(mod)])) for m in layers]
    weight = next(iter(net.parameters()))
    try:
        with torch.no_grad():
            out = net(data.x[:1].to(device=weight.device, dtype=weight.dtype))
    except Exception as exc:  # the user's forward: any error it raises means the batch does not fit it
        first = (str(exc).splitlines() or [""])[0]
        raise MetapruneError(
            f"the module's forward fails on the batch's inputs of shape {tuple(data.x.shape)} "
            f"({type(exc).__name__}: {first}); accepted: inputs the module runs on"
        ) from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise MetapruneError(f"the module returns {what}; accepted: a module returning class logits [N, classes]")
    classes = int(out.shape[1])
    top = int(data.y.max())
    if top >= classes:
        raise MetapruneError(
            f"batch label {top} is not a class of the module's {classes} outputs; accepted: 0..{classes - 1}"
        )
    _check_call_order(calls, layout)
    return classes


def _check_call_order(calls: list[int], layout: PrunableLayout) -> None:
    names = [name.rpartition(".")[0] or "(the module itself)" for name in layout.names]
    for i, name in enumerate(names):
        if calls.count(i) != 1:
            raise MetapruneError(
                f"layer {name!r} runs {calls.count(i)} times in the module's forward; accepted: a module whose "
                "Linear and Conv2d layers each run once"
            )
    for before, after in zip(calls, calls[1:], strict=False):
        if after < before:
            raise MetapruneError(
                f"layer {names[after]!r} runs after {names[before]!r} but is registered before it; accepted: a "
                "module that registers its Linear and Conv2d layers in the order its forward runs them (metaprune "
                "orders a network's weights by registration)"
            )


def training_set(
    data: DataSplits | str | None, batch: PruneData, classes: int, data_root: str | None
) -> DataSplits | None:
    """The training set of methods that train: None, a ``DataSplits``, or a dataset name loaded here."""
    from metaprune.datasets import load_dataset

    if data is None:
        return None
    if isinstance(data, str):
        data = load_dataset(data, data_root=data_root)
    if not isinstance(data, DataSplits):
        raise MetapruneError(
            f"bad training data of type {type(data).__name__}; accepted: a DataSplits or a dataset name "
            "(metaprune list)"
        )
    shape = tuple(batch.x.shape[1:])
    if tuple(data.input_shape) != shape:
        raise MetapruneError(
            f"training set {data.name} has inputs of shape {tuple(data.input_shape)}, the batch {shape}; accepted: "
            "a training set of the batch's input shape"
        )
    if data.num_classes > classes:
        raise MetapruneError(
            f"training set {data.name} has {data.num_classes} classes, the module {classes} outputs; accepted: a "
            "training set whose classes the module's outputs cover"
        )
    return data


def check_learned_fits(method: Method, module: nn.Module) -> None:
    """A learned model's card refuses a network it cannot score (``ModelCard.check_fits``), before any work."""
    from metaprune.fit.learned import cached_model

    for model_dir in method.learned_models:
        cached_model(model_dir).card.check_fits(module)


# ------------------------------------------------------------------------------------------- masks


def apply_masks(module: nn.Module, ticket: Ticket, layout: PrunableLayout) -> dict[str, torch.Tensor]:
    """Write the ticket into ``module``: θ0 as the method left it, then each layer's mask through
    ``torch.nn.utils.prune.custom_from_mask`` (``weight_orig`` and the ``weight_mask`` buffer)."""
    module.load_state_dict(ticket.net.state_dict())
    owners = dict(module.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for layer, part in zip(layout.layers, layout.split(ticket.mask.reshape(-1).bool().cpu()), strict=True):
        owner = owners[layer.name.rpartition(".")[0]]
        torch_prune.custom_from_mask(owner, "weight", part.to(owner.weight.device))
        masks[layer.name] = part.clone()
    return masks
