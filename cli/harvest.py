"""``metaprune harvest``, ``metaprune inspect`` and ``metaprune bench harvest``."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.table import Table

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
)

DEFAULTS_HELP = (
    "Defaults: 10 levels from density 1 to --sparsity, 10 multi-shot rounds per level, at most 50 epochs per "
    "level (thesis training: SGD lr 0.1, batch 64, early stopping with patience 10), populations of 8 seeds."
)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command(
        "harvest", help="Harvest per-weight features and SynFlow-IMS targets into a Zarr store. " + DEFAULTS_HELP
    )
    def harvest_cmd(
        network: Annotated[str, typer.Option("--network", "-n", help="network spec, e.g. lenet_300_100")] = (
            "lenet_300_100"
        ),
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset name")] = "mnist5k",
        seeds: Annotated[str, typer.Option("--seeds", help="seeds, e.g. 0-7 or 0,3,9; extends a store's plan")] = "0-7",
        sparsity: Annotated[
            float,
            typer.Option(
                "--sparsity", parser=density(), help="target DENSITY: fraction of weights kept (0.005 = 0.5 %)"
            ),
        ] = 0.005,
        levels: Annotated[
            int, typer.Option("--levels", parser=positive_int("--levels"), help="training levels of the target")
        ] = 10,
        epochs: Annotated[
            int, typer.Option("--epochs", parser=positive_int("--epochs"), help="maximum epochs per level")
        ] = 50,
        patience: Annotated[
            int, typer.Option("--patience", parser=positive_int("--patience"), help="early-stopping patience (epochs)")
        ] = 10,
        rounds: Annotated[
            int, typer.Option("--rounds", parser=positive_int("--rounds"), help="multi-shot SynFlow rounds per level")
        ] = 10,
        seeds_per_task: Annotated[
            int,
            typer.Option(
                "--seeds-per-task",
                parser=positive_int("--seeds-per-task"),
                help="seeds trained together as one population (one task)",
            ),
        ] = 8,
        data_seed: Annotated[
            int,
            typer.Option("--data-seed", parser=non_negative_int("--data-seed"), help="data order of target training"),
        ] = 0,
        warmup: Annotated[
            float,
            typer.Option(
                "--warmup",
                parser=positive_float("--warmup"),
                help="epochs of the dense warm-up behind the dynamics features",
            ),
        ] = 3.0,
        trajectory: Annotated[
            bool,
            typer.Option(
                "--trajectory/--no-trajectory",
                help="also store the features in each state of the target's way down (fit --states trajectory)",
            ),
        ] = True,
        out_path: Annotated[
            str | None, typer.Option("--out", help="store path (default datasets/<network>-<dataset>-<hash>.zarr)")
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option("--workers", parser=WORKERS, help="local worker processes (default: in-process)"),
        ] = None,
        scheduler: Annotated[
            str | None, typer.Option("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
        ] = None,
        device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:N")] = "auto",
        data_root: Annotated[str | None, typer.Option("--data-root", help="folder with torchvision datasets")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    ) -> None:
        passive_openmp()
        from dataclasses import replace

        from metaprune.harvest import HarvestConfig, harvest
        from metaprune.harvest.config import DEFAULT_TRAIN
        from metaprune.seeds import format_seeds, parse_seeds

        seed_list = parse_seeds(seeds)
        config = HarvestConfig(
            network=network,
            dataset=dataset,
            density=sparsity,
            levels=levels,
            rounds=rounds,
            train=replace(DEFAULT_TRAIN, epochs=epochs, patience=patience),
            seeds_per_task=seeds_per_task,
            data_seed=data_seed,
            warmup_epochs=warmup,
            trajectory=trajectory,
        )
        with progress_bar("harvest", None) as bar:
            levels_seen: dict[int, str] = {}

            def on_event(event: dict) -> None:
                kind = event.get("event")
                if kind == "plan":
                    bar.update(0, total=max(1, len(event["todo"])), completed=0, status=event["executor"])
                elif kind == "level":
                    levels_seen[event["task"]] = f"level {event['level']}/{event['levels']}"
                    bar.update(0, status=f"seeds {format_seeds(event['seeds'])}: {levels_seen[event['task']]}")
                elif kind == "seed":
                    bar.advance(0)
                elif kind == "note":
                    err.print(f"note: {event['text']}", highlight=False)

            result = harvest(
                config,
                seed_list,
                out=out_path,
                workers=workers,
                scheduler=scheduler,
                device=device,
                data_root=data_root,
                progress=on_event,
            )
        if json_out:
            out.print_json(json.dumps(result.to_dict()))
            return
        table = Table(title=f"harvest {result.config.network} on {result.config.dataset} ({result.seconds:.1f} s)")
        table.add_column("")
        table.add_column("value")
        table.add_row("store", str(result.store))
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

    @app.command("inspect")
    def inspect_cmd(
        store: Annotated[str, typer.Argument(help="a harvest store (.zarr folder)")],
        max_seeds: Annotated[
            int,
            typer.Option(
                "--max-seeds", parser=positive_int("--max-seeds"), help="seeds used for the correlation table"
            ),
        ] = 20,
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Dims, seeds complete/planned, features, target summary and the feature-target correlations."""
        from metaprune.harvest.inspect import inspect_store

        info = inspect_store(store, max_seeds=max_seeds)
        if json_out:
            out.print_json(json.dumps(info, default=lambda v: None))
            return
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
            f"synflow@ims to density {tgt['density_target']:g}: mean kept density {_fmt(tgt['density_mean'], 5)}, "
            f"kept per seed {tgt['kept_per_seed']}",
        )
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

    @bench_app.command("harvest")
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
        device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N")] = "auto",
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Seconds per seed, time split (training vs features/writing), store size vs raw, reader memory."""
        passive_openmp()
        from metaprune.harvest.bench import bench_harvest

        result = bench_harvest(seeds=seeds, iterate_seeds=iterate_seeds, device=device)
        if json_out:
            out.print_json(json.dumps(result))
            return
        table = Table(title=f"bench harvest ({result['network']} / {result['dataset']}, {result['device']})")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_column("target", justify="right")
        t = result["timing"]
        table.add_row("seconds per seed", f"{result['seconds_per_seed']:.2f}", "")
        table.add_row("target training s", f"{t['train_s']:.1f}", "")
        table.add_row("target SynFlow pruning s", f"{t['target_prune_s']:.1f}", "")
        table.add_row("features s", f"{t['features_s']:.1f}", "")
        table.add_row("writing s", f"{t['write_s']:.1f}", "")
        table.add_row("overhead / target", f"{100 * result['overhead_fraction_of_target']:.1f} %", "<= 20 %")
        table.add_row("store / raw float32", f"{100 * result['store_fraction_of_raw']:.1f} %", "<= 75 %")
        it = result["iterate"]
        table.add_row(
            f"iterate {it['store_seeds']}-seed store: peak RSS",
            f"{it['peak_rss_bytes'] / 2**20:.0f} MiB",
            "< 1024 MiB",
        )
        table.add_row("  tracemalloc peak", f"{it['tracemalloc_peak_bytes'] / 2**20:.0f} MiB", "")
        table.add_row("  seconds per seed read", f"{it['seconds'] / max(it['seeds'], 1):.3f}", "")
        out.print(table)
