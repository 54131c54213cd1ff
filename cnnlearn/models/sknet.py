"""Selective-kernel networks: branches of different receptive fields, fused by a softmax across them.

Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586.

An SK unit (Fig. 1) *splits*: ``M`` branches convolve the input with different kernels (a
3x3 and a "5x5", the latter a 3x3 of dilation 2, Sec. 3.1); *fuses*: their sum is pooled
and reduced to ``d = max(C / r, L)`` numbers; *selects*: one softmax per channel across the
branches weighs them. The select step is :class:`~cnnlearn.models.resnest.SplitAttention`
with ``radix = M``, ``cardinality = 1`` and no biases: SK is a special case of ResNeSt's
split attention whose splits differ in dilation.

``skresnet18`` and ``skresnext50_32x4d`` equal timm's (:func:`load_timm_skresnet`).
timm's ``skresnet18`` splits the input channels between the branches (``split_input``, a
choice of timm's, not the paper's), ``skresnext50_32x4d`` is the paper's SKNet-50.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .layers import ConvBNAct, check_divisible, check_positive
from .registry import register_model
from .resnest import SplitAttention
from .resnet import _TORCHVISION_RULES, ResNet, ResNetConfig, merge_shortcut, residual_tail
from .weights import copy_weights, rename

__all__ = ["SelectiveKernel", "SKBasicBlock", "SKBottleneck", "sk_attn_channels",
           "skresnet18", "skresnext50_32x4d", "skresnet29_cifar", "load_timm_skresnet"]

ModuleFactory = Callable[..., nn.Module]


def sk_attn_channels(channels: int, reduction: int = 16, min_channels: int = 32) -> int:
    """``d = max(C / r, L)`` of Li et al., Eq. 4 (``r = 16``, ``L = 32`` in SKNet-50)."""
    check_positive(channels=channels, reduction=reduction, min_channels=min_channels)
    return max(channels // reduction, min_channels)


class SelectiveKernel(nn.Module):
    """The SK unit: ``M`` 3x3 conv-BN-ReLU branches of dilations ``dilations``, weighed by a
    softmax across branches (:class:`~cnnlearn.models.resnest.SplitAttention`) and summed.

    Args:
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        stride: stride of every branch.
        groups: groups of each branch's convolution (32 in SKNet-50).
        dilations: one per branch; ``(1, 2)`` is the paper's 3x3 and "5x5".
        attn_channels: ``d``, see :func:`sk_attn_channels`.
        split_input: give each branch ``1/M`` of the input channels (timm's ``skresnet*``).
        norm_layer: normalisation class.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 dilations: Sequence[int] = (1, 2), attn_channels: int = 32, split_input: bool = False,
                 norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        dilations = tuple(dilations)
        if len(dilations) < 2:
            raise ValueError(f"an SK unit selects among at least two branches: dilations={dilations!r}")
        check_positive(stride=stride, **{f"dilations[{i}]": d for i, d in enumerate(dilations)})
        m = len(dilations)
        branch_in = in_channels
        if split_input:
            check_divisible(in_channels, m, "in_channels")  # groups=M: one share per branch
            branch_in = in_channels // m
        self.split_input = split_input
        self.paths = nn.ModuleList(ConvBNAct(branch_in, out_channels, 3, stride, groups, norm_layer, nn.ReLU, d)
                                   for d in dilations)
        self.attn = SplitAttention(out_channels, radix=m, cardinality=1, attn_channels=attn_channels,
                                   norm_layer=norm_layer, bias=False)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """Split: ``(B, C_in, H, W) -> (B, M*C, H/s, W/s)``, branch ``m`` in channel block ``m``."""
        inputs = torch.chunk(x, len(self.paths), dim=1) if self.split_input else [x] * len(self.paths)
        return torch.cat([path(xi) for path, xi in zip(self.paths, inputs)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.branches(x))  # fuse and select: -> (B, C, H/s, W/s)


class SKBasicBlock(nn.Module):
    """A basic block whose first 3x3 is an SK unit (timm's ``skresnet18``).

    Args: as :class:`~cnnlearn.models.resnet.BasicBlock`, plus ``reduction`` and
    ``min_attn_channels`` (``r`` and ``L``) and ``split_input`` of :class:`SelectiveKernel`.
    """

    expansion = 1
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, reduction: int = 8,
        min_attn_channels: int = 16, split_input: bool = True,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels)
        if groups != 1 or width_per_group != 64:
            raise ValueError(f"SKBasicBlock supports only groups=1 and width_per_group=64 (got {groups}, "
                             f"{width_per_group}); use SKBottleneck")
        d = sk_attn_channels(out_channels, reduction, min_attn_channels)
        self.conv1 = SelectiveKernel(in_channels, out_channels, stride, attn_channels=d,
                                     split_input=split_input, norm_layer=norm_layer)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels)
        residual_tail(self, in_channels, out_channels, stride, shortcut, residual, attn_layer)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block then starts as relu(shortcut(x))."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merge_shortcut(self, self.bn2(self.conv2(self.conv1(x))), x)


