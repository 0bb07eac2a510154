"""The learned scorer ``learned:DIR``: through the pruning path, no fit/prune skew, refusals, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metaprune.datasets import load_dataset
from metaprune.errors import MetapruneError
from metaprune.fit import learned
from metaprune.fit.core import FitConfig, fit_model
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import jaccard, keep_count
from metaprune.pruning.method import parse_method
from tests.test_fit_helpers import DENSITY, NETWORK, tiny_store


def THESIS(**fields) -> FitConfig:  # noqa: N802 (reads as the config it builds)
    """The thesis's single-shot recipe: dense θ0 features, one shot (these tests pin that path)."""
    return FitConfig.for_recipe("thesis", **fields)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory, "main", tuple(range(6)))


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fitted(store, tmp_path_factory):
    """A linear model on all features (minmax) and one on rank preprocessing."""
    models = tmp_path_factory.mktemp("learned-models")
    static = "scores,structure,activations"
    plain = fit_model(store, THESIS(model="linear", features=static), models_dir=models)
    ranked = fit_model(store, THESIS(model="lightgbm", preprocess="rank", options={"rounds": 10}), models_dir=models)
    return plain, ranked


def _target_mask(store, seed):
    from metaprune.fit.stores import open_view

    _, targets = open_view(store).read_seed(seed, ["magnitude"])
    return torch.from_numpy(targets["target_mask"])


def test_learned_method_prunes_through_prune_seeds_without_skew(fitted, store, splits):
    plain, _ = fitted
    seed = plain.meta["test_seeds"][0]
    tickets = prune_seeds(parse_method(f"learned:{plain.path}"), NETWORK, splits, DENSITY, (seed,))
    mask = tickets[0].mask
    assert int(mask.sum()) == keep_count(DENSITY, 944)
    # features computed at prune time are the harvest's: the ticket overlaps the target exactly as fit measured
    assert jaccard(mask, _target_mask(store, seed)) == pytest.approx(plain.metrics["test"]["jaccard"])


def test_a_model_reading_the_dynamics_runs_its_warm_up_without_skew(store, splits, tmp_path):
    model = fit_model(store, THESIS(model="linear", features="scores,dynamics"), models_dir=tmp_path)
    assert model.meta["feature_config"]["warmup"]["epochs"] == 1.0
    seed = model.meta["test_seeds"][0]
    with pytest.raises(MetapruneError, match=r"1-epoch warm-up; accepted: learned:.*\+w1"):
        prune_seeds(parse_method(f"learned:{model.path}"), NETWORK, splits, DENSITY, (seed,))
    with pytest.raises(MetapruneError, match="was fitted on a warm-up"):
        prune_seeds(parse_method(f"learned:{model.path}+w2"), NETWORK, splits, DENSITY, (seed,))
    # under a gradual schedule it would read the levels' trajectory: 0.1 epochs at the first of 10 levels
    with pytest.raises(MetapruneError, match=r"was fitted on a warm-up \{'epochs': 1\.0.*'epochs': 0\.1,"):
        prune_seeds(parse_method(f"learned:{model.path}@gss+w1"), NETWORK, splits, DENSITY, (seed,))
    ticket = prune_seeds(parse_method(f"learned:{model.path}+w1"), NETWORK, splits, DENSITY, (seed,))[0]
    # the harvest's warm-up and the method's are the same trajectory: the overlap is exactly fit's
    assert jaccard(ticket.mask, _target_mask(store, seed)) == pytest.approx(model.metrics["test"]["jaccard"])


def test_scores_are_float32_on_the_flat_axis_with_pruned_weights_zero(fitted, splits):
    from metaprune.networks import build_network
    from metaprune.pruning.apply import prune_data_for
    from metaprune.pruning.scorers import score

    plain, _ = fitted
    net = build_network(NETWORK, splits.input_shape, splits.num_classes, 3)
    mask = torch.ones(944, dtype=torch.bool)
    mask[::3] = False
    s = score(f"learned:{plain.path}", net, mask, prune_data_for(splits, 3), 3)
    assert s.dtype == torch.float32 and s.shape == (944,)
    assert bool((s[~mask] == 0).all()) and bool(torch.isfinite(s).all())


def test_multi_shot_and_stacked_learned_methods_run(fitted, splits):
    from metaprune.pruning.schedules import ScheduleConfig

    plain, _ = fitted
    for text in (f"learned:{plain.path}@ums", f"magnitude>learned:{plain.path}"):
        ticket = prune_seeds(parse_method(text), NETWORK, splits, DENSITY, (5,), schedule=ScheduleConfig(rounds=3))[0]
        assert int(ticket.mask.sum()) == keep_count(DENSITY, 944)


def test_other_network_refused_unless_per_layer_normalised(fitted, splits):
    plain, ranked = fitted
    with pytest.raises(MetapruneError, match="per-layer normalised"):
        prune_seeds(parse_method(f"learned:{plain.path}"), "mlp:10-8", splits, DENSITY, (0,))
    ticket = prune_seeds(parse_method(f"learned:{ranked.path}"), "mlp:10-8", splits, DENSITY, (0,))[0]
    assert int(ticket.mask.sum()) == keep_count(DENSITY, 64 * 10 + 10 * 8 + 8 * 10)


