"""PHEW against its reference code (the same walks from the same draws), by hand, and in the grammar."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import MLP, build_network, prunable_layout
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import topk_mask
from metaprune.pruning.method import parse_method
from metaprune.pruning.phew import phew_first_visits, phew_ranking
from metaprune.pruning.scorers import SCORERS, score
from tests.conftest import synthetic_splits
from tests.test_prune_cli import NET, invoke

FIXTURE = Path(__file__).parent / "fixtures" / "phew_reference.json"


def _net(sizes, weights):
    net = MLP(sizes[0], tuple(sizes[1:-1]), sizes[-1])
    with torch.no_grad():
        for layer, w in zip(net.layers, weights, strict=True):
            layer.weight.copy_(torch.tensor(w).reshape(layer.weight.shape))
    return net


@pytest.mark.parametrize("case", range(5))
def test_mask_equals_the_reference_code_given_the_same_draws(case):
    """ShreyasMalakarjunPatil/PHEW phew_masks on two MLPs at several densities: fed the reference's uniform
    draws, the first k crossed connections are its mask, k being its final count (it overshoots its target
    by finishing the last walk); cut at the target, they are a subset of it."""
    ref = json.loads(FIXTURE.read_text())["cases"][case]
    net = _net(ref["sizes"], ref["weights"])
    expected = torch.cat([torch.tensor(m) for m in ref["mask"]]).bool()
    dense = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    k = int(expected.sum())
    assert ref["target"] <= k <= ref["target"] + len(ref["sizes"]) - 2
    draws = np.random.RandomState(ref["numpy_seed"]).random_sample
    ranking = phew_ranking(net, dense, k, draws)
    assert torch.equal(topk_mask(ranking, k, None, torch.Generator()), expected)
    assert ranking[expected].min() > ranking[~expected].max()  # no tie decides
    cut = phew_ranking(net, dense, ref["target"], np.random.RandomState(ref["numpy_seed"]).random_sample)
    assert not (topk_mask(cut, ref["target"], None, torch.Generator()) & ~expected).any()


def test_walks_by_hand():
    """A 2-2-1 chain with hand-picked draws: forward walk from input 0, backward walk from output 0."""
    w0 = np.array([[1.0, 3.0], [3.0, 1.0]])  # [out, in]; column 0 -> P(out 0) = 1/4, P(out 1) = 3/4
    w1 = np.array([[2.0, 6.0]])  # backward from the output: P(in 0) = 1/4, P(in 1) = 3/4
    draws = iter([0.2, 0.9, 0.8, 0.1])  # walk 1 steps, then walk 2 steps

    def uniforms(n):
        return np.array([next(draws) for _ in range(n)])

    first, steps = phew_first_visits([w0, w1], np.ones(6, dtype=bool), 3, _Counted(uniforms, 4))
    # walk 1 (forward): input 0 -> out 0 (0.2 < 1/4): edge w0[0,0] = 0; out 0 -> the only output: w1[0,0] = 4
    # walk 2 (backward): output 0 -> hidden 1 (0.8 >= 1/4): w1[0,1] = 5; hidden 1 -> input 0 (0.1 < 3/4): w0[1,0] = 2
    # (walks run in batches, so later walks have crossed more; the ranking only reads the order)
    assert np.where(first < 4, first, -1).tolist() == [0, -1, 3, -1, 1, 2]
    assert steps >= 4 and steps % 2 == 0


class _Counted:
    """Hands out the given draws, then zeros (walks past the hand-checked ones are not looked at)."""

    def __init__(self, fn, n):
        self.fn, self.left = fn, n

    def __call__(self, n):
        take = min(n, self.left)
        self.left -= take
        return np.concatenate([self.fn(take), np.zeros(n - take)])


def test_budget_counts_are_reached_per_layer_and_the_scorer_is_seeded():
    splits = synthetic_splits()
    net = build_network("mlp:12-8", splits.input_shape, splits.num_classes, 0)
    layout = prunable_layout(net)
    dense = torch.ones(layout.total, dtype=torch.bool)
    counts = [30, 40, 20]
    s = score("phew", net, dense, None, 5, keep=counts)
    assert [int((p > 0).sum()) >= c for p, c in zip(layout.split(s), counts, strict=True)] == [True] * 3
    assert torch.equal(s, score("phew", net, dense, None, 5, keep=counts))
    assert not torch.equal(s, score("phew", net, dense, None, 6, keep=counts))
    with pytest.raises(MetapruneError, match="needs|none was given"):
        score("phew", net, dense, None, 5)
    ticket = prune_seeds(parse_method("phew#layer"), "mlp:12-8", splits, 0.2, (0,), per_class=0)[0]
    assert [int(p.sum()) for p in layout.split(ticket.mask)] == [round(0.2 * layer.size) for layer in layout.layers]


def test_phew_keeps_layers_wide_on_lenet():
    net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
    s = score("phew", net, None, None, 0, keep=1331)
    mask = topk_mask(s, 1331, None, torch.Generator())
    first = prunable_layout(net).split(mask)[0]
    assert int(first.any(1).sum()) > 200  # of 300 hidden units (SynFlow's mask feeds about 10)


def test_grammar_refusals_and_data_free_cli():
    assert not SCORERS.get("phew").needs_data and SCORERS.get("phew").sized
    for text, match in (("phew>snip", "last scorer"), ("snip~phew", "last scorer")):
        with pytest.raises(MetapruneError, match=match):
            parse_method(text)
    assert str(parse_method("magnitude>phew")) == "magnitude>phew@uss"
    result = invoke("prune", *NET, "--method", "phew", "--sparsity", "0.05", "--per-class", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report"]["kept"] == round(0.05 * 1580)


def test_convolutional_networks_are_refused_before_any_work(monkeypatch, capsys, tmp_path):
    from tests.conftest import run_main

    monkeypatch.chdir(tmp_path)
    args = ("prune", "--network", "conv2", "--dataset", "digits", "--method", "phew", "--sparsity", "0.1")
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and err.strip().count("\n") == 0 and "Linear layers" in err
    assert list(tmp_path.iterdir()) == []
