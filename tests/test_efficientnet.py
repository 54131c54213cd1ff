"""EfficientNet: MBConv, stochastic depth, compound scaling, torchvision equality."""
import math

import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model, list_models
from cnnlearn.models.efficientnet import (
    EFFICIENTNET_B0_STAGES, EFFICIENTNET_SCALES, EfficientNet, MBConv, MBConvStage, StochasticDepth,
    compound_scale, efficientnet_b0, load_torchvision_weights, scaled_stages,
)
from cnnlearn.models.layers import SqueezeExcite

from conftest import assert_equivalent, demanding_reference


# --------------------------------------------------------------------------- torchvision


def test_b0_params_and_macs_equal_torchvision():
    ours, tv = efficientnet_b0(), torchvision.models.efficientnet_b0(weights=None)
    assert count_params(ours) == count_params(tv) == 5_288_548
    macs = count_macs(ours)
    assert macs == count_macs(tv)
    assert round(macs / 1e9, 3) == 0.386  # torchvision's model card


@pytest.mark.parametrize("name,params", [
    ("efficientnet_b1", 7_794_184), ("efficientnet_b2", 9_109_994), ("efficientnet_b3", 12_233_232),
])
def test_scaled_variants_params_equal_torchvision(name, params):
    ours = create_model(name)
    tv = getattr(torchvision.models, name)(weights=None)
    assert count_params(ours) == count_params(tv) == params
    assert [len(s) for s in ours.stages] == [len(s) for s in tv.features[1:-1]]


def test_b0_outputs_equal_torchvision_after_copying_weights():
    torch.manual_seed(0)
    tv = demanding_reference(torchvision.models.efficientnet_b0(weights=None))
    ours = efficientnet_b0()
    load_torchvision_weights(ours, tv)
    # Besides the middle of the network, an SE unit of the last stage must be seen.
    assert_equivalent(ours, tv, torch.randn(2, 3, 224, 224),
                      perturb="stages.stage7.0.se.fc2.weight")


def test_b3_weights_copy_through_the_mapping():
    # B3 has deeper and wider stages than B0: the block-by-block mapping must follow them.
    tv = torchvision.models.efficientnet_b3(weights=None)
    ours = create_model("efficientnet_b3")
    load_torchvision_weights(ours, tv)
    theirs = tv.state_dict()
    assert torch.equal(ours.stages.stage6[5].se.fc2.weight, theirs["features.6.5.block.2.fc2.weight"])
    # MBConv1 blocks have no expansion: their projection is the block's third layer
    assert torch.equal(ours.stages.stage1[1].project[0].weight, theirs["features.1.1.block.2.0.weight"])
    assert torch.equal(ours.head.conv[0].weight, theirs["features.8.0.weight"])


def test_weight_loading_rejects_a_different_architecture():
    with pytest.raises(ValueError, match="blocks"):
        load_torchvision_weights(efficientnet_b0(), torchvision.models.efficientnet_b1(weights=None))
    with pytest.raises(ValueError, match="cannot map"):
        load_torchvision_weights(efficientnet_b0(), torchvision.models.mobilenet_v2(weights=None))


def test_stochastic_depth_schedule_equals_torchvision():
    ours = efficientnet_b0()
    tv = torchvision.models.efficientnet_b0(weights=None)
    ours_p = [m.drop_path.p for m in ours.modules() if isinstance(m, MBConv)]
    tv_p = [m.stochastic_depth.p for m in tv.modules() if isinstance(m, torchvision.models.efficientnet.MBConv)]
    assert ours_p == pytest.approx(tv_p)
    assert ours_p[0] == 0 and ours_p[-1] == pytest.approx(0.2 * 15 / 16)  # 16 blocks in B0


# --------------------------------------------------------------------------- blocks


def test_mbconv_structure():
    block = MBConv(40, 40, expand_ratio=6, kernel_size=5)
    assert block.use_residual
    assert block.depthwise[0].in_channels == 240 and block.depthwise[0].kernel_size == (5, 5)
    assert isinstance(block.se, SqueezeExcite)
    assert block.se.fc1.out_channels == 10  # a quarter of the block's input, not of 240
    assert isinstance(block.se.act, nn.SiLU) and isinstance(block.se.gate, nn.Sigmoid)
    assert isinstance(block.expand[2], nn.SiLU) and len(block.project) == 2  # linear projection
    first = MBConv(32, 16, expand_ratio=1)  # MBConv1: no expansion convolution
    assert isinstance(first.expand, nn.Identity) and not first.use_residual


def test_stochastic_depth_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = StochasticDepth(0.25)
    x = torch.ones(4000, 3, 2, 2)
    y = drop(x)
    per_sample = y.flatten(1)
    # each sample is either dropped entirely or kept and scaled by 1 / (1 - p)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.03
    assert abs(y.mean().item() - 1) < 0.05
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(StochasticDepth(0.0)(x), x)


