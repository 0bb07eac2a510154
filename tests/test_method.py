"""The method grammar (parse_method) and applying a method to a network (apply.prune_seeds)."""

import itertools
import re

import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout, prunable_weights
from metaprune.pruning import method as method_module
from metaprune.pruning.apply import check_method_data, prune_data_for, prune_seeds
from metaprune.pruning.inits import saw_init
from metaprune.pruning.masks import keep_count, make_mask
from metaprune.pruning.method import ABLATIONS, GRAMMAR_HELP, SCHEDULE_NAMES, Method, parse_method
from metaprune.pruning.schedules import ScheduleConfig, check_density_for_network
from metaprune.pruning.scorers import SCORERS, score
from metaprune.pruning.stacked import stacked_scores
from metaprune.seeds import generator

from .conftest import synthetic_splits

BASE = ("magnitude", "snip", "grasp", "synflow")

# ------------------------------------------------------------------------------------------ grammar

DOC_EXAMPLES = {
    "snip": Method(("snip",), "uss"),
    "synflow@ums": Method(("synflow",), "ums"),
    "mag>synflow": Method(("magnitude", "synflow"), "ums"),
    "mag>synflow~snip": Method(("magnitude", "synflow"), "ums", "snip"),
    "imp": Method(("magnitude",), "iss"),
    "synflow@ims": Method(("synflow",), "ims"),
    "snip~bimodal": Method(("snip",), "uss", "bimodal"),
    "snip!shuffle": Method(("snip",), "uss", "standard", "shuffle"),
    "learned:models/mlp-round-all-1a2b3c4d": Method(("learned:models/mlp-round-all-1a2b3c4d",), "uss"),
    "delta+w3": Method(("delta",), "uss", warmup=3.0),
    "magnitude+w3": Method(("magnitude",), "uss", warmup=3.0),
    "snip#from:synflow@ums": Method(("snip",), "uss", budget="from:synflow@ums"),
    "synflow@ums#layer": Method(("synflow",), "ums", budget="layer"),
}


def test_every_docstring_example_is_covered_and_parses():
    doc = method_module.__doc__
    examples = re.findall(r"``([^`]+)``", doc.split("Examples:", 1)[1])
    examples = [e for e in examples if e != "metaprune fit"]
    assert set(examples) == set(DOC_EXAMPLES)
    for text, expected in DOC_EXAMPLES.items():
        assert parse_method(text) == expected, text


def test_grammar_help_examples_parse():
    examples = GRAMMAR_HELP.split("Examples:", 1)[1].split(",")
    assert len(examples) >= 5
    for text in examples:
        parse_method(text.strip())


def _all_methods():
    plain = [s for s in SCORERS.names() if not SCORERS.get(s).needs_warmup]
    scorers = [(s,) for s in plain] + [(a, b) for a, b in itertools.product(BASE, BASE)]
    scorers += [("learned:models/x",), ("magnitude", "learned:m/y")]
    # a sized scorer (phew) ranks only a prune's count: never an init (refused, tested in test_phew)
    inits = ["standard", "bimodal", *[s for s in plain if not SCORERS.get(s).sized], "learned:models/z"]
    for sc, sched, init, abl in itertools.product(scorers, SCHEDULE_NAMES, inits, (None, *ABLATIONS)):
        yield Method(sc, sched, init, abl)
    warm = [(s,) for s in SCORERS.names() if SCORERS.get(s).needs_warmup] + [("snip",), ("magnitude", "synflow")]
    budgets = (None, "global", "layer", "from:synflow@ums", "from:delta@uss+w0.5")
    for sc, sched, budget, init in itertools.product(warm, ("uss", "ums"), budgets, ("standard", "snip")):
        yield Method(sc, sched, init, None, 3.0, budget)


def test_canonical_round_trip():
    count = 0
    for m in _all_methods():
        text = m.canonical()
        assert parse_method(text) == m, text
        assert parse_method(text).canonical() == text
        assert str(m) == text
        count += 1
    assert count > 1000


def test_imp_and_aliases():
    assert parse_method("imp") == parse_method("magnitude@iss") == parse_method("mag@iss")
    assert parse_method("imp~snip!invert") == Method(("magnitude",), "iss", "snip", "invert")
    assert parse_method("imp!shuffle").canonical() == "magnitude@iss!shuffle"
    assert parse_method("mag") == Method(("magnitude",), "uss")
    assert parse_method("mag>mag~mag") == Method(("magnitude", "magnitude"), "uss", "magnitude")
    assert parse_method("snip~kaiming") == parse_method("snip") == parse_method("snip~standard")
    assert parse_method("  snip@ums ") == Method(("snip",), "ums")


