"""Evaluate end to end on a tiny configuration: rows, resume after kill -9, refusals, the Dask path."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from metaprune.errors import MetapruneError, StoreError
from metaprune.evaluate.api import build_config
from metaprune.evaluate.results import ResultsDir
from metaprune.evaluate.run import run_evaluation
from metaprune.pruning.schedules import ScheduleConfig
from metaprune.training import TrainConfig
from tests.conftest import plain_open, torch_threads

TINY = dict(
    network="mlp:20-10",
    dataset="digits",
    methods=("snip", "magnitude", "synflow"),
    densities=(0.05, 0.2),
    seeds=(1000, 1001),
    train=TrainConfig(epochs=4, patience=2),
    schedule=ScheduleConfig(rounds=5, levels=2),
)


def _cfg(**over):
    return build_config(**{**TINY, **over})


def _table(path: Path) -> pd.DataFrame:
    df = ResultsDir(path).rows()
    keep = ["seed", "method", "density", "test_acc", "val_loss", "best_iteration", "kept", "effective_density"]
    return df[keep].sort_values(["seed", "method", "density"]).reset_index(drop=True)


def test_rows_per_seed_method_density_and_dense_reference(tmp_path):
    out = tmp_path / "r"
    run_evaluation(_cfg(), out)
    df = ResultsDir(out).rows()
    pruned = df[df["method"] != "dense"]
    assert len(pruned) == 2 * 3 * 2
    assert set(pruned["method"]) == {"snip@uss", "magnitude@uss", "synflow@ums"}
    assert len(df[df["method"] == "dense"]) == 2
    n = 64 * 20 + 20 * 10 + 10 * 10
    for _, row in pruned.iterrows():
        assert row["kept"] == round(row["density"] * n)
        assert 0 < row["live_l0"] <= 20 and 0 < row["live_l1"] <= 10 and 0 < row["live_l2"] <= 10
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == len(df)
    table, caught = plain_open(out / "results.zarr")  # a user's xarray.open_zarr: consolidated, quiet
    assert caught == [] and table.to_dataframe().shape[0] == len(df)
    # paired design: every method of a seed trained in one population on the seed's data order
    assert (pruned.groupby("seed")["population"].first() == 7).all()


def test_report_reprints_the_table_and_writes_four_plots(tmp_path):
    from metaprune.evaluate.api import report
    from metaprune.evaluate.report import table_cells

    out = tmp_path / "r"
    run_evaluation(_cfg(methods=("snip", "magnitude"), densities=(0.05, 0.2)), out)
    rep = report(out)
    densities, gap_headers, rows = table_cells(rep)
    assert densities == [0.05, 0.2] and gap_headers == []  # no ceiling evaluated: no gap columns
    # the reference (synflow@ums by default) is always evaluated beside the methods asked for
    assert {m for m, _, _ in rows} == {"snip@uss", "magnitude@uss", "synflow@ums"}
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 6 and set(comparison["reference"]) == {"synflow@ums"}
    names = sorted(p.name for p in rep.plots)
    plots = ["accuracy_vs_cost.png", "accuracy_vs_density.png", "kept_weight_distribution.png", "mask_jaccard.png"]
    assert names == plots  # every row records its cost in dense-epoch equivalents
    snip_cost = rep.rows["cost_epochs"][rep.rows["method"] == "snip@uss"]
    assert list(snip_cost) == [pytest.approx(100 / 1257)] * len(snip_cost)  # one SNIP pass over 10 x 10 examples
    for p in rep.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_resume_after_kill_gives_identical_results(tmp_path):
    ref = tmp_path / "ref"
    run_evaluation(_cfg(), ref)
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "metaprune.cli.app",
        "evaluate",
        "--network",
        "mlp:20-10",
        "--dataset",
        "digits",
        "--method",
        "snip",
        "--method",
        "magnitude",
        "--method",
        "synflow",
        "--sparsity",
        "0.05",
        "--sparsity",
        "0.2",
        "--seeds",
        "1000-1001",
        "--epochs",
        "4",
        "--rounds",
        "5",
        "--levels",
        "2",
        "--patience",
        "2",
        "--out",
        str(out),
        "--workers",
        "1",  # in-process, as the reference run
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if list((out / "units").glob("1000/*.json")) or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "units" / "1001").exists() or len(list((out / "units" / "1001").glob("*.json"))) < 7
    run_evaluation(_cfg(), out)
    pd.testing.assert_frame_equal(_table(out), _table(ref), check_exact=True)


def test_partly_committed_seed_is_redone_to_the_same_numbers(tmp_path):
    """A kill between two unit commits leaves a seed half done; the rerun must match an uninterrupted run."""
    out = tmp_path / "r"
    run_evaluation(_cfg(), out)
    before = _table(out)
    victims = sorted((out / "units" / "1000").glob("*.json"))[:3]
    for v in victims:
        v.unlink()
        v.with_suffix(".safetensors").unlink(missing_ok=True)
    run_evaluation(_cfg(), out)
    pd.testing.assert_frame_equal(_table(out), before, check_exact=True)


def test_refuses_other_configuration_and_force_replaces(tmp_path):
    out = tmp_path / "r"
    run_evaluation(_cfg(methods=("magnitude",), densities=(0.2,), seeds=(1000,)), out)
    with pytest.raises(StoreError, match="train differ"):
        run_evaluation(_cfg(methods=("magnitude",), densities=(0.2,), seeds=(1000,), train=TrainConfig(epochs=3)), out)
    run_evaluation(
        _cfg(methods=("magnitude",), densities=(0.2,), seeds=(1000,), train=TrainConfig(epochs=3)), out, force=True
    )
    assert json.loads((out / "config.json").read_text())["config"]["train"]["epochs"] == 3
    not_results = tmp_path / "other"
    not_results.mkdir()
    (not_results / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="not a metaprune results directory"):
        run_evaluation(_cfg(methods=("magnitude",), densities=(0.2,), seeds=(1000,)), not_results)


def test_another_method_set_grows_the_directory_without_touching_committed_units(tmp_path):
    # methods, densities and seeds may grow (identity = network, dataset, train, schedule, per_class):
    # a different method set adds units beside the committed ones, which stay byte for byte
    out = tmp_path / "r"
    one = dict(densities=(0.2,), seeds=(1000,), reference="magnitude")
    run_evaluation(_cfg(methods=("magnitude",), **one), out)
    before = {p: p.read_bytes() for p in (out / "units").rglob("*") if p.is_file()}
    run_evaluation(_cfg(methods=("snip",), **one), out)
    assert all(p.read_bytes() == data for p, data in before.items())
    assert json.loads((out / "config.json").read_text())["config"]["methods"] == ["magnitude@uss", "snip@uss"]
    assert set(ResultsDir(out).rows()["method"]) == {"magnitude@uss", "snip@uss", "dense"}
    # what changes the measurement is refused in one line naming it, and nothing is lost
    with pytest.raises(StoreError, match="network differ") as refused:
        run_evaluation(_cfg(network="mlp:12", methods=("snip",), **one), out)
    assert "\n" not in str(refused.value) and "--force" in str(refused.value)
    assert all(p.read_bytes() == data for p, data in before.items())


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(MetapruneError, match="character 5"):
        _cfg(methods=("mag>>snip",))
    with pytest.raises(MetapruneError, match="keeps no weight"):
        run_evaluation(_cfg(methods=("magnitude",), densities=(1e-7,), seeds=(1000,)), tmp_path / "r")
    with pytest.raises(MetapruneError, match="layer"):
        run_evaluation(
            _cfg(methods=("magnitude",), densities=(0.004,), seeds=(1000,), schedule=ScheduleConfig(scope="layer")),
            tmp_path / "r2",
        )


def test_dask_local_cluster_gives_the_same_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = _cfg(methods=("snip", "magnitude"), densities=(0.1,))
    local = tmp_path / "local"
    with torch_threads(1):  # the workers' thread count
        run_evaluation(cfg, local)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = tmp_path / "dask"
        run_evaluation(cfg, remote, scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(_table(remote), _table(local), check_exact=True)


def test_a_preset_directory_refuses_another_preset_or_model_set_and_force_starts_over(tmp_path):
    out = tmp_path / "r"
    ResultsDir(out).open_or_create({"network": "lenet_300_100", "methods": ["learned:models/a@uss"]}, preset="jackpot")
    (out / "units").mkdir()
    config = {"network": "lenet_300_100", "methods": ["learned:models/b@uss", "snip@uss"]}
    with pytest.raises(StoreError, match=r"evaluates the learned models models/a, not models/b.*--force"):
        ResultsDir(out).open_or_create(config, preset="jackpot")
    with pytest.raises(StoreError, match=r"holds preset 'jackpot', not 'baselines'.*--force"):
        ResultsDir(out).open_or_create({"network": "lenet_300_100", "methods": ["snip@uss"]}, preset="baselines")
    # methods named by hand (no preset) grow it, another model included: variants beside the preset's
    ResultsDir(out).open_or_create(config)
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "jackpot" and saved["config"]["methods"][0] == "learned:models/a@uss"
    ResultsDir(out).open_or_create(config, force=True, preset="jackpot")
    grown = {"network": "lenet_300_100", "methods": ["learned:models/b@uss", "learned:models/c@uss"]}
    assert json.loads((out / "config.json").read_text())["config"]["methods"] == config["methods"]
    ResultsDir(out).open_or_create(grown, preset="jackpot")  # a model added beside the others grows it


def test_shuffle_and_reinit_units_are_their_methods_pruned_on_their_own(tmp_path):
    """A seed prunes a method once for it and its !shuffle / !reinit units; each unit is still exactly what
    pruning the ablated method alone gives (mask and the weights it trains from)."""
    from metaprune.datasets import load_dataset
    from metaprune.networks import flat_weights
    from metaprune.pruning.apply import prune_seeds
    from metaprune.pruning.method import parse_method

    methods = ("snip", "snip!shuffle", "snip!reinit", "synflow!reinit")  # synflow itself is not planned
    config = _cfg(methods=methods, densities=(0.1,), seeds=(1000,))
    out = tmp_path / "r"
    run_evaluation(config, out)
    results = ResultsDir(out)
    splits = load_dataset("digits")
    for name in ("snip@uss", "snip@uss!shuffle", "snip@uss!reinit", "synflow@ums!reinit"):
        alone = prune_seeds(
            parse_method(name), "mlp:20-10", splits, 0.1, (1000,), schedule=config.schedule, train=config.train
        )[0]
        assert name in set(results.rows()["method"])
        mask = results.mask(1000, _unit(name, 0.1))
        assert mask is not None and bool((mask == alone.mask).all())
        kept = results.kept_weights(1000, _unit(name, 0.1))
        assert bool((kept == flat_weights(alone.net)[alone.mask]).all())
    shuffled, plain = results.mask(1000, _unit("snip@uss!shuffle", 0.1)), results.mask(1000, _unit("snip@uss", 0.1))
    assert not bool((shuffled == plain).all()) and int(shuffled.sum()) == int(plain.sum())


def _unit(method: str, density: float) -> str:
    from metaprune.evaluate.results import unit_name

    return unit_name(method, density)
