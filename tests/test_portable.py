"""Portable features and one model fitted across networks: definitions on a hand-made layer table, no
fit/prune skew, the card's stores, the per-layer budget across layouts, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaprune.datasets import load_dataset
from metaprune.errors import MetapruneError
from metaprune.fit import portable
from metaprune.fit.core import FitConfig, fit_model
from metaprune.fit.persist import ModelCard
from metaprune.fit.preprocess import resolve_features
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import jaccard, keep_count
from metaprune.pruning.method import parse_method
from tests.test_fit_helpers import DENSITY, NETWORK, run_main, tiny_store

OTHER, OTHER_DENSITY = "mlp:10", 0.2  # a second network, harvested at its own density
UNSEEN = "mlp:10-8"  # a network neither store holds


def test_assemble_by_hand():
    # a 10-weight network of two layers: 3 weights alive in layer 0 (fan-in 4, fan-out 2, 8 weights), 2 in
    # layer 1 (fan-in 2, fan-out 1, 2 weights); 5 alive of 10
    columns = ("depth", "fan_in", "fan_out", "layer_size", "snip", "in_act_mean")
    raw = np.array(
        [
            [0, 4, 2, 8, 0.3, 1.0],
            [0, 4, 2, 8, 0.1, 3.0],
            [0, 4, 2, 8, 0.2, 2.0],
            [1, 2, 1, 2, 0.5, 7.0],
            [1, 2, 1, 2, 0.0, 5.0],
        ],
        dtype=np.float32,
    )
    names = ("rel_depth", "is_last", "log_fan_in", "log_fan_out", "log_share", "log_density", "net_q_snip",
             "layer_q_in_act_mean", "snip")  # fmt: skip
    assert portable.stored_columns(names) == ("depth", "fan_in", "fan_out", "layer_size", "snip", "in_act_mean")
    x = portable.assemble(names, columns, raw, [(0, 3), (3, 2)], total=10)
    expected = np.array(
        [
            [0, 0, math.log(4), math.log(2), math.log(0.8), math.log(0.5), 3 / 4, 0.0, 0.3],
            [0, 0, math.log(4), math.log(2), math.log(0.8), math.log(0.5), 1 / 4, 1.0, 0.1],
            [0, 0, math.log(4), math.log(2), math.log(0.8), math.log(0.5), 2 / 4, 0.5, 0.2],
            [1, 1, math.log(2), 0.0, math.log(0.2), math.log(0.5), 4 / 4, 1.0, 0.5],
            [1, 1, math.log(2), 0.0, math.log(0.2), math.log(0.5), 0 / 4, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-7)


def test_derivable_only_from_stored_columns_and_never_part_of_all():
    stored = ("depth", "fan_in", "fan_out", "layer_size", "snip")
    have = portable.derivable(stored)
    assert "log_fan_in" in have and "net_q_snip" in have
    assert "net_q_magnitude" not in have and "layer_q_in_act_max" not in have
    assert resolve_features("all", stored, derived=have) == stored
    assert resolve_features("snip,net_q_snip", stored, derived=have) == ("snip", "net_q_snip")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    main = tiny_store(tmp_path_factory, "main", tuple(range(6)))
    other = tiny_store(tmp_path_factory, "portable-other", (0, 1, 2), network=OTHER, density=OTHER_DENSITY)
    return main, other


@pytest.fixture(scope="module")
def family_model(stores, tmp_path_factory):
    config = FitConfig.for_recipe("thesis", model="linear", features="portable", preprocess="none")
    return fit_model(list(stores), config, models_dir=tmp_path_factory.mktemp("portable-models"), name="fam")


def test_family_card_records_every_store_and_its_density(family_model, stores):
    card = ModelCard.read(family_model.path)
    assert card.transferable and card.layer_kinds == ("linear",)
    assert set(card.networks) == {NETWORK, OTHER}
    recorded = {(s.network, s.density, s.config_hash) for s in card.stores}
    from metaprune.fit.stores import open_view

    assert recorded == {(v.network, v.density, v.config_hash) for v in map(open_view, stores)}
    assert all(len(s.hash) == 8 for s in card.stores)


def test_no_skew_between_fit_and_prune(family_model, stores):
    # the test seed (5) exists in the main store only: its pruned ticket overlaps the target exactly as fit
    # measured (a linear model: no ties)
    seeds = family_model.meta["test_seeds"]
    assert seeds == [5]
    splits = load_dataset("digits")
    method = parse_method(f"learned:{family_model.path}")
    tickets = prune_seeds(method, NETWORK, splits, DENSITY, tuple(seeds))
    from metaprune.fit.stores import open_view

    view = open_view(stores[0])
    import torch

    overlaps = [
        jaccard(t.mask, torch.from_numpy(view.read_seed(s, ["magnitude"])[1]["target_mask"]))
        for t, s in zip(tickets, seeds, strict=True)
    ]
    assert np.mean(overlaps) == pytest.approx(family_model.metrics["test"]["jaccard"])


def test_prunes_an_unseen_network_with_the_budget_across_layouts(family_model):
    splits = load_dataset("digits")
    n = 64 * 10 + 10 * 8 + 8 * 10
    for spelled in (f"learned:{family_model.path}", f"learned:{family_model.path}#learned"):
        ticket = prune_seeds(parse_method(spelled), UNSEEN, splits, 0.15, (9,))[0]
        assert int(ticket.mask.sum()) == keep_count(0.15, n)


def test_a_layer_kind_never_seen_is_refused_in_one_line(family_model, monkeypatch, capsys, tmp_path):
    splits = load_dataset("digits")
    with pytest.raises(MetapruneError, match="fitted on linear layers only, but layer features.0.weight"):
        prune_seeds(parse_method(f"learned:{family_model.path}"), "conv2", splits, 0.1, (0,))
    out = tmp_path / "ticket.safetensors"
    code, _, err = run_main(
        monkeypatch, capsys, "prune", "-n", "conv2", "-d", "digits", "-m", f"learned:{family_model.path}",
        "--sparsity", "0.1", "--out", str(out),
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "conv2d" in err
    assert not out.exists()


def test_portable_features_refuse_a_per_network_scaling(stores, tmp_path):
    config = FitConfig.for_recipe("thesis", model="linear", features="portable")  # preprocess minmax
    with pytest.raises(MetapruneError, match="accepted: --preprocess none"):
        fit_model(list(stores), config, models_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_stores_of_other_densities_are_refused_for_a_density_dependent_feature(stores, tmp_path):
    config = FitConfig.for_recipe("thesis", model="linear", features="synflow_ums")
    with pytest.raises(MetapruneError, match="computed the model's features with different settings"):
        fit_model(list(stores), config, models_dir=tmp_path)
