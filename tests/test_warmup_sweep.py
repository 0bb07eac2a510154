"""The equal-cost warm-up baselines: magnitude increase (Zhou et al. 2019), warm-ups in SGD steps (+wNs),
IMP whose levels share a budget (imp+wL), gradual pruning (magnitude@gss+wL), the warmup-sweep preset and
its plot; pinned against hand-computed values and a textbook loop on tiny networks."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout, prunable_weights
from metaprune.pruning.apply import level_steps, prune_seeds, warmup_epochs
from metaprune.pruning.masks import make_mask
from metaprune.pruning.method import parse_method
from metaprune.pruning.schedules import ScheduleConfig, exponential_densities
from metaprune.pruning.scorers import PruneData, score
from metaprune.pruning.warmup import warm_up
from metaprune.seeds import generator
from metaprune.training import TrainConfig

from .conftest import batch_order, synthetic_splits

SPEC = "mlp:6"
TRAIN = TrainConfig(batch_size=32, epochs=3, lr=0.1)  # 80 examples: 3 steps per epoch


def _flat(net):
    return torch.cat([w.detach().reshape(-1) for w in prunable_weights(net)])


# ------------------------------------------------------------------------------ magnitude increase


def test_mag_increase_is_the_growth_of_each_magnitude():
    """|θ_E| − |θ0| on a 2-2-2 MLP with hand-set weights; a pruned weight scores 0."""
    splits = synthetic_splits(n_train=8, shape=(1, 1, 2), classes=2)
    net = build_network("mlp:2", splits.input_shape, 2, 0)
    record = warm_up(net, splits, TrainConfig(batch_size=8, epochs=1), 1, seed=0)
    theta0 = [[0.5, -0.5], [0.2, -0.1]], [[0.3, 0.3], [-0.4, 0.0]]
    theta_e = [[0.7, -0.1], [-0.6, -0.1]], [[0.0, 0.5], [0.4, -0.2]]
    warmed = copy.deepcopy(net)
    with torch.no_grad():
        for layer, w0, we in zip(range(2), theta0, theta_e, strict=True):
            net.layers[layer].weight.copy_(torch.tensor(w0))
            warmed.layers[layer].weight.copy_(torch.tensor(we))
    record = replace(record, network=warmed, theta0=_flat(net).double())
    data = PruneData(splits.train_x, splits.train_y, record)
    expected = torch.tensor([0.2, -0.4, 0.4, 0.0, -0.3, 0.2, 0.0, 0.2])
    torch.testing.assert_close(score("mag_increase", warmed, None, data, 0), expected)
    mask = torch.ones(8, dtype=torch.bool)
    mask[2] = False
    torch.testing.assert_close(score("mag_increase", warmed, mask, data, 0), expected * mask)
    with pytest.raises(MetapruneError, match="'mag_increase' reads a warm-up"):
        score("mag_increase", net, None, PruneData(splits.train_x, splits.train_y), 0)
    with pytest.raises(MetapruneError, match=r"^method 'mag_increase': .*e\.g\. mag_increase\+w3$"):
        parse_method("mag_increase")


def test_mag_increase_ticket_keeps_the_weights_that_grew_most_and_trains_from_theta0():
    splits = synthetic_splits(n_train=80)
    ticket = prune_seeds(parse_method("mag_increase+w1"), SPEC, splits, 0.2, (4,), train=TRAIN)[0]
    theta0 = build_network(SPEC, splits.input_shape, splits.num_classes, 4)
    assert torch.equal(_flat(ticket.net), _flat(theta0))
    record = warm_up(theta0, splits, TRAIN, 1, seed=4)
    growth = (_flat(record.network).double().abs() - _flat(theta0).double().abs()).float()
    expected = make_mask(growth, prunable_layout(theta0), 0.2, generator=generator(4, "tie_break", 0))
    assert torch.equal(ticket.mask, expected)
    assert ticket.cost_epochs == pytest.approx(1.0)


# ---------------------------------------------------------------------------------- steps (+wNs)


def test_a_warm_up_in_steps_is_that_many_sgd_steps():
    splits = synthetic_splits(n_train=80)
    method = parse_method("delta+w3s")
    assert method.warmup == 3 and method.warmup_in_steps and method.canonical() == "delta@uss+w3s"
    assert parse_method(method.canonical()) == method and method.slug() == "delta-uss+w3s"
    assert method.label(compact=True) == "delta+w3s" != parse_method("delta+w3").label(compact=True)
    assert warmup_epochs(method, splits, TRAIN) == pytest.approx(1.0)  # 3 steps per epoch
    assert warmup_epochs(parse_method("delta+w4s"), splits, TRAIN) == pytest.approx(4 / 3)
    # 3 steps are the 1-epoch warm-up: the same trajectory, the same mask
    by_steps = prune_seeds(method, SPEC, splits, 0.2, (2,), train=TRAIN)[0]
    by_epochs = prune_seeds(parse_method("delta+w1"), SPEC, splits, 0.2, (2,), train=TRAIN)[0]
    assert torch.equal(by_steps.mask, by_epochs.mask) and by_steps.cost_epochs == pytest.approx(1.0)
    record = warm_up(build_network(SPEC, splits.input_shape, 3, 2), splits, TRAIN, 4, seed=2, in_steps=True)
    assert record.steps == 4 and record.cost_epochs == pytest.approx(4 / 3) and record.epochs == pytest.approx(4 / 3)
    for text, words in (("snip+w1.5s", "whole number of SGD steps"), ("snip+w0s", "whole number")):
        with pytest.raises(MetapruneError, match=words):
            parse_method(text)
    with pytest.raises(MetapruneError, match="longer than the training config's 3 epochs"):
        prune_seeds(parse_method("delta+w10s"), SPEC, splits, 0.2, (2,), train=TRAIN)


# ------------------------------------------------------------------------------ IMP with a budget


def _textbook_level(net, mask, splits, steps, seed, lr, batch):
    """Plain SGD of the masked θ0 (float64, autograd) for ``steps`` steps on the ``data_order`` stream."""
    return _flat(_textbook_sgd(net, mask, splits, steps, seed, lr, batch, "data_order"))


def _textbook_sgd(net, mask, splits, steps, seed, lr, batch, stream):
    """A copy of ``net`` under ``mask`` after ``steps`` plain SGD steps (float64) on ``stream`` of ``seed``."""
    net = copy.deepcopy(net).double()
    weights = prunable_weights(net)
    masks = prunable_layout(net).split(mask)
    with torch.no_grad():
        for w, m in zip(weights, masks, strict=True):
            w.mul_(m.reshape(w.shape).double())
    x, y = splits.train_x.double(), splits.train_y
    for idx in batch_order(x.shape[0], batch, steps, seed, "data_order"):
        grads = torch.autograd.grad(F.cross_entropy(net(x[idx]), y[idx]), list(net.parameters()))
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads, strict=True):
                p.sub_(lr * g)
            for w, m in zip(weights, masks, strict=True):
                w.mul_(m.reshape(w.shape).double())
    return net


def test_imp_levels_share_the_budget_and_each_scores_where_its_steps_end():
    """imp+w2 with 2 levels on 3 steps per epoch: each level trains 3 steps from θ0 under the mask so far,
    then keeps the largest |θ| of the alive weights; the ticket trains from θ0 and costs 2 epochs."""
    splits = synthetic_splits(n_train=80)
    schedule = ScheduleConfig(levels=2)
    method = parse_method("imp+w2")
    assert method.canonical() == "magnitude@iss+w2" and method.label(compact=True) == "imp+w2"
    ticket = prune_seeds(method, SPEC, splits, 0.3, (6,), schedule=schedule, train=TRAIN, dtype=torch.float64)[0]
    theta0 = build_network(SPEC, splits.input_shape, splits.num_classes, 6)
    layout = prunable_layout(theta0)
    mask = torch.ones(layout.total, dtype=torch.bool)
    for level, density in enumerate(exponential_densities(1.0, 0.3, 2), start=1):
        trained = _textbook_level(theta0, mask, splits, 3, 6, TRAIN.lr, TRAIN.batch_size)
        gen = generator(6, "tie_break", level)
        mask = make_mask(trained.abs().float(), layout, density, alive=mask, generator=gen)
    assert torch.equal(ticket.mask, mask)
    assert torch.equal(_flat(ticket.net), _flat(theta0))
    assert ticket.cost_epochs == pytest.approx(2.0)
    assert [r.epochs_trained for r in ticket.outcome.level_results] == [1, 1]
    assert level_steps(method, 2, splits, TRAIN) == [3, 3]


def test_gradual_levels_train_on_from_where_the_last_ended():
    """magnitude@gss+w2 (gradual magnitude pruning, Zhu and Gupta 2017) with 2 levels on 3 steps per epoch:
    level 1 trains θ0 for 3 steps; level 2 trains those weights on, under the level-1 mask, for 3 more on
    the level's own data order; each level keeps the largest |θ| of the alive weights. The ticket still
    trains from θ0, costs the 2-epoch budget, and differs from IMP's rewinding (imp+w2) on the same θ0."""
    splits = synthetic_splits(n_train=80)
    schedule = ScheduleConfig(levels=2)
    method = parse_method("magnitude@gss+w2")
    assert method.iterative and not method.rewinds and not method.multi_shot
    assert parse_method("synflow@gms10+w2").multi_shot and parse_method("imp").rewinds
    ticket = prune_seeds(method, SPEC, splits, 0.3, (6,), schedule=schedule, train=TRAIN, dtype=torch.float64)[0]
    theta0 = build_network(SPEC, splits.input_shape, splits.num_classes, 6)
    layout = prunable_layout(theta0)
    mask = torch.ones(layout.total, dtype=torch.bool)
    state = theta0
    for level, density in enumerate(exponential_densities(1.0, 0.3, 2), start=1):
        state = _textbook_sgd(state, mask, splits, 3, 6, TRAIN.lr, TRAIN.batch_size, f"gradual_order/{level}")
        gen = generator(6, "tie_break", level)
        mask = make_mask(_flat(state).abs().float(), layout, density, alive=mask, generator=gen)
    assert torch.equal(ticket.mask, mask)
    assert torch.equal(_flat(ticket.net), _flat(theta0))
    assert ticket.cost_epochs == pytest.approx(2.0)
    rewound = prune_seeds(parse_method("imp+w2"), SPEC, splits, 0.3, (6,), schedule=schedule, train=TRAIN)[0]
    assert not torch.equal(rewound.mask, ticket.mask)
    # magnitude does not change between rounds that do not train: a level's UMS rounds keep its one-shot top-k
    rounds = prune_seeds(
        parse_method("magnitude@gms5+w2"), SPEC, splits, 0.3, (6,), schedule=schedule, train=TRAIN, dtype=torch.float64
    )[0]
    assert torch.equal(rounds.mask, ticket.mask)


