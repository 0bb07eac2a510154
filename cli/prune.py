"""``metaprune prune`` (one ticket, its mask report, optionally saved) and ``metaprune bench prune``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from metaprune.config import PER_CLASS, ScheduleConfig, TrainConfig, default_of
from metaprune.pruning.method import GRAMMAR_HELP, SHORT_HELP

from .common import density, non_negative_int, out, positive_int, progress_bar
from .options import DataRootOpt, DatasetOpt, DeviceOpt, JsonOpt, NetworkOpt, config_option
from .train import preset_override, training_options

S = ScheduleConfig

PRUNE_HELP = (
    "Prune a network at initialisation with one method and print the mask report per layer: kept "
    "weights, effective weights (on some input->output path), dead units and collapsed layers.\n\n"
    f"{escape(GRAMMAR_HELP)}.\n\n"
    "More examples: synflow@ims (iterative: train, prune, rewind; --levels, --epochs), snip~bimodal, "
    "snip!shuffle, grasp_abs, random.\n\n"
    "--sparsity is the fraction of prunable weights that REMAIN (density), as in the thesis: "
    "--sparsity 0.01 keeps 1 % of the weights."
)


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def _print_report(result) -> None:
    from metaprune.networks import prunable_layout

    report = result.ticket.report
    shapes = {layer.name: layer.shape for layer in prunable_layout(result.ticket.net).layers}
    title = (
        f"{result.method.canonical()} on {result.network} / {result.dataset}, seed {result.seed}, "
        f"density {result.density:g} ({result.schedule.scope})"
    )
    table = Table(title=title, show_footer=True)
    table.add_column("layer", "total", style="bold")
    table.add_column("shape", "")
    table.add_column("weights", f"{report.total:,}", justify="right")
    table.add_column("kept", f"{report.kept:,}", justify="right")
    table.add_column("kept %", _pct(report.density), justify="right")
    table.add_column("effective", f"{report.effective:,}", justify="right")
    table.add_column("dead in", str(sum(r.dead_in for r in report.layers)), justify="right")
    table.add_column("dead out", str(sum(r.dead_out for r in report.layers)), justify="right")
    table.add_column("live", str(sum(r.live for r in report.layers)), justify="right")
    table.add_column("collapsed", str(len(report.collapsed_layers)), justify="right")
    for r in report.layers:
        table.add_row(
            r.name,
            "x".join(str(s) for s in shapes[r.name]),
            f"{r.total:,}",
            f"{r.kept:,}",
            _pct(r.kept / r.total),
            f"{r.effective:,}",
            f"{r.dead_in}/{r.units}",
            f"{r.dead_out}/{r.units}",
            f"{r.live}/{r.units}",
            "[bold red]yes[/]" if r.collapsed else "no",
        )
    _print_wide(table)
    collapsed = ", ".join(report.collapsed_layers) or "none"
    out.print(
        f"density {report.density:.6g} ({report.kept:,} of {report.total:,} kept), "
        f"effective density {report.effective_density:.6g}, collapsed layers: {collapsed}, "
        f"{result.prune_seconds:.2f} s pruning ({result.seconds:.2f} s in all, {result.device})",
        highlight=False,
        soft_wrap=True,
    )


def _print_wide(table: Table) -> None:
    """In a terminal, fit the terminal; in a pipe or a log, print at the table's natural width (no folding)."""
    from rich.console import Console
    from rich.measure import Measurement

    if out.is_terminal:
        out.print(table)
        return
    natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
    Console(file=out.file, width=max(out.width, natural), no_color=out.no_color).print(table)


