"""The harvest store (Zarr v3 through xarray): schema, creation, seed-region writes and the reader.

Layout (schema version 2; a contract ``fit``, ``inspect`` and notebooks rely on)::

    dims     seed (planned seeds, in plan order), weight (prunable weights, networks.prunable_layout order),
             feature (FEATURE_NAMES), layer (prunable layers), state (the target's states on its way down),
             row (alive weights of a state: as many as state 1 keeps)
    data     features[seed, weight, feature]   float32  (NaN until the seed is written): state 0, dense θ0
             state_features[seed, state, row, feature]
                                               float32  the same features of θ0 under the target's mask after
                                                        ``state`` levels (state = 1 .. levels - 1), for the
                                                        weights alive there only: row r is the r-th alive
                                                        weight in flat order; the rows past the state's alive
                                                        count are NaN (they compress to nothing)
             target_round[seed, weight]        int16    level at which the target (an iterative method, by
                                                        default SynFlow-IMS) removed it; survivors L+1
             target_mask[seed, weight]         bool     the final target ticket
             target_score[seed, weight]        float32  the target's scores of its last round / their sum
             sibling_mask[seed, weight]        bool     the final mask of the target's sibling (same method and
                                                        θ0, independent data order and pruning batch), only in
                                                        a store harvested with ``siblings`` N >= 1 and written
                                                        for its first N planned seeds (``sibling_seeds``)
             target_level_at_chance[seed, level]
                                               bool     the target's training at that level (1 .. levels) ended
                                                        at chance (``MemberResult.at_chance``); absent in a
                                                        store harvested before it was recorded
             harvest_seconds[seed]             float64  compute time attributed to the seed
             task[seed]                        int32    the population the seed was trained in (plan metadata)
             complete[seed]                    bool     written LAST: only complete seeds exist for readers
    coords   seed, feature (names); state, state_density (the fraction kept in that state); level;
             on weight: layer_index, row, col, kh, kw (-1 for Linear);
             on layer: layer_name, layer_offset, layer_size, layer_depth, layer_fan_in, layer_fan_out,
             layer_out, layer_in, layer_kh, layer_kw (-1 for Linear)
    attrs    schema_version, metaprune_store="harvest", network, dataset, density, n_weights,
             config (JSON), config_hash, feature_spec (JSON), target_spec (JSON), planned_seeds (JSON list),
             seed_tasks (JSON list), package_versions (JSON), created, runs (JSON list)

A weight is alive in state s exactly when ``target_round > s`` (it is removed at level ``target_round``),
so the states need no masks or weight indices of their own (row r of state s is weight
``flatnonzero(target_round > s)[r]``); the per-state targets derive from ``target_round`` too
(``fit.preprocess.make_target``). Compact rows matter: NaNs for the pruned weights interleaved with the
alive values defeat bit-shuffle compression (measured: 3.2x the size of the dense features, for 1.4x the
rows). Version 1 (no ``state`` dim) still opens for reading and is named as old by ``inspect``; only
version 2 is written.

Every array with a ``seed`` dim has one seed per chunk, so tasks in different processes write disjoint
files; features are chunked one feature per chunk (a reader that selects features reads only those),
compressed with Blosc-zstd and bit-shuffle. Only the coordinator (the process holding the lock) writes
metadata: creation, extension of the seed plan, attributes. A store is created in a temporary folder
and renamed into place, so an interrupted creation never leaves a half store behind.

The plan lives in the ``planned_seeds``/``seed_tasks`` attributes; extending it resizes every seed array
first and rewrites those attributes last (the commit), and the coordinator repairs an interrupted
extension on its next run.

The metadata is consolidated into the group's ``zarr.json``, so a plain ``xarray.open_zarr(store)`` opens
it quietly and reads it in one file. Only the coordinator's metadata changes (creation, the plan, the run
record) can make it stale, and each is followed by a fresh consolidation under the lock. A seed's commit
writes chunks only, never metadata (a test pins this), so the consolidated metadata stays valid while
seeds are written and workers never race a metadata rewrite. The metadata writers open the group without
the consolidated copy, and their first rewrite of the group's ``zarr.json`` drops it: a coordinator killed
before re-consolidating leaves either the previous consistent snapshot or no consolidated metadata
(readers then read every array's own metadata, and xarray warns), and its next run consolidates again.
Our own readers always read the arrays' own metadata.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaprune.errors import RuntimeFailure, StoreDamaged, StoreError
from metaprune.files import atomic_path

if TYPE_CHECKING:
    from metaprune.harvest.config import HarvestConfig

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no trajectory states
MARKER = "harvest"
CREATING = "creating"  # a store being created is built in .<name>.creating-* beside its path
LEVELS_AT_CHANCE = "target_level_at_chance"
SEED_DATA_VARS = (
    "features",
    "state_features",
    "target_round",
    "target_mask",
    "target_score",
    LEVELS_AT_CHANCE,
    "harvest_seconds",
)
SEED_VARS = (*SEED_DATA_VARS, "task", "complete")
JSON_ATTRS = ("config", "feature_spec", "target_spec", "planned_seeds", "seed_tasks", "package_versions", "runs")


def _compressor(typesize_shuffle: str = "bitshuffle", level: int = 5):
    import zarr

    return (zarr.codecs.BloscCodec(cname="zstd", clevel=level, shuffle=typesize_shuffle),)


def _zstd(level: int = 3):
    import zarr

    return (zarr.codecs.ZstdCodec(level=level),)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence zarr's notes on the v3 spec (string coords, consolidated metadata) for our own writes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        yield


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- creation


def _layer_table(layout) -> dict[str, tuple[str, np.ndarray]]:
    def col(fn, dtype):
        return ("layer", np.array([fn(layer) for layer in layout.layers], dtype=dtype))

    return {
        "layer_name": col(lambda la: la.name, object),
        "layer_offset": col(lambda la: la.offset, np.int64),
        "layer_size": col(lambda la: la.size, np.int64),
        "layer_depth": col(lambda la: la.depth, np.int32),
        "layer_fan_in": col(lambda la: la.fan_in, np.int64),
        "layer_fan_out": col(lambda la: la.fan_out, np.int64),
        "layer_out": col(lambda la: la.shape[0], np.int32),
        "layer_in": col(lambda la: la.shape[1], np.int32),
        "layer_kh": col(lambda la: la.shape[2] if len(la.shape) > 2 else -1, np.int32),
        "layer_kw": col(lambda la: la.shape[3] if len(la.shape) > 3 else -1, np.int32),
    }


def _skeleton(config, layout):
    """An xarray Dataset of the schema with zero seeds, and its encoding."""
    import xarray as xr

    from metaprune.features import layer_coordinates
    from metaprune.provenance import package_versions

    n = layout.total
    names = np.array(list(config.features), dtype=object)
    nf = len(names)
    wc = {k: v.numpy() for k, v in layer_coordinates(layout).items()}
    states = config.state_densities()
    rows = state_rows(config, n)
    data_vars = {
        "features": (("seed", "weight", "feature"), np.zeros((0, n, nf), np.float32)),
        "state_features": (("seed", "state", "row", "feature"), np.zeros((0, len(states), rows, nf), np.float32)),
        "target_round": (("seed", "weight"), np.zeros((0, n), np.int16)),
        "target_mask": (("seed", "weight"), np.zeros((0, n), bool)),
        "target_score": (("seed", "weight"), np.zeros((0, n), np.float32)),
        **({"sibling_mask": (("seed", "weight"), np.zeros((0, n), bool))} if config.siblings else {}),
        LEVELS_AT_CHANCE: (("seed", "level"), np.zeros((0, config.levels), bool)),
        "harvest_seconds": (("seed",), np.zeros(0, np.float64)),
        "task": (("seed",), np.zeros(0, np.int32)),
        "complete": (("seed",), np.zeros(0, bool)),
    }
    coords = {
        "seed": ("seed", np.zeros(0, np.int64)),
        "feature": ("feature", names),
        "state": ("state", np.arange(1, len(states) + 1, dtype=np.int32)),
        "state_density": ("state", np.asarray(states, dtype=np.float64)),
        "level": ("level", np.arange(1, config.levels + 1, dtype=np.int32)),
        "layer": ("layer", np.arange(len(layout.layers), dtype=np.int32)),
        **{k: ("weight", v) for k, v in wc.items()},
        **_layer_table(layout),
    }
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "metaprune_store": MARKER,
        "network": config.network,
        "dataset": config.dataset,
        "density": float(config.density),
        "n_weights": int(n),
        "config": config.to_json(),
        "config_hash": config.short_hash(),
        "feature_spec": json.dumps(_feature_spec(config)),
        "target_spec": json.dumps(config.target_spec()),
        "planned_seeds": "[]",
        "seed_tasks": "[]",
        "package_versions": json.dumps(package_versions()),
        "created": _now(),
        "runs": "[]",
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    encoding = {
        "features": {"chunks": (1, n, 1), "compressors": _compressor("bitshuffle"), "_FillValue": np.nan},
        "state_features": {
            "chunks": (1, 1, max(rows, 1), 1),
            "compressors": _compressor("bitshuffle"),
            "_FillValue": np.nan,
        },
        "target_round": {"chunks": (1, n), "compressors": _compressor("bitshuffle")},
        "target_mask": {"chunks": (1, n), "compressors": _compressor("bitshuffle")},
        "sibling_mask": {"chunks": (1, n), "compressors": _compressor("bitshuffle")},
        LEVELS_AT_CHANCE: {"chunks": (1, config.levels), "compressors": _zstd()},
        "target_score": {"chunks": (1, n), "compressors": _compressor("bitshuffle"), "_FillValue": np.nan},
        "harvest_seconds": {"chunks": (1,), "compressors": _zstd(), "_FillValue": np.nan},
        "task": {"chunks": (1,), "compressors": _zstd()},
        "complete": {"chunks": (1,), "compressors": _zstd()},
        "seed": {"chunks": (4096,), "compressors": _zstd()},
    }
    for k in wc:
        encoding[k] = {"compressors": _compressor("bitshuffle")}
    return ds, {k: v for k, v in encoding.items() if k in ds.variables}


def state_rows(config, n: int) -> int:
    """Rows of ``state_features``: the weights state 1 keeps (every later state keeps fewer)."""
    from metaprune.pruning.masks import keep_count

    densities = config.state_densities()
    return keep_count(densities[0], n) if densities else 0


def _feature_spec(config) -> dict:
    from metaprune.feature_names import PATH_FEATURES, PATH_SPEC
    from metaprune.features import feature_spec

    spec = feature_spec()
    spec["names"] = list(config.features)
    if PATH_FEATURES[0] in config.features:  # only then, so the default stores keep their content hash
        spec["paths"] = PATH_SPEC
    spec["density"] = float(config.density)
    spec["ums_rounds"] = int(config.ums_rounds)
    spec["pruning_batch"] = f"{config.per_class} examples per class (prune_batch stream of the seed)"
    return spec


def create_store(path: str | Path, config, layout) -> None:
    """Create an empty store (no seeds) for ``config`` at ``path``: built aside, renamed into place.

    The caller holds the lock. ``path`` must not exist or be an empty folder.
    """
    path = Path(path)
    ds, encoding = _skeleton(config, layout)
    try:
        with _quiet(), atomic_path(path, folder=True, tag=CREATING) as tmp:
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, encoding=encoding)
            if path.exists():
                path.rmdir()  # an empty folder given as --out (rmdir refuses anything else)
    except OSError as exc:
        raise RuntimeFailure(f"could not create the store {path}: {exc}") from None


def remove_creation_leftovers(path: str | Path) -> None:
    """Delete ``.<name>.creating-*`` folders a killed creation left beside ``path`` (caller holds the lock)."""
    path = Path(path)
    if path.parent.is_dir():
        for p in path.parent.glob(f".{path.name}.{CREATING}-*"):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------ checking


def read_attrs(path: str | Path) -> dict[str, Any] | None:
    """The group attributes of a Zarr v3 store at ``path`` (JSON ones decoded), or None if none is there."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("node_type") != "group":
        return None
    return decode_attrs(doc.get("attributes", {}))


