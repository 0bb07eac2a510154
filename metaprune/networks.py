"""Networks behind one registry, sized from the dataset's input shape and class count.

Every network is an ``nn.Module`` whose prunable weights (the weight matrices of Linear layers and the
kernels of Conv layers; biases and norms are not pruned) are listed by ``prunable_layout`` in a fixed
order. That order defines the flat ``weight`` axis used by masks, scores and the harvest store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from metaprune.errors import MetapruneError
from metaprune.registry import Registry
from metaprune.seeds import generator


@dataclass(frozen=True)
class PrunableLayer:
    name: str  # parameter name in the module's state dict
    shape: tuple[int, ...]
    depth: int  # 0 for the first prunable layer
    offset: int  # position of this layer's first weight on the flat axis

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def fan_out(self) -> int:
        return self.shape[0] * (math.prod(self.shape[2:]) if len(self.shape) > 2 else 1)


@dataclass(frozen=True)
class PrunableLayout:
    """The prunable weights of a network in their fixed order, with flat-axis offsets."""

    layers: tuple[PrunableLayer, ...]

    @property
    def total(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views (reshaped to each weight's shape) of a flat tensor on the weight axis.

        Works for a leading population axis too: ``flat`` may be ``[n]`` or ``[K, n]``.
        """
        lead = flat.shape[:-1]
        out = []
        for layer in self.layers:
            out.append(flat[..., layer.offset : layer.offset + layer.size].reshape(*lead, *layer.shape))
        return out

    def flatten(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in per_layer])


def prunable_layout(net: nn.Module) -> PrunableLayout:
    layers = []
    offset = 0
    depth = 0
    for mod_name, module in net.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            name = f"{mod_name}.weight" if mod_name else "weight"
            shape = tuple(module.weight.shape)
            layers.append(PrunableLayer(name, shape, depth, offset))
            offset += math.prod(shape)
            depth += 1
    return PrunableLayout(tuple(layers))


def prunable_weights(net: nn.Module) -> list[torch.Tensor]:
    params = dict(net.named_parameters())
    return [params[name] for name in prunable_layout(net).names]


def flat_weights(net: nn.Module) -> torch.Tensor:
    return torch.cat([w.detach().reshape(-1) for w in prunable_weights(net)])


# --------------------------------------------------------------------------------------------- modules


class MLP(nn.Module):
    """A ReLU MLP on flattened input; ``hidden`` are the hidden widths (LeNet-300-100: (300, 100))."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        sizes = (in_features, *hidden, num_classes)
        self.sizes = sizes
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class ConvNet(nn.Module):
    """Conv-2/Conv-4/Conv-6 of the lottery-ticket paper (3x3 convs, 2x2 max-pool after each pair)."""

    def __init__(self, in_shape: tuple[int, int, int], widths: tuple[int, ...], fc: tuple[int, ...], nc: int):
        super().__init__()
        c, h, w = in_shape
        feats: list[nn.Module] = []
        for i, width in enumerate(widths):
            feats += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
            if i % 2 == 1:
                feats.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise MetapruneError(
                f"input of {in_shape[1]}x{in_shape[2]} pixels is too small for a {len(widths)}-conv network; "
                "accepted: inputs of at least 4x4 per conv pair (e.g. mnist, cifar10)"
            )
        self.features = nn.Sequential(*feats)
        self.classifier = MLP(c * h * w, fc, nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5: conv5(6)-pool-conv5(16)-pool-120-84-classes (padding 2 on the first conv)."""

    def __init__(self, in_shape: tuple[int, int, int], nc: int):
        super().__init__()
        c, h, w = in_shape
        if h < 12 or w < 12:
            raise MetapruneError(
                f"input of {h}x{w} pixels is too small for lenet5; accepted: at least 12x12 (mnist, cifar10)"
            )
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        self.classifier = MLP(16 * h2 * w2, (120, 84), nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages of 3 blocks, widths 16-32-64."""

    def __init__(self, in_shape: tuple[int, int, int], nc: int, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks = []
        cin = width
        for stage, mult in enumerate((1, 2, 4)):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_Block(cin, width * mult, stride))
                cin = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = torch.nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# ------------------------------------------------------------------------------------------- registry

Builder = Callable[[tuple[int, int, int], int, str], nn.Module]
NETWORKS: Registry[Builder] = Registry("network")


def _flat(shape: tuple[int, int, int]) -> int:
    return math.prod(shape)


NETWORKS.register(
    "lenet_300_100",
    lambda shape, nc, arg: MLP(_flat(shape), (300, 100), nc),
    "784-300-100-10 ReLU MLP of the lottery-ticket paper (input size follows the dataset)",
    aliases=("lenet300",),
)
NETWORKS.register(
    "mlp",
    lambda shape, nc, arg: MLP(_flat(shape), _parse_widths(arg, "mlp"), nc),
    "configurable ReLU MLP: mlp:500-300 (hidden widths)",
)
NETWORKS.register(
    "conv2", lambda shape, nc, arg: ConvNet(shape, (64, 64), (256, 256), nc), "Conv-2 of the lottery-ticket paper"
)
NETWORKS.register(
    "conv4",
    lambda shape, nc, arg: ConvNet(shape, (64, 64, 128, 128), (256, 256), nc),
    "Conv-4 of the lottery-ticket paper",
)
NETWORKS.register("lenet5", lambda shape, nc, arg: LeNet5(shape, nc), "LeNet-5 (conv 6-16, fc 120-84)")
NETWORKS.register("resnet20", lambda shape, nc, arg: ResNet20(shape, nc), "ResNet-20 for CIFAR-10 (GPU advised)")


def _parse_widths(arg: str, name: str) -> tuple[int, ...]:
    if not arg or not re.fullmatch(r"\d+(-\d+)*", arg):
        raise MetapruneError(
            f"bad network spec {name}:{arg!r}; accepted: {name}:W1-W2-... "
            "with positive integer widths, e.g. mlp:500-300"
        )
    widths = tuple(int(w) for w in arg.split("-"))
    if any(w <= 0 for w in widths):
        raise MetapruneError(f"bad network spec {name}:{arg}: widths must be positive")
    return widths


def split_spec(spec: str) -> tuple[str, str]:
    name, _, arg = spec.partition(":")
    return NETWORKS.canonical(name), arg


def validate_network(spec: str) -> str:
    """Canonical spelling of a network spec, or a one-line error."""
    name, arg = split_spec(spec)
    if name == "mlp":
        _parse_widths(arg, name)
    elif arg:
        raise MetapruneError(f"network {name!r} takes no argument (got {spec!r})")
    return f"{name}:{arg}" if arg else name


def build_network(spec: str, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Build ``spec`` for the given input and initialise it from the ``init`` stream of ``seed``.

    Weights are Kaiming-normal (fan-in, ReLU gain); biases are zero; BatchNorm is weight 1, bias 0.
    """
    name, arg = split_spec(spec)
    net = NETWORKS.get(name)(tuple(input_shape), int(num_classes), arg)
    init_standard(net, seed)
    return net


@torch.no_grad()
def init_standard(net: nn.Module, seed: int) -> None:
    g = generator(seed, "init")
    for module in net.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=g)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
            module.reset_running_stats()

