"""Residual networks: ResNet-18 ... ResNet-152, the CIFAR ResNets, their plain twins,
pre-activation ResNets and the "Bag of Tricks" variants ResNet-C and ResNet-D.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385 (2015): the residual block, the bottleneck, shortcut options A/B/C
(Sec. 3.3), the ImageNet networks (Table 1) and the 6n+2-layer CIFAR networks (Sec. 4.2).

He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016,
arXiv:1603.05027: the pre-activation block (BN -> ReLU -> conv).

He, Zhang, Zhang, Zhang, Xie, Li, "Bag of Tricks for Image Classification with
Convolutional Neural Networks", CVPR 2019, arXiv:1812.01187: ResNet-B (stride on the 3x3
of the bottleneck, as torchvision does), ResNet-C (three 3x3 convolutions in the stem)
and ResNet-D (average-pool before the 1x1 projection shortcut).

Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017,
arXiv:1706.02677: "zero gamma", the last BatchNorm of every residual branch initialised
to zero so that each block starts as (the ReLU of) its shortcut.

The ImageNet networks are built to equal ``torchvision.models.resnet*`` and timm's
``resnet*d`` tensor for tensor: :func:`load_torchvision_resnet` and
:func:`load_timm_resnet` copy their weights by an explicit name mapping.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model
from .layers import ConvBNAct, check_images, check_positive, init_he
from .weights import copy_weights, rename

# Kept for modules that imported the private names.
_copy_weights, _rename = copy_weights, rename

__all__ = [
    "BasicBlock", "Bottleneck", "PreActBasicBlock", "PadShortcut", "make_shortcut",
    "ResNetConfig", "ResNet", "SHORTCUT_OPTIONS", "STEMS",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet50c", "resnet50d", "resnet18d", "resnet34d",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "plain20", "plain32", "plain44", "plain56", "plain110",
    "preact_resnet20", "preact_resnet56", "preact_resnet110", "resnet29_cifar",
    "load_torchvision_resnet", "load_timm_resnet", "residual_tail", "merge_shortcut",
]

ModuleFactory = Callable[..., nn.Module]

SHORTCUT_OPTIONS = ("A", "B", "C")  # He et al. 2015, Sec. 3.3
STEMS = ("default", "deep", "cifar")


# --------------------------------------------------------------------------- shortcuts


class PadShortcut(nn.Module):
    """Option A: an identity shortcut that needs no parameters even where the shape changes.

    Spatially it keeps every ``stride``-th pixel (the pixels a stride-``stride`` 3x3
    convolution with padding 1 is centred on); the extra output channels are zeros
    appended after the input's channels (He et al. 2015, Sec. 3.3: "extra zero entries
    padded for increasing dimensions").

    Args:
        in_channels: channels of the block's input.
        out_channels: channels of the block's output (>= ``in_channels``).
        stride: spatial subsampling factor of the block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride)
        if out_channels < in_channels:
            raise ValueError(
                f"shortcut option 'A' can only add channels, but out_channels={out_channels} < "
                f"in_channels={in_channels}; use shortcut='B' (a 1x1 projection)")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C, H, W) -> (B, C, H/s, W/s)
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # -> (B, C + extra, H/s, W/s)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def make_shortcut(
    option: str, in_channels: int, out_channels: int, stride: int = 1,
    norm_layer: ModuleFactory = nn.BatchNorm2d, avg_down: bool = False,
) -> nn.Module:
    """Build the shortcut path of a residual block.

    Options from He et al. 2015, Sec. 3.3, and ResNet-D from He et al. 2019, Fig. 2c:

    * ``"A"``: identity; where the shape changes, subsample and zero-pad the channels
      (:class:`PadShortcut`). No parameters.
    * ``"B"``: identity where the shape is kept, a projection (1x1 conv + BN) where it
      changes. torchvision's and most ResNets' choice.
    * ``"C"``: a projection in every block.
    * ``avg_down=True`` (ResNet-D, with ``"B"`` or ``"C"``): a stride-2 projection
      becomes 2x2 average pooling (stride 2) followed by a stride-1 1x1 conv, so the
      shortcut sees every input pixel instead of one in four.

    Args:
        option: ``"A"``, ``"B"`` or ``"C"``.
        in_channels: channels of the block's input.
        out_channels: channels of the block's output.
        stride: spatial stride of the block.
        norm_layer: normalisation after the projection's convolution.
        avg_down: ResNet-D's average-pooling projection.

    Returns:
        ``nn.Identity()``, a :class:`PadShortcut`, or an ``nn.Sequential`` projection with
        children ``pool`` (only for ResNet-D with stride > 1), ``conv`` and ``bn``.
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS} (He et al. 2015, Sec. 3.3), got {option!r}")
    check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride)
    same_shape = in_channels == out_channels and stride == 1
    if option == "A":
        if avg_down:
            raise ValueError("avg_down=True needs a projection shortcut: use shortcut='B' or 'C', not 'A'")
        return nn.Identity() if same_shape else PadShortcut(in_channels, out_channels, stride)
    if option == "B" and same_shape:
        return nn.Identity()
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if avg_down and stride > 1:
        # ceil_mode and count_include_pad=False as timm's resnet*d: an odd-sized map keeps
        # its last row/column, averaged over the pixels that exist.
        layers["pool"] = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        stride = 1
    layers["conv"] = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)  # BN follows: no bias
    layers["bn"] = norm_layer(out_channels)
    return nn.Sequential(layers)


# --------------------------------------------------------------------------- blocks


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
             dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the size at stride 1: the dilated kernel spans 2*dilation + 1 pixels.
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


def _check_shortcut(shortcut: nn.Module | None, in_channels: int, out_channels: int,
                    stride: int, residual: bool) -> nn.Module | None:
    """The identity is the default shortcut; it only fits a block that keeps the shape."""
    if not residual:
        if shortcut is not None:
            raise ValueError("a plain block (residual=False) has no shortcut: pass shortcut=None")
        return None
    if shortcut is None:
        if in_channels != out_channels or stride != 1:
            raise ValueError(
                f"a block with in_channels={in_channels}, out_channels={out_channels}, stride={stride} "
                f"changes the shape: pass shortcut=make_shortcut(...)")
        return nn.Identity()
    return shortcut


def residual_tail(block: nn.Module, in_channels: int, out_channels: int, stride: int,
                  shortcut: nn.Module | None, residual: bool, attn_layer: ModuleFactory | None = None) -> None:
    """Give a residual block of another family (Res2Net, SK, ResNeSt) the same ending as
    ours: ``attn`` (or the identity), the checked ``shortcut``, ``act`` and ``residual``;
    its ``forward`` then ends with :func:`merge_shortcut`."""
    block.attn = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
    block.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, residual)
    block.act = nn.ReLU(inplace=True)
    block.residual = residual


def merge_shortcut(block: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``relu(attn(out) + shortcut(x))``, or ``relu(attn(out))`` for a plain block."""
    out = block.attn(out)
    if block.residual:
        out = out + block.shortcut(x)
    return block.act(out)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut around them (ResNet-18/34, CIFAR ResNets).

    ``out = relu(attn(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (``expansion`` = 1: the width of the stage).
        stride: stride of the first 3x3 convolution (2 where a stage halves the size).
        shortcut: the shortcut module from :func:`make_shortcut`; ``None`` means the
            identity (only where the shape is kept) or, for a plain block, no shortcut.
        groups: must be 1 (kept so that every block has the same signature).
        width_per_group: must be 64 (same reason).
        norm_layer: normalisation class called with a channel count.
        attn_layer: optional class called with ``out_channels``; the module it returns is
            applied to the residual branch just before the addition (e.g. squeeze-and-
            excitation); ``None`` for none.
        residual: ``False`` builds the block's "plain" twin: the same layers without the
            shortcut and the addition (He et al. 2015, Sec. 4.1).
        dilation: dilation of both 3x3 convolutions (padding follows), as in the dilated
            residual networks of Yu, Koltun, Funkhouser 2017 (arXiv:1705.09914).
            torchvision's BasicBlock refuses dilation; ours allows it for the small
            segmentation backbones of chapter 8.
    """

    expansion = 1
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, dilation: int = 1,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride, dilation=dilation)
        if groups != 1 or width_per_group != 64:
            raise ValueError(
                f"BasicBlock supports only groups=1 and width_per_group=64 (got {groups}, "
                f"{width_per_group}); use Bottleneck for grouped (ResNeXt) or wide blocks")
        self.conv1 = _conv3x3(in_channels, out_channels, stride, dilation=dilation)
        self.bn1 = norm_layer(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, dilation=dilation)
        self.bn2 = norm_layer(out_channels)
        self.attn = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
        self.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, residual)
        self.act = nn.ReLU(inplace=True)
        self.residual = residual

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the branch then outputs 0 and the block relu(shortcut(x))."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        out = self.attn(self.bn2(self.conv2(out)))
        if self.residual:
            out = out + self.shortcut(x)  # the shortcut brings x to (B, C_out, H/s, W/s)
        return self.act(out)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 -> 1x1 (expand by 4), with a shortcut (ResNet-50/101/152).

    The stride sits on the 3x3 convolution, as in torchvision ("ResNet-B" in He et al.
    2019): with ``stride_in_1x1=True`` it sits on the first 1x1 as in the 2015 paper and
    its Caffe models ("ResNet-A"), which then skips three quarters of its input pixels.

    The middle width is ``int(planes * width_per_group / 64) * groups`` with ``planes =
    out_channels / 4``, as in torchvision: the defaults give ``planes``; ResNeXt-50
    32x4d uses ``groups=32, width_per_group=4``; Wide ResNet-50-2 ``width_per_group=128``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (4 x the stage's ``planes``).
        stride: spatial stride of the block.
        shortcut: see :class:`BasicBlock`.
        groups: groups of the 3x3 convolution (ResNeXt's cardinality).
        width_per_group: channels per group of the 3x3 convolution at ``planes`` = 64.
        norm_layer: normalisation class called with a channel count.
        attn_layer: see :class:`BasicBlock`; called with ``out_channels``.
        residual: ``False`` for the plain twin, see :class:`BasicBlock`.
        stride_in_1x1: put the stride on the first 1x1 convolution (ResNet-A).
        dilation: dilation of the 3x3 convolution (padding follows), as torchvision's.
    """

    expansion = 4
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride,
                       groups=groups, width_per_group=width_per_group, dilation=dilation)
        if out_channels % self.expansion:
            raise ValueError(f"out_channels={out_channels} must be a multiple of the expansion {self.expansion}")
        planes = out_channels // self.expansion
        if (planes * width_per_group) % 64:
            raise ValueError(
                f"width_per_group={width_per_group} gives {planes * width_per_group / 64} channels per "
                f"group for planes={planes}: choose width_per_group so that planes*width_per_group "
                f"is a multiple of 64")
        mid = planes * width_per_group // 64 * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(in_channels, mid, stride_1x1)  # reduce: (B, C_in, H, W) -> (B, mid, ., .)
        self.bn1 = norm_layer(mid)
        self.conv2 = _conv3x3(mid, mid, stride_3x3, groups, dilation)  # the only spatial convolution
        self.bn2 = norm_layer(mid)
        self.conv3 = _conv1x1(mid, out_channels)  # expand: (B, mid, ., .) -> (B, C_out, ., .)
        self.bn3 = norm_layer(out_channels)
        self.attn = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
        self.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, residual)
        self.act = nn.ReLU(inplace=True)
        self.residual = residual

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the branch then outputs 0 and the block relu(shortcut(x))."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))  # (B, mid, H/s, W/s)
        out = self.attn(self.bn3(self.conv3(out)))  # (B, C_out, H/s, W/s)
        if self.residual:
            out = out + self.shortcut(x)
        return self.act(out)


