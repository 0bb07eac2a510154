"""Prune one network with one method: the ``metaprune prune`` command as a library function.

``prune_network`` validates everything it can before loading data (method grammar, network spec,
density against the network and scope, schedule and training settings, seed), then runs the one path
from a method to a ticket (``pruning.apply.prune_in_context``) and returns the ticket, its mask report,
timing and provenance. ``save_ticket`` writes the mask and the weights the ticket trains from to a
safetensors file atomically (temp file + rename); ``load_ticket`` reads it back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaprune.config import PER_CLASS
from metaprune.errors import MetapruneError
from metaprune.files import atomic_path
from metaprune.provenance import package_versions, to_jsonable
from metaprune.pruning.apply import Ticket
from metaprune.pruning.method import Method, parse_method
from metaprune.pruning.schedules import ScheduleConfig
from metaprune.seeds import check_seed
from metaprune.training import TrainConfig

TICKET_FORMAT = "metaprune-ticket/1"
MASK_KEY = "mask"  # the flat bool mask on the prunable-weight axis
LAYER_MASK_PREFIX = "mask/"  # mask/<prunable layer name>: that layer's bool mask in the weight's shape
INIT_PREFIX = "init/"  # init/<state-dict key>: the (unmasked) weights and buffers the ticket trains from

@dataclass
class PruneResult:
    network: str
    dataset: str
    method: Method
    density: float
    seed: int
    schedule: ScheduleConfig
    train: TrainConfig | None  # the training of iterative schedules; None for upfront ones
    per_class: int
    device: str
    ticket: Ticket
    prune_seconds: float  # init + scoring + schedule (+ training), as ``Ticket.seconds``
    seconds: float  # everything, data loading and the mask report included
    versions: dict = field(default_factory=package_versions)

    def config(self) -> dict:
        """What determines the ticket (JSON-able): rerunning with this config and seed reproduces it."""
        return {
            "network": self.network,
            "dataset": self.dataset,
            **self.method.schedule_settings(self.schedule),
            "density": self.density,
            "seed": self.seed,
            "train": to_jsonable(self.train) if self.train is not None else None,
            "per_class": self.per_class,
        }

    def to_dict(self) -> dict:
        return {
            "config": self.config(),
            "report": self.ticket.report.to_dict(),
            "device": self.device,
            "prune_seconds": self.prune_seconds,
            "seconds": self.seconds,
            "versions": self.versions,
        }


def prune_network(
    network: str,
    dataset: str,
    method: str | Method,
    density: float,
    seed: int = 0,
    *,
    scope: str = "global",
    rounds: int = 100,
    levels: int = 5,
    train: TrainConfig | None = None,
    per_class: int = PER_CLASS,
    device: str | None = None,
    data_root: str | None = None,
    progress=None,
) -> PruneResult:
    """The ticket of ``method`` on ``network`` (θ0 of ``seed``) at ``density`` (fraction of weights kept).

    ``train`` (default: the thesis preset) is used by iterative schedules only. ``progress(step, steps)``
    is called after each level of an iterative schedule.
    """
    from metaprune.datasets import dataset_info, load_dataset
    from metaprune.fit.learned import with_intended_use
    from metaprune.networks import build_network, validate_network
    from metaprune.pruning.apply import check_method_data, prune_in_context
    from metaprune.pruning.context import PruneContext, check_per_class
    from metaprune.pruning.fits import check_method_for_network
    from metaprune.pruning.masks import check_density_for_network
    from metaprune.training import resolve_device

    t0 = time.perf_counter()
    m = with_intended_use(method if isinstance(method, Method) else parse_method(method))
    seed = check_seed(seed)
    spec = validate_network(network)
    schedule = ScheduleConfig(rounds=rounds, levels=levels, scope=scope).validate()
    train_cfg = (train or TrainConfig()).validate()
    if check_per_class(per_class) == 0:
        check_method_data(m, None)
    shape, classes = dataset_info(dataset)
    net0 = build_network(spec, shape, classes, seed)
    density = check_density_for_network(density, net0, schedule.scope)
    check_method_for_network(m, net0, density)
    dev = resolve_device(device)
    splits = load_dataset(dataset, data_root=data_root)
    context = PruneContext(spec, splits, schedule, train_cfg, per_class, dev)
    ticket = prune_in_context(m, context, density, (seed,), data_seed=seed, progress=progress)[0]
    return PruneResult(
        network=spec,
        dataset=splits.name,
        method=m,
        density=density,
        seed=seed,
        schedule=schedule,
        train=train_cfg if m.iterative else None,
        per_class=per_class,
        device=str(dev),
        ticket=ticket,
        prune_seconds=ticket.seconds,
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------ files


def ticket_tensors(result: PruneResult) -> dict[str, torch.Tensor]:
    """The tensors of a ticket file: flat mask, per-layer masks, and the initial state dict."""
    from metaprune.networks import prunable_layout

    net, mask = result.ticket.net, result.ticket.mask.reshape(-1).bool().cpu()
    layout = prunable_layout(net)
    tensors = {MASK_KEY: mask.clone()}
    for layer, part in zip(layout.layers, layout.split(mask), strict=True):
        tensors[LAYER_MASK_PREFIX + layer.name] = part.clone()  # safetensors refuses shared storage
    for key, value in net.state_dict().items():
        tensors[INIT_PREFIX + key] = value.detach().cpu().clone()
    return tensors


def ticket_metadata(result: PruneResult) -> dict[str, str]:
    report = result.ticket.report
    return {
        "format": TICKET_FORMAT,
        "method": result.method.canonical(),
        "density": repr(result.density),
        "seed": str(result.seed),
        "network": result.network,
        "dataset": result.dataset,
        "kept": str(report.kept),
        "total": str(report.total),
        "effective_density": repr(report.effective_density),
        "collapsed_layers": json.dumps(list(report.collapsed_layers)),
        "layers": json.dumps([layer.name for layer in report.layers]),
        "weights": "init/* are unmasked; the ticket trains from init * mask (pruned weights held at 0)",
        "config": json.dumps(result.config(), sort_keys=True),
        "versions": json.dumps(result.versions, sort_keys=True),
    }


def check_ticket_path(path: str | Path) -> Path:
    """Refuse an output path that cannot be a ticket file, before any work is done."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise MetapruneError(f"bad output file {str(path)!r}; accepted: a path ending in .safetensors")
    if path.is_dir():
        raise MetapruneError(f"output {str(path)!r} is a directory; accepted: a .safetensors file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MetapruneError(f"cannot write {str(path)!r}: {str(parent)!r} is not a directory")
            break
    return path


def save_ticket(result: PruneResult, path: str | Path) -> Path:
    """Write the ticket to ``path`` (``.safetensors``) atomically: a temp file beside it, then a rename."""
    from safetensors.torch import save_file

    path = check_ticket_path(path)
    try:
        with atomic_path(path) as tmp:
            save_file(ticket_tensors(result), str(tmp), metadata=ticket_metadata(result))
    except OSError as exc:
        raise MetapruneError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return path


@dataclass
class TicketFile:
    mask: torch.Tensor  # flat bool
    layer_masks: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]  # state dict of the weights the ticket trains from (unmasked)
    metadata: dict[str, str]


def load_ticket(path: str | Path) -> TicketFile:
    """Read a file written by ``save_ticket`` (no unpickling: safetensors only)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MetapruneError(f"ticket file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise MetapruneError(f"cannot read ticket file {str(path)!r}: {exc}") from None
    if metadata.get("format") != TICKET_FORMAT or MASK_KEY not in tensors:
        raise MetapruneError(f"{str(path)!r} is not a metaprune ticket file (format {TICKET_FORMAT})")
    return TicketFile(
        mask=tensors[MASK_KEY].bool(),
        layer_masks={
            k[len(LAYER_MASK_PREFIX) :]: v.bool() for k, v in tensors.items() if k.startswith(LAYER_MASK_PREFIX)
        },
        init={k[len(INIT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(INIT_PREFIX)},
        metadata=metadata,
    )
