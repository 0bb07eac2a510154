"""What every registry offers, for ``metaprune list`` and notebooks."""

from __future__ import annotations

import importlib

from metaprune.registry import Registry

# (title, module, registry attribute); modules that are absent in a slim install are skipped.
_SOURCES = (
    ("networks", "metaprune.networks", "NETWORKS"),
    ("datasets", "metaprune.datasets", "DATASETS"),
    ("scorers", "metaprune.pruning.scorers", "SCORERS"),
    ("schedules", "metaprune.pruning.schedules", "SCHEDULES"),
    ("initialisations", "metaprune.pruning.inits", "INITS"),
    ("regressors", "metaprune.fit.models", "REGRESSORS"),
    ("families (harvest --family)", "metaprune.harvest.family", "FAMILIES"),
)


def sections(models_dir: str = "models") -> list[tuple[str, list[tuple[str, tuple[str, ...], str]]]]:
    """(title, rows of (name, aliases, description)) of every registry, the presets and recipes, and the
    models under ``models_dir``."""
    out = []
    for title, module, attr in _SOURCES:
        try:
            registry: Registry = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            continue
        out.append((title, [(e.name, e.aliases, _help(e)) for e in registry]))
    from metaprune.rigl import HELP as RIGL_HELP
    from metaprune.training import TRAIN_PRESETS

    out.append(("dynamic sparse training (METHOD@rigl)", [("rigl", (), RIGL_HELP)]))

    out.append(
        (
            "training presets",
            [(name, (), _describe_preset(cfg)) for name, cfg in TRAIN_PRESETS.items()],
        )
    )
    from metaprune.evaluate.config import PRESET_HELP
    from metaprune.fit.config import RECIPE_HELP

    out.append(("evaluation presets (evaluate --preset)", [(n, (), h) for n, h in PRESET_HELP.items()]))
    out.append(("fit recipes (fit --recipe)", [(n, (), h) for n, h in RECIPE_HELP.items()]))
    out.append((f"models ({models_dir}/)", _models(models_dir)))
    return out


def _models(models_dir: str) -> list[tuple[str, tuple[str, ...], str]]:
    from metaprune.fit.persist import list_models
    from metaprune.pruning.method import learned_name

    rows = []
    for r in list_models(models_dir):
        if "error" in r:
            rows.append((r["name"], (), f"unreadable: {r['error']}"))
            continue
        rows.append((
            learned_name(r["path"]),
            (),
            f"{r['model']} on {r['n_features']} features ({r['features']}), target {r['target']}, states "
            f"{r['states']}, prunes as {r['use']}"
            + ("" if r.get("jaccard") is None else f"; held-out top-k Jaccard {r['jaccard']:.3f}"),
        ))  # fmt: skip
    return rows


def _help(entry) -> str:
    if entry.help:
        return entry.help
    return getattr(entry.value, "description", "") or ""


def _describe_preset(cfg) -> str:
    stop = f"early stopping (patience {cfg.patience})" if cfg.early_stopping else "no early stopping"
    return f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, up to {cfg.epochs} epochs, {stop}"