class PreActBasicBlock(nn.Module):
    """Pre-activation block: ``out = shortcut(x) + conv2(relu(bn2(conv1(relu(bn1(x))))))``.

    Normalisation and activation come *before* each convolution and nothing follows the
    addition, so the shortcut path from one block to the next is a pure identity (He et
    al. 2016, Fig. 1b, Eq. 4). A network of these blocks needs one more BN-ReLU after its
    last block, which :class:`ResNet` adds.

    Args:
        in_channels, out_channels, stride, shortcut, groups, width_per_group, norm_layer,
        attn_layer, residual: as in :class:`BasicBlock`.
        preact_shortcut: apply the first BN-ReLU before the split into the two paths, so
            the shortcut also sees the normalised input. He et al. 2016 (appendix) do this
            in the first block after a stand-alone convolution; their code in the first
            block of every stage, which :class:`ResNet` follows.
    """

    expansion = 1
    preact = True

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, preact_shortcut: bool = False,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride)
        if groups != 1 or width_per_group != 64:
            raise ValueError(
                f"PreActBasicBlock supports only groups=1 and width_per_group=64 (got {groups}, "
                f"{width_per_group})")
        self.bn1 = norm_layer(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = norm_layer(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.attn = attn_layer(out_channels) if attn_layer is not None else nn.Identity()
        self.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, residual)
        self.act = nn.ReLU(inplace=True)
        self.residual = residual
        self.preact_shortcut = preact_shortcut

    def zero_init_last(self) -> None:
        """Zero the last BN's scale (its shift starts at 0): conv2 then sees zeros and the
        block returns its shortcut."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        if self.preact_shortcut:
            x = pre
        out = self.conv1(pre)  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        out = self.attn(self.conv2(self.act(self.bn2(out))))
        return out + self.shortcut(x) if self.residual else out


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class ResNetConfig:
    """A residual network as data: what :class:`ResNet` builds.

    Stage 1 keeps the stem's resolution and every later stage halves it, in its first
    block (He et al. 2015, Table 1; Sec. 4.2 for CIFAR).
    """

    block: type[nn.Module]  # BasicBlock, Bottleneck or PreActBasicBlock
    layers: tuple[int, ...]  # blocks per stage: (2, 2, 2, 2) is ResNet-18, (3, 4, 6, 3) ResNet-50
    widths: tuple[int, ...] = (64, 128, 256, 512)  # "planes" per stage; blocks output widths[i] * block.expansion
    stem: str = "default"  # "default": 7x7/2 conv + 3x3/2 max-pool; "deep": ResNet-C; "cifar": one 3x3 conv
    stem_width: int = 64  # channels out of the stem (the deep stem's first two convs have half of them)
    shortcut: str = "B"  # "A", "B" or "C" (He et al. 2015, Sec. 3.3); ignored when residual=False
    avg_down: bool = False  # ResNet-D: average-pool, then 1x1 conv, in the projection shortcuts
    residual: bool = True  # False: the plain twin, no shortcuts
    groups: int = 1  # Bottleneck only: groups of the 3x3 convolution (ResNeXt's cardinality)
    width_per_group: int = 64  # Bottleneck only: 3x3 channels per group at planes=64
    stride_in_1x1: bool = False  # Bottleneck only: ResNet-A, stride on the first 1x1
    zero_init_residual: bool = False  # zero gamma in each branch's last BN (Goyal et al. 2017)
    attn_layer: ModuleFactory | None = None  # e.g. squeeze-and-excitation, called with a block's out_channels
    norm_layer: ModuleFactory = nn.BatchNorm2d
    # One flag per stage after the first, as torchvision's argument of the same name: True
    # keeps that stage at its input's resolution and multiplies the dilation of its 3x3
    # convolutions by the stride it drops, so later layers keep their receptive field
    # (Chen et al., DeepLab, arXiv:1606.00915, Sec. 3.1). () or all False: no dilation.
    replace_stride_with_dilation: tuple[bool, ...] = ()
    # More keyword arguments for every block, for block classes of other families (e.g.
    # Res2Net's scale, ResNeSt's radix), as timm's block_args.
    block_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "widths", tuple(self.widths))
        if not self.layers:
            raise ValueError("layers must list the number of blocks of at least one stage, e.g. (2, 2, 2, 2)")
        for i, n in enumerate(self.layers):
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"layers[{i}] must be a positive number of blocks, got {n!r}")
        if len(self.widths) != len(self.layers):
            raise ValueError(
                f"widths has {len(self.widths)} entries but layers has {len(self.layers)}: give one width per stage")
        check_positive(stem_width=self.stem_width, groups=self.groups, width_per_group=self.width_per_group,
                       **{f"widths[{i}]": w for i, w in enumerate(self.widths)})
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.stem == "deep" and self.stem_width % 2:
            raise ValueError(f"the deep stem halves stem_width for its first convs: "
                             f"stem_width={self.stem_width} must be even")
        if self.shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS} (He et al. 2015, Sec. 3.3), "
                             f"got {self.shortcut!r}")
        if self.avg_down and self.shortcut == "A":
            raise ValueError("avg_down=True needs a projection shortcut: use shortcut='B' or 'C', not 'A'")
        if self.stride_in_1x1 and not issubclass(self.block, Bottleneck):
            raise ValueError("stride_in_1x1=True applies only to block=Bottleneck")
        object.__setattr__(self, "replace_stride_with_dilation", tuple(self.replace_stride_with_dilation))
        dilate = self.replace_stride_with_dilation
        if dilate:
            if len(dilate) != len(self.layers) - 1 or not all(isinstance(d, bool) for d in dilate):
                raise ValueError(
                    f"replace_stride_with_dilation must hold one bool per stage after the first "
                    f"({len(self.layers) - 1} here), got {dilate!r}")
            if any(dilate) and not (issubclass(self.block, (BasicBlock, Bottleneck))):
                raise ValueError(f"replace_stride_with_dilation needs BasicBlock or Bottleneck blocks, "
                                 f"not {self.block.__name__}")
        if self.zero_init_residual and not self.residual:
            raise ValueError("zero_init_residual=True would zero every block of a plain network: "
                             "use it with residual=True")


class ResNet(nn.Module):
    """A residual network: ``stem`` -> ``stages`` (``stage1`` ... ``stageN``) -> ``head``.

    Args:
        config: the architecture (:class:`ResNetConfig`).
        num_classes: classes predicted by the head.

    Attributes:
        stem: the input convolution(s), and for ImageNet stems the max-pooling.
        stages: ``nn.Sequential`` of the stages, each an ``nn.Sequential`` of blocks.
        final_act: BN-ReLU after the last block of a pre-activation network, else identity.
        head: global average pooling -> flatten -> ``fc``.
    """

    def __init__(self, config: ResNetConfig, num_classes: int = 1000) -> None:
        super().__init__()
        if not isinstance(config, ResNetConfig):
            raise ValueError(f"config must be a ResNetConfig, got {type(config).__name__}")
        check_positive(num_classes=num_classes)
        self.config = cfg = config
        self.stem = self._make_stem(cfg)
        channels = cfg.stem_width
        self.stages = nn.Sequential()
        dilation = 1
        for i, (num_blocks, width) in enumerate(zip(cfg.layers, cfg.widths)):
            stride = 1 if i == 0 else 2
            previous_dilation = dilation
            if i > 0 and cfg.replace_stride_with_dilation and cfg.replace_stride_with_dilation[i - 1]:
                dilation, stride = dilation * stride, 1
            stage = self._make_stage(cfg, channels, width * cfg.block.expansion, num_blocks, stride,
                                     (previous_dilation, dilation))
            self.stages.add_module(f"stage{i + 1}", stage)
            channels = width * cfg.block.expansion
        self.num_features = channels
        if cfg.block.preact:
            # He et al. 2016, appendix: "an extra activation right after [the last unit's]
            # element-wise addition", since pre-activation blocks end with a convolution.
            self.final_act = nn.Sequential(OrderedDict(bn=cfg.norm_layer(channels), act=nn.ReLU(inplace=True)))
        else:
            self.final_act = nn.Identity()
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, C, H, W) -> (B, C, 1, 1)
            flatten=nn.Flatten(),  # -> (B, C)
            fc=nn.Linear(channels, num_classes),
        ))
        self._init_weights(cfg.zero_init_residual)

    @staticmethod
    def _make_stem(cfg: ResNetConfig) -> nn.Sequential:
        w = cfg.stem_width
        if cfg.stem == "cifar":
            if cfg.block.preact:
                # The first pre-activation block normalises and activates this output itself.
                return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, w, 3, padding=1, bias=False)))
            return nn.Sequential(OrderedDict(conv=ConvBNAct(3, w, 3, norm_layer=cfg.norm_layer)))
        if cfg.stem == "deep":
            # ResNet-C (He et al. 2019, Fig. 2b): three 3x3 convs see the same 7x7 window
            # as the 7x7 conv at fewer MACs; widths 32, 32, 64 as in timm's resnet50d.
            convs = OrderedDict(  # (B, 3, 224, 224) -> (B, 32, 112, 112) -> same -> (B, 64, 112, 112)
                conv1=ConvBNAct(3, w // 2, 3, stride=2, norm_layer=cfg.norm_layer),
                conv2=ConvBNAct(w // 2, w // 2, 3, norm_layer=cfg.norm_layer),
                conv3=ConvBNAct(w // 2, w, 3, norm_layer=cfg.norm_layer),
            )
        else:
            # (B, 3, 224, 224) -> (B, 64, 112, 112)
            convs = OrderedDict(conv=ConvBNAct(3, w, 7, stride=2, norm_layer=cfg.norm_layer))
        return nn.Sequential(OrderedDict(**convs, pool=nn.MaxPool2d(3, stride=2, padding=1)))  # -> (B, 64, 56, 56)

    @staticmethod
    def _make_stage(cfg: ResNetConfig, in_channels: int, out_channels: int, num_blocks: int,
                    stride: int, dilations: tuple[int, int] = (1, 1)) -> nn.Sequential:
        """One stage: the first block changes the shape (stride, channels), the rest keep it.
        ``dilations``: of the first block and of the others. A dilated stage's first block
        keeps the previous stage's dilation, as torchvision's ``_make_layer`` does."""
        blocks = []
        for j in range(num_blocks):
            cin, s = (in_channels, stride) if j == 0 else (out_channels, 1)
            shortcut = (make_shortcut(cfg.shortcut, cin, out_channels, s, cfg.norm_layer, cfg.avg_down)
                        if cfg.residual else None)
            kwargs = dict(groups=cfg.groups, width_per_group=cfg.width_per_group, norm_layer=cfg.norm_layer,
                          attn_layer=cfg.attn_layer, residual=cfg.residual)
            if cfg.stride_in_1x1:
                kwargs["stride_in_1x1"] = True
            d = dilations[0] if j == 0 else dilations[1]
            if d != 1:  # only then: blocks of other families need not know the argument
                kwargs["dilation"] = d
            if cfg.block.preact:
                kwargs["preact_shortcut"] = j == 0
            kwargs.update(cfg.block_args)
            blocks.append(cfg.block(cin, out_channels, s, shortcut, **kwargs))
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He initialisation for ReLU networks (He et al. 2015, arXiv:1502.01852), fan_out
        # mode as torchvision; BN starts as the identity map.
        init_he(self)
        if zero_init_residual:
            # Zero gamma (Goyal et al. 2017): each block starts as its shortcut, so a deep
            # network starts as a shallow one and the signal passes unchanged at first.
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map: ``(B, 3, H, W) -> (B, num_features, H/32, W/32)``
        (``H/4`` for the CIFAR networks; ``H/16`` or ``H/8`` with one or two stages'
        strides replaced by dilation)."""
        return self.final_act(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="ResNet")
        return self.head(self.forward_features(x))  # (B, num_classes)


# --------------------------------------------------------------------------- ImageNet factories
# Blocks per stage from He et al. 2015, Table 1.


@register_model
def resnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2); 11,689,512 parameters, as torchvision's."""
    return ResNet(ResNetConfig(BasicBlock, (2, 2, 2, 2), zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet34(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34: BasicBlocks (3, 4, 6, 3); 21,797,672 parameters, as torchvision's."""
    return ResNet(ResNetConfig(BasicBlock, (3, 4, 6, 3), zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet50(num_classes: int = 1000, zero_init_residual: bool = False,
             replace_stride_with_dilation: Sequence[bool] = ()) -> ResNet:
    """ResNet-50 (ResNet-B: stride on the 3x3): Bottlenecks (3, 4, 6, 3); 25,557,032
    parameters and 4.09 GMACs at 224x224, as torchvision's.

    ``replace_stride_with_dilation``: three bools for stages 2-4, as torchvision's argument
    (``(False, True, True)``: output stride 8, the backbone of its FCN and DeepLabv3)."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 6, 3), zero_init_residual=zero_init_residual,
                               replace_stride_with_dilation=tuple(replace_stride_with_dilation)), num_classes)


@register_model
def resnet101(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-101: Bottlenecks (3, 4, 23, 3); 44,549,160 parameters, as torchvision's."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 23, 3), zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet152(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-152: Bottlenecks (3, 8, 36, 3); 60,192,808 parameters, as torchvision's."""
    return ResNet(ResNetConfig(Bottleneck, (3, 8, 36, 3), zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet50c(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50-C (He et al. 2019, Fig. 2b): ResNet-50 with the deep 3x3 stem."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 6, 3), stem="deep",
                               zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet50d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50-D (He et al. 2019, Fig. 2c): deep stem and average-pool shortcuts;
    25,576,264 parameters, as timm's ``resnet50d``."""
    return ResNet(ResNetConfig(Bottleneck, (3, 4, 6, 3), stem="deep", avg_down=True,
                               zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet18d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18-D: deep stem and average-pool shortcuts; 11,708,744 parameters, as timm's."""
    return ResNet(ResNetConfig(BasicBlock, (2, 2, 2, 2), stem="deep", avg_down=True,
                               zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnet34d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34-D: deep stem and average-pool shortcuts; 21,816,904 parameters, as timm's."""
    return ResNet(ResNetConfig(BasicBlock, (3, 4, 6, 3), stem="deep", avg_down=True,
                               zero_init_residual=zero_init_residual), num_classes)


# --------------------------------------------------------------------------- CIFAR factories
# He et al. 2015, Sec. 4.2: a 3x3 conv with 16 filters, then three stages of n blocks on
# 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters: 6n + 2 weighted layers.
# Shortcuts are option A there, so a ResNet and its plain twin have the same parameters.


def _cifar_resnet(n: int, block: type[nn.Module], num_classes: int, shortcut: str = "A",
                  zero_init_residual: bool = False, residual: bool = True) -> ResNet:
    config = ResNetConfig(block, (n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16,
                          shortcut=shortcut, residual=residual, zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


@register_model
def resnet20(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """ResNet-20 for CIFAR (n=3); 0.27M parameters (He et al. 2015, Table 6)."""
    return _cifar_resnet(3, BasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def resnet32(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """ResNet-32 for CIFAR (n=5); 0.46M parameters (He et al. 2015, Table 6)."""
    return _cifar_resnet(5, BasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def resnet44(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """ResNet-44 for CIFAR (n=7); 0.66M parameters (He et al. 2015, Table 6)."""
    return _cifar_resnet(7, BasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def resnet56(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """ResNet-56 for CIFAR (n=9); 0.85M parameters (He et al. 2015, Table 6)."""
    return _cifar_resnet(9, BasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def resnet110(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """ResNet-110 for CIFAR (n=18); 1.7M parameters (He et al. 2015, Table 6)."""
    return _cifar_resnet(18, BasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def plain20(num_classes: int = 10) -> ResNet:
    """Plain-20: ResNet-20 without its shortcuts (He et al. 2015, Fig. 6 left)."""
    return _cifar_resnet(3, BasicBlock, num_classes, residual=False)


@register_model
def plain32(num_classes: int = 10) -> ResNet:
    """Plain-32: ResNet-32 without its shortcuts."""
    return _cifar_resnet(5, BasicBlock, num_classes, residual=False)


@register_model
def plain44(num_classes: int = 10) -> ResNet:
    """Plain-44: ResNet-44 without its shortcuts."""
    return _cifar_resnet(7, BasicBlock, num_classes, residual=False)


@register_model
def plain56(num_classes: int = 10) -> ResNet:
    """Plain-56: ResNet-56 without its shortcuts; deeper than Plain-20 yet worse on the
    training set too (He et al. 2015, Fig. 1), the degradation problem."""
    return _cifar_resnet(9, BasicBlock, num_classes, residual=False)


@register_model
def plain110(num_classes: int = 10) -> ResNet:
    """Plain-110: ResNet-110 without its shortcuts."""
    return _cifar_resnet(18, BasicBlock, num_classes, residual=False)


@register_model
def resnet29_cifar(num_classes: int = 10, width_per_group: int = 64, zero_init_residual: bool = False) -> ResNet:
    """A bottleneck ResNet for 32x32 images: the CIFAR stem, three stages of three
    bottlenecks (planes 16, 32, 64, outputs 64, 128, 256; 9 x 3 + 2 = 29 layers), projection
    shortcuts. Chapter 3's baseline for the ``*29_cifar`` networks that change the block
    (Res2Net, SK, ResNeSt, involution), at about the same MACs."""
    config = ResNetConfig(Bottleneck, (3, 3, 3), widths=(16, 32, 64), stem="cifar", stem_width=16,
                          width_per_group=width_per_group, zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


# Pre-activation CIFAR networks (He et al. 2016): same layout and widths; option A
# shortcuts by default so that they compare one for one with resnet20/56/110.


@register_model
def preact_resnet20(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """Pre-activation ResNet-20 for CIFAR (n=3)."""
    return _cifar_resnet(3, PreActBasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def preact_resnet56(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """Pre-activation ResNet-56 for CIFAR (n=9)."""
    return _cifar_resnet(9, PreActBasicBlock, num_classes, shortcut, zero_init_residual)


@register_model
def preact_resnet110(num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """Pre-activation ResNet-110 for CIFAR (n=18); He et al. 2016, Table 3."""
    return _cifar_resnet(18, PreActBasicBlock, num_classes, shortcut, zero_init_residual)


# --------------------------------------------------------------------------- weight copying


# torchvision.models.resnet*: conv1/bn1 -> layer1..4 (blocks conv1/bn1/.../downsample.{0,1}) -> fc.
# Block-internal names (conv1, bn1, conv2, ...) are the same in both, and "suffix" below is
# .weight, .bias, .running_mean, .running_var or .num_batches_tracked.
_TORCHVISION_RULES = (
    (r"conv1\.(\w+)", r"stem.conv.0.\1"),
    (r"bn1\.(\w+)", r"stem.conv.1.\1"),
    (r"layer(\d)\.(\d+)\.(conv\d|bn\d)\.(\w+)", r"stages.stage\1.\2.\3.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.(\w+)", r"stages.stage\1.\2.shortcut.conv.\3"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", r"stages.stage\1.\2.shortcut.bn.\3"),
    (r"fc\.(\w+)", r"head.fc.\1"),
)

# timm's resnet*d: the deep stem is one Sequential conv1.{0..6} (conv, bn, act, conv, bn,
# act, conv) whose last BN is the top-level bn1; downsample.0 is the average pool (or an
# Identity), .1 the conv and .2 the BN.
_TIMM_RULES = (
    (r"conv1\.0\.(\w+)", r"stem.conv1.0.\1"),
    (r"conv1\.1\.(\w+)", r"stem.conv1.1.\1"),
    (r"conv1\.3\.(\w+)", r"stem.conv2.0.\1"),
    (r"conv1\.4\.(\w+)", r"stem.conv2.1.\1"),
    (r"conv1\.6\.(\w+)", r"stem.conv3.0.\1"),
    (r"bn1\.(\w+)", r"stem.conv3.1.\1"),
    (r"layer(\d)\.(\d+)\.(conv\d|bn\d)\.(\w+)", r"stages.stage\1.\2.\3.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", r"stages.stage\1.\2.shortcut.conv.\3"),
    (r"layer(\d)\.(\d+)\.downsample\.2\.(\w+)", r"stages.stage\1.\2.shortcut.bn.\3"),
    (r"fc\.(\w+)", r"head.fc.\1"),
)


def load_torchvision_resnet(ours: ResNet, tv_model: nn.Module) -> ResNet:
    """Copy the weights of ``torchvision.models.resnet18/34/50/101/152`` into ours.

    Names are translated by explicit rules (``conv1`` -> ``stem.conv.0``, ``layer2.0.
    downsample.0`` -> ``stages.stage2.0.shortcut.conv``, ``fc`` -> ``head.fc``, block
    internals unchanged); every tensor, BN running statistics included, must find its
    counterpart with the same shape, and every one of ours must be set.

    Args:
        ours: e.g. ``resnet50()``.
        tv_model: e.g. ``torchvision.models.resnet50(weights=...)`` of the same depth.

    Returns:
        ``ours``, now computing the same function as ``tv_model``.
    """
    return copy_weights(ours, tv_model, lambda n: rename(n, _TORCHVISION_RULES))


def load_timm_resnet(ours: ResNet, timm_model: nn.Module) -> ResNet:
    """Copy the weights of timm's ``resnet18d``, ``resnet34d`` or ``resnet50d`` into ours.

    Same checks as :func:`load_torchvision_resnet`; the deep stem's three convolutions
    become ``stem.conv1``/``conv2``/``conv3`` and ResNet-D's projection
    ``downsample.{1,2}`` becomes ``shortcut.conv``/``shortcut.bn`` (the pooling has no
    weights).

    Args:
        ours: e.g. ``resnet50d()``.
        timm_model: e.g. ``timm.create_model("resnet50d")``.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, lambda n: rename(n, _TIMM_RULES))
