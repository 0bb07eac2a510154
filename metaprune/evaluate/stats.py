"""Paired statistics (thesis 4.3, done right): per density, every method against a reference method.

For each density and method: mean test accuracy with a 95 % t-interval over seeds, the paired
difference to the reference on the same seeds (same θ0, same data order), a paired t-test (or the
Wilcoxon signed-rank test), and Holm's correction across the methods compared at that density.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from metaprune.evaluate.config import BASELINES, CEILINGS
from metaprune.pruning.method import parse_method


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its t-interval (NaN half-width for fewer than two values)."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, half


def paired_p(diff: np.ndarray, test: str) -> float:
    diff = np.asarray(diff, dtype=float)
    if diff.size < 2:
        return math.nan
    if np.allclose(diff, 0):
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
    if np.allclose(diff, diff[0]):
        return 0.0  # a constant non-zero difference: the t statistic is infinite
    return float(stats.ttest_1samp(diff, 0.0).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _upfront_baseline(method: str) -> bool:
    try:
        m = parse_method(method)
    except Exception:
        return False
    canon = {parse_method(b).canonical() for b in BASELINES}
    return m.canonical() in canon


def compare(
    df: pd.DataFrame, reference: str, test: str = "ttest", alpha: float = 0.05, metric: str = "test_acc"
) -> pd.DataFrame:
    """One row per (density, method): mean, CI, paired difference to ``reference``, p, Holm p, gap closed."""
    rows = []
    ceilings = {parse_method(c).canonical() for c in CEILINGS}
    for density, block in df.groupby("density", sort=True):
        table = block.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
        methods = list(table.columns)
        ref = table[reference] if reference in table.columns else None
        means = {m: float(table[m].mean()) for m in methods}
        upfront = [means[m] for m in methods if _upfront_baseline(m)]
        ceil = [means[m] for m in methods if m in ceilings]
        best_upfront = max(upfront) if upfront else math.nan
        ceiling = max(ceil) if ceil else math.nan
        gap = ceiling - best_upfront
        pvals = []
        for m in methods:
            vals = table[m].dropna().to_numpy()
            mean, half = mean_ci(vals)
            row = {"density": density, "method": m, "n": int(vals.size), "mean": mean, "ci95": half}
            row["std"] = float(np.std(vals, ddof=1)) if vals.size > 1 else math.nan
            if ref is not None and m != reference:
                pair = table[[m, reference]].dropna()
                diff = (pair[m] - pair[reference]).to_numpy()
                d_mean, d_half = mean_ci(diff)
                row.update(diff=d_mean, diff_ci95=d_half, p=paired_p(diff, test), n_pairs=int(diff.size))
            else:
                row.update(diff=math.nan, diff_ci95=math.nan, p=math.nan, n_pairs=0)
            row["gap_closed"] = (mean - best_upfront) / gap if gap > 0 else math.nan
            pvals.append(row["p"])
            rows.append(row)
        adjusted = holm(pvals)
        for row, p_adj in zip(rows[len(rows) - len(methods) :], adjusted, strict=True):
            row["p_holm"] = p_adj
            row["significant"] = bool(p_adj < alpha) if not math.isnan(p_adj) else False
    out = pd.DataFrame(rows)
    out.attrs.update(reference=reference, test=test, alpha=alpha, metric=metric)
    return out
