"""Leave one network out (``evaluate --preset transfer``): does a model fitted on a family score a network
it never saw?

For each held-out member of a harvested family (``harvest --family``): a model is fitted on the stores
of every other member (the family recipe, ``fit.config.RECIPES``), and another on the member's own store;
both prune the member zero-shot at its density (with ``learned_budget``, the family model also with the
per-layer budget it fitted across the family, ``#learned``) beside ``synflow@ums`` (the reference) and the ceilings
``synflow@imsR`` (the harvest target's own ticket) and ``imp``, trained under the family's training and
levels. Each member is one ordinary evaluation (``results/<...>/<member>``, resumable); the summary is
one row per (member, method) with the paired difference to ``synflow@ums``, the gap closed towards each
ceiling with its bootstrap interval (``evaluate.stats``), and the paired difference of the family model
to the member's own model; ``transfer.csv`` and one plot, ``transfer.png``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from metaprune.errors import MetapruneError
from metaprune.evaluate.api import build_config, evaluate
from metaprune.evaluate.report import Report
from metaprune.evaluate.stats import mean_ci
from metaprune.files import check_folder_writable
from metaprune.fit.config import FitConfig
from metaprune.fit.core import fit_model
from metaprune.fit.persist import ModelCard
from metaprune.fit.stores import open_view
from metaprune.harvest.family import FAMILIES, Family, Member, family_stores
from metaprune.pruning.method import Method, learned_name

TRANSFER_SEEDS = tuple(range(7100, 7108))  # fresh: no harvest, fit or choice used them
REFERENCE = "synflow@ums"
LEARNED_BUDGET = "family#learned"  # the family model with its own per-layer budget (``#learned``)
ROLES = ("family", LEARNED_BUDGET, "own", REFERENCE, "target", "imp")
PLOT_SERIES = (  # (role, colour, label) of transfer.png's gap-closed rows
    ("family", "tab:blue", "family model (member left out)"),
    (LEARNED_BUDGET, "tab:green", "family model, its learned per-layer budget"),
    ("own", "tab:orange", "own-harvest model"),
)
Emit = Callable[[dict], None]


def default_fit() -> FitConfig:
    """The family recipe with LightGBM: portable features are unscaled logs and ranks, which trees take as
    they are; a row cap keeps each of the 2 x members fits to seconds."""
    return FitConfig.for_recipe("family", model="lightgbm", options={"max_rows": 1_000_000})


@dataclass(frozen=True)
class TransferConfig:
    """What ``run_transfer`` evaluates: a family, fresh seeds, the members held out (default all), the fit."""

    family: str | Family = "mlp-zoo"  # a registered name, or a Family (e.g. a subset of one's members)
    seeds: tuple[int, ...] = TRANSFER_SEEDS
    members: tuple[str, ...] = ()
    fit: FitConfig = field(default_factory=default_fit)
    own: bool = True  # also fit and evaluate each member's own-harvest model
    # also evaluate the family model with the per-layer budget it fitted across the family (``#learned``)
    learned_budget: bool = False

    def held_out(self) -> tuple[Family, tuple[Member, ...]]:
        fam = self.family if isinstance(self.family, Family) else FAMILIES.get(self.family)
        if len(fam.members) < 2:
            raise MetapruneError(f"family {fam.name} has one member; leave-one-out needs at least two")
        if self.learned_budget and len(fam.members) < 3:
            raise MetapruneError(
                f"family {fam.name} has {len(fam.members)} members: each family model would see one layout, and a "
                "budget fitted on one layout does not transfer; accepted: --learned-budget with 3 or more members"
            )
        if not self.seeds:
            raise MetapruneError("no seeds to evaluate; accepted: e.g. --seeds 7100-7107")
        return fam, tuple(fam.member(m) for m in self.members) if self.members else fam.members


@dataclass
class TransferReport:
    table: pd.DataFrame  # one row per (member, role)
    path: Path
    plot: Path | None
    reports: dict[str, Report]  # each member's evaluation, by label


def member_slug(member: Member) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{member.network}-{member.dataset}")


def run_transfer(
    config: TransferConfig,
    out: str | Path,
    *,
    datasets_dir: str | Path = "datasets",
    workers: int | None = None,
    device: str | None = None,
    data_root: str | None = None,
    on_event: Emit | None = None,
) -> TransferReport:
    """Leave each held-out member out in turn (see the module); resumable: fitted models and committed
    evaluation units under ``out`` are reused. ``on_event`` gets ``{"event": "member", ...}`` per member,
    ``{"event": "fit", ...}`` per model, and each member's evaluation events with ``member`` added."""
    fam, members = config.held_out()
    fit = config.fit.validate()
    stores = {m: p for m, p in zip(fam.members, family_stores(fam, datasets_dir), strict=True)}
    out = Path(out)
    check_folder_writable(out, "results folder", "--out")
    emit = on_event or (lambda event: None)
    rows, reports = [], {}
    for i, member in enumerate(members):
        emit({"event": "member", "member": member.label, "index": i, "members": len(members)})
        others = [stores[m] for m in fam.members if m != member]
        family_model = _fit_once(others, fit, out / "models", f"without-{member_slug(member)}", emit)
        own = None
        if config.own:
            own = _fit_once([stores[member]], fit, out / "models", f"own-{member_slug(member)}", emit)
        report = _evaluate_member(fam, member, config, family_model, own, out, (workers, device, data_root), emit)
        reports[member.label] = report
        rows.extend(member_rows(member, report, family_model, own))
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "transfer.csv"
    table.to_csv(path, index=False)
    from metaprune.evaluate.plots import transfer_plot

    return TransferReport(table, path, transfer_plot(table, out / "transfer.png", PLOT_SERIES), reports)


