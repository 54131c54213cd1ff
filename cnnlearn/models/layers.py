"""Small pieces shared by several networks of the book.

Each family module (``resnet.py``, ``mobilenet.py``, ...) imports from here rather than
writing its own copy, so "the conv-BN-activation unit" means one thing everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn

from .._validate import check_model_input

__all__ = ["AuxOutputs", "ConvBNAct", "make_divisible", "check_images", "check_divisible", "check_positive", "channel_shuffle", "ChannelShuffle", "SqueezeExcite", "DepthwiseSeparableConv", "init_he"]


class AuxOutputs(NamedTuple):
    """What a network with auxiliary classifiers (GoogLeNet, Inception v3) returns in
    training mode; in eval mode it returns the logits alone. ``cnnlearn.fit`` trains on
    ``CE(logits) + aux_weight * sum(CE(a) for a in aux)`` and measures accuracy on
    ``logits`` (:func:`cnnlearn.train.training_loss`)."""

    logits: torch.Tensor             # the main classifier's (B, classes)
    aux: tuple[torch.Tensor, ...]    # each auxiliary classifier's (B, classes), input side first
    aux_weight: float = 0.3          # weight of each auxiliary loss in the total loss


def check_images(x: torch.Tensor, model: nn.Module, channels: int = 3, name: str | None = None) -> None:
    """The input check at the top of a network's ``forward``: ``x`` must be a float tensor
    ``(B, channels, H, W)`` of the parameters' dtype. The ``ValueError`` says how to
    convert what was passed: a NumPy array, uint8 pixels, float64 images, an image
    without its batch axis.

    Args:
        x: the input.
        model: the network (for its name and its parameters' dtype).
        channels: input channels the network takes.
        name: the name in the message (default: the model's class name).
    """
    check_model_input(x, name or type(model).__name__, channels, next(model.parameters(), None))


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a finite number > 0."""
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def init_he(module: nn.Module, mode: str = "fan_out") -> None:
    """He initialisation (He et al. 2015, arXiv:1502.01852) of every convolution in ``module``,
    and normalisation layers as the identity map (weight 1, bias 0).

    The rule the ResNet family uses (torchvision's ResNet, Wide ResNet and DenseNet, and our
    SE units), in one place. ``mode="fan_out"`` as torchvision's ResNet, ``"fan_in"`` as its
    DenseNet; the gain is that of ReLU either way. Draws the same random numbers in the same
    order as the loops it replaced, so seeded networks are unchanged.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
            # Not in place, unlike torchvision (inplace=True): an in-place activation would
            # overwrite the BatchNorm output that a reader's forward hook has just captured,
            # and feature-map pictures would silently show post-activation values. The cost
            # is one more tensor per layer: `make bench` measures MobileNetV2 about 5-9%
            # slower than torchvision's on a CPU, and about equal with in-place activations.
            layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups, so that the next grouped convolution
    sees channels from every group (ShuffleNet, Zhang et al. 2018, arXiv:1707.01083, Fig. 1).

    With ``C = groups * n`` channels, view them as a ``groups x n`` matrix, transpose it
    and read it back row by row: output channel ``a * groups + b`` is input channel
    ``b * n + a``. It is a pure permutation (no parameters, no arithmetic), and shuffling
    again with ``n`` groups undoes it.

    Args:
        x: a batch of feature maps, shape ``(B, C, H, W)``.
        groups: the number of groups; must divide ``C``.

    Returns:
        A tensor of the same shape with the channels permuted.

    Raises:
        ValueError: ``x`` is not 4-D, or ``groups`` does not divide its channels.
    """
    if x.ndim != 4:
        raise ValueError(f"channel_shuffle expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    check_divisible(c, groups, "channels of x")
    x = x.reshape(b, groups, c // groups, h, w)  # (B, C, H, W) -> (B, g, C/g, H, W)
    x = x.transpose(1, 2)                        # -> (B, C/g, g, H, W): group index now varies fastest
    return x.reshape(b, c, h, w)                 # -> (B, C, H, W), copied into the new order


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a layer, so it appears in ``print(model)`` and summaries.

    Args:
        groups: the number of groups of the grouped convolution before it.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        check_positive(groups=groups)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: reweight the channels by a gate computed from the whole image.

    Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018,
    arXiv:1709.01507. *Squeeze*: global average pooling summarises each channel in one
    number. *Excite*: a two-layer bottleneck (``channels -> reduced_channels -> channels``)
    followed by a gate maps those numbers to one weight in [0, 1] per channel, and the
    input is multiplied by them. The two "fully connected" layers are 1x1 convolutions
    with bias on the ``(B, C, 1, 1)`` summary, which is the same arithmetic as
    ``nn.Linear`` without flattening (torchvision and timm do the same, so their weights
    copy over unchanged).

    One class serves every network of the book:

    * SE-ResNet (Hu et al.): ``reduced = channels // 16``, ReLU, sigmoid.
    * MobileNetV3 (Howard et al. 2019): ``reduced = make_divisible(channels // 4, 8)``
      of the expanded channels, ReLU, hard-sigmoid.
    * EfficientNet (Tan & Le 2019): ``reduced = block_in_channels // 4`` (a quarter of
      the block's *input*, not of the expanded channels it rescales), SiLU, sigmoid.

    Args:
        channels: channels of the input, which is rescaled channel by channel.
        reduced_channels: width of the bottleneck; ``1 <= reduced_channels <= channels``.
            :meth:`from_reduction` computes it from a reduction ratio.
        act_layer: activation between the two layers, called with no arguments.
        gate_layer: the gate, called with no arguments; it must map to [0, 1]
            (``nn.Sigmoid`` or ``nn.Hardsigmoid``).
    """

    def __init__(
        self, channels: int, reduced_channels: int,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        check_positive(channels=channels, reduced_channels=reduced_channels)
        if reduced_channels > channels:
            raise ValueError(
                f"reduced_channels={reduced_channels} must not exceed channels={channels}: "
                f"the excitation is a bottleneck; use a value in 1..{channels}"
            )
        self.fc1 = nn.Conv2d(channels, reduced_channels, kernel_size=1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(reduced_channels, channels, kernel_size=1)
        self.gate = gate_layer()

    @classmethod
    def from_reduction(
        cls, channels: int, reduction: int = 16, divisor: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> SqueezeExcite:
        """Build the block from a reduction ratio ``r``: ``reduced = channels // r``,
        then rounded with :func:`make_divisible` when ``divisor > 1``.

        ``reduction=16`` is SENet's choice (Hu et al., Sec. 6.1);
        ``reduction=4, divisor=8`` is MobileNetV3's.

        Raises:
            ValueError: ``reduction`` is not positive or is larger than ``channels``.
        """
        check_positive(channels=channels, reduction=reduction, divisor=divisor)
        if reduction > channels:
            raise ValueError(
                f"reduction={reduction} is larger than channels={channels}, which would leave "
                f"no channel in the bottleneck; use a reduction of at most {channels}"
            )
        reduced = channels // reduction
        if divisor > 1:
            reduced = make_divisible(reduced, divisor)
        return cls(channels, reduced, act_layer, gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)          # squeeze: (B, C, H, W) -> (B, C, 1, 1)
        scale = self.act(self.fc1(scale))              # -> (B, C_reduced, 1, 1)
        scale = self.gate(self.fc2(scale))             # -> (B, C, 1, 1), each in [0, 1]
        return x * scale                               # excite: broadcast over H and W


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise ``k x k`` conv-BN-act, then pointwise 1x1 conv-BN-act.

    The factorisation of MobileNet v1 (Howard et al. 2017, arXiv:1704.04861, Sec. 3.1
    and Fig. 3): the depthwise convolution filters each channel on its own (``groups =
    in_channels``), the pointwise convolution mixes channels. It replaces a standard
    convolution's ``k*k*C_in*C_out`` weights by ``k*k*C_in + C_in*C_out``, a fraction
    ``1/C_out + 1/k^2`` of them, and the MACs by the same fraction (the paper's Eq. 5).
    It lives here rather than in ``mobilenet.py`` because it is the book's generic
    building block (Xception and MobileNet both stack it); MobileNetV2/V3 and
    EfficientNet use the inverted residual instead, which wraps the same depthwise
    convolution between two 1x1 convolutions.

    Args:
        in_channels: input channels (also the depthwise convolution's channels).
        out_channels: output channels of the pointwise convolution.
        kernel_size: depthwise kernel size (odd; padded to keep the size at stride 1).
        stride: stride of the depthwise convolution (the pointwise one has stride 1).
        norm_layer: normalisation class after each convolution (``None`` for none).
        act_layer: activation class after each convolution (``None`` for linear).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        check_positive(in_channels=in_channels, out_channels=out_channels,
                       kernel_size=kernel_size, stride=stride)
        super().__init__()
        # (B, C_in, H, W) -> (B, C_in, H/s, W/s): one k x k filter per channel
        self.add_module("depthwise", ConvBNAct(in_channels, in_channels, kernel_size, stride,
                                               groups=in_channels, norm_layer=norm_layer,
                                               act_layer=act_layer))
        # (B, C_in, H/s, W/s) -> (B, C_out, H/s, W/s): mix channels at every pixel
        self.add_module("pointwise", ConvBNAct(in_channels, out_channels, 1,
                                               norm_layer=norm_layer, act_layer=act_layer))
        self.out_channels = out_channels
