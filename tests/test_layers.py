"""The shared layers of cnnlearn.models.layers."""
import pytest
import torch
import torch.nn as nn

from cnnlearn.measure import count_params
from cnnlearn.models.layers import DepthwiseSeparableConv, SqueezeExcite

from conftest import assert_equivalent

# --------------------------------------------------------------------------- squeeze-and-excitation


@pytest.mark.parametrize("gate_layer", [nn.Sigmoid, nn.Hardsigmoid])
def test_se_gate_stays_in_0_1_and_scales_whole_channels(gate_layer):
    torch.manual_seed(0)
    se = SqueezeExcite(32, 8, gate_layer=gate_layer).eval()
    with torch.no_grad():
        se.fc2.weight.mul_(20)  # push the gate's inputs far into both tails
        x = torch.rand(4, 32, 5, 5) * 10 + 0.1  # positive, so output / input is the gate
        gate = se(x) / x
    assert gate.min() >= 0 and gate.max() <= 1
    assert gate.min() < 0.05 and gate.max() > 0.95  # the test reaches both ends
    # one factor per (image, channel): the same at every pixel
    torch.testing.assert_close(gate, gate[:, :, :1, :1].expand_as(gate))


def test_se_gate_saturates_to_identity_and_to_zero():
    se = SqueezeExcite(16, 4, gate_layer=nn.Hardsigmoid)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        se.fc2.bias.fill_(100.0)
        assert torch.equal(se(x), x)  # hard-sigmoid(100) = 1: every channel passes
        se.fc2.bias.fill_(-100.0)
        assert torch.equal(se(x), torch.zeros_like(x))  # hard-sigmoid(-100) = 0


def test_se_sees_the_whole_image():
    # A change in one corner changes the output in the opposite corner: the squeeze is global.
    torch.manual_seed(0)
    se = SqueezeExcite(8, 2).eval()
    x = torch.randn(1, 8, 6, 6)
    x2 = x.clone()
    x2[..., 0, 0] += 5.0
    with torch.no_grad():
        assert not torch.allclose(se(x)[..., 5, 5], se(x2)[..., 5, 5])


def test_se_parameters():
    # two 1x1 convolutions with bias: C*r + r + r*C + C
    assert count_params(SqueezeExcite(64, 4)) == 64 * 4 + 4 + 4 * 64 + 64
    assert count_params(SqueezeExcite.from_reduction(256, 16)) == 2 * 256 * 16 + 256 + 16


@pytest.mark.parametrize("channels,reduction,divisor,reduced", [
    (256, 16, 1, 16), (2048, 16, 1, 128),       # SE-ResNet-50, r = 16
    (72, 4, 8, 24), (960, 4, 8, 240), (16, 4, 8, 8),  # MobileNetV3: make_divisible(C // 4, 8)
    (10, 3, 1, 3),
])
def test_se_from_reduction(channels, reduction, divisor, reduced):
    se = SqueezeExcite.from_reduction(channels, reduction, divisor)
    assert se.fc1.out_channels == reduced and se.fc2.in_channels == reduced


def test_se_equals_torchvision_and_timm():
    # Same parameter names as torchvision's SqueezeExcitation (MobileNetV3, EfficientNet)
    # and timm's SEModule (SE-ResNet): their state dicts load unchanged.
    from timm.layers import SEModule
    from torchvision.ops import SqueezeExcitation

    torch.manual_seed(0)
    cases = [
        (SqueezeExcitation(64, 16, scale_activation=nn.Hardsigmoid),
         SqueezeExcite(64, 16, nn.ReLU, nn.Hardsigmoid)),
        (SqueezeExcitation(64, 16, activation=nn.SiLU), SqueezeExcite(64, 16, nn.SiLU)),
        # seresnet50's first stage: 256 channels, reduced to 256/16 = 16
        (SEModule(256, rd_ratio=1 / 16), SqueezeExcite.from_reduction(256, 16)),
    ]
    for theirs, ours in cases:
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_()
        ours.load_state_dict(theirs.state_dict())
        assert_equivalent(ours, theirs, torch.randn(2, ours.fc1.in_channels, 7, 7), atol=1e-5, rtol=1e-5)


def test_se_bad_arguments():
    with pytest.raises(ValueError, match="reduction=32 is larger than channels=16"):
        SqueezeExcite.from_reduction(16, 32)
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcite.from_reduction(16, 0)
    with pytest.raises(ValueError, match="reduced_channels=32 must not exceed channels=16"):
        SqueezeExcite(16, 32)
    with pytest.raises(ValueError, match="reduced_channels"):
        SqueezeExcite(16, 0)
    with pytest.raises(ValueError, match="channels"):
        SqueezeExcite(0, 1)


# --------------------------------------------------------------------------- depthwise separable convolution


def test_depthwise_separable_conv_structure_and_shape():
    block = DepthwiseSeparableConv(8, 16, kernel_size=5, stride=2)
    dw, pw = block.depthwise[0], block.pointwise[0]
    assert (dw.in_channels, dw.out_channels, dw.groups, dw.kernel_size, dw.stride) == (8, 8, 8, (5, 5), (2, 2))
    assert (pw.in_channels, pw.out_channels, pw.groups, pw.kernel_size) == (8, 16, 1, (1, 1))
    assert isinstance(block.depthwise[2], nn.ReLU) and isinstance(block.pointwise[2], nn.ReLU)
    assert block(torch.randn(2, 8, 15, 15)).shape == (2, 16, 8, 8)
    assert block.out_channels == 16


def test_depthwise_separable_conv_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        DepthwiseSeparableConv(8, 16, stride=0)
    with pytest.raises(ValueError, match="out_channels"):
        DepthwiseSeparableConv(8, 0)
