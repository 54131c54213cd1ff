"""Exercise checkers: ``check("ch01.conv_params", 73856)`` says pass or fail, with a hint.

Each exercise of the book is registered here with its question and a checker that
takes the learner's answer (a number, a function or a module class) and returns
``(passed, message)``. Checkers never reveal the answer; hints point at the usual
mistake. Every checker is tested against a reference solution and a wrong answer
(``tests/test_check.py``).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .measure import conv2d_output_size

__all__ = ["Exercise", "check", "list_exercises", "exercise"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: an id like ``"ch01.conv_params"``, its question, and its checker."""

    id: str
    question: str
    checker: Callable[[Any], tuple[bool, str]]


_EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, question: str):
    """Register a checker function ``answer -> (passed, message)`` under ``id``."""
    def wrap(fn: Callable[[Any], tuple[bool, str]]):
        if id in _EXERCISES:
            raise ValueError(f"exercise {id!r} is already registered")
        _EXERCISES[id] = Exercise(id, question, fn)
        return fn
    return wrap


def list_exercises(prefix: str = "") -> list[str]:
    """Ids of the registered exercises starting with ``prefix`` (e.g. ``"ch01"``)."""
    return sorted(k for k in _EXERCISES if k.startswith(prefix))


def check(id: str, answer: Any, quiet: bool = False) -> bool:
    """Check an answer, print the verdict, and return whether it passed.

    Args:
        id: the exercise id shown in the book, e.g. ``"ch01.output_size"``.
        answer: a number, a function or a module class, as the exercise asks.
        quiet: return the verdict without printing.
    """
    if id not in _EXERCISES:
        import difflib

        close = difflib.get_close_matches(id, _EXERCISES, n=3)
        raise ValueError(f"no exercise {id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        passed, message = _EXERCISES[id].checker(answer)
    except Exception as e:  # the learner's code raised: report it as a failed attempt
        passed, message = False, f"your answer raised {type(e).__name__}: {e}"
    if not quiet:
        print(("✅ Correct. " if passed else "❌ Not yet. ") + message)
    return passed


def _number(answer: Any, expected: int, hints: dict[int, str], unit: str = "") -> tuple[bool, str]:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return False, f"give a number, not a {type(answer).__name__}"
    if answer == expected:
        return True, f"{expected:,}{unit}."
    if int(answer) in hints:
        return False, hints[int(answer)]
    if answer > expected:
        return False, "too large: count once more, layer by layer."
    return False, "too small: count once more, layer by layer."


# --------------------------------------------------------------------------- chapter 1


@exercise("ch01.output_size",
          "A 3x3 convolution with stride 2 and padding 1 is applied to a 32x32 image. "
          "How wide is its output?")
def _ch01_output_size(answer):
    return _number(answer, 16, {
        15: "that is the size without padding: the formula adds 2*padding to the input first.",
        17: "the division by the stride is rounded down (floor), not up.",
        32: "a stride of 2 moves the kernel two pixels at a time: the output shrinks.",
    }, " pixels")


@exercise("ch01.conv_params",
          "How many parameters (weights and biases) does nn.Conv2d(64, 128, kernel_size=3) have?")
def _ch01_conv_params(answer):
    return _number(answer, 73_856, {
        73_728: "that counts the weights only: nn.Conv2d has a bias per output channel by default.",
        576: "that is one filter's weights (3*3*64); there are 128 filters.",
        1_152: "each of the 128 filters has 3*3*64 weights, not 3*3.",
    })


@exercise("ch01.conv_macs",
          "How many multiply-accumulates (MACs) does nn.Conv2d(64, 128, kernel_size=3, padding=1) "
          "cost on one 32x32 input?")
def _ch01_conv_macs(answer):
    return _number(answer, 75_497_472, {
        150_994_944: "that is FLOPs (2 per MAC); the question asks for MACs.",
        75_628_544: "biases are additions, not multiply-accumulates: count weights x output positions.",
        66_355_200: "with padding=1 the output stays 32x32, not 30x30.",
    })


@exercise("ch01.stacked_3x3",
          "With 64 channels in and out and no biases, how many weights do two stacked 3x3 "
          "convolutions have, and how many does one 5x5 convolution have? Answer a pair (two_3x3, one_5x5).")
def _ch01_stacked(answer):
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return False, "answer with a pair: (weights of two 3x3 convolutions, weights of one 5x5)."
    ok1, msg1 = _number(answer[0], 2 * 9 * 64 * 64, {36_864: "that is one 3x3 convolution; there are two."})
    ok2, msg2 = _number(answer[1], 25 * 64 * 64, {})
    if ok1 and ok2:
        return True, f"{2 * 9 * 64 * 64:,} against {25 * 64 * 64:,}: the same 5x5 view for 28% fewer weights."
    return False, ("two 3x3: " + msg1) if not ok1 else ("one 5x5: " + msg2)


@exercise("ch01.output_size_fn",
          "Write conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1) -> int.")
def _ch01_output_size_fn(fn):
    if not callable(fn):
        return False, "pass your function itself (without calling it)."
    for size, k, s, p, d in itertools.product((5, 7, 32, 33), (1, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        if d * (k - 1) + 1 > size + 2 * p:
            continue
        expected = conv2d_output_size(size, k, s, p, d)
        got = fn(size, k, s, p, d)
        if got != expected:
            hint = ""
            if d > 1:
                hint = " A dilated kernel spans dilation*(kernel_size-1)+1 pixels."
            elif s > 1:
                hint = " Divide by the stride and round down, then add 1."
            return False, (f"for size={size}, kernel_size={k}, stride={s}, padding={p}, dilation={d} "
                           f"you return {got}; nn.Conv2d gives {expected}.{hint}")
    return True, "your formula agrees with nn.Conv2d on 200+ settings, dilation included."


@exercise("ch01.gap_head",
          "Write an nn.Module class GAPHead(in_channels, num_classes) that maps (B, C, H, W) to "
          "(B, num_classes) with global average pooling and one linear layer, for any H and W.")
def _ch01_gap_head(cls):
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return False, "pass the class itself (a subclass of nn.Module), not an instance."
    head = cls(64, 10).eval()
    n = sum(p.numel() for p in head.parameters())
    if n != 64 * 10 + 10:
        return False, f"it has {n:,} parameters; pooling has none, so only a Linear(64, 10): 650."
    torch.manual_seed(0)
    for h, w in ((8, 8), (5, 3), (1, 1)):
        x = torch.randn(2, 64, h, w)
        with torch.no_grad():
            out = head(x)
            if tuple(out.shape) != (2, 10):
                return False, f"input {tuple(x.shape)} gave output {tuple(out.shape)}, expected (2, 10)."
            # Averaging forgets where things were: shuffling positions must not change the output.
            perm = torch.randperm(h * w)
            shuffled = x.flatten(2)[:, :, perm].reshape_as(x)
            if not torch.allclose(head(shuffled), out, atol=1e-5):
                return False, "the output depends on where features are: average over H and W first."
            # The pooled vector alone must decide the output: a constant map with the same
            # channel means gives the same logits.
            const = x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
            tiled = torch.cat([x, x], dim=3)  # same means, twice the sums
            if not (torch.allclose(head(const), out, atol=1e-5) and torch.allclose(head(tiled), out, atol=1e-5)):
                return False, "use the mean over H and W (not the max or the sum)."
    return True, "any input size works, and the head has only 650 parameters."
