"""MobileNet v1/v2/v3: depthwise separable arithmetic, torchvision equality, paper numbers."""
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import conv2d_macs, conv2d_output_size, conv2d_params, count_macs, count_params
from cnnlearn.models import create_model, list_models
from cnnlearn.models.layers import ConvBNAct, DepthwiseSeparableConv, SqueezeExcite, make_divisible
from cnnlearn.models.mobilenet import (
    MOBILENET_V2_SETTING, MOBILENET_V3_LARGE, MOBILENET_V3_SMALL, InvertedResidual, MobileNetV1,
    MobileNetV2, MobileNetV3, load_torchvision_weights, mobilenet_v1, mobilenet_v2,
    mobilenet_v3_large, mobilenet_v3_small, resolution_for,
)

from conftest import assert_equivalent, demanding_reference

# --------------------------------------------------------------------------- the arithmetic


def test_notes_example_standard_vs_depthwise_separable():
    # The course notes' example: a 5x5x3 input, a 3x3 convolution to 4 channels, no padding.
    standard = nn.Conv2d(3, 4, 3, bias=False)
    depthwise = nn.Conv2d(3, 3, 3, groups=3, bias=False)
    pointwise = nn.Conv2d(3, 4, 1, bias=False)
    assert conv2d_params(3, 4, 3, bias=False) == count_params(standard) == 108
    assert conv2d_macs(3, 4, 3, output_size=3) == count_macs(standard, (3, 5, 5)) == 972
    dw_params = conv2d_params(3, 3, 3, groups=3, bias=False)
    pw_params = conv2d_params(3, 4, 1, bias=False)
    assert (dw_params, pw_params) == (27, 12)
    assert dw_params + pw_params == count_params(nn.Sequential(depthwise, pointwise)) == 39
    dw_macs = conv2d_macs(3, 3, 3, output_size=3, groups=3)
    pw_macs = conv2d_macs(3, 4, 1, output_size=3)
    assert (dw_macs, pw_macs) == (243, 108)
    assert dw_macs + pw_macs == count_macs(nn.Sequential(depthwise, pointwise), (3, 5, 5)) == 351


