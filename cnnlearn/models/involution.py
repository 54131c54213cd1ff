"""Involution and RedNet: a kernel generated at each pixel, shared across the channels of a group.

Li, Hu, Wang, Li, She, Zhu, Zhang, Chen, "Involution: Inverting the Inherence of
Convolution for Visual Recognition", CVPR 2021, arXiv:2103.06255.

A convolution's kernel is the same at every position (spatial-agnostic) and different for
every output channel (channel-specific). Involution inverts both: at each pixel a
``K x K`` kernel is *generated* from that pixel's own features, ``phi(x_ij)``: a 1x1
convolution reducing the channels by ``r``, BN, ReLU, and a 1x1 convolution to
``K * K * G`` numbers (Eq. 6 of the paper); the ``C / G`` channels of each of ``G`` groups
share it (16 channels per group in RedNet). The output at ``(i, j)`` is the multiply-add
of that kernel with the ``K x K`` neighbourhood of ``(i, j)`` (Eq. 4).

:func:`apply_involution` does the multiply-add tap by tap (a custom operator with its own
backward, see the comment above it); :func:`involution_loop` is the plain loop over pixels
that serves as the reference (there is no reference library).
RedNet (the official code: d-li14/involution, ``cls/mmcls/models/backbones/rednet.py``)
is ResNet with each bottleneck's 3x3 convolution replaced by a 7x7 involution and the
stem's middle 3x3 convolution by a 3x3 involution.

Counts: ``rednet26/38/50`` have 9,233,166, 12,386,986 and 15,540,806 parameters, the
official table's 9.23M, 12.39M and 15.54M (the paper's Table 2 rounds them to 9.2M, 12.4M,
15.5M). Our ``count_macs`` gives 1.69, 2.17 and 2.65 GMACs at 224x224 against the
table's 1.73, 2.22 and 2.71 "GFLOPs" (multiply-adds there): about 2.5% fewer. Ours counts
the convolutions, the linear layer and involution's multiply-add (``C*K*K`` per pixel,
the operator's MAC formula), nothing elementwise; the table's counter presumably also counts
elementwise layers such as BN, ReLU and pooling (not checked: the official code does not
say which counter it used).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import flop_registry, register_flop_formula

from .layers import ConvBNAct, check_divisible, check_positive
from .registry import register_model
from .resnet import Bottleneck, ResNet, ResNetConfig

__all__ = ["Involution", "apply_involution", "involution_taps", "involution_loop", "InvolutionBottleneck", "RedNet",
           "rednet26", "rednet38", "rednet50", "rednet29_cifar"]

ModuleFactory = Callable[..., nn.Module]


def _check_kernels(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int) -> tuple[int, int, int]:
    check_positive(kernel_size=kernel_size, stride=stride)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd, so that a pixel is its neighbourhood's centre")
    if x.ndim != 4 or kernels.ndim != 4:
        raise ValueError(f"x and kernels must be (B, C, H, W) and (B, G*K*K, H', W'), got "
                         f"{tuple(x.shape)} and {tuple(kernels.shape)}")
    b, c, h, w = x.shape
    h_out, w_out = (h - 1) // stride + 1, (w - 1) // stride + 1
    kk = kernel_size * kernel_size
    if kernels.shape[0] != b or kernels.shape[1] % kk or kernels.shape[2:] != (h_out, w_out):
        raise ValueError(f"kernels must have shape (B={b}, G*{kk}, {h_out}, {w_out}) for x of shape "
                         f"{tuple(x.shape)}, kernel_size={kernel_size}, stride={stride}; got {tuple(kernels.shape)}")
    groups = kernels.shape[1] // kk
    check_divisible(c, groups, "channels of x")
    return groups, h_out, w_out


def _taps(kernel_size: int, stride: int, h_out: int, w_out: int):
    """For each tap ``t`` of the ``K x K`` kernel: ``t`` and the window of the zero-padded
    input that the tap reads at every output pixel (a strided view, no copy)."""
    for t in range(kernel_size * kernel_size):
        dy, dx = divmod(t, kernel_size)
        yield t, (..., slice(dy, dy + stride * (h_out - 1) + 1, stride),
                  slice(dx, dx + stride * (w_out - 1) + 1, stride))


def _zeros_like_layout(x: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    # zeros in x's memory format: channels-last in, channels-last out, so no pass converts layouts
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if cl else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=x.device, memory_format=fmt).zero_()


def _accumulator(*tensors: torch.Tensor) -> torch.dtype:
    # sums of K*K products in float32 at least: 49 additions in bfloat16 would lose the small taps
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.promote_types(dtype, torch.float32)


# Why a custom operator: written with ``unfold``, the multiply-add copies every neighbourhood
# (K*K = 49 times the input for RedNet's 7x7), and its backward folds them back; on a 2-core
# CPU that made a CIFAR RedNet train several times slower per image than a ResNet of the same
# MACs. As K*K shifted multiply-adds into one accumulator it reads the input in place, and its
# own backward does the same; being an operator, it also gets a MAC formula for count_macs
# (FlopCounterMode sees operators, not the Python inside them) and a shape rule for meta tensors.
def involution_taps(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int = 1) -> torch.Tensor:
    """The forward pass of :func:`apply_involution`: the sum of Eq. 4 taken tap by tap
    (no input checks, no autograd of its own; call :func:`apply_involution`)."""
    b, c, h, w = x.shape
    kk, (h_out, w_out) = kernel_size * kernel_size, kernels.shape[2:]
    groups, r = kernels.shape[1] // kk, (kernel_size - 1) // 2
    xp = F.pad(x, (r, r, r, r)).unflatten(1, (groups, c // groups))  # (B, G, C/G, H+2r, W+2r)
    k = kernels.unflatten(1, (groups, 1, kk))  # (B, G, 1, K*K, H', W'): one kernel for the group
    out = _zeros_like_layout(x, (b, c, h_out, w_out), _accumulator(x, kernels))
    out_groups = out.unflatten(1, (groups, c // groups))  # a view of out: (B, G, C/G, H', W')
    for t, window in _taps(kernel_size, stride, h_out, w_out):
        out_groups.addcmul_(xp[window], k[:, :, :, t])  # += tap t's weight * the input shifted by tap t
    return out.to(torch.promote_types(x.dtype, kernels.dtype))


@torch.library.custom_op("cnnlearn::involution", mutates_args=())
def _involution(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    return involution_taps(x, kernels, kernel_size, stride)


@_involution.register_fake
def _(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:2], *kernels.shape[2:]), dtype=torch.promote_types(x.dtype, kernels.dtype))


def _involution_setup(ctx, inputs, output) -> None:
    x, kernels, ctx.kernel_size, ctx.stride = inputs
    ctx.save_for_backward(x, kernels)


def _involution_backward(ctx, grad: torch.Tensor):
    # out = sum_t k_t * shift_t(x), so d/dx: shift each k_t * grad back to where tap t read it,
    # and d/dk_t: the sum over a group's channels of grad * shift_t(x).
    x, kernels = ctx.saved_tensors
    kernel_size, stride = ctx.kernel_size, ctx.stride
    b, c, h, w = x.shape
    kk, (h_out, w_out) = kernel_size * kernel_size, kernels.shape[2:]
    groups, r = kernels.shape[1] // kk, (kernel_size - 1) // 2
    acc = _accumulator(x, kernels, grad)
    g = grad.unflatten(1, (groups, c // groups))  # (B, G, C/G, H', W')
    xp = F.pad(x, (r, r, r, r)).unflatten(1, (groups, c // groups))
    k = kernels.unflatten(1, (groups, 1, kk))
    grad_xp = _zeros_like_layout(x, (b, c, h + 2 * r, w + 2 * r), acc)
    grad_xp_groups = grad_xp.unflatten(1, (groups, c // groups))
    grad_k = torch.empty((b, groups, kk, h_out, w_out), dtype=acc, device=x.device)
    for t, window in _taps(kernel_size, stride, h_out, w_out):
        grad_xp_groups[window].addcmul_(g, k[:, :, :, t])
        grad_k[:, :, t] = (g * xp[window]).sum(2, dtype=acc)
    grad_x = grad_xp[..., r:r + h, r:r + w]
    return grad_x.to(x.dtype), grad_k.flatten(1, 2).to(kernels.dtype), None, None


_involution.register_autograd(_involution_backward, setup_context=_involution_setup)


if torch.ops.cnnlearn.involution not in flop_registry:  # (not again if the module is reloaded)
    @register_flop_formula(torch.ops.cnnlearn.involution)
    def _involution_flops(x_shape, kernels_shape, kernel_size, stride, *args, **kwargs) -> int:
        # one multiply-add per channel, tap and output pixel; FLOPs count it twice, as for a matmul
        b, c = x_shape[:2]
        return 2 * b * c * kernel_size * kernel_size * kernels_shape[2] * kernels_shape[3]


def apply_involution(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int = 1) -> torch.Tensor:
    """The multiply-add of involution, as ``K*K`` shifted multiply-adds.

    For each tap ``t`` of the ``K x K`` kernel, shift the (zero-padded) input by the tap's
    offset and add it, multiplied by every pixel's weight for that tap, to the output: the
    sum of Eq. 4 taken tap by tap instead of pixel by pixel. The channels of a group share
    their kernel, so one weight map multiplies ``C / G`` channels.

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, G*K*K, H', W')``, one ``K x K`` kernel per group and output pixel,
            ``H' = ceil(H / stride)``; group ``g``'s taps in channels ``g*K*K ...``.
        kernel_size: ``K`` (odd; the neighbourhood is zero-padded at the border).
        stride: the step between output pixels.

    Returns:
        ``(B, C, H', W')``: ``out[b, c, i, j] = sum_t kernels[b, g(c)*K*K + t, i, j] *
        x[b, c, s*i + dy_t, s*j + dx_t]``, ``g(c) = c // (C / G)``, summed in float32 (or
        float64 for float64 inputs) and returned in the inputs' dtype.
    """
    _check_kernels(x, kernels, kernel_size, stride)
    return _involution(x, kernels, kernel_size, stride)


# One node for torch.fx (draw_block): its checks read the shapes as Python numbers, which tracing cannot.
torch.fx.wrap("apply_involution")


def involution_loop(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, stride: int = 1) -> torch.Tensor:
    """:func:`apply_involution` written as the plain loop over output pixels and taps of
    Eq. 4 of the paper: the reference to check an implementation against (slow)."""
    groups, h_out, w_out = _check_kernels(x, kernels, kernel_size, stride)
    b, c, h, w = x.shape
    r = (kernel_size - 1) // 2
    channel_group = torch.arange(c) // (c // groups)  # the group of each channel
    out = x.new_zeros(b, c, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    y, xx = stride * i + dy, stride * j + dx
                    if not (0 <= y < h and 0 <= xx < w):
                        continue  # zero padding
                    t = (dy + r) * kernel_size + (dx + r)  # the tap's index in the K x K kernel
                    weight = kernels[:, channel_group * kernel_size ** 2 + t, i, j]  # (B, C): shared in a group
                    out[:, :, i, j] += weight * x[:, :, y, xx]
    return out


class Involution(nn.Module):
    """Involution: ``phi`` generates a ``K x K`` kernel per pixel and group; then :func:`apply_involution`.

    Args:
        channels: input and output channels ``C``.
        kernel_size: ``K`` (7 in RedNet's bottlenecks, 3 in its stem).
        stride: output stride; the kernels are generated from the average-pooled input.
        group_channels: channels per group ``C / G`` sharing one kernel (16 in RedNet).
        reduction: ``r``, the channel reduction of ``phi``'s first 1x1 convolution (4).
        norm_layer: normalisation class inside ``phi``.
    """

    def __init__(self, channels: int, kernel_size: int = 7, stride: int = 1, group_channels: int = 16,
                 reduction: int = 4, norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        check_positive(channels=channels, kernel_size=kernel_size, stride=stride, reduction=reduction)
        check_positive(group_channels=group_channels)
        if channels % group_channels:
            raise ValueError(f"group_channels={group_channels} must divide channels={channels}: "
                             f"every group shares one kernel among the same number of channels")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd")
        if channels < reduction:
            raise ValueError(f"reduction={reduction} would leave no channel of channels={channels} in phi")
        self.kernel_size, self.stride = kernel_size, stride
        self.groups = channels // group_channels
        # ceil_mode: an odd-sized input still gives one kernel per output pixel (the official
        # code's floor mode only fits even sizes; on those the two agree)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        # phi: (B, C, H', W') -> (B, C/r, H', W') -> (B, G*K*K, H', W')
        self.reduce = ConvBNAct(channels, channels // reduction, 1, norm_layer=norm_layer)
        self.span = nn.Conv2d(channels // reduction, kernel_size * kernel_size * self.groups, 1)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """``phi``: ``(B, C, H, W) -> (B, G*K*K, H/s, W/s)``, each pixel's kernels from its own features."""
        return self.span(self.reduce(self.pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_involution(x, self.kernels(x), self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, groups={self.groups}"


class InvolutionBottleneck(Bottleneck):
    """RedNet's bottleneck: :class:`~cnnlearn.models.resnet.Bottleneck` with its 3x3
    convolution replaced by an :class:`Involution` (1x1 -> BN -> ReLU -> involution -> BN ->
    ReLU -> 1x1 -> BN, then the shortcut).

    Args: as :class:`~cnnlearn.models.resnet.Bottleneck` (``groups`` must be 1), plus
    ``kernel_size`` and ``group_channels`` of the involution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, kernel_size: int = 7,
        group_channels: int = 16,
    ) -> None:
        if groups != 1:
            raise ValueError(f"InvolutionBottleneck has no grouped convolution: groups must be 1, got {groups}; "
                             f"the involution's groups follow from group_channels")
        super().__init__(in_channels, out_channels, stride, shortcut, groups, width_per_group, norm_layer,
                         attn_layer, residual)
        mid = self.conv2.in_channels
        self.conv2 = Involution(mid, kernel_size, stride, group_channels, norm_layer=norm_layer)


class RedNet(ResNet):
    """A :class:`~cnnlearn.models.resnet.ResNet` whose ImageNet stem is RedNet's: 3x3/2 conv
    (to ``stem_width / 2``) -> 3x3 involution -> BN -> ReLU -> 3x3 conv (to ``stem_width``)
    -> 3x3/2 max-pool. ``config.stem == "cifar"`` keeps the CIFAR stem."""

    @staticmethod
    def _make_stem(cfg: ResNetConfig) -> nn.Sequential:
        if cfg.stem == "cifar":
            return ResNet._make_stem(cfg)
        w = cfg.stem_width
        return nn.Sequential(OrderedDict(
            conv1=ConvBNAct(3, w // 2, 3, stride=2, norm_layer=cfg.norm_layer),  # (B, 3, 224, 224) -> (B, 32, 112, 112)
            involution=Involution(w // 2, 3, 1, norm_layer=cfg.norm_layer),
            bn=cfg.norm_layer(w // 2),
            act=nn.ReLU(inplace=True),
            conv2=ConvBNAct(w // 2, w, 3, norm_layer=cfg.norm_layer),  # -> (B, 64, 112, 112)
            pool=nn.MaxPool2d(3, stride=2, padding=1),  # -> (B, 64, 56, 56)
        ))


def _rednet(layers: tuple[int, ...], num_classes: int, zero_init_residual: bool) -> RedNet:
    # stem="deep" only to pass ResNetConfig's check; RedNet._make_stem builds its own.
    return RedNet(ResNetConfig(InvolutionBottleneck, layers, stem="deep",
                               zero_init_residual=zero_init_residual), num_classes)


# Blocks per stage from the official code's arch_settings (d-li14/involution).


@register_model
def rednet26(num_classes: int = 1000, zero_init_residual: bool = False) -> RedNet:
    """RedNet-26: (1, 2, 4, 1) involution bottlenecks; 9,233,166 parameters (the official
    table: 9.23M)."""
    return _rednet((1, 2, 4, 1), num_classes, zero_init_residual)


@register_model
def rednet38(num_classes: int = 1000, zero_init_residual: bool = False) -> RedNet:
    """RedNet-38: (2, 3, 5, 2) involution bottlenecks (the official table: 12.39M parameters)."""
    return _rednet((2, 3, 5, 2), num_classes, zero_init_residual)


@register_model
def rednet50(num_classes: int = 1000, zero_init_residual: bool = False) -> RedNet:
    """RedNet-50: (3, 4, 6, 3) involution bottlenecks (the official table: 15.54M parameters)."""
    return _rednet((3, 4, 6, 3), num_classes, zero_init_residual)


@register_model
def rednet29_cifar(num_classes: int = 10, width_per_group: int = 96, kernel_size: int = 7,
                   group_channels: int = 8, zero_init_residual: bool = False) -> ResNet:
    """An involution network for 32x32 images: CIFAR stem, three stages of three involution
    bottlenecks (planes 16, 32, 64). Involution is cheap, so the bottlenecks are 1.5 times
    wider (24, 48, 96 channels) with 8 channels per involution group, to come near the MACs
    of the other ``*29_cifar`` networks."""
    config = ResNetConfig(InvolutionBottleneck, (3, 3, 3), widths=(16, 32, 64), stem="cifar", stem_width=16,
                          width_per_group=width_per_group, zero_init_residual=zero_init_residual,
                          block_args=dict(kernel_size=kernel_size, group_channels=group_channels))
    return ResNet(config, num_classes)
