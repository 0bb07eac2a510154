"""Metrics of a fitted scorer on held-out seeds.

R² and MSE (the thesis) pool all held-out weights; what pruning cares about is per seed: the Jaccard
overlap of the model's global top-k (k = the size of the seed's target ticket) with the target ticket, and
the Spearman rank correlation of the prediction with the target. Both are averaged over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from metaprune.pruning.masks import jaccard, topk_mask
from metaprune.ranking import spearman
from metaprune.seeds import generator

__all__ = ["RankingAccumulator", "RegressionAccumulator", "spearman", "topk_jaccard"]


def topk_jaccard(scores: np.ndarray, target_mask: np.ndarray, seed: int) -> float:
    """Jaccard overlap of the global top-k of ``scores`` with ``target_mask`` (k = its size).

    Ties at the threshold are broken by the seed's ``tie_break`` stream, exactly as pruning would.
    """
    target = torch.as_tensor(np.asarray(target_mask, dtype=bool))
    k = int(target.sum())
    s = torch.as_tensor(np.ascontiguousarray(scores, dtype=np.float32))
    keep = topk_mask(s, k, None, generator(seed, "tie_break"))
    return jaccard(keep, target)


@dataclass
class RegressionAccumulator:
    """Pooled R² and MSE over seeds streamed one at a time (exact, via per-seed mean and sum of squares)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations of y from the running mean
    sse: float = 0.0

    def add(self, y: np.ndarray, pred: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        p = np.asarray(pred, dtype=np.float64).reshape(-1)
        nb = y.size
        if nb == 0:
            return
        mb = float(y.mean())
        m2b = float(((y - mb) ** 2).sum())
        delta = mb - self.mean
        total = self.n + nb
        self.m2 += m2b + delta * delta * self.n * nb / total
        self.mean += delta * nb / total
        self.n = total
        self.sse += float(((y - p) ** 2).sum())

    @property
    def mse(self) -> float:
        return self.sse / self.n if self.n else float("nan")

    @property
    def r2(self) -> float:
        if not self.n:
            return float("nan")
        return 1.0 - self.sse / self.m2 if self.m2 > 0 else (1.0 if self.sse == 0 else 0.0)


@dataclass
class RankingAccumulator:
    """Per-seed top-k Jaccard and Spearman, for the model and for reference scores."""

    jaccard: list[float] = field(default_factory=list)
    spearman: list[float] = field(default_factory=list)

    def add(self, scores: np.ndarray, target: np.ndarray, target_mask: np.ndarray, seed: int) -> None:
        self.jaccard.append(topk_jaccard(scores, target_mask, seed))
        self.spearman.append(spearman(scores, target))

    def summary(self) -> dict:
        return {
            "jaccard": float(np.mean(self.jaccard)) if self.jaccard else float("nan"),
            "spearman": float(np.mean(self.spearman)) if self.spearman else float("nan"),
            "jaccard_per_seed": [float(v) for v in self.jaccard],
            "spearman_per_seed": [float(v) for v in self.spearman],
        }
