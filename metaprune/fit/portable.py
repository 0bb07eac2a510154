"""Portable features: derived from a network's stored features and its layer table, the same on any network.

A model fitted on one network reads raw values (a fan-in of 784, a SynFlow score of 1e-9) that mean
nothing on another. The portable features (``fit --features portable``) are ranks, quantiles and
layer descriptors, so a model fitted across a family of networks can score a network it never saw:

- ``rank_<score>`` (stored): the weight's rank within its layer, for magnitude, snip, grasp, grasp_abs,
  synflow;
- ``net_q_<score>``: the weight's rank among all alive weights of the network, scaled to [0, 1];
- ``layer_q_<unit feature>``: the rank within its layer of the max/mean activation of the weight's input
  and output unit (``in_act_max`` ...), scaled to [0, 1];
- ``rel_depth`` (depth / (layers − 1); 0 for one layer), ``is_last`` (1 for the last prunable layer),
  ``log_fan_in``, ``log_fan_out`` (natural logs of the layer's fans), ``log_share`` (log of the layer's
  share of the network's prunable weights), ``log_density`` (log of the fraction of the network's weights
  alive in the state being scored: 0 on θ0, the current density inside a multi-shot prune).

They are computed from the stored columns (``depth``, ``fan_in``, ``fan_out``, ``layer_size``, the scores
and activations) when a store is read (``fit``) and from the same columns when a network is scored
(``learned:``), by :func:`assemble`, over the alive weights only: one implementation, no skew, and no
store needs re-harvesting. Scaling is their own: a model reading them is fitted with ``--preprocess none``
(a per-network min-max would undo what makes them portable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.feature_names import DERIVED_FEATURES, PORTABLE_DESCRIPTORS
from metaprune.ranking import layer_ranks

STRUCTURE_INPUTS = ("depth", "fan_in", "fan_out", "layer_size")


def inputs_of(name: str) -> tuple[str, ...]:
    """The stored columns a feature is computed from (itself when it is stored)."""
    if name in PORTABLE_DESCRIPTORS:
        return STRUCTURE_INPUTS
    for prefix in ("net_q_", "layer_q_"):
        if name.startswith(prefix) and name in DERIVED_FEATURES:
            return (name[len(prefix) :],)
    return (name,)


def stored_columns(features: Sequence[str]) -> tuple[str, ...]:
    """The stored columns ``features`` need, in first-use order."""
    return tuple(dict.fromkeys(c for f in features for c in inputs_of(f)))


def derivable(stored: Sequence[str]) -> tuple[str, ...]:
    """The derived features whose inputs are among the ``stored`` names: what a fit may select beside them."""
    have = set(stored)
    return tuple(d for d in DERIVED_FEATURES if set(inputs_of(d)) <= have)


def uses_derived(features: Sequence[str]) -> bool:
    return any(f in DERIVED_FEATURES for f in features)


def check_preprocess(features: Sequence[str], preprocess: str) -> None:
    """Portable descriptors keep their meaning only unscaled: one line otherwise."""
    derived = [f for f in features if f in DERIVED_FEATURES]
    if derived and preprocess != "none":
        raise MetapruneError(
            f"feature {derived[0]} means the same on every network only unscaled, but --preprocess is "
            f"{preprocess!r}; accepted: --preprocess none with portable features"
        )


def assemble(
    features: Sequence[str],
    columns: Sequence[str],
    raw: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    total: int,
) -> np.ndarray:
    """The matrix of ``features`` [alive rows, len(features)] float32 from the stored ``columns`` of the
    alive rows (``raw``, as ``stored_columns(features)`` names them), the alive rows' per-layer ``bounds``
    (every layer of the network, empty ones included) and the network's ``total`` prunable weights."""
    col = {name: np.asarray(raw[:, i], dtype=np.float64) for i, name in enumerate(columns)}
    n = raw.shape[0]
    out = np.empty((n, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        if name in PORTABLE_DESCRIPTORS:
            out[:, j] = _descriptor(name, col, len(bounds), n, total)
        elif name.startswith("net_q_") and name in DERIVED_FEATURES:
            out[:, j] = layer_ranks(col[inputs_of(name)[0]], [(0, n)])
        elif name.startswith("layer_q_") and name in DERIVED_FEATURES:
            out[:, j] = layer_ranks(col[inputs_of(name)[0]], bounds)
        else:
            out[:, j] = col[name]
    return out


def _descriptor(name: str, col: dict[str, np.ndarray], layers: int, rows: int, total: int) -> np.ndarray:
    if name == "rel_depth":
        return col["depth"] / (layers - 1) if layers > 1 else np.zeros(rows)
    if name == "is_last":
        return (col["depth"] == layers - 1).astype(np.float64)
    if name == "log_fan_in":
        return np.log(np.maximum(col["fan_in"], 1.0))
    if name == "log_fan_out":
        return np.log(np.maximum(col["fan_out"], 1.0))
    if name == "log_share":
        return np.log(col["layer_size"] / float(total))
    return np.full(rows, math.log(max(rows, 1) / float(total)))  # log_density
