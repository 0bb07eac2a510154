"""LightGBM trees compiled to C give LightGBM's raw scores bit for bit (or are not used at all)."""

import shutil

import numpy as np
import pytest

from metaprune.fit.compiled_trees import compile_booster, supported, tree_source

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


def _booster(objective="regression", rows=3000, zeros=False, nans=False, **params):
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # few distinct values: rows equal to thresholds' neighbours
    if zeros:
        x[rng.random(rows) < 0.3, 1] = 0.0
    if nans:
        x[rng.random(rows) < 0.2, 2] = np.nan
    y = x[:, 0] - 2 * x[:, 1] * (x[:, 3] > 0) + rng.normal(scale=0.1, size=rows)
    if objective == "binary":
        y = (y > 0).astype(np.float64)
    base = {"objective": objective, "num_leaves": 15, "min_data_in_leaf": 5, "verbosity": -1, "seed": 0}
    booster = lgb.train({**base, **params}, lgb.Dataset(x, y), num_boost_round=25)
    return booster, x


@pytest.mark.parametrize(
    "objective, zeros, nans, params",
    [
        ("regression", False, False, {}),
        ("regression", True, True, {}),  # missing type NaN on column 2
        ("regression", True, False, {"zero_as_missing": True}),  # missing type Zero
        ("binary", False, True, {}),  # raw log-odds
    ],
)
def test_compiled_trees_equal_lightgbm_raw_scores_bit_for_bit(tmp_path, objective, zeros, nans, params):
    booster, x = _booster(objective, zeros=zeros, nans=nans, **params)
    compiled = compile_booster(booster, tmp_path)
    assert compiled is not None
    # the training rows, exact zeros and NaNs, and new rows on both sides of every threshold
    thresholds = [
        float(t) for tree in booster.dump_model()["tree_info"] for t in _thresholds(tree["tree_structure"])
    ]
    probe = np.repeat(x[:1], len(thresholds) * 3, axis=0)
    for i, t in enumerate(thresholds):
        for j, v in enumerate((t, np.nextafter(np.float32(t), np.float32(-np.inf)), np.float32(t) * 1.0)):
            probe[3 * i + j, i % x.shape[1]] = v
    tiny = np.full((2, 5), 5e-36, np.float32) * np.array([[1], [-1]], np.float32)  # read as 0 by LightGBM
    for rows in (x, probe, tiny, np.zeros((4, 5), np.float32), np.full((3, 5), np.nan, np.float32)):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        expected = booster.predict(rows, raw_score=True, num_threads=1)
        got = compiled.predict_raw(rows)
        assert got.dtype == np.float64 and (got.view(np.int64) == expected.view(np.int64)).all()


def _thresholds(node):
    if "leaf_value" in node:
        return []
    return [node["threshold"], *_thresholds(node["left_child"]), *_thresholds(node["right_child"])]


def test_compiled_library_is_cached_and_keyed_by_its_source(tmp_path):
    booster, x = _booster()
    first = compile_booster(booster, tmp_path)
    second = compile_booster(booster, tmp_path)
    assert first.library == second.library and len(list(tmp_path.glob("trees-*.so"))) == 1
    other, _ = _booster(num_leaves=7)
    assert compile_booster(other, tmp_path).library != first.library


def test_models_it_does_not_cover_keep_lightgbms_predictor(tmp_path):
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(500, 2)).astype(np.float32)
    y = x[:, 0] * 2.0 + rng.normal(size=500)
    params = {"objective": "regression", "verbosity": -1, "min_data_in_leaf": 5, "min_data_per_group": 5}
    categorical = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0]), num_boost_round=5)
    assert not supported(categorical.dump_model())
    assert compile_booster(categorical, tmp_path) is None
    multiclass = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1}, lgb.Dataset(x, (y > 2).astype(int) + (y > 5))
    )
    assert compile_booster(multiclass, tmp_path) is None


def test_source_of_a_one_split_tree_reads_as_lightgbms_rule():
    dump = {
        "max_feature_idx": 1,
        "tree_info": [
            {
                "tree_structure": {
                    "split_feature": 1,
                    "threshold": 0.25,
                    "decision_type": "<=",
                    "default_left": True,
                    "missing_type": "NaN",
                    "left_child": {"leaf_value": -1.5},
                    "right_child": {"leaf_value": 2.0},
                }
            }
        ],
    }
    src = tree_source(dump)
    assert "(isnan(x[1]) ? 1 : x[1] <= 0.25)" in src
    assert "return -1.5;" in src and "return 2.0;" in src
