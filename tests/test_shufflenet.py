"""ShuffleNet v1/v2 and the channel shuffle: arithmetic, torchvision equality, paper numbers."""
import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlearn.measure import conv2d_macs, conv2d_params, count_macs, count_params, linear_params
from cnnlearn.models import create_model, list_models
from cnnlearn.models.layers import ChannelShuffle, channel_shuffle
from cnnlearn.models.shufflenet import (
    GUIDELINE_VARIANTS, BenchBottleneck, Fragments, guideline_net,
    ShuffleNetV1, ShuffleV1Unit, ShuffleV2Unit, TableRow, load_torchvision_shufflenet_v2,
    shufflenet_v1_config, shufflenet_v1_table, shufflenet_v2_config, shufflenet_v2_table,
)

from conftest import assert_equivalent, demanding_reference

# --------------------------------------------------------------------------- channel shuffle


def _channel_ids(channels: int) -> torch.Tensor:
    """A (2, C, 3, 3) batch whose channel c holds the value c everywhere."""
    return torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(2, channels, 3, 3).clone()


def _order(x: torch.Tensor) -> list[int]:
    return x[0, :, 0, 0].long().tolist()


def test_channel_shuffle_small_example():
    # 2 groups of 3 channels [0 1 2 | 3 4 5]: read the 2x3 matrix column by column.
    assert _order(channel_shuffle(_channel_ids(6), 2)) == [0, 3, 1, 4, 2, 5]
    assert _order(channel_shuffle(_channel_ids(6), 3)) == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize("channels,groups", [(6, 2), (12, 3), (240, 3), (384, 8), (116, 2), (7, 7), (5, 1)])
def test_channel_shuffle_is_a_permutation_with_an_inverse(channels, groups):
    x = _channel_ids(channels)
    y = channel_shuffle(x, groups)
    assert y.shape == x.shape
    assert sorted(_order(y)) == list(range(channels))  # every channel exactly once
    # every spatial position and batch item is moved the same way: whole channels move
    assert torch.equal(y, y[:1, :, :1, :1].expand_as(y))
    # output channel a*g + b is input channel b*n + a
    n = channels // groups
    assert _order(y) == [b * n + a for a in range(n) for b in range(groups)]
    # shuffling with C/g groups undoes a shuffle with g groups
    assert torch.equal(channel_shuffle(y, n), x)
    # the layer does the same as the function
    torch.manual_seed(0)
    r = torch.randn(2, channels, 4, 4)
    assert torch.equal(ChannelShuffle(groups)(r), channel_shuffle(r, groups))


def test_channel_shuffle_mixes_groups():
    # After the shuffle, each of the g groups holds one channel from every former group:
    # what lets the next grouped convolution see all of them (v1 paper, Fig. 1 c).
    g, n = 3, 4
    y = _order(channel_shuffle(_channel_ids(g * n), g))
    for k in range(g):
        new_group = y[k * n:(k + 1) * n]
        assert {c // n for c in new_group} == set(range(g))


def test_channel_shuffle_bad_arguments():
    with pytest.raises(ValueError, match="groups=3 must divide channels of x=64"):
        channel_shuffle(torch.zeros(1, 64, 2, 2), 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        channel_shuffle(torch.zeros(64, 2, 2), 2)
    with pytest.raises(ValueError, match="groups must be a positive number"):
        channel_shuffle(torch.zeros(1, 64, 2, 2), 0)
    with pytest.raises(ValueError, match="groups must be a positive number"):
        ChannelShuffle(-2)
    with pytest.raises(ValueError, match="groups=5 must divide channels of x=12"):
        ChannelShuffle(5)(torch.zeros(1, 12, 2, 2))


# --------------------------------------------------------------------------- ShuffleNet v2 = torchvision

TV_V2 = {  # name: (parameters, MACs at 224x224), torchvision's numbers
    "shufflenet_v2_x0_5": (1_366_792, 40_476_448),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992),
    "shufflenet_v2_x1_5": (3_503_624, 295_759_392),
    "shufflenet_v2_x2_0": (7_393_996, 583_253_464),
}


@pytest.mark.parametrize("name", sorted(TV_V2))
def test_v2_params_and_macs_equal_torchvision(name):
    ours, theirs = create_model(name), getattr(torchvision.models, name)(weights=None)
    params, macs = TV_V2[name]
    assert count_params(theirs) == params  # the reference is what we think it is
    assert count_params(ours) == params
    assert count_macs(ours) == count_macs(theirs) == macs
    print(f"{name}: {params:,} params, {macs / 1e9:.4f} GMACs")


def test_v2_rounded_numbers_of_the_brief():
    assert round(TV_V2["shufflenet_v2_x0_5"][1] / 1e9, 4) == 0.0405
    assert round(TV_V2["shufflenet_v2_x1_0"][1] / 1e9, 4) == 0.1449


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0"])
def test_v2_outputs_equal_torchvision_after_copying_weights(name):
    torch.manual_seed(0)
    theirs = demanding_reference(getattr(torchvision.models, name)(weights=None))
    ours = load_torchvision_shufflenet_v2(create_model(name), theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 224, 224))


