"""Compacted and sparse training of masked MLPs is masked-gradient SGD: the live subnetwork, by hand; every
kernel combination against the textbook loop; the population against the dense path and against solo runs."""

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from metaprune.compaction import compact, expand, has_path, live_units
from metaprune.networks import build_network, prunable_layout
from metaprune.provenance import config_hash, to_jsonable
from metaprune.sparse_plan import ONE_THREAD_BELOW_US, Group, group_cost, member_kinds, plan, single_thread
from metaprune.sparse_step import CompactStep
from metaprune.training import DenseTrainingFallback, TrainConfig, train_population
from tests.conftest import synthetic_splits, torch_threads

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Every comparison here runs on one thread: fast on a loaded machine, and BLAS rounds per thread count."""
    with torch_threads(1):
        yield


def _t(rows):
    return torch.tensor(rows, dtype=torch.bool)


# A 3-3-2-2 MLP by hand: x0 → h0 → g0 → o0 is the only path; h2 has no input (bias only) but feeds g0;
# h1 feeds only g1, and g1 feeds no output, so both are dead; x1 is read only by the dead h1.
HAND = [
    _t([[1, 0, 0], [0, 1, 0], [0, 0, 0]]),  # layer 0: [hidden1, input]
    _t([[1, 0, 1], [0, 1, 0]]),  # layer 1: [hidden2, hidden1]
    _t([[1, 0], [0, 0]]),  # layer 2: [output, hidden2]
]


def test_live_units_and_paths_by_hand():
    assert [u.tolist() for u in live_units(HAND)] == [[0], [0, 2], [0], [0, 1]]
    assert has_path(HAND)
    cut = [HAND[0].clone(), *HAND[1:]]
    cut[0][0, 0] = False  # h0 loses its input: no path left, and no pixel is read by a live unit
    assert not has_path(cut) and live_units(cut)[0].tolist() == []
    weights = [torch.arange(1.0, 1.0 + m.numel()).view(m.shape) * m for m in HAND]
    biases = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.4, 0.5]), torch.tensor([0.6, 0.7])]
    member = compact(weights, biases, HAND)
    assert member.widths == (1, 2, 1, 2) and member.kept == (1, 2, 1) and not member.collapsed
    assert [v.tolist() for v in member.values] == [[1.0], [1.0, 3.0], [1.0]]
    assert [b.tolist() for b in member.biases] == [pytest.approx(v) for v in ([0.1, 0.3], [0.4], [0.6, 0.7])]
    assert compact(weights, biases, cut).collapsed
    # Written back into the starting weights, changed values land on their kept positions only.
    trained = member.with_values([v + 10 for v in member.values], [b + 10 for b in member.biases])
    full_w, full_b = expand(trained, weights, biases)
    assert full_w[1].tolist() == [[11.0, 0.0, 13.0], [0.0, 5.0, 0.0]]  # g1's kept input (dead) keeps θ0
    assert full_b[0].tolist() == pytest.approx([10.1, 0.2, 10.3])  # dead h1 keeps its bias


def _textbook(weights, biases, masks, x, y, batches, lr):
    """One member with nn.Linear layers, cross-entropy, masked gradients and torch.optim.SGD."""
    layers = torch.nn.ModuleList(torch.nn.Linear(w.shape[1], w.shape[0]).double() for w in weights)
    with torch.no_grad():
        for layer, w, b in zip(layers, weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    opt = torch.optim.SGD(layers.parameters(), lr=lr)
    for idx in batches:
        h = x[idx]
        for layer in layers[:-1]:
            h = torch.relu(layer(h))
        opt.zero_grad()
        F.cross_entropy(layers[-1](h), y[idx]).backward()
        for layer, m in zip(layers, masks, strict=True):
            layer.weight.grad.mul_(m)
        opt.step()
    return [layer.weight.detach() for layer in layers], [layer.bias.detach() for layer in layers]


def _tiny_members(k=4, seed=0):
    """Masked 8-6-5-3 members: one ordinary, one with an empty middle layer, one with an empty first layer
    (bias-only units), one keeping nothing but output biases."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(6, 8), (5, 6), (3, 5)]
    masks = [[torch.rand(o, i, generator=g) < 0.45 for o, i in sizes] for _ in range(k)]
    masks[1][1][:] = False
    masks[2][0][:] = False
    masks[3][1][:] = False
    masks[3][2][:] = False
    weights = [
        [torch.randn(o, i, generator=g, dtype=F64) * m for (o, i), m in zip(sizes, ms, strict=True)] for ms in masks
    ]
    biases = [[torch.randn(o, generator=g, dtype=F64) for o, _ in sizes] for _ in range(k)]
    return masks, weights, biases


