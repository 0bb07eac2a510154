"""``metaprune fit`` on real tiny harvest stores: every model, splits by seed, errors, CLI, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metaprune.errors import MetapruneError
from metaprune.fit import assess, sampler
from metaprune.fit.core import FitConfig, fit_model
from metaprune.fit.persist import load_model
from metaprune.fit.preprocess import BASE_SCORES
from metaprune.fit.sampler import SeedReader, Unit
from metaprune.fit.stores import open_view
from tests.test_fit_helpers import empty_store, run_main, tiny_store


def THESIS(**fields) -> FitConfig:  # noqa: N802 (reads as the config it builds)
    """The thesis's single-shot recipe: dense θ0 features, one shot (these tests pin that path)."""
    return FitConfig.for_recipe("thesis", **fields)

FAST = {
    "linear": {},
    "sgd": {"epochs": 2},
    "tree": {},
    "forest": {"n_estimators": 5, "jobs": 1},
    "mlp": {"epochs": 2, "device": "cpu"},
    "lightgbm": {"rounds": 15, "jobs": 1},
}


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory, "main", tuple(range(6)))


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


# ------------------------------------------------------------------------------------ every model


@pytest.mark.parametrize("model", list(FAST))
def test_every_model_fits_predicts_and_round_trips(model, store, models_dir):
    res = fit_model(store, THESIS(model=model, features="all", options=FAST[model]), models_dir=models_dir)
    meta = res.meta
    assert res.path == models_dir / res.name and res.name.startswith(f"{model}-round-all-")
    assert meta["train_seeds"] == [0, 1, 2, 3, 4] and meta["test_seeds"] == [5]  # the last quarter (floor, >= 1)
    test = meta["metrics"]["test"]
    for key in ("r2", "mse", "jaccard", "spearman"):
        assert np.isfinite(test[key])
    assert 0 <= test["jaccard"] <= 1 and len(test["jaccard_per_seed"]) == 1
    assert set(meta["metrics"]["reference"]) == set(BASE_SCORES)
    assert meta["metrics"]["fit"]["rows_per_s"] > 0
    assert meta["networks"] == ["mlp:12-8"] and meta["datasets"] == ["digits"]
    assert meta["payload"]["sha256"] and meta["versions"]["lightgbm"]
    # the saved model predicts exactly what the fitted one did on a held-out seed
    view = open_view(store)
    reader = SeedReader(tuple(meta["features"]), meta["preprocess"], meta["target"])
    x, targets, _ = reader.read(Unit(view, 5))
    loaded = load_model(res.path)
    pred = loaded.model.predict(x)
    assert pred.shape == (view.n_weights,) and pred.dtype == np.float32
    again = assess.evaluate_units(loaded.model, [Unit(view, 5)], reader)
    assert again["mse"] == pytest.approx(test["mse"], rel=1e-6)
    assert again["jaccard"] == pytest.approx(test["jaccard"])


def test_reference_rows_are_the_base_scores_themselves(store, models_dir):
    """The reference Jaccard of 'magnitude' is the top-k overlap of |θ0| with the target, per seed."""
    from metaprune.fit.metrics import topk_jaccard

    res = fit_model(store, THESIS(model="linear"), models_dir=models_dir)
    view = open_view(store)
    expected = []
    for seed in res.meta["test_seeds"]:
        x, t = view.read_seed(seed, ["magnitude"])
        expected.append(topk_jaccard(x[:, 0], t["target_mask"], seed))
    assert res.metrics["reference"]["magnitude"]["jaccard"] == pytest.approx(np.mean(expected))


def test_targets_features_and_preprocessing_are_recorded(store, models_dir):
    cfg = THESIS(model="linear", target="mask", features="scores+depth", preprocess="rank")
    res = fit_model(store, cfg, models_dir=models_dir)
    meta = res.meta
    assert meta["features"] == ["magnitude", "snip", "grasp", "grasp_abs", "synflow", "synflow_ums", "depth"]
    assert meta["preprocess"] == "rank" and meta["per_layer_normalised"] is True
    assert meta["target"] == "mask" and meta["levels"] == 2 and meta["target_density"] == 0.1
    assert meta["feature_config"]["density"] == 0.1 and meta["feature_config"]["ums_rounds"] == 5
    # the folder carries the hash in the store's own name (its harvest config), not the content hash
    assert res.name.endswith("-rank-" + meta["stores"][0]["config_hash"]) and store.name != meta["store_hash"]


