"""Per-weight features: the ONE computation of them, at harvest time and at prune time.

``compute_features(net, data, seed, density=...)`` returns a float32 matrix ``[n_weights, F]`` on the flat
prunable-weight axis (``networks.prunable_layout`` order) with the columns of :data:`FEATURE_NAMES`.
The harvest stores exactly this matrix per seed. ``alive_features`` gives the same values for the
weights a mask keeps only, in the columns asked for: the harvest's trajectory states and a learned scorer
(on a fresh or masked network) read it. Both take their columns from one function (``_columns``), so
there is no train/serve skew.

Groups (:data:`FEATURE_GROUPS`):

``scores``
    The base scorers on θ0 (``metaprune.pruning.scorers``): ``magnitude`` (|θ|), ``snip`` (sum-normalised),
    ``grasp`` (θ·Hg, |sum|-normalised, keep the highest), ``grasp_abs`` (its absolute value), ``synflow``
    (single-shot SynFlow divided by its sum, so deep networks stay in float32 range; the ranking is the
    scorer's) and ``synflow_ums``: the round at which 100-round upfront multi-shot SynFlow (to ``density``)
    removed the weight divided by ``rounds + 1`` (survivors 1.0) -- a sparsity-aware feature, computed with
    ``schedules.prune_upfront`` exactly as the ``synflow@ums`` method does (same tie-breaking stream).
``structure``
    ``depth`` (0 for the first prunable layer), ``fan_in`` and ``fan_out`` of the layer
    (``PrunableLayer.fan_in`` / ``fan_out``), ``layer_size`` (weights in the layer) and ``rank_<score>``
    for every score: the rank of the weight's score within its layer, ties averaged, scaled to [0, 1]
    (0 = lowest; a one-weight layer gets 0.5).
``activations`` (thesis appendix B)
    ``weight`` (θ0 itself), ``layer_frobenius`` (Frobenius norm of the layer's weight), and the max and
    mean activation of the weight's input unit (``in_act_max``, ``in_act_mean``) and output unit
    (``out_act_max``, ``out_act_mean``) over the pruning batch, network in eval mode. For a Linear weight
    ``[out, in]`` the input unit is column ``in`` (for the first layer: the standardised input pixel),
    the output unit row ``out``. Input activations are what the layer receives (post-ReLU for hidden
    layers of the MLPs); output activations are the layer's output after a ReLU, except for the last
    prunable layer, whose output is the logits. For Conv layers the units are channels and the max/mean
    run over the batch and all spatial positions. (For ResNet the output ReLU is applied straight to the
    convolution output, before BatchNorm: an approximation, documented here.)
``dynamics`` (from a dense warm-up of E epochs from θ0, ``metaprune.pruning.warmup``)
    ``delta`` |θ_E − θ0|, ``movement`` −Σ_t g_t ⊙ θ_t, ``abs_grad`` Σ_t |g_t|, ``sign_flips`` (steps that
    changed the weight's sign), ``magnitude_e`` |θ_E|, and ``rank_<name>`` of each within its layer. Only
    computed when a warm-up record is given (the harvest always gives one; a learned scorer only when its
    model reads these features).

``paths`` (optional: ``harvest --paths`` stores them; :data:`PATH_FEATURES`)
    Unit- and path-level quantities of SynFlow's linearised network (|θ| under the mask, all-ones input):
    ``path_in`` the flow into the weight's input unit and ``path_out`` the flow from its output unit to the
    output (for Conv channels summed over positions), each divided by the layer's largest, so a
    weight's SynFlow score is |θ| · path_in · path_out up to a per-layer constant on an MLP; ``rank_path_in``,
    ``rank_path_out`` their per-layer ranks (pruned weights count as 0, as for the scores);
    ``unit_in_alive`` / ``unit_out_alive`` the alive share of the output unit's incoming / the input unit's
    outgoing weights; ``layer_live_in`` / ``layer_live_out`` the share of the layer's input / output units
    that lie on a live path (some weight through them has a SynFlow score above 0): the live width
    the mask leaves, which node–path balancing (NPB, Pham et al. 2023) asks a mask to keep. On a dense θ0
    the last four are 1; in a multi-shot prune and in the trajectory states they say what the mask has cut.

``names`` selects the columns to compute (default: all); the others are NaN. A learned scorer asks
only for the features its model reads, so e.g. a model without ``synflow_ums`` never runs the 100
SynFlow rounds that feature costs.

All computations work on copies: the network's weights, buffers, ``.grad`` and train/eval flag are
untouched. Everything is deterministic for a given (network, data, seed, density).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.feature_names import (  # noqa: F401 (their home is feature_names; re-exported for callers)
    COMPUTABLE_FEATURES,
    DYNAMICS_FEATURES,
    FEATURE_GROUPS,
    FEATURE_NAMES,
    FEATURE_SETS,
    FEATURE_VERSION,
    MULTI_SHOT_EXCLUDED,
    PATH_FEATURES,
    RANKED,
    SCORE_FEATURES,
    feature_spec,
    select_features,
)
from metaprune.networks import PrunableLayout, flat_weights, prunable_layout, prunable_weights
from metaprune.pruning.masks import check_mask
from metaprune.pruning.scorers import CHUNK, PruneData, score
from metaprune.pruning.scoring import linearised_copy
from metaprune.pruning.warmup import DYNAMICS
from metaprune.ranking import layer_ranks, ranks

DEFAULT_UMS_ROUNDS = 100


def rank_within_layers(values: torch.Tensor, layout: PrunableLayout) -> torch.Tensor:
    """Per-layer rank of ``values`` (ties averaged), scaled to [0, 1]; float64 [n] (``ranking.layer_ranks``)."""
    bounds = [(layer.offset, layer.size) for layer in layout.layers]
    return torch.from_numpy(layer_ranks(values.detach().reshape(-1).cpu().numpy(), bounds))


def _expand_units(
    layout: PrunableLayout, in_units: list[torch.Tensor], out_units: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit values -> per-weight values (input unit = dim 1, output unit = dim 0 of each weight)."""
    ins, outs = [], []
    for layer, a_in, a_out in zip(layout.layers, in_units, out_units, strict=True):
        extra = (1,) * (len(layer.shape) - 2)
        ins.append(a_in.reshape(1, -1, *extra).expand(layer.shape).reshape(-1))
        outs.append(a_out.reshape(-1, 1, *extra).expand(layer.shape).reshape(-1))
    return torch.cat(ins), torch.cat(outs)


