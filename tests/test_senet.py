"""SE-ResNets: equal to timm's seresnet50, gates in [0, 1], a gate of 1 gives back the
plain block exactly, every placement of the ablation, and clear errors for bad arguments."""
import pytest
import torch
import torch.nn as nn

from cnnlearn.measure import count_macs, count_params
from cnnlearn.models import create_model, list_models
from cnnlearn.models.layers import SqueezeExcite
from cnnlearn.models.weights import randomize_batchnorm
from cnnlearn.models.resnet import BasicBlock, Bottleneck, ResNet, ResNetConfig, make_shortcut
from cnnlearn.models.senet import (
    SE_PLACEMENTS, MaxSqueezeExcite, SEPlacedBlock, load_timm_seresnet, se_resnet, seresnet20, seresnet50,
)

from conftest import assert_equivalent, demanding_reference

SE_MODELS = ["seresnet20", "seresnet50", "seresnet56"]


# --------------------------------------------------------------------------- against timm


def test_seresnet50_equals_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("seresnet50", pretrained=False)
    ours = seresnet50()
    assert count_params(ours) == count_params(theirs) == 28_088_024
    assert count_macs(ours) == count_macs(theirs)
    # timm zero-initialises each block's last BN weight (zero_init_last): the SE unit after
    # it would output zero, and the comparison would not see it. The demanding reference
    # gives every BN random weights; perturbing an SE unit of the first and the last block
    # must then change the logits.
    demanding_reference(theirs)
    load_timm_seresnet(ours, theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 224, 224),
                      perturb=["stages.stage1.0.attn.fc2.weight", "stages.stage4.2.attn.fc1.weight"])


def test_basic_block_se_resnet_equals_timm_seresnet18():
    # The same mapping covers BasicBlock networks (timm's seresnet18), at a smaller input.
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = demanding_reference(timm.create_model("seresnet18", pretrained=False), size=96)
    ours = se_resnet(ResNetConfig(BasicBlock, (2, 2, 2, 2)), divisor=8)  # timm rounds 64/16 up to 8
    assert count_params(ours) == count_params(theirs)
    load_timm_seresnet(ours, theirs)
    assert_equivalent(ours, theirs, torch.randn(2, 3, 96, 96),
                      perturb=["stages.stage1.0.attn.fc2.weight", "stages.stage4.1.attn.fc1.weight"])


