"""ResNet family: equal to torchvision/timm, the paper's CIFAR numbers, shortcuts, zero gamma."""
import inspect

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from cnnlearn import conv2d_params, count_macs, count_params, create_model, list_models
from cnnlearn.models.registry import _MODELS
from cnnlearn.models import resnet as R
from cnnlearn.models.resnet import (
    BasicBlock, Bottleneck, PadShortcut, PreActBasicBlock, ResNet, ResNetConfig, make_shortcut,
)

from conftest import assert_equivalent, demanding_reference

RESNET_MODELS = [n for n in list_models() if _MODELS[n].__module__ == R.__name__]
# CIFAR-sized factories default to 10 classes, ImageNet-sized ones to 1000
CIFAR_MODELS = [n for n in RESNET_MODELS
                if inspect.signature(_MODELS[n]).parameters["num_classes"].default == 10]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module: on a small CPU shared with other jobs, threads
    waiting for each other cost more than they gain on these tiny batches (3x the wall
    time with 2 threads under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _inputs(size: int = 224) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- ImageNet: torchvision / timm


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808),
])
def test_params_equal_torchvision(name, expected):
    assert count_params(create_model(name)) == expected
    assert count_params(getattr(torchvision.models, name)(weights=None)) == expected


def test_resnet50_macs_equal_torchvision():
    ours = count_macs(R.resnet50(), (3, 224, 224))
    assert ours == count_macs(torchvision.models.resnet50(weights=None), (3, 224, 224))
    assert round(ours / 1e9, 3) == 4.089


def test_resnet18_macs_equal_torchvision():
    # small input keeps it fast; the count scales with the area for a fully convolutional body
    assert count_macs(R.resnet18(), (3, 64, 64)) == count_macs(torchvision.models.resnet18(weights=None), (3, 64, 64))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_same_outputs(name):
    torch.manual_seed(0)
    theirs = demanding_reference(getattr(torchvision.models, name)(weights=None))
    ours = R.load_torchvision_resnet(create_model(name), theirs)
    assert_equivalent(ours, theirs, _inputs())


def test_resnet50d_equals_timm():
    torch.manual_seed(0)
    theirs = timm.create_model("resnet50d", pretrained=False)
    ours = R.resnet50d()
    assert count_params(ours) == count_params(theirs) == 25_576_264
    demanding_reference(theirs)
    R.load_timm_resnet(ours, theirs)
    assert_equivalent(ours, theirs, _inputs())


def test_resnet18d_equals_timm_and_odd_sizes_work():
    torch.manual_seed(0)
    theirs = timm.create_model("resnet18d", pretrained=False)
    ours = R.resnet18d()
    assert count_params(ours) == count_params(theirs) == 11_708_744
    assert count_macs(ours, (3, 96, 96)) == count_macs(theirs, (3, 96, 96))
    demanding_reference(theirs, size=100)
    R.load_timm_resnet(ours, theirs)
    # 100 px gives odd maps (25 -> 13 -> 7 -> 4): ceil_mode in ResNet-D's pooling keeps
    # the shortcut the same size as the strided 3x3 branch
    assert_equivalent(ours, theirs, _inputs(100))


def test_resnet34d_params_equal_timm():
    assert count_params(R.resnet34d()) == count_params(timm.create_model("resnet34d", pretrained=False)) == 21_816_904


def test_resnet50c_is_resnet50_with_the_deep_stem():
    c, b = R.resnet50c(), R.resnet50()
    stem_c = sum(conv2d_params(i, o, 3, bias=False) + 2 * o for i, o in ((3, 32), (32, 32), (32, 64)))
    stem_b = conv2d_params(3, 64, 7, bias=False) + 2 * 64
    assert count_params(c) - count_params(b) == stem_c - stem_b
    assert count_params(c.stages) == count_params(b.stages)


def test_copy_refuses_a_model_of_another_depth():
    with pytest.raises(ValueError, match="does not have"):
        R.load_torchvision_resnet(R.resnet18(), torchvision.models.resnet34(weights=None))


