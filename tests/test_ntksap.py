"""NTK-SAP against its reference code (``assert_matches_reference``), its definition, and the grammar."""

import copy
import json
from pathlib import Path

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, build_network, prunable_layout
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.method import Method, parse_method
from metaprune.pruning.ntksap import NTKSAP_DRAWS, NTKSAP_EPSILON, NTKSAP_ROUNDS, NtkDraw, ntksap_draws, ntksap_saliency
from metaprune.pruning.scorers import SCORERS, PruneData, score
from tests.conftest import assert_matches_reference, synthetic_splits
from tests.test_prune_cli import NET, invoke

FIXTURE = Path(__file__).parent / "fixtures" / "ntksap_reference.json"


def _fixture_net(ref):
    sizes = ref["sizes"]
    net = MLP(sizes[0], tuple(sizes[1:-1]), sizes[-1])
    with torch.no_grad():
        for layer, b in zip(net.layers, ref["biases"], strict=True):
            layer.bias.copy_(torch.tensor(b))
            layer.weight.fill_(7.0)  # θ0's values must not matter: NTK-SAP redraws the weights
    return net


def _draws(ref_round, layout, inputs, width):
    return [
        NtkDraw(
            tuple(torch.tensor(w).reshape(layer.shape) for w, layer in zip(ws, layout.layers, strict=True)),
            tuple(torch.tensor(n).reshape(layer.shape) for n, layer in zip(ns, layout.layers, strict=True)),
            torch.tensor(x).reshape(inputs, width),
        )
        for ws, ns, x in zip(ref_round["weights"], ref_round["noise"], ref_round["x"], strict=True)
    ]


def test_scores_equal_the_reference_code():
    """YiteWang/NTK-SAP's NTKSAP.score on an MLP 6-5-4-3, R = 2 draws, dense and then a pruned mask, with the
    weights, inputs and perturbations it drew (tests/fixtures/ntksap_reference.json)."""
    ref = json.loads(FIXTURE.read_text())
    net = _fixture_net(ref)
    layout = prunable_layout(net)
    assert ref["epsilon"] == NTKSAP_EPSILON
    for rnd in ref["rounds"]:
        mask = torch.cat([torch.tensor(m) for m in rnd["mask"]]).bool()
        ours = ntksap_saliency(net, mask, _draws(rnd, layout, ref["inputs"], ref["sizes"][0]))
        expected = torch.cat([torch.tensor(s) for s in rnd["scores"]])
        assert ours.dtype == torch.float32
        assert_matches_reference(ours, expected)
        assert (ours[~mask] == 0).all() and (ours[mask] > 0).sum() > mask.sum() // 2
    assert not torch.equal(*[torch.cat([torch.tensor(m) for m in r["mask"]]) for r in ref["rounds"]])


def _trace(net, c, draw, eps):
    """J(c) written out: the NTK-trace estimate Σ_x ‖f(x; c⊙θ) − f(x; c⊙(θ+εξ))‖², by hand for an MLP."""
    layout = prunable_layout(net)

    def forward(weights):
        h = draw.x
        for i, (layer, w) in enumerate(zip(net.layers, weights, strict=True)):
            h = h @ w.t() + layer.bias
            if i < len(net.layers) - 1:
                h = torch.relu(h)
        return h

    parts = layout.split(c)
    plain = forward([p * t for p, t in zip(parts, draw.weights, strict=True)])
    moved = forward([p * (t + eps * n) for p, t, n in zip(parts, draw.weights, draw.noise, strict=True)])
    return ((plain - moved) ** 2).sum()


def test_scores_are_the_mask_gradient_of_the_ntk_trace_estimate():
    torch.manual_seed(0)
    net = MLP(5, (4,), 3).double()
    layout = prunable_layout(net)
    mask = torch.ones(layout.total, dtype=torch.bool)
    mask[[1, 9, 22]] = False
    draws = [
        NtkDraw(
            tuple(torch.randn(layer.shape, dtype=torch.float64) for layer in layout.layers),
            tuple(torch.randn(layer.shape, dtype=torch.float64) for layer in layout.layers),
            torch.randn(6, 5, dtype=torch.float64),
        )
        for _ in range(2)
    ]
    ours = ntksap_saliency(net, mask, draws, epsilon=0.05)
    c0 = mask.double()
    fd = torch.zeros_like(c0)
    for i in range(layout.total):
        up, down = c0.clone(), c0.clone()
        up[i] += 1e-6
        down[i] -= 1e-6
        diff = sum(_trace(net, up, d, 0.05) - _trace(net, down, d, 0.05) for d in draws)
        fd[i] = diff / 2e-6
    torch.testing.assert_close(ours, (fd * c0).abs(), rtol=1e-5, atol=1e-9)


