"""Inception: several kernel sizes side by side, made affordable by 1x1 reductions.

* GoogLeNet (Inception v1): Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
  arXiv:1409.4842. Its Table 1 is :data:`GOOGLENET_TABLE`, and the network is built from it.
* Inception v3: Szegedy et al., "Rethinking the Inception Architecture for Computer
  Vision", CVPR 2016, arXiv:1512.00567 (factorised convolutions, efficient grid
  reduction, label smoothing).
* Xception: Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions",
  CVPR 2017, arXiv:1610.02357 ("extreme Inception": one 1x1 convolution, then one spatial
  filter per channel).

Anatomy, as every network of the book: ``stem`` -> ``stages`` -> ``head``;
``forward_features(x)`` returns the last feature map, ``forward(x)`` the logits.

**Auxiliary classifiers.** GoogLeNet (and Inception v3) attach small classifiers to
intermediate stages, used only in training. With ``aux_logits=True`` a network in
training mode returns :class:`AuxOutputs` ``(logits, aux, aux_weight)``; in eval mode it
returns the logits alone. ``cnnlearn.fit`` knows the contract: the loss is
``CE(logits) + aux_weight * sum(CE(a) for a in aux)`` (the paper weights each by 0.3) and
accuracy is measured on ``logits``.

**Where torchvision departs from the paper** (``googlenet(variant="torchvision")``, the
default, is torchvision's network layer for layer):

* the "5x5" branch uses a 3x3 kernel (a known slip kept for its pretrained weights);
* every convolution is followed by BatchNorm (eps 0.001) and has no bias; the paper has
  no BatchNorm (it came later) and uses local response normalisation in the stem;
* the max-pools use ``ceil_mode=True``, as Caffe did, and dropout before the classifier is 0.2
  (the paper: 0.4).

``variant="paper"`` builds the paper's network: 5x5 kernels, biases and no BatchNorm,
local response normalisation after the first pool and after conv 3x3, dropout 0.4.
"""
from __future__ import annotations

import re
from collections import OrderedDict
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import AuxOutputs, check_images, check_positive
from .registry import register_model
from .weights import copy_weights

__all__ = [
    "AuxOutputs", "BasicConv", "InceptionModule", "InceptionAux", "GoogLeNet", "GOOGLENET_TABLE",
    "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionV3Aux", "InceptionV3",
    "SeparableConv", "XceptionBlock", "Xception",
    "googlenet", "googlenet_cifar", "inception_v3", "xception",
    "load_torchvision_googlenet", "load_torchvision_inception_v3",
]


class BasicConv(nn.Sequential):
    """Convolution -> (BatchNorm) -> ReLU, with any kernel shape (``(1, 7)`` included).

    Args:
        in_channels, out_channels: channels.
        kernel_size: an int or a (height, width) pair.
        stride: the stride.
        padding: an int or a pair; ``None`` is "same" padding for stride 1.
        batch_norm: BatchNorm (eps 0.001, as torchvision's Inception) and no conv bias;
            without it, a conv bias (the original papers, before BatchNorm).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] | None = None, batch_norm: bool = True) -> None:
        check_positive(in_channels=in_channels, out_channels=out_channels)
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if padding is None:
            padding = (k[0] // 2, k[1] // 2)
        layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, k, stride, padding, bias=not batch_norm))
        if batch_norm:
            layers["bn"] = nn.BatchNorm2d(out_channels, eps=0.001)
        layers["act"] = nn.ReLU()  # not in place: forward hooks then see the BN output (see ConvBNAct)
        super().__init__(layers)
        self.out_channels = out_channels


# --------------------------------------------------------------------------- GoogLeNet


# GoogLeNet, Table 1 of arXiv:1409.4842: per Inception module, the columns
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "pool" rows are 3x3/2 max-pools
# between stages (the last one 2x2/2 in torchvision, where a 3x3 would see past the 14x14
# map's edge with ceil_mode). Input channels are not listed: each module's input is the
# previous module's output, 1x1 + 3x3 + 5x5 + pool proj channels.
GOOGLENET_TABLE: list[tuple[str, tuple[int, int, int, int, int, int] | None]] = [
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
]
AUX_AFTER = ("inception4a", "inception4d")  # where GoogLeNet's two auxiliary classifiers branch off


class InceptionModule(nn.Module):
    """GoogLeNet's Inception module: four branches concatenated on channels.

    ``branch1``: 1x1. ``branch2``: 1x1 reduce -> 3x3. ``branch3``: 1x1 reduce -> 5x5 (3x3 in
    torchvision). ``branch4``: 3x3 max-pool (stride 1) -> 1x1 projection. The reductions
    keep the expensive 3x3 and 5x5 convolutions cheap; the projection keeps the pool
    branch from passing all its input channels on, which would make every module wider
    than the last.

    Args:
        in_channels: input channels.
        ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj: Table 1's columns.
        five_kernel: kernel of the "5x5" branch (5 in the paper, 3 in torchvision).
        batch_norm: see :class:`BasicConv`.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, ch5x5_reduce: int,
                 ch5x5: int, pool_proj: int, five_kernel: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        bn = {"batch_norm": batch_norm}
        self.branch1 = BasicConv(in_channels, ch1x1, 1, **bn)
        self.branch2 = nn.Sequential(BasicConv(in_channels, ch3x3_reduce, 1, **bn),
                                     BasicConv(ch3x3_reduce, ch3x3, 3, **bn))
        self.branch3 = nn.Sequential(BasicConv(in_channels, ch5x5_reduce, 1, **bn),
                                     BasicConv(ch5x5_reduce, ch5x5, five_kernel, **bn))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv(in_channels, pool_proj, 1, **bn))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C_in, H, W) -> (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier: 5x5/3 average pool (4x4 output at 14x14) -> 1x1
    conv 128 -> FC 1024 -> ReLU -> dropout 0.7 -> FC (the paper's Sec. 5). ``channels`` and
    ``hidden`` (128 and 1024 in the paper) shrink with a narrow network's ``width``: at
    full size this head would hold ten times the parameters of a quarter-width GoogLeNet."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = True, dropout: float = 0.7,
                 channels: int = 128, hidden: int = 1024) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)  # the paper's 5x5/3 on a 14x14 map gives 4x4; any size here
        self.conv = BasicConv(in_channels, channels, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(channels * 4 * 4, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x)).flatten(1)               # (B, C, h, w) -> (B, channels*4*4)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))   # -> (B, classes)


