"""Harmonic densely connected networks: the harmonic dense block, CIO, and HarDNet-68.

Chao, Kao, Ruan, Huang, Lin, "HarDNet: A Low Memory Traffic Network", ICCV 2019,
arXiv:1909.00948.

A DenseNet layer reads every earlier layer of its block; moving those concatenated maps
in and out of memory, not the multiply-adds, then bounds the speed. HarDNet keeps a
logarithmic number of connections: layer ``k`` reads layer ``k - 2^n`` for every ``n``
with ``2^n`` dividing ``k`` (layer 0 is the block's input), so odd layers read only
their predecessor and layer 8 reads layers 7, 6, 4 and 0 (Sec. 3.1, Fig. 2). A layer
that many later layers read is given more channels: ``k * m^j`` with ``j`` the number
of its incoming links beyond the first (``m``, 1.6-1.7, the channel multiplier). The
block outputs its odd layers and its last layer, concatenated.

The paper's measure of memory traffic is CIO, the "convolutional input/output": the
sum over all convolutions of the sizes of their input and output tensors (Sec. 3, Eq. 1;
:func:`cio`). With the harmonic pattern, fewer and smaller concatenations are read.

``hardnet68`` follows the authors' PyTorch code (ConvLayer = conv-BN-ReLU6, transitions of
a 1x1 convolution and max-pooling); timm has no HarDNet to compare outputs with, so the
tests check its parameter count against the paper's 17.6 M.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .layers import ConvBNAct, check_images, check_positive
from .registry import register_model

__all__ = ["harmonic_links", "dense_links", "harmonic_widths", "HarmonicDenseBlock", "PlainDenseBlock",
           "cio", "HarDNetConfig", "HarDNet", "hardnet68"]


def harmonic_links(num_layers: int) -> list[list[int]]:
    """The layers each layer of a harmonic dense block reads (Chao et al. 2019, Sec. 3.1).

    Layer 0 is the block's input; layer ``k`` (1 ... ``num_layers``) reads ``k - 2^n`` for
    every ``n >= 0`` such that ``2^n`` divides ``k``, nearest first.

    Returns:
        ``links[k - 1]``: the sources of layer ``k``, e.g. ``links[7] == [7, 6, 4, 0]``.
    """
    check_positive(num_layers=num_layers)
    links = []
    for k in range(1, num_layers + 1):
        sources, step = [], 1
        while step <= k and k % step == 0:
            sources.append(k - step)
            step *= 2
        links.append(sources)
    return links


def dense_links(num_layers: int) -> list[list[int]]:
    """A DenseNet block's connections: layer ``k`` reads layers ``k - 1, ..., 0``."""
    check_positive(num_layers=num_layers)
    return [list(range(k - 1, -1, -1)) for k in range(1, num_layers + 1)]


def harmonic_widths(num_layers: int, in_channels: int, growth_rate: int, multiplier: float) -> list[int]:
    """Output channels of layers 0 ... ``num_layers`` of a harmonic dense block.

    Layer 0 is the input (``in_channels``); layer ``k`` has ``growth_rate * multiplier^j``
    channels, ``j`` = its number of links minus one, rounded to an even number as the
    authors' code does (``int(int(c + 1) / 2) * 2``).
    """
    widths = [in_channels]
    for sources in harmonic_links(num_layers):
        c = growth_rate * multiplier ** (len(sources) - 1)
        widths.append(int(int(c + 1) / 2) * 2)
    return widths


def _gather(outputs: list[torch.Tensor], sources: Sequence[int]) -> torch.Tensor:
    return outputs[sources[0]] if len(sources) == 1 else torch.cat([outputs[i] for i in sources], 1)


class HarmonicDenseBlock(nn.Module):
    """A harmonic dense block: 3x3 conv-BN-ReLU6 layers connected by :func:`harmonic_links`.

    Args:
        in_channels: channels of the block's input.
        growth_rate: ``k``, channels of a layer with a single link.
        multiplier: ``m``, the channel weighting factor (1.7 in HarDNet-68).
        num_layers: layers in the block.

    Attributes:
        links: the sources of each layer.
        out_channels: the odd layers' and the last layer's channels, summed.
    """

    def __init__(self, in_channels: int, growth_rate: int, multiplier: float, num_layers: int) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, growth_rate=growth_rate, multiplier=multiplier,
                       num_layers=num_layers)
        self.links = harmonic_links(num_layers)
        self.widths = harmonic_widths(num_layers, in_channels, growth_rate, multiplier)
        self.layers = nn.ModuleList(
            ConvBNAct(sum(self.widths[i] for i in sources), self.widths[k], 3, act_layer=nn.ReLU6)
            for k, sources in enumerate(self.links, start=1))
        # The output: the odd layers and the last (even) one; the input and the other even
        # layers, only read inside the block, are dropped (Sec. 3.1).
        self.outputs = [k for k in range(1, num_layers + 1) if k % 2 == 1 or k == num_layers]
        self.out_channels = sum(self.widths[k] for k in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer, sources in zip(self.layers, self.links):
            outputs.append(layer(_gather(outputs, sources)))
        return _gather(outputs, self.outputs)  # (B, out_channels, H, W)


class PlainDenseBlock(nn.Module):
    """The DenseNet block HarDNet is compared with (Fig. 2): every layer a 3x3 conv-BN-ReLU
    of ``growth_rate`` channels reading *all* earlier layers; the output concatenates the
    input and all layers.

    Args:
        in_channels: channels of the block's input.
        growth_rate: ``k``.
        num_layers: layers in the block.
    """

    def __init__(self, in_channels: int, growth_rate: int, num_layers: int) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, growth_rate=growth_rate, num_layers=num_layers)
        self.links = dense_links(num_layers)
        self.layers = nn.ModuleList(ConvBNAct(in_channels + i * growth_rate, growth_rate, 3)
                                    for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(torch.cat(outputs, 1)))
        return torch.cat(outputs, 1)


