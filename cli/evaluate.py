"""``metaprune evaluate``, ``metaprune report`` and ``metaprune bench evaluate``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from metaprune.config import ScheduleConfig, TrainConfig, default_of

from .common import WORKERS, density, out, positive_int, progress_bar, resumable, warnings_as_lines, workers_for
from .options import DataRootOpt, DatasetOpt, DeviceOpt, JsonOpt, NetworkOpt, config_option


def _display(method, legend: dict[str, str]) -> str:
    """A parsed method as the table prints it: ``learned:models/NAME@ums10`` as ``L:NAME@ums10`` (a narrow
    terminal cut the long spelling of every model to the same ``learned:models…``); ``legend`` collects
    what each ``L:NAME`` stands for, and a second folder of the same name keeps its full spelling."""
    from metaprune.pruning.method import folder_label, learned_name

    def model(model_dir: str) -> str:
        full, label = learned_name(model_dir), folder_label(model_dir)
        return label if legend.setdefault(label, full) == full else full

    return method.label(model)


def _labeller(rep, legend: dict[str, str]) -> Callable[[str], str]:
    """How the report's method spellings print (``_display``); a spelling it did not parse prints as is."""
    return lambda text: _display(rep.units[text], legend) if text in rep.units else text


def _print_report(rep, title: str) -> None:
    from metaprune.evaluate.report import dense_cells, dynamic_methods, live_cells, table_cells, verdicts

    densities, gap_headers, rows = table_cells(rep)
    live_header, live = live_cells(rep)
    if live_header:
        gap_headers = [*gap_headers, live_header]
        rows = [(method, cells, [*gaps, live.get(method, "")]) for method, cells, gaps in rows]
    table = Table(title=title, title_justify="left")
    table.add_column("method", style="bold", overflow="fold")  # wrapped, not cut: variants differ at the end
    for d in densities:
        table.add_column(f"{d:g}", justify="right")
    for header in gap_headers:
        table.add_column(header, justify="right")
    blanks = [""] * (len(densities) - 1 + len(gap_headers))
    for method, cell in dense_cells(rep):
        table.add_row(f"{method} (density 1)", cell, *blanks)
    legend: dict[str, str] = {}
    label = _labeller(rep, legend)
    dynamic = dynamic_methods(rep)
    for method, cells, gaps in [r for r in rows if r[0] not in dynamic]:
        mark = " (ref)" if method == rep.reference else ""
        table.add_row(label(method) + mark, *cells, *gaps)
    if dynamic:
        table.add_section()
        blank = [""] * (len(densities) + len(gap_headers))
        table.add_row("[italic]dynamic sparse training (not pruning at init):[/]", *blank)
        for method, cells, gaps in [r for r in rows if r[0] in dynamic]:
            table.add_row(label(method), *cells, *gaps)
    out.print(table)
    for line in verdicts(rep, label):
        out.print(line, highlight=False)
    if legend:
        out.print("; ".join(f"{label} = {full}" for label, full in sorted(legend.items())))
    test = "paired t-test" if rep.test == "ttest" else "Wilcoxon signed-rank"
    out.print(
        f"test accuracy (%) at the best-validation checkpoint, mean ± 95 % CI over seeds; * = differs from "
        f"{rep.reference} ({test}, Holm-corrected across methods, p < 0.05)"
        + ("; density 1: the unpruned network, trained beside the tickets" if not rep.dense.empty else "")
    )
    if gap_headers:
        out.print(
            f"gap to C = (method − {rep.reference}) / (C − {rep.reference}) on paired seed means, "
            "[95 % bootstrap interval over seeds; none where C does not reliably beat the reference]"
        )
    _print_at_chance(rep)
    _print_sanity(rep)
    for p in rep.plots:
        out.print(f"plot: {p}")


def _print_at_chance(rep) -> None:
    from metaprune.evaluate.report import at_chance_units
    from metaprune.training import AT_CHANCE_NOTE

    units = at_chance_units(rep)
    if not units:
        return
    label = _labeller(rep, {})

    def seeds_of(seeds: list[int]) -> str:
        return ", ".join(map(str, seeds))

    where = "; ".join(
        f"{label(method) if density < 1 else method} at {density:g} on seed(s) {seeds_of(seeds)}"
        + (f" (a mask with no input→output path on {seeds_of(no_path)})" if no_path else "")
        for method, density, seeds, no_path in units
    )
    out.print(f"[yellow]{AT_CHANCE_NOTE}[/]: {where}", highlight=False)