def test_lightgbm_cross_entropy_objective(store, models_dir):
    res = fit_model(
        store,
        THESIS(model="lightgbm", target="score", options={"objective": "cross_entropy", "rounds": 5, "jobs": 1}),
        models_dir=models_dir,
    )
    assert res.meta["options"]["objective"] == "cross_entropy"
    assert res.meta["payload"]["objective"] == "cross_entropy"


def test_row_cap_subsamples(store, models_dir):
    res = fit_model(store, THESIS(model="tree", options={"max_rows": 1000}), models_dir=models_dir)
    assert res.metrics["fit"]["rows_used"] == 1000 < res.metrics["fit"]["rows"]


# ------------------------------------------------------------------------------------------ splits


def test_no_test_seed_is_ever_trained_on(store, models_dir, monkeypatch):
    seen: list[list[int]] = []
    original = sampler.StreamData.__init__

    def spy(self, units, *args, **kwargs):
        seen.append(sorted({u.seed for u in units}))
        original(self, units, *args, **kwargs)

    monkeypatch.setattr(sampler.StreamData, "__init__", spy)
    res = fit_model(
        store, THESIS(model="sgd", train_seeds="0-3", test_seeds="5", cv=2, options=FAST["sgd"]), save=False
    )
    assert res.meta["test_seeds"] == [5] and res.meta["train_seeds"] == [0, 1, 2, 3]
    assert len(seen) == 3  # two cv folds, then the final fit
    assert all(5 not in s and 4 not in s for s in seen)
    cv = res.metrics["cv"]
    for fold in cv["folds"]:
        assert not set(fold["train_seeds"]) & set(fold["val_seeds"])
    assert sorted(s for f in cv["folds"] for s in f["val_seeds"]) == [0, 1, 2, 3]


def test_combining_two_stores(store, tmp_path_factory, models_dir):
    other = tiny_store(tmp_path_factory, "more", (6, 7))
    res = fit_model([store, other], THESIS(model="linear"), models_dir=models_dir)
    assert res.meta["test_seeds"] == [6, 7] and res.meta["train_seeds"] == [0, 1, 2, 3, 4, 5]
    assert [s["complete_seeds"] for s in res.meta["stores"]] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert res.meta["metrics"]["fit"]["rows"] == 6 * 944


# ------------------------------------------------------------------------------------ old stores


