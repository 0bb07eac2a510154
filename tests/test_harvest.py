"""Harvest store: schema, visibility of complete seeds, targets, lock, refusals, plan extension, disk full."""

import errno
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from metaprune.errors import MetapruneError, RuntimeFailure, StoreError
from metaprune.features import FEATURE_NAMES, compute_features
from metaprune.harvest import harvest, open_store
from metaprune.harvest.lock import StoreLock, lock_path
from metaprune.training import TrainConfig
from tests.conftest import assert_consolidated_current, tiny_harvest_config

TINY = tiny_harvest_config()
N_WEIGHTS = 64 * 12 + 12 * 8 + 8 * 10
METAPRUNE = str(Path(sys.executable).with_name("metaprune"))


def store_arrays(path):
    """Every seed variable of the complete seeds, as numpy (harvest_seconds excluded: it is a timing)."""
    with open_store(path) as s:
        ds = s.complete_dataset()
        return {
            "seed": ds["seed"].values.copy(),
            **{
                v: ds[v].values.copy()
                for v in ("features", "state_features", "target_round", "target_mask", "target_score", "task")
            },
        }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("harvest") / "base.zarr"
    result = harvest(TINY, range(4), out=path)
    return path, result


@pytest.fixture
def copy_of(base, tmp_path):
    def make(name="copy.zarr"):
        dst = tmp_path / name
        shutil.copytree(base[0], dst)
        return dst

    return make


def test_schema(base):
    path, result = base
    assert result.written == (0, 1, 2, 3) and result.complete == (0, 1, 2, 3)
    with open_store(path) as s:
        ds = s.dataset
        rows = round(0.1**0.5 * N_WEIGHTS)  # the weights state 1 keeps
        sizes = {"seed": 4, "weight": N_WEIGHTS, "feature": len(FEATURE_NAMES), "layer": 3, "state": 1, "row": rows}
        assert dict(ds.sizes) == {**sizes, "level": 2}  # the target's 2 levels
        assert ds["target_level_at_chance"].dims == ("seed", "level") and list(ds["level"].values) == [1, 2]
        assert ds["state_features"].dims == ("seed", "state", "row", "feature")
        assert s.feature_names == FEATURE_NAMES
        assert ds["features"].dims == ("seed", "weight", "feature") and ds["features"].dtype == np.float32
        assert ds["target_round"].dims == ("seed", "weight") and ds["target_round"].dtype == np.int16
        assert ds["target_mask"].dtype == bool and ds["target_score"].dtype == np.float32
        assert ds["complete"].dims == ("seed",) and ds["complete"].dtype == bool
        assert ds["harvest_seconds"].dims == ("seed",) and bool((ds["harvest_seconds"].values > 0).all())
        for c in ("layer_index", "row", "col", "kh", "kw"):
            assert c in ds.coords and ds[c].dims == ("weight",)
        assert ds["kh"].values.min() == -1 and ds["kw"].values.max() == -1  # MLP: no kernel positions
        for c in ("layer_name", "layer_offset", "layer_size"):
            assert ds[c].dims == ("layer",)
        table = s.layer_table()
        assert list(table["name"]) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
        assert list(table["offset"]) == [0, 768, 864] and list(table["size"]) == [768, 96, 80]
        a = s.attrs
        assert a["schema_version"] == 2 and a["network"] == "mlp:12-8" and a["dataset"] == "digits"
        assert a["config"] == json.loads(TINY.validate().to_json())
        assert a["feature_spec"]["names"] == list(FEATURE_NAMES)
        assert a["target_spec"]["method"] == "synflow@ims3" and a["planned_seeds"] == [0, 1, 2, 3]
        assert "torch" in a["package_versions"] and "zarr" in a["package_versions"]
    # one seed per chunk, compressed with zstd
    g = zarr.open_group(path, mode="r")
    assert g["features"].chunks == (1, N_WEIGHTS, 1)
    assert g["target_round"].chunks[0] == 1 and g["complete"].chunks == (1,)
    assert "zstd" in json.dumps(json.loads((path / "features" / "zarr.json").read_text())["codecs"])