def test_gradual_movement_accumulates_over_every_level_so_far():
    """movement@gss+w2 (movement pruning as Sanh et al. 2020 run it: scores accumulated while pruning
    gradually) with 2 levels of 3 steps: level l trains on from the last level's end, and prunes by
    −Σ_t g_t ⊙ θ_t summed over the steps of levels 1..l."""
    splits = synthetic_splits(n_train=80)
    schedule = ScheduleConfig(levels=2)
    ticket = prune_seeds(
        parse_method("movement@gss+w2"), SPEC, splits, 0.3, (5,), schedule=schedule, train=TRAIN, dtype=torch.float64
    )[0]
    theta0 = build_network(SPEC, splits.input_shape, splits.num_classes, 5)
    layout = prunable_layout(theta0)
    mask = torch.ones(layout.total, dtype=torch.bool)
    net = copy.deepcopy(theta0).double()
    weights = prunable_weights(net)
    movement = torch.zeros(layout.total, dtype=torch.float64)
    x, y = splits.train_x.double(), splits.train_y
    for level, density in enumerate(exponential_densities(1.0, 0.3, 2), start=1):
        parts = layout.split(mask)
        for idx in batch_order(80, TRAIN.batch_size, 3, 5, f"gradual_order/{level}"):
            with torch.no_grad():
                for w, m in zip(weights, parts, strict=True):
                    w.mul_(m.reshape(w.shape).double())
            grads = torch.autograd.grad(F.cross_entropy(net(x[idx]), y[idx]), list(net.parameters()))
            g_w = dict(zip([id(p) for p in net.parameters()], grads, strict=True))
            movement -= torch.cat([(g_w[id(w)] * w).detach().reshape(-1) for w in weights])
            with torch.no_grad():
                for p, g in zip(net.parameters(), grads, strict=True):
                    p.sub_(TRAIN.lr * g)
        mask = make_mask(movement.float(), layout, density, alive=mask, generator=generator(5, "tie_break", level))
    assert torch.equal(ticket.mask, mask)
    assert torch.equal(_flat(ticket.net), _flat(theta0)) and ticket.cost_epochs == pytest.approx(2.0)
    # a rewinding schedule has no trajectory of its own to read
    with pytest.raises(MetapruneError, match=r"or movement@gss\+wE"):
        parse_method("movement@iss+w2")


