"""``prune_module``: a user's own ``nn.Module`` pruned by any method, its masks applied by torch.nn.utils.prune.

The registry's networks are the reference: a user's module of the same shape, holding the same θ0 and given
the same pruning batch, must get the registry's mask under every kind of method. The rest is what a PyTorch
user relies on (pruned weights stay 0 in their own loop, the masks round-trip through ``state_dict``) and
the refusals, each one line, with the module left as it was.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import metaprune
from metaprune.datasets import load_dataset
from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout
from metaprune.prune import prune_network
from metaprune.pruning.apply import prune_data_for
from metaprune.pruning.masks import keep_count
from metaprune.training import TrainConfig

SEED = 3
DENSITY = 0.1


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _prunable(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def copy_theta0(src: nn.Module, dst: nn.Module) -> nn.Module:
    """``dst`` with the weights and biases of ``src``'s prunable layers, layer by layer."""
    with torch.no_grad():
        for a, b in zip(_prunable(dst), _prunable(src), strict=True):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    return dst


def sequential_mlp(*widths: int) -> nn.Sequential:
    sizes = (64, *widths, 10)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class NamedMLP(nn.Module):
    """A 64-20-10-10 MLP with attribute names of its own and a functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(64, 20)
        self.middle = nn.Linear(20, 10)
        self.head = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.encoder(x.flatten(1)))
        return self.head(torch.relu(self.middle(x)))


class SmallCNN(nn.Module):
    """Conv2d + BatchNorm + max-pool + two Linear layers, for 1x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _batch(splits, seed=SEED):
    data = prune_data_for(splits, seed)
    return data.x, data.y


def _layer_summary(report):
    return [(r.total, r.kept, r.effective, r.dead_in, r.dead_out, r.live, r.collapsed) for r in report.layers]


# ------------------------------------------------------------------------ the registry's mask, on a user module


@pytest.mark.parametrize(
    "method",
    ["snip", "synflow@ums", "magnitude", "mag>synflow~snip", "snip#from:synflow@ums", "grasp#layer", "random#erk"],
)
@pytest.mark.parametrize("make", [lambda: sequential_mlp(20, 10), NamedMLP], ids=["sequential", "named"])
def test_a_user_mlp_gets_the_registry_networks_mask(method, make, digits):
    ref = prune_network("mlp:20-10", "digits", method, DENSITY, SEED, rounds=20).ticket
    net = build_network("mlp:20-10", digits.input_shape, digits.num_classes, SEED)
    user = copy_theta0(net, make())
    result = metaprune.prune_module(user, _batch(digits), method, DENSITY, SEED, rounds=20)
    assert torch.equal(result.mask, ref.mask.reshape(-1).bool().cpu())
    assert int(result.mask.sum()) == keep_count(DENSITY, 64 * 20 + 20 * 10 + 10 * 10)
    assert _layer_summary(result.report) == _layer_summary(ref.report)
    # SaW writes θ0: the module trains from the same weights as the registry's ticket
    for layer, ref_layer in zip(_prunable(user), ref.net.layers, strict=True):
        assert torch.equal(layer.weight_orig, ref_layer.weight)


def test_an_iterative_method_trains_on_the_given_training_set(digits):
    train = TrainConfig(epochs=2, patience=2)
    settings = dict(levels=2, train=train, device="cpu")
    ref = prune_network("mlp:20-10", "digits", "imp", DENSITY, SEED, **settings).ticket
    net = build_network("mlp:20-10", digits.input_shape, digits.num_classes, SEED)
    user = copy_theta0(net, sequential_mlp(20, 10))
    with pytest.raises(MetapruneError, match=r"method magnitude@iss trains .* needs a training set"):
        metaprune.prune_module(user, _batch(digits), "imp", DENSITY, SEED)
    assert not hasattr(user[1], "weight_orig")
    result = metaprune.prune_module(user, _batch(digits), "imp", DENSITY, SEED, data=digits, **settings)
    assert torch.equal(result.mask, ref.mask.reshape(-1).bool().cpu())
    assert result.config()["data"] == "digits" and result.config()["levels"] == 2


