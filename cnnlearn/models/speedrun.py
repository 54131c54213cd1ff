"""A small network built to learn CIFAR-10 fast, after airbench.

Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024, arXiv:2404.00498
(the airbench code). The ideas taken from it, each written here from our own reading:

* a first convolution over 2x2 patches whose filters are fixed to *whiten* the patches
  (the eigenvectors of their covariance, scaled by 1/sqrt(eigenvalue), and their
  negatives), so the first layer starts with decorrelated, equally scaled inputs and
  costs nothing to learn (no bias either, so no gradient is computed through it);
* three stages of "conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU": shallow and
  wide, which a CPU or GPU runs far more efficiently per MAC than a deep thin ResNet;
* BatchNorm without a learned scale (only the shift), since a scale before a ReLU-like
  activation followed by another BN is redundant;
* a global max-pool and a linear head without bias whose logits are divided by a
  constant (9 in airbench), so the loss starts near ln(10).

Its training recipe (label smoothing, a large learning rate with warm-up and linear
decay, Nesterov SGD, lookahead on the weights, flip and translate test-time
augmentation, batch 1024) lives in :mod:`cnnlearn.speedrun`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .. import _validate as V
from .layers import check_images
from .registry import register_model

__all__ = ["SpeedrunConfig", "SpeedrunNet", "ConvGroup", "whitening_filters", "speedrun_cifar", "speedrun_cifar_small"]


@dataclass(frozen=True)
class SpeedrunConfig:
    widths: tuple[int, int, int] = (64, 256, 256)  # output channels of the three stages (airbench94's)
    patch: int = 2  # side of the whitened patches of the first convolution
    logit_scale: float = 1 / 9  # airbench's multiplier of the logits
    bn_momentum: float = 0.4  # PyTorch convention (weight of the new batch); airbench's 0.6 the other way round
    activation: str = "gelu"  # airbench's; "relu" steps are faster on a CPU (GELU is memory-bound there) but learn less
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.widths, tuple) or len(self.widths) != 3:
            raise ValueError(f"widths must hold three stage widths, e.g. (32, 64, 128), got {self.widths!r}")
        for i, w in enumerate(self.widths):
            V.positive_int(f"widths[{i}]", w)
        V.positive_int("patch", self.patch)
        V.positive_float("logit_scale", self.logit_scale)
        V.interval(0.0, 1.0, high_open=False, low_open=True)("bn_momentum", self.bn_momentum)
        V.positive_int("num_classes", self.num_classes)
        V.positive_int("in_channels", self.in_channels)
        _check_activation(self.activation)


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def _check_activation(activation: str) -> str:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
    return activation


def _batch_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    # Only the shift is learned: a scale here is absorbed by the next convolution.
    bn = nn.BatchNorm2d(channels, momentum=momentum, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU: ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``.

    Pooling right after the first convolution halves the cost of everything after it;
    the second convolution then works at the lower resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = 0.4, activation: str = "gelu") -> None:
        super().__init__()
        V.positive_int("in_channels", in_channels), V.positive_int("out_channels", out_channels)
        _check_activation(activation)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = _batch_norm(out_channels, bn_momentum)
        self.act1 = _ACTIVATIONS[activation]()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = _batch_norm(out_channels, bn_momentum)
        self.act2 = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.pool(self.conv1(x))))  # (B, C_out, H/2, W/2)
        return self.act2(self.bn2(self.conv2(x)))


def whitening_filters(images: torch.Tensor, patch: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """Filters that whiten the ``patch`` x ``patch`` patches of ``images``.

    The covariance of all patches (each flattened to ``d = C * patch^2`` numbers) has
    eigenvectors ``v_i`` and eigenvalues ``l_i``; filter ``v_i / sqrt(l_i + eps)`` turns
    a patch into its i-th decorrelated coordinate with unit variance. Each filter and
    its negative are returned (after a ReLU-like activation both signs survive).

    Args:
        images: (N, C, H, W) float images, normalised as the network will see them.
        patch: the side of the patches.
        eps: added to the eigenvalues, so near-constant directions are not blown up.

    Returns:
        (2d, C, patch, patch) filters, the largest-variance directions first.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a (N, C, H, W) float tensor, got {images.dtype} {tuple(images.shape)}")
    c = images.shape[1]
    images = images.detach().float().cpu()  # float64 eigh below: not on every device (MPS)
    patches = images.unfold(2, patch, 1).unfold(3, patch, 1)  # (N, C, H', W', p, p)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * patch * patch)  # (N*H'*W', d)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)  # (d, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).float(), eigenvectors.flip(1).float()
    filters = (eigenvectors / (eigenvalues + eps).sqrt()).T.reshape(-1, c, patch, patch)  # (d, C, p, p)
    return torch.cat([filters, -filters])


