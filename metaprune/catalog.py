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
)


def sections() -> list[tuple[str, list[tuple[str, tuple[str, ...], str]]]]:
    out = []
    for title, module, attr in _SOURCES:
        try:
            registry: Registry = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            continue
        out.append((title, [(e.name, e.aliases, _help(e)) for e in registry]))
    from metaprune.training import TRAIN_PRESETS

    out.append(
        (
            "training presets",
            [(name, (), _describe_preset(cfg)) for name, cfg in TRAIN_PRESETS.items()],
        )
    )
    return out


def _help(entry) -> str:
    if entry.help:
        return entry.help
    return getattr(entry.value, "description", "") or ""


def _describe_preset(cfg) -> str:
    stop = f"early stopping (patience {cfg.patience})" if cfg.early_stopping else "no early stopping"
    return f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, up to {cfg.epochs} epochs, {stop}"
