"""``metaprune harvest``, ``metaprune inspect`` and ``metaprune bench harvest``."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.table import Table

from metaprune.config import default_of
from metaprune.harvest.config import HarvestConfig

from .common import (
    WORKERS,
    density,
    err,
    non_negative_int,
    out,
    passive_openmp,
    positive_float,
    positive_int,
    progress_bar,
    resumable,
    workers_for,
)
from .options import DataRootOpt, DatasetOpt, DeviceOpt, JsonOpt, NetworkOpt, config_option

H = HarvestConfig
DEFAULT_HARVEST_SEEDS = "0-15"  # 16 seeds: the default fit trains on 12 and holds 4 out
_TRAIN = default_of(H, "train")
DEFAULTS_HELP = (
    f"Defaults: {default_of(H, 'levels')} levels from density 1 to --sparsity, {default_of(H, 'rounds')} "
    f"multi-shot rounds per level, at most {_TRAIN.epochs} epochs per level (thesis training: "
    f"{_TRAIN.optimizer.upper()} lr {_TRAIN.lr:g}, batch {_TRAIN.batch_size}, early stopping with patience "
    f"{_TRAIN.patience}), populations of {default_of(H, 'seeds_per_task')} seeds."
)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


SeedsOpt = Annotated[str, typer.Option("--seeds", help="seeds, e.g. 0-15 or 0,3,9; extends a store's plan")]
RedoOpt = Annotated[
    str | None,
    typer.Option(
        "--redo",
        help="seeds of the store --out to compute again in place (a damaged chunk), with the store's own config",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", parser=WORKERS, help="local worker processes (default: one per core, up to the populations)"
    ),
]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")]
FamilyOpt = Annotated[
    str | None,
    typer.Option(
        "--family",
        help="harvest every member of a family (see `metaprune list`) into its own store under --out (default "
        "datasets/), with the family's cheap levels, rounds, epochs and seeds unless typed",
    ),
]


def harvest_cmd(
    ctx: Annotated[typer.Context, "which options were typed (--redo refuses config options)"],
    network: NetworkOpt = default_of(H, "network"),
    dataset: DatasetOpt = default_of(H, "dataset"),
    seeds: SeedsOpt = DEFAULT_HARVEST_SEEDS,
    sparsity: Annotated[float, config_option(H, "density", "--sparsity", number=density)] = default_of(H, "density"),
    levels: Annotated[int, config_option(H, "levels", number=positive_int)] = default_of(H, "levels"),
    epochs: Annotated[
        int, config_option(H, "train.epochs", number=positive_int, help="maximum epochs per level")
    ] = _TRAIN.epochs,
    patience: Annotated[int, config_option(H, "train.patience", number=positive_int)] = _TRAIN.patience,
    rounds: Annotated[int, config_option(H, "rounds", number=positive_int)] = default_of(H, "rounds"),
    seeds_per_task: Annotated[int, config_option(H, "seeds_per_task", number=positive_int)] = default_of(
        H, "seeds_per_task"
    ),
    data_seed: Annotated[int, config_option(H, "data_seed", number=non_negative_int)] = default_of(H, "data_seed"),
    warmup: Annotated[float, config_option(H, "warmup_epochs", "--warmup", number=positive_float)] = default_of(
        H, "warmup_epochs"
    ),
    trajectory: Annotated[
        bool, config_option(H, "trajectory", "--trajectory/--no-trajectory")
    ] = default_of(H, "trajectory"),
    dense_training: Annotated[bool, config_option(H, "train.dense_training")] = _TRAIN.dense_training,
    target: Annotated[str, config_option(H, "target")] = default_of(H, "target"),
    siblings: Annotated[int, config_option(H, "siblings", number=non_negative_int)] = default_of(H, "siblings"),
    paths: Annotated[bool, config_option(H, "paths", "--paths/--no-paths")] = default_of(H, "paths"),
    out_path: Annotated[
        str | None, typer.Option("--out", help="store path (default datasets/<network>-<dataset>-<hash>.zarr)")
    ] = None,
    redo: RedoOpt = None,
    family: FamilyOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    passive_openmp()
    from dataclasses import replace

    from metaprune.harvest import harvest
    from metaprune.seeds import parse_seeds

    seed_list = parse_seeds(seeds)
    if not _typed(ctx, "rounds"):
        rounds = _target_rounds(target, rounds)
    config = HarvestConfig(
        network=network,
        dataset=dataset,
        density=sparsity,
        levels=levels,
        rounds=rounds,
        train=replace(_TRAIN, epochs=epochs, patience=patience, dense_training=dense_training),
        seeds_per_task=seeds_per_task,
        data_seed=data_seed,
        warmup_epochs=warmup,
        trajectory=trajectory,
        target=target,
        siblings=siblings,
        paths=paths,
    )
    if family:
        _harvest_family(ctx, family, config, out_path, redo, workers, scheduler, device, data_root, json_out)
        return
    if redo:
        config, seed_list = _redo_request(ctx, seed_list)
    with resumable(lambda: _committed_seeds(config, out_path)), progress_bar("harvest", None) as bar:
        result = harvest(
            config,
            seed_list,
            out=out_path,
            redo=parse_seeds(redo) if redo else (),
            workers=workers_for(workers, scheduler, math.ceil(len(seed_list) / seeds_per_task)),
            scheduler=scheduler,
            device=device,
            data_root=data_root,
            progress=_harvest_progress(bar),
        )
    _print_harvest(result, json_out)


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed (by name: Typer ships its own copy of click's ParameterSource)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _harvest_family(ctx, family, config, out_path, redo, workers, scheduler, device, data_root, json_out) -> None:
    """``--family``: every member into its own store; a config option typed overrides the family's default,
    the member's network, dataset and density are its own (typing one is refused)."""
    from dataclasses import replace

    from metaprune.errors import MetapruneError
    from metaprune.harvest.family import FAMILIES, harvest_family
    from metaprune.seeds import parse_seeds

    fam = FAMILIES.get(family)
    own = [name for name in ("network", "dataset", "sparsity") if _typed(ctx, name)]
    if own or redo:
        flag = "--" + (own[0] if own else "redo")
        raise MetapruneError(f"{flag} given with --family {fam.name}, whose members set their own; drop it")
    base = fam.base_config()
    given = {
        k: getattr(config, k)
        for k in ("levels", "rounds", "seeds_per_task", "data_seed", "warmup_epochs", "trajectory", "paths")
        if _typed(ctx, {"warmup_epochs": "warmup"}.get(k, k))
    }
    train = {k: getattr(config.train, k) for k in ("epochs", "patience", "dense_training") if _typed(ctx, k)}
    base = replace(base, train=replace(base.train, **train), **given)
    seeds = parse_seeds(ctx.params["seeds"]) if _typed(ctx, "seeds") else fam.seeds
    with progress_bar(f"harvest family {fam.name}", None) as bar:
        results = harvest_family(
            fam, seeds, base=base, root=out_path, progress=_harvest_progress(bar, family=True),
            workers=workers_for(workers, scheduler, math.ceil(len(seeds) / base.seeds_per_task)),
            scheduler=scheduler, device=device, data_root=data_root,
        )  # fmt: skip
    if json_out:
        out.print_json(json.dumps([r.to_dict() for r in results]))
        return
    table = Table(title=f"family {fam.name}: {len(results)} stores ({sum(r.seconds for r in results):.1f} s)")
    for col in ("member", "density", "store", "written now", "complete", "seconds"):
        right = col in ("density", "complete", "seconds")
        table.add_column(col, justify="right" if right else "left", overflow="fold" if col == "store" else "ellipsis")
    for member, r in zip(fam.members, results, strict=True):
        table.add_row(member.label, f"{member.density:g}", str(r.store), _seeds_text(r.written),
                      f"{len(r.complete)} / {len(r.planned)}", f"{r.seconds:.1f}")  # fmt: skip
    out.print(table)