def cio(model: nn.Module, input_size: Sequence[int]) -> int:
    """CIO: the sum over every convolution of its input's and its output's element count
    for one input (Chao et al. 2019, Eq. 1: ``sum_l c_in * w_in * h_in + c_out * w_out * h_out``).

    A concatenation that feeds a convolution counts as that convolution's input, so the
    more (and the wider) a block's concatenations, the larger its CIO.

    Args:
        model: any module with ``nn.Conv2d`` layers.
        input_size: the shape of one input without the batch, e.g. ``(64, 56, 56)``.

    Returns:
        The CIO in elements (multiply by the bytes per element for bytes).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += inputs[0][0].numel() + output[0].numel()  # one sample of the batch

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        ref = next(model.parameters())
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=ref.device, dtype=ref.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


@dataclass(frozen=True)
class HarDNetConfig:
    """A HarDNet as data: one row per harmonic block (the authors' code, HarDNet-68)."""

    stem_widths: tuple[int, int]  # two convolutions (3x3/2, then 3x3): 32, 64
    growth_rates: tuple[int, ...]  # k per block: 14, 16, 20, 40, 160
    num_layers: tuple[int, ...]  # layers per block: 8, 16, 16, 16, 4
    transition_widths: tuple[int, ...]  # 1x1 convolution after each block: 128, 256, 320, 640, 1024
    downsample: tuple[bool, ...]  # 2x2 max-pooling after the transition: 1, 0, 1, 1, 0
    multiplier: float = 1.7  # m
    dropout: float = 0.1  # before the classifier

    def __post_init__(self) -> None:
        n = len(self.growth_rates)
        if not n or not len(self.num_layers) == len(self.transition_widths) == len(self.downsample) == n:
            raise ValueError("growth_rates, num_layers, transition_widths and downsample need one entry per block")
        check_positive(multiplier=self.multiplier)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


class HarDNet(nn.Module):
    """A HarDNet: ``stem`` -> ``stages`` (each a harmonic ``block``, a 1x1 ``transition`` and
    maybe a ``pool``) -> ``head``.

    Args:
        config: the :class:`HarDNetConfig`.
        num_classes: classes predicted by the head.
    """

    def __init__(self, config: HarDNetConfig, num_classes: int = 1000) -> None:
        super().__init__()
        if not isinstance(config, HarDNetConfig):
            raise ValueError(f"config must be a HarDNetConfig, got {type(config).__name__}")
        check_positive(num_classes=num_classes)
        self.config = cfg = config
        w1, w2 = cfg.stem_widths
        self.stem = nn.Sequential(OrderedDict(
            conv1=ConvBNAct(3, w1, 3, stride=2, act_layer=nn.ReLU6),  # (B, 3, 224, 224) -> (B, 32, 112, 112)
            conv2=ConvBNAct(w1, w2, 3, act_layer=nn.ReLU6),
            pool=nn.MaxPool2d(3, 2, padding=1),  # -> (B, 64, 56, 56)
        ))
        c = w2
        self.stages = nn.Sequential()
        for i, (k, n, t, down) in enumerate(zip(cfg.growth_rates, cfg.num_layers, cfg.transition_widths,
                                                cfg.downsample)):
            block = HarmonicDenseBlock(c, k, cfg.multiplier, n)
            stage = nn.Sequential(OrderedDict(block=block,
                                              transition=ConvBNAct(block.out_channels, t, 1, act_layer=nn.ReLU6)))
            if down:
                stage.add_module("pool", nn.MaxPool2d(2, 2))
            self.stages.add_module(f"stage{i + 1}", stage)
            c = t
        self.num_features = c
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),  # (B, 1024, 7, 7) -> (B, 1024, 1, 1)
            flatten=nn.Flatten(),
            dropout=nn.Dropout(cfg.dropout),
            fc=nn.Linear(c, num_classes),
        ))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_features, H/32, W/32)``."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="HarDNet")
        return self.head(self.forward_features(x))


@register_model
def hardnet68(num_classes: int = 1000) -> HarDNet:
    """HarDNet-68: 17,565,348 parameters (the paper: 17.6 M)."""
    return HarDNet(HarDNetConfig((32, 64), (14, 16, 20, 40, 160), (8, 16, 16, 16, 4),
                                 (128, 256, 320, 640, 1024), (True, False, True, True, False)), num_classes)