def test_a_user_conv_net_gets_conv2s_mask(digits):
    seed = 1
    ref = prune_network("conv2", "digits", "snip", 0.05, seed).ticket
    net = build_network("conv2", digits.input_shape, digits.num_classes, seed)
    user = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    copy_theta0(net, user)
    result = metaprune.prune_module(user, _batch(digits, seed), "snip", 0.05, seed)
    assert torch.equal(result.mask, ref.mask.reshape(-1).bool().cpu())
    assert _layer_summary(result.report) == _layer_summary(ref.report)


def test_snip_on_a_cnn_with_batchnorm_keeps_the_top_connection_sensitivities(digits):
    """SNIP by its definition, on the user's own module: keep the k largest |θ ⊙ ∂L/∂θ| (L the mean
    cross-entropy over the batch, eval mode); BatchNorm and pooling stay dense."""
    torch.manual_seed(0)
    user = SmallCNN()
    x, y = _batch(digits)
    reference = SmallCNN()
    reference.load_state_dict(user.state_dict())
    reference.eval()
    weights = [m.weight for m in _prunable(reference)]
    grads = torch.autograd.grad(nn.functional.cross_entropy(reference(x), y), weights)
    saliency = torch.cat([(g * w).detach().abs().reshape(-1) for g, w in zip(grads, weights, strict=True)])
    k = keep_count(0.2, saliency.numel())
    result = metaprune.prune_module(user, (x, y), "snip", 0.2, 0)
    assert int(result.mask.sum()) == k
    kept, pruned = saliency[result.mask], saliency[~result.mask]
    assert float(kept.min()) >= float(pruned.max())
    assert [r.name for r in result.report.layers] == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert set(result.masks) == {"conv.weight", "fc1.weight", "fc2.weight"}
    assert not hasattr(user.bn, "weight_orig") and not any(
        k.startswith("bn.") and "mask" in k for k in user.state_dict()
    )


# --------------------------------------------------------------------------- what a PyTorch user relies on


def test_masks_train_save_and_load_as_torch_prune_does(digits):
    torch.manual_seed(0)
    user = SmallCNN()
    x, y = _batch(digits)
    result = metaprune.prune_module(user, (x, y), "synflow@ums", 0.1, 0, rounds=10)
    state = user.state_dict()
    for name in ("conv", "fc1", "fc2"):
        assert {f"{name}.weight_orig", f"{name}.weight_mask"} <= set(state) and f"{name}.weight" not in state
        layer = getattr(user, name)
        mask = result.masks[f"{name}.weight"]
        assert torch.equal(layer.weight_mask.bool(), mask)
        assert bool((layer.weight[~mask] == 0).all()) and torch.equal(layer.weight[mask], layer.weight_orig[mask])
    # a plain user loop, with momentum and weight decay: pruned weights stay 0, kept ones learn
    before = user.fc1.weight.detach().clone()
    opt = torch.optim.SGD(user.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    user.train()
    for start in range(0, 96, 32):
        opt.zero_grad()
        nn.functional.cross_entropy(
            user(digits.train_x[start : start + 32]), digits.train_y[start : start + 32]
        ).backward()
        opt.step()
    for name in ("conv", "fc1", "fc2"):
        assert bool((getattr(user, name).weight[~result.masks[f"{name}.weight"]] == 0).all())
    assert not torch.equal(user.fc1.weight[result.masks["fc1.weight"]], before[result.masks["fc1.weight"]])
    # save, then load into a fresh module of the same class the documented torch way: prune.identity first
    buffer = io.BytesIO()
    torch.save(user.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = SmallCNN()
    for name, layer in fresh.named_modules():
        if f"{name}.weight_mask" in saved:
            torch_prune.identity(layer, "weight")
    fresh.load_state_dict(saved)
    user.eval()
    fresh.eval()
    assert torch.equal(fresh(x), user(x))
    assert torch.equal(fresh.fc1.weight_mask.bool(), result.masks["fc1.weight"])


def test_the_result_reports_as_metaprune_prune_does(digits):
    user = sequential_mlp(20, 10)
    result = metaprune.prune_module(user, _batch(digits), "snip", DENSITY, 0)
    layout = prunable_layout(sequential_mlp(20, 10))
    assert [r.name for r in result.report.layers] == list(layout.names) == ["1.weight", "3.weight", "5.weight"]
    for layer, part in zip(layout.layers, layout.split(result.mask), strict=True):
        assert torch.equal(result.masks[layer.name], part) and result.masks[layer.name].shape == layer.shape
    assert result.report.kept == int(result.mask.sum())
    d = result.to_dict()
    assert d["config"]["method"] == "snip@uss" and d["config"]["train"] is None and d["config"]["data"] is None
    assert d["report"]["layers"][0]["live"] == result.report.layers[0].live


# --------------------------------------------------------------------------- refusals: one line, module untouched


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x.reshape(x.shape[0], 8, 8))[0][:, -1])


