import pytest
import torch

from metaprune.errors import MetapruneError
from metaprune.networks import build_network, flat_weights, prunable_layout, validate_network


def test_lenet_300_100_has_266200_prunable_weights_in_fixed_order():
    net = build_network("lenet_300_100", (1, 28, 28), 10, 0)
    layout = prunable_layout(net)
    assert layout.total == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert layout.names == ("layers.0.weight", "layers.1.weight", "layers.2.weight")
    assert [layer.offset for layer in layout.layers] == [0, 235_200, 265_200]
    assert [(layer.fan_in, layer.fan_out) for layer in layout.layers] == [(784, 300), (300, 100), (100, 10)]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_init_is_seeded_kaiming_normal_with_zero_bias():
    a = build_network("lenet_300_100", (1, 28, 28), 10, 3)
    b = build_network("lenet_300_100", (1, 28, 28), 10, 3)
    c = build_network("lenet_300_100", (1, 28, 28), 10, 4)
    assert torch.equal(flat_weights(a), flat_weights(b))
    assert not torch.equal(flat_weights(a), flat_weights(c))
    w0 = a.layers[0].weight
    assert w0.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    assert torch.all(a.layers[0].bias == 0)


def test_layout_split_round_trips():
    net = build_network("mlp:7-5", (1, 2, 3), 4, 0)
    layout = prunable_layout(net)
    flat = torch.arange(layout.total, dtype=torch.float32)
    parts = layout.split(flat)
    assert [tuple(p.shape) for p in parts] == [(7, 6), (5, 7), (4, 5)]
    assert torch.equal(layout.flatten(parts), flat)
    assert layout.split(torch.stack([flat, flat]))[1].shape == (2, 5, 7)


@pytest.mark.parametrize(
    "spec,shape,out",
    [
        ("conv2", (1, 28, 28), 10),
        ("conv4", (3, 32, 32), 10),
        ("lenet5", (1, 28, 28), 10),
        ("resnet20", (3, 32, 32), 10),
    ],
)
def test_conv_networks_build_and_list_conv_kernels(spec, shape, out):
    net = build_network(spec, shape, out, 0)
    assert net(torch.zeros(2, *shape)).shape == (2, out)
    layout = prunable_layout(net)
    assert any(len(layer.shape) == 4 for layer in layout.layers)


def test_bad_specs_are_one_line_errors():
    with pytest.raises(MetapruneError, match="accepted: lenet_300_100, mlp"):
        validate_network("vgg")
    with pytest.raises(MetapruneError, match="mlp:500-300"):
        validate_network("mlp:5x3")
    with pytest.raises(MetapruneError, match="too small"):
        build_network("lenet5", (1, 8, 8), 10, 0)
