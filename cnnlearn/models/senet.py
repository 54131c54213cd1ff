"""Squeeze-and-excitation residual networks: SE-ResNet-50 and the CIFAR SE-ResNets, with
the SE unit at any of the four places of the paper's integration ablation.

Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018 (journal
version: IEEE TPAMI 2020), arXiv:1709.01507. An SE unit (:class:`~cnnlearn.models.layers.
SqueezeExcite`, shared with MobileNetV3 and EfficientNet) squeezes each channel of a
feature map to one number by global average pooling, maps those numbers through a
bottleneck of two fully connected layers (reduction ratio ``r``, Sec. 3.2) and a sigmoid
to one gate per channel, and multiplies the channels by their gates.

SE-ResNet puts that unit on the residual branch of every block, after the branch's last
BatchNorm and before the addition (Fig. 3): :mod:`~cnnlearn.models.resnet`'s blocks take
it as their ``attn_layer``, so an SE-ResNet is a ResNet with one more argument. Sec. 6.5
(Fig. 5, Table 14) compares that "standard" place with three others, which
:class:`SEPlacedBlock` builds: ``"pre"`` (before the branch), ``"post"`` (after the
addition) and ``"identity"`` (on the shortcut). Secs. 6.2 and 6.3 (Tables 11 and 12)
change what the unit computes: :class:`MaxSqueezeExcite` squeezes by global max pooling
instead of the average, and ``gate_layer`` replaces the sigmoid (with ReLU or tanh).

``seresnet50`` equals timm's ``seresnet50`` tensor for tensor; :func:`load_timm_seresnet`
copies its weights by an explicit name mapping.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from .registry import register_model
from .layers import SqueezeExcite, init_he
from .resnet import BasicBlock, Bottleneck, ResNet, ResNetConfig
from .weights import copy_weights, rename

__all__ = [
    "SE_PLACEMENTS", "SEPlacedBlock", "MaxSqueezeExcite", "se_resnet",
    "seresnet50", "seresnet20", "seresnet56", "load_timm_seresnet",
]

# Hu et al., Sec. 6.5 and Fig. 5: where the SE unit sits in a residual block.
SE_PLACEMENTS = ("standard", "pre", "post", "identity")


def _check_placement(placement: str) -> None:
    if placement not in SE_PLACEMENTS:
        raise ValueError(f"placement must be one of {SE_PLACEMENTS} (Hu et al., Fig. 5), got {placement!r}")


def _check_se_arguments(reduction: int, placement: str, se_class: type, gate_layer: Callable) -> None:
    _check_placement(placement)
    if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
        raise ValueError(f"reduction must be a positive int (the ratio r of Hu et al., Sec. 3.2; "
                         f"16 in SE-ResNet), got {reduction!r}")
    if not (isinstance(se_class, type) and issubclass(se_class, SqueezeExcite)):
        raise ValueError(f"se_class must be SqueezeExcite or a subclass such as MaxSqueezeExcite, got {se_class!r}")
    if not callable(gate_layer):
        raise ValueError(f"gate_layer must be a module class such as nn.Sigmoid, got {gate_layer!r}")


def _branch(block: BasicBlock | Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """The residual branch of a block alone: its layers up to the last BN, no attention,
    no shortcut, no final ReLU (the same operations as the block's own ``forward``)."""
    if isinstance(block, Bottleneck):
        out = block.act(block.bn1(block.conv1(x)))
        out = block.act(block.bn2(block.conv2(out)))
        return block.bn3(block.conv3(out))
    return block.bn2(block.conv2(block.act(block.bn1(block.conv1(x)))))


class SEPlacedBlock(nn.Module):
    """A residual block with a squeeze-and-excitation unit at one of the four places of
    Hu et al.'s integration ablation (Sec. 6.5, Fig. 5, Table 14).

    * ``"standard"`` (Fig. 5b): on the residual branch, after its last BN, before the
      addition; the same function as the block built with ``attn_layer``.
    * ``"pre"`` (Fig. 5c): in front of the residual branch; the branch sees the rescaled
      input, the shortcut the input itself. The unit has the block's *input* channels.
    * ``"post"`` (Fig. 5d): after the addition and the ReLU; the block's whole output is
      rescaled, so the next block's shortcut carries the rescaled signal.
    * ``"identity"`` (Fig. 5e): on the shortcut, in parallel with the branch. Where the
      shortcut is a projection (or option A's zero-padding), it rescales its output.

    The networks build ``"standard"`` with the blocks' own ``attn_layer`` (so that their
    tensor names match timm's); this wrapper serves the other three, and computes the
    standard block exactly when asked for it (a test checks).

    Args:
        block: a :class:`BasicBlock` or :class:`Bottleneck` with a shortcut
            (``residual=True``) and no attention of its own (``attn_layer=None``).
        placement: one of :data:`SE_PLACEMENTS`.
        se_layer: called with a channel count, returns the SE unit, e.g.
            ``partial(SqueezeExcite.from_reduction, reduction=16)``.
    """

    def __init__(self, block: BasicBlock | Bottleneck, placement: str,
                 se_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        if type(block) not in (BasicBlock, Bottleneck):
            raise ValueError(f"block must be a BasicBlock or a Bottleneck, got {type(block).__name__}")
        if not isinstance(block.attn, nn.Identity):
            raise ValueError("block already has an attention module: build it with attn_layer=None")
        if not block.residual:
            raise ValueError("the SE placements differ only around a shortcut: build the block with residual=True")
        _check_placement(placement)
        out_channels = block.bn3.num_features if isinstance(block, Bottleneck) else block.bn2.num_features
        channels = block.conv1.in_channels if placement == "pre" else out_channels
        self.block = block
        self.se = se_layer(channels)
        self.placement = placement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.block
        if self.placement == "post":
            return self.se(block(x))  # the ReLU of (branch + shortcut), rescaled
        shortcut = block.shortcut(x)  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        if self.placement == "pre":
            out = _branch(block, self.se(x))  # only the branch sees the rescaled input
        else:
            out = _branch(block, x)  # (B, C_out, H/s, W/s)
            if self.placement == "standard":
                out = self.se(out)  # rescale the branch, before the addition
            else:  # "identity"
                shortcut = self.se(shortcut)  # rescale the shortcut instead
        return block.act(out + shortcut)

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}"


class MaxSqueezeExcite(SqueezeExcite):
    """A squeeze-and-excitation unit that squeezes each channel by global *max* pooling
    instead of the average: the squeeze ablation of Hu et al. (Sec. 6.2, Table 11).

    The same layers, parameters and arguments as :class:`~cnnlearn.models.layers.SqueezeExcite`
    (build it with ``MaxSqueezeExcite.from_reduction(channels, reduction)``); only the
    summary of each map differs: its largest value, not its mean.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.amax((2, 3), keepdim=True)                   # squeeze: (B, C, H, W) -> (B, C, 1, 1), the maxima
        scale = self.gate(self.fc2(self.act(self.fc1(scale))))  # excitation: (B, C, 1, 1)
        return x * scale                                       # scale: broadcast over H and W


def _init_like_resnet(module: nn.Module) -> None:
    # The rule ResNet applies to every convolution, the standard SE units' included
    # (He initialisation, fan_out), so that the placements start alike.
    init_he(module)


def se_resnet(config: ResNetConfig, num_classes: int = 1000, reduction: int = 16,
              placement: str = "standard", divisor: int = 1,
              se_class: type[SqueezeExcite] = SqueezeExcite,
              gate_layer: Callable[..., nn.Module] = nn.Sigmoid) -> ResNet:
    """A ResNet with a squeeze-and-excitation unit in every block.

    Args:
        config: the plain network (:class:`ResNetConfig` with ``attn_layer=None``,
            ``BasicBlock`` or ``Bottleneck`` blocks, ``residual=True``).
        num_classes: classes predicted by the head.
        reduction: the SE bottleneck keeps ``channels // reduction`` channels (``r``, 16
            in SE-ResNet; Hu et al., Sec. 6.1, Table 10); at most the smallest width.
        placement: where the unit sits, one of :data:`SE_PLACEMENTS`.
        divisor: round the bottleneck width with :func:`~cnnlearn.models.layers.make_divisible`
            to a multiple of this; 1 (no rounding) is the paper's ``C / r``. timm's
            ``seresnet18/34`` use 8, which turns 64 // 16 = 4 into 8 in their first stage.
        se_class: the unit: :class:`~cnnlearn.models.layers.SqueezeExcite` (average
            pooling, Sec. 3.1) or :class:`MaxSqueezeExcite` (max pooling; Table 11).
        gate_layer: the excitation's last function, ``nn.Sigmoid`` in SE-ResNet; Table 12
            tries ``nn.ReLU`` and ``nn.Tanh``, whose "gates" leave [0, 1].

    Returns:
        For ``"standard"`` a :class:`ResNet` whose blocks hold the unit as ``attn``; for
        the others a :class:`ResNet` whose blocks are :class:`SEPlacedBlock` s.

    Raises:
        ValueError: bad ``placement``, ``reduction`` (e.g. larger than a block's channels),
            ``se_class`` or ``gate_layer``.
    """
    _check_se_arguments(reduction, placement, se_class, gate_layer)
    if config.attn_layer is not None:
        raise ValueError("config already has an attn_layer: pass the plain network's config")
    se_layer = partial(se_class.from_reduction, reduction=reduction,  # ReLU, then the gate (Sec. 3.2)
                       divisor=divisor, gate_layer=gate_layer)
    if placement == "standard":
        # resnet.py's own hook: the blocks apply attn_layer(out_channels) before the addition.
        return ResNet(dataclasses.replace(config, attn_layer=se_layer), num_classes)
    model = ResNet(config, num_classes)
    for stage in model.stages:
        for i, block in enumerate(stage):
            stage[i] = SEPlacedBlock(block, placement, se_layer)
            _init_like_resnet(stage[i].se)
    return model


# --------------------------------------------------------------------------- factories


@register_model
def seresnet50(num_classes: int = 1000, reduction: int = 16, placement: str = "standard",
               zero_init_residual: bool = False, se_class: type[SqueezeExcite] = SqueezeExcite,
               gate_layer: Callable[..., nn.Module] = nn.Sigmoid) -> ResNet:
    """SE-ResNet-50: ResNet-50 (stride on the 3x3) with SE units, r = 16; 28,088,024
    parameters, as timm's ``seresnet50`` (Hu et al.: ~2.5M, about 10%, more than ResNet-50).
    The other arguments are :func:`se_resnet`'s."""
    config = ResNetConfig(Bottleneck, (3, 4, 6, 3), zero_init_residual=zero_init_residual)
    return se_resnet(config, num_classes, reduction, placement, se_class=se_class, gate_layer=gate_layer)


# CIFAR networks: ResNet-20/56 of He et al. 2015, Sec. 4.2 (widths 16, 32, 64, option A
# shortcuts as resnet20/56), with an SE unit in every block. The smallest SE unit has 16
# channels, so reduction can be at most 16 (r = 16 leaves one bottleneck channel there).


def _cifar_seresnet(n: int, num_classes: int, reduction: int, placement: str, shortcut: str,
                    zero_init_residual: bool, se_class: type[SqueezeExcite],
                    gate_layer: Callable[..., nn.Module]) -> ResNet:
    config = ResNetConfig(BasicBlock, (n, n, n), widths=(16, 32, 64), stem="cifar", stem_width=16,
                          shortcut=shortcut, zero_init_residual=zero_init_residual)
    return se_resnet(config, num_classes, reduction, placement, se_class=se_class, gate_layer=gate_layer)


@register_model
def seresnet20(num_classes: int = 10, reduction: int = 16, placement: str = "standard",
               shortcut: str = "A", zero_init_residual: bool = False,
               se_class: type[SqueezeExcite] = SqueezeExcite,
               gate_layer: Callable[..., nn.Module] = nn.Sigmoid) -> ResNet:
    """SE-ResNet-20 for CIFAR: ``resnet20`` with an SE unit in each of its 9 blocks.
    The arguments after ``num_classes`` are :func:`se_resnet`'s and ``resnet20``'s."""
    return _cifar_seresnet(3, num_classes, reduction, placement, shortcut, zero_init_residual, se_class, gate_layer)


@register_model
def seresnet56(num_classes: int = 10, reduction: int = 16, placement: str = "standard",
               shortcut: str = "A", zero_init_residual: bool = False,
               se_class: type[SqueezeExcite] = SqueezeExcite,
               gate_layer: Callable[..., nn.Module] = nn.Sigmoid) -> ResNet:
    """SE-ResNet-56 for CIFAR: ``resnet56`` with an SE unit in each of its 27 blocks.
    The arguments after ``num_classes`` are :func:`se_resnet`'s and ``resnet56``'s."""
    return _cifar_seresnet(9, num_classes, reduction, placement, shortcut, zero_init_residual, se_class, gate_layer)


# --------------------------------------------------------------------------- weight copying

# timm's seresnet*: conv1/bn1 -> layer1..4 (blocks conv1..3, bn1..3, se.fc1/fc2,
# downsample.{0,1}) -> fc. The SE unit's fc1/fc2 keep their names; only its parent
# changes from "se" to "attn". Suffixes: .weight, .bias, .running_mean, .running_var,
# .num_batches_tracked.
_TIMM_SE_RULES = (
    (r"conv1\.(\w+)", r"stem.conv.0.\1"),
    (r"bn1\.(\w+)", r"stem.conv.1.\1"),
    (r"layer(\d)\.(\d+)\.(conv\d|bn\d)\.(\w+)", r"stages.stage\1.\2.\3.\4"),
    (r"layer(\d)\.(\d+)\.se\.(fc\d)\.(\w+)", r"stages.stage\1.\2.attn.\3.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.(\w+)", r"stages.stage\1.\2.shortcut.conv.\3"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", r"stages.stage\1.\2.shortcut.bn.\3"),
    (r"fc\.(\w+)", r"head.fc.\1"),
)


def load_timm_seresnet(ours: ResNet, timm_model: nn.Module) -> ResNet:
    """Copy the weights of timm's ``seresnet18/34/50/101/152`` into ours (standard placement;
    for ``seresnet18/34`` build ours with ``se_resnet(..., divisor=8)``, as timm rounds).

    Names are translated by the explicit rules above (``conv1`` -> ``stem.conv.0``,
    ``layer3.2.se.fc1`` -> ``stages.stage3.2.attn.fc1``, ``layer2.0.downsample.0`` ->
    ``stages.stage2.0.shortcut.conv``, ``fc`` -> ``head.fc``); every tensor, BN running
    statistics included, must find its counterpart with the same shape, and every one of
    ours must be set.

    Args:
        ours: e.g. ``seresnet50()``.
        timm_model: e.g. ``timm.create_model("seresnet50")`` of the same depth.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, lambda n: rename(n, _TIMM_SE_RULES))