def _print_sanity(rep) -> None:
    from metaprune.evaluate.report import sanity_cells

    rows = sanity_cells(rep)
    if not rows:
        return
    table = Table(title="sanity checks", title_justify="left")
    for name in ("method", "density", "!shuffle", "!reinit", "verdict"):
        table.add_column(name, justify="left" if name == "method" else "right", overflow="fold")
    label = _labeller(rep, {})
    for method, dens, shuffle, reinit, verdict in rows:
        method = label(method)
        style = {"pass": "green", "fail": "bold red"}.get(verdict, "")
        table.add_row(method, f"{dens:g}", shuffle, reinit, f"[{style}]{verdict}[/]" if style else verdict)
    out.print(table)
    out.print(
        "accuracy points the ablated mask loses against the method (paired mean ± 95 % CI over seeds); "
        "pass = !shuffle loses at least 1 point"
    )


class EvaluationProgress:
    """Drives the progress bar from an evaluation's events: seeds done plus each running seed's projected
    share (its pruning and epochs so far against pruning plus the epochs it needs at least, by early
    stopping's patience), so an ETA shows from a seed's first epochs; the status says what each running
    seed does."""

    def __init__(self, bar, config, target: Path) -> None:
        self.bar, self.config, self.target = bar, config, target
        self.done = 0
        self.share: dict[int, float] = {}
        self.status: dict[int, str] = {}

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self._start(event)
        elif kind == "prune":
            self.status[event["seed"]] = f"{event['seed']}: pruned {event['done']}/{event['total']}"
        elif kind == "epoch":
            self._epoch(event)
        elif kind == "seed_done":
            self.done = event["done"]
            self.share.pop(event["seed"], None)
            self.status.pop(event["seed"], None)
        else:
            return
        status = " · ".join(self.status[s] for s in sorted(self.status))
        self.bar.update(0, completed=self.done + sum(self.share.values()), status=status)

    def _start(self, event: dict) -> None:
        c = self.config
        out.print(
            f"evaluating {len(c.methods)} methods x {len(c.densities)} densities x {len(c.seeds)} seeds "
            f"(reference {c.reference}) into {self.target} ({event['executor']})",
            highlight=False,
            soft_wrap=True,
        )
        if event["units_done"]:
            out.print(f"resuming: {event['units_done']} of {event['units_total']} units done", highlight=False)

    def _epoch(self, event: dict) -> None:
        train = self.config.train
        epoch, prune_s, train_s = event["epoch"], event["prune_seconds"], event["train_seconds"]
        at_least = min(train.epochs, epoch + (train.patience if train.early_stopping else train.epochs - epoch))
        projected = prune_s + train_s / epoch * max(at_least, epoch + 1)
        self.share[event["seed"]] = min(0.95, (prune_s + train_s) / projected)
        self.status[event["seed"]] = (
            f"{event['seed']}: epoch {epoch}, {event['active']} of {event['members']} tickets training"
        )