def test_v2_weight_loading_rejects_another_size():
    with pytest.raises(ValueError, match="shape mismatch"):
        load_torchvision_shufflenet_v2(create_model("shufflenet_v2_x1_0"),
                                       torchvision.models.shufflenet_v2_x0_5(weights=None))


def test_v2_table_is_the_papers_table_5():
    rows = shufflenet_v2_table(1.0)
    assert rows[1] == TableRow("Conv1", 112, 3, 2, 1, 24)
    assert rows[2] == TableRow("MaxPool", 56, 3, 2, 1, 24)
    stages = [(r.layer, r.output_size, r.stride, r.repeat, r.out_channels) for r in rows if r.layer.startswith("Stage")]
    assert stages == [("Stage2", 28, 2, 1, 116), ("Stage2", 28, 1, 3, 116),
                      ("Stage3", 14, 2, 1, 232), ("Stage3", 14, 1, 7, 232),
                      ("Stage4", 7, 2, 1, 464), ("Stage4", 7, 1, 3, 464)]
    assert rows[-3] == TableRow("Conv5", 7, 1, 1, 1, 1024)
    assert rows[-1] == TableRow("FC", 1, None, None, 1, 1000)
    assert [r.out_channels for r in shufflenet_v2_table(2.0) if r.layer in ("Stage4", "Conv5")] == [976, 976, 2048]
    # torchvision's stages_out_channels are the same numbers
    for width, name in [(0.5, "x0_5"), (1.0, "x1_0"), (1.5, "x1_5"), (2.0, "x2_0")]:
        cfg = shufflenet_v2_config(width)
        tv = getattr(torchvision.models, f"shufflenet_v2_{name}")(weights=None)
        assert [cfg.stem_channels, *cfg.stage_channels, cfg.head_channels] == tv._stage_out_channels


@torch.no_grad()
def test_v2_feature_map_sizes_follow_the_table():
    model = create_model("shufflenet_v2_x0_5").eval()
    x = torch.randn(1, 3, 224, 224)
    rows = {r.layer: r for r in shufflenet_v2_table(0.5)}
    x = model.stem(x)
    assert x.shape[1:] == (24, rows["MaxPool"].output_size, rows["MaxPool"].output_size)
    for name, stage in model.stages.named_children():
        x = stage(x)
        row = rows[name.capitalize()]
        assert x.shape[1:] == (row.out_channels, row.output_size, row.output_size)
    assert [n for n, _ in model.stages.named_children()] == ["stage2", "stage3", "stage4"]


# --------------------------------------------------------------------------- ShuffleNet v1 vs the paper

# Table 2 of arXiv:1707.01083, "ShuffleNet 1x": complexity in MFLOPs (= multiply-adds).
PAPER_V1_MFLOPS = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}
# Table 1: output channels of stage 2, 3, 4.
PAPER_V1_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                   4: (272, 544, 1088), 8: (384, 768, 1536)}


