"""Harvest: the per-weight meta-dataset (features and iterative-SynFlow targets) in a Zarr store.

- :func:`harvest` (``metaprune harvest``) computes seeds into a store, resumable and lock-protected;
- :func:`open_store` reads one (``HarvestStore.iter_seeds`` streams seed by seed; ``fit`` uses it);
- :func:`inspect_store` (``metaprune inspect``) summarises one, with the feature-target correlations.

Names are imported lazily, so that reading a store (``open_store``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SCHEMA_VERSION": "metaprune.harvest.store",
    "HarvestStore": "metaprune.harvest.store",
    "open_store": "metaprune.harvest.store",
    "HarvestConfig": "metaprune.harvest.config",
    "default_store_path": "metaprune.harvest.config",
    "HarvestResult": "metaprune.harvest.run",
    "harvest": "metaprune.harvest.run",
    "inspect_store": "metaprune.harvest.inspect",
}

if TYPE_CHECKING:  # pragma: no cover
    from metaprune.harvest.config import HarvestConfig, default_store_path
    from metaprune.harvest.inspect import inspect_store
    from metaprune.harvest.run import HarvestResult, harvest
    from metaprune.harvest.store import SCHEMA_VERSION, HarvestStore, open_store


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metaprune.harvest' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "HarvestConfig",
    "HarvestResult",
    "HarvestStore",
    "default_store_path",
    "harvest",
    "inspect_store",
    "open_store",
]
