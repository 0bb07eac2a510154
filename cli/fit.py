"""``metaprune fit``, ``metaprune models`` and ``metaprune bench fit``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from metaprune.config import default_of, help_of
from metaprune.fit.config import FitConfig as F

from .common import err, non_negative_int, out, positive_float, positive_int, progress_bar, resumable
from .options import JsonOpt, config_option

THREADS = positive_int("--threads", "1 is fastest on a busy machine")


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def _options(
    pairs: list[str] | None, max_rows: int | None, objective: str | None, epochs: int | None, lr: float | None
) -> dict[str, Any]:
    from metaprune.errors import MetapruneError

    opts: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MetapruneError(f"bad --option {pair!r}; accepted: KEY=VALUE, e.g. --option num_leaves=31")
        opts[key.strip()] = value.strip()
    for key, value in (("max_rows", max_rows), ("objective", objective), ("epochs", epochs), ("lr", lr)):
        if value is not None:
            opts[key] = value
    return opts


def _stage_progress(bar):
    """A ``(stage, done, total)`` progress callback that drives the bar."""

    def progress(stage: str, done: int, total: int) -> None:
        bar.update(bar.task_ids[0], description=stage, completed=done, total=total)

    return progress


def _grid(pairs: list[str] | None) -> dict[str, tuple[str, ...]]:
    from metaprune.errors import MetapruneError

    out: dict[str, tuple[str, ...]] = {}
    for pair in pairs or []:
        key, sep, values = pair.partition("=")
        if not sep or not key.strip():
            raise MetapruneError(f"bad --grid {pair!r}; accepted: KEY=V1,V2,..., e.g. --grid num_leaves=15,63")
        out[key.strip()] = tuple(v.strip() for v in values.split(",") if v.strip())
    return out


def metrics_table(meta: dict[str, Any], title: str) -> Table:
    m = meta["metrics"]
    test = m["test"]
    table = Table(title=title, title_justify="left")
    table.add_column("scorer", style="bold")
    for col in ("R² test", "MSE test", "Jaccard top-k", "Spearman"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{meta['model']} (fitted)",
        _num(test["r2"]),
        _num(test["mse"], "{:.3g}"),
        _num(test.get("jaccard")),
        _num(test.get("spearman")),
    )
    for name, ref in m.get("reference", {}).items():
        table.add_row(name, "—", "—", _num(ref.get("jaccard")), _num(ref.get("spearman")), style="dim")
    if "sibling" in m:  # the target's noise ceiling: how far its own mask is reproducible
        sibling = m["sibling"]
        table.add_row(
            f"target's sibling, seeds {_seeds(sibling['seeds'])} (noise ceiling)",
            "—", "—", _num(sibling["jaccard"]), "—", style="italic",
        )  # fmt: skip
    return table


RecipeOpt = Annotated[
    str,
    typer.Option(
        help="starting point of every option not given: multishot (the defaults: trajectory states, the static "
        "features, one UMS round per level of the target: @ums10 on the default harvest) or thesis (the thesis's "
        "single-shot model: dense θ0, the score features, one shot)"
    ),
]


OptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="model option KEY=VALUE (repeat), e.g. num_leaves=31; a wrong key lists them"),
]
MaxRowsOpt = Annotated[
    int | None,
    typer.Option(
        parser=positive_int("--max-rows"), help="row subsample cap for tree/forest (1,000,000) and lightgbm (2,000,000)"
    ),
]
ObjectiveOpt = Annotated[
    str | None, typer.Option(help="lightgbm objective: regression (default), cross_entropy, binary or lambdarank")
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(parser=positive_int("--epochs"), help="passes over the training seeds (sgd 3, mlp: its default)"),
]


def fit_cmd(
    ctx: Annotated[typer.Context, "which options were typed (--family changes the recipe's default)"],
    model: Annotated[str | None, config_option(F, "model", "--model", "-m", note_default=True)] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="harvest store(s) of one feature set (repeat); default: newest in datasets/"),
    ] = None,
    recipe: RecipeOpt = "multishot",
    family: Annotated[
        str | None,
        typer.Option(
            "--family",
            help="fit on every store of a harvested family (harvest --family) under --datasets-dir, and any "
            "--data store beside them, with the family recipe unless --recipe is typed",
        ),
    ] = None,
    target: Annotated[str | None, config_option(F, "target", note_default=True)] = None,
    features: Annotated[str | None, config_option(F, "features", note_default=True)] = None,
    preprocess: Annotated[str | None, config_option(F, "preprocess", note_default=True)] = None,
    train_seeds: Annotated[str | None, config_option(F, "train_seeds")] = None,
    test_seeds: Annotated[str | None, config_option(F, "test_seeds")] = None,
    cv: Annotated[
        int | None,
        config_option(F, "cv", number=lambda d: non_negative_int(d, "0: none, K >= 2: K folds"), note_default=True),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="model folder name (default <model>-<target>-<features>-<store hash>)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing model of the same name")] = False,
    option: OptionOpt = None,
    max_rows: MaxRowsOpt = None,
    objective: ObjectiveOpt = None,
    states: Annotated[str | None, config_option(F, "states", note_default=True)] = None,
    sample_weight: Annotated[str | None, config_option(F, "sample_weight", note_default=True)] = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", help=help_of(F, "grid"))] = None,
    epochs: EpochsOpt = None,
    lr: Annotated[float | None, typer.Option(parser=positive_float("--lr"), help="mlp learning rate")] = None,
    device: Annotated[str | None, typer.Option(help="mlp device: auto, cpu, cuda, cuda:N")] = None,
    seed: Annotated[int | None, config_option(F, "seed", number=non_negative_int, note_default=True)] = None,
    threads: Annotated[int | None, config_option(F, "threads", number=lambda _: THREADS, note_default=True)] = None,
    use: Annotated[str | None, config_option(F, "use")] = None,
    target_method: Annotated[str | None, config_option(F, "target_method")] = None,
    models_dir: Annotated[str, typer.Option(help="where models are saved")] = "models",
    datasets_dir: Annotated[str, typer.Option(help="where the default store is looked for")] = "datasets",
    json_out: Annotated[bool, typer.Option("--json", help="print the model's meta.json instead of tables")] = False,
) -> None:
    """Fit a scorer on harvested features; report held-out R², MSE, top-k Jaccard and Spearman vs base scores."""
    from metaprune.fit.core import fit_model
    from metaprune.fit.stores import resolve_stores

    opts = _options(option, max_rows, objective, epochs, lr)
    if device is not None:
        opts["device"] = device
    given = {
        "model": model, "target": target, "features": features, "preprocess": preprocess,
        "train_seeds": train_seeds, "test_seeds": test_seeds, "cv": cv, "seed": seed, "threads": threads,
        "states": states, "sample_weight": sample_weight, "use": use, "target_method": target_method,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    if opts:
        given["options"] = opts
    if grid:
        given["grid"] = _grid(grid)
    recipe = "family" if family and not _typed(ctx, "recipe") else recipe
    config = F.for_recipe(recipe, **given).validate()  # a bad option is named before any store is opened
    stores, picked = resolve_stores(_family_data(family, data, datasets_dir) if family else data, datasets_dir)
    if picked:
        err.print(f"using store {stores[0]} (the newest with complete seeds)", highlight=False, soft_wrap=True)
    nothing = "no model saved (a model folder appears only once its fit is complete)"
    with resumable(lambda: nothing), progress_bar(f"fit {config.model}", None) as bar:
        res = fit_model(
            stores, config, name=name, models_dir=models_dir, datasets_dir=datasets_dir, force=force,
            progress=_stage_progress(bar),
        )  # fmt: skip
    if json_out:
        out.print_json(json.dumps(res.meta, allow_nan=True))
        return
    _print_fit(res)


def _family_data(family: str, data: list[str] | None, datasets_dir: str) -> list[str]:
    """The stores of ``--family``, then the ``--data`` stores given beside them (e.g. a bigger harvest of one
    member's network); a store given twice is refused."""
    from metaprune.errors import MetapruneError
    from metaprune.harvest.family import family_stores

    members = [str(p) for p in family_stores(family, datasets_dir)]
    known = {Path(p).resolve() for p in members}
    for extra in data or ():
        if Path(extra).resolve() in known:
            raise MetapruneError(
                f"--data {extra} is already a store of family {family}; accepted: stores beside the family's"
            )
    return members + list(data or ())


def _typed(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # by name: Typer ships its own copy of click's ParameterSource
    return source is not None and source.name == "COMMANDLINE"


def _print_fit(res) -> None:
    meta = res.meta
    title = (
        f"{res.name}: {meta['model']} on {len(meta['features'])} features, target {meta['target']}"
        f"{' of ' + meta['target_method']['method'] if meta.get('target_method') else ''}, "
        f"held-out seeds {_seeds(meta['test_seeds'])}"
    )
    out.print(metrics_table(meta, title))
    m = meta["metrics"]
    info = Table(show_header=False, box=None)
    info.add_row("train R² / MSE", f"{_num(m['train']['r2'])} / {_num(m['train']['mse'], '{:.3g}')}")
    info.add_row("train seeds", _seeds(meta["train_seeds"]))
    info.add_row(
        "fit",
        f"{m['fit']['seconds']:.1f} s, {m['fit']['rows_used']:,} rows used of {m['fit']['rows']:,}, "
        f"{m['fit']['rows_per_s']:,.0f} rows/s",
    )
    for key, value in _metric_rows(meta):
        info.add_row(key, value)
    info.add_row("saved", str(res.path))
    out.print(info)


def _metric_rows(meta: dict) -> list[tuple[str, str]]:
    """Cross-validation, next-level overlap and grid rows of a fit's summary, where it has them."""
    m, rows = meta["metrics"], []
    if "cv" in m:
        cvm = m["cv"]
        rows.append((
            f"cv ({cvm['k']} folds by seed)",
            f"R² {cvm['r2']:.4f}±{cvm['r2_std']:.4f}, Jaccard {cvm['jaccard']:.4f}±{cvm['jaccard_std']:.4f}, "
            f"Spearman {cvm['spearman']:.4f}±{cvm['spearman_std']:.4f}",
        ))  # fmt: skip
    if "next_level" in m["test"]:
        nl = m["test"]["next_level"]
        per_state = ", ".join(f"{k}: {v:.3f}" for k, v in nl["per_state"].items())
        rows.append(("next-level Jaccard (held out)", f"{nl['jaccard']:.4f} mean over states; per state {per_state}"))
    if "grid" in m:
        for i, row in enumerate(m["grid"]["candidates"]):
            varied = {k: row["options"].get(k) for k in meta.get("grid", {})}
            mark = " (chosen)" if i == m["grid"]["chosen"] else ""
            rows.append((
                f"grid {', '.join(f'{k}={v}' for k, v in varied.items())}{mark}",
                f"cv Jaccard {row['jaccard']:.4f}±{row['jaccard_std']:.4f}, R² {row['r2']:.4f}",
            ))  # fmt: skip
    return rows


def models_cmd(
    models_dir: Annotated[str, typer.Option(help="folder of saved models")] = "models",
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List saved models with their held-out metrics."""
    from metaprune.fit.persist import list_models

    rows = list_models(models_dir)
    if json_out:
        out.print_json(json.dumps(rows, allow_nan=True))
        return
    if not rows:
        out.print(f"no models under {models_dir}/ (fit one with `metaprune fit`)")
        return
    cells = [_model_cells(r) for r in rows]
    if out.width < MODELS_TABLE_WIDTH:  # 13 columns do not fit: one key/value block per model
        for r, row in zip(rows, cells, strict=True):
            block = Table(title=r["name"], title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 1))
            for key, value in zip(MODEL_COLUMNS[1:], row[1:], strict=True):
                block.add_row(key, value)
            out.print(block)
        return
    table = Table(title=f"models in {models_dir}/", title_justify="left")
    for i, col in enumerate(MODEL_COLUMNS):
        table.add_column(col, justify="right" if i >= 9 else "left")
    for row in cells:
        table.add_row(*row)
    out.print(table)


MODELS_TABLE_WIDTH = 160  # characters the 13-column table needs to stay readable
MODEL_COLUMNS = (
    "name",
    "model",
    "target",
    "features",
    "prep",
    "states",
    "use",
    "network",
    "test seeds",
    "R²",
    "Jaccard",
    "Spearman",
    "best base score (Jaccard)",
)


def _model_cells(r: dict) -> list[str]:
    if "error" in r:
        return [r["name"], f"[red]unreadable: {r['error']}[/]", *[""] * (len(MODEL_COLUMNS) - 2)]
    best = r["best_reference"]
    return [
        r["name"],
        str(r["model"]) + (f" ({r['objective']})" if r["objective"] else ""),
        str(r["target"]),
        f"{r['features']} ({r['n_features']})",
        str(r["preprocess"]),
        str(r["states"]),
        r["use"],
        str(r["network"]),
        _seeds(r["test_seeds"] or []),
        _num(r["r2"]),
        _num(r["jaccard"]),
        _num(r["spearman"]),
        f"{best} {_num(r['best_reference_jaccard'])}" if best else "—",
    ]


def bench_fit_cmd(
    data: Annotated[str | None, typer.Option("--data", help="store (default: newest in datasets/)")] = None,
    models: Annotated[str, typer.Option(help="models, comma-separated (default: all six)")] = "",
    features: Annotated[str, typer.Option(help="features (as for fit)")] = "all",
    target: Annotated[str, typer.Option(help="target (as for fit)")] = "round",
    train_seeds: Annotated[str | None, typer.Option(help="training seeds (default: all but the last quarter)")] = None,
    test_seeds: Annotated[str | None, typer.Option(help="held-out seeds")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="MODEL:KEY=VALUE (repeat), e.g. mlp:epochs=1"),
    ] = None,
    threads: Annotated[int, config_option(F, "threads", number=lambda _: THREADS)] = default_of(F, "threads"),
    datasets_dir: Annotated[str, typer.Option(help="where the default store is looked for")] = "datasets",
    json_out: JsonOpt = False,
) -> None:
    """Rows/s and peak RSS of every model, each fitted in a fresh process (nothing is saved)."""
    from metaprune.bench.fit import bench_fit, model_options

    names = [m.strip() for m in models.split(",") if m.strip()] or None
    per_model = model_options(option or ())
    with progress_bar("bench fit", None) as bar:
        result = bench_fit(
            data,
            names,
            datasets_dir=datasets_dir,
            features=features,
            target=target,
            train_seeds=train_seeds,
            test_seeds=test_seeds,
            options=per_model,
            threads=threads,
            progress=_stage_progress(bar),
        )
    if json_out:
        out.print_json(json.dumps(result, allow_nan=True))
        return
    table = Table(
        title=f"bench fit: {result['store']} ({result['network']} on {result['dataset']}, "
        f"{result['weights_per_seed']:,} weights/seed, {result['threads']} thread(s) of {result['cpus']} CPUs)",
        title_justify="left",
    )
    for col in ("model", "train seeds", "rows used", "fit s", "rows/s", "peak RSS MB", "baseline MB", "R²"):
        table.add_column(col, justify="right")
    table.add_column("Jaccard", justify="right")
    for r in result["results"]:
        table.add_row(
            r["model"],
            str(r["train_seeds"]),
            f"{r['rows_used']:,}",
            f"{r['fit_seconds']:.1f}",
            f"{r['rows_per_s']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['baseline_rss_mb']:,.0f}",
            _num(r["test_r2"]),
            _num(r["test_jaccard"]),
        )
    out.print(table)
    for c in result["checks"]:
        mark = "[green]ok[/]" if c["ok"] else "[red]MISSED[/]"
        out.print(f"{mark} {c['model']}: {c['target']} — measured {c['value']:,.1f} ({c['seeds']} train seeds)")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("fit")(fit_cmd)
    app.command("models")(models_cmd)
    bench_app.command("fit")(bench_fit_cmd)


def _seeds(seeds: list[int]) -> str:
    from metaprune.seeds import format_seeds

    return format_seeds(seeds) or "—"
