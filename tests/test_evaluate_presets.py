"""Every thesis preset builds and runs (tiny network, one seed, one density, short training)."""

import pytest

from metaprune.errors import MetapruneError
from metaprune.evaluate.api import build_config
from metaprune.evaluate.config import COMBINED, PRESETS
from metaprune.evaluate.results import ResultsDir
from metaprune.evaluate.run import run_evaluation
from metaprune.pruning.schedules import ScheduleConfig
from metaprune.training import TrainConfig

FAST = dict(
    network="mlp:20-10",
    dataset="digits",
    densities=(0.1,),
    seeds=(1000,),
    train=TrainConfig(epochs=2, patience=1),
    schedule=ScheduleConfig(rounds=3, levels=2),
)


# meta and jackpot need models; transfer runs over a family (tests/test_transfer.py)
@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("meta", "jackpot", "transfer")])
def test_preset_runs(preset, tmp_path):
    # the sweep's longest warm-up, 300 steps, is 15 epochs of digits: the training config must hold it
    fast = {**FAST, "train": TrainConfig(epochs=15, patience=1)} if preset == "warmup-sweep" else FAST
    cfg = build_config(preset=preset, models_dir=tmp_path, **fast)
    out = tmp_path / preset
    run_evaluation(cfg, out)
    rows = ResultsDir(out).rows()
    assert {str(m) for m in cfg.methods} <= set(rows["method"])
    if preset == "saw":
        assert {"dense~snip", "dense~bimodal", "dense~synflow", "dense~grasp"} <= set(rows["method"])
    if preset == "schedules":
        assert len(cfg.methods) == 16
    if preset == "stacked":
        assert sum(m.stacked for m in cfg.methods) == 16


def test_presets_match_the_thesis_shapes(tmp_path):
    base = build_config(preset="baselines", models_dir=tmp_path)
    assert len(base.methods) == 5 and len(base.densities) == 7 and len(base.seeds) == 3
    assert len(build_config(preset="combined", models_dir=tmp_path).methods) == len(
        set(COMBINED) | {"random@uss", "magnitude@uss", "snip@uss", "grasp@uss", "synflow@ums"}
    )
    with pytest.raises(MetapruneError, match="needs fitted models"):
        build_config(preset="meta", models_dir=tmp_path)
    with pytest.raises(MetapruneError, match="accepted: baselines"):
        build_config(preset="nope", models_dir=tmp_path)
    with pytest.raises(MetapruneError, match="accepted: --preset transfer --family NAME"):
        build_config(preset="transfer", models_dir=tmp_path)


def test_sanity_and_ceilings_add_variants(tmp_path):
    cfg = build_config(methods=("snip",), sanity=True, ceilings=True, models_dir=tmp_path, **FAST)
    bases = ("snip@uss", "magnitude@iss", "synflow@ims")
    expected = set(bases) | {f"{b}!{a}" for b in bases for a in ("shuffle", "reinit", "invert")}
    assert {str(m) for m in cfg.methods} == expected | {"synflow@ums"}  # the reference, always evaluated
