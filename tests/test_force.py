"""FORCE and iterative SNIP against the reference code (naver/force), FORCE's revival, and the grammar."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metaprune.networks import MLP, prunable_layout, prunable_weights
from metaprune.pruning.apply import prune_data_for, prune_seeds
from metaprune.pruning.force import FORCE_ROUNDS, force_saliency
from metaprune.pruning.masks import topk_mask
from metaprune.pruning.method import Method, parse_method
from metaprune.pruning.schedules import exponential_densities, prune_upfront
from metaprune.pruning.scorers import SCORERS, PruneData, score
from tests.conftest import assert_matches_reference, synthetic_splits
from tests.test_prune_cli import invoke

FIXTURE = Path(__file__).parent / "fixtures" / "force_reference.json"


def _fixture():
    ref = json.loads(FIXTURE.read_text())
    sizes = ref["sizes"]
    net = MLP(sizes[0], tuple(sizes[1:-1]), sizes[-1])
    with torch.no_grad():
        for layer, t, b in zip(net.layers, ref["theta"], ref["biases"], strict=True):
            layer.weight.copy_(torch.tensor(t).reshape(layer.weight.shape))
            layer.bias.copy_(torch.tensor(b))
    data = PruneData(torch.tensor(ref["x"]).reshape(-1, sizes[0]), torch.tensor(ref["y"]))
    return ref, net, data


def _flat(parts):
    return torch.cat([torch.tensor(p) for p in parts])


def test_force_saliency_and_masks_equal_the_reference_code_round_by_round():
    """naver/force iterative_pruning(prune_method=3): each round's saliency |θ0 ⊙ g(masked net)| to float32
    rounding (bit for bit where BLAS sums in the reference run's order; another CPU's kernels round the
    last bit differently), and each round's mask is the top k of every weight, pruned ones included (here
    some come back)."""
    ref, net, data = _fixture()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    revived = 0
    for rnd in ref["methods"]["force"]:
        expected = _flat(rnd["saliency"])
        ours = force_saliency(net, mask, data)
        assert_matches_reference(ours, expected)
        new = _flat(rnd["mask"]).bool()
        assert torch.equal(topk_mask(ours, int(new.sum()), None, torch.Generator()), new)
        revived += int((new & ~mask).sum())
        mask = new
    assert revived > 0  # the test has teeth: FORCE brought pruned weights back
    # the registered scorer is the sum-normalised saliency
    s = score("force", net, mask, data, 0)
    raw = force_saliency(net, mask, data)
    torch.testing.assert_close(s, (raw / raw.sum()).float())


def test_iterative_snip_is_snip_under_ums_round_by_round():
    """naver/force iterative_pruning(prune_method=1): SNIP on the masked network, pruned weights held out."""
    ref, net, data = _fixture()
    mask = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    for rnd in ref["methods"]["iter_snip"]:
        sal = _flat(rnd["saliency"]) * mask
        assert_matches_reference(score("snip", net, mask, data, 0), sal / sal.sum())
        new = _flat(rnd["mask"]).bool()
        assert not (new & ~mask).any()
        assert torch.equal(topk_mask(score("snip", net, mask, data, 0), int(new.sum()), mask, torch.Generator()), new)
        mask = new
    # the reference's schedule is ours: round i keeps density ** (i / T) from dense
    steps = exponential_densities(1.0, ref["density"], ref["steps"])
    assert [r["density"] for r in ref["methods"]["iter_snip"]] == pytest.approx(steps, rel=1e-12)


def test_force_is_the_hand_computed_foresight_sensitivity():
    """|θ0 ⊙ ∂L/∂w| at the pruned network: on a 2-2-2 linear-output MLP, written out."""
    net = MLP(2, (2,), 2).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.5]]))
        net.layers[1].weight.copy_(torch.tensor([[2.0, -1.0], [1.0, 3.0]]))
        for layer in net.layers:
            layer.bias.zero_()
    data = PruneData(torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]))
    mask = torch.tensor([True, False, True, True, True, True, False, True])  # w0[0,1] and w1[1,0] pruned
    h = torch.relu(torch.tensor([1.0 * 1 + 0.0 * 2, 0.5 * 1 + 1.5 * 2]))  # [1, 3.5]
    logits = torch.tensor([2.0 * h[0] - 1.0 * h[1], 0.0 * h[0] + 3.0 * h[1]])
    dz = torch.softmax(logits, 0) - torch.tensor([1.0, 0.0])
    g1 = torch.outer(dz, h)
    w1m = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    dh = (w1m.t() @ dz) * (h > 0)
    g0 = torch.outer(dh, torch.tensor([1.0, 2.0]))
    theta = torch.cat([w.detach().reshape(-1) for w in prunable_weights(net)])
    expected = (torch.cat([g0.reshape(-1), g1.reshape(-1)]).double() * theta).abs()
    torch.testing.assert_close(force_saliency(net, mask, data), expected)
    assert force_saliency(net, mask, data)[~mask].gt(0).all()  # pruned weights are ranked too
    assert F.cross_entropy(net(data.x), data.y) > 0


def test_force_revives_under_ums_and_snip_never_does():
    splits = synthetic_splits()
    ticket = prune_seeds(parse_method("force@ums8"), "mlp:12-8", splits, 0.05, (0,))[0]
    assert int(ticket.mask.sum()) == round(0.05 * prunable_layout(ticket.net).total)
    data = prune_data_for(splits, 0)  # the pruning batch prune_seeds draws for seed 0

    def run(name, revive):
        seen = []

        def fn(net, mask):
            seen.append(mask.clone())
            return score(name, net, mask, data, 0)

        out = prune_upfront(fn, ticket.net, 0.05, 0, multi_shot=True, config=_cfg(8), revive=revive)
        seen.append(out.mask)
        return out, sum(int((b & ~a).sum()) for a, b in zip(seen, seen[1:], strict=False))

    force, back = run("force", True)
    assert torch.equal(force.mask, ticket.mask)  # the method spelling takes the same path
    assert back > 0
    snip, none = run("snip", False)
    assert none == 0 and not torch.equal(snip.mask, force.mask)


def _cfg(rounds):
    from metaprune.config import ScheduleConfig

    return ScheduleConfig(rounds=rounds)


def test_method_defaults_budgets_and_cost():
    assert parse_method("force") == Method(("force",), "ums", rounds=FORCE_ROUNDS)
    assert str(parse_method("force")) == "force@ums60"
    spec = SCORERS.get("force")
    assert spec.revives and spec.needs_data and spec.passes == 1.0
    splits = synthetic_splits(n_train=96)
    ticket = prune_seeds(parse_method("force@ums5#layer"), "mlp:12-8", splits, 0.2, (0,), per_class=4)[0]
    layout = prunable_layout(ticket.net)
    counts = [int(p.sum()) for p in layout.split(ticket.mask)]
    assert counts == [round(0.2 * layer.size) for layer in layout.layers]
    assert ticket.cost_epochs == pytest.approx(5 * 1 * 12 / 96)  # 5 rounds, one pass over 12 examples
    result = invoke("list")
    assert all(name in result.stdout for name in ("force", "ntksap", "phew"))


def test_force_on_a_data_free_path_is_refused(monkeypatch, capsys, tmp_path):
    from tests.conftest import run_main

    monkeypatch.chdir(tmp_path)
    args = ("prune", "--network", "mlp:20-10", "--dataset", "digits", "--method", "force", "--sparsity", "0.1")
    code, out, err = run_main(monkeypatch, capsys, *args, "--per-class", "0")
    assert code == 2 and err.strip().count("\n") == 0 and "needs a pruning batch" in err
    assert list(tmp_path.iterdir()) == []