def test_plain_xarray_open_is_quiet(base):
    # no "consolidated metadata" warning, outside pytest's filters too, and the data of every seed
    ds = assert_consolidated_current(base[0])
    assert ds.sizes["seed"] == 4 and bool(ds["complete"].values.all())
    assert_same(
        {k: ds[k].values for k in ("features", "target_round")},
        {k: v for k, v in store_arrays(base[0]).items() if k in ("features", "target_round")},
    )


def test_a_seed_commit_writes_no_metadata(copy_of):
    """Why consolidating after metadata changes suffices: writing a seed (data, then its complete flag)
    leaves every zarr.json byte for byte, so the consolidated copy stays valid while seeds are written."""
    import hashlib

    from metaprune.harvest.store import write_seed

    path = copy_of()

    def metadata():
        return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in path.rglob("zarr.json")}

    before = metadata()
    zarr.open_group(path, mode="r+")["complete"][2] = False
    with open_store(path) as s:
        ds = s.dataset.isel(seed=2)
        data = {k: ds[k].values for k in ("features", "state_features", "target_round", "target_mask", "target_score")}
    write_seed(path, 2, data, seconds=1.0)
    assert metadata() == before and "consolidated_metadata" in (path / "zarr.json").read_text()
    assert_consolidated_current(path)


def test_targets(base):
    path, _ = base
    k = round(0.1 * N_WEIGHTS)
    with open_store(path) as s:
        for _seed, x, t in s.iter_seeds():
            assert x.shape == (N_WEIGHTS, len(FEATURE_NAMES)) and x.dtype == np.float32
            assert int(t["target_mask"].sum()) == k
            assert t["target_round"].min() >= 1 and t["target_round"].max() <= TINY.levels + 1
            assert (t["target_round"][t["target_mask"]] == TINY.levels + 1).all()
            assert (t["target_round"][~t["target_mask"]] <= TINY.levels).all()
            # scores of the last round, taken on the mask before it: weights pruned at earlier levels score 0
            assert (t["target_score"][t["target_round"] < TINY.levels] == 0).all()
            assert np.isfinite(t["target_score"]).all() and t["target_score"].sum() == pytest.approx(1.0, rel=1e-4)


def test_features_are_the_one_function(base):
    """The stored features are exactly what compute_features gives at prune time."""
    from metaprune.datasets import load_dataset
    from metaprune.networks import build_network
    from metaprune.pruning.apply import prune_data_for
    from metaprune.pruning.warmup import warm_up

    path, _ = base
    splits = load_dataset("digits")
    net = build_network("mlp:12-8", splits.input_shape, splits.num_classes, 2)
    record = warm_up(net, splits, TINY.train, TINY.warmup_epochs, 2)  # the warm-up a learned scorer runs
    x = compute_features(
        net, prune_data_for(splits, 2), 2, density=0.1, ums_rounds=TINY.ums_rounds, warmup=record
    ).numpy()
    with open_store(path) as s:
        ((_, stored, _),) = list(s.iter_seeds([2]))
        assert np.array_equal(stored, x)
        ((_, sub, _),) = list(s.iter_seeds([2], features=["activations", "snip"]))
        idx = [FEATURE_NAMES.index(n) for n in s.select(["activations", "snip"])]
        assert np.array_equal(sub, x[:, idx])


def test_only_complete_seeds_are_visible(copy_of):
    path = copy_of()
    zarr.open_group(path, mode="r+")["complete"][1] = False
    with open_store(path) as s:
        assert s.complete_seeds == (0, 2, 3) and s.planned_seeds == (0, 1, 2, 3)
        assert [seed for seed, _, _ in s.iter_seeds()] == [0, 2, 3]
        assert s.complete_dataset().sizes["seed"] == 3
        with pytest.raises(StoreError, match="seed 1 .* not complete"):
            list(s.iter_seeds([1]))


def test_rerun_skips_complete_and_redoes_incomplete(copy_of):
    path = copy_of()
    before = store_arrays(path)
    zarr.open_group(path, mode="r+")["complete"][3] = False
    res = harvest(TINY, range(4), out=path)
    assert res.written == (3,) and res.skipped == (0, 1, 2)
    assert_same(store_arrays(path), before)


