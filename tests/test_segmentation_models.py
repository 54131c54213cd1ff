"""Segmentation networks: FCN and DeepLabv3 against torchvision, the dilated ResNet
backbone, and the small FCN-32s/16s/8s, DeepLabv3 and U-Net for 64x64 scenes."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn import count_macs, count_params, create_model
from cnnlearn.models import resnet as R
from cnnlearn.models import segmentation as S
from cnnlearn.models.layers import AuxOutputs
from cnnlearn.models.weights import randomize_batchnorm

from conftest import assert_equivalent

pytestmark = pytest.mark.usefixtures("one_thread")


class _OutAndAux(nn.Module):
    """Both of a segmentation network's outputs in one tensor, for compare_outputs."""

    def __init__(self, model: nn.Module, ours: bool) -> None:
        super().__init__()
        self.model, self.ours = model, ours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.model.forward_dict(x) if self.ours else self.model(x)
        return torch.cat([d["out"], d["aux"]], dim=1)  # (B, 2K, H, W)


@pytest.mark.parametrize("name, aux, expected", [
    ("fcn_resnet50", False, 32_957_013), ("fcn_resnet50", True, 35_322_218),
    ("deeplabv3_resnet50", False, 39_638_869), ("deeplabv3_resnet50", True, 42_004_074),
])
def test_params_and_macs_equal_torchvision(name, aux, expected):
    with torch.device("meta"):  # counting needs no memory
        ours = getattr(S, name)(aux_loss=aux)
        theirs = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=aux)
    assert count_params(ours) == count_params(theirs) == expected
    if aux:  # MACs: both heads run in eval mode too, in both libraries
        assert count_macs(_OutAndAux(ours, True), (3, 128, 128)) == count_macs(_OutAndAux(theirs, False),
                                                                               (3, 128, 128))


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_weights_give_same_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=True)
    randomize_batchnorm(theirs)
    ours = S.load_torchvision_segmentation(getattr(S, name)(aux_loss=True), theirs)
    # 64x64: stage 4 is 8x8 at output stride 8, so rates 12..36 reach past the map's
    # border (their taps read padding), as at full size near the image's edges.
    x = torch.randn(2, 3, 64, 64)
    assert_equivalent(_OutAndAux(ours, True), _OutAndAux(theirs, False), x)
    ours.eval()
    with torch.no_grad():
        assert ours(x).shape == (2, 21, 64, 64)  # eval mode: the main logits alone


def test_dilated_resnet50_equals_torchvision_and_keeps_resolution():
    torch.manual_seed(0)
    with torch.device("meta"):
        for dilate in [(False, False, True), (False, True, True)]:
            ours = R.resnet50(replace_stride_with_dilation=dilate)
            theirs = torchvision.models.resnet50(replace_stride_with_dilation=list(dilate))
            assert count_params(ours) == count_params(theirs) == 25_557_032  # dilation adds no parameters
            assert count_macs(ours, (3, 64, 64)) == count_macs(theirs, (3, 64, 64))
            assert ours.forward_features(torch.empty(1, 3, 64, 64)).shape[-1] == 64 // 32 * 2 ** sum(dilate)
    # torchvision's rule: the first block of a dilated stage keeps the previous dilation
    ours = R.resnet50(replace_stride_with_dilation=(False, True, True))
    dil = {n: m.dilation[0] for n, m in ours.named_modules() if n.endswith("conv2") and "stage" in n}
    assert dil["stages.stage3.0.conv2"] == 1 and dil["stages.stage3.1.conv2"] == 2
    assert dil["stages.stage4.0.conv2"] == 2 and dil["stages.stage4.2.conv2"] == 4
    theirs = randomize_batchnorm(torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]))
    R.load_torchvision_resnet(ours, theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 48, 48))


def test_replace_stride_with_dilation_is_checked():
    with pytest.raises(ValueError, match="one bool per stage after the first"):
        R.ResNetConfig(R.Bottleneck, (3, 4, 6, 3), replace_stride_with_dilation=(True, True))
    with pytest.raises(ValueError, match="BasicBlock or Bottleneck"):
        R.ResNetConfig(R.PreActBasicBlock, (1, 1, 1), widths=(16, 32, 64), stem="cifar",
                       replace_stride_with_dilation=(False, True))
    with pytest.raises(ValueError, match="output_stride must be one of"):
        S.deeplabv3_small(output_stride=4)


# --------------------------------------------------------------------------- small networks