class OutOfOrder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Linear(20, 10)
        self.first = nn.Linear(64, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x.flatten(1))))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _refused(module: nn.Module, match: str, *args, **kwargs) -> str:
    before = _snapshot(module)
    with pytest.raises(MetapruneError, match=match) as info:
        metaprune.prune_module(module, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    after = module.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(m._forward_pre_hooks for m in module.modules())  # no torch.nn.utils.prune hook left behind
    return message


def test_a_module_with_no_prunable_layer_is_refused(digits):
    _refused(
        nn.Sequential(nn.Flatten(), nn.ReLU()),
        r"has no prunable layer; accepted: .*Linear",
        _batch(digits),
        "snip",
        0.1,
    )


@pytest.mark.parametrize(
    "module, match",
    [
        (WithLSTM(), r"layer 'rnn' \(LSTM\) holds weights \(weight_ih_l0\) that metaprune neither prunes nor reads"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()), r"layer '2' \(Tanh\) is a layer metaprune cannot"),
        (nn.Sequential(nn.Flatten(), nn.LayerNorm(64), nn.Linear(64, 10)), r"layer '1' \(LayerNorm\) holds weights"),
    ],
    ids=["lstm", "tanh", "layernorm"],
)
def test_a_layer_metaprune_cannot_read_is_refused_by_name(module, match, digits):
    message = _refused(module, match, _batch(digits), "magnitude", 0.1)
    assert "accepted: Linear and Conv2d (pruned)" in message


def test_a_module_whose_forward_order_differs_from_registration_is_refused(digits):
    _refused(
        OutOfOrder(), r"layer 'second' runs after 'first' but is registered before it", _batch(digits), "snip", 0.1
    )


def test_a_module_already_pruned_by_torch_is_refused(digits):
    user = sequential_mlp(20)
    torch_prune.l1_unstructured(user[1], "weight", amount=0.5)
    with pytest.raises(MetapruneError, match=r"layer '1' \(Linear\) has a weight that is not a plain parameter"):
        metaprune.prune_module(user, _batch(digits), "snip", 0.1)


@pytest.mark.parametrize(
    "method, density, scope, match",
    [
        ("snip#layer", 0.004, "global", r"density 0.004 keeps no weight of layer 5.weight \(100 weights\)"),
        ("snip", 0.004, "layer", r"density 0.004 keeps no weight of layer 5.weight \(100 weights\)"),
        ("random#erk", 0.0008, "global", r"budget erk keeps no weight of layer"),
        ("snip", 0.0, "global", r"bad density 0.0; accepted: 0 < density <= 1"),
    ],
)
def test_a_density_that_empties_a_layer_is_refused(method, density, scope, match, digits):
    _refused(sequential_mlp(20, 10), match, _batch(digits), method, density, scope=scope)


def test_a_learned_model_refuses_a_module_its_card_does_not_fit(fitted, digits):
    plain, _ = fitted
    _refused(sequential_mlp(20, 10), r"per-layer normalised", _batch(digits), f"learned:{plain.path}", 0.1)


