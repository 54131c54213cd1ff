"""DCGAN: the deep convolutional generator and discriminator.

Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016, arXiv:1511.06434.

The paper's architecture guidelines (Sec. 3), each one a line of code below:

* no pooling: the discriminator downsamples with strided convolutions, the generator
  upsamples with fractionally strided (transposed) convolutions;
* BatchNorm in both networks, except on the generator's output layer and the
  discriminator's input layer (normalising those made samples oscillate, Sec. 3);
* no fully connected hidden layers: the generator's first layer projects ``z`` to a
  small ``s0 x s0`` map and the discriminator's last layer reads its ``s0 x s0`` map into
  one number; both are written as convolutions whose kernel covers the whole map,
  which is exactly the matrix multiplication the paper describes;
* ReLU in the generator with ``tanh`` on the output, LeakyReLU (slope 0.2, Sec. 4) in
  the discriminator.

The paper's networks are for 64x64 images. Here the number of doublings follows the
image size: ``image_size = s0 * 2**n`` with a start size ``s0`` in 4..7, so 32x32
CIFAR-10 images grow 4 -> 8 -> 16 -> 32 (n = 3), 28x28 Fashion-MNIST images grow
7 -> 14 -> 28 (n = 2), and 64x64 images 4 -> 8 -> 16 -> 32 -> 64 like the paper's.
Every doubling is a transposed convolution with kernel 4, stride 2, padding 1:
``(s - 1)*2 - 2*1 + (4 - 1) + 1 = 2s``; every halving in the discriminator is its
mirror image, a convolution with the same numbers: ``floor((2s + 2 - 4)/2) + 1 = s``.

The discriminator returns *logits* of shape ``(B,)``, not probabilities: training uses
``binary_cross_entropy_with_logits``, which is exact where ``log(sigmoid(x))`` computed
in two steps underflows.

The factories are **not** registered in the model registry: its contract is a classifier
that takes ``num_classes`` and maps images to ``(B, num_classes)`` logits, and the
registry-wide tests feed every registered model images. A generator takes noise and a
discriminator has no classes, so ``create_model`` would only mislead. Build them with
:func:`dcgan_generator` / :func:`dcgan_discriminator` (or :func:`dcgan` for the pair).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..measure import conv2d_output_size, conv_transpose2d_output_size
from .layers import check_positive

__all__ = [
    "DCGANConfig", "LayerSpec", "Generator", "Discriminator", "weights_init",
    "generator_table", "discriminator_table", "dcgan_generator", "dcgan_discriminator", "dcgan",
]

# Every doubling (generator) and halving (discriminator): kernel 4, stride 2, padding 1,
# the numbers of the authors' reference code. The stride divides the kernel, so every
# output pixel of a transposed convolution receives the same number of kernel taps (2x2);
# a kernel the stride does not divide overlaps unevenly and prints a checkerboard
# (Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016).
_UP_KERNEL, _UP_STRIDE, _UP_PADDING = 4, 2, 1


@dataclass(frozen=True)
class DCGANConfig:
    """The numbers that fix a DCGAN pair."""

    image_size: int = 32  # side of the square images; s0 * 2**n with s0 in 4..7 and n >= 1
    channels: int = 3  # image channels: 3 for CIFAR-10, 1 for Fashion-MNIST
    nz: int = 100  # length of the latent vector z (100 in the paper, Sec. 4 and Fig. 1)
    ngf: int = 64  # generator width: channels of its last hidden layer, doubled per layer before it
    ndf: int = 64  # discriminator width: channels of its first layer, doubled per layer after it

    def __post_init__(self) -> None:
        check_positive(image_size=self.image_size, channels=self.channels, nz=self.nz,
                       ngf=self.ngf, ndf=self.ndf)
        for name in ("image_size", "channels", "nz", "ngf", "ndf"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an int, got {getattr(self, name)!r}")
        _ = self.start_and_doublings  # raises ValueError for an image_size no generator can draw

    @property
    def start_and_doublings(self) -> tuple[int, int]:
        """``(s0, n)`` with ``image_size == s0 * 2**n``, ``4 <= s0 <= 7`` and ``n >= 1``."""
        s, n = self.image_size, 0
        while s % 2 == 0 and s > 7:  # halve while the result is still an integer >= 4
            s, n = s // 2, n + 1
        if n == 0 or not 4 <= s <= 7:
            raise ValueError(
                f"image_size={self.image_size} cannot be produced: it must be s0 * 2**n with a start "
                f"size s0 in 4..7 and n >= 1 doublings, e.g. 28 (7*4), 32 (4*8) or 64 (4*16)")
        return s, n


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of a DCGAN network: one row of the architecture table."""

    name: str  # where the layer sits: "stem", "stages.up1", "head", ...
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    in_size: int  # spatial side of the input map
    out_size: int  # spatial side of the output map, from the output-size formula
    norm: bool  # BatchNorm after the convolution (then the convolution has no bias)


