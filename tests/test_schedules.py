"""The four schedules (USS, UMS, ISS, IMS): exact counts, density schedules, rewinding, populations."""

import math

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout, prunable_weights
from metaprune.pruning.apply import prune_seeds
from metaprune.pruning.masks import keep_count
from metaprune.pruning.method import parse_method
from metaprune.pruning.schedules import (
    SCHEDULES,
    ScheduleConfig,
    check_density_for_network,
    exponential_densities,
    prune_iterative,
    prune_upfront,
)
from metaprune.pruning.scorers import score
from metaprune.training import TrainConfig

from .conftest import synthetic_splits

SPEC = "mlp:12-8"
TRAIN = TrainConfig(epochs=3, batch_size=16, patience=2)


def tiny_net(data, seed=0):
    return build_network(SPEC, data.input_shape, data.num_classes, seed)


def n_weights(net):
    return prunable_layout(net).total


def state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def magnitude_fn(net, alive):
    return score("magnitude", net, alive, None, 0)


class Recorder:
    """A score function that records what it was called with (a copy of the net's weights and the mask)."""

    def __init__(self, inner=magnitude_fn):
        self.inner = inner
        self.masks: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []

    def __call__(self, net, alive):
        self.masks.append(alive.clone())
        self.weights.append(torch.cat([w.detach().reshape(-1).clone() for w in prunable_weights(net)]))
        return self.inner(net, alive)


def fresh_noise_fn(seed=0):
    """Different random scores at every call: a schedule that let pruned weights back would show it."""
    g = torch.Generator().manual_seed(seed)

    def fn(net, alive):
        return torch.rand(n_weights(net), generator=g)

    return fn


def assert_nested(masks):
    for before, after in zip(masks, masks[1:], strict=False):
        assert not (after & ~before).any(), "a pruned weight came back"


# ------------------------------------------------------------------------------------------ registry


def test_schedule_registry():
    assert SCHEDULES.names() == ["uss", "ums", "iss", "ims", "gss", "gms"]
    assert [(s.value.iterative, s.value.multi_shot) for s in SCHEDULES] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
        (True, False),
        (True, True),
    ]


@pytest.mark.parametrize("bad", [ScheduleConfig(rounds=0), ScheduleConfig(levels=0), ScheduleConfig(scope="row")])
def test_schedule_config_validation(bad):
    with pytest.raises(MetapruneError):
        bad.validate()


def test_exponential_densities_geometric_and_exact_end():
    for start, end, steps in [(1.0, 0.005, 100), (0.31, 0.02, 3), (0.7, 0.7, 4), (0.123, 0.0449, 7)]:
        d = exponential_densities(start, end, steps)
        assert len(d) == steps
        assert d[-1] == end  # exactly, so the last mask keeps exactly keep_count(end, n)
        ratios = [b / a for a, b in zip([start, *d[:-1]], d, strict=True)]
        assert all(math.isclose(r, (end / start) ** (1 / steps), rel_tol=1e-12) for r in ratios)
    assert exponential_densities(1.0, 0.01, 2) == [0.1, 0.01]


# ------------------------------------------------------------------------------------------ upfront


@pytest.mark.parametrize("density", [1.0, 0.5, 0.1, 0.03, 1 / 312])
def test_uss_keeps_exactly_round_dn(tiny_data, density):
    net = tiny_net(tiny_data)
    n = n_weights(net)
    out = prune_upfront(magnitude_fn, net, density, seed=0)
    assert int(out.mask.sum()) == round(density * n)
    assert out.densities == [density]
    assert set(out.removed_at.unique().tolist()) <= {1, 2}
    assert torch.equal(out.removed_at == 2, out.mask)


def test_uss_exact_with_ties(tiny_data):
    net = tiny_net(tiny_data)
    n = n_weights(net)
    out = prune_upfront(lambda net, alive: torch.ones(n), net, 0.25, seed=3)
    assert int(out.mask.sum()) == round(0.25 * n)


def test_uss_keeps_the_top_scores(tiny_data):
    net = tiny_net(tiny_data)
    out = prune_upfront(magnitude_fn, net, 0.2, seed=0)
    s = magnitude_fn(net, None)
    assert s[out.mask].min() >= s[~out.mask].max()


