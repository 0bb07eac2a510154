"""PNG plots of an evaluation, each shaped by what the data holds.

- one density: methods ranked by mean accuracy, horizontal, with 95 % intervals (a line through a
  single x says nothing); several densities: accuracy vs density on a log axis (thesis 5.1);
- accuracy vs cost in dense-epoch equivalents, one panel per density, when rows carry ``cost_epochs``;
- accuracy vs warm-up length, one line per method family, one panel per density, when the results hold
  two or more warm-up lengths besides 0 (the ``warmup-sweep`` preset);
- the Jaccard similarity of the masks at the lowest density (thesis 5.3);
- the initial weights each method keeps, one panel per prunable layer (thesis 5.2): a pooled histogram
  hides that methods differ in *where* they keep weights as much as in which values.

A method keeps its colour in every plot; the reference is drawn in black.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from metaprune.evaluate.results import ResultsDir, unit_name
from metaprune.pruning.masks import jaccard
from metaprune.pruning.method import DenseUnit, Unit

DPI = 120
DODGE_SPAN = 0.08  # total horizontal spread of the methods at one density, as a fraction of it
KEPT_RANGE = 99.0  # percent of a layer's kept weights inside its histogram's range; the rest in the edge bins
REFERENCE_COLOR = "black"


def short_label(method: Unit, model_names: Mapping[str, str] | None = None) -> str:
    """A method's compact label for axes (``Method.label(compact=True)``): ``learned:models/long-name`` as
    ``L:long-nam`` (or the name ``model_names`` gives the folder), ``magnitude`` as ``mag``,
    ``magnitude@iss`` as ``imp``, the default ``@uss`` dropped."""
    names = model_names or {}

    def model(model_dir: str) -> str:
        name = Path(model_dir).name
        return "L:" + names.get(name, name[:8])

    return method.label(model, compact=True)


def unique_prefixes(names: set[str], least: int = 8) -> dict[str, str]:
    """Each name cut to the shortest prefix (at least ``least`` characters) no other name starts with."""
    out = {}
    for name in names:
        n = least
        while n < len(name) and any(o != name and o.startswith(name[:n]) for o in names):
            n += 1
        out[name] = name[:n]
    return out


def short_labels(methods: Mapping[str, Unit]) -> dict[str, str]:
    """Short labels of methods (by spelling): model folders cut where they still differ (``L:lgb-traj-b``,
    ``L:lgb-traj-r``), and the full spelling where two methods would still share one."""
    models = {Path(d).name for m in methods.values() if not isinstance(m, DenseUnit) for d in m.learned_models}
    names = unique_prefixes(models)
    short = {text: short_label(m, names) for text, m in methods.items()}
    counts = pd.Series(list(short.values())).value_counts()
    return {m: (s if counts[s] == 1 else m) for m, s in short.items()}


def method_colors(methods: list[str], reference: str) -> dict[str, object]:
    import matplotlib

    others = sorted(m for m in methods if m != reference)
    cmap = matplotlib.colormaps["tab10" if len(others) <= 10 else "tab20"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(others)}
    colors[reference] = REFERENCE_COLOR
    return colors


def warmup_series(
    block: pd.DataFrame, units: Mapping[str, Unit]
) -> tuple[dict[str, list[tuple[float, float, float, str]]], dict[str, tuple[float, str]]]:
    """The warm-up plot of one density's comparison rows (``method``, ``mean``, ``ci95`` and ``x``, the
    warm-up length in epochs): each method family (the method without its +w part, compact label) as
    points (x, mean, ci95, method) sorted by x, and each method that trains with no warm-up length (full
    IMP, RigL), labelled ``... (full training)``, as its (mean, method): a level to compare with."""
    lines: dict[str, list[tuple[float, float, float, str]]] = {}
    levels: dict[str, tuple[float, str]] = {}
    for _, r in block.iterrows():
        unit = units[r["method"]]
        if isinstance(unit, DenseUnit):
            continue
        if unit.warmup is None and (unit.trains or unit.dynamic):
            levels[f"{short_label(unit)} (full training)"] = (float(r["mean"]), r["method"])
            continue
        family = short_label(replace(unit, warmup=None, warmup_in_steps=False))
        ci = 0.0 if pd.isna(r["ci95"]) else float(r["ci95"])
        lines.setdefault(family, []).append((float(r["x"]), float(r["mean"]), ci, r["method"]))
    return {f: sorted(points) for f, points in lines.items()}, levels


class Plotter:
    """Writes the plots of one report into its results directory."""

    def __init__(self, report, results: ResultsDir) -> None:
        self.report = report
        self.results = results
        self.comp: pd.DataFrame = report.comparison
        self.rows: pd.DataFrame = report.rows.drop(report.dense.index)
        methods = sorted(self.comp["method"].unique())
        self.labels = short_labels({m: report.units[m] for m in methods})
        self.colors = method_colors(methods, report.reference)

    def write_all(self) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        densities = sorted(self.comp["density"].unique())
        accuracy = self.ranked if len(densities) == 1 else self.accuracy_vs_density
        paths = [accuracy(), self.cost(), self.warmup(), self.jaccard(), self.kept_weights()]
        return [p for p in paths if p is not None]

    # ------------------------------------------------------------------------------------- helpers

    def _save(self, fig, name: str, stale: tuple[str, ...] = ()) -> Path:
        import matplotlib.pyplot as plt

        for old in stale:  # a plot the data no longer calls for (e.g. a density was added)
            (self.results.path / old).unlink(missing_ok=True)
        path = self.results.path / name
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        return path

    def _dense_acc(self) -> float | None:
        dense = self.report.dense
        acc = dense[dense["method"] == str(DenseUnit())]["test_acc"] if not dense.empty else pd.Series(dtype=float)
        return float(100 * acc.mean()) if not acc.empty else None

    def _label(self, method: str, significant: bool = False) -> str:
        ref = " (ref)" if method == self.report.reference else ""
        return f"{self.labels[method]}{'*' if significant else ''}{ref}"

    def _seeds(self) -> int:
        return int(self.rows["seed"].nunique())

    # --------------------------------------------------------------------------------- accuracy

    def ranked(self) -> Path:
        """One density: a horizontal dot plot, best method on top."""
        import matplotlib.pyplot as plt

        block = self.comp.sort_values("mean").reset_index(drop=True)
        density = float(block["density"].iloc[0])
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(block)))
        for y, r in block.iterrows():
            ci = 0.0 if pd.isna(r["ci95"]) else 100 * r["ci95"]
            ax.errorbar(100 * r["mean"], y, xerr=ci, fmt="o", color=self.colors[r["method"]], capsize=3, ms=5)
        ax.set_yticks(
            range(len(block)), [self._label(m, s) for m, s in zip(block["method"], block["significant"], strict=True)]
        )
        for tick, method in zip(ax.get_yticklabels(), block["method"], strict=True):
            if method == self.report.reference:
                tick.set_fontweight("bold")
        dense = self._dense_acc()
        if dense is not None:
            ax.axvline(dense, color="red", linestyle="--", linewidth=1, label=f"dense ({dense:.1f} %)")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel("test accuracy at early stop (%)")
        ax.set_title(
            f"Density {density:g}: mean and 95 % CI over {self._seeds()} seeds\n"
            f"* = differs from {self.labels[self.report.reference]} (Holm-corrected)",
            fontsize=10,
        )
        ax.grid(True, axis="x", alpha=0.3)
        return self._save(fig, "accuracy_ranked.png", stale=("accuracy_vs_density.png",))

    def accuracy_vs_density(self) -> Path:
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        fig, ax = plt.subplots(figsize=(8.5, 5))
        groups = list(self.comp.groupby("method"))
        for k, (method, block) in enumerate(groups):
            block = block.sort_values("density")
            ref = method == self.report.reference
            # dodge the methods along the log axis so that intervals at one density do not overlap, within
            # ±4 % of the density whatever their number (wider, the points read as other densities)
            dodge = 1 + DODGE_SPAN * (k - (len(groups) - 1) / 2) / max(len(groups) - 1, 1)
            ax.errorbar(
                block["density"] * dodge,
                100 * block["mean"],
                yerr=100 * block["ci95"].fillna(0),
                label=self._label(method),
                marker="o",
                capsize=3,
                color=self.colors[method],
                linewidth=2.2 if ref else 1.2,
                zorder=3 if ref else 2,
            )
        dense = self._dense_acc()
        if dense is not None:
            ax.axhline(dense, color="red", linestyle="--", label="dense")
        ax.set_xscale("log")
        densities = sorted(self.comp["density"].unique())
        ax.set_xticks(densities, [f"{d:g}" for d in densities])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("density (fraction of weights kept, log scale)")
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.set_title(f"Accuracy vs density (mean, 95 % CI over {self._seeds()} seeds)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(True, alpha=0.3)
        return self._save(fig, "accuracy_vs_density.png", stale=("accuracy_ranked.png",))

    def cost(self) -> Path | None:
        """Accuracy against pruning + training cost (dense-epoch equivalents), one panel per density."""
        if "cost_epochs" not in self.rows.columns:
            return None
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        cost = self.rows.groupby(["density", "method"])["cost_epochs"].mean()
        densities = sorted(self.comp["density"].unique())
        fig, axes = plt.subplots(1, len(densities), figsize=(6 * len(densities), 4.8), squeeze=False)
        for ax, density in zip(axes[0], densities, strict=True):
            block = self.comp[self.comp["density"] == density]
            free = []
            for _, r in block.iterrows():
                x = cost.get((density, r["method"]), np.nan)
                if not np.isfinite(x) or x <= 0:
                    free += [self.labels[r["method"]]] if np.isfinite(x) else []
                    continue  # no cost recorded (or none spent): nothing to place on a log axis
                ci = 0.0 if pd.isna(r["ci95"]) else 100 * r["ci95"]
                color = self.colors[r["method"]]
                ax.errorbar(x, 100 * r["mean"], yerr=ci, fmt="o", color=color, capsize=3)
                ax.annotate(
                    self.labels[r["method"]],
                    (x, 100 * r["mean"]),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
            self._dense_cost_point(ax)
            ax.set_xscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}")  # 3 and 30, not 3×10⁰
            ax.xaxis.set_major_formatter(plain)
            lo, hi = ax.get_xlim()
            # minor labels only where the axis spans little more than a decade: across several they collide
            narrow = np.log10(hi / lo) <= 1.5
            ax.xaxis.set_minor_formatter(plain if narrow else matplotlib.ticker.NullFormatter())
            ax.tick_params(axis="x", which="minor", labelsize=7)
            if free:
                note = "cost 0, not on the log axis: " + ", ".join(sorted(free))
                ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, va="bottom")
            ax.set_xlabel("cost (dense-epoch equivalents, log scale)")
            ax.set_title(f"density {density:g}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("test accuracy at early stop (%)")
        fig.suptitle(f"Accuracy vs cost (mean, 95 % CI over {self._seeds()} seeds)")
        return self._save(fig, "accuracy_vs_cost.png")

    def warmup(self) -> Path | None:
        """Accuracy against warm-up length in epochs (0: at init), one line per method family (the method
        without its +w part; ``imp+wL``: IMP whose levels share L), one panel per density. A method that
        trains with no warm-up length (full IMP, RigL) is a dashed horizontal line."""
        name = "accuracy_vs_warmup.png"
        lengths = set(self.rows["warmup"].dropna()) - {0.0} if "warmup" in self.rows.columns else set()
        if len(lengths) < 2:
            (self.results.path / name).unlink(missing_ok=True)  # no sweep (any more)
            return None
        import matplotlib.pyplot as plt

        length = self.rows.groupby(["density", "method"])["warmup"].mean()
        densities = sorted(self.comp["density"].unique())
        # constrained layout keeps the shared x label clear of the two-line tick labels
        fig, axes = plt.subplots(
            1, len(densities), figsize=(6.5 * len(densities), 4.8), squeeze=False, layout="constrained"
        )
        for ax, density in zip(axes[0], densities, strict=True):
            block = self.comp[self.comp["density"] == density]
            block = block.assign(x=[length.get((density, m), np.nan) for m in block["method"]])
            self._warmup_panel(ax, block)
            ax.set_title(f"density {density:g}", fontsize=10)
        axes[0][0].set_ylabel("test accuracy at early stop (%)")
        # one legend beside the panels: inside one it hides the points of a corner
        handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
        fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8)
        # one label under all panels: as a panel's own label it runs into the next panel's
        fig.supxlabel(
            "warm-up length (epochs of the training split; imp, @gss: the budget their levels share)", fontsize=10
        )
        fig.suptitle(f"Accuracy vs warm-up length (mean, 95 % CI over {self._seeds()} seeds)")
        return self._save(fig, name)

    def _warmup_panel(self, ax, block: pd.DataFrame) -> None:
        import matplotlib

        lines, levels = warmup_series(block, self.report.units)
        cmap = matplotlib.colormaps["tab10" if len(lines) + len(levels) <= 10 else "tab20"]
        for k, (name, (mean, _)) in enumerate(sorted(levels.items())):
            ax.axhline(100 * mean, color=cmap((len(lines) + k) % cmap.N), linestyle="--", linewidth=1, label=name)
        ticks: dict[float, str] = {}
        for k, (family, points) in enumerate(sorted(lines.items())):
            ref = any(p[3] == self.report.reference for p in points)  # the reference's family: black, as elsewhere
            ax.errorbar(
                [p[0] for p in points],
                [100 * p[1] for p in points],
                yerr=[100 * p[2] for p in points],
                label=family,
                marker="o",
                capsize=3,
                color=REFERENCE_COLOR if ref else cmap(k % cmap.N),
                linewidth=2.2 if ref else 1.2,
            )
            for x, _, _, method in points:
                unit = self.report.units[method]
                steps = f"\n{int(unit.warmup)} steps" if unit.warmup_in_steps else ""
                ticks.setdefault(round(x, 6), f"{x:.3g}{steps}")
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 100.0))  # an interval of few seeds may reach past 0 or 100 %
        ax.grid(True, alpha=0.3)

    def _dense_cost_point(self, ax) -> None:
        dense = self.report.dense
        if dense.empty or "cost_epochs" not in dense.columns:
            return
        block = dense[dense["method"] == str(DenseUnit())].dropna(subset=["cost_epochs"])
        if not block.empty and block["cost_epochs"].mean() > 0:
            x, y = block["cost_epochs"].mean(), 100 * block["test_acc"].mean()
            ax.plot(x, y, marker="*", color="red", ms=11, linestyle="none")
            ax.annotate("dense", (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7, color="red")

    # ------------------------------------------------------------------------------------- masks

    def _lowest(self) -> tuple[float, list[str], list[int]]:
        lowest = float(self.rows["density"].min())
        methods = sorted(self.rows[self.rows["density"] == lowest]["method"].unique(), key=self.labels.get)
        return lowest, methods, sorted(int(s) for s in self.rows["seed"].unique())

    def jaccard(self) -> Path:
        import matplotlib.pyplot as plt

        lowest, methods, seeds = self._lowest()
        masks = {(m, s): self.results.mask(s, unit_name(m, lowest)) for m in methods for s in seeds}
        mat = np.full((len(methods), len(methods)), np.nan)
        for i, a in enumerate(methods):
            for j, b in enumerate(methods[: i + 1]):
                vals = [
                    jaccard(masks[a, s], masks[b, s])
                    for s in seeds
                    if masks[a, s] is not None and masks[b, s] is not None
                ]
                if vals:
                    mat[i, j] = mat[j, i] = float(np.mean(vals))
        n = len(methods)
        fig, ax = plt.subplots(figsize=(2.0 + 0.55 * n, 1.2 + 0.5 * n))
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        names = [self.labels[m] for m in methods]
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        size = 7 if n <= 12 else 5
        for i in range(n):
            for j in range(n):
                if not np.isnan(mat[i, j]):
                    color = "black" if mat[i, j] > 0.6 else "white"  # legible on viridis' yellow end
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=size, color=color)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Jaccard similarity")
        ax.set_title(f"Mask overlap at density {lowest:g} (mean over {len(seeds)} seeds)", fontsize=10)
        return self._save(fig, "mask_jaccard.png")

    def _kept_by_layer(self, method: str, density: float, seeds: list[int]) -> list[np.ndarray] | None:
        """θ0 of the kept weights per prunable layer, pooled over seeds (None when not stored)."""
        rows = self.rows[(self.rows["method"] == method) & (self.rows["density"] == density)]
        layer_cols = sorted((c for c in rows.columns if re.fullmatch(r"kept_l\d+", c)), key=lambda c: int(c[6:]))
        pooled: list[list[np.ndarray]] = []
        for _, row in rows[rows["seed"].isin(seeds)].iterrows():
            kept = self.results.kept_weights(int(row["seed"]), unit_name(method, density))
            if kept is None:
                continue
            counts = [int(row[c]) for c in layer_cols]
            # the kept weights are stored flat in layer order; the row's per-layer counts split them
            parts = np.split(kept.numpy(), np.cumsum(counts)[:-1]) if sum(counts) == kept.numel() else [kept.numpy()]
            pooled = pooled or [[] for _ in parts]
            for layer, part in zip(pooled, parts, strict=False):
                layer.append(part)
        return [np.concatenate(p) for p in pooled] if pooled else None

    def kept_weights(self) -> Path:
        """One panel per prunable layer; in each, one histogram row per method (a ridgeline): overlaid
        step histograms of many methods are unreadable, stacked rows stay legible for any number."""
        import matplotlib.pyplot as plt

        lowest, methods, seeds = self._lowest()
        kept = {m: k for m in methods if (k := self._kept_by_layer(m, lowest, seeds)) is not None}
        n_layers = max((len(k) for k in kept.values()), default=1)
        cols = min(n_layers, 3)
        nrows = -(-n_layers // cols)
        height = 1.0 + 0.3 * max(len(kept), 3)
        fig, axes = plt.subplots(nrows, cols, figsize=(1.5 + 3.6 * cols, height * nrows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= n_layers:
                ax.set_visible(False)
                continue
            self._layer_panel(ax, i, {m: k[i] if i < len(k) else np.empty(0) for m, k in kept.items()}, len(seeds))
            if i % cols:
                ax.set_yticklabels([])  # the same methods in every row: label the first panel only
        fig.suptitle(f"Initial weights θ0 kept at density {lowest:g}, per layer (pooled over {len(seeds)} seeds)")
        fig.tight_layout()
        return self._save(fig, "kept_weight_distribution.png")

    def _layer_panel(self, ax, layer: int, values: dict[str, np.ndarray], n_seeds: int) -> None:
        nonempty = [v for v in values.values() if v.size]
        pooled = np.concatenate(nonempty) if nonempty else np.zeros(1)
        bins = int(np.clip(np.sqrt(pooled.size / max(len(nonempty), 1)), 8, 40))
        # the layer's own scale (init std ~ 1/sqrt(fan-in)): a range set by a few far values (a SaW init
        # reaches ±1) squeezes every histogram into a few bins; those values go to the edge bins
        tail = (100 - KEPT_RANGE) / 2
        half = float(np.max(np.abs(np.percentile(pooled, [tail, 100 - tail])))) or 1.0
        edges = np.linspace(-half, half, bins + 1)
        for row, (m, v) in enumerate(values.items()):
            counts, _ = np.histogram(np.clip(v, -half, half), bins=edges)
            height = 0.85 * counts / counts.max() if counts.max() else counts.astype(float)
            color = self.colors[m]
            ax.stairs(row + height, edges, baseline=row, fill=True, color=color, alpha=0.35)
            ax.stairs(
                row + height, edges, baseline=row, color=color, linewidth=1.6 if m == self.report.reference else 1
            )
        ax.set_yticks(range(len(values)), [self._label(m) for m in values], fontsize=8)
        ax.set_ylim(-0.1, len(values))
        sizes = [v.size / max(n_seeds, 1) for v in values.values()] or [0]
        ax.set_title(f"layer {layer}: {min(sizes):.0f}–{max(sizes):.0f} kept per seed", fontsize=9)
        ax.set_xlabel(f"θ0 of kept weights (the outer {100 - KEPT_RANGE:g} % in the edge bins)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)


TRANSFER_TARGET = 0.25  # the share of the way to the ceiling a family model is asked to close


def transfer_plot(table: pd.DataFrame, path: Path, series: tuple[tuple[str, str, str], ...]) -> Path | None:
    """Leave-one-network-out (``evaluate.transfer``): per held-out member, the gap closed from
    ``synflow@ums`` towards ``synflow@ims`` by each of ``series`` (role, colour, label: the family model
    zero-shot, the member's own model ...) present in ``table``, with bootstrap intervals; 0 is the
    reference, 1 the ceiling, the dashed line the 25 % target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table[table["role"].isin([s[0] for s in series])] if "role" in table else table.iloc[0:0]
    if shown.empty:
        return None
    members = list(dict.fromkeys(shown["member"]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(members) + 1.5))
    present = [s for s in series if (shown["role"] == s[0]).any()]
    for k, (role, color, label) in enumerate(present):
        rows = shown[shown["role"] == role].set_index("member")
        ys = [i + (k - (len(present) - 1) / 2) * 0.25 for i, m in enumerate(members) if m in rows.index]
        rows = rows.loc[[m for m in members if m in rows.index]]
        point = 100 * rows["gap_synflow_ims"].to_numpy(dtype=float)
        lo = 100 * rows["gap_synflow_ims_lo"].to_numpy(dtype=float)
        hi = 100 * rows["gap_synflow_ims_hi"].to_numpy(dtype=float)
        err = np.vstack([np.where(np.isnan(lo), 0, point - lo), np.where(np.isnan(hi), 0, hi - point)])
        ax.errorbar(point, ys, xerr=err, fmt="o", color=color, capsize=3, label=label)
    for x, style in ((0, "-"), (100, "-"), (100 * TRANSFER_TARGET, "--")):
        ax.axvline(x, color="grey", linestyle=style, linewidth=0.8)
    ax.set_yticks(range(len(members)), members)
    ax.invert_yaxis()
    ax.set_xlabel("gap closed from synflow@ums (0) to synflow@ims (100), %\n[95 % bootstrap interval over seeds]")
    # below the axes: inside, the legend would hide some member's interval
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
