"""Fit pieces that need no store: metrics, preprocessing, splits, models, persistence, tampering."""

from __future__ import annotations

import fractions
import json

import numpy as np
import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.fit import preprocess as pp
from metaprune.fit.metrics import RegressionAccumulator, spearman, topk_jaccard
from metaprune.fit.models import REGRESSORS, make_regressor, skops_load
from metaprune.fit.persist import load_model, save_model
from metaprune.fit.split import split_seeds
from metaprune.pruning.masks import jaccard, topk_mask
from metaprune.seeds import generator


class SynthData:
    """A TrainData of a few synthetic 'seeds' with a learnable target in [0, 1]."""

    def __init__(self, n_seeds: int = 3, n: int = 3000, f: int = 5) -> None:
        rng = np.random.default_rng(0)
        self.xs = [rng.random((n, f), dtype=np.float32) for _ in range(n_seeds)]
        w = rng.normal(size=f) * 3
        self.ys = [(1 / (1 + np.exp(-(x - 0.5) @ w))).astype(np.float32) for x in self.xs]
        self.n_features = f
        self.rows = n * n_seeds

    def passes(self, n, *, shuffle=True):
        for p in range(n):
            for x, y in zip(self.xs, self.ys, strict=True):
                yield p, x, y

    def sample(self, max_rows):
        x, y = np.concatenate(self.xs), np.concatenate(self.ys)
        return x[:max_rows], y[:max_rows]

    def weighted_passes(self, n, *, shuffle=True):
        for p, x, y in self.passes(n, shuffle=shuffle):
            yield p, x, y, None

    def weighted_sample(self, max_rows):
        return (*self.sample(max_rows), None)

    def report(self, stage, done, total):
        pass


FAST = {
    "sgd": {"epochs": 2},
    "forest": {"n_estimators": 5, "jobs": 1},
    "mlp": {"epochs": 2, "device": "cpu"},
    "lightgbm": {"rounds": 20, "jobs": 1},
}


# ------------------------------------------------------------------------------------------ metrics


def test_topk_jaccard_on_hand_made_arrays():
    target = np.array([1, 1, 0, 0, 0, 0], dtype=bool)  # k = 2
    assert topk_jaccard(np.array([9, 8, 1, 2, 3, 4.0]), target, 0) == 1.0
    # top-2 = {0, 5}: intersection 1, union 3
    assert topk_jaccard(np.array([9, 1, 2, 3, 4, 8.0]), target, 0) == pytest.approx(1 / 3)
    assert topk_jaccard(np.array([0, 0, 1, 2, 3, 4.0]), target, 0) == 0.0


def test_topk_jaccard_matches_masks_module_and_breaks_ties_by_seed():
    scores = np.ones(10, dtype=np.float32)  # all tied: the tie-break stream decides
    target = np.zeros(10, dtype=bool)
    target[:3] = True
    keep = topk_mask(torch.ones(10), 3, None, generator(5, "tie_break"))
    assert topk_jaccard(scores, target, 5) == pytest.approx(jaccard(keep, torch.from_numpy(target)))


def test_spearman_on_hand_made_arrays():
    a = np.array([1, 2, 3, 4, 5.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(5))) and np.isnan(spearman(np.ones(5), a))  # a constant: no correlation
    # ties get average ranks: ranks of b are 1.5, 1.5, 3, 4, 5
    b = np.array([1, 1, 2, 3, 4.0])
    ra, rb = np.array([1, 2, 3, 4, 5.0]), np.array([1.5, 1.5, 3, 4, 5])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    # columns: every column of x against every column of y, x ranked once; a constant column is NaN
    x = np.stack([a, -a, np.ones(5)], axis=1)
    r = spearman(x, np.stack([a, b], axis=1))
    assert r.shape == (3, 2) and r[0, 0] == pytest.approx(1.0) and r[1, 1] == pytest.approx(-expected)
    assert np.isnan(r[2]).all()


def test_layer_ranks_by_hand():
    from metaprune.ranking import layer_ranks

    # layers of 1, 3 and 2 values; ties share their average place; a one-value layer ranks 0.5
    x = np.array([7.0, 3.0, 1.0, 3.0, 5.0, 5.0])
    assert layer_ranks(x, [(0, 1), (1, 3), (4, 2)]).tolist() == [0.5, 0.75, 0.0, 0.75, 0.5, 0.5]
    cols = layer_ranks(np.stack([x, -x], axis=1), [(0, 1), (1, 3), (4, 2)])
    assert cols[:, 1].tolist() == [0.5, 0.25, 1.0, 0.25, 0.5, 0.5]
    with pytest.raises(MetapruneError, match="covers 4 weights but there are 6"):
        layer_ranks(x, [(0, 1), (1, 3)])


