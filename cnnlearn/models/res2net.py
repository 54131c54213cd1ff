"""Res2Net: multi-scale features inside one bottleneck, by hierarchical residual-like connections.

Gao, Cheng, Zhao, Zhang, Yang, Torr, "Res2Net: A New Multi-scale Backbone Architecture",
IEEE TPAMI 2021, arXiv:1904.01169.

The 3x3 convolution of a bottleneck is replaced by ``s`` ("scale") groups of ``w``
("width") channels each. The first ``s - 1`` groups pass through their own 3x3
convolution, each after adding the previous group's output, so group ``i`` sees a
stack of ``i`` 3x3 convolutions: receptive fields 3, 5, 7, ... inside one block; the last
group is passed on untouched (receptive field 1). The paper (Fig. 2) passes the *first*
group through; the official code and timm pass the last one, which is the same block
with the groups renumbered; we follow the code so that weights copy over.

In the first block of a stage (stride or channel change) the groups are convolved
independently (no additions, the ``stype='stage'`` of the official code) and the
untouched group is average-pooled to the new resolution.

``res2net50_26w_4s`` equals timm's tensor for tensor (:func:`load_timm_res2net`);
:func:`split_receptive_fields` measures the range of receptive fields by input gradients.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .layers import check_positive
from .registry import register_model
from .resnet import _TORCHVISION_RULES, ResNet, ResNetConfig, merge_shortcut, residual_tail
from .weights import copy_weights, rename

__all__ = ["Res2NetBottleneck", "res2net_config", "res2net50_26w_4s", "res2net29_cifar",
           "load_timm_res2net", "split_receptive_fields"]

ModuleFactory = Callable[..., nn.Module]


class Res2NetBottleneck(nn.Module):
    """1x1 (to ``w * s``) -> the hierarchical 3x3s over ``s`` groups of ``w`` -> 1x1 (expand by 4).

    ``w = floor(planes * width_per_group / 64) * groups`` with ``planes = out_channels / 4``
    (26 at ``planes = 64`` in Res2Net-50 26w4s).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (4 x the stage's ``planes``).
        stride: stride of the 3x3 convolutions (and of the pooled group).
        shortcut: as in :class:`~cnnlearn.models.resnet.Bottleneck`.
        groups: groups of each 3x3 convolution (Res2NeXt's cardinality); must divide ``w``.
        width_per_group: ``w`` at ``planes = 64`` (the paper's "26w").
        norm_layer: normalisation class called with a channel count.
        attn_layer: optional module class applied to the branch before the addition (SE).
        residual: ``False`` for the plain twin.
        scale: ``s``, the number of groups (the paper's "4s"); 1 is a plain bottleneck.
    """

    expansion = 4
    preact = False

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: nn.Module | None = None,
        groups: int = 1, width_per_group: int = 26, norm_layer: ModuleFactory = nn.BatchNorm2d,
        attn_layer: ModuleFactory | None = None, residual: bool = True, scale: int = 4,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride, groups=groups,
                       width_per_group=width_per_group, scale=scale)
        if not isinstance(scale, int) or isinstance(scale, bool):
            raise ValueError(f"scale must be an int (the number of groups s), got {scale!r}")
        if out_channels % self.expansion:
            raise ValueError(f"out_channels={out_channels} must be a multiple of the expansion {self.expansion}")
        planes = out_channels // self.expansion
        width = planes * width_per_group // 64 * groups
        if width == 0:
            raise ValueError(f"width_per_group={width_per_group} leaves no channel per group at "
                             f"planes={planes}: use width_per_group >= {-(-64 // planes)}")
        self.width, self.scale = width, scale
        # The first block of a stage convolves every group on its own and pools the last.
        self.is_first = stride > 1 or in_channels != out_channels
        self.conv1 = nn.Conv2d(in_channels, width * scale, 1, bias=False)  # (B, C_in, H, W) -> (B, w*s, H, W)
        self.bn1 = norm_layer(width * scale)
        num_convs = max(1, scale - 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, padding=1, groups=groups, bias=False)
                                   for _ in range(num_convs))
        self.bns = nn.ModuleList(norm_layer(width) for _ in range(num_convs))
        # count_include_pad=True, as the official code (and timm, to keep its weights valid)
        self.pool = nn.AvgPool2d(3, stride, padding=1) if self.is_first and scale > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(width * scale, out_channels, 1, bias=False)  # -> (B, C_out, H/s, W/s)
        self.bn3 = norm_layer(out_channels)
        residual_tail(self, in_channels, out_channels, stride, shortcut, residual, attn_layer)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block then starts as relu(shortcut(x))."""
        nn.init.zeros_(self.bn3.weight)

    def multi_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The block up to (not including) ``conv3``: the ``s`` groups' outputs, concatenated,
        ``(B, C_in, H, W) -> (B, w*s, H/stride, W/stride)``; group ``i < s - 1`` has passed
        ``i + 1`` stacked 3x3 convolutions (one in a stage's first block), the last none."""
        splits = torch.split(self.act(self.bn1(self.conv1(x))), self.width, dim=1)  # s x (B, w, H, W)
        outs = []
        y = splits[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            # y_i = K_i(x_i + y_{i-1}): each group also sees what the previous one computed
            y = splits[i] if i == 0 or self.is_first else y + splits[i]
            y = self.act(bn(conv(y)))
            outs.append(y)
        if self.scale > 1:
            outs.append(self.pool(splits[-1]))  # the untouched group (pooled where the size halves)
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merge_shortcut(self, self.bn3(self.conv3(self.multi_scale(x))), x)  # (B, C_out, H/s, W/s)


def res2net_config(layers: tuple[int, ...], width_per_group: int = 26, scale: int = 4, **kwargs) -> ResNetConfig:
    """A Res2Net as a :class:`~cnnlearn.models.resnet.ResNetConfig` of :class:`Res2NetBottleneck` s.

    Args:
        layers: blocks per stage.
        width_per_group: ``w`` at ``planes = 64``.
        scale: ``s``.
        **kwargs: other :class:`ResNetConfig` fields.
    """
    return ResNetConfig(Res2NetBottleneck, tuple(layers), width_per_group=width_per_group,
                        block_args=dict(scale=scale), **kwargs)


@register_model
def res2net50_26w_4s(num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """Res2Net-50 (26w x 4s): 25,699,120 parameters and 4.26 GMACs at 224x224, as timm's
    ``res2net50_26w_4s`` (Gao et al., Table 2: 25.7M parameters, 4.2 GFLOPs)."""
    return ResNet(res2net_config((3, 4, 6, 3), 26, 4, zero_init_residual=zero_init_residual), num_classes)


@register_model
def res2net29_cifar(num_classes: int = 10, width_per_group: int = 24, scale: int = 4,
                    zero_init_residual: bool = False) -> ResNet:
    """A Res2Net for 32x32 images: the CIFAR stem and three stages of three Res2Net
    bottlenecks (planes 16, 32, 64; 9 x 3 + 2 = 29 layers), at about the MACs of the other
    ``*29_cifar`` networks of chapter 3 (``w`` = 6, 12, 24 per group, ``s`` = 4)."""
    config = res2net_config((3, 3, 3), width_per_group, scale, widths=(16, 32, 64), stem="cifar",
                            stem_width=16, zero_init_residual=zero_init_residual)
    return ResNet(config, num_classes)


# --------------------------------------------------------------------------- weight copying

# timm's res2net: torchvision's ResNet names, and the block's convs.i/bns.i, which keep theirs.
_TIMM_RULES = (
    (r"layer(\d)\.(\d+)\.(convs|bns)\.(\d+)\.(\w+)", r"stages.stage\1.\2.\3.\4.\5"),
    *_TORCHVISION_RULES,  # the stem, the other layers, shortcuts and head as torchvision's ResNet
)


def load_timm_res2net(ours: ResNet, timm_model: nn.Module) -> ResNet:
    """Copy the weights of timm's ``res2net50_26w_4s`` (or another ``res2net50_*``) into ours,
    by the explicit name rules above; every tensor must find its counterpart.

    Returns:
        ``ours``, now computing the same function as ``timm_model``.
    """
    return copy_weights(ours, timm_model, lambda n: rename(n, _TIMM_RULES))


# --------------------------------------------------------------------------- receptive fields


def split_receptive_fields(module: nn.Module, in_channels: int, size: int = 33,
                           layer: nn.Module | None = None, samples: int = 2) -> torch.Tensor:
    """The receptive field of each channel, measured by input gradients: the side of the
    square of input pixels on which the centre output of that channel depends.

    For each output channel ``c`` the gradient of ``sum_b out[b, c, centre]`` with respect
    to the input is taken over ``samples`` random inputs; the pixels with a non-zero
    gradient are the ones that reach it, and the side of their bounding box is returned.
    The ReLUs (``nn.ReLU`` modules) pass their input unchanged during the measurement: a
    unit that happens to be inactive for every sample would otherwise hide its paths, and
    the receptive field is a property of the wiring, not of the weights.
    Measured at ``layer``'s input (e.g. a bottleneck's ``conv3``, to see its groups before
    they are mixed) or at ``module``'s output.

    Args:
        module: a block, in eval mode for BN (it is left in the mode it was in).
        in_channels: its input channels.
        size: height and width of the random inputs (odd, so there is a centre pixel; large
            enough that the fields do not reach the border).
        layer: a submodule of ``module``; ``None`` measures ``module``'s output.
        samples: random inputs.

    Returns:
        An int64 tensor with one receptive-field side per channel.
    """
    check_positive(in_channels=in_channels, size=size, samples=samples)
    if size % 2 == 0:
        raise ValueError(f"size={size} must be odd, so that the output has a centre pixel")
    captured: list[torch.Tensor] = []
    handles = [layer.register_forward_pre_hook(lambda m, args: captured.append(args[0]))] if layer else []
    relus = [m for m in module.modules() if isinstance(m, nn.ReLU)]
    inplace = [m.inplace for m in relus]
    for m in relus:  # identity instead of the ReLU: return the input the ReLU received
        m.inplace = False
        handles.append(m.register_forward_hook(lambda m, args, out: args[0]))
    was_training = module.training
    module.eval()
    try:
        x = torch.randn(samples, in_channels, size, size, generator=torch.Generator().manual_seed(0),
                        requires_grad=True)
        out = module(x)
        if layer is not None:
            if not captured:
                raise ValueError("layer is not called in module's forward pass: pass one of its submodules")
            out = captured[0]
        h, w = out.shape[-2] // 2, out.shape[-1] // 2
        sides = []
        for c in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, c, h, w].sum(), x, retain_graph=True)
            reached = g.abs().sum((0, 1)) > 0  # (H, W): pixels with a path to this output
            rows, cols = reached.any(1).nonzero(), reached.any(0).nonzero()
            side = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1 if len(rows) else 0
            sides.append(side)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in zip(relus, inplace):
            m.inplace = flag
        module.train(was_training)
    return torch.tensor(sides, dtype=torch.int64)
