"""ResNeSt: split attention, a softmax over the radix splits of each cardinal group.

Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller, Manmatha, Li, Smola, "ResNeSt:
Split-Attention Networks", CVPR Workshops 2022, arXiv:2004.08955.

The 3x3 convolution of a bottleneck becomes a *split-attention* convolution: one grouped
convolution makes ``R`` ("radix") splits of ``C`` channels each, in ``K`` ("cardinality")
groups; the splits are summed, pooled to one vector, passed through a two-layer
bottleneck, and turned into ``R`` weights per channel by a softmax across the splits
(within each cardinal group; a sigmoid when ``R = 1``); the output is the weighted sum
of the splits (Fig. 2 and Sec. 3.1 of the paper).

Two special cases, checked numerically in the tests:

* ``R = 1, K = 1`` with biases and no BN inside is squeeze-and-excitation (Hu et al. 2018;
  :class:`~cnnlearn.models.layers.SqueezeExcite`): :func:`split_attention_from_se` and
  :func:`se_from_split_attention` convert each way.
* ``R = M`` paths with ``K = 1`` and no biases is the *select* step of a selective-kernel
  unit (:mod:`~cnnlearn.models.sknet`, which is built from :class:`SplitAttention`); its
  paths differ in dilation, ResNeSt's splits only in the channels they read.

``resnest50d`` equals timm's tensor for tensor (:func:`load_timm_resnest`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import SqueezeExcite, check_divisible, check_positive, make_divisible
from .registry import register_model
from .resnet import _TIMM_RULES as _TIMM_RESNET_D_RULES
from .resnet import ResNet, ResNetConfig, merge_shortcut, residual_tail
from .weights import copy_weights, rename

__all__ = ["SplitAttention", "SplitAttentionConv", "ResNeStBottleneck", "resnest_config",
           "split_attention_from_se", "se_from_split_attention", "resnest50d", "resnest29_cifar",
           "load_timm_resnest"]

ModuleFactory = Callable[..., nn.Module]


def _check_int(**values: int) -> None:
    check_positive(**values)
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be an int, got {v!r}")


class SplitAttention(nn.Module):
    """Weigh ``R`` splits of a feature map channel by channel, and sum them.

    Input: ``(B, R*C, H, W)``, split ``r`` in channels ``r*C ... (r+1)*C - 1``. Output:
    ``(B, C, H, W) = sum_r a_r * x_r`` with ``a = softmax_r(fc2(act(bn1(fc1(GAP(sum_r x_r))))))``
    per channel, the softmax taken within each of ``K`` cardinal groups of ``C / K``
    channels; for ``R = 1``, ``a = sigmoid(...)`` and the output is ``a * x``.

    Args:
        channels: ``C``, channels of each split (and of the output).
        radix: ``R``, the number of splits.
        cardinality: ``K``; ``fc1`` and ``fc2`` are grouped convolutions with ``K`` groups.
        attn_channels: width of the bottleneck between ``fc1`` and ``fc2``.
        norm_layer: BN after ``fc1`` (ResNeSt and SK have one); ``None`` for none (SE).
        bias: biases in ``fc1`` and ``fc2`` (ResNeSt and SE have them, SK has not).
    """

    def __init__(self, channels: int, radix: int = 2, cardinality: int = 1, attn_channels: int = 32,
                 norm_layer: ModuleFactory | None = nn.BatchNorm2d, bias: bool = True) -> None:
        super().__init__()
        _check_int(channels=channels, radix=radix, cardinality=cardinality, attn_channels=attn_channels)
        if channels % cardinality or attn_channels % cardinality:
            raise ValueError(f"cardinality={cardinality} must divide channels={channels} and "
                             f"attn_channels={attn_channels}: each cardinal group needs its own share")
        self.channels, self.radix, self.cardinality = channels, radix, cardinality
        self.fc1 = nn.Conv2d(channels, attn_channels, 1, groups=cardinality, bias=bias)
        self.bn1 = norm_layer(attn_channels) if norm_layer is not None else nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_channels, radix * channels, 1, groups=cardinality, bias=bias)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights: ``(B, R*C, H, W) -> (B, R, C)``; they sum to 1 over ``R``
        (for ``R > 1``) and lie in [0, 1]."""
        b, rc = x.shape[:2]
        if x.ndim != 4 or rc != self.radix * self.channels:
            raise ValueError(f"SplitAttention expects (B, radix*channels={self.radix * self.channels}, H, W), "
                             f"got {tuple(x.shape)}")
        u = x.view(b, self.radix, self.channels, *x.shape[2:]).sum(1)  # fuse: (B, C, H, W)
        s = u.mean((2, 3), keepdim=True)                                # squeeze: (B, C, 1, 1)
        logits = self.fc2(self.act1(self.bn1(self.fc1(s))))             # (B, R*C, 1, 1)
        # fc2 is grouped by cardinal group: its outputs are ordered (K, R, C/K)
        logits = logits.view(b, self.cardinality, self.radix, self.channels // self.cardinality)
        if self.radix == 1:
            a = torch.sigmoid(logits)
        else:
            a = F.softmax(logits, dim=2)                                # across the splits
        return a.transpose(1, 2).reshape(b, self.radix, self.channels)  # -> (B, R, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        a = self.weights(x)  # (B, R, C)
        x = x.view(b, self.radix, self.channels, h, w)
        return (x * a[..., None, None]).sum(1)  # (B, R, C, H, W) -> (B, C, H, W)

    def extra_repr(self) -> str:
        return f"radix={self.radix}, cardinality={self.cardinality}"


class SplitAttentionConv(nn.Module):
    """ResNeSt's split-attention convolution: a grouped ``3x3`` convolution (``K * R``
    groups) making ``R`` splits of ``out_channels``, BN, ReLU, then :class:`SplitAttention`.

    Args:
        in_channels: input channels; ``K * R`` must divide them.
        out_channels: ``C``, channels of each split and of the output.
        stride: stride of the convolution.
        radix: ``R``.
        cardinality: ``K``.
        norm_layer: normalisation class.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, radix: int = 2,
                 cardinality: int = 1, norm_layer: ModuleFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        _check_int(in_channels=in_channels, out_channels=out_channels, stride=stride, radix=radix,
                   cardinality=cardinality)
        check_divisible(in_channels, radix * cardinality, "in_channels")
        check_divisible(out_channels, cardinality, "out_channels")
        # (B, C_in, H, W) -> (B, R*C, H/s, W/s): group r*K + k reads input slice r*K + k
        self.conv = nn.Conv2d(in_channels, radix * out_channels, 3, stride, padding=1,
                              groups=radix * cardinality, bias=False)
        self.bn0 = norm_layer(radix * out_channels)
        self.act0 = nn.ReLU(inplace=True)
        # the paper's code: max(in_channels * R / 4, 32) (reduction factor 4); timm rounds to
        # a multiple of 8 (the same for every ResNeSt of the paper)
        attn_channels = make_divisible(in_channels * radix / 4, 8, min_value=32)
        if attn_channels % cardinality:
            raise ValueError(f"cardinality={cardinality} must divide the attention width {attn_channels}")
        self.attn = SplitAttention(out_channels, radix, cardinality, attn_channels, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.act0(self.bn0(self.conv(x))))


class ResNeStBottleneck(nn.Module):
    """1x1 -> split-attention 3x3 (-> 3x3 average pool where the block has a stride) -> 1x1.

    ResNeSt puts a block's stride on an average pooling after the split-attention
    convolution ("avd", Sec. 5.1 of the paper), as timm's ``resnest50d``.

    Args:
        in_channels, out_channels, stride, shortcut, norm_layer, residual: as
            :class:`~cnnlearn.models.resnet.Bottleneck`.
        groups: ``K``, the cardinality.
        width_per_group: channels per cardinal group at ``planes = 64``.
        attn_layer: must be ``None`` (the block has its own attention).
        radix: ``R``.
    """

    expansion = 4
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 64, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, radix: int = 2,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride,
                       width_per_group=width_per_group)
        if attn_layer is not None:
            raise ValueError("ResNeStBottleneck has its own attention: pass attn_layer=None")
        if out_channels % self.expansion:
            raise ValueError(f"out_channels={out_channels} must be a multiple of the expansion {self.expansion}")
        width = out_channels // self.expansion * width_per_group // 64 * groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = SplitAttentionConv(width, width, 1, radix, groups, norm_layer)
        self.pool = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        residual_tail(self, in_channels, out_channels, stride, shortcut, residual)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block then starts as relu(shortcut(x))."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))       # (B, C_in, H, W) -> (B, width, H, W)
        out = self.pool(self.conv2(out))              # -> (B, width, H/s, W/s)
        return merge_shortcut(self, self.bn3(self.conv3(out)), x)  # -> (B, C_out, H/s, W/s)


def resnest_config(layers: tuple[int, ...], radix: int = 2, cardinality: int = 1, width_per_group: int = 64,
                   **kwargs) -> ResNetConfig:
    """A ResNeSt as a :class:`~cnnlearn.models.resnet.ResNetConfig` of :class:`ResNeStBottleneck` s."""
    return ResNetConfig(ResNeStBottleneck, tuple(layers), groups=cardinality, width_per_group=width_per_group,
                        block_args=dict(radix=radix), **kwargs)


@register_model
def resnest50d(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNeSt-50 (2s1x64d, deep stem, average-pool shortcuts): 27,483,240 parameters and
    5.37 GMACs at 224x224, as timm's ``resnest50d`` (Zhang et al., Table 3: 27.5M, 5.4 GFLOPs)."""
    config = resnest_config((3, 4, 6, 3), 2, 1, stem="deep", avg_down=True,
                            zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


@register_model
def resnest29_cifar(num_classes: int = 10, radix: int = 2, cardinality: int = 1, width_per_group: int = 56,
                    zero_init_residual: bool = False) -> ResNet:
    """A ResNeSt for 32x32 images: CIFAR stem, three stages of three ResNeSt bottlenecks
    (planes 16, 32, 64; 14, 28, 56 channels per split, narrower than the ResNet's 16, 32,
    64 so that the radix-2 convolutions keep the MACs near the other ``*29_cifar``
    networks), average-pool shortcuts as ``resnest50d``."""
    config = resnest_config((3, 3, 3), radix, cardinality, width_per_group, widths=(16, 32, 64),
                            stem="cifar", stem_width=16, avg_down=True, zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


# --------------------------------------------------------------------------- SE as split attention


def split_attention_from_se(se: SqueezeExcite) -> SplitAttention:
    """The :class:`SplitAttention` (``R = 1``, ``K = 1``, biases, no BN) that computes what
    the squeeze-and-excitation unit ``se`` computes, its weights copied.

    Raises:
        ValueError: ``se`` is not a :class:`SqueezeExcite` with ReLU and sigmoid.
    """
    if not isinstance(se, SqueezeExcite) or type(se.act) is not nn.ReLU or type(se.gate) is not nn.Sigmoid:
        raise ValueError("se must be a SqueezeExcite with ReLU and sigmoid (the gate of split attention at R=1)")
    sa = SplitAttention(se.fc1.in_channels, radix=1, cardinality=1, attn_channels=se.fc1.out_channels,
                        norm_layer=None, bias=True)
    sa.fc1.load_state_dict(se.fc1.state_dict())
    sa.fc2.load_state_dict(se.fc2.state_dict())
    return sa


def se_from_split_attention(sa: SplitAttention) -> SqueezeExcite:
    """The :class:`SqueezeExcite` computing what ``sa`` (``R = 1``, ``K = 1``) computes in eval
    mode: its BN after ``fc1`` is an affine map there, folded into ``fc1``.

    Raises:
        ValueError: ``sa`` has ``R > 1`` or ``K > 1`` (then it is no SE unit).
    """
    if not isinstance(sa, SplitAttention) or sa.radix != 1 or sa.cardinality != 1:
        raise ValueError("only split attention with radix=1 and cardinality=1 is an SE unit")
    se = SqueezeExcite(sa.channels, sa.fc1.out_channels)
    w = sa.fc1.weight.detach()
    b = sa.fc1.bias.detach() if sa.fc1.bias is not None else torch.zeros(w.shape[0])
    if isinstance(sa.bn1, nn.BatchNorm2d):  # y = gamma * (z - mean) / sqrt(var + eps) + beta
        bn = sa.bn1
        k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w, b = w * k[:, None, None, None], (b - bn.running_mean) * k + bn.bias.detach()
    with torch.no_grad():
        se.fc1.weight.copy_(w), se.fc1.bias.copy_(b)
        se.fc2.weight.copy_(sa.fc2.weight)
        se.fc2.bias.copy_(sa.fc2.bias if sa.fc2.bias is not None else torch.zeros_like(se.fc2.bias))
    return se


# --------------------------------------------------------------------------- weight copying

# timm's resnest*: deep stem conv1.{0,1,3,4,6} + bn1, layerN blocks with conv2 = SplitAttn
# (conv, bn0, fc1, bn1, fc2), downsample.{1,2} after the average pool.
_TIMM_RULES = (
    (r"layer(\d)\.(\d+)\.conv2\.(conv|bn0)\.(\w+)", r"stages.stage\1.\2.conv2.\3.\4"),
    (r"layer(\d)\.(\d+)\.conv2\.(fc1|bn1|fc2)\.(\w+)", r"stages.stage\1.\2.conv2.attn.\3.\4"),
    *_TIMM_RESNET_D_RULES,  # the deep stem, the other layers, shortcuts and head as resnet50d's
)


def load_timm_resnest(ours: ResNet, timm_model: nn.Module) -> ResNet:
    """Copy the weights of timm's ``resnest50d`` into ours, by the explicit rules above.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, lambda n: rename(n, _TIMM_RULES))

