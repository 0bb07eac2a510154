"""Exact top-k masks, densities, finiteness checks and the mask report against hand-computed answers."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, prunable_layout
from metaprune.pruning.masks import (
    check_density,
    check_finite,
    jaccard,
    keep_count,
    make_mask,
    mask_report,
    topk_mask,
)
from metaprune.seeds import generator


def gen(seed=0):
    return generator(seed, "tie_break")


def tiny_layout():
    return prunable_layout(MLP(4, (3,), 2))  # layers.0.weight [3, 4] (12), layers.1.weight [2, 3] (6)


# ------------------------------------------------------------------------------------------ top-k


def test_topk_keeps_exactly_k_highest():
    scores = torch.randperm(1000).float()
    for k in (0, 1, 7, 500, 999, 1000):
        mask = topk_mask(scores, k, None, gen())
        assert int(mask.sum()) == k
        assert torch.equal(mask, scores >= 1000 - k)


def test_topk_ties_broken_by_seeded_random_order():
    scores = torch.zeros(200)
    above = torch.tensor([3, 50, 120, 150, 199])
    tied = torch.arange(60, 110)  # 50 weights tied at the threshold
    scores[above] = 2.0
    scores[tied] = 1.0
    k = 15
    masks = {s: topk_mask(scores, k, None, gen(s)) for s in range(4)}
    for mask in masks.values():
        assert int(mask.sum()) == k
        assert mask[above].all()  # strictly above the threshold: always kept
        assert int(mask[tied].sum()) == 10  # the rest come from the tie, nothing from below
    picked = {s: tuple(torch.nonzero(m[tied]).squeeze(1).tolist()) for s, m in masks.items()}
    assert len(set(picked.values())) > 1  # different seeds pick different tied weights
    assert all(p != tuple(range(10)) for p in picked.values())  # never simply the lowest indices
    assert torch.equal(topk_mask(scores, k, None, gen(0)), masks[0])  # same seed, same mask


def test_topk_dead_weights_never_come_back():
    scores = torch.arange(20, dtype=torch.float32)
    alive = torch.ones(20, dtype=torch.bool)
    alive[15:] = False  # the five highest scores are already pruned
    mask = topk_mask(scores, 5, alive, gen())
    assert torch.equal(torch.nonzero(mask).squeeze(1), torch.arange(10, 15))
    assert not (mask & ~alive).any()
    assert torch.equal(topk_mask(scores, 15, alive, gen()), alive)
    with pytest.raises(MetapruneError, match="only 15 are still alive"):
        topk_mask(scores, 16, alive, gen())


def test_make_mask_global_vs_layer_scope():
    layout = tiny_layout()
    scores = torch.cat([10.0 + torch.arange(12.0), torch.arange(6.0)])  # layer 0 outranks layer 1
    g = make_mask(scores, layout, 0.5, scope="global", generator=gen())
    assert int(g.sum()) == 9 and int(g[:12].sum()) == 9 and int(g[12:].sum()) == 0
    lay = make_mask(scores, layout, 0.5, scope="layer", generator=gen())
    assert int(lay[:12].sum()) == 6 and int(lay[12:].sum()) == 3
    assert torch.equal(torch.nonzero(lay[12:]).squeeze(1), torch.tensor([3, 4, 5]))
    with pytest.raises(MetapruneError, match="scope"):
        make_mask(scores, layout, 0.5, scope="row", generator=gen())


def test_density_is_relative_to_the_full_network():
    layout = tiny_layout()
    scores = torch.arange(18.0)
    alive = torch.zeros(18, dtype=torch.bool)
    alive[:10] = True  # 10 of 18 alive; density 1/3 keeps round(6) = 6 of all 18
    mask = make_mask(scores, layout, 1 / 3, alive=alive, generator=gen())
    assert torch.equal(torch.nonzero(mask).squeeze(1), torch.arange(4, 10))


def test_keep_count_values_and_errors():
    assert keep_count(0.5, 10) == 5
    assert keep_count(0.25, 10) == 2  # round half to even
    assert keep_count(0.35, 10) == 4
    assert keep_count(1.0, 7) == 7
    assert keep_count(0.005, 266200) == 1331
    for bad in (0.0, 1.5, -0.1, float("nan"), "x"):
        with pytest.raises(MetapruneError, match=r"0 < density <= 1, the fraction of prunable weights kept"):
            check_density(bad)
    assert check_density("0.5") == 0.5
    with pytest.raises(MetapruneError, match="keeps no weight of 18") as info:
        keep_count(0.01, 18)
    assert "0.0278" in str(info.value)  # smallest density keeping one weight: just above 0.5 / 18
    assert "\n" not in str(info.value)


def test_layer_scope_names_the_layer_that_keeps_nothing():
    with pytest.raises(MetapruneError, match=r"layers\.1\.weight"):
        make_mask(torch.arange(18.0), tiny_layout(), 0.05, scope="layer", generator=gen())


def test_nan_names_scorer_and_layer():
    layout = tiny_layout()
    scores = torch.arange(18.0)
    scores[14] = float("nan")
    with pytest.raises(MetapruneError, match=r"'snip'.*layers\.1\.weight"):
        make_mask(scores, layout, 0.5, generator=gen(), scorer="snip")
    scores[14] = float("inf")
    with pytest.raises(MetapruneError, match=r"'grasp'.*layers\.1\.weight"):
        check_finite(scores, layout, "grasp")
    alive = torch.ones(18, dtype=torch.bool)
    alive[14] = False  # a non-finite score on a pruned weight does not matter
    assert int(make_mask(scores, layout, 0.5, alive=alive, generator=gen()).sum()) == 9


def test_jaccard():
    a = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    assert jaccard(a, b) == pytest.approx(2 / 4)
    assert jaccard(a, a) == 1.0
    assert jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0


# ----------------------------------------------------------------------------------------- report


def test_mask_report_hand_built_mlp():
    net = MLP(4, (3,), 2)
    w1 = torch.tensor(
        [
            [0, 0, 0, 0],  # hidden 0: no input, but kept outgoing weights -> those are not effective
            [1, 1, 0, 0],  # hidden 1: inputs, but no outgoing weight -> its inputs are not effective
            [1, 0, 0, 0],  # hidden 2: on a path
        ],
        dtype=torch.bool,
    )
    w2 = torch.tensor([[1, 0, 1], [1, 0, 0]], dtype=torch.bool)  # output 1 only hears hidden 0
    mask = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    r = mask_report(net, mask)
    l1, l2 = r.layers
    assert (l1.name, l1.total, l1.kept, l1.effective, l1.units) == ("layers.0.weight", 12, 3, 1, 3)
    assert (l1.dead_in, l1.dead_out) == (1, 1)  # hidden 0 has no input; hidden 1 no path to the output
    assert (l2.total, l2.kept, l2.effective, l2.units) == (6, 3, 1, 2)
    assert (l2.dead_in, l2.dead_out) == (1, 0)
    assert not l1.collapsed and not l2.collapsed
    assert r.kept == 6 and r.effective == 2
    assert r.density == pytest.approx(6 / 18) and r.effective_density == pytest.approx(2 / 18)
    assert r.collapsed_layers == ()
    # live: a kept incoming and a kept outgoing weight -- hidden 2 only (hidden 0 has no input, hidden 1 no
    # output); the outputs need only an input: both have one
    assert (l1.live, l2.live) == (1, 2)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["layers"][0]["effective"] == 1 and d["collapsed_layers"] == [] and d["layers"][0]["live"] == 1


def test_mask_report_empty_layer_collapses_everything():
    mask = torch.ones(18, dtype=torch.bool)
    mask[12:] = False
    r = mask_report(MLP(4, (3,), 2), mask)
    assert r.layers[1].kept == 0 and r.layers[0].kept == 12
    assert r.effective == 0 and r.effective_density == 0.0
    assert r.collapsed_layers == ("layers.0.weight", "layers.1.weight")
    assert r.layers[0].dead_out == 3 and r.layers[1].dead_in == 2


@pytest.mark.parametrize("seed", range(5))
def test_mask_report_matches_boolean_reachability(seed):
    """Effective weights and dead units against reachability by boolean matrix products."""
    sizes = (6, 5, 4, 3)
    net = MLP(sizes[0], sizes[1:-1], sizes[-1])
    layout = prunable_layout(net)
    rng = np.random.default_rng(seed)
    flat = rng.random(layout.total) < 0.35
    ms = [flat[layer.offset : layer.offset + layer.size].reshape(layer.shape) for layer in layout.layers]
    fwd = [np.ones(sizes[0], bool)]
    for m in ms:
        fwd.append((m.astype(int) @ fwd[-1].astype(int)) > 0)
    bwd = [np.ones(sizes[-1], bool)]
    for m in reversed(ms):
        bwd.insert(0, (m.T.astype(int) @ bwd[0].astype(int)) > 0)
    r = mask_report(net, torch.from_numpy(flat))
    for i, (m, rep) in enumerate(zip(ms, r.layers, strict=True)):
        eff = m & bwd[i + 1][:, None] & fwd[i][None, :]
        assert rep.kept == int(m.sum())
        assert rep.effective == int(eff.sum())
        assert rep.dead_in == int((~fwd[i + 1]).sum())
        assert rep.dead_out == int((~bwd[i + 1]).sum())
        incoming = m.any(1)
        outgoing = ms[i + 1].any(0) if i + 1 < len(ms) else np.ones_like(incoming)
        assert rep.live == int((incoming & outgoing).sum())


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * 2 * 2, 2)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_mask_report_conv_channel_without_input():
    net = TinyConv()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    mask[9:18] = False  # every kernel weight of output channel 1
    r = mask_report(net, mask, input_shape=(1, 4, 4))
    conv, fc = r.layers
    assert (conv.kept, conv.effective, conv.units, conv.dead_in, conv.dead_out) == (9, 9, 2, 1, 0)
    assert (fc.kept, fc.effective, fc.dead_in) == (16, 8, 0)  # the 4 features of channel 1 carry nothing
    assert r.effective_density == pytest.approx(17 / 34)
    assert (conv.live, fc.live) == (1, 2)  # channel 1 has no input; channel 0 feeds the fc through the pool
    mask[18 + 4 * 0 : 18 + 4 * 0 + 4] = False  # fc row 0, features 0-3: channel 0's whole map, output 0
    mask[18 + 8 : 18 + 8 + 4] = False  # fc row 1, channel 0's map: nothing reads channel 0 any more
    assert mask_report(net, mask, input_shape=(1, 4, 4)).layers[0].live == 0
    with pytest.raises(MetapruneError, match="input shape"):
        mask_report(net, mask)


def test_keep_count_matches_round_on_lenet_size():
    for d in (0.5, 0.1, 0.01, 0.005, 0.001):
        assert keep_count(d, 266200) == int(round(d * 266200))
        assert math.isclose(keep_count(d, 266200) / 266200, d, rel_tol=1e-3)


def test_every_length_on_the_weight_axis_is_checked_by_one_rule():
    """Masks, scores and alive masks of the wrong length: one line naming what and both lengths."""
    from metaprune.pruning.masks import check_mask

    layout = tiny_layout()  # 18 prunable weights
    accepted = "does not match the network's 18 prunable weights"
    with pytest.raises(MetapruneError, match=f"mask of 17 weights {accepted}"):
        check_mask(torch.ones(17, dtype=torch.bool), layout)
    with pytest.raises(MetapruneError, match=f"scores of 19 weights {accepted}"):
        make_mask(torch.rand(19), layout, 0.5, generator=gen())
    with pytest.raises(MetapruneError, match=f"mask of 3 weights {accepted}"):
        make_mask(torch.rand(18), layout, 0.5, alive=torch.ones(3, dtype=torch.bool), generator=gen())
    with pytest.raises(MetapruneError, match="mask of 5 weights does not match the network's 18"):
        topk_mask(torch.rand(18), 3, torch.ones(5, dtype=torch.bool), gen())
    assert check_mask(torch.ones(2, 9), layout).shape == (18,)  # any shape with 18 entries, flattened