def test_boundary_rejects_densities_keeping_nothing(tiny_data):
    """Densities are checked once where they enter (``check_density_for_network``); schedules trust them."""
    net = tiny_net(tiny_data)
    for bad in (0.0, -0.1, 1.5, float("nan"), 1e-6):
        with pytest.raises(MetapruneError):
            check_density_for_network(bad, net, "global")


def test_ums_exponential_from_current_density_and_monotone(tiny_data):
    net = tiny_net(tiny_data)
    n = n_weights(net)
    rounds = 7
    alive = torch.rand(n, generator=torch.Generator().manual_seed(5)) < 0.6  # current density ~0.6, not 1.0
    rec = Recorder(fresh_noise_fn())
    out = prune_upfront(rec, net, 0.05, seed=0, multi_shot=True, config=ScheduleConfig(rounds=rounds), alive=alive)
    current = int(alive.sum()) / n
    assert out.densities == exponential_densities(current, 0.05, rounds)
    assert out.densities[0] < current
    assert int(out.mask.sum()) == keep_count(0.05, n)
    # the score function saw shrinking masks, all inside the starting one; the final mask is inside the last
    assert len(rec.masks) == rounds
    assert torch.equal(rec.masks[0], alive)
    assert_nested([*rec.masks, out.mask])
    # removed_at: after round r exactly keep_count(d_r) weights have removed_at > r
    for r, d in enumerate(out.densities, start=1):
        alive_after = (out.removed_at > r) & alive
        assert int(alive_after.sum()) == keep_count(d, n)
        if r < rounds:
            assert torch.equal(alive_after, rec.masks[r])
    assert torch.equal(out.removed_at == rounds + 1, out.mask)
    assert (out.removed_at[out.mask] == rounds + 1).all()


def test_ums_from_dense_with_default_rounds(tiny_data):
    net = tiny_net(tiny_data)
    n = n_weights(net)
    out = prune_upfront(fresh_noise_fn(1), net, 0.01, seed=0, multi_shot=True)
    assert out.densities == exponential_densities(1.0, 0.01, 100)
    counts = [int((out.removed_at > r).sum()) for r in range(0, 101)]
    assert counts[0] == n
    assert counts[1:] == [keep_count(d, n) for d in out.densities]
    assert counts == sorted(counts, reverse=True)
    assert int(out.removed_at.min()) >= 1 and int(out.removed_at.max()) == 101


def test_ums_magnitude_equals_uss(tiny_data):
    """Magnitude does not change when others are pruned, so multi-shot = single-shot (thesis 5.1.1)."""
    net = tiny_net(tiny_data)
    uss = prune_upfront(magnitude_fn, net, 0.1, seed=0)
    ums = prune_upfront(magnitude_fn, net, 0.1, seed=0, multi_shot=True, config=ScheduleConfig(rounds=10))
    assert torch.equal(uss.mask, ums.mask)


def test_layer_scope_keeps_density_per_layer(tiny_data):
    net = tiny_net(tiny_data)
    layout = prunable_layout(net)
    out = prune_upfront(
        magnitude_fn, net, 0.25, seed=0, multi_shot=True, config=ScheduleConfig(rounds=3, scope="layer")
    )
    for layer, part in zip(layout.layers, layout.split(out.mask), strict=True):
        assert int(part.sum()) == round(0.25 * layer.size)


# ------------------------------------------------------------------------------------------ iterative