def generator_table(config: DCGANConfig) -> tuple[LayerSpec, ...]:
    """The generator's transposed convolutions, first to last.

    Widths halve as the maps double, ending at ``ngf`` before the output layer. For
    the 32x32 default: ``z (100, 1x1) -> 256 @ 4x4 -> 128 @ 8x8 -> 64 @ 16x16 -> 3 @ 32x32``.
    """
    s0, n = config.start_and_doublings
    width = lambda i: config.ngf * 2 ** (n - 1 - i)  # channels after layer i (i = 0 is the stem)
    # The stem: a k = s0 transposed convolution of a 1x1 map is the paper's "project and
    # reshape" matrix multiplication, z (nz) -> (width(0), s0, s0).
    rows = [LayerSpec("stem", config.nz, width(0), s0, 1, 0, 1,
                      conv_transpose2d_output_size(1, s0, 1, 0), norm=True)]
    size = rows[0].out_size
    for i in range(1, n + 1):
        last = i == n
        out_ch = config.channels if last else width(i)
        out_size = conv_transpose2d_output_size(size, _UP_KERNEL, _UP_STRIDE, _UP_PADDING)
        rows.append(LayerSpec("head" if last else f"stages.up{i}", width(i - 1), out_ch,
                              _UP_KERNEL, _UP_STRIDE, _UP_PADDING, size, out_size, norm=not last))
        size = out_size
    if size != config.image_size:  # a guard on the arithmetic above; cannot fire for valid configs
        raise AssertionError(f"generator table ends at {size}x{size}, not {config.image_size}")
    return tuple(rows)


def discriminator_table(config: DCGANConfig) -> tuple[LayerSpec, ...]:
    """The discriminator's convolutions, first to last: the generator's table mirrored.

    For the 32x32 default: ``3 @ 32x32 -> 64 @ 16x16 -> 128 @ 8x8 -> 256 @ 4x4 -> 1 @ 1x1``.
    The first layer has no BatchNorm (Sec. 3).
    """
    s0, n = config.start_and_doublings
    rows, size, in_ch = [], config.image_size, config.channels
    for i in range(n):
        out_ch = config.ndf * 2 ** i
        out_size = conv2d_output_size(size, _UP_KERNEL, _UP_STRIDE, _UP_PADDING)
        rows.append(LayerSpec("stem" if i == 0 else f"stages.down{i}", in_ch, out_ch,
                              _UP_KERNEL, _UP_STRIDE, _UP_PADDING, size, out_size, norm=i > 0))
        size, in_ch = out_size, out_ch
    # The head: a k = s0 convolution over the whole s0 x s0 map, one logit per image.
    rows.append(LayerSpec("head", in_ch, 1, s0, 1, 0, size, conv2d_output_size(size, s0, 1, 0), norm=False))
    if size != s0 or rows[-1].out_size != 1:  # a guard on the arithmetic above
        raise AssertionError(f"discriminator table ends at {size}x{size}, expected {s0}x{s0} -> 1x1")
    return tuple(rows)


