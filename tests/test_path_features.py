"""The path and unit features (group ``paths``, ``harvest --paths``): hand-computed on tiny networks, the
same bit for bit on alive rows, stored only when asked, and read by a learned scorer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.features import FEATURE_NAMES, PATH_FEATURES, alive_features, compute_features
from metaprune.harvest.config import HarvestConfig
from metaprune.pruning.scorers import PruneData, score
from tests.test_fit_helpers import DENSITY, NETWORK, tiny_store


def _paths(net, mask=None) -> dict[str, list[float]]:
    data = PruneData(torch.randn(4, *_input_shape(net)), torch.zeros(4, dtype=torch.long))
    x = compute_features(net, data, 0, density=0.5, ums_rounds=2, mask=mask, columns=PATH_FEATURES)
    return {name: [round(v, 4) for v in x[:, j].tolist()] for j, name in enumerate(PATH_FEATURES)}


def _input_shape(net) -> tuple[int, ...]:
    first = next(m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    return (first.in_features,) if isinstance(first, nn.Linear) else (first.in_channels, 3, 3)


@pytest.fixture
def mlp():
    """2 -> 2 -> 1, no biases: |W1| = [[1, 2], [0.5, 3]], |W2| = [[1, 4]]."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, -4.0]]))
    return net


def test_dense_values_by_hand(mlp):
    # all-ones input: layer 1 receives [1, 1]; its outputs carry |W1| 1 = [3, 3.5] into layer 2, whose output
    # unit passes 1 back; layer 1's output units pass back |W2| = [1, 4]. Each divided by the layer's largest.
    p = _paths(mlp)
    assert p["path_in"] == [1.0, 1.0, 1.0, 1.0, round(3 / 3.5, 4), 1.0]
    assert p["path_out"] == [0.25, 0.25, 1.0, 1.0, 1.0, 1.0]
    assert p["rank_path_in"] == [0.5, 0.5, 0.5, 0.5, 0.0, 1.0]  # ties averaged, scaled to [0, 1]
    assert p["rank_path_out"] == [round(0.5 / 3, 4)] * 2 + [round(2.5 / 3, 4)] * 2 + [0.5, 0.5]
    for name in ("unit_in_alive", "unit_out_alive", "layer_live_in", "layer_live_out"):
        assert p[name] == [1.0] * 6  # nothing pruned: every unit whole, every unit on a live path


def test_masked_values_by_hand(mlp):
    # hidden unit 1 loses both inputs: it carries no flow forward (0) and, behind ReLU's zero gradient at 0,
    # none back, as in SynFlow; the weight 1 -> output is alive but on no live path
    p = _paths(mlp, torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool))
    assert p["path_in"][4:] == [1.0, 0.0]
    assert p["path_out"][:4] == [1.0, 1.0, 0.0, 0.0]
    assert p["rank_path_in"][:4] == [round(2.5 / 3, 4)] * 2 + [round(0.5 / 3, 4)] * 2  # pruned weights rank as 0
    assert p["unit_in_alive"] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]  # alive share of the output unit's inputs
    assert p["unit_out_alive"] == [0.5, 0.5, 0.5, 0.5, 1.0, 1.0]  # ... of the input unit's outputs
    assert p["layer_live_in"] == [1.0] * 4 + [0.5] * 2
    assert p["layer_live_out"] == [0.5] * 4 + [1.0] * 2