def test_draws_are_fresh_per_round_and_seeded_and_theta0_does_not_matter():
    splits = synthetic_splits()
    net = build_network("mlp:6-5", splits.input_shape, splits.num_classes, 0)
    other = build_network("mlp:6-5", splits.input_shape, splits.num_classes, 1)  # other θ0, same zero biases
    data = PruneData(splits.train_x[:12], splits.train_y[:12])
    n = prunable_layout(net).total
    dense = torch.ones(n, dtype=torch.bool)
    fewer = dense.clone()
    fewer[:7] = False
    a = score("ntksap", net, dense, data, 3)
    assert torch.equal(a, score("ntksap", net, dense, data, 3))
    assert torch.equal(a, score("ntksap", other, dense, data, 3))
    assert not torch.equal(a, score("ntksap", net, dense, data, 4))
    d1 = ntksap_draws(net, dense, 3, 12, splits.input_shape, 2)
    d2 = ntksap_draws(net, fewer, 3, 12, splits.input_shape, 2)
    assert not torch.equal(d1[0].weights[0], d1[1].weights[0])  # R draws differ
    assert not torch.equal(d1[0].weights[0], d2[0].weights[0])  # another round, other weights
    # kaiming normal, fan-in, ReLU gain: the network's own initialisation
    big = ntksap_draws(MLP(400, (300,), 10), torch.ones(400 * 300 + 3000, dtype=torch.bool), 0, 1, (400,), 1)[0]
    assert big.weights[0].std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.02)
    assert big.noise[0].std().item() == pytest.approx(1.0, rel=0.02)


def test_batchnorm_networks_are_scored_and_the_scorer_is_pure():
    splits = synthetic_splits(shape=(3, 8, 8))
    net = build_network("resnet20", splits.input_shape, splits.num_classes, 0)
    before = copy.deepcopy(net.state_dict())
    data = PruneData(splits.train_x[:6], splits.train_y[:6])
    s = score("ntksap", net, None, data, 0)
    assert s.shape == (prunable_layout(net).total,) and torch.isfinite(s).all() and (s > 0).any()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_method_defaults_and_refusals():
    assert parse_method("ntksap") == Method(("ntksap",), "ums", rounds=NTKSAP_ROUNDS)
    assert str(parse_method("ntksap")) == "ntksap@ums20"
    assert parse_method("ntksap@ums").rounds is None  # the schedule config's rounds
    with pytest.raises(MetapruneError, match="reads no weights"):
        parse_method("ntksap+w3")
    spec = SCORERS.get("ntksap")
    assert not spec.needs_data and not spec.reads_weights and spec.passes == 2.0 * NTKSAP_DRAWS


def test_data_free_prune_and_cost():
    splits = synthetic_splits(n_train=96)
    ticket = prune_seeds(parse_method("ntksap@ums3"), "mlp:6-5", splits, 0.3, (0,), per_class=4)[0]
    assert int(ticket.mask.sum()) == round(0.3 * prunable_layout(ticket.net).total)
    # 3 rounds x 2 passes x 12 inputs (4 per class x 3 classes) / 96 training examples
    assert ticket.cost_epochs == pytest.approx(3 * 2 * 12 / 96)
    free = prune_seeds(parse_method("ntksap@ums3"), "mlp:6-5", splits, 0.3, (0,), per_class=0)[0]
    assert int(free.mask.sum()) == int(ticket.mask.sum())
    result = invoke("prune", *NET, "--method", "ntksap@ums4", "--sparsity", "0.05", "--per-class", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["method"] == "ntksap@ums4"
