"""DenseNet: the dense layer and block, transitions, the networks equal to torchvision's,
the layer count of the names, the CIFAR DenseNet-BC and the memory-efficient option."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.densenet import (DenseBlock, DenseLayer, DenseNet, DenseNetConfig, Transition,
                                      densenet_bc_100_12, densenet_depth, load_torchvision_densenet)
from cnnlearn.models.weights import randomize_batchnorm
from conftest import assert_equivalent, demanding_reference


def test_dense_block_channel_arithmetic():
    block = DenseBlock(4, in_channels=16, growth_rate=12)
    # layer l reads k0 + (l - 1) k channels, its bottleneck has 4k, it adds k
    assert [layer.conv1.in_channels for layer in block.values()] == [16, 28, 40, 52]
    assert all(layer.conv1.out_channels == 48 and layer.conv2.out_channels == 12 for layer in block.values())
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert out.shape == (2, 16 + 4 * 12, 8, 8) == (2, block.out_channels, 8, 8)
    assert torch.equal(out[:, :16], x)  # the block's input is passed on unchanged
    t = Transition(64, 32)
    assert t(out).shape == (2, 32, 4, 4)


def test_dense_layer_is_bn_relu_conv1x1_bn_relu_conv3x3_on_the_concatenation():
    torch.manual_seed(0)
    layer = randomize_batchnorm(DenseLayer(24, 12)).eval()
    a, b = torch.randn(2, 16, 8, 8), torch.randn(2, 8, 8, 8)
    x = torch.cat([a, b], 1)
    expected = layer.conv2(torch.relu(layer.norm2(layer.conv1(torch.relu(layer.norm1(x))))))
    with torch.no_grad():
        torch.testing.assert_close(layer([a, b]), expected)
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("name, params, depth", [
    ("densenet121", 7_978_856, 121), ("densenet161", 28_681_000, 161),
    ("densenet169", 14_149_480, 169), ("densenet201", 20_013_928, 201),
])
def test_densenet_params_macs_and_depth_equal_torchvision(name, params, depth):
    with torch.device("meta"):
        ours, theirs = create_model(name), getattr(torchvision.models, name)(weights=None)
        assert count_params(ours) == count_params(theirs) == params
        assert count_macs(ours, (3, 224, 224)) == count_macs(theirs, (3, 224, 224))
    assert densenet_depth(ours.config) == depth


def test_densenet121_layer_count_from_the_config():
    cfg = create_model("densenet121").config
    assert densenet_depth(cfg) == (6 + 12 + 24 + 16) * 2 + 1 + 3 + 1 == 121
    model = create_model("densenet121")
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 121  # the formula counts every convolution and the classifier


@pytest.mark.parametrize("name, size", [("densenet121", 224), ("densenet169", 64)])
def test_densenet_outputs_equal_torchvision_after_copying_weights(name, size):
    torch.manual_seed(0)
    theirs = demanding_reference(getattr(torchvision.models, name)(weights=None), size)
    ours = load_torchvision_densenet(create_model(name), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, size, size))


def test_cifar_densenet_bc_100_12():
    model = densenet_bc_100_12()
    assert densenet_depth(model.config) == 100
    assert count_params(model) == 769_162  # Huang et al. 2017, Table 2: 0.8 M
    # 24 -> 24 + 16*12 = 216 -> 108 -> 300 -> 150 -> 342 channels
    assert [s.block.out_channels for s in model.stages] == [216, 300, 342]
    assert [s.transition.out_channels for s in list(model.stages)[:2]] == [108, 150]
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 342, 8, 8)


def test_memory_efficient_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    cfg = DenseNetConfig(8, (3, 3), 16, stem="cifar")
    plain = randomize_batchnorm(DenseNet(cfg, 10))
    efficient = DenseNet(DenseNetConfig(8, (3, 3), 16, stem="cifar", memory_efficient=True), 10)
    efficient.load_state_dict(plain.state_dict())
    assert all(layer.memory_efficient for s in efficient.stages for layer in s.block.values())
    x = torch.randn(4, 3, 16, 16)
    for model in (plain, efficient):
        model.train()
        model(x).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    # the recomputation does not update the BN statistics a second time
    for (name, a), b in zip(plain.state_dict().items(), efficient.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # eval: the same function
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x))
    # the check can fail: a changed weight changes the gradients
    other = copy.deepcopy(plain)
    with torch.no_grad():
        next(other.parameters()).mul_(1.5)
    other.zero_grad()
    other.train()(x).square().mean().backward()
    assert not torch.allclose(next(other.parameters()).grad, next(plain.parameters()).grad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="compression must be in"):
        DenseNetConfig(12, (16,), 24, compression=0)
    with pytest.raises(ValueError, match=r"block_config\[1\] must be a positive number"):
        DenseNetConfig(12, (16, 0), 24)
    with pytest.raises(ValueError, match="stem must be one of"):
        DenseNetConfig(12, (16,), 24, stem="deep")
    with pytest.raises(ValueError, match="drop_rate must be in"):
        DenseLayer(8, 4, drop_rate=1.0)
