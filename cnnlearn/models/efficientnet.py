"""EfficientNet: MBConv blocks, and compound scaling of depth, width and resolution.

Tan, Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
ICML 2019, arXiv:1905.11946.

EfficientNet-B0 (Table 1) is a MobileNetV3-like network found by architecture search:
MBConv blocks, which are :class:`~cnnlearn.models.mobilenet.InvertedResidual` blocks
with SiLU ("swish"), squeeze-and-excitation in every block and stochastic depth on the
residual branch. B1, B2, ... are B0 scaled by *compound scaling* (Sec. 3.3): depth by
``alpha^phi``, width by ``beta^phi`` and resolution by ``gamma^phi`` with
``alpha = 1.2, beta = 1.1, gamma = 1.15`` found by a small grid search under
``alpha * beta^2 * gamma^2 ~ 2``, so that each step of ``phi`` roughly doubles the
FLOPs (FLOPs grow linearly with depth and quadratically with width and resolution).

The published B1-B7 do not use ``phi`` directly: the authors' code
(``efficientnet_builder.efficientnet_params``, also used by torchvision) lists each
network's width, depth and resolution by hand. They lie near compound-scaled values
without being any of them: B2 = (width 1.1, depth 1.2, 260 px) is close to
:func:`compound_scale` (1) = (1.1, 1.2, 258 px), B3 = (1.2, 1.4, 300 px) close to
``phi = 2`` = (1.21, 1.44, 296 px), and B1 = (1.0, 1.1, 240 px) keeps B0's width and
sits about halfway between ``phi = 0`` and ``phi = 1``. The factories here use the published ones (:data:`EFFICIENTNET_SCALES`), so they match
torchvision's ``efficientnet_b0`` ... ``efficientnet_b3`` parameter for parameter and
:func:`load_torchvision_weights` copies their weights in.

``efficientnet_b0_cifar`` is B0 for 32x32 images: the stem and the second stage use
stride 1 instead of 2, so the maps go 32 -> 16 -> 8 -> 4 instead of 224 -> 7.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn

from .registry import register_model
from .layers import ConvBNAct, SqueezeExcite, check_images, check_positive, make_divisible
from .mobilenet import InvertedResidual, inverted_residual_prefixes, load_by_prefix

__all__ = [
    "StochasticDepth", "MBConv", "MBConvStage", "EfficientNet", "EfficientNetScale",
    "EFFICIENTNET_B0_STAGES", "EFFICIENTNET_SCALES", "compound_scale", "scaled_stages",
    "load_torchvision_weights",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b0_cifar",
]


class StochasticDepth(nn.Module):
    """Drop a residual branch for a random subset of the samples while training.

    Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth", ECCV 2016,
    arXiv:1603.09382. Each sample of the batch keeps the branch with probability
    ``1 - p`` (torchvision's "row" mode); kept branches are divided by ``1 - p`` so the
    expected output is unchanged and evaluation needs no rescaling. In eval mode it is
    the identity.

    Args:
        p: probability of dropping the branch, ``0 <= p < 1``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"stochastic depth probability p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        # (B, 1, 1, 1): one coin per sample, broadcast over its channels and pixels
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(InvertedResidual):
    """EfficientNet's mobile inverted bottleneck: an :class:`InvertedResidual` with SiLU,
    squeeze-and-excitation, and stochastic depth on the residual branch.

    The SE bottleneck is a quarter of the block's *input* channels (not of the expanded
    channels it rescales), as in the authors' code (``se_ratio=0.25`` of ``input_filters``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        expand_ratio: expansion ``t``; the depthwise convolution has
            ``make_divisible(t * in_channels, 8)`` channels (1 = no expansion convolution).
        kernel_size: depthwise kernel size (3 or 5).
        stride: depthwise stride, 1 or 2.
        drop_prob: stochastic depth probability of the residual branch (only used when
            the block has a shortcut).
        norm_layer: normalisation class after each convolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, expand_ratio: float, kernel_size: int = 3,
        stride: int = 1, drop_prob: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        check_positive(in_channels=in_channels, expand_ratio=expand_ratio)
        expanded = make_divisible(in_channels * expand_ratio, 8)
        se_layer = partial(SqueezeExcite, reduced_channels=max(1, in_channels // 4),
                           act_layer=nn.SiLU, gate_layer=nn.Sigmoid)
        super().__init__(in_channels, out_channels, expanded, kernel_size, stride,
                         act_layer=nn.SiLU, se_layer=se_layer, norm_layer=norm_layer)
        self.drop_path = StochasticDepth(drop_prob)


@dataclass(frozen=True)
class MBConvStage:
    """One row of EfficientNet-B0's Table 1: a stage of identical MBConv blocks.

    The stage's input channels are the previous row's ``out_channels`` (32 after the stem).
    """

    expand_ratio: int   # the "6" of "MBConv6"
    kernel_size: int    # depthwise kernel, "k3x3" or "k5x5"
    stride: int         # stride of the first block; the others use 1
    out_channels: int   # "#Channels"
    num_layers: int     # "#Layers"


# EfficientNet-B0, Tan & Le 2019, Table 1 (stages 2-8; stage 1 is the stem and
# stage 9 the head). Strides as in the authors' code; sizes for 224x224 input.
EFFICIENTNET_B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(1, 3, 1, 16, 1),    # 112x112
    MBConvStage(6, 3, 2, 24, 2),    # 56x56
    MBConvStage(6, 5, 2, 40, 2),    # 28x28
    MBConvStage(6, 3, 2, 80, 3),    # 14x14
    MBConvStage(6, 5, 1, 112, 3),   # 14x14
    MBConvStage(6, 5, 2, 192, 4),   # 7x7
    MBConvStage(6, 3, 1, 320, 1),   # 7x7
)


@dataclass(frozen=True)
class EfficientNetScale:
    """How much bigger than B0 a network is (Tan & Le 2019, Sec. 3.3)."""

    width_mult: float   # channels x this, rounded to multiples of 8
    depth_mult: float   # blocks per stage x this, rounded up
    resolution: int     # input side length in pixels


# The published coefficients, listed by hand in the authors' ``efficientnet_params`` (and
# torchvision's): near, but not equal to, compound_scale(phi) for any phi.
EFFICIENTNET_SCALES: dict[str, EfficientNetScale] = {
    "b0": EfficientNetScale(1.0, 1.0, 224),
    "b1": EfficientNetScale(1.0, 1.1, 240),
    "b2": EfficientNetScale(1.1, 1.2, 260),
    "b3": EfficientNetScale(1.2, 1.4, 300),
}


def compound_scale(
    phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
    base_resolution: int = 224,
) -> EfficientNetScale:
    """Compound scaling (Tan & Le 2019, Eq. 3): depth ``alpha^phi``, width ``beta^phi``,
    resolution ``gamma^phi`` times B0's.

    Args:
        phi: the compound coefficient, ``phi >= 0`` (0 gives B0).
        alpha: depth base; the paper's grid search found 1.2.
        beta: width base; 1.1.
        gamma: resolution base; 1.15.
        base_resolution: B0's input size.

    Returns:
        The :class:`EfficientNetScale`; FLOPs grow by about ``(alpha * beta^2 * gamma^2)^phi``
        (1.92^phi with the defaults).
    """
    if not isinstance(phi, (int, float)) or phi < 0:
        raise ValueError(f"phi must be a number >= 0, got {phi!r}")
    check_positive(alpha=alpha, beta=beta, gamma=gamma, base_resolution=base_resolution)
    return EfficientNetScale(width_mult=beta ** phi, depth_mult=alpha ** phi,
                             resolution=round(base_resolution * gamma ** phi))


def scaled_stages(
    stages: Sequence[MBConvStage], width_mult: float, depth_mult: float,
) -> tuple[MBConvStage, ...]:
    """Apply a width and a depth multiplier to a stage table.

    Channels become ``make_divisible(c * width_mult, 8)`` and block counts
    ``ceil(n * depth_mult)``: rounding up so that no stage loses a block (the authors'
    ``round_filters`` / ``round_repeats``).
    """
    check_positive(width_mult=width_mult, depth_mult=depth_mult)
    return tuple(replace(s, out_channels=make_divisible(s.out_channels * width_mult, 8),
                         num_layers=int(math.ceil(s.num_layers * depth_mult)))
                 for s in stages)


class EfficientNet(nn.Module):
    """EfficientNet: SiLU stem, MBConv stages from a table, 1x1 conv + pooling head.

    Args:
        stages: :class:`MBConvStage` rows before scaling, e.g. :data:`EFFICIENTNET_B0_STAGES`.
        num_classes: classes predicted by the head.
        width_mult: width multiplier (also scales the 32-channel stem).
        depth_mult: depth multiplier.
        dropout: dropout before the classifier (0.2 for B0-B1, 0.3 for B2-B3).
        stochastic_depth_prob: drop probability of the last block; block ``i`` of ``N``
            (counted from 0 over the whole network) uses ``stochastic_depth_prob * i / N``,
            so early blocks are almost never dropped (torchvision's schedule).
        stem_stride: stride of the stem convolution (2 on ImageNet, 1 on CIFAR).
    """

    def __init__(
        self, stages: Sequence[MBConvStage] = EFFICIENTNET_B0_STAGES, num_classes: int = 1000,
        width_mult: float = 1.0, depth_mult: float = 1.0, dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2, stem_stride: int = 2,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, stem_stride=stem_stride)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= stochastic_depth_prob < 1:
            raise ValueError(f"stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob}")
        if not stages:
            raise ValueError("stages must hold at least one MBConvStage")
        for i, s in enumerate(stages):
            check_positive(**{f"stages[{i}].expand_ratio": s.expand_ratio,
                              f"stages[{i}].out_channels": s.out_channels,
                              f"stages[{i}].num_layers": s.num_layers})
        stages = scaled_stages(stages, width_mult, depth_mult)
        channels = make_divisible(32 * width_mult, 8)
        # (B, 3, 224, 224) -> (B, 32, 112, 112)
        self.stem = ConvBNAct(3, channels, 3, stem_stride, act_layer=nn.SiLU)
        total = sum(s.num_layers for s in stages)
        index = 0  # block index over the whole network, for the stochastic depth schedule
        self.stages = nn.Sequential()
        for i, s in enumerate(stages, start=1):
            blocks = []
            for j in range(s.num_layers):
                blocks.append(MBConv(channels, s.out_channels, s.expand_ratio, s.kernel_size,
                                     s.stride if j == 0 else 1,
                                     drop_prob=stochastic_depth_prob * index / total))
                channels = s.out_channels
                index += 1
            self.stages.add_module(f"stage{i}", nn.Sequential(*blocks))
        head_channels = 4 * channels  # 1280 for B0 (Table 1, stage 9)
        self.head = nn.Sequential(OrderedDict(
            conv=ConvBNAct(channels, head_channels, 1, act_layer=nn.SiLU),  # (B, 320, 7, 7) -> (B, 1280, 7, 7)
            pool=nn.AdaptiveAvgPool2d(1),   # -> (B, 1280, 1, 1)
            flatten=nn.Flatten(),           # -> (B, 1280)
            dropout=nn.Dropout(dropout),
            classifier=nn.Linear(head_channels, num_classes),
        ))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: He-normal (fan-out) convolutions and identity BN. The classifier is
        # uniform in +-1/sqrt(in_features) (nn.Linear's own bound). The authors' dense
        # initializer uses +-1/sqrt(num_classes): nearly the same for 1000 classes and 1280
        # features, but with 10 classes the first logits are ~10x too large (a first-epoch
        # loss near 4.4 instead of ln 10 = 2.3), and a short CIFAR run never recovers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, ``(B, 3, H, W) -> (B, 320, H/32, W/32)`` for B0."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="EfficientNet")
        return self.head(self.forward_features(x))


def _efficientnet(variant: str, num_classes: int, dropout: float,
                  stochastic_depth_prob: float) -> EfficientNet:
    scale = EFFICIENTNET_SCALES[variant]
    return EfficientNet(EFFICIENTNET_B0_STAGES, num_classes, scale.width_mult, scale.depth_mult,
                        dropout, stochastic_depth_prob)


@register_model
def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 for 224x224 images: 5,288,548 parameters, 0.386 GMACs (torchvision's)."""
    return _efficientnet("b0", num_classes, dropout, stochastic_depth_prob)


@register_model
def efficientnet_b1(num_classes: int = 1000, dropout: float = 0.2,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B1 (depth x1.1, 240x240 images): 7,794,184 parameters."""
    return _efficientnet("b1", num_classes, dropout, stochastic_depth_prob)


@register_model
def efficientnet_b2(num_classes: int = 1000, dropout: float = 0.3,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B2 (width x1.1, depth x1.2, 260x260 images): 9,109,994 parameters."""
    return _efficientnet("b2", num_classes, dropout, stochastic_depth_prob)


@register_model
def efficientnet_b3(num_classes: int = 1000, dropout: float = 0.3,
                    stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B3 (width x1.2, depth x1.4, 300x300 images): 12,233,232 parameters."""
    return _efficientnet("b3", num_classes, dropout, stochastic_depth_prob)


@register_model
def efficientnet_b0_cifar(num_classes: int = 10, dropout: float = 0.2,
                          stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 for 32x32 images: stem and second stage at stride 1 (32 -> 4)."""
    stages = list(EFFICIENTNET_B0_STAGES)
    stages[1] = replace(stages[1], stride=1)
    return EfficientNet(tuple(stages), num_classes, dropout=dropout,
                        stochastic_depth_prob=stochastic_depth_prob, stem_stride=1)


def load_torchvision_weights(ours: EfficientNet, tv_model: nn.Module) -> None:
    """Copy the weights of torchvision's ``efficientnet_b0`` ... ``_b7`` into ours.

    The correspondence, module by module:

    =========================  ==========================================================
    ours                       torchvision
    =========================  ==========================================================
    ``stem``                   ``features.0``
    ``stages.stageK.j``        ``features.K.j.block`` ([expand], depthwise, SE, projection;
                               see :func:`~cnnlearn.models.mobilenet.inverted_residual_prefixes`)
    ``head.conv``              ``features.<K+1>`` (the last 1x1 convolution)
    ``head.classifier``        ``classifier.1``
    =========================  ==========================================================

    Args:
        ours: an :class:`EfficientNet` of the same configuration.
        tv_model: ``torchvision.models.efficientnet_b0()`` (or b1 ...).

    Raises:
        ValueError: the two models do not have the same structure.
    """
    from torchvision.models import EfficientNet as TvEfficientNet

    if not isinstance(ours, EfficientNet) or not isinstance(tv_model, TvEfficientNet):
        raise ValueError(f"cannot map {type(tv_model).__name__} onto {type(ours).__name__}: "
                         "pass our EfficientNet and torchvision's EfficientNet")
    n_stages = len(ours.stages)
    if len(tv_model.features) != n_stages + 2:
        raise ValueError(f"ours has {n_stages} stages, torchvision's {len(tv_model.features) - 2}")
    pairs = [("stem", "features.0")]
    for k, (stage_name, stage) in enumerate(ours.stages.named_children(), start=1):
        if len(stage) != len(tv_model.features[k]):
            raise ValueError(f"{stage_name} has {len(stage)} blocks, torchvision's "
                             f"features.{k} has {len(tv_model.features[k])}")
        for j, block in enumerate(stage):
            pairs += inverted_residual_prefixes(f"stages.{stage_name}.{j}", block,
                                                f"features.{k}.{j}.block")
    pairs += [("head.conv", f"features.{n_stages + 1}"), ("head.classifier", "classifier.1")]
    load_by_prefix(ours, tv_model, pairs)
