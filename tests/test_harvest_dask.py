"""Scale-out: a real Dask LocalCluster and a spawn process pool give the in-process store, bit for bit."""

import os
import time

import numpy as np
import pytest

from metaprune.errors import MetapruneError, RuntimeFailure
from metaprune.executor import InProcessExecutor, get_executor
from metaprune.harvest import harvest, open_store
from metaprune.harvest.lock import lock_path
from tests.conftest import tiny_harvest_config, torch_threads

distributed = pytest.importorskip("distributed")

CONFIG = tiny_harvest_config()
SEEDS = range(4)


def seed_data(path):
    with open_store(path) as s:
        ds = s.complete_dataset()
        return {v: ds[v].values for v in ("seed", "task", "features", "target_round", "target_mask", "target_score")}


def assert_same(a, b):
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The in-process store on ``threads`` torch threads, the thread count of the workers it is compared with."""
    stores = {}

    def on_threads(threads: int):
        if threads not in stores:
            path = tmp_path_factory.mktemp("inproc") / "s.zarr"
            with torch_threads(threads):
                harvest(CONFIG, SEEDS, out=path)
            stores[threads] = seed_data(path)
        return stores[threads]

    return on_threads


def test_dask_local_cluster_matches_in_process(in_process, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        events = []
        res = harvest(
            CONFIG, SEEDS, out=tmp_path / "d.zarr", scheduler=cluster.scheduler_address, progress=events.append
        )
    assert res.executor.startswith("dask cluster") and res.complete == (0, 1, 2, 3)
    assert [e for e in events if e["event"] == "task_done"] and not lock_path(tmp_path / "d.zarr").exists()
    assert_same(seed_data(tmp_path / "d.zarr"), in_process(1))


def test_process_pool_matches_in_process(in_process, tmp_path):
    events = []
    res = harvest(CONFIG, SEEDS, out=tmp_path / "p.zarr", workers=2, progress=events.append)
    assert res.executor.startswith("process pool of 2")
    assert any(e["event"] == "level" for e in events)  # level progress travels from the workers
    assert_same(seed_data(tmp_path / "p.zarr"), in_process(max(1, (os.cpu_count() or 1) // 2)))


def test_unreachable_scheduler_fails_fast(tmp_path):
    t = time.monotonic()
    with pytest.raises(RuntimeFailure, match="no Dask scheduler answered at tcp://127.0.0.1:1"):
        harvest(CONFIG, SEEDS, out=tmp_path / "u.zarr", scheduler="tcp://127.0.0.1:1")
    assert time.monotonic() - t < 10
    assert not (tmp_path / "u.zarr").exists()


def test_executor_arguments():
    assert isinstance(get_executor(), InProcessExecutor) and isinstance(get_executor(1), InProcessExecutor)
    with pytest.raises(MetapruneError, match="bad scheduler address"):
        get_executor(scheduler="localhost:8786")
    with pytest.raises(MetapruneError, match="exclude each other"):
        get_executor(workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(MetapruneError, match="--workers"):
        get_executor(workers=-3)


def _boom(task, emit):
    if task == 1:
        raise MetapruneError("task one is bad")
    return task


def test_task_errors_reach_the_caller():
    with InProcessExecutor() as ex, pytest.raises(MetapruneError, match="task one is bad"):
        list(ex.map(_boom, [0, 1, 2]))
