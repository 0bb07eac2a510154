"""Paired statistics (thesis 4.3, done right): per density, every method against a reference method.

For each density and method: mean test accuracy with a 95 % t-interval over seeds, the paired
difference to the reference on the same seeds (same θ0, same data order), a paired t-test (or the
Wilcoxon signed-rank test), and Holm's correction across the methods compared at that density.

Gap closure (thesis 5.14, measured against the reference): for each ceiling present (``imp`` =
magnitude@iss, ``synflow@ims``), (method − reference) / (ceiling − reference) from the means over the
seeds all three share, with a seeded percentile-bootstrap interval over seeds. Sanity: a method whose
``!shuffle`` ablation was evaluated passes when the shuffled mask loses at least one point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from metaprune.evaluate.config import CEILINGS
from metaprune.pruning.method import Method, Unit, parse_units


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


N_BOOT = 2000
SANITY_MIN_LOSS = 0.01  # the shuffled mask must cost at least one accuracy point
_EPS = 1e-9  # accuracies are multiples of 1/n_test: a loss of exactly one point must pass


@dataclass(frozen=True)
class Gap:
    point: float
    lo: float
    hi: float
    degenerate: float  # fraction of resamples in which the ceiling did not beat the reference


def gap_closure(
    method: np.ndarray, reference: np.ndarray, ceiling: np.ndarray, seed: int, n_boot: int = N_BOOT, level=0.95
) -> Gap:
    """(method − reference) / (ceiling − reference) on paired per-seed values, percentile-bootstrap interval.

    Seeds are resampled with replacement (``numpy.random.default_rng(seed)``, the same indices for every
    method with the same number of seeds) and the ratio of means recomputed. A resample whose ceiling does
    not beat the reference (denominator ≤ 0) has no ratio: when such resamples are at most (1 − level) / 2
    of all they are dropped (they sit beyond the interval's tail); when more, the denominator's own
    interval reaches zero, the ratio's interval is unbounded and reported as NaN. The point estimate is
    NaN when the ceiling does not beat the reference on the means; the interval needs two seeds.
    """
    m, r, c = (np.asarray(v, dtype=float) for v in (method, reference, ceiling))
    n = m.size
    if n == 0:
        return Gap(math.nan, math.nan, math.nan, math.nan)
    denom = float(np.mean(c - r))
    point = float(np.mean(m - r)) / denom if denom > 0 else math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    num, den = (m - r)[idx].mean(axis=1), (c - r)[idx].mean(axis=1)
    ok = den > 0
    degenerate = float(1 - ok.mean())
    tail = (1 - level) / 2
    if n < 2 or math.isnan(point) or degenerate > tail:
        return Gap(point, math.nan, math.nan, degenerate)
    lo, hi = np.percentile(num[ok] / den[ok], [100 * tail, 100 * (1 - tail)])
    return Gap(point, float(lo), float(hi), degenerate)


def ceiling_column(columns, ceiling: Method, methods: Mapping[str, Unit]) -> str | None:
    """The evaluated method (among ``columns``, parsed in ``methods``) that is ``ceiling``: itself, or with
    its own rounds (``synflow@ims10``, the harvest target's 10 rounds per level); itself first."""
    if ceiling.canonical() in columns:
        return ceiling.canonical()
    for name in columns:
        m = methods.get(str(name))
        if isinstance(m, Method) and m.rounds is not None and replace(m, rounds=None) == ceiling:
            return str(name)
    return None


def _gap_fields(
    table: pd.DataFrame, method: str, reference: str, seed: int, n_boot: int, methods: Mapping[str, Unit]
) -> dict:
    out: dict = {}
    for c in CEILINGS:
        ceiling, stem = ceiling_column(table.columns, c.method, methods), c.stem
        if ceiling is None or reference not in table.columns:
            continue
        # by position: the method may be the reference or the ceiling itself
        m, r, c = (table[name].to_numpy(dtype=float) for name in (method, reference, ceiling))
        shared = ~(np.isnan(m) | np.isnan(r) | np.isnan(c))
        gap = gap_closure(m[shared], r[shared], c[shared], seed, n_boot)
        out.update({stem: gap.point, f"{stem}_lo": gap.lo, f"{stem}_hi": gap.hi})
    return out


def _ablation(method: Unit | None, ablation: str) -> str | None:
    """The spelling of ``method`` under ``ablation``; None for a dense unit or an ablated method."""
    if not isinstance(method, Method) or method.ablation is not None:
        return None
    return replace(method, ablation=ablation).canonical()


def _sanity_fields(table: pd.DataFrame, method: str, methods: Mapping[str, Unit]) -> dict:
    """Paired loss of each evaluated ablation against ``method``; the verdict rests on ``!shuffle``."""
    out: dict = {}
    for ablation in ("shuffle", "reinit"):
        other = _ablation(methods.get(method), ablation)
        if other is None or other not in table.columns:
            continue
        pair = table[[method, other]].dropna()
        loss, half = mean_ci((pair[method] - pair[other]).to_numpy())
        out.update({f"{ablation}_loss": loss, f"{ablation}_loss_ci95": half})
    if "shuffle_loss" in out:
        out["sanity"] = "pass" if out["shuffle_loss"] >= SANITY_MIN_LOSS - _EPS else "fail"
    return out


def compare(
    df: pd.DataFrame,
    reference: str | Method,
    test: str = "ttest",
    alpha: float = 0.05,
    metric: str = "test_acc",
    boot_seed: int = 0,
    n_boot: int = N_BOOT,
    methods: Mapping[str, Unit] | None = None,
) -> pd.DataFrame:
    """One row per (density, method): mean, CI, paired difference to ``reference``, p, Holm p, gap
    closure towards each ceiling present (``gap_imp``, ``gap_synflow_ims`` with ``_lo``/``_hi``), and the
    sanity columns (``shuffle_loss``, ``reinit_loss``, ``sanity``) where ablations were evaluated.
    ``methods``: the ``method`` column's spellings parsed (``method.parse_units``), when the caller has them."""
    reference = str(reference)
    # a name outside the grammar has no ceiling or ablation
    units = parse_units(df["method"].unique(), strict=False) if methods is None else methods
    rows = []
    for density, block in df.groupby("density", sort=True):
        table = block.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
        methods = list(table.columns)
        block_rows = [_method_row(table, density, m, reference, test) for m in methods]
        for row, p_adj in zip(block_rows, holm([r["p"] for r in block_rows]), strict=True):
            row["p_holm"] = p_adj
            row["significant"] = bool(p_adj < alpha) if not math.isnan(p_adj) else False
            row.update(_gap_fields(table, row["method"], reference, boot_seed, n_boot, units))
            row.update(_sanity_fields(table, row["method"], units))
        rows += block_rows
    out = pd.DataFrame(rows)
    out.attrs.update(reference=reference, test=test, alpha=alpha, metric=metric, boot_seed=boot_seed, n_boot=n_boot)
    return out


def _method_row(table: pd.DataFrame, density: float, m: str, reference: str, test: str) -> dict:
    vals = table[m].dropna().to_numpy()
    mean, half = mean_ci(vals)
    row = {"density": density, "method": m, "n": int(vals.size), "mean": mean, "ci95": half}
    row["std"] = float(np.std(vals, ddof=1)) if vals.size > 1 else math.nan
    if reference in table.columns and m != reference:
        pair = table[[m, reference]].dropna()
        diff = (pair[m] - pair[reference]).to_numpy()
        d_mean, d_half = mean_ci(diff)
        row.update(diff=d_mean, diff_ci95=d_half, p=paired_p(diff, test), n_pairs=int(diff.size))
        row["wins"] = int((diff > 0).sum())  # seeds on which the method beat the reference
    else:
        row.update(diff=math.nan, diff_ci95=math.nan, p=math.nan, n_pairs=0, wins=0)
    return row
