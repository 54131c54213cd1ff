"""ResNeXt: aggregated residual transformations, in the paper's three equivalent forms.

Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations for Deep Neural
Networks", CVPR 2017, arXiv:1611.05431.

A ResNeXt block splits its input into ``C`` ("cardinality") low-dimensional paths of the
same topology, transforms each (1x1 reduce to ``d`` channels, 3x3), and merges them
(split-transform-merge, as Inception, but with identical paths). Fig. 3 draws the same
block three ways:

* (a) :class:`ResNeXtPaths`: ``C`` separate paths 1x1 -> 3x3 -> 1x1, their outputs summed;
* (b) :class:`ResNeXtConcat`: the paths stop after the 3x3; their outputs are
  concatenated and one 1x1 convolution expands them ("early concatenation");
* (c) :class:`ResNeXtGrouped`: one 1x1, one 3x3 convolution with ``groups=C``, one 1x1;
  this is :class:`~cnnlearn.models.resnet.Bottleneck` with ``groups`` set, and what every
  ResNeXt in practice (the paper's, torchvision's, timm's) runs, since one grouped
  kernel launch is faster than ``C`` small ones.

They compute the same function: the sum in (a) of ``C`` 1x1 convolutions, each on its own
``d`` channels, is one 1x1 convolution on the ``C*d`` concatenated channels (b); and ``C``
3x3 convolutions each on its own ``d`` channels are one grouped convolution (c).
:func:`convert_block` maps the weights of any form into any other, and the tests check
that the outputs agree.

BatchNorm placement, so that the forms stay equal with BN (Sec. 4, "BN after each
conv"): the BNs after the first 1x1 and the 3x3 are per channel, so splitting them into
paths changes nothing; the BN after the last 1x1 acts on the *sum* in form (a), which in
eval mode is the same affine map as in (b) and (c).

The networks: ``resnext50_32x4d`` and ``resnext101_32x8d`` are
:class:`~cnnlearn.models.resnet.ResNet` with grouped bottlenecks and equal
torchvision's (copy their weights with :func:`~cnnlearn.models.resnet.
load_torchvision_resnet`). :data:`TABLE2_TEMPLATES` and :func:`resnext50_template` build
the paper's Table 2 trade-off of cardinality against width at (about) fixed complexity.
"""
from __future__ import annotations

import copy
import functools
import operator
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn

from .layers import check_positive
from .registry import register_model
from .resnet import Bottleneck, ResNet, ResNetConfig, _check_shortcut

__all__ = [
    "ResNeXtPaths", "ResNeXtConcat", "ResNeXtGrouped", "FORMS", "convert_block",
    "TABLE2_TEMPLATES", "resnext50_template", "resnext_config",
    "resnext50_32x4d", "resnext101_32x8d", "resnext29_8x64d",
]

ModuleFactory = Callable[..., nn.Module]

# Xie et al. 2017, Table 2: (cardinality C, bottleneck width d) of conv2's block at roughly
# the complexity of ResNet-50's bottleneck (about 70k parameters per conv2 block). The width
# of the grouped 3x3 convolution, C*d, is 64, 80, 96, 112 and 128.
TABLE2_TEMPLATES: tuple[tuple[int, int], ...] = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))


