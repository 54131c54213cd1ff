"""Densely connected networks: DenseNet-121/161/169/201 and the CIFAR DenseNet-BC.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017, arXiv:1608.06993.

A dense block *concatenates* instead of adding: layer ``l`` reads the feature maps of
the block's input and of all ``l - 1`` layers before it, ``k0 + (l - 1) k`` channels, and
adds ``k`` new ones (the growth rate). The "B" of DenseNet-BC is the bottleneck: each
layer is BN-ReLU-1x1 conv (to ``4k`` channels) - BN-ReLU-3x3 conv (to ``k``) (Sec. 3,
"Bottleneck layers"); the "C" is compression: the transition between two blocks (BN-
ReLU-1x1 conv-2x2 average pooling) keeps ``floor(0.5 m)`` of its ``m`` channels.

Memory: stored naively, the concatenated input of every layer is a new tensor, so a
block of ``L`` layers keeps ``O(L^2 k)`` channels of activations for the backward pass.
``memory_efficient=True`` recomputes the concatenation, the first BN-ReLU and the 1x1
convolution in the backward pass instead of storing them (``torch.utils.checkpoint``),
as torchvision's ``memory_efficient=True`` after Pleiss et al., "Memory-Efficient
Implementation of DenseNets", 2017, arXiv:1707.06990. The gradients are the same, and
(unlike torchvision's) so are the BatchNorm running statistics after a training step.

``densenet121/161/169/201`` equal torchvision's tensor for tensor;
:func:`load_torchvision_densenet` copies their weights by an explicit name mapping.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from .layers import check_images, check_positive, init_he
from .registry import register_model
from .weights import copy_weights, rename

__all__ = ["DenseLayer", "DenseBlock", "Transition", "DenseNetConfig", "DenseNet", "densenet_depth",
           "densenet121", "densenet161", "densenet169", "densenet201", "densenet_bc_100_12",
           "load_torchvision_densenet"]


@contextlib.contextmanager
def _frozen_statistics(bn: nn.BatchNorm2d) -> Iterator[None]:
    """Run ``bn`` without changing its running statistics (momentum 0, count restored)."""
    momentum = bn.momentum
    count = None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()
    bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistic
    try:
        yield
    finally:
        bn.momentum = momentum
        if count is not None:
            bn.num_batches_tracked.copy_(count)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (to ``bn_size * k``) - BN-ReLU-3x3 conv (to ``k``) on the
    concatenation of all earlier feature maps of the block.

    Args:
        in_channels: channels of the concatenated input, ``k0 + (l - 1) k`` for layer ``l``.
        growth_rate: ``k``, channels this layer adds.
        bn_size: the bottleneck's width in multiples of ``k`` (4 in DenseNet-BC).
        drop_rate: dropout on the new features (0 in the ImageNet networks).
        memory_efficient: recompute the concatenation, ``norm1``, ``act1`` and ``conv1`` in the
            backward pass instead of storing their outputs.
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, growth_rate=growth_rate, bn_size=bn_size)
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        # In-place ReLUs as torchvision: each acts on a BN output nobody else reads, and
        # memory is what this chapter measures.
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        """``conv1(relu(norm1(cat(features))))``: the part that memory_efficient recomputes."""
        x = torch.cat(features, 1)  # l tensors (B, ., H, W) -> (B, k0 + (l-1)k, H, W)
        return self.conv1(self.act1(self.norm1(x)))  # -> (B, 4k, H, W)

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        features = [features] if isinstance(features, torch.Tensor) else list(features)
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            # The recomputation in the backward pass runs norm1 a second time; in training
            # mode that would update its running statistics twice per step (torchvision's
            # memory_efficient=True does), so the recomputation leaves them alone.
            out = cp.checkpoint(self.bottleneck, *features, use_reentrant=False,
                                context_fn=lambda: (contextlib.nullcontext(), _frozen_statistics(self.norm1)))
        else:
            out = self.bottleneck(*features)
        new = self.conv2(self.act2(self.norm2(out)))  # (B, 4k, H, W) -> (B, k, H, W)
        return F.dropout(new, self.drop_rate, self.training) if self.drop_rate > 0 else new


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the block returns its input and every layer's output,
    concatenated: ``(B, k0, H, W) -> (B, k0 + num_layers * k, H, W)``.

    Args:
        num_layers: dense layers in the block.
        in_channels: ``k0``, channels of the block's input.
        growth_rate: ``k``.
        bn_size, drop_rate, memory_efficient: as :class:`DenseLayer`.
    """

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4,
                 drop_rate: float = 0.0, memory_efficient: bool = False) -> None:
        super().__init__()
        check_positive(num_layers=num_layers)
        for i in range(num_layers):
            self[f"layer{i + 1}"] = DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size,
                                               drop_rate, memory_efficient)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))  # each layer reads all earlier maps
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between two dense blocks: BN-ReLU-1x1 conv (compression) - 2x2 average pooling.
    ``(B, in_channels, H, W) -> (B, out_channels, H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels),
            act=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pool=nn.AvgPool2d(2, 2),
        ))
        self.out_channels = out_channels


STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class DenseNetConfig:
    """A DenseNet as data: what :class:`DenseNet` builds."""

    growth_rate: int  # k: channels each dense layer adds (32 for DenseNet-121, 12 for the CIFAR BC-100)
    block_config: tuple[int, ...]  # dense layers per block: (6, 12, 24, 16) is DenseNet-121
    num_init_features: int  # channels out of the stem: 64 (2k for DenseNet-121), 2k = 24 on CIFAR
    bn_size: int = 4  # bottleneck width in multiples of k (the "B" of BC)
    compression: float = 0.5  # theta: a transition keeps floor(theta * m) of m channels (the "C")
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv-BN-ReLU + 3x3/2 max-pool; "cifar": one 3x3 conv
    drop_rate: float = 0.0  # dropout after each dense layer's 3x3 conv
    memory_efficient: bool = False  # checkpoint each layer's concatenation + BN-ReLU-1x1

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_config", tuple(self.block_config))
        if not self.block_config:
            raise ValueError("block_config must list the layers of at least one dense block, e.g. (6, 12, 24, 16)")
        check_positive(growth_rate=self.growth_rate, num_init_features=self.num_init_features,
                       bn_size=self.bn_size, **{f"block_config[{i}]": n for i, n in enumerate(self.block_config)})
        if not 0 < self.compression <= 1:
            raise ValueError(f"compression must be in (0, 1] (0.5 in DenseNet-BC), got {self.compression!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")


def densenet_depth(config: DenseNetConfig) -> int:
    """The depth in a DenseNet's name: its weighted layers, counted as Huang et al. do.

    Two convolutions per dense layer, the stem convolution, one convolution per
    transition and the classifier: DenseNet-121 is ``(6 + 12 + 24 + 16) * 2 + 1 + 3 + 1``,
    the CIFAR DenseNet-BC ``(16 + 16 + 16) * 2 + 1 + 2 + 1 = 100``.
    """
    return 2 * sum(config.block_config) + 1 + (len(config.block_config) - 1) + 1


class DenseNet(nn.Module):
    """A DenseNet: ``stem`` -> ``stages`` (``stage1`` ... each a dense ``block`` and, but for
    the last, a ``transition``) -> ``final_act`` (BN-ReLU) -> ``head``.

    Args:
        config: the architecture (:class:`DenseNetConfig`).
        num_classes: classes predicted by the head.
    """

    def __init__(self, config: DenseNetConfig, num_classes: int = 1000) -> None:
        super().__init__()
        if not isinstance(config, DenseNetConfig):
            raise ValueError(f"config must be a DenseNetConfig, got {type(config).__name__}")
        check_positive(num_classes=num_classes)
        self.config = cfg = config
        c = cfg.num_init_features
        if cfg.stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(3, c, 7, 2, padding=3, bias=False),  # (B, 3, 224, 224) -> (B, c, 112, 112)
                bn=nn.BatchNorm2d(c),
                act=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, 2, padding=1),  # -> (B, c, 56, 56)
            ))
        else:  # the first dense layer's BN-ReLU normalises this convolution's output
            self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, c, 3, padding=1, bias=False)))
        self.stages = nn.Sequential()
        for i, num_layers in enumerate(cfg.block_config):
            stage = nn.Sequential(OrderedDict(block=DenseBlock(num_layers, c, cfg.growth_rate, cfg.bn_size,
                                                               cfg.drop_rate, cfg.memory_efficient)))
            c += num_layers * cfg.growth_rate
            if i < len(cfg.block_config) - 1:
                stage.add_module("transition", Transition(c, int(c * cfg.compression)))
                c = int(c * cfg.compression)
            self.stages.add_module(f"stage{i + 1}", stage)
        self.num_features = c
        # Every dense layer is pre-activation (BN-ReLU-conv): the last block's output still
        # needs a BN-ReLU before pooling.
        self.final_act = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(c), act=nn.ReLU(inplace=True)))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, C, H, W) -> (B, C, 1, 1)
            flatten=nn.Flatten(),
            fc=nn.Linear(c, num_classes),
        ))
        init_he(self, mode="fan_in")  # as torchvision's DenseNet
        nn.init.zeros_(self.head.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_features, H/32, W/32)`` (``H/4`` on CIFAR)."""
        return self.final_act(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="DenseNet")
        return self.head(self.forward_features(x))


def _imagenet(growth_rate: int, block_config: tuple[int, ...], num_init_features: int, num_classes: int,
              memory_efficient: bool) -> DenseNet:
    return DenseNet(DenseNetConfig(growth_rate, block_config, num_init_features,
                                   memory_efficient=memory_efficient), num_classes)


# Huang et al. 2017, Table 1: k = 32 (48 for DenseNet-161), blocks of 6/12/24/16, 6/12/32/32,
# 6/12/48/32 and 6/12/36/24 layers.


@register_model
def densenet121(num_classes: int = 1000, memory_efficient: bool = False) -> DenseNet:
    """DenseNet-121 (k = 32): 7,978,856 parameters, as torchvision's."""
    return _imagenet(32, (6, 12, 24, 16), 64, num_classes, memory_efficient)