def decode_attrs(attrs: dict) -> dict:
    out = dict(attrs)
    for key in JSON_ATTRS:
        if isinstance(out.get(key), str):
            with contextlib.suppress(ValueError):
                out[key] = json.loads(out[key])
    return out


def check_store(path: str | Path, *, write: bool = False) -> dict:
    """Attributes of the harvest store at ``path``, or a one-line StoreError saying why it is not one
    (``write``: one this metaprune may add seeds to, i.e. of the current schema version)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no harvest store at {path}; accepted: a folder written by `metaprune harvest`")
    if not path.is_dir():
        raise StoreError(f"{path} is a file, not a harvest store; accepted: a .zarr folder from `metaprune harvest`")
    attrs = read_attrs(path)
    if attrs is None or attrs.get("metaprune_store") != MARKER or "schema_version" not in attrs:
        raise StoreError(
            f"{path} exists but is not a harvest store (no harvest metadata); accepted: a store written by "
            "`metaprune harvest`, an empty folder, or a path that does not exist yet"
        )
    version = attrs.get("schema_version")
    if version not in (READABLE_VERSIONS if not write else (SCHEMA_VERSION,)):
        what = "writes" if write else "reads"
        accepted = SCHEMA_VERSION if write else " and ".join(str(v) for v in READABLE_VERSIONS)
        old = " (an old store without trajectory states)" if version == 1 else ""
        raise StoreError(
            f"store {path} has schema version {version}{old}, this metaprune {what} version {accepted}; "
            "accepted: a store from this version (harvest again into a new --out)"
        )
    return attrs


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# ----------------------------------------------------------------------------------------- the plan


def plan_groups(existing: Sequence[int], existing_tasks: Sequence[int], new: Iterable[int], per_task: int):
    """Append ``new`` seeds (sorted, not yet planned) in groups of ``per_task`` with fresh task ids."""
    seen = set(existing)
    fresh = sorted(s for s in set(new) if s not in seen)
    next_id = (max(existing_tasks) + 1) if len(existing_tasks) else 0
    seeds = list(existing)
    tasks = list(existing_tasks)
    for i, s in enumerate(fresh):
        seeds.append(s)
        tasks.append(next_id + i // per_task)
    return seeds, tasks, fresh


def _seed_arrays(group):
    for name, arr in group.arrays():
        dims = arr.metadata.dimension_names or ()
        if "seed" in dims:
            yield name, arr, dims.index("seed")


def apply_plan(path: str | Path, seeds: Sequence[int], tasks: Sequence[int]) -> None:
    """Make the store's seed axis hold ``seeds`` (a prefix-extension of the current plan), then commit.

    Resizes every seed array, writes the new seed ids and task ids, and finally rewrites the
    ``planned_seeds``/``seed_tasks`` attributes (the commit). Re-running it repairs an interrupted one.
    """
    import zarr

    path = Path(path)
    try:
        with _quiet():
            g = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)
            s = len(seeds)
            for _, arr, axis in _seed_arrays(g):
                if arr.shape[axis] != s:
                    shape = list(arr.shape)
                    shape[axis] = s
                    arr.resize(tuple(shape))
            g["seed"][:] = np.asarray(seeds, dtype=np.int64)
            g["task"][:] = np.asarray(tasks, dtype=np.int32)
            g.attrs.update(
                {
                    "planned_seeds": json.dumps([int(x) for x in seeds]),
                    "seed_tasks": json.dumps([int(t) for t in tasks]),
                }
            )
    except OSError as exc:
        raise RuntimeFailure(f"could not extend the seed plan of {path}: {exc}; re-run to repair") from None
    consolidate(path)


def append_run(path: str | Path, record: dict) -> None:
    import zarr

    with _quiet():
        g = zarr.open_group(Path(path), mode="r+", zarr_format=3, use_consolidated=False)
        runs = decode_attrs(dict(g.attrs)).get("runs") or []
        runs.append(record)
        g.attrs.update({"runs": json.dumps(runs[-200:])})
    consolidate(path)


def consolidate(path: str | Path) -> None:
    """Rewrite the consolidated metadata from every array's own (the coordinator, under the lock).

    Called after each metadata change; an interrupted call leaves a store that is read correctly (see
    the module notes) and the next harvest run consolidates it again.
    """
    import zarr

    try:
        with _quiet():
            zarr.consolidate_metadata(str(path), zarr_format=3)
    except OSError as exc:
        raise RuntimeFailure(f"could not consolidate the metadata of {path}: {exc}; re-run to repair") from None


def read_plan(path: str | Path) -> tuple[list[int], list[int], np.ndarray]:
    """(planned seeds, task ids, complete flags) from the arrays (consistent once ``apply_plan`` ran)."""
    import zarr

    with _quiet():
        # The arrays' own metadata: a consolidated copy may predate an interrupted extension.
        g = zarr.open_group(Path(path), mode="r", zarr_format=3, use_consolidated=False)
        seeds = [int(x) for x in g["seed"][:]]
        tasks = [int(x) for x in g["task"][:]]
        flags = g["complete"]
        complete = read_per_seed(path, seeds, "complete", lambda i: flags[:] if i is None else flags[i])
    return seeds, tasks, np.asarray(complete, dtype=bool)


def read_per_seed(path: str | Path, seeds: Sequence[int], var: str, read: Callable[[int | None], Any]) -> Any:
    """``read(None)`` (all seeds of ``var`` at once), or, when a chunk cannot be read, a one-line
    ``StoreDamaged`` naming the store, the variable and the first seed whose chunk is damaged."""
    try:
        return read(None)
    except Exception as exc:  # numcodecs and zarr raise RuntimeError, ValueError, ... for a damaged chunk
        for i, seed in enumerate(seeds):
            try:
                read(i)
            except Exception as bad:
                raise damaged(path, var, seed, bad) from None
        raise damaged(path, var, None, exc) from None


def damaged(path: str | Path, var: str, seed: int | None, exc: BaseException) -> RuntimeFailure:
    """The one-line error of a chunk that cannot be read, saying how to recover: re-harvest that seed."""
    _settle_reads()
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
    if isinstance(exc, OSError):
        return RuntimeFailure(f"reading {var!r} of seed {seed} of store {path} failed ({detail}); it needs read access")
    where = f"seed {seed}" if seed is not None else "some seed"
    redo = f"--redo {seed}" if seed is not None else "--redo SEEDS"
    return StoreDamaged(
        f"store {path} is damaged: variable {var!r} of {where} cannot be read ({detail}); recover by "
        f"re-harvesting it in place: metaprune harvest --out {path} {redo}"
    )


def _settle_reads() -> None:
    """Let zarr finish the chunk reads it started beside the one that failed: left pending, they are torn
    down at exit, each printing 'Task was destroyed but it is pending!' after the error's one line."""
    import asyncio

    from zarr.core.sync import sync

    async def settle() -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5.0)

    with contextlib.suppress(Exception):
        sync(settle())