def prune_cmd(
    network: NetworkOpt = "lenet_300_100",
    dataset: DatasetOpt = "mnist5k",
    method: Annotated[str, typer.Option("--method", "-m", help=escape(SHORT_HELP))] = "snip",
    sparsity: Annotated[
        float,
        typer.Option(
            "--sparsity",
            "-s",
            parser=density(),
            help="fraction of prunable weights that REMAIN (the density, as in the thesis): "
            "0.01 keeps 1 %; accepted: 0 < sparsity <= 1",
        ),
    ] = 0.01,
    seed: Annotated[
        int,
        typer.Option("--seed", parser=non_negative_int("--seed"), help="master seed: θ0, pruning batch, tie-breaking"),
    ] = 0,
    scope: Annotated[str, config_option(S, "scope")] = default_of(S, "scope"),
    rounds: Annotated[int, config_option(S, "rounds", number=positive_int)] = default_of(S, "rounds"),
    levels: Annotated[int, config_option(S, "levels", number=positive_int)] = default_of(S, "levels"),
    preset: Annotated[
        str, typer.Option("--preset", help="training preset of iterative schedules: thesis or openlth")
    ] = "thesis",
    epochs: Annotated[int | None, preset_override("epochs", positive_int, " per level")] = None,
    dense_training: Annotated[bool, config_option(TrainConfig, "dense_training")] = default_of(
        TrainConfig, "dense_training"
    ),
    per_class: Annotated[
        int,
        typer.Option(
            "--per-class",
            parser=non_negative_int("--per-class", "0: no pruning batch"),
            help="pruning batch: examples per class (0: none, data-free scorers only)",
        ),
    ] = PER_CLASS,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    out_file: Annotated[
        str | None,
        typer.Option("--out", "-o", help="write the mask and initial weights to FILE.safetensors"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    from dataclasses import replace

    from metaprune.prune import check_ticket_path, prune_network, save_ticket

    cfg = replace(training_options(preset, epochs, None, None, None), dense_training=dense_training)
    if out_file:
        check_ticket_path(out_file)  # before the work, not after it
    with progress_bar("pruning", None) as bar:

        def progress(step: int, steps: int) -> None:
            bar.update(0, completed=step, total=steps, status=f"{step}/{steps}")

        result = prune_network(
            network,
            dataset,
            method,
            sparsity,
            seed,
            scope=scope,
            rounds=rounds,
            levels=levels,
            train=cfg,
            per_class=per_class,
            device=device,
            data_root=data_root,
            progress=progress,
        )
    saved = save_ticket(result, out_file) if out_file else None
    if json_out:
        payload = result.to_dict()
        payload["out"] = str(saved) if saved else None
        out.print_json(json.dumps(payload))
        return
    _print_report(result)
    if saved:
        out.print(f"wrote {saved}", highlight=False)


def bench_prune_cmd(
    json_out: JsonOpt = False,
    repeats: Annotated[
        int, typer.Option(parser=positive_int("--repeats"), help="timed repeats per item (the median is reported)")
    ] = 5,
    model: Annotated[
        str | None, typer.Option(help="a fitted model directory: also time learned:MODEL@ums, 20 rounds")
    ] = None,
) -> None:
    """Seconds of SNIP, GraSP, SynFlow (1 and 100 rounds) and exact top-k on LeNet-300-100, one CPU thread,
    next to the planning targets x 1.5."""
    from metaprune.bench.prune import bench_prune_report

    result = bench_prune_report(repeats, model)
    if json_out:
        out.print_json(json.dumps(result))
        return
    table = Table(title=f"bench prune (LeNet-300-100, {result['threads']} CPU thread, median of {repeats})")
    table.add_column("item")
    table.add_column("seconds", justify="right")
    table.add_column("target (plan x 1.5)", justify="right")
    table.add_column("pass", justify="center")
    for item in result["items"]:
        target = item["target_s"]
        passed = item["passed"]
        table.add_row(
            item["label"],
            f"{item['seconds']:.4f}",
            "—" if target is None else f"{target:.3f}",
            "—" if passed is None else ("[green]pass[/]" if passed else "[bold red]FAIL[/]"),
        )
    _print_wide(table)
    if "learned_predictor" in result:
        out.print(f"the learned scorer predicts with: {result['learned_predictor']}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("prune", help=PRUNE_HELP)(prune_cmd)
    bench_app.command("prune")(bench_prune_cmd)
