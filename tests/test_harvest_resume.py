"""Crash safety: a harvest killed with SIGKILL mid-run resumes to exactly the uninterrupted store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from metaprune.harvest import HarvestConfig, harvest, open_store
from metaprune.harvest.lock import lock_path
from metaprune.training import TrainConfig

METAPRUNE = str(Path(sys.executable).with_name("metaprune"))
ARGS = [
    "harvest", "-n", "mlp:12-8", "-d", "digits", "--seeds", "0-5", "--sparsity", "0.1", "--levels", "2",
    "--epochs", "3", "--patience", "3", "--rounds", "3", "--seeds-per-task", "2", "--device", "cpu",
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


def seed_data(path):
    with open_store(path) as s:
        ds = s.complete_dataset()
        return {v: ds[v].values for v in ("seed", "task", "features", "target_round", "target_mask", "target_score")}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
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

    resumed = harvest(CONFIG, range(6), out=killed, device="cpu")
    assert any("stale lock" in n for n in resumed.notes)
    assert resumed.complete == (0, 1, 2, 3, 4, 5) and set(resumed.written) | set(resumed.skipped) == set(range(6))
    assert not lock_path(killed).exists()

    clean = tmp_path / "clean.zarr"
    harvest(CONFIG, range(6), out=clean, device="cpu")
    a, b = seed_data(killed), seed_data(clean)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
