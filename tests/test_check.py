"""cnnlearn.check: every registered exercise accepts a reference solution and rejects a
wrong answer with its hint.

When a chapter registers a new exercise, add it to ``EXERCISES`` below: a test fails
for every exercise that has no entry here.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlearn.check import check, exercise, list_exercises

# --------------------------------------------------------------------------- reference answers


def output_size_ok(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_size_ignores_dilation(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - kernel_size) // stride + 1


def output_size_rounds_up(size, kernel_size, stride=1, padding=0, dilation=1):
    return -(-(size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride) + 1


class GAPHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))  # (B, C, H, W) -> (B, C) -> (B, classes)


class MaxHead(GAPHead):
    def __init__(self, in_channels, num_classes):
        super().__init__(in_channels, num_classes)
        self.pool = nn.AdaptiveMaxPool2d(1)


class SumHead(GAPHead):
    def forward(self, x):
        return self.fc(x.sum((2, 3)))


class FlattenHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_channels * 8 * 8, num_classes)  # only works for 8x8 inputs

    def forward(self, x):
        return self.fc(x.flatten(1))


class CornerHead(GAPHead):
    def forward(self, x):
        return self.fc(x[:, :, 0, 0])  # reads one position: right parameters, wrong pooling


# Exercise id -> (a correct answer, [(a wrong answer, a phrase its message must contain), ...]).
EXERCISES = {
    "ch01.output_size": (16, [(15, "padding"), (17, "rounded down"), (32, "stride"),
                              (8, "too small"), ("16", "give a number")]),
    "ch01.conv_params": (73_856, [(73_728, "bias"), (576, "128 filters"), (1_152, "3*3*64"),
                                  (80_000, "too large")]),
    "ch01.conv_macs": (75_497_472, [(150_994_944, "FLOPs"), (75_628_544, "biases"),
                                    (66_355_200, "32x32"), (True, "give a number")]),
    "ch01.stacked_3x3": ((73_728, 102_400), [((36_864, 102_400), "one 3x3 convolution"),
                                             ((73_728, 76_800), "one 5x5"), (73_728, "pair")]),
    "ch01.output_size_fn": (output_size_ok, [(output_size_ignores_dilation, "dilated kernel spans"),
                                             (output_size_rounds_up, "round down"),
                                             (output_size_ok(32, 3), "pass your function")]),
    "ch01.gap_head": (GAPHead, [(MaxHead, "mean over H and W"), (SumHead, "not the max or the sum"),
                                (FlattenHead, "parameters"), (CornerHead, "depends on where"),
                                (GAPHead(64, 10), "the class itself")]),
}


def test_every_exercise_has_a_reference_and_a_wrong_answer():
    missing = sorted(set(list_exercises()) - set(EXERCISES))
    assert not missing, f"add a reference and a wrong answer for {missing} to tests/test_check.py"
    assert not set(EXERCISES) - set(list_exercises()), "EXERCISES lists exercises that do not exist"


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_passes(exercise_id, capsys):
    reference, _ = EXERCISES[exercise_id]
    assert check(exercise_id, reference) is True
    assert capsys.readouterr().out.startswith("✅ Correct.")


@pytest.mark.parametrize("exercise_id, index", [(k, i) for k, (_, wrong) in sorted(EXERCISES.items())
                                                for i in range(len(wrong))])
def test_wrong_answer_fails_with_its_hint(exercise_id, index, capsys):
    wrong, hint = EXERCISES[exercise_id][1][index]
    assert check(exercise_id, wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("❌ Not yet.")
    assert hint in out


def test_quiet_prints_nothing(capsys):
    assert check("ch01.output_size", 16, quiet=True) is True
    assert check("ch01.output_size", 15, quiet=True) is False
    assert capsys.readouterr().out == ""


def test_numbers_as_tensors_and_floats():
    assert check("ch01.output_size", torch.tensor(16), quiet=True)
    assert check("ch01.output_size", 16.0, quiet=True)


def test_a_raising_answer_is_a_failed_attempt(capsys):
    class Broken(nn.Module):
        def __init__(self, in_channels, num_classes):
            raise RuntimeError("oops")

    assert check("ch01.gap_head", Broken) is False
    assert "your answer raised RuntimeError: oops" in capsys.readouterr().out


def test_unknown_exercise_raises_with_close_matches():
    with pytest.raises(ValueError, match="no exercise 'ch01.conv_param'; did you mean ch01.conv_params"):
        check("ch01.conv_param", 73_856)
    with pytest.raises(ValueError, match="no exercise 'nothing'$"):
        check("nothing", 1)


def test_list_and_register():
    assert list_exercises() == sorted(list_exercises())
    some = list_exercises("ch01.conv")
    assert {"ch01.conv_macs", "ch01.conv_params"} <= set(some)
    assert all(k.startswith("ch01.conv") for k in some)
    with pytest.raises(ValueError, match="already registered"):
        exercise("ch01.output_size", "again")(lambda answer: (True, ""))
