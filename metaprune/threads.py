"""How many threads a piece of work runs on: a context manager that restores the caller's pools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Run with at most ``n`` BLAS/OpenMP/PyTorch threads (restored afterwards).

    Small kernels gain nothing from a second thread and lose much to its synchronisation, above all on a
    busy machine where spin-waiting threads stall every parallel region: measured on 2 shared cores, XᵀX
    of 266,200 x 23 took 8 s with two OpenBLAS threads and 0.01 s with one; an MLP epoch 14 s with two
    PyTorch threads, 0.15 s with one. (torch and threadpoolctl load lazily: the CLI lists without them.)
    """
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)
