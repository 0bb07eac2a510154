"""The fit side's view of harvest stores (read through ``metaprune.harvest.store``; never written here)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.errors import MetapruneError, StoreError


@dataclass
class StoreView:
    """What fitting needs of one store: features, complete seeds, layer table, target facts, a hash."""

    path: Path
    store: Any  # metaprune.harvest.store.HarvestStore
    feature_names: tuple[str, ...]
    complete_seeds: tuple[int, ...]
    layout: list[list[Any]]  # [[layer name, size], ...] in flat-axis order
    layer_bounds: list[tuple[int, int]]  # (offset, size) per layer
    network: str
    dataset: str
    levels: int | None
    density: float | None
    feature_config: dict[str, Any]  # what compute_features needs again at prune time (density, ums_rounds)
    feature_version: int | None
    content_hash: str

    @property
    def n_weights(self) -> int:
        return sum(size for _, size in self.layer_bounds)

    @property
    def states(self) -> tuple[int, ...]:
        """The trajectory states the store holds (0: dense θ0 only, for schema version 1)."""
        return self.store.states

    def read_seed(self, seed: int, names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Raw features ``names`` [n, len(names)] float32 and the targets of one seed."""
        for s, x, targets in self.store.iter_seeds([seed], features=list(names)):
            if int(s) != int(seed):  # pragma: no cover - a store bug
                raise StoreError(f"store {self.path} returned seed {s} when asked for {seed}")
            return np.asarray(x, dtype=np.float32), {k: np.asarray(v) for k, v in targets.items()}
        raise StoreError(f"store {self.path} has no seed {seed}")  # pragma: no cover


def _config(attrs: dict[str, Any]) -> dict[str, Any]:
    cfg = attrs.get("config")
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except ValueError:
            cfg = {}
    return cfg if isinstance(cfg, dict) else {}


def _find(cfg: dict[str, Any], *keys: str) -> Any:
    """First of ``keys`` found at the top level of ``cfg`` or one level down."""
    for key in keys:
        if key in cfg:
            return cfg[key]
    for value in cfg.values():
        if isinstance(value, dict):
            for key in keys:
                if key in value:
                    return value[key]
    return None


VOLATILE_ATTRS = ("runs", "planned_seeds", "seed_tasks", "created")  # bookkeeping, not content


def content_hash(attrs: dict[str, Any], complete: Sequence[int]) -> str:
    """A cheap content hash: the store's attrs (less bookkeeping) and its complete seeds (8 hex digits)."""
    stable = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    text = json.dumps(stable, sort_keys=True, default=str) + "|" + ",".join(str(int(s)) for s in sorted(complete))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def open_view(path: str | Path) -> StoreView:
    from metaprune.harvest.store import open_store

    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {str(path)!r} not found; accepted: a store written by `metaprune harvest`")
    store = open_store(path)
    complete = tuple(sorted(int(s) for s in store.complete_seeds))
    if not complete:
        raise StoreError(f"store {str(path)!r} has no complete seeds; accepted: a store whose harvest finished a seed")
    attrs = dict(store.attrs)
    cfg = _config(attrs)
    spec = attrs.get("feature_spec")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            spec = {}
    spec = spec if isinstance(spec, dict) else {}
    names, offsets, sizes = _layer_columns(store.layer_table())
    levels = _find(cfg, "levels")
    density = attrs.get("density", _find(cfg, "density"))
    fcfg: dict[str, Any] = {"density": float(density) if density is not None else None}
    for key in ("ums_rounds", "per_class"):
        value = spec.get(key, cfg.get(key))
        if value is not None:
            fcfg[key] = int(value)
    if cfg.get("warmup_epochs") is not None:
        train = cfg.get("train") or {}
        fcfg["warmup"] = {
            "epochs": float(cfg["warmup_epochs"]),
            "lr": float(train.get("lr", 0.1)),
            "batch_size": int(train.get("batch_size", 64)),
            "optimizer": str(train.get("optimizer", "sgd")),
        }
    version = spec.get("version", cfg.get("feature_version"))
    return StoreView(
        path=path,
        store=store,
        feature_names=tuple(store.feature_names),
        complete_seeds=complete,
        layout=[[str(n), int(s)] for n, s in zip(names, sizes, strict=True)],
        layer_bounds=[(int(o), int(s)) for o, s in zip(offsets, sizes, strict=True)],
        network=str(attrs.get("network", cfg.get("network", "?"))),
        dataset=str(attrs.get("dataset", cfg.get("dataset", "?"))),
        levels=int(levels) if levels is not None else None,
        density=float(density) if density is not None else None,
        feature_config=fcfg,
        feature_version=int(version) if version is not None else None,
        content_hash=content_hash(attrs, complete),
    )


def _layer_columns(table: Any) -> tuple[list[str], list[int], list[int]]:
    """(names, offsets, sizes) from the store's layer table (a DataFrame, a dict of columns or a list)."""
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        cols = {c: list(table[c]) for c in table.columns}
    elif isinstance(table, dict):
        cols = {k: list(v) for k, v in table.items()}
    else:
        rows = list(table)
        cols = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    name_key = "layer_name" if "layer_name" in cols else "name"
    off_key = "layer_offset" if "layer_offset" in cols else "offset"
    size_key = "layer_size" if "layer_size" in cols else "size"
    return [str(v) for v in cols[name_key]], [int(v) for v in cols[off_key]], [int(v) for v in cols[size_key]]


def open_stores(paths: Sequence[str | Path]) -> list[StoreView]:
    views = [open_view(p) for p in paths]
    first = views[0]
    for v in views[1:]:
        if v.feature_version != first.feature_version:
            raise StoreError(
                f"stores {first.path} and {v.path} hold different feature versions ({first.feature_version} vs "
                f"{v.feature_version}); accepted: stores harvested with the same feature definitions"
            )
        if v.feature_config != first.feature_config:
            raise StoreError(
                f"stores {first.path} and {v.path} computed features with different settings "
                f"({first.feature_config} vs {v.feature_config}); a model can record only one"
            )
    return views


def newest_store(datasets_dir: str | Path = "datasets") -> Path:
    """The most recently modified store with complete seeds under ``datasets_dir``."""
    root = Path(datasets_dir)
    candidates = sorted(root.glob("*.zarr"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    reasons = []
    for p in candidates:
        try:
            open_view(p)
        except MetapruneError as exc:
            reasons.append(f"{p.name}: {exc}")
            continue
        return p
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    raise StoreError(
        f"no store with complete seeds under {str(root)!r}{detail}; accepted: --data STORE, or run "
        "`metaprune harvest` first"
    )


def resolve_stores(
    stores: Sequence[str | Path] | str | Path | None, datasets_dir: str | Path = "datasets"
) -> tuple[list[Path], bool]:
    """The stores to use and whether the default (newest under ``datasets_dir``) was picked."""
    if stores is None or (not isinstance(stores, str | Path) and len(stores) == 0):
        return [newest_store(datasets_dir)], True
    if isinstance(stores, str | Path):
        stores = [stores]
    paths = [Path(s) for s in stores]
    seen = set()
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise MetapruneError(f"store {str(p)!r} given twice")
        seen.add(key)
    return paths, False
