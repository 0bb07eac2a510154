"""Tiny real harvest stores for the fit and learned-scorer tests (built once per session, on disk).

Made by the harvest library function (``metaprune.harvest.run.harvest``): mlp:12-8 on digits (944
prunable weights), 2 levels of SynFlow-IMS to density 0.1, 2 epochs per level. No test lives here.
"""

from __future__ import annotations

from pathlib import Path

from metaprune.cli import app as app_module

from tests.conftest import run_main as conftest_run_main

NETWORK = "mlp:12-8"
DATASET = "digits"
DENSITY = 0.1
_BUILT: dict[str, Path] = {}


def tiny_config(**overrides):
    from metaprune.harvest.config import HarvestConfig
    from metaprune.training import TrainConfig

    values = dict(
        network=NETWORK,
        dataset=DATASET,
        density=DENSITY,
        levels=2,
        rounds=2,
        train=TrainConfig(epochs=2, patience=1),
        seeds_per_task=6,
        ums_rounds=5,
        warmup_epochs=1.0,
    )
    values.update(overrides)
    return HarvestConfig(**values)


def tiny_store(factory, name: str, seeds: tuple[int, ...], **overrides) -> Path:
    """A real store with ``seeds`` complete, built once per session under pytest's temp folder."""
    if name not in _BUILT:
        from metaprune.harvest.run import harvest

        out = factory.mktemp("stores") / f"{name}.zarr"
        harvest(tiny_config(**overrides), seeds, out=out)
        _BUILT[name] = out
    return _BUILT[name]


def empty_store(factory) -> Path:
    """A real store whose seed plan has no complete seed (as a harvest leaves it before the first commit)."""
    if "empty" not in _BUILT:
        from metaprune.datasets import dataset_info
        from metaprune.harvest.store import apply_plan, create_store
        from metaprune.networks import build_network, prunable_layout

        cfg = tiny_config().validate()
        shape, classes = dataset_info(cfg.dataset)
        out = factory.mktemp("stores") / "empty.zarr"
        create_store(out, cfg, prunable_layout(build_network(cfg.network, shape, classes, 0)))
        apply_plan(out, [0, 1], [0, 0])
        _BUILT["empty"] = out
    return _BUILT["empty"]


def _registered() -> None:
    names = {c.name for c in app_module.app.registered_commands}
    if "fit" not in names:
        app_module._register_commands()


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    _registered()
    return conftest_run_main(monkeypatch, capsys, *args)