def test_level_budgets_split_whole_steps_evenly_and_refuse_less_than_a_step_a_level():
    splits = synthetic_splits(n_train=80)  # 3 steps per epoch
    assert level_steps(parse_method("imp+w100s"), 10, splits, TrainConfig(epochs=100)) == [10] * 10
    assert level_steps(parse_method("imp+w3"), 4, splits, TRAIN) == [2, 2, 2, 3]  # 9 steps: ⌊9l/4⌋
    assert level_steps(parse_method("imp"), 4, splits, TRAIN) is None
    with pytest.raises(MetapruneError, match="budget of 3 SGD steps cannot train its 4 levels"):
        level_steps(parse_method("imp+w3s"), 4, splits, TRAIN)
    with pytest.raises(MetapruneError, match="training budget its levels share"):
        parse_method("movement@iss+w3")


# ---------------------------------------------------------------------------------- the preset


def test_the_warmup_sweep_preset_lists_the_equal_cost_methods_at_every_length(tmp_path):
    from metaprune.evaluate.config import preset_methods

    methods, densities, extra = preset_methods("warmup-sweep", tmp_path / "no-models")
    spelled = {m.canonical() for m in methods}
    assert len(spelled) == len(methods) == 3 + 1 + 4 * 10
    assert {"magnitude@uss", "snip@ums", "synflow@ums"} <= spelled  # length 0: at init
    assert "magnitude@iss" in spelled  # full IMP, the ceiling (far more costly: a level in the plot)
    for length in ("+w100s", "+w300s", "+w1", "+w3"):
        for name in ("movement@uss", "delta@uss", "magnitude@uss", "mag_increase@uss", "snip@ums", "synflow@ums"):
            assert name + length in spelled
        assert "magnitude@iss" + length in spelled  # IMP whose levels share the length
        for gradual in ("magnitude@gss", "movement@gss", "delta@gss"):  # gradual pruning over the length
            assert gradual + length in spelled
    assert len({m.slug() for m in methods}) == len(methods)
    assert densities == (0.005, 0.01) and extra["reference"] == "synflow@ums"


