"""Exercise checkers: ``check("ch01.conv_params", answer)`` says pass or fail, with a hint.

Each exercise of the book is registered here with its question and a checker that
takes the learner's answer (a number, a function or a module class) and returns
``(passed, message)``. Checkers never reveal the answer; hints point at the usual
mistake. Every checker is tested against a reference solution and a wrong answer
(``tests/test_check.py``).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from . import _validate as V
from .measure import conv2d_output_size
from .models.weights import randomize_batchnorm

__all__ = ["Exercise", "Verdict", "check", "list_exercises", "exercise", "reference"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: an id like ``"ch01.conv_params"``, its question, and its checker."""

    id: str
    question: str
    checker: Callable[[Any], tuple[bool, str]]
    # The correct answer where it is a value (a number, a tuple, a letter), None where the
    # answer is code. Tests look for it in the chapters' outputs and prose, where it must
    # not be given away; a test checks that it passes its own checker.
    reference: Any = None


_EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, question: str, reference: Any = None):
    """Register a checker function ``answer -> (passed, message)`` under ``id``.

    ``reference`` is the correct answer when it is a value (see :class:`Exercise`).
    """
    def wrap(fn: Callable[[Any], tuple[bool, str]]):
        if id in _EXERCISES:
            raise ValueError(f"exercise {id!r} is already registered")
        _EXERCISES[id] = Exercise(id, question, fn, reference)
        return fn
    return wrap


def reference(id: str) -> Any:
    """The registered correct answer of exercise ``id``, or None where the answer is code.

    Raises:
        ValueError: no exercise ``id`` is registered.
    """
    if id not in _EXERCISES:
        raise ValueError(f"no exercise {id!r}; list_exercises() names the registered ones")
    return _EXERCISES[id].reference


def list_exercises(prefix: str = "") -> list[str]:
    """Ids of the registered exercises starting with ``prefix`` (e.g. ``"ch01"``)."""
    if not isinstance(prefix, str):
        raise V.ArgumentTypeError(f"prefix must be a string such as 'ch01', got {prefix!r:.60}")
    return sorted(k for k in _EXERCISES if k.startswith(prefix))


class Verdict:
    """What :func:`check` returns: true when the answer passed, with the message.

    ``check`` has already printed the message, so in a notebook a ``Verdict`` at the end
    of a cell displays nothing more (no stray ``False`` under the message).
    """

    __slots__ = ("passed", "message")

    def __init__(self, passed: bool, message: str) -> None:
        self.passed, self.message = bool(passed), message

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"Verdict(passed={self.passed}, message={self.message!r})"

    def _ipython_display_(self) -> None:
        """IPython calls this instead of showing the repr: the message is already printed."""


def check(id: str, answer: Any, quiet: bool = False) -> Verdict:
    """Check an answer and print the verdict.

    Args:
        id: the exercise id shown in the book, e.g. ``"ch01.output_size"``.
        answer: a number, a function or a module class, as the exercise asks.
        quiet: do not print; only return the verdict.

    Returns:
        A :class:`Verdict`, true when the answer passed (``if check(...):`` works).
    """
    if not isinstance(id, str):
        raise V.ArgumentTypeError(f"id must be an exercise id such as 'ch01.conv_params', got {id!r:.60}")
    if id not in _EXERCISES:
        import difflib

        close = difflib.get_close_matches(id, _EXERCISES, n=3)
        raise ValueError(f"no exercise {id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        passed, message = _EXERCISES[id].checker(_plain_answer(answer))
    except Exception as e:  # the learner's code raised: report it as a failed attempt
        passed, message = False, f"your answer raised {type(e).__name__}: {e}"
    message = ("✅ Correct. " if passed else "❌ Not yet. ") + message
    if not quiet:
        print(message)
    return Verdict(passed, message)


def _plain_answer(answer: Any) -> Any:
    """NumPy numbers and arrays, and tensors of one element, as plain Python values (also
    inside tuples and lists), so ``np.int64(73856)`` or ``np.array([3, 4, 6, 3])`` is
    checked like ``73856`` or ``[3, 4, 6, 3]``. Anything else is passed unchanged."""
    if isinstance(answer, (tuple, list)):
        return type(answer)(_plain_answer(a) for a in answer)
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        return answer.item()
    if type(answer).__module__ == "numpy" and hasattr(answer, "tolist"):  # np.int64, np.float32, np.ndarray
        return answer.tolist()
    return answer


def _not_a_module_class(cls: Any) -> str | None:
    """The message for an answer that should be an nn.Module class and is not, else None."""
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return None
    return "pass the class itself (a subclass of nn.Module), not an instance."


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
          "A 5x5 convolution with stride 2 and padding 2 is applied to a 28x28 image. "
          "How wide is its output?",
          reference=14)
def _ch01_output_size(answer):
    return _number(answer, 14, {
        12: "that is the size without padding: the formula adds 2*padding to the input first.",
        15: "the division by the stride is rounded down (floor), not up.",
        28: "a stride of 2 moves the kernel two pixels at a time: the output shrinks.",
        13: "the formula ends with + 1: floor((size + 2*padding - kernel_size) / stride) + 1.",
    }, " pixels")


@exercise("ch01.conv_params",
          "How many parameters (weights and biases) does nn.Conv2d(128, 256, kernel_size=3) have?",
          reference=295_168)
def _ch01_conv_params(answer):
    return _number(answer, 295_168, {
        294_912: "that counts the weights only: nn.Conv2d has a bias per output channel by default.",
        1_152: "that is one filter's weights (3*3*128); there are 256 filters.",
        2_304: "each of the 256 filters has 3*3*128 weights, not 3*3.",
    })


@exercise("ch01.conv_macs",
          "How many multiply-accumulates (MACs) does nn.Conv2d(64, 128, kernel_size=3, padding=1) "
          "cost on one 32x32 input?",
          reference=75_497_472)
def _ch01_conv_macs(answer):
    return _number(answer, 75_497_472, {
        150_994_944: "that is FLOPs (2 per MAC); the question asks for MACs.",
        75_628_544: "biases are additions, not multiply-accumulates: count weights x output positions.",
        66_355_200: "with padding=1 the output stays 32x32, not 30x30.",
    })


@exercise("ch01.stacked_3x3",
          "With 64 channels in and out and no biases, how many weights do two stacked 3x3 "
          "convolutions have, and how many does one 5x5 convolution have? Answer a pair (two_3x3, one_5x5).",
          reference=(73_728, 102_400))
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
    if problem := _not_a_module_class(cls):
        return False, problem
    head = cls(64, 10).eval()
    n = sum(p.numel() for p in head.parameters())
    if n != 64 * 10 + 10:
        return False, (f"it has {n:,} parameters, not what one layer from the 64 pooled channels to "
                       "the 10 classes needs (pooling has none).")
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


# --------------------------------------------------------------------------- chapter 2


@exercise("ch02.basic_block",
          "Write an nn.Module class BasicBlockA(in_channels, out_channels, stride=1): ResNet's basic block "
          "(conv1 3x3 with the stride, bn1, ReLU, conv2 3x3, bn2, add the shortcut, ReLU) with an option-A "
          "shortcut: the identity, and where the shape changes every stride-th pixel with zero channels "
          "appended. Name the layers conv1, bn1, conv2, bn2.")
def _ch02_basic_block(cls):
    import torch.nn.functional as F

    from .measure import count_params
    from .models.resnet import BasicBlock, make_shortcut

    if problem := _not_a_module_class(cls):
        return False, problem
    for cin, cout, stride in ((16, 16, 1), (16, 32, 2)):
        torch.manual_seed(0)
        shortcut = make_shortcut("A", cin, cout, stride) if (cin, stride) != (cout, 1) else None
        ref = BasicBlock(cin, cout, stride, shortcut).eval()
        randomize_batchnorm(ref, spread=0.2)  # a BN in the wrong place shows
        ours = cls(cin, cout, stride).eval()
        n, expected = count_params(ours), count_params(ref)
        if n != expected:
            extra = (f" Option A's shortcut has no parameters (no 1x1 projection)." if n > expected else "")
            return False, (f"BasicBlockA({cin}, {cout}, {stride}) has {n:,} parameters, the basic block "
                           f"{expected:,}: two bias-free 3x3 convolutions and two BatchNorms.{extra}")
        theirs, mine = ref.state_dict(), ours.state_dict()
        missing = [k for k in theirs if k not in mine]
        if missing:
            return False, f"name the layers conv1, bn1, conv2, bn2 (missing: {', '.join(missing[:4])})."
        wrong = [k for k in theirs if mine[k].shape != theirs[k].shape]
        if wrong:
            return False, (f"{wrong[0]} has shape {tuple(mine[wrong[0]].shape)}, expected "
                           f"{tuple(theirs[wrong[0]].shape)}.")
        ours.load_state_dict(theirs, strict=False)
        torch.manual_seed(1)
        x = torch.randn(2, cin, 8, 8)
        with torch.no_grad():
            out, expected_out = ours(x), ref(x)
            if tuple(out.shape) != tuple(expected_out.shape):
                return False, (f"input {tuple(x.shape)} gave {tuple(out.shape)}, expected "
                               f"{tuple(expected_out.shape)} (stride {stride}, {cout} channels).")
            if torch.allclose(out, expected_out, atol=1e-5):
                continue
            branch = ref.bn2(ref.conv2(torch.relu(ref.bn1(ref.conv1(x)))))
            sc = ref.shortcut(x)
            late = ref.bn2(F.conv2d(torch.relu(ref.bn1(F.conv2d(x, ref.conv1.weight, padding=1))),
                                    ref.conv2.weight, stride=stride, padding=1))
            extra = cout - cin
            diagnoses = [
                (torch.relu(branch), "the shortcut is missing: add the (padded) input to the branch."),
                (branch + sc, "apply a ReLU after the addition."),
                (torch.relu(branch) + sc, "the last ReLU comes after the addition, not before it."),
                (torch.relu(late + sc), "put the stride on the first 3x3 convolution, conv1."),
            ]
            if extra:
                sub = x[:, :, ::stride, ::stride]
                diagnoses += [
                    (torch.relu(branch + F.pad(sub, (0, 0, 0, 0, extra, 0))),
                     "append the zero channels after the input's channels, not before them."),
                    (torch.relu(branch + F.pad(F.avg_pool2d(x, stride), (0, 0, 0, 0, 0, extra))),
                     "option A keeps every stride-th pixel (x[:, :, ::s, ::s]); it does not average."),
                ]
            for wrong_out, hint in diagnoses:
                if wrong_out.shape == out.shape and torch.allclose(out, wrong_out, atol=1e-5):
                    return False, hint
            case = "a block that keeps the shape" if stride == 1 else "a block that halves the size"
            return False, f"for {case} the output differs from cnnlearn's BasicBlock with the same weights."
    return True, "your block computes the same function as cnnlearn's BasicBlock with shortcut option A."


