"""Scorers against their definitions: finite differences, closed-form path sums, purity."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, prunable_layout
from metaprune.pruning.scorers import (
    GRASP_TEMPERATURE,
    SCORERS,
    PruneData,
    pruning_batch,
    score,
)


def tiny(seed=0, bias=True):
    """MLP 4-3-2 in float64 with seeded weights (and non-zero biases)."""
    torch.manual_seed(seed)
    net = MLP(4, (3,), 2).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.copy_(torch.randn_like(layer.weight))
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.5 if bias else torch.zeros_like(layer.bias))
    return net


def tiny_data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return PruneData(torch.randn(n, 4, generator=g, dtype=torch.float64), torch.arange(n) % 2)


def params(net):
    return [
        p.detach().clone() for p in (net.layers[0].weight, net.layers[0].bias, net.layers[1].weight, net.layers[1].bias)
    ]


def loss_fn(w1, b1, w2, b2, data, temperature=1.0):
    """The MLP written out by hand, independent of the scorer code."""
    h = torch.relu(data.x @ w1.T + b1)
    return F.cross_entropy((h @ w2.T + b2) / temperature, data.y)


def flat(*ts):
    return torch.cat([t.reshape(-1) for t in ts])


# -------------------------------------------------------------------------------------------- SNIP


@pytest.mark.parametrize("pruned", [(), (1, 13)])
def test_snip_matches_finite_differences_in_the_mask_variable(pruned):
    net, data = tiny(), tiny_data()
    w1, b1, w2, b2 = params(net)
    mask = torch.ones(18, dtype=torch.bool)
    mask[list(pruned)] = False
    m1, m2 = mask[:12].reshape(3, 4).double(), mask[12:].reshape(2, 3).double()
    eps = 1e-6
    fd = torch.zeros(18, dtype=torch.float64)
    for j in range(18):
        c = torch.ones(18, dtype=torch.float64)
        vals = []
        for sgn in (1, -1):
            c[j] = 1 + sgn * eps
            c1, c2 = c[:12].reshape(3, 4), c[12:].reshape(2, 3)
            vals.append(loss_fn(c1 * m1 * w1, b1, c2 * m2 * w2, b2, data))
        fd[j] = (vals[0] - vals[1]) / (2 * eps)
    expected = fd.abs() / fd.abs().sum()
    got = score("snip", net, mask, data, 0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)
    assert float(got.sum()) == pytest.approx(1.0, rel=1e-6)
    assert (got[list(pruned)] == 0).all()


# ------------------------------------------------------------------------------------------- GraSP


def grad_at(w1, b1, w2, b2, data):
    ws = [w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)]
    loss = loss_fn(ws[0], b1, ws[1], b2, data, GRASP_TEMPERATURE)
    return torch.autograd.grad(loss, ws)


@pytest.mark.parametrize("pruned", [(), (2, 7, 15)])
def test_grasp_matches_finite_difference_hessian_vector_product(pruned):
    net, data = tiny(), tiny_data()
    w1, b1, w2, b2 = params(net)
    mask = torch.ones(18, dtype=torch.bool)
    mask[list(pruned)] = False
    m1, m2 = mask[:12].reshape(3, 4).double(), mask[12:].reshape(2, 3).double()
    w1, w2 = w1 * m1, w2 * m2  # the masked network; pruned directions stay at 0
    g1, g2 = grad_at(w1, b1, w2, b2, data)
    g1, g2 = g1 * m1, g2 * m2
    eps = 1e-3 / float(flat(g1, g2).norm())
    p1, p2 = grad_at(w1 + eps * g1, b1, w2 + eps * g2, b2, data)
    q1, q2 = grad_at(w1 - eps * g1, b1, w2 - eps * g2, b2, data)
    hg = flat((p1 - q1) * m1, (p2 - q2) * m2) / (2 * eps)
    raw = flat(w1, w2) * hg
    expected = raw / (raw.sum().abs() + 1e-10)
    got = score("grasp", net, mask, data, 0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    torch.testing.assert_close(score("grasp_abs", net, mask, data, 0), got.abs())
    assert (got[list(pruned)] == 0).all()
    assert (got < 0).any()  # signed: GraSP may score below zero


# ----------------------------------------------------------------------------------------- SynFlow


def test_synflow_equals_closed_form_path_sums():
    net = tiny(bias=False)
    w1, _, w2, _ = params(net)
    a1, a2 = w1.abs(), w2.abs()
    expected = flat(a1 * a2.sum(0)[:, None], a2 * a1.sum(1)[None, :])
    got = score("synflow", net, None, None, 0)  # MLP: input shape from the first layer
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # masked: pruned weights drop out of the path sums
    mask = torch.ones(18, dtype=torch.bool)
    mask[[0, 5, 12]] = False
    a1, a2 = a1 * mask[:12].reshape(3, 4), a2 * mask[12:].reshape(2, 3)
    expected = flat(a1 * a2.sum(0)[:, None], a2 * a1.sum(1)[None, :])
    torch.testing.assert_close(score("synflow", net, mask, tiny_data(), 0), expected, rtol=1e-12, atol=0)


def test_synflow_takes_abs_bias_into_the_flow_as_the_synflow_code():
    """On a trained checkpoint biases are non-zero: like the SynFlow code (abs of the whole state_dict),
    the scorer's forward pass uses |b|. With the all-ones input of width 4 and every unit positive:
    h1 = |W1|·1 + |b1|, R = Σ(|W2| h1 + |b2|), so dR/dW2[i, j] = h1[j] carries |b1[j]|; dR/dW1 does not
    depend on b (b2 adds a constant to R). The paper's R (weights only) would drop the |b1| term."""
    net = tiny(bias=True)
    w1, b1, w2, _ = params(net)
    a1, a2 = w1.abs(), w2.abs()
    h1 = a1.sum(1) + b1.abs()
    expected = flat(a1 * a2.sum(0)[:, None], a2 * h1[None, :])
    got = score("synflow", net, None, None, 0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    paper = flat(a1 * a2.sum(0)[:, None], a2 * a1.sum(1)[None, :])
    assert not torch.allclose(got, paper)  # the difference is exactly the |b1| term
    torch.testing.assert_close(got[12:] - paper[12:], (a2 * b1.abs()[None, :]).reshape(-1), rtol=1e-12, atol=1e-15)


def test_synflow_conv_net_needs_data_for_input_shape():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2, bias=False))
    with pytest.raises(MetapruneError, match="input shape"):
        score("synflow", net, None, None, 0)
    s = score("synflow", net, None, PruneData(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long)), 0)
    parts = prunable_layout(net).split(s)
    assert float(parts[0].sum()) == pytest.approx(float(parts[1].sum()))  # no biases: flow is conserved


