"""Feature selection, preprocessing and targets: one implementation shared by ``fit`` and the learned scorer.

Everything here works on ONE network at a time (one seed of a store at fit time, the network being
pruned at prune time), so nothing is fitted across seeds and nothing can leak from held-out seeds:

- ``minmax`` (the thesis, 5.2.1): each feature min–max scaled to [0, 1] over the network's weights;
  a feature that is constant on the network becomes 0.
- ``rank``: each feature replaced by its rank inside its layer, scaled to [0, 1] (ties get their average
  rank; a layer-constant feature such as ``depth`` becomes 0.5). Per-layer normalised, so a model fitted
  with it may score networks of another architecture.
- ``none``: raw values (for tree models, which do not care about scale).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.features import SCORE_FEATURES, select_features
from metaprune.ranking import layer_ranks

PREPROCESSORS = {
    "minmax": "per-network min-max of every feature to [0, 1] (thesis 5.2.1)",
    "rank": "per-layer rank of every feature, scaled to [0, 1] (network-independent)",
    "quantile": "per-network rank of every feature, scaled to [0, 1]: uniform inputs for an MLP, which min-max "
    "squeezes where scores are heavy-tailed; the order across layers is kept",
    "none": "raw feature values",
}

TARGETS = {
    "round": "target_round / (levels + 1): the iterative-SynFlow level at which a weight was removed, "
    "survivors 1 (a sparsity-aware ranking target); in trajectory state s: (target_round - s) / (levels + 1 - s)",
    "survive": "1 if the weight survives the next level of the target from its state (target_round > s + 1), "
    "else 0 (a binary target for cross_entropy / binary objectives and the mlp's bce loss)",
    "mask": "target_mask as 0/1: in the target ticket or not",
    "score": "target_score min-max scaled to [0, 1] per seed",
    "soft_mask": "the mean of target_mask and the sibling's mask (0, 0.5 or 1): the target's ticket averaged over "
    "two runs that differ only in data order and pruning batch (dense state; seeds with a sibling, harvest --siblings)",
}

# Targets of the dense state alone (the trajectory states are the target's own way down).
DENSE_ONLY_TARGETS = ("score", "soft_mask")
# Targets that read the target's sibling (``harvest --siblings``).
SIBLING_TARGETS = ("soft_mask",)

# The base scores every fit report compares the model with (reference rows): the harvest's score features.
BASE_SCORES = SCORE_FEATURES

LayerBounds = Sequence[tuple[int, int]]  # (offset, size) of every layer on the flat weight axis


# ----------------------------------------------------------------------------------------- features


def resolve_features(
    spec: str | Sequence[str],
    available: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    derived: Sequence[str] = (),
) -> tuple[str, ...]:
    """The model's feature columns: ``features.select_features`` of ``spec`` among the store's names and the
    ``derived`` ones it can compute (``fit.portable``, never part of ``all``), in the store's order then the
    derived ones' (so a spec's spelling never changes the model's columns)."""
    chosen = select_features(spec, available, groups, owner="the store", derived=derived)
    return tuple(n for n in (*available, *derived) if n in chosen)


def features_slug(spec: str | Sequence[str], names: Sequence[str]) -> str:
    """A short file-name-safe spelling of a feature spec for default model names."""
    text = spec if isinstance(spec, str) else "+".join(spec)
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", text.replace("+", "-").replace(",", "-")).strip("-").lower()
    if len(slug) > 40:
        import hashlib

        slug = f"f{len(names)}-" + hashlib.sha256(",".join(names).encode()).hexdigest()[:6]
    return slug or "none"


def per_layer_normalised(names: Sequence[str], preprocess: str) -> bool:
    """Whether every model input is normalised inside its layer or portable (``fit.portable``): then the model
    is network-independent."""
    from metaprune.feature_names import DERIVED_FEATURES

    return preprocess == "rank" or all(n.startswith("rank_") or n in DERIVED_FEATURES for n in names)


# ----------------------------------------------------------------------------------------- preprocessing


def check_preprocess(name: str) -> str:
    if name not in PREPROCESSORS:
        raise MetapruneError(f"unknown preprocessing {name!r}; accepted: {', '.join(PREPROCESSORS)}")
    return name