@register_model
def densenet161(num_classes: int = 1000, memory_efficient: bool = False) -> DenseNet:
    """DenseNet-161 (k = 48, 96 stem channels): 28,681,000 parameters, as torchvision's."""
    return _imagenet(48, (6, 12, 36, 24), 96, num_classes, memory_efficient)


@register_model
def densenet169(num_classes: int = 1000, memory_efficient: bool = False) -> DenseNet:
    """DenseNet-169 (k = 32): 14,149,480 parameters, as torchvision's."""
    return _imagenet(32, (6, 12, 32, 32), 64, num_classes, memory_efficient)


@register_model
def densenet201(num_classes: int = 1000, memory_efficient: bool = False) -> DenseNet:
    """DenseNet-201 (k = 32): 20,013,928 parameters, as torchvision's."""
    return _imagenet(32, (6, 12, 48, 32), 64, num_classes, memory_efficient)


@register_model
def densenet_bc_100_12(num_classes: int = 10, memory_efficient: bool = False, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-BC (L = 100, k = 12) for CIFAR: three blocks of 16 bottleneck layers on
    32x32, 16x16 and 8x8 maps after a 3x3 convolution to 2k = 24 channels; 769,162
    parameters for 10 classes (Huang et al. 2017, Table 2: 0.8 M)."""
    return DenseNet(DenseNetConfig(12, (16, 16, 16), 24, stem="cifar", drop_rate=drop_rate,
                                   memory_efficient=memory_efficient), num_classes)


# --------------------------------------------------------------------------- weight copying

# torchvision.models.densenet*: features.{conv0,norm0} -> features.denseblock<i>.denselayer<j>
# .{norm1,conv1,norm2,conv2} / features.transition<i>.{norm,conv} -> features.norm5 -> classifier.
_TORCHVISION_RULES = (
    (r"features\.conv0\.(\w+)", r"stem.conv.\1"),
    (r"features\.norm0\.(\w+)", r"stem.bn.\1"),
    (r"features\.denseblock(\d)\.denselayer(\d+)\.(norm1|conv1|norm2|conv2)\.(\w+)",
     r"stages.stage\1.block.layer\2.\3.\4"),
    (r"features\.transition(\d)\.(norm|conv)\.(\w+)", r"stages.stage\1.transition.\2.\3"),
    (r"features\.norm5\.(\w+)", r"final_act.bn.\1"),
    (r"classifier\.(\w+)", r"head.fc.\1"),
)


def load_torchvision_densenet(ours: DenseNet, tv_model: nn.Module) -> DenseNet:
    """Copy the weights of ``torchvision.models.densenet121/161/169/201`` into ours.

    Every tensor, BN statistics included, must find its counterpart with the same shape
    (:func:`~cnnlearn.models.weights.copy_weights`).

    Args:
        ours: e.g. ``densenet121()``.
        tv_model: e.g. ``torchvision.models.densenet121(weights=...)``.

    Returns:
        ``ours``, now computing the same function as ``tv_model``.
    """
    return copy_weights(ours, tv_model, lambda n: rename(n, _TORCHVISION_RULES))
