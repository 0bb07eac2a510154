"""Leave one network out (``evaluate --preset transfer``) on the tiny family: the zero-shot model never
saw the held-out store, the table's roles and statistics, resuming, and the CLI's refusals."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from cli.evaluate import _transfer_cells
from metaprune.errors import MetapruneError
from metaprune.evaluate.transfer import ROLES, TransferConfig, run_transfer
from metaprune.fit.config import FitConfig
from metaprune.fit.persist import ModelCard
from metaprune.fit.stores import open_view
from metaprune.harvest.family import FAMILIES, Member, family_stores, harvest_family
from tests.test_fit_helpers import run_main

HELD_OUT = "mlp:6/digits"
SEEDS = (7100, 7101)
# three members, so that each family model sees two layouts and its learned budget may transfer
TINY = FAMILIES.get("tiny")
TINY3 = replace(TINY, name="tiny3", members=(*TINY.members, Member("mlp:10", "digits", 0.2)))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-family")
    harvest_family(TINY3, root=root, workers=1, device="cpu")
    return root


def _config() -> TransferConfig:
    fit = FitConfig.for_recipe("family", model="linear")
    return TransferConfig(TINY3, SEEDS, (HELD_OUT,), fit, learned_budget=True)


def test_leave_one_out_table_and_resume(tiny_root, tmp_path):
    events = []
    result = run_transfer(_config(), tmp_path, datasets_dir=tiny_root, workers=1, device="cpu", on_event=events.append)
    table = result.table
    assert list(table["role"]) == list(ROLES) and set(table["member"]) == {HELD_OUT}
    by = table.set_index("role")
    assert by.loc["target", "gap_synflow_ims"] == 1.0 and by.loc["synflow@ums", "gap_synflow_ims"] == 0.0
    assert math.isnan(by.loc["synflow@ums", "diff"]) and (table["n"] == len(SEEDS)).all()
    assert by.loc["family", "density"] == TINY3.member(HELD_OUT).density
    assert by.loc["family#learned", "method"] == by.loc["family", "method"] + "#learned"
    assert not math.isnan(by.loc["family#learned", "vs_own"])
    # zero-shot: the family model was fitted on the other members' stores only
    first, held, last = family_stores(TINY3, tiny_root)
    card = ModelCard.read(tmp_path / "models" / "without-mlp_6-digits")
    assert sorted(s.hash for s in card.stores) == sorted(open_view(p).content_hash for p in (first, last))
    assert open_view(held).content_hash not in {s.hash for s in card.stores}
    assert result.plot is not None and result.plot.is_file() and result.path.is_file()
    cells = _transfer_cells(table, "family#learned")  # the CLI's row: #learned columns after the family's
    assert len(cells) == 13 and cells[6] == f"{100 * by.loc['family#learned', 'acc']:.2f}"
    assert len(_transfer_cells(table, None)) == 11
    assert sum(e["event"] == "fit" for e in events) == 2
    again = []
    resumed = run_transfer(_config(), tmp_path, datasets_dir=tiny_root, workers=1, device="cpu", on_event=again.append)
    assert not [e for e in again if e["event"] == "fit"]  # nothing refitted or retrained
    starts = [e for e in again if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["units_done"] == starts[0]["units_total"] == len(SEEDS) * 7  # 6 + dense
    assert resumed.table["acc"].tolist() == table["acc"].tolist()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "transfer"], "accepted: --family NAME"),
        (["--family", "tiny"], "--family goes with --preset transfer"),
        (["--preset", "transfer", "--family", "tiny", "--sparsity", "0.1"], "--sparsity given with --preset transfer"),
        (["--preset", "transfer", "--family", "tiny", "--member", "vgg"], "no member 'vgg'"),
        (["--preset", "transfer", "--family", "zoo"], "unknown family 'zoo'"),
        (["--learned-budget", "-m", "snip"], "--learned-budget goes with --preset transfer"),
        (["--preset", "transfer", "--family", "tiny", "--learned-budget"], "3 or more members"),
    ],
)
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "results"
    code, _, err = run_main(monkeypatch, capsys, "evaluate", *args, "--out", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_learned_budget_needs_three_members():
    with pytest.raises(MetapruneError, match="3 or more members"):
        TransferConfig("tiny", SEEDS, learned_budget=True).held_out()


def test_missing_family_store_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    args = ["evaluate", "--preset", "transfer", "--family", "tiny", "--datasets-dir", str(tmp_path), "--out", str(out)]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "harvest --family tiny" in err
    assert not out.exists()