def _seeds_text(seeds) -> str:
    from metaprune.seeds import format_seeds

    return format_seeds(list(seeds)) or "none"


def _committed_seeds(config: HarvestConfig | None, out_path: str | None) -> str:
    from pathlib import Path

    from metaprune.harvest.config import default_store_path
    from metaprune.harvest.store import read_plan

    path = Path(out_path) if out_path else default_store_path(config.validate())
    planned, _, complete = read_plan(path)
    return f"{sum(map(bool, complete))} of {len(planned)} planned seeds complete in {path}"


CONFIG_OPTIONS = ("network", "dataset", "sparsity", "levels", "epochs", "patience", "rounds", "seeds_per_task",
                  "data_seed", "warmup", "trajectory", "target", "siblings", "paths")  # fmt: skip


def _typed(ctx: typer.Context, name: str) -> bool:
    """Option ``name`` was typed on the command line (by name: Typer ships its own copy of click's
    ParameterSource)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _target_rounds(target: str, rounds: int) -> int:
    """The rounds per level a --target spells (``synflow@ims20``) when --rounds was not typed."""
    from metaprune.pruning.method import parse_method

    spelled = parse_method(target).rounds
    return rounds if spelled is None else int(spelled)


def _redo_request(ctx: typer.Context, seed_list: tuple[int, ...]) -> tuple[None, tuple[int, ...]]:
    """--redo takes the store's own config, so a config option typed with it is refused; --seeds adds seeds
    only when typed (its default does not extend the store)."""
    from metaprune.errors import MetapruneError

    typed = [name for name in CONFIG_OPTIONS if _typed(ctx, name)]
    if typed:
        flag = "--" + typed[0].replace("_", "-")
        raise MetapruneError(f"{flag} given with --redo, which recomputes seeds with the store's own config; drop it")
    return None, seed_list if _typed(ctx, "seeds") else ()


def _harvest_progress(bar, family: bool = False):
    from metaprune.seeds import format_seeds

    levels_seen: dict[int, str] = {}

    def on_event(event: dict) -> None:
        kind = event.get("event")
        where = f"{event['member']}: " if family and "member" in event else ""
        if kind == "member":
            bar.update(0, status=f"member {event['index'] + 1}/{event['members']} {event['member']}")
        elif kind == "plan":
            status = f"{where}{event['executor']}"
            bar.update(0, total=max(1, len(event["todo"])), completed=0, status=status)
        elif kind == "level":
            levels_seen[event["task"]] = f"level {event['level']}/{event['levels']}"
            bar.update(0, status=f"{where}seeds {format_seeds(event['seeds'])}: {levels_seen[event['task']]}")
        elif kind == "seed":
            bar.advance(0)
        elif kind == "note":
            err.print(f"note: {event['text']}", highlight=False)

    return on_event


def _print_harvest(result, json_out: bool = False) -> None:
    if json_out:
        out.print_json(json.dumps(result.to_dict()))
        return
    from metaprune.seeds import format_seeds

    table = Table(title=f"harvest {result.config.network} on {result.config.dataset} ({result.seconds:.1f} s)")
    table.add_column("")
    table.add_column("value")
    table.add_row("store", str(result.store))
    siblings = result.config.siblings
    sibling_text = f", siblings of the first {siblings} planned seeds" if siblings else ""
    table.add_row("target", result.config.target_method().canonical() + sibling_text)
    table.add_row("written now", format_seeds(list(result.written)) or "none")
    table.add_row("skipped (complete)", format_seeds(list(result.skipped)) or "none")
    table.add_row("complete / planned", f"{len(result.complete)} / {len(result.planned)}")
    table.add_row("executor", result.executor)
    t = result.timing()
    table.add_row(
        "time split",
        f"training {t['train_s']:.1f} s, target pruning {t['target_prune_s']:.1f} s, "
        f"features {t['features_s']:.1f} s, writing {t['write_s']:.1f} s",
    )
    out.print(table)


def inspect_cmd(
    store: Annotated[str, typer.Argument(help="a harvest store (.zarr folder)")],
    max_seeds: Annotated[
        int,
        typer.Option("--max-seeds", parser=positive_int("--max-seeds"), help="seeds used for the correlation table"),
    ] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Dims, seeds complete/planned, features, target summary and the feature-target correlations."""
    from metaprune.harvest.inspect import inspect_store

    info = inspect_store(store, max_seeds=max_seeds)
    if json_out:
        out.print_json(json.dumps(info, default=lambda v: None))
        return
    _print_inspect(info)