class _WithAuxClassifiers(nn.Module):
    """The anatomy of GoogLeNet and Inception v3: ``stem`` -> ``stages`` -> ``head``, and
    auxiliary classifiers in ``aux`` keyed by the stage they branch off after, used in
    training mode only (see :class:`AuxOutputs`)."""

    stem: nn.Sequential
    stages: nn.Sequential
    head: nn.Sequential
    aux: nn.ModuleDict
    aux_weight: float  # of each auxiliary loss

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last stage's feature map."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutputs:
        check_images(x, self)
        x = self.stem(x)
        aux = []
        for name, layer in self.stages.named_children():
            x = layer(x)
            if self.training and name in self.aux:
                aux.append(self.aux[name](x))
        logits = self.head(x)
        return AuxOutputs(logits, tuple(aux), self.aux_weight) if aux else logits


class GoogLeNet(_WithAuxClassifiers):
    """GoogLeNet built from :data:`GOOGLENET_TABLE`.

    Args:
        num_classes: classes predicted by the head.
        aux_logits: add the two auxiliary classifiers (training mode returns :class:`AuxOutputs`).
        variant: ``"torchvision"`` (3x3 in the "5x5" branch, BatchNorm) or ``"paper"``.
        cifar_stem: for 32x32 images: one 3x3 convolution to 192 channels and no
            down-sampling in the stem, so the Inception modules see 32x32, 16x16 and 8x8 maps.
        dropout: before the classifier (torchvision 0.2, the paper 0.4).
        width: multiplies every channel count of the stem, of Table 1 and of the auxiliary
            classifiers (rounded, at least 1), so a CIFAR GoogLeNet can be made small enough to train on a CPU.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, variant: str = "torchvision",
                 cifar_stem: bool = False, dropout: float | None = None, width: float = 1.0) -> None:
        super().__init__()
        if variant not in ("torchvision", "paper"):
            raise ValueError(f"variant must be 'torchvision' or 'paper', got {variant!r}")
        check_positive(num_classes=num_classes)
        check_positive(width=width)
        paper = variant == "paper"

        def w(c: int) -> int:
            return max(1, round(c * width))

        bn = {"batch_norm": not paper}
        self.variant, self.aux_logits = variant, aux_logits
        self.aux_weight = 0.3  # the paper's Sec. 5
        if cifar_stem:
            self.stem = nn.Sequential(OrderedDict(conv=BasicConv(3, w(192), 3, **bn)))
        else:
            stem = OrderedDict(conv1=BasicConv(3, w(64), 7, stride=2, padding=3, **bn),
                               maxpool1=nn.MaxPool2d(3, 2, ceil_mode=True))
            if paper:
                stem["lrn1"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
            stem["conv2"] = BasicConv(w(64), w(64), 1, **bn)      # the paper's "3x3 reduce"
            stem["conv3"] = BasicConv(w(64), w(192), 3, **bn)
            if paper:
                stem["lrn2"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
            stem["maxpool2"] = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.stem = nn.Sequential(stem)
        self.stages = nn.Sequential()
        self.aux = nn.ModuleDict()
        in_channels = w(192)
        for name, row in GOOGLENET_TABLE:
            if row is None:  # 3x3/2 max-pool; torchvision's last one is 2x2/2
                pool = nn.MaxPool2d(2, 2, ceil_mode=True) if name == "maxpool4" and not paper else \
                    nn.MaxPool2d(3, 2, ceil_mode=True)
                self.stages.add_module(name, pool)
                continue
            module = InceptionModule(in_channels, *map(w, row), five_kernel=5 if paper else 3, **bn)
            self.stages.add_module(name, module)
            in_channels = module.out_channels           # 256, 480, 512, 512, 512, 528, 832, 832, 1024
            if aux_logits and name in AUX_AFTER:
                self.aux[name] = InceptionAux(in_channels, num_classes, **bn,
                                              channels=w(128), hidden=w(1024))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),            # (B, 1024, h, w) -> (B, 1024, 1, 1)
            flatten=nn.Flatten(),                    # -> (B, 1024)
            dropout=nn.Dropout(dropout if dropout is not None else (0.4 if paper else 0.2)),
            fc=nn.Linear(in_channels, num_classes),
        ))



def _googlenet_key(key: str) -> str:
    """torchvision's GoogLeNet tensor name -> ours."""
    rules = [
        (r"^(conv[123])\.conv\.(.*)", r"stem.\1.conv.\2"), (r"^(conv[123])\.bn\.(.*)", r"stem.\1.bn.\2"),
        (r"^(inception\w+)\.(branch1)\.(conv|bn)\.(.*)", r"stages.\1.\2.\3.\4"),
        (r"^(inception\w+)\.(branch[23])\.([01])\.(conv|bn)\.(.*)", r"stages.\1.\2.\3.\4.\5"),
        (r"^(inception\w+)\.(branch4)\.1\.(conv|bn)\.(.*)", r"stages.\1.\2.1.\3.\4"),
        (r"^aux1\.(.*)", r"aux.inception4a.\1"), (r"^aux2\.(.*)", r"aux.inception4d.\1"),
        (r"^fc\.(.*)", r"head.fc.\1"),
    ]
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(key)


