"""Stacked scoring, SaW and bimodal inits, and the sanity-check ablations."""

import itertools
import math

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, build_network, flat_weights, init_standard, prunable_layout, prunable_weights
from metaprune.pruning.ablations import invert_scores, reinit_kept, shuffle_within_layers
from metaprune.pruning.inits import INITS, saw_init
from metaprune.pruning.masks import make_mask
from metaprune.pruning.scorers import PruneData, score
from metaprune.pruning.stacked import stacked_scores
from metaprune.seeds import generator

BASE = ("magnitude", "snip", "grasp", "synflow")


def lenet_like(seed=0):
    """LeNet-sized input (784 features, 10 classes) with a small hidden part for speed."""
    return build_network("mlp:20-10", (1, 28, 28), 10, seed)


def lenet_data(n=20):
    g = torch.Generator().manual_seed(0)
    return PruneData(torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


def state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ stacked


def test_stacked_all_pairs_finite_and_restore_theta0():
    net, data = lenet_like(), lenet_data()
    before = state(net)
    mask = torch.rand(prunable_layout(net).total, generator=torch.Generator().manual_seed(1)) < 0.5
    for a, b in itertools.product(BASE, BASE):
        s = stacked_scores(a, b, net, mask, data, 0)
        assert s.shape == (prunable_layout(net).total,)
        assert torch.isfinite(s).all(), (a, b)
        assert (s[~mask] == 0).all()
    assert same_state(before, state(net))


def test_stacked_mag_mag_is_magnitude():
    net = lenet_like()
    assert torch.equal(stacked_scores("mag", "mag", net, None, None, 0), score("magnitude", net, None, None, 0))


def test_stacked_scores_b_on_a_scores_as_weights():
    net, data = lenet_like(), lenet_data()
    expected_net = lenet_like()
    with torch.no_grad():
        for w in prunable_weights(expected_net):
            w.abs_()  # magnitude scores put in place of the weights
    torch.testing.assert_close(
        stacked_scores("magnitude", "snip", net, None, data, 0), score("snip", expected_net, None, data, 0)
    )


# ---------------------------------------------------------------------------------------------- SaW


@pytest.mark.parametrize("scorer", BASE)
def test_saw_weights_are_signed_scaled_scores(scorer):
    net, data = lenet_like(), lenet_data()
    theta0 = [w.detach().clone() for w in prunable_weights(net)]
    s = score(scorer, net, None, data, 0)
    saw_init(net, scorer, data, 0)
    for w, w0, part in zip(prunable_weights(net), theta0, prunable_layout(net).split(s), strict=True):
        w = w.detach()
        assert w.abs().max() <= 1.0 and float(w.abs().max()) == pytest.approx(1.0)
        nz = part != 0
        assert torch.equal(torch.sign(w[nz]), torch.sign(w0[nz]))
        torch.testing.assert_close(w.abs().double(), part.abs().double() / part.abs().max(), rtol=1e-6, atol=1e-7)


def test_saw_magnitude_by_hand():
    net = MLP(3, (2,), 2)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, -4.0, 2.0], [0.5, -1.0, 0.0]]))
        net.layers[1].weight.copy_(torch.tensor([[-0.2, 0.1], [0.05, 0.1]]))
    saw_init(net, "magnitude", None, 0)
    assert torch.equal(net.layers[0].weight.detach(), torch.tensor([[0.25, -1.0, 0.5], [0.125, -0.25, 0.0]]))
    torch.testing.assert_close(net.layers[1].weight.detach(), torch.tensor([[-1.0, 0.5], [0.25, 0.5]]))


def test_saw_layer_of_zero_scores_is_an_error():
    net = MLP(3, (2,), 2)
    with torch.no_grad():
        net.layers[1].weight.zero_()
    with pytest.raises(MetapruneError, match=r"layers\.1\.weight"):
        saw_init(net, "magnitude", None, 0)


# ------------------------------------------------------------------------------------------- inits


def test_init_registry_standard_matches_networks():
    a, b = MLP(10, (8,), 3), MLP(10, (8,), 3)
    INITS.get("standard")(a, 4)
    init_standard(b, 4)
    assert same_state(state(a), state(b))


def test_bimodal_init_has_two_modes():
    net = MLP(400, (300,), 10)
    INITS.get("bimodal")(net, 0)
    w = net.layers[0].weight.detach()
    sigma = math.sqrt(2 / 400)
    z = w / sigma
    assert float((z.abs() < 0.5).float().mean()) < 0.01  # almost nothing near zero (3 mode-stds away)
    assert float((z > 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert float(z.abs().mean()) == pytest.approx(2.0, abs=0.02)
    assert float(z.abs().std()) == pytest.approx(0.5, abs=0.02)
    assert (net.layers[0].bias == 0).all()
    other = MLP(400, (300,), 10)
    INITS.get("bimodal")(other, 0)
    assert same_state(state(net), state(other))
    INITS.get("bimodal")(other, 1)
    assert not torch.equal(flat_weights(net), flat_weights(other))


# --------------------------------------------------------------------------------------- ablations


def test_shuffle_keeps_layer_counts_and_moves_weights():
    net = MLP(20, (10,), 5)
    layout = prunable_layout(net)
    mask = make_mask(torch.arange(layout.total).float(), layout, 0.3, scope="layer", generator=generator(0, "t"))
    out = shuffle_within_layers(mask, layout, 0)
    for a, b in zip(layout.split(mask), layout.split(out), strict=True):
        assert int(a.sum()) == int(b.sum())
        assert not torch.equal(a, b)
    assert torch.equal(out, shuffle_within_layers(mask, layout, 0))
    assert not torch.equal(out, shuffle_within_layers(mask, layout, 1))


def test_reinit_changes_kept_weights_only():
    net = MLP(200, (100,), 10)
    init_standard(net, 0)
    before = flat_weights(net)
    bias = net.layers[0].bias.detach().clone()
    mask = torch.rand(before.numel(), generator=torch.Generator().manual_seed(0)) < 0.5
    reinit_kept(net, mask, 3)
    after = flat_weights(net)
    assert torch.equal(after[~mask], before[~mask])
    assert (after[mask] != before[mask]).all()
    assert torch.equal(net.layers[0].bias.detach(), bias)
    first = after[: 200 * 100][mask[: 200 * 100]]
    assert float(first.std()) == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    again = MLP(200, (100,), 10)
    init_standard(again, 0)
    reinit_kept(again, mask, 3)
    assert torch.equal(flat_weights(again), after)


def test_invert_gives_bottom_k():
    layout = prunable_layout(MLP(4, (3,), 2))
    scores = torch.randn(layout.total, generator=torch.Generator().manual_seed(0))
    k = 5
    mask = make_mask(invert_scores(scores), layout, k / layout.total, generator=generator(0, "t"))
    bottom = torch.zeros(layout.total, dtype=torch.bool)
    bottom[torch.argsort(scores)[:k]] = True
    assert torch.equal(mask, bottom)
    assert torch.equal(invert_scores(torch.tensor([2.0, 0.5])), torch.tensor([-2.0, -0.5]))  # not 1/x
