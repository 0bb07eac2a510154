"""Ranks and rank correlations on NumPy arrays: the one per-layer rank and the one Spearman correlation.

Per-layer ranks are a feature (``rank_<score>``, ``features``) and a preprocessing (``fit --preprocess
rank``); Spearman's rho scores a fitted model (``fit.metrics``) and a store's features (``inspect``).
Ranks are average ranks (ties share the mean of their places), as ``scipy.stats.rankdata`` gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of ``x`` [n] or of every column of ``x`` [n, F]; float64.

    scipy's ``rankdata``: 2-3x faster than a stable argsort and unique in torch (a multi-shot learned
    scorer ranks every round), and its ranks are integers or halves, exact in float64."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(x), axis=0, method="average").astype(np.float64, copy=False)


def layer_ranks(x: np.ndarray, layers: Sequence[tuple[int, int]]) -> np.ndarray:
    """The rank of every value within its layer, scaled to [0, 1] (0 = lowest): float64 like ``x``.

    ``x`` is [n] or [n, F] (each column ranked on its own); ``layers`` gives (offset, size) of every layer
    on the flat weight axis and must cover its n rows. Ties get their average rank, so a layer-constant
    value ranks 0.5, and so does the only weight of a one-weight layer. Ranks are integers or halves, so
    ``(rank - 1) / (size - 1)`` is the same whatever the input's dtype.
    """
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.float64)
    covered = 0
    for offset, size in layers:
        part = slice(offset, offset + size)
        out[part] = 0.5 if size == 1 else (ranks(x[part]) - 1.0) / (size - 1)
        covered += size
    if covered != x.shape[0]:
        from metaprune.errors import MetapruneError

        raise MetapruneError(f"layer table covers {covered} weights but there are {x.shape[0]} values")
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Pearson's r of ``x`` [n] with ``y`` [n] (a float), of every column of ``x`` [n, F] with ``y`` (an [F]
    array); ``y`` [n, T] adds a last axis, one entry per column of ``y``. NaN where either side is
    constant: a constant has no correlation."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:
        return np.stack([np.asarray(pearson(x, y[:, t])) for t in range(y.shape[1])], axis=-1)
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    num = (xc * yc).sum() if x.ndim == 1 else xc.T @ yc
    den = np.sqrt((xc * xc).sum(axis=0) * (yc * yc).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(r) if x.ndim == 1 else r


def spearman(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Spearman's rank correlation: Pearson's r of the average ranks (``ranks``) of ``x`` and ``y``, with
    the shapes of ``pearson`` (every column of ``x`` [n, F] with every column of ``y`` [n, T]: ``x`` is
    ranked once). A side that is constant (all values tied) has no rank correlation: the answer is NaN,
    never 0 (which would claim "unrelated").
    """
    return pearson(ranks(x), ranks(y))
