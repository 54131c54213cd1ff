"""MobileNet v1, v2 and v3: networks built from depthwise separable convolutions.

* v1: Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam, "MobileNets:
  Efficient Convolutional Neural Networks for Mobile Vision Applications", 2017,
  arXiv:1704.04861.
* v2: Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and
  Linear Bottlenecks", CVPR 2018, arXiv:1801.04381.
* v3: Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam,
  "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244.

v1 stacks :class:`~cnnlearn.models.layers.DepthwiseSeparableConv` blocks; v2 and v3 stack
:class:`InvertedResidual` blocks (v3 adds squeeze-and-excitation and hard-swish). Each
architecture is a table read by one loop. v2 and v3 reproduce torchvision's layouts
exactly, so :func:`load_torchvision_weights` can copy torchvision's weights in and the
tests compare outputs; v1 has no torchvision twin and is checked against the paper's
4.2 million parameters and 569 million mult-adds (Table 8).

**The two multipliers of v1** (Sec. 3.3-3.4). The *width multiplier* ``alpha``
(``width_mult`` here, also in v2 and v3) thins every layer: channels become
``make_divisible(alpha * C, 8)``, so parameters and MACs shrink roughly by ``alpha^2``.
The *resolution multiplier* ``rho`` is not an argument of the network at all: the
network ends in global average pooling, so it accepts any input size, and ``rho`` simply
means feeding ``resolution_for(rho)``-pixel images (224, 192, 160, 128 for the paper's
rho = 1, 6/7, 5/7, 4/7). Every feature map then shrinks by ``rho`` on each side, and
the MACs of every convolution by ``rho^2``; the parameters do not change.

**The CIFAR variants** (32x32 images, ``num_classes=10``). The ImageNet networks halve
the resolution five times (224 -> 7); on a 32x32 image that would leave a 1x1 map
after the fourth halving. The ``*_cifar`` factories keep every block and channel count
and remove the first two downsamplings: the stem uses stride 1 and so does the first
strided stage (v1: the 128-channel stage; v2: the 24-channel row; v3-small: the first
bottleneck), so the maps go 32 -> 16 -> 8 -> 4.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn

from .registry import register_model
from .layers import (
    ConvBNAct, DepthwiseSeparableConv, SqueezeExcite, check_images, check_positive, make_divisible,
)
from .weights import load_by_prefix

__all__ = [
    "MobileNetV1", "MobileNetV2", "MobileNetV3", "InvertedResidual", "BneckRow",
    "MOBILENET_V1_STAGES", "MOBILENET_V2_SETTING", "MOBILENET_V3_LARGE", "MOBILENET_V3_SMALL",
    "MOBILENET_V1_CIFAR_STAGES", "MOBILENET_V2_CIFAR_SETTING", "MOBILENET_V3_SMALL_CIFAR",
    "resolution_for", "load_torchvision_weights", "load_by_prefix", "inverted_residual_prefixes",
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "mobilenet_v1_cifar", "mobilenet_v2_cifar", "mobilenet_v3_small_cifar",
]


# --------------------------------------------------------------------------- shared helpers


def resolution_for(rho: float, base: int = 224) -> int:
    """The input side length that applies MobileNet's resolution multiplier ``rho``.

    Howard et al. 2017, Sec. 3.4: ``rho`` in (0, 1] is "implicitly set" by the input
    resolution; the paper uses 224, 192, 160 and 128 pixels.

    Args:
        rho: the resolution multiplier, ``0 < rho <= 1``.
        base: the resolution at ``rho = 1``.

    Returns:
        ``round(rho * base)``.
    """
    check_positive(rho=rho, base=base)
    if rho > 1:
        raise ValueError(f"rho={rho} must be in (0, 1]: it reduces the resolution {base}")
    return round(rho * base)


def _check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _init_weights(model: nn.Module, linear_std: float = 0.01) -> None:
    # The initialisation of the reference implementations (torchvision, TF slim):
    # He-normal on fan-out for convolutions, BN as the identity, small linear weights.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- v1


# MobileNet v1's body, Table 1 of Howard et al. 2017, one row per resolution stage:
# (c: output channels of every block, n: depthwise separable blocks, s: stride of the
# first block). Table 1 prints stride 2 for the very last block too, but its input and
# output are both 7x7; every implementation (and the paper's own sizes) use stride 1.
MOBILENET_V1_STAGES: tuple[tuple[int, int, int], ...] = (
    (64, 1, 1),     # 112x112
    (128, 2, 2),    # 56x56
    (256, 2, 2),    # 28x28
    (512, 6, 2),    # 14x14
    (1024, 2, 2),   # 7x7
)

# The same body for 32x32 images: the 128-channel stage no longer downsamples.
MOBILENET_V1_CIFAR_STAGES: tuple[tuple[int, int, int], ...] = (
    (64, 1, 1), (128, 2, 1), (256, 2, 2), (512, 6, 2), (1024, 2, 2),
)


class MobileNetV1(nn.Module):
    """MobileNet v1: a 3x3 stem convolution, then 13 depthwise separable blocks.

    Args:
        stages: ``(c, n, s)`` rows, see :data:`MOBILENET_V1_STAGES`.
        num_classes: classes predicted by the head.
        width_mult: the width multiplier ``alpha`` (Sec. 3.3), applied to every layer.
        stem_stride: stride of the stem convolution (2 on ImageNet, 1 on CIFAR).
        dropout: dropout before the classifier (the paper uses little regularisation
            for small models, Sec. 3.2; 0 by default).
        stem_channels: output channels of the stem before the width multiplier.
    """

    def __init__(
        self, stages: Sequence[tuple[int, int, int]] = MOBILENET_V1_STAGES,
        num_classes: int = 1000, width_mult: float = 1.0, stem_stride: int = 2,
        dropout: float = 0.0, stem_channels: int = 32,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, width_mult=width_mult, stem_stride=stem_stride)
        _check_dropout(dropout)
        channels = make_divisible(stem_channels * width_mult, 8)
        self.stem = ConvBNAct(3, channels, 3, stem_stride)  # (B, 3, 224, 224) -> (B, 32, 112, 112)
        self.stages = nn.Sequential()
        for i, (c, n, s) in enumerate(stages, start=1):
            check_positive(**{f"stages[{i - 1}] channels": c, f"stages[{i - 1}] blocks": n,
                              f"stages[{i - 1}] stride": s})
            out_channels = make_divisible(c * width_mult, 8)
            blocks = []
            for j in range(n):  # only the first block of a stage changes size and width
                blocks.append(DepthwiseSeparableConv(channels, out_channels, 3, s if j == 0 else 1))
                channels = out_channels
            self.stages.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),   # (B, 1024, 7, 7) -> (B, 1024, 1, 1)
            flatten=nn.Flatten(),           # -> (B, 1024)
            dropout=nn.Dropout(dropout),
            classifier=nn.Linear(channels, num_classes),
        ))
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``(B, 3, H, W) -> (B, 1024, H/32, W/32)`` on ImageNet."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="MobileNetV1")
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------- the inverted residual


class InvertedResidual(nn.Module):
    """The block of MobileNetV2 and V3: expand 1x1 -> depthwise kxk -> [SE] -> project 1x1.

    Sandler et al. 2018, Sec. 3.3 and Fig. 3: a ResNet bottleneck turned inside out. The
    shortcut joins the *narrow* ends, and the block widens the tensor
    (``expanded_channels``, usually 6x the input) around the depthwise convolution, where
    channels are cheap. The projection back to ``out_channels`` has no activation (the
    "linear bottleneck", Sec. 3.2): a ReLU on a narrow tensor would destroy information.
    MobileNetV3 (Howard et al. 2019, Sec. 5.3) inserts squeeze-and-excitation after the
    depthwise convolution and chooses the activation per block.

    The expansion convolution is left out when ``expanded_channels == in_channels``
    (expansion ratio 1), as in both papers' first block.

    Args:
        in_channels: input channels.
        out_channels: output channels; with ``stride=1`` and ``in_channels ==
            out_channels`` the block adds its input (the residual shortcut).
        expanded_channels: channels of the depthwise convolution.
        kernel_size: depthwise kernel size (3 or 5 in these networks).
        stride: depthwise stride, 1 or 2.
        act_layer: activation after the expansion and depthwise convolutions.
        se_layer: ``None``, or a callable building the SE module from
            ``expanded_channels`` (e.g. ``partial(SqueezeExcite.from_reduction,
            reduction=4, divisor=8)``).
        norm_layer: normalisation class after each convolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, expanded_channels: int,
        kernel_size: int = 3, stride: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        se_layer: Callable[[int], nn.Module] | None = None,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels,
                       expanded_channels=expanded_channels, kernel_size=kernel_size)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.use_residual = stride == 1 and in_channels == out_channels
        # (B, C_in, H, W) -> (B, C_exp, H, W)
        self.expand = (ConvBNAct(in_channels, expanded_channels, 1, norm_layer=norm_layer,
                                 act_layer=act_layer)
                       if expanded_channels != in_channels else nn.Identity())
        # (B, C_exp, H, W) -> (B, C_exp, H/s, W/s)
        self.depthwise = ConvBNAct(expanded_channels, expanded_channels, kernel_size, stride,
                                   groups=expanded_channels, norm_layer=norm_layer,
                                   act_layer=act_layer)
        self.se = se_layer(expanded_channels) if se_layer is not None else nn.Identity()
        # (B, C_exp, H/s, W/s) -> (B, C_out, H/s, W/s), no activation: the linear bottleneck
        self.project = ConvBNAct(expanded_channels, out_channels, 1, norm_layer=norm_layer,
                                 act_layer=None)
        # EfficientNet's MBConv (efficientnet.py) swaps this for stochastic depth.
        self.drop_path: nn.Module = nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_residual:
            out = x + self.drop_path(out)
        return out


