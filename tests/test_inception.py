"""GoogLeNet, Inception v3 and Xception equal to torchvision's and timm's, and the
auxiliary-classifier contract of cnnlearn.models.inception."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model
from cnnlearn.models.inception import (GOOGLENET_TABLE, AuxOutputs, InceptionModule, load_torchvision_googlenet,
                                       load_torchvision_inception_v3)
from cnnlearn.models.weights import copy_weights
from conftest import assert_equivalent, demanding_reference


def test_googlenet_params_and_macs_equal_torchvision():
    theirs = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    ours = create_model("googlenet")
    assert count_params(theirs) == count_params(ours) == 6_624_904
    assert count_macs(ours, (3, 224, 224)) == count_macs(theirs, (3, 224, 224))
    assert round(count_macs(ours, (3, 224, 224)) / 1e9, 3) == 1.498


def test_googlenet_outputs_equal_torchvision_after_copying_weights():
    torch.manual_seed(0)
    theirs = demanding_reference(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True))
    ours = load_torchvision_googlenet(create_model("googlenet"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 224, 224))


def test_googlenet_with_aux_copies_every_tensor_and_returns_aux_outputs_in_training():
    torch.manual_seed(0)
    theirs = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    ours = load_torchvision_googlenet(create_model("googlenet", aux_logits=True), theirs)
    assert count_params(ours) == count_params(theirs)
    x = torch.randn(2, 3, 224, 224)
    for m in (ours, theirs):
        for d in m.modules():  # dropout off, BN in train mode: both sides see the same function
            if isinstance(d, nn.Dropout):
                d.p = 0.0
    ours.train(), theirs.train()
    out, ref = ours(x), theirs(x)
    assert isinstance(out, AuxOutputs) and len(out.aux) == 2 and out.aux_weight == 0.3
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.aux[0], ref.aux_logits1, atol=1e-4, rtol=1e-4)  # after 4a
    torch.testing.assert_close(out.aux[1], ref.aux_logits2, atol=1e-4, rtol=1e-4)  # after 4d
    ours.eval()
    assert isinstance(ours(x), torch.Tensor)  # eval mode: the logits alone


def test_googlenet_is_built_from_table_1():
    ours = create_model("googlenet")
    modules = [m for m in ours.stages if isinstance(m, InceptionModule)]
    rows = [row for _, row in GOOGLENET_TABLE if row is not None]
    assert [m.out_channels for m in modules] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    for m, (c1, c3r, c3, c5r, c5, pp) in zip(modules, rows):
        assert m.branch1.conv.out_channels == c1 and m.branch4[1].conv.out_channels == pp
        assert (m.branch2[0].conv.out_channels, m.branch2[1].conv.out_channels) == (c3r, c3)
        assert (m.branch3[0].conv.out_channels, m.branch3[1].conv.out_channels) == (c5r, c5)
        assert m.branch3[1].conv.kernel_size == (3, 3)  # torchvision's slip


def test_paper_variant_has_5x5_kernels_biases_and_no_batchnorm():
    paper = create_model("googlenet", variant="paper")
    assert all(m.branch3[1].conv.kernel_size == (5, 5) for m in paper.stages if isinstance(m, InceptionModule))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper.modules()) == 2
    # The paper's Table 1 totals about 6.8 M parameters and 1.5 G multiply-adds.
    assert 6.5e6 < count_params(paper) < 7.1e6
    assert 1.4e9 < count_macs(paper, (3, 224, 224)) < 1.7e9
    assert paper(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.raises(ValueError, match="variant"):
        create_model("googlenet", variant="caffe")


def test_inception_v3_params_and_macs_equal_torchvision():
    theirs = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    ours = create_model("inception_v3")
    assert count_params(theirs) == count_params(ours) == 23_834_568
    assert count_macs(ours, (3, 299, 299)) == count_macs(theirs, (3, 299, 299))
    assert round(count_macs(ours, (3, 299, 299)) / 1e9, 3) == 5.713


def test_inception_v3_outputs_equal_torchvision_after_copying_weights():
    torch.manual_seed(0)
    theirs = demanding_reference(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False))
    ours = load_torchvision_inception_v3(create_model("inception_v3"), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 299, 299))


def test_inception_v3_with_aux_copies_every_tensor():
    theirs = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    ours = load_torchvision_inception_v3(create_model("inception_v3", aux_logits=True), theirs)
    assert count_params(ours) == count_params(theirs)
    ours.train()
    out = ours(torch.randn(2, 3, 299, 299))
    assert isinstance(out, AuxOutputs) and len(out.aux) == 1 and out.aux[0].shape == (2, 1000)


def test_xception_equals_timms_legacy_xception():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model("legacy_xception", pretrained=False))
    ours = create_model("xception")
    assert count_params(theirs) == count_params(ours) == 22_855_952  # the paper's Table 3

    def to_ours(key):
        m = re.fullmatch(r"block(\d+)\.(.*)", key)
        if m:
            n, rest = int(m.group(1)), m.group(2)
            where = (f"entry.{n - 1}" if n <= 3 else f"middle.{n - 4}" if n <= 11 else "exit.0")
            rest = re.sub(r"^skip\.", "shortcut.0.", re.sub(r"^skipbn\.", "shortcut.1.", rest))
            rest = re.sub(r"^rep\.", "branch.", rest).replace(".conv1.", ".depthwise.")
            return f"stages.{where}.{rest}"
        m = re.fullmatch(r"(conv[34])\.(conv1|pointwise)\.(.*)", key)
        if m:
            return f"head.{m.group(1)}.{'depthwise' if m.group(2) == 'conv1' else 'pointwise'}.{m.group(3)}"
        m = re.fullmatch(r"(bn[34]|fc)\.(.*)", key)
        if m:
            return f"head.{key}"
        return f"stem.{key}"

    copy_weights(ours, theirs, to_ours)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 96, 96))


def test_cifar_googlenet_keeps_32x32_through_the_first_modules():
    model = create_model("googlenet_cifar")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1024, 8, 8)


def test_auxiliary_classifiers_shrink_with_width():
    # At full size the two heads (conv 128, FC 1024) would outweigh a quarter-width network ten to one.
    narrow = create_model("googlenet_cifar", width=0.25, aux_logits=True)
    head = narrow.aux[next(iter(narrow.aux))]
    assert head.conv.conv.out_channels == 32 and head.fc1.out_features == 256
    with torch.device("meta"):
        full = create_model("googlenet_cifar", width=1.0, aux_logits=True)
    # Channels and hidden units both shrink by 4, so the heads' weights shrink about 16-fold.
    assert sum(p.numel() for p in narrow.aux.parameters()) < sum(p.numel() for p in full.aux.parameters()) / 12