def test_path_product_is_synflow_on_an_mlp():
    """SynFlow's score of w (o <- i) is |w| times the flow into i times the flow out of o: per layer, the
    product of the features times |θ| is proportional to it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False), nn.ReLU(),
                        nn.Linear(3, 2, bias=False))  # fmt: skip
    mask = torch.rand(5 * 4 + 4 * 3 + 3 * 2) > 0.3
    data = PruneData(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    x = compute_features(net, data, 0, density=0.5, ums_rounds=2, mask=mask, columns=("path_in", "path_out"))
    weights = torch.cat([m.weight.detach().reshape(-1) for m in net if isinstance(m, nn.Linear)]).double()
    product = weights.abs() * x[:, 0].double() * x[:, 1].double() * mask
    synflow = score("synflow", net, mask, data, 0).double()
    for lo, hi in ((0, 20), (20, 32), (32, 38)):
        ratio = synflow[lo:hi][product[lo:hi] > 0] / product[lo:hi][product[lo:hi] > 0]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
        assert bool(((synflow[lo:hi] > 0) == (product[lo:hi] > 0)).all())


def test_conv_units_are_channels():
    """Conv 1 -> 2 channels (2x2 kernel) on a 3x3 input, then a Linear on the 8 flat outputs. Channel 1's
    kernel is pruned: channel 1 is dead, and the Linear's inputs from it lie on no live path."""
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[3].weight.fill_(0.5)
    mask = torch.ones(8 + 8, dtype=torch.bool)
    mask[4:8] = False
    p = _paths(net, mask)
    # each position of channel 0 sums a 2x2 patch of ones: 4 positions x 4 = 16 flow out of channel 0
    assert p["path_in"][8:] == [1.0] * 4 + [0.0] * 4
    assert p["path_out"][:8] == [1.0] * 4 + [0.0] * 4  # dR/dz summed over channel 0's 4 positions: 4 x 0.5
    assert p["unit_in_alive"][:8] == [1.0] * 4 + [0.0] * 4  # per output channel
    assert p["layer_live_out"][:8] == [0.5] * 8 and p["layer_live_in"][:8] == [1.0] * 8
    assert p["layer_live_in"][8:] == [0.5] * 8  # 4 of the Linear's 8 inputs live


def test_alive_rows_are_the_same_bit_for_bit():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    mask = torch.rand(6 * 5 + 5 * 3) > 0.5
    data = PruneData(torch.randn(4, 6), torch.zeros(4, dtype=torch.long))
    full = compute_features(net, data, 2, density=0.3, ums_rounds=2, mask=mask, columns=PATH_FEATURES)
    rows = alive_features(net, data, 2, density=0.3, ums_rounds=2, mask=mask, names=list(PATH_FEATURES))
    assert (full[mask].numpy() == rows).all()


def test_stored_only_when_asked():
    plain = HarvestConfig().validate()
    with_paths = HarvestConfig(paths=True).validate()
    assert plain.features == FEATURE_NAMES and "paths" not in plain.identity()
    assert with_paths.features == (*FEATURE_NAMES, *PATH_FEATURES) and with_paths.identity()["paths"] is True
    assert plain.short_hash() == "0e3ded09"  # the default store keeps the name its models record
    with pytest.raises(MetapruneError, match="paths must be true or false, got 'yes'"):
        HarvestConfig(paths="yes").validate()
    with pytest.raises(MetapruneError, match="computes features version 2 .* with --paths"):
        HarvestConfig(paths=True, features=FEATURE_NAMES[:3]).validate()


def test_a_learned_scorer_reads_them(tmp_path_factory):
    from metaprune.datasets import load_dataset
    from metaprune.fit.core import FitConfig, fit_model
    from metaprune.fit.stores import open_view
    from metaprune.pruning.apply import prune_seeds
    from metaprune.pruning.masks import keep_count
    from metaprune.pruning.method import parse_method

    store = tiny_store(tmp_path_factory, "paths", (0, 1, 2, 3), paths=True)
    assert open_view(store).feature_names[-len(PATH_FEATURES) :] == PATH_FEATURES
    models = tmp_path_factory.mktemp("path-models")
    fitted = fit_model(store, FitConfig(model="linear", features="static,paths"), models_dir=models)
    assert set(PATH_FEATURES) <= set(fitted.meta["features"])
    ticket = prune_seeds(parse_method(f"learned:{fitted.path}"), NETWORK, load_dataset("digits"), DENSITY, (9,))[0]
    assert int(ticket.mask.sum()) == keep_count(DENSITY, ticket.mask.numel())
