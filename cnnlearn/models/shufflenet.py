"""ShuffleNet v1 and v2: grouped 1x1 convolutions made to talk to each other by a channel shuffle.

* v1: Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural
  Network for Mobile Devices", CVPR 2018, arXiv:1707.01083.
* v2: Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
  Architecture Design", ECCV 2018, arXiv:1807.11164.

Anatomy (both versions), named like the papers' tables 1 and 5 and like torchvision:

* ``stem``: Conv1 (3x3, stride 2, 24 channels) -> MaxPool (3x3, stride 2).
  The CIFAR variants use stride 1 and no max-pool, so 32x32 images reach stage 4 at
  4x4 instead of 1x1.
* ``stages``: ``stage2``, ``stage3``, ``stage4``, each one stride-2 unit followed by
  stride-1 units; the spatial size halves at the start of every stage.
* ``head``: (v2 only: Conv5, a 1x1 convolution to 1024 or 2048 channels) -> global
  average pool -> flatten -> fully connected classifier.

``forward_features(x)`` returns the stage-4 feature map; ``forward(x)`` the logits.

How our ShuffleNet v1 compares with the paper's Table 1 ("ShuffleNet 1x"; the paper's
"FLOPs" are multiply-adds, i.e. our MACs). MACs of one 224x224 image, counted by
``cnnlearn.count_macs``; the paper gives no parameter counts for these networks:

    g   paper MFLOPs   our MMACs without the fc   our MMACs, all   our parameters
    1   143            142.503                    143.079          1,531,936
    2   140            140.037                    140.837          1,733,848
    3   137            136.501                    137.461          1,865,728
    4   133            133.252                    134.340          1,968,344
    8   137            136.830                    138.366          2,434,768

Without the classifier (``in_features x 1000`` MACs) our counts round to the paper's
numbers for all five ``g``, which suggests the paper left the classifier out. With
the classifier they are 0.06 % to 1.0 % higher. ``tests/test_shufflenet.py`` asserts both.

ShuffleNet v2 is torchvision's network layer for layer (same parameters, MACs and
outputs after copying weights: ``load_torchvision_shufflenet_v2``). Table 5 of the v2
paper lists 41 / 146 / 299 / 591 MFLOPs for the 0.5x / 1x / 1.5x / 2x networks;
torchvision's and ours count 40.5 / 144.9 / 295.8 / 583.3 M MACs, the classifier included.
The paper does not say what else it counted.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .registry import register_model
from .layers import ChannelShuffle, ConvBNAct, check_divisible, check_images, check_positive, make_divisible
from .weights import copy_weights

__all__ = [
    "ShuffleV1Unit", "ShuffleV2Unit", "ShuffleNetV1", "ShuffleNetV2",
    "ShuffleNetV1Config", "ShuffleNetV2Config", "TableRow",
    "shufflenet_v1_config", "shufflenet_v2_config", "shufflenet_v1_table", "shufflenet_v2_table",
    "load_torchvision_shufflenet_v2",
    "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g3", "shufflenet_v1_g4", "shufflenet_v1_g8",
    "shufflenet_v1_g1_cifar", "shufflenet_v1_g3_cifar", "shufflenet_v1_g8_cifar",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "shufflenet_v2_cifar",
    "GUIDELINE_VARIANTS", "Fragments", "BenchBottleneck", "GuidelineNet", "guideline_net",
]

# --------------------------------------------------------------------------- architectures as data

# ShuffleNet v1, Table 1 of arXiv:1707.01083: output channels of stage 2, 3, 4 for each
# number of groups g at scale 1x. The widths grow with g so that the total cost stays
# near 140 MFLOPs: grouped 1x1 convolutions are g times cheaper, so the network can
# afford wider feature maps, which the paper credits for the accuracy gain (Sec. 4.1.1).
V1_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
V1_STEM_CHANNELS = 24  # Table 1, Conv1
STAGE_REPEATS = (4, 8, 4)  # units per stage, the first with stride 2 (Table 1 and Table 5)

# ShuffleNet v2, Table 5 of arXiv:1807.11164: output channels of stage 2, 3, 4 and of
# Conv5 for the four sizes; identical to torchvision's ``stages_out_channels``.
V2_CHANNELS: dict[float, tuple[tuple[int, int, int], int]] = {
    0.5: ((48, 96, 192), 1024),
    1.0: ((116, 232, 464), 1024),
    1.5: ((176, 352, 704), 1024),
    2.0: ((244, 488, 976), 2048),
}
V2_STEM_CHANNELS = 24  # Table 5, Conv1


@dataclass(frozen=True)
class ShuffleNetV1Config:
    """Everything that varies between ShuffleNet v1 networks."""

    groups: int  # g: groups of the 1x1 convolutions (1 = ordinary convolutions)
    stem_channels: int  # output channels of Conv1 (24 at scale 1x)
    stage_channels: tuple[int, int, int]  # output channels of stage 2, 3, 4
    stage_repeats: tuple[int, int, int] = STAGE_REPEATS  # units per stage


@dataclass(frozen=True)
class ShuffleNetV2Config:
    """Everything that varies between ShuffleNet v2 networks."""

    stem_channels: int  # output channels of Conv1 (24 for every size)
    stage_channels: tuple[int, int, int]  # output channels of stage 2, 3, 4
    head_channels: int  # output channels of Conv5, the 1x1 convolution before pooling
    stage_repeats: tuple[int, int, int] = STAGE_REPEATS  # units per stage


def shufflenet_v1_config(groups: int = 3, width_mult: float = 1.0) -> ShuffleNetV1Config:
    """The ShuffleNet v1 of Table 1 for ``groups``, scaled by ``width_mult`` ("ShuffleNet s x").

    Scaled widths are rounded so that every grouped convolution still divides evenly:
    stage widths to a multiple of ``4 * groups`` (the bottleneck is a quarter of them and
    must split into ``groups``), the stem to a multiple of ``groups`` (the first unit
    concatenates its ``stem`` input with ``stage2 - stem`` new channels made by a
    grouped convolution). At ``width_mult=1`` every number is the paper's.

    Args:
        groups: 1, 2, 3, 4 or 8, the columns of Table 1.
        width_mult: the paper's scale factor s (0.25, 0.5, 1, ... ).

    Returns:
        The configuration.

    Raises:
        ValueError: ``groups`` is not in Table 1, or ``width_mult`` is not positive.
    """
    if not isinstance(groups, int) or isinstance(groups, bool) or groups not in V1_STAGE_CHANNELS:
        raise ValueError(
            f"groups={groups!r} is not a column of ShuffleNet v1's Table 1; "
            f"choose one of {sorted(V1_STAGE_CHANNELS)}")
    check_positive(width_mult=width_mult)
    stages = tuple(make_divisible(c * width_mult, 4 * groups) for c in V1_STAGE_CHANNELS[groups])
    stem = make_divisible(V1_STEM_CHANNELS * width_mult, groups)
    return ShuffleNetV1Config(groups, stem, stages)


def shufflenet_v2_config(width: float = 1.0) -> ShuffleNetV2Config:
    """The ShuffleNet v2 of Table 5 of the paper at size ``width`` (0.5, 1.0, 1.5 or 2.0).

    Raises:
        ValueError: ``width`` is not one of the four sizes of Table 5.
    """
    if width not in V2_CHANNELS:
        raise ValueError(
            f"width={width!r} is not a size of ShuffleNet v2's Table 5; choose one of {sorted(V2_CHANNELS)}")
    stages, head = V2_CHANNELS[width]
    return ShuffleNetV2Config(V2_STEM_CHANNELS, stages, head)


@dataclass(frozen=True)
class TableRow:
    """One row of the papers' architecture tables (Table 1 of v1, Table 5 of v2)."""

    layer: str  # "Image", "Conv1", "MaxPool", "Stage2", ..., "GlobalPool", "FC"
    output_size: int  # side of the output feature map
    kernel_size: int | None  # None where the row has no kernel (Image, FC; Stage rows: 3, the depthwise one)
    stride: int | None  # stride of the row's first layer
    repeat: int  # how many times the row's layer/unit is repeated
    out_channels: int  # output channels (classes for FC)


