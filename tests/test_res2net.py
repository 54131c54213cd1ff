"""Res2Net (Gao et al. 2019): the hierarchical bottleneck, its receptive fields, and
res2net50_26w_4s equal to timm's."""
from __future__ import annotations

import pytest
import timm
import torch

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.res2net import Res2NetBottleneck, load_timm_res2net, split_receptive_fields
from cnnlearn.models.resnet import Bottleneck, make_shortcut
from conftest import assert_equivalent, demanding_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def test_res2net50_params_and_macs_equal_timm():
    with torch.device("meta"):
        ours, theirs = create_model("res2net50_26w_4s"), timm.create_model("res2net50_26w_4s")
        assert count_params(ours) == count_params(theirs) == 25_699_120
    assert count_macs(create_model("res2net50_26w_4s")) == count_macs(timm.create_model("res2net50_26w_4s"))
    assert round(count_macs(create_model("res2net50_26w_4s")) / 1e9, 2) == 4.26


def test_res2net50_outputs_equal_timm_after_copying_weights():
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model("res2net50_26w_4s"), 64)
    ours = load_timm_res2net(create_model("res2net50_26w_4s"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 64, 64))


def test_groups_see_receptive_fields_3_5_7_and_1():
    torch.manual_seed(0)
    block = Res2NetBottleneck(64, 64, width_per_group=26 * 4, scale=4)  # w = 26
    fields = split_receptive_fields(block, 64, layer=block.conv3)
    assert fields.view(4, 26).unique(dim=1).flatten().tolist() == [3, 5, 7, 1]
    assert split_receptive_fields(block, 64).unique().tolist() == [7]  # conv3 mixes every group
    plain = Bottleneck(64, 64)
    assert split_receptive_fields(plain, 64, layer=plain.conv3).unique().tolist() == [3]
    assert split_receptive_fields(plain, 64).unique().tolist() == [3]


def test_first_block_of_a_stage_convolves_groups_independently():
    torch.manual_seed(0)
    block = Res2NetBottleneck(64, 256, 1, make_shortcut("B", 64, 256))
    assert block.is_first and isinstance(block.pool, torch.nn.AvgPool2d)
    fields = split_receptive_fields(block, 64, layer=block.conv3).view(4, -1)
    assert fields[:, 0].tolist() == [3, 3, 3, 3]  # the pooled group sees 3x3 too


def test_scale_one_is_a_plain_bottleneck_and_the_block_trains():
    block = Res2NetBottleneck(32, 32, width_per_group=64, scale=1)
    assert len(block.convs) == 1 and count_params(block) == count_params(Bottleneck(32, 32))
    block = Res2NetBottleneck(32, 64, 2, make_shortcut("B", 32, 64, 2), scale=4).train()
    block(torch.randn(2, 32, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale must be a positive number"):
        Res2NetBottleneck(64, 64, scale=0)
    with pytest.raises(ValueError, match="scale must be an int"):
        Res2NetBottleneck(64, 64, scale=2.5)
    with pytest.raises(ValueError, match="multiple of the expansion"):
        Res2NetBottleneck(64, 66)
    with pytest.raises(ValueError, match="leaves no channel"):
        Res2NetBottleneck(16, 16, width_per_group=8)
    with pytest.raises(ValueError, match="changes the shape"):
        Res2NetBottleneck(64, 128)
    with pytest.raises(ValueError, match="must be odd"):
        split_receptive_fields(Res2NetBottleneck(64, 64), 64, size=32)


def test_res2net29_cifar_forward():
    model = create_model("res2net29_cifar")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.stages.stage1[0].width == 6 and model.stages.stage3[0].width == 24