def _v1_formula(groups: int, width_mult: float = 1.0, image_size: int = 224, num_classes: int = 1000):
    """Parameters and MACs of ShuffleNet v1 from the paper's description, with the
    measure module's formulas: an independent derivation of what the model should count."""
    cfg = shufflenet_v1_config(groups, width_mult)
    size = image_size // 2  # Conv1, stride 2
    params = conv2d_params(3, cfg.stem_channels, 3, bias=False) + 2 * cfg.stem_channels  # conv + BN
    macs = conv2d_macs(3, cfg.stem_channels, 3, size)
    size //= 2  # MaxPool
    cin = cfg.stem_channels
    for stage, (cout, repeats) in enumerate(zip(cfg.stage_channels, cfg.stage_repeats)):
        for unit in range(repeats):
            stride = 2 if unit == 0 else 1
            mid = cout // 4  # bottleneck: a quarter of the output channels
            branch = cout - cin if stride == 2 else cout  # stride 2 concatenates the pooled input
            g1 = 1 if stage == 0 and unit == 0 else groups  # stage 2's first 1x1 is not grouped
            out_size = size // stride
            params += conv2d_params(cin, mid, 1, g1, bias=False) + 2 * mid
            params += conv2d_params(mid, mid, 3, mid, bias=False) + 2 * mid
            params += conv2d_params(mid, branch, 1, groups, bias=False) + 2 * branch
            macs += conv2d_macs(cin, mid, 1, size, g1)  # the 1x1 runs before the stride
            macs += conv2d_macs(mid, mid, 3, out_size, mid)
            macs += conv2d_macs(mid, branch, 1, out_size, groups)
            cin, size = cout, out_size
    fc_macs = cin * num_classes
    return params + linear_params(cin, num_classes), macs + fc_macs, fc_macs


@pytest.mark.parametrize("groups", sorted(PAPER_V1_MFLOPS))
def test_v1_counts_match_the_formula_and_the_paper(groups):
    model = create_model(f"shufflenet_v1_g{groups}")
    assert model.config.stage_channels == PAPER_V1_WIDTHS[groups]
    assert model.config.stem_channels == 24
    params, macs, fc_macs = _v1_formula(groups)
    assert count_params(model) == params
    assert count_macs(model) == macs
    paper = PAPER_V1_MFLOPS[groups]
    conv_only = (macs - fc_macs) / 1e6
    print(f"ShuffleNet 1x g={groups}: {params:,} params; {macs / 1e6:.3f} M MACs "
          f"({conv_only:.3f} M without the fc); paper, Table 2: {paper} MFLOPs")
    # Without the classifier our count rounds to the paper's number, for every g ...
    assert round(conv_only) == paper
    # ... and the whole network is within 1.5 % of it (measured: +0.06 % to +1.0 %).
    assert abs(macs / 1e6 / paper - 1) < 0.015


def test_v1_table_is_the_papers_table_1():
    rows = shufflenet_v1_table(3)
    assert [(r.layer, r.output_size) for r in rows[:3]] == [("Image", 224), ("Conv1", 112), ("MaxPool", 56)]
    assert rows[3] == TableRow("Stage2", 28, 3, 2, 1, 240)
    assert rows[4] == TableRow("Stage2", 28, 3, 1, 3, 240)
    assert [(r.output_size, r.repeat, r.out_channels) for r in rows[5:9]] == [
        (14, 1, 480), (14, 7, 480), (7, 1, 960), (7, 3, 960)]
    assert rows[-2] == TableRow("GlobalPool", 1, 7, None, 1, 960)
    assert [r.out_channels for r in shufflenet_v1_table(8) if r.layer == "Stage4"] == [1536, 1536]


def test_v1_first_unit_has_an_ungrouped_first_conv():
    model = create_model("shufflenet_v1_g8")
    first, second = model.stages.stage2[0], model.stages.stage2[1]
    assert first.branch.compress[0].groups == 1 and not hasattr(first.branch, "shuffle")
    assert first.branch.expand[0].groups == 8
    assert second.branch.compress[0].groups == 8 and second.branch.shuffle.groups == 8
    assert model.stages.stage3[0].branch.compress[0].groups == 8
    # bottleneck = out/4; the stride-2 branch makes out - in channels, the pooled input the rest
    assert first.branch.compress[0].out_channels == 384 // 4
    assert first.branch.expand[0].out_channels == 384 - 24


@pytest.mark.parametrize("groups,width_mult,stem,widths", [
    (3, 0.5, 12, (120, 240, 480)), (8, 0.5, 16, (192, 384, 768)), (3, 2.0, 48, (480, 960, 1920)),
    (4, 0.25, 8, (64, 144, 272)),
])
def test_v1_width_mult_rounds_to_valid_widths(groups, width_mult, stem, widths):
    cfg = shufflenet_v1_config(groups, width_mult)
    assert (cfg.stem_channels, cfg.stage_channels) == (stem, widths)
    params, macs, _ = _v1_formula(groups, width_mult)
    model = ShuffleNetV1(cfg)
    assert count_params(model) == params
    assert count_macs(model) == macs