@pytest.mark.parametrize(
    "text, schedule",
    [
        ("synflow", "ums"),
        ("snip", "uss"),
        ("grasp", "uss"),
        ("grasp_abs", "uss"),
        ("magnitude", "uss"),
        ("random", "uss"),
        ("snip>synflow", "ums"),  # a stack takes the default of its second scorer
        ("synflow>snip", "uss"),
        ("mag>synflow~snip!invert", "ums"),
        ("learned:m", "uss"),
        ("synflow@uss", "uss"),
    ],
)
def test_default_schedules(text, schedule):
    assert parse_method(text).schedule == schedule


def test_method_properties():
    m = parse_method("mag>synflow@ims~learned:models/a!reinit")
    assert m.stacked and m.iterative and m.multi_shot and m.saw
    assert m.learned_models == ("models/a",)
    p = parse_method("snip~bimodal")
    assert not (p.stacked or p.iterative or p.multi_shot or p.saw)
    assert parse_method("snip~grasp").saw


@pytest.mark.parametrize(
    "text, position, char",
    [
        ("mag>>snip", 5, "'>'"),
        ("snip@@uss", 6, "'@'"),
        ("snip@uss@ums", 9, "'@'"),
        ("snip!shuffle@uss", 13, "'@'"),
        ("snip~snip~snip", 10, "'~'"),
        ("mag>snip>grasp", 9, "'>'"),
        ("snip&", 5, "'&'"),
        ("snip#", 6, "end of text"),
        ("snip+w", 6, "'w'"),
        ("snip uss", 5, "' '"),
        ("snip@", 6, "end of text"),
        ("mag>", 5, "end of text"),
        (">snip", 1, "'>'"),
        ("imp@ums", 4, "'@'"),
        ("mag>imp", 5, "'i'"),
        ("learned:", 9, "end of text"),
        ("snip@xyz", 6, "'x'"),
        ("snip~xyz", 6, "'x'"),
        ("snip!xyz", 6, "'x'"),
        ("mag>xyz", 5, "'x'"),
    ],
)
def test_malformed_methods_point_at_the_character(text, position, char):
    with pytest.raises(MetapruneError) as info:
        parse_method(text)
    msg = str(info.value)
    assert f"character {position} ({char})" in msg, msg
    assert "\n" not in msg


def test_empty_method():
    for text in ("", "   "):
        with pytest.raises(MetapruneError, match="empty method"):
            parse_method(text)


@pytest.mark.parametrize(
    "text, names",
    [
        ("xyz", [*SCORERS.names(), "mag", "imp", "learned:"]),
        ("snip@xyz", list(SCHEDULE_NAMES)),
        ("snip~xyz", ["standard", "bimodal", "kaiming", *SCORERS.names(), "learned:"]),
        ("snip!xyz", list(ABLATIONS)),
    ],
)
def test_unknown_names_list_the_accepted_ones(text, names):
    with pytest.raises(MetapruneError) as info:
        parse_method(text)
    msg = str(info.value)
    assert "'xyz'" in msg and "accepted" in msg
    for name in names:
        assert name in msg, (name, msg)


# ------------------------------------------------------------------------------------------ applying


@pytest.fixture(scope="module")
def lenet_data():
    """LeNet-sized input (1x28x28, 10 classes) with enough examples of every class for a pruning batch."""
    data = synthetic_splits(n_train=400, n_val=40, n_test=40, shape=(1, 28, 28), classes=10, seed=2)
    assert int(torch.bincount(data.train_y, minlength=10).min()) >= 5
    return data


LENET_LIKE = "mlp:20-10"  # 784-20-10-10: LeNet-sized input, small hidden part for speed
SMALL = "mlp:12-8"


def _theta0(spec, data, seed=0):
    return build_network(spec, data.input_shape, data.num_classes, seed)


def _prune(text, spec, data, density, seed=0, **kw):
    kw.setdefault("per_class", 5)
    return prune_seeds(parse_method(text), spec, data, density, (seed,), **kw)[0]


def test_stack_on_saw_init(lenet_data):
    density = 0.02
    ticket = _prune("mag>synflow@uss~snip", LENET_LIKE, lenet_data, density)
    theta0 = _theta0(LENET_LIKE, lenet_data)
    layout = prunable_layout(theta0)
    assert int(ticket.mask.sum()) == keep_count(density, layout.total)
    # SaW: every layer in [-1, 1] with max |w| = 1 and θ0's signs
    for w, w0 in zip(prunable_weights(ticket.net), prunable_weights(theta0), strict=True):
        w = w.detach()
        assert float(w.abs().max()) == 1.0
        nz = w != 0
        assert torch.equal(torch.sign(w[nz]), torch.sign(w0[nz]))
    # by hand: SaW init from snip on θ0, then magnitude>synflow on those weights, top-k, seeded ties
    data = prune_data_for(lenet_data, 0, 5)
    net = _theta0(LENET_LIKE, lenet_data)
    saw_init(net, "snip", data, 0)
    s = stacked_scores("magnitude", "synflow", net, None, data, 0)
    mask = make_mask(s, layout, density, generator=generator(0, "tie_break", 0))
    assert torch.equal(ticket.mask, mask)


