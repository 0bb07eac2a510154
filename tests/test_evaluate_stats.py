"""Paired statistics against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metaprune.evaluate.stats import compare, holm, mean_ci, paired_p


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


def test_compare_pairs_by_seed_and_reports_gap_closed():
    rows = []
    acc = {
        "snip@uss": [0.80, 0.82, 0.81],
        "synflow@ums": [0.78, 0.80, 0.79],
        "magnitude@uss": [0.60, 0.61, 0.65],
        "magnitude@iss": [0.90, 0.91, 0.92],
        "x@uss": [0.85, 0.86, 0.87],
    }
    for method, vals in acc.items():
        for seed, v in zip([3, 1, 2], vals, strict=True):
            rows.append({"seed": seed, "method": method.replace("x@", "grasp@"), "density": 0.01, "test_acc": v})
    comp = compare(pd.DataFrame(rows), "snip@uss").set_index("method")
    # grasp@uss: constant +0.05 difference to snip -> p = 0
    assert comp.loc["grasp@uss", "diff"] == pytest.approx(0.05)
    assert comp.loc["magnitude@uss", "p"] == pytest.approx(
        stats.ttest_rel([0.60, 0.61, 0.65], [0.80, 0.82, 0.81]).pvalue
    )
    # best upfront baseline = grasp (0.86 mean), ceiling = imp (0.91): gap 0.05
    assert comp.loc["snip@uss", "gap_closed"] == pytest.approx((0.81 - 0.86) / 0.05)
    assert comp.loc["magnitude@iss", "gap_closed"] == pytest.approx(1.0)
    assert math.isnan(comp.loc["snip@uss", "p"])
