"""The population loop equals K separate runs; early stopping and masking are per member."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout
from metaprune.seeds import generator
from metaprune.training import AT_CHANCE_MARGIN, TrainConfig, resolve_device, train_population, train_preset
from tests.conftest import synthetic_splits

F64 = torch.float64


def _mask(net, density, seed):
    n = prunable_layout(net).total
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) < density


def _nets(spec, shape, classes, seeds):
    return [build_network(spec, shape, classes, s) for s in seeds]


def _assert_same(a, b):
    assert a.best_iteration == b.best_iteration
    assert a.best_epoch == b.best_epoch
    assert a.epochs_trained == b.epochs_trained
    assert a.test_acc == b.test_acc
    assert a.val_loss == pytest.approx(b.val_loss, rel=1e-10, abs=1e-12)


@pytest.mark.filterwarnings("ignore::metaprune.training.DenseTrainingFallback")
@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_population_equals_separate_runs(tiny_data, optimizer, momentum):
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 0.01,
        momentum=momentum,
        batch_size=16,
        epochs=12,
        patience=2,
    )
    nets = _nets("mlp:12-8", (1, 4, 4), 3, [0, 1, 2])
    masks = [None, _mask(nets[1], 0.5, 1), _mask(nets[2], 0.2, 2)]
    pop = train_population(nets, tiny_data, cfg, data_seed=7, masks=masks, dtype=F64, keep_states=True)
    for i, net in enumerate(nets):
        solo = train_population([net], tiny_data, cfg, data_seed=7, masks=[masks[i]], dtype=F64, keep_states=True)
        _assert_same(pop.members[i], solo.members[0])
        for name, value in solo.states[0].items():
            torch.testing.assert_close(pop.states[i][name], value, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "autograd,mask_mode,batch",
    [(False, "grad", 16), (False, "grad", 20), (False, "forward", 16), (False, "forward", 20), (True, "grad", 16)],
)
def test_population_of_one_equals_plain_pytorch_loop(tiny_data, autograd, mask_mode, batch):
    """Against the textbook loop: nn.Module forward, torch.optim.SGD, same data order, no early stopping.

    The MLP step folds plain SGD into its gradient GEMMs under ``grad`` masking and hands gradients to
    torch.optim under ``forward`` masking; a batch of 20 leaves a short last batch (96 = 4·20 + 16).
    """
    cfg = TrainConfig(lr=0.05, batch_size=batch, epochs=3, early_stopping=False, autograd=autograd, mask_mode=mask_mode)
    net = build_network("mlp:12-8", (1, 4, 4), 3, 4).double()
    mask = _mask(net, 0.4, 3)
    res = train_population([net], tiny_data, cfg, data_seed=11, masks=[mask], dtype=F64, keep_states=True)

    ref = build_network("mlp:12-8", (1, 4, 4), 3, 4).double()
    layout = prunable_layout(ref)
    per_layer = dict(zip(layout.names, layout.split(mask.double()), strict=True))
    params = dict(ref.named_parameters())
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    x, y = tiny_data.train_x.double(), tiny_data.train_y
    gen = generator(11, "data_order")
    for _ in range(3):
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch):
            idx = perm[start : start + batch]
            with torch.no_grad():
                for name, m in per_layer.items():
                    params[name].mul_(m)
            opt.zero_grad()
            F.cross_entropy(ref(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        for name, m in per_layer.items():
            params[name].mul_(m)
    for name, value in ref.state_dict().items():
        got = res.states[0][name]
        if mask_mode == "forward" and name in per_layer:
            got = got * per_layer[name]  # forward masking leaves pruned entries at θ0, without influence
        torch.testing.assert_close(got, value, rtol=1e-12, atol=1e-13)
    acc = (ref(tiny_data.test_x.double()).argmax(1) == tiny_data.test_y).double().mean().item()
    assert res.members[0].test_acc == pytest.approx(acc)


def test_early_stopping_is_per_member(tiny_data):
    cfg = TrainConfig(lr=0.2, batch_size=16, epochs=40, patience=3)
    nets = _nets("mlp:12-8", (1, 4, 4), 3, [0, 1, 2, 3])
    masks = [None, _mask(nets[1], 0.05, 1), _mask(nets[2], 0.6, 2), _mask(nets[3], 0.15, 3)]
    pop = train_population(nets, tiny_data, cfg, data_seed=3, masks=masks, dtype=F64)
    stopped = [m for m in pop.members if m.epochs_trained < cfg.epochs]
    assert len({m.epochs_trained for m in pop.members}) > 1, "members should stop at different epochs"
    for m in stopped:
        assert m.epochs_trained == m.best_epoch + cfg.patience
    for i, net in enumerate(nets):
        solo = train_population([net], tiny_data, cfg, data_seed=3, masks=[masks[i]], dtype=F64)
        _assert_same(pop.members[i], solo.members[0])


@pytest.mark.filterwarnings("ignore::metaprune.training.DenseTrainingFallback")
@pytest.mark.parametrize(
    "optimizer,momentum,weight_decay", [("sgd", 0.0, 0.0), ("sgd", 0.9, 1e-3), ("adam", 0.0, 1e-3)]
)
def test_mask_modes_are_identical_and_pruned_weights_stay_zero(tiny_data, optimizer, momentum, weight_decay):
    """Plain SGD re-zeroes pruned weights after a fused update; the others mask gradients for torch.optim."""
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 0.01,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=20,
        epochs=4,
        early_stopping=False,
    )
    nets = _nets("mlp:12-8", (1, 4, 4), 3, [5, 6])
    masks = [_mask(nets[0], 0.3, 5), _mask(nets[1], 0.3, 6)]
    a = train_population(nets, tiny_data, cfg, 1, masks=masks, dtype=F64, keep_states=True)
    b = train_population(nets, tiny_data, replace_mode(cfg, "forward"), 1, masks=masks, dtype=F64, keep_states=True)
    layout = prunable_layout(nets[0])
    for i in range(2):
        for layer, m in zip(layout.layers, layout.split(masks[i]), strict=True):
            wa, wb = a.states[i][layer.name], b.states[i][layer.name]
            assert torch.all(wa[~m] == 0)
            torch.testing.assert_close(wa[m], wb[m], rtol=1e-12, atol=1e-13)
        assert a.members[i].test_acc == b.members[i].test_acc


def replace_mode(cfg, mode):
    from dataclasses import replace

    return replace(cfg, mask_mode=mode)


def test_conv_population_via_vmap_equals_separate_runs():
    from tests.conftest import synthetic_splits

    data = synthetic_splits(n_train=48, n_val=16, n_test=16, shape=(1, 12, 12), classes=3)
    cfg = TrainConfig(lr=0.05, batch_size=16, epochs=2, early_stopping=False)
    nets = _nets("lenet5", (1, 12, 12), 3, [0, 1])
    masks = [_mask(nets[0], 0.5, 0), None]
    pop = train_population(nets, data, cfg, 2, masks=masks, dtype=F64, keep_states=True)
    for i, net in enumerate(nets):
        solo = train_population([net], data, cfg, 2, masks=[masks[i]], dtype=F64, keep_states=True)
        for name, value in solo.states[0].items():
            torch.testing.assert_close(pop.states[i][name], value, rtol=1e-10, atol=1e-12)


def test_inputs_are_not_modified(tiny_data):
    net = build_network("mlp:12-8", (1, 4, 4), 3, 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train_population([net], tiny_data, TrainConfig(epochs=1), 0, masks=[_mask(net, 0.5, 0)])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_config_and_device_errors():
    with pytest.raises(MetapruneError, match="batch-size"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(MetapruneError, match="epochs"):
        TrainConfig(epochs=-1).validate()
    with pytest.raises(MetapruneError, match="accepted: auto, cpu"):
        resolve_device("tpu")
    with pytest.raises(MetapruneError, match="accepted: thesis, openlth"):
        train_preset("fast")
    assert train_preset("openlth").batch_size == 128
    assert not train_preset("openlth").early_stopping


def test_majority_share_is_the_accuracy_of_always_answering_the_most_frequent_test_class():
    splits = synthetic_splits()
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    splits = replace(splits, test_x=splits.test_x[:6], test_y=labels)
    assert splits.majority_share() == 0.5  # class 0 is 3 of the 6


def test_a_member_that_learns_nothing_is_at_chance_and_a_trained_one_is_not(tiny_data):
    # the second member keeps no weight: its logits are its biases, one answer for every image, which
    # scores at most the most frequent class's share of the test split
    cfg = TrainConfig(lr=0.2, batch_size=16, epochs=15, patience=5)
    nets = _nets("mlp:12-8", (1, 4, 4), 3, [0, 1])
    nothing = torch.zeros(prunable_layout(nets[1]).total, dtype=torch.bool)
    pop = train_population(nets, tiny_data, cfg, data_seed=0, masks=[None, nothing], dtype=F64)
    share = tiny_data.majority_share()
    dense, empty = pop.members
    assert empty.test_acc <= share and empty.at_chance
    assert dense.test_acc > share + AT_CHANCE_MARGIN and not dense.at_chance