def test_stack_default_ums_runs(lenet_data):
    ticket = _prune("mag>synflow~snip", LENET_LIKE, lenet_data, 0.01, schedule=ScheduleConfig(rounds=10))
    assert ticket.method.schedule == "ums"
    assert ticket.report.kept == keep_count(0.01, ticket.report.total)
    assert len(ticket.outcome.densities) == 10


def test_shuffle_keeps_per_layer_counts(lenet_data):
    plain = _prune("snip", LENET_LIKE, lenet_data, 0.05)
    shuffled = _prune("snip!shuffle", LENET_LIKE, lenet_data, 0.05)
    layout = prunable_layout(plain.net)
    assert [int(p.sum()) for p in layout.split(shuffled.mask)] == [int(p.sum()) for p in layout.split(plain.mask)]
    assert not torch.equal(plain.mask, shuffled.mask)
    assert torch.equal(plain.outcome.mask, shuffled.outcome.mask)  # the schedule's mask, before the ablation


def test_invert_keeps_the_bottom_k(lenet_data):
    density = 0.05
    ticket = _prune("snip!invert", LENET_LIKE, lenet_data, density)
    net = _theta0(LENET_LIKE, lenet_data)
    s = score("snip", net, None, prune_data_for(lenet_data, 0, 5), 0)
    assert int(ticket.mask.sum()) == keep_count(density, s.numel())
    assert float(s[ticket.mask].max()) <= float(s[~ticket.mask].min())


def test_reinit_changes_kept_weights_only(lenet_data):
    plain = _prune("snip", LENET_LIKE, lenet_data, 0.05)
    ticket = _prune("snip!reinit", LENET_LIKE, lenet_data, 0.05)
    assert torch.equal(plain.mask, ticket.mask)
    theta0 = _theta0(LENET_LIKE, lenet_data)
    flat = torch.cat([w.detach().reshape(-1) for w in prunable_weights(ticket.net)])
    flat0 = torch.cat([w.detach().reshape(-1) for w in prunable_weights(theta0)])
    assert (flat[ticket.mask] != flat0[ticket.mask]).all()
    assert torch.equal(flat[~ticket.mask], flat0[~ticket.mask])
    for (name, p), (_, p0) in zip(ticket.net.named_parameters(), theta0.named_parameters(), strict=True):
        if name.endswith("bias"):
            assert torch.equal(p, p0)


def test_data_needing_methods_without_data_are_refused():
    for text in ("snip", "mag>snip", "grasp>mag", "mag~snip", "synflow", "learned:m"):
        with pytest.raises(MetapruneError, match="needs a pruning batch") as info:
            check_method_data(parse_method(text), None)
        assert "\n" not in str(info.value)
    for text in ("mag", "random>magnitude~random", "imp~bimodal"):
        check_method_data(parse_method(text), None)


def test_prune_seeds_without_pruning_batch(tiny_data):
    with pytest.raises(MetapruneError, match="'snip'.*needs a pruning batch"):
        _prune("mag>snip", SMALL, tiny_data, 0.1, per_class=0)
    ticket = _prune("magnitude~random", SMALL, tiny_data, 0.1, per_class=0)
    assert ticket.report.kept == keep_count(0.1, ticket.report.total)


def test_layer_scope_density_keeping_nothing_names_the_layer(tiny_data):
    net = _theta0(SMALL, tiny_data)  # layers of 192, 96 and 24 weights
    check_density_for_network(0.02, net, "global")
    with pytest.raises(MetapruneError, match=r"layers\.2\.weight \(24 weights\)"):
        check_density_for_network(0.02, net, "layer")
    with pytest.raises(MetapruneError, match=r"layers\.2\.weight"):
        _prune("mag", SMALL, tiny_data, 0.02, schedule=ScheduleConfig(scope="layer"))
    with pytest.raises(MetapruneError, match="keeps no weight"):
        _prune("mag", SMALL, tiny_data, 1e-4)