@pytest.mark.parametrize("kinds", list(itertools.product(("dense", "csr"), repeat=3)))
def test_every_kernel_combination_is_masked_gradient_sgd(kinds):
    masks, weights, biases = _tiny_members()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 8, generator=g, dtype=F64), torch.randint(0, 3, (40,), generator=g)
    batches = [torch.randperm(40, generator=g)[:10] for _ in range(12)]
    members = [compact(w, b, m) for w, b, m in zip(weights, biases, masks, strict=True)]
    assert [m.collapsed for m in members] == [False, True, True, True]
    step = CompactStep(members, kinds, 0.3)
    for idx in batches:
        step.step(x[:, step.pixels], y, idx)
    for k in range(len(members)):
        got_w, got_b = expand(step.current(k), weights[k], biases[k])
        want_w, want_b = _textbook(weights[k], biases[k], masks[k], x, y, batches, 0.3)
        for a, b in zip(got_w + got_b, want_w + want_b, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for w, m in zip(got_w, masks[k], strict=True):
            assert torch.all(w[~m] == 0)
    # The logits the evaluation sees are the trained members' own.
    logits = step.logits(x[:5][:, step.pixels])
    for k in range(len(members)):
        w, b = expand(step.current(k), weights[k], biases[k])
        h = x[:5]
        for layer in range(2):
            h = torch.relu(h @ w[layer].t() + b[layer])
        torch.testing.assert_close(logits[k], h @ w[2].t() + b[2], rtol=1e-12, atol=1e-13)


def _lenet_like(n_members=5, seed=0):
    """LeNet-300-100 members on 28x28 inputs with masks of very different live widths: sparse random,
    a narrow SynFlow-like band, a collapsed one, a moderately dense one and a dense member."""
    nets = [build_network("mlp:300-100", (1, 28, 28), 10, s) for s in range(n_members)]
    layout = prunable_layout(nets[0])
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand(layout.total, generator=g) < d for d in (0.01, 0.3)]
    band = torch.zeros(layout.total, dtype=torch.bool)
    for layer, part in zip(layout.layers, layout.split(band), strict=True):
        view = part.view(layer.shape)
        view[:8] = torch.rand(view[:8].shape, generator=g) < 0.5  # a few units keep about half their inputs
        if layer.depth > 0:
            view[:, 8:] = False
    collapsed = torch.rand(layout.total, generator=g) < 0.02
    collapsed[: layout.layers[0].size] = False  # the first layer keeps nothing: no path
    return nets, [masks[0], band, collapsed, masks[1], None][:n_members]


@pytest.fixture(scope="module")
def mnist_like():
    return synthetic_splits(n_train=128, n_val=48, n_test=48, shape=(1, 28, 28), classes=10)


def test_compacted_population_trains_as_the_dense_path(mnist_like):
    nets, masks = _lenet_like()
    cfg = TrainConfig(lr=0.05, batch_size=32, epochs=3, early_stopping=False)
    results = {}
    for dtype in (torch.float32, F64):
        sparse = train_population(nets, mnist_like, cfg, 0, masks=masks, keep_states=True, dtype=dtype)
        dense = train_population(
            nets, mnist_like, replace(cfg, dense_training=True), 0, masks=masks, keep_states=True, dtype=dtype
        )
        results[dtype] = sparse, dense
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
        for s_state, d_state in zip(sparse.states, dense.states, strict=True):
            assert s_state.keys() == d_state.keys()
            for name, value in d_state.items():
                assert s_state[name].shape == value.shape
                torch.testing.assert_close(s_state[name], value, **tol)
    sparse, dense = results[F64]
    groups = sparse.extra["training_paths"]["groups"]
    assert {g["path"] for g in groups} == {"compact", "dense"} and any("csr" in g["kernels"] for g in groups)
    assert dense.extra["training_paths"] == {"dense_path": "dense training asked for"}
    assert [m.collapsed for m in sparse.members] == [False, False, True, False, False]
    assert [m.collapsed for m in dense.members] == [False, False, True, False, False]
    for s, d in zip(sparse.members, dense.members, strict=True):
        assert s.test_acc == d.test_acc and s.val_loss == pytest.approx(d.val_loss, rel=1e-10)


