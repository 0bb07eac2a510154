"""Report an evaluation: the methods × densities table (thesis fig. 5.14) and PNG plots.

The table's statistics also go to ``comparison.csv`` beside ``results.csv``; the plots are drawn by
``metaprune.evaluate.plots``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from metaprune.errors import StoreError
from metaprune.evaluate.config import CEILINGS, EvaluateConfig, planned_units
from metaprune.evaluate.results import ResultsDir, unit_name
from metaprune.evaluate.stats import compare
from metaprune.fit.learned import with_intended_use
from metaprune.pruning.method import DenseUnit, Method, Unit, parse_method, parse_units

BOOT_SEED = 0  # the gap-closure bootstrap's seed: a report is reproducible


@dataclass
class Report:
    rows: pd.DataFrame  # the tidy table
    comparison: pd.DataFrame  # stats.compare output for the pruned methods
    dense: pd.DataFrame  # dense reference rows
    reference: str
    test: str
    plots: list[Path]
    units: dict[str, Unit] = field(default_factory=dict)  # each spelling of the ``method`` columns, parsed

    def __post_init__(self) -> None:
        # spellings the caller did not parse (a report made by hand) are parsed here, once
        texts = [t for frame in (self.rows, self.comparison) if "method" in frame for t in frame["method"]]
        missing = [t for t in dict.fromkeys(texts) if t not in self.units]
        if missing:
            self.units.update(parse_units(missing))


def build_report(results: ResultsDir, reference: str | Method | None = None, test: str | None = None) -> Report:
    """The table of a results directory; its ``method`` column is parsed here, once."""
    config = results.config()
    df = results.consolidate()
    if df.empty:
        raise StoreError(f"{results.path} holds no committed results yet; accepted: run `metaprune evaluate` first")
    reference = reference or config.get("reference", "snip@uss")
    # a learned reference spelled bare prunes as its card says, as it did when it was evaluated
    reference = str(with_intended_use(reference if isinstance(reference, Method) else parse_method(reference)))
    test = test or config.get("test", "ttest")
    units = parse_units(df["method"])
    is_dense = df["method"].map(lambda text: isinstance(units[text], DenseUnit)).astype(bool)
    dense, pruned = df[is_dense], df[~is_dense]
    if not pruned.empty and reference not in set(pruned["method"]):
        raise StoreError(
            f"reference {reference} was not evaluated in {results.path}; accepted: one of its methods, e.g. "
            f"{', '.join(sorted(set(pruned['method']))[:4])}"
        )
    comparison = (
        compare(pruned, reference, test, boot_seed=BOOT_SEED, methods=units) if not pruned.empty else pd.DataFrame()
    )
    report = Report(df, comparison, dense, reference, test, [], units)
    write_comparison(report, results)
    return report


def write_comparison(report: Report, results: ResultsDir) -> Path | None:
    """``comparison.csv`` beside ``results.csv``: one row per (density, method), as ``stats.compare``."""
    if report.comparison.empty:
        return None
    path = results.path / "comparison.csv"
    tmp = results.path / ".comparison.csv.tmp"
    report.comparison.assign(reference=report.reference, test=report.test).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _pct(x: float, digits: int = 2) -> str:
    return "" if math.isnan(x) else f"{100 * x:.{digits}f}"


def _gap_cell(row: pd.Series, stem: str) -> str:
    point = row.get(stem, math.nan)
    if pd.isna(point):
        return ""
    lo, hi = row[f"{stem}_lo"], row[f"{stem}_hi"]
    interval = "" if pd.isna(lo) else f" [{100 * lo:.0f}, {100 * hi:.0f}]"
    return f"{100 * point:.0f} %{interval}"


def gap_stems(report: Report) -> list[tuple[str, str]]:
    """(column stem, ceiling name) for each ceiling the comparison has gap columns for."""
    return [(c.stem, c.name) for c in CEILINGS if c.stem in report.comparison.columns]


def table_cells(report: Report) -> tuple[list[float], list[str], list[tuple[str, list[str], list[str]]]]:
    """(densities, gap headers, rows) of the methods × densities table, best first at the lowest density.

    A row is (method, cells, gaps): each cell 'mean ± ci' in %, '*' if it differs significantly from
    the reference; gaps are the gap closure towards each ceiling at the lowest density, '% [lo, hi]'.
    """
    comp = report.comparison
    if comp.empty:
        return [], [], []
    densities = sorted(comp["density"].unique())
    lowest = densities[0]
    order = comp[comp["density"] == lowest].sort_values("mean", ascending=False)["method"].tolist()
    order += [m for m in comp["method"].unique() if m not in order]
    stems = gap_stems(report)
    headers = [f"gap to {name} @{lowest:g}" for _, name in stems]
    by_key = {(r["method"], r["density"]): r for _, r in comp.iterrows()}
    rows = []
    for method in order:
        cells = []
        for d in densities:
            r = by_key.get((method, d))
            ci = "" if r is None or math.isnan(r["ci95"]) else f" ± {_pct(r['ci95'])}"
            cells.append("" if r is None else f"{_pct(r['mean'])}{ci}{'*' if r['significant'] else ''}")
        low = by_key.get((method, lowest))
        rows.append((method, cells, [_gap_cell(low, stem) if low is not None else "" for stem, _ in stems]))
    return densities, headers, rows


def dynamic_methods(report: Report) -> set[str]:
    """The methods whose rows are dynamic sparse training (RigL), not pruning at init: their own section."""
    rows = report.rows
    if rows.empty or "dynamic_sparse" not in rows.columns:
        return set()
    return set(rows.loc[rows["dynamic_sparse"].fillna(False).astype(bool), "method"])


def live_cells(report: Report) -> tuple[str, dict[str, str]]:
    """(header, {method: cell}) of the live units of each method's tickets at the lowest density: per hidden
    layer (every prunable layer but the last), the mean over seeds of its units with at least one kept
    incoming and one kept outgoing weight, e.g. '17/57' -- which methods starve a layer. Empty without them."""
    rows = report.rows
    if rows.empty or "live_l0" not in rows.columns or report.comparison.empty:
        return "", {}
    lowest = min(report.comparison["density"])
    layers = sorted(
        (c for c in rows.columns if c.startswith("live_l") and rows[c].notna().any()), key=lambda c: int(c[6:])
    )[:-1]
    if not layers:
        return "", {}
    block = rows[rows["density"] == lowest].groupby("method")[layers].mean()
    cells = {m: "/".join(f"{v:.0f}" for v in r) for m, r in block.iterrows()}
    return f"live units @{lowest:g}", cells


def sanity_cells(report: Report) -> list[tuple[str, float, str, str, str]]:
    """(method, density, shuffle loss, reinit loss, verdict) for each method with an evaluated ablation.

    Losses are the paired mean (± 95 % CI) in points of the ablation against the method; the verdict
    is 'pass' when the shuffled mask loses at least one point."""
    comp = report.comparison
    if comp.empty or not {"shuffle_loss", "reinit_loss"} & set(comp.columns):
        return []
    out = []
    for _, r in comp.sort_values(["density", "method"]).iterrows():
        losses = [_loss_cell(r, a) for a in ("shuffle", "reinit")]
        if any(losses):
            verdict = r.get("sanity")
            out.append((r["method"], r["density"], *losses, verdict if isinstance(verdict, str) else ""))
    return out


def _loss_cell(row: pd.Series, ablation: str) -> str:
    loss = row.get(f"{ablation}_loss", math.nan)
    if pd.isna(loss):
        return ""
    half = row[f"{ablation}_loss_ci95"]
    return f"{100 * loss:.2f}" + ("" if pd.isna(half) else f" ± {100 * half:.2f}")


def dense_cells(report: Report) -> list[tuple[str, str]]:
    """(method, 'mean ± 95 % CI') of each dense row in %, like the tickets' cells."""
    from metaprune.evaluate.stats import mean_ci

    rows = []
    for method, block in report.dense.groupby("method"):
        mean, half = mean_ci(block["test_acc"].to_numpy(dtype=float))
        rows.append((method, _pct(mean) + ("" if math.isnan(half) else f" ± {_pct(half)}")))
    return rows