@pytest.mark.parametrize("a, b", list(itertools.product(BASE, BASE)))
def test_all_16_stacks_keep_exactly_k(tiny_data, a, b):
    ticket = _prune(f"{a}>{b}@uss", SMALL, tiny_data, 0.1)
    n = prunable_layout(ticket.net).total
    assert int(ticket.mask.sum()) == keep_count(0.1, n) == ticket.report.kept
    assert ticket.method.scorers == (a, b)


def test_prune_seeds_several_seeds_match_single(tiny_data):
    many = prune_seeds(parse_method("snip"), SMALL, tiny_data, 0.1, (0, 1), per_class=5)
    for seed, ticket in zip((0, 1), many, strict=True):
        assert torch.equal(ticket.mask, _prune("snip", SMALL, tiny_data, 0.1, seed=seed).mask)
    assert not torch.equal(many[0].mask, many[1].mask)
    with pytest.raises(MetapruneError, match="no seeds"):
        prune_seeds(parse_method("snip"), SMALL, tiny_data, 0.1, ())


def test_a_multi_shot_schedule_may_name_its_rounds():
    m = parse_method("snip@ums20#layer")
    assert (m.schedule, m.rounds, m.budget) == ("ums", 20, "layer") and m.canonical() == "snip@ums20#layer"
    assert parse_method("synflow").rounds is None and parse_method("synflow@ims5").rounds == 5
    assert parse_method(m.canonical()) == m
    with pytest.raises(MetapruneError, match="uss is single-shot, so it has no rounds"):
        parse_method("snip@uss5")
    with pytest.raises(MetapruneError, match="0 rounds; accepted: a positive number"):
        parse_method("snip@ums0")


def test_the_methods_rounds_decide_the_multi_shot_steps(tiny_data):
    from metaprune.pruning.apply import prune_seeds

    ticket = prune_seeds(parse_method("snip@ums4"), "mlp:8", tiny_data, 0.2, (0,))[0]
    assert len(ticket.outcome.densities) == 4 and int(ticket.outcome.removed_at.max()) == 5


# ------------------------------------------------------------------------------------ other spellings


def test_a_use_is_a_schedule_and_a_budget_merged_into_a_bare_learned_method():
    from metaprune.pruning.method import IntendedUse, parse_use

    use = parse_use("@ums10#learned", warmup=3.0)
    assert use == IntendedUse("ums", 10, "learned", 3.0) and use.suffix() == "@ums10+w3#learned"
    assert parse_use("") == IntendedUse("uss") and parse_use("#from:synflow").budget == "from:synflow@ums"
    bare = parse_method("learned:m/x")
    assert bare.merge(use) == parse_method("learned:m/x@ums10+w3#learned")
    # a part the method spells stays; an iterative method takes neither warm-up nor budget
    assert bare.merge(use).canonical() == "learned:m/x@ums10+w3#learned"
    assert parse_method("learned:m/x@ums#layer").merge(use).canonical() == "learned:m/x@ums+w3#layer"
    assert parse_method("learned:m/x@iss").merge(use).canonical() == "learned:m/x@iss"
    # one shot spelled is one shot, though it spells the grammar's default schedule
    assert parse_method("learned:m/x@uss").merge(use).canonical() == "learned:m/x@uss+w3#learned"
    assert parse_method("learned:m/x", warmup=1.0).merge(use).canonical() == "learned:m/x@ums10+w1#learned"
    for bad, what in (("ums", "a method suffix"), ("@ims", "upfront"), ("@ums+w3", "not part of a use")):
        with pytest.raises(MetapruneError, match=what) as refused:
            parse_use(bad)
        assert "\n" not in str(refused.value)


def test_dense_units_and_labels():
    from metaprune.pruning.method import DenseUnit, parse_unit

    assert parse_unit("dense") == DenseUnit() and str(parse_unit("dense~kaiming")) == "dense"
    assert parse_unit("dense~snip") == DenseUnit("snip") and DenseUnit("snip").slug() == "dense-on-snip"
    assert parse_unit("snip") == parse_method("snip")
    with pytest.raises(MetapruneError, match="unknown init 'nope'"):
        parse_unit("dense~nope")
    method = parse_method("magnitude>learned:models/abc@ums10+w3#from:learned:m/d@uss~magnitude!shuffle")
    assert method.label() == "magnitude>L:abc@ums10+w3#from:L:d@uss~magnitude!shuffle"
    assert method.label(compact=True) == "mag>L:abc@ums10+w3#from:L:d~mag!shuffle"
    assert method.label(lambda d: d.upper()) == "magnitude>MODELS/ABC@ums10+w3#from:M/D@uss~magnitude!shuffle"
    assert parse_method("imp~bimodal").label(compact=True) == "imp~bimodal"
    assert parse_method("synflow@ims3").label(compact=True) == "synflow@ims3"