def load_torchvision_googlenet(ours: GoogLeNet, tv_model: nn.Module) -> GoogLeNet:
    """Copy the weights of ``torchvision.models.googlenet`` into ``ours`` (same
    ``aux_logits``; torchvision's ``conv1`` -> our ``stem.conv1``, ``inception3a`` ->
    ``stages.inception3a``, ``aux1``/``aux2`` -> ``aux.inception4a``/``aux.inception4d``,
    ``fc`` -> ``head.fc``). A ``ValueError`` names any tensor without a counterpart."""
    if ours.variant != "torchvision":
        raise ValueError("torchvision's GoogLeNet is variant='torchvision'; build ours with it")
    return copy_weights(ours, tv_model, _googlenet_key)


# --------------------------------------------------------------------------- Inception v3


class InceptionA(nn.Module):
    """35x35 module (Fig. 5 of arXiv:1512.00567): the 5x5 of GoogLeNet factored into two
    3x3 (``branch3x3dbl``); torchvision keeps one 5x5 branch beside it."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5)
        self.branch3x3dbl_1 = BasicConv(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3)
        self.branch_pool = BasicConv(in_channels, pool_features, 1)
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)  # (B, 224 + pool_features, H, W)


class InceptionB(nn.Module):
    """Efficient grid reduction 35 -> 17 (Fig. 10): stride-2 convolutions and a stride-2
    max-pool in parallel, concatenated, instead of pooling first (a representational
    bottleneck) or convolving first at full size (about 3x the cost)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv(in_channels, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = BasicConv(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2, padding=0)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)  # (B, 480 + C_in, H/2, W/2)


class InceptionC(nn.Module):
    """17x17 module (Fig. 6): each 7x7 factored into 1x7 then 7x1 (``channels_7x7`` wide)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv(c7, c7, (1, 7))
        self.branch7x7_3 = BasicConv(c7, 192, (7, 1))
        self.branch7x7dbl_1 = BasicConv(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1))
        self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7))
        self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1))
        self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7))
        self.branch_pool = BasicConv(in_channels, 192, 1)
        self.out_channels = 4 * 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)  # (B, 768, H, W)


class InceptionD(nn.Module):
    """Efficient grid reduction 17 -> 8."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = BasicConv(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2, padding=0)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)  # (B, 512 + C_in, H/2, W/2)


