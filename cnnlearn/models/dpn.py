"""Dual path networks: DPN-68 and DPN-92.

Chen, Li, Xiao, Jin, Yan, Feng, "Dual Path Networks", NeurIPS 2017, arXiv:1707.01629.

A ResNet block *adds* its output to its input: it re-uses features but cannot keep new
ones apart. A DenseNet layer *concatenates*: it keeps every new feature but re-reads all
of them. A dual path block does both on one tensor whose first channels are the
residual path and whose remaining channels are the dense path (Sec. 3, Fig. 2d-e): its
branch (BN-ReLU 1x1, grouped 3x3 as in ResNeXt, 1x1) produces ``residual_channels +
increment`` channels; the first part is added to the residual path and the rest
(``increment``, the dense path's growth) is appended to the dense path.

The first block of each stage projects its input (BN-ReLU-1x1 conv, strided in stages
2-4) to a fresh residual path and ``2 * increment`` dense channels, so a stage with ``n``
blocks outputs ``residual + (n + 2) * increment`` channels.

``dpn68`` and ``dpn92`` equal timm's tensor for tensor: :func:`load_timm_dpn` copies their
weights. Following timm (and the authors' MXNet models it was ported from), BatchNorm
uses ``eps = 1e-3`` and the classifier is a 1x1 convolution. (timm's ``fc_act_layer='elu'``
does not take effect: its last BN is followed by a ReLU, as here.)
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from .layers import check_divisible, check_images, check_positive
from .registry import register_model
from .weights import copy_weights, rename

__all__ = ["BNActConv", "DualPathBlock", "DPNConfig", "DPN", "dpn68", "dpn92", "load_timm_dpn"]

ModuleFactory = Callable[..., nn.Module]
# The authors' MXNet models use eps = 1e-3 (timm keeps it so the ported weights give the
# same outputs).
DPNBatchNorm = partial(nn.BatchNorm2d, eps=1e-3)


class BNActConv(nn.Sequential):
    """Pre-activation unit: BN -> ReLU -> convolution (no bias).

    Args:
        in_channels, out_channels, kernel_size, stride, groups: of the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        check_divisible(in_channels, groups, "in_channels")
        super().__init__(OrderedDict(
            bn=DPNBatchNorm(in_channels),
            act=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                           groups=groups, bias=False),
        ))


class DualPathBlock(nn.Module):
    """One dual path block on the tensor ``[residual path | dense path]``.

    Args:
        in_channels: channels of the input tensor (both paths).
        residual_channels: width of the residual path (64, 128, 256, 512 in DPN-68).
        increment: channels the dense path grows by in this block (16, 32, 32, 64 in DPN-68).
        mid_channels: width of the branch's 1x1 and grouped 3x3 (128, 256, 512, 1024 in DPN-68).
        groups: groups of the 3x3 convolution (ResNeXt's cardinality; 32).
        stride: ``None`` for an ordinary block; 1 or 2 for a stage's first block, which
            projects its input to new paths (with that stride).
    """

    def __init__(self, in_channels: int, residual_channels: int, increment: int, mid_channels: int,
                 groups: int = 32, stride: int | None = None) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, residual_channels=residual_channels, increment=increment,
                       mid_channels=mid_channels)
        check_divisible(mid_channels, groups, "mid_channels")
        if stride is None and in_channels <= residual_channels:
            raise ValueError(f"in_channels={in_channels} must exceed residual_channels={residual_channels} "
                             f"(the rest is the dense path), or pass stride=1/2 for a projecting first block")
        self.residual_channels = residual_channels
        # (B, C_in, H, W) -> (B, R + 2*inc, H/s, W/s): a new residual path and a dense path of 2*inc
        self.shortcut = (BNActConv(in_channels, residual_channels + 2 * increment, 1, stride)
                         if stride is not None else None)
        s = stride or 1
        self.conv1 = BNActConv(in_channels, mid_channels, 1)  # -> (B, mid, H, W)
        self.conv2 = BNActConv(mid_channels, mid_channels, 3, s, groups)  # -> (B, mid, H/s, W/s)
        self.conv3 = BNActConv(mid_channels, residual_channels + increment, 1)  # -> (B, R + inc, ., .)
        self.out_channels = (residual_channels + 2 * increment if stride is not None else in_channels) + increment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = x if self.shortcut is None else self.shortcut(x)
        r = self.residual_channels
        residual, dense = paths[:, :r], paths[:, r:]
        out = self.conv3(self.conv2(self.conv1(x)))
        # residual path: add (re-use); dense path: append the increment (explore)
        return torch.cat([residual + out[:, :r], dense, out[:, r:]], dim=1)  # (B, out_channels, H/s, W/s)