def test_extension_appends_seeds(copy_of, tmp_path):
    path = copy_of()
    before = store_arrays(path)
    res = harvest(TINY, range(6), out=path)
    assert res.written == (4, 5) and res.planned == (0, 1, 2, 3, 4, 5)
    after = store_arrays(path)
    for k in before:
        assert np.array_equal(after[k][:4], before[k][:4], equal_nan=before[k].dtype.kind == "f"), k
    assert after["task"].tolist() == [0, 0, 1, 1, 2, 2]
    assert assert_consolidated_current(path).sizes["seed"] == 6  # the extension was consolidated
    # the appended population {4, 5} is what a fresh harvest of 0-5 trains: identical numbers
    fresh = harvest(TINY, [4, 5], out=tmp_path / "fresh.zarr")
    assert fresh.written == (4, 5)
    f = store_arrays(tmp_path / "fresh.zarr")
    for k in ("features", "target_round", "target_mask", "target_score"):
        assert np.array_equal(after[k][4:], f[k], equal_nan=True), k


def test_live_lock_refuses(copy_of):
    path = copy_of()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(path).write_text(
            json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "time": "now"})
        )
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            harvest(TINY, range(4), out=path)
        assert lock_path(path).exists()  # someone else's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over(copy_of):
    path = copy_of()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(path).write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(), "time": "t"}))
    res = harvest(TINY, range(4), out=path)
    assert any("stale lock" in n for n in res.notes)
    assert not lock_path(path).exists()


def test_lock_from_another_host_refuses(tmp_path):
    store = tmp_path / "s.zarr"
    lock_path(store).write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": "t"}))
    with pytest.raises(StoreError, match="elsewhere"):
        StoreLock(store).acquire()


def test_config_mismatch_names_the_field(copy_of):
    path = copy_of()
    from dataclasses import replace

    with pytest.raises(StoreError, match=r"levels: store=2, requested=3"):
        harvest(replace(TINY, levels=3), range(4), out=path)
    with pytest.raises(StoreError, match=r"train\.epochs: store=2, requested=5"):
        harvest(replace(TINY, train=TrainConfig(epochs=5, patience=2)), range(4), out=path)


def test_trajectory_states_are_the_features_of_theta0_under_the_targets_masks(base):
    """State s: θ0 under the mask after s target levels (alive = target_round > s), features recomputed
    there with the harvest's own function, stored for the alive weights only (row r = r-th alive weight)."""
    from metaprune.datasets import load_dataset
    from metaprune.features import compute_features
    from metaprune.networks import build_network
    from metaprune.pruning.apply import prune_data_for
    from metaprune.pruning.warmup import warm_up

    path, _ = base
    cfg = TINY.validate()
    splits = load_dataset("digits")
    with open_store(path) as s:
        assert s.states == (0, 1)
        np.testing.assert_allclose(s.dataset["state_density"].values, [0.1**0.5])
        alive, x, t = s.read_state(1, 1)
        assert np.array_equal(alive, np.flatnonzero(t["target_round"] > 1))
        assert 0 < alive.size < N_WEIGHTS and alive.size == round(0.1**0.5 * N_WEIGHTS)
        full = s.dataset["state_features"][s.planned_seeds.index(1), 0].values
        assert full.shape[0] == alive.size and np.isfinite(full).all()  # state 1 fills every row
        net = build_network(cfg.network, splits.input_shape, splits.num_classes, 1)
        record = warm_up(net, splits, cfg.train, cfg.warmup_epochs, 1)
        mask = torch.from_numpy(t["target_round"] > 1)
        expected = compute_features(
            net, prune_data_for(splits, 1, cfg.per_class), 1, density=cfg.density, ums_rounds=cfg.ums_rounds,
            mask=mask, warmup=record,
        ).numpy()[alive]
        np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-7)
        _, x0, _ = s.read_state(1, 0)
        assert x0.shape == (N_WEIGHTS, len(FEATURE_NAMES))
        with pytest.raises(StoreError, match="state 2 is not in store"):
            s.read_state(1, 2)


