"""Selective kernel networks (Li et al. 2019): skresnet18 and skresnext50_32x4d equal to timm's."""
from __future__ import annotations

import pytest
import timm
import torch

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.resnest import SplitAttention
from cnnlearn.models.sknet import SelectiveKernel, SKBottleneck, load_timm_skresnet, sk_attn_channels
from conftest import assert_equivalent, demanding_reference

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, params", [("skresnet18", 11_958_056), ("skresnext50_32x4d", 27_479_784)])
def test_params_and_macs_equal_timm(name, params):
    with torch.device("meta"):
        assert count_params(create_model(name)) == count_params(timm.create_model(name)) == params
    assert count_macs(create_model(name), (3, 64, 64)) == count_macs(timm.create_model(name), (3, 64, 64))


@pytest.mark.parametrize("name", ["skresnet18", "skresnext50_32x4d"])
def test_outputs_equal_timm_after_copying_weights(name):
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model(name), 64)
    ours = load_timm_skresnet(create_model(name), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 64, 64), perturb="stages.stage2.0.conv2.attn.fc2.weight"
                      if name == "skresnext50_32x4d" else "stages.stage2.0.conv1.attn.fc2.weight")


def test_sk_select_is_split_attention_across_branches():
    sk = SelectiveKernel(32, 32, dilations=(1, 2, 3), attn_channels=8)
    attn = sk.attn
    assert isinstance(attn, SplitAttention) and (attn.radix, attn.cardinality) == (3, 1)
    assert attn.fc1.bias is None and attn.fc2.bias is None  # SK's fuse and select have no biases
    assert [p[0].dilation for p in sk.paths] == [(1, 1), (2, 2), (3, 3)]
    x = torch.randn(2, 32, 9, 9)
    a = attn.weights(sk.branches(x))
    torch.testing.assert_close(a.sum(1), torch.ones(2, 32))  # a softmax across the three branches


def test_attention_width_is_the_papers_max_c_over_r_and_l():
    assert [sk_attn_channels(c) for c in (128, 256, 512, 1024)] == [32, 32, 32, 64]  # SKNet-50, Table 1
    net = create_model("skresnext50_32x4d")
    assert net.stages.stage4[0].conv2.attn.fc1.out_channels == 64


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least two branches"):
        SelectiveKernel(16, 16, dilations=(1,))
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=15"):
        SelectiveKernel(15, 16, split_input=True)
    with pytest.raises(ValueError, match="multiple of the expansion"):
        SKBottleneck(64, 65)


def test_skresnet29_cifar_trains():
    model = create_model("skresnet29_cifar").train()
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
