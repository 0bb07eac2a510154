"""Warm-up scorers (delta, movement, abs_grad, +wE) and per-layer budgets (#layer, #from:M), pinned
against a textbook loop and hand-computed counts."""

import copy

import pytest
import torch
import torch.nn.functional as F

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout, prunable_weights
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import layer_counts_of, make_mask
from metaprune.pruning.method import parse_method
from metaprune.pruning.schedules import budget_steps
from metaprune.pruning.warmup import ORDER_STREAM, warm_up, warmup_steps
from metaprune.seeds import generator
from metaprune.training import TrainConfig

from .conftest import batch_order, synthetic_splits

SPEC = "mlp:6"
TRAIN = TrainConfig(batch_size=32, epochs=3, lr=0.1)


def _textbook_warmup(net, splits, steps, seed, lr, batch):
    """Plain SGD with autograd, one step at a time, recording -sum g*theta, sum |g|, sign flips."""
    net = copy.deepcopy(net).double()
    weights = prunable_weights(net)
    x, y = splits.train_x.double(), splits.train_y
    movement = [torch.zeros_like(w) for w in weights]
    abs_grad = [torch.zeros_like(w) for w in weights]
    flips = [torch.zeros_like(w) for w in weights]
    for idx in batch_order(x.shape[0], batch, steps, seed, ORDER_STREAM):
        loss = F.cross_entropy(net(x[idx]), y[idx])
        grads = torch.autograd.grad(loss, list(net.parameters()))
        before = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads, strict=True):
                p.sub_(lr * g)
        named = dict(zip([id(p) for p in net.parameters()], grads, strict=True))
        for i, w in enumerate(weights):
            g = named[id(w)]
            movement[i] -= g * before[i]
            abs_grad[i] += g.abs()
            flips[i] += (torch.sign(before[i]) * torch.sign(w.detach()) < 0).double()
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    return net, flat(movement), flat(abs_grad), flat(flips)


