"""Dilated (atrous) convolution: which input pixels reach one output, and the gridding problem.

Yu, Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016,
arXiv:1511.07122: stacking 3x3 convolutions with dilations 1, 2, 4, ... grows the
receptive field exponentially (``2^(i+2) - 1`` after layer ``i``, counting from 0) at a
constant number of parameters per layer, and without holes.

Wang, Chen, Yuan, Liu, Huang, Hou, Cottrell, "Understanding Convolution for Semantic
Segmentation", WACV 2018, arXiv:1702.08502: the same dilation stacked (e.g. 2, 2, 2)
reaches only a checkerboard of the receptive field, "gridding"; a hybrid schedule such as
1, 2, 3 ("hybrid dilated convolution", HDC) covers it all.

The receptive field's *size* is :func:`cnnlearn.measure.receptive_field`; this module
gives its *shape*: the set of input offsets that an output pixel depends on.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import _validate as V

__all__ = ["dilated_footprint", "covered_fraction"]


def dilated_footprint(dilations: Sequence[int], kernel_size: int = 3) -> torch.Tensor:
    """How many paths lead from each input pixel to one output pixel of a stack of
    stride-1 ``kernel_size`` x ``kernel_size`` convolutions with the given dilations.

    An output depends on input offset ``o`` (relative to its own position) when ``o`` is
    a sum of one tap offset per layer, tap offsets of layer ``i`` being
    ``d_i * (-(k-1)/2, ..., (k-1)/2)`` in each direction. Counting the ways is a
    convolution: start from a single 1 and convolve (full, no cropping) with each layer's
    dilated all-ones kernel. ``footprint > 0`` is the set of pixels, which the tests
    compare with the input gradient of a real stack.

    Args:
        dilations: one dilation per layer, first layer first, e.g. ``(2, 2, 2)``.
        kernel_size: odd kernel size of every layer.

    Returns:
        An int64 tensor ``(R, R)``, ``R = 1 + sum_i d_i (k - 1)`` the receptive field:
        the number of paths from each input offset to the output at the centre.
    """
    V.positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd, so that an output has a centre pixel")
    if isinstance(dilations, (str, bytes)) or not isinstance(dilations, Sequence) or not dilations:
        raise ValueError(f"dilations must be a non-empty list of ints >= 1, e.g. (1, 2, 4), got {dilations!r}")
    for i, d in enumerate(dilations):
        V.positive_int(f"dilations[{i}]", d)
    counts = torch.ones(1, 1, 1, 1, dtype=torch.float64)  # one output pixel: (1, 1, 1, 1)
    ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    for d in dilations:
        # The transposed convolution scatters every pixel into the k x k taps it reads
        # from: (1, 1, S, S) -> (1, 1, S + d(k-1), S + d(k-1)). Counts are exact in
        # float64 up to 2^53 paths.
        counts = F.conv_transpose2d(counts, ones, dilation=d)
    return counts[0, 0].round().to(torch.int64)


def covered_fraction(footprint: torch.Tensor) -> float:
    """The fraction of the receptive field's square that reaches the output: 1.0 for a
    stack without holes, ``(7/13)^2 = 0.29`` for dilations (2, 2, 2) of 3x3 kernels
    (every other row and column)."""
    footprint = V.tensor("footprint", footprint)
    if footprint.ndim != 2:
        raise ValueError(f"footprint must be a 2-D map (R, R), got shape {tuple(footprint.shape)}")
    return float((footprint > 0).float().mean())
