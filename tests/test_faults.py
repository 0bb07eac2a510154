"""Faults a user meets end in one line: damaged store chunks (and ``harvest --redo`` to recover), unwritable
output folders, seed lists too long to build, method names in any script. Exit 2 for a bad argument, 1 for
an environment fault."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaprune.errors import MetapruneError, RuntimeFailure, StoreDamaged
from metaprune.seeds import MAX_SEEDS, parse_seeds
from tests.test_fit_helpers import run_main, tiny_config, tiny_store

METAPRUNE = str(Path(sys.executable).with_name("metaprune"))


def one_line(code: int, out: str, err: str, expected_code: int, *needles: str) -> str:
    """The CLI's answer is exactly one error line (no traceback) with the expected exit code."""
    lines = err.strip().splitlines()
    assert code == expected_code and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------- seeds


def test_a_seed_list_is_measured_before_it_is_built():
    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS
    assert len(parse_seeds(f"0-{MAX_SEEDS - 1},5,10-20")) == MAX_SEEDS  # overlaps count once
    with pytest.raises(MetapruneError, match=r"'0-999999999': 1,000,000,000 seeds; accepted: at most 100,000 seeds"):
        parse_seeds("0-999999999")
    with pytest.raises(MetapruneError, match="100,001 seeds"):
        parse_seeds(f"0-{MAX_SEEDS - 1},{MAX_SEEDS + 5}")
    with pytest.raises(MetapruneError, match="end 3 is below start 5"):
        parse_seeds("5-3")


@pytest.mark.parametrize("command", [["harvest", "--seeds", "0-999999999"], ["evaluate", "--seeds", "2000-3000000"]])
def test_a_huge_seed_range_is_refused_by_every_command(command, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *command)
    one_line(code, out, err, 2, "at most 100,000 seeds per command")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------ methods


def test_a_method_name_in_another_script_is_echoed_whole(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "prune", "--method", "snïp", "--network", "mlp:8", "-d", "digits")
    one_line(code, out, err, 2, "unknown scorer 'snïp'")
    code, out, err = run_main(monkeypatch, capsys, "prune", "--method", "snip@ümś", "-n", "mlp:8", "-d", "digits")
    one_line(code, out, err, 2, "unknown schedule 'ümś'")


# ---------------------------------------------------------------------------------- damaged stores


@pytest.fixture(scope="module")
def pair_store(tmp_path_factory):
    """A real store of one population of two seeds (a redo retrains that population)."""
    return tiny_store(tmp_path_factory, "pair", (0, 1), seeds_per_task=2)


