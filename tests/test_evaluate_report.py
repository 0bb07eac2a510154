"""The report's table, sanity rows and plots on hand-made comparisons (no training)."""

import pandas as pd
import pytest
import torch

from metaprune.evaluate.plots import Plotter, short_label, short_labels
from metaprune.evaluate.report import Report, at_chance_units, build_report, sanity_cells, table_cells, write_plots
from metaprune.evaluate.results import ResultsDir, unit_name
from metaprune.evaluate.stats import compare
from metaprune.pruning.method import parse_method, parse_units


def _report(acc: dict, densities=(0.01,), seeds=(1, 2, 3), reference="snip@uss") -> Report:
    rows = [
        {"seed": s, "method": m, "density": d, "test_acc": v[i] - (0.1 if d != densities[0] else 0.0)}
        for d in densities
        for m, v in acc.items()
        for i, s in enumerate(seeds)
    ]
    df = pd.DataFrame(rows)
    return Report(df, compare(df, reference), df.iloc[:0], reference, "ttest", [])


ACC = {
    "snip@uss": [0.80, 0.82, 0.81],
    "snip@uss!shuffle": [0.75, 0.80, 0.78],
    "magnitude@iss": [0.90, 0.91, 0.92],
    "synflow@ims": [0.85, 0.87, 0.89],
}


def test_table_has_a_gap_column_per_ceiling_at_the_lowest_density():
    densities, headers, rows = table_cells(_report(ACC, densities=(0.01, 0.1)))
    assert densities == [0.01, 0.1]
    assert headers == ["gap to imp @0.01", "gap to synflow@ims @0.01"]
    by_method = {m: (cells, gaps) for m, cells, gaps in rows}
    assert [m for m, _, _ in rows][0] == "magnitude@iss"  # best first
    assert by_method["snip@uss"][0] == ["81.00 ± 2.48", "71.00 ± 2.48"]
    # imp − snip per seed 0.10, 0.09, 0.11: imp closes its own gap exactly, synflow@ims 0.06/0.10
    assert by_method["magnitude@iss"][1][0] == "100 % [100, 100]"
    assert by_method["synflow@ims"][1][0].startswith("60 % [")


def test_a_ceiling_spelled_with_its_rounds_is_still_a_ceiling():
    """synflow@ims10 (the harvest target's 10 rounds per level) closes the synflow@ims gap."""
    acc = {("synflow@ims10" if k == "synflow@ims" else k): v for k, v in ACC.items()}
    _, headers, rows = table_cells(_report(acc))
    assert headers == ["gap to imp @0.01", "gap to synflow@ims @0.01"]
    assert {m: gaps for m, _, gaps in rows}["synflow@ims10"][1] == "100 % [100, 100]"


def test_sanity_rows_name_the_method_its_losses_and_the_verdict():
    (row,) = sanity_cells(_report(ACC))
    method, density, shuffle, reinit, verdict = row
    # shuffle loses 0.05, 0.02, 0.03 (mean 3.33 points)
    assert (method, density, reinit, verdict) == ("snip@uss", 0.01, "", "pass")
    assert shuffle.startswith("3.33 ± ")
    assert sanity_cells(_report({k: v for k, v in ACC.items() if "!" not in k})) == []


def _labels(*spellings: str) -> dict[str, str]:
    return short_labels(parse_units(spellings))


def test_model_names_are_cut_where_they_still_differ():
    labels = _labels("learned:models/lgb-traj-bin@ums10", "learned:models/lgb-traj-rank@ums10#learned")
    assert list(labels.values()) == ["L:lgb-traj-b@ums10", "L:lgb-traj-r@ums10#learned"]


def test_short_labels():
    def label(text: str) -> str:
        return short_label(parse_method(text))

    assert label("learned:models/mlp-round-all-1a2b3c4d") == "L:mlp-roun"
    assert label("learned:models/abc>snip@uss~bimodal") == "L:abc>snip~bimodal"
    assert label("snip@uss!shuffle") == "snip!shuffle"
    assert label("magnitude@iss") == "imp" and label("snip>magnitude@iss") == "snip>mag@iss"
    assert label("magnitude>synflow@ums~snip") == "mag>synflow@ums~snip"
    assert label("magnitude@uss+w3") == "mag+w3" and label("learned:m/lgb@ums10+w3") == "L:lgb@ums10+w3"
    # two models sharing their first 8 characters are cut where they differ
    same = _labels("learned:models/mlp-round-a", "learned:models/mlp-round-b", "snip@uss")
    assert same == {
        "learned:models/mlp-round-a": "L:mlp-round-a",
        "learned:models/mlp-round-b": "L:mlp-round-b",
        "snip@uss": "snip",
    }
    # the same model in two folders still gets the full spelling
    twice = _labels("learned:a/mlp", "learned:b/mlp")
    assert twice == {"learned:a/mlp": "learned:a/mlp", "learned:b/mlp": "learned:b/mlp"}


# Six prunable weights: layer 0 holds four, layer 1 two. Each unit keeps weights 0, 2 and 5.
MASK = torch.tensor([True, False, True, False, False, True])
THETA0 = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, -0.6])


def _results(tmp_path, densities=(0.5,), cost: bool = False) -> ResultsDir:
    results = ResultsDir(tmp_path / "r")
    results.open_or_create({"network": "mlp:4", "dataset": "digits"})
    for d in densities:
        for seed, accs in zip((1, 2, 3), ((0.80, 0.60), (0.82, 0.61), (0.81, 0.65)), strict=True):
            for method, acc in zip(("snip@uss", "magnitude@uss"), accs, strict=True):
                row = {"seed": seed, "method": method, "density": d, "test_acc": acc, "kept_l0": 2, "kept_l1": 1}
                if cost:
                    row["cost_epochs"] = 3.0 if method == "snip@uss" else 30.0
                results.commit(seed, unit_name(method, d), row, MASK, THETA0[MASK])
    return results