def test_se_adds_what_the_formula_says():
    # Each block's unit: 2*C*C/r weights + C/r + C biases; SE-ResNet-50 adds 2,530,992.
    plain = create_model("resnet50")
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    added = sum(2 * c * (c // 16) + c // 16 + c for c in widths)
    assert added == 2_530_992
    assert count_params(seresnet50()) - count_params(plain) == added


# --------------------------------------------------------------------------- the gate


def _gates(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of every SE unit's gate (its sigmoid) for input x."""
    found: list[torch.Tensor] = []
    hooks = [m.gate.register_forward_hook(lambda _m, _i, out: found.append(out.detach()))
             for m in model.modules() if isinstance(m, SqueezeExcite)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return found


@pytest.mark.parametrize("placement", SE_PLACEMENTS)
def test_gates_lie_in_0_1_one_per_channel(placement):
    torch.manual_seed(0)
    model = seresnet20(placement=placement).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SqueezeExcite):
                m.fc2.weight.mul_(30)  # reach far into both tails of the sigmoid
    gates = _gates(model, torch.randn(4, 3, 32, 32) * 3)
    assert len(gates) == 9  # one unit per block
    for g in gates:
        assert g.shape[0] == 4 and g.shape[2:] == (1, 1)
        assert g.min() >= 0 and g.max() <= 1
    everything = torch.cat([g.flatten() for g in gates])
    assert everything.min() < 0.01 and everything.max() > 0.99  # the test does reach both ends


def _open_gates(model: nn.Module) -> None:
    # fc2 ignores its input and outputs 100: sigmoid(100) is exactly 1.0 in float32.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SqueezeExcite):
                m.fc2.weight.zero_()
                m.fc2.bias.fill_(100.0)


def _plain_state(se_model: nn.Module) -> dict[str, torch.Tensor]:
    """The SE network's tensors under the plain network's names (SE units dropped)."""
    return {k.replace(".block.", "."): v for k, v in se_model.state_dict().items()
            if ".attn." not in k and ".se." not in k}


@pytest.mark.parametrize("block_cls, cin, cout, stride", [
    (BasicBlock, 16, 32, 2), (BasicBlock, 32, 32, 1), (Bottleneck, 64, 256, 1), (Bottleneck, 256, 512, 2),
])
@pytest.mark.parametrize("placement", SE_PLACEMENTS)
def test_open_gate_block_equals_its_plain_twin_exactly(block_cls, cin, cout, stride, placement):
    torch.manual_seed(0)
    se_layer = lambda c: SqueezeExcite.from_reduction(c, 16)  # noqa: E731
    plain = block_cls(cin, cout, stride, make_shortcut("B", cin, cout, stride))
    if placement == "standard":
        se_block = block_cls(cin, cout, stride, make_shortcut("B", cin, cout, stride), attn_layer=se_layer)
    else:
        se_block = SEPlacedBlock(block_cls(cin, cout, stride, make_shortcut("B", cin, cout, stride)),
                                 placement, se_layer)
    randomize_batchnorm(plain)
    se_block.load_state_dict(plain.state_dict() if placement == "standard" else
                             {f"block.{k}": v for k, v in plain.state_dict().items()}, strict=False)
    _open_gates(se_block)
    plain.eval(), se_block.eval()
    x = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        assert torch.equal(se_block(x), plain(x))
        # and a closed-ish gate does change it: the test compares something
        se_block.apply(lambda m: m.fc2.bias.fill_(-1.0) if isinstance(m, SqueezeExcite) else None)
        assert not torch.allclose(se_block(x), plain(x))


@pytest.mark.parametrize("placement", SE_PLACEMENTS)
def test_open_gate_network_equals_resnet20_exactly(placement):
    torch.manual_seed(0)
    ours = seresnet20(placement=placement)
    randomize_batchnorm(ours)
    _open_gates(ours)
    plain = create_model("resnet20")
    plain.load_state_dict(_plain_state(ours))
    ours.eval(), plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), plain(x))


def test_placed_standard_equals_the_attn_layer_block():
    # SEPlacedBlock's "standard" computes exactly what resnet.py's block does with attn_layer.
    torch.manual_seed(0)
    se_layer = lambda c: SqueezeExcite.from_reduction(c, 4)  # noqa: E731
    ref = Bottleneck(64, 128, 2, make_shortcut("B", 64, 128, 2), attn_layer=se_layer)
    placed = SEPlacedBlock(Bottleneck(64, 128, 2, make_shortcut("B", 64, 128, 2)), "standard", se_layer)
    randomize_batchnorm(ref)
    placed.load_state_dict({("se." + k[5:] if k.startswith("attn.") else "block." + k): v
                            for k, v in ref.state_dict().items()})
    ref.eval(), placed.eval()
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(placed(x), ref(x))


def test_placements_differ_where_the_paper_says():
    # pre: the unit has the block's input channels; the others its output channels.
    model = seresnet20(placement="pre")
    first_of_stage2 = model.stages.stage2[0]
    assert first_of_stage2.se.fc1.in_channels == 16 and first_of_stage2.block.bn2.num_features == 32
    model = seresnet20(placement="identity")
    assert model.stages.stage2[0].se.fc1.in_channels == 32
    # post rescales the block's output after the ReLU: a closed gate zeroes the whole block
    torch.manual_seed(0)
    post = SEPlacedBlock(BasicBlock(8, 8), "post", lambda c: SqueezeExcite(c, 2)).eval()
    identity = SEPlacedBlock(BasicBlock(8, 8), "identity", lambda c: SqueezeExcite(c, 2)).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        for block in (post, identity):
            block.se.fc2.weight.zero_()
            block.se.fc2.bias.fill_(-200.0)  # gate exactly 0
        assert torch.equal(post(x), torch.zeros_like(x))
        # identity: the shortcut is switched off, the branch alone remains
        assert torch.equal(identity(x), identity.block.act(identity.block.bn2(identity.block.conv2(
            identity.block.act(identity.block.bn1(identity.block.conv1(x)))))))


# --------------------------------------------------------------------------- squeeze and excitation ablations


def test_max_squeeze_unit_squeezes_by_the_maximum():
    torch.manual_seed(0)
    unit = MaxSqueezeExcite.from_reduction(16, 4).eval()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        expected = x * torch.sigmoid(unit.fc2(torch.relu(unit.fc1(x.amax((2, 3), keepdim=True)))))
        assert torch.allclose(unit(x), expected, atol=1e-6)
        # the average-pooling unit with the same weights computes something else
        avg = SqueezeExcite.from_reduction(16, 4).eval()
        avg.load_state_dict(unit.state_dict())
        assert not torch.allclose(avg(x), unit(x), atol=1e-3)
    assert count_params(unit) == count_params(avg)


@pytest.mark.parametrize("placement", SE_PLACEMENTS)
@pytest.mark.parametrize("se_class, gate_layer", [(MaxSqueezeExcite, nn.Sigmoid), (SqueezeExcite, nn.Tanh),
                                                  (SqueezeExcite, nn.ReLU)])
def test_ablation_units_reach_every_block_and_change_no_count(placement, se_class, gate_layer):
    model = seresnet20(placement=placement, se_class=se_class, gate_layer=gate_layer)
    units = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(units) == 9 and all(type(u) is se_class and type(u.gate) is gate_layer for u in units)
    assert count_params(model) == count_params(seresnet20(placement=placement))
    torch.manual_seed(0)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and all(p.grad is not None for p in model.parameters())


def test_tanh_and_relu_gates_leave_0_1():
    # Table 12's alternatives are not gates in [0, 1]: tanh can flip a channel's sign, ReLU amplify it.
    torch.manual_seed(0)
    x = torch.rand(4, 16, 6, 6) + 0.1  # positive: output / input is the gate
    for gate, bias, expected in ((nn.Tanh, -1.0, torch.tanh(torch.tensor(-1.0))), (nn.ReLU, 2.0, 2.0)):
        unit = SqueezeExcite.from_reduction(16, 4, gate_layer=gate).eval()
        with torch.no_grad():
            unit.fc2.weight.zero_()
            unit.fc2.bias.fill_(bias)  # every "gate" is gate(bias): below 0 for tanh, above 1 for ReLU
            assert torch.allclose(unit(x) / x, torch.full_like(x, float(expected)), atol=1e-6)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("reduction, match", [
    (0, "reduction must be a positive int"), (-4, "reduction must be a positive int"),
    (2.5, "reduction must be a positive int"), (32, "reduction=32 is larger than channels=16"),
])
def test_bad_reduction_raises(reduction, match):
    with pytest.raises(ValueError, match=match):
        seresnet20(reduction=reduction)


def test_bad_placement_and_blocks_raise():
    with pytest.raises(ValueError, match="placement must be one of"):
        seresnet20(placement="after")
    with pytest.raises(ValueError, match="already has an attention module"):
        SEPlacedBlock(BasicBlock(8, 8, attn_layer=lambda c: SqueezeExcite(c, 2)), "pre",
                      lambda c: SqueezeExcite(c, 2))
    with pytest.raises(ValueError, match="residual=True"):
        SEPlacedBlock(BasicBlock(8, 8, residual=False), "identity", lambda c: SqueezeExcite(c, 2))
    with pytest.raises(ValueError, match="already has an attn_layer"):
        se_resnet(ResNetConfig(BasicBlock, (1, 1), widths=(16, 32), attn_layer=nn.Identity))
    with pytest.raises(ValueError, match="se_class must be SqueezeExcite or a subclass"):
        seresnet20(se_class=nn.Identity)
    with pytest.raises(ValueError, match="gate_layer must be a module class"):
        seresnet20(gate_layer="sigmoid")


# --------------------------------------------------------------------------- every model


def test_registered():
    assert set(SE_MODELS) <= set(list_models("seresnet"))


@pytest.mark.parametrize("name, size, classes", [
    ("seresnet20", 32, 10), ("seresnet56", 32, 10), ("seresnet50", 64, 1000),
])
def test_forward_backward(name, size, classes):
    torch.manual_seed(0)
    model = create_model(name)
    assert isinstance(model, ResNet)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("placement", ["pre", "post", "identity"])
def test_placements_forward_backward(placement):
    torch.manual_seed(0)
    model = seresnet20(placement=placement, reduction=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