def _check_block_args(in_channels: int, out_channels: int, cardinality: int, width: int, stride: int) -> None:
    check_positive(in_channels=in_channels, out_channels=out_channels, cardinality=cardinality,
                   width=width, stride=stride)
    for name, v in (("cardinality", cardinality), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {v!r}")


def _path_head(in_channels: int, width: int, stride: int, norm_layer: ModuleFactory) -> OrderedDict:
    """One path's 1x1 reduce -> BN -> ReLU -> 3x3 -> BN -> ReLU (stride on the 3x3, as Bottleneck)."""
    return OrderedDict(
        conv1=nn.Conv2d(in_channels, width, 1, bias=False),  # (B, C_in, H, W) -> (B, d, H, W)
        bn1=norm_layer(width),
        act1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(width, width, 3, stride, padding=1, bias=False),  # -> (B, d, H/s, W/s)
        bn2=norm_layer(width),
        act2=nn.ReLU(inplace=True),
    )


class ResNeXtPaths(nn.Module):
    """Fig. 3a: ``C`` separate paths, each 1x1 (to ``d``) -> 3x3 -> 1x1 (to ``out_channels``),
    summed; then BN, the shortcut added, ReLU.

    ``out = relu(bn3(sum_i T_i(x)) + shortcut(x))`` (Eq. 3 of the paper, with BN).

    Args:
        in_channels: channels of the input (256 in conv2 of ResNeXt-50).
        out_channels: channels of the output (256).
        cardinality: number of paths ``C`` (32).
        width: bottleneck width ``d`` of each path (4).
        stride: stride of each path's 3x3 convolution.
        shortcut: as in :class:`~cnnlearn.models.resnet.Bottleneck`; ``None`` is the identity.
        norm_layer: normalisation class called with a channel count.
    """

    form = "paths"

    def __init__(self, in_channels: int, out_channels: int, cardinality: int = 32, width: int = 4,
                 stride: int = 1, shortcut: nn.Module | None = None,
                 norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        _check_block_args(in_channels, out_channels, cardinality, width, stride)
        self.cardinality, self.width = cardinality, width
        self.paths = nn.ModuleList(
            nn.Sequential(OrderedDict(**_path_head(in_channels, width, stride, norm_layer),
                                      conv3=nn.Conv2d(width, out_channels, 1, bias=False)))  # -> (B, C_out, ., .)
            for _ in range(cardinality))
        self.bn3 = norm_layer(out_channels)
        self.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functools.reduce(operator.add, (path(x) for path in self.paths))  # C x (B, C_out, H/s, W/s) -> sum
        return self.act(self.bn3(out) + self.shortcut(x))


class ResNeXtConcat(nn.Module):
    """Fig. 3b: ``C`` paths of 1x1 (to ``d``) -> 3x3, concatenated to ``C*d`` channels, then
    one 1x1 to ``out_channels``, BN, the shortcut added, ReLU.

    Args: as :class:`ResNeXtPaths`.
    """

    form = "concat"

    def __init__(self, in_channels: int, out_channels: int, cardinality: int = 32, width: int = 4,
                 stride: int = 1, shortcut: nn.Module | None = None,
                 norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        _check_block_args(in_channels, out_channels, cardinality, width, stride)
        self.cardinality, self.width = cardinality, width
        self.paths = nn.ModuleList(nn.Sequential(_path_head(in_channels, width, stride, norm_layer))
                                   for _ in range(cardinality))
        self.conv3 = nn.Conv2d(cardinality * width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.shortcut = _check_shortcut(shortcut, in_channels, out_channels, stride, True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([path(x) for path in self.paths], dim=1)  # C x (B, d, ., .) -> (B, C*d, ., .)
        return self.act(self.bn3(self.conv3(out)) + self.shortcut(x))  # -> (B, C_out, H/s, W/s)


class ResNeXtGrouped(Bottleneck):
    """Fig. 3c: 1x1 (to ``C*d``) -> 3x3 with ``groups=C`` -> 1x1 (to ``out_channels``).

    The ResNet :class:`~cnnlearn.models.resnet.Bottleneck` with ``groups=cardinality``,
    built from the paper's ``(C, d)`` instead of torchvision's ``width_per_group``: the
    middle width ``C*d`` is ``planes * width_per_group / 64 * groups`` with ``planes =
    out_channels / 4``, so ``width_per_group = 64 * d / planes``.

    Args: as :class:`ResNeXtPaths`; ``out_channels`` must be a multiple of 4 and
    ``64 * width`` a multiple of ``out_channels / 4``.
    """

    form = "grouped"

    def __init__(self, in_channels: int, out_channels: int, cardinality: int = 32, width: int = 4,
                 stride: int = 1, shortcut: nn.Module | None = None,
                 norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        _check_block_args(in_channels, out_channels, cardinality, width, stride)
        planes = out_channels // self.expansion
        if out_channels % self.expansion or (64 * width) % planes:
            raise ValueError(
                f"the grouped form is a Bottleneck: out_channels={out_channels} must be a multiple of 4, "
                f"and 64*width={64 * width} a multiple of out_channels/4={out_channels / 4}")
        super().__init__(in_channels, out_channels, stride, shortcut, groups=cardinality,
                         width_per_group=64 * width // planes, norm_layer=norm_layer)
        self.cardinality, self.width = cardinality, width


FORMS: dict[str, type[nn.Module]] = {"paths": ResNeXtPaths, "concat": ResNeXtConcat, "grouped": ResNeXtGrouped}


# --------------------------------------------------------------------------- weight mapping
# The grouped form is the common currency: each form's weights are read into the grouped
# form's tensors (conv1, bn1, conv2, bn2, conv3, bn3, shortcut) and written out of them.
# Path i owns channels i*d ... (i+1)*d - 1 of the middle width C*d.

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _to_grouped_state(block: nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(block, ResNeXtGrouped):
        return {k: v.clone() for k, v in block.state_dict().items()}
    state = {k: v.clone() for k, v in block.state_dict().items() if not k.startswith("paths.")}
    paths = block.paths
    for name in ("conv1", "conv2"):  # (d, C_in, 1, 1) / (d, d, 3, 3) per path -> (C*d, ., ., .)
        state[f"{name}.weight"] = torch.cat([getattr(p, name).weight for p in paths]).detach().clone()
    for name in ("bn1", "bn2"):
        for t in _BN_TENSORS:
            state[f"{name}.{t}"] = torch.cat([getattr(getattr(p, name), t) for p in paths]).detach().clone()
        state[f"{name}.num_batches_tracked"] = paths[0].bn1.num_batches_tracked.clone()
    if isinstance(block, ResNeXtPaths):  # C x (C_out, d, 1, 1) -> (C_out, C*d, 1, 1): the sum is one conv
        state["conv3.weight"] = torch.cat([p.conv3.weight for p in paths], dim=1).detach().clone()
    return state


def _from_grouped_state(block: nn.Module, state: dict[str, torch.Tensor]) -> None:
    if isinstance(block, ResNeXtGrouped):
        block.load_state_dict(state)
        return
    d = block.width
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.split(".")[0] in ("conv1", "conv2", "bn1", "bn2"):
            continue
        if k == "conv3.weight" and isinstance(block, ResNeXtPaths):
            for i in range(block.cardinality):  # (C_out, C*d, 1, 1) -> path i's (C_out, d, 1, 1)
                out[f"paths.{i}.conv3.weight"] = v[:, i * d:(i + 1) * d]
            continue
        out[k] = v
    for i in range(block.cardinality):
        rows = slice(i * d, (i + 1) * d)
        for name in ("conv1", "conv2"):
            out[f"paths.{i}.{name}.weight"] = state[f"{name}.weight"][rows]
        for name in ("bn1", "bn2"):
            for t in _BN_TENSORS:
                out[f"paths.{i}.{name}.{t}"] = state[f"{name}.{t}"][rows]
            out[f"paths.{i}.{name}.num_batches_tracked"] = state[f"{name}.num_batches_tracked"]
    block.load_state_dict({k: v.clone() for k, v in out.items()})


def convert_block(block: nn.Module, form: str) -> nn.Module:
    """Build the same ResNeXt block in another of the paper's forms (Fig. 3), weights mapped.

    Args:
        block: a :class:`ResNeXtPaths`, :class:`ResNeXtConcat` or :class:`ResNeXtGrouped`.
        form: ``"paths"`` (Fig. 3a), ``"concat"`` (3b) or ``"grouped"`` (3c).

    Returns:
        A new block of that form, with the same channels, stride, shortcut and norm, whose
        output equals ``block``'s (in eval mode, up to float rounding of the sums).

    Raises:
        ValueError: ``form`` is unknown or ``block`` is not one of the three forms.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {tuple(FORMS)} (Xie et al. 2017, Fig. 3 a/b/c), got {form!r}")
    if not isinstance(block, tuple(FORMS.values())):
        raise ValueError(f"block must be a ResNeXtPaths, ResNeXtConcat or ResNeXtGrouped, "
                         f"got {type(block).__name__}")
    state = _to_grouped_state(block)
    in_channels, out_channels = state["conv1.weight"].shape[1], state["conv3.weight"].shape[0]
    conv2 = block.conv2 if isinstance(block, ResNeXtGrouped) else block.paths[0].conv2
    stride = conv2.stride[0]
    norm_layer = type(block.bn3)
    shortcut = copy.deepcopy(block.shortcut)  # same module, same weights, in the new block
    if isinstance(shortcut, nn.Identity):
        shortcut = None
    new = FORMS[form](in_channels, out_channels, block.cardinality, block.width, stride, shortcut, norm_layer)
    _from_grouped_state(new, state)
    return new.train(block.training)


# --------------------------------------------------------------------------- networks


def resnext_config(layers: tuple[int, ...], cardinality: int, width: int, **kwargs) -> ResNetConfig:
    """A ResNeXt as a :class:`~cnnlearn.models.resnet.ResNetConfig`: grouped bottlenecks.

    ``width`` is the paper's ``d`` in the first stage (conv2); each later stage doubles it
    with the planes (Sec. 3.1, rule (ii)), which torchvision's ``width_per_group`` (``d`` at
    ``planes = 64``) expresses.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNeXt-50.
        cardinality: ``C``.
        width: ``d`` of the first stage.
        **kwargs: other :class:`ResNetConfig` fields.
    """
    return ResNetConfig(Bottleneck, tuple(layers), groups=cardinality, width_per_group=width, **kwargs)


def resnext50_template(cardinality: int, width: int, num_classes: int = 1000) -> ResNet:
    """ResNeXt-50 with another ``(C, d)`` template; ``(1, 64)`` is ResNet-50 itself.

    The rows of :data:`TABLE2_TEMPLATES` cost about the same parameters and MACs
    (Xie et al. 2017, Table 2; Table 3 compares their accuracies).
    """
    return ResNet(resnext_config((3, 4, 6, 3), cardinality, width), num_classes)


@register_model
def resnext50_32x4d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNeXt-50 (32x4d): 25,028,904 parameters and 4.23 GMACs at 224x224, as torchvision's
    (the paper's Table 1: 25.0 M parameters, 4.2 billion FLOPs, which it counts as multiply-adds)."""
    return ResNet(resnext_config((3, 4, 6, 3), 32, 4, zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnext101_32x8d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNeXt-101 (32x8d): 88,791,336 parameters and 16.41 GMACs at 224x224, as torchvision's."""
    return ResNet(resnext_config((3, 4, 23, 3), 32, 8, zero_init_residual=zero_init_residual), num_classes)


@register_model
def resnext29_8x64d(num_classes: int = 10, zero_init_residual: bool = False) -> ResNet:
    """ResNeXt-29 (8x64d) for CIFAR (Xie et al. 2017, Sec. 5.3): three stages of three
    bottlenecks with outputs 256, 512, 1024 and ``C*d`` = 512, 1024, 2048, after a 3x3
    stem of 64 channels; the paper lists 34.4 M parameters (Table 7)."""
    config = resnext_config((3, 3, 3), 8, 64, widths=(64, 128, 256), stem="cifar", stem_width=64,
                            zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)