class InceptionE(nn.Module):
    """8x8 module (Fig. 7): the 3x3s split into 1x3 and 3x1 side by side (wider, for the
    coarsest grid, where the paper wants high-dimensional representations)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1))
        self.branch3x3dbl_1 = BasicConv(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1))
        self.branch_pool = BasicConv(in_channels, 192, 1)
        self.out_channels = 320 + 768 + 768 + 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), b3, d, pool], 1)  # (B, 2048, H, W)


class InceptionV3Aux(nn.Module):
    """Inception v3's auxiliary classifier on the 17x17 grid (with BatchNorm, which the
    paper credits for its regularising effect)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv(in_channels, 128, 1)
        self.conv1 = BasicConv(128, 768, 5, padding=0)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))  # (B, 768, 17, 17) -> (B, 768, 1, 1)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# Inception v3 as torchvision builds it: (name, block, arguments), in order.
INCEPTION_V3_STAGES = [
    ("mixed_5b", InceptionA, {"pool_features": 32}),
    ("mixed_5c", InceptionA, {"pool_features": 64}),
    ("mixed_5d", InceptionA, {"pool_features": 64}),
    ("mixed_6a", InceptionB, {}),
    ("mixed_6b", InceptionC, {"channels_7x7": 128}),
    ("mixed_6c", InceptionC, {"channels_7x7": 160}),
    ("mixed_6d", InceptionC, {"channels_7x7": 160}),
    ("mixed_6e", InceptionC, {"channels_7x7": 192}),
    ("mixed_7a", InceptionD, {}),
    ("mixed_7b", InceptionE, {}),
    ("mixed_7c", InceptionE, {}),
]


class InceptionV3(_WithAuxClassifiers):
    """Inception v3 (arXiv:1512.00567, Table 1), torchvision's network layer for layer.

    Args:
        num_classes: classes predicted by the head.
        aux_logits: add the auxiliary classifier after ``mixed_6e``.
        dropout: before the classifier (0.5, as torchvision).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        check_positive(num_classes=num_classes)
        self.aux_logits = aux_logits
        self.aux_weight = 0.4  # torchvision's reference training script
        self.stem = nn.Sequential(OrderedDict(          # 299x299x3 -> 35x35x192
            conv1a=BasicConv(3, 32, 3, stride=2, padding=0),   # -> 149x149x32
            conv2a=BasicConv(32, 32, 3, padding=0),            # -> 147x147x32
            conv2b=BasicConv(32, 64, 3),                       # -> 147x147x64
            maxpool1=nn.MaxPool2d(3, 2),                       # -> 73x73x64
            conv3b=BasicConv(64, 80, 1),                       # -> 73x73x80
            conv4a=BasicConv(80, 192, 3, padding=0),           # -> 71x71x192
            maxpool2=nn.MaxPool2d(3, 2),                       # -> 35x35x192
        ))
        self.stages = nn.Sequential()
        self.aux = nn.ModuleDict()
        in_channels = 192
        for name, block, kwargs in INCEPTION_V3_STAGES:
            module = block(in_channels, **kwargs)
            self.stages.add_module(name, module)
            in_channels = module.out_channels  # 256, 288, 288, 768, 768 x4, 1280, 2048, 2048
            if aux_logits and name == "mixed_6e":
                self.aux[name] = InceptionV3Aux(in_channels, num_classes)
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), dropout=nn.Dropout(dropout),
            fc=nn.Linear(in_channels, num_classes),
        ))



_V3_STEM = {"Conv2d_1a_3x3": "conv1a", "Conv2d_2a_3x3": "conv2a", "Conv2d_2b_3x3": "conv2b",
            "Conv2d_3b_1x1": "conv3b", "Conv2d_4a_3x3": "conv4a"}


def _v3_key(key: str) -> str:
    first, rest = key.split(".", 1)
    if first in _V3_STEM:
        return f"stem.{_V3_STEM[first]}.{rest}"
    if first.startswith("Mixed_"):
        return f"stages.mixed_{first[6:]}.{rest}"
    if first == "AuxLogits":
        return f"aux.mixed_6e.{rest}"
    if first == "fc":
        return f"head.fc.{rest}"
    raise KeyError(key)


def load_torchvision_inception_v3(ours: InceptionV3, tv_model: nn.Module) -> InceptionV3:
    """Copy the weights of ``torchvision.models.inception_v3`` into ``ours``
    (``Conv2d_1a_3x3`` -> ``stem.conv1a``, ``Mixed_5b`` -> ``stages.mixed_5b``,
    ``AuxLogits`` -> ``aux.mixed_6e``, ``fc`` -> ``head.fc``; the block's own names are
    torchvision's). torchvision's ``transform_input`` must be False (its default without
    pretrained weights): it rescales the input, which ours leaves to the data pipeline."""
    if getattr(tv_model, "transform_input", False):
        raise ValueError("build torchvision's inception_v3 with transform_input=False to compare it with ours")
    return copy_weights(ours, tv_model, _v3_key)


# --------------------------------------------------------------------------- Xception


class SeparableConv(nn.Sequential):
    """Depthwise k x k (one filter per channel, "same" padding) -> pointwise 1x1, no biases,
    no BN in between (Chollet found an activation between the two hurts, Fig. 10 of the
    paper). Xception uses 3x3 with stride 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding=kernel_size // 2,
                                groups=in_channels, bias=False),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ))


