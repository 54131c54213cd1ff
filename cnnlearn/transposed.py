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
"""
from __future__ import annotations

import torch

from . import _validate as V
from .measure import conv2d_output_size

__all__ = ["conv2d_matrix", "conv_transpose2d_by_matrix"]


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
    return (C.T @ y.reshape(-1)).reshape(weight.shape[1], h, w)
