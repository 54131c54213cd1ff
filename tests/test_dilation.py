"""Dilated convolution: output sizes and receptive fields against PyTorch, the footprint
of a dilated stack against input gradients, and the gridding of (2, 2, 2) vs (1, 2, 3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn import conv2d_output_size, conv2d_params, count_params, receptive_field
from cnnlearn.dilation import covered_fraction, dilated_footprint


def _gradient_footprint(dilations, kernel_size=3, size=71) -> torch.Tensor:
    """Input pixels whose gradient reaches the centre output of a real stack (ones as
    weights: positive, so no two paths cancel), cropped to the receptive field."""
    convs = [nn.Conv2d(1, 1, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2, bias=False)
             for d in dilations]
    for c in convs:
        nn.init.ones_(c.weight)
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = nn.Sequential(*convs).double()(x)
    y[0, 0, size // 2, size // 2].backward()
    r = receptive_field([(kernel_size, 1, d) for d in dilations])
    lo = size // 2 - r // 2
    window = x.grad[0, 0, lo:lo + r, lo:lo + r]
    assert x.grad[0, 0].count_nonzero() == window.count_nonzero()  # nothing outside the field
    return window


@pytest.mark.parametrize("size, k, s, p, d", [
    (32, 3, 1, 2, 2), (32, 3, 1, 8, 8), (33, 3, 2, 4, 4), (17, 5, 1, 0, 3), ((20, 13), (3, 5), 2, (1, 4), (2, 2)),
])
def test_dilated_output_size_matches_conv2d(size, k, s, p, d):
    hw = (size, size) if isinstance(size, int) else size
    out = F.conv2d(torch.zeros(1, 1, *hw), torch.zeros(1, 1, *((k, k) if isinstance(k, int) else k)),
                   stride=s, padding=p, dilation=d)
    expected = conv2d_output_size(size, k, s, p, d)
    assert (expected if isinstance(expected, tuple) else (expected, expected)) == tuple(out.shape[-2:])


def test_padding_equal_to_dilation_keeps_the_size():
    for d in (1, 2, 4, 8):
        assert conv2d_output_size(32, 3, 1, d, d) == 32


@pytest.mark.parametrize("n, expected", [(1, 3), (2, 7), (3, 15), (4, 31)])
def test_exponential_receptive_field_at_constant_parameters(n, expected):
    # Yu & Koltun 2016: 3x3 layers with dilations 1, 2, 4, 8 see 2^(n+1) - 1 pixels after n layers.
    dilations = [2 ** i for i in range(n)]
    assert receptive_field([(3, 1, d) for d in dilations]) == expected == 2 ** (n + 1) - 1
    footprint = _gradient_footprint(dilations)
    assert footprint.shape == (expected, expected)
    assert covered_fraction(footprint) == 1.0  # no holes
    layers = [nn.Conv2d(16, 16, 3, dilation=d, padding=d) for d in dilations]
    assert all(count_params(m) == conv2d_params(16, 16, 3) for m in layers)  # dilation is free


@pytest.mark.parametrize("dilations", [(1,), (2,), (2, 2, 2), (1, 2, 3), (1, 2, 4, 8), (3, 3), (1, 1, 5)])
def test_footprint_equals_the_input_gradient(dilations):
    counts = dilated_footprint(dilations)
    measured = _gradient_footprint(dilations)
    # with weights one, the gradient counts the paths from each pixel: the same numbers
    assert torch.equal(counts, measured.round().long())
    assert counts.shape[0] == receptive_field([(3, 1, d) for d in dilations])
    assert int(counts.sum()) == 9 ** len(dilations)  # every choice of one tap per layer


def test_gridding_of_equal_rates_and_the_hybrid_schedule():
    # Wang et al. 2018: (2, 2, 2) reaches only offsets with both coordinates even, 7 of 13
    # per axis; (1, 2, 3) reaches every one of the same 13 x 13 field.
    grid, hybrid = dilated_footprint((2, 2, 2)), dilated_footprint((1, 2, 3))
    assert grid.shape == hybrid.shape == (13, 13)
    assert covered_fraction(grid) == pytest.approx(49 / 169)
    assert covered_fraction(hybrid) == 1.0
    reached = grid > 0
    assert reached[::2, ::2].all() and not reached[1::2].any() and not reached[:, 1::2].any()
    # Yu & Koltun's 1, 2, 4, 8 starts at 1; started at 2 it reaches only the even offsets
    assert covered_fraction(dilated_footprint((2, 4, 8))) == pytest.approx((15 / 29) ** 2)


def test_footprint_bad_arguments():
    with pytest.raises(ValueError, match="non-empty list"):
        dilated_footprint(())
    with pytest.raises(ValueError, match="must be odd"):
        dilated_footprint((1, 2), kernel_size=4)
    with pytest.raises(ValueError, match="dilations"):
        dilated_footprint((1, 0))
    with pytest.raises(ValueError, match="2-D map"):
        covered_fraction(torch.ones(3))