class XceptionBlock(nn.Module):
    """``repeats`` x (ReLU -> separable conv -> BN), then a 3x3/2 max-pool when
    ``stride=2``, plus a shortcut: the identity, or a strided 1x1 conv + BN when the shape
    changes. ``first_relu=False`` for the first block, which follows the stem's ReLU;
    ``grow_first=False`` keeps the input width until the last convolution (the exit flow)."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int, stride: int = 1,
                 first_relu: bool = True, grow_first: bool = True) -> None:
        super().__init__()
        layers = []
        channels = in_channels
        for i in range(repeats):
            width = out_channels if (grow_first and i == 0) or (not grow_first and i == repeats - 1) else channels
            if i > 0 or first_relu:
                layers.append(nn.ReLU())
            layers += [SeparableConv(channels, width), nn.BatchNorm2d(width)]
            channels = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.branch = nn.Sequential(*layers)
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception (arXiv:1610.02357, Fig. 5): entry flow, middle flow (8 identical blocks),
    exit flow; 22,855,952 parameters for 1000 classes, as the paper's Table 3 and timm's
    ``legacy_xception``.

    Args:
        num_classes: classes predicted by the head.
        middle_blocks: blocks of the middle flow (8 in the paper).
    """

    def __init__(self, num_classes: int = 1000, middle_blocks: int = 8) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, middle_blocks=middle_blocks)
        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 32, 3, 2, bias=False), bn1=nn.BatchNorm2d(32), act1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, 3, bias=False), bn2=nn.BatchNorm2d(64), act2=nn.ReLU(),
        ))
        entry = [XceptionBlock(64, 128, 2, 2, first_relu=False), XceptionBlock(128, 256, 2, 2),
                 XceptionBlock(256, 728, 2, 2)]
        middle = [XceptionBlock(728, 728, 3) for _ in range(middle_blocks)]
        exit_ = [XceptionBlock(728, 1024, 2, 2, grow_first=False)]
        self.stages = nn.Sequential(OrderedDict(
            entry=nn.Sequential(*entry), middle=nn.Sequential(*middle), exit=nn.Sequential(*exit_)))
        self.head = nn.Sequential(OrderedDict(
            conv3=SeparableConv(1024, 1536), bn3=nn.BatchNorm2d(1536), act3=nn.ReLU(),
            conv4=SeparableConv(1536, 2048), bn4=nn.BatchNorm2d(2048), act4=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(2048, num_classes),
        ))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self)
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------- factories


@register_model
def googlenet(num_classes: int = 1000, aux_logits: bool = False, variant: str = "torchvision") -> GoogLeNet:
    """GoogLeNet for 224x224 images (torchvision's by default, ``variant="paper"`` for the paper's)."""
    return GoogLeNet(num_classes, aux_logits, variant)


@register_model
def googlenet_cifar(num_classes: int = 10, aux_logits: bool = False, width: float = 1.0) -> GoogLeNet:
    """GoogLeNet for 32x32 images: a 3x3 stem without down-sampling; ``width`` scales
    every channel count (``width=0.25`` trains on a CPU)."""
    return GoogLeNet(num_classes, aux_logits, cifar_stem=True, width=width)


@register_model
def inception_v3(num_classes: int = 1000, aux_logits: bool = False) -> InceptionV3:
    """Inception v3 for 299x299 images, as torchvision's."""
    return InceptionV3(num_classes, aux_logits)


@register_model
def xception(num_classes: int = 1000) -> Xception:
    """Xception for 299x299 images (the paper's network; timm's ``legacy_xception``)."""
    return Xception(num_classes)