# --------------------------------------------------------------------------- CIFAR: He et al. 2015, Table 6


@pytest.mark.parametrize("name, n, millions, digits", [
    ("resnet20", 3, 0.27, 2), ("resnet32", 5, 0.46, 2), ("resnet44", 7, 0.66, 2),
    ("resnet56", 9, 0.85, 2), ("resnet110", 18, 1.7, 1),
])
def test_cifar_params_match_table6(name, n, millions, digits):
    model = create_model(name)
    params = count_params(model)
    assert round(params / 1e6, digits) == millions
    plain = create_model(name.replace("resnet", "plain"))
    assert count_params(plain) == params  # option A shortcuts add nothing
    # 6n + 2 weighted layers: 6n 3x3 convs in the blocks, the stem conv and the fc
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * n + 2 == int(name[len("resnet"):])
    # Same parameter names: ResNet-20's weights load into Plain-20 and vice versa
    plain.load_state_dict(model.state_dict())


def test_plain_twin_differs_only_by_the_shortcuts():
    torch.manual_seed(0)
    res, plain = R.resnet20().eval(), R.plain20().eval()
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))
        for block in plain.modules():
            if isinstance(block, BasicBlock):
                assert block.shortcut is None
    # a plain block computes relu(branch(x)); its residual twin adds the shortcut
    rb, pb = res.stages.stage2[1], plain.stages.stage2[1]
    h = torch.rand(2, 32, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rb(h), torch.relu(_branch(pb, h) + h))
        torch.testing.assert_close(pb(h), torch.relu(_branch(pb, h)))


def _branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    return block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    assert count_params(model) < 2_000_000
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 8, 8) and model.num_features in (64, 256)  # basic: 64; bottleneck: 4 x 64
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without a gradient: {no_grad}"
    assert list(dict(model.stages.named_children())) == ["stage1", "stage2", "stage3"]


@pytest.mark.parametrize("name", [n for n in RESNET_MODELS if n not in CIFAR_MODELS])
def test_imagenet_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    expansion = model.config.block.expansion
    assert model.forward_features(x).shape == (2, 512 * expansion, 2, 2)  # 64 / 32 = 2
    out = model(x)
    assert out.shape == (2, 5)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without a gradient: {no_grad}"
    assert list(dict(model.stages.named_children())) == ["stage1", "stage2", "stage3", "stage4"]


def test_preact_network_layout():
    model = R.preact_resnet20()
    assert isinstance(model.stages.stage1[0], PreActBasicBlock)
    assert isinstance(model.final_act.bn, nn.BatchNorm2d)  # the extra BN-ReLU after the last block
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.stem.modules())  # block 1 normalises
    firsts = [stage[0].preact_shortcut for stage in model.stages]
    rests = [b.preact_shortcut for stage in model.stages for b in list(stage)[1:]]
    assert firsts == [True, True, True] and not any(rests)


# --------------------------------------------------------------------------- shortcuts


def test_option_a_adds_no_parameters_and_pads_with_zeros():
    sc = make_shortcut("A", 16, 32, stride=2)
    assert isinstance(sc, PadShortcut) and count_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))
    assert isinstance(make_shortcut("A", 16, 16), nn.Identity)
    assert count_params(R.resnet20()) == count_params(R.plain20())


def test_options_b_and_c_add_the_projections():
    def projection(cin: int, cout: int) -> int:  # 1x1 conv without bias + BN (gamma, beta)
        return conv2d_params(cin, cout, 1, bias=False) + 2 * cout

    assert count_params(make_shortcut("B", 16, 32, 2)) == projection(16, 32)
    assert isinstance(make_shortcut("B", 32, 32, 1), nn.Identity)
    assert count_params(make_shortcut("C", 32, 32, 1)) == projection(32, 32)

    n, base = 3, count_params(R.resnet20())
    # B: projections only in the first blocks of stages 2 and 3
    assert count_params(R.resnet20(shortcut="B")) - base == projection(16, 32) + projection(32, 64)
    # C: a projection in every one of the 3n blocks
    expected_c = sum(
        projection(cin, cout) + (n - 1) * projection(cout, cout)
        for cin, cout in ((16, 16), (16, 32), (32, 64)))
    assert count_params(R.resnet20(shortcut="C")) - base == expected_c


