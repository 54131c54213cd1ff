"""HarDNet: harmonic connections, CIO against a dense block, and HarDNet-68's size."""
from __future__ import annotations

import pytest
import torch

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.hardnet import (HarmonicDenseBlock, PlainDenseBlock, cio, dense_links, harmonic_links,
                                     harmonic_widths)


def test_harmonic_links():
    links = harmonic_links(8)
    # layer k reads k - 2^n for every 2^n dividing k (Chao et al. 2019, Fig. 2)
    assert links == [[0], [1, 0], [2], [3, 2, 0], [4], [5, 4], [6], [7, 6, 4, 0]]
    assert harmonic_links(16)[15] == [15, 14, 12, 8, 0]
    assert dense_links(4) == [[0], [1, 0], [2, 1, 0], [3, 2, 1, 0]]
    # connections: 15 against 8*9/2 = 36; about L log L against L^2 / 2
    assert sum(map(len, harmonic_links(8))) == 15 and sum(map(len, dense_links(8))) == 36
    assert sum(map(len, harmonic_links(16))) == 31 and sum(map(len, dense_links(16))) == 136


def test_harmonic_widths_and_block_output():
    # k = 14, m = 1.7 (HarDNet-68's first block): a layer with j extra links has 14 * 1.7^j channels
    assert harmonic_widths(8, 64, 14, 1.7) == [64, 14, 24, 14, 40, 14, 24, 14, 68]
    block = HarmonicDenseBlock(64, 14, 1.7, 8)
    assert block.outputs == [1, 3, 5, 7, 8] and block.out_channels == 14 * 4 + 68 == 124
    assert [layer[0].in_channels for layer in block.layers] == [64, 78, 24, 102, 40, 54, 24, 142]
    x = torch.randn(2, 64, 8, 8)
    assert block(x).shape == (2, 124, 8, 8)


def test_cio_of_a_harmonic_and_a_dense_block_of_the_same_width():
    # Same input, growth rate and depth; m = 1 so that every harmonic layer has k channels.
    c, k, n, size = 64, 16, 8, 16
    harmonic, dense = HarmonicDenseBlock(c, k, 1.0, n), PlainDenseBlock(c, k, n)
    assert all(layer[0].out_channels == k for layer in harmonic.layers)
    # CIO by hand: each conv reads its concatenated sources and writes k maps of size x size
    hw = size * size
    reads_h = sum(sum(c if i == 0 else k for i in sources) for sources in harmonic_links(n))
    reads_d = sum(c + i * k for i in range(n))
    assert cio(harmonic, (c, size, size)) == (reads_h + n * k) * hw == 143_360
    assert cio(dense, (c, size, size)) == (reads_d + n * k) * hw == 278_528
    # the harmonic block reads fewer maps, so it has fewer parameters and MACs too
    assert count_params(harmonic) < count_params(dense)
    assert count_macs(harmonic, (c, size, size)) < count_macs(dense, (c, size, size))


def test_hardnet68_parameters_match_the_paper():
    with torch.device("meta"):
        model = create_model("hardnet68")
    assert count_params(model) == 17_565_348
    assert round(count_params(model) / 1e6, 1) == 17.6  # Chao et al. 2019 give 17.6 M
    assert [s.block.out_channels for s in model.stages] == [124, 262, 328, 654, 782]


def test_hardnet68_forward_backward():
    torch.manual_seed(0)
    model = create_model("hardnet68", num_classes=7).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="num_layers must be a positive number"):
        harmonic_links(0)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        cio("hardnet68", (3, 32, 32))
