"""Bench argument checks and targets live in the library; the CLI only parses and prints."""

import pytest

from metaprune.errors import MetapruneError


def test_bench_sizes_are_checked_by_the_library_before_any_work():
    from metaprune.bench.harvest import bench_harvest
    from metaprune.bench.prune import bench_prune_report
    from metaprune.bench.train import parse_populations

    with pytest.raises(MetapruneError, match=r"^--repeats must be a positive integer, got 0$"):
        bench_prune_report(repeats=0)
    with pytest.raises(MetapruneError, match=r"^--iterate-seeds must be a positive integer, got -1$"):
        bench_harvest(seeds=1, iterate_seeds=-1)
    assert parse_populations("1,4") == (1, 4) and parse_populations((2,)) == (2,)
    for bad in ("1,x", "", "0", (1, 0)):
        with pytest.raises(MetapruneError, match=r"^bad --populations '.*'; accepted: positive integers"):
            parse_populations(bad)


def test_harvest_bench_checks_against_its_targets():
    from metaprune.bench.harvest import TARGETS, checks

    result = {
        "overhead_fraction_of_target": 0.1,
        "store_fraction_of_raw": 0.9,
        "iterate": {"peak_rss_bytes": TARGETS["iterate_peak_bytes"] - 1},
    }
    got = checks(result)
    assert {k: v["met"] for k, v in got.items()} == {"overhead": True, "store": False, "iterate_peak": True}
    assert [v["target"] for v in got.values()] == ["<= 20 %", "<= 75 %", "< 1024 MiB"]
    assert checks({**result, "store_fraction_of_raw": None})["store"]["met"] is False


def test_bench_fit_model_options():
    from metaprune.bench.fit import model_options

    assert model_options(["mlp:epochs=1", "mlp:lr=0.1", "sgd:epochs=2"]) == {
        "mlp": {"epochs": "1", "lr": "0.1"},
        "sgd": {"epochs": "2"},
    }
    with pytest.raises(MetapruneError, match=r"^bad --option 'epochs=1'; accepted: MODEL:KEY=VALUE"):
        model_options(["epochs=1"])