# --------------------------------------------------------------------------- magnitude and random


def test_magnitude_and_alias():
    net = tiny()
    w1, _, w2, _ = params(net)
    mask = torch.ones(18, dtype=torch.bool)
    mask[3] = False
    expected = flat(w1, w2).abs().float()
    expected[3] = 0
    assert torch.equal(score("magnitude", net, mask, None, 0), expected)
    assert torch.equal(score("mag", net, mask, None, 0), expected)


def test_random_is_seeded_and_depends_only_on_seed_and_mask():
    mask = torch.ones(18, dtype=torch.bool)
    a = score("random", tiny(0), mask, None, 3)
    assert torch.equal(a, score("random", tiny(5), mask, None, 3))  # weights do not matter
    assert not torch.equal(a, score("random", tiny(0), mask, None, 4))
    mask[:6] = False
    b = score("random", tiny(0), mask, None, 3)
    assert (b[:6] == 0).all() and torch.equal(b[6:], a[6:])


def test_registry_flags_and_missing_data():
    assert set(SCORERS.names()) >= {"random", "magnitude", "snip", "grasp", "grasp_abs", "synflow"}
    needs = {e.name: e.value.needs_data for e in SCORERS}
    assert needs["snip"] and needs["grasp"] and needs["grasp_abs"] and needs["synflow"]
    assert not needs["magnitude"] and not needs["random"]
    with pytest.raises(MetapruneError, match="'snip' needs a pruning batch"):
        score("snip", tiny(), None, None, 0)
    with pytest.raises(MetapruneError, match="unknown scorer"):
        score("snipp", tiny(), None, None, 0)


def test_non_finite_scores_name_scorer_and_layer():
    net = tiny()
    with torch.no_grad():
        net.layers[1].weight[0, 0] = float("nan")
    with pytest.raises(MetapruneError, match=r"'magnitude'.*layers\.1\.weight"):
        score("magnitude", net, None, None, 0)


# ------------------------------------------------------------------------------------------ purity


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def snapshot(net):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()},
        [m.training for m in net.modules()],
        {n: p.requires_grad for n, p in net.named_parameters()},
    )