def _table(stem_channels: int, stage_channels: tuple[int, ...], stage_repeats: tuple[int, ...],
           head_channels: int | None, num_classes: int, image_size: int) -> list[TableRow]:
    size = (image_size + 1) // 2  # a stride-2 3x3 convolution with padding 1: ceil(size / 2)
    rows = [TableRow("Image", image_size, None, None, 1, 3), TableRow("Conv1", size, 3, 2, 1, stem_channels)]
    size = (size + 1) // 2
    rows.append(TableRow("MaxPool", size, 3, 2, 1, stem_channels))
    for i, (channels, repeats) in enumerate(zip(stage_channels, stage_repeats), start=2):
        size = (size + 1) // 2
        rows.append(TableRow(f"Stage{i}", size, 3, 2, 1, channels))
        rows.append(TableRow(f"Stage{i}", size, 3, 1, repeats - 1, channels))
    if head_channels is not None:
        rows.append(TableRow("Conv5", size, 1, 1, 1, head_channels))
    last = head_channels or stage_channels[-1]
    rows += [TableRow("GlobalPool", 1, size, None, 1, last), TableRow("FC", 1, None, None, 1, num_classes)]
    return rows


def shufflenet_v1_table(groups: int = 3, width_mult: float = 1.0, image_size: int = 224,
                        num_classes: int = 1000) -> list[TableRow]:
    """ShuffleNet v1's Table 1 (arXiv:1707.01083) as data, for one ``groups`` column.

    Example: ``shufflenet_v1_table(3)[3]`` is
    ``TableRow("Stage2", 28, 3, 2, 1, 240)``: one stride-2 unit, 28x28 output, 240 channels.
    """
    check_positive(image_size=image_size, num_classes=num_classes)
    cfg = shufflenet_v1_config(groups, width_mult)
    return _table(cfg.stem_channels, cfg.stage_channels, cfg.stage_repeats, None, num_classes, image_size)