def at_chance_units(report: Report) -> list[tuple[str, float, list[int], list[int]]]:
    """(method, density, seeds, of them the seeds whose mask has no input→output path) of every ticket or
    dense network whose training ended at chance (``MemberResult.at_chance``); dense rows have density 1.
    Results committed before the flag existed have no ``at_chance`` column and report none."""
    rows = report.rows
    if "at_chance" not in rows.columns:
        return []
    hits = rows[rows["at_chance"].fillna(False).astype(bool)]
    no_path = hits["collapsed"].fillna(False).astype(bool) if "collapsed" in hits else False
    hits = hits.assign(no_path=no_path)
    return [
        (method, float(density), sorted(int(s) for s in b["seed"]), sorted(int(s) for s in b["seed"][b["no_path"]]))
        for (method, density), b in hits.groupby(["method", "density"], sort=True)
    ]


def verdicts(report: Report, label: Callable[[str], str] = str) -> list[str]:
    """One sentence per learned method (no ablation) and density: did it beat the reference, by how
    much, with the paired CI, the Holm-corrected p and the seeds it won. ``label`` spells a method (by its
    canonical spelling) as the sentence names it."""
    comp = report.comparison
    if comp.empty or "diff" not in comp.columns:
        return []
    lines = []
    for _, r in comp.sort_values(["density", "mean"], ascending=[True, False]).iterrows():
        method = report.units[r["method"]]
        learned = isinstance(method, Method) and method.learned_models and method.ablation is None
        if not learned or r["method"] == report.reference:
            continue
        if pd.isna(r["diff"]):
            continue
        beat = "beat" if r["diff"] > 0 and r["significant"] else (
            "did not significantly beat" if r["diff"] > 0 else "did not beat"
        )  # fmt: skip
        ci = "" if pd.isna(r["diff_ci95"]) else f" ± {100 * r['diff_ci95']:.2f}"
        lines.append(
            f"at density {r['density']:g}, {label(r['method'])} {beat} {label(report.reference)}: "
            f"{100 * r['diff']:+.2f}{ci} "
            f"points (p = {r['p_holm']:.2g}, Holm-corrected; won {int(r['wins'])} of {int(r['n_pairs'])} seeds)"
        )
    return lines


def seeds_held(results: ResultsDir) -> tuple[int, int]:
    """(seeds whose every planned unit is committed, seeds planned) of a results directory."""
    config = EvaluateConfig.from_dict(results.config())
    units = [unit_name(m, d) for m, d in planned_units(config)]
    seeds = list(config.seeds)
    return sum(all(results.done(s, u) for u in units) for s in seeds), len(seeds)


def write_plots(report: Report, results: ResultsDir) -> list[Path]:
    """Write the PNG plots the data calls for (see ``metaprune.evaluate.plots``) into the results directory."""
    from metaprune.evaluate.plots import Plotter

    report.plots = Plotter(report, results).write_all() if not report.comparison.empty else []
    return report.plots