def preprocess(
    x: np.ndarray, method: str, layers: LayerBounds | None = None, names: Sequence[str] | None = None
) -> np.ndarray:
    """Preprocess the features ``x`` [n_weights, F] of ONE network; returns a new float32 array.

    ``layers`` (offset, size per layer) is needed for ``rank``. Non-finite input is refused, naming the
    feature, since every model would silently turn it into garbage.
    """
    check_preprocess(method)
    x = np.asarray(x)
    if x.ndim != 2:
        raise MetapruneError(f"features must be a [weights, features] matrix, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        col = int(np.nonzero(bad.any(0))[0][0])
        label = names[col] if names is not None and col < len(names) else f"column {col}"
        raise MetapruneError(
            f"feature {label!r} has {int(bad[:, col].sum())} non-finite values; accepted: finite features "
            "(re-harvest the store)"
        )
    if method == "none":
        return x.astype(np.float32, copy=True)
    if method == "minmax":
        x64 = x.astype(np.float64)
        lo = x64.min(0)
        span = x64.max(0) - lo
        safe = np.where(span > 0, span, 1.0)
        out = (x64 - lo) / safe
        out[:, span <= 0] = 0.0
        return out.astype(np.float32)
    if method == "quantile":  # the whole network ranked as one layer
        return layer_ranks(x, [(0, x.shape[0])]).astype(np.float32)
    if layers is None:
        raise MetapruneError("rank preprocessing needs the layer table of the network")
    return layer_ranks(x, layers).astype(np.float32)



def alive_bounds(alive: np.ndarray, layers: LayerBounds) -> list[tuple[int, int]]:
    """(offset, size) of every layer among the alive rows ``alive`` (sorted flat indices)."""
    alive = np.asarray(alive)
    starts = np.searchsorted(alive, [offset for offset, _ in layers])
    ends = np.searchsorted(alive, [offset + size for offset, size in layers])
    return [(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]


SAMPLE_WEIGHTS = {
    "none": "every row weighs 1",
    "balanced": "every removal level (counted from the row's state) gets the same total weight within a network, "
    "so the few late-removed weights count as much as the many early ones",
}


def sample_weights(levels: np.ndarray, kind: str) -> np.ndarray | None:
    """Row weights of one network (state) from its levels to go (``levels_to_go``); None for ``none``."""
    if kind not in SAMPLE_WEIGHTS:
        raise MetapruneError(f"unknown sample weighting {kind!r}; accepted: {', '.join(SAMPLE_WEIGHTS)}")
    if kind == "none":
        return None
    values, inverse, counts = np.unique(levels, return_inverse=True, return_counts=True)
    w = levels.size / (len(values) * counts[inverse].astype(np.float64))
    return w.astype(np.float32)


# ----------------------------------------------------------------------------------------- targets


def check_target(name: str) -> str:
    if name not in TARGETS:
        raise MetapruneError(f"unknown target {name!r}; accepted: {', '.join(TARGETS)}")
    return name


def levels_to_go(targets: Mapping[str, np.ndarray], state: int = 0) -> np.ndarray:
    """Per weight alive in ``state``: the target level that removes it, counted from the state (1 = the
    next level; survivors ``levels + 1 - state``). int64."""
    return np.asarray(targets["target_round"]).astype(np.int64) - int(state)


def make_target(
    targets: Mapping[str, np.ndarray], kind: str, levels: int | None, state: int = 0
) -> np.ndarray:
    """The regression target in [0, 1] (float32) of the weights in ``targets`` (those alive in ``state``).

    ``round``: ``(target_round - state) / (levels + 1 - state)`` — the level of removal counted from the
    state; survivors get 1, and in state 0 it is ``target_round / (levels + 1)``. ``levels`` comes from the
    store's harvest config (None: the seed's largest round, which is ``levels + 1``). ``survive``: 1 when
    the weight outlives the next level (``target_round > state + 1``).
    """
    check_target(kind)
    if kind in DENSE_ONLY_TARGETS and int(state):
        raise MetapruneError(f"target {kind!r} exists only for the dense state; accepted: round, survive, mask")
    if kind == "mask":
        return np.asarray(targets["target_mask"]).astype(np.float32)
    if kind == "soft_mask":
        both = np.asarray(targets["target_mask"], dtype=np.float32) + np.asarray(targets["sibling_mask"], np.float32)
        return both / np.float32(2.0)
    if kind == "survive":
        return (levels_to_go(targets, state) > 1).astype(np.float32)
    if kind == "round":
        r = levels_to_go(targets, state).astype(np.float64)
        top = float(levels + 1 - int(state)) if levels is not None else float(r.max())
        if top <= 0:
            raise MetapruneError("target_round is 0 everywhere; the store's target looks empty")
        return (r / top).astype(np.float32)
    s = np.asarray(targets["target_score"]).astype(np.float64)
    if not np.isfinite(s).all():
        raise MetapruneError("target_score has non-finite values; accepted: --target round or mask")
    lo, hi = s.min(), s.max()
    return ((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)).astype(np.float32)
