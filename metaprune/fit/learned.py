"""The learned scorer: ``learned:DIR`` in a method string scores weights with a fitted model.

At prune time the features are computed by the harvest's own ``metaprune.features.compute_features`` (the
function that filled the store, with the settings recorded in the model's meta), then preprocessed by the
same function the fit used (``metaprune.fit.preprocess.preprocess``), so fit and prune cannot skew.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.fit.models import limited_threads
from metaprune.fit.persist import LoadedModel, load_model, read_meta
from metaprune.fit.preprocess import preprocess
from metaprune.networks import prunable_layout

CACHE_SIZE = 4  # loaded models kept per process, keyed by (resolved path, payload sha256)
_CACHE: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()


def clear_cache() -> None:
    _CACHE.clear()


def cached_model(model_dir: str | Path) -> LoadedModel:
    """The model in ``model_dir``, loaded once per process (re-loaded when its payload changes)."""
    path = Path(model_dir).expanduser().resolve()
    meta = read_meta(path)
    key = (str(path), str(meta["payload"].get("sha256")))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    loaded = load_model(path)  # checks the payload's sha256 against meta.json
    for old in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[old]
    _CACHE[key] = loaded
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return loaded


def network_layout(net: nn.Module) -> list[list[Any]]:
    return [[layer.name, layer.size] for layer in prunable_layout(net).layers]


def check_compatible(
    loaded: LoadedModel, net: nn.Module, available: tuple[str, ...], current_version: int | None = None
) -> None:
    """Refuse a model whose features this metaprune cannot compute, or a network it was not fitted for
    (unless every feature is per-layer normalised)."""
    meta = loaded.meta
    fitted_version = meta.get("feature_version")
    if fitted_version is not None and fitted_version != current_version:
        raise MetapruneError(
            f"model {loaded.path} was fitted on features of version {fitted_version}, but metaprune.features "
            f"computes version {current_version} (a feature's definition changed); refit it on a new harvest"
        )
    missing = [f for f in loaded.features if f not in available]
    if missing:
        raise MetapruneError(
            f"model {loaded.path} uses features {', '.join(missing)} that metaprune.features does not compute "
            f"(it computes: {', '.join(available)}); refit the model on a store of the current feature set"
        )
    layout = network_layout(net)
    layouts = meta.get("layouts") or []
    if layout not in layouts and not meta.get("per_layer_normalised"):
        fitted = meta.get("network")
        raise MetapruneError(
            f"model {loaded.path} was fitted on network {fitted} "
            f"({_describe(layouts[0]) if layouts else 'unknown layers'}) but this network has "
            f"{_describe(layout)}; a model scores another network only when all its features are per-layer "
            "normalised (fit with --preprocess rank, or rank_* features only)"
        )


def _describe(layout: list[list[Any]]) -> str:
    return "layers " + ", ".join(f"{name} ({size:,})" for name, size in layout)


def _feature_settings(meta: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(meta.get("feature_config") or {})
    density = cfg.get("density", meta.get("target_density"))
    if density is None:
        raise MetapruneError(f"model meta of {meta.get('name')!r} records no feature density; refit it")
    out: dict[str, Any] = {"density": float(density)}
    if cfg.get("ums_rounds") is not None:
        out["ums_rounds"] = int(cfg["ums_rounds"])
    return out


def model_warmup(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The warm-up a model's dynamics features were harvested with, or None if it reads none."""
    from metaprune.features import DYNAMICS_FEATURES

    uses = [f for f in meta.get("features", []) if f.removeprefix("rank_") in DYNAMICS_FEATURES]
    if not uses:
        return None
    warmup = (meta.get("feature_config") or {}).get("warmup")
    if not warmup:
        raise MetapruneError(f"model {meta.get('name')!r} reads {uses[0]} but records no warm-up; refit it")
    return dict(warmup)


def _check_warmup(loaded: LoadedModel, data: Any) -> Any:
    wanted = model_warmup(loaded.meta)
    if wanted is None:
        return None
    record = None if data is None else getattr(data, "warmup", None)
    spelled = f"learned:{loaded.path}+w{wanted['epochs']:g}"
    if record is None:
        raise MetapruneError(
            f"model {loaded.path} reads features of a {wanted['epochs']:g}-epoch warm-up; accepted: {spelled}"
        )
    if record.setup() != wanted:
        raise MetapruneError(
            f"model {loaded.path} was fitted on a warm-up {wanted}, but this method's warm-up is {record.setup()}; "
            f"accepted: {spelled} with the harvest's lr, batch size and optimizer"
        )
    return record


def learned_scores(model_dir: str | Path, net: nn.Module, mask: torch.Tensor, data: Any, seed: int) -> torch.Tensor:
    """Scores of the fitted model in ``model_dir`` for every prunable weight of ``net`` (pruned ones 0).

    Higher = keep, float32 on the flat weight axis, on the device of the network's weights.
    """
    from metaprune import features as feature_module

    loaded = cached_model(model_dir)
    available = tuple(feature_module.FEATURE_NAMES)
    check_compatible(loaded, net, available, getattr(feature_module, "FEATURE_VERSION", None))
    layout = prunable_layout(net)
    mask = (torch.ones(layout.total, dtype=torch.bool) if mask is None else mask).reshape(-1).bool()
    if mask.numel() != layout.total:
        raise MetapruneError(f"mask of {mask.numel()} weights does not match the network's {layout.total}")
    settings = _feature_settings(loaded.meta)
    record = _check_warmup(loaded, data)
    feats = feature_module.compute_features(
        net if record is None else record.initial,
        data,
        seed,
        mask=None if bool(mask.all()) else mask,
        warmup=record,
        names=loaded.features,
        **settings,
    )
    feats = feats.detach().to("cpu", torch.float32).numpy()
    if feats.shape != (layout.total, len(available)):
        raise MetapruneError(
            f"compute_features returned shape {feats.shape}, expected ({layout.total}, {len(available)})"
        )
    cols = [available.index(f) for f in loaded.features]
    bounds = [(layer.offset, layer.size) for layer in layout.layers]
    x = preprocess(feats[:, cols], loaded.preprocess, bounds, loaded.features)
    with limited_threads(1):  # thin matrices: one thread, whatever the caller's pool (see limited_threads)
        pred = np.asarray(loaded.model.predict(x), dtype=np.float32)
    if not np.all(np.isfinite(pred)):
        raise MetapruneError(f"model {loaded.path} predicted non-finite scores")
    device = next(iter(net.parameters())).device
    scores = torch.from_numpy(pred).to(device)
    return scores * mask.to(device=device, dtype=scores.dtype)
