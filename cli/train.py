"""``metaprune train`` (dense training) and ``metaprune bench train``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from metaprune.config import TrainConfig, help_of

from .common import density, err, out, passive_openmp, positive_float, positive_int, progress_bar
from .options import DataRootOpt, DatasetOpt, DeviceOpt, JsonOpt, NetworkOpt


def preset_override(name: str, parser, extra: str = "") -> typer.models.OptionInfo:
    """``--NAME``: overrides the training preset's field (default None: the preset's value)."""
    flag = f"--{name.replace('_', '-')}"
    return typer.Option(flag, parser=parser(flag), help=f"override the preset's {help_of(TrainConfig, name)}{extra}")


def training_options(preset: str, epochs: int | None, batch_size: int | None, lr: float | None, patience: int | None):
    from metaprune.training import train_preset

    return train_preset(preset, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience)


def train_cmd(
    network: NetworkOpt = "lenet_300_100",
    dataset: DatasetOpt = "mnist5k",
    seeds: Annotated[str, typer.Option("--seeds", help="seeds to train, e.g. 0 or 0-4 or 0,3,7")] = "0",
    preset: Annotated[str, typer.Option("--preset", help="training preset: thesis or openlth")] = "thesis",
    epochs: Annotated[int | None, preset_override("epochs", positive_int)] = None,
    batch_size: Annotated[int | None, preset_override("batch_size", positive_int)] = None,
    lr: Annotated[float | None, preset_override("lr", positive_float)] = None,
    patience: Annotated[int | None, preset_override("patience", positive_int)] = None,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train dense networks (one per seed, as one population) and report test accuracy at early stop."""
    from metaprune.dense import train_dense
    from metaprune.seeds import parse_seeds
    from metaprune.training import AT_CHANCE_NOTE

    cfg = training_options(preset, epochs, batch_size, lr, patience)
    seed_list = parse_seeds(seeds)
    with progress_bar("training", cfg.epochs) as bar:

        def progress(epoch: int, active: int, total: int) -> None:
            bar.update(0, completed=epoch, status=f"{active}/{total} members training")

        run = train_dense(network, dataset, seed_list, cfg, device, data_root, progress)
    if json_out:
        out.print_json(json.dumps(run.to_dict()))
        return
    table = Table(title=f"dense {run.network} on {run.dataset} ({run.device}, {run.seconds:.1f} s)")
    for col in ("seed", "test acc %", "val acc %", "best iteration", "best epoch", "epochs trained"):
        table.add_column(col, justify="right")
    for seed, m in zip(run.seeds, run.members, strict=True):
        table.add_row(
            str(seed),
            f"{100 * m.test_acc:.2f}" + (" [bold red](at chance)[/]" if m.at_chance else ""),
            f"{100 * m.val_acc:.2f}",
            str(m.best_iteration),
            str(m.best_epoch),
            str(m.epochs_trained),
        )
    out.print(table)
    stalled = [str(seed) for seed, m in zip(run.seeds, run.members, strict=True) if m.at_chance]
    if stalled:
        out.print(f"[yellow]{AT_CHANCE_NOTE}[/]: seed(s) {', '.join(stalled)} (lr {run.config.lr:g})", highlight=False)


def bench_train_cmd(
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    epochs: Annotated[int, typer.Option(parser=positive_int("--epochs"), help="timed epochs per run")] = 3,
    repeats: Annotated[
        int,
        typer.Option(
            parser=positive_int("--repeats"),
            help="reference/population run pairs per figure (the median of the per-pair ratios is reported)",
        ),
    ] = 3,
    populations: Annotated[str, typer.Option(help="population sizes K, comma-separated")] = "1,4,16,64",
    densities: Annotated[
        list[float] | None,
        typer.Option(
            "--density",
            parser=density("--density"),
            help="instead: the compacted/sparse population loop vs the dense one on real tickets at this "
            "density (repeatable; e.g. 0.005, 0.01, 0.05, 0.2)",
        ),
    ] = None,
) -> None:
    """Samples/s of the population loop vs a DataLoader research loop, K = 1, 4, 16, 64, GEMM fraction;
    with --density, the compacted/sparse population loop vs the dense one at each density."""
    passive_openmp()  # as harvest: spinning OpenMP threads make figures swing on a shared machine
    if densities:
        _bench_sparse(densities, device, epochs, repeats, json_out)
        return
    from metaprune.bench.train import bench_train, parse_populations

    ks = parse_populations(populations)  # before the status line
    with err.status("bench train") as status:
        result = bench_train(
            device=device,
            populations=ks,
            epochs=epochs,
            repeats=repeats,
            progress=lambda what: status.update(f"bench train: {what}"),
        )
    if json_out:
        out.print_json(json.dumps(result))
        return
    _print_bench_train(result)