@pytest.mark.parametrize("width_mult", [0.5, 2.0])
def test_v1_cost_scales_with_the_square_of_width_mult(width_mult):
    # The paper (end of Sec. 3.3): "ShuffleNet s x" has about s^2 times the complexity of 1x.
    # Rounding the widths and the classifier (linear in s) keep it from being exact.
    ratio = _v1_formula(3, width_mult)[1] / _v1_formula(3)[1]
    assert abs(ratio / width_mult ** 2 - 1) < 0.15


def test_v1_and_v2_units_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 240, 8, 8)
    assert ShuffleV1Unit(240, 240, 1, 3)(x).shape == (2, 240, 8, 8)
    assert ShuffleV1Unit(240, 480, 2, 3)(x).shape == (2, 480, 4, 4)
    y = torch.randn(2, 116, 8, 8)
    assert ShuffleV2Unit(116, 116, 1)(y).shape == (2, 116, 8, 8)
    assert ShuffleV2Unit(116, 232, 2)(y).shape == (2, 232, 4, 4)


def test_v2_unit_keeps_half_its_input():
    # Stride 1: branch1 is the identity on the first half, and the shuffle puts those
    # channels at the even positions.
    torch.manual_seed(0)
    unit = ShuffleV2Unit(8, 8, 1).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        y = unit(x)
    assert torch.equal(y[:, 0::2], x[:, :4])


# --------------------------------------------------------------------------- every registered model

MODELS = list_models("shufflenet")


def test_the_registry_has_the_family():
    assert set(MODELS) >= {
        "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g3", "shufflenet_v1_g4", "shufflenet_v1_g8",
        "shufflenet_v1_g3_cifar", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
        "shufflenet_v2_x2_0", "shufflenet_v2_cifar"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    cifar = name.endswith("_cifar")
    model = create_model(name, num_classes=7)
    assert [n for n, _ in model.named_children()] == ["stem", "stages", "head"]
    assert [n for n, _ in model.stages.named_children()] == ["stage2", "stage3", "stage4"]
    size = 32 if cifar else 64
    x = torch.randn(2, 3, size, size)
    features = model.forward_features(x)
    last = model.config.stage_channels[-1]
    side = size // 8 if cifar else size // 32  # the CIFAR stem does not down-sample
    assert features.shape == (2, last, side, side)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {pname} has a zero gradient"


def test_default_num_classes():
    assert create_model("shufflenet_v1_g3_cifar").head.fc.out_features == 10
    assert create_model("shufflenet_v2_cifar").head.fc.out_features == 10
    assert create_model("shufflenet_v2_x0_5").head.fc.out_features == 1000
    assert create_model("shufflenet_v1_g1").head.fc.out_features == 1000


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments():
    with pytest.raises(ValueError, match="width_mult must be a positive number"):
        create_model("shufflenet_v1_g3", width_mult=0)
    with pytest.raises(ValueError, match="width_mult must be a positive number"):
        create_model("shufflenet_v1_g8_cifar", width_mult=-0.5)
    with pytest.raises(ValueError, match=r"groups=5 is not a column .* choose one of \[1, 2, 3, 4, 8\]"):
        shufflenet_v1_config(groups=5)
    with pytest.raises(ValueError, match=r"width=0.75 is not a size .* choose one of"):
        shufflenet_v2_config(0.75)
    with pytest.raises(ValueError, match="num_classes must be a positive number"):
        create_model("shufflenet_v2_x1_0", num_classes=0)
    # groups not dividing the channels of a unit
    with pytest.raises(ValueError, match="groups=12 must divide out_channels=200"):
        ShuffleV1Unit(200, 200, 1, groups=3)
    with pytest.raises(ValueError, match="in_channels=24 must equal out_channels=240"):
        ShuffleV1Unit(24, 240, 1, groups=3)
    with pytest.raises(ValueError, match="out_channels=240 must exceed in_channels=240"):
        ShuffleV1Unit(240, 240, 2, groups=3)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        ShuffleV1Unit(240, 480, 3, groups=3)
    with pytest.raises(ValueError, match="groups=2 must divide out_channels=117"):
        ShuffleV2Unit(116, 117, 2)
    with pytest.raises(ValueError, match="in_channels=58 must equal out_channels=116"):
        ShuffleV2Unit(58, 116, 1)
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, H, W\)"):
        create_model("shufflenet_v2_cifar")(torch.zeros(1, 1, 32, 32))