class SKBottleneck(nn.Module):
    """A bottleneck whose 3x3 is an SK unit (SKNet-50, Li et al. Table 1).

    Args: as :class:`~cnnlearn.models.resnet.Bottleneck` (``groups`` is the cardinality of
    each branch), plus ``reduction``, ``min_attn_channels`` and ``split_input`` as
    :class:`SKBasicBlock`.
    """

    expansion = 4
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, reduction: int = 16,
        min_attn_channels: int = 32, split_input: bool = False,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, width_per_group=width_per_group)
        if out_channels % self.expansion:
            raise ValueError(f"out_channels={out_channels} must be a multiple of the expansion {self.expansion}")
        width = out_channels // self.expansion * width_per_group // 64 * groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        d = sk_attn_channels(width, reduction, min_attn_channels)
        self.conv2 = SelectiveKernel(width, width, stride, groups, attn_channels=d, split_input=split_input,
                                     norm_layer=norm_layer)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        residual_tail(self, in_channels, out_channels, stride, shortcut, residual, attn_layer)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block then starts as relu(shortcut(x))."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.bn1(self.conv1(x))))  # (B, C_in, H, W) -> (B, width, H/s, W/s)
        return merge_shortcut(self, self.bn3(self.conv3(out)), x)  # -> (B, C_out, H/s, W/s)


@register_model
def skresnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """SK-ResNet-18 as timm's ``skresnet18`` (input split between the branches, ``r = 8``,
    ``L = 16``): 11,958,056 parameters and 1.81 GMACs."""
    config = ResNetConfig(SKBasicBlock, (2, 2, 2, 2), zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


@register_model
def skresnext50_32x4d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """SKNet-50 (Li et al., Table 1: ResNeXt-50 32x4d with SK units, ``r = 16``, ``L = 32``),
    as timm's ``skresnext50_32x4d``: 27,479,784 parameters."""
    config = ResNetConfig(SKBottleneck, (3, 4, 6, 3), groups=32, width_per_group=4,
                          zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


@register_model
def skresnet29_cifar(num_classes: int = 10, width_per_group: int = 64, zero_init_residual: bool = False) -> ResNet:
    """An SK network for 32x32 images: CIFAR stem, three stages of three SK bottlenecks
    (planes 16, 32, 64), the input split between a 3x3 and a dilated 3x3 branch; ``r = 4``,
    ``L = 8`` so that the small widths keep a real bottleneck in the attention."""
    config = ResNetConfig(SKBottleneck, (3, 3, 3), widths=(16, 32, 64), stem="cifar", stem_width=16,
                          width_per_group=width_per_group, zero_init_residual=zero_init_residual,
                          block_args=dict(reduction=4, min_attn_channels=8, split_input=True))
    return ResNet(config, num_classes)


# --------------------------------------------------------------------------- weight copying

# timm's sk*: ResNet's names; the SK unit's paths.i.{conv,bn} (ConvNormAct) are our
# ConvBNAct's .0/.1, its attn.{fc_reduce,bn,fc_select} our SplitAttention's fc1/bn1/fc2;
# skresnet18's conv2 is a ConvNormAct, ours a conv and bn2.
_TIMM_RULES = (
    (r"layer(\d)\.(\d+)\.(conv[12])\.paths\.(\d)\.conv\.(\w+)", r"stages.stage\1.\2.\3.paths.\4.0.\5"),
    (r"layer(\d)\.(\d+)\.(conv[12])\.paths\.(\d)\.bn\.(\w+)", r"stages.stage\1.\2.\3.paths.\4.1.\5"),
    (r"layer(\d)\.(\d+)\.(conv[12])\.attn\.fc_reduce\.(\w+)", r"stages.stage\1.\2.\3.attn.fc1.\4"),
    (r"layer(\d)\.(\d+)\.(conv[12])\.attn\.bn\.(\w+)", r"stages.stage\1.\2.\3.attn.bn1.\4"),
    (r"layer(\d)\.(\d+)\.(conv[12])\.attn\.fc_select\.(\w+)", r"stages.stage\1.\2.\3.attn.fc2.\4"),
    (r"layer(\d)\.(\d+)\.conv1\.conv\.(\w+)", r"stages.stage\1.\2.conv1.\3"),
    (r"layer(\d)\.(\d+)\.conv1\.bn\.(\w+)", r"stages.stage\1.\2.bn1.\3"),
    (r"layer(\d)\.(\d+)\.conv2\.conv\.(\w+)", r"stages.stage\1.\2.conv2.\3"),
    (r"layer(\d)\.(\d+)\.conv2\.bn\.(\w+)", r"stages.stage\1.\2.bn2.\3"),
    (r"layer(\d)\.(\d+)\.conv3\.conv\.(\w+)", r"stages.stage\1.\2.conv3.\3"),
    (r"layer(\d)\.(\d+)\.conv3\.bn\.(\w+)", r"stages.stage\1.\2.bn3.\3"),
    *_TORCHVISION_RULES,  # the stem, shortcuts and head as torchvision's ResNet
)


def load_timm_skresnet(ours: ResNet, timm_model: nn.Module) -> ResNet:
    """Copy the weights of timm's ``skresnet18`` or ``skresnext50_32x4d`` into ours, by the
    explicit rules above.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, lambda n: rename(n, _TIMM_RULES))