def test_feature_mismatch_refused(fitted, splits, tmp_path):
    import shutil

    plain, _ = fitted
    for edit, message in (
        (lambda m: m["features"].__setitem__(0, "hessian_trace"), "hessian_trace"),
        (lambda m: m.__setitem__("feature_version", 99), "version 99"),
    ):
        copy = tmp_path / f"edited-{message.split()[0]}"
        shutil.copytree(plain.path, copy)
        meta = json.loads((copy / "meta.json").read_text())
        edit(meta)
        (copy / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(MetapruneError, match=message):
            prune_seeds(parse_method(f"learned:{copy}"), NETWORK, splits, DENSITY, (0,))


def test_models_are_cached_per_path_and_sha(fitted, monkeypatch):
    plain, _ = fitted
    learned.clear_cache()
    calls = []
    original = learned.load_model
    monkeypatch.setattr(learned, "load_model", lambda p: calls.append(p) or original(p))
    a = learned.cached_model(plain.path)
    b = learned.cached_model(str(plain.path))
    assert a is b and len(calls) == 1
    assert len(learned._CACHE) <= learned.CACHE_SIZE
    np.testing.assert_array_equal(a.model.predict(np.zeros((2, 22), np.float32)), b.model.predict(np.zeros((2, 22))))


def test_a_model_records_how_it_prunes_and_a_bare_learned_method_uses_it(store, tmp_path):
    from metaprune.fit.learned import with_intended_use

    config = FitConfig(model="linear", features="magnitude,snip,dynamics", use="@ums")
    dyn = fit_model(store, config, models_dir=tmp_path)
    assert dyn.meta["intended_use"] == {"schedule": "ums", "rounds": None, "budget": None, "warmup": 1.0}
    assert with_intended_use(parse_method(f"learned:{dyn.path}")).canonical() == f"learned:{dyn.path}@ums+w1"
    # a part the method spells overrides the model's; the sanity ablation keeps the model's use
    assert with_intended_use(parse_method(f"learned:{dyn.path}#layer")).budget == "layer"
    assert with_intended_use(parse_method(f"learned:{dyn.path}!shuffle")).canonical().endswith("@ums+w1!shuffle")
    # a learned scorer whose per-layer counts another method keeps prunes as its card says, there too
    inner = f"from:learned:{dyn.path}"
    assert with_intended_use(parse_method(f"snip#{inner}")).budget == f"{inner}@ums+w1"
    assert with_intended_use(parse_method(f"snip#{inner}@uss")).budget == f"{inner}@uss+w1"  # one shot spelled
    merged = with_intended_use(parse_method(f"snip#from:learned:{dyn.path}"))
    assert parse_method(merged.canonical()) == merged
    static = fit_model(
        store, FitConfig(model="linear", features="scores", use="#from:synflow@ums"), models_dir=tmp_path
    )
    assert static.meta["intended_use"]["warmup"] is None
    assert str(with_intended_use(parse_method(f"learned:{static.path}"))).endswith("@uss#from:synflow@ums")
    with pytest.raises(MetapruneError, match="bad use 'ums'"):
        FitConfig(use="ums").validate()
    with pytest.raises(MetapruneError, match="upfront schedules"):
        FitConfig(use="@ims").validate()


def test_jackpot_preset_lists_baselines_equal_compute_warmups_the_model_its_sanity_and_ceilings(store, tmp_path):
    from metaprune.evaluate.api import build_config
    from metaprune.evaluate.config import preset_methods

    with pytest.raises(MetapruneError, match="needs a fitted model .* `metaprune fit"):
        preset_methods("jackpot", tmp_path / "empty")
    dyn = fit_model(store, THESIS(model="linear", features="scores,dynamics"), models_dir=tmp_path)
    methods, densities, extra = preset_methods("jackpot", tmp_path, (dyn.path,))
    own = f"learned:{dyn.path}@uss+w1"
    assert densities == (0.005, 0.01) and extra["reference"] == "synflow@ums" and len(extra["seeds"]) == 30
    assert methods[:7] == (
        "random",
        "magnitude",
        "snip",
        "grasp_abs",
        "synflow@ums",
        "magnitude>synflow~snip",
        "prospr",
    )
    # the peers since SynFlow and the allocation-only controls
    peers = ("ntksap", "force", "snip@ums60", "phew", "gem")
    assert methods[7:14] == (*peers, "random#from:synflow@ums", "random#erk")
    warm = ("delta@uss+w1", "movement@uss+w1", "magnitude@uss+w1", "snip@uss+w1", "synflow@ums+w1")
    assert tuple(map(str, methods[14:21])) == (*warm, "delta@gss+w1", "movement@gss+w1")  # and gradual
    # the model, its ablations, its per-layer counts filled at random or by magnitude, and the ceilings:
    # imp and the model's own target ticket (the tiny store's 2 levels of 2 SynFlow rounds)
    controls = (f"random@uss#from:{own}", f"magnitude@uss#from:{own}")
    expected = (own, own + "!shuffle", own + "!reinit", *controls, "imp", "synflow@ims2", "rigl")
    assert tuple(map(str, methods[21:])) == expected
    config = build_config(network=NETWORK, dataset="digits", preset="jackpot", models_dir=tmp_path)  # newest model
    assert str(config.reference) == "synflow@ums" and config.schedule.levels == 2 and own in map(str, config.methods)


def test_warmup_sweep_preset_runs_a_model_at_its_own_warm_up_and_one_without_at_every_length(store, tmp_path):
    from metaprune.evaluate.config import preset_methods

    dyn = fit_model(store, THESIS(model="linear", features="scores,dynamics"), models_dir=tmp_path)
    static = fit_model(store, THESIS(model="linear", features="scores"), models_dir=tmp_path)
    methods, _, _ = preset_methods("warmup-sweep", tmp_path, (dyn.path, static.path))
    spelled = [str(m) for m in methods]
    assert len(spelled) == len(set(spelled)) == 3 + 1 + 4 * 10 + 2 + 4  # the model's +w1 is one of the lengths
    assert [s for s in spelled if str(dyn.path) in s] == [f"learned:{dyn.path}@uss+w1"]  # its features' warm-up
    mine = [s.removeprefix(f"learned:{static.path}@uss") for s in spelled if str(static.path) in s]
    assert mine == ["", "+w1", "+w3", "+w100s", "+w300s"]
    assert {"movement@uss+w1", "magnitude@iss+w300s", "mag_increase@uss+w100s", "magnitude@gss+w1"} <= set(spelled)
    with pytest.raises(MetapruneError, match="presets 'jackpot' and 'warmup-sweep', not 'baselines'"):
        preset_methods("baselines", tmp_path, (static.path,))


def test_jackpot_preset_runs_and_reports_gap_closure_and_sanity(store, tmp_path):
    from metaprune.evaluate.api import build_config, evaluate
    from metaprune.pruning.schedules import ScheduleConfig
    from metaprune.training import TrainConfig

    fit_model(store, THESIS(model="linear", features="scores,dynamics"), models_dir=tmp_path)
    cfg = build_config(
        network=NETWORK,
        dataset="digits",
        preset="jackpot",
        models_dir=tmp_path,
        densities=(0.1,),
        seeds=(1000, 1001),
        train=TrainConfig(epochs=2, patience=1),
        schedule=ScheduleConfig(rounds=3, levels=2),
    )
    rep = evaluate(cfg, tmp_path / "r")
    comparison = rep.comparison
    assert set(map(str, cfg.methods)) <= set(comparison["method"])
    assert {"gap_imp", "gap_synflow_ims", "sanity"} <= set(comparison.columns)
    assert (rep.rows["cost_epochs"][rep.rows["method"] == "delta@uss+w1"] == 1.0).all()  # one warm-up epoch
    # a learned model named bare as the reference is the method as its card says, as it was evaluated
    from metaprune.errors import StoreError
    from metaprune.evaluate.api import report

    model = next(p for p in tmp_path.iterdir() if (p / "meta.json").is_file())
    again = report(tmp_path / "r", reference=f"learned:{model}", plots=False)
    assert again.reference == f"learned:{model}@uss+w1" and again.comparison["diff"].notna().any()
    with pytest.raises(StoreError, match=r"reference grasp@uss was not evaluated in .*; accepted: one of its"):
        report(tmp_path / "r", reference="grasp", plots=False)


def test_a_model_refitted_in_place_is_refused_where_its_old_units_lie(store, tmp_path):
    """Resuming would mix the old model's tickets with the new one's: one line, nothing overwritten."""
    from metaprune.errors import StoreError
    from metaprune.evaluate.api import build_config, evaluate
    from metaprune.training import TrainConfig

    model = fit_model(store, THESIS(model="linear"), models_dir=tmp_path, name="m").path
    cfg = build_config(
        network=NETWORK, dataset="digits", methods=(f"learned:{model}",), densities=(DENSITY,), seeds=(1000,),
        train=TrainConfig(epochs=1, patience=1),
    )  # fmt: skip
    evaluate(cfg, tmp_path / "r")
    before = (tmp_path / "r" / "config.json").read_bytes()
    evaluate(cfg, tmp_path / "r")  # the same model: resumes
    fit_model(store, THESIS(model="linear", features="scores"), models_dir=tmp_path, name="m", force=True)
    with pytest.raises(StoreError, match=r"model .*m changed since results directory .* committed its units"):
        evaluate(cfg, tmp_path / "r")
    assert (tmp_path / "r" / "config.json").read_bytes() == before
    evaluate(cfg, tmp_path / "r", force=True)  # starting over is allowed
