"""The fit's data, streamed: units (a seed of a store in one state of the target's trajectory), the reader
that preprocesses and targets one unit at a time, and the ``TrainData`` the regressors fit on (passes
seed by seed, shuffled, or a bounded row subsample; ranking queries per layer).

Preprocessing is per network (``fit.preprocess``), so no statistic is ever fitted on held-out seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from metaprune.fit import portable
from metaprune.fit import preprocess as pp
from metaprune.fit.stores import StoreView

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

QUERY_ROWS = 10_000  # LightGBM's cap on a ranking query: one query = at most this many rows of one layer
CACHE_BYTES = 256 * 2**20  # preprocessed training seeds kept in memory between passes (at most)


@dataclass(frozen=True)
class Unit:
    """One network: a seed of one store, in one state of the target's trajectory (0: dense θ0).

    ``rows`` are the weights alive in that state (all of them in state 0).
    """

    view: StoreView
    seed: int
    state: int = 0
    rows: int = -1

    @property
    def n_rows(self) -> int:
        return self.view.n_weights if self.rows < 0 else self.rows


def trajectory_units(view: StoreView, seeds: Sequence[int]) -> list[Unit]:
    """Every stored state of each seed, with its alive count (from ``target_round``, cheap to read)."""
    out = []
    for seed in seeds:
        rounds = view.store.target_round(seed)
        out.extend(Unit(view, seed, s, int((rounds > s).sum())) for s in view.states)
    return out


class SeedReader:
    """Reads, preprocesses and targets one unit at a time (the alive weights of its state)."""

    def __init__(
        self,
        features: tuple[str, ...],
        preprocess: str,
        target: str,
        reference: tuple[str, ...] = (),
        sample_weight: str = "none",
    ):
        self.features = features
        self.preprocess = preprocess
        self.target = target
        self.reference = tuple(r for r in reference if r not in features)
        self.sample_weight = sample_weight

    def read(self, unit: Unit, with_reference: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
        """(preprocessed X, targets dict incl. ``y``, ``levels`` to go, ``weight`` and ``layer`` per row, raw
        reference columns by name), all over the weights alive in the unit's state."""
        want = list(portable.stored_columns(self.features))  # a portable feature is derived from these
        refs = [r for r in self.reference if with_reference and r in unit.view.feature_names and r not in want]
        if unit.state == 0:
            x_raw, full = unit.view.read_seed(unit.seed, want + refs)
            alive = np.arange(x_raw.shape[0])
        else:
            alive, x_raw, full = unit.view.store.read_state(unit.seed, unit.state, want + refs)
        bounds = pp.alive_bounds(alive, unit.view.layer_bounds)
        x = x_raw[:, : len(want)]
        if portable.uses_derived(self.features):
            x = portable.assemble(self.features, want, x, bounds, unit.view.n_weights)
        x = pp.preprocess(x, self.preprocess, bounds, self.features)
        raw_cols = {name: x_raw[:, i] for i, name in enumerate(want + refs)}
        if self.target in pp.SIBLING_TARGETS:  # a one-line StoreError for a seed without one
            full = {**full, "sibling_mask": unit.view.store.sibling_mask(unit.seed)}
        targets = {k: np.asarray(v)[alive] for k, v in full.items()}
        targets["y"] = pp.make_target(targets, self.target, unit.view.levels, unit.state)
        targets["levels"] = pp.levels_to_go(targets, unit.state)
        targets["weight"] = pp.sample_weights(targets["levels"], self.sample_weight)
        targets["layer"] = np.repeat(np.arange(len(bounds)), [size for _, size in bounds])
        return x, targets, raw_cols


