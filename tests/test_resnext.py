"""ResNeXt: the block's three equivalent forms (Xie et al. 2017, Fig. 3), the networks equal
to torchvision's, and the Table 2 templates of cardinality against width."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import conv2d_params, count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.resnet import load_torchvision_resnet, make_shortcut
from cnnlearn.models.resnext import (FORMS, TABLE2_TEMPLATES, ResNeXtConcat, ResNeXtGrouped, ResNeXtPaths,
                                     convert_block, resnext50_template)
from cnnlearn.models.weights import randomize_batchnorm
from conftest import assert_equivalent, demanding_reference


def _random_block(form: str, in_channels=64, out_channels=128, cardinality=8, width=4, stride=2, seed=0):
    """A block with random convolutions and random BN affine parameters and statistics."""
    torch.manual_seed(seed)
    shortcut = (make_shortcut("B", in_channels, out_channels, stride)
                if in_channels != out_channels or stride != 1 else None)
    block = FORMS[form](in_channels, out_channels, cardinality, width, stride, shortcut)
    return randomize_batchnorm(block, seed=seed).eval()


@pytest.mark.parametrize("source, target", list(itertools.permutations(FORMS, 2)))
def test_the_three_forms_compute_the_same_function(source, target):
    block = _random_block(source)
    other = convert_block(block, target)
    assert type(other) is FORMS[target] and other.form == target
    assert count_params(other) == count_params(block)  # the same weights, arranged differently
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        out, expected = other(x), block(x)
    assert out.shape == (2, 128, 8, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the comparison can fail: another block of the same form differs
    with torch.no_grad():
        assert (_random_block(source, seed=1)(x) - expected).abs().max() > 1e-2


def test_forms_agree_with_an_identity_shortcut_and_round_trip_exactly():
    block = _random_block("paths", 256, 256, 32, 4, 1)  # conv2 of ResNeXt-50 (Fig. 3)
    assert isinstance(block.shortcut, nn.Identity) and len(block.paths) == 32
    back = convert_block(convert_block(convert_block(block, "grouped"), "concat"), "paths")
    for (k, v), (k2, v2) in zip(block.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(convert_block(block, "grouped")(x), block(x), atol=1e-5, rtol=1e-5)


def test_grouped_form_is_the_resnet_bottleneck_with_groups():
    block = ResNeXtGrouped(256, 256, cardinality=32, width=4)
    assert block.conv2.groups == 32 and block.conv2.in_channels == block.conv2.out_channels == 128
    net = create_model("resnext50_32x4d")
    assert type(net.stages.stage1[1]).__name__ == "Bottleneck"
    assert count_params(block) == count_params(net.stages.stage1[1])
    # 1x1 256->128, grouped 3x3 (32 groups of 4->4), 1x1 128->256, and three BNs
    assert count_params(block) == (conv2d_params(256, 128, 1, bias=False) + conv2d_params(128, 128, 3, groups=32, bias=False)
                                   + conv2d_params(128, 256, 1, bias=False) + 2 * (128 + 128 + 256))


def test_table2_templates_cost_about_the_same():
    # Xie et al. 2017, Table 2: the conv2 block of each template has about 70k parameters
    # (C*d*256 in the 1x1s, C*d*d*9 in the 3x3s).
    block_params = [256 * c * d + 9 * c * d * d + c * d * 256 for c, d in TABLE2_TEMPLATES]
    assert block_params == [69_632, 69_760, 69_888, 71_456, 70_144]
    for (c, d), n in zip(TABLE2_TEMPLATES, block_params):
        block = ResNeXtGrouped(256, 256, c, d)
        assert sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d)) == n
        assert block.conv2.out_channels == c * d  # 64, 80, 96, 112, 128
    with torch.device("meta"):
        nets = [resnext50_template(c, d) for c, d in TABLE2_TEMPLATES]
        params = [count_params(m) for m in nets]
        macs = [count_macs(m, (3, 224, 224)) for m in nets]
    assert params == [25_557_032, 25_425_000, 25_292_968, 25_603_016, 25_028_904]  # 1x64d is ResNet-50
    assert max(params) / min(params) < 1.03
    assert max(macs) / min(macs) < 1.05
    # the paper's Tables 1 and 3: about 4.1 billion multiply-adds ("FLOPs" there) each
    assert all(abs(m / 4.1e9 - 1) < 0.05 for m in macs)


@pytest.mark.parametrize("name, params, gmacs", [
    ("resnext50_32x4d", 25_028_904, 4.23), ("resnext101_32x8d", 88_791_336, 16.41),
])
def test_resnext_params_and_macs_equal_torchvision(name, params, gmacs):
    with torch.device("meta"):
        ours, theirs = create_model(name), getattr(torchvision.models, name)(weights=None)
        assert count_params(ours) == count_params(theirs) == params
        macs = count_macs(ours, (3, 224, 224))
        assert macs == count_macs(theirs, (3, 224, 224))
    assert round(macs / 1e9, 2) == gmacs


@pytest.mark.parametrize("name, size", [("resnext50_32x4d", 224), ("resnext101_32x8d", 64)])
def test_resnext_outputs_equal_torchvision_after_copying_weights(name, size):
    torch.manual_seed(0)
    theirs = demanding_reference(getattr(torchvision.models, name)(weights=None), size)
    ours = load_torchvision_resnet(create_model(name), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, size, size))


def test_resnext29_for_cifar():
    model = create_model("resnext29_8x64d")
    assert round(count_params(model) / 1e6, 1) == 34.4  # Xie et al. 2017, Table 7
    assert model.stages.stage3[0].conv2.groups == 8 and model.stages.stage3[0].conv2.out_channels == 2048


def test_forward_backward_and_bad_arguments():
    block = ResNeXtPaths(16, 16, cardinality=4, width=2).train()
    x = torch.randn(2, 16, 8, 8)
    block(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    with pytest.raises(ValueError, match="cardinality must be a positive number"):
        ResNeXtConcat(16, 16, cardinality=0)
    with pytest.raises(ValueError, match="changes the shape"):
        ResNeXtPaths(16, 32, cardinality=4, width=2)  # no shortcut given for a shape change
    with pytest.raises(ValueError, match="multiple of out_channels/4"):
        ResNeXtGrouped(16, 96, cardinality=4, width=5, shortcut=make_shortcut("B", 16, 96))
    with pytest.raises(ValueError, match="form must be one of"):
        convert_block(block, "split")
    with pytest.raises(ValueError, match="block must be"):
        convert_block(nn.Conv2d(1, 1, 1), "paths")