def test_later_states_keep_fewer_rows_and_pad_with_nan(tmp_path):
    from metaprune.features import compute_features as features_of
    from metaprune.harvest.task import trajectory_features
    from metaprune.networks import build_network
    from metaprune.pruning.apply import prune_data_for

    cfg = replace(TINY, levels=3).validate()
    path = tmp_path / "three.zarr"
    harvest(cfg, [0], out=path)
    with open_store(path) as s:
        assert s.states == (0, 1, 2)
        alive, x, t = s.read_state(0, 2)
        full = s.dataset["state_features"][0, 1].values
        assert np.isfinite(full[: alive.size]).all() and np.isnan(full[alive.size :]).all()
        assert alive.size == round(0.1 ** (2 / 3) * N_WEIGHTS) < full.shape[0]
    from metaprune.datasets import load_dataset

    splits = load_dataset("digits")
    net = build_network(cfg.network, splits.input_shape, splits.num_classes, 0)
    data = prune_data_for(splits, 0, cfg.per_class)
    removed = torch.from_numpy(t["target_round"].astype(np.int64))
    states = trajectory_features(net, data, 0, cfg, removed, None)
    assert states.shape[:2] == (2, round(0.1 ** (1 / 3) * N_WEIGHTS))
    mask = removed > 2
    expected = features_of(net, data, 0, density=cfg.density, ums_rounds=cfg.ums_rounds, mask=mask, names=["magnitude"])
    np.testing.assert_allclose(x[:, 0], expected.numpy()[mask.numpy(), 0], rtol=1e-6)
    np.testing.assert_allclose(states[1, : alive.size, 0], x[:, 0], rtol=1e-6)


def test_a_version_1_store_still_opens_and_is_named_old(copy_of):
    """A store of schema version 1 (no state dim) opens for reading; adding seeds to it is refused."""
    import shutil as _shutil

    from metaprune.harvest.inspect import inspect_store
    from metaprune.harvest.store import consolidate

    path = copy_of()
    g = zarr.open_group(path, mode="r+", use_consolidated=False)
    for name in ("state_features", "state", "state_density"):
        _shutil.rmtree(path / name)
    g.attrs["schema_version"] = 1
    consolidate(path)
    with open_store(path) as s:
        assert s.states == (0,) and s.schema_version == 1
        assert len(list(s.iter_seeds())) == 4
    info = inspect_store(path)
    assert info["schema_version"] == 1 and "old" in info["schema_note"]
    with pytest.raises(StoreError, match=r"schema version 1 \(an old store without trajectory states\)"):
        harvest(TINY, range(4), out=path)


def test_older_schema_refused(copy_of):
    path = copy_of()
    g = zarr.open_group(path, mode="r+")
    g.attrs["schema_version"] = 0
    with pytest.raises(StoreError, match="schema version 0"):
        open_store(path)
    with pytest.raises(StoreError, match="schema version 0"):
        harvest(TINY, range(4), out=path)


