"""The report's table, sanity rows and plots on hand-made comparisons (no training)."""

import pandas as pd

from metaprune.evaluate.report import Report, sanity_cells, table_cells
from metaprune.evaluate.stats import compare


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


def test_sanity_rows_name_the_method_its_losses_and_the_verdict():
    (row,) = sanity_cells(_report(ACC))
    method, density, shuffle, reinit, verdict = row
    # shuffle loses 0.05, 0.02, 0.03 (mean 3.33 points)
    assert (method, density, reinit, verdict) == ("snip@uss", 0.01, "", "pass")
    assert shuffle.startswith("3.33 ± ")
    assert sanity_cells(_report({k: v for k, v in ACC.items() if "!" not in k})) == []