def _print_inspect(info: dict) -> None:
    head = Table(title=f"{info['store']}", show_header=False)
    head.add_column("")
    head.add_column("")
    head.add_row("network / dataset", f"{info['network']} / {info['dataset']} (config {info['config_hash']})")
    head.add_row("schema", f"version {info['schema_version']}: {info['schema_note']}")
    head.add_row("dims", ", ".join(f"{k} {v}" for k, v in info["dims"].items()))
    head.add_row(
        "seeds", f"{len(info['complete'])} complete of {len(info['planned'])} planned ({info['complete_text']})"
    )
    head.add_row("features", ", ".join(info["features"]))
    tgt = info["target"]
    head.add_row(
        "target",
        f"{tgt['method']} to density {tgt['density_target']:g}: mean kept density "
        f"{_fmt(tgt['density_mean'], 5)}, kept per seed {tgt['kept_per_seed']}",
    )
    sibling = info.get("sibling")
    if sibling:
        head.add_row(
            "sibling (noise ceiling)",
            f"top-k Jaccard with the target {_fmt(sibling['jaccard'])}, mean over seeds {sibling['seeds']}",
        )
    chance = info.get("levels_at_chance")
    if chance:
        where = "; ".join(f"seed {seed}: level(s) {', '.join(map(str, levels))}" for seed, levels in chance.items())
        head.add_row("target at chance", where)
    head.add_row("on disk", f"{info['bytes_on_disk'] / 1e6:.1f} MB")
    out.print(head)
    layers = Table(title="target: kept weights per layer (over complete seeds)")
    for col in ("layer", "size", "kept mean", "min", "max"):
        layers.add_column(col, justify="right" if col != "layer" else "left")
    for row in tgt["layers"]:
        layers.add_row(
            row["name"], str(row["size"]), _fmt(row["kept_mean"], 1), str(row["kept_min"]), str(row["kept_max"])
        )
    out.print(layers)
    corr = info["correlation"]
    table = Table(title=f"feature-target correlation (mean over {len(corr['seeds'])} seeds; thesis fig. 5.7b)")
    for col in ("feature", "pearson round", "spearman round", "pearson mask", "spearman mask"):
        table.add_column(col, justify="right" if col != "feature" else "left")
    for row in corr["rows"]:
        table.add_row(
            row["feature"],
            _fmt(row["pearson_round"]),
            _fmt(row["spearman_round"]),
            _fmt(row["pearson_mask"]),
            _fmt(row["spearman_mask"]),
        )
    out.print(table)


