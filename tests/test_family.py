"""Families of networks: every member harvested into its own store, resumable, and the CLI's refusals."""

from pathlib import Path

import pytest
from metaprune.cli import app as app_module

from metaprune.errors import MetapruneError
from metaprune.fit.persist import ModelCard
from metaprune.harvest import open_store
from metaprune.harvest.family import FAMILIES, harvest_family
from tests.conftest import run_main


def _app():
    if "harvest" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()
    return app_module.app


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return root, harvest_family("tiny", root=root, workers=1, device="cpu")


def test_family_harvest_one_store_per_member_and_resumes(tiny_family):
    family = FAMILIES.get("tiny")
    tmp_path, results = tiny_family
    assert [(r.config.network, r.config.dataset, r.config.density) for r in results] == [
        (m.network, m.dataset, m.density) for m in family.members
    ]
    assert [r.store for r in results] == [p.absolute() for p in family.store_paths(root=tmp_path)]
    for r in results:
        store = open_store(r.store)
        assert sorted(store.complete_seeds) == [0, 1]  # the family's default seeds
        assert store.config.levels == family.levels and store.config.train.epochs == family.train.epochs
    again = harvest_family("tiny", root=tmp_path, workers=1, device="cpu")
    assert all(r.written == () and r.skipped == (0, 1) for r in again)  # resumed: nothing recomputed


def test_member_lookup_and_unknown_family():
    assert FAMILIES.get("mlp-zoo").member("conv2/digits").density > 0
    with pytest.raises(MetapruneError, match="no member 'vgg'"):
        FAMILIES.get("tiny").member("vgg")
    with pytest.raises(MetapruneError, match="unknown family 'zoo'; accepted: mlp-zoo"):
        FAMILIES.get("zoo")


def test_every_registered_member_is_a_valid_harvest():
    for entry in FAMILIES:
        base = entry.value.base_config()
        for member in entry.value.members:
            assert member.config(base).density == member.density


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "0.1"], "--sparsity given with --family tiny"),
        (["--network", "mlp:4"], "--network given with --family tiny"),
        (["--family", "zoo"], "unknown family 'zoo'"),
    ],
)
def test_cli_family_refusals_write_nothing(tmp_path, monkeypatch, capsys, extra, message):
    _app()
    args = ["harvest", "--family", "tiny", "--out", str(tmp_path / "stores"), *extra]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, err
    assert message in err.replace("\n", " ") and len(err.strip().splitlines()) == 1
    assert not Path(tmp_path / "stores").exists()


def test_cli_family_typed_option_overrides_the_family_default(tmp_path, monkeypatch, capsys):
    _app()
    args = ["harvest", "--family", "tiny", "--out", str(tmp_path), "--seeds", "5", "--levels", "3", "--workers", "1",
            "--device", "cpu"]  # fmt: skip
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    stores = sorted(tmp_path.glob("*.zarr"))
    assert len(stores) == 2
    for path in stores:
        store = open_store(path)
        assert store.config.levels == 3 and sorted(store.complete_seeds) == [5]
        assert store.config.rounds == FAMILIES.get("tiny").rounds


def test_fit_family_takes_every_store_with_the_family_recipe(tiny_family, tmp_path, monkeypatch, capsys):
    root, results = tiny_family
    _app()
    args = ["fit", "--family", "tiny", "--datasets-dir", str(root), "--models-dir", str(tmp_path), "--name", "fam",
            "--model", "linear"]  # fmt: skip
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    card = ModelCard.read(tmp_path / "fam")
    assert card.preprocess == "none" and card.states == "trajectory" and card.transferable
    assert [s.hash for s in card.stores] == [content_hash_of(r.store) for r in results]
    assert sorted(s.density for s in card.stores) == sorted(m.density for m in FAMILIES.get("tiny").members)


def content_hash_of(path):
    from metaprune.fit.stores import open_view

    return open_view(path).content_hash


def test_fit_family_with_a_missing_store_is_one_line(tmp_path, monkeypatch, capsys):
    _app()
    args = ["fit", "--family", "tiny", "--datasets-dir", str(tmp_path / "none"), "--models-dir", str(tmp_path / "m")]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "harvest --family tiny" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_fit_family_takes_data_stores_beside_its_own(tiny_family, tmp_path, monkeypatch, capsys):
    root, results = tiny_family
    extra = harvest_family("tiny", seeds=[9], root=tmp_path / "extra", workers=1, device="cpu")[1].store
    _app()
    base = ["fit", "--family", "tiny", "--datasets-dir", str(root), "--models-dir", str(tmp_path / "m"), "--model",
            "linear"]  # fmt: skip
    code, _, err = run_main(monkeypatch, capsys, *base, "--data", str(extra), "--name", "fam")
    assert code == 0, err
    card = ModelCard.read(tmp_path / "m" / "fam")
    assert [s.hash for s in card.stores] == [content_hash_of(r.store) for r in results] + [content_hash_of(extra)]
    code, _, err = run_main(monkeypatch, capsys, *base, "--data", str(results[0].store), "--name", "twice")
    assert code == 2 and "already a store of family tiny" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "twice").exists()
