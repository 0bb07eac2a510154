"""Exact top-k masks and mask diagnostics on the flat weight axis.

A mask keeps *exactly* ``round(density * n)`` weights: thresholding at a percentile over- or under-prunes
when scores tie (the SynFlow code), and breaking ties by position biases the ticket towards early layers
(thesis appendix A.2). Ties are therefore broken by a seeded random order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from metaprune.errors import MetapruneError
from metaprune.networks import PrunableLayout, prunable_layout, prunable_weights

SCOPES = ("global", "layer")


# ------------------------------------------------------------------------------------------ top-k


def topk_mask(scores: torch.Tensor, k: int, alive: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Keep exactly ``k`` of the alive weights, those with the highest scores.

    Dead weights never come back (multi-shot schedules only ever remove). Weights tied at the threshold
    are chosen by a random permutation from ``generator``, so position never decides. Scores must be
    finite (``make_mask`` checks that).
    """
    scores = scores.reshape(-1)
    n = scores.numel()
    if alive is None:
        alive = torch.ones(n, dtype=torch.bool, device=scores.device)
    else:
        alive = check_weight_axis(alive, n).to(device=scores.device, dtype=torch.bool)
    alive_scores = scores[alive]
    m = alive_scores.numel()
    k = int(k)
    if k < 0 or k > m:
        raise MetapruneError(
            f"cannot keep {k} weights: only {m} are still alive; accepted: 0 <= k <= {m} "
            "(pruned weights never come back, so a density can only go down)"
        )
    if k == 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k == m:
        return alive.clone()
    # the k-th largest alive score, from whichever end is shorter (topk is cheap for small k)
    if k <= m - k + 1:
        threshold = torch.topk(alive_scores, k, sorted=False).values.min()
    else:
        threshold = torch.topk(alive_scores, m - k + 1, largest=False, sorted=False).values.max()
    keep = (scores > threshold) & alive
    need = k - int(keep.sum())
    if need > 0:
        tied = torch.nonzero((scores == threshold) & alive).squeeze(1)
        if need < tied.numel():
            pick = torch.randperm(tied.numel(), generator=generator, device=generator.device)[:need]
            tied = tied[pick.to(tied.device)]
        keep[tied] = True
    return keep


DENSITY_ACCEPTED = "0 < density <= 1, the fraction of prunable weights kept (0.01 keeps 1 %)"