@pytest.mark.parametrize("cin,cout,k,stride,size", [
    (3, 4, 3, 1, 5), (32, 64, 3, 1, 16), (64, 128, 3, 2, 15), (16, 24, 5, 2, 17),
    (24, 40, 5, 1, 9), (8, 8, 7, 1, 11), (12, 6, 1, 2, 8),
])
def test_depthwise_separable_params_and_macs(cin, cout, k, stride, size):
    block = DepthwiseSeparableConv(cin, cout, k, stride)
    out = conv2d_output_size(size, k, stride, padding=k // 2)
    conv_params = conv2d_params(cin, cin, k, groups=cin, bias=False) + conv2d_params(cin, cout, 1, bias=False)
    bn_params = 2 * cin + 2 * cout  # gamma and beta of the two BatchNorms
    assert count_params(block) == conv_params + bn_params
    macs = conv2d_macs(cin, cin, k, out, groups=cin) + conv2d_macs(cin, cout, 1, out)
    assert count_macs(block, (cin, size, size)) == macs
    assert block(torch.randn(2, cin, size, size)).shape == (2, cout, out, out)
    # Howard et al. 2017, Eq. 5: separable / standard = 1/N + 1/k^2
    standard = conv2d_macs(cin, cout, k, out)
    assert Fraction(macs, standard) == Fraction(1, cout) + Fraction(1, k * k)


def test_depthwise_conv_is_one_filter_per_channel():
    block = DepthwiseSeparableConv(4, 6, 3)
    dw = block.depthwise[0]
    assert dw.groups == 4 and dw.weight.shape == (4, 1, 3, 3)
    # a change in input channel 0 only changes depthwise output channel 0
    x = torch.randn(1, 4, 6, 6)
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        diff = (dw(x) - dw(x2)).abs().sum((0, 2, 3))
    assert diff[0] > 0 and torch.all(diff[1:] == 0)


# --------------------------------------------------------------------------- MobileNet v1 vs the paper


def test_mobilenet_v1_params_and_mult_adds_match_the_paper():
    model = mobilenet_v1()
    params = count_params(model)
    assert params == 4_231_976
    assert round(params / 1e6, 1) == 4.2  # "4.2 million" parameters, Table 8
    assert round(count_macs(model) / 1e6) == 569  # "569 million" mult-adds, Table 8


@pytest.mark.parametrize("alpha,million_params,million_macs", [
    (0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41),  # Howard et al. 2017, Table 6
])
def test_mobilenet_v1_width_multiplier_matches_table_6(alpha, million_params, million_macs):
    model = mobilenet_v1(width_mult=alpha)
    assert round(count_params(model) / 1e6, 1) == million_params
    assert abs(count_macs(model) / 1e6 - million_macs) < 1


def test_mobilenet_v1_resolution_multiplier_scales_macs_by_rho_squared():
    model = mobilenet_v1()
    fc_macs = 1024 * 1000  # the classifier does not depend on the resolution
    conv224 = count_macs(model, (3, 224, 224)) - fc_macs
    for rho, million_macs in ((6 / 7, 418), (5 / 7, 290), (4 / 7, 186)):  # Table 7
        size = resolution_for(rho)
        macs = count_macs(model, (3, size, size))
        # every feature map is rho times smaller per side: exactly rho^2 of the conv MACs
        assert (macs - fc_macs) * 49 == conv224 * round(49 * rho * rho)
        assert abs(macs / 1e6 - million_macs) < 1
    assert [resolution_for(r) for r in (1, 6 / 7, 5 / 7, 4 / 7)] == [224, 192, 160, 128]


def test_mobilenet_v1_stage_shapes():
    model = mobilenet_v1().eval()
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    with torch.no_grad():
        x = model.stem(x)
        for stage in model.stages:
            x = stage(x)
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert sum(len(s) for s in model.stages) == 13  # 13 depthwise separable blocks, Table 1


# --------------------------------------------------------------------------- v2 / v3 vs torchvision





REFERENCES = {
    # name: (ours, torchvision's, parameters, GMACs at 224x224 from torchvision's model cards)
    "mobilenet_v2": (mobilenet_v2, torchvision.models.mobilenet_v2, 3_504_872, 0.301),
    "mobilenet_v3_large": (mobilenet_v3_large, torchvision.models.mobilenet_v3_large, 5_483_032, 0.217),
    "mobilenet_v3_small": (mobilenet_v3_small, torchvision.models.mobilenet_v3_small, 2_542_856, 0.057),
}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_params_and_macs_equal_torchvision(name):
    ours_fn, tv_fn, params, gmacs = REFERENCES[name]
    ours, tv = ours_fn(), tv_fn(weights=None)
    assert count_params(ours) == count_params(tv) == params
    macs = count_macs(ours)
    assert macs == count_macs(tv)
    assert round(macs / 1e9, 3) == gmacs


@pytest.mark.parametrize("name", list(REFERENCES))
def test_outputs_equal_torchvision_after_copying_weights(name):
    ours_fn, tv_fn, _, _ = REFERENCES[name]
    torch.manual_seed(0)
    tv = demanding_reference(tv_fn(weights=None))
    ours = ours_fn()
    load_torchvision_weights(ours, tv)
    assert_equivalent(ours, tv, torch.randn(2, 3, 224, 224))


def test_weight_loading_rejects_a_different_architecture():
    with pytest.raises(ValueError, match="blocks"):
        load_torchvision_weights(mobilenet_v3_small(), torchvision.models.mobilenet_v3_large(weights=None))
    with pytest.raises(ValueError, match="cannot map"):
        load_torchvision_weights(mobilenet_v2(), torchvision.models.mobilenet_v3_small(weights=None))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_torchvision_weights(mobilenet_v2(num_classes=10), torchvision.models.mobilenet_v2(weights=None))


# --------------------------------------------------------------------------- structure


def test_v2_blocks_follow_the_table():
    model = mobilenet_v2()
    assert [len(s) for s in model.stages] == [n for _, _, n, _ in MOBILENET_V2_SETTING]
    first = model.stages.stage1[0]
    assert isinstance(first.expand, nn.Identity)  # t = 1: no expansion convolution
    block = model.stages.stage2[1]  # 24 -> 144 -> 24, stride 1: residual
    assert block.depthwise[0].in_channels == 144 and block.use_residual
    assert not model.stages.stage2[0].use_residual  # stride 2
    assert len(block.project) == 2  # conv + BN, no activation: the linear bottleneck


@pytest.mark.parametrize("rows,stages", [(MOBILENET_V3_LARGE, 5), (MOBILENET_V3_SMALL, 4)])
def test_v3_blocks_follow_the_table(rows, stages):
    model = MobileNetV3(rows, 1280)
    blocks = [b for s in model.stages for b in s]
    assert len(model.stages) == stages
    assert len(blocks) == len(rows)
    for row, block in zip(rows, blocks):
        assert block.depthwise[0].kernel_size == (row.kernel_size, row.kernel_size)
        assert block.depthwise[0].out_channels == row.expanded_channels
        assert block.out_channels == row.out_channels
        assert isinstance(block.se, SqueezeExcite) == row.use_se
        assert isinstance(block.depthwise[2], row.act_layer)
        if row.use_se:  # a quarter of the expansion, rounded to 8 (Sec. 5.3)
            assert block.se.fc1.out_channels == make_divisible(row.expanded_channels // 4, 8)
            assert isinstance(block.se.gate, nn.Hardsigmoid)


def test_width_multiplier_thins_the_network():
    full, half = mobilenet_v2(), mobilenet_v2(width_mult=0.5)
    assert half.stem[0].out_channels == 16
    assert count_params(half) < count_params(full)
    assert half.head.conv[0].out_channels == 1280  # the last layer keeps its width (Sec. 6.1)
    assert mobilenet_v3_large(width_mult=0.75)(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v1(width_mult=0)
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v2(width_mult=-0.5)
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v3_small(width_mult=0)
    with pytest.raises(ValueError, match="expansion t"):
        MobileNetV2(setting=((0, 16, 1, 1),))
    with pytest.raises(ValueError, match="expanded_channels"):
        InvertedResidual(16, 16, expanded_channels=0)
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(16, 16, 96, stride=3)
    with pytest.raises(ValueError, match="groups=4 must divide in_channels=6"):
        ConvBNAct(6, 12, groups=4)
    with pytest.raises(ValueError, match="dropout"):
        mobilenet_v2(dropout=1.0)
    with pytest.raises(ValueError, match="rho"):
        resolution_for(1.5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        MobileNetV1()(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="bn_momentum"):
        MobileNetV3(MOBILENET_V3_SMALL, 1024, bn_momentum=0.0)


def test_v3_batchnorm_momentum_reference_for_imagenet_default_for_cifar():
    # The reference's slow running averages (0.01) leave a short CIFAR run with BatchNorm
    # statistics near their initial values, so the CIFAR variant uses PyTorch's 0.1.
    def momenta(model):
        return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta(create_model("mobilenet_v3_small")) == {0.01}
    assert momenta(create_model("mobilenet_v3_large")) == {0.01}
    assert momenta(create_model("mobilenet_v3_small_cifar")) == {0.1}


# --------------------------------------------------------------------------- every registered model

MODELS = list_models("mobilenet")


def test_every_family_member_is_registered():
    assert MODELS == sorted(["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                             "mobilenet_v1_cifar", "mobilenet_v2_cifar", "mobilenet_v3_small_cifar"])


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    cifar = name.endswith("_cifar")
    model = create_model(name)
    size, classes = (32, 10) if cifar else (64, 1000)
    x = torch.randn(2, 3, size, size)
    features = model.forward_features(x)
    assert features.shape[-1] == size // (8 if cifar else 32)  # CIFAR: 32 -> 4, ImageNet: /32
    out = model(x)
    assert out.shape == (2, classes)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"
    assert set(dict(model.named_children())) == {"stem", "stages", "head"}
