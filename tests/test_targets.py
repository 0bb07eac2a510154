"""Any iterative target and its sibling (the noise ceiling), pinned against their definitions on a tiny MLP.

An ``imp`` target's removal levels are IMP recomputed here from the one train loop and a by-hand magnitude
top-k; its sibling is the same IMP from the same θ0 on the data order of ``sibling_seed(data_seed)``. A
sibling of a method differs from it in its data order and pruning batch only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metaprune.errors import MetapruneError, StoreError
from metaprune.harvest import harvest, open_store
from metaprune.harvest.config import HarvestConfig
from metaprune.pruning.method import parse_method
from metaprune.seeds import sibling_seed
from tests.conftest import run_main, tiny_harvest_config

IMP_CFG = tiny_harvest_config(target="imp", siblings=1)


@pytest.fixture(scope="module")
def imp_store(tmp_path_factory):
    """An imp store of seeds 0 and 1 (one population), the sibling of seed 0 only."""
    path = tmp_path_factory.mktemp("targets") / "imp.zarr"
    harvest(IMP_CFG, (0, 1), out=path, workers=1)
    return path


def imp_by_hand(cfg: HarvestConfig, seeds: tuple[int, ...], data_seed: int, gradual: bool = False) -> list[np.ndarray]:
    """IMP as its definition says: at level l train θ0 under the mask, keep the round(n · d^(l/L)) largest
    |w| among the alive weights, rewind to θ0; the level at which each weight went (survivors L + 1).
    ``gradual`` (magnitude@gss): level l trains on from where level l − 1 ended, on its own data order."""
    from metaprune.datasets import load_dataset
    from metaprune.networks import build_network, flat_weights, prunable_layout
    from metaprune.training import load_member_state, train_population

    splits = load_dataset(cfg.dataset)
    nets = [build_network(cfg.network, splits.input_shape, splits.num_classes, s) for s in seeds]
    n = prunable_layout(nets[0]).total
    masks = [torch.ones(n, dtype=torch.bool) for _ in seeds]
    removed = [np.zeros(n, dtype=np.int16) for _ in seeds]
    starts = list(nets)
    for level in range(1, cfg.levels + 1):
        keep = round(n * cfg.density ** (level / cfg.levels))
        order = f"gradual_order/{level}" if gradual else "data_order"
        trained = train_population(
            starts, splits, cfg.train, data_seed, masks=masks, keep_states=True, order_stream=order
        )
        checkpoints = [load_member_state(net, state) for net, state in zip(nets, trained.states, strict=True)]
        if gradual:
            starts = checkpoints
        for i, checkpoint in enumerate(checkpoints):
            w = flat_weights(checkpoint).detach().abs().double()
            w[~masks[i]] = -1.0  # a pruned weight never comes back
            new = torch.zeros(n, dtype=torch.bool)
            new[torch.argsort(w, descending=True)[:keep]] = True
            removed[i][(masks[i] & ~new).numpy()] = level
            masks[i] = new
    for i in range(len(seeds)):
        removed[i][masks[i].numpy()] = cfg.levels + 1
    return removed


def test_imp_target_levels_are_imp_by_hand(imp_store):
    with open_store(imp_store) as store:
        assert store.config.target == "magnitude@iss" and store.config.target_method() == parse_method("imp")
        rounds = [store.target_round(s) for s in (0, 1)]
        masks = [store.targets(s)["target_mask"] for s in (0, 1)]
    expected = imp_by_hand(IMP_CFG, (0, 1), IMP_CFG.data_seed)
    for got, want, mask in zip(rounds, expected, masks, strict=True):
        assert np.array_equal(got, want)
        assert np.array_equal(mask, want == IMP_CFG.levels + 1)


def test_a_gradual_target_trains_on_between_levels(tmp_path):
    cfg = tiny_harvest_config(target="magnitude@gss")
    path = tmp_path / "gmp.zarr"
    harvest(cfg, (0, 1), out=path, workers=1)
    with open_store(path) as store:
        assert store.config.target_method() == parse_method("magnitude@gss")
        assert store.attrs["target_spec"]["rewind"].startswith("none: each level trains on")
        rounds = [store.target_round(s) for s in (0, 1)]
    gradual = imp_by_hand(cfg, (0, 1), cfg.data_seed, gradual=True)
    for got, want in zip(rounds, gradual, strict=True):
        assert np.array_equal(got, want)
    rewound = imp_by_hand(cfg, (0, 1), cfg.data_seed)
    assert any(not np.array_equal(a, b) for a, b in zip(gradual, rewound, strict=True))


def test_sibling_is_imp_on_another_data_order(imp_store):
    with open_store(imp_store) as store:
        assert store.sibling_seeds == (0,)
        sibling, target = store.sibling_mask(0), store.targets(0)["target_mask"]
        with pytest.raises(StoreError, match="holds no sibling of seed 1"):
            store.sibling_mask(1)
        spec = store.attrs["target_spec"]
    # the sibling population is seed 0 alone, on the data order of sibling_seed(data_seed)
    by_hand = imp_by_hand(IMP_CFG, (0,), sibling_seed(IMP_CFG.data_seed))[0]
    assert np.array_equal(sibling, by_hand == IMP_CFG.levels + 1)
    assert sibling.sum() == target.sum() and not np.array_equal(sibling, target)
    assert spec["sibling_data_seed"] == sibling_seed(IMP_CFG.data_seed) != IMP_CFG.data_seed


def test_sibling_differs_in_data_order_and_pruning_batch_only(tiny_data):
    from metaprune.pruning.apply import prune_in_context
    from metaprune.pruning.context import PruneContext
    from metaprune.pruning.masks import topk_mask
    from metaprune.pruning.scorers import pruning_batch, score
    from metaprune.training import TrainConfig

    context = PruneContext("mlp:6", tiny_data, train=TrainConfig(epochs=3, patience=3, lr=0.5), per_class=2)
    # an iterative sibling: same θ0, the data order of sibling_seed(data seed)
    sib = prune_in_context(parse_method("imp!sibling"), context, 0.3, (3,), data_seed=5)[0]
    moved = prune_in_context(parse_method("imp"), context, 0.3, (3,), data_seed=sibling_seed(5))[0]
    plain = prune_in_context(parse_method("imp"), context, 0.3, (3,), data_seed=5)[0]
    assert torch.equal(sib.mask, moved.mask) and not torch.equal(sib.mask, plain.mask)
    for a, b in zip(sib.net.parameters(), plain.net.parameters(), strict=True):
        assert torch.equal(a, b)  # the same θ0
    # an upfront sibling: SNIP on the pruning batch of sibling_seed(seed)
    sib = prune_in_context(parse_method("snip!sibling"), context, 0.3, (3,))[0]
    batch = pruning_batch(tiny_data.train_x, tiny_data.train_y, tiny_data.num_classes, sibling_seed(3), 2)
    scores = score("snip", context.theta0(3), None, batch, 3)
    assert torch.equal(sib.mask, topk_mask(scores, sib.report.kept, None, torch.Generator()))
    assert not torch.equal(sib.mask, prune_in_context(parse_method("snip"), context, 0.3, (3,))[0].mask)


def test_sibling_spelling():
    method = parse_method("synflow@ims10!sibling")
    assert method.sibling and method.canonical() == "synflow@ims10!sibling" and method.ablation == "sibling"
    with pytest.raises(MetapruneError, match="draws on neither"):
        parse_method("magnitude!sibling")  # no data order, no pruning batch: its sibling is itself
    with pytest.raises(MetapruneError, match="unknown ablation 'sib'"):
        parse_method("imp!sib")


def test_default_target_keeps_the_store_identity():
    default = HarvestConfig().validate()
    assert "target" not in default.identity() and "siblings" not in default.identity()
    assert HarvestConfig(target="synflow@ims10").validate() == default
    assert HarvestConfig.from_stored(default.identity()).target_method().canonical() == "synflow@ims10"
    imp = HarvestConfig(target="imp").validate()
    assert imp.identity()["target"] == "magnitude@iss" and imp.short_hash() != default.short_hash()
    assert HarvestConfig(target="synflow@ims20", rounds=20).validate().target == "synflow@ims"


def test_fit_records_the_target_and_its_noise_ceiling(imp_store, tmp_path):
    from metaprune.evaluate.config import jackpot_methods, target_ceilings
    from metaprune.fit.config import FitConfig
    from metaprune.fit.core import fit_model

    cfg = FitConfig(model="linear", features="scores", states="dense", use="", target_method="imp",
                    train_seeds="0", test_seeds="1")  # fmt: skip
    res = fit_model(imp_store, cfg, name="m", models_dir=tmp_path)
    assert res.card.target_method == parse_method("magnitude@iss")
    with open_store(imp_store) as store:
        target, sibling = store.targets(0)["target_mask"], store.sibling_mask(0)
    by_hand = (target & sibling).sum() / (target | sibling).sum()
    assert res.metrics["sibling"]["seeds"] == [0]
    assert res.metrics["sibling"]["jaccard"] == pytest.approx(by_hand)
    assert 0 < by_hand < 1
    from metaprune.harvest.inspect import inspect_store

    info = inspect_store(imp_store)
    assert info["target"]["method"] == "magnitude@iss" and info["sibling"]["jaccard"] == pytest.approx(by_hand)
    # the model's ceilings: its own target ticket, which is imp, listed once
    assert target_ceilings((res.path,))[0] == (parse_method("imp"),)
    methods, levels = jackpot_methods((res.path,), tmp_path)
    spelled = [m if isinstance(m, str) else m.canonical() for m in methods]
    assert spelled.count("magnitude@iss") + spelled.count("imp") == 1 and levels == IMP_CFG.levels
    with pytest.raises(MetapruneError, match="is not the target of the store"):
        fit_model(imp_store, replace(cfg, target_method="synflow@ims"), name="n", models_dir=tmp_path)
    assert not (tmp_path / "n").exists()


def test_fit_picks_the_store_of_its_target(imp_store, tmp_path):
    from metaprune.fit.config import FitConfig
    from metaprune.fit.core import fit_model

    synflow = tmp_path / "synflow.zarr"
    harvest(replace(IMP_CFG, target="synflow@ims", siblings=0), (0,), out=synflow, workers=1)
    cfg = FitConfig(model="linear", features="scores", states="dense", use="", train_seeds="0", test_seeds="1")
    with pytest.raises(MetapruneError, match="the stores hold different targets: magnitude@iss"):
        fit_model([imp_store, synflow], cfg, name="m", models_dir=tmp_path)
    res = fit_model([imp_store, synflow], replace(cfg, target_method="imp"), name="m", models_dir=tmp_path)
    assert [s.path for s in res.card.stores] == [imp_store.name]  # outside the working directory: its name
    assert res.card.target_method == parse_method("imp")


@pytest.fixture
def cli(monkeypatch, capsys):
    import metaprune.cli.app as app_module

    if "harvest" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()

    def call(*args: str) -> tuple[int, str]:
        code, _, err = run_main(monkeypatch, capsys, *args)
        return code, err

    return call


TINY_ARGS = ("-n", "mlp:12-8", "-d", "digits", "--sparsity", "0.1", "--levels", "2", "--epochs", "2")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--target", "synflow@ums"), "bad --target 'synflow@ums': schedule 'ums' is not iterative"),
        (("--target", "snip"), "schedule 'uss' is not iterative"),
        (("--target", "imp~bimodal"), "no ~init or !ablation"),
        (("-n", "conv2", "--target", "phew@iss"), "phew"),
        (("--target", "learned:no-such-model@ims"), "not found"),
        (("--siblings", "-1"), "--siblings"),
    ],
)
def test_harvest_bad_target_is_one_line(cli, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, err = cli("harvest", *TINY_ARGS, "--seeds", "0", "--out", str(tmp_path / "s.zarr"), *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_refuses_a_target_the_store_lacks(cli, imp_store, tmp_path):
    code, err = cli("fit", "--data", str(imp_store), "--target-method", "snip@ims", "--models-dir", str(tmp_path))
    assert code == 2 and "--target-method 'snip@ims' is not the target" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_siblings_asked_of_a_store_without_them(tmp_path):
    path = tmp_path / "plain.zarr"
    harvest(replace(IMP_CFG, siblings=0), (0,), out=path, workers=1)
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(StoreError, match="holds no siblings"):
        harvest(IMP_CFG, (0,), out=path, workers=1)
    with open_store(path) as store:
        assert store.sibling_seeds == ()
        with pytest.raises(StoreError, match="holds no sibling of seed 0"):
            store.sibling_mask(0)
    assert sorted(p.name for p in path.iterdir()) == before


def test_soft_mask_is_the_target_and_its_sibling_averaged(imp_store, tmp_path):
    """``fit --target soft_mask``: (target_mask + sibling_mask) / 2 per weight, on the dense state, only where
    every seed the fit reads has a sibling."""
    from metaprune.fit import preprocess as pp
    from metaprune.fit.config import FitConfig
    from metaprune.fit.core import fit_model

    targets = {"target_mask": np.array([1, 1, 0, 0], bool), "sibling_mask": np.array([1, 0, 1, 0], bool)}
    assert pp.make_target(targets, "soft_mask", levels=3).tolist() == [1.0, 0.5, 0.5, 0.0]
    with pytest.raises(MetapruneError, match="'soft_mask' exists only for the dense state"):
        pp.make_target(targets, "soft_mask", levels=3, state=1)
    with pytest.raises(MetapruneError, match="'soft_mask' exists only for the dense state; accepted: --states dense"):
        FitConfig(target="soft_mask", states="trajectory").validate()
    cfg = FitConfig(model="linear", features="scores", states="dense", use="", target="soft_mask",
                    train_seeds="0", test_seeds="1")  # fmt: skip
    # seed 1 has no sibling: refused in one line before any work, nothing written
    with pytest.raises(StoreError, match="holds no sibling of seed 1 .*--siblings N"):
        fit_model(imp_store, cfg, name="soft1", models_dir=tmp_path)
    assert not (tmp_path / "soft1").exists()
    both = tmp_path / "both.zarr"
    harvest(replace(IMP_CFG, siblings=2), (0, 1), out=both, workers=1)
    res = fit_model(both, cfg, name="soft", models_dir=tmp_path)
    assert res.card.target == "soft_mask" and res.metrics["sibling"]["seeds"] == [0, 1]