def test_iss_rewinds_exactly_and_prunes_from_trained_weights(tiny_data):
    nets = [tiny_net(tiny_data, 0)]
    theta0 = state(nets[0])
    for p in nets[0].parameters():  # a stale .grad on θ0 must not matter
        p.grad = torch.full_like(p, 1e3)
    rec = Recorder()
    levels = 3
    (out,) = prune_iterative([rec], nets, tiny_data, 0.1, [0], TRAIN, 0, config=ScheduleConfig(levels=levels))
    assert same_state(theta0, state(nets[0]))  # θ0 bit-identical: rewinding is exact
    n = n_weights(nets[0])
    assert out.densities == [0.1 ** (level / levels) for level in range(1, levels + 1)]
    assert out.densities[-1] == 0.1
    assert int(out.mask.sum()) == keep_count(0.1, n)
    assert len(out.level_results) == levels
    # one score call per level, on shrinking masks, each from a trained checkpoint (not θ0)
    flat0 = torch.cat([theta0[name].reshape(-1) for name in prunable_layout(nets[0]).names])
    assert len(rec.masks) == levels
    assert torch.equal(rec.masks[0], torch.ones(n, dtype=torch.bool))
    assert_nested([*rec.masks, out.mask])
    for level, (mask, w) in enumerate(zip(rec.masks, rec.weights, strict=True), start=1):
        assert int(mask.sum()) == (n if level == 1 else keep_count(out.densities[level - 2], n))
        assert not torch.equal(w[mask], flat0[mask]), "scored θ0 instead of the trained checkpoint"
        assert (w[~mask] == 0).all()  # trained under the mask: pruned weights stay exactly 0
    # so magnitude@iss at level 2 differs from magnitude of θ0 under the same mask
    s_trained = rec.inner(_with_flat(nets[0], rec.weights[1]), rec.masks[1])
    s_theta0 = rec.inner(nets[0], rec.masks[1])
    assert not torch.equal(s_trained, s_theta0)
    for r, d in enumerate(out.densities, start=1):
        assert int((out.removed_at > r).sum()) == keep_count(d, n)
    assert torch.equal(out.removed_at == levels + 1, out.mask)


def _with_flat(net, flat):
    import copy

    out = copy.deepcopy(net)
    layout = prunable_layout(out)
    with torch.no_grad():
        for w, part in zip(prunable_weights(out), layout.split(flat), strict=True):
            w.copy_(part)
    return out


def test_stale_grad_does_not_change_iss(tiny_data):
    batch = _batch(tiny_data)

    def data_fn(net, alive):
        return score("snip", net, alive, batch, 0)

    clean = prune_iterative([data_fn], [tiny_net(tiny_data)], tiny_data, 0.2, [0], TRAIN, 0, config=_cfg(2))[0]
    dirty_net = tiny_net(tiny_data)
    for p in dirty_net.parameters():
        p.grad = torch.randn_like(p) * 1e6
    dirty = prune_iterative([data_fn], [dirty_net], tiny_data, 0.2, [0], TRAIN, 0, config=_cfg(2))[0]
    assert torch.equal(clean.mask, dirty.mask)
    assert torch.equal(clean.scores, dirty.scores)


def _cfg(levels, rounds=100):
    return ScheduleConfig(levels=levels, rounds=rounds)


def _batch(data):
    from metaprune.pruning.apply import prune_data_for

    return prune_data_for(data, 0, per_class=5)


def test_ims_interpolates_from_current_density(tiny_data):
    net = tiny_net(tiny_data)
    n = n_weights(net)
    density = 0.05
    rec = Recorder()
    (out,) = prune_iterative(
        [rec], [net], tiny_data, density, [0], TRAIN, 0, multi_shot=True, config=ScheduleConfig(levels=2, rounds=3)
    )
    d1 = density ** (1 / 2)
    s2 = keep_count(d1, n) / n  # the current density after level 1 (not 1.0, as the SynFlow code restarted)
    by_hand = [
        d1 ** (1 / 3),
        d1 ** (2 / 3),
        d1,
        s2 * (density / s2) ** (1 / 3),
        s2 * (density / s2) ** (2 / 3),
        density,
    ]
    assert out.densities == by_hand
    assert by_hand[3] < d1  # level 2 starts below level 1's end
    assert int(out.mask.sum()) == keep_count(density, n)
    assert len(rec.masks) == 6
    assert_nested([*rec.masks, out.mask])
    assert [int(m.sum()) for m in rec.masks] == [n] + [keep_count(d, n) for d in by_hand[:-1]]
    # the three rounds of a level score the same trained checkpoint; the next level a new one
    assert torch.equal(rec.weights[0], rec.weights[1]) and torch.equal(rec.weights[0], rec.weights[2])
    assert torch.equal(rec.weights[3], rec.weights[4]) and torch.equal(rec.weights[3], rec.weights[5])
    assert not torch.equal(rec.weights[3][rec.masks[3]], rec.weights[0][rec.masks[3]])
    # removed_at is the level
    assert set(out.removed_at.unique().tolist()) == {1, 2, 3}
    assert int((out.removed_at > 1).sum()) == keep_count(d1, n)


