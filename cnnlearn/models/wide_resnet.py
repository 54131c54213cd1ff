"""Wide residual networks: the CIFAR WRN-d-k family and the ImageNet Wide ResNet-50-2.

Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016, arXiv:1605.07146.

Instead of making a residual network deeper, make it wider: WRN-d-k multiplies the
widths 16, 32, 64 of the CIFAR ResNets (He et al. 2015, Sec. 4.2) by ``k`` and has
``d`` convolutional layers. Its block is the pre-activation pair of 3x3 convolutions
``B(3,3)`` (BN-ReLU-conv, BN-ReLU-[dropout]-conv; Sec. 2 and Fig. 1d), so the ``(d - 4) / 6``
blocks per stage and the stem, the three 1x1 shortcut projections and the classifier
make ``d`` weighted layers counted as in the paper (the projections not counted).

On ImageNet the paper widens the bottleneck's inner 3x3 convolution instead (WRN-50-2-
bottleneck, Sec. 3, Table 8): torchvision's ``wide_resnet50_2``, which is
:class:`~cnnlearn.models.resnet.ResNet` with ``width_per_group=128``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import check_images, check_positive, init_he
from .registry import register_model
from .resnet import Bottleneck, ResNet, ResNetConfig

__all__ = ["WideBasicBlock", "WideResNetConfig", "WideResNet", "wrn",
           "wrn_16_4", "wrn_16_8", "wrn_28_10", "wrn_40_4", "wide_resnet50_2", "wide_resnet101_2"]

ModuleFactory = Callable[..., nn.Module]


class WideBasicBlock(nn.Module):
    """The WRN block B(3,3): ``out = shortcut(x) + conv2(dropout(relu(bn2(conv1(relu(bn1(x)))))))``.

    Where the shape changes, the shortcut is a 1x1 convolution (no BN) applied to the
    pre-activated input ``relu(bn1(x))``, as in the authors' code; elsewhere it is ``x``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first 3x3 convolution (and of the projection).
        dropout: probability of the dropout between the two convolutions (Sec. 2.4; the
            paper uses 0.3 in its "-dropout" networks, 0 elsewhere).
        norm_layer: normalisation class called with a channel count.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0,
                 norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.bn1 = norm_layer(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.act = nn.ReLU(inplace=False)  # pre = relu(bn1(x)) feeds both paths: keep it intact
        same_shape = in_channels == out_channels and stride == 1
        self.shortcut = None if same_shape else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        out = self.conv1(pre)  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        out = self.conv2(self.dropout(self.act(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


@dataclass(frozen=True)
class WideResNetConfig:
    """WRN-depth-k as data (Zagoruyko and Komodakis 2016, Table 1)."""

    depth: int  # weighted layers d: 6n + 4 with n blocks per stage (28 in WRN-28-10)
    widen_factor: int  # k, multiplies the widths (10 in WRN-28-10)
    dropout: float = 0.0  # between the two convolutions of each block (0.3 in the paper's dropout runs)
    widths: tuple[int, ...] = (16, 32, 64)  # of the thin ResNet, before multiplying by k
    stem_width: int = 16  # the first 3x3 convolution is not widened

    def __post_init__(self) -> None:
        check_positive(depth=self.depth, widen_factor=self.widen_factor, stem_width=self.stem_width)
        if not isinstance(self.depth, int) or (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 blocks per stage (10, 16, 22, 28, 40, ...), "
                             f"got {self.depth!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def blocks_per_stage(self) -> int:
        """``n = (d - 4) / 6``: two convolutions per block, three stages, plus the stem
        convolution, the classifier and (as the paper counts) two more."""
        return (self.depth - 4) // 6

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(w * self.widen_factor for w in self.widths)


class WideResNet(nn.Module):
    """WRN-d-k for 32x32 images: ``stem`` -> ``stages`` -> ``final_act`` -> ``head``.

    Args:
        config: the :class:`WideResNetConfig`.
        num_classes: classes predicted by the head.
    """

    def __init__(self, config: WideResNetConfig, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(config, WideResNetConfig):
            raise ValueError(f"config must be a WideResNetConfig, got {type(config).__name__}")
        check_positive(num_classes=num_classes)
        self.config = cfg = config
        # The first pre-activation block normalises and activates the stem's output itself.
        self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, cfg.stem_width, 3, padding=1, bias=False)))
        channels = cfg.stem_width
        self.stages = nn.Sequential()
        for i, width in enumerate(cfg.stage_widths):  # 32x32, 16x16, 8x8 maps
            blocks = [WideBasicBlock(channels if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1,
                                     cfg.dropout) for j in range(cfg.blocks_per_stage)]
            self.stages.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
            channels = width
        self.num_features = channels
        self.final_act = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(channels), act=nn.ReLU(inplace=True)))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, 64k, 8, 8) -> (B, 64k, 1, 1)
            flatten=nn.Flatten(),
            fc=nn.Linear(channels, num_classes),
        ))
        init_he(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 32, 32) -> (B, 64k, 8, 8)``."""
        return self.final_act(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="WideResNet")
        return self.head(self.forward_features(x))


def wrn(depth: int, k: int, dropout: float = 0.0, num_classes: int = 10) -> WideResNet:
    """WRN-``depth``-``k`` for CIFAR, e.g. ``wrn(28, 10)``.

    Args:
        depth: ``6n + 4``.
        k: widening factor.
        dropout: dropout between each block's convolutions.
        num_classes: classes predicted.
    """
    return WideResNet(WideResNetConfig(depth, k, dropout), num_classes)


@register_model
def wrn_16_4(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    """WRN-16-4 (n = 2 blocks per stage, widths 64, 128, 256)."""
    return wrn(16, 4, dropout, num_classes)


@register_model
def wrn_16_8(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    """WRN-16-8: 11.0 M parameters (Zagoruyko and Komodakis 2016, Table 4)."""
    return wrn(16, 8, dropout, num_classes)


@register_model
def wrn_28_10(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10: 36,479,194 parameters for 10 classes (the paper's Table 4: 36.5 M)."""
    return wrn(28, 10, dropout, num_classes)


@register_model
def wrn_40_4(num_classes: int = 10, dropout: float = 0.0) -> WideResNet:
    """WRN-40-4: 8.9 M parameters (Zagoruyko and Komodakis 2016, Table 4)."""
    return wrn(40, 4, dropout, num_classes)


@register_model
def wide_resnet50_2(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """Wide ResNet-50-2 (WRN-50-2-bottleneck): ResNet-50 with the bottleneck's inner width
    doubled; 68,883,240 parameters and 11.40 GMACs at 224x224, as torchvision's."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 6, 3), width_per_group=128,
                               zero_init_residual=zero_init_residual), num_classes)


@register_model
def wide_resnet101_2(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """Wide ResNet-101-2: 126,886,696 parameters, as torchvision's."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 23, 3), width_per_group=128,
                               zero_init_residual=zero_init_residual), num_classes)
