"""Small pieces shared by several networks of the book.

Each family module (``resnet.py``, ``mobilenet.py``, ...) imports from here rather than
writing its own copy, so "the conv-BN-activation unit" means one thing everywhere.
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

__all__ = ["ConvBNAct", "make_divisible", "check_divisible", "check_positive"]


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not > 0."""
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def check_divisible(channels: int, groups: int, channels_name: str = "channels") -> None:
    """Raise ``ValueError`` when ``groups`` does not divide ``channels``."""
    check_positive(**{channels_name: channels, "groups": groups})
    if channels % groups:
        raise ValueError(
            f"groups={groups} must divide {channels_name}={channels}; "
            f"choose groups from the divisors of {channels}"
        )


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more
    than 10% (the rule of the MobileNet reference code, used by torchvision and timm):
    hardware runs multiples of 8 channels faster.
    """
    check_positive(value=value, divisor=divisor)
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:  # never round down by more than 10%
        new += divisor
    return new


class ConvBNAct(nn.Sequential):
    """Convolution -> BatchNorm -> activation, with "same" padding for odd kernels.

    The convolution has no bias: the BatchNorm that follows has its own shift, so a
    bias would be a redundant parameter.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: stride of the convolution.
        groups: channel groups (``in_channels`` for a depthwise convolution).
        norm_layer: normalisation class called with ``out_channels``; ``None`` for none.
        act_layer: activation class called with no arguments; ``None`` for a linear unit.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
        groups: int = 1, norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU, dilation: int = 1,
    ) -> None:
        check_divisible(in_channels, groups, "in_channels")
        check_divisible(out_channels, groups, "out_channels")
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                      dilation=dilation, groups=groups, bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_channels