@pytest.mark.parametrize("name, kwargs", [
    ("fcn32s_small", {}), ("fcn16s_small", {}), ("fcn8s_small", {}), ("fcn8s_small", {"upsample": "transposed"}),
    ("fcn8s_small", {"upsample": "resize-conv"}),
    ("deeplabv3_small", {"output_stride": 8}), ("deeplabv3_small", {"output_stride": 16}),
    ("deeplabv3_small", {"output_stride": 32}), ("unet_small", {}),
])
def test_small_networks_forward_backward(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 11, 64, 64)  # background + 10 garments, at the input's resolution
    out.square().mean().backward()
    # FCN's skip scores start at zero (as in the paper), yet their own weights get a
    # gradient (their input is non-zero), and the stages below reach the output through stage 4.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without a gradient: {no_grad}"


def test_small_network_params_and_macs():
    # Dilation changes the MACs, never the parameters: output stride 8 does 4x the stage-3
    # work and 16x the stage-4 work of output stride 32.
    counts = {os: (count_params(S.deeplabv3_small(output_stride=os)),
                   count_macs(S.deeplabv3_small(output_stride=os), (3, 64, 64))) for os in (8, 16, 32)}
    assert counts[8][0] == counts[16][0] == counts[32][0]
    assert counts[8][1] > counts[16][1] > counts[32][1]
    fcn = {k: S.FCN(skips=k) for k in (0, 1, 2)}
    # each skip adds one 1x1 scoring conv: (channels + 1) * 11 parameters
    assert count_params(fcn[1]) - count_params(fcn[0]) == (128 + 1) * 11
    assert count_params(fcn[2]) - count_params(fcn[1]) == (64 + 1) * 11
    transposed = S.fcn8s_small(upsample="transposed")
    assert count_params(transposed) - count_params(fcn[2]) == 2 * 11 * 4 * 4  # two grouped 4x4 kernels
    resize_conv = S.fcn8s_small(upsample="resize-conv")
    assert count_params(resize_conv) - count_params(fcn[2]) == 2 * 11 * 3 * 3  # two grouped 3x3 kernels
    # the backbone without its fc is a narrow ResNet-10: record its size for the chapter
    assert count_params(fcn[0]) == count_params(S.small_backbone()) - (256 + 1) + 256 * 11 + 11
    unet = S.unet_small()
    assert count_macs(unet, (3, 64, 64)) > count_macs(fcn[2], (3, 64, 64))  # full-resolution decoder


def test_bilinear_transposed_convolution_upsamples_bilinearly():
    # FCN's initial upsampling equals F.interpolate(bilinear, align_corners=False) away
    # from the border (which the transposed convolution pads with zeros).
    x = torch.randn(1, 3, 8, 8)
    up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, groups=3, bias=False)
    with torch.no_grad():
        up.weight.copy_(S.bilinear_kernel(3, 4))
        y = up(x)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_aux_outputs_in_training_mode():
    model = S.SegmentationNet(S.small_backbone(16, width=8), S.DeepLabHead(64, 11, (1, 2, 3), 16),
                              S.FCNHead(32, 11))
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert isinstance(out, AuxOutputs) and out.aux_weight == 0.5
    assert out.logits.shape == out.aux[0].shape == (2, 11, 64, 64)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 11, 64, 64)


def test_small_fcn_learns_one_batch():
    torch.manual_seed(0)
    model = S.fcn8s_small(width=8)
    x = torch.randn(4, 3, 64, 64)
    y = (x[:, 0] > 0).long() * 3  # a mask the network can read off the first channel
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="multiples of 8"):
        S.unet_small()(torch.randn(1, 3, 60, 60))


def test_bilinear_kernel_bad_arguments():
    from cnnlearn.models.segmentation import bilinear_kernel

    with pytest.raises(ValueError, match="kernel_size"):
        bilinear_kernel(3, 0)
    with pytest.raises(ValueError, match="channels"):
        bilinear_kernel(-1, 4)


def test_resize_conv_starts_as_bilinear():
    # Initialised to the identity, the resize-convolution FCN-8s computes what the bilinear one does;
    # a bad upsample name is refused with the choices.
    torch.manual_seed(0)
    bilinear = S.fcn8s_small().eval()
    for p in bilinear.skip_scores.parameters():
        nn.init.normal_(p)  # non-zero skips, so the fused scores pass through the upsampling
    resize = S.fcn8s_small(upsample="resize-conv").eval()
    resize.load_state_dict(bilinear.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(resize(x), bilinear(x))
    with pytest.raises(ValueError, match="resize-conv"):
        S.fcn8s_small(upsample="nearest")
