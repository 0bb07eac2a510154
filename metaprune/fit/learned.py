"""The learned scorer: ``learned:DIR`` in a method string scores weights with a fitted model.

Importing this module registers the resolver of ``learned:`` names in the scorer registry
(``pruning.scorers.SCORERS``), so pruning reaches fitted models without importing ``fit``.

At prune time the features are computed by the harvest's own ``metaprune.features`` functions (those
that filled the store, with the settings recorded in the model's card), then preprocessed by the
same function the fit used (``metaprune.fit.preprocess.preprocess``), so fit and prune cannot skew.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune import features as feature_module
from metaprune.errors import MetapruneError
from metaprune.fit import portable
from metaprune.fit.persist import LoadedModel, ModelCard, dynamics_features, load_model
from metaprune.fit.preprocess import alive_bounds, preprocess
from metaprune.networks import prunable_layout
from metaprune.pruning.masks import check_mask
from metaprune.pruning.method import FROM, LEARNED, Method, learned_method
from metaprune.pruning.scorers import SCORERS, ScorerSpec
from metaprune.threads import limited_threads

LEARNED_PASSES = 5.5  # compute accounting: snip (1), grasp (3), 101 SynFlow passes on one example, activations
CACHE_SIZE = 4  # loaded models kept per process, keyed by (resolved path, payload sha256)
_CACHE: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()


def clear_cache() -> None:
    _CACHE.clear()


def cached_model(model_dir: str | Path) -> LoadedModel:
    """The model in ``model_dir``, loaded once per process (re-loaded when its payload changes)."""
    path = Path(model_dir).expanduser().resolve()
    card = ModelCard.read(path)
    key = (str(path), card.sha256)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    loaded = load_model(path)  # checks the payload's sha256 against the card
    for old in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[old]
    _CACHE[key] = loaded
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return loaded


def model_warmup(card: ModelCard) -> dict[str, Any] | None:
    """The warm-up a model's dynamics features were harvested with, or None if it reads none."""
    uses = dynamics_features(card.features)
    if not uses:
        return None
    warmup = card.feature_config.get("warmup")
    if not warmup:
        raise MetapruneError(f"model {card.name!r} reads {uses[0]} but records no warm-up; refit it")
    return dict(warmup)


def _check_warmup(loaded: LoadedModel, data: Any) -> Any:
    wanted = model_warmup(loaded.card)
    if wanted is None:
        return None
    record = None if data is None else data.warmup
    spelled = learned_method(loaded.path).variant(warmup=float(wanted["epochs"])).canonical()
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


def with_intended_use(method: Method) -> Method:
    """``method`` with the parts it leaves at their defaults taken from its learned scorer's model card.

    A model records how it is meant to prune (``fit --use``; the warm-up of its dynamics features): with
    no schedule, warm-up or budget of its own, ``learned:DIR`` prunes that way; any part the method spells
    overrides the model's (``learned:DIR@uss`` prunes in one shot whatever the model says).
    """
    inner = method.budget_method
    if inner is not None and inner.learned_model is not None:
        # ``#from:learned:DIR`` keeps the counts of the scorer as its card says it prunes (not its budget:
        # a budget method has none of its own)
        merged = replace(with_intended_use(inner), budget=None)
        method = replace(method, budget=FROM + merged.canonical())
    model_dir = method.learned_model
    if model_dir is None:
        return method
    card = cached_model(model_dir).card
    warmup = model_warmup(card)  # the features' own warm-up, also for cards that predate intended_use
    return method.merge(replace(card.intended_use, warmup=None if warmup is None else float(warmup["epochs"])))


def learned_scores(model_dir: str | Path, net: nn.Module, mask: torch.Tensor, data: Any, seed: int) -> torch.Tensor:
    """Scores of the fitted model in ``model_dir`` for every prunable weight of ``net`` (pruned ones 0).

    Higher = keep, float32 on the flat weight axis, on the device of the network's weights.
    """
    loaded = cached_model(model_dir)
    loaded.card.check_fits(net)
    layout = prunable_layout(net)
    mask = check_mask(torch.ones(layout.total, dtype=torch.bool) if mask is None else mask, layout)
    settings = loaded.card.feature_settings()
    record = _check_warmup(loaded, data)
    dense = bool(mask.all())
    # the alive weights only, as the fit saw each state of the trajectory: pruned weights are not part of
    # the network being scored, so they must not shift a min-max or a per-layer rank
    columns = portable.stored_columns(loaded.features)  # a portable feature is derived from these
    feats = feature_module.alive_features(
        net if record is None else record.initial,
        data,
        seed,
        mask=None if dense else mask,
        warmup=record,
        names=columns,
        **settings,
    )
    alive = np.arange(layout.total) if dense else np.flatnonzero(mask.cpu().numpy())
    bounds = alive_bounds(alive, [(layer.offset, layer.size) for layer in layout.layers])
    if portable.uses_derived(loaded.features):
        feats = portable.assemble(loaded.features, columns, feats, bounds, layout.total)
    x = preprocess(feats, loaded.preprocess, bounds, loaded.features)
    with limited_threads(1):  # thin matrices: one thread, whatever the caller's pool (see limited_threads)
        pred = np.asarray(loaded.model.rank_scores(x), dtype=np.float32)
    if not np.all(np.isfinite(pred)):
        raise MetapruneError(f"model {loaded.path} predicted non-finite scores")
    device = next(iter(net.parameters())).device
    # pruned weights score 0, or below every alive one when a ranking objective's scores go negative
    low = float(pred.min()) if pred.size else 0.0
    full = np.full(layout.total, 0.0 if low >= 0 else low - 1.0, dtype=np.float32)
    full[alive] = pred  # logits and log-odds keep their distinctions in float32
    return torch.from_numpy(full).to(device)


def learned_scorer(model_dir: str) -> ScorerSpec:
    """The scorer ``learned:MODEL_DIR``; the model is loaded (and its payload checked) when it first scores."""

    def fn(net: nn.Module, mask: torch.Tensor, data: Any, seed: int) -> torch.Tensor:
        return learned_scores(model_dir, net, mask, data, seed)

    def budget(layout: Any, density: float) -> list[int]:
        return cached_model(model_dir).card.layer_budget(layout, density)

    def fits(net: nn.Module) -> None:
        cached_model(model_dir).card.check_fits(net)

    def reads_warmup() -> bool:
        return model_warmup(cached_model(model_dir).card) is not None

    return ScorerSpec(
        fn,
        True,
        f"the fitted model in {model_dir}",
        passes=LEARNED_PASSES,
        layer_budget=budget,
        fits=fits,
        reads_warmup=reads_warmup,
    )


SCORERS.register_prefix(LEARNED, learned_scorer, "a fitted scorer (`metaprune fit`): learned:MODEL_DIR")