class SpeedrunNet(nn.Module):
    """The airbench-style network: whitening stem -> three :class:`ConvGroup` s -> max-pool head.

    Shapes for CIFAR-10 with the default widths:
    ``(B, 3, 32, 32) -> stem (B, 24, 31, 31) -> (B, 64, 15, 15) -> (B, 256, 7, 7) -> (B, 256, 3, 3) -> (B, 10)``.
    """

    def __init__(self, config: SpeedrunConfig = SpeedrunConfig()) -> None:
        super().__init__()
        cfg = self.config = V.instance("config", config, SpeedrunConfig)
        whiten_channels = 2 * cfg.in_channels * cfg.patch ** 2
        # No padding: every output sees a full patch, as the whitening statistics assume.
        self.stem = nn.Sequential()
        # No bias either: with nothing to learn in the first layer, no gradient flows back
        # through it (airbench trains a bias here for 3 epochs; dropping it saves about a
        # tenth of a CPU training step, the backward pass at the largest resolution).
        self.stem.add_module("whiten", nn.Conv2d(cfg.in_channels, whiten_channels, cfg.patch, bias=False))
        self.stem.add_module("act", _ACTIVATIONS[cfg.activation]())
        self.stem.whiten.weight.requires_grad_(False)  # fixed by init_whitening, never trained
        self.stages = nn.Sequential()
        in_ch = whiten_channels
        for i, width in enumerate(cfg.widths):
            self.stages.add_module(f"stage{i + 1}", ConvGroup(in_ch, width, cfg.bn_momentum, cfg.activation))
            in_ch = width
        self.head = nn.Sequential()
        self.head.add_module("pool", nn.AdaptiveMaxPool2d(1))
        self.head.add_module("flatten", nn.Flatten())
        self.head.add_module("fc", nn.Linear(in_ch, cfg.num_classes, bias=False))
        self.logit_scale = cfg.logit_scale
        # Set by init_whitening: training with the stem's random filters frozen would
        # silently train a network with a useless first layer.
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.stem.whiten:
                # PyTorch's default init, then identity (Dirac) filters for the first
                # in_channels outputs (airbench): each convolution starts by passing its
                # input through, which speeds up early training.
                w = m.weight.data
                nn.init.dirac_(w[:min(w.shape[0], w.shape[1])])

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the stem's filters from ``images`` ((N, C, H, W) normalised floats; a few
        thousand training images suffice). See :func:`whitening_filters`."""
        w = self.stem.whiten.weight
        filters = whitening_filters(images.to(w.device), self.config.patch)
        if filters.shape != w.shape:
            raise ValueError(f"images with {images.shape[1]} channels give filters {tuple(filters.shape)}, "
                             f"the stem expects {tuple(w.shape)}")
        w.copy_(filters.to(w.device, w.dtype))
        self.whitened.fill_(True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, self.config.in_channels)
        if self.training and not self.whitened:
            raise ValueError("SpeedrunNet's first layer is not whitened yet: call model.init_whitening(images) "
                             "with a few thousand normalised training images before training (cnnlearn.speedrun."
                             "speedrun does it for you)")
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)) * self.logit_scale


@register_model
def speedrun_cifar(num_classes: int = 10) -> SpeedrunNet:
    """airbench94's widths (64, 256, 256): the GPU record network, about 1.97 M parameters."""
    return SpeedrunNet(SpeedrunConfig(widths=(64, 256, 256), num_classes=num_classes))


@register_model
def speedrun_cifar_small(num_classes: int = 10) -> SpeedrunNet:
    """Widths (32, 64, 128): a sixth of airbench94's MACs (19.9 M against 118 M per image),
    the CPU speedrun's network."""
    return SpeedrunNet(SpeedrunConfig(widths=(32, 64, 128), num_classes=num_classes))