def test_one_density_gives_a_ranked_plot_and_cost_only_when_recorded(tmp_path):
    results = _results(tmp_path)
    names = sorted(p.name for p in write_plots(build_report(results), results))
    assert names == ["accuracy_ranked.png", "kept_weight_distribution.png", "mask_jaccard.png"]
    with_cost = _results(tmp_path / "c", cost=True)
    plots = write_plots(build_report(with_cost), with_cost)
    assert "accuracy_vs_cost.png" in [p.name for p in plots]
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_density_replaces_the_ranked_plot(tmp_path):
    results = _results(tmp_path)
    write_plots(build_report(results), results)
    results = _results(tmp_path, densities=(0.5, 0.8))
    names = {p.name for p in write_plots(build_report(results), results)}
    assert "accuracy_vs_density.png" in names
    assert not (results.path / "accuracy_ranked.png").exists()


def test_kept_weights_are_split_per_layer_and_pooled_over_seeds(tmp_path):
    results = _results(tmp_path)
    plotter = Plotter(build_report(results), results)
    layers = plotter._kept_by_layer("snip@uss", 0.5, [1, 2, 3])
    assert len(layers) == 2
    assert layers[0].tolist() == pytest.approx([0.1, 0.3] * 3)
    assert layers[1].tolist() == pytest.approx([-0.6] * 3)


def test_the_printed_table_names_learned_models_by_their_folder_with_a_legend():
    from metaprune.cli.evaluate import _display

    legend: dict[str, str] = {}
    got = [
        _display(parse_method(m), legend)
        for m in (
            "learned:models/lgb-traj-bin-dyn@ums10+w3#from:movement@uss+w3!reinit",
            "learned:models/lgb-traj-round@ums10",
            "learned:models/a>synflow@ums~snip",
            "learned:other/lgb-traj-round@uss+w3",  # the same folder name elsewhere: spelled in full
            "snip@uss",
        )
    ]
    assert got == [
        "L:lgb-traj-bin-dyn@ums10+w3#from:movement@uss+w3!reinit",
        "L:lgb-traj-round@ums10",
        "L:a>synflow@ums~snip",
        "learned:other/lgb-traj-round@uss+w3",
        "snip@uss",
    ]
    assert legend == {
        "L:lgb-traj-bin-dyn": "learned:models/lgb-traj-bin-dyn",
        "L:lgb-traj-round": "learned:models/lgb-traj-round",
        "L:a": "learned:models/a",
    }


def test_live_units_are_the_mean_per_hidden_layer_at_the_lowest_density():
    from metaprune.evaluate.report import live_cells

    rep = _report(ACC, densities=(0.01, 0.1))
    live = {"snip@uss": (10, 40, 10), "magnitude@iss": (120, 90, 10)}
    for col, i in (("live_l0", 0), ("live_l1", 1), ("live_l2", 2)):
        pairs = zip(rep.rows["method"], rep.rows["seed"], strict=True)
        rep.rows[col] = [live.get(m, (0, 0, 0))[i] + (s - 2) * 2 * (i < 2) for m, s in pairs]
    header, cells = live_cells(rep)
    # seeds 1-3 add -2, 0, +2 to the hidden layers: the mean is the middle seed's; the output layer is left out
    assert header == "live units @0.01"
    assert cells["snip@uss"] == "10/40" and cells["magnitude@iss"] == "120/90"
    assert live_cells(_report(ACC)) == ("", {})  # rows without live units: no column


def test_dynamic_sparse_training_rows_are_named_for_a_section_of_their_own():
    from metaprune.evaluate.report import dynamic_methods

    rep = _report(ACC)
    assert dynamic_methods(rep) == set()  # rows written before the field: no section
    rep.rows["dynamic_sparse"] = rep.rows["method"] == "synflow@ims"
    assert dynamic_methods(rep) == {"synflow@ims"}


def test_at_chance_units_name_each_method_density_and_seed_that_learned_nothing():
    df = pd.DataFrame([
        {"seed": 1, "method": "snip@uss", "density": 0.01, "test_acc": 0.80, "at_chance": False, "collapsed": False},
        {"seed": 2, "method": "snip@uss", "density": 0.01, "test_acc": 0.10, "at_chance": True, "collapsed": True},
        {"seed": 3, "method": "snip@uss", "density": 0.01, "test_acc": 0.11, "at_chance": True, "collapsed": False},
        {"seed": 1, "method": "imp", "density": 0.01, "test_acc": 0.90, "at_chance": False, "collapsed": False},
        {"seed": 3, "method": "dense", "density": 1.0, "test_acc": 0.10, "at_chance": True, "collapsed": False},
    ])  # fmt: skip
    report = Report(df, pd.DataFrame(), df.iloc[:0], "snip@uss", "ttest", [])
    # seed 2's snip mask keeps no input→output path; seed 3's does, and its training learned nothing anyway
    assert at_chance_units(report) == [("dense", 1.0, [3], []), ("snip@uss", 0.01, [2, 3], [2])]
    # results committed before the flag existed carry no column, and report none
    old = Report(df.drop(columns="at_chance"), pd.DataFrame(), df.iloc[:0], "snip@uss", "ttest", [])
    assert at_chance_units(old) == []