@torch.no_grad()
def unit_activations(
    net: nn.Module, data: PruneData, mask: torch.Tensor | None = None
) -> dict[str, list[torch.Tensor]]:
    """Max and mean activation of every prunable layer's input and output units over ``data`` (eval mode).

    Returns lists (one tensor per prunable layer, float64) under ``in_max``, ``in_mean``, ``out_max``,
    ``out_mean``. Works on a copy of ``net`` (masked when ``mask`` is given).
    """
    work = copy.deepcopy(net)
    work.eval()
    layout = prunable_layout(work)
    if mask is not None:
        for w, m in zip(prunable_weights(work), layout.split(mask.to(torch.bool)), strict=True):
            w.mul_(m.to(device=w.device, dtype=w.dtype))
    modules = [m for m in work.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if len(modules) != len(layout.layers):  # pragma: no cover - prunable_layout walks the same modules
        raise MetapruneError("activation features: prunable layers and modules do not match")
    last = len(modules) - 1
    stats: list[dict[str, torch.Tensor | int]] = [{} for _ in modules]

    def reduce(t: torch.Tensor, conv: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        t = t.detach().double()
        flat = t.movedim(1, -1).reshape(-1, t.shape[1]) if conv else t.reshape(-1, t.shape[-1])
        return flat.max(0).values, flat.sum(0), flat.shape[0]

    def hook(i: int, conv: bool):
        def fn(module, inputs, output):
            out = output if i == last else torch.relu(output)
            for side, t in (("in", inputs[0]), ("out", out)):
                mx, sm, cnt = reduce(t, conv)
                s = stats[i]
                if f"{side}_max" in s:
                    s[f"{side}_max"] = torch.maximum(s[f"{side}_max"], mx)
                    s[f"{side}_sum"] = s[f"{side}_sum"] + sm
                    s[f"{side}_n"] = s[f"{side}_n"] + cnt
                else:
                    s[f"{side}_max"], s[f"{side}_sum"], s[f"{side}_n"] = mx, sm, cnt

        return fn

    handles = [m.register_forward_hook(hook(i, isinstance(m, nn.Conv2d))) for i, m in enumerate(modules)]
    try:
        w0 = prunable_weights(work)[0]
        for start in range(0, data.x.shape[0], CHUNK):
            work(data.x[start : start + CHUNK].to(device=w0.device, dtype=w0.dtype))
    finally:
        for h in handles:
            h.remove()
    out: dict[str, list[torch.Tensor]] = {"in_max": [], "in_mean": [], "out_max": [], "out_mean": []}
    for s in stats:
        for side in ("in", "out"):
            out[f"{side}_max"].append(s[f"{side}_max"].cpu())
            out[f"{side}_mean"].append((s[f"{side}_sum"] / s[f"{side}_n"]).cpu())
    return out


def _sum_normalised(s: torch.Tensor) -> torch.Tensor:
    s = s.detach().to(torch.float64).cpu()
    total = s.sum()
    return s / total if total > 0 else s


# ---------------------------------------------------------------------------------------- the function


def compute_features(
    net: nn.Module,
    data: PruneData,
    seed: int,
    *,
    density: float,
    ums_rounds: int = DEFAULT_UMS_ROUNDS,
    mask: torch.Tensor | None = None,
    warmup=None,
    names: Iterable[str] | None = None,
    columns: Sequence[str] = FEATURE_NAMES,
) -> torch.Tensor:
    """The features of every prunable weight of ``net``: float32 ``[n_weights, len(columns)]``, columns
    :data:`FEATURE_NAMES` unless ``columns`` names others (a harvest with ``--paths`` adds
    :data:`PATH_FEATURES`).

    ``data`` is the pruning batch (``pruning.scorers.pruning_batch``), ``seed`` seeds tie-breaking of the
    multi-shot SynFlow feature, ``density`` is the density that feature prunes to (the harvest's target
    density). ``mask`` (optional, default: nothing pruned) evaluates the masked network: scores of pruned
    weights are 0 and the multi-shot feature starts from the mask. ``warmup`` (a
    ``pruning.warmup.WarmupRecord`` of θ0) feeds the dynamics group. ``names`` selects the columns to
    compute (default: all ``columns``, the dynamics group only with a warm-up; the rest are NaN). ``net`` is
    not modified.
    """
    layout = prunable_layout(net)
    n = layout.total
    columns = select_features(list(columns), COMPUTABLE_FEATURES)
    if names is None:
        names = [f for f in columns if warmup is not None or f not in FEATURE_GROUPS["dynamics"]]
    wanted, mask, cols = _columns(net, data, seed, density, ums_rounds, mask, warmup, names)
    out = torch.full((n, len(columns)), float("nan"), dtype=torch.float32)
    for name, values in cols.items():
        if name in columns:
            out[:, columns.index(name)] = values.to(torch.float32)
    for s in RANKED:
        if f"rank_{s}" in wanted and f"rank_{s}" in columns:
            column = cols[s].to(torch.float32)
            out[:, columns.index(f"rank_{s}")] = rank_within_layers(column, layout).to(torch.float32)
    computed = [columns.index(name) for name in columns if name in wanted]
    finite = torch.isfinite(out[:, computed]).all(dim=0)  # one pass: column slices of a row-major matrix are slow
    _check_finite_columns([columns[j] for j, ok in zip(computed, finite.tolist(), strict=True) if not ok])
    return out


def alive_features(
    net: nn.Module,
    data: PruneData,
    seed: int,
    *,
    density: float,
    names: Iterable[str],
    ums_rounds: int = DEFAULT_UMS_ROUNDS,
    mask: torch.Tensor | None = None,
    warmup=None,
) -> np.ndarray:
    """``compute_features(...)[alive][:, names]``, computed for the alive rows only: float32
    ``[alive weights, len(names)]``, columns in the order of ``names``, rows in flat order.

    The same values bit for bit (a test pins it), at the cost of the alive rows: a multi-shot learned
    scorer and the harvest's trajectory states only ever read the weights still in the network. A
    per-layer rank still counts the layer's pruned weights, whose scores are exactly 0.
    """
    layout = prunable_layout(net)
    names = select_features(list(names), COMPUTABLE_FEATURES)
    wanted, mask, cols = _columns(net, data, seed, density, ums_rounds, mask, warmup, names)
    alive = None if mask is None else torch.nonzero(mask).reshape(-1)
    out = np.empty((layout.total if alive is None else int(alive.numel()), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        base = name[len("rank_") :] if name.startswith("rank_") else None
        if base in RANKED:
            out[:, j] = _alive_ranks(cols[base].to(torch.float32), layout, mask).astype(np.float32)
        else:
            values = cols[name].to(torch.float32)
            out[:, j] = (values if alive is None else values[alive]).numpy()
    finite = np.isfinite(out).all(axis=0)
    _check_finite_columns([name for name, ok in zip(names, finite.tolist(), strict=True) if not ok])
    return out


def _columns(net, data, seed, density, ums_rounds, mask, warmup, names):
    """(wanted names, checked mask, raw float64 columns on the full flat axis) of one feature call."""
    layout = prunable_layout(net)
    n = layout.total
    wanted = set(select_features(list(names), COMPUTABLE_FEATURES))
    if data is None or data.x.shape[0] == 0:
        raise MetapruneError("features need a non-empty pruning batch; accepted: PruneData from pruning_batch")
    if mask is not None:
        mask = check_mask(mask.to("cpu"), layout)
    needed = wanted | {name[len("rank_") :] for name in wanted if name.startswith("rank_")}
    cols: dict[str, torch.Tensor] = {}
    _score_columns(cols, needed, net, mask, data, seed, density, ums_rounds)
    _structure_columns(cols, needed, layout)
    _activation_columns(cols, needed, net, mask, data, layout)
    _dynamics_columns(cols, needed, warmup, mask, n)
    _path_columns(cols, needed, net, mask, data, layout)
    return wanted, mask, cols


def _check_finite_columns(bad: list[str]) -> None:
    if bad:
        raise MetapruneError(
            f"features {', '.join(bad)} are not finite in float32 for this network; "
            "accepted: a network whose scores fit float32"
        )


def _alive_ranks(values: torch.Tensor, layout: PrunableLayout, mask: torch.Tensor | None) -> np.ndarray:
    """``rank_within_layers(values, layout)[mask]`` from a sort of the alive values only.

    The pruned weights of a layer all score 0, so they form one tie group: an alive value above 0 ranks
    ``P`` places higher than among the alive alone, one equal to 0 shares the group (``P / 2`` higher),
    one below 0 is unchanged. Ranks are integers or halves, exact in float64, so the result is the same
    bit for bit. A layer whose pruned values are not all 0 is ranked in full.
    """
    if mask is None:
        return rank_within_layers(values, layout).numpy()
    v = values.reshape(-1).numpy()
    keep = mask.numpy()
    parts = []
    for layer in layout.layers:
        sl = slice(layer.offset, layer.offset + layer.size)
        part, alive = v[sl], keep[sl]
        a = part[alive]
        pruned = layer.size - a.size
        if layer.size == 1:
            parts.append(np.full(a.size, 0.5))
        elif pruned and np.any(part[~alive] != 0):
            parts.append(((ranks(part) - 1.0) / (layer.size - 1))[alive])
        else:
            r = ranks(a) if a.size else np.empty(0)
            r = r + pruned * (a > 0) + (pruned / 2.0) * (a == 0)
            parts.append((r - 1.0) / (layer.size - 1))
    return np.concatenate(parts)


def _score_columns(cols, needed, net, mask, data, seed, density, ums_rounds) -> None:
    from metaprune.pruning.schedules import ScheduleConfig, prune_upfront

    for name in ("magnitude", "snip"):
        if name in needed:
            cols[name] = score(name, net, mask, data, seed).double().cpu()
    if needed & {"grasp", "grasp_abs"}:
        grasp = score("grasp", net, mask, data, seed).cpu()
        cols["grasp"] = grasp.double()
        cols["grasp_abs"] = grasp.abs().double()  # == score("grasp_abs", ...): the same computation, abs'ed
    if "synflow" in needed:
        cols["synflow"] = _sum_normalised(score("synflow", net, mask, data, seed))
    if "synflow_ums" in needed:

        def synflow_fn(m: nn.Module, alive: torch.Tensor) -> torch.Tensor:
            return score("synflow", m, alive, data, seed)

        ums = prune_upfront(
            synflow_fn,
            net,
            density,
            seed,
            multi_shot=True,
            config=ScheduleConfig(rounds=int(ums_rounds)),
            alive=mask,
            name="synflow@ums",
        )
        cols["synflow_ums"] = ums.removed_at.to(torch.float64) / (int(ums_rounds) + 1)


def _structure_columns(cols, needed, layout: PrunableLayout) -> None:
    n = layout.total
    for layer in layout.layers:
        sl = slice(layer.offset, layer.offset + layer.size)
        for name, value in (
            ("depth", layer.depth),
            ("fan_in", layer.fan_in),
            ("fan_out", layer.fan_out),
            ("layer_size", layer.size),
        ):
            if name in needed:
                cols.setdefault(name, torch.empty(n, dtype=torch.float64))[sl] = float(value)


def _activation_columns(cols, needed, net, mask, data, layout: PrunableLayout) -> None:
    if needed & {"weight", "layer_frobenius"}:
        weights = [w.detach().cpu().double() for w in prunable_weights(net)]
        if mask is not None:
            weights = [w * m.double() for w, m in zip(weights, layout.split(mask), strict=True)]
        cols["weight"] = torch.cat([w.reshape(-1) for w in weights])
        cols["layer_frobenius"] = torch.cat(
            [torch.full((w.numel(),), float(torch.linalg.vector_norm(w)), dtype=torch.float64) for w in weights]
        )
    if needed & {"in_act_max", "in_act_mean", "out_act_max", "out_act_mean"}:
        acts = unit_activations(net, data, mask)
        cols["in_act_max"], cols["out_act_max"] = _expand_units(layout, acts["in_max"], acts["out_max"])
        cols["in_act_mean"], cols["out_act_mean"] = _expand_units(layout, acts["in_mean"], acts["out_mean"])


def _dynamics_columns(cols, needed, warmup, mask, n: int) -> None:
    if not needed & set(DYNAMICS_FEATURES):
        return
    if warmup is None:
        raise MetapruneError(
            "the dynamics features need a warm-up record; accepted: compute_features(..., warmup=warm_up(...))"
        )
    keep = torch.ones(n, dtype=torch.float64) if mask is None else mask.to(torch.float64)
    for name in DYNAMICS:  # the record's own: delta, movement, abs_grad, sign_flips
        if name in needed:
            cols[name] = warmup.dynamics(name).to(torch.float64) * keep
    if "magnitude_e" in needed:
        cols["magnitude_e"] = flat_weights(warmup.network).to("cpu", torch.float64).abs() * keep


def unit_paths(net: nn.Module, mask: torch.Tensor, input_shape: Sequence[int]) -> dict[str, list[torch.Tensor]]:
    """Per prunable layer, float64: the flow of SynFlow's linearised network (the masked |θ| network, biases and
    buffers as |.|, eval mode, one all-ones input) into each input unit (``in``) and from each output unit
    to the output, dR/dz (``out``), Conv channels summed over positions; and each weight's SynFlow score
    (``score``, flat), from the same pass. Works on a float64 copy of ``net``."""
    with torch.enable_grad():
        work, weights = linearised_copy(net, mask)
        modules = [m for m in work.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # by module, whatever order they run in

        def hook(i: int):
            return lambda module, inputs, output: seen.__setitem__(i, (inputs[0], output))

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
        try:
            x = torch.ones(1, *input_shape, dtype=torch.float64, device=weights[0].device)
            total = work(x).sum()
        finally:
            for h in handles:
                h.remove()
        outs = [seen[i][1] for i in range(len(modules))]
        grads = torch.autograd.grad(total, [*outs, *weights], allow_unused=True)
    flow_in = [_per_unit(seen[i][0]) for i in range(len(modules))]
    flow_out = [_per_unit(g) for g in grads[: len(outs)]]
    score_parts = [(w * (torch.zeros_like(w) if g is None else g)).detach().abs().reshape(-1).cpu()
                   for w, g in zip(weights, grads[len(outs) :], strict=True)]  # fmt: skip
    return {"in": flow_in, "out": flow_out, "score": torch.cat(score_parts)}


def _per_unit(t: torch.Tensor) -> torch.Tensor:
    """Sum over the batch (and a Conv map's positions): one value per unit (dim 1)."""
    return t.detach().sum(dim=(0, 2, 3) if t.dim() == 4 else 0).cpu()


def _path_columns(cols, needed, net, mask, data, layout: PrunableLayout) -> None:
    if not needed & set(PATH_FEATURES):
        return
    keep = torch.ones(layout.total, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    paths = unit_paths(net, keep, tuple(data.x.shape[1:]))
    ins, outs = _expand_units(layout, [_by_max(t) for t in paths["in"]], [_by_max(t) for t in paths["out"]])
    alive = keep.to(torch.float64)
    cols["path_in"], cols["path_out"] = ins, outs
    cols["rank_path_in"] = rank_within_layers(ins * alive, layout)
    cols["rank_path_out"] = rank_within_layers(outs * alive, layout)
    live = paths["score"] > 0
    unit_in, unit_out, live_in, live_out = [], [], [], []
    for k, lv in zip(layout.split(alive), layout.split(live), strict=True):  # weights [out, in, ...]
        unit_in.append(_unit_rows(k).mean(dim=1))  # per output unit: its incoming weights
        unit_out.append(_unit_rows(k.transpose(0, 1)).mean(dim=1))  # per input unit: its outgoing weights
        live_out.append(_live_share(lv))
        live_in.append(_live_share(lv.transpose(0, 1)))
    cols["unit_out_alive"], cols["unit_in_alive"] = _expand_units(layout, unit_out, unit_in)
    cols["layer_live_in"], cols["layer_live_out"] = _expand_units(layout, live_in, live_out)


def _unit_rows(weight: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor as one row per unit of its dim 0."""
    return weight.reshape(weight.shape[0], -1)


def _live_share(live: torch.Tensor) -> torch.Tensor:
    """The share of dim 0's units with a live weight, once per unit."""
    return _unit_rows(live).any(dim=1).double().mean().expand(live.shape[0])


def _by_max(t: torch.Tensor) -> torch.Tensor:
    top = t.max() if t.numel() else t.new_zeros(())
    return t / top if top > 0 else torch.zeros_like(t)


def layer_coordinates(layout: PrunableLayout) -> dict[str, torch.Tensor]:
    """Per-weight coordinates on the flat axis: layer index, row (output unit), col (input unit), kh, kw.

    ``kh``/``kw`` are the kernel position for Conv weights and -1 for Linear weights.
    """
    parts: dict[str, list[torch.Tensor]] = {"layer_index": [], "row": [], "col": [], "kh": [], "kw": []}
    for i, layer in enumerate(layout.layers):
        shape = layer.shape
        kernel = shape[2:] if len(shape) > 2 else ()
        grids = torch.meshgrid(*[torch.arange(s, dtype=torch.int32) for s in shape], indexing="ij")
        parts["layer_index"].append(torch.full((layer.size,), i, dtype=torch.int16))
        parts["row"].append(grids[0].reshape(-1))
        parts["col"].append(grids[1].reshape(-1))
        for axis, key in enumerate(("kh", "kw")):
            if len(kernel) > axis:
                parts[key].append(grids[2 + axis].reshape(-1).to(torch.int16))
            else:
                parts[key].append(torch.full((layer.size,), -1, dtype=torch.int16))
    return {k: torch.cat(v) for k, v in parts.items()}


__all__ = [
    "alive_features",
    "DEFAULT_UMS_ROUNDS",
    "DYNAMICS_FEATURES",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "compute_features",
    "feature_spec",
    "layer_coordinates",
    "PATH_FEATURES",
    "rank_within_layers",
    "select_features",
    "unit_activations",
    "unit_paths",
]