def shufflenet_v2_table(width: float = 1.0, image_size: int = 224, num_classes: int = 1000) -> list[TableRow]:
    """ShuffleNet v2's Table 5 (arXiv:1807.11164) as data, for one size ``width``.

    Example: ``shufflenet_v2_table(1.0)[-3]`` is ``TableRow("Conv5", 7, 1, 1, 1, 1024)``.
    """
    check_positive(image_size=image_size, num_classes=num_classes)
    cfg = shufflenet_v2_config(width)
    return _table(cfg.stem_channels, cfg.stage_channels, cfg.stage_repeats, cfg.head_channels,
                  num_classes, image_size)


# --------------------------------------------------------------------------- the units


class ShuffleV1Unit(nn.Module):
    """The ShuffleNet v1 unit (arXiv:1707.01083, Fig. 2 (b) and (c)).

    Main branch: grouped 1x1 conv (compress to a quarter of ``out_channels``) -> BN ->
    ReLU -> channel shuffle -> depthwise 3x3 conv -> BN -> grouped 1x1 conv -> BN.
    Stride 1: add the input and apply ReLU. Stride 2: the shortcut is a 3x3 average pool
    with stride 2 and is *concatenated* with the main branch (which therefore makes only
    ``out_channels - in_channels`` channels), then ReLU: widening the output for almost
    no extra cost.

    Args:
        in_channels: input channels.
        out_channels: output channels (``in_channels`` when ``stride=1``).
        stride: 1 or 2.
        groups: groups of the two 1x1 convolutions.
        group_first_conv: group the first 1x1 convolution; the paper does not for the
            first unit of stage 2, whose input has only 24 channels (Sec. 3.3).
        norm_layer: normalisation class.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 group_first_conv: bool = True,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 unit adds its input to its output: in_channels={in_channels} must equal "
                f"out_channels={out_channels} (use stride=2 to change the width)")
        if stride == 2 and out_channels <= in_channels:
            raise ValueError(
                f"a stride-2 unit concatenates its pooled input: out_channels={out_channels} must "
                f"exceed in_channels={in_channels}")
        check_divisible(out_channels, 4 * groups, "out_channels")  # bottleneck = out/4, split in groups
        # "the number of bottleneck channels is set to 1/4 of the output channels" (Sec. 3.3)
        mid_channels = out_channels // 4
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        first_groups = groups if group_first_conv else 1
        self.stride = stride
        layers: list[tuple[str, nn.Module]] = [
            ("compress", ConvBNAct(in_channels, mid_channels, 1, groups=first_groups, norm_layer=norm_layer)),
        ]
        # The shuffle lets each group of the next grouped 1x1 convolution see channels of
        # every group of the first one. After an ungrouped convolution it would only be a
        # fixed renaming of channels, so it is left out there.
        if first_groups > 1:
            layers.append(("shuffle", ChannelShuffle(first_groups)))
        layers += [
            # No ReLU after the depthwise convolution, as in Xception (Fig. 2).
            ("depthwise", ConvBNAct(mid_channels, mid_channels, 3, stride, groups=mid_channels,
                                    norm_layer=norm_layer, act_layer=None)),
            ("expand", ConvBNAct(mid_channels, branch_channels, 1, groups=groups,
                                 norm_layer=norm_layer, act_layer=None)),
        ]
        self.branch = nn.Sequential(OrderedDict(layers))
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)  # (B, C_in, H, W) -> (B, C_branch, H/s, W/s)
        if self.stride == 2:
            out = torch.cat([self.shortcut(x), out], dim=1)  # -> (B, C_in + C_branch = C_out, H/2, W/2)
        else:
            out = out + x
        return self.act(out)


class ShuffleV2Unit(nn.Module):
    """The ShuffleNet v2 unit (arXiv:1807.11164, Fig. 3 (c) and (d)).

    Stride 1: split the channels in two halves; ``branch1`` is the identity on the first
    half, ``branch2`` runs 1x1 conv -> BN -> ReLU -> depthwise 3x3 -> BN -> 1x1 conv -> BN
    -> ReLU on the second; concatenate, then shuffle with 2 groups so that the next
    unit's split mixes both halves. Stride 2 (down-sampling): no split; both branches see
    the whole input, ``branch1`` becoming depthwise 3x3 (stride 2) -> BN -> 1x1 conv -> BN
    -> ReLU, so the output has twice the input's channels and half its size.

    Every convolution keeps its width equal in and out, and nothing is added
    element-wise: the paper's guidelines G1 and G4 (Sec. 3).

    Args:
        in_channels: input channels.
        out_channels: output channels, even (``in_channels`` when ``stride=1``).
        stride: 1 or 2.
        norm_layer: normalisation class.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        check_divisible(out_channels, 2, "out_channels")  # two branches of out/2 channels each
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 unit keeps half its input unchanged: in_channels={in_channels} must equal "
                f"out_channels={out_channels} (use stride=2 to change the width)")
        branch_channels = out_channels // 2
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(in_channels, in_channels, 3, 2, groups=in_channels, norm_layer=norm_layer, act_layer=None),
                ConvBNAct(in_channels, branch_channels, 1, norm_layer=norm_layer))
        else:
            self.branch1 = nn.Identity()
        branch2_in = in_channels if stride == 2 else branch_channels
        self.branch2 = nn.Sequential(
            ConvBNAct(branch2_in, branch_channels, 1, norm_layer=norm_layer),
            ConvBNAct(branch_channels, branch_channels, 3, stride, groups=branch_channels,
                      norm_layer=norm_layer, act_layer=None),
            ConvBNAct(branch_channels, branch_channels, 1, norm_layer=norm_layer))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)  # channel split: (B, C, H, W) -> 2 x (B, C/2, H, W)
        else:
            x1 = x2 = x  # down-sampling: both branches read the whole input
        out = torch.cat([self.branch1(x1), self.branch2(x2)], dim=1)  # -> (B, C_out, H/s, W/s)
        return self.shuffle(out)


