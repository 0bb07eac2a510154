"""The model card and learned scorers through the scorer registry: one compatibility check for ``prune``
and ``evaluate``, models fitted on several stores, and the import graph (pruning never imports fit)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from metaprune.errors import MetapruneError
from metaprune.evaluate.api import build_config
from metaprune.evaluate.run import run_evaluation
from metaprune.fit.core import FitConfig, fit_model
from metaprune.fit.persist import IntendedUse, ModelCard
from metaprune.pruning.masks import keep_count
from metaprune.pruning.scorers import SCORERS
from metaprune.registry import Registry
from metaprune.training import TrainConfig
from tests.conftest import run_main
from tests.test_fit_helpers import DENSITY, tiny_store


def THESIS(**fields) -> FitConfig:  # noqa: N802 (reads as the config it builds)
    """The thesis's single-shot recipe: dense θ0 features, one shot (these tests pin that path)."""
    return FitConfig.for_recipe("thesis", **fields)

PACKAGE = Path(__file__).resolve().parents[1] / "metaprune"
OTHER = "mlp:10-8"  # another network on digits: 64*10 + 10*8 + 8*10 prunable weights


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory, "main", tuple(range(6)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("card-models")


@pytest.fixture(scope="module")
def plain(store, models):
    """A linear model on the base scores, min-max preprocessed: it fits only mlp:12-8."""
    return fit_model(store, THESIS(model="linear", features="scores"), models_dir=models, name="plain")


def _evaluate(model: Path, network: str, out: Path, seeds=(1000,)):
    config = build_config(
        network=network,
        dataset="digits",
        methods=(f"learned:{model}",),
        densities=(DENSITY,),
        seeds=seeds,
        train=TrainConfig(epochs=1, patience=1),
    )
    return run_evaluation(config, out).rows()


def test_card_reads_what_fit_wrote(plain):
    card = ModelCard.read(plain.path)
    assert card.features == tuple(plain.meta["features"]) and card.preprocess == "minmax"
    assert card.networks == ("mlp:12-8",) and card.datasets == ("digits",) and not card.transferable
    assert card.seen_seeds == frozenset(range(6)) and card.feature_density == DENSITY
    assert card.feature_settings()["density"] == DENSITY and card.feature_version is not None
    assert card.intended_use == IntendedUse(schedule="uss")  # fit records the default use: single shot, global
    assert card.layouts[0][0][1] == 64 * 12


def test_the_card_writes_back_what_it_reads_and_reads_an_older_record(plain, tmp_path):
    import json

    card = ModelCard.read(plain.path)
    assert card.to_meta() == {k: v for k, v in card.meta.items() if k not in ("payload", "meta_version")}
    assert card.meta["networks"] == ["mlp:12-8"] and card.meta["datasets"] == ["digits"]  # lists, one or several
    assert str(card.target_method) == "synflow@ims2" and card.levels == 2  # the tiny store's target
    # a record of an older metaprune: one network and dataset as plain values, no target method or states
    old = {k: v for k, v in card.meta.items() if k not in ("networks", "datasets", "target_method", "states")}
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({**old, "network": "mlp:12-8", "dataset": "digits"}))
    again = ModelCard.read(folder)
    assert again.networks == ("mlp:12-8",) and again.datasets == ("digits",) and again.states == "dense"
    assert str(again.target_ticket[0]) == "synflow@ims10" and again.target_ticket[1] == 2  # the harvest default's
    assert again.features == card.features and again.intended_use == card.intended_use


def test_transferable_model_is_accepted_by_prune_and_evaluate(store, models, tmp_path):
    from metaprune.prune import prune_network

    ranked = fit_model(store, THESIS(model="linear", preprocess="rank"), models_dir=models, name="ranked")
    assert ModelCard.read(ranked.path).transferable
    result = prune_network(OTHER, "digits", f"learned:{ranked.path}", DENSITY, 0)
    assert int(result.ticket.mask.sum()) == keep_count(DENSITY, 64 * 10 + 10 * 8 + 8 * 10)
    rows = _evaluate(ranked.path, OTHER, tmp_path / "r")
    assert (rows["method"] == f"learned:{ranked.path}@uss").sum() == 1