def test_resnet_d_shortcut_averages_before_projecting():
    torch.manual_seed(0)
    sc = make_shortcut("B", 8, 16, stride=2, avg_down=True).eval()
    assert list(dict(sc.named_children())) == ["pool", "conv", "bn"]
    assert sc.conv.stride == (1, 1)
    x = torch.randn(2, 8, 7, 7)  # odd size: the last row/column averages only real pixels
    pooled = nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    assert pooled.shape[-1] == 4
    torch.testing.assert_close(pooled[..., -1, -1], x[..., -1, -1])
    with torch.no_grad():
        torch.testing.assert_close(sc(x), sc.bn(sc.conv(pooled)))
    # stride 1 (ResNet-50-D's first stage): nothing to pool
    assert "pool" not in dict(make_shortcut("B", 64, 256, 1, avg_down=True).named_children())


# --------------------------------------------------------------------------- blocks


def test_bottleneck_arithmetic():
    # The 256-d bottleneck (1x1 256->64, 3x3 64->64, 1x1 64->256) has 69,632 conv weights
    # against 1,179,648 for two 3x3 256->256 convs (He et al. 2015, Fig. 5).
    block = Bottleneck(256, 256)
    conv_weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert conv_weights == 69_632
    assert conv_weights == (conv2d_params(256, 64, 1, bias=False) + conv2d_params(64, 64, 3, bias=False)
                            + conv2d_params(64, 256, 1, bias=False))
    assert 2 * conv2d_params(256, 256, 3, bias=False) == 1_179_648


def test_resnext_style_grouped_bottleneck():
    block = Bottleneck(256, 256, groups=32, width_per_group=4)  # ResNeXt-50 32x4d, stage 1
    assert block.conv2.in_channels == block.conv2.out_channels == 128 and block.conv2.groups == 32
    cfg = ResNetConfig(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4)
    assert count_params(ResNet(cfg)) == count_params(torchvision.models.resnext50_32x4d(weights=None))


def test_stride_in_1x1_is_resnet_a():
    a = ResNet(ResNetConfig(Bottleneck, (1, 1, 1, 1), stride_in_1x1=True))
    b = ResNet(ResNetConfig(Bottleneck, (1, 1, 1, 1)))
    assert a.stages.stage2[0].conv1.stride == (2, 2) and a.stages.stage2[0].conv2.stride == (1, 1)
    assert b.stages.stage2[0].conv1.stride == (1, 1) and b.stages.stage2[0].conv2.stride == (2, 2)
    assert count_params(a) == count_params(b)
    # ResNet-A's 3x3 convs of the first blocks run on the subsampled map: fewer MACs
    assert count_macs(a, (3, 64, 64)) < count_macs(b, (3, 64, 64))


def _block_io(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """Run the model and record (block, input, output) for every residual block."""
    records, hooks = [], []
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock)):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: records.append((mod, inp[0].clone(), out.clone()))))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return records


@pytest.mark.parametrize("name, kwargs, size, train", [
    ("resnet20", {}, 32, False), ("resnet20", {}, 32, True),  # option A: identity and zero padding
    ("resnet20", {"shortcut": "B"}, 32, True), ("resnet20", {"shortcut": "C"}, 32, False),
    ("resnet18", {}, 64, True),  # ImageNet BasicBlocks, option B
    ("resnet50d", {}, 64, False),  # Bottlenecks and ResNet-D's average-pool projections
])
def test_zero_gamma_blocks_start_as_their_shortcut(name, kwargs, size, train):
    torch.manual_seed(0)
    model = create_model(name, zero_init_residual=True, **kwargs).train(train)
    x = torch.randn(2, 3, size, size)
    records = _block_io(model, x)
    assert len(records) == sum(model.config.layers)
    with torch.no_grad():
        for block, block_in, block_out in records:
            assert torch.equal(block_out, torch.relu(block.shortcut(block_in)))
    # with the ordinary initialisation (gamma = 1) the property does not hold
    for block, *_ in records:
        nn.init.ones_((block.bn3 if isinstance(block, Bottleneck) else block.bn2).weight)
    block, block_in, block_out = _block_io(model, x)[-1]
    with torch.no_grad():
        assert not torch.allclose(block_out, torch.relu(block.shortcut(block_in)))


