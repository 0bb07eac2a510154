"""GEM-MINER against its reference code (the same weights, data order and score init), by hand, and in the grammar."""

import json
import math
from pathlib import Path

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, prunable_layout
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.gem import GemSettings, _pruner, learn_scores
from metaprune.pruning.method import parse_method
from metaprune.pruning.schedules import budget_steps
from metaprune.pruning.scorers import SCORERS
from tests.conftest import assert_matches_reference, synthetic_splits

FIXTURE = Path(__file__).parent / "fixtures" / "gem_reference.json"


def _net(sizes, weights):
    net = MLP(sizes[0], tuple(sizes[1:-1]), sizes[-1])
    with torch.no_grad():
        for layer, w in zip(net.layers, weights, strict=True):
            layer.weight.copy_(torch.tensor(w).reshape(layer.weight.shape))
            layer.bias.zero_()
    return net


def _run(ref):
    """Our mask learning on the fixture's inputs, the prune counts our geometric schedule gives."""
    net = _net(ref["sizes"], ref["weights"])
    shapes = [layer.shape for layer in prunable_layout(net).layers]
    init = [torch.tensor(s).reshape(shape) for s, shape in zip(ref["init_scores"], shapes, strict=True)]
    flags = [torch.ones(shape) for shape in shapes]
    x, y = torch.tensor(ref["x"]), torch.tensor(ref["y"])
    orders = [torch.tensor(o) for o in ref["orders"]]
    settings = GemSettings(epochs=ref["epochs"], period=ref["iter_period"], lam=ref["lmbda"], batch=ref["batch"])
    n = sum(math.prod(s) for s in shapes)
    final = sum(sum(f) for f in ref["per_epoch"][-1]["flags"])
    counts = budget_steps([n], [final], settings.prunes)
    return learn_scores(
        net, flags, init, x, y, lambda e: orders[e], settings, _pruner(counts, False, torch.Generator())
    )


@pytest.mark.parametrize("case", range(3))
def test_scores_and_flags_equal_the_reference_code(case):
    """ksreenivasan/pruning_is_enough (hc_iter, hc_quantized, L2, BottomK) on two MLPs, 4 epochs of 3 batches,
    a prune after epochs 1, 2 and 3: the learned scores equal the reference's (``assert_matches_reference``)
    and the flags exactly (the reference's prune counts, ⌈r · active⌉, equal our geometric ones here)."""
    ref = json.loads(FIXTURE.read_text())["cases"][case]
    scores, flags = _run(ref)
    last = ref["per_epoch"][-1]
    for got, want in zip(scores, last["scores"], strict=True):
        assert_matches_reference(got.reshape(-1), torch.tensor(want))
    for got, want in zip(flags, last["flags"], strict=True):
        assert torch.equal(got.reshape(-1).int(), torch.tensor(want, dtype=torch.int32))
    kept = [sum(sum(f) for f in epoch["flags"]) for epoch in ref["per_epoch"]]
    n = kept[0]
    assert kept[1:] == [c[0] for c in budget_steps([n], [kept[-1]], 3)]


def test_one_step_by_hand():
    """One batch of a 2-1 network: the forward uses θ ⊙ [p > 0.5], the gradient reaches p straight through,
    plus 2λp; SGD's first step is p − lr · g."""
    net = MLP(2, (), 2)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        net.layers[0].bias.zero_()
    p0 = torch.tensor([[0.7, 0.2], [0.6, 0.9]])
    x, y = torch.tensor([[1.0, 1.0]]), torch.tensor([0])
    settings = GemSettings(epochs=1, period=1, lam=0.5, batch=1, lr=0.1, momentum=0.0)
    scores, _ = learn_scores(
        net, [torch.ones(2, 2)], [p0], x, y, lambda e: torch.tensor([0]), settings, lambda j, s, f: f
    )
    # logits with weights [[1, 0], [-1, 0.5]] on (1, 1): z = (1, -0.5); softmax s; dL/dz = s - onehot(0)
    s = torch.softmax(torch.tensor([1.0, -0.5]), 0)
    dz = s - torch.tensor([1.0, 0.0])
    g = dz[:, None] * torch.tensor([[1.0, 1.0]]) * torch.tensor([[1.0, 2.0], [-1.0, 0.5]]) + 2 * 0.5 * p0
    assert torch.allclose(scores[0], (p0 - 0.1 * g).clamp(0, 1), atol=1e-6)


@pytest.fixture(scope="module")
def data():
    return synthetic_splits(n_train=200, n_val=20, n_test=20, shape=(1, 8, 8), classes=4, seed=3)


def test_grammar_counts_cost_and_seeding(data):
    ticket = prune_seeds(parse_method("gem3"), "mlp:16-8", data, 0.1, (0,))[0]
    n = prunable_layout(ticket.net).total
    assert int(ticket.mask.sum()) == round(0.1 * n)
    assert ticket.cost_epochs == pytest.approx(3.0)  # E epochs of mask learning, no pass over the pruning batch
    again = prune_seeds(parse_method("gem3"), "mlp:16-8", data, 0.1, (0,))[0]
    assert torch.equal(ticket.mask, again.mask)
    erk = prune_seeds(parse_method("gem3#erk"), "mlp:16-8", data, 0.1, (0,))[0]
    from metaprune.pruning.budgets import erk_counts
    from metaprune.pruning.masks import layer_counts_of

    layout = prunable_layout(erk.net)
    assert layer_counts_of(erk.mask, layout) == erk_counts(layout, 0.1, "gem3#erk")
    shuffled = prune_seeds(parse_method("gem3!shuffle"), "mlp:16-8", data, 0.1, (0,))[0]
    assert layer_counts_of(shuffled.mask, layout) == layer_counts_of(ticket.mask, layout)
    assert not torch.equal(shuffled.mask, ticket.mask)


def test_spellings_and_refusals():
    assert parse_method("gem").canonical() == "gem@uss" and SCORERS.get("gem").epochs == 20
    assert parse_method("gem10#erk").canonical() == "gem10@uss#erk" and SCORERS.get("gem10").epochs == 10
    assert GemSettings(epochs=150).every == 5 and GemSettings(epochs=20).every == 1 and GemSettings(20).prunes == 19
    for text in ("gem0", "gemx"):
        with pytest.raises(MetapruneError, match="positive whole number of mask-learning epochs"):
            parse_method(text)
    for text in ("snip~gem", "gem>snip"):
        with pytest.raises(MetapruneError, match="last scorer"):
            parse_method(text)


def test_zero_epochs_is_one_line_exit_2_nothing_written(monkeypatch, capsys, tmp_path):
    from tests.conftest import run_main
    from tests.test_prune_cli import invoke  # noqa: F401 (registers the commands run_main calls)

    monkeypatch.chdir(tmp_path)
    args = ("prune", "--network", "mlp:20-10", "--dataset", "digits", "--method", "gem0", "--sparsity", "0.05")
    code, out, err = run_main(monkeypatch, capsys, *args, "--out", "t.safetensors")
    assert code == 2 and err.strip().count("\n") == 0 and "gem0" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_data_free_path_is_refused(data):
    with pytest.raises(MetapruneError, match="needs a pruning batch"):
        prune_seeds(parse_method("gem2"), "mlp:16-8", data, 0.1, (0,), per_class=0)