def test_population_equals_single_seed_runs():
    data = synthetic_splits(seed=1)
    seeds = [0, 1]
    fns = [magnitude_fn, magnitude_fn]
    cfg = ScheduleConfig(levels=2, rounds=2)
    kwargs = dict(multi_shot=True, config=cfg, dtype=torch.float64)
    pop = prune_iterative(fns, [tiny_net(data, s) for s in seeds], data, 0.1, seeds, TRAIN, 7, **kwargs)
    for s, p in zip(seeds, pop, strict=True):
        (solo,) = prune_iterative([magnitude_fn], [tiny_net(data, s)], data, 0.1, [s], TRAIN, 7, **kwargs)
        assert torch.equal(p.mask, solo.mask)
        assert torch.equal(p.removed_at, solo.removed_at)
        assert p.densities == solo.densities
    assert not torch.equal(pop[0].mask, pop[1].mask)


def test_iterative_checks_lengths(tiny_data):
    with pytest.raises(MetapruneError, match="one score function and one seed per network"):
        prune_iterative([magnitude_fn], [tiny_net(tiny_data)] * 2, tiny_data, 0.1, [0, 1], TRAIN, 0)


def test_imp_ticket_is_theta0_times_mask(tiny_data):
    (ticket,) = prune_seeds(parse_method("imp"), SPEC, tiny_data, 0.1, (0,), schedule=_cfg(2), train=TRAIN, per_class=5)
    theta0 = tiny_net(tiny_data, 0)
    assert same_state(state(theta0), state(ticket.net))  # the ticket trains from θ0 (rewound), masked
    n = n_weights(theta0)
    assert int(ticket.mask.sum()) == keep_count(0.1, n)
    assert ticket.outcome.densities == [0.1**0.5, 0.1]
    assert ticket.report.kept == keep_count(0.1, n)


def _poisoned(data, seed):
    """A member whose forward pass is NaN from the start (a NaN output bias): its validation loss is never
    finite, as for a member that diverges in its first epoch. The bias is not prunable, so magnitude
    scores on θ0 stay finite and nothing else would notice."""
    net = tiny_net(data, seed)
    with torch.no_grad():
        net.layers[-1].bias.fill_(float("nan"))
    return net


@pytest.mark.parametrize("early_stopping", [True, False])
def test_diverged_member_is_an_error_naming_seed_level_and_method(tiny_data, early_stopping):
    nets = [tiny_net(tiny_data, 3), _poisoned(tiny_data, 7)]
    train = TrainConfig(epochs=2, batch_size=16, patience=1, early_stopping=early_stopping)
    with pytest.raises(MetapruneError, match=r"^magnitude@iss: seed 7 diverged in training at level 1 of 2 \(") as e:
        prune_iterative(
            [magnitude_fn] * 2, nets, tiny_data, 0.2, [3, 7], train, 0, config=_cfg(2), name="magnitude@iss"
        )
    # patience 1: one epoch without improvement stops the member
    never = "validation loss was never finite in 1 epoch(s), so no checkpoint exists"
    assert (never in str(e.value)) == early_stopping
    assert early_stopping or "at the checkpoint (epoch 2) is nan" in str(e.value)


def test_diverged_member_fails_the_method_through_prune_seeds(tiny_data):
    lr = 1e30  # a learning rate that overflows the weights in the first epoch
    train = TrainConfig(epochs=2, batch_size=16, patience=1, lr=lr)
    with pytest.raises(MetapruneError, match=r"magnitude@iss: seed 0 diverged in training at level 1 of 2"):
        prune_seeds(parse_method("mag@iss"), SPEC, tiny_data, 0.2, [0], train=train, schedule=_cfg(2))
