"""Crash safety: a harvest killed with SIGKILL mid-run resumes to exactly the uninterrupted store, whose
consolidated metadata is current (a plain ``xarray.open_zarr`` is quiet)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from metaprune.harvest import HarvestConfig, harvest, open_store
from metaprune.harvest.lock import lock_path
from metaprune.training import TrainConfig
from tests.conftest import assert_consolidated_current

METAPRUNE = str(Path(sys.executable).with_name("metaprune"))
ARGS = [
    "harvest", "-n", "mlp:12-8", "-d", "digits", "--seeds", "0-5", "--sparsity", "0.1", "--levels", "2",
    "--epochs", "3", "--patience", "3", "--rounds", "3", "--seeds-per-task", "2", "--device", "cpu",
    "--workers", "1",  # in-process, as the reference: a pool's one-thread workers round differently
]  # fmt: skip
CONFIG = HarvestConfig(
    network="mlp:12-8",
    dataset="digits",
    density=0.1,
    levels=2,
    rounds=3,
    train=TrainConfig(epochs=3, patience=3),
    seeds_per_task=2,
)


def complete_count(path: Path) -> int | None:
    try:
        return int(np.asarray(zarr.open_group(path, mode="r")["complete"][:]).sum())
    except Exception:  # not created yet, or being created
        return None


def seed_data(path, seeds=None):
    with open_store(path) as s:
        ds = s.complete_dataset()
        if seeds is not None:
            ds = ds.sel(seed=list(seeds))
        return {v: ds[v].values for v in ("seed", "task", "features", "target_round", "target_mask", "target_score")}


def assert_same_seeds(a, b):
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "clean.zarr"
    harvest(CONFIG, range(6), out=path, device="cpu")
    return path


def assert_never_stale(path):
    """Whatever plain ``xarray.open_zarr`` finds (a consolidated copy, or none and a warning) is the store."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seen = xr.open_zarr(path).load()
    xr.testing.assert_identical(seen, xr.open_zarr(path, consolidated=False).load())


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, clean):
    killed = tmp_path / "killed.zarr"
    state = None
    for _ in range(3):  # the window is wide (two tasks' training), but never trust one attempt
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen([METAPRUNE, *ARGS, "--out", str(killed)], env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline and proc.poll() is None:
            n = complete_count(killed)
            if n is not None and 1 <= n < 6:
                proc.send_signal(signal.SIGKILL)
                state = n
                break
            time.sleep(0.01)
        proc.wait()
        if state is not None:
            break
        subprocess.run(["rm", "-rf", str(killed), str(lock_path(killed))], check=True)
    assert state is not None, "could not catch the harvest between its first and last seed"
    assert lock_path(killed).exists()  # the dead harvest's lock is left behind
    with open_store(killed) as s:  # readable, and only the complete seeds are visible
        assert len(s.complete_seeds) == state and len(s.planned_seeds) == 6
    # killed between seeds: the consolidated metadata written before the seeds is still the store's
    assert int(assert_consolidated_current(killed)["complete"].sum()) == state

    resumed = harvest(CONFIG, range(6), out=killed, device="cpu")
    assert any("stale lock" in n for n in resumed.notes)
    assert resumed.complete == (0, 1, 2, 3, 4, 5) and set(resumed.written) | set(resumed.skipped) == set(range(6))
    assert not lock_path(killed).exists()

    assert_same_seeds(seed_data(killed), seed_data(clean))
    assert_consolidated_current(killed)


# A harvest process killed by SIGKILL at its n-th consolidation, after the metadata change it follows:
# 1 = the extended seed plan's, 2 = the run record's.
KILL_AT_CONSOLIDATION = """
import os, signal, sys
import metaprune.harvest.store as store
from metaprune.cli.app import main

real, calls, at = store.consolidate, [], int(sys.argv[1])
def consolidate(path):
    calls.append(path)
    if len(calls) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(path)
store.consolidate = consolidate
sys.argv = ["metaprune", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    path = tmp_path_factory.mktemp("two") / "two.zarr"
    harvest(CONFIG, [0, 1], out=path, device="cpu")
    return path


@pytest.mark.parametrize("at", [1, 2])
def test_sigkill_between_metadata_and_consolidation_resumes(tmp_path, clean, two_seeds, at):
    store = tmp_path / "s.zarr"
    shutil.copytree(two_seeds, store)  # then extended to seeds 0-3 by a process killed at a consolidation
    args = [a if a != "0-5" else "0-3" for a in ARGS]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_CONSOLIDATION, str(at), *args, "--out", str(store)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stderr=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL
    with open_store(store) as s:  # the plan was committed before the kill
        assert s.planned_seeds == (0, 1, 2, 3) and s.complete_seeds == (0, 1)
    assert_never_stale(store)

    resumed = harvest(CONFIG, range(4), out=store, device="cpu")
    assert resumed.written == (2, 3) and resumed.complete == (0, 1, 2, 3)
    assert_consolidated_current(store)
    assert_same_seeds(seed_data(store), seed_data(clean, range(4)))
