"""Paired statistics against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metaprune.evaluate.stats import compare, gap_closure, holm, mean_ci, paired_p


def test_mean_ci_is_the_t_interval():
    vals = np.array([0.80, 0.82, 0.85, 0.79])
    mean, half = mean_ci(vals)
    sd = math.sqrt(sum((v - 0.815) ** 2 for v in vals) / 3)
    assert mean == pytest.approx(0.815)
    assert half == pytest.approx(3.182446305284263 * sd / 2)  # t_{0.975, 3}


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    adj = holm([0.5, math.nan, 0.01])
    assert adj[0] == pytest.approx(0.5) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)


def test_paired_p_matches_scipy_and_degenerate_cases():
    a = np.array([0.9, 0.85, 0.88, 0.91, 0.87])
    b = np.array([0.88, 0.84, 0.85, 0.90, 0.86])
    assert paired_p(a - b, "ttest") == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p(a - b, "wilcoxon") == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert paired_p(np.zeros(4), "ttest") == 1.0
    assert math.isnan(paired_p(np.array([0.1]), "ttest"))


def _tidy(acc: dict, seeds=(3, 1, 2), density=0.01) -> pd.DataFrame:
    rows = []
    for method, vals in acc.items():
        for seed, v in zip(seeds, vals, strict=True):
            rows.append({"seed": seed, "method": method, "density": density, "test_acc": v})
    return pd.DataFrame(rows)


def test_compare_pairs_by_seed_and_reports_gap_closure_to_the_reference():
    acc = {
        "snip@uss": [0.80, 0.82, 0.81],
        "synflow@ums": [0.78, 0.80, 0.79],
        "magnitude@uss": [0.60, 0.61, 0.65],
        "magnitude@iss": [0.90, 0.91, 0.92],
        "grasp@uss": [0.85, 0.86, 0.87],
    }
    comp = compare(_tidy(acc), "snip@uss").set_index("method")
    assert comp.loc["grasp@uss", "diff"] == pytest.approx(0.05)
    assert comp.loc["magnitude@uss", "p"] == pytest.approx(
        stats.ttest_rel([0.60, 0.61, 0.65], [0.80, 0.82, 0.81]).pvalue
    )
    assert math.isnan(comp.loc["snip@uss", "p"])
    # per seed, imp − snip: 0.10, 0.09, 0.11 (mean 0.10); grasp − snip: 0.05, 0.04, 0.06 (mean 0.05)
    assert comp.loc["grasp@uss", "gap_imp"] == pytest.approx(0.05 / 0.10)
    # a ratio of resampled means lies between the per-seed ratios (a mediant); each single-seed
    # resample has probability 1/27 > 2.5 %, so the percentile interval is exactly their range
    assert comp.loc["grasp@uss", "gap_imp_lo"] == pytest.approx(0.04 / 0.09)
    assert comp.loc["grasp@uss", "gap_imp_hi"] == pytest.approx(0.06 / 0.11)
    assert comp.loc["synflow@ums", "gap_imp"] == pytest.approx(-0.02 / 0.10)
    for col in ("gap_imp", "gap_imp_lo", "gap_imp_hi"):
        assert comp.loc["snip@uss", col] == pytest.approx(0.0)
        assert comp.loc["magnitude@iss", col] == pytest.approx(1.0)
    assert "gap_synflow_ims" not in comp.columns  # that ceiling was not evaluated
    assert "gap_closed" not in comp.columns


def test_gap_closure_by_hand():
    # per seed: (method − ref) / (ceiling − ref) = 0.1/0.2, 0.1/0.4, 0.08/0.1 = 0.5, 0.25, 0.8
    ref = np.array([0.50, 0.40, 0.60])
    ceiling = np.array([0.70, 0.80, 0.70])
    method = np.array([0.60, 0.50, 0.68])
    gap = gap_closure(method, ref, ceiling, seed=0)
    assert gap.point == pytest.approx(0.28 / 0.70)
    assert (gap.lo, gap.hi) == pytest.approx((0.25, 0.8))
    assert gap.degenerate == 0.0
    assert gap_closure(method, ref, ceiling, seed=0) == gap  # seeded: the same numbers again
    # identical per-seed gaps (0.5): every resample gives 0.5, the interval collapses to the point
    same = gap_closure(np.array([0.60, 0.60, 0.65]), ref, ceiling, seed=7)
    assert (same.point, same.lo, same.hi) == pytest.approx((0.5, 0.5, 0.5))
    # one seed: a point, no interval
    one = gap_closure(method[:1], ref[:1], ceiling[:1], seed=0)
    assert one.point == pytest.approx(0.5) and math.isnan(one.lo) and math.isnan(one.hi)


def test_gap_closure_degenerate_denominators():
    ref = np.array([0.50, 0.50, 0.50])
    # the ceiling never beats the reference: no point, no interval
    none = gap_closure(np.array([0.6, 0.6, 0.6]), ref, np.array([0.5, 0.4, 0.45]), seed=0)
    assert math.isnan(none.point) and math.isnan(none.lo) and math.isnan(none.hi) and none.degenerate == 1.0
    # ceiling − ref = 0.1, 0.1, −0.15: the means give 0.05/3 > 0, but a resample with seed 3 at least
    # twice (probability 7/27) has a denominator ≤ 0 — far more than 2.5 %: the interval is unbounded
    mixed = gap_closure(np.array([0.55, 0.55, 0.55]), ref, np.array([0.6, 0.6, 0.35]), seed=0)
    assert mixed.point == pytest.approx(0.05 / (0.05 / 3))
    assert math.isnan(mixed.lo) and math.isnan(mixed.hi)
    assert mixed.degenerate == pytest.approx(7 / 27, abs=0.03)
    # ceiling − ref = 0.1, 0.1, 0.1, −0.01: only the all-seed-4 resample (1/256 < 2.5 %) is degenerate;
    # those resamples are dropped and the interval stays finite
    ref4 = np.full(4, 0.5)
    rare = gap_closure(np.full(4, 0.55), ref4, np.array([0.6, 0.6, 0.6, 0.49]), seed=0, n_boot=20000)
    assert 0 < rare.degenerate < 0.025 and rare.degenerate == pytest.approx(1 / 256, abs=0.002)
    assert math.isfinite(rare.lo) and math.isfinite(rare.hi) and rare.lo <= rare.point <= rare.hi


def test_sanity_verdict_from_the_shuffle_ablation():
    acc = {
        "snip@uss": [0.81, 0.82, 0.83],
        "snip@uss!shuffle": [0.80, 0.81, 0.82],  # loses exactly one point on every seed: pass
        "magnitude@uss": [0.70, 0.71, 0.72],
        "magnitude@uss!shuffle": [0.70, 0.705, 0.71],  # loses 0.5 points on average: fail
        "magnitude@uss!reinit": [0.60, 0.61, 0.62],
        "synflow@ums": [0.75, 0.75, 0.75],
        "synflow@ums!reinit": [0.70, 0.70, 0.70],  # no shuffle ablation: no verdict
    }
    comp = compare(_tidy(acc), "snip@uss").set_index("method")
    assert comp.loc["snip@uss", "sanity"] == "pass"
    assert comp.loc["snip@uss", "shuffle_loss"] == pytest.approx(0.01)
    assert comp.loc["magnitude@uss", "sanity"] == "fail"
    assert comp.loc["magnitude@uss", "shuffle_loss"] == pytest.approx(0.005)
    assert comp.loc["magnitude@uss", "reinit_loss"] == pytest.approx(0.10)
    assert comp.loc["synflow@ums", "reinit_loss"] == pytest.approx(0.05)
    assert pd.isna(comp.loc["synflow@ums", "sanity"]) and pd.isna(comp.loc["snip@uss!shuffle", "sanity"])