def _layer(spec: LayerSpec, transposed: bool, act: nn.Module) -> nn.Sequential:
    """Convolution (transposed or not) [-> BatchNorm] -> activation, from one table row."""
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    # A bias in front of BatchNorm is cancelled by its mean subtraction: only the layers
    # without BatchNorm get one.
    layers: list[nn.Module] = [conv_cls(spec.in_channels, spec.out_channels, spec.kernel_size,
                                        spec.stride, spec.padding, bias=not spec.norm)]
    if spec.norm:
        layers.append(nn.BatchNorm2d(spec.out_channels))
    layers.append(act)
    return nn.Sequential(*layers)


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation, applied with ``model.apply(weights_init)``.

    Convolution weights ~ N(0, 0.02) (Radford et al. 2016, Sec. 4); BatchNorm scales
    ~ N(1, 0.02) and every bias 0, as in the authors' Torch code and PyTorch's DCGAN
    example. Other modules are left alone.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """DCGAN generator: ``stem`` (project z) -> ``stages`` (doublings) -> ``head`` (to pixels, tanh).

    Args:
        config: the sizes; see :class:`DCGANConfig`.

    Input ``z`` of shape ``(B, nz)`` or ``(B, nz, 1, 1)``; output images
    ``(B, channels, image_size, image_size)`` in [-1, 1].
    """

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        if not isinstance(config, DCGANConfig):
            raise ValueError(f"config must be a DCGANConfig, got {type(config).__name__}")
        self.config = config
        self.nz, self.channels, self.image_size = config.nz, config.channels, config.image_size
        table = generator_table(config)
        # (B, nz, 1, 1) -> (B, ngf * 2**(n-1), s0, s0)
        self.stem = _layer(table[0], transposed=True, act=nn.ReLU(inplace=True))
        # each stage: (B, C, s, s) -> (B, C/2, 2s, 2s)
        self.stages = nn.Sequential()
        for spec in table[1:-1]:
            self.stages.add_module(spec.name.split(".")[-1], _layer(spec, transposed=True, act=nn.ReLU(inplace=True)))
        # (B, ngf, H/2, W/2) -> (B, channels, H, W); tanh bounds pixels to [-1, 1], the range
        # the real images are scaled to (Sec. 3: "bounded activation ... learn more quickly").
        self.head = _layer(table[-1], transposed=True, act=nn.Tanh())
        self.apply(weights_init)

    def forward_features(self, z: torch.Tensor) -> torch.Tensor:
        """The last hidden map, ``(B, ngf, image_size/2, image_size/2)``."""
        if z.ndim == 2:
            z = z[:, :, None, None]  # (B, nz) -> (B, nz, 1, 1)
        if z.ndim != 4 or z.shape[1] != self.nz or z.shape[2:] != (1, 1):
            raise ValueError(
                f"the generator expects z of shape (B, {self.nz}) or (B, {self.nz}, 1, 1), got {tuple(z.shape)}")
        return self.stages(self.stem(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(z))


class Discriminator(nn.Module):
    """DCGAN discriminator: ``stem`` (no BatchNorm) -> ``stages`` (halvings) -> ``head`` (one logit).

    Args:
        config: the sizes; see :class:`DCGANConfig` (``nz`` and ``ngf`` are not used).

    Input images ``(B, channels, image_size, image_size)`` in [-1, 1]; output logits
    ``(B,)``: ``sigmoid(logit)`` is the probability that the image is real.
    """

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        if not isinstance(config, DCGANConfig):
            raise ValueError(f"config must be a DCGANConfig, got {type(config).__name__}")
        self.config = config
        self.channels, self.image_size = config.channels, config.image_size
        table = discriminator_table(config)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # slope 0.2 (Sec. 4)
        # (B, channels, H, W) -> (B, ndf, H/2, W/2)
        self.stem = _layer(table[0], transposed=False, act=act())
        # each stage: (B, C, s, s) -> (B, 2C, s/2, s/2)
        self.stages = nn.Sequential()
        for spec in table[1:-1]:
            self.stages.add_module(spec.name.split(".")[-1], _layer(spec, transposed=False, act=act()))
        head = table[-1]
        # (B, C, s0, s0) -> (B, 1, 1, 1) -> (B,)
        self.head = nn.Sequential(
            nn.Conv2d(head.in_channels, head.out_channels, head.kernel_size, head.stride, head.padding),
            nn.Flatten(0),
        )
        self.apply(weights_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden map ``(B, ndf * 2**(n-1), s0, s0)``; the paper (Sec. 5.1) pools
        such features for its CIFAR-10 classification experiment."""
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"the discriminator expects images of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def dcgan_generator(image_size: int = 32, channels: int = 3, nz: int = 100, ngf: int = 64) -> Generator:
    """DCGAN generator for ``image_size`` x ``image_size`` images (32 for CIFAR-10, 28 for
    Fashion-MNIST with ``channels=1``).

    Raises:
        ValueError: a size is not positive or ``image_size`` is not ``s0 * 2**n``, ``s0`` in 4..7.
    """
    return Generator(DCGANConfig(image_size=image_size, channels=channels, nz=nz, ngf=ngf))


def dcgan_discriminator(image_size: int = 32, channels: int = 3, ndf: int = 64) -> Discriminator:
    """DCGAN discriminator for ``image_size`` x ``image_size`` images; returns logits ``(B,)``.

    Raises:
        ValueError: a size is not positive or ``image_size`` is not ``s0 * 2**n``, ``s0`` in 4..7.
    """
    return Discriminator(DCGANConfig(image_size=image_size, channels=channels, ndf=ndf))


def dcgan(image_size: int = 32, channels: int = 3, nz: int = 100, ngf: int = 64,
          ndf: int = 64) -> tuple[Generator, Discriminator]:
    """A matching ``(generator, discriminator)`` pair built from one :class:`DCGANConfig`."""
    config = DCGANConfig(image_size=image_size, channels=channels, nz=nz, ngf=ngf, ndf=ndf)
    return Generator(config), Discriminator(config)