SparsityOpt = Annotated[
    list[float] | None,
    typer.Option(
        "--sparsity",
        "-s",
        parser=density(),
        help="fraction of prunable weights that REMAIN (density; 0.005 = 0.5 % kept), repeatable "
        "(default 0.005; a preset's own)",
    ),
]
MethodOpt = Annotated[
    list[str] | None,
    typer.Option("--method", "-m", help="method (repeatable), e.g. snip, synflow@ums, mag>synflow~snip, imp"),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        help="thesis experiment: baselines, schedules, stacked, saw, combined, meta; or jackpot: did the "
        "learned scorer beat the best upfront and equal-compute warm-up methods (30 seeds, 0.005 and 0.01); "
        "or warmup-sweep: accuracy vs warm-up length of the equal-cost methods (plot accuracy_vs_warmup.png); "
        "or transfer --family NAME: leave each network of a family out"
    ),
]
CeilingsOpt = Annotated[bool, typer.Option("--ceilings", help="add the iterative references imp and synflow@ims")]
SanityOpt = Annotated[bool, typer.Option("--sanity", help="add the shuffle / reinit / invert variant of each method")]
ReferenceOpt = Annotated[
    str | None, typer.Option(help="method every other is compared with, added if not among them (default synflow@ums)")
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="fitted model directory for --preset jackpot (repeatable; default newest) or warmup-sweep (optional)",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace a results directory of another configuration")]
SeenOpt = Annotated[bool, typer.Option("--allow-seen-seeds", help="allow seeds a learned model was fitted on")]
EpochsOpt = Annotated[int | None, config_option(TrainConfig, "epochs", number=positive_int, note_default=True)]
PatienceOpt = Annotated[int | None, config_option(TrainConfig, "patience", number=positive_int, note_default=True)]
RoundsOpt = Annotated[int | None, config_option(ScheduleConfig, "rounds", number=positive_int, note_default=True)]
LevelsOpt = Annotated[int | None, config_option(ScheduleConfig, "levels", number=positive_int, note_default=True)]


def evaluate_cmd(
    sparsity: SparsityOpt = None,
    method: MethodOpt = None,
    preset: PresetOpt = None,
    seeds: Annotated[str | None, typer.Option(help="evaluation seeds (default 1000-1004)")] = None,
    network: NetworkOpt = "lenet_300_100",
    dataset: DatasetOpt = "mnist5k",
    ceilings: CeilingsOpt = False,
    sanity: SanityOpt = False,
    reference: ReferenceOpt = None,
    model: ModelOpt = None,
    test: Annotated[str, typer.Option(help="ttest (paired t-test) or wilcoxon")] = "ttest",
    out_dir: Annotated[Path | None, typer.Option("--out", help="results directory (default results/…)")] = None,
    force: ForceOpt = False,
    allow_seen_seeds: SeenOpt = False,
    workers: Annotated[
        int | None, typer.Option(parser=WORKERS, help="local worker processes, one seed each (default: one per core)")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address tcp://host:port")] = None,
    epochs: EpochsOpt = None,
    patience: PatienceOpt = None,
    rounds: RoundsOpt = None,
    levels: LevelsOpt = None,
    scope: Annotated[str, config_option(ScheduleConfig, "scope")] = default_of(ScheduleConfig, "scope"),
    dense_training: Annotated[bool, config_option(TrainConfig, "dense_training")] = default_of(
        TrainConfig, "dense_training"
    ),
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    family: FamilyOpt = None,
    member: MemberOpt = None,
    fit_model: FitModelOpt = "lightgbm",
    learned_budget: LearnedBudgetOpt = False,
    datasets_dir: Annotated[str, typer.Option(help="where --preset transfer finds the family's stores")] = "datasets",
) -> None:
    """Prune, train and compare methods at the given densities, with paired statistics."""
    from dataclasses import replace

    from metaprune.evaluate.api import build_config, default_results_dir, evaluate
    from metaprune.evaluate.run import units_committed
    from metaprune.seeds import parse_seeds

    if workers is not None and scheduler:
        raise typer.BadParameter("give --workers or --scheduler, not both")
    if preset == "transfer" or family or member:
        given = {"--sparsity": sparsity, "--method": method, "--model": model, "--scheduler": scheduler,
                 "--epochs": epochs, "--patience": patience, "--rounds": rounds, "--levels": levels}  # fmt: skip
        options = {"fit_model": fit_model, "learned_budget": learned_budget}
        _transfer(preset, family, member, seeds, options, out_dir, datasets_dir, workers, device, data_root, given)
        return
    if learned_budget:
        from metaprune.errors import MetapruneError

        raise MetapruneError("--learned-budget goes with --preset transfer; elsewhere spell learned:DIR#learned")
    overrides = {"epochs": epochs, "patience": patience}
    given = {k: v for k, v in overrides.items() if v is not None}
    train = replace(TrainConfig(), **given, dense_training=dense_training)
    with warnings_as_lines():
        config = build_config(
            network=network, dataset=dataset, methods=tuple(method or ()), densities=tuple(sparsity or ()),
            seeds=parse_seeds(seeds) if seeds else (), preset=preset, ceilings=ceilings, sanity=sanity,
            reference=reference, test=test, train=train, rounds=rounds, levels=levels, scope=scope,
            models=tuple(model or ()),
        )  # fmt: skip
    target = out_dir or default_results_dir(config, preset)

    def committed() -> str:
        done, total = units_committed(config, target)
        return f"{done} of {total} units committed in {target}"

    with resumable(committed), progress_bar("seeds", len(config.seeds)) as bar:
        rep = evaluate(
            config, target, device=device, data_root=data_root, scheduler=scheduler, force=force,
            workers=workers_for(workers, scheduler, len(config.seeds)), allow_seen_seeds=allow_seen_seeds,
            on_event=EvaluationProgress(bar, config, target), preset=preset,
        )  # fmt: skip
    _print_report(rep, f"{config.network} on {config.dataset}: {len(config.seeds)} seeds")
    _print_results_files(target)


def _print_results_files(target: Path) -> None:
    out.print(
        f"results: {target}/results.csv (tidy table), {target}/results.zarr, "
        f"{target}/comparison.csv (the table's statistics)",
        highlight=False,
        soft_wrap=True,
    )


FamilyOpt = Annotated[str | None, typer.Option(help="--preset transfer: the harvested family (harvest --family)")]
MemberOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--member", help="--preset transfer: a member to hold out, e.g. mlp:32/digits (repeatable; default all)"
    ),
]
FitModelOpt = Annotated[str, typer.Option(help="--preset transfer: the regressor of the family recipe's fits")]
LearnedBudgetOpt = Annotated[
    bool,
    typer.Option(
        help="--preset transfer: also evaluate the family model with the per-layer budget it fitted across the "
        "family (learned:DIR#learned)"
    ),
]