def test_dead_units_keep_theta0_and_pruned_weights_stay_zero(mnist_like):
    """What the dense path leaves in a unit that no kept weight links to the output (zero gradient):
    its kept incoming weights and its bias at θ0, bit for bit; the expanded state is the same."""
    nets, masks = _lenet_like()
    cfg = TrainConfig(lr=0.05, batch_size=32, epochs=2, early_stopping=False)
    sparse = train_population(nets[:3], mnist_like, cfg, 0, masks=masks[:3], keep_states=True, dtype=F64)
    dense = train_population(
        nets[:3], mnist_like, replace(cfg, dense_training=True), 0, masks=masks[:3], keep_states=True, dtype=F64
    )
    layout = prunable_layout(nets[0])
    for i in range(3):
        theta0 = {k: v.double() for k, v in nets[i].state_dict().items()}
        layer_masks = [m.view(layer.shape) for m, layer in zip(layout.split(masks[i]), layout.layers, strict=True)]
        live = live_units(layer_masks)
        for depth, m in enumerate(layer_masks):
            name, bias = f"layers.{depth}.weight", f"layers.{depth}.bias"
            w = sparse.states[i][name]
            assert torch.all(w[~m] == 0)
            dead = torch.ones(m.shape[0], dtype=torch.bool)
            dead[live[depth + 1]] = False
            assert torch.equal(w[dead], theta0[name][dead] * m[dead])
            assert torch.equal(sparse.states[i][bias][dead], theta0[bias][dead])
            assert torch.equal(dense.states[i][name][dead], w[dead])
        assert int(dead.sum()) == 0  # outputs are always live


def test_members_of_different_live_widths_train_as_they_would_alone(mnist_like):
    """Early stopping per member included: stopped members leave their group, which is rebuilt."""
    nets, masks = _lenet_like()
    cfg = TrainConfig(lr=0.03, batch_size=32, epochs=12, patience=2)
    pop = train_population(nets, mnist_like, cfg, 3, masks=masks, keep_states=True, dtype=F64)
    assert len({m.epochs_trained for m in pop.members}) > 1, "members should stop at different epochs"
    assert len(pop.extra["training_paths"]["groups"]) >= 2
    for i, net in enumerate(nets):
        solo = train_population([net], mnist_like, cfg, 3, masks=[masks[i]], keep_states=True, dtype=F64)
        a, b = pop.members[i], solo.members[0]
        assert (a.best_epoch, a.epochs_trained, a.test_acc, a.collapsed) == (
            b.best_epoch,
            b.epochs_trained,
            b.test_acc,
            b.collapsed,
        )
        for name, value in solo.states[0].items():
            torch.testing.assert_close(pop.states[i][name], value, rtol=1e-11, atol=1e-12)


def test_a_member_leaving_its_group_leaves_the_others_reading_their_own_pixels(mnist_like):
    """Two members on disjoint halves of the image share a group; when one stops, the group reads fewer
    columns, and the other trains on as it would alone."""
    nets = [build_network("mlp:300-100", (1, 28, 28), 10, s) for s in (7, 8)]
    layout = prunable_layout(nets[0])
    g = torch.Generator().manual_seed(5)
    masks = []
    for half in (slice(0, 392), slice(392, 784)):
        mask = torch.rand(layout.total, generator=g) < 0.03
        first = mask[: layout.layers[0].size].view(300, 784)
        first[:, [i for i in range(784) if not half.start <= i < half.stop]] = False
        masks.append(mask)
    cfg = TrainConfig(lr=0.01, batch_size=32, epochs=15, patience=2)
    pop = train_population(nets, mnist_like, cfg, 3, masks=masks, keep_states=True, dtype=F64)
    assert [g["members"] for g in pop.extra["training_paths"]["groups"]] == [[0, 1]]
    assert pop.members[0].epochs_trained != pop.members[1].epochs_trained
    for i in range(2):
        solo = train_population([nets[i]], mnist_like, cfg, 3, masks=[masks[i]], keep_states=True, dtype=F64)
        assert pop.members[i].epochs_trained == solo.members[0].epochs_trained
        assert pop.members[i].test_acc == solo.members[0].test_acc
        for name, value in solo.states[0].items():
            torch.testing.assert_close(pop.states[i][name], value, rtol=1e-11, atol=1e-12)


def test_a_collapsed_member_trains_its_biases_and_reads_no_input(mnist_like):
    nets, masks = _lenet_like()
    cfg = TrainConfig(lr=0.1, batch_size=32, epochs=2, early_stopping=False)
    res = train_population([nets[2]], mnist_like, cfg, 0, masks=[masks[2]], keep_states=True)
    assert res.members[0].collapsed
    (group,) = res.extra["training_paths"]["groups"]
    assert group["path"] == "compact" and group["live_widths"][0] == 0 and group["kept"][0] == 0
    assert not torch.equal(res.states[0]["layers.2.bias"], nets[2].state_dict()["layers.2.bias"])


