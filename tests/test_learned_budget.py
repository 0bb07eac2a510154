"""The learned budget (``#learned``): hand-computed apportioning and target rows, the fitted split, refusals;
and the learned scorer's preprocessing over the alive weights of a masked network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaprune.datasets import load_dataset
from metaprune.errors import MetapruneError
from metaprune.fit import budget as bd
from metaprune.fit.core import FitConfig, fit_model
from metaprune.fit.persist import ModelCard
from metaprune.networks import build_network, prunable_layout
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import keep_count, layer_counts_of
from metaprune.pruning.method import parse_method
from tests.test_fit_helpers import DENSITY, NETWORK, tiny_store


def THESIS(**fields) -> FitConfig:  # noqa: N802 (reads as the config it builds)
    """The thesis's single-shot recipe: dense θ0 features, one shot (these tests pin that path)."""
    return FitConfig.for_recipe("thesis", **fields)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory, "main", tuple(range(6)))


@pytest.fixture(scope="module")
def model(store, tmp_path_factory):
    return fit_model(store, THESIS(model="linear", features="scores"), models_dir=tmp_path_factory.mktemp("m"))


def test_apportion_is_proportional_sums_exactly_and_respects_caps():
    assert bd.apportion(np.array([1.0, 1.0, 2.0]), 8, [10, 10, 10]) == [2, 2, 4]
    # the first layer is capped at 2: what it cannot take goes to the other
    assert bd.apportion(np.array([10.0, 1.0]), 5, [2, 10]) == [2, 3]
    # at least one weight per layer, however small its share
    assert bd.apportion(np.array([100.0, 0.0, 0.0]), 5, [10, 10, 10]) == [3, 1, 1]
    with pytest.raises(MetapruneError, match="at least one weight per layer.*only 2 weights of 3 layers"):
        bd.apportion(np.ones(3), 2, [5, 5, 5])


def test_target_rows_are_the_layers_relative_log_densities_after_each_level():
    # two layers of 4 and 2 weights; two levels at densities 0.5 and 0.25
    rounds = np.array([1, 2, 3, 3, 1, 3])
    rows = bd.target_rows(rounds, [(0, 4), (4, 2)], [2, 2], [2, 1], [0.5, 0.25])
    (x1, y1), (x2, y2) = rows
    # after level 1: layer 0 keeps 3 of 4, layer 1 keeps 1 of 2; after level 2: 2 of 4 and 1 of 2
    np.testing.assert_allclose(y1, [math.log(3.5 / 4) - math.log(0.5), math.log(1.5 / 2) - math.log(0.5)])
    np.testing.assert_allclose(y2, [math.log(2.5 / 4) - math.log(0.25), math.log(1.5 / 2) - math.log(0.25)])
    # features: log share, log fan-in, log fan-out, relative depth, is-last; each times log d and (log d)²;
    # log d, (log d)², 1
    ld = math.log(0.5)
    np.testing.assert_allclose(x1[1, :5], [math.log(2 / 6), math.log(2), 0.0, 1.0, 1.0])
    np.testing.assert_allclose(x1[1, 5:10], x1[1, :5] * ld)
    np.testing.assert_allclose(x1[1, 10:15], x1[1, :5] * ld * ld)
    np.testing.assert_allclose(x1[:, 15:], [[ld, ld * ld, 1.0]] * 2)


def test_the_fitted_budget_reproduces_the_targets_split(model, store):
    from metaprune.fit.stores import open_view

    card = ModelCard.read(model.path)
    assert card.meta["budget"]["rows"] == 5 * 2 * 3  # training seeds x levels x layers
    layout = prunable_layout(build_network(NETWORK, (1, 8, 8), 10, 0))
    counts = card.layer_budget(layout, DENSITY)
    assert sum(counts) == keep_count(DENSITY, layout.total) and min(counts) >= 1
    view = open_view(store)
    kept = np.mean(
        [layer_counts_of(torch.from_numpy(view.read_seed(s, ["magnitude"])[1]["target_mask"]), layout)
         for s in card.train_seeds],
        axis=0,
    )
    assert np.abs(np.array(counts) - kept).max() <= max(2.0, 0.15 * kept.max())


def test_learned_budget_prunes_with_those_counts_and_is_refused_where_it_means_nothing(model):
    splits = load_dataset("digits")
    ticket = prune_seeds(parse_method(f"learned:{model.path}#learned"), NETWORK, splits, DENSITY, (9,))[0]
    layout = prunable_layout(ticket.net)
    assert layer_counts_of(ticket.mask, layout) == ModelCard.read(model.path).layer_budget(layout, DENSITY)
    with pytest.raises(MetapruneError, match="'snip' has none; accepted: learned:DIR#learned"):
        parse_method("snip#learned")
    with pytest.raises(MetapruneError, match="learned budget .* was fitted on .* but this network has"):
        prune_seeds(parse_method(f"learned:{model.path}#learned"), "mlp:10-8", splits, DENSITY, (9,))


def test_a_masked_network_is_preprocessed_over_its_alive_weights(model):
    """Pruned weights are not part of the network the model scores: a min-max over the alive weights
    only, so the scores of the alive weights do not depend on what the dead weights' features were."""
    from metaprune.features import FEATURE_NAMES, compute_features
    from metaprune.fit.learned import cached_model
    from metaprune.fit.preprocess import alive_bounds, preprocess
    from metaprune.pruning.apply import prune_data_for
    from metaprune.pruning.scorers import score

    splits = load_dataset("digits")
    net = build_network(NETWORK, splits.input_shape, splits.num_classes, 9)
    data = prune_data_for(splits, 9)
    mask = torch.ones(944, dtype=torch.bool)
    mask[::4] = False
    s = score(f"learned:{model.path}", net, mask, data, 9)
    loaded = cached_model(model.path)
    feats = compute_features(net, data, 9, mask=mask, names=loaded.features, **loaded.card.feature_settings())
    cols = [FEATURE_NAMES.index(f) for f in loaded.features]
    alive = np.flatnonzero(mask.numpy())
    layout = prunable_layout(net)
    bounds = alive_bounds(alive, [(la.offset, la.size) for la in layout.layers])
    x = preprocess(feats.numpy()[alive][:, cols], "minmax", bounds)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(s.numpy()[alive], loaded.model.predict(x), rtol=1e-6)
    assert bool((s[~mask] == 0).all())
