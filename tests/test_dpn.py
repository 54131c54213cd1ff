"""Dual path networks: the dual path block's channel arithmetic and DPN-68 equal to timm's."""
from __future__ import annotations

import pytest
import torch

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.dpn import DPNConfig, DualPathBlock, load_timm_dpn
from cnnlearn.models.weights import randomize_batchnorm
from conftest import assert_equivalent, demanding_reference


def test_dual_path_block_adds_to_the_residual_path_and_appends_to_the_dense_path():
    torch.manual_seed(0)
    first = randomize_batchnorm(DualPathBlock(10, residual_channels=64, increment=16, mid_channels=128,
                                              stride=1)).eval()
    assert first.out_channels == 64 + 3 * 16  # projection: 64 + 2*16, then +16
    block = randomize_batchnorm(DualPathBlock(112, 64, 16, 128)).eval()
    assert block.shortcut is None and block.out_channels == 128
    x = torch.randn(2, 112, 8, 8)
    with torch.no_grad():
        out, branch = block(x), block.conv3(block.conv2(block.conv1(x)))
    assert out.shape == (2, 128, 8, 8) and branch.shape == (2, 64 + 16, 8, 8)
    torch.testing.assert_close(out[:, :64], x[:, :64] + branch[:, :64])  # residual: re-used, added to
    assert torch.equal(out[:, 64:112], x[:, 64:])  # dense: the old features kept as they are
    assert torch.equal(out[:, 112:], branch[:, 64:])  # ... and 16 new ones appended
    assert block.conv2[2].groups == 32


def test_dpn68_equals_timm():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours, theirs = create_model("dpn68"), timm.create_model("dpn68")
        assert count_params(ours) == count_params(theirs) == 12_611_602
        assert count_macs(ours, (3, 224, 224)) == count_macs(theirs, (3, 224, 224))
    # stages end with 64 + (3+2)*16, 128 + (4+2)*32, 256 + (12+2)*32, 512 + (3+2)*64 channels
    assert [s[-1].out_channels for s in ours.stages] == [144, 320, 704, 832] and ours.num_features == 832
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model("dpn68"), 64)
    ours = load_timm_dpn(create_model("dpn68"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 64, 64))


def test_dpn92_counts_equal_timm():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        assert count_params(create_model("dpn92")) == count_params(timm.create_model("dpn92")) == 37_668_392


def test_dpn_forward_backward_and_bad_arguments():
    torch.manual_seed(0)
    model = create_model("dpn68", num_classes=5).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="must exceed residual_channels"):
        DualPathBlock(64, 64, 16, 128)
    with pytest.raises(ValueError, match="groups=32 must divide mid_channels=48"):
        DualPathBlock(10, 64, 16, 48, stride=1)
    with pytest.raises(ValueError, match="one entry per stage"):
        DPNConfig((3, 4), (16,), (64, 128), 128)