def test_out_that_is_not_a_store(tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a harvest store"):
        harvest(TINY, [0], out=other)
    assert (other / "readme.txt").read_text() == "hello" and not lock_path(other).exists()
    with pytest.raises(StoreError, match="no harvest store"):
        open_store(tmp_path / "missing.zarr")


def test_empty_folder_is_accepted(tmp_path):
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    res = harvest(TINY, [0], out=empty)
    assert res.complete == (0,)


def test_disk_full_leaves_seed_incomplete(copy_of, monkeypatch):
    import zarr.storage._local as local

    path = copy_of()
    zarr.open_group(path, mode="r+")["complete"][2] = False
    zarr.open_group(path, mode="r+")["complete"][3] = False
    real_put = local._put

    def full(p, value, exclusive=False):
        if "features" in str(p) and "/c/3/" in str(p):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(p, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(RuntimeFailure, match="seed 3 .*No space left.*stays incomplete"):
        harvest(TINY, range(4), out=path)
    with open_store(path) as s:
        assert s.complete_seeds == (0, 1, 2)
        assert len(list(s.iter_seeds())) == 3
    monkeypatch.setattr(local, "_put", real_put)
    assert harvest(TINY, range(4), out=path).written == (3,)


def test_bad_values(tmp_path):
    from dataclasses import replace

    with pytest.raises(MetapruneError, match="unknown network"):
        harvest(replace(TINY, network="nope"), [0], out=tmp_path / "a.zarr")
    with pytest.raises(MetapruneError, match="unknown dataset"):
        harvest(replace(TINY, dataset="nope"), [0], out=tmp_path / "a.zarr")
    with pytest.raises(MetapruneError, match="bad density 1.5"):
        harvest(replace(TINY, density=1.5), [0], out=tmp_path / "a.zarr")
    with pytest.raises(MetapruneError, match="levels"):
        harvest(replace(TINY, levels=0), [0], out=tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    cases = [
        (["harvest", "--seeds", "7-3"], "bad seed range"),
        (["harvest", "-n", "mlp:12-8", "-d", "digits", "--out", str(tmp_path / "x")], "not a harvest store"),
        (["inspect", str(tmp_path / "x")], "not a harvest store"),
    ]
    for args, needle in cases:
        proc = subprocess.run([METAPRUNE, *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_inspect(base):
    from metaprune.harvest.inspect import inspect_store

    info = inspect_store(base[0])
    assert info["dims"]["seed"] == 4 and info["complete"] == [0, 1, 2, 3]
    assert info["target"]["kept_per_seed"] == [round(0.1 * N_WEIGHTS)] * 4
    assert sum(layer["kept_mean"] for layer in info["target"]["layers"]) == pytest.approx(round(0.1 * N_WEIGHTS))
    rows = {r["feature"]: r for r in info["correlation"]["rows"]}
    assert set(rows) == set(FEATURE_NAMES)
    assert -1 <= rows["magnitude"]["spearman_round"] <= 1


def test_a_target_level_that_trains_to_chance_is_named(tmp_path):
    # random@iss at density 0.004 of a 64-12-8-10 MLP: level 1 trains the dense network, and the last level
    # trains a random mask of 24 of the 944 weights, which answers one class for every image
    events = []
    cfg = tiny_harvest_config(target="random@iss", density=0.004, levels=3)
    result = harvest(cfg, seeds=[0, 1], out=tmp_path / "s.zarr", workers=1, progress=events.append)
    chance = {s.seed: s.levels_at_chance for s in result.seed_stats}
    assert set(chance) == {0, 1}
    assert all(1 not in levels and 3 in levels for levels in chance.values())
    assert result.to_dict()["seeds"][0]["levels_at_chance"] == list(chance[result.seed_stats[0].seed])
    note = next(n for n in result.notes if "trained to chance" in n)
    assert "seed 0 at level(s)" in note and "seed 1 at level(s)" in note
    assert {"event": "note", "text": note} in events  # the CLI prints the note events as they come
    with open_store(tmp_path / "s.zarr") as store:
        assert store.levels_at_chance() == chance  # recorded with each seed
    from metaprune.harvest.inspect import inspect_store

    assert inspect_store(tmp_path / "s.zarr")["levels_at_chance"] == {str(k): list(v) for k, v in chance.items()}
    # a resumed harvest computes seed 2 only, and still names the seeds of the first run
    again = harvest(cfg, seeds=[0, 1, 2], out=tmp_path / "s.zarr", workers=1)
    assert [s.seed for s in again.seed_stats] == [2]
    note = next(n for n in again.notes if "trained to chance" in n)
    assert all(f"seed {seed} at level(s)" in note for seed in (0, 1))
    assert ("seed 2 at level(s)" in note) == bool(again.seed_stats[0].levels_at_chance)


def test_the_chance_note_names_only_seeds_with_a_level_at_chance():
    from metaprune.harvest.run import levels_at_chance_note

    note = levels_at_chance_note({3: (), 4: (2,)})
    assert "seed 4 at level(s) 2:" in note and "seed 3" not in note
    assert levels_at_chance_note({3: ()}) is None and levels_at_chance_note({}) is None
