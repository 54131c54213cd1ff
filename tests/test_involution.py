"""Involution (Li et al. 2021): the tap-by-tap operator (forward and backward) against the plain loop, spatial-specific and
channel-agnostic kernels, RedNet-26/38/50 against the official table."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlearn.measure import conv2d_params, count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.involution import Involution, InvolutionBottleneck, apply_involution, involution_loop
from cnnlearn.models.weights import randomize_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels, kernel_size, stride, size", [(32, 3, 1, 6), (32, 7, 1, 5), (48, 3, 2, 7),
                                                                 (16, 5, 2, 6)])
def test_tap_by_tap_equals_the_plain_loop(channels, kernel_size, stride, size):
    torch.manual_seed(0)
    inv = randomize_batchnorm(Involution(channels, kernel_size, stride)).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        kernels = inv.kernels(x)
        out = inv(x)
        expected = involution_loop(x, kernels, kernel_size, stride)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert out.shape == (2, channels, (size - 1) // stride + 1, (size - 1) // stride + 1)
        # the comparison can fail: other kernels give another output
        assert (involution_loop(x, kernels.roll(1, 1), kernel_size, stride) - out).abs().max() > 1e-3


@pytest.mark.parametrize("kernel_size, stride, size", [(3, 1, 5), (5, 2, 6), (3, 2, 7)])
def test_the_operators_gradients_equal_the_plain_loops(kernel_size, stride, size):
    torch.manual_seed(0)
    h_out = (size - 1) // stride + 1
    # small: gradcheck perturbs every input value in turn (two groups of two channels)
    x = torch.randn(1, 4, size, size, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(1, 2 * kernel_size ** 2, h_out, h_out, dtype=torch.float64, requires_grad=True)
    # its own backward against finite differences
    assert torch.autograd.gradcheck(lambda a, k: apply_involution(a, k, kernel_size, stride), (x, kernels))
    # and against autograd through the loop, in float32 and channels-last as fit runs it
    grads = []
    for fn, fmt in ((involution_loop, torch.contiguous_format), (apply_involution, torch.channels_last)):
        a = x.detach().float().contiguous(memory_format=fmt).requires_grad_()
        k = kernels.detach().float().contiguous(memory_format=fmt).requires_grad_()
        out = fn(a, k, kernel_size, stride)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out, a.grad, k.grad))
    for ours, loop in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, loop, atol=1e-4, rtol=1e-4)
    assert grads[1][0].is_contiguous(memory_format=torch.channels_last)  # no layout change in between


def test_involution_in_bfloat16_autocast_keeps_dtypes_and_sums_in_float32():
    torch.manual_seed(0)
    inv = Involution(32, 7, group_channels=16)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = inv(x)
        kernels = inv.kernels(x)  # a convolution's output: bfloat16 under autocast
        assert kernels.dtype == torch.bfloat16
        assert apply_involution(x.bfloat16(), kernels, 7).dtype == torch.bfloat16
    assert out.dtype == torch.float32  # float32 x and bfloat16 kernels: the wider of the two, as torch.mul
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and inv.span.weight.grad is not None
    with torch.no_grad():
        kernels = inv.kernels(x).bfloat16()
        ours = apply_involution(x.bfloat16(), kernels, 7).float()
        exact = involution_loop(x.bfloat16().double(), kernels.double(), 7)
    # one rounding to bfloat16 at the end (about 0.4%), not 49 of them
    assert ((ours - exact).abs() / exact.abs().clamp_min(1e-2)).median() < 4e-3


def test_involution_on_the_meta_device_counts_its_macs():
    with torch.device("meta"):
        inv = Involution(64, 7, group_channels=16)
    assert count_macs(inv, (64, 8, 8)) == 64 * (64 * 16 + 16 * 196 + 64 * 49)


def test_kernels_are_spatial_specific_and_channel_agnostic():
    torch.manual_seed(0)
    inv = Involution(32, 3, group_channels=16).eval()  # 2 groups of 16 channels
    x = torch.randn(1, 32, 6, 6)
    kernels = inv.kernels(x).view(1, 2, 9, 6, 6)
    assert not torch.allclose(kernels[..., 1, 1], kernels[..., 3, 4])  # another pixel, another kernel
    # channel-agnostic: all 16 channels of a group use one kernel, so a channel that equals
    # another of its group gives the same output
    x2 = x.clone()
    x2[:, 1] = x2[:, 0]
    kernels2 = inv.kernels(x2)
    out = apply_involution(x2, kernels2, 3)
    torch.testing.assert_close(out[:, 1], out[:, 0])
    # a convolution is the reverse: the same kernel at every pixel, one per output channel
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False)
    shifted = F.pad(x, (0, 0, 1, 0))[..., :6, :]  # the image moved down one pixel
    with torch.no_grad():
        torch.testing.assert_close(conv(shifted)[..., 2:5, 1:5], conv(x)[..., 1:4, 1:5])
        assert not torch.allclose(conv(x2)[:, 1], conv(x2)[:, 0])


def test_involution_params_and_macs():
    inv = Involution(64, 7, group_channels=16)  # G = 4, reduction 4
    phi = conv2d_params(64, 16, 1, bias=False) + 2 * 16 + conv2d_params(16, 49 * 4, 1)
    assert count_params(inv) == phi
    # phi's two 1x1 convolutions and the multiply-add: C * K * K per pixel
    assert count_macs(inv, (64, 8, 8)) == 64 * (64 * 16 + 16 * 196 + 64 * 49)


@pytest.mark.parametrize("name, params, table_m", [("rednet26", 9_233_166, 9.23), ("rednet38", 12_386_986, 12.39),
                                                    ("rednet50", 15_540_806, 15.54)])
def test_rednet_params_match_the_official_table(name, params, table_m):
    # Li et al. 2021, Table 2 (9.2M, 12.4M, 15.5M) and the official README's 9.23M, 12.39M, 15.54M
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == params and round(params / 1e6, 2) == table_m


def test_rednet26_forward_and_stem():
    model = create_model("rednet26").eval()
    assert isinstance(model.stem.involution, Involution) and model.stem.involution.kernel_size == 3
    assert isinstance(model.stages.stage3[0].conv2, Involution) and model.stages.stage3[0].conv2.kernel_size == 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_bad_arguments():
    with pytest.raises(ValueError, match="group_channels=16 must divide channels=24"):
        Involution(24)
    with pytest.raises(ValueError, match="kernel_size=4 must be odd"):
        Involution(32, 4)
    with pytest.raises(ValueError, match="kernels must have shape"):
        apply_involution(torch.randn(1, 32, 6, 6), torch.randn(1, 18, 5, 5), 3)
    with pytest.raises(ValueError, match="must divide channels of x"):
        apply_involution(torch.randn(1, 30, 6, 6), torch.randn(1, 36, 6, 6), 3)
    with pytest.raises(ValueError, match="groups must be 1"):
        InvolutionBottleneck(64, 64, groups=2)


def test_rednet29_cifar_trains():
    model = create_model("rednet29_cifar").train()
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_cifar29_networks_cost_about_the_same():
    # chapter 3's matched-MAC comparison: each *29_cifar network within 10% of the ResNet's MACs
    names = ["resnet29_cifar", "res2net29_cifar", "skresnet29_cifar", "resnest29_cifar", "rednet29_cifar"]
    macs = {n: count_macs(create_model(n), (3, 32, 32)) for n in names}
    base = macs["resnet29_cifar"]
    assert 40e6 < base < 55e6  # about ResNet-20's 41M
    assert all(abs(m / base - 1) < 0.11 for m in macs.values()), macs