def test_rows_record_the_warm_up_length_in_epochs_and_the_budget_as_cost(tmp_path):
    from metaprune.evaluate.api import build_config
    from metaprune.evaluate.results import ResultsDir
    from metaprune.evaluate.run import run_evaluation

    config = build_config(
        network="mlp:8-4",
        dataset="digits",  # 1,257 training examples, batch 64: 20 steps per epoch
        methods=("magnitude+w10s", "imp+w1"),
        reference="magnitude",
        densities=(0.1,),
        seeds=(1,),
        train=TrainConfig(epochs=1),
        schedule=ScheduleConfig(levels=2),
    )
    run_evaluation(config, tmp_path / "r")
    rows = ResultsDir(tmp_path / "r").rows().set_index("method")
    assert rows.loc["magnitude@uss+w10s", "warmup"] == pytest.approx(0.5)  # the plot's x, in epochs
    assert rows.loc["magnitude@uss+w10s", "cost_epochs"] == pytest.approx(0.5)
    assert rows.loc["magnitude@iss+w1", "warmup"] == rows.loc["magnitude@iss+w1", "cost_epochs"] == pytest.approx(1)
    assert rows.loc["magnitude@uss", "warmup"] == 0.0


SWEEP = {  # method: (warm-up length in epochs, accuracies of seeds 1-3)
    "magnitude@uss": (0.0, (0.60, 0.62, 0.61)),
    "magnitude@uss+w10s": (0.5, (0.70, 0.71, 0.69)),
    "magnitude@uss+w1": (1.0, (0.75, 0.74, 0.76)),
    "magnitude@iss+w10s": (0.5, (0.72, 0.70, 0.71)),
    "magnitude@iss+w1": (1.0, (0.80, 0.79, 0.81)),
    "magnitude@iss": (0.0, (0.90, 0.91, 0.92)),  # full IMP: no warm-up length
}


