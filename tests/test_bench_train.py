"""``metaprune bench train``: the figures it reports hang together; bad options are one-line errors.

Speeds are not asserted here (no timed tests): ``metaprune bench train`` itself reports the targets.
"""

import json

import pytest

from metaprune.bench.measure import interleaved, ratio_stats
from metaprune.bench.train import TARGETS, bench_train, training_flops_per_sample
from metaprune.networks import build_network


def test_flops_per_sample_counts_forward_and_both_gradients():
    # LeNet-300-100: forward 2·n per layer, weight gradient 2·n, input gradient 2·n except the first layer.
    net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
    assert training_flops_per_sample(net) == 2 * (2 * 784 * 300 + 3 * 300 * 100 + 3 * 100 * 10) == 1_126_800


@pytest.fixture(scope="module")
def tiny_bench():
    return bench_train(device="cpu", populations=(1, 2), epochs=1, repeats=1)


def test_ratio_stats_are_per_pair():
    # pairs (reference, candidate): (10, 100), (20, 150), (5, 60) -> ratios 10, 7.5, 12
    r = ratio_stats([10.0, 20.0, 5.0], [100.0, 150.0, 60.0])
    assert r == {"median": 10.0, "min": 7.5, "max": 12.0, "pairs": [10.0, 7.5, 12.0]}
    # not the ratio of the medians (150 / 10 = 15 for these): a slow reference run pairs with its neighbour
    assert ratio_stats([10.0, 20.0], [100.0, 300.0])["median"] == 12.5


def test_measurements_interleave_reference_and_candidate():
    calls = []

    def reference():
        calls.append("A")
        return 1.0

    def candidate():
        calls.append("B")
        return 2.0

    assert interleaved(reference, candidate, 3) == ([1.0] * 3, [2.0] * 3)
    assert calls == ["A", "B", "A", "B", "A", "B"]


def test_bench_figures_are_consistent(tiny_bench):
    r = tiny_bench
    candidates = {f"population K={k}": (v, r["speedup_per_population"][k]) for k, v in r["population"].items()}
    if "parallel_populations" in r:
        p = r["parallel_populations"]
        assert p["samples_per_s"] > 0
        candidates[f"{p['workers']} populations of K={p['k_per_worker']}, 1 thread each"] = (
            p["samples_per_s"],
            p["speedup"],
        )
    assert set(r["population"]) == {"1", "2"}
    for _, ratio in candidates.values():
        assert len(ratio["pairs"]) == r["repeats"] == 1 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert r["metaprune_samples_per_s"] == r["population"]["1"]
    assert r["speedup_vs_reference"] == r["speedup_per_population"]["1"]["median"]
    best_rate, best_ratio = candidates[r["best"]]
    assert best_ratio["median"] == max(ratio["median"] for _, ratio in candidates.values())
    assert r["best_network_samples_per_s"] == best_rate and r["best_speedup_vs_reference"] == best_ratio["median"]
    lo, hi = r["reference_samples_per_s_min_max"]
    assert 0 < lo <= r["reference_samples_per_s"] <= hi
    assert r["gemm_flops"] == max(r["gemm_flops_measured"]) and len(r["gemm_flops_measured"]) == 2
    assert r["gemm_fraction"] == pytest.approx(r["best_network_samples_per_s"] * 1_126_800 / r["gemm_flops"])
    assert set(r["targets"]) == set(TARGETS)
    for name, t in r["targets"].items():
        assert t["value"] == r[name] and t["target"] == TARGETS[name] and t["met"] == (r[name] >= TARGETS[name])
    assert set(r["mask_mode_samples_per_s_at_density_0.1"]) == {"grad", "forward"}
    best_k = max(r["speedup_per_population"], key=lambda k: r["speedup_per_population"][k]["median"])
    assert set(r["autograd_population"]) == {"1", best_k}
    assert r["versions"]["torch"]
    load = r["load_average"]
    assert set(load) == {"before", "after", "cpus"} and len(load["before"]) == len(load["after"]) == 3
    assert r["omp_wait_policy"]
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


def test_cli_uses_the_harvest_openmp_wait_policy(monkeypatch, capsys):
    """OMP_WAIT_POLICY is read when torch loads, so the command sets it first (unless the user chose)."""
    import os

    import metaprune.cli.app as app_module

    import metaprune.bench.train
    from tests.conftest import run_main

    if "train" not in {c.name for c in app_module.bench_app.registered_commands}:
        app_module._register_commands()
    seen = {}

    def fake_bench_train(**kwargs):
        seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
        return {"fake": True}

    monkeypatch.setattr(metaprune.bench.train, "bench_train", fake_bench_train)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    code, out, _ = run_main(monkeypatch, capsys, "bench", "train", "--json")
    assert code == 0 and json.loads(out) == {"fake": True} and seen["policy"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    run_main(monkeypatch, capsys, "bench", "train", "--json")
    assert seen["policy"] == "ACTIVE"


def test_density_bench_pairs_the_dense_and_the_compacted_loop_on_real_tickets():
    from metaprune.bench.sparse import TARGETS, bench_sparse_train
    from tests.conftest import torch_threads

    with torch_threads(1):  # two spinning threads on a loaded machine only make the test slow
        r = bench_sparse_train([0.05], methods=("random", "magnitude"), seeds=1, epochs=1, repeats=1, device="cpu")
    (row,) = r["densities"].values()
    assert list(r["densities"]) == ["0.05"] and row["population"] == 2 and r["methods"] == ["random", "magnitude"]
    ratio = row["speedup"]
    assert ratio["pairs"] == [row["compact_samples_per_s"] / row["dense_samples_per_s"]] == [ratio["median"]]
    assert row["training_paths"]["groups"] and all(g["path"] == "compact" for g in row["training_paths"]["groups"])
    assert r["targets"]["0.05"] == {"value": ratio["median"], "target": TARGETS[0.05], "met": ratio["median"] >= 2.0}
    assert set(r["load_average"]) == {"before", "after", "cpus"}
    json.dumps(r)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--density", "0"], "bad --density '0'; accepted: a number with 0 < sparsity <= 1"),
        (["--density", "0.01", "--density", "lots"], "bad --density 'lots'"),
    ],
)
def test_bad_densities_are_one_line_errors(monkeypatch, capsys, args, message):
    import metaprune.cli.app as app_module

    from tests.conftest import run_main

    if "train" not in {c.name for c in app_module.bench_app.registered_commands}:
        app_module._register_commands()
    code, _, err = run_main(monkeypatch, capsys, "bench", "train", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