# --------------------------------------------------------------------------- the networks


def _stem(out_channels: int, cifar_stem: bool, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    # On 32x32 images the ImageNet stem's 4x down-sampling would leave stage 4 at 1x1.
    return nn.Sequential(OrderedDict(
        conv=ConvBNAct(3, out_channels, 3, stride=1 if cifar_stem else 2, norm_layer=norm_layer),
        pool=nn.Identity() if cifar_stem else nn.MaxPool2d(3, stride=2, padding=1),
    ))


class _ShuffleNet(nn.Module):
    """The shared anatomy: ``stem`` -> ``stages`` (stage2..stage4) -> ``head``."""

    stem: nn.Sequential
    stages: nn.Sequential
    head: nn.Sequential

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the stage-4 feature map (B, C4, H/32, W/32) (H/8 with the CIFAR stem)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self)
        return self.head(self.forward_features(x))


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet v1 (arXiv:1707.01083, Table 1).

    Args:
        config: widths, groups and depths, e.g. ``shufflenet_v1_config(groups=3)``.
        num_classes: classes predicted by the head.
        cifar_stem: stride-1 stem without max-pool for 32x32 images.
        norm_layer: normalisation class.
    """

    def __init__(self, config: ShuffleNetV1Config, num_classes: int = 1000, cifar_stem: bool = False,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(num_classes=num_classes)
        self.config = config
        self.stem = _stem(config.stem_channels, cifar_stem, norm_layer)
        self.stages = nn.Sequential()
        in_channels = config.stem_channels
        for i, (out_channels, repeats) in enumerate(zip(config.stage_channels, config.stage_repeats)):
            units = []
            for j in range(repeats):
                units.append(ShuffleV1Unit(
                    in_channels, out_channels, stride=2 if j == 0 else 1, groups=config.groups,
                    group_first_conv=not (i == 0 and j == 0), norm_layer=norm_layer))
                in_channels = out_channels
            self.stages.add_module(f"stage{i + 2}", nn.Sequential(*units))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, C4, h, w) -> (B, C4, 1, 1)
            flatten=nn.Flatten(),  # -> (B, C4)
            fc=nn.Linear(in_channels, num_classes),
        ))


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNet v2 (arXiv:1807.11164, Table 5); the same network as torchvision's.

    Args:
        config: widths and depths, e.g. ``shufflenet_v2_config(1.0)``.
        num_classes: classes predicted by the head.
        cifar_stem: stride-1 stem without max-pool for 32x32 images.
        norm_layer: normalisation class.
    """

    def __init__(self, config: ShuffleNetV2Config, num_classes: int = 1000, cifar_stem: bool = False,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(num_classes=num_classes)
        self.config = config
        self.stem = _stem(config.stem_channels, cifar_stem, norm_layer)
        self.stages = nn.Sequential()
        in_channels = config.stem_channels
        for i, (out_channels, repeats) in enumerate(zip(config.stage_channels, config.stage_repeats)):
            units = [ShuffleV2Unit(in_channels, out_channels, 2, norm_layer)]
            units += [ShuffleV2Unit(out_channels, out_channels, 1, norm_layer) for _ in range(repeats - 1)]
            self.stages.add_module(f"stage{i + 2}", nn.Sequential(*units))
            in_channels = out_channels
        self.head = nn.Sequential(OrderedDict(
            conv=ConvBNAct(in_channels, config.head_channels, 1, norm_layer=norm_layer),  # Conv5
            pool=nn.AdaptiveAvgPool2d(1),  # (B, C5, h, w) -> (B, C5, 1, 1)
            flatten=nn.Flatten(),  # -> (B, C5)
            fc=nn.Linear(config.head_channels, num_classes),
        ))


# --------------------------------------------------------------------------- torchvision weights


def _v2_key_map(ours: ShuffleNetV2) -> dict[str, str]:
    """torchvision module path -> our module path, for every conv, BN and the classifier."""
    # Inside a unit, torchvision's flat Sequentials hold conv, BN (and ReLU) side by side;
    # ours nest each conv-BN-ReLU in a ConvBNAct (index 0 = conv, 1 = BN).
    branch1 = {"0": "0.0", "1": "0.1", "2": "1.0", "3": "1.1"}  # dw conv, BN, 1x1 conv, BN (ReLU at 4)
    branch2 = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "5": "2.0", "6": "2.1"}  # ReLUs at 2 and 7
    mapping = {"conv1.0": "stem.conv.0", "conv1.1": "stem.conv.1",
               "conv5.0": "head.conv.0", "conv5.1": "head.conv.1", "fc": "head.fc"}
    for stage_name, stage in ours.stages.named_children():
        for j, unit in enumerate(stage):
            tv, us = f"{stage_name}.{j}", f"stages.{stage_name}.{j}"
            if unit.stride == 2:
                mapping.update({f"{tv}.branch1.{a}": f"{us}.branch1.{b}" for a, b in branch1.items()})
            mapping.update({f"{tv}.branch2.{a}": f"{us}.branch2.{b}" for a, b in branch2.items()})
    return mapping