def _sweep_results(path, methods):
    from metaprune.evaluate.results import ResultsDir, unit_name

    results = ResultsDir(path)
    results.open_or_create({"network": "mlp:4", "dataset": "digits"})
    mask = torch.tensor([True, False, True, False, True, True])
    for method in methods:
        x, accs = SWEEP[method]
        for seed, acc in zip((1, 2, 3), accs, strict=True):
            row = {"seed": seed, "method": method, "density": 0.5, "test_acc": acc, "warmup": x, "kept_l0": 4}
            results.commit(seed, unit_name(method, 0.5), row, mask, torch.arange(6.0)[mask])
    return results


def test_the_warm_up_plot_draws_a_line_per_family_and_only_for_a_sweep(tmp_path):
    from metaprune.evaluate.plots import warmup_series
    from metaprune.evaluate.report import build_report, write_plots

    results = _sweep_results(tmp_path / "r", SWEEP)
    rep = build_report(results, "magnitude@uss")
    block = rep.comparison.assign(x=[SWEEP[m][0] for m in rep.comparison["method"]])
    lines, levels = warmup_series(block, rep.units)
    assert {f: [p[0] for p in points] for f, points in lines.items()} == {"mag": [0.0, 0.5, 1.0], "imp": [0.5, 1.0]}
    assert [p[1] for p in lines["imp"]] == pytest.approx([0.71, 0.80])
    assert levels == {"imp (full training)": (pytest.approx(0.91), "magnitude@iss")}
    plot = results.path / "accuracy_vs_warmup.png"
    assert plot in write_plots(rep, results) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = _sweep_results(tmp_path / "one", ("magnitude@uss", "magnitude@uss+w1", "magnitude@iss+w1"))
    assert "accuracy_vs_warmup.png" not in [p.name for p in write_plots(build_report(one, "magnitude@uss"), one)]


def test_methods_of_one_seed_share_a_warm_up_and_get_what_they_would_alone():
    splits = synthetic_splits(n_train=80)
    cache: dict = {}
    for text in ("delta+w1", "movement+w1", "magnitude+w3s", "magnitude+w1~bimodal"):
        shared = prune_seeds(parse_method(text), SPEC, splits, 0.2, (3,), train=TRAIN, warmups=cache)[0]
        alone = prune_seeds(parse_method(text), SPEC, splits, 0.2, (3,), train=TRAIN)[0]
        assert torch.equal(shared.mask, alone.mask) and shared.cost_epochs == alone.cost_epochs, text
    assert len(cache) == 3  # +w1 and +w3s (3 steps: the same trajectory, spelled apart) from θ0; +w1 from bimodal


def test_an_evaluation_refuses_a_warm_up_or_budget_it_cannot_run_before_any_work(tmp_path):
    from metaprune.evaluate.api import build_config
    from metaprune.evaluate.run import run_evaluation

    tiny = dict(network="mlp:8-4", dataset="digits", seeds=(1,), train=TrainConfig(epochs=2))
    for methods, words in (
        (("imp+w3s",), "budget of 3 SGD steps cannot train its 10 levels"),
        (("snip+w3",), "longer than the training config's 2 epochs"),
        (("snip#from:delta+w41s",), "warm-up of 41 steps is longer"),  # digits: 20 steps per epoch
    ):
        with pytest.raises(MetapruneError, match=words):
            run_evaluation(build_config(methods=methods, **tiny), tmp_path / "r")
        assert not (tmp_path / "r").exists()