def test_an_optimiser_the_compacted_path_cannot_run_falls_back_to_the_dense_path(mnist_like):
    nets, masks = _lenet_like(n_members=2)
    cfg = TrainConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=1, early_stopping=False)
    with pytest.warns(DenseTrainingFallback, match="momentum 0.9"):
        res = train_population(nets, mnist_like, cfg, 0, masks=masks, keep_states=True)
    assert "momentum" in res.extra["training_paths"]["dense_path"]
    ref = train_population(nets, mnist_like, replace(cfg, dense_training=True), 0, masks=masks, keep_states=True)
    for a, b in zip(res.states, ref.states, strict=True):
        for name in a:
            assert torch.equal(a[name], b[name])


def test_kernel_choice_follows_the_density_of_the_live_block():
    def member(first_density, middle_density, seed=0):
        g = torch.Generator().manual_seed(seed)
        masks = [
            torch.rand(300, 784, generator=g) < first_density,
            torch.rand(100, 300, generator=g) < middle_density,
            torch.ones(10, 100, dtype=torch.bool),
        ]
        weights = [torch.ones(m.shape) * m for m in masks]
        return compact(weights, [torch.zeros(m.shape[0]) for m in masks], masks)

    sparse, moderate, full = member(0.01, 0.02), member(0.5, 0.5), member(1.0, 1.0)
    assert member_kinds(sparse) == ("csr", "csr", "dense")
    assert member_kinds(moderate) == ("dense", "dense", "dense")
    groups = plan([sparse, full, moderate, sparse], [784, 300, 100, 10])
    assert groups == [Group((0, 3), ("csr", "csr", "dense")), Group((1, 2), None)]
    assert plan([moderate], [784, 300, 100, 10], sparse_kernels=False) == [Group((0,), None)]


def test_dense_training_is_recorded_only_when_set():
    """Results directories and stores made before the field existed keep their config (and hash)."""
    before = {f: v for f, v in to_jsonable(TrainConfig()).items()}
    assert "dense_training" not in before and TrainConfig.from_dict(before) == TrainConfig()
    legacy = {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": 100,
        "early_stopping": True,
        "patience": 10,
        "eval_batch_size": 2048,
        "mask_mode": "grad",
        "autograd": False,
    }
    assert config_hash(TrainConfig()) == config_hash(legacy)
    dense = TrainConfig(dense_training=True)
    assert dense.to_dict()["dense_training"] is True and TrainConfig.from_dict(dense.to_dict()) == dense
    assert config_hash(dense) != config_hash(TrainConfig())


def test_small_compacted_populations_train_on_one_thread_and_restore_the_callers(mnist_like):
    """A population of small compacted groups runs its loop on one thread (its kernels are too small for
    a second, ``sparse_plan.single_thread``); a population with a dense group keeps the caller's threads."""
    nets, masks = _lenet_like()
    cfg = TrainConfig(lr=0.05, batch_size=32, epochs=2, early_stopping=False)
    seen: list[int] = []

    def progress(epoch, k_active, k_total):
        seen.append(torch.get_num_threads())

    with torch_threads(2):
        small = train_population(nets[:2], mnist_like, cfg, 0, masks=masks[:2], progress=progress)
        assert torch.get_num_threads() == 2
        assert small.extra["training_paths"]["threads"] == 1 and seen == [1, 1]
        seen.clear()
        mixed = train_population(nets, mnist_like, cfg, 0, masks=masks, progress=progress)
        assert torch.get_num_threads() == 2
    assert "threads" not in mixed.extra["training_paths"] and seen == [2, 2]
    assert any(g["path"] == "dense" for g in mixed.extra["training_paths"]["groups"])


def test_single_thread_rule_reads_the_modelled_cost_of_compacted_groups_only():
    g = torch.Generator().manual_seed(0)

    def member(density):
        masks = [torch.rand(300, 784, generator=g) < density, torch.rand(100, 300, generator=g) < density]
        masks.append(torch.ones(10, 100, dtype=torch.bool))
        return compact([torch.ones(m.shape) * m for m in masks], [torch.zeros(m.shape[0]) for m in masks], masks)

    sparse, full = member(0.005), member(1.0)
    assert group_cost([sparse]) < ONE_THREAD_BELOW_US < group_cost([member(0.2)] * 4)
    assert single_thread(plan([sparse, sparse], [784, 300, 100, 10]), [sparse, sparse])
    many = [member(0.2) for _ in range(4)]
    assert not single_thread(plan(many, [784, 300, 100, 10]), many)  # big kernels: two threads pay
    mixed = [sparse, full]
    assert not single_thread(plan(mixed, [784, 300, 100, 10]), mixed)  # a dense-path group
