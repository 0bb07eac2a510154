import pytest
import torch

from metaprune.datasets import DataSplits


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


@pytest.fixture
def tiny_data() -> DataSplits:
    return synthetic_splits()
