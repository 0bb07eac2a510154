"""``metaprune bench train``: the figures it reports hang together; bad options are one-line errors.

Speeds are not asserted here (no timed tests): ``metaprune bench train`` itself reports the targets.
"""

import json

import pytest

from metaprune.bench import TARGETS, bench_train, training_flops_per_sample
from metaprune.networks import build_network


def test_flops_per_sample_counts_forward_and_both_gradients():
    # LeNet-300-100: forward 2·n per layer, weight gradient 2·n, input gradient 2·n except the first layer.
    net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
    assert training_flops_per_sample(net) == 2 * (2 * 784 * 300 + 3 * 300 * 100 + 3 * 100 * 10) == 1_126_800


@pytest.fixture(scope="module")
def tiny_bench():
    return bench_train(device="cpu", populations=(1, 2), epochs=1, reference_epochs=1, repeats=1)


def test_bench_figures_are_consistent(tiny_bench):
    r = tiny_bench
    rates = [*r["population"].values()]
    if "parallel_populations" in r:
        assert r["parallel_populations"]["samples_per_s"] > 0
        rates.append(r["parallel_populations"]["samples_per_s"])
    assert set(r["population"]) == {"1", "2"}
    assert r["metaprune_samples_per_s"] == r["population"]["1"]
    assert r["best_network_samples_per_s"] == max(rates)
    assert r["speedup_vs_reference"] == pytest.approx(r["metaprune_samples_per_s"] / r["reference_samples_per_s"])
    assert r["gemm_fraction"] == pytest.approx(r["best_network_samples_per_s"] * 1_126_800 / r["gemm_flops"])
    assert set(r["targets"]) == set(TARGETS)
    for name, t in r["targets"].items():
        assert t["value"] == r[name] and t["target"] == TARGETS[name] and t["met"] == (r[name] >= TARGETS[name])
    assert set(r["mask_mode_samples_per_s_at_density_0.1"]) == {"grad", "forward"}
    best_k = max(r["population"], key=r["population"].get)
    assert set(r["autograd_population"]) == {"1", best_k}
    assert r["versions"]["torch"]
    json.dumps(r)  # the --json output is one JSON object


def test_library_refuses_bad_sizes_before_any_work():
    from metaprune.errors import MetapruneError

    with pytest.raises(MetapruneError, match="--repeats must be a positive integer, got 0"):
        bench_train(device="cpu", repeats=0)
    with pytest.raises(MetapruneError, match="bad --populations '1,0'"):
        bench_train(device="cpu", populations=(1, 0))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--populations", "1,x"], "bad --populations '1,x'"),
        (["--populations", "0"], "bad --populations '0'"),
        (["--repeats", "0"], "bad --repeats '0'; accepted: a positive integer"),
        (["--epochs", "-1"], "bad --epochs '-1'; accepted: a positive integer"),
    ],
)
def test_bad_options_are_one_line_errors(monkeypatch, capsys, args, message):
    import metaprune.cli.app as app_module

    from tests.conftest import run_main

    if "train" not in {c.name for c in app_module.bench_app.registered_commands}:
        app_module._register_commands()
    code, _, err = run_main(monkeypatch, capsys, "bench", "train", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