def _aged_copy(store, dest, drop, schema_version):
    """A copy of ``store`` whose attributes look as an older metaprune wrote them: config fields ``drop``
    absent (they did not exist yet) and the given schema version."""
    import shutil

    shutil.copytree(store, dest)
    meta = json.loads((dest / "zarr.json").read_text())
    config = json.loads(meta["attributes"]["config"])
    for key in drop:
        del config[key]
    meta["attributes"]["config"] = json.dumps(config)
    meta["attributes"]["schema_version"] = schema_version
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def test_the_view_of_a_store_comes_from_its_harvest_config_and_old_stores_read_as_written(
    store, tmp_path, models_dir
):
    """The warm-up and pruning batch a model records are the store's (tiny_config: 1 epoch, lr 0.1, batch 64,
    sgd; 10 per class); a field a store predates reads as it was then, never as today's default."""
    current = open_view(store)
    assert current.config.trajectory is True and current.levels == 2 and current.density == 0.1
    warmup = {"epochs": 1.0, "lr": 0.1, "batch_size": 64, "optimizer": "sgd"}
    assert current.feature_config == {"density": 0.1, "ums_rounds": 5, "per_class": 10, "warmup": warmup}
    # schema version 1 with a warm-up (written between the dynamics features and the trajectory states)
    no_states = open_view(_aged_copy(store, tmp_path / "v1-warmup.zarr", ["trajectory"], 1))
    assert no_states.config.trajectory is False and no_states.config.warmup_epochs == 1.0
    assert no_states.feature_config == current.feature_config
    # the first stores: no warm-up, so no warm-up is recorded (today's default would claim a 3-epoch one)
    first = open_view(_aged_copy(store, tmp_path / "v1.zarr", ["trajectory", "warmup_epochs"], 1))
    assert first.config.warmup_epochs is None and "warmup" not in first.feature_config
    res = fit_model(first.path, THESIS(model="linear"), models_dir=models_dir)
    assert res.meta["feature_config"] == {"density": 0.1, "ums_rounds": 5, "per_class": 10}
    unreadable = _aged_copy(store, tmp_path / "future.zarr", [], 2)
    meta = json.loads((unreadable / "zarr.json").read_text())
    meta["attributes"]["config"] = json.dumps({**json.loads(meta["attributes"]["config"]), "colour": "red"})
    (unreadable / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(MetapruneError, match=r"future.zarr holds a harvest config this metaprune cannot read.*colour"):
        open_view(unreadable)


# ------------------------------------------------------------------------------------------ errors


def test_bad_inputs_are_one_line_errors(store, tmp_path_factory, models_dir):
    with pytest.raises(MetapruneError, match="no complete seeds"):
        fit_model(empty_store(tmp_path_factory), THESIS(), models_dir=models_dir)
    one = tiny_store(tmp_path_factory, "one", (0,))
    with pytest.raises(MetapruneError, match="too few complete seeds to hold any out"):
        fit_model(one, THESIS(), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="in both --train-seeds and --test-seeds"):
        fit_model(store, THESIS(train_seeds="0-4", test_seeds="4-5"), models_dir=models_dir)
    with pytest.raises(MetapruneError, match=r"unknown feature 'nope'; the store has: magnitude, snip"):
        fit_model(store, THESIS(features="scores+nope"), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="has no option"):
        fit_model(store, THESIS(model="tree", options={"depth": 3}), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="no store with complete seeds"):
        fit_model(None, THESIS(), models_dir=models_dir, datasets_dir=models_dir)
    assert not models_dir.exists()  # nothing was written by any failed fit


def test_existing_model_is_not_overwritten_without_force(store, models_dir):
    first = fit_model(store, THESIS(model="linear"), models_dir=models_dir, name="keep")
    before = (first.path / "meta.json").read_bytes()
    with pytest.raises(MetapruneError, match="--force"):
        fit_model(store, THESIS(model="sgd", options=FAST["sgd"]), models_dir=models_dir, name="keep")
    assert (first.path / "meta.json").read_bytes() == before
    again = fit_model(
        store, THESIS(model="sgd", options=FAST["sgd"]), models_dir=models_dir, name="keep", force=True
    )
    assert again.meta["model"] == "sgd" and load_model(again.path).meta["model"] == "sgd"
    assert sorted(p.name for p in models_dir.iterdir()) == ["keep"]  # no temp or old folders left


# --------------------------------------------------------------------------------------------- CLI


def test_cli_fit_models_and_errors(store, tmp_path, monkeypatch, capsys):
    models = tmp_path / "cli-models"
    args = ["fit", "--data", str(store), "--model", "lightgbm", "--option", "rounds=5", "--option", "jobs=1"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--models-dir", str(models), "--name", "gbm")
    assert code == 0, err
    assert "Jaccard top-k" in out and "synflow_ums" in out and "rows/s" in out
    assert (models / "gbm" / "model.txt").is_file()

    code, out, err = run_main(monkeypatch, capsys, *args, "--models-dir", str(models), "--name", "gbm")
    assert code == 2 and "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1

    code, out, _ = run_main(monkeypatch, capsys, "models", "--models-dir", str(models), "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["name"] == "gbm" and rows[0]["model"] == "lightgbm"

    payload = models / "gbm" / "model.txt"
    payload.write_text(payload.read_text().replace("num_leaves", "num_leafs", 1))
    from metaprune.networks import build_network
    from metaprune.pruning.scorers import score

    with pytest.raises(MetapruneError, match="sha256"):
        score(f"learned:{models / 'gbm'}", build_network("mlp:12-8", (1, 8, 8), 10, 0), None, None, 0)

    code, _, err = run_main(monkeypatch, capsys, "fit", "--data", str(store), "--features", "bogus")
    assert code == 2 and "unknown feature 'bogus'" in err and "magnitude" in err

    code, _, err = run_main(
        monkeypatch, capsys, "fit", "--data", str(store), "--train-seeds", "0-3", "--test-seeds", "3-5"
    )
    assert code == 2 and "in both" in err


def test_cli_default_store_is_the_newest_and_said(store, tmp_path, monkeypatch, capsys):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "tiny.zarr").symlink_to(store, target_is_directory=True)
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "fit",
        "--datasets-dir",
        str(datasets),
        "--models-dir",
        str(tmp_path / "m"),
        "--model",
        "linear",
    )
    assert code == 0, err
    assert "using store" in err and "tiny.zarr" in err


def test_bench_fit_measures_in_a_fresh_process(store):
    from metaprune.bench.fit import bench_fit

    result = bench_fit(store, ["linear"], features="scores")
    (r,) = result["results"]
    assert r["model"] == "linear" and r["rows_per_s"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
    assert [c["model"] for c in result["checks"]] == ["linear"]
    assert result["weights_per_seed"] == 944 and result["versions"]["scikit-learn"]


# ------------------------------------------------------------------------------ trajectory and ranking


def test_trajectory_units_are_the_alive_weights_of_every_state(store):
    view = open_view(store)
    assert view.states == (0, 1)  # two target levels: dense θ0 and the state after level 1
    units = sampler.trajectory_units(view, [0, 1])
    assert [(u.seed, u.state) for u in units] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    reader = SeedReader(("magnitude", "snip"), "minmax", "round", sample_weight="balanced")
    x, t, _ = reader.read(units[1])
    alive = view.store.read_state(0, 1)[0]
    assert x.shape == (alive.size, 2) == (units[1].n_rows, 2) and units[1].n_rows < view.n_weights
    # min-max over the alive weights of the state only
    np.testing.assert_allclose(x.min(0), 0)
    np.testing.assert_allclose(x.max(0), 1)
    assert set(np.unique(t["levels"]).tolist()) <= {1, 2} and t["weight"] is not None


@pytest.mark.parametrize(
    "model,target,options",
    [
        ("lightgbm", "survive", {"objective": "binary", "rounds": 10, "jobs": 1}),
        ("lightgbm", "round", {"objective": "lambdarank", "rounds": 10, "jobs": 1, "min_data_in_leaf": 5}),
        ("mlp", "survive", {"loss": "bce", "epochs": 1, "device": "cpu"}),
    ],
)
def test_ranking_objectives_fit_on_the_trajectory(model, target, options, store, models_dir):
    res = fit_model(
        store,
        FitConfig(model=model, target=target, features="magnitude,snip,synflow", options=options, states="trajectory",
                  sample_weight="none" if options.get("objective") == "lambdarank" else "balanced", use="@ums"),
        models_dir=models_dir,
    )
    meta = res.meta
    view = open_view(store)
    alive = sum(u.n_rows for u in sampler.trajectory_units(view, meta["train_seeds"]))
    assert meta["states"] == "trajectory" and alive > meta["metrics"]["fit"]["rows"] - 1
    assert meta["metrics"]["fit"]["rows"] == alive
    assert 0 <= meta["metrics"]["test"]["jaccard"] <= 1
    nl = meta["metrics"]["test"]["next_level"]  # held-out seeds, one level from each state
    assert set(nl["per_state"]) == {"0", "1"} and 0 <= nl["jaccard"] <= 1


def test_trajectory_and_weight_refusals(store, tmp_path_factory, models_dir):
    flat = tiny_store(tmp_path_factory, "flat", (0, 1), trajectory=False)
    with pytest.raises(MetapruneError, match="holds no trajectory states"):
        fit_model(flat, FitConfig(states="trajectory"), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="takes no sample weights.*accepted: tree, forest, lightgbm, mlp"):
        fit_model(store, THESIS(model="linear", sample_weight="balanced"), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="binary objective needs a 0/1 target"):
        fit_model(store, THESIS(model="lightgbm", options={"objective": "binary"}), models_dir=models_dir)
    with pytest.raises(MetapruneError, match="bad states 'all'; accepted: dense, trajectory"):
        FitConfig(states="all").validate()


def test_a_grid_is_chosen_by_cross_validated_top_k_jaccard(store, models_dir):
    config = THESIS(model="lightgbm", features="scores", cv=2, options={"rounds": 5, "jobs": 1},
                       grid={"num_leaves": (3, 15)})
    res = fit_model(store, config, models_dir=models_dir)
    grid = res.metrics["grid"]
    scores = [row["jaccard"] for row in grid["candidates"]]
    assert [row["options"]["num_leaves"] for row in grid["candidates"]] == [3, 15]
    assert grid["chosen"] == int(np.argmax(scores)) and res.meta["options"]["num_leaves"] == [3, 15][grid["chosen"]]
    assert res.metrics["cv"]["jaccard"] == scores[grid["chosen"]]
    with pytest.raises(MetapruneError, match="chosen by cross-validation; accepted: --cv K"):
        FitConfig(grid={"num_leaves": (3,)}).validate()


def test_a_model_meant_for_multi_shot_use_leaves_out_the_multi_shot_feature(store, models_dir):
    with pytest.raises(MetapruneError, match="synflow_ums is itself a 100-round UMS"):
        fit_model(store, FitConfig(features="scores", use="@ums10"), models_dir=models_dir)
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_the_default_use_prunes_one_round_per_level_of_the_target(store, tmp_path_factory, models_dir, monkeypatch,
                                                                   capsys):
    """The multi-shot scorer learns the target's way down one level a state, so unless told otherwise it
    prunes in as many rounds as the target had levels: 2 on the 2-level store, 3 on a 3-level one."""
    three = tiny_store(tmp_path_factory, "three-levels", (0, 1), levels=3)
    fast = {"model": "linear", "train_seeds": "0", "test_seeds": "1"}
    two_levels = fit_model(store, FitConfig(**fast), save=False).card.intended_use
    assert (two_levels.schedule, two_levels.rounds) == ("ums", 2)
    assert fit_model(three, FitConfig(**fast), save=False).card.intended_use.rounds == 3
    assert fit_model(three, FitConfig(use="@ums7", **fast), save=False).card.intended_use.rounds == 7
    assert fit_model(three, FitConfig(use="", **fast), save=False).card.intended_use.schedule == "uss"
    with pytest.raises(MetapruneError, match=r"different levels \(2, 3\).*accepted: --use @umsN"):
        fit_model([store, three], FitConfig(**fast), models_dir=models_dir)
    code, _, err = run_main(monkeypatch, capsys, "fit", "-m", "linear", "--data", str(store), "--data", str(three),
                            "--train-seeds", "0", "--test-seeds", "1", "--models-dir", str(models_dir))
    assert code == 2 and "different levels (2, 3)" in err and len(err.strip().splitlines()) == 1, err
    assert not models_dir.exists()


def test_ranking_metrics_rank_by_the_scores_the_learned_scorer_keeps(store):
    """A sigmoid saturated to 1.0 in float32 ties almost every weight; the held-out top-k Jaccard must be
    the one of the logits the learned scorer ranks by (here a monotone map of synflow: synflow's own)."""
    import torch

    from metaprune.fit.models import make_regressor

    view = open_view(store)
    features = ("synflow",)
    model = make_regressor("mlp", {"hidden": "2", "device": "cpu"}, 0, 1)
    model.net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model.net[0].weight.fill_(1000.0)  # min-max scaled synflow in [0, 1]: logits up to 1000
        model.net[0].bias.fill_(0.0)
    reader = SeedReader(features, "minmax", "round", reference=("magnitude",))
    x, _, _ = reader.read(Unit(view, 5))
    assert (model.predict(x) == 1.0).mean() > 0.5  # saturated: a probability ranking is the tie-break's coin
    res = assess.evaluate_units(model, [Unit(view, 5)], reader, reference=True)
    synflow_alone = assess.evaluate_units(model, [Unit(view, 5)], SeedReader(("synflow",), "none", "round"))
    assert res["jaccard"] == pytest.approx(synflow_alone["jaccard"]) and res["jaccard"] > 0.2