def _print_bench_train(result: dict) -> None:
    load = result["load_average"]
    table = Table(
        title=f"bench train ({result['device']}, {result['threads']} threads, "
        f"OMP_WAIT_POLICY {result['omp_wait_policy']})"
    )
    table.add_column("measure")
    table.add_column("samples/s", justify="right")
    table.add_column("speed-up: median of pairs [min, max]", justify="right")
    lo, hi = result["reference_samples_per_s_min_max"]
    table.add_row("reference loop", f"{result['reference_samples_per_s']:,.0f}", f"[{lo:,.0f}, {hi:,.0f}] samples/s")
    for k, v in result["population"].items():
        table.add_row(f"population K={k} (network-samples)", f"{v:,.0f}", _ratio(result["speedup_per_population"][k]))
    if "parallel_populations" in result:
        p = result["parallel_populations"]
        table.add_row(
            f"{p['workers']} populations x K={p['k_per_worker']}, 1 thread each",
            f"{p['samples_per_s']:,.0f}",
            _ratio(p["speedup"]),
        )
    for k, v in result["autograd_population"].items():
        table.add_row(f"population K={k}, autograd backward + torch.optim", f"{v:,.0f}", "")
    for mode, v in result["mask_mode_samples_per_s_at_density_0.1"].items():
        table.add_row(f"K=1 at density 0.1, mask mode {mode}", f"{v:,.0f}", "")
    table.add_row("float32 GEMM rate (1024x1024)", f"{result['gemm_flops'] / 1e9:,.1f} GFLOP/s", "")
    out.print(table)
    out.print(
        f"best: {result['best']}; {result['repeats']} pairs per figure, each reference run then population run; "
        f"load average (1/5/15 min) before {load['before']}, after {load['after']} on {load['cpus']} CPUs",
        highlight=False,
    )
    targets = Table(title="targets")
    for col in ("measure", "value", "target", "met"):
        targets.add_column(col, justify="left" if col == "measure" else "right")
    for name, t in result["targets"].items():
        fmt = ".2f" if name == "gemm_fraction" else ".1f"
        unit = "" if name == "gemm_fraction" else "x"
        targets.add_row(name, f"{t['value']:{fmt}}{unit}", f">= {t['target']:{fmt}}{unit}", "yes" if t["met"] else "NO")
    out.print(targets)


def _bench_sparse(densities: list[float], device: str, epochs: int, repeats: int, json_out: bool) -> None:
    from metaprune.bench.sparse import bench_sparse_train

    with err.status("bench train") as status:
        result = bench_sparse_train(
            densities,
            epochs=epochs,
            repeats=repeats,
            device=device,
            progress=lambda what: status.update(f"bench train: {what}"),
        )
    if json_out:
        out.print_json(json.dumps(result))
        return
    load = result["load_average"]
    table = Table(
        title=f"bench train: compacted/sparse vs dense population loop ({result['device']}, "
        f"{result['threads']} threads, OMP_WAIT_POLICY {result['omp_wait_policy']})"
    )
    for col in ("density", "members", "dense samples/s", "compacted samples/s", "speed-up: median [min, max]"):
        table.add_column(col, justify="right")
    table.add_column("groups: members, kernels")
    for d, row in result["densities"].items():
        paths = row["training_paths"].get("groups", [])
        kinds = "; ".join(f"{len(g['members'])}: {g['kernels']}" for g in paths) or "dense path"
        if row["training_paths"].get("threads") == 1:
            kinds += " (1 thread)"
        table.add_row(
            d,
            str(row["population"]),
            f"{row['dense_samples_per_s']:,.0f}",
            f"{row['compact_samples_per_s']:,.0f}",
            _ratio(row["speedup"]),
            kinds,
        )
    out.print(table)
    target_text = ", ".join(
        f"{d}: {t['value']:.1f}x (>= {t['target']:g}x {'met' if t['met'] else 'NOT met'})"
        for d, t in result["targets"].items()
    )
    out.print(
        f"{', '.join(result['methods'])} x seeds {result['seeds']}; {result['repeats']} pairs of "
        f"{result['epochs_per_run']}-epoch runs per density, dense run first; targets {target_text}; load "
        f"average (1/5/15 min) before {load['before']}, after {load['after']} on {load['cpus']} CPUs",
        highlight=False,
    )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    bench_app.command("train")(bench_train_cmd)


def _ratio(r: dict) -> str:
    return f"{r['median']:.1f}x [{r['min']:.1f}, {r['max']:.1f}]"