def _fit_once(stores: Sequence[Path], fit: FitConfig, models_dir: Path, name: str, emit: Emit) -> Path:
    """The model ``name`` fitted on ``stores``: reused when its card records exactly these stores' contents."""
    target = models_dir / name
    wanted = sorted(open_view(p).content_hash for p in stores)
    if target.is_dir():
        card = ModelCard.read(target)
        if sorted(s.hash for s in card.stores) == wanted and card.model == fit.model:
            return target
    emit({"event": "fit", "model": name, "stores": len(stores)})
    models_dir.mkdir(parents=True, exist_ok=True)
    return Path(fit_model(list(stores), fit, name=name, models_dir=models_dir, force=True).path)


def _evaluate_member(fam, member, transfer: TransferConfig, family_model, own, out, run, emit) -> Report:
    methods = [learned_name(family_model), *([learned_name(own)] if own else [])]
    if transfer.learned_budget:
        methods.insert(1, learned_name(family_model) + "#learned")
    methods += [REFERENCE, Method(("synflow",), "ims", rounds=fam.rounds), "imp"]
    config = build_config(
        network=member.network, dataset=member.dataset, methods=tuple(methods), densities=(member.density,),
        seeds=tuple(transfer.seeds), levels=fam.levels, train=fam.train, reference=REFERENCE,
    )  # fmt: skip
    workers, device, data_root = run

    def tagged(event: dict) -> None:
        emit({**event, "member": member.label})

    return evaluate(
        config, out / member_slug(member), workers=workers, device=device, data_root=data_root, on_event=tagged
    )


def _role(method: Method, family_model: Path, own: Path | None) -> str | None:
    model = method.learned_model
    if model is not None:
        resolved = Path(model).resolve()
        if resolved == family_model.resolve():
            return LEARNED_BUDGET if method.budget == "learned" else "family"
        return "own" if own is not None and resolved == own.resolve() else None
    if method.canonical() == REFERENCE:
        return REFERENCE
    if method.scorers == ("synflow",) and method.schedule == "ims":
        return "target"
    return "imp" if method.scorers == ("magnitude",) and method.schedule == "iss" else None


def member_rows(member: Member, report: Report, family_model: Path, own: Path | None) -> list[dict]:
    """The summary rows of one member's evaluation: one per role, with the family model's paired
    difference to the member's own model."""
    comp = report.comparison
    roles = {text: _role(unit, family_model, own) for text, unit in report.units.items() if isinstance(unit, Method)}
    dense = float(report.dense["test_acc"].mean()) if not report.dense.empty else float("nan")
    vs_own = {role: _paired(report, roles, role, "own") for role in ("family", LEARNED_BUDGET)}
    rows = []
    for _, r in comp.iterrows():
        role = roles.get(r["method"])
        if role is None:
            continue
        row = {"member": member.label, "network": member.network, "dataset": member.dataset}
        row.update(density=member.density, role=role, method=r["method"], n=r["n"], acc=r["mean"], acc_ci95=r["ci95"])
        row.update(dense_acc=dense, diff=r["diff"], diff_ci95=r["diff_ci95"], p_holm=r["p_holm"], wins=r["wins"])
        for stem in ("gap_synflow_ims", "gap_imp"):
            row.update({k: r.get(k, float("nan")) for k in (stem, f"{stem}_lo", f"{stem}_hi")})
        if role in vs_own:
            row.update(vs_own=vs_own[role][0], vs_own_ci95=vs_own[role][1])
        rows.append(row)
    return sorted(rows, key=lambda row: ROLES.index(row["role"]))


def _paired(report: Report, roles: dict[str, str | None], a: str, b: str) -> tuple[float, float]:
    """Mean and 95 % half-width of the paired per-seed difference of roles ``a`` and ``b``."""
    names = {role: text for text, role in roles.items() if role in (a, b)}
    if len(names) < 2:
        return float("nan"), float("nan")
    rows = report.rows[report.rows["method"].isin(names.values())]
    table = rows.pivot_table(index="seed", columns="method", values="test_acc", aggfunc="first").dropna()
    return mean_ci((table[names[a]] - table[names[b]]).to_numpy())