@exercise("ch02.bottleneck_params",
          "How many parameters (convolution weights and BatchNorm scales and shifts) does the bottleneck "
          "block Bottleneck(1024, 1024) of ResNet-50's third stage have? (1x1 1024 -> 256, 3x3 256 -> 256, "
          "1x1 256 -> 1024, no biases, a BatchNorm after each convolution, identity shortcut.)",
          reference=1_117_184)
def _ch02_bottleneck_params(answer):
    return _number(answer, 1_117_184, {
        1_114_112: "that counts the convolution weights only: each BatchNorm adds a scale and a shift per channel.",
        1_120_256: "BatchNorm's running mean and variance are buffers, not parameters: count only its scale and shift.",
        18_874_368: "that is two 3x3 convolutions at 1024 channels, the block without a bottleneck.",
        1_115_648: "each BatchNorm has two parameters per channel: a scale and a shift.",
    })


@exercise("ch02.resnet200_blocks",
          "He et al.'s ResNet-200 (2016) is built of bottlenecks; it keeps ResNet-152's first, third and fourth "
          "stages (3, 36 and 3 blocks) and deepens the second. How many bottlenecks does each of its four stages "
          "have? Answer a tuple of four ints.",
          reference=(3, 24, 36, 3))
def _ch02_resnet200_blocks(answer):
    if not (isinstance(answer, (tuple, list)) and len(answer) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) for n in answer)):
        return False, "answer with four ints, one per stage, e.g. (1, 1, 1, 1)."
    answer = tuple(answer)
    if answer == (3, 24, 36, 3):
        return True, ("(3, 24, 36, 3): 66 bottlenecks of three convolutions, plus the stem conv and the fc: "
                      "200 layers.")
    known = {(3, 8, 36, 3): "that is ResNet-152 itself: deepen its second stage until the layers add up to 200.",
             (3, 4, 23, 3): "that is ResNet-101.", (3, 4, 6, 3): "that is ResNet-50 (and ResNet-34)."}
    if answer in known:
        return False, known[answer]
    if (answer[0], answer[2], answer[3]) != (3, 36, 3):
        return False, "keep ResNet-152's first, third and fourth stages: 3, 36 and 3 bottlenecks."
    if 2 * sum(answer) + 2 == 200:
        return False, "that counts two convolutions per block, as in a basic block: a bottleneck has three."
    return False, (f"that gives 3 x {sum(answer)} + 2 = {3 * sum(answer) + 2} weighted layers: each bottleneck "
                   f"has three convolutions, and the stem conv and the fc add two.")


@exercise("ch02.option_a_cost",
          "How many parameters do the shortcuts add to a CIFAR ResNet-20 twice as wide (stem 32 channels, "
          "stages of 32, 64 and 128) with option A, and how many with option B (a 1x1 convolution + "
          "BatchNorm where the shape changes)? Answer a pair (A, B).",
          reference=(0, 10_624))
def _ch02_option_a_cost(answer):
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return False, "answer with a pair: (parameters added by option A, parameters added by option B)."
    ok_a, msg_a = _number(answer[0], 0, {})
    if not ok_a:
        return False, ("option A: subsampling and zero channels have no weights: it adds nothing."
                       if isinstance(answer[0], (int, float)) and not isinstance(answer[0], bool) else msg_a)
    ok_b, msg_b = _number(answer[1], 10_624, {
        10_240: "each projection has a BatchNorm too: two parameters per output channel.",
        55_616: "that is option C, a projection in every block; B projects only where the shape changes.",
        10_432: "the projections have no bias (a BatchNorm follows), but the BatchNorm has a scale and a shift.",
        8_448: "two blocks change the shape: 32 -> 64 channels and 64 -> 128 channels.",
        2_176: "two blocks change the shape: 32 -> 64 channels and 64 -> 128 channels.",
        2_752: "that is the ResNet-20 of section 2.7 (16, 32 and 64 channels); this one is twice as wide.",
    })
    if not ok_b:
        return False, "option B: " + msg_b
    return True, "0 against 10,624: option A is free in parameters and MACs; its price is what it throws away."


# --------------------------------------------------------------------------- chapter 3


@exercise("ch03.resnext_block_params",
          "How many parameters (convolution weights and BatchNorm scales and shifts) does a ResNeXt block in "
          "the grouped form have with 512 input and output channels, cardinality 16 and bottleneck width d = 8, "
          "identity shortcut?",
          reference=141_824)