def test_stochastic_depth_only_touches_the_residual_branch_in_training():
    torch.manual_seed(0)
    block = MBConv(16, 16, expand_ratio=6, drop_prob=0.5).eval()
    x = torch.randn(8, 16, 8, 8)
    with torch.no_grad():
        branch = block.project(block.se(block.depthwise(block.expand(x))))
        assert torch.allclose(block(x), x + branch, atol=1e-6)  # eval: the plain residual
        block.drop_path.train()  # train only the drop, so BN keeps its statistics
        y = block(x)
    dropped = (y - x).flatten(1).abs().sum(1) == 0
    assert 0 < dropped.sum() < 8  # some samples lost the branch, some kept it


# --------------------------------------------------------------------------- compound scaling


def test_compound_scale():
    assert compound_scale(0) == EFFICIENTNET_SCALES["b0"]
    s1 = compound_scale(1)
    assert (s1.depth_mult, s1.width_mult, s1.resolution) == (1.2, 1.1, 258)
    # the constraint alpha * beta^2 * gamma^2 ~ 2 (Tan & Le 2019, Eq. 3): FLOPs double per phi
    assert 1.2 * 1.1 ** 2 * 1.15 ** 2 == pytest.approx(2, abs=0.1)
    # the published B2 is phi = 1 rounded, B3 is phi = 2 rounded
    for phi, name in ((1, "b2"), (2, "b3")):
        s, pub = compound_scale(phi), EFFICIENTNET_SCALES[name]
        assert round(s.width_mult, 1) == pub.width_mult and round(s.depth_mult, 1) == pub.depth_mult
        assert abs(s.resolution - pub.resolution) <= 4


def test_scaled_stages_round_channels_to_8_and_depth_up():
    stages = scaled_stages(EFFICIENTNET_B0_STAGES, width_mult=1.2, depth_mult=1.4)
    # B3's widths: 16 x 1.2 = 19.2 becomes 24, since 16 would lose more than 10%
    assert [s.out_channels for s in stages] == [24, 32, 48, 96, 136, 232, 384]
    assert [s.num_layers for s in stages] == [2, 3, 3, 5, 5, 6, 2]               # B3's depths
    assert all(c % 8 == 0 for c in (s.out_channels for s in stages))


def test_phi_1_costs_what_the_papers_b2_costs():
    s = compound_scale(1)
    scaled = EfficientNet(width_mult=s.width_mult, depth_mult=s.depth_mult)
    macs = count_macs(scaled, (3, s.resolution, s.resolution))
    assert round(macs / 1e9, 1) == 1.0  # B2: 1.0B FLOPs (multiply-adds), Tan & Le 2019, Table 2
    # 2.57x B0's 385,814,752 MACs, more than the formula's 1.92: depth rounds up, and the
    # one-block early stages, where maps are largest, get a second block
    assert 2.4 < macs / 385_814_752 < 2.7


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="width_mult"):
        EfficientNet(width_mult=0)
    with pytest.raises(ValueError, match="depth_mult"):
        EfficientNet(depth_mult=-1)
    with pytest.raises(ValueError, match="expand_ratio"):
        EfficientNet(stages=(MBConvStage(0, 3, 1, 16, 1),))
    with pytest.raises(ValueError, match="expand_ratio"):
        MBConv(16, 16, expand_ratio=0)
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        efficientnet_b0(stochastic_depth_prob=1.0)
    with pytest.raises(ValueError, match="p must be in"):
        StochasticDepth(-0.1)
    with pytest.raises(ValueError, match="phi"):
        compound_scale(-1)


# --------------------------------------------------------------------------- every registered model

MODELS = list_models("efficientnet")


def test_every_family_member_is_registered():
    assert MODELS == ["efficientnet_b0", "efficientnet_b0_cifar", "efficientnet_b1",
                      "efficientnet_b2", "efficientnet_b3"]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    cifar = name.endswith("_cifar")
    # no stochastic depth here: a block dropped for the whole (tiny) batch would get no gradient
    model = create_model(name, stochastic_depth_prob=0.0)
    size, classes = (32, 10) if cifar else (64, 1000)
    x = torch.randn(2, 3, size, size)
    assert model.forward_features(x).shape[-1] == size // (8 if cifar else 32)
    out = model(x)
    assert out.shape == (2, classes)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"
    assert set(dict(model.named_children())) == {"stem", "stages", "head"}


def test_fresh_cifar_network_starts_near_chance_loss():
    # With the authors' +-1/sqrt(num_classes) classifier, 10 classes start with logits about
    # ten times too large (a first loss near 4.4); +-1/sqrt(in_features) starts near ln 10.
    torch.manual_seed(0)
    model = create_model("efficientnet_b0_cifar")
    bound = model.head.classifier.weight.abs().max().item()
    assert bound <= 1 / math.sqrt(model.head.classifier.in_features)
    logits = model(torch.randn(32, 3, 32, 32))
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (32,)))
    assert abs(loss.item() - math.log(10)) < 0.5