# --------------------------------------------------------------------------- the v2 paper's guideline benchmarks


@pytest.mark.parametrize("guideline", sorted(GUIDELINE_VARIANTS))
@pytest.mark.parametrize("channels", [32, 128])
def test_guideline_variants_have_equal_macs(guideline, channels):
    nets = {v: guideline_net(guideline, v, channels, depth=2) for v in GUIDELINE_VARIANTS[guideline]}
    macs = {v: count_macs(n, (n.in_channels, 8, 8)) for v, n in nets.items()}
    first = macs[GUIDELINE_VARIANTS[guideline][0]]
    for v, m in macs.items():
        # rounding the widths down costs at most a few per cent (G1 1:12 at c=32: 972 vs 1024)
        assert 0.9 < m / first <= 1.0 + 1e-9, (v, m, first)
    x = torch.randn(1, nets[GUIDELINE_VARIANTS[guideline][0]].in_channels, 8, 8)
    for n in nets.values():
        y = n(torch.randn(1, n.in_channels, 8, 8))
        assert y.shape == (1, n.in_channels, 8, 8)  # every benchmark keeps its shape, so blocks stack
    assert x.shape[1] == (4 * channels if guideline == "G4" else channels)


def test_guideline_widths_follow_the_mac_formula():
    # G1 at c=128: (c1, c2) = (128, 128), (90, 180), (52, 312), (36, 432)
    widths = [(n[0][0].in_channels, n[0][0].out_channels)
              for n in (guideline_net("G1", v, 128, 1) for v in GUIDELINE_VARIANTS["G1"])]
    assert widths == [(128, 128), (90, 180), (52, 312), (36, 432)]
    # G2 at c=128: c * sqrt(g), rounded down to a multiple of g
    assert [guideline_net("G2", v, 128, 1).in_channels for v in GUIDELINE_VARIANTS["G2"]] == [128, 180, 256, 360]
    assert [guideline_net("G2", v, 128, 1)[0].groups for v in GUIDELINE_VARIANTS["G2"]] == [1, 2, 4, 8]
    # G3 at c=128: 1, 2 or 4 convolutions of 128, 90, 64 channels
    g3 = {v: guideline_net("G3", v, 128, 1)[0] for v in GUIDELINE_VARIANTS["G3"]}
    assert [(len(b.convs), b.convs[0].in_channels, b.parallel) for b in g3.values()] == [
        (1, 128, False), (2, 90, False), (4, 64, False), (2, 90, True), (4, 64, True)]


@torch.no_grad()
def test_guideline_blocks_compute_what_they_say():
    torch.manual_seed(0)
    par = Fragments(4, 2, parallel=True)
    ser = Fragments(4, 2, parallel=False)
    ser.load_state_dict(par.state_dict())
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(par(x), par.convs[0](x) + par.convs[1](x))
    torch.testing.assert_close(ser(x), ser.convs[1](ser.convs[0](x)))
    # G4: the four variants share their weights and differ only in ReLU and shortcut
    full = BenchBottleneck(4)
    variants = {v: guideline_net("G4", v, 4, depth=1)[0] for v in GUIDELINE_VARIANTS["G4"]}
    for v, block in variants.items():
        block.load_state_dict(full.state_dict())
        assert count_params(block) == count_params(full)
    x = torch.randn(1, 16, 5, 5)
    neither = variants["neither"]
    torch.testing.assert_close(neither(x), neither.conv3(neither.conv2(neither.conv1(x))))
    torch.testing.assert_close(variants["ReLU and shortcut"](x), full(x))
    assert (variants["ReLU and shortcut"](x) >= 0).all()
    assert (variants["shortcut, no ReLU"](x) < 0).any()


def test_guideline_bad_arguments():
    with pytest.raises(ValueError, match=r"guideline='G5' is not one of"):
        guideline_net("G5", "1:1", 32)
    with pytest.raises(ValueError, match=r"variant='1:3' is not a variant of G1"):
        guideline_net("G1", "1:3", 32)
    with pytest.raises(ValueError, match="channels must be a positive number"):
        guideline_net("G2", "g=2", 0)


def test_shufflenet_v2_cifar_width():
    model = create_model("shufflenet_v2_cifar", width=0.5)
    assert model.config.stage_channels == (48, 96, 192)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
