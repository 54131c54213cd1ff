"""``compare_outputs``: the one equivalence check of the package must be able to fail."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from cnnlearn.models.weights import compare_outputs


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))


def _inputs() -> torch.Tensor:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_equal_networks_pass():
    ours = _net()
    result = compare_outputs(ours, copy.deepcopy(ours), _inputs())
    assert result.ok and result.max_difference == 0.0
    assert result.spread > 1e-3 and result.perturbed_difference > 1e-5
    result.assert_ok()
    assert str(result).startswith("max difference 0.0e+00 | logits spread across inputs ")


def test_one_changed_weight_fails():
    ours, reference = _net(), _net()
    with torch.no_grad():
        ours[0].weight[0, 0, 0, 0] += 0.5
    result = compare_outputs(ours, reference, _inputs())
    assert not result.ok and result.max_difference > 1e-5
    with pytest.raises(AssertionError, match="the outputs differ"):
        result.assert_ok()


def test_constant_outputs_fail():
    ours = _net()
    with torch.no_grad():
        ours[-1].weight.zero_()  # logits = bias, whatever the input: spread 0
    result = compare_outputs(ours, copy.deepcopy(ours), _inputs())
    assert result.spread == 0.0 and result.max_difference == 0.0 and not result.ok
    with pytest.raises(AssertionError, match="barely vary across inputs"):
        result.assert_ok()


def test_unseen_parameter_fails():
    # a parameter after which nothing depends on it: perturbing it changes no output
    ours = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
    with torch.no_grad():
        ours[1].weight.zero_()
    reference = copy.deepcopy(ours)
    result = compare_outputs(ours, reference, torch.randn(4, 4), perturb="0.weight")
    assert not result.ok
    with pytest.raises(AssertionError, match="perturbed copy"):
        result.assert_ok()


def test_both_end_in_eval_mode():
    ours, reference = _net().train(), _net().train()
    compare_outputs(ours, reference, _inputs())
    assert not ours.training and not reference.training


@pytest.mark.parametrize("kwargs, match", [({"inputs": torch.randn(1, 3, 8, 8)}, "at least two"),
                                           ({"atol": 0.0}, "atol"),
                                           ({"perturb": "nope"}, "nope")])
def test_bad_arguments(kwargs, match):
    ours = _net()
    args = {"inputs": _inputs(), **kwargs}
    with pytest.raises(ValueError, match=match):
        compare_outputs(ours, copy.deepcopy(ours), **args)
