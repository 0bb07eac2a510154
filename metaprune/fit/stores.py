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
from metaprune.pruning.method import Method


@dataclass
class StoreView:
    """What fitting needs of one store: features, complete seeds, layer table, target facts, a hash.

    Built from the store's ``HarvestConfig`` (``HarvestStore.config``) and, for the warm-up behind its
    dynamics features, from ``WarmupRecord.setup_of``: never from guesses about the attributes."""

    path: Path
    store: Any  # metaprune.harvest.store.HarvestStore
    config: Any  # metaprune.harvest.config.HarvestConfig: what the harvest computed
    feature_names: tuple[str, ...]
    complete_seeds: tuple[int, ...]
    layout: list[list[Any]]  # [[layer name, size], ...] in flat-axis order
    layer_bounds: list[tuple[int, int]]  # (offset, size) per layer
    content_hash: str

    @property
    def network(self) -> str:
        return self.config.network

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def levels(self) -> int:
        return int(self.config.levels)

    @property
    def density(self) -> float:
        return float(self.config.density)

    @property
    def feature_version(self) -> int:
        return int(self.config.feature_version)

    @property
    def feature_config(self) -> dict[str, Any]:
        """What ``compute_features`` needs again at prune time: the density and SynFlow-UMS rounds of the
        density-dependent features, the pruning batch, and the warm-up of the dynamics features (absent for
        a store harvested before them)."""
        from metaprune.pruning.warmup import WarmupRecord

        cfg = self.config
        out: dict[str, Any] = {
            "density": float(cfg.density),
            "ums_rounds": int(cfg.ums_rounds),
            "per_class": int(cfg.per_class),
        }
        if cfg.warmup_epochs is not None:
            out["warmup"] = WarmupRecord.setup_of(cfg.warmup_epochs, cfg.train)
        return out

    @property
    def config_hash(self) -> str:
        """The hash in the store's default file name (its harvest config's, as written)."""
        return str(self.store.attrs.get("config_hash") or self.config.short_hash())

    @property
    def target_method(self) -> Method:
        """The harvest target as a method, e.g. ``synflow@ims10`` (its levels: ``levels``)."""
        return self.config.target_method()

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """The kinds of the store's prunable layers (``linear``, ``conv2d``; ``fit.persist.layer_kind``)."""
        kh = self.store.layer_table()["kh"]
        return tuple(sorted({"linear" if int(k) < 0 else "conv2d" for k in kh}))

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
    if not (path / "zarr.json").is_file():
        inside = sorted(p.name for p in path.glob("*.zarr")) if path.is_dir() else []
        hint = f"; it holds the stores {', '.join(inside)}: give one of them" if inside else ""
        raise StoreError(
            f"{str(path)!r} is not a harvest store (no zarr.json){hint}; accepted: a store written by "
            "`metaprune harvest`, e.g. datasets/<network>-<dataset>-<hash>.zarr"
        )
    store = open_store(path)
    complete = tuple(sorted(int(s) for s in store.complete_seeds))
    if not complete:
        raise StoreError(f"store {str(path)!r} has no complete seeds; accepted: a store whose harvest finished a seed")
    table = store.layer_table()
    return StoreView(
        path=path,
        store=store,
        config=store.config,
        feature_names=tuple(store.feature_names),
        complete_seeds=complete,
        layout=[[str(n), int(s)] for n, s in zip(table["name"], table["size"], strict=True)],
        layer_bounds=[(int(o), int(s)) for o, s in zip(table["offset"], table["size"], strict=True)],
        content_hash=content_hash(dict(store.attrs), complete),
    )


def open_stores(paths: Sequence[str | Path]) -> list[StoreView]:
    """The views of ``paths``, of one feature version (whether they computed the features a model reads with
    the same settings is the fit's check: ``fit.core.check_feature_configs``)."""
    views = [open_view(p) for p in paths]
    first = views[0]
    for v in views[1:]:
        if v.feature_version != first.feature_version:
            raise StoreError(
                f"stores {first.path} and {v.path} hold different feature versions ({first.feature_version} vs "
                f"{v.feature_version}); accepted: stores harvested with the same feature definitions"
            )
    return views


def select_target(views: Sequence[StoreView], spelled: str | None) -> list[StoreView]:
    """The stores whose harvest target is ``spelled`` (a method; one without multi-shot rounds matches any),
    or, with none spelled, all of them when they share one target. A one-line error otherwise."""
    from metaprune.pruning.method import parse_method

    held = {str(v.path): v.target_method for v in views}
    listed = ", ".join(f"{m.canonical()} ({p})" for p, m in held.items())
    if spelled is None:
        if len({m.canonical() for m in held.values()}) > 1:
            raise MetapruneError(
                f"the stores hold different targets: {listed}; accepted: --target-method METHOD naming one"
            )
        return list(views)
    wanted = parse_method(spelled)
    chosen = [v for v in views if _same_target(v.target_method, wanted)]
    if not chosen:
        raise MetapruneError(
            f"--target-method {spelled!r} is not the target of the store(s) given: {listed}; accepted: one of "
            "those, or a store harvested with --target " + spelled
        )
    return chosen


def _same_target(held: Method, wanted: Method) -> bool:
    """``wanted`` names the stored target ``held`` (its multi-shot rounds when spelled)."""
    from dataclasses import replace

    return held == (wanted if wanted.rounds is not None else replace(wanted, rounds=held.rounds))


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
