"""ProsPr against its definition: finite differences through the inner steps, M=0 = SNIP, purity, the CLI."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from metaprune.networks import MLP, build_network, prunable_layout, prunable_weights
from metaprune.pruning.method import Method, parse_method
from metaprune.pruning.prospr import PROSPR_LR, PROSPR_STEPS, prospr_meta_gradient
from metaprune.pruning.scorers import SCORERS, PruneData, score
from tests.conftest import assert_matches_reference
from tests.test_prune_cli import N_WEIGHTS, NET, invoke
from tests.test_scorers import BNNet, same, snapshot


def tiny(seed=0):
    """MLP 4-3-2 in float64 with seeded weights and non-zero biases."""
    torch.manual_seed(seed)
    net = MLP(4, (3,), 2).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.copy_(torch.randn_like(layer.weight))
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.5)
    return net


def tiny_data(n=6, seed=1, shape=(4,), classes=2):
    g = torch.Generator().manual_seed(seed)
    return PruneData(torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.arange(n) % classes)


def reference_loss(net, c, mask, data, steps, lr):
    """L(w'_M) written out independently: plain SGD on a copy, no graph kept (values only)."""
    net = copy.deepcopy(net).eval()
    weights = prunable_weights(net)
    layout = prunable_layout(net)
    with torch.no_grad():
        for w, part in zip(weights, layout.split(c), strict=True):
            w.mul_(part)
    held = {id(w): m for w, m in zip(weights, layout.split(mask.to(torch.float64)), strict=True)}
    params = list(net.parameters())
    for _ in range(steps):
        loss = F.cross_entropy(net(data.x), data.y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(lr * g * held.get(id(p), 1.0))
    with torch.no_grad():
        return F.cross_entropy(net(data.x), data.y).item()


def central_differences(net, mask, data, steps, lr, eps=1e-6):
    c0 = mask.to(torch.float64)
    out = torch.zeros_like(c0)
    for i in torch.nonzero(mask).squeeze(1).tolist():
        plus, minus = c0.clone(), c0.clone()
        plus[i] += eps
        minus[i] -= eps
        up = reference_loss(net, plus, mask, data, steps, lr)
        down = reference_loss(net, minus, mask, data, steps, lr)
        out[i] = (up - down) / (2 * eps)
    return out


@pytest.mark.parametrize("steps, lr", [(PROSPR_STEPS, PROSPR_LR), (3, 0.5), (1, 0.3)])
def test_meta_gradient_matches_finite_differences_through_the_steps(steps, lr):
    net, data = tiny(), tiny_data()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    mask[[0, 5, 13]] = False  # pruned weights stay at 0 through the steps
    meta = prospr_meta_gradient(net, mask, data, steps=steps, lr=lr)
    assert meta.dtype == torch.float64
    fd = central_differences(net, mask, data, steps, lr)
    torch.testing.assert_close(meta, fd, rtol=1e-5, atol=1e-9)
    assert (meta[~mask] == 0).all()
    # the test has teeth: the first-order approximation (gradient at w'_M times θ0, no second-order
    # terms through the steps) is measurably different
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for w, m in zip(prunable_weights(moved), prunable_layout(moved).split(mask), strict=True):
            w.mul_(m)
    params = list(moved.parameters())
    held = {id(w): m.double() for w, m in zip(prunable_weights(moved), prunable_layout(moved).split(mask), strict=True)}
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(moved(data.x), data.y), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(lr * g * held.get(id(p), 1.0))
    g_m = torch.autograd.grad(F.cross_entropy(moved(data.x), data.y), prunable_weights(moved))
    first_order = (
        torch.cat([g.reshape(-1) for g in g_m])
        * torch.cat([w.detach().reshape(-1) for w in prunable_weights(net)])
        * mask.double()
    )
    assert (first_order - fd).abs().max() > 1e-3 * fd.abs().max()


def test_meta_gradient_matches_finite_differences_on_a_conv_net_with_batchnorm():
    torch.manual_seed(0)
    net = BNNet().double()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    data = tiny_data(n=9, shape=(1, 6, 6), classes=3)
    mask = torch.rand(prunable_layout(net).total) < 0.8
    meta = prospr_meta_gradient(net, mask, data, steps=2, lr=0.2)
    fd = central_differences(net, mask, data, 2, 0.2)
    torch.testing.assert_close(meta, fd, rtol=1e-5, atol=1e-9)


def test_zero_steps_is_snip():
    net, data = tiny(), tiny_data()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    mask[[2, 7]] = False
    meta = prospr_meta_gradient(net, mask, data, steps=0)
    snip = score("snip", net, mask, data, 0)  # |g ⊙ θ| / sum
    raw = meta.abs()
    torch.testing.assert_close((raw / raw.sum()).float(), snip)
    # unnormalised: exactly g ⊙ θ0 of the masked network
    masked = copy.deepcopy(net)
    with torch.no_grad():
        for w, m in zip(prunable_weights(masked), prunable_layout(masked).split(mask), strict=True):
            w.mul_(m)
    g = torch.autograd.grad(F.cross_entropy(masked(data.x), data.y), prunable_weights(masked))
    theta0 = torch.cat([w.detach().reshape(-1) for w in prunable_weights(net)])
    torch.testing.assert_close(meta, torch.cat([t.reshape(-1) for t in g]) * theta0 * mask.double())


def test_registered_scores_are_the_normalised_absolute_meta_gradient():
    net, data = tiny(), tiny_data()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    s = score("prospr", net, mask, data, 0)
    meta = prospr_meta_gradient(net, mask, data).abs()
    torch.testing.assert_close(s, (meta / meta.sum()).float())
    spec = SCORERS.get("prospr")
    assert spec.needs_data and spec.passes == 2 * PROSPR_STEPS + 1 and not spec.needs_warmup


@pytest.mark.parametrize("training", [True, False])
def test_pure_deterministic_and_pruned_weights_score_zero(training):
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    net.train(training)
    data = PruneData(torch.randn(12, 1, 6, 6), torch.arange(12) % 3)
    mask = torch.rand(prunable_layout(net).total) < 0.7
    clean = score("prospr", net, mask, data, 0)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 100  # stale gradients must not leak
    before = snapshot(net)
    again = score("prospr", net, mask, data, 0)
    assert same(before, snapshot(net))  # weights, buffers, .grad, train flags, requires_grad untouched
    assert torch.equal(clean, again)
    assert (again[~mask] == 0).all() and (again[mask] > 0).any()


def test_runs_on_the_library_networks():
    for spec in ("mlp:12-8", "conv2"):
        net = build_network(spec, (1, 8, 8), 10, 0)
        data = PruneData(torch.randn(20, 1, 8, 8), torch.arange(20) % 10)
        s = score("prospr", net, None, data, 0)
        assert s.shape == (prunable_layout(net).total,) and s.dtype == torch.float32
        assert torch.isfinite(s).all() and float(s.sum()) == pytest.approx(1.0, rel=1e-4)


def test_method_is_single_shot_as_the_paper_and_the_cli_prunes_with_it():
    assert parse_method("prospr") == Method(("prospr",), "uss")
    assert parse_method("prospr@ums").multi_shot
    result = invoke("prune", *NET, "--method", "prospr", "--sparsity", "0.01", "--seed", "0", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["config"]["method"] == "prospr@uss"
    assert d["report"]["total"] == N_WEIGHTS and d["report"]["kept"] == round(0.01 * N_WEIGHTS)


def test_jackpot_preset_includes_prospr():
    from metaprune.evaluate.config import JACKPOT_BASELINES

    assert "prospr" in JACKPOT_BASELINES and "magnitude>synflow~snip" in JACKPOT_BASELINES


def test_listed():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "prospr" in result.stdout


def test_float32_agrees_with_float64():
    net, data = tiny(), tiny_data()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    s64 = score("prospr", net, mask, data, 0)
    s32 = score("prospr", net.float(), mask, PruneData(data.x.float(), data.y), 0)
    torch.testing.assert_close(s32, s64, rtol=1e-4, atol=1e-6)


def test_held_weights_stay_pruned_during_the_inner_steps():
    """A weight pruned before scoring stays 0 through the steps: the result equals the same network with
    that weight deleted (zero weight, zero update), whatever its θ0 value."""
    net, data = tiny(), tiny_data()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    mask[3] = False
    other = copy.deepcopy(net)
    with torch.no_grad():
        prunable_weights(other)[0].view(-1)[3] = 123.0  # θ0 of a pruned weight does not matter
    torch.testing.assert_close(prospr_meta_gradient(net, mask, data), prospr_meta_gradient(other, mask, data))


def test_scores_equal_the_reference_code():
    """mil-ad/prospr's prune(..., return_scores=True), method 'full', the same batch in the inner steps, on an
    MLP 6-5-4-3 for (M, α) = (3, 0.1) (its CLI defaults), (1, 0.5) and (0, 0.1) (= SNIP's |g ⊙ θ|)
    (tests/fixtures/prospr_reference.json)."""
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "fixtures" / "prospr_reference.json").read_text())
    sizes = ref["sizes"]
    net = MLP(sizes[0], tuple(sizes[1:-1]), sizes[-1])
    with torch.no_grad():
        for layer, w, b in zip(net.layers, ref["weights"], ref["biases"], strict=True):
            layer.weight.copy_(torch.tensor(w).reshape(layer.weight.shape))
            layer.bias.copy_(torch.tensor(b))
    data = PruneData(torch.tensor(ref["x"]).reshape(-1, sizes[0]), torch.tensor(ref["y"]))
    dense = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    assert (ref["runs"][0]["steps"], ref["runs"][0]["lr"]) == (PROSPR_STEPS, PROSPR_LR)
    for run in ref["runs"]:
        ours = prospr_meta_gradient(net, dense, data, steps=run["steps"], lr=run["lr"]).abs()
        assert_matches_reference(ours, torch.cat([torch.tensor(s) for s in run["scores"]]))