def check_density(density: float) -> float:
    """The range check of a density, made once where it enters the library (``EvaluateConfig``,
    ``HarvestConfig``, ``prune_network``); code below trusts it."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise MetapruneError(f"bad density {density!r}; accepted: {DENSITY_ACCEPTED}") from None
    if not 0.0 < d <= 1.0:  # also rejects NaN
        raise MetapruneError(f"bad density {density!r}; accepted: {DENSITY_ACCEPTED}")
    return d


def keep_count(density: float, n: int) -> int:
    """Number of weights a density keeps of ``n``: ``int(round(density * n))`` (Python rounds half to even).

    The one rounding rule, for a whole network (global scope) and for each layer (layer scope). A density
    that keeps no weight is refused; the range of ``density`` is trusted (``check_density``).
    """
    k = int(round(float(density) * n))
    if k == 0:
        raise MetapruneError(
            f"density {density!r} keeps no weight of {n} (round({density!r} * {n}) = 0); accepted: "
            f"density > {0.5 / n:.3g} (the smallest that keeps one weight; 1/{n} = {1 / n:.3g} is safe)"
        )
    return k


def check_weight_axis(values: torch.Tensor, n: int, what: str = "mask") -> torch.Tensor:
    """``values`` flattened, refused unless it holds one entry per prunable weight (``n`` of them): the one
    length check of masks, scores and per-weight records on the flat weight axis."""
    flat = values.reshape(-1)
    if flat.numel() != n:
        raise MetapruneError(f"{what} of {flat.numel()} weights does not match the network's {n} prunable weights")
    return flat


def check_mask(mask: torch.Tensor, layout: PrunableLayout) -> torch.Tensor:
    """``mask`` as a flat bool tensor, refused unless it has one entry per prunable weight of ``layout``."""
    return check_weight_axis(mask, layout.total).bool()


def check_finite(scores: torch.Tensor, layout: PrunableLayout, scorer: str, alive: torch.Tensor | None = None) -> None:
    """Refuse NaN/inf scores: top-k on them is meaningless, and the layer points at the cause."""
    bad = ~torch.isfinite(scores.reshape(-1))
    if alive is not None:
        bad &= alive.reshape(-1).to(bad.device)
    if not bool(bad.any()):
        return
    first = int(torch.nonzero(bad)[0])
    for layer in layout.layers:
        if layer.offset <= first < layer.offset + layer.size:
            part = bad[layer.offset : layer.offset + layer.size]
            value = float(scores.reshape(-1)[first])
            raise MetapruneError(
                f"scorer {scorer!r} gave non-finite scores ({value}) for {int(part.sum())} of {layer.size} "
                f"weights of layer {layer.name}; accepted: finite scores (try float64 or a smaller network)"
            )
    raise MetapruneError(f"scorer {scorer!r} gave a non-finite score at weight {first}")  # pragma: no cover


def make_mask(
    scores: torch.Tensor,
    layout: PrunableLayout,
    density: float,
    *,
    scope: str = "global",
    alive: torch.Tensor | None = None,
    generator: torch.Generator,
    scorer: str = "?",
    layer_counts: Sequence[int] | None = None,
) -> torch.Tensor:
    """The mask keeping a ``density`` fraction of ALL prunable weights (not of the alive ones).

    ``global`` ranks all weights together; ``layer`` keeps ``round(density * size)`` in every layer;
    ``layer_counts`` (a budget) keeps exactly that many weights in each layer, whatever the density.
    """
    scores = check_weight_axis(scores, layout.total, "scores")
    if alive is not None:
        alive = check_weight_axis(alive, layout.total).to(device=scores.device, dtype=torch.bool)
    check_finite(scores, layout, scorer, alive)
    if layer_counts is None:
        if scope == "global":
            return topk_mask(scores, keep_count(density, layout.total), alive, generator)
        if scope != "layer":
            raise MetapruneError(f"unknown pruning scope {scope!r}; accepted: {', '.join(SCOPES)}")
        layer_counts = layer_keep_counts(density, layout)
    if len(layer_counts) != len(layout.layers):
        raise MetapruneError(
            f"a budget of {len(layer_counts)} layers does not match the network's {len(layout.layers)} layers"
        )
    mask = torch.zeros(layout.total, dtype=torch.bool, device=scores.device)
    for layer, k in zip(layout.layers, layer_counts, strict=True):
        sl = slice(layer.offset, layer.offset + layer.size)
        mask[sl] = topk_mask(scores[sl], int(k), None if alive is None else alive[sl], generator)
    return mask


def layer_counts_of(mask: torch.Tensor, layout: PrunableLayout) -> list[int]:
    """Kept weights per layer of a flat mask."""
    return [int(part.sum()) for part in layout.split(mask.reshape(-1).bool())]


def layer_keep_counts(density: float, layout: PrunableLayout) -> list[int]:
    """Weights kept in each layer under layer scope (``keep_count`` per layer); a layer keeping none is
    refused by name."""
    counts = []
    for layer in layout.layers:
        try:
            counts.append(keep_count(density, layer.size))
        except MetapruneError:
            raise MetapruneError(
                f"density {density:g} keeps no weight of layer {layer.name} ({layer.size} weights) under "
                f"layer-wise scope; accepted: density >= {0.5 / layer.size:.3g} or --scope global"
            ) from None
    return counts


def check_density_for_network(density: float, network: nn.Module | PrunableLayout, scope: str) -> float:
    """The boundary check of a density for one network (a module or its prunable layout): in range, and
    keeping at least one weight of the network (global scope) or of every layer (layer scope). Returns the
    density as a float."""
    layout = network if isinstance(network, PrunableLayout) else prunable_layout(network)
    d = check_density(density)
    keep_count(d, layout.total)
    if scope == "layer":
        layer_keep_counts(d, layout)
    return d


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Overlap |a ∧ b| / |a ∨ b| of two masks; two empty masks are identical (1.0)."""
    a = a.reshape(-1).bool()
    b = b.reshape(-1).bool()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


