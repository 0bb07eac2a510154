"""RigL: its mask update against the authors' code, its schedule by hand, the train loop's hook, evaluate's rows."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metaprune.evaluate.api import build_config
from metaprune.evaluate.results import ResultsDir
from metaprune.evaluate.run import run_evaluation
from metaprune.networks import build_network, prunable_layout
from metaprune.pruning.budgets import erk_counts
from metaprune.pruning.masks import layer_counts_of
from metaprune.pruning.method import Method, parse_method
from metaprune.rigl import RigL, drop_count, rigl_update
from metaprune.seeds import generator
from metaprune.training import TrainConfig, train_population
from tests.conftest import synthetic_splits

FIXTURE = Path(__file__).parent / "fixtures" / "rigl_reference.json"


@pytest.mark.parametrize("case", range(8))
def test_mask_update_equals_the_reference_code(case):
    """google-research/rigl's RigL update (rigl_tf2 MaskUpdater.generic_mask_update with RigL's drop and grow
    scores, run in TensorFlow) on four layers, with and without the drop noise, dead units (tied zero
    gradients) and equal gradients: the same new mask, bit for bit, and the same count."""
    ref = json.loads(FIXTURE.read_text())["cases"][case]
    shape = ref["shape"]
    mask = torch.tensor(ref["mask"]).view(shape).bool()
    noise = None if ref["noise"] is None else torch.tensor(ref["noise"]).view(shape)
    new = rigl_update(mask, torch.tensor(ref["weight"]).view(shape), torch.tensor(ref["grad"]).view(shape),
                      ref["fraction"], noise)  # fmt: skip
    assert torch.equal(new, torch.tensor(ref["new_mask"]).view(shape).bool())
    assert int(new.sum()) == int(mask.sum())
    grown = new & ~mask
    assert torch.equal(torch.tensor(ref["new_weight"]).view(shape)[grown], torch.zeros(int(grown.sum())))


def test_update_by_hand():
    """Kept {0: 0.5, 1: -0.1, 2: 0.3, 3: 0.05}, pruned {4, 5}; f = 0.5 drops ⌊0.5 · 4⌋ = 2 smallest (3, 1) and
    grows the 2 largest |g| outside the survivors: 5 (|g| 0.9) and 1 (0.4, just dropped: it comes back)."""
    mask = torch.tensor([1, 1, 1, 1, 0, 0]).bool()
    w = torch.tensor([0.5, -0.1, 0.3, 0.05, 0.0, 0.0])
    g = torch.tensor([2.0, -0.4, 0.1, 0.2, 0.3, -0.9])
    assert rigl_update(mask, w, g, 0.5).tolist() == [True, True, True, False, False, True]


def test_top_keeps_the_lower_index_among_equal_scores():
    """TF's top_k order: of equal scores the lower index comes first, i.e. a stable descending sort's first k."""
    from metaprune.rigl import _top

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 40, (1,), generator=g))
        scores = torch.randint(0, 4, (n,), generator=g).float()
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
        assert torch.equal(_top(scores, k), expected)
    assert _top(torch.tensor([1.0, 2.0, 1.0, 1.0]), 2).tolist() == [True, True, False, False]


def test_schedule_by_hand():
    r = RigL(seed=0)
    assert (r.drop_fraction, r.update_every, r.end_fraction) == (0.3, 100, 0.75)
    end = r.end_step(100 * 55)  # 100 epochs of 55 batches: T_end = 4125
    assert end == 4125
    assert r.fraction(0, end) == pytest.approx(0.3)
    assert r.fraction(end // 2, end) == pytest.approx(0.15 * (1 + math.cos(math.pi * 2062 / 4125)))
    assert r.fraction(end, end) == pytest.approx(0.0)
    assert [t for t in range(0, 5000) if r.due(t, end)] == list(range(0, 4125, 100))
    assert drop_count(10, 0.3) == int(np.float32(10) * np.float32(0.3)) == 3 and drop_count(7, 0.3) == 2


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(n_train=96, n_val=24, n_test=24, shape=(1, 6, 6), classes=3, seed=4)


def _nets_masks(data, k=3, density=0.3):
    nets = [build_network("mlp:12-8", data.input_shape, data.num_classes, s) for s in range(k)]
    n = prunable_layout(nets[0]).total
    g = torch.Generator().manual_seed(1)
    return nets, [torch.rand(n, generator=g) < density for _ in range(k)]


def test_first_update_consumes_the_batch_grown_weights_start_at_zero(data):
    """One epoch of one batch, T_end = that one step: the batch goes to a mask update, not a weight step, so the
    checkpoint is θ0 under the new mask, which is rigl_update's on θ0 and the dense gradient of the batch's loss."""
    nets, masks = _nets_masks(data, k=1)
    cfg = TrainConfig(epochs=1, batch_size=96)
    rigl = RigL(seed=7, update_every=5, end_fraction=1.0)
    out = train_population(nets, data, cfg, 0, masks=masks, dynamic=[rigl], keep_states=True)
    net, layout = nets[0], prunable_layout(nets[0])
    perm = torch.randperm(96, generator=generator(0, "data_order"))  # the epoch's order: one batch of all 96
    x, y = data.train_x[perm], data.train_y[perm]
    eff = {name: p.detach().clone() for name, p in net.named_parameters()}
    for layer, m in zip(layout.layers, layout.split(masks[0]), strict=True):
        eff[layer.name] = (eff[layer.name] * m).requires_grad_(True)
    loss = F.cross_entropy(torch.func.functional_call(net, eff, (x,)), y)
    grads = torch.autograd.grad(loss, [eff[layer.name] for layer in layout.layers])
    expected = []
    for i, (layer, m, g) in enumerate(zip(layout.layers, layout.split(masks[0]), grads, strict=True)):
        noise = rigl.noise(0, i, m.shape, torch.device("cpu"))
        expected.append(rigl_update(m, eff[layer.name].detach(), g, 0.3, noise))
    new = torch.cat([e.reshape(-1) for e in expected])
    assert torch.equal(out.masks[0], new) and not torch.equal(new, masks[0])
    theta0 = dict(net.named_parameters())
    for layer, m, m0 in zip(layout.layers, layout.split(new), layout.split(masks[0]), strict=True):
        # kept weights keep θ0 (no weight step), dropped ones are 0, grown ones start at 0
        assert torch.equal(out.states[0][layer.name], theta0[layer.name].detach() * (m & m0))
    assert layer_counts_of(new, layout) == layer_counts_of(masks[0], layout)


def test_static_members_train_as_without_the_dynamic_ones(data):
    """A RigL member in the population leaves the others' numbers unchanged (they are planned and stepped as
    before); its own mask keeps every layer's count and changes; pruned weights stay 0 at its checkpoint."""
    nets, masks = _nets_masks(data)
    cfg = TrainConfig(epochs=5, batch_size=16, patience=2)
    alone = train_population(nets[:2], data, cfg, 3, masks=masks[:2], keep_states=True)
    mixed = train_population(
        nets, data, cfg, 3, masks=masks, keep_states=True, dynamic=[None, None, RigL(5, update_every=4)]
    )
    assert [m.test_acc for m in alone.members] == [m.test_acc for m in mixed.members[:2]]
    for a, b in zip(alone.states, mixed.states[:2], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert mixed.masks[:2] == [None, None] and mixed.extra["training_paths"]["dynamic"]["members"] == [2]
    layout = prunable_layout(nets[0])
    final = mixed.masks[2]
    assert layer_counts_of(final, layout) == layer_counts_of(masks[2], layout) and not torch.equal(final, masks[2])
    for layer, m in zip(layout.layers, layout.split(final), strict=True):
        assert (mixed.states[2][layer.name][~m] == 0).all()


def test_momentum_state_restarts_for_changed_weights(data):
    nets, masks = _nets_masks(data, k=1)
    cfg = TrainConfig(epochs=3, batch_size=16, early_stopping=False, momentum=0.9)
    out = train_population(nets, data, cfg, 0, masks=masks, dynamic=[RigL(1, update_every=3)], keep_states=True)
    layout = prunable_layout(nets[0])
    for layer, m in zip(layout.layers, layout.split(out.masks[0]), strict=True):
        assert (out.states[0][layer.name][~m] == 0).all()  # a dropped weight's momentum would move it otherwise


def test_grammar():
    assert parse_method("rigl") == Method(("random",), "rigl", budget="erk") == parse_method("random@rigl#erk")
    assert parse_method("rigl").dynamic and not parse_method("snip").dynamic
    assert parse_method("rigl#layer").canonical() == "random@rigl#layer"
    assert parse_method("snip@rigl").canonical() == "snip@rigl"
    for text, match in (("rigl@uss", "already fixes the schedule"), ("mag>rigl", "cannot be part of a stack")):
        with pytest.raises(Exception, match=match):
            parse_method(text)


def test_evaluate_rows_are_marked_and_hold_the_trained_mask(tmp_path):
    config = build_config(
        network="mlp:20-10", dataset="digits", methods=("rigl", "snip"), densities=(0.05,), seeds=(1000,),
        train=TrainConfig(epochs=3, patience=2),
    )  # fmt: skip
    out = tmp_path / "r"
    run_evaluation(config, out)
    rows = ResultsDir(out).rows().set_index("method")
    assert bool(rows.loc["random@rigl#erk", "dynamic_sparse"]) and not bool(rows.loc["snip@uss", "dynamic_sparse"])
    assert rows.loc["random@rigl#erk", "cost_epochs"] == 0.0
    net = build_network("mlp:20-10", (1, 8, 8), 10, 1000)
    layout = prunable_layout(net)
    counts = erk_counts(layout, 0.05, "rigl")
    assert [rows.loc["random@rigl#erk", f"kept_l{i}"] for i in range(3)] == counts
