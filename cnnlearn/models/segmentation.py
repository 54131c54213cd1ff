"""Semantic segmentation networks: FCN, DeepLabv3's ASPP head and a small U-Net.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015, arXiv:1411.4038: a classifier made convolutional, its coarse scores upsampled
to the input, and skip connections from earlier, finer stages (FCN-32s, -16s, -8s; Sec. 4.2).

Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017, arXiv:1706.05587 (DeepLabv3): a backbone whose last strides are
replaced by dilation (output stride 16 or 8), and Atrous Spatial Pyramid Pooling (ASPP):
parallel 1x1 and dilated 3x3 convolutions plus image-level pooling (Sec. 3.3).

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, arXiv:1505.04597: an encoder-decoder whose decoder
concatenates the encoder's maps of the same resolution.

``fcn_resnet50`` and ``deeplabv3_resnet50`` equal torchvision's networks of the same
names (built with ``weights=None, weights_backbone=None``) tensor for tensor:
:func:`load_torchvision_segmentation` copies their weights by an explicit name mapping.
Their backbone is our own ``resnet50`` with ``replace_stride_with_dilation=(False, True,
True)`` (output stride 8), as torchvision's.

Every network here returns logits ``(B, num_classes, H, W)`` at the input's resolution.
A network with an auxiliary head returns :class:`~cnnlearn.models.layers.AuxOutputs` in
training mode (``cnnlearn.fit``'s contract), the logits alone in eval mode;
``forward_dict`` returns torchvision's ``{"out": ..., "aux": ...}``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import AuxOutputs, ConvBNAct, check_images, check_positive
from .registry import register_model
from .resnet import BasicBlock, Bottleneck, ResNet, ResNetConfig
from .weights import copy_weights, rename

__all__ = [
    "FCNHead", "ASPP", "ASPPPooling", "DeepLabHead", "SegmentationNet", "FCN", "UNet",
    "fcn_resnet50", "deeplabv3_resnet50", "fcn32s_small", "fcn16s_small", "fcn8s_small",
    "deeplabv3_small", "unet_small", "load_torchvision_segmentation", "bilinear_kernel",
    "OUTPUT_STRIDES", "SCENE_CLASSES_WITH_BACKGROUND",
]

OUTPUT_STRIDES = (8, 16, 32)
SCENE_CLASSES_WITH_BACKGROUND = 11  # the scene set: background + 10 Fashion-MNIST garments

# Which strides a ResNet with four stages replaces by dilation for a given output stride
# (stem 4 x stage strides 1, 2, 2, 2 = 32; each replaced stride halves it).
_DILATE_FOR_OUTPUT_STRIDE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def _check_output_stride(output_stride: int) -> tuple[bool, bool, bool]:
    if output_stride not in _DILATE_FOR_OUTPUT_STRIDE:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    return _DILATE_FOR_OUTPUT_STRIDE[output_stride]


# --------------------------------------------------------------------------- heads


class FCNHead(nn.Sequential):
    """torchvision's FCN head: 3x3 conv to ``in_channels // 4`` + BN + ReLU, dropout 0.1,
    1x1 conv to the class scores. ``(B, C, h, w) -> (B, num_classes, h, w)``.

    Args:
        in_channels: channels of the feature map.
        num_classes: classes scored per pixel.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        check_positive(in_channels=in_channels, num_classes=num_classes)
        if in_channels < 4:
            raise ValueError(f"in_channels={in_channels} must be at least 4: the head reduces it fourfold")
        mid = in_channels // 4
        super().__init__(OrderedDict(
            conv=ConvBNAct(in_channels, mid, 3),  # (B, C, h, w) -> (B, C/4, h, w)
            dropout=nn.Dropout(0.1),
            score=nn.Conv2d(mid, num_classes, 1),  # -> (B, num_classes, h, w)
        ))


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pooling, 1x1 conv + BN + ReLU, and
    bilinear upsampling back to the map's size (Chen et al. 2017, Sec. 3.3): it gives
    every pixel the context of the whole image, which large rates fail to give."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, C, h, w) -> (B, C, 1, 1)
        self.conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.pool(x))  # (B, out, 1, 1)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3, Sec. 3.3): a 1x1 branch, one dilated
    3x3 branch per rate and the image-pooling branch, concatenated and projected by a 1x1
    conv (+ BN, ReLU, dropout 0.5 as torchvision).

    ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.

    Args:
        in_channels: channels of the backbone's map.
        atrous_rates: dilation of each 3x3 branch; (6, 12, 18) at output stride 16 and
            twice that at output stride 8 in the paper.
        out_channels: channels of each branch and of the output (256 in the paper).
        dropout: dropout after the projection.
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256,
                 dropout: float = 0.5) -> None:
        super().__init__()
        rates = tuple(atrous_rates)
        check_positive(in_channels=in_channels, out_channels=out_channels,
                       **{f"atrous_rates[{i}]": r for i, r in enumerate(rates)})
        branches: list[nn.Module] = [ConvBNAct(in_channels, out_channels, 1)]
        # padding = rate keeps the size: a dilated 3x3 spans 2*rate + 1 pixels
        branches += [ConvBNAct(in_channels, out_channels, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(  # (B, (len(rates) + 2) * out, h, w) -> (B, out, h, w)
            ConvBNAct(len(branches) * out_channels, out_channels, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabHead(nn.Sequential):
    """DeepLabv3's head as torchvision builds it: ASPP, a 3x3 conv + BN + ReLU, 1x1 scores.

    Args:
        in_channels: channels of the backbone's map.
        num_classes: classes scored per pixel.
        atrous_rates: of the ASPP (torchvision: (12, 24, 36), the paper's rates at output stride 8).
        channels: ASPP width (256 in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36),
                 channels: int = 256) -> None:
        check_positive(num_classes=num_classes)
        super().__init__(OrderedDict(
            aspp=ASPP(in_channels, atrous_rates, channels),  # (B, C, h, w) -> (B, 256, h, w)
            conv=ConvBNAct(channels, channels, 3),
            score=nn.Conv2d(channels, num_classes, 1),  # -> (B, num_classes, h, w)
        ))


# --------------------------------------------------------------------------- backbone + head


class SegmentationNet(nn.Module):
    """A ResNet backbone without its classifier, a head on its last stage, and optionally
    an auxiliary head on an earlier stage; scores upsampled bilinearly to the input size
    (torchvision's ``_SimpleSegmentationModel``).

    Args:
        backbone: a :class:`~cnnlearn.models.resnet.ResNet`; its ``stem`` and ``stages``
            are kept, its ``head`` (pooling and ``fc``) dropped.
        head: takes the last stage's map to class scores.
        aux_head: takes ``aux_stage``'s map to class scores, or ``None``.
        aux_stage: name of the stage the auxiliary head reads.
        aux_weight: weight of the auxiliary loss in training (0.5 in torchvision's
            reference training script, ``references/segmentation/train.py``).

    Attributes:
        stem, stages: the backbone's.
        head, aux_head: as given.
    """

    def __init__(self, backbone: ResNet, head: nn.Module, aux_head: nn.Module | None = None,
                 aux_stage: str = "stage3", aux_weight: float = 0.5) -> None:
        super().__init__()
        if not isinstance(backbone, ResNet):
            raise ValueError(f"backbone must be a cnnlearn ResNet, got {type(backbone).__name__}")
        if aux_head is not None and aux_stage not in dict(backbone.stages.named_children()):
            raise ValueError(f"aux_stage={aux_stage!r} is not a stage of the backbone; "
                             f"choose one of {[n for n, _ in backbone.stages.named_children()]}")
        self.stem, self.stages = backbone.stem, backbone.stages
        self.head, self.aux_head = head, aux_head
        self.aux_stage, self.aux_weight = aux_stage, aux_weight

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every stage's output map, by stage name (``stage1`` ... ``stage4``)."""
        maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for name, stage in self.stages.named_children():
            x = maps[name] = stage(x)
        return maps

    def forward_dict(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """torchvision's output: ``{"out": logits}``, plus ``"aux"`` when there is an
        auxiliary head (in eval mode too), each ``(B, num_classes, H, W)``."""
        check_images(x, self, name=type(self).__name__)
        size = x.shape[-2:]
        maps = self.forward_features(x)
        last = next(reversed(maps.values()))  # (B, C, H/os, W/os)
        out = OrderedDict(out=F.interpolate(self.head(last), size=size, mode="bilinear", align_corners=False))
        if self.aux_head is not None:
            aux = self.aux_head(maps[self.aux_stage])
            out["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        out = self.forward_dict(x)
        if self.training and "aux" in out:
            return AuxOutputs(out["out"], (out["aux"],), self.aux_weight)
        return out["out"]


def _resnet50_dilated() -> ResNet:
    # Output stride 8, as torchvision's segmentation backbones; num_classes=1 keeps the
    # unused fc small (SegmentationNet drops it anyway).
    cfg = ResNetConfig(Bottleneck, (3, 4, 6, 3), replace_stride_with_dilation=(False, True, True))
    return ResNet(cfg, num_classes=1)


@register_model
def fcn_resnet50(num_classes: int = 21, aux_loss: bool = False) -> SegmentationNet:
    """FCN with a dilated ResNet-50 (output stride 8), as ``torchvision.models.segmentation.
    fcn_resnet50``: an :class:`FCNHead` on stage 4 (and with ``aux_loss`` another on stage
    3): 32,957,013 parameters (35,322,218 with ``aux_loss``), as torchvision's. 21 classes:
    PASCAL VOC's 20 and background."""
    aux = FCNHead(1024, num_classes) if aux_loss else None
    return SegmentationNet(_resnet50_dilated(), FCNHead(2048, num_classes), aux)


@register_model
def deeplabv3_resnet50(num_classes: int = 21, aux_loss: bool = False) -> SegmentationNet:
    """DeepLabv3 with a dilated ResNet-50 (output stride 8), as ``torchvision.models.
    segmentation.deeplabv3_resnet50``: a :class:`DeepLabHead` (ASPP rates 12, 24, 36) on
    stage 4, and with ``aux_loss`` an :class:`FCNHead` on stage 3: 39,638,869 parameters
    (42,004,074 with ``aux_loss``), as torchvision's."""
    aux = FCNHead(1024, num_classes) if aux_loss else None
    return SegmentationNet(_resnet50_dilated(), DeepLabHead(2048, num_classes), aux)


# torchvision's names -> ours. backbone.* as load_torchvision_resnet's rules; the heads
# are nn.Sequentials indexed from 0 there: FCNHead (conv, bn, relu, dropout, conv),
# DeepLabHead (ASPP, conv, bn, relu, conv), the ASPP's pooling branch (pool, conv, bn, relu).
_BACKBONE_RULES = (
    (r"backbone\.conv1\.(\w+)", r"stem.conv.0.\1"),
    (r"backbone\.bn1\.(\w+)", r"stem.conv.1.\1"),
    (r"backbone\.layer(\d)\.(\d+)\.(conv\d|bn\d)\.(\w+)", r"stages.stage\1.\2.\3.\4"),
    (r"backbone\.layer(\d)\.(\d+)\.downsample\.0\.(\w+)", r"stages.stage\1.\2.shortcut.conv.\3"),
    (r"backbone\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)", r"stages.stage\1.\2.shortcut.bn.\3"),
    (r"aux_classifier\.0\.(\w+)", r"aux_head.conv.0.\1"),
    (r"aux_classifier\.1\.(\w+)", r"aux_head.conv.1.\1"),
    (r"aux_classifier\.4\.(\w+)", r"aux_head.score.\1"),
)
_FCN_RULES = _BACKBONE_RULES + (
    (r"classifier\.0\.(\w+)", r"head.conv.0.\1"),
    (r"classifier\.1\.(\w+)", r"head.conv.1.\1"),
    (r"classifier\.4\.(\w+)", r"head.score.\1"),
)
_DEEPLAB_RULES = _BACKBONE_RULES + (
    # convs 0-3: the 1x1 and the three dilated branches (conv, bn, relu); convs.4 the
    # pooling branch (torchvision's DeepLabHead always has three rates)
    (r"classifier\.0\.convs\.4\.1\.(\w+)", r"head.aspp.branches.4.conv.0.\1"),
    (r"classifier\.0\.convs\.4\.2\.(\w+)", r"head.aspp.branches.4.conv.1.\1"),
    (r"classifier\.0\.convs\.([0-3])\.([01])\.(\w+)", r"head.aspp.branches.\1.\2.\3"),
    (r"classifier\.0\.project\.([01])\.(\w+)", r"head.aspp.project.0.\1.\2"),
    (r"classifier\.1\.(\w+)", r"head.conv.0.\1"),
    (r"classifier\.2\.(\w+)", r"head.conv.1.\1"),
    (r"classifier\.4\.(\w+)", r"head.score.\1"),
)


def load_torchvision_segmentation(ours: SegmentationNet, tv_model: nn.Module) -> SegmentationNet:
    """Copy the weights of torchvision's ``fcn_resnet50`` or ``deeplabv3_resnet50`` into ours.

    Names are translated by explicit rules: the backbone as in
    :func:`~cnnlearn.models.resnet.load_torchvision_resnet`, ``classifier`` -> ``head``,
    ``aux_classifier`` -> ``aux_head``, the ASPP's ``convs.i`` -> ``aspp.branches.i``.
    Every tensor must find its counterpart with the same shape.

    Args:
        ours: e.g. ``deeplabv3_resnet50(aux_loss=True)``.
        tv_model: the torchvision network of the same kind, classes and ``aux_loss``.

    Returns:
        ``ours``, now computing the same function as ``tv_model``.
    """
    rules = _DEEPLAB_RULES if isinstance(ours.head, DeepLabHead) else _FCN_RULES
    return copy_weights(ours, tv_model, lambda n: rename(n, rules))


# --------------------------------------------------------------------------- small networks


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``(channels, 1, k, k)`` that make a (grouped) transposed convolution of
    stride ``k // 2`` perform bilinear upsampling, channel by channel (Long et al. 2015,
    Sec. 4.2, initialise FCN's 2x upsampling to bilinear interpolation and learn it)."""
    check_positive(channels=channels, kernel_size=kernel_size)
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    t = torch.arange(kernel_size, dtype=torch.float32)
    w1 = 1 - (t - centre).abs() / factor  # a tent of width 2*factor
    return (w1[:, None] * w1[None, :]).expand(channels, 1, kernel_size, kernel_size).clone()


def small_backbone(output_stride: int = 32, width: int = 32, blocks: Sequence[int] = (1, 1, 1, 1)) -> ResNet:
    """A narrow ResNet of BasicBlocks for 64x64 scenes: ImageNet stem (stride 4), four
    stages of widths ``width * (1, 2, 4, 8)``, output stride 32, or 16 / 8 with the last
    one / two strides replaced by dilation.

    Args:
        output_stride: 8, 16 or 32.
        width: channels of the stem and the first stage.
        blocks: BasicBlocks per stage.
    """
    dilate = _check_output_stride(output_stride)
    check_positive(width=width)
    cfg = ResNetConfig(BasicBlock, tuple(blocks), widths=tuple(width * m for m in (1, 2, 4, 8)),
                       stem_width=width, replace_stride_with_dilation=dilate)
    return ResNet(cfg, num_classes=1)


class FCN(nn.Module):
    """FCN-32s, -16s or -8s (Long et al. 2015, Sec. 4.2) on a small ResNet backbone.

    Stage 4's map (stride 32) is scored by a 1x1 convolution. FCN-16s upsamples these
    scores 2x and adds a 1x1 scoring of stage 3 (stride 16); FCN-8s does it once more with
    stage 2 (stride 8). The fused scores are upsampled bilinearly to the input size.

    Args:
        num_classes: classes scored per pixel.
        skips: 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s).
        width: the backbone's first width (see :func:`small_backbone`).
        upsample: the 2x upsampling between fusions: ``"bilinear"`` (fixed),
            ``"transposed"`` (a 4x4 stride-2 transposed convolution per class,
            initialised to bilinear and learned, as in the paper) or ``"resize-conv"``
            (bilinear, then a learned 3x3 convolution per class initialised to the identity:
            the resize-convolution of Odena et al. 2016, which cannot make a checkerboard
            by uneven overlap).
    """

    def __init__(self, num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, skips: int = 2, width: int = 32,
                 upsample: str = "bilinear") -> None:
        super().__init__()
        check_positive(num_classes=num_classes)
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips!r}")
        if upsample not in ("bilinear", "transposed", "resize-conv"):
            raise ValueError(f"upsample must be 'bilinear', 'transposed' or 'resize-conv', got {upsample!r}")
        backbone = small_backbone(32, width)
        self.stem, self.stages = backbone.stem, backbone.stages
        self.skips, self.upsample = skips, upsample
        channels = [width * m for m in (1, 2, 4, 8)]
        self.head = nn.Conv2d(channels[3], num_classes, 1)  # score stage 4: (B, 8w, H/32, W/32) -> (B, K, ., .)
        # score_stage3 (stride 16) and score_stage2 (stride 8), in the order they are fused
        self.skip_scores = nn.ModuleList(nn.Conv2d(channels[2 - i], num_classes, 1) for i in range(skips))
        if upsample == "transposed":
            ups = []
            for _ in range(skips):
                up = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1,
                                        groups=num_classes, bias=False)
                with torch.no_grad():
                    up.weight.copy_(bilinear_kernel(num_classes, 4))
                ups.append(up)
            self.ups = nn.ModuleList(ups)
        elif upsample == "resize-conv":
            ups = []
            for _ in range(skips):
                up = nn.Conv2d(num_classes, num_classes, 3, padding=1, groups=num_classes, bias=False)
                with torch.no_grad():  # the identity: training starts from the bilinear network
                    up.weight.zero_()
                    up.weight[:, :, 1, 1] = 1.0
                ups.append(up)
            self.ups = nn.ModuleList(ups)
        if skips:
            # Zero-init the skip scores, as Long et al. do for the new score layers (Sec. 4.2),
            # so training starts from the coarser network's predictions.
            for conv in self.skip_scores:
                nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Every stage's output map, by stage name."""
        maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for name, stage in self.stages.named_children():
            x = maps[name] = stage(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name=type(self).__name__)
        maps = self.forward_features(x)
        scores = self.head(maps["stage4"])  # (B, K, H/32, W/32)
        for i, name in enumerate(("stage3", "stage2")[:self.skips]):
            skip = self.skip_scores[i](maps[name])  # (B, K, h, w) with h, w twice the scores'
            if self.upsample == "transposed":
                scores = self.ups[i](scores, output_size=skip.shape[-2:])
            else:
                scores = F.interpolate(scores, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                if self.upsample == "resize-conv":
                    scores = self.ups[i](scores)
            scores = scores + skip
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model
def fcn32s_small(num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, width: int = 32,
                 upsample: str = "bilinear") -> FCN:
    """FCN-32s on a small ResNet (:func:`small_backbone`) for 64x64 scenes: stage-4 scores only."""
    return FCN(num_classes, 0, width, upsample)


@register_model
def fcn16s_small(num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, width: int = 32,
                 upsample: str = "bilinear") -> FCN:
    """FCN-16s: FCN-32s plus a skip from stage 3 (stride 16)."""
    return FCN(num_classes, 1, width, upsample)


@register_model
def fcn8s_small(num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, width: int = 32,
                upsample: str = "bilinear") -> FCN:
    """FCN-8s: FCN-16s plus a skip from stage 2 (stride 8)."""
    return FCN(num_classes, 2, width, upsample)


# ASPP rates for 64x64 scenes, our choice: the largest rate stays below the size of the
# map (8, 4 and 2 pixels at output stride 8, 16, 32). A rate near the map's size leaves a
# 3x3 kernel only its centre tap inside the map, a 1x1 convolution (Chen et al. 2017,
# Sec. 3.3, Fig. 4), which is why the paper adds image pooling.
SMALL_ASPP_RATES = {8: (2, 4, 6), 16: (1, 2, 3), 32: (1, 1, 1)}


@register_model
def deeplabv3_small(num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, output_stride: int = 16,
                    width: int = 32, atrous_rates: Sequence[int] | None = None,
                    aspp_channels: int = 64) -> SegmentationNet:
    """DeepLabv3 on a small ResNet for 64x64 scenes, at output stride 8, 16 or 32.

    Args:
        num_classes: classes scored per pixel.
        output_stride: input size / the last map's size; 16 and 8 replace the last one or
            two strides of the backbone by dilation (same parameters, more MACs).
        width: the backbone's first width.
        atrous_rates: the ASPP's rates (default :data:`SMALL_ASPP_RATES` for the stride).
        aspp_channels: width of the ASPP's branches.
    """
    backbone = small_backbone(output_stride, width)
    rates = SMALL_ASPP_RATES[output_stride] if atrous_rates is None else atrous_rates
    return SegmentationNet(backbone, DeepLabHead(width * 8, num_classes, rates, aspp_channels))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015, Fig. 1): ``depth`` times (two 3x3 convs,
    2x2 max-pool) down, two 3x3 convs at the bottom, then ``depth`` times (2x2 transposed
    convolution halving the channels, concatenation with the encoder's map of the same
    size, two 3x3 convs) up, and 1x1 scores. Our convolutions are padded ("same") and
    batch-normalised; the paper's are unpadded, without BN, and crop the skips instead.

    Args:
        num_classes: classes scored per pixel.
        width: channels of the first level; each level down doubles them (64 in the paper).
        depth: number of 2x downsamplings (4 in the paper); the input's sides must be
            multiples of ``2**depth``.
    """

    def __init__(self, num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, width=width, depth=depth)
        self.depth = depth

        def double_conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(ConvBNAct(cin, cout, 3), ConvBNAct(cout, cout, 3))

        widths = [width * 2 ** i for i in range(depth + 1)]  # e.g. 16, 32, 64, 128
        self.stem = double_conv(3, widths[0])  # (B, 3, H, W) -> (B, w, H, W)
        self.down = nn.ModuleList(double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))  # (B, 2c, h, w) -> (B, c, 2h, 2w)
        # after the concatenation: c (upsampled) + c (skip) = 2c channels -> c
        self.fuse = nn.ModuleList(double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="UNet")
        step = 2 ** self.depth
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ValueError(f"UNet with depth={self.depth} needs sides that are multiples of {step}, "
                             f"got {tuple(x.shape[-2:])}; pad or resize the input")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))  # (B, c, h, w) -> (B, 2c, h/2, w/2)
        y = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            y = fuse(torch.cat([skips.pop(), up(y)], dim=1))  # (B, 2c, h, w) -> (B, c, h, w)
        return self.head(y)  # (B, num_classes, H, W)


@register_model
def unet_small(num_classes: int = SCENE_CLASSES_WITH_BACKGROUND, width: int = 16, depth: int = 3) -> UNet:
    """A small U-Net for 64x64 scenes (widths 16, 32, 64, 128 by default)."""
    return UNet(num_classes, width, depth)