@dataclass(frozen=True)
class DPNConfig:
    """A DPN as data (Chen et al. 2017, Table 1)."""

    layers: tuple[int, ...]  # blocks per stage: (3, 4, 12, 3) for DPN-68
    increments: tuple[int, ...]  # dense-path growth per block, per stage: (16, 32, 32, 64)
    residual_widths: tuple[int, ...]  # residual-path width per stage: (64, 128, 256, 512)
    mid_width: int  # branch width of stage 1, doubled per stage: 128 for DPN-68 ("k_r" in timm)
    groups: int = 32  # cardinality of the grouped 3x3
    stem_width: int = 10  # channels out of the stem convolution
    stem_kernel: int = 3  # 3 (DPN-68) or 7 (DPN-92)

    def __post_init__(self) -> None:
        for name in ("layers", "increments", "residual_widths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not len(self.layers) == len(self.increments) == len(self.residual_widths) > 0:
            raise ValueError("layers, increments and residual_widths need one entry per stage each")
        check_positive(mid_width=self.mid_width, groups=self.groups, stem_width=self.stem_width,
                       stem_kernel=self.stem_kernel,
                       **{f"layers[{i}]": n for i, n in enumerate(self.layers)},
                       **{f"increments[{i}]": n for i, n in enumerate(self.increments)})


class DPN(nn.Module):
    """A dual path network: ``stem`` -> ``stages`` -> ``final_act`` (BN-ReLU) -> ``head``.

    Args:
        config: the :class:`DPNConfig`.
        num_classes: classes predicted by the head.
    """

    def __init__(self, config: DPNConfig, num_classes: int = 1000) -> None:
        super().__init__()
        if not isinstance(config, DPNConfig):
            raise ValueError(f"config must be a DPNConfig, got {type(config).__name__}")
        check_positive(num_classes=num_classes)
        self.config = cfg = config
        k = cfg.stem_kernel
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(3, cfg.stem_width, k, 2, padding=k // 2, bias=False),  # (B, 3, 224, 224) -> (B, 10, 112, 112)
            bn=DPNBatchNorm(cfg.stem_width),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(3, 2, padding=1),  # -> (B, 10, 56, 56)
        ))
        c = cfg.stem_width
        self.stages = nn.Sequential()
        for i, (n, inc, r) in enumerate(zip(cfg.layers, cfg.increments, cfg.residual_widths)):
            mid = cfg.mid_width * 2 ** i
            blocks = []
            for j in range(n):
                block = DualPathBlock(c, r, inc, mid, cfg.groups, stride=(1 if i == 0 else 2) if j == 0 else None)
                blocks.append(block)
                c = block.out_channels
            self.stages.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
        self.num_features = c
        self.final_act = nn.Sequential(OrderedDict(bn=DPNBatchNorm(c), act=nn.ReLU(inplace=True)))
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, C, H, W) -> (B, C, 1, 1)
            fc=nn.Conv2d(c, num_classes, 1),  # a 1x1 convolution as classifier -> (B, classes, 1, 1)
            flatten=nn.Flatten(),  # -> (B, classes)
        ))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_features, H/32, W/32)``."""
        return self.final_act(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="DPN")
        return self.head(self.forward_features(x))


@register_model
def dpn68(num_classes: int = 1000) -> DPN:
    """DPN-68: 12,611,602 parameters, as timm's ``dpn68``."""
    return DPN(DPNConfig((3, 4, 12, 3), (16, 32, 32, 64), (64, 128, 256, 512), 128), num_classes)


@register_model
def dpn92(num_classes: int = 1000) -> DPN:
    """DPN-92: 7x7 stem of 64 channels, residual widths 256 ... 2048; 37,668,392 parameters,
    as timm's ``dpn92``."""
    return DPN(DPNConfig((3, 4, 20, 3), (16, 32, 24, 128), (256, 512, 1024, 2048), 96,
                         stem_width=64, stem_kernel=7), num_classes)


# timm's DPN: features.conv1_1.{conv,bn} -> features.conv<s>_<b>.{c1x1_w_s1|c1x1_w_s2, c1x1_a,
# c3x3_b, c1x1_c}.{bn,conv} -> features.conv5_bn_ac.bn -> classifier (1x1 conv). Stage s of
# timm (2..5) is our stage s - 1, its block b (from 1) our block b - 1.
_TIMM_RULES = (
    (r"features\.conv1_1\.(conv|bn)\.(\w+)", r"stem.\1.\2"),
    (r"features\.conv5_bn_ac\.bn\.(\w+)", r"final_act.bn.\1"),
    (r"classifier\.(\w+)", r"head.fc.\1"),
)
_TIMM_BLOCK = {"c1x1_w_s1": "shortcut", "c1x1_w_s2": "shortcut", "c1x1_a": "conv1", "c3x3_b": "conv2",
               "c1x1_c": "conv3"}


def _timm_name(name: str) -> str:
    m = re.fullmatch(r"features\.conv(\d)_(\d+)\.(\w+)\.(bn|conv)\.(\w+)", name)
    if m and m.group(3) in _TIMM_BLOCK:
        stage, block, unit, layer, tensor = m.groups()
        return f"stages.stage{int(stage) - 1}.{int(block) - 1}.{_TIMM_BLOCK[unit]}.{layer}.{tensor}"
    return rename(name, _TIMM_RULES)


def load_timm_dpn(ours: DPN, timm_model: nn.Module) -> DPN:
    """Copy the weights of timm's ``dpn68`` or ``dpn92`` (``b=False`` variants) into ours.

    Args:
        ours: e.g. ``dpn68()``.
        timm_model: e.g. ``timm.create_model("dpn68")``.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, _timm_name)