def bench_harvest_cmd(
    seeds: Annotated[
        int, typer.Option("--seeds", parser=positive_int("--seeds"), help="seeds to harvest (one population)")
    ] = 4,
    iterate_seeds: Annotated[
        int,
        typer.Option(
            "--iterate-seeds", parser=positive_int("--iterate-seeds"), help="seeds of the synthetic store read back"
        ),
    ] = 100,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Seconds per seed, time split (training vs features/writing), store size vs raw, reader memory."""
    passive_openmp()
    from metaprune.bench.harvest import bench_harvest

    result = bench_harvest(seeds=seeds, iterate_seeds=iterate_seeds, device=device)
    if json_out:
        out.print_json(json.dumps(result))
        return
    _print_bench_harvest(result)


def _print_bench_harvest(result: dict) -> None:
    table = Table(title=f"bench harvest ({result['network']} / {result['dataset']}, {result['device']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    t, it, checks = result["timing"], result["iterate"], result["checks"]
    table.add_row("seconds per seed", f"{result['seconds_per_seed']:.2f}", "")
    table.add_row("target training s", f"{t['train_s']:.1f}", "")
    table.add_row("target SynFlow pruning s", f"{t['target_prune_s']:.1f}", "")
    table.add_row("features s", f"{t['features_s']:.1f}", "")
    table.add_row("writing s", f"{t['write_s']:.1f}", "")
    table.add_row("overhead / target", f"{100 * result['overhead_fraction_of_target']:.1f} %", _met(checks, "overhead"))
    table.add_row("store / raw float32", f"{100 * result['store_fraction_of_raw']:.1f} %", _met(checks, "store"))
    table.add_row(
        f"iterate {it['store_seeds']}-seed store: peak RSS",
        f"{it['peak_rss_bytes'] / 2**20:.0f} MiB",
        _met(checks, "iterate_peak"),
    )
    table.add_row("  tracemalloc peak", f"{it['tracemalloc_peak_bytes'] / 2**20:.0f} MiB", "")
    table.add_row("  seconds per seed read", f"{it['seconds'] / max(it['seeds'], 1):.3f}", "")
    out.print(table)


def _met(checks: dict, name: str) -> str:
    check = checks[name]
    return check["target"] if check["met"] else f"[bold red]{check['target']} MISSED[/]"


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command(
        "harvest",
        help="Harvest per-weight features and the targets of an iterative method (SynFlow-IMS unless --target) "
        "into a Zarr store. " + DEFAULTS_HELP,
    )(harvest_cmd)
    app.command("inspect")(inspect_cmd)
    bench_app.command("harvest")(bench_harvest_cmd)