def load_torchvision_shufflenet_v2(ours: ShuffleNetV2, tv_model: nn.Module) -> ShuffleNetV2:
    """Copy the weights of ``torchvision.models.shufflenet_v2_x*`` into ``ours``.

    The name mapping (torchvision -> ours), module by module:

    * ``conv1.{0,1}`` -> ``stem.conv.{0,1}`` (conv, BN);
    * ``stageN.j.branch1.{0,1,2,3}`` -> ``stages.stageN.j.branch1.{0.0,0.1,1.0,1.1}``
      (depthwise conv, BN, 1x1 conv, BN; down-sampling units only);
    * ``stageN.j.branch2.{0,1,3,4,5,6}`` -> ``stages.stageN.j.branch2.{0.0,0.1,1.0,1.1,2.0,2.1}``
      (1x1 conv, BN, depthwise conv, BN, 1x1 conv, BN; indices 2 and 7 are ReLUs);
    * ``conv5.{0,1}`` -> ``head.conv.{0,1}``; ``fc`` -> ``head.fc``.

    Each tensor (weights, biases, BN running statistics) keeps its own name after the
    module path. Every tensor of both models must be used exactly once and have the same
    shape, otherwise a ``ValueError`` says which.

    Args:
        ours: a :class:`ShuffleNetV2` of the same size and number of classes.
        tv_model: the torchvision model.

    Returns:
        ``ours``, with the copied weights.
    """
    mapping = _v2_key_map(ours)

    def to_ours(key: str) -> str:
        module, _, tensor_name = key.rpartition(".")
        return f"{mapping[module]}.{tensor_name}"  # KeyError -> "no counterpart" ValueError

    return copy_weights(ours, tv_model, to_ours)