# --------------------------------------------------------------------------- v2


# MobileNetV2's body, Table 2 of Sandler et al. 2018: (t: expansion ratio, c: output
# channels, n: blocks, s: stride of the first block). One stage per row.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),    # 112x112
    (6, 24, 2, 2),    # 56x56
    (6, 32, 3, 2),    # 28x28
    (6, 64, 4, 2),    # 14x14
    (6, 96, 3, 1),    # 14x14
    (6, 160, 3, 2),   # 7x7
    (6, 320, 1, 1),   # 7x7
)

# The same body for 32x32 images: the 24-channel row no longer downsamples.
MOBILENET_V2_CIFAR_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2: stem, 17 inverted residual blocks from the ``(t, c, n, s)`` table, head.

    The head is the 1x1 convolution to 1280 channels, global pooling and the classifier;
    ``forward_features`` returns the map before it (320 channels).

    Args:
        setting: ``(t, c, n, s)`` rows, see :data:`MOBILENET_V2_SETTING`.
        num_classes: classes predicted by the head.
        width_mult: width multiplier; channels become ``make_divisible(c * width_mult, 8)``.
            As in the paper (Sec. 6.1), the last 1280-channel layer is not thinned.
        stem_stride: stride of the stem convolution (2 on ImageNet, 1 on CIFAR).
        dropout: dropout before the classifier (torchvision's 0.2).
    """

    def __init__(
        self, setting: Sequence[tuple[int, int, int, int]] = MOBILENET_V2_SETTING,
        num_classes: int = 1000, width_mult: float = 1.0, stem_stride: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, width_mult=width_mult, stem_stride=stem_stride)
        _check_dropout(dropout)
        channels = make_divisible(32 * width_mult, 8)
        # (B, 3, 224, 224) -> (B, 32, 112, 112); ReLU6 because it is robust in
        # low-precision arithmetic (Sandler et al. 2018, Sec. 4)
        self.stem = ConvBNAct(3, channels, 3, stem_stride, act_layer=nn.ReLU6)
        self.stages = nn.Sequential()
        for i, (t, c, n, s) in enumerate(setting, start=1):
            row = f"setting[{i - 1}]"
            check_positive(**{f"{row} expansion t": t, f"{row} channels c": c,
                              f"{row} blocks n": n, f"{row} stride s": s})
            out_channels = make_divisible(c * width_mult, 8)
            blocks = []
            for j in range(n):
                expanded = int(round(channels * t))
                blocks.append(InvertedResidual(channels, out_channels, expanded, 3,
                                               s if j == 0 else 1, act_layer=nn.ReLU6))
                channels = out_channels
            self.stages.add_module(f"stage{i}", nn.Sequential(*blocks))
        last_channels = make_divisible(1280 * max(1.0, width_mult), 8)
        self.head = nn.Sequential(OrderedDict(
            conv=ConvBNAct(channels, last_channels, 1, act_layer=nn.ReLU6),  # (B, 320, 7, 7) -> (B, 1280, 7, 7)
            pool=nn.AdaptiveAvgPool2d(1),   # -> (B, 1280, 1, 1)
            flatten=nn.Flatten(),           # -> (B, 1280)
            dropout=nn.Dropout(dropout),
            classifier=nn.Linear(last_channels, num_classes),
        ))
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, ``(B, 3, H, W) -> (B, 320, H/32, W/32)`` on ImageNet."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="MobileNetV2")
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------- v3


@dataclass(frozen=True)
class BneckRow:
    """One row of MobileNetV3's Tables 1 and 2 (Howard et al. 2019): one bottleneck block.

    The block's input channels are the previous row's ``out_channels`` (16 after the stem).
    """

    kernel_size: int                 # depthwise kernel, 3 or 5 ("Operator" column)
    expanded_channels: int           # "exp size": channels of the depthwise convolution
    out_channels: int                # "#out"
    use_se: bool                     # "SE": squeeze-and-excitation after the depthwise conv
    act_layer: type[nn.Module]       # "NL": nn.ReLU (RE) or nn.Hardswish (HS)
    stride: int                      # "s": stride of the depthwise convolution


_RE, _HS = nn.ReLU, nn.Hardswish

# Table 1 of Howard et al. 2019, found by architecture search; sizes for 224x224 input.
MOBILENET_V3_LARGE: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, False, _RE, 1),     # 112x112
    BneckRow(3, 64, 24, False, _RE, 2),     # 56x56
    BneckRow(3, 72, 24, False, _RE, 1),
    BneckRow(5, 72, 40, True, _RE, 2),      # 28x28
    BneckRow(5, 120, 40, True, _RE, 1),
    BneckRow(5, 120, 40, True, _RE, 1),
    BneckRow(3, 240, 80, False, _HS, 2),    # 14x14
    BneckRow(3, 200, 80, False, _HS, 1),
    BneckRow(3, 184, 80, False, _HS, 1),
    BneckRow(3, 184, 80, False, _HS, 1),
    BneckRow(3, 480, 112, True, _HS, 1),
    BneckRow(3, 672, 112, True, _HS, 1),
    BneckRow(5, 672, 160, True, _HS, 2),    # 7x7
    BneckRow(5, 960, 160, True, _HS, 1),
    BneckRow(5, 960, 160, True, _HS, 1),
)

# Table 2 of Howard et al. 2019.
MOBILENET_V3_SMALL: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, True, _RE, 2),      # 56x56
    BneckRow(3, 72, 24, False, _RE, 2),     # 28x28
    BneckRow(3, 88, 24, False, _RE, 1),
    BneckRow(5, 96, 40, True, _HS, 2),      # 14x14
    BneckRow(5, 240, 40, True, _HS, 1),
    BneckRow(5, 240, 40, True, _HS, 1),
    BneckRow(5, 120, 48, True, _HS, 1),
    BneckRow(5, 144, 48, True, _HS, 1),
    BneckRow(5, 288, 96, True, _HS, 2),     # 7x7
    BneckRow(5, 576, 96, True, _HS, 1),
    BneckRow(5, 576, 96, True, _HS, 1),
)

# MobileNetV3-Small for 32x32 images: the first bottleneck no longer downsamples.
MOBILENET_V3_SMALL_CIFAR: tuple[BneckRow, ...] = (
    replace(MOBILENET_V3_SMALL[0], stride=1), *MOBILENET_V3_SMALL[1:],
)


class MobileNetV3(nn.Module):
    """MobileNetV3: hard-swish stem, searched bottlenecks, and the redesigned last stage.

    The stages: a new one starts at every row with stride 2 (and at the first row), so
    each stage works at one resolution (five for Large, four for Small).

    The head is the "efficient last stage" of Sec. 5.1: a 1x1 convolution to 6x the last
    width (960 for Large) at 7x7, *then* global pooling, then a 1280-wide (1024 for Small)
    layer without BN and the classifier. Moving the pooling before the wide layer makes
    that layer work on a 1x1 map instead of 7x7. After pooling, the paper's "1x1 conv,
    NBN" is an ``nn.Linear`` (torchvision's choice as well).

    Hard-swish ``x * ReLU6(x + 3) / 6`` and hard-sigmoid ``ReLU6(x + 3) / 6`` (Sec. 5.2)
    are ``nn.Hardswish`` and ``nn.Hardsigmoid``.

    Args:
        rows: the bottleneck table, e.g. :data:`MOBILENET_V3_LARGE`.
        last_channels: width of the layer before the classifier (1280 or 1024),
            before the width multiplier.
        num_classes: classes predicted by the head.
        width_mult: width multiplier (Sec. 6.1), applied to every channel count.
        stem_stride: stride of the stem convolution (2 on ImageNet, 1 on CIFAR).
        dropout: dropout before the classifier (torchvision's 0.2).
        bn_momentum: BatchNorm's running-average momentum. 0.01 is the TensorFlow
            reference's (decay 0.99) and torchvision's: right for ImageNet's long
            training, but the running statistics then need hundreds of steps to
            forget their initial values, and a short run evaluates with wrong
            statistics (chance accuracy). The CIFAR variant uses PyTorch's default 0.1.
    """

    def __init__(
        self, rows: Sequence[BneckRow], last_channels: int, num_classes: int = 1000,
        width_mult: float = 1.0, stem_stride: int = 2, dropout: float = 0.2,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, width_mult=width_mult,
                       stem_stride=stem_stride, last_channels=last_channels)
        _check_dropout(dropout)
        if not 0 < bn_momentum <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
        if not rows:
            raise ValueError("rows must hold at least one BneckRow")

        def width(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        # eps of the TensorFlow reference (1e-3), as torchvision; momentum: see bn_momentum
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=bn_momentum)
        # SE squeezes to a quarter of the expanded channels, rounded to 8 (Sec. 5.3)
        se_layer = partial(SqueezeExcite.from_reduction, reduction=4, divisor=8,
                           act_layer=nn.ReLU, gate_layer=nn.Hardsigmoid)
        channels = width(16)
        # (B, 3, 224, 224) -> (B, 16, 112, 112)
        self.stem = ConvBNAct(3, channels, 3, stem_stride, norm_layer=norm_layer,
                              act_layer=nn.Hardswish)
        stages: list[list[nn.Module]] = []
        for row in rows:
            if not stages or row.stride > 1:  # a new resolution, a new stage
                stages.append([])
            out_channels = width(row.out_channels)
            stages[-1].append(InvertedResidual(
                channels, out_channels, width(row.expanded_channels), row.kernel_size, row.stride,
                act_layer=row.act_layer, se_layer=se_layer if row.use_se else None,
                norm_layer=norm_layer))
            channels = out_channels
        self.stages = nn.Sequential(OrderedDict(
            (f"stage{i}", nn.Sequential(*blocks)) for i, blocks in enumerate(stages, start=1)))
        head_channels = 6 * channels
        last_channels = width(last_channels)
        self.head = nn.Sequential(OrderedDict(
            # (B, 160, 7, 7) -> (B, 960, 7, 7)
            conv=ConvBNAct(channels, head_channels, 1, norm_layer=norm_layer, act_layer=nn.Hardswish),
            pool=nn.AdaptiveAvgPool2d(1),   # -> (B, 960, 1, 1)
            flatten=nn.Flatten(),           # -> (B, 960)
            fc=nn.Linear(head_channels, last_channels),  # -> (B, 1280)
            act=nn.Hardswish(),
            dropout=nn.Dropout(dropout),
            classifier=nn.Linear(last_channels, num_classes),
        ))
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, ``(B, 3, H, W) -> (B, 160, H/32, W/32)`` for Large."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="MobileNetV3")
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------- factories


@register_model
def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0) -> MobileNetV1:
    """MobileNet v1 for 224x224 images: 4,231,976 parameters at ``width_mult=1``
    (the paper's 4.2 million, Table 8) and 569 million mult-adds."""
    return MobileNetV1(MOBILENET_V1_STAGES, num_classes, width_mult, stem_stride=2, dropout=dropout)


@register_model
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 for 224x224 images: 3,504,872 parameters and 0.301 GMACs, as torchvision's."""
    return MobileNetV2(MOBILENET_V2_SETTING, num_classes, width_mult, stem_stride=2, dropout=dropout)


@register_model
def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0,
                       dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Large: 5,483,032 parameters and 0.217 GMACs, as torchvision's."""
    return MobileNetV3(MOBILENET_V3_LARGE, 1280, num_classes, width_mult, 2, dropout)


@register_model
def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0,
                       dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Small: 2,542,856 parameters and 0.057 GMACs, as torchvision's."""
    return MobileNetV3(MOBILENET_V3_SMALL, 1024, num_classes, width_mult, 2, dropout)


@register_model
def mobilenet_v1_cifar(num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.0) -> MobileNetV1:
    """MobileNet v1 for 32x32 images: stem stride 1, the 128-channel stage at stride 1
    (32 -> 16 -> 8 -> 4 instead of 224 -> 7)."""
    return MobileNetV1(MOBILENET_V1_CIFAR_STAGES, num_classes, width_mult, stem_stride=1, dropout=dropout)


@register_model
def mobilenet_v2_cifar(num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 for 32x32 images: stem stride 1, the 24-channel row at stride 1."""
    return MobileNetV2(MOBILENET_V2_CIFAR_SETTING, num_classes, width_mult, stem_stride=1, dropout=dropout)


@register_model
def mobilenet_v3_small_cifar(num_classes: int = 10, width_mult: float = 1.0,
                             dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Small for 32x32 images: stem stride 1, first bottleneck at stride 1, and
    BatchNorm momentum 0.1 (not the reference's 0.01) so that short runs evaluate well."""
    return MobileNetV3(MOBILENET_V3_SMALL_CIFAR, 1024, num_classes, width_mult, 1, dropout,
                       bn_momentum=0.1)


# --------------------------------------------------------------------------- torchvision weights


def inverted_residual_prefixes(ours_name: str, block: InvertedResidual, theirs_name: str,
                               split_project: bool = False) -> list[tuple[str, str]]:
    """Module-name pairs of one :class:`InvertedResidual` and torchvision's twin.

    torchvision keeps a block's layers in one ``nn.Sequential`` (``theirs_name``), numbered
    in order: [expand], depthwise, [SE], projection. Optional layers shift the numbers,
    so this reads which ones our block has. torchvision's MobileNetV2 stores the
    projection's convolution and BN as two entries (``split_project=True``); MobileNetV3
    and EfficientNet as one conv-BN unit.
    """
    pairs, i = [], 0
    if isinstance(block.expand, ConvBNAct):
        pairs.append((f"{ours_name}.expand", f"{theirs_name}.{i}"))
        i += 1
    pairs.append((f"{ours_name}.depthwise", f"{theirs_name}.{i}"))
    i += 1
    if isinstance(block.se, SqueezeExcite):  # fc1/fc2 have the same names in both
        pairs.append((f"{ours_name}.se", f"{theirs_name}.{i}"))
        i += 1
    if split_project:
        pairs += [(f"{ours_name}.project.0", f"{theirs_name}.{i}"),
                  (f"{ours_name}.project.1", f"{theirs_name}.{i + 1}")]
    else:
        pairs.append((f"{ours_name}.project", f"{theirs_name}.{i}"))
    return pairs


def _named_blocks(model: nn.Module) -> list[tuple[str, InvertedResidual]]:
    return [(f"stages.{stage_name}.{j}", block)
            for stage_name, stage in model.stages.named_children()
            for j, block in enumerate(stage)]


def load_torchvision_weights(ours: MobileNetV2 | MobileNetV3, tv_model: nn.Module) -> None:
    """Copy the weights of torchvision's ``mobilenet_v2`` / ``mobilenet_v3_*`` into ours.

    The correspondence, module by module (torchvision's ``features`` is one flat list):

    ==========================  ============================================
    ours                        torchvision
    ==========================  ============================================
    ``stem``                    ``features.0``
    ``stages.stageK.j`` (the    ``features.i``, i = 1, 2, ... in order; inside,
    i-th block overall)         ``.conv`` (v2) or ``.block`` (v3), see
                                :func:`inverted_residual_prefixes`
    ``head.conv``               ``features.<last>``
    ``head.fc`` (v3)            ``classifier.0``
    ``head.classifier``         ``classifier.1`` (v2) / ``classifier.3`` (v3)
    ==========================  ============================================

    Args:
        ours: a :class:`MobileNetV2` or :class:`MobileNetV3` of the same configuration.
        tv_model: the torchvision model (``torchvision.models.mobilenet_v2()`` etc.).

    Raises:
        ValueError: the two models do not have the same structure.
    """
    from torchvision.models import MobileNetV2 as TvV2, MobileNetV3 as TvV3

    if isinstance(ours, MobileNetV2) and isinstance(tv_model, TvV2):
        v3 = False
    elif isinstance(ours, MobileNetV3) and isinstance(tv_model, TvV3):
        v3 = True
    else:
        raise ValueError(f"cannot map {type(tv_model).__name__} onto {type(ours).__name__}: "
                         "pass torchvision's MobileNetV2 for ours MobileNetV2, MobileNetV3 for MobileNetV3")
    blocks = _named_blocks(ours)
    last = len(tv_model.features) - 1
    if len(blocks) != last - 1:
        raise ValueError(f"ours has {len(blocks)} blocks, torchvision's {last - 1}")
    pairs = [("stem", "features.0")]
    for i, (name, block) in enumerate(blocks, start=1):
        inner = f"features.{i}.block" if v3 else f"features.{i}.conv"
        pairs += inverted_residual_prefixes(name, block, inner, split_project=not v3)
    pairs.append(("head.conv", f"features.{last}"))
    if v3:
        pairs += [("head.fc", "classifier.0"), ("head.classifier", "classifier.3")]
    else:
        pairs.append(("head.classifier", "classifier.1"))
    load_by_prefix(ours, tv_model, pairs)