class StreamData:
    """``TrainData`` over a set of units: passes seed by seed (shuffled), or a bounded row subsample."""

    def __init__(self, units: Sequence[Unit], reader: SeedReader, seed: int, progress: ProgressFn | None, stage: str):
        self.units = list(units)
        self.reader = reader
        self.n_features = len(reader.features)
        self.rows = sum(u.n_rows for u in self.units)
        self.weighted = reader.sample_weight != "none"
        self.seed = seed
        self._progress = progress
        self.stage = stage
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(f"{self.stage}: {stage}", done, total)

    def _load(self, i: int, keep: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(X, y, extras: ``weight`` (or None), ``levels``, ``layer``) of unit ``i``."""
        if i in self._cache:
            return self._cache[i]
        x, t, _ = self.reader.read(self.units[i])
        y = t["y"]
        extras = {"weight": t["weight"], "levels": t["levels"].astype(np.int16), "layer": t["layer"].astype(np.int16)}
        size = x.nbytes + y.nbytes + sum(v.nbytes for v in extras.values() if v is not None)
        if keep and self._cached_bytes + size <= CACHE_BYTES:
            self._cache[i] = (x, y, extras)
            self._cached_bytes += size
        return x, y, extras

    def weighted_passes(
        self, n: int, *, shuffle: bool = True
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
        """As ``passes``, with each row's sample weight (None when the fit is unweighted)."""
        total = n * len(self.units)
        done = 0
        for p in range(n):
            order = np.arange(len(self.units))
            if shuffle:
                g = np.random.default_rng(_np_seed(self.seed, "shuffle", p))
                order = g.permutation(order)
            for i in order:
                x, y, extras = self._load(int(i), keep=n > 1)  # a single pass has nothing to reuse
                w = extras["weight"]
                if shuffle:
                    perm = np.random.default_rng(_np_seed(self.seed, "shuffle", p, int(i) + 1)).permutation(x.shape[0])
                    x, y = x[perm], y[perm]
                    w = None if w is None else w[perm]
                yield p, x, y, w
                done += 1
                self.report(f"pass {p + 1}/{n}", done, total)

    def passes(self, n: int, *, shuffle: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for p, x, y, _ in self.weighted_passes(n, shuffle=shuffle):
            yield p, x, y

    def _counts(self, max_rows: int) -> list[int]:
        """Rows drawn from each unit: the same share of every unit, exactly min(max_rows, rows) in all."""
        sizes = [u.n_rows for u in self.units]
        frac = min(1.0, max_rows / max(self.rows, 1))
        counts = [min(n, int(math.floor(frac * n))) for n in sizes]
        # hand out the rows lost to rounding so the sample has exactly min(max_rows, rows) rows
        short = min(max_rows, self.rows) - sum(counts)
        for i in range(len(counts)):
            if short <= 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                short -= 1
        return counts

    def sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = self.weighted_sample(max_rows)
        return x, y

    def weighted_sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As ``sample``, with each row's sample weight (None when the fit is unweighted)."""
        counts = self._counts(max_rows)
        x_out = np.empty((sum(counts), self.n_features), dtype=np.float32)
        y_out = np.empty(sum(counts), dtype=np.float32)
        w_out = np.empty(sum(counts), dtype=np.float32) if self.weighted else None
        pos = 0
        for i, c in enumerate(counts):
            x, y, extras = self._load(i, keep=False)
            w = extras["weight"]
            if c < x.shape[0]:
                pick = np.random.default_rng(_np_seed(self.seed, "shuffle", 10_000, i)).choice(
                    x.shape[0], c, replace=False
                )
                pick.sort()
                x, y = x[pick], y[pick]
                w = None if w is None else w[pick]
            x_out[pos : pos + c] = x
            y_out[pos : pos + c] = y
            if w_out is not None:
                w_out[pos : pos + c] = w
            pos += c
            self.report("reading", i + 1, len(self.units))
        self.release()
        return x_out, y_out, w_out

    def query_sample(self, max_rows: int, query_rows: int = QUERY_ROWS) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Ranking queries: per (unit, layer) at most ``query_rows`` alive weights, drawn uniformly, with
        their relevance = levels they outlive from the state (0 = removed by the next level). Returns
        (X, relevance int32, query sizes); at most about ``max_rows`` rows in all (the same share per unit)."""
        counts = self._counts(max_rows)
        xs, rels, groups = [], [], []
        for i, c in enumerate(counts):
            x, _, extras = self._load(i, keep=False)
            layer, levels = extras["layer"], extras["levels"]
            share = c / max(x.shape[0], 1)
            g = np.random.default_rng(_np_seed(self.seed, "query", i))
            for j in np.unique(layer):
                rows = np.flatnonzero(layer == j)
                take = min(rows.size, query_rows, max(2, int(round(share * rows.size))))
                pick = np.sort(g.choice(rows, take, replace=False)) if take < rows.size else rows
                xs.append(x[pick])
                rels.append(levels[pick].astype(np.int32) - 1)
                groups.append(int(pick.size))
            self.report("reading", i + 1, len(self.units))
        self.release()
        return np.concatenate(xs), np.concatenate(rels), groups

    def release(self) -> None:
        """Drop the cached seeds."""
        self._cache.clear()
        self._cached_bytes = 0


def _np_seed(master: int, stream: str, *extra: int) -> int:
    from metaprune.seeds import stream_seed

    return stream_seed(master, stream, *extra)
