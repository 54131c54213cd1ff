"""Wide ResNets: the CIFAR WRN-d-k family (Zagoruyko and Komodakis 2016) and torchvision's
wide_resnet50_2."""
from __future__ import annotations

import pytest
import torch
import torchvision

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.resnet import load_torchvision_resnet
from cnnlearn.models.wide_resnet import WideBasicBlock, WideResNetConfig, wrn
from conftest import assert_equivalent, demanding_reference


@pytest.mark.parametrize("depth, k, params, paper", [
    (28, 10, 36_479_194, 36.5), (16, 8, 10_961_370, 11.0), (40, 4, 8_949_210, 8.9),  # Table 4
])
def test_wrn_parameter_counts(depth, k, params, paper):
    with torch.device("meta"):
        model = wrn(depth, k)
    assert count_params(model) == params
    assert round(params / 1e6, 1) == paper


def test_wrn_28_10_anatomy_as_data():
    cfg = WideResNetConfig(28, 10)
    assert cfg.blocks_per_stage == 4 and cfg.stage_widths == (160, 320, 640)
    with torch.device("meta"):
        model = create_model("wrn_28_10")
    assert [len(s) for s in model.stages] == [4, 4, 4]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # d = 28 counts the 3x3 convolutions (1 + 2*4*3 = 25), the classifier and, as the
    # paper does, two more: the three 1x1 projections are not counted.
    assert len(convs) == 25
    first = model.stages.stage1[0]
    assert first.shortcut is not None and model.stages.stage1[1].shortcut is None


def test_wrn_forward_backward_and_dropout():
    torch.manual_seed(0)
    model = wrn(10, 2, dropout=0.3).train()
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 128, 8, 8)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    block = WideBasicBlock(8, 8, dropout=0.5).eval()
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(block(x), block(x))  # dropout is off in eval mode
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        wrn(27, 10)
    with pytest.raises(ValueError, match="dropout must be in"):
        wrn(16, 4, dropout=1.0)


def test_wide_resnet50_2_equals_torchvision():
    with torch.device("meta"):
        ours, theirs = create_model("wide_resnet50_2"), torchvision.models.wide_resnet50_2(weights=None)
        assert count_params(ours) == count_params(theirs) == 68_883_240
        macs = count_macs(ours, (3, 224, 224))
        assert macs == count_macs(theirs, (3, 224, 224))
    assert round(macs / 1e9, 2) == 11.40
    torch.manual_seed(0)
    theirs = demanding_reference(torchvision.models.wide_resnet50_2(weights=None), 96)
    ours = load_torchvision_resnet(create_model("wide_resnet50_2"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 96, 96))