def _transfer(preset, family, member, seeds, options, out_dir, datasets_dir, workers, device, data_root, given):
    """``--preset transfer``: leave each member of a family out (``metaprune.evaluate.transfer``)."""
    from metaprune.errors import MetapruneError
    from metaprune.evaluate.transfer import TRANSFER_SEEDS, TransferConfig, default_fit, run_transfer
    from metaprune.seeds import parse_seeds

    if preset != "transfer":
        flag = "--family" if family else "--member"
        raise MetapruneError(f"{flag} goes with --preset transfer; accepted: --preset transfer --family NAME")
    if not family:
        raise MetapruneError("--preset transfer runs over a harvested family; accepted: --family NAME")
    typed = [flag for flag, value in given.items() if value]
    if typed:
        raise MetapruneError(
            f"{typed[0]} given with --preset transfer, which takes each member's density, the family's training "
            "and levels, and its own methods; drop it"
        )
    from dataclasses import replace

    config = TransferConfig(
        family=family, seeds=parse_seeds(seeds) if seeds else TRANSFER_SEEDS, members=tuple(member or ()),
        fit=replace(default_fit(), model=options["fit_model"]), learned_budget=options["learned_budget"],
    )  # fmt: skip
    config.held_out()  # a bad family or member is named before any work
    target = out_dir or Path("results") / f"transfer-{family}"
    with progress_bar("members", None) as bar:
        rep = run_transfer(
            config, target, datasets_dir=datasets_dir, workers=workers, device=device, data_root=data_root,
            on_event=_transfer_progress(bar),
        )  # fmt: skip
    _print_transfer(rep.table, f"leave one network out: family {family}, {len(config.seeds)} fresh seeds")
    out.print(f"results: {rep.path}; plot: {rep.plot}; each member's evaluation under {target}/", highlight=False)


def _transfer_progress(bar):
    def on_event(event: dict) -> None:
        kind = event.get("event")
        if kind == "member":
            bar.update(0, total=event["members"], completed=event["index"], status=event["member"])
        elif kind == "fit":
            bar.update(0, status=f"fitting {event['model']} on {event['stores']} stores")
        elif kind == "seed_done":
            bar.update(0, status=f"{event['member']}: seed {event['done']}/{event['total']}")

    return on_event


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.2f}"


