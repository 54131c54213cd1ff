"""cnnlearn.paths: single-path gradients add up to the gradient, and the path-length summary."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from cnnlearn.models import create_model
from cnnlearn.models.resnet import BasicBlock, Bottleneck, PreActBasicBlock, ResNet, ResNetConfig
from cnnlearn.models.weights import randomize_batchnorm
from cnnlearn.paths import PathGradients, gradient_by_path_length, path_input_gradient, residual_blocks


def _tiny(block=BasicBlock, shortcut="A", layers=(1, 1, 1), widths=(4, 8, 16)):
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(block, layers, widths=widths, stem="cifar", stem_width=widths[0] * block.expansion,
                                shortcut=shortcut), num_classes=10)
    randomize_batchnorm(model)  # non-default statistics: a misrouted gradient would show
    return model.double()


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64), torch.arange(n) % 10


def _full_gradient(model, x, y):
    model.eval()
    x = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


@pytest.mark.parametrize("block, shortcut", [(BasicBlock, "A"), (BasicBlock, "B"), (Bottleneck, "B"),
                                             (PreActBasicBlock, "B")])
def test_the_paths_add_up_to_the_gradient(block, shortcut):
    model = _tiny(block, shortcut)
    x, y = _batch()
    n = len(residual_blocks(model))
    assert n == 3
    paths = [path_input_gradient(model, x, y, through) for k in range(n + 1)
             for through in itertools.combinations(range(n), k)]
    assert len(paths) == 2 ** n
    full = _full_gradient(model, x, y)
    assert full.abs().max() > 1e-3  # a gradient worth comparing
    torch.testing.assert_close(sum(paths), full, rtol=1e-9, atol=1e-12)
    # The paths are distinct and none of them is the whole gradient: the routing does something.
    norms = [p.norm().item() for p in paths]
    assert min(norms) > 0
    assert all((p - full).norm() > 1e-6 * full.norm() for p in paths)
    assert len({round(v, 12) for v in norms}) == len(norms)


def test_a_path_through_no_branch_is_the_shortcut_chain():
    # Identity shortcuts only (one stage, no change of shape): the path through no branch
    # carries the gradient from the head straight to the stem's output.
    model = _tiny(layers=(3,), widths=(4,))
    x, y = _batch()
    x.requires_grad_(True)
    model.eval()
    stem_out = model.stem(x)
    # Along the shortcut chain, out = relu(... relu(relu(h))...) applied block by block:
    h = stem_out
    for block in model.stages.stage1:
        branch = block.attn(block.bn2(block.conv2(block.act(block.bn1(block.conv1(h))))))
        h = torch.relu(h + branch.detach())  # the value of the block, the gradient of its shortcut
    loss = torch.nn.functional.cross_entropy(model.head(h), y, reduction="sum")
    (expected,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(path_input_gradient(model, x.detach(), y, []), expected, rtol=1e-9, atol=1e-12)


def test_the_model_is_left_as_it_was():
    model = _tiny().train()
    x, y = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path_input_gradient(model, x, y, [0, 2])
    gradient_by_path_length(model, x, y, samples=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())  # the routing hooks are gone


def test_gradient_by_path_length_averages_single_paths():
    model = _tiny()
    x, y = _batch()
    result = gradient_by_path_length(model, x, y, samples=3)
    assert result.blocks == 3 and result.lengths == (0, 1, 2, 3)
    assert result.num_paths == (1, 3, 3, 1)
    assert result.paths_measured == (1, 3, 3, 1)  # at most 3 paths per length: all of them
    for k, mean in zip(result.lengths, result.mean_norm):
        per_path = [path_input_gradient(model, x, y, c).flatten(1).norm(dim=1).mean().item()
                    for c in itertools.combinations(range(3), k)]
        assert mean == pytest.approx(sum(per_path) / len(per_path), rel=1e-9)
    assert result.total == pytest.approx([c * g for c, g in zip(result.num_paths, result.mean_norm)])


def test_sampling_is_seeded_and_lengths_can_be_chosen():
    model = _tiny(layers=(2, 2, 2))
    x, y = _batch()
    a = gradient_by_path_length(model, x, y, samples=2, lengths=[1, 3], seed=5)
    b = gradient_by_path_length(model, x, y, samples=2, lengths=[1, 3], seed=5)
    assert a == b and a.lengths == (1, 3) and a.paths_measured == (2, 2) and a.blocks == 6


def test_the_summary_of_a_known_profile():
    # Gradients that halve with every branch: total(k) = comb(4, k) / 2**k.
    r = PathGradients(4, (0, 1, 2, 3, 4), tuple(0.5 ** k for k in range(5)), (1,) * 5)
    totals = [math.comb(4, k) * 0.5 ** k for k in range(5)]  # 1, 2, 1.5, 0.5, 0.0625
    assert r.total == pytest.approx(totals)
    assert r.mean_length(weighted=False) == pytest.approx(2.0)
    assert r.mean_length() == pytest.approx(sum(k * t for k, t in enumerate(totals)) / sum(totals))
    assert r.mean_length() < 2.0
    assert r.range_holding(0.5) == (0, 1)  # 3 of 5.0625; (1, 2) carries 3.5 but is not narrower
    assert r.range_holding(0.9) == (0, 3)  # (0, 2) carries 4.5, 89%: one length short
    assert r.range_holding(1.0) == (0, 4)


def test_bad_arguments_name_the_fix():
    x, y = _batch()
    with pytest.raises(ValueError, match="no residual blocks"):
        residual_blocks(create_model("plain20"))
    model = _tiny()
    with pytest.raises(ValueError, match=r"block indices in 0\.\.2"):
        path_input_gradient(model, x, y, [3])
    with pytest.raises(ValueError, match="distinct"):
        path_input_gradient(model, x, y, [1, 1])
    with pytest.raises(ValueError, match="one integer class label per input"):
        path_input_gradient(model, x, y[:2], [])
    with pytest.raises(ValueError, match="samples must be a positive int"):
        gradient_by_path_length(model, x, y, samples=0)
    with pytest.raises(ValueError, match=r"lengths must be path lengths in 0\.\.3"):
        gradient_by_path_length(model, x, y, lengths=[4])
    with pytest.raises(ValueError, match="share"):
        PathGradients(1, (0, 1), (1.0, 1.0), (1, 1)).range_holding(0)