def _ch03_resnext_block_params(answer):
    from .models.resnext import ResNeXtGrouped

    expected = sum(p.numel() for p in ResNeXtGrouped(512, 512, cardinality=16, width=8).parameters())
    mid = 16 * 8
    convs = 512 * mid + mid * (mid // 16) * 9 + mid * 512
    return _number(_plain_answer(answer), expected, {
        convs: "those are the convolutions' weights; add the BatchNorms' scales and shifts (2 per channel).",
        convs + (mid + mid + 512): "each BatchNorm has two parameters per channel, a scale and a shift.",
        expected - mid * (mid // 16) * 9 + mid * mid * 9: "the 3x3 convolution is grouped: each output channel "
                                                          "reads only 128 / 16 = 8 channels.",
    })


@exercise("ch03.dense_input_channels",
          "In DenseNet-121, how many channels enter the 10th dense layer of the third dense block "
          "(the input of its first BatchNorm)?",
          reference=544)
def _ch03_dense_input_channels(answer):
    k, stem = 32, 64
    block3_in = ((stem + 6 * k) // 2 + 12 * k) // 2  # 256
    expected = block3_in + 9 * k
    return _number(_plain_answer(answer), expected, {
        block3_in + 10 * k: "layer 10 reads the block's input and the 9 layers before it, not its own output.",
        (stem + 6 * k + 12 * k) + 9 * k: "each transition halves the channels (compression 0.5).",
        (stem + 6 * k) + 12 * k + 9 * k: "each transition halves the channels (compression 0.5).",
        ((stem + 6 * k) // 2 + 12 * k) + 9 * k: "the transition after block 2 halves its 512 channels too.",
        block3_in: "that is the block's input; layer 10 also reads the 9 layers before it.",
        4 * k: "that is the bottleneck's output (4k); the question asks for the layer's input.",
    })


@exercise("ch03.harmonic_sources",
          "Which layers does layer 12 of a harmonic dense block read? A tuple of layer numbers (0 is the input).",
          reference=(11, 10, 8))
def _ch03_harmonic_sources(answer):
    from .models.hardnet import harmonic_links

    answer = _plain_answer(answer)
    if not (isinstance(answer, (tuple, list, set)) and all(isinstance(n, int) and not isinstance(n, bool)
                                                            for n in answer)):
        return False, "answer with a tuple of layer numbers, e.g. (5, 3)."
    expected = harmonic_links(12)[11]
    mine = set(answer)
    if mine == set(expected):
        return True, f"layer 12 reads {tuple(expected)}: 1, 2 and 4 divide 12, 8 does not."
    if 4 in mine and mine - {4} == {11, 10, 8}:
        return False, "layer k reads k - 2^n; 12 - 8 = 4 would need 8 to divide 12."
    if mine == set(range(12)):
        return False, "that is a dense block's pattern; the harmonic block reads layer k - 2^n where 2^n divides k."
    if 0 in mine:
        return False, "k - 2^n only for the powers of two that divide k: 8 and 16 do not divide 12."
    if mine == {11}:
        return False, "odd layers read only their predecessor; 12 is even: 2 and 4 divide it too."
    return False, "layer k reads k - 2^n for every power of two 2^n that divides k (1, 2, 4, ...)."


def _ch03_four_paths_reference(channels: int, width: int, seed: int) -> nn.Module:
    from .models.resnext import ResNeXtPaths
    from .models.weights import randomize_batchnorm

    torch.manual_seed(seed)
    return randomize_batchnorm(ResNeXtPaths(channels, channels, cardinality=4, width=width), seed=seed).eval()


@exercise("ch03.concat_form",
          "Write an nn.Module class EarlyConcat(channels, width): form (b) of a 4-path ResNeXt block. Four paths "
          "in an nn.ModuleList, each 1x1 conv (channels -> width), BN, ReLU, 3x3 conv (width -> width, padding 1), "
          "BN, ReLU; their outputs concatenated to 4*width channels; one 1x1 conv back to channels, BN; + input; "
          "ReLU. No biases; layers defined in this order.")
def _ch03_concat_form(cls):
    from .models.resnext import convert_block

    if problem := _not_a_module_class(cls):
        return False, problem
    for channels, width, size in ((16, 3, 7), (32, 2, 6)):
        ours = cls(channels, width).eval()
        convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
        if len(convs) != 9 or len(bns) != 9:
            return False, (f"EarlyConcat({channels}, {width}) has {len(convs)} nn.Conv2d and {len(bns)} "
                           "nn.BatchNorm2d; form (b) has nine of each (two per path, one after the concatenation).")
        if any(c.bias is not None for c in convs):
            return False, "no biases (bias=False): each convolution is followed by a BatchNorm."
        if any(c.groups != 1 for c in convs):
            return False, "no grouped convolution in form (b): the paths are separate modules."
        shapes = [tuple(c.weight.shape) for c in convs]
        expected = [(width, channels, 1, 1), (width, width, 3, 3)] * 4 + [(channels, 4 * width, 1, 1)]
        if shapes != expected:
            return False, (f"the convolutions' weights, in the order they are defined, should have shapes "
                           f"{expected}; yours are {shapes}.")
        reference = convert_block(_ch03_four_paths_reference(channels, width, seed=channels), "concat").eval()
        ref_convs = [m for m in reference.modules() if isinstance(m, nn.Conv2d)]
        ref_bns = [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for mine, theirs in zip(convs + bns, ref_convs + ref_bns):
                mine.load_state_dict(theirs.state_dict())
            x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
            try:
                out = ours(x)
            except RuntimeError as error:
                return False, (f"EarlyConcat({channels}, {width}) fails on a ({channels}, {size}, {size}) input "
                               f"({str(error)[:80]}): the 3x3 convolutions need padding=1, and the paths are "
                               "concatenated along the channels (dim=1).")
            expected_out = reference(x)
        if tuple(out.shape) != tuple(expected_out.shape):
            return False, (f"the output has shape {tuple(out.shape)}, expected {tuple(expected_out.shape)}: "
                           "the 3x3 convolutions need padding=1.")
        if not torch.allclose(out, expected_out, atol=1e-4):
            return False, ("the output differs from the 4-path block's with the same weights: each path "
                           "relu(bn2(conv2 relu(bn1(conv1 x)))), concatenated along dim 1, then bn3(conv3 .), "
                           "add x, then relu.")
    return True, ("your block computes what 4 separate paths summed compute (form a), with one 1x1 "
                  "convolution after the concatenation instead of four.")



# --------------------------------------------------------------------------- chapter 3b


@exercise("ch03b.split_attention_params",
          "How many parameters (convolution weights and biases, BatchNorm scales and shifts) does "
          "SplitAttentionConv(128, 128, radix=4, cardinality=2) have?",
          reference=116_608)
def _ch03b_split_attention_params(answer):
    from .models.resnest import SplitAttentionConv

    c_in = c = 128
    radix, card = 4, 2
    expected = sum(p.numel() for p in SplitAttentionConv(c_in, c, radix=radix, cardinality=card).parameters())
    attn = 128  # make_divisible(128 * 4 / 4, 8, min_value=32)
    conv = radix * c * (c_in // (radix * card)) * 9
    fc1, fc2 = attn * (c // card) + attn, radix * c * (attn // card) + radix * c
    bns = 2 * radix * c + 2 * attn
    return _number(_plain_answer(answer), expected, {
        expected - attn - radix * c: "fc1 and fc2 of split attention have biases.",
        expected - bns: "count the two BatchNorms (after the convolution and after fc1): 2 parameters per channel.",
        expected - conv + radix * c * c_in * 9: "the 3x3 convolution has radix * cardinality = 8 groups.",
        expected - conv + radix * c * (c_in // card) * 9: "the 3x3 convolution is grouped by radix * cardinality "
                                                           "= 8, not by the cardinality alone.",
        expected - fc1 - fc2 + attn * c + attn + radix * c * attn + radix * c: "fc1 and fc2 are grouped by the "
                                                                             "cardinality (2 groups).",
        conv + bns - 2 * attn + 2 * 32 + 32 * (c // card) + 32 + radix * c * (32 // card) + radix * c:
            "the attention width is max(128 * 4 / 4, 32) = 128, not 32.",
    })


def _ch03b_se_and_input(channels: int = 256, reduced: int = 16):
    from .models.layers import SqueezeExcite

    torch.manual_seed(0)
    se = SqueezeExcite(channels, reduced).eval()
    for p in se.parameters():
        nn.init.normal_(p, std=0.2)
    return se, torch.randn(3, channels, 4, 4, generator=torch.Generator().manual_seed(1))


@exercise("ch03b.se_settings",
          "Which arguments of SplitAttention(256, radix, cardinality, attn_channels, norm_layer, bias) make it "
          "compute what SqueezeExcite(256, 16) computes? A dict of the five arguments.",
          reference=dict(radix=1, cardinality=1, attn_channels=16, norm_layer=None, bias=True))
def _ch03b_se_settings(answer):
    from .models.resnest import SplitAttention

    keys = {"radix", "cardinality", "attn_channels", "norm_layer", "bias"}
    if not isinstance(answer, dict) or set(answer) != keys:
        return False, f"answer with a dict of exactly these keys: {sorted(keys)}."
    unanswered = sorted(k for k, v in answer.items() if v is ...)
    if unanswered:   # before any hint, so that the hints give nothing away
        return False, f"replace the ... of {', '.join(unanswered)} with your answer."
    if answer["norm_layer"] is not None:
        return False, "SE has no normalisation between its two layers: norm_layer=None."
    if answer["bias"] is not True:
        return False, "SE's two 1x1 layers have biases."
    if answer["attn_channels"] != 16:
        return False, "attn_channels is the bottleneck between the two layers: SqueezeExcite(256, 16)'s is 16."
    if answer["cardinality"] != 1:
        return False, "SE's layers are not grouped: one cardinal group."
    if answer["radix"] != 1:
        return False, ("SE gates one feature map with a sigmoid; with R splits split attention shares a softmax "
                       "out among R maps.")
    se, x = _ch03b_se_and_input()
    try:
        sa = SplitAttention(256, **answer).eval()
    except (TypeError, ValueError) as error:
        return False, f"SplitAttention(256, **answer) fails: {str(error)[:100]}"
    sa.fc1.load_state_dict(se.fc1.state_dict())
    sa.fc2.load_state_dict(se.fc2.state_dict())
    with torch.no_grad():
        if not torch.allclose(sa(x), se(x), atol=1e-5):
            return False, "with these settings and SE's weights the outputs differ."
    return True, "split attention with one split and one cardinal group, biases and no BN is the SE unit."


@exercise("ch03b.involution_kernels",
          "Complete MyInvolution(channels, kernel_size, group_channels=16, reduction=4): phi = 1x1 conv "
          "(channels -> channels // reduction, no bias), BatchNorm, ReLU, 1x1 conv (with bias) to K*K*G; "
          "kernels(x) returns (B, G*K*K, H, W). Layers defined in this order.")
def _ch03b_involution_kernels(cls):
    from .models.involution import Involution, involution_loop

    if problem := _not_a_module_class(cls):
        return False, problem
    for channels, k, group_channels, size in ((32, 3, 16, 6), (48, 5, 8, 5)):
        try:
            mine = cls(channels, k, group_channels=group_channels).eval()
        except Exception as error:  # the learner's constructor: any error is a message, not a crash
            return False, f"MyInvolution({channels}, {k}, group_channels={group_channels}) fails: {str(error)[:100]}"
        torch.manual_seed(channels)
        ref = randomize_batchnorm(Involution(channels, k, group_channels=group_channels), seed=channels).eval()
        theirs = list(ref.state_dict().values())
        names = list(mine.state_dict())
        shapes = [tuple(t.shape) for t in mine.state_dict().values()]
        expected = [tuple(t.shape) for t in theirs]
        if shapes != expected:
            return False, (f"MyInvolution({channels}, {k}, group_channels={group_channels})'s weights and buffers, "
                           f"in order, should have shapes {expected} (1x1 conv without bias, BatchNorm, 1x1 conv "
                           f"with bias to K*K*G = {k * k * channels // group_channels}); yours: {shapes}.")
        mine.load_state_dict(dict(zip(names, theirs)))
        x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            try:
                kernels = mine.kernels(x)
            except Exception as error:  # the learner's code
                return False, f"kernels(x) fails on a {tuple(x.shape)} input: {str(error)[:100]}"
            if not isinstance(kernels, torch.Tensor) or tuple(kernels.shape) != (2, k * k * channels // group_channels,
                                                                                 size, size):
                got = tuple(kernels.shape) if isinstance(kernels, torch.Tensor) else type(kernels).__name__
                return False, (f"kernels(x) must return (B, G*K*K, H, W) = "
                               f"{(2, k * k * channels // group_channels, size, size)}; got {got}.")
            if not torch.allclose(involution_loop(x, kernels, k), ref(x), atol=1e-4):
                no_relu = ref.span(ref.reduce[1](ref.reduce[0](x)))
                if torch.allclose(kernels, no_relu, atol=1e-4):
                    return False, "a ReLU follows the BatchNorm."
                return False, ("the involution with your kernels differs from the reference: "
                               "span(relu(bn(reduce(x)))), all 1x1 convolutions on x itself.")
    return True, "your kernels pass the loop check: each pixel's kernel comes from its own features."


# --------------------------------------------------------------------------- chapter 4


@exercise("ch04.module_width",
          "An Inception module on 256 input channels must output 704 channels: a quarter from the 1x1 branch, "
          "half from the 3x3 branch, an eighth each from the 5x5 and the pool branch, and each 1x1 reduction "
          "half as wide as the convolution it feeds. Give its six arguments in Table 1's order (#1x1, "
          "#3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).",
          reference=(176, 176, 352, 44, 88, 88))
def _ch04_module_width(answer):
    from .models.inception import InceptionModule

    if not (isinstance(answer, (tuple, list)) and len(answer) == 6
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in answer)):
        return False, ("answer with six positive ints in Table 1's order: "
                       "(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).")
    ch1, r3, ch3, r5, ch5, proj = answer
    width = InceptionModule(256, *answer).out_channels
    if width != 704:
        hint = (" The reductions are not part of the output: only #1x1 + #3x3 + #5x5 + pool proj are concatenated."
                if ch1 + r3 + ch3 + r5 + ch5 + proj == 704 else "")
        return False, f"InceptionModule(256, *answer) outputs {width} channels, not 704.{hint}"
    if (ch1, ch3, ch5, proj) == (176, 88, 352, 88):
        return False, ("Table 1's order is #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj: "
                       "the 3x3 branch comes before the 5x5.")
    if (ch1, ch3, ch5, proj) != (176, 352, 88, 88):
        return False, ("the output width is right but the shares are not: 1/4, 1/2, 1/8 and 1/8 of 704 "
                       "for the four branches.")
    if (r3, r5) != (176, 44):
        return False, ("each reduction is half as wide as the convolution it feeds: "
                       "#3x3 reduce = #3x3 / 2, #5x5 reduce = #5x5 / 2.")
    return True, "the four branches concatenate to 704 channels, the 3x3 branch carrying half of them."


@exercise("ch04.reduction_saving",
          "A 5x5 convolution (stride 1, 'same' padding, no bias) maps 192 channels to 48 on a 28x28 map. "
          "Put a 1x1 convolution to 24 channels before it. How many MACs per image does the reduction save?",
          reference=154_441_728)
def _ch04_reduction_saving(answer):
    positions = 28 * 28
    direct = 25 * 192 * 48 * positions
    reduced = (192 * 24 + 25 * 24 * 48) * positions
    return _number(answer, direct - reduced, {
        direct: "that is the cost of the direct 5x5 convolution; subtract what the reduced pair costs.",
        reduced: "that is what the reduced pair costs; the question asks for the difference.",
        direct - 25 * 24 * 48 * positions: "the 1x1 convolution costs MACs too: 192 * 24 per position.",
        2 * (direct - reduced): "that is FLOPs (2 per MAC); the question asks for MACs.",
        25 * 192 * 48 - (192 * 24 + 25 * 24 * 48): "those are weights; each is used once per output position "
                                                   "(28x28 of them).",
        direct // reduced: "that is the ratio of the two costs; the question asks for the MACs saved.",
    })


def _ch04_reference_factorized(cin: int, cout: int, n: int, seed: int) -> nn.Module:
    from .models.inception import BasicConv

    torch.manual_seed(seed)
    ref = nn.Sequential(BasicConv(cin, cout, (1, n)), BasicConv(cout, cout, (n, 1))).eval()
    return randomize_batchnorm(ref, seed, spread=0.2)


@exercise("ch04.asymmetric_conv",
          "Write an nn.Module class Factorized(in_channels, out_channels, n): a 1 x n convolution (in -> out), "
          "BatchNorm (eps=0.001), ReLU, then an n x 1 convolution (out -> out), BatchNorm (eps=0.001), ReLU; "
          "no biases, padding that keeps the height and width.")
def _ch04_asymmetric_conv(cls):
    if problem := _not_a_module_class(cls):
        return False, problem
    for cin, cout, n, size in ((8, 12, 3, 9), (6, 10, 7, 17)):
        ours = cls(cin, cout, n).eval()
        convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
        if len(convs) != 2:
            return False, (f"Factorized({cin}, {cout}, {n}) has {len(convs)} nn.Conv2d layers; "
                           "the factorisation has two.")
        first, second = convs
        if first.kernel_size == (n, n) or second.kernel_size == (n, n):
            return False, f"a kernel of {n}x{n} is the convolution being factorised: use (1, {n}) and ({n}, 1)."
        if (first.kernel_size, second.kernel_size) == ((n, 1), (1, n)):
            return False, f"the order is 1 x n first, then n x 1 (kernel_size=(1, {n}), then ({n}, 1))."
        if (first.kernel_size, second.kernel_size) != ((1, n), (n, 1)):
            return False, (f"the kernels are (1, {n}) then ({n}, 1); "
                           f"yours are {first.kernel_size} and {second.kernel_size}.")
        if (first.in_channels, first.out_channels, second.in_channels, second.out_channels) != (cin, cout, cout, cout):
            return False, f"the first convolution maps {cin} -> {cout} channels, the second {cout} -> {cout}."
        if first.bias is not None or second.bias is not None:
            return False, "no biases (bias=False): the BatchNorm after each convolution has its own shift."
        if len(bns) != 2:
            return False, f"put a BatchNorm after each convolution (found {len(bns)} nn.BatchNorm2d)."
        if any(b.eps != 1e-3 for b in bns):
            return False, "Inception v3's BatchNorms use eps=0.001 (nn.BatchNorm2d(channels, eps=0.001))."
        ref = _ch04_reference_factorized(cin, cout, n, seed=cin + n)
        with torch.no_grad():
            for mine, theirs in zip(convs + bns, (ref[0].conv, ref[1].conv, ref[0].bn, ref[1].bn)):
                mine.load_state_dict(theirs.state_dict())
            x = torch.randn(2, cin, size, size + 2, generator=torch.Generator().manual_seed(1))
            out, expected = ours(x), ref(x)
        if tuple(out.shape) != tuple(expected.shape):
            return False, (f"the output has shape {tuple(out.shape)}, expected {tuple(expected.shape)}: a (1, {n}) "
                           f"kernel needs padding (0, {n // 2}), a ({n}, 1) kernel padding ({n // 2}, 0).")
        if not torch.allclose(out, expected, atol=1e-5):
            no_mid = ref[1].bn(ref[1].conv(ref[0].bn(ref[0].conv(x))))
            if torch.allclose(out, no_mid.relu(), atol=1e-5):
                return False, "put a ReLU after the first BatchNorm too: two nonlinearities, one per convolution."
            if torch.allclose(out, ref[1].bn(ref[1].conv(ref[0](x))), atol=1e-5):
                return False, "put a ReLU after the second BatchNorm too."
            return False, ("the output differs from the reference's with the same weights: "
                           "relu(bn(conv 1xn)), then relu(bn(conv nx1)).")
    weights = sum(m.weight.numel() for m in cls(8, 8, 3).modules() if isinstance(m, nn.Conv2d))
    return True, (f"your block computes the factorised pair; from 8 to 8 channels with n = 3 its convolutions "
                  f"have {weights} weights, where one 3x3 convolution would have {9 * 8 * 8}.")


# --------------------------------------------------------------------------- chapter 6


def _se_tensors(module: nn.Module, channels: int, reduced: int) -> dict[str, torch.Tensor] | str:
    """The four tensors of a learner's SE unit, found by shape whatever their names:
    ``fc1.weight`` (reduced x channels, as Linear or 1x1 conv), ``fc1.bias``, ``fc2.weight``,
    ``fc2.bias``. Returns a message instead when they are not there."""
    found: dict[str, torch.Tensor] = {}
    for p in module.parameters():
        shape = tuple(p.shape)
        if shape in ((reduced, channels), (reduced, channels, 1, 1)):
            role = "fc1.weight"
        elif shape in ((channels, reduced), (channels, reduced, 1, 1)):
            role = "fc2.weight"
        elif shape == (reduced,):
            role = "fc1.bias"
        elif shape == (channels,):
            role = "fc2.bias"
        else:
            return (f"a parameter of shape {shape} fits no layer of an SE unit with {channels} channels "
                    f"and a bottleneck of {reduced}.")
        if role in found:
            return f"two parameters look like {role}; an SE unit has two layers, each with one weight and one bias."
        found[role] = p
    if len(found) != 4:
        return "an SE unit has exactly two layers (channels -> channels // reduction -> channels), each with a bias."
    return found


def _copy_se(reference: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    ref = dict(reference.named_parameters())
    with torch.no_grad():
        for role, p in tensors.items():
            p.copy_(ref[role].reshape(p.shape))


def _random_se(channels: int, reduced: int, seed: int = 0) -> nn.Module:
    from .models.layers import SqueezeExcite

    torch.manual_seed(seed)
    se = SqueezeExcite(channels, reduced).eval()
    with torch.no_grad():
        se.fc2.bias.normal_(0, 1)  # gates spread over (0, 1), not all near 0.5
    return se


@exercise("ch06.se_module",
          "Write CBAM's channel attention as an nn.Module class SE(channels, reduction): squeeze each channel "
          "by global average pooling and by global max pooling, pass both vectors through the same "
          "Linear(channels -> channels // reduction), ReLU, Linear(-> channels), add the two results, "
          "apply a sigmoid, and multiply the input's channels by the gates.")
def _ch06_se_module(cls):
    if problem := _not_a_module_class(cls):
        return False, problem
    for channels, reduction in ((64, 16), (48, 8)):
        reduced = channels // reduction
        se = cls(channels, reduction).eval()
        n = sum(p.numel() for p in se.parameters())
        expected = 2 * channels * reduced + reduced + channels
        if n != expected:
            hint = {2 * channels * reduced: " Both layers have a bias.",
                    2 * channels * channels + 2 * channels: " The first layer has channels // reduction outputs.",
                    2 * expected: " The two squeezes share one bottleneck: the same two layers for both."}
            return False, (f"SE({channels}, {reduction}) has {n:,} parameters, expected {expected:,} "
                           f"(2*C*C/r weights + C/r + C biases).{hint.get(n, '')}")
        tensors = _se_tensors(se, channels, reduced)
        if isinstance(tensors, str):
            return False, tensors
        ref = _random_se(channels, reduced)
        _copy_se(ref, tensors)
        torch.manual_seed(1)
        x = torch.randn(2, channels, 7, 5)
        with torch.no_grad():
            out = se(x)
            if tuple(out.shape) != tuple(x.shape):
                return False, (f"the output has shape {tuple(out.shape)}; the unit returns the input rescaled, "
                               f"shape {tuple(x.shape)} (multiply x by the gates).")
            def mlp(v):  # the shared bottleneck, on a (B, C, 1, 1) squeeze
                return ref.fc2(ref.act(ref.fc1(v)))
            avg, mx = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
            if torch.allclose(out, x * torch.sigmoid(mlp(avg) + mlp(mx)), atol=1e-5):
                continue
            diagnoses = [
                (x * torch.sigmoid(mlp(avg)), "that is SE's unit: CBAM also squeezes by the max, passes it "
                                             "through the same two layers, and adds the two before the sigmoid."),
                (x * torch.sigmoid(mlp(mx)), "add the average-pooled squeeze too: both go through the same layers."),
                (x * (torch.sigmoid(mlp(avg)) + torch.sigmoid(mlp(mx))),
                 "add the two bottleneck outputs before the sigmoid, so that the gates stay in (0, 1)."),
                (x * torch.sigmoid(mlp(avg + mx)), "pass each squeeze through the bottleneck on its own, then add."),
                (x * (mlp(avg) + mlp(mx)), "the gates must pass through a sigmoid, to lie in (0, 1)."),
                (x * torch.sigmoid(ref.fc2(ref.fc1(avg)) + ref.fc2(ref.fc1(mx))), "put a ReLU between the two layers."),
                (x + torch.sigmoid(mlp(avg) + mlp(mx)), "multiply the channels by their gates, do not add them."),
            ]
            for wrong, hint in diagnoses:
                if torch.allclose(out, wrong, atol=1e-5):
                    return False, hint
            return False, ("the output differs from CBAM's channel attention with the same weights: "
                           "x * sigmoid(mlp(avg) + mlp(max)).")
    return True, ("your unit computes CBAM's channel attention; with the max squeeze removed it is SE's unit "
                  "(cnnlearn's SqueezeExcite).")


@exercise("ch06.se_overhead",
          "An SE unit with r = 16 is added to a bottleneck whose output has 768 channels "
          "(a width SE-ResNet-50 does not have). How many parameters does it add?",
          reference=74_544)
def _ch06_se_overhead(answer):
    return _number(answer, 74_544, {
        73_728: "that counts the weights only: both layers have a bias (48 and 768 of them).",
        73_776: "the second layer has a bias too: one per output channel (768).",
        74_496: "the first layer has a bias too: one per bottleneck channel (48).",
        36_864: "that is one of the two layers' weights; there are two (768 -> 48 and 48 -> 768).",
        1_181_184: "the bottleneck has 768 / 16 = 48 channels; 768 -> 768 -> 768 is no bottleneck.",
    })


@exercise("ch06.add_se",
          "Write an nn.Module class SEBlock(block, reduction) that wraps a cnnlearn BasicBlock and puts "
          "an SE unit (stored as self.se) on its residual branch, after bn2 and before the addition.")
def _ch06_add_se(cls):
    import copy

    from .models.layers import SqueezeExcite
    from .models.resnet import BasicBlock, make_shortcut
    from .models.senet import SEPlacedBlock

    if problem := _not_a_module_class(cls):
        return False, problem
    torch.manual_seed(0)
    cin, cout, reduction = 16, 32, 4
    block = BasicBlock(cin, cout, 2, make_shortcut("A", cin, cout, 2)).eval()
    randomize_batchnorm(block, spread=0.2)
    pristine = copy.deepcopy(block)  # the learner's class may change the block it is given
    ours = cls(block, reduction).eval()
    se = getattr(ours, "se", None)
    if not isinstance(se, nn.Module):
        return False, "store the SE unit as self.se."
    n = sum(p.numel() for p in se.parameters())
    if n == 2 * cin * (cin // reduction) + cin // reduction + cin:
        return False, (f"your SE unit has the block's input channels ({cin}); on the branch it rescales "
                       f"the branch's output, {cout} channels.")
    tensors = _se_tensors(se, cout, cout // reduction)
    if isinstance(tensors, str):
        return False, "self.se: " + tensors
    ref_se = _random_se(cout, cout // reduction)
    _copy_se(ref_se, tensors)
    torch.manual_seed(1)
    x = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        out = ours(x)
        placed = {p: SEPlacedBlock(copy.deepcopy(pristine), p, lambda c: copy.deepcopy(ref_se)).eval()
                  for p in ("standard", "post", "identity")}
        if tuple(out.shape) != (2, cout, 4, 4):
            return False, f"the output has shape {tuple(out.shape)}; the block gives (2, {cout}, 4, 4)."
        if torch.allclose(out, placed["standard"](x), atol=1e-5):
            return True, "SE on the residual branch, before the addition: SE-ResNet's block."
        if torch.allclose(out, placed["post"](x), atol=1e-5):
            return False, ("you rescale after the addition and the ReLU (the paper's SE-POST); rescale "
                           "the branch's output before adding the shortcut.")
        if torch.allclose(out, placed["identity"](x), atol=1e-5):
            return False, "you rescale the shortcut (SE-Identity); rescale the residual branch instead."
        if torch.allclose(out, pristine(x), atol=1e-5):
            return False, "the output is the plain block's: self.se is never applied."
    return False, ("the output differs from the SE block's: branch = bn2(conv2(relu(bn1(conv1(x))))), "
                   "then relu(se(branch) + shortcut(x)).")


def _percentages(values: Any, name: str) -> list[float] | str:
    """``values`` as a list of accuracies in percent, or a message saying what is wrong."""
    if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return f"{name} must be a list of final test accuracies in percent, one per seed."
    if values and max(values) <= 1:
        return f"{name} look like fractions: give the accuracies in percent (100 * history.final_test_acc)."
    if not all(0 <= v <= 100 for v in values):
        return f"{name} must be accuracies in percent, between 0 and 100."
    return [float(v) for v in values]


@exercise("ch06.gate_variant",
          "Build SE-ResNet-20 with hard-sigmoid gates, train it with the seeds of section 6.4, and compare "
          "it seed by seed with the standard SE-ResNet-20: pass (your model function, its accuracies, the "
          "standard unit's accuracies for the same seeds, the cnnlearn.verdict_paired result).")
def _ch06_gate_variant(answer):
    from .models import create_model
    from .models.layers import SqueezeExcite
    from .stats import Verdict as StatsVerdict
    from .stats import verdict_paired

    if not (isinstance(answer, tuple) and len(answer) == 4):
        return False, "pass a tuple of four: (model function, accuracies, standard accuracies, verdict)."
    make_model, accuracies, baseline, result = answer
    if not callable(make_model) or isinstance(make_model, nn.Module):
        return False, "the first item must be a function that returns a new network, called with no arguments."
    model = make_model()
    if not isinstance(model, nn.Module):
        return False, f"your model function returned {type(model).__name__}, not a network."
    units = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    if not units:
        return False, "your network has no SE unit: start from SE-ResNet-20 and change only its gates."
    gates = {type(u.gate).__name__ for u in units}
    if gates != {"Hardsigmoid"}:
        return False, (f"the gates of your SE units are {', '.join(sorted(gates))}; every one must be "
                       f"nn.Hardsigmoid (look at the gate_layer argument of se_resnet).")
    reference_model = create_model("seresnet20")
    if {k: tuple(v.shape) for k, v in model.state_dict().items()} != \
            {k: tuple(v.shape) for k, v in reference_model.state_dict().items()}:
        return False, ("your network differs from SE-ResNet-20 in more than its gates (its tensors have other "
                       "names or shapes): keep r = 16 and the standard placement.")
    accuracies, baseline = _percentages(accuracies, "your accuracies"), _percentages(baseline, "the standard accuracies")
    for values in (accuracies, baseline):
        if isinstance(values, str):
            return False, values
    if len(accuracies) < 2:
        return False, "train at least two seeds: a single seed gives no estimate of the noise."
    if len(accuracies) != len(baseline):
        return False, (f"{len(accuracies)} accuracies against {len(baseline)} standard ones: give one per seed "
                       f"each, in the same order of seeds, so that they pair up.")
    # The standard unit's list passed twice. (Runs so short that every seed ends at one value,
    # as at the smoke budget, can tie legitimately: those are let through.)
    if accuracies == baseline and len(set(baseline)) > 1:
        return False, "your accuracies are the standard unit's: train the hard-sigmoid network for each seed."
    if not isinstance(result, StatsVerdict):
        return False, "the last item must be what cnnlearn.verdict_paired returns (a Verdict)."
    expected = verdict_paired(accuracies, baseline)
    same_noise = result.noise is not None and math.isclose(result.noise, expected.noise, rel_tol=1e-6, abs_tol=1e-9)
    if not (same_noise and math.isclose(abs(result.difference), abs(expected.difference), rel_tol=1e-6, abs_tol=1e-9)):
        return False, ("your verdict does not compare these accuracies seed by seed: call "
                       "cnnlearn.verdict_paired(your accuracies, the standard ones), in the same order of seeds.")
    return True, (f"hard-sigmoid gates against sigmoid gates over {len(accuracies)} paired seeds: {result.text}. "
                  f"Read it against the question the solution discusses: what would it take to see a difference?")


# --------------------------------------------------------------------------- chapter 8


@exercise("ch08.dilated_rf",
          "Three stride-1 convolutions are stacked: 3x3 with dilation 1, 3x3 with dilation 2, then 5x5 with "
          "dilation 3. How wide is the receptive field of one output pixel, in input pixels?",
          reference=19)
def _ch08_dilated_rf(answer):
    return _number(answer, 19, {
        11: "a dilated kernel spans d*(k-1) + 1 pixels: multiply each layer's k - 1 by its dilation.",
        13: "the last layer is 5x5: it adds d*(5-1) pixels, not d*(3-1).",
        9: "each layer adds d*(k-1) to the receptive field; adding the kernel sizes ignores the dilations.",
        23: "the layers' spans overlap by one pixel each: 1 + sum of d*(k-1), not the sum of the spans.",
        21: "each layer adds d*(k-1) to the receptive field, starting from 1 pixel: 1 + 2 + 4 + 12.",
    }, " pixels")


@exercise("ch08.transposed_size",
          "nn.ConvTranspose2d(16, 8, kernel_size=5, stride=3, padding=1, output_padding=2) is applied to a 7x7 "
          "map. How wide is its output?",
          reference=23)
def _ch08_transposed_size(answer):
    return _number(answer, 23, {
        21: "output_padding adds its pixels to one side of the output: + output_padding.",
        2: "that is the ordinary convolution's formula; a transposed convolution enlarges its input.",
        25: "padding crops padding pixels on each side: subtract 2*padding.",
        24: "padding crops padding pixels on each side: subtract 2*padding, not padding once.",
        26: "the input has 7 pixels, so 6 gaps of stride 3 between them: (size - 1) * stride.",
        22: "the kernel adds kernel_size - 1 pixels and the formula ends with + 1.",
    }, " pixels")


@exercise("ch08.no_gridding",
          "Choose dilation rates (r1, r2, r3) for three stride-1 3x3 convolutions so that the receptive field is "
          "at least 17 pixels wide and every input pixel in it reaches the output (no gridding).", reference=(1, 2, 5))
def _ch08_no_gridding(answer):
    from .dilation import covered_fraction, dilated_footprint

    if not (isinstance(answer, (tuple, list)) and len(answer) == 3
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in answer)):
        return False, "answer with three ints >= 1, the dilations of the first, second and third layer."
    rf = 1 + 2 * sum(answer)
    if rf < 17:
        return False, (f"rates {tuple(answer)} give a receptive field of {rf} pixels (1 + 2 * the sum of the "
                       f"rates); it must be at least 17.")
    fraction = covered_fraction(dilated_footprint(answer))
    if fraction < 1:
        from math import gcd
        common = gcd(*answer)
        why = (f" All three have the common factor {common}: only every {common}th pixel can be reached."
               if common > 1 else " Wang et al.'s rule of thumb: the rates must not share a common factor, and "
                                  "the largest gap after two layers must not exceed the kernel size.")
        return False, f"rates {tuple(answer)} reach only {fraction:.0%} of their receptive field.{why}"
    return True, f"receptive field {rf} pixels, fully covered."


@exercise("ch08.iou",
          "A segmentation network's confusion matrix on three classes (rows: true class, columns: predicted) is "
          "[[50, 2, 3], [4, 20, 1], [6, 0, 14]]. What is the IoU of class 2?",
          reference=7 / 12)
def _ch08_iou(answer):
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return False, f"give a number between 0 and 1, not a {type(answer).__name__}"
    if abs(answer - 14 / 24) < 1e-3:
        return True, "14 / (20 + 18 - 14) = 7/12."
    if answer > 1:
        return False, "an IoU lies between 0 and 1 (not in percent)."
    hints = {14 / 20: "that is recall (diagonal / row sum): the IoU's union also has the pixels wrongly "
                      "predicted as class 2 (its column).",
             14 / 18: "that is precision (diagonal / column sum): the IoU's union also has the class-2 pixels "
                      "predicted as something else (its row).",
             84 / 100: "that is the pixel accuracy of all classes; the question asks for class 2's IoU.",
             14 / 38: "the union counts the 14 correct pixels once: row + column - diagonal, not row + column."}
    for value, hint in hints.items():
        if abs(answer - value) < 1e-3:
            return False, hint
    return False, "intersection: the diagonal entry; union: the row sum + the column sum - the diagonal entry."


# --------------------------------------------------------------------------- chapter 9


@exercise("ch09.conv_transpose_size",
          "nn.ConvTranspose2d(128, 64, kernel_size=5, stride=2, padding=2) is applied to a 9x9 map. "
          "How wide is its output?",
          reference=17)
def _ch09_conv_transpose_size(answer):
    return _number(answer, 17, {
        5: "that is the ordinary convolution's formula; a transposed convolution enlarges its input.",
        18: ("a stride-2 transposed convolution doubles the size only with a matching kernel and padding "
             "(k=4, p=1) or output_padding; work through the formula."),
        21: "padding crops the output of a transposed convolution: subtract 2*padding.",
        19: "padding crops padding pixels on each side: subtract 2*padding, not padding once.",
        16: "the formula ends with + 1: (size-1)*stride - 2*padding + (kernel_size-1) + 1.",
        13: "the kernel's extent adds kernel_size - 1 pixels to (size-1)*stride before the final + 1.",
    }, " pixels")


def _ch09_reference_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                           smoothing: float = 0.0) -> torch.Tensor:
    import torch.nn.functional as F

    # One-sided label smoothing (Salimans et al. 2016, Sec. 3.4): real images get the target
    # 1 - smoothing, fakes keep the target 0.
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1 - smoothing))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


@exercise("ch09.smoothed_d_loss",
          "Write d_loss(real_logits, fake_logits, smoothing) with one-sided label smoothing: the cross-entropy "
          "of D = sigmoid(logit) with target 1 - smoothing for each real image and 0 for each fake, averaged "
          "over each batch and summed, as a 0-dim tensor; it must stay finite for logits of +-100.")
def _ch09_smoothed_d_loss(fn):
    import torch.nn.functional as F

    if not callable(fn):
        return False, "pass your function itself (without calling it)."
    ref = _ch09_reference_d_loss
    g = torch.Generator().manual_seed(0)
    # Batches of different sizes (each term is a mean over its own batch) and two smoothing
    # values (a constant 0.1 written into the function must not pass).
    real, fake = torch.randn(16, generator=g) * 2 + 1, torch.randn(24, generator=g) * 2 - 1
    close = lambda a, b: bool(torch.isfinite(a)) and torch.allclose(a, b.float(), rtol=1e-4, atol=1e-5)
    for eps in (0.1, 0.25):
        out = fn(real.clone(), fake.clone(), eps)
        if not isinstance(out, torch.Tensor):
            return False, f"return a torch tensor (0-dim), not a {type(out).__name__}."
        if out.numel() != 1:
            return False, (f"return one number (a 0-dim tensor), got shape {tuple(out.shape)}: "
                           f"average over each batch.")
        out = out.reshape(()).float()
        expected = ref(real, fake, eps)
        if close(out, expected):
            continue
        if not torch.isfinite(out):
            return False, ("your loss is not finite for ordinary logits: take D = sigmoid(logit) before the log "
                           "(or use F.logsigmoid).")
        bce = F.binary_cross_entropy_with_logits
        hints = [
            (ref(real, fake), "that is the loss without smoothing: the real images' target is 1 - smoothing, not 1."),
            (bce(real, torch.full_like(real, 1 - eps)) + bce(fake, torch.full_like(fake, eps)),
             "that smooths both sides: one-sided smoothing keeps the fakes' target at 0 (a target above 0 "
             "would reward D for believing fakes a little)."),
            (bce(real, torch.full_like(real, eps)) + bce(fake, torch.zeros_like(fake)),
             "the real target is 1 - smoothing (close to 1), not smoothing."),
            (bce(real, torch.full_like(real, 1 - eps)) + bce(fake, torch.full_like(fake, 1 - eps)),
             "the fakes' target is 0; only the real images' target moves to 1 - smoothing."),
            ((1 - eps) * ref(real, fake), "smoothing changes the target inside the cross-entropy; it does not "
                                          "scale the loss: -(t log D + (1 - t) log(1 - D)) with t = 1 - smoothing."),
            ((1 - eps) * bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)),
             "the smoothed target keeps both terms of the cross-entropy: -(t log D(x) + (1 - t) log(1 - D(x))) "
             "with t = 1 - smoothing."),
            (ref(real, fake, 0.1), "use the smoothing argument instead of a fixed 0.1 (the checker tries two values)."),
            (ref(-real, -fake, eps), "the labels are swapped: real images get the target near 1, fakes 0."),
            (-expected, "check the sign: a cross-entropy -(t log D + ...) is positive."),
            (0.5 * expected, "add the two batch means; do not average them."),
            (bce(real, torch.full_like(real, 1 - eps), reduction="sum") + bce(fake, torch.zeros_like(fake),
                                                                             reduction="sum"),
             "average over each batch (mean), do not sum."),
            (bce(torch.cat([real, fake]), torch.cat([torch.full_like(real, 1 - eps), torch.zeros_like(fake)])),
             "average each term over its own batch and add the two means (the batches may differ in size)."),
        ]
        for value, hint in hints:
            if close(out, value):
                return False, hint
        return False, ("not the smoothed loss: mean over real images of -((1 - s) log D(x) + s log(1 - D(x))) "
                       "plus mean over fakes of -log(1 - D(G(z))), with D = sigmoid(logit).")
    extreme_real, extreme_fake = torch.tensor([100.0, -100.0, 0.0]), torch.tensor([-100.0, 100.0, 0.0])
    out = fn(extreme_real.clone(), extreme_fake.clone(), 0.1)
    if not isinstance(out, torch.Tensor) or not close(out.reshape(()).float(), ref(extreme_real, extreme_fake, 0.1)):
        return False, ("right for ordinary logits, but not for logits of +-100: log(sigmoid(l)) underflows to "
                       "log(0). Use F.logsigmoid or F.binary_cross_entropy_with_logits (which accepts soft targets).")
    return True, ("the discriminator's loss with one-sided label smoothing: a D that is certain of a real image "
                  "now pays for it, so it cannot push its logits for real images to infinity.")


@exercise("ch09.loss_curve",
          "With the non-saturating generator loss, D's loss falls to about 0.01, D(x) = 0.99, D(G(z)) = 0.001, "
          "G's loss climbs to about 7 and the samples stop improving. Which explanation fits: a, b, c or d?",
          reference="b")
def _ch09_loss_curve(answer):
    letter = answer.strip().strip("()").lower() if isinstance(answer, str) else None
    if letter not in ("a", "b", "c", "d"):
        return False, 'answer with one letter: "a", "b", "c" or "d".'
    if letter == "b":
        return True, ("D wins: it is certain about both kinds of image, and -log D(G(z)) = -ln 0.001, about 6.9, "
                      "is the climbing G loss.")
    return False, {
        "a": ("at convergence D cannot tell real from fake: D(x) and D(G(z)) near 1/2. Here D is certain "
              "about both."),
        "c": "a G that fooled D would make D(G(z)) high; here D rejects every fake (D(G(z)) = 0.001).",
        "d": "D's loss fell to 0.01, so D certainly learned; ask what its certainty leaves G to learn from.",
    }[letter]


@exercise("ch09.equilibrium_g_loss",
          "At the equilibrium D = 1/2 for every image. What is G's non-saturating loss -log D(G(z)) there, in nats?",
          reference=math.log(2))
def _ch09_equilibrium_g_loss(answer):
    import math

    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return False, f"give a number, not a {type(answer).__name__}."
    near = lambda v: abs(answer - v) < 2e-3
    if near(math.log(2)):
        return True, (f"ln 2 = {math.log(2):.4f} nats: -ln(1/2). A G loss well above it means D still "
                      f"rejects the fakes.")
    if near(2 * math.log(2)):
        return False, "that is D's loss, with two terms; G's non-saturating loss has one: -log D(G(z))."
    if near(math.log10(2)):
        return False, "that uses log base 10; the losses use the natural logarithm."
    if near(1.0):
        return False, "that is in bits (log base 2); the losses use the natural logarithm (nats)."
    if near(-math.log(2)):
        return False, ("that is log(1 - D(G(z))), the minimax loss (or a sign slip); the non-saturating loss "
                       "-log D(G(z)) is positive.")
    if near(0.5):
        return False, "D(G(z)) = 1/2, but the loss is the negative log of it."
    return False, "put D(G(z)) = 1/2 into -log D(G(z))."


# --------------------------------------------------------------------------- chapter 7


@exercise("ch07.shuffle_permutation",
          "Write shuffle_permutation(channels, groups): the list perm of channel indices for which "
          "x[:, perm] equals channel_shuffle(x, groups), for any channels divisible by groups.")
def _ch07_shuffle_permutation(fn):
    from .models.layers import channel_shuffle

    if not callable(fn):
        return False, "pass your function itself (without calling it)."
    def order(c: int, g: int) -> list[int]:  # where channel_shuffle sends channels 0..c-1
        return channel_shuffle(torch.arange(c).reshape(1, c, 1, 1), g).flatten().tolist()

    for c, g in ((6, 2), (6, 3), (12, 4), (240, 3), (8, 8), (7, 1), (116, 2)):
        got = fn(c, g)
        try:
            perm = [int(i) for i in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        except (TypeError, ValueError):
            return False, f"shuffle_permutation({c}, {g}) returned {type(got).__name__}; return a list of {c} ints."
        if perm == order(c, g):
            continue
        if sorted(perm) != list(range(c)):
            return False, (f"shuffle_permutation({c}, {g}) is not a permutation of 0..{c - 1}: every input "
                           "channel must appear exactly once (a shuffle moves channels, it never copies or drops one).")
        if perm == list(range(c)):
            return False, (f"for {c} channels and {g} groups you return the channels in their old order; "
                           "output channel i comes from group i % groups.")
        if perm == order(c, c // g):
            return False, ("that is the inverse shuffle (the shuffle with C/groups groups): output channel i "
                           "takes position i // groups of group i % groups, and group k starts at k * (C/groups).")
        return False, (f"for C={c}, groups={g} the order is wrong: output channel i is position i // groups of "
                       "group i % groups.")
    return True, ("x[:, perm] reproduces channel_shuffle on every shape tried: the shuffle is a fixed "
                  "permutation, which a framework without transpose can apply as a gather.")


@exercise("ch07.group_conv_params",
          "How many weights does nn.Conv2d(1536, 384, kernel_size=1, groups=8, bias=False) have "
          "(the first 1x1 convolution of a stage-4 unit of ShuffleNet v1 with g=8)?",
          reference=73_728)
def _ch07_group_conv_params(answer):
    # g=8's stage 4, not g=3's 240-channel layer: the chapter tabulates that one, answer included.
    return _number(answer, 73_728, {
        589_824: "that is the ungrouped convolution: with groups=8 each filter sees only 1536/8 input channels.",
        9_216: ("you divided by the groups twice: each of the 384 filters keeps its place and sees 1536/8 "
                "input channels, so 384 * 192."),
        74_112: "bias=False: the layer has no biases.",
        192: "that is one filter's weights (1536/8); there are 384 filters.",
    })


@exercise("ch07.faster_block",
          "Predict which of two blocks with equal MACs is faster on your machine ('A' or 'B'), then "
          "measure both with cnnlearn.latency and answer (prediction, latency_of_A, latency_of_B).")
def _ch07_faster_block(answer):
    from .measure import LatencyResult

    if not (isinstance(answer, (tuple, list)) and len(answer) == 3):
        return False, "answer with a triple: (your prediction 'A' or 'B', latency(block_a, ...), latency(block_b, ...))."
    prediction, a, b = answer
    if prediction not in ("A", "B"):
        return False, f"the prediction must be 'A' or 'B', got {prediction!r}."
    if not (isinstance(a, LatencyResult) and isinstance(b, LatencyResult)):
        return False, "pass the LatencyResult objects that cnnlearn.latency returns for block A and block B."
    if min(a.repeats, b.repeats) < 10:
        return False, "measure with at least 10 repeats each (repeats=10 or more): a few passes are mostly noise."
    if (a.batch_size, a.threads, a.device) != (b.batch_size, b.threads, b.device):
        return False, "measure both blocks under the same conditions: the same batch size, threads and device."
    ratio = b.median_ms / a.median_ms
    measured = f"A {a.median_ms:.2f} ms, B {b.median_ms:.2f} ms"
    if abs(ratio - 1) < 0.05:
        return True, f"{measured}: a tie within 5% on this machine, so either prediction stands."
    faster = "A" if ratio > 1 else "B"
    why = ("B's grouped convolutions do the same MACs on 720 channels instead of 256: more activations "
           "to read and write per multiply-add (guideline G2)" if faster == "A" else
           "this machine's grouped convolutions are efficient enough that B's fewer weights win")
    if prediction == faster:
        return True, f"{measured}: {faster} is faster, as you predicted; {why}."
    return False, f"your measurement says {faster} is faster ({measured}): {why}."


# --------------------------------------------------------------------------- chapter 5


def _ch05_reference_block(cin: int, cout: int, k: int, s: int, seed: int) -> nn.Sequential:
    # Xception's separable convolution (the package's, nothing between its two convolutions),
    # then BN and ReLU.
    from collections import OrderedDict

    from .models.inception import SeparableConv

    torch.manual_seed(seed)
    ref = nn.Sequential(OrderedDict(separable=SeparableConv(cin, cout, k, s), bn=nn.BatchNorm2d(cout),
                                    act=nn.ReLU())).eval()
    return randomize_batchnorm(ref, seed, spread=0.2)  # a fresh BN in eval mode is the identity


@exercise("ch05.separable_block",
          "Write an nn.Module class SeparableBlock(in_channels, out_channels, kernel_size=3, stride=1) in "
          "Xception's form: depthwise kxk conv (stride, 'same' padding, no bias) followed directly by a "
          "pointwise 1x1 conv (no bias), nothing between them, then one BatchNorm and a ReLU.")
def _ch05_separable_block(cls):
    import torch.nn.functional as F

    if problem := _not_a_module_class(cls):
        return False, problem
    for cin, cout, k, s, size in ((16, 32, 3, 1, 8), (8, 24, 5, 2, 9)):
        ours = cls(cin, cout, k, s).eval()
        convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
        if len(convs) != 2:
            return False, (f"SeparableBlock({cin}, {cout}, {k}, {s}) has {len(convs)} nn.Conv2d layers; "
                           "the block has two: a depthwise and a pointwise convolution.")
        dw, pw = convs
        if dw.kernel_size == (1, 1) and pw.kernel_size != (1, 1):
            return False, ("your first convolution is the 1x1 one; the separable convolution filters each "
                           "channel first (depthwise), then mixes channels (pointwise).")
        if dw.groups == 1:
            return False, (f"your k x k convolution has groups=1: a standard convolution with "
                           f"{dw.weight.numel():,} weights. Depthwise means groups=in_channels.")
        if dw.groups != cin or dw.out_channels != cin:
            return False, (f"the depthwise convolution needs groups=in_channels={cin} and in_channels={cin} "
                           f"outputs: one filter per channel (yours: groups={dw.groups}, {dw.out_channels} outputs).")
        if pw.kernel_size != (1, 1) or pw.groups != 1 or pw.out_channels != cout:
            return False, f"the pointwise convolution is nn.Conv2d(in_channels, out_channels={cout}, 1)."
        if dw.bias is not None or pw.bias is not None:
            return False, "no biases (bias=False): the BatchNorm after the pointwise convolution has its own shift."
        if len(bns) != 1:
            return False, (f"Xception's form has one BatchNorm, after the pointwise convolution (found {len(bns)} "
                           "nn.BatchNorm2d): nothing stands between the depthwise and the pointwise convolution.")
        ref = _ch05_reference_block(cin, cout, k, s, seed=cin + k)
        with torch.no_grad():
            dw_ref, pw_ref = ref.separable.depthwise, ref.separable.pointwise
            for mine, theirs in zip((dw, pw, bns[0]), (dw_ref, pw_ref, ref.bn)):
                if mine.weight.shape != theirs.weight.shape:
                    return False, (f"a layer's weight has shape {tuple(mine.weight.shape)}, expected "
                                   f"{tuple(theirs.weight.shape)}.")
                mine.load_state_dict(theirs.state_dict())
        torch.manual_seed(1)
        x = 10 * torch.randn(2, cin, size, size)  # large enough that some activations exceed 6
        with torch.no_grad():
            out, expected = ours(x), ref(x)
            if tuple(out.shape) != tuple(expected.shape):
                return False, (f"the output has shape {tuple(out.shape)}, expected {tuple(expected.shape)}: "
                               "padding = kernel_size // 2 keeps the size, and the stride goes to the "
                               "depthwise convolution.")
            if torch.allclose(out, expected, atol=1e-5):
                continue
            between = ref.act(ref.bn(pw_ref(F.relu(dw_ref(x)))))
            no_last_relu = ref.bn(ref.separable(x))
            relu6 = F.relu6(no_last_relu)
            for wrong, hint in (
                (between, "no ReLU between the two convolutions: Xception found the block better without an "
                          "intermediate non-linearity (Sec. 4.7, Fig. 10)."),
                (no_last_relu, "end with a ReLU after the BatchNorm."),
                (relu6, "use ReLU, not ReLU6."),
            ):
                if torch.allclose(out, wrong, atol=1e-5):
                    return False, hint
            return False, ("the output differs from the reference with the same weights: "
                           "relu(bn(pointwise(depthwise(x)))).")
    return True, ("your block computes Xception's separable convolution; without a non-linearity between "
                  "them, its two convolutions compose to one k x k convolution whose weights factorise.")


@exercise("ch05.separable_macs",
          "How many MACs does a depthwise separable convolution from 64 to 128 channels (3x3 depthwise, "
          "stride 1, padding 1, then 1x1 pointwise) cost on one 56x56 input?",
          reference=27_496_448)
def _ch05_separable_macs(answer):
    positions = 56 * 56
    return _number(answer, 9 * 64 * positions + 64 * 128 * positions, {
        9 * 64 * 128 * positions: "that is a standard 3x3 convolution from 64 to 128 channels; the depthwise "
                                  "one has a single 3x3 filter per input channel.",
        9 * 64 * positions: "that is the depthwise convolution alone; add the pointwise one.",
        64 * 128 * positions: "that is the pointwise convolution alone; add the depthwise one.",
        2 * (9 * 64 * positions + 64 * 128 * positions): "that is FLOPs (2 per MAC); the question asks for MACs.",
        9 * 128 * positions + 64 * 128 * positions: "the depthwise convolution works on the 64 input channels, "
                                                    "not on the 128 output channels.",
        9 * 64 * 54 * 54 + 64 * 128 * 54 * 54: "with padding 1 a 3x3 convolution keeps the 56x56 size.",
        9 * 64 + 64 * 128: "those are the weights; each is used once per output position (56x56 of them).",
    })


@exercise("ch05.make_divisible",
          "MobileNetV2 with width multiplier 0.6: how many output channels does its stem convolution have "
          "(32 before the multiplier)?",
          reference=24)
def _ch05_make_divisible(answer):
    from .models.layers import make_divisible

    # 0.6 rather than a published multiplier: the chapter tabulates those (0.35 ... 1.4), answer included.
    return _number(answer, make_divisible(32 * 0.6, 8), {
        19: "0.6 * 32 = 19.2 is not a multiple of 8: make_divisible rounds it.",
        16: ("16 is the nearest multiple of 8, but it would lose more than 10% of 19.2 "
             "(16 < 0.9 * 19.2 = 17.28), so make_divisible goes one step of 8 further."),
        20: "20 is not a multiple of 8: make_divisible rounds to multiples of the divisor, 8.",
        32: "the width multiplier 0.6 thins the stem too: start from 0.6 * 32.",
    }, " channels")


# --------------------------------------------------------------------------- chapter 10


def _float_or_message(answer: Any) -> float | str:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return f"give a number, not a {type(answer).__name__}."
    return float(answer)


def _vector_or_message(answer: Any, length: int) -> torch.Tensor | str:
    if isinstance(answer, torch.Tensor):
        answer = answer.detach().cpu().flatten().tolist()
    if not isinstance(answer, (list, tuple)) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in answer):
        return f"give {length} numbers, as a tuple, list or tensor."
    if len(answer) != length:
        return f"give one number per class: {length} of them, got {len(answer)}."
    return torch.tensor(answer, dtype=torch.float64)


def _vector_hints(vector: torch.Tensor, expected: torch.Tensor, hints: list[tuple[torch.Tensor, str]],
                  right: str) -> tuple[bool, str]:
    close = lambda a, b: torch.allclose(a, b, atol=1e-4)
    if close(vector, expected):
        return True, right
    for wrong, hint in hints:
        if close(vector, wrong):
            return False, hint
    if abs(float(vector.sum()) - 1) > 1e-4:
        return False, f"a target is a probability distribution: yours sums to {float(vector.sum()):.4f}, not 1."
    return False, "build it class by class from the formula."


@exercise("ch10.scaled_lr",
          "A learning rate of 0.4 works at batch 512. By the linear scaling rule, which learning rate goes "
          "with batch 1280?",
          reference=1.0)
def _ch10_scaled_lr(answer):
    value = _float_or_message(answer)
    if isinstance(value, str):
        return False, value
    near = lambda v: abs(value - v) < 1e-3
    if near(0.4 * 1280 / 512):
        return True, "0.4 x 1280 / 512 = 1.0: the rate grows with the batch (cnnlearn.train.scaled_lr(1280, 0.4, 512))."
    if near(0.1 * 1280 / 256):
        return False, "that is the paper's base (0.1 at 256); here the base is 0.4 at batch 512."
    if near(0.4 * 512 / 1280):
        return False, "upside down: a larger batch takes a larger rate, lr x new batch / old batch."
    if near(0.4 * (1280 / 512) ** 0.5):
        return False, "that is a square-root rule; the linear rule scales by the ratio itself."
    if near(0.4):
        return False, "the rule changes the rate with the batch: by how much is the batch larger?"
    return False, "multiply the known rate by the ratio of the batch sizes."


@exercise("ch10.mixup_target",
          "Mixup with lambda = 0.7 mixes an image of class 3 (weight lambda) with one of class 8 "
          "(weight 1 - lambda), 10 classes. Give the target vector.",
          reference=(0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0))
def _ch10_mixup_target(answer):
    vector = _vector_or_message(answer, 10)
    if isinstance(vector, str):
        return False, vector
    onehot = torch.eye(10, dtype=torch.float64)
    return _vector_hints(vector, 0.7 * onehot[3] + 0.3 * onehot[8], [
        (0.3 * onehot[3] + 0.7 * onehot[8], "the weights are swapped: lambda = 0.7 goes to the first image's class, 3."),
        (onehot[3], "that is the first image's one-hot label alone: mixup mixes the labels as it mixes the images."),
        (0.5 * onehot[3] + 0.5 * onehot[8], "the labels are mixed with the images' ratio, lambda, not half and half."),
        (0.7 * onehot[2] + 0.3 * onehot[7], "classes are counted from 0: class 3 is the fourth entry."),
    ], "lambda * onehot(3) + (1 - lambda) * onehot(8): cnnlearn.regularize.mixed_target computes it.")


@exercise("ch10.smoothed_target",
          "Label smoothing with epsilon = 0.2 as PyTorch's cross_entropy(label_smoothing=0.2) applies it, "
          "5 classes, true class 1. Give the target vector.",
          reference=(0.04, 0.84, 0.04, 0.04, 0.04))
def _ch10_smoothed_target(answer):
    vector = _vector_or_message(answer, 5)
    if isinstance(vector, str):
        return False, vector
    onehot = torch.eye(5, dtype=torch.float64)[1]
    return _vector_hints(vector, 0.8 * onehot + 0.2 / 5, [
        (0.8 * onehot + 0.05 * (1 - onehot), "that is the paper's form, epsilon / (K - 1) on the other classes; "
                                             "PyTorch spreads epsilon over all K classes, the true one included."),
        (0.8 * onehot + 0.04 * (1 - onehot), "the true class also receives its share epsilon / K of the spread mass."),
        (0.8 * onehot, "the mass epsilon taken from the true class is spread over the classes, not dropped."),
        (0.8 * torch.eye(5, dtype=torch.float64)[0] + 0.2 / 5, "classes are counted from 0: class 1 is the second entry."),
    ], "(1 - epsilon) * onehot + epsilon / K: 0.84 for the true class, 0.04 for each other.")


def _ch10_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    import torch.nn.functional as F

    log_s, log_t = F.log_softmax(student / t, 0), F.log_softmax(teacher / t, 0)
    return float(t * t * (log_t.exp() * (log_t - log_s)).sum())


@exercise("ch10.distill_loss",
          "Student logits (2, 1, 0), teacher logits (0, 3, 1), temperature T = 4. What is the distillation "
          "term T^2 * KL(softmax(teacher / T) || softmax(student / T)), in nats?",
          reference=round(_ch10_kd(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.0, 3.0, 1.0]), 4.0), 4))
def _ch10_distill_loss(answer):
    value = _float_or_message(answer)
    if isinstance(value, str):
        return False, value
    s, t = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 3.0, 1.0], dtype=torch.float64)
    expected = _ch10_kd(s, t, 4.0)
    near = lambda v: abs(value - v) < 2e-3 * max(1.0, abs(v))
    if near(expected):
        return True, (f"{expected:.4f} nats: cnnlearn.regularize.distillation_loss computes it; the factor T^2 keeps "
                      f"its gradients as large as the hard-label term's when T changes.")
    if near(expected / 16):
        return False, "that is the KL divergence alone: multiply by T^2 = 16."
    if near(_ch10_kd(t, s, 4.0)):
        return False, "the KL divergence is taken the other way round: the teacher's distribution comes first."
    if near(_ch10_kd(s, t, 1.0)):
        return False, "that is at T = 1: divide both sets of logits by T = 4 before the softmax."
    if near(16 * _ch10_kd(s, t, 1.0)):
        return False, "the logits are divided by T before the softmax, not only the result multiplied by T^2."
    return False, "soften both with softmax(logits / 4), take sum p_t * (log p_t - log p_s), then multiply by 16."