def test_model_not_fitting_the_network_is_refused_by_evaluate_as_by_prune(plain, tmp_path):
    with pytest.raises(MetapruneError, match="per-layer normalised"):
        _evaluate(plain.path, OTHER, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before any work


def test_model_fitted_on_two_stores_evaluates_on_both_networks(store, models, tmp_path_factory, tmp_path):
    other = tiny_store(tmp_path_factory, "other-network", (0, 1, 2, 3), network=OTHER)
    both = fit_model([store, other], THESIS(model="linear", features="scores"), models_dir=models, name="both")
    card = ModelCard.read(both.path)
    assert set(card.networks) == {"mlp:12-8", OTHER} and len(card.layouts) == 2 and not card.transferable
    for network in ("mlp:12-8", OTHER):
        rows = _evaluate(both.path, network, tmp_path / network.replace(":", "_"))
        assert (rows["method"] == f"learned:{both.path}@uss").sum() == 1
    # the seeds it was fitted on are refused on either network
    with pytest.raises(MetapruneError, match="were used to fit"):
        _evaluate(both.path, OTHER, tmp_path / "seen", seeds=(0,))


def test_rounds_zero_is_a_usage_error(monkeypatch, capsys, tmp_path):
    from metaprune.cli import app as app_module

    if "evaluate" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()
    args = ["evaluate", "--network", "mlp:12-8", "--dataset", "digits", "-m", "magnitude", "--out", str(tmp_path)]
    for option in ("--rounds", "--levels"):
        code, _, err = run_main(monkeypatch, capsys, *args, option, "0")
        assert code == 2 and f"bad {option} '0'; accepted: a positive integer" in err


# ---------------------------------------------------------------------------------------------- registry


def test_prefixed_names_resolve_through_the_registered_resolver():
    reg: Registry[str] = Registry("thing")
    reg.register("plain", "p")
    with pytest.raises(MetapruneError, match="unknown thing 'x:abc'"):
        reg.get("x:abc")  # not a known prefix yet
    reg.register_prefix("x:", lambda rest: f"resolved {rest}")
    assert "x:abc" in reg and "x:" not in reg and reg.canonical("x:abc") == "x:abc"
    assert reg.get("x:abc") == "resolved abc" and reg.get("plain") == "p"
    with pytest.raises(MetapruneError, match="names nothing after"):
        reg.get("x:")


def test_learned_names_are_scorers_that_need_data():
    assert "learned:models/some-model" in SCORERS
    assert SCORERS.get("learned:models/some-model").needs_data  # resolving does not load the model


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_pruning_never_imports_an_upper_layer():
    upper = ("metaprune.fit", "metaprune.evaluate", "metaprune.harvest", "metaprune.cli")
    edges = [
        (path.name, name)
        for path in sorted((PACKAGE / "pruning").glob("*.py"))
        for name in _imports(path)
        if name.startswith(upper)
    ]
    assert edges == []


def test_saw_from_a_learned_scorer_goes_through_saw_init(plain, monkeypatch):
    from metaprune.prune import prune_network
    from metaprune.pruning import apply, inits
    from metaprune.pruning.method import parse_method

    calls = []
    original = inits.saw_init
    monkeypatch.setattr(apply, "saw_init", lambda net, name, *a: calls.append(name) or original(net, name, *a))
    result = prune_network("mlp:12-8", "digits", parse_method(f"magnitude~learned:{plain.path}"), DENSITY, 7)
    assert calls == [f"learned:{plain.path}"] and int(result.ticket.mask.sum()) == keep_count(DENSITY, 944)


def test_a_transferable_model_prunes_a_conv_net_and_an_untransferable_one_is_refused(store, models, plain):
    """Transfer across architectures: per-layer-normalised features score conv2's layers (channels are
    its units) -- but only a model that saw conv layers: one fitted on linear layers only is refused there
    (its card records the layer kinds; a card from before they were recorded is not checked). The same
    check refuses a min-max model there, naming the reason."""
    import shutil

    from metaprune.networks import build_network, prunable_layout
    from metaprune.prune import prune_network

    ranked = fit_model(store, THESIS(model="linear", preprocess="rank"), models_dir=models, name="ranked-conv")
    with pytest.raises(MetapruneError, match="fitted on linear layers only, but layer features.0.weight"):
        prune_network("conv2", "digits", f"learned:{ranked.path}", DENSITY, 0)
    older = models / "ranked-conv-older-card"
    shutil.copytree(ranked.path, older)
    meta = json.loads((older / "meta.json").read_text())
    del meta["layer_kinds"]
    (older / "meta.json").write_text(json.dumps(meta))
    result = prune_network("conv2", "digits", f"learned:{older}", DENSITY, 0)
    total = prunable_layout(build_network("conv2", (1, 8, 8), 10, 0)).total
    assert int(result.ticket.mask.sum()) == keep_count(DENSITY, total)
    with pytest.raises(MetapruneError, match="per-layer normalised"):
        prune_network("conv2", "digits", f"learned:{plain.path}", DENSITY, 0)