def _gap(r) -> str:
    if r is None:
        return "-"
    point, lo, hi = (100 * r[k] for k in ("gap_synflow_ims", "gap_synflow_ims_lo", "gap_synflow_ims_hi"))
    return "-" if point != point else f"{point:.0f} % [{lo:.0f}, {hi:.0f}]" if lo == lo else f"{point:.0f} %"


def _paired_cell(r, key: str) -> str:
    return "-" if r is None or r[key] != r[key] else f"{100 * r[key]:+.2f} ± {100 * r[f'{key}_ci95']:.2f}"


def _transfer_cells(block, budget_role: str | None) -> list[str]:
    """One member's row of the transfer table (with the family model's ``#learned`` columns when given)."""
    by = {r["role"]: r for _, r in block.iterrows()}
    fam, own = by.get("family"), by.get("own")
    acc = {role: _pct(r["acc"]) for role, r in by.items()}
    first = block.iloc[0]
    budget_cells = [acc.get(budget_role, "-"), _gap(by.get(budget_role))] if budget_role else []
    return [
        f"{first['density']:g}", _pct(first["dense_acc"]), acc.get("synflow@ums", "-"), acc.get("family", "-"),
        _paired_cell(fam, "diff"), _gap(fam), *budget_cells, acc.get("own", "-"), _gap(own),
        _paired_cell(fam, "vs_own") if own is not None else "-", acc.get("target", "-"), acc.get("imp", "-"),
    ]  # fmt: skip


def _print_transfer(table, title: str) -> None:
    from metaprune.evaluate.transfer import LEARNED_BUDGET

    t = Table(title=title, title_justify="left")
    budget = LEARNED_BUDGET if "role" in table and (table["role"] == LEARNED_BUDGET).any() else None
    columns = ["member", "density", "dense", "ums", "family", "Δ ums", "gap", "own", "own gap", "fam − own", "ims"]
    if budget:
        columns[7:7] = ["fam #learned", "gap #learned"]
    for col in (*columns, "imp"):
        t.add_column(col, justify="left" if col == "member" else "right", overflow="fold")
    for label, block in table.groupby("member", sort=False):
        t.add_row(label, *_transfer_cells(block, budget))
    out.print(t)
    out.print(
        "test accuracy (%), mean over seeds: dense, synflow@ums (ums), the family model fitted without the member "
        "(family; fam #learned: with its learned per-layer budget), the member's own-harvest model (own), "
        "synflow@ims (ims), imp; Δ ums and fam − own: paired mean "
        "± 95 % CI; gap = (model − ums) / (ims − ums) [95 % bootstrap interval over seeds]",
        highlight=False,
    )


def report_cmd(
    results: Annotated[Path, typer.Argument(help="a results directory written by `metaprune evaluate`")],
    reference: Annotated[str | None, typer.Option(help="compare against this method instead")] = None,
    test: Annotated[
        str | None, typer.Option(help="ttest or wilcoxon (default: the evaluation's own, ttest unless it chose)")
    ] = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots into the results directory")] = True,
) -> None:
    """Re-print an evaluation's table and write its plots."""
    from metaprune.evaluate.api import report
    from metaprune.evaluate.report import seeds_held
    from metaprune.evaluate.results import ResultsDir

    rep = report(results, reference, test, plots)
    held, planned = seeds_held(ResultsDir(results))
    _print_report(rep, f"{results}: {held} of {planned} planned seeds complete")
    out.print(f"comparison: {results}/comparison.csv", highlight=False)


def bench_evaluate_cmd(
    preset: Annotated[str | None, typer.Option(help="time a preset instead of the quick-start")] = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Wall time and tickets/minute of the quick-start evaluation (or --preset baselines)."""
    from metaprune.bench.evaluate import bench_evaluate

    result = bench_evaluate(preset, device=device)
    if json_out:
        out.print_json(json.dumps(result))
        return
    table = Table(title=f"bench evaluate ({result['preset']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("tickets", "trained_networks", "seconds", "tickets_per_minute", "device"):
        v = result[key]
        table.add_row(key, f"{v:,.1f}" if isinstance(v, float) else str(v))
    out.print(table)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
    app.command("report")(report_cmd)
    bench_app.command("evaluate")(bench_evaluate_cmd)
