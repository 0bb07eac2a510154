"""``metaprune train`` (dense training) and ``metaprune bench train``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from .common import out, progress_bar

NetworkOpt = Annotated[str, typer.Option("--network", "-n", help="network spec, e.g. lenet_300_100 or mlp:500-300")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="dataset name (see `metaprune list`)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:N")]
DataRootOpt = Annotated[
    str | None, typer.Option("--data-root", help="folder with torchvision datasets (default ./data)")
]


def training_options(preset: str, epochs: int | None, batch_size: int | None, lr: float | None, patience: int | None):
    from metaprune.training import train_preset

    return train_preset(preset, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        network: NetworkOpt = "lenet_300_100",
        dataset: DatasetOpt = "mnist5k",
        seeds: Annotated[str, typer.Option("--seeds", help="seeds to train, e.g. 0 or 0-4 or 0,3,7")] = "0",
        preset: Annotated[str, typer.Option("--preset", help="training preset: thesis or openlth")] = "thesis",
        epochs: Annotated[int | None, typer.Option(help="override the preset's maximum epochs")] = None,
        batch_size: Annotated[int | None, typer.Option(help="override the preset's batch size")] = None,
        lr: Annotated[float | None, typer.Option(help="override the preset's learning rate")] = None,
        patience: Annotated[int | None, typer.Option(help="epochs without validation improvement")] = None,
        device: DeviceOpt = "auto",
        data_root: DataRootOpt = None,
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    ) -> None:
        """Train dense networks (one per seed, as one population) and report test accuracy at early stop."""
        from metaprune.dense import train_dense
        from metaprune.seeds import parse_seeds

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
                f"{100 * m.test_acc:.2f}",
                f"{100 * m.val_acc:.2f}",
                str(m.best_iteration),
                str(m.best_epoch),
                str(m.epochs_trained),
            )
        out.print(table)

    @bench_app.command("train")
    def bench_train_cmd(
        device: DeviceOpt = "auto",
        json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        epochs: Annotated[int, typer.Option(help="timed epochs per measurement")] = 3,
    ) -> None:
        """Samples/s of the population loop vs a DataLoader research loop, K = 1, 4, 16, 64, GEMM fraction."""
        from metaprune.bench import bench_train

        result = bench_train(device=device, epochs=epochs)
        if json_out:
            out.print_json(json.dumps(result))
            return
        table = Table(title=f"bench train ({result['device']}, {result['threads']} threads)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("reference loop samples/s", f"{result['reference_samples_per_s']:,.0f}")
        table.add_row("metaprune K=1 samples/s", f"{result['metaprune_samples_per_s']:,.0f}")
        table.add_row("speedup vs reference (K=1)", f"{result['speedup_vs_reference']:.1f}x")
        for k, v in result["population"].items():
            table.add_row(f"population K={k} network-samples/s", f"{v:,.0f}")
        if "parallel_populations" in result:
            p = result["parallel_populations"]
            table.add_row(
                f"{p['workers']} populations x K={p['k_per_worker']}, 1 thread each", f"{p['samples_per_s']:,.0f}"
            )
        table.add_row("best speedup vs reference", f"{result['best_speedup_vs_reference']:.1f}x")
        table.add_row("GEMM fraction (best)", f"{result['gemm_fraction']:.2f}")
        out.print(table)