# ------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class LayerReport:
    name: str
    total: int
    kept: int
    effective: int  # kept weights on at least one input -> output path
    units: int  # output units (rows of a Linear weight, output channels of a Conv kernel)
    dead_in: int  # output units no path from the input reaches
    dead_out: int  # output units with no path to the output
    collapsed: bool  # nothing kept, or nothing kept on a path
    # output units with a kept incoming weight and a kept outgoing weight (the last layer's units: a kept
    # incoming weight); the width a mask leaves a layer (``live_units``)
    live: int


@dataclass(frozen=True)
class MaskReport:
    layers: tuple[LayerReport, ...]
    total: int
    kept: int
    effective: int
    density: float
    effective_density: float
    collapsed_layers: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        d["collapsed_layers"] = list(self.collapsed_layers)
        return d


_RELUS = {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class _ReluAsIdentity(TorchFunctionMode):
    """On non-negative inputs ReLU is the identity; making it so also for the gradient (relu'(0) = 0 in
    torch) lets a unit with no input still pass its path count to the output backwards."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return args[0] if args else kwargs["input"]
        return func(*args, **(kwargs or {}))


def _path_network(net: nn.Module, mask: torch.Tensor) -> nn.Module:
    """A float64 copy that counts paths: weights = mask, biases 0, BN identity, max-pool -> avg-pool."""
    net = copy.deepcopy(net).double().eval()
    for module_name, module in list(net.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            if module.dilation not in (1, (1, 1)):
                raise MetapruneError(f"mask report: dilated max-pool {module_name} is not supported")
            avg = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode, False)
            parent_name, _, child = module_name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, avg)
        elif getattr(module, "inplace", False):  # ReLU and its kind: the hooks read outputs they would overwrite
            module.inplace = False
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.grad = None
            if name.endswith("bias"):
                p.zero_()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                if module.running_mean is not None:
                    module.running_mean.zero_()
                    module.running_var.fill_(1.0)
        for w, m in zip(prunable_weights(net), prunable_layout(net).split(mask), strict=True):
            w.copy_(m.to(w.dtype))
            w.requires_grad_(True)
    return net


def weights_device(net: nn.Module) -> torch.device:
    return next(iter(net.parameters())).device


def infer_input_shape(net: nn.Module) -> tuple[int, ...]:
    """Input shape (without batch) of a network whose first prunable layer is a Linear on flat input."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            return (module.in_features,)
        if isinstance(module, nn.Conv2d):
            break
    raise MetapruneError(
        f"cannot infer the input shape of {type(net).__name__} (its first layer is a convolution); "
        "accepted: pass the input shape (or a pruning batch) explicitly"
    )


def mask_report(net: nn.Module, mask: torch.Tensor, *, input_shape: tuple[int, ...] | None = None) -> MaskReport:
    """Kept counts, path-effective weights, dead units and layer collapse of a mask on ``net``.

    Path counting (the SynFlow trick): with 0/1 weights, zero biases and an all-ones input every
    activation is the number of input->unit paths, and dR/dw_ij (R = sum of outputs) is the number of
    input->output paths through w_ij. Only ReLU, max-pool (replaced by an average pool of the same
    window, since max-pool routes the gradient to one position only) and BatchNorm are treated specially;
    ``input_shape`` is needed for conv nets.
    """
    layout = prunable_layout(net)
    mask = check_mask(mask, layout).cpu()
    shape = tuple(input_shape) if input_shape is not None else infer_input_shape(net)
    pnet = _path_network(net, mask)
    modules = [m for m in pnet.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    outputs: dict[int, torch.Tensor] = {}

    def hook(index: int):
        def fn(module, inputs, output):
            outputs[index] = output

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.enable_grad(), _ReluAsIdentity():
            device = weights_device(pnet)
            out = pnet(torch.ones(1, *shape, dtype=torch.float64, device=device))
            acts = [outputs[i] for i in range(len(modules))]
            weights = prunable_weights(pnet)
            grads = torch.autograd.grad(out.sum(), weights + acts, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    wgrads, agrads = grads[: len(weights)], grads[len(weights) :]
    live = live_units(net, mask, input_shape=shape)
    layers = []
    for i, (layer, module) in enumerate(zip(layout.layers, modules, strict=True)):
        m = mask[layer.offset : layer.offset + layer.size]
        g = wgrads[i]
        eff = m & (g.detach().reshape(-1) > 0) if g is not None else torch.zeros_like(m)
        dim = -1 if isinstance(module, nn.Linear) else 1
        fwd = acts[i].detach().movedim(dim, 0).reshape(layer.shape[0], -1).sum(1)
        bwd = agrads[i]
        bwd = torch.zeros_like(fwd) if bwd is None else bwd.movedim(dim, 0).reshape(layer.shape[0], -1).sum(1)
        kept, effective = int(m.sum()), int(eff.sum())
        layers.append(
            LayerReport(
                name=layer.name,
                total=layer.size,
                kept=kept,
                effective=effective,
                units=layer.shape[0],
                dead_in=int((fwd <= 0).sum()),
                dead_out=int((bwd <= 0).sum()),
                collapsed=kept == 0 or effective == 0,
                live=live[i],
            )
        )
    kept = sum(r.kept for r in layers)
    effective = sum(r.effective for r in layers)
    return MaskReport(
        layers=tuple(layers),
        total=layout.total,
        kept=kept,
        effective=effective,
        density=kept / layout.total,
        effective_density=effective / layout.total,
        collapsed_layers=tuple(r.name for r in layers if r.collapsed),
    )


def live_units(net: nn.Module, mask: torch.Tensor, *, input_shape: tuple[int, ...] | None = None) -> list[int]:
    """Per prunable layer, its output units with at least one kept incoming and one kept outgoing weight.

    A unit's outgoing weights are the weights of every prunable layer that reads the unit's output with no
    other prunable layer in between (through activations, pooling, normalisation, reshapes and residual
    additions); the last layer's units feed the output, so for them a kept incoming weight suffices. The
    local definition, unlike ``dead_in``/``dead_out``, which follow whole paths: a live unit may still be cut
    off further away. Computed on the path network (weights = mask, ReLU as the identity, every other
    operation positive), with each layer's output detached before the next layer reads it, so the gradient
    of the sum of all layers' outputs w.r.t. a layer's output counts only its direct readers' kept weights.
    """
    layout = prunable_layout(net)
    mask = check_mask(mask, layout).cpu()
    shape = tuple(input_shape) if input_shape is not None else infer_input_shape(net)
    pnet = _path_network(net, mask)
    modules = [m for m in pnet.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    produced: list[torch.Tensor] = []
    read: list[torch.Tensor] = []

    def cut(module, inputs, output):
        produced.append(output)
        leaf = output.detach().requires_grad_(True)
        read.append(leaf)
        return leaf

    handles = [m.register_forward_hook(cut) for m in modules]
    try:
        with torch.enable_grad(), _ReluAsIdentity():
            pnet(torch.ones(1, *shape, dtype=torch.float64, device=weights_device(pnet)))
            total = sum(p.sum() for p in produced)
            grads = torch.autograd.grad(total, read, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    out = []
    last = len(modules) - 1
    for i, (layer, module) in enumerate(zip(layout.layers, modules, strict=True)):
        incoming = mask[layer.offset : layer.offset + layer.size].reshape(layer.shape[0], -1).any(1)
        if i == last:
            out.append(int(incoming.sum()))
            continue
        dim = -1 if isinstance(module, nn.Linear) else 1
        g = grads[i]
        readers = torch.zeros_like(incoming) if g is None else g.movedim(dim, 0).reshape(layer.shape[0], -1).sum(1) > 0
        out.append(int((incoming & readers.cpu()).sum()))
    return out
