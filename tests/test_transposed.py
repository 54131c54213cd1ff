"""Convolution as a matrix C and transposed convolution as C^T, against PyTorch; the
transposed convolution's output size."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn import conv_transpose2d_output_size
from cnnlearn.transposed import checkerboard_energy, conv2d_matrix, conv_transpose2d_by_matrix, stride_pattern

CASES = [  # (C_in, C_out, k, (H, W), stride, padding, dilation)
    (1, 1, 3, (4, 4), 1, 0, 1),
    (2, 3, 3, (5, 5), 2, 1, 1),
    (3, 2, 3, (6, 5), 1, 2, 2),
    (2, 2, 4, (8, 8), 2, 1, 1),  # DCGAN's 4x4 stride-2
    (1, 2, 2, (7, 6), 3, 0, 2),
]


@pytest.mark.parametrize("cin, cout, k, size, s, p, d", CASES)
def test_matrix_times_input_is_the_convolution(cin, cout, k, size, s, p, d):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64)
    x = torch.randn(cin, *size, generator=g, dtype=torch.float64)
    C = conv2d_matrix(w, size, s, p, d)
    y = F.conv2d(x[None], w, stride=s, padding=p, dilation=d)[0]
    assert C.shape == (y.numel(), x.numel())
    torch.testing.assert_close(C @ x.flatten(), y.flatten())


@pytest.mark.parametrize("cin, cout, k, size, s, p, d", CASES)
def test_transpose_of_the_matrix_is_the_transposed_convolution(cin, cout, k, size, s, p, d):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64)
    C = conv2d_matrix(w, size, s, p, d)
    out_h = (size[0] + 2 * p - d * (k - 1) - 1) // s + 1
    out_w = (size[1] + 2 * p - d * (k - 1) - 1) // s + 1
    y = torch.randn(cout, out_h, out_w, generator=g, dtype=torch.float64)
    # output_padding puts back the rows/columns the stride's floor division dropped
    op = tuple(size[i] - conv_transpose2d_output_size((out_h, out_w), k, s, p, 0, d)[i] for i in range(2))
    reference = F.conv_transpose2d(y[None], w, stride=s, padding=p, output_padding=op, dilation=d)[0]
    assert reference.shape == (cin, *size)
    torch.testing.assert_close((C.T @ y.flatten()).reshape(cin, *size), reference)
    torch.testing.assert_close(conv_transpose2d_by_matrix(y, w, size, s, p, d), reference)
    # and it is the gradient of the convolution with respect to its input
    x = torch.zeros(1, cin, *size, dtype=torch.float64, requires_grad=True)
    F.conv2d(x, w, stride=s, padding=p, dilation=d).backward(y[None])
    torch.testing.assert_close(x.grad[0], reference)


def test_transposed_convolution_is_not_the_inverse():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)
    C = conv2d_matrix(w, (6, 6), stride=2, padding=1)
    x = torch.randn(36, generator=g, dtype=torch.float64)
    assert C.shape == (9, 36)  # 36 numbers -> 9: no matrix can undo that
    assert torch.linalg.matrix_rank(C.T @ C) <= 9
    assert not torch.allclose(C.T @ (C @ x), x, atol=0.1)


@pytest.mark.parametrize("size, k, s, p, op, d", [
    (4, 4, 2, 1, 0, 1), (4, 3, 2, 1, 1, 1), (5, 3, 3, 0, 2, 1), (7, 5, 1, 2, 0, 2), (3, 3, 2, 0, 1, 3),
    ((4, 6), (3, 4), (2, 1), (1, 0), (1, 0), (1, 2)), (1, 1, 1, 0, 0, 1), (8, 2, 2, 0, 0, 1),
])
def test_conv_transpose2d_output_size_matches_pytorch(size, k, s, p, op, d):
    hw = (size, size) if isinstance(size, int) else size
    layer = nn.ConvTranspose2d(1, 1, k, s, p, op, dilation=d, bias=False)
    expected = conv_transpose2d_output_size(size, k, s, p, op, d)
    assert (expected if isinstance(expected, tuple) else (expected, expected)) == tuple(
        layer(torch.zeros(1, 1, *hw)).shape[-2:])


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        conv2d_matrix(torch.ones(3, 3), (4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_matrix(torch.ones(1, 1, 5, 5), (3, 3))
    with pytest.raises(ValueError, match="stride"):
        conv2d_matrix(torch.ones(1, 1, 3, 3), (4, 4), stride=0)
    with pytest.raises(ValueError, match="padding"):
        conv2d_matrix(torch.ones(1, 1, 3, 3), (4, 4), padding=-1)
    with pytest.raises(ValueError, match="input_size"):
        conv2d_matrix(torch.ones(1, 1, 3, 3), (0, 4))
    with pytest.raises(ValueError, match="outputs"):
        conv_transpose2d_by_matrix(torch.ones(5), torch.ones(1, 1, 3, 3), (4, 4))


def test_stride_pattern_is_the_fourier_component_at_the_strides_frequencies():
    g = torch.Generator().manual_seed(0)
    for s, (h, w) in ((2, (16, 16)), (4, (12, 8)), (3, (9, 6))):
        x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
        keep = torch.zeros(h, w, dtype=torch.bool)
        keep[::h // s, ::w // s] = True
        keep[0, 0] = False  # the mean is no pattern
        reference = torch.fft.ifft2(torch.fft.fft2(x) * keep).real
        torch.testing.assert_close(stride_pattern(x, s), reference)


def test_checkerboard_energy_of_uneven_and_even_overlap():
    ones = torch.ones(1, 1, 8, 8)
    # kernel 3, stride 2: output pixels receive 1 or 2 (or 4) taps alternately, a pure
    # period-2 pattern away from the border (Odena et al. 2016)
    uneven = F.conv_transpose2d(ones, torch.ones(1, 1, 3, 3), stride=2)[..., 2:14, 2:14]
    assert checkerboard_energy(uneven, 2).item() == pytest.approx(1.0)
    # kernel 4, stride 2: every output pixel receives the same number of taps
    even = F.conv_transpose2d(ones, torch.ones(1, 1, 4, 4), stride=2, padding=1)
    assert checkerboard_energy(even, 2).item() == pytest.approx(0.0, abs=1e-12)
    # resize then convolve: no pattern either
    resized = F.conv2d(F.interpolate(ones, scale_factor=2, mode="nearest"), torch.ones(1, 1, 3, 3), padding=1)
    assert checkerboard_energy(resized, 2).item() == pytest.approx(0.0, abs=1e-12)
    # white noise has about (s^2 - 1) / (H W) of its variance there; a constant map none
    noise = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert checkerboard_energy(noise, 2).mean().item() == pytest.approx(3 / 1024, rel=0.2)
    assert checkerboard_energy(torch.full((4, 4), 2.0), 2).item() == 0.0


def test_checkerboard_bad_arguments():
    with pytest.raises(ValueError, match="divide"):
        checkerboard_energy(torch.zeros(1, 5, 6), 2)
    with pytest.raises(ValueError, match="stride"):
        checkerboard_energy(torch.zeros(4, 4), 1)
    with pytest.raises(ValueError, match="stride"):
        checkerboard_energy(torch.zeros(4, 4), -2)
    with pytest.raises(ValueError, match="maps"):
        checkerboard_energy(torch.zeros(4), 2)
