"""What a new user meets in the first hour: help texts, one-line errors, interruptions, resumes, listings."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from metaprune.errors import MetapruneError
from tests.conftest import run_main, tiny_harvest_config

NET8 = ["--network", "mlp:8", "--dataset", "digits"]
TINY_EVAL = ["--network", "mlp:20-10", "--dataset", "digits", "--epochs", "2", "--patience", "1", "--workers", "1"]


@pytest.fixture
def registered():
    import metaprune.cli.app as app_module

    if "prune" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()


def test_help_shows_flags_without_a_type_and_the_defaults_it_hides(registered, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")

    def shown(command: str) -> str:
        code, out, _ = run_main(monkeypatch, capsys, command, "--help")
        assert code == 0
        return " ".join(out.split())

    evaluate = shown("evaluate")
    assert "<bool>" not in evaluate and "--no-force" not in evaluate and "--no-ceilings" not in evaluate
    assert "(default 0.005" in evaluate and "(default synflow@ums)" in evaluate
    assert "<bool>" not in shown("fit") and "<bool>" not in shown("harvest")
    assert "default: the evaluation's own" in shown("report")


def test_a_bad_method_prints_the_whole_grammar(registered, monkeypatch, capsys):
    # the grammar's [@schedule] and [#budget] were taken for rich markup and vanished from the message
    code, _, err = run_main(monkeypatch, capsys, "prune", "--method", "foo", *NET8)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "[A>]B[@schedule][+wE][#budget][~init][!ablation]" in err


def test_a_non_ascii_method_is_named_whole(registered, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "prune", "--method", "snïp", *NET8)
    assert code == 2 and "snïp" in err


def test_fit_names_a_bad_model_before_opening_any_store(registered, monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "fit", "--model", "xgboost", "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "unknown regressor 'xgboost'" in err and "nowhere" not in err


def test_fit_on_a_folder_of_stores_says_which_stores_it_holds(registered, monkeypatch, capsys, tmp_path):
    (tmp_path / "a.zarr").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "fit", "--data", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not a harvest store (no zarr.json); it holds the stores a.zarr" in err
    assert "empty folder" not in err  # the harvest's own accepted-values text


def test_a_short_target_training_does_not_refuse_the_default_warm_up():
    # --levels 2 --epochs 2 caps the target's epochs per level; the 3-epoch warm-up is another training
    cfg = tiny_harvest_config(warmup_epochs=3.0).validate()
    assert cfg.train.epochs == 2 and cfg.warmup_train.epochs == 3 and cfg.warmup_train.lr == cfg.train.lr
    with pytest.raises(MetapruneError, match=r"bad --warmup 0.0 .*accepted: 0 < warm-up <= 100"):
        tiny_harvest_config(warmup_epochs=0.0).validate()


def test_evaluate_and_harvest_defaults_agree_on_the_levels():
    from metaprune.config import ScheduleConfig
    from metaprune.harvest.config import HarvestConfig

    assert ScheduleConfig().levels == HarvestConfig().levels == 10


def test_list_shows_presets_recipes_and_models(registered, monkeypatch, capsys, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{")
    code, out, _ = run_main(monkeypatch, capsys, "list", "--models-dir", str(tmp_path))
    assert code == 0
    for expected in ("evaluation presets", "jackpot", "fit recipes", "thesis", "multishot", "broken", "unreadable"):
        assert expected in out


def test_ctrl_c_names_what_is_committed_and_the_command_that_resumes(registered, monkeypatch, capsys, tmp_path):
    import metaprune.evaluate.api as api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "evaluate", interrupted)
    out = tmp_path / "r"
    args = ["evaluate", "-m", "snip", "--seeds", "1000-1001", "--out", str(out), *TINY_EVAL]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 130 and len(err.strip().splitlines()) == 1
    # snip and the reference synflow@ums at 0.005, and the dense unit, for two seeds
    assert f"interrupted: 0 of 6 units committed in {out}; resume with: metaprune evaluate -m snip" in err


def test_a_resumed_evaluation_and_a_partial_report_say_so(registered, monkeypatch, capsys, tmp_path):
    out = tmp_path / "r"
    args = ["evaluate", "-m", "magnitude", "--reference", "magnitude", "--out", str(out), *TINY_EVAL]
    code, first, _ = run_main(monkeypatch, capsys, *args, "--seeds", "1000")
    assert code == 0 and "resuming" not in first
    code, second, _ = run_main(monkeypatch, capsys, *args, "--seeds", "1000-1001")
    assert code == 0 and "resuming: 2 of 4 units done" in second
    # the dense row reads like the others: mean ± 95 % CI, no sd and no unexplained iteration count
    dense = next(line for line in second.splitlines() if "dense (density 1)" in line)
    assert "±" in dense and " sd" not in dense and "(it " not in dense
    shutil.rmtree(out / "units" / "1001")
    code, report, _ = run_main(monkeypatch, capsys, "report", str(out), "--no-plots")
    assert code == 0 and "1 of 2 planned seeds complete" in " ".join(report.split())


def _report(rows: list[dict]):
    from metaprune.evaluate.report import Report

    comparison = pd.DataFrame(rows)
    return Report(pd.DataFrame(), comparison, pd.DataFrame(), "synflow@ums", "ttest", [])


def test_the_verdict_says_in_words_whether_the_learned_scorer_won():
    from metaprune.evaluate.report import verdicts

    base = {"density": 0.005, "ci95": 0.01, "diff_ci95": 0.007, "n_pairs": 5}
    rows = [
        {**base, "method": "learned:models/m@ums10", "mean": 0.86, "diff": 0.021, "p_holm": 0.003, "wins": 5,
         "significant": True},
        {**base, "method": "learned:models/m@ums10!shuffle", "mean": 0.7, "diff": -0.1, "p_holm": 0.001, "wins": 0,
         "significant": True},
        {**base, "method": "snip@uss", "mean": 0.8, "diff": -0.03, "p_holm": 0.01, "wins": 0, "significant": True},
        {**base, "method": "learned:models/n@ums10", "mean": 0.83, "diff": -0.004, "p_holm": 0.5, "wins": 2,
         "significant": False},
    ]  # fmt: skip
    lines = verdicts(_report(rows))
    assert lines == [
        "at density 0.005, learned:models/m@ums10 beat synflow@ums: +2.10 ± 0.70 points (p = 0.003, "
        "Holm-corrected; won 5 of 5 seeds)",
        "at density 0.005, learned:models/n@ums10 did not beat synflow@ums: -0.40 ± 0.70 points (p = 0.5, "
        "Holm-corrected; won 2 of 5 seeds)",
    ]


def test_a_damaged_newest_model_is_skipped_with_a_warning_and_bad_arguments_come_first(tmp_path):
    import warnings

    from metaprune.errors import MetapruneWarning
    from metaprune.evaluate.api import build_config

    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "meta.json").write_text(json.dumps({"name": "damaged"}))
    with pytest.raises(MetapruneError, match="unknown dataset 'nope'"):
        build_config(dataset="nope", models_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = build_config(network="mlp:20-10", dataset="digits", models_dir=tmp_path)
    assert [str(w.message) for w in caught if w.category is MetapruneWarning][0].startswith(
        f"skipping the newest model {tmp_path / 'damaged'}"
    )
    assert not any(m.learned_models for m in config.methods)
    assert str(config.reference) == "synflow@ums" and "synflow@ums" in map(str, config.methods)


def test_the_inspect_line_counts_states_as_the_store_does(tmp_path):
    from metaprune.harvest.inspect import inspect_store
    from metaprune.harvest.run import harvest

    store = tmp_path / "s.zarr"
    harvest(tiny_harvest_config(levels=3), (0,), out=store)
    info = inspect_store(store)
    text = json.dumps(info, default=str)
    assert "states 1-2 are the `state` dimension of `state_features` (2 entries)" in text


def test_the_model_folder_carries_the_store_s_own_hash(tmp_path):
    from metaprune.fit.config import FitConfig
    from metaprune.fit.core import fit_model
    from metaprune.harvest.run import harvest

    store = tmp_path / "s.zarr"
    result = harvest(tiny_harvest_config(), (0, 1, 2), out=store)
    fitted = fit_model(store, FitConfig.for_recipe("thesis", model="linear"), models_dir=tmp_path / "m")
    assert fitted.name.endswith("-" + result.config.short_hash())
    assert Path(fitted.path).name == fitted.name


def test_evaluate_and_report_name_the_tickets_that_ended_at_chance(registered, monkeypatch, capsys, tmp_path):
    # 8 random weights of 1,580 leave no input→output path: those tickets answer one class for every image
    out = tmp_path / "r"
    args = ["evaluate", "-m", "random", "-s", "0.005", "--seeds", "1000-1001", "--out", str(out), *TINY_EVAL]
    code, printed, _ = run_main(monkeypatch, capsys, *args)
    assert code == 0
    rows = pd.read_csv(out / "results.csv")
    share = 37 / 360  # digits' test split: its most frequent class holds 37 of the 360 images
    assert list(rows["at_chance"]) == [acc <= share + 0.01 for acc in rows["test_acc"]]
    assert rows.loc[rows["method"] == "random@uss", "at_chance"].all()
    assert not rows.loc[rows["method"] == "dense", "at_chance"].any()
    assert rows.loc[rows["method"] == "random@uss", "collapsed"].all()  # 8 weights: no path at all
    named = "random@uss at 0.005 on seed(s) 1000, 1001 (a mask with no input→output path on 1000, 1001)"
    assert named in " ".join(printed.split())
    code, report, _ = run_main(monkeypatch, capsys, "report", str(out), "--no-plots")
    assert code == 0 and named in " ".join(report.split())
