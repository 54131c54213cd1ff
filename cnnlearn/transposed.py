"""Convolution as a matrix, and transposed convolution as its transpose.

A convolution is linear in its input, so for a fixed weight it is a matrix ``C`` acting
on the flattened input: ``conv2d(x, w).flatten() == C @ x.flatten()``. The *transposed*
convolution (``F.conv_transpose2d``, once called "deconvolution") multiplies by ``C^T``:
it maps the output's shape back to the input's, scattering every value through the same
kernel taps that gathered it. It is the gradient of the convolution with respect to its
input, not its inverse: ``C^T C x != x`` in general (Dumoulin, Visin, "A guide to
convolution arithmetic for deep learning", 2016, arXiv:1603.07285, Sec. 4).

The matrix has ``C_out*H_out*W_out`` rows and ``C_in*H*W`` columns and is mostly zeros:
build it for small sizes only.

A transposed convolution whose kernel size is not a multiple of its stride adds up a
different number of kernel taps at different output phases: the "checkerboard artifact"
(Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016).
:func:`checkerboard_energy` measures it as the share of a map's variance that repeats
with the stride's period.
"""
from __future__ import annotations

import torch

from . import _validate as V
from .measure import conv2d_output_size

__all__ = ["conv2d_matrix", "conv_transpose2d_by_matrix", "checkerboard_energy", "stride_pattern"]


def conv2d_matrix(weight: torch.Tensor, input_size: tuple[int, int], stride: int = 1, padding: int = 0,
                  dilation: int = 1) -> torch.Tensor:
    """The matrix ``C`` of ``F.conv2d(x, weight, stride=stride, padding=padding,
    dilation=dilation)`` (no bias, one group) on inputs of ``input_size``.

    Row ``(o, i, j)`` (output channel, row, column, flattened in that order) holds the
    weights that output pixel reads: ``weight[o, c, a, b]`` in column ``(c, y, x)`` with
    ``y = i*stride - padding + a*dilation``, ``x = j*stride - padding + b*dilation``;
    taps that fall on the zero padding have no column.

    Args:
        weight: ``(C_out, C_in, k_h, k_w)``.
        input_size: ``(H, W)`` of the input.
        stride, padding, dilation: as ``F.conv2d``'s (ints).

    Returns:
        ``C``: ``(C_out*H_out*W_out, C_in*H*W)``, of ``weight``'s dtype.
    """
    weight = V.tensor("weight", weight, ndim=4)
    h, w = V.int_pair("input_size", input_size, minimum=1)
    for name, v in (("stride", stride), ("dilation", dilation)):
        V.positive_int(name, v)
    V.non_negative_int("padding", padding)
    c_out, c_in, kh, kw = weight.shape
    ho, wo = conv2d_output_size((h, w), (kh, kw), stride, padding, dilation)
    C = torch.zeros(c_out * ho * wo, c_in * h * w, dtype=weight.dtype)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                y = i * stride - padding + a * dilation
                if not 0 <= y < h:
                    continue  # the tap reads padding: a zero, no column
                for b in range(kw):
                    x = j * stride - padding + b * dilation
                    if not 0 <= x < w:
                        continue
                    rows = torch.arange(c_out) * ho * wo + i * wo + j  # (C_out,) one row per output channel
                    cols = torch.arange(c_in) * h * w + y * w + x  # (C_in,) the same pixel in every input channel
                    C[rows[:, None], cols[None, :]] = weight[:, :, a, b]
    return C


def conv_transpose2d_by_matrix(y: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int],
                               stride: int = 1, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """``C^T y``: the transposed convolution of ``y`` (one map ``(C_out, H_out, W_out)``)
    as the transpose of :func:`conv2d_matrix`, reshaped to ``(C_in, H, W)``. Equals
    ``F.conv_transpose2d(y, weight, stride, padding, output_padding, dilation=dilation)``
    with the ``output_padding`` that gives back ``input_size``."""
    C = conv2d_matrix(weight, input_size, stride, padding, dilation)
    h, w = V.int_pair("input_size", input_size, minimum=1)
    y = V.tensor("y", y)
    if y.numel() != C.shape[0]:
        raise ValueError(f"y has {y.numel()} values but the convolution of an input of size {(h, w)} by weight "
                         f"{tuple(weight.shape)} has {C.shape[0]} outputs (C_out*H_out*W_out); pass one output map")
    return (C.T @ y.reshape(-1)).reshape(weight.shape[1], h, w)


def _maps(x: torch.Tensor, stride: int) -> torch.Tensor:
    x = V.tensor("x", x)
    V.positive_int("stride", stride)
    if x.ndim < 2:
        raise ValueError(f"x must hold maps (..., H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if stride < 2 or h % stride or w % stride:
        raise ValueError(f"stride={stride} must be >= 2 and divide the map's sides {(h, w)}; crop the map to a "
                         f"multiple of the stride")
    return x.double()


def stride_pattern(x: torch.Tensor, stride: int) -> torch.Tensor:
    """The part of every map that repeats with period ``stride`` in both directions:
    the mean of each of the ``stride x stride`` phases (pixels ``(i, j)`` with the same
    ``(i mod s, j mod s)``), tiled over the map, minus the map's mean.

    In Fourier terms it is the map filtered to the frequencies ``(u, v)`` that are
    multiples of ``H/s`` and ``W/s``, DC removed: the frequencies of a period-``s``
    pattern (a test checks the two agree). ``(..., H, W) -> (..., H, W)`` float64.
    """
    x = _maps(x, stride)
    h, w = x.shape[-2:]
    phases = x.unflatten(-1, (w // stride, stride)).unflatten(-3, (h // stride, stride))  # (..., H/s, s, W/s, s)
    means = phases.mean(dim=(-4, -2), keepdim=True)  # (..., 1, s, 1, s): one mean per phase
    pattern = (means - means.mean(dim=(-3, -1), keepdim=True)).expand_as(phases)
    return pattern.reshape(x.shape)


def checkerboard_energy(x: torch.Tensor, stride: int) -> torch.Tensor:
    """The share of each map's variance at the stride's frequencies: ``sum(p^2) /
    sum((x - mean)^2)`` with ``p`` the :func:`stride_pattern`. 0 for a map without any
    period-``stride`` pattern, 1 for a pure checkerboard; a smooth natural image or a
    random map has about ``(s^2 - 1) / (H W)`` of it (that many of the ``H W`` frequencies).

    Args:
        x: maps ``(..., H, W)`` (e.g. an upsampled image or a network's class
            probabilities), ``H`` and ``W`` multiples of ``stride``.
        stride: the upsampling factor whose artifact to measure (>= 2).

    Returns:
        ``(...)`` float64 in [0, 1]; a constant map (no variance) gives 0.
    """
    pattern = stride_pattern(x, stride)
    x = x.double()
    total = (x - x.mean(dim=(-2, -1), keepdim=True)).pow(2).sum(dim=(-2, -1))
    periodic = pattern.pow(2).sum(dim=(-2, -1))
    return torch.where(total > 0, periodic / total.clamp_min(1e-300), torch.zeros_like(total))