def test_zero_gamma_preact_blocks_return_their_shortcut():
    torch.manual_seed(0)
    model = R.preact_resnet20(zero_init_residual=True).eval()
    with torch.no_grad():
        for block, x, y in _block_io(model, torch.randn(2, 3, 32, 32)):
            shortcut_in = torch.relu(block.bn1(x)) if block.preact_shortcut else x
            assert torch.equal(y, block.shortcut(shortcut_in))


def test_attn_layer_hook_gets_the_branch_before_the_addition():
    seen = []

    class Mute(nn.Module):  # an "attention" that silences the branch
        def __init__(self, channels: int) -> None:
            super().__init__()
            seen.append(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0

    model = ResNet(ResNetConfig(Bottleneck, (1, 2, 1, 1), attn_layer=Mute)).eval()
    assert seen == [256, 512, 512, 1024, 2048]  # called with each block's out_channels
    for block, x, y in _block_io(model, torch.randn(2, 3, 64, 64)):
        assert torch.equal(y, torch.relu(block.shortcut(x)))


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("make, match", [
    (lambda: make_shortcut("D", 16, 32, 2), "shortcut must be one of"),
    (lambda: R.resnet20(shortcut="X"), "shortcut must be one of"),
    (lambda: make_shortcut("A", 16, 32, 2, avg_down=True), "avg_down"),
    (lambda: make_shortcut("A", 32, 16, 2), "out_channels=16 < in_channels=32"),
    (lambda: ResNetConfig(BasicBlock, (2, 0, 2, 2)), r"layers\[1\] must be a positive"),
    (lambda: ResNetConfig(BasicBlock, (2, -1)), r"layers\[1\] must be a positive"),
    (lambda: ResNetConfig(BasicBlock, ()), "layers must list"),
    (lambda: ResNetConfig(BasicBlock, (2, 2), widths=(64,)), "one width per stage"),
    (lambda: ResNetConfig(BasicBlock, (2, 2), widths=(64, 0)), r"widths\[1\] must be a positive"),
    (lambda: ResNetConfig(BasicBlock, (2, 2, 2, 2), stem="big"), "stem must be one of"),
    (lambda: ResNetConfig(BasicBlock, (2, 2, 2, 2), stride_in_1x1=True), "stride_in_1x1"),
    (lambda: ResNetConfig(BasicBlock, (2, 2, 2, 2), residual=False, zero_init_residual=True), "zero_init_residual"),
    (lambda: ResNet(ResNetConfig(BasicBlock, (2, 2, 2, 2), groups=32)), "BasicBlock supports only groups=1"),
    (lambda: ResNet(ResNetConfig(Bottleneck, (1, 1), widths=(40, 80), groups=8, width_per_group=4)),
     "width_per_group=4"),
    (lambda: Bottleneck(64, 102), "out_channels=102 must be a multiple"),
    (lambda: Bottleneck(64, 256, groups=0), "groups must be a positive"),
    (lambda: BasicBlock(16, 32, stride=2), "changes the shape: pass shortcut"),
    (lambda: BasicBlock(16, 16, shortcut=nn.Identity(), residual=False), "has no shortcut"),
    (lambda: R.resnet18(num_classes=0), "num_classes must be a positive"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_forward_rejects_non_rgb_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        R.resnet20()(torch.randn(2, 1, 32, 32))