def _chunks(store: Path) -> dict[str, bytes]:
    """Every chunk file of the store but the timing, by its path inside the store."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and "/c/" in str(p.relative_to(store)) and not str(p.relative_to(store)).startswith("harvest_")
    }


def test_a_damaged_chunk_is_one_line_naming_store_variable_and_seed_and_redo_restores_it(
    pair_store, tmp_path, monkeypatch, capsys
):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(pair_store, store)
    original = _chunks(store)
    feature_chunk = store / "features" / "c" / "1" / "0" / "2"
    feature_chunk.write_bytes(feature_chunk.read_bytes()[:9])  # truncated
    (store / "target_round" / "c" / "0" / "0").write_bytes(b"")  # empty
    for command in (["inspect", str(store)], ["fit", "--data", str(store), "--models-dir", str(tmp_path / "m")]):
        code, out, err = run_main(monkeypatch, capsys, *command)
        line = one_line(code, out, err, 1, f"store {store} is damaged", "cannot be read")
        assert ("'target_round' of seed 0" in line and "--redo 0" in line) or (
            "'features' of seed 1" in line and "--redo 1" in line
        ), line
    assert not (tmp_path / "m").exists()
    # recover: recompute both seeds in place, with the store's own config; bit for bit the first harvest
    code, out, err = run_main(monkeypatch, capsys, "harvest", "--out", str(store), "--redo", "0,1", "--json")
    assert code == 0, err
    assert _chunks(store) == original
    code, out, err = run_main(monkeypatch, capsys, "inspect", str(store), "--json")
    assert code == 0, err


def test_a_damaged_complete_flag_is_named_too_and_its_seed_can_be_redone(pair_store, tmp_path, monkeypatch, capsys):
    from metaprune.harvest import harvest, open_store

    store = tmp_path / "flag.zarr"
    shutil.copytree(pair_store, store)
    (store / "complete" / "c" / "1").write_bytes(b"\x01\x02")
    with pytest.raises(StoreDamaged, match=r"variable 'complete' of seed 1 .*--redo 1$"):
        _ = open_store(store).complete_seeds
    with pytest.raises(StoreDamaged, match=r"variable 'complete' of seed 1 "):  # a plain resume reads the flags
        harvest(tiny_config(seeds_per_task=2), (0, 1), out=store)
    code, out, err = run_main(monkeypatch, capsys, "harvest", "--out", str(store), "--redo", "1", "--levels", "3")
    one_line(code, out, err, 2, "--levels given with --redo")
    code, out, err = run_main(monkeypatch, capsys, "harvest", "--out", str(store), "--redo", "7")
    one_line(code, out, err, 2, "cannot redo seed(s) 7", "planned seeds 0-1")
    code, out, err = run_main(monkeypatch, capsys, "harvest", "--out", str(store), "--redo", "1", "--json")
    assert code == 0, err
    assert open_store(store).complete_seeds == (0, 1)


def test_an_interrupted_redo_leaves_the_seed_incomplete_and_a_plain_run_completes_it(pair_store, tmp_path, monkeypatch):
    import metaprune.harvest.store as store_module
    from metaprune.harvest import harvest, open_store

    store = tmp_path / "interrupted.zarr"
    shutil.copytree(pair_store, store)
    original = _chunks(store)
    write_seed = store_module.write_seed

    def killed_after_features(path, seed, data, seconds):
        import xarray as xr

        half = xr.Dataset({"features": (("seed", "weight", "feature"), data["features"][None])})
        position = {0: slice(0, 1), 1: slice(1, 2)}[seed]
        half.to_zarr(path, region={"seed": position}, mode="r+", consolidated=False, zarr_format=3)
        raise RuntimeFailure("killed while writing")

    monkeypatch.setattr(store_module, "write_seed", killed_after_features)
    with pytest.raises(RuntimeFailure, match="killed"):
        harvest(None, (), out=store, redo=[1])
    with open_store(store) as s:
        assert s.complete_seeds == (0,)  # the half-written seed is not visible as complete
    monkeypatch.setattr(store_module, "write_seed", write_seed)
    result = harvest(tiny_config(seeds_per_task=2), (0, 1), out=store)  # a plain run resumes it
    assert result.written == (1,) and result.skipped == (0,) and _chunks(store) == original


def test_the_installed_command_prints_nothing_after_the_line(pair_store, tmp_path):
    """zarr reads chunks concurrently: the reads beside the damaged one must not be torn down at exit
    with 'Task was destroyed but it is pending!' after the error line."""
    store = tmp_path / "cli.zarr"
    shutil.copytree(pair_store, store)
    (store / "features" / "c" / "0" / "0" / "0").write_bytes(b"")
    proc = subprocess.run(
        [METAPRUNE, "inspect", str(store)], capture_output=True, text=True, env=os.environ | {"COLUMNS": "400"}
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "variable 'features' of seed 0" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------ unwritable folders


def deny(monkeypatch, folder: Path) -> Path:
    """Make ``folder`` one this process may not write in. The check asks the OS (``os.access``), which
    grants root everything, so the test denies it here; ``files._may_write`` is that one question."""
    import metaprune.files as files

    folder.mkdir(exist_ok=True)
    real = files._may_write
    monkeypatch.setattr(files, "_may_write", lambda p: Path(p).absolute() != folder.absolute() and real(p))
    return folder


def test_an_unwritable_results_folder_is_one_line_before_any_work(monkeypatch, capsys, tmp_path):
    denied = deny(monkeypatch, tmp_path / "denied")
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "-m", "magnitude", "--seeds", "0", "-n", "mlp:8", "-d", "digits", "--epochs", "1"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--out", str(denied / "new"))
    one_line(code, out, err, 1, f"cannot write results folder {denied / 'new'}", f"create it in {denied}")
    code, out, err = run_main(monkeypatch, capsys, *args, "--out", str(denied))
    one_line(code, out, err, 1, f"no permission to write in {denied}", f"write permission on {denied}")
    (tmp_path / "file").write_text("x")
    code, out, err = run_main(monkeypatch, capsys, *args, "--out", str(tmp_path / "file" / "results"))
    one_line(code, out, err, 2, "is a file, not a folder", "--out")
    assert os.listdir(denied) == []


def test_an_unwritable_models_folder_is_one_line_before_the_fit(pair_store, monkeypatch, capsys, tmp_path):
    denied = deny(monkeypatch, tmp_path / "models")
    code, out, err = run_main(monkeypatch, capsys, "fit", "--data", str(pair_store), "--models-dir", str(denied))
    one_line(code, out, err, 1, f"cannot write models folder {denied}", "--models-dir")
    assert os.listdir(denied) == []


def test_an_unwritable_datasets_folder_is_one_line_before_the_harvest(monkeypatch, capsys, tmp_path):
    denied = deny(monkeypatch, tmp_path / "datasets")
    monkeypatch.chdir(tmp_path)
    harvest = ["harvest", "-n", "mlp:8", "-d", "digits", "--seeds", "0"]
    code, out, err = run_main(monkeypatch, capsys, *harvest)
    one_line(code, out, err, 1, "cannot write datasets folder", f"no permission to write in {denied}")
    code, out, err = run_main(monkeypatch, capsys, *harvest, "--out", str(denied / "s.zarr"))
    one_line(code, out, err, 1, "cannot write the store's folder", "--out")
    assert os.listdir(denied) == []