def test_pooled_r2_and_mse_equal_the_concatenated_ones():
    from sklearn.metrics import mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    ys = [rng.random(50) + i for i in range(3)]
    ps = [y + rng.normal(0, 0.3, y.size) for y in ys]
    acc = RegressionAccumulator()
    for y, p in zip(ys, ps, strict=True):
        acc.add(y, p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert acc.r2 == pytest.approx(r2_score(y, p))
    assert acc.mse == pytest.approx(mean_squared_error(y, p))


# ------------------------------------------------------------------------------------ preprocessing


def test_minmax_per_network_and_constant_features():
    x = np.array([[0, 5, 1], [5, 5, 2], [10, 5, 3.0]])
    out = pp.preprocess(x, "minmax")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0, 0.5, 1])
    np.testing.assert_allclose(out[:, 1], [0, 0, 0])  # constant -> 0


def test_rank_is_per_layer_with_average_ties():
    x = np.array([[3.0], [1.0], [2.0], [7.0], [7.0]])
    out = pp.preprocess(x, "rank", [(0, 3), (3, 2)])
    np.testing.assert_allclose(out[:, 0], [1.0, 0.0, 0.5, 0.5, 0.5])


def test_quantile_is_the_rank_over_the_whole_network_and_rank_the_rank_within_each_layer():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 0.0], [10.0, 1.0]])
    # column 0 ranks 1, 3, 2, 4 of 4 -> (r - 1) / 3; column 1: the two 5s tie at rank 3.5
    expected = np.array([[0, 2.5 / 3], [2 / 3, 2.5 / 3], [1 / 3, 0], [1, 1 / 3]], dtype=np.float32)
    np.testing.assert_allclose(pp.preprocess(x, "quantile"), expected, rtol=0, atol=1e-7)
    # layers [0] and [1, 2, 3]: a one-weight layer gets 0.5; the rest rank within their layer
    within = np.array([[0.5, 0.5], [0.5, 1.0], [0.0, 0.0], [1.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(pp.preprocess(x, "rank", [(0, 1), (1, 3)]), within)


def test_preprocess_refuses_non_finite_naming_the_feature():
    x = np.array([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(MetapruneError, match="snip"):
        pp.preprocess(x, "minmax", names=["magnitude", "snip"])
    with pytest.raises(MetapruneError, match="accepted: minmax, rank, quantile, none"):
        pp.preprocess(x, "zscore")


def test_targets():
    t = {
        "target_round": np.array([0, 1, 3, 3]),
        "target_mask": np.array([0, 0, 1, 1], dtype=bool),
        "target_score": np.array([2.0, 4.0, 6.0, 6.0]),
    }
    np.testing.assert_allclose(pp.make_target(t, "round", 2), [0, 1 / 3, 1, 1])
    np.testing.assert_allclose(pp.make_target(t, "mask", 2), [0, 0, 1, 1])
    np.testing.assert_allclose(pp.make_target(t, "score", 2), [0, 0.5, 1, 1])
    with pytest.raises(MetapruneError, match="accepted: round, survive, mask, score"):
        pp.make_target(t, "rank", 2)


def test_per_state_targets_count_levels_from_the_state():
    """A 3-level target: removed at levels 1, 2, 3, two survivors (round 4). In state 1 (after one level)
    the weight removed at level 1 is gone; the others are removed 1, 2 levels later or survive (3 = L + 1 - s)."""
    rounds = np.array([1, 2, 3, 4, 4])
    t0 = {"target_round": rounds, "target_mask": rounds == 4}
    np.testing.assert_allclose(pp.make_target(t0, "round", 3), [1 / 4, 2 / 4, 3 / 4, 1, 1])
    np.testing.assert_allclose(pp.make_target(t0, "survive", 3), [0, 1, 1, 1, 1])
    alive = rounds > 1
    t1 = {k: v[alive] for k, v in t0.items()}
    np.testing.assert_array_equal(pp.levels_to_go(t1, 1), [1, 2, 3, 3])
    np.testing.assert_allclose(pp.make_target(t1, "round", 3, state=1), [1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(pp.make_target(t1, "survive", 3, state=1), [0, 1, 1, 1])
    with pytest.raises(MetapruneError, match="only for the dense state"):
        pp.make_target({**t1, "target_score": np.ones(4)}, "score", 3, state=1)


def test_balanced_sample_weights_give_every_removal_level_the_same_total():
    levels = np.array([1, 1, 1, 1, 2, 2, 3])
    w = pp.sample_weights(levels, "balanced")
    totals = [w[levels == v].sum() for v in (1, 2, 3)]
    np.testing.assert_allclose(totals, [7 / 3] * 3, rtol=1e-6)
    assert pp.sample_weights(levels, "none") is None
    with pytest.raises(MetapruneError, match="accepted: none, balanced"):
        pp.sample_weights(levels, "late")


def test_alive_bounds_are_each_layers_rows_among_the_alive():
    # layers of 3, 2 and 4 weights; alive: 0, 2 | (none) | 5, 8
    assert pp.alive_bounds(np.array([0, 2, 5, 8]), [(0, 3), (3, 2), (5, 4)]) == [(0, 2), (2, 0), (2, 2)]


def test_resolve_features_by_group_name_and_all():
    avail = ("magnitude", "snip", "depth", "fan_in", "weight")
    groups = {"scores": ("magnitude", "snip", "grasp"), "structure": ("depth", "fan_in")}
    assert pp.resolve_features("scores", avail, groups) == ("magnitude", "snip")
    assert pp.resolve_features("structure+magnitude", avail, groups) == ("magnitude", "depth", "fan_in")
    assert pp.resolve_features("weight,snip", avail, groups) == ("snip", "weight")
    assert pp.resolve_features("all", avail, groups) == avail
    with pytest.raises(MetapruneError, match="the store has: magnitude, snip, depth, fan_in, weight"):
        pp.resolve_features("scores+nope", avail, groups)
    with pytest.raises(MetapruneError, match="empty item"):
        pp.resolve_features("scores++snip", avail, groups)


# ------------------------------------------------------------------------------------------- splits


def test_default_split_holds_out_the_last_quarter():
    assert split_seeds(range(8), None, None) == ((0, 1, 2, 3, 4, 5), (6, 7))
    assert split_seeds(range(3), None, None) == ((0, 1), (2,))
    assert split_seeds(range(8), "0-2", None) == ((0, 1, 2), (3, 4, 5, 6, 7))
    assert split_seeds(range(8), None, "0") == ((1, 2, 3, 4, 5, 6, 7), (0,))


def test_split_errors():
    with pytest.raises(MetapruneError, match="in both --train-seeds and --test-seeds"):
        split_seeds(range(8), "0-4", "4-7")
    with pytest.raises(MetapruneError, match="too few complete seeds to hold any out"):
        split_seeds([3], None, None)
    with pytest.raises(MetapruneError, match="not complete"):
        split_seeds(range(4), "0-9", None)
    with pytest.raises(MetapruneError, match="no seed left to test on"):
        split_seeds(range(4), "0-3", None)


# ------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["linear", "sgd", "tree", "forest", "mlp", "lightgbm"])
def test_models_fit_predict_and_round_trip(name, tmp_path):
    data = SynthData()
    model = make_regressor(name, FAST.get(name, {}), 0, data.n_features)
    model.fit(data)
    pred = model.predict(data.xs[0])
    assert pred.shape == (3000,) and pred.dtype == np.float32
    assert np.corrcoef(pred, data.ys[0])[0, 1] > 0.5  # it learned something
    meta = {"model": name, "features": [f"f{i}" for i in range(5)], "options": model.options}
    path = save_model(model, meta, tmp_path / name)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.model.predict(data.xs[0]), pred)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left beside the model


def test_unknown_options_and_objectives():
    with pytest.raises(MetapruneError, match="has no option 'depth'"):
        make_regressor("tree", {"depth": 3}, 0, 3)
    with pytest.raises(MetapruneError, match="accepted: regression, cross_entropy, binary, lambdarank"):
        make_regressor("lightgbm", {"objective": "rank_xendcg"}, 0, 3)
    with pytest.raises(MetapruneError, match="accepted: mse, bce"):
        make_regressor("mlp", {"loss": "huber"}, 0, 3)
    with pytest.raises(MetapruneError, match="accepted: linear, sgd, tree, forest, lightgbm, mlp"):
        make_regressor("svm", {}, 0, 3)
    assert set(REGRESSORS.names()) == {"linear", "sgd", "tree", "forest", "mlp", "lightgbm"}


def test_lightgbm_cross_entropy_predicts_probabilities():
    data = SynthData()
    model = make_regressor("lightgbm", {"objective": "cross_entropy", "rounds": 10, "jobs": 1}, 0, 5)
    model.fit(data)
    pred = model.predict(data.xs[1])
    assert pred.min() >= 0 and pred.max() <= 1


# ------------------------------------------------------------------------------------- persistence


def _saved(tmp_path, name="linear"):
    data = SynthData(n_seeds=1, n=500)
    model = make_regressor(name, FAST.get(name, {}), 0, data.n_features)
    model.fit(data)
    meta = {"model": name, "features": [f"f{i}" for i in range(5)], "options": model.options}
    return save_model(model, meta, tmp_path / "m"), model, data


def test_existing_name_refused_without_force(tmp_path):
    path, model, _ = _saved(tmp_path)
    before = (path / "meta.json").read_text()
    with pytest.raises(MetapruneError, match="--force"):
        save_model(model, {"model": "linear", "features": ["a"] * 5, "options": {}}, path)
    assert (path / "meta.json").read_text() == before
    save_model(model, {"model": "linear", "features": [f"g{i}" for i in range(5)], "options": {}}, path, force=True)
    assert json.loads((path / "meta.json").read_text())["features"][0] == "g0"


def test_flipped_payload_byte_is_a_sha_mismatch(tmp_path):
    path, _, _ = _saved(tmp_path, "mlp")
    payload = path / "model.safetensors"
    raw = bytearray(payload.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    payload.write_bytes(bytes(raw))
    with pytest.raises(MetapruneError, match="sha256"):
        load_model(path)


def test_unknown_format_and_missing_meta(tmp_path):
    path, _, _ = _saved(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    meta["payload"]["format"] = "pickle"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MetapruneError, match="payload format 'pickle'"):
        load_model(path)
    (path / "meta.json").unlink()
    with pytest.raises(MetapruneError, match="not a model folder"):
        load_model(path)


def test_skops_with_a_type_outside_the_allow_list_is_refused(tmp_path):
    """Even with a matching sha256 (an attacker rewrote meta.json too), skops' allow-list refuses."""
    import hashlib

    import skops.io as sio

    path, model, _ = _saved(tmp_path)
    est = model.estimator
    est.extra_ = fractions.Fraction(1, 3)  # any type not on the allow-list
    payload = path / "model.skops"
    sio.dump(est, payload)
    meta = json.loads((path / "meta.json").read_text())
    meta["payload"]["sha256"] = hashlib.sha256(payload.read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MetapruneError, match="fractions.Fraction"):
        load_model(path)
    with pytest.raises(MetapruneError, match="outside the allow-list"):
        skops_load(payload, "sklearn.linear_model._base.LinearRegression")


def test_a_saturating_sigmoid_ranks_by_its_logit():
    """float32 sigmoid(20) == sigmoid(30) == 1.0: a scorer ranking by the probability would tie them."""
    import torch

    model = make_regressor("mlp", {"hidden": "2", "device": "cpu"}, 0, 1)
    model.net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model.net[0].weight.fill_(10.0)
        model.net[0].bias.zero_()
    x = np.array([[2.0], [3.0], [-1.0]], dtype=np.float32)
    assert model.predict(x)[0] == model.predict(x)[1] == 1.0
    np.testing.assert_allclose(model.rank_scores(x), [20.0, 30.0, -10.0])


def test_lightgbm_ranks_probability_objectives_by_their_log_odds():
    data = SynthData()
    model = make_regressor("lightgbm", {"objective": "cross_entropy", "rounds": 10, "jobs": 1}, 0, 5)
    model.fit(data)
    p = model.predict(data.xs[0]).astype(np.float64)
    np.testing.assert_allclose(model.rank_scores(data.xs[0]), np.log(p / (1 - p)), rtol=1e-3, atol=1e-3)


def test_an_mlp_ensemble_is_its_members_trained_apart_and_predicts_their_mean():
    """Members share the batches but not the loss: member 0 of an ensemble is the one-member MLP of the same
    seed (Adam is element-wise on the stacked weights); the ensemble predicts the members' mean output and
    ranks by their mean logit."""
    import torch

    data = SynthData()
    one = make_regressor("mlp", {"epochs": 2, "device": "cpu", "members": 1, "max_rows": 5000}, 7, data.n_features)
    three = make_regressor("mlp", {"epochs": 2, "device": "cpu", "members": 3, "max_rows": 5000}, 7, data.n_features)
    one.fit(data)
    three.fit(data)
    for w1, w3 in zip([*one.net.weights, *one.net.biases], [*three.net.weights, *three.net.biases], strict=True):
        torch.testing.assert_close(w3[0], w1[0], rtol=1e-5, atol=1e-6)  # bmm vs a 1-member bmm: rounding only
    assert not torch.equal(three.net.weights[0][0], three.net.weights[0][1])  # the other inits differ
    x = data.xs[0][:50]
    with torch.no_grad():
        logits = three.net.member_logits(torch.from_numpy(x))
    np.testing.assert_allclose(three.predict(x), torch.sigmoid(logits).mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(three.rank_scores(x), logits.mean(0).numpy(), rtol=1e-6)
    assert three.rows_used == 5000
