"""``harvest``: the coordinator. Validates, locks, creates or extends the store, runs the tasks.

Only this process writes store metadata (creation, the seed plan, attributes); tasks write their seeds'
regions. Complete seeds are skipped, incomplete ones redone; populations (tasks) are fixed when seeds
are added to the plan and recorded in the store (``task``), so a resumed task trains exactly the
population an uninterrupted run would have trained.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metaprune.errors import StoreError
from metaprune.files import check_folder_writable
from metaprune.harvest.config import HarvestConfig, default_store_path, diff_configs
from metaprune.harvest.task import SeedStats, TaskResult, TaskSpec, run_task

ProgressFn = Callable[[dict], None]


@dataclass
class HarvestResult:
    store: Path
    config: HarvestConfig
    planned: tuple[int, ...]
    requested: tuple[int, ...]
    written: tuple[int, ...]
    skipped: tuple[int, ...]
    complete: tuple[int, ...]
    executor: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def seed_stats(self) -> list[SeedStats]:
        return [s for t in self.tasks for s in t.stats]

    def timing(self) -> dict:
        """Totals over the tasks run now: training, SynFlow pruning, features, writing, setup."""
        train = sum(t.train_s for t in self.tasks)
        prune = sum(t.prune_s for t in self.tasks)
        setup = sum(t.setup_s for t in self.tasks)
        feats = sum(s.features_s for s in self.seed_stats)
        write = sum(s.write_s for s in self.seed_stats)
        return {
            "train_s": train,
            "target_prune_s": prune,
            "features_s": feats,
            "write_s": write,
            "setup_s": setup,
            "task_s": sum(t.seconds for t in self.tasks),
            "wall_s": self.seconds,
        }

    def to_dict(self) -> dict:
        from metaprune.provenance import to_jsonable

        return {
            "store": str(self.store),
            "config": self.config.identity(),
            "planned": list(self.planned),
            "requested": list(self.requested),
            "written": list(self.written),
            "skipped": list(self.skipped),
            "complete": list(self.complete),
            "executor": self.executor,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "timing": self.timing(),
            "seeds": [to_jsonable(s) for s in self.seed_stats],
        }


def prepare_store(
    path: Path, config: HarvestConfig, seeds: Iterable[int], notes: list[str], redone: Iterable[int] = ()
) -> None:
    """Create the store or check it against ``config``; extend its plan by ``seeds`` (caller holds the lock).
    The run is recorded in the store (``runs``), with the seeds it recomputes (``redone``) if any."""
    from metaprune.harvest.store import (
        append_run,
        apply_plan,
        check_store,
        create_store,
        is_empty_dir,
        plan_groups,
        read_plan,
        remove_creation_leftovers,
    )
    from metaprune.networks import build_network, prunable_layout

    remove_creation_leftovers(path)
    if not path.exists() or is_empty_dir(path):
        from metaprune.datasets import dataset_info

        shape, classes = dataset_info(config.dataset)
        create_store(path, config, prunable_layout(build_network(config.network, shape, classes, 0)))
        existing, tasks = [], []
    else:
        attrs = check_store(path, write=True)
        check_config(path, attrs, config)
        existing = [int(s) for s in attrs.get("planned_seeds") or []]
        tasks = [int(t) for t in attrs.get("seed_tasks") or []]
        arr_seeds, _, _ = read_plan(path)
        if arr_seeds != existing:
            notes.append(f"repaired an interrupted extension of the seed plan of {path}")
            apply_plan(path, existing, tasks)
    all_seeds, all_tasks, fresh = plan_groups(existing, tasks, seeds, config.seeds_per_task)
    if fresh or not existing:
        apply_plan(path, all_seeds, all_tasks)
    record = {"time": _now(), "host": socket.gethostname(), "pid": os.getpid(), "added": fresh}
    append_run(path, {**record, "redone": list(redone)} if redone else record)


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def check_config(path: Path, attrs: dict, config: HarvestConfig) -> None:
    stored = attrs.get("config")
    if not isinstance(stored, dict):
        raise StoreError(f"store {path} has no readable harvest config; accepted: a store from `metaprune harvest`")
    diffs = diff_configs(stored, config.identity())
    if len(diffs) == 1 and diffs[0].startswith("siblings:"):
        held = int(stored.get("siblings", 0))
        holds = f"the target's siblings of its first {held} planned seeds" if held else "no siblings"
        raise StoreError(
            f"store {path} holds {holds} (--siblings {held}), not {config.siblings}: siblings are computed with "
            f"their seeds' targets; accepted: --siblings {held}, or another --out (the default path is per config)"
        )
    if diffs:
        shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
        raise StoreError(
            f"store {path} was harvested with a different config ({shown}); accepted: the store's settings, "
            "or another --out (the default path is per config)"
        )


def preflight(path: Path, config: HarvestConfig) -> None:
    """Refuse bad --out before locking anything: a non-store, an old schema, a different config."""
    from metaprune.harvest.store import check_store, is_empty_dir

    if path.exists() and not is_empty_dir(path):
        attrs = check_store(path, write=True)
        check_config(path, attrs, config)


def harvest(
    config: HarvestConfig | None = None,
    seeds: Iterable[int] = tuple(range(8)),
    *,
    out: str | Path | None = None,
    redo: Iterable[int] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress: ProgressFn | None = None,
    connect_timeout: float = 5.0,
) -> HarvestResult:
    """Harvest ``seeds`` under ``config`` into ``out`` (default ``datasets/<net>-<data>-<hash>.zarr``).

    Complete seeds are skipped; incomplete ones (new, or interrupted) are computed. ``redo`` names planned
    seeds of the existing store ``out`` to compute again in place (a damaged chunk): each is withdrawn from
    the complete ones first, then recomputed with its population exactly as the first time, and committed
    again; ``config`` may then be None (the store's own). ``progress`` receives event dicts:
    ``{"event": "plan", ...}`` once, then ``task_start``/``level``/``seed`` events (``level`` events only
    in-process and with a process pool) and ``task_done``.
    """
    from metaprune.executor import get_executor
    from metaprune.harvest.lock import StoreLock
    from metaprune.harvest.store import mark_incomplete, read_plan

    t0 = time.perf_counter()
    config, path, requested, redone = _request(config, seeds, out, redo, device)
    emit = progress or (lambda event: None)
    notes: list[str] = []
    # The lock is taken first and released last: no worker of ours writes after another harvest may start.
    with StoreLock(path) as lock, get_executor(workers, scheduler, connect_timeout=connect_timeout) as executor:
        described = executor.describe()
        for note in lock.notes:
            _say(notes, emit, note)
        mark_incomplete(path, redone)  # before anything reads the plan: a damaged 'complete' flag is rewritten
        prepare_store(path, config, requested, notes, redone)
        specs, done, todo = _tasks(path, config, requested, device, data_root)
        if workers and workers > 1 and len(specs) < workers:
            note = (
                f"{workers} workers but only {len(specs)} task(s) of up to {config.seeds_per_task} seeds; "
                "a smaller --seeds-per-task spreads the seeds over more workers (it changes the config)"
            )
            _say(notes, emit, note)
        planned, _, _ = read_plan(path)
        emit(
            {
                "event": "plan",
                "store": str(path),
                "planned": len(planned),
                "complete": len(done),
                "todo": todo,
                "tasks": len(specs),
                "levels": config.levels,
                "executor": described,
            }
        )
        results: list[TaskResult] = []
        for _, res in executor.map(run_task, specs, on_event=emit):
            results.append(res)
            emit({"event": "task_done", "task": res.task_id, "written": list(res.written)})
        if chance := levels_at_chance_note(_levels_at_chance(path, requested, results)):
            _say(notes, emit, chance)
        planned, _, complete = read_plan(path)
    return HarvestResult(
        store=path,
        config=config,
        planned=tuple(planned),
        requested=requested,
        written=tuple(sorted(s for r in results for s in r.written)),
        skipped=tuple(s for s in requested if s in done),
        complete=tuple(s for s, c in zip(planned, complete, strict=True) if c),
        executor=described,
        seconds=time.perf_counter() - t0,
        notes=notes,
        tasks=sorted(results, key=lambda r: r.task_id),
    )


def _say(notes: list[str], emit: ProgressFn, text: str) -> None:
    """A note for the result and, as it happens, for the progress display."""
    notes.append(text)
    emit({"event": "note", "text": text})


def _levels_at_chance(path: Path, seeds: Iterable[int], results: Iterable[TaskResult]) -> dict[int, tuple[int, ...]]:
    """The target's levels at chance of each requested seed: as the store records them (seeds of earlier runs
    included), and as this run's tasks saw them (all a store that predates the record can tell)."""
    from metaprune.harvest.store import open_store

    with open_store(path) as store:
        stored = store.levels_at_chance()
    hits = {s.seed: s.levels_at_chance for r in results for s in r.stats if s.levels_at_chance}
    hits.update({seed: stored[seed] for seed in seeds if seed in stored})
    return hits


