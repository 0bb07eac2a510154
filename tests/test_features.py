"""Per-weight features: hand-checkable values on tiny networks, purity and determinism."""

import math

import pytest
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.features import (
    FEATURE_GROUPS,
    FEATURE_NAMES,
    alive_features,
    compute_features,
    layer_coordinates,
    rank_within_layers,
    select_features,
)
from metaprune.networks import MLP, build_network, prunable_layout, prunable_weights
from metaprune.pruning.apply import prune_data_for
from metaprune.pruning.schedules import ScheduleConfig, prune_upfront
from metaprune.pruning.scorers import PruneData, score


def col(x: torch.Tensor, name: str) -> torch.Tensor:
    return x[:, FEATURE_NAMES.index(name)]


@pytest.fixture
def tiny():
    """MLP 3 -> 2 -> 2 with hand-set weights; a 4-example pruning batch."""
    net = MLP(3, (2,), 2)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [-0.5, 2.0, 1.0]]))
        net.layers[0].bias.copy_(torch.tensor([0.0, -1.0]))
        net.layers[1].weight.copy_(torch.tensor([[1.0, -3.0], [0.5, 0.5]]))
        net.layers[1].bias.copy_(torch.tensor([0.1, 0.0]))
    x = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 2.0], [2.0, -1.0, 0.0], [-1.0, 0.5, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return net, PruneData(x, y)


def test_names_and_groups():
    assert FEATURE_GROUPS["scores"] == ("magnitude", "snip", "grasp", "grasp_abs", "synflow", "synflow_ums")
    assert FEATURE_GROUPS["structure"][:4] == ("depth", "fan_in", "fan_out", "layer_size")
    assert set(FEATURE_GROUPS["structure"][4:]) == {f"rank_{s}" for s in FEATURE_GROUPS["scores"]}
    assert FEATURE_GROUPS["activations"] == (
        "weight",
        "layer_frobenius",
        "in_act_max",
        "in_act_mean",
        "out_act_max",
        "out_act_mean",
    )
    assert FEATURE_NAMES == sum(FEATURE_GROUPS.values(), ())
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_hand_checked_values(tiny):
    net, data = tiny
    x = compute_features(net, data, seed=0, density=0.5, ums_rounds=4)
    assert x.dtype == torch.float32 and x.shape == (3 * 2 + 2 * 2, len(FEATURE_NAMES))
    w0, w1 = net.layers[0].weight.detach(), net.layers[1].weight.detach()
    flat = torch.cat([w0.reshape(-1), w1.reshape(-1)])
    assert torch.equal(col(x, "weight"), flat)
    assert torch.equal(col(x, "magnitude"), flat.abs())
    fro = torch.tensor([float(torch.linalg.norm(w0))] * 6 + [float(torch.linalg.norm(w1))] * 4)
    assert torch.allclose(col(x, "layer_frobenius"), fro)
    assert col(x, "depth").tolist() == [0.0] * 6 + [1.0] * 4
    assert col(x, "fan_in").tolist() == [3.0] * 6 + [2.0] * 4
    assert col(x, "fan_out").tolist() == [2.0] * 6 + [2.0] * 4
    assert col(x, "layer_size").tolist() == [6.0] * 6 + [4.0] * 4

    # activations by hand: weight (r, c) of layer 0 has input unit = pixel c, output unit = hidden r (post-ReLU)
    hidden = torch.relu(data.x @ w0.t() + net.layers[0].bias.detach())
    logits = hidden @ w1.t() + net.layers[1].bias.detach()
    exp_in_max = torch.cat([data.x.max(0).values.repeat(2), hidden.max(0).values.repeat(2)])
    exp_in_mean = torch.cat([data.x.mean(0).repeat(2), hidden.mean(0).repeat(2)])
    exp_out_max = torch.cat([hidden.max(0).values.repeat_interleave(3), logits.max(0).values.repeat_interleave(2)])
    exp_out_mean = torch.cat([hidden.mean(0).repeat_interleave(3), logits.mean(0).repeat_interleave(2)])
    assert torch.allclose(col(x, "in_act_max"), exp_in_max)
    assert torch.allclose(col(x, "in_act_mean"), exp_in_mean)
    assert torch.allclose(col(x, "out_act_max"), exp_out_max)
    assert torch.allclose(col(x, "out_act_mean"), exp_out_mean, atol=1e-6)

    # rank within the layer of |w|: layer 0 |w| = .5 1 .25 .5 2 1 -> ties averaged, scaled by (6 - 1)
    assert col(x, "rank_magnitude")[:6].tolist() == pytest.approx([1.5 / 5, 3.5 / 5, 0.0, 1.5 / 5, 1.0, 3.5 / 5])
    # layer 1 |w| = 1 3 .5 .5
    assert col(x, "rank_magnitude")[6:].tolist() == pytest.approx([2 / 3, 1.0, 0.5 / 3, 0.5 / 3])


def test_scores_are_the_registered_scorers(tiny):
    net, data = tiny
    x = compute_features(net, data, seed=3, density=0.3, ums_rounds=5)
    for name in ("magnitude", "snip", "grasp", "grasp_abs"):
        assert torch.equal(col(x, name), score(name, net, None, data, 3).float()), name
    syn = score("synflow", net, None, data, 3)
    assert torch.allclose(col(x, "synflow").double(), syn / syn.sum(), rtol=1e-6)
    ums = prune_upfront(
        lambda m, a: score("synflow", m, a, data, 3), net, 0.3, 3, multi_shot=True, config=ScheduleConfig(rounds=5)
    )
    assert torch.equal(col(x, "synflow_ums"), (ums.removed_at.double() / 6).float())
    k = round(0.3 * 10)
    assert int((col(x, "synflow_ums") == 1.0).sum()) == k
    assert float(col(x, "synflow_ums").min()) > 0


def test_network_untouched_and_deterministic(tiny):
    net, data = tiny
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = compute_features(net, data, seed=1, density=0.5, ums_rounds=3)
    b = compute_features(net, data, seed=1, density=0.5, ums_rounds=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_conv_units_are_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    data = PruneData(torch.randn(5, 2, 3, 3), torch.tensor([0, 1, 0, 1, 1]))
    x = compute_features(net, data, seed=0, density=0.5, ums_rounds=2)
    conv = net[0]
    n_conv = 3 * 2 * 2 * 2
    out = torch.relu(conv(data.x)).detach()  # [5, 3, 2, 2]
    in_max = data.x.amax(dim=(0, 2, 3))  # per input channel
    out_mean = out.mean(dim=(0, 2, 3))
    expected_in = in_max.reshape(1, 2, 1, 1).expand(3, 2, 2, 2).reshape(-1)
    expected_out = out_mean.reshape(3, 1, 1, 1).expand(3, 2, 2, 2).reshape(-1)
    assert torch.allclose(col(x, "in_act_max")[:n_conv], expected_in)
    assert torch.allclose(col(x, "out_act_mean")[:n_conv], expected_out, atol=1e-6)
    assert col(x, "fan_in")[0] == 2 * 2 * 2 and col(x, "fan_out")[0] == 3 * 2 * 2
    coords = layer_coordinates(prunable_layout(net))
    assert coords["kh"][:4].tolist() == [0, 0, 1, 1] and coords["kw"][:4].tolist() == [0, 1, 0, 1]
    assert coords["kh"][n_conv:].eq(-1).all() and coords["col"][n_conv : n_conv + 12].tolist() == list(range(12))


def test_layer_coordinates_linear():
    layout = prunable_layout(MLP(3, (2,), 2))
    c = layer_coordinates(layout)
    assert c["layer_index"].tolist() == [0] * 6 + [1] * 4
    assert c["row"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    assert c["col"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 0, 1]
    assert c["kh"].eq(-1).all() and c["kw"].eq(-1).all()


def test_rank_ties_and_single_weight_layer():
    layout = prunable_layout(MLP(1, (1,), 3))  # layers of 1 and 3 weights
    r = rank_within_layers(torch.tensor([5.0, 2.0, 2.0, 1.0]), layout)
    assert r.tolist() == [0.5, 0.75, 0.75, 0.0]


def test_select_features():
    assert select_features(None) == FEATURE_NAMES
    assert select_features("scores") == FEATURE_GROUPS["scores"]
    assert select_features(["weight", "scores", "magnitude"])[:2] == ("weight", "magnitude")
    assert select_features("snip,weight") == ("snip", "weight")
    with pytest.raises(MetapruneError, match="unknown feature 'nope'"):
        select_features(["nope"])


def test_one_selector_reads_the_groups_of_this_module_wherever_it_is_used(monkeypatch):
    """A store's ``select``, ``fit``'s feature list and the feature columns share one selector, and it
    reads ``FEATURE_GROUPS`` when called: a group added there works everywhere."""
    import metaprune.features as features
    from metaprune.fit.preprocess import resolve_features
    from metaprune.harvest.store import HarvestStore

    monkeypatch.setitem(features.FEATURE_GROUPS, "pair", ("weight", "magnitude"))
    assert select_features("pair+snip") == ("weight", "magnitude", "snip")
    stored = ("magnitude", "snip", "weight")
    assert resolve_features("pair", stored) == ("magnitude", "weight")  # the store's order
    import xarray as xr

    store = HarvestStore(path="s.zarr", dataset=xr.Dataset(coords={"feature": list(stored)}), attrs={})
    assert store.select("snip,pair") == ("snip", "weight", "magnitude")
    with pytest.raises(MetapruneError, match="store s.zarr has no feature of group 'dynamics'"):
        store.select("dynamics")
    with pytest.raises(MetapruneError, match="empty item"):
        store.select("snip,,weight")


def test_mask_is_respected(tiny):
    net, data = tiny
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    x = compute_features(net, data, seed=0, density=0.3, ums_rounds=2, mask=mask)
    assert col(x, "magnitude")[2] == 0 and col(x, "weight")[7] == 0
    assert col(x, "synflow_ums")[~mask].max() == 0.0  # never alive in the UMS run: step 0
    masked = net.layers[0].weight.detach() * mask[:6].view(2, 3)
    assert math.isclose(float(col(x, "layer_frobenius")[0]), float(torch.linalg.norm(masked)), rel_tol=1e-6)


def test_alive_rank_counts_the_pruned_weights_as_one_tie_at_zero(tiny):
    net, data = tiny
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)  # prunes 0.25 of layer 0
    x = alive_features(net, data, 0, density=0.5, ums_rounds=2, mask=mask, names=["rank_magnitude", "magnitude"])
    # layer 0 under the mask: |w| = 0.5, 1, (0), 0.5, 2, 1 -> ranks 2.5, 4.5, (1), 2.5, 6, 4.5 of 6, scaled by 5
    assert x[:5, 0].tolist() == pytest.approx([0.3, 0.7, 0.3, 1.0, 0.7], abs=1e-7)
    assert x[:5, 1].tolist() == [0.5, 1.0, 0.5, 2.0, 1.0]
    # layer 1 has nothing pruned: |w| = 1, 3, 0.5, 0.5 -> ranks 3, 4, 1.5, 1.5 of 4, scaled by 3
    assert x[5:, 0].tolist() == pytest.approx([2 / 3, 1.0, 1 / 6, 1 / 6], abs=1e-7)


def test_alive_features_equal_the_full_matrix_at_the_alive_rows():
    """Bit for bit, every feature, with alive weights at exactly 0 (tied with the pruned ones) and
    negative GraSP values."""
    from metaprune.pruning.warmup import warm_up
    from metaprune.training import TrainConfig

    from .conftest import synthetic_splits

    splits = synthetic_splits(n_train=64)
    net = build_network("mlp:6-4", splits.input_shape, splits.num_classes, 3)
    with torch.no_grad():
        net.layers[0].weight[0, :3] = 0.0  # alive zeros: magnitude, snip, synflow, ... tie with the pruned
    data = prune_data_for(splits, 3, 4)
    record = warm_up(net, splits, TrainConfig(batch_size=16, epochs=1), 1, seed=3)
    n = prunable_layout(net).total
    mask = torch.rand(n, generator=torch.Generator().manual_seed(0)) < 0.6
    mask[:2] = True
    names = list(reversed(FEATURE_NAMES))  # the caller's order, not the matrix's
    full = compute_features(net, data, 3, density=0.2, ums_rounds=3, mask=mask, warmup=record)
    fast = alive_features(net, data, 3, density=0.2, ums_rounds=3, mask=mask, warmup=record, names=names)
    expected = full[mask][:, [FEATURE_NAMES.index(f) for f in names]].numpy()
    assert fast.shape == expected.shape and fast.dtype == expected.dtype
    assert (fast.view("int32") == expected.view("int32")).all()  # identical bits
    assert (full[:, FEATURE_NAMES.index("grasp")][mask] < 0).any()
    dense = alive_features(net, data, 3, density=0.2, ums_rounds=3, warmup=record, names=["rank_snip", "weight"])
    assert (dense == compute_features(net, data, 3, density=0.2, ums_rounds=3, warmup=record)[
        :, [FEATURE_NAMES.index("rank_snip"), FEATURE_NAMES.index("weight")]
    ].numpy()).all()


def test_speed_sanity_lenet_shape():
    """Not a timing test: the LeNet-300-100 feature matrix has the documented shape."""
    from metaprune.networks import build_network

    net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
    data = PruneData(torch.randn(20, 1, 28, 28), torch.arange(20) % 10)
    x = compute_features(net, data, seed=0, density=0.005, ums_rounds=3)
    static = [j for j, name in enumerate(FEATURE_NAMES) if name not in FEATURE_GROUPS["dynamics"]]
    assert x.shape == (266_200, len(FEATURE_NAMES)) and bool(torch.isfinite(x[:, static]).all())
    assert bool(torch.isnan(x[:, len(static) :]).all())  # no warm-up given: no dynamics


def test_dynamics_group_reads_the_warm_up_and_only_requested_columns_are_computed():
    from metaprune.pruning.warmup import warm_up
    from metaprune.training import TrainConfig

    from .conftest import synthetic_splits

    splits = synthetic_splits(n_train=64)
    net = build_network("mlp:5", splits.input_shape, splits.num_classes, 2)
    data = prune_data_for(splits, 2, 4)
    record = warm_up(net, splits, TrainConfig(batch_size=16, epochs=2), 1, seed=2)
    x = compute_features(net, data, 2, density=0.3, ums_rounds=2, warmup=record)
    col = {name: x[:, FEATURE_NAMES.index(name)].double() for name in FEATURE_NAMES}
    torch.testing.assert_close(col["delta"], record.delta, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(col["movement"], record.movement, rtol=1e-6, atol=1e-7)
    theta_e = torch.cat([w.detach().reshape(-1).double() for w in prunable_weights(record.network)])
    torch.testing.assert_close(col["magnitude_e"], theta_e.abs(), rtol=1e-6, atol=1e-7)
    layout = prunable_layout(net)
    first = slice(0, layout.layers[0].size)
    # rank 1.0 for the largest delta of the first layer, 0.0 for the smallest
    assert col["rank_delta"][first][col["delta"][first].argmax()] == 1.0
    assert col["rank_delta"][first][col["delta"][first].argmin()] == 0.0
    only = compute_features(net, data, 2, density=0.3, names=["delta", "rank_snip"], warmup=record)
    computed = [FEATURE_NAMES[j] for j in range(only.shape[1]) if bool(torch.isfinite(only[:, j]).all())]
    assert computed == ["snip", "rank_snip", "delta"]  # snip is computed for its rank
    with pytest.raises(MetapruneError, match="need a warm-up record"):
        compute_features(net, data, 2, density=0.3, names=["movement"])