# -------------------------------------------------------------------------------------- seed writes


def mark_incomplete(path: str | Path, seeds: Iterable[int]) -> None:
    """Withdraw planned ``seeds`` from the complete ones (``harvest --redo``): their ``complete`` flags are
    written False first, so their data can be written again without a half-written seed ever counting as
    complete; ``write_seed`` commits each again. A flag's chunk is rewritten whole, so a damaged one is
    replaced without being read."""
    import zarr

    seeds = [int(s) for s in seeds]
    if not seeds:
        return
    path = Path(path)
    planned = [int(s) for s in (read_attrs(path) or {}).get("planned_seeds") or []]
    try:
        with _quiet():
            flags = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)["complete"]
            for seed in seeds:
                flags[planned.index(seed)] = False
    except OSError as exc:
        raise RuntimeFailure(f"could not withdraw seeds from {path} for --redo: {exc}") from None


def write_seed(path: str | Path, seed: int, data: dict[str, np.ndarray], seconds: float) -> None:
    """Write one seed's region (features and targets), then mark it complete (the commit).

    Safe from several processes at once as long as each writes its own seeds: every chunk written here
    belongs to this seed alone and no metadata is touched. An OSError (disk full, ...) leaves the seed
    incomplete and the store readable; it is raised as a one-line RuntimeFailure.
    """
    import xarray as xr

    path = Path(path)
    seeds, _, _ = read_plan(path)
    try:
        i = seeds.index(int(seed))
    except ValueError:
        raise StoreError(f"seed {seed} is not planned in store {path}") from None
    region = {"seed": slice(i, i + 1)}
    body = xr.Dataset(
        {
            "features": (("seed", "weight", "feature"), data["features"][None].astype(np.float32, copy=False)),
            "state_features": (
                ("seed", "state", "row", "feature"),
                data["state_features"][None].astype(np.float32, copy=False),
            ),
            "target_round": (("seed", "weight"), data["target_round"][None].astype(np.int16, copy=False)),
            "target_mask": (("seed", "weight"), data["target_mask"][None].astype(bool, copy=False)),
            "target_score": (("seed", "weight"), data["target_score"][None].astype(np.float32, copy=False)),
            "harvest_seconds": (("seed",), np.array([seconds], np.float64)),
        }
    )
    if "sibling_mask" in data:
        body["sibling_mask"] = (("seed", "weight"), data["sibling_mask"][None].astype(bool, copy=False))
    if LEVELS_AT_CHANCE in data and _holds(path, LEVELS_AT_CHANCE):  # an older store goes on without it
        body[LEVELS_AT_CHANCE] = (("seed", "level"), data[LEVELS_AT_CHANCE][None].astype(bool, copy=False))
    done = xr.Dataset({"complete": (("seed",), np.array([True]))})
    try:
        with _quiet():
            body.to_zarr(path, region=region, mode="r+", consolidated=False, zarr_format=3)
            done.to_zarr(path, region=region, mode="r+", consolidated=False, zarr_format=3)
    except OSError as exc:
        raise RuntimeFailure(
            f"writing seed {seed} to {path} failed ({exc}); the seed stays incomplete and committed seeds are "
            "kept; fix the cause (e.g. free disk space) and re-run to resume"
        ) from None