def test_warmup_dynamics_match_a_textbook_sgd_loop():
    splits = synthetic_splits(n_train=80)
    net = build_network(SPEC, splits.input_shape, splits.num_classes, 3)
    theta0 = [w.detach().clone() for w in prunable_weights(net)]
    record = warm_up(net, splits, TRAIN, 1.5, seed=7)
    assert record.steps == 4  # 80 examples, batch 32: 3 steps per epoch, 1.5 epochs = round(4.5) = 4
    ref_net, movement, abs_grad, flips = _textbook_warmup(net, splits, 4, 7, TRAIN.lr, TRAIN.batch_size)
    ref_theta_e = torch.cat([w.detach().reshape(-1) for w in prunable_weights(ref_net)])
    flat0 = torch.cat([w.reshape(-1) for w in theta0]).double()
    torch.testing.assert_close(record.delta, (ref_theta_e - flat0).abs(), atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(record.movement, movement, atol=2e-5, rtol=1e-3)
    torch.testing.assert_close(record.abs_grad, abs_grad, atol=2e-5, rtol=1e-3)
    assert torch.equal(record.sign_flips, flips)
    # the network handed in is θ0, untouched
    for w, w0 in zip(prunable_weights(net), theta0, strict=True):
        assert torch.equal(w, w0)


def test_warmup_mask_is_applied_to_theta0():
    splits = synthetic_splits(n_train=80)
    ticket = prune_seeds(parse_method("magnitude+w2"), SPEC, splits, 0.3, (5,), train=TRAIN)[0]
    theta0 = build_network(SPEC, splits.input_shape, splits.num_classes, 5)
    for a, b in zip(prunable_weights(ticket.net), prunable_weights(theta0), strict=True):
        assert torch.equal(a, b)  # the ticket trains from θ0
    record = warm_up(theta0, splits, TRAIN, 2, seed=5)
    theta_e = torch.cat([w.detach().reshape(-1) for w in prunable_weights(record.network)])
    expected = make_mask(theta_e.abs(), prunable_layout(theta0), 0.3, generator=generator(5, "tie_break", 0))
    assert torch.equal(ticket.mask, expected)  # ...with the mask of |θ_E|
    assert ticket.cost_epochs == pytest.approx(2.0)  # 6 steps, 3 per epoch; magnitude makes no pass


def test_delta_scores_are_the_distance_travelled():
    splits = synthetic_splits(n_train=80)
    ticket = prune_seeds(parse_method("delta+w1"), SPEC, splits, 0.2, (1,), train=TRAIN)[0]
    net = build_network(SPEC, splits.input_shape, splits.num_classes, 1)
    record = warm_up(net, splits, TRAIN, 1, seed=1)
    expected = make_mask(
        record.delta.float(), prunable_layout(net), 0.2, generator=generator(1, "tie_break", 0)
    )
    assert torch.equal(ticket.mask, expected)


def test_warmup_steps_and_bad_warmups():
    splits = synthetic_splits(n_train=80)
    assert warmup_steps(1, splits, TRAIN) == 3
    assert warmup_steps(0.34, splits, TRAIN) == 1
    with pytest.raises(MetapruneError, match="longer than the training config's 3 epochs"):
        warmup_steps(4, splits, TRAIN)
    with pytest.raises(MetapruneError, match="less than one SGD step"):
        warmup_steps(0.1, splits, TRAIN)
    for text, words in (
        ("delta", "reads a warm-up"),
        ("random+w3", "reads no weights"),
        ("movement@iss+w3", "training budget its levels share"),
        ("snip+w0", "positive number"),
        ("synflow@ims#layer", "upfront schedules"),
    ):
        with pytest.raises(MetapruneError, match=words):
            parse_method(text)


# --------------------------------------------------------------------------------------- budgets


def test_budget_steps_shrink_each_layer_geometrically():
    # layer a: 100 -> 1 in 2 steps keeps round(100 * 0.01 ** 0.5) = 10, then 1; layer b: 50 -> 50 stays
    assert budget_steps([100, 50], [1, 50], 2) == [[10, 50], [1, 50]]
    assert budget_steps([8], [2], 1) == [[2]]


def test_layer_budget_keeps_the_same_fraction_per_layer():
    splits = synthetic_splits()
    ticket = prune_seeds(parse_method("snip#layer"), SPEC, splits, 0.25, (0,), train=TRAIN)[0]
    layout = prunable_layout(ticket.net)
    # mlp:6 on 4x4 inputs, 3 classes: layers of 96 and 18 weights -> round(24.0) and round(4.5) = 4 (to even)
    assert [layer.size for layer in layout.layers] == [96, 18]
    assert layer_counts_of(ticket.mask, layout) == [24, 4]


def test_from_budget_takes_the_other_methods_per_layer_counts():
    splits = synthetic_splits()
    donor = prune_seeds(parse_method("synflow@ums"), SPEC, splits, 0.2, (4,), train=TRAIN)[0]
    ticket = prune_seeds(parse_method("magnitude#from:synflow@ums"), SPEC, splits, 0.2, (4,), train=TRAIN)[0]
    layout = prunable_layout(ticket.net)
    counts = layer_counts_of(donor.mask, layout)
    assert layer_counts_of(ticket.mask, layout) == counts
    # within each layer it is magnitude's exact top-k
    mags = torch.cat([w.detach().abs().reshape(-1) for w in prunable_weights(ticket.net)])
    for layer, k in zip(layout.layers, counts, strict=True):
        part = mags[layer.offset : layer.offset + layer.size]
        kept = ticket.mask[layer.offset : layer.offset + layer.size]
        assert int(kept.sum()) == k
        assert part[kept].min() >= part[~kept].max()


def test_budget_that_empties_a_layer_names_it():
    splits = synthetic_splits()
    with pytest.raises(MetapruneError, match="layer layers.1.weight"):
        prune_seeds(parse_method("snip#layer"), SPEC, splits, 0.02, (0,), train=TRAIN)


def test_a_budget_warming_up_as_its_method_pays_the_warm_up_once():
    splits = synthetic_splits(n_train=80)
    shared = prune_seeds(parse_method("magnitude+w2#from:delta+w2"), SPEC, splits, 0.3, (5,), train=TRAIN)[0]
    assert shared.cost_epochs == pytest.approx(2.0)  # one 2-epoch trajectory; neither scorer makes a pass
    other = prune_seeds(parse_method("magnitude+w2#from:delta+w1"), SPEC, splits, 0.3, (5,), train=TRAIN)[0]
    assert other.cost_epochs == pytest.approx(3.0)  # two different warm-ups


def test_a_budget_from_a_method_that_cuts_a_layer_copies_the_cut():
    """magnitude at 0.02 on mlp:8 / digits keeps the 12 largest |θ0|, all in the 8 x 10 layer (Kaiming std
    0.5 there against 0.18 in the 64 x 8 one); its allocation control keeps the same counts, zero included."""
    from metaprune.prune import prune_network

    cut = prune_network("mlp:8", "digits", "magnitude", 0.02, seed=0).ticket.report
    control = prune_network("mlp:8", "digits", "random#from:magnitude", 0.02, seed=0).ticket.report
    assert [layer.kept for layer in cut.layers] == [layer.kept for layer in control.layers] == [0, 12]
    assert "layers.0.weight" in control.collapsed_layers
