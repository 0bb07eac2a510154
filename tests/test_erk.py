"""Allocation-only controls: the ERK budget against RigL's code, and #from: with random and magnitude."""

import json
import os
from pathlib import Path

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.evaluate.config import EvaluateConfig
from metaprune.evaluate.run import run_evaluation
from metaprune.networks import build_network, prunable_layout, prunable_weights
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.budgets import erk_counts, erk_sparsities
from metaprune.pruning.masks import keep_count, layer_counts_of
from metaprune.pruning.method import parse_method
from tests.conftest import run_main, synthetic_splits
from tests.test_prune_cli import invoke  # noqa: F401 (registers the commands run_main calls)

FIXTURE = Path(__file__).parent / "fixtures" / "erk_rigl.json"


def _layout(case):
    return prunable_layout(build_network(case["network"], tuple(case["input_shape"]), case["classes"], 0))


def test_sparsities_equal_rigl_bit_for_bit():
    """google-research/rigl get_sparsities('erdos_renyi_kernel', erk_power_scale=1.0) on five networks at six
    densities, dense layers included (tests/fixtures/erk_rigl.json)."""
    cases = json.loads(FIXTURE.read_text())["cases"]
    assert any(0.0 in c["sparsities"] for c in cases)  # some layer went dense
    for case in cases:
        assert erk_sparsities(_layout(case), case["density"]) == case["sparsities"], case["network"]


def test_counts_keep_the_exact_total_within_a_weight_or_two_of_rigl_per_layer():
    for case in json.loads(FIXTURE.read_text())["cases"]:
        layout = _layout(case)
        try:
            counts = erk_counts(layout, case["density"])
        except MetapruneError:
            continue  # a layer would keep nothing (the tiny nets at the lowest densities): refused
        assert sum(counts) == keep_count(case["density"], layout.total)
        for ours, theirs, s, layer in zip(counts, case["rigl_kept"], case["sparsities"], layout.layers, strict=True):
            assert ours == layer.size if s == 0.0 else abs(ours - theirs) <= 6, case


def test_erk_by_hand():
    """Layers 4x2 and 3x4 at density 0.5: raw densities (4+2)/8 and (3+4)/12; the uniform split keeps 4 + 6,
    so eps = 10 / (8 * 6/8 + 12 * 7/12) = 10/13; ideal counts 60/13 = 4.62 and 70/13 = 5.38 of the 10 kept:
    floors 4 and 5, the spare weight to the larger remainder."""
    layout = prunable_layout(build_network("mlp:4", (1, 1, 2), 3, 0))
    assert [layer.shape for layer in layout.layers] == [(4, 2), (3, 4)]
    eps = 10 / 13
    assert erk_sparsities(layout, 0.5) == pytest.approx([1 - eps * 6 / 8, 1 - eps * 7 / 12], rel=1e-15)
    assert erk_counts(layout, 0.5) == [5, 5]
    # at 0.9 layer 0 would need eps * 6/8 > 1: it is kept dense and the rest rescaled
    assert erk_sparsities(layout, 0.9)[0] == 0.0 and erk_counts(layout, 0.9) == [8, 10]


def test_random_erk_and_magnitude_erk_keep_the_erk_counts():
    splits = synthetic_splits()
    for text in ("random#erk", "magnitude#erk", "snip@ums4#erk"):
        ticket = prune_seeds(parse_method(text), "mlp:12-8", splits, 0.2, (3,))[0]
        layout = prunable_layout(ticket.net)
        assert layer_counts_of(ticket.mask, layout) == erk_counts(layout, 0.2), text
    mags = torch.cat([w.detach().abs().reshape(-1) for w in prunable_weights(ticket.net)])
    ticket = prune_seeds(parse_method("magnitude#erk"), "mlp:12-8", splits, 0.2, (3,))[0]
    for part, kept in zip(layout.split(mags), layout.split(ticket.mask), strict=True):
        assert part[kept].min() >= part[~kept].max()  # magnitude's top-k inside each layer


@pytest.mark.parametrize("donor", ["synflow@ums", "snip", "phew"])
def test_random_and_magnitude_with_another_methods_counts(donor):
    splits = synthetic_splits()
    donor_ticket = prune_seeds(parse_method(donor), "mlp:12-8", splits, 0.1, (2,))[0]
    layout = prunable_layout(donor_ticket.net)
    counts = layer_counts_of(donor_ticket.mask, layout)
    for scorer in ("random", "magnitude"):
        ticket = prune_seeds(parse_method(f"{scorer}#from:{donor}"), "mlp:12-8", splits, 0.1, (2,))[0]
        assert layer_counts_of(ticket.mask, layout) == counts
    assert ticket.cost_epochs == pytest.approx(donor_ticket.cost_epochs)  # magnitude costs nothing itself


def test_erk_that_starves_a_layer_is_one_line_exit_2_nothing_written(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = ["prune", "--network", "mlp:20-2", "--dataset", "digits", "--method", "random#erk"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--sparsity", "0.003", "--out", "t.safetensors")
    assert code == 2, (out, err)
    assert err.strip().count("\n") == 0 and "layer layers.2.weight" in err and "erk" in err
    assert os.listdir(tmp_path) == []
    with pytest.raises(MetapruneError, match="budget erk keeps no weight of layer layers.2.weight"):
        config = EvaluateConfig(
            network="mlp:20-2", dataset="digits", methods=("snip", "magnitude#erk"), densities=(0.003,), seeds=(0,)
        )
        run_evaluation(config, tmp_path / "r")
    assert not (tmp_path / "r").exists()