def _holds(path: Path, name: str) -> bool:
    """The store has array ``name`` (its own metadata, not the consolidated copy)."""
    import zarr

    with _quiet():
        return name in zarr.open_group(path, mode="r", zarr_format=3, use_consolidated=False)


# -------------------------------------------------------------------------------------------- reader


@dataclass
class HarvestStore:
    """Read access to a harvest store; only complete seeds are visible through it.

    ``iter_seeds`` streams one seed at a time (features [n, F] float32 and the targets), reading only
    the chunks of the requested features, so memory stays at a few seeds' worth whatever the store size.
    """

    path: Path
    dataset: Any  # the lazily opened xarray.Dataset (all planned seeds; use complete_dataset())
    attrs: dict

    # ----- plan and contents
    @property
    def planned_seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.dataset["seed"].values)

    @property
    def complete_seeds(self) -> tuple[int, ...]:
        flags = self._complete_flags()
        return tuple(int(s) for s, ok in zip(self.dataset["seed"].values, flags, strict=True) if ok)

    def _complete_flags(self) -> np.ndarray:
        def read(i: int | None) -> np.ndarray:
            return (self.dataset["complete"] if i is None else self.dataset["complete"][i]).values

        return np.asarray(read_per_seed(self.path, self.planned_seeds, "complete", read), dtype=bool)

    def _read(self, var: str, i: int, *index: Any) -> np.ndarray:
        """``dataset[var][i, *index]`` loaded; a chunk that cannot be read is one line naming the store, the
        variable and the seed, and how to recover (``damaged``)."""
        try:
            return np.asarray(self.dataset[var][(i, *index)].values)
        except Exception as exc:  # numcodecs and zarr raise RuntimeError, ValueError, ... for a damaged chunk
            raise damaged(self.path, var, self.planned_seeds[i], exc) from None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self.dataset["feature"].values)

    @property
    def n_weights(self) -> int:
        return int(self.dataset.sizes["weight"])

    @property
    def schema_version(self) -> int:
        return int(self.attrs.get("schema_version", SCHEMA_VERSION))

    @property
    def states(self) -> tuple[int, ...]:
        """The stored states of the target's trajectory: 0 (dense θ0, ``features``) and, from schema
        version 2 with a trajectory, 1 .. levels - 1 (``state_features``)."""
        extra = self.dataset["state"].values if "state" in self.dataset.coords else []
        return (0, *(int(s) for s in extra))

    def read_state(
        self, seed: int, state: int, features: Iterable[str] | str | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(alive, X, target)`` of one seed in one state of the target's trajectory.

        ``alive`` are the flat indices of the weights still alive after ``state`` levels
        (``target_round > state``), ``X`` float32 ``[len(alive), F]`` their features in that state
        (state 0: the dense ``features``), ``target`` the seed's full target arrays (as ``iter_seeds``).
        """
        if int(state) not in self.states:
            raise StoreError(
                f"state {state} is not in store {self.path}; stored states: {', '.join(map(str, self.states))}"
                + (" (schema version 1 stores only state 0; harvest again for the trajectory)"
                   if self.schema_version == 1 else "")
            )
        names = self.select(features)
        if int(state) == 0:
            _, x0, target = next(self.iter_seeds([seed], names))
            return np.arange(self.n_weights), x0, target
        stored = self.feature_names
        idx = [stored.index(n) for n in names]
        i = self._position(seed)
        j = self.states.index(int(state)) - 1
        target = self._targets(i)
        alive = np.flatnonzero(target["target_round"] > int(state))
        rows = slice(0, alive.size)
        x = np.stack([self._read("state_features", i, j, rows, k).astype(np.float32) for k in idx], axis=1)
        return alive, np.ascontiguousarray(x), target

    @property
    def config(self) -> HarvestConfig:
        """The harvest config the store was written with (``HarvestConfig.from_stored``: a field the store
        predates reads as it was then); a one-line StoreError for a store without a readable one."""
        from metaprune.errors import MetapruneError
        from metaprune.harvest.config import HarvestConfig

        stored = self.attrs.get("config")
        if not isinstance(stored, dict):
            raise StoreError(
                f"store {self.path} has no readable harvest config; accepted: a store from `metaprune harvest`"
            )
        try:
            return HarvestConfig.from_stored(stored)
        except (MetapruneError, TypeError) as exc:
            raise StoreError(f"store {self.path} holds a harvest config this metaprune cannot read ({exc})") from None

    def complete_dataset(self):
        """The xarray Dataset restricted to complete seeds (lazy)."""
        flags = self._complete_flags()
        return self.dataset.isel(seed=np.flatnonzero(flags))

    def layer_table(self):
        """One row per prunable layer: name, offset, size, depth, fan-in/out, shape (pandas DataFrame)."""
        import pandas as pd

        order = ("name", "offset", "size", "depth", "fan_in", "fan_out", "out", "in", "kh", "kw")
        table = {key: self.dataset[f"layer_{key}"].values for key in order}
        table["name"] = [str(x) for x in table["name"]]
        return pd.DataFrame(table, index=pd.Index(self.dataset["layer"].values, name="layer"))

    def _position(self, seed: int) -> int:
        seeds = self.planned_seeds
        if int(seed) not in seeds:
            raise StoreError(f"seed {seed} is not in store {self.path}; complete seeds: {_fmt(self.complete_seeds)}")
        i = seeds.index(int(seed))
        if not bool(self._read("complete", i)):
            raise StoreError(
                f"seed {seed} of store {self.path} is not complete (still being harvested or interrupted); "
                f"complete seeds: {_fmt(self.complete_seeds)}"
            )
        return i

    def _targets(self, i: int) -> dict[str, np.ndarray]:
        return {
            "target_round": self._read("target_round", i).astype(np.int16, copy=False),
            "target_mask": self._read("target_mask", i).astype(bool, copy=False),
            "target_score": self._read("target_score", i).astype(np.float32, copy=False),
        }

    def targets(self, seed: int) -> dict[str, np.ndarray]:
        """The target arrays of a complete ``seed`` (as ``iter_seeds`` yields them)."""
        return self._targets(self._position(seed))

    @property
    def sibling_seeds(self) -> tuple[int, ...]:
        """The complete seeds whose target's sibling is stored (the first ``siblings`` planned seeds)."""
        count = int(self.config.siblings) if "sibling_mask" in self.dataset else 0
        first = set(self.planned_seeds[:count])
        return tuple(s for s in self.complete_seeds if s in first)

    def sibling_mask(self, seed: int) -> np.ndarray:
        """The final mask of the target's sibling of ``seed`` (bool [n_weights]); a one-line StoreError where
        the store holds none for it."""
        i = self._position(seed)
        if int(seed) not in self.sibling_seeds:
            held = _fmt(self.sibling_seeds)
            raise StoreError(
                f"store {self.path} holds no sibling of seed {seed} (siblings: {held}); accepted: a seed with one, "
                "or a store harvested with --siblings N"
            )
        return self._read("sibling_mask", i).astype(bool, copy=False)

    def sibling_jaccard(self) -> dict[int, float]:
        """The noise ceiling of the target, per seed with a stored sibling: the Jaccard overlap of the
        sibling's final mask with the target's (both keep the same count, so it is the sibling's top-k
        Jaccard with the target)."""
        out = {}
        for seed in self.sibling_seeds:
            a, b = self.targets(seed)["target_mask"], self.sibling_mask(seed)
            union = int((a | b).sum())
            out[int(seed)] = 1.0 if union == 0 else int((a & b).sum()) / union
        return out

    def levels_at_chance(self) -> dict[int, tuple[int, ...]]:
        """The levels (from 1) at which the target's training ended at chance, per complete seed that has
        one; empty for a store harvested before they were recorded."""
        if LEVELS_AT_CHANCE not in self.dataset:
            return {}
        out = {}
        for seed in self.complete_seeds:
            flags = self._read(LEVELS_AT_CHANCE, self._position(seed)).astype(bool)
            if flags.any():
                out[int(seed)] = tuple(int(level) for level in np.flatnonzero(flags) + 1)
        return out

    def target_round(self, seed: int) -> np.ndarray:
        """The level at which the target removed each weight of a complete ``seed`` (int16 [n_weights])."""
        return self.targets(seed)["target_round"]

    def iter_seeds(
        self, seeds: Iterable[int] | None = None, features: Iterable[str] | str | None = None
    ) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
        """Yield ``(seed, X, target)`` per seed: X float32 ``[n_weights, F]`` in the order of ``features``
        (names or groups, default all), ``target`` = {"target_round" int16, "target_mask" bool,
        "target_score" float32} arrays ``[n_weights]``. Default seeds: all complete ones; asking for an
        incomplete or unknown seed is an error."""
        names = self.select(features)
        stored = self.feature_names
        idx = [stored.index(n) for n in names]
        contiguous = idx == list(range(idx[0], idx[0] + len(idx))) if idx else False
        fsel = slice(idx[0], idx[-1] + 1) if contiguous else idx
        seed_list = self.complete_seeds if seeds is None else tuple(int(s) for s in seeds)
        positions = [self._position(s) for s in seed_list]
        for seed, i in zip(seed_list, positions, strict=True):
            x = self._read("features", i, slice(None), fsel).astype(np.float32, copy=False)
            yield seed, np.ascontiguousarray(x), self._targets(i)

    def select(self, features: Iterable[str] | str | None = None) -> tuple[str, ...]:
        """Feature names for a selection of feature and group names (``features.select_features`` among the
        stored features), in the given order without duplicates; ``None`` or ``"all"``: every stored one."""
        from metaprune.features import select_features

        return select_features(features, self.feature_names, owner=f"store {self.path}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dataset.close()

    def __enter__(self) -> HarvestStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(seeds: Sequence[int]) -> str:
    from metaprune.seeds import format_seeds

    return format_seeds(list(seeds)) or "none"


def open_store(path: str | Path) -> HarvestStore:
    """Open a harvest store for reading (lazily); a one-line StoreError if it is not a usable store."""
    import xarray as xr

    path = Path(path)
    attrs = check_store(path)
    try:
        with _quiet():
            ds = xr.open_dataset(path, engine="zarr", chunks=None, cache=False, consolidated=False, zarr_format=3)
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(
            f"store {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "if a harvest was interrupted while extending its seeds, re-running it repairs the store"
        ) from None
    planned = attrs.get("planned_seeds") or []
    if ds.sizes.get("seed", 0) != len(planned):
        ds.close()
        raise StoreError(
            f"store {path} is being extended (seed axis {ds.sizes.get('seed', 0)}, plan {len(planned)}); "
            "re-run the harvest to repair it, or wait for the running one"
        )
    return HarvestStore(path=path, dataset=ds, attrs=attrs)


__all__ = [
    "SCHEMA_VERSION",
    "HarvestStore",
    "apply_plan",
    "check_store",
    "consolidate",
    "create_store",
    "open_store",
    "read_plan",
    "write_seed",
]