def levels_at_chance_note(hits: dict[int, tuple[int, ...]]) -> str | None:
    """One line naming each seed whose target trained to chance at some level, ``hits`` = {seed: levels} (its
    later levels then rank the weights of a network that learned nothing), or None when no level did."""
    from metaprune.training import AT_CHANCE_MEANING

    hits = {seed: levels for seed, levels in hits.items() if levels}
    if not hits:
        return None
    where = "; ".join(f"seed {seed} at level(s) {', '.join(map(str, hits[seed]))}" for seed in sorted(hits))
    return (
        f"the target trained to chance ({AT_CHANCE_MEANING}) for {where}: those seeds' later levels rank "
        "networks that learned nothing (training that diverged or stalled, or a mask with no working path); "
        "a smaller --lr may train them"
    )


def _request(config, seeds, out, redo, device) -> tuple[HarvestConfig, Path, tuple[int, ...], tuple[int, ...]]:
    """The checked request, before anything is locked: (config, store path, seeds to have, seeds to redo)."""
    from metaprune.errors import MetapruneError
    from metaprune.training import resolve_device

    redone = tuple(sorted({int(s) for s in redo}))
    if redone:
        if out is None:
            raise MetapruneError("--redo recomputes seeds of a store; accepted: --redo SEEDS with --out STORE")
        stored = _redo_config(Path(out).expanduser().absolute(), redone)
        config = stored if config is None else config
    config = (config or HarvestConfig()).validate()
    requested = tuple(sorted({int(s) for s in seeds} | set(redone)))
    if not requested:
        raise MetapruneError("no seeds to harvest; accepted: e.g. --seeds 0-7")
    if any(s < 0 for s in requested):
        raise MetapruneError("seeds must be non-negative")
    if device not in (None, "", "auto"):
        resolve_device(device)
    path = (Path(out) if out is not None else default_store_path(config)).expanduser().absolute()
    preflight(path, config)
    # the lock file and a new store's temporary folder go beside the store; its seeds go inside it
    check_folder_writable(path.parent, "datasets folder" if out is None else "the store's folder", "--out")
    if path.is_dir():
        check_folder_writable(path, "store", "--out")
    return config, path, requested, redone