def same(a, b):
    def eq(x, y):
        if x is None or y is None:
            return x is y
        return x.dtype == y.dtype and torch.equal(x, y)

    return (
        all(eq(a[0][k], b[0][k]) for k in a[0])
        and all(eq(a[1][k], b[1][k]) for k in a[1])
        and a[2] == b[2]
        and a[3] == b[3]
    )


@pytest.fixture(scope="module")
def learned_model(tmp_path_factory):
    """``learned:DIR`` for the purity test: a fitted model whose features are per-layer ranks, so it scores
    any network of linear layers."""
    from metaprune.fit.core import FitConfig, fit_model
    from tests.test_fit_helpers import tiny_store

    store = tiny_store(tmp_path_factory, "main", tuple(range(6)))
    models = tmp_path_factory.mktemp("purity-models")
    config = FitConfig.for_recipe("thesis", model="linear", features="scores,structure,activations", preprocess="rank")
    return f"learned:{fit_model(store, config, models_dir=models).path}"


def _pruning_data(net: nn.Module, name: str) -> PruneData:
    """A pruning batch for BNNet; a scorer that reads a warm-up gets the record of a short one."""
    data = PruneData(torch.randn(12, 1, 6, 6), torch.arange(12) % 3)
    if not SCORERS.get(name).needs_warmup:
        return data
    from metaprune.pruning.warmup import warm_up
    from metaprune.training import TrainConfig
    from tests.conftest import synthetic_splits

    splits = synthetic_splits(n_train=32, shape=(1, 6, 6))
    return PruneData(data.x, data.y, warm_up(net, splits, TrainConfig(batch_size=8), 0.5, 0))


# every registered scorer, and a fitted one: a new scorer is checked without naming it here
PURITY = [*SCORERS.names(), "learned"]


def test_the_purity_test_covers_every_registered_scorer():
    classic = {"random", "magnitude", "snip", "grasp", "grasp_abs", "synflow"}
    assert classic | {"prospr", "delta", "movement", "abs_grad", "learned"} <= set(PURITY)


@pytest.mark.parametrize("name", PURITY)
@pytest.mark.parametrize("training", [True, False])
def test_scorers_are_pure_and_ignore_stale_grads(name, training, request):
    if name == "learned":
        name = request.getfixturevalue("learned_model")
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    net.train(training)
    spec = None if name.startswith("learned:") else SCORERS.get(name)
    if spec is None or spec.fits is not None:
        # a scorer of MLPs only (PHEW) is checked on one, and so is the learned model (fitted on MLPs, it refuses
        # BNNet's conv layer)
        net = tiny().train(training)
    data = tiny_data() if spec is None else _pruning_data(net, name)
    mask = torch.rand(prunable_layout(net).total) < 0.7
    keep = int(mask.sum()) // 2 if spec is not None and spec.sized else None  # what a prune would keep
    clean = score(name, net, mask, data, 0, keep=keep)  # no .grad anywhere
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 100  # stale gradients, e.g. left by training
    before = snapshot(net)
    stale = score(name, net, mask, data, 0, keep=keep)
    assert same(before, snapshot(net))
    assert torch.equal(clean, stale)
    if spec is None or not spec.revives:  # a reviving scorer (FORCE) scores the pruned weights too
        assert (stale[~mask] == 0).all()


def test_scores_do_not_depend_on_train_flag_for_mlp():
    net, data = tiny(), tiny_data()
    for name in ("snip", "grasp", "synflow"):
        a = score(name, net.train(), None, data, 0)
        b = score(name, net.eval(), None, data, 0)
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------- pruning batch


def test_pruning_batch_is_class_balanced_and_seeded():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    x = torch.arange(400).float()[:, None]  # x identifies the example
    b = pruning_batch(x, y, 4, seed=7, per_class=5)
    assert b.x.shape == (20, 1) and b.y.shape == (20,)
    assert torch.equal(torch.bincount(b.y, minlength=4), torch.full((4,), 5))
    idx = b.x[:, 0].long()
    assert torch.equal(y[idx], b.y) and idx.unique().numel() == 20
    assert torch.equal(pruning_batch(x, y, 4, seed=7, per_class=5).x, b.x)
    assert not torch.equal(pruning_batch(x, y, 4, seed=8, per_class=5).x, b.x)
    with pytest.raises(MetapruneError, match="class 3"):
        pruning_batch(x[y != 3], y[y != 3], 4, seed=0)
