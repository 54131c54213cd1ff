"""ResNeSt (Zhang et al. 2020): split attention, resnest50d equal to timm's, and SE and SK
as special cases of split attention."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import SplitAttn

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.layers import SqueezeExcite
from cnnlearn.models.resnest import (ResNeStBottleneck, SplitAttention, SplitAttentionConv, load_timm_resnest,
                                     se_from_split_attention, split_attention_from_se)
from cnnlearn.models.weights import copy_weights, randomize_batchnorm
from conftest import assert_equivalent, demanding_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnest50d_params_and_macs_equal_timm():
    with torch.device("meta"):
        ours, theirs = create_model("resnest50d"), timm.create_model("resnest50d")
        assert count_params(ours) == count_params(theirs) == 27_483_240
    macs = count_macs(create_model("resnest50d"))
    assert macs == count_macs(timm.create_model("resnest50d"))
    assert round(macs / 1e9, 2) == 5.37


def test_resnest50d_outputs_equal_timm_after_copying_weights():
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model("resnest50d"), 64)
    ours = load_timm_resnest(create_model("resnest50d"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 64, 64), perturb="stages.stage3.2.conv2.attn.fc2.weight")


@pytest.mark.parametrize("radix, cardinality", [(1, 1), (2, 1), (3, 4), (1, 2)])
def test_split_attention_conv_equals_timm_for_any_radix_and_cardinality(radix, cardinality):
    torch.manual_seed(0)
    c = 12 * radix * cardinality
    theirs = randomize_batchnorm(SplitAttn(c, c, groups=cardinality, radix=radix, norm_layer=nn.BatchNorm2d)).eval()
    ours = SplitAttentionConv(c, c, 1, radix, cardinality).eval()
    copy_weights(ours, theirs, lambda n: n if n.split(".")[0] in ("conv", "bn0") else "attn." + n)
    x = torch.randn(2, c, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_weights_are_a_softmax_over_radix_and_a_sigmoid_at_radix_one():
    torch.manual_seed(0)
    x = torch.randn(3, 3 * 8, 5, 5)
    a = SplitAttention(8, radix=3, cardinality=2, attn_channels=4).eval().weights(x)
    assert a.shape == (3, 3, 8)
    torch.testing.assert_close(a.sum(1), torch.ones(3, 8))
    sa = SplitAttention(8, radix=1, attn_channels=4).eval()
    a = sa.weights(x[:, :8])
    assert a.shape == (3, 1, 8) and (a > 0).all() and (a < 1).all()
    torch.testing.assert_close(sa(x[:, :8]), x[:, :8] * a[:, 0, :, None, None])


def test_se_is_split_attention_with_radix_one_and_back():
    torch.manual_seed(0)
    se = SqueezeExcite(32, 8).eval()
    for p in se.parameters():
        nn.init.normal_(p)
    sa = split_attention_from_se(se).eval()
    assert (sa.radix, sa.cardinality, type(sa.bn1)) == (1, 1, nn.Identity)
    x = torch.randn(2, 32, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), se(x))
        # the other way: ResNeSt's R=1, K=1 attention (with a BN) folds into an SE unit
        sa = randomize_batchnorm(SplitAttention(32, radix=1, cardinality=1, attn_channels=8)).eval()
        torch.testing.assert_close(se_from_split_attention(sa).eval()(x), sa(x), atol=1e-5, rtol=1e-5)
        # the comparison can fail: another SE unit differs
        assert (SqueezeExcite(32, 8)(x) - se(x)).abs().max() > 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="cardinality=3 must divide channels=8"):
        SplitAttention(8, radix=2, cardinality=3, attn_channels=6)
    with pytest.raises(ValueError, match="radix must be an int"):
        SplitAttention(8, radix=1.5)
    with pytest.raises(ValueError, match="groups=4 must divide in_channels=6"):
        SplitAttentionConv(6, 8, radix=2, cardinality=2)
    with pytest.raises(ValueError, match=r"expects \(B, radix\*channels=16"):
        SplitAttention(8, radix=2).weights(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="own attention"):
        ResNeStBottleneck(64, 64, attn_layer=nn.Identity)
    with pytest.raises(ValueError, match="radix=1 and cardinality=1"):
        se_from_split_attention(SplitAttention(8, radix=2))
    with pytest.raises(ValueError, match="ReLU and sigmoid"):
        split_attention_from_se(SqueezeExcite(8, 2, gate_layer=nn.Hardsigmoid))


def test_resnest29_cifar_trains():
    model = create_model("resnest29_cifar").train()
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