@pytest.mark.parametrize(
    "batch, match",
    [
        ("digits", r"bad batch of type str; accepted: a pair \(inputs, labels\)"),
        ((torch.zeros(4, 64, dtype=torch.long), torch.zeros(4, dtype=torch.long)), r"bad batch inputs \(torch.int64"),
        ((torch.zeros(4, 64), torch.zeros(4)), r"bad batch labels \(torch.float32 tensor of shape \(4,\)\)"),
        ((torch.zeros(4, 64), torch.zeros(3, dtype=torch.long)), r"bad batch labels .* for 4 inputs"),
        ((torch.zeros(4, 64), torch.full((4,), 10)), r"batch label 10 is not a class of the module's 10 outputs"),
        ((torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long)), r"forward fails on the batch's inputs of shape"),
    ],
    ids=["not-a-pair", "integer-inputs", "float-labels", "short-labels", "label-too-large", "wrong-shape"],
)
def test_a_bad_batch_is_refused(batch, match):
    _refused(sequential_mlp(20, 10), match, batch, "snip", 0.1)


def test_a_bad_seed_or_method_is_refused(digits):
    _refused(sequential_mlp(20, 10), r"bad seed -1; accepted: a non-negative integer", _batch(digits), "snip", 0.1, -1)
    _refused(sequential_mlp(20, 10), r"unknown scorer 'snop'", _batch(digits), "snop", 0.1)
    _refused(sequential_mlp(20, 10), r"warm-up\), which needs a training set", _batch(digits), "snip+w1", 0.1)


# ------------------------------------------------------------------------------------------- learned scorers


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A linear model on raw features (fits its own network only) and a rank-preprocessed one (transfers)."""
    from metaprune.fit.core import FitConfig, fit_model
    from tests.test_fit_helpers import tiny_store

    store = tiny_store(tmp_path_factory, "main", tuple(range(6)))
    models = tmp_path_factory.mktemp("user-module-models")
    recipe = FitConfig.for_recipe
    plain = fit_model(
        store, recipe("thesis", model="linear", features="scores,structure,activations"), models_dir=models
    )
    ranked = fit_model(
        store, recipe("thesis", model="lightgbm", preprocess="rank", options={"rounds": 10}), models_dir=models
    )
    return plain, ranked


def test_a_transferable_learned_model_gives_the_registry_mask(fitted, digits):
    from tests.test_fit_helpers import NETWORK

    _, ranked = fitted
    method = f"learned:{ranked.path}"
    ref = prune_network(NETWORK, "digits", method, DENSITY, SEED).ticket
    net = build_network(NETWORK, digits.input_shape, digits.num_classes, SEED)
    user = copy_theta0(net, sequential_mlp(12, 8))
    result = metaprune.prune_module(user, _batch(digits), method, DENSITY, SEED)
    assert torch.equal(result.mask, ref.mask.reshape(-1).bool().cpu())


# ------------------------------------------------------------------------------------------------- README


def readme_example() -> str:
    """The python block of the README's section "Prune your own module"."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Prune your own module", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README section has one python example"
    return blocks[0]


def test_the_readme_example_runs(capsys):
    namespace: dict = {}
    exec(compile(readme_example(), "README.md: Prune your own module", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "fc1.weight" in printed
    net, fresh, result = namespace["net"], namespace["fresh"], namespace["result"]
    assert torch.equal(fresh.fc1.weight_mask, net.fc1.weight_mask)
    assert result.report.kept == keep_count(0.1, prunable_layout(fresh).total)


def test_the_report_counts_the_same_paths_through_every_activation_left_dense():
    """Path counts depend on the mask alone for activations that are positive and increasing on
    non-negative inputs: the same mask gives the same report under ReLU, in-place LeakyReLU, GELU, SiLU."""
    from metaprune.pruning.masks import mask_report

    def mlp(act) -> nn.Sequential:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), act(), nn.Linear(12, 8), act(), nn.Linear(8, 10))

    mask = torch.rand(64 * 12 + 12 * 8 + 8 * 10, generator=torch.Generator().manual_seed(0)) < 0.08
    reports = [
        _layer_summary(mask_report(mlp(act), mask, input_shape=(1, 8, 8)))
        for act in (nn.ReLU, lambda: nn.LeakyReLU(inplace=True), nn.GELU, nn.SiLU)
    ]
    assert all(r == reports[0] for r in reports)
    assert any(dead_in or dead_out for _, _, _, dead_in, dead_out, _, _ in reports[0])  # the mask cuts some units