def _redo_config(path: Path, redo: tuple[int, ...]) -> HarvestConfig:
    """The config of the store whose seeds ``redo`` recomputes; every one of them must be planned there."""
    from metaprune.harvest.store import check_store
    from metaprune.seeds import format_seeds

    attrs = check_store(path, write=True)
    planned = [int(s) for s in attrs.get("planned_seeds") or []]
    missing = [s for s in redo if s not in planned]
    if missing:
        raise StoreError(
            f"cannot redo seed(s) {format_seeds(missing)}: not in store {path}; accepted: its planned seeds "
            f"{format_seeds(planned) or 'none'}"
        )
    stored = attrs.get("config")
    if not isinstance(stored, dict):
        raise StoreError(f"store {path} has no readable harvest config; accepted: a store from `metaprune harvest`")
    return HarvestConfig.from_stored(stored)


def _tasks(path: Path, config: HarvestConfig, requested, device, data_root) -> tuple[list[TaskSpec], set, list]:
    """The tasks that hold an incomplete requested seed, the complete seeds, and the seeds they will write."""
    from metaprune.harvest.store import read_plan

    planned, task_ids, complete = read_plan(path)
    done = {s for s, c in zip(planned, complete, strict=True) if c}
    wanted = [s for s in requested if s not in done]
    groups: dict[int, list[int]] = {}
    for s, t in zip(planned, task_ids, strict=True):
        groups.setdefault(t, []).append(s)
    run_ids = sorted({task_ids[planned.index(s)] for s in wanted})
    specs = [
        TaskSpec(
            store=str(path),
            seeds=tuple(groups[t]),
            config=config.identity(),
            task_id=t,
            device=device,
            data_root=str(data_root) if data_root is not None else None,
        )
        for t in run_ids
    ]
    todo = sorted({s for spec in specs for s in spec.seeds if s not in done})
    return specs, done, todo
