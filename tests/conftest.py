import contextlib
import os
import sys
import warnings

import pytest
import torch

from metaprune.datasets import DataSplits
from metaprune.seeds import generator


def synthetic_splits(n_train=96, n_val=32, n_test=32, shape=(1, 4, 4), classes=3, seed=0) -> DataSplits:
    """A tiny learnable problem: the class is the argmax of three fixed random projections."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(classes, int(torch.tensor(shape).prod()), generator=g)

    def make(n):
        x = torch.randn(n, *shape, generator=g)
        y = (x.flatten(1) @ proj.t()).argmax(1)
        return x, y

    tx, ty = make(n_train)
    vx, vy = make(n_val)
    sx, sy = make(n_test)
    return DataSplits("synthetic", tuple(shape), classes, tx, ty, vx, vy, sx, sy)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test leaves ``os.environ`` as it found it. A Dask LocalCluster sets OMP_NUM_THREADS=1 (and
    more) in its parent for good, which would put every later CLI subprocess on one thread."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Compiled LightGBM trees (``fit.compiled_trees``) go to a cache of the test session, not the user's."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def tiny_data() -> DataSplits:
    return synthetic_splits()


def tiny_harvest_config(**overrides):
    """A harvest that runs in seconds: a 12-8 MLP on digits, two levels, short training."""
    from metaprune.harvest.config import HarvestConfig
    from metaprune.training import TrainConfig

    fields = dict(
        network="mlp:12-8",
        dataset="digits",
        density=0.1,
        levels=2,
        rounds=3,
        train=TrainConfig(epochs=2, patience=2),
        seeds_per_task=2,
        ums_rounds=10,
        warmup_epochs=1.0,
    )
    return HarvestConfig(**{**fields, **overrides})


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point (``metaprune.cli.app:main``) in-process: exit code, stdout, stderr.

    Commands must already be registered on ``metaprune.cli.app.app``.
    """
    import metaprune.cli.app as app_module

    monkeypatch.setattr(app_module, "_register_commands", lambda: None)
    monkeypatch.setattr(sys, "argv", ["metaprune", *args])
    try:
        app_module.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block on ``n`` torch threads: BLAS rounds differently per thread count, so a comparison with
    workers of one thread each must run the reference on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plain_open(path):
    """``xarray.open_zarr(path)`` as a user calls it, loaded, with every warning recorded (whatever the
    pytest warning filters say): returns (dataset, warning messages)."""
    import xarray as xr

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(path).load()
    return ds, [f"{w.category.__name__}: {w.message}" for w in caught]


def assert_consolidated_current(path):
    """The consolidated metadata describes the store exactly as the arrays' own metadata does."""
    import xarray as xr

    ds, caught = plain_open(path)
    assert caught == []
    xr.testing.assert_identical(ds, xr.open_zarr(path, consolidated=False).load())
    return ds


def assert_matches_reference(ours: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Our values against a reference code's, computed on identical inputs: bit for bit on the CPU its
    fixture was written on, and to float32 rounding elsewhere — another CPU's BLAS kernels sum in another
    order, which moves the last bits (relative 1e-5 of the tensor's largest entry covers the cancellations
    in sums of mixed signs)."""
    expected = expected.to(ours.dtype)
    scale = float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=rtol * scale)


def batch_order(n: int, batch: int, steps: int, seed: int, stream: str):
    """The indices of ``steps`` SGD batches as the train loop draws them: per epoch one permutation of the
    ``n`` examples from the ``stream`` of ``seed``, cut into batches of ``batch`` (a partial epoch stops early)."""
    gen = generator(seed, stream)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            if done == steps:
                return
            yield perm[start : start + batch]
            done += 1