# --------------------------------------------------------------------------- factories


def _v1(groups: int, num_classes: int, width_mult: float, cifar_stem: bool = False) -> ShuffleNetV1:
    return ShuffleNetV1(shufflenet_v1_config(groups, width_mult), num_classes, cifar_stem)


@register_model
def shufflenet_v1_g1(num_classes: int = 1000, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g=1 (ungrouped 1x1 convs): widths 144/288/576, 143.1 M MACs (paper: 143 M)."""
    return _v1(1, num_classes, width_mult)


@register_model
def shufflenet_v1_g2(num_classes: int = 1000, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g=2: widths 200/400/800, 140.8 M MACs (paper: 140 M)."""
    return _v1(2, num_classes, width_mult)


@register_model
def shufflenet_v1_g3(num_classes: int = 1000, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g=3: widths 240/480/960, 137.5 M MACs (paper: 137 M)."""
    return _v1(3, num_classes, width_mult)


@register_model
def shufflenet_v1_g4(num_classes: int = 1000, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g=4: widths 272/544/1088, 134.3 M MACs (paper: 133 M)."""
    return _v1(4, num_classes, width_mult)


@register_model
def shufflenet_v1_g8(num_classes: int = 1000, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g=8: widths 384/768/1536, 138.4 M MACs (paper: 137 M)."""
    return _v1(8, num_classes, width_mult)


@register_model
def shufflenet_v1_g1_cifar(num_classes: int = 10, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 g=1 for 32x32 images: stride-1 stem, no max-pool (32 -> 16 -> 8 -> 4)."""
    return _v1(1, num_classes, width_mult, cifar_stem=True)


@register_model
def shufflenet_v1_g3_cifar(num_classes: int = 10, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 g=3 for 32x32 images: stride-1 stem, no max-pool (32 -> 16 -> 8 -> 4)."""
    return _v1(3, num_classes, width_mult, cifar_stem=True)


@register_model
def shufflenet_v1_g8_cifar(num_classes: int = 10, width_mult: float = 1.0) -> ShuffleNetV1:
    """ShuffleNet v1 g=8 for 32x32 images: stride-1 stem, no max-pool (32 -> 16 -> 8 -> 4)."""
    return _v1(8, num_classes, width_mult, cifar_stem=True)


@register_model
def shufflenet_v2_x0_5(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet v2 0.5x: 1,366,792 parameters and 40.5 M MACs at 224x224, as torchvision's."""
    return ShuffleNetV2(shufflenet_v2_config(0.5), num_classes)


@register_model
def shufflenet_v2_x1_0(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet v2 1x: 2,278,604 parameters and 144.9 M MACs at 224x224, as torchvision's."""
    return ShuffleNetV2(shufflenet_v2_config(1.0), num_classes)


@register_model
def shufflenet_v2_x1_5(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet v2 1.5x: 3,503,624 parameters and 295.8 M MACs at 224x224, as torchvision's."""
    return ShuffleNetV2(shufflenet_v2_config(1.5), num_classes)


@register_model
def shufflenet_v2_x2_0(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNet v2 2x: 7,393,996 parameters and 583.3 M MACs at 224x224, as torchvision's."""
    return ShuffleNetV2(shufflenet_v2_config(2.0), num_classes)


@register_model
def shufflenet_v2_cifar(num_classes: int = 10, width: float = 1.0) -> ShuffleNetV2:
    """ShuffleNet v2 for 32x32 images: stride-1 stem, no max-pool (32 -> 16 -> 8 -> 4).

    ``width`` is one of Table 5's sizes (0.5, 1.0, 1.5, 2.0); 1x by default.
    """
    return ShuffleNetV2(shufflenet_v2_config(width), num_classes, cifar_stem=True)


# --------------------------------------------------------------------------- the v2 paper's speed experiments

# Section 2 of the ShuffleNet v2 paper tests four guidelines on small benchmark networks:
# ten blocks in a row on a 56x56 input, the variants of one guideline built with the
# same MACs so that any difference in speed is not a difference in arithmetic. The
# variants, in the order of the rows of the paper's Tables 1-4:
GUIDELINE_VARIANTS: dict[str, tuple[str, ...]] = {
    "G1": ("1:1", "1:2", "1:6", "1:12"),  # c1:c2, the widths of two 1x1 convolutions in a row
    "G2": ("g=1", "g=2", "g=4", "g=8"),  # groups of a 1x1 convolution
    "G3": ("1-fragment", "2-fragment-series", "4-fragment-series",
           "2-fragment-parallel", "4-fragment-parallel"),  # one convolution split into pieces
    "G4": ("ReLU and shortcut", "ReLU, no shortcut", "shortcut, no ReLU", "neither"),  # element-wise ops
}


class Fragments(nn.Module):
    """``fragments`` 1x1 convolutions of ``channels -> channels``, in series or in parallel
    (every branch reads the input; their outputs are added), guideline G3's block."""

    def __init__(self, channels: int, fragments: int, parallel: bool) -> None:
        super().__init__()
        check_positive(channels=channels, fragments=fragments)
        self.parallel = parallel
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(fragments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            out = self.convs[0](x)
            for conv in self.convs[1:]:
                out = out + conv(x)  # the branches meet in an element-wise sum
            return out
        for conv in self.convs:
            x = conv(x)
        return x


class BenchBottleneck(nn.Module):
    """ResNet's bottleneck (He et al. 2016) without BatchNorm, guideline G4's block:
    1x1 conv ``4c -> c``, 3x3 conv ``c -> c``, 1x1 conv ``c -> 4c``, each optionally
    followed by ReLU, with an optional identity shortcut added before the last ReLU.
    Removing the ReLUs or the shortcut leaves the MACs unchanged."""

    def __init__(self, channels: int, relu: bool = True, shortcut: bool = True) -> None:
        super().__init__()
        check_positive(channels=channels)
        wide = 4 * channels
        self.conv1 = nn.Conv2d(wide, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(channels, wide, 1, bias=False)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))  # (B, 4c, H, W) -> (B, c, H, W)
        out = self.act(self.conv2(out))
        out = self.conv3(out)  # -> (B, 4c, H, W)
        if self.shortcut:
            out = out + x
        return self.act(out)


class GuidelineNet(nn.Sequential):
    """A benchmark network of one guideline: ``depth`` blocks in a row.

    ``in_channels`` is the number of channels its input must have.
    """

    def __init__(self, blocks: list[nn.Module], in_channels: int) -> None:
        super().__init__(*blocks)
        self.in_channels = in_channels


def guideline_net(guideline: str, variant: str, channels: int, depth: int = 10) -> GuidelineNet:
    """One benchmark network of the ShuffleNet v2 paper's Section 2 (arXiv:1807.11164).

    Every variant of a guideline has (almost) the MACs of its first variant, whose width
    is ``channels``; the others get their widths from the MAC formula, rounded down:

    * G1, two 1x1 convolutions ``c1 -> c2 -> c1`` per block, ``c1 * c2 = channels**2``:
      ``c1 = floor(channels / sqrt(r))``, ``c2 = r * c1`` for the ratio ``1:r``.
    * G2, one 1x1 convolution ``c -> c`` with ``g`` groups, ``c**2 / g = channels**2``:
      ``c = sqrt(g) * channels``, rounded down to a multiple of ``g``.
    * G3, :class:`Fragments` of ``n`` convolutions ``c -> c``, ``n * c**2 = channels**2``:
      ``c = floor(channels / sqrt(n))``.
    * G4, :class:`BenchBottleneck` of width ``channels`` (``4 * channels`` in and out),
      with or without ReLU and shortcut; the MACs do not change.

    Args:
        guideline: ``"G1"``, ``"G2"``, ``"G3"`` or ``"G4"``.
        variant: one of ``GUIDELINE_VARIANTS[guideline]``.
        channels: the width of the first variant (the paper's "c for x1").
        depth: blocks in a row (10 in the paper).

    Returns:
        The network; its input has ``net.in_channels`` channels.
    """
    if guideline not in GUIDELINE_VARIANTS:
        raise ValueError(f"guideline={guideline!r} is not one of {list(GUIDELINE_VARIANTS)}")
    if variant not in GUIDELINE_VARIANTS[guideline]:
        raise ValueError(f"variant={variant!r} is not a variant of {guideline}; "
                         f"choose one of {list(GUIDELINE_VARIANTS[guideline])}")
    check_positive(channels=channels, depth=depth)
    if guideline == "G1":
        ratio = int(variant.split(":")[1])
        c1 = int(channels / ratio ** 0.5)
        c2 = ratio * c1
        blocks = [nn.Sequential(nn.Conv2d(c1, c2, 1, bias=False), nn.Conv2d(c2, c1, 1, bias=False))
                  for _ in range(depth)]
        return GuidelineNet(blocks, c1)
    if guideline == "G2":
        groups = int(variant.split("=")[1])
        c = int(channels * groups ** 0.5) // groups * groups
        return GuidelineNet([nn.Conv2d(c, c, 1, groups=groups, bias=False) for _ in range(depth)], c)
    if guideline == "G3":
        fragments = int(variant[0])
        c = int(channels / fragments ** 0.5)
        return GuidelineNet([Fragments(c, fragments, variant.endswith("parallel")) for _ in range(depth)], c)
    relu = variant.startswith("ReLU")
    shortcut = variant in ("ReLU and shortcut", "shortcut, no ReLU")
    return GuidelineNet([BenchBottleneck(channels, relu, shortcut) for _ in range(depth)], 4 * channels)
