"""Counting and timing: parameters, MACs, the convolution formulas, latency and memory.

Conventions used everywhere in the book:

* **MACs** are multiply-accumulates of one forward pass of *one* image in eval mode.
  **FLOPs = 2 x MACs.** Every table says which of the two it shows.
* MACs are counted by :mod:`torch.utils.flop_counter`, which counts convolutions and
  matrix products (the work that dominates a CNN) and ignores element-wise operations
  (BatchNorm, activations, additions, pooling), as papers and torchvision do.
  torchvision's ResNet-50 gives 25,557,032 parameters and 4.089 GMACs at 224x224.
* The formula helpers (``conv2d_*``) are the arithmetic the book teaches; the tests
  check each of them against the counter on real layers.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import statistics
import sys
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from . import _validate as V

__all__ = [
    "Calibration",
    "calibration",
    "count_params",
    "count_macs",
    "describe",
    "forward_with_hooks",
    "conv2d_output_size",
    "conv_transpose2d_output_size",
    "conv2d_params",
    "conv2d_macs",
    "conv_transpose2d_params",
    "conv_transpose2d_macs",
    "linear_params",
    "receptive_field",
    "summary",
    "latency",
    "LatencyResult",
    "peak_memory",
    "compare_latency",
    "profile_by_kind",
    "operator_kind",
    "OperatorProfile",
    "OperatorTime",
    "OPERATOR_KINDS",
    "OPERATOR_KIND_LABELS",
]

IntOrPair = int | tuple[int, int]


# --------------------------------------------------------------------------- counting


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (weights and biases; BatchNorm's running statistics are
    buffers, not parameters, and are not counted, as in torchvision's model cards).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    V.module("model", model), V.boolean("trainable_only", trainable_only)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _one_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    """The shape of one input: ``input_size`` as given, or torchinfo's ``(1, C, H, W)``
    with its batch of one dropped. The book's networks take 2-D images, so a 4-tuple is
    read as ``(batch, C, H, W)``; a batch of more than one image is refused, because every
    count and measurement here is per image (or takes ``batch_size``)."""
    if (isinstance(input_size, (int, str)) or not isinstance(input_size, Sequence)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)):
        raise ValueError(
            f"input_size must be a tuple of positive ints without the batch dimension, "
            f"e.g. (3, 224, 224); got {input_size!r}"
        )
    if len(input_size) == 4:
        batch, *one = input_size
        if batch != 1:
            raise ValueError(
                f"input_size={tuple(input_size)} reads as a batch of {batch} images of shape "
                f"{tuple(one)}; give the shape of one image, input_size={tuple(one)} (or "
                f"(1, {', '.join(map(str, one))}) as torchinfo writes it), and batch_size={batch} "
                f"where the function takes one"
            )
        return tuple(one)
    return tuple(input_size)


def _example_input(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    V.module("model", model), V.positive_int("batch_size", batch_size)
    input_size = _one_input_size(input_size)
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    return torch.randn(batch_size, *input_size, device=device, dtype=dtype)


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass of a single input, in eval mode.

    Args:
        model: the network; its train/eval mode is restored afterwards.
        input_size: the shape of one input *without* the batch dimension, e.g.
            ``(3, 224, 224)`` for ImageNet or ``(3, 32, 32)`` for CIFAR-10; torchinfo's
            ``(1, 3, 224, 224)``, with a batch of one, means the same.

    Returns:
        MACs as an int (FLOPs are twice this).

    Raises:
        ValueError: ``input_size`` is not a tuple of positive ints, or is a batch of
            more than one image such as ``(8, 3, 224, 224)``.
    """
    x = _example_input(model, input_size)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter, V.explained_forward(model, x.shape[1:]):
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------- formulas


def _pair(v: IntOrPair, name: str, minimum: int = 1) -> tuple[int, int]:
    return V.int_pair(name, v, minimum=minimum)


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    for name, c in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        V.positive_int(name, c)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={in_channels} and "
            f"out_channels={out_channels}; pick a common divisor"
        )


def conv2d_output_size(
    size: IntOrPair, kernel_size: IntOrPair, stride: IntOrPair = 1,
    padding: IntOrPair = 0, dilation: IntOrPair = 1,
) -> IntOrPair:
    """Output height/width of a convolution (or pooling) layer.

    ``out = floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``

    Ints in give an int out; pairs (height, width) give a pair.
    """
    as_int = not isinstance(size, (tuple, list))
    s, k, st, d = (_pair(v, n) for v, n in ((size, "size"), (kernel_size, "kernel_size"),
                                           (stride, "stride"), (dilation, "dilation")))
    p = _pair(padding, "padding", minimum=0)
    out = []
    for i in range(2):
        effective = d[i] * (k[i] - 1) + 1  # the span the dilated kernel covers
        o = (s[i] + 2 * p[i] - effective) // st[i] + 1
        if o < 1:
            raise ValueError(
                f"a kernel spanning {effective} pixels does not fit an input of {s[i]} "
                f"with padding {p[i]}: use a larger input or more padding"
            )
        out.append(o)
    return out[0] if as_int else tuple(out)


def conv_transpose2d_output_size(
    size: IntOrPair, kernel_size: IntOrPair, stride: IntOrPair = 1, padding: IntOrPair = 0,
    output_padding: IntOrPair = 0, dilation: IntOrPair = 1,
) -> IntOrPair:
    """Output height/width of a transposed convolution (``nn.ConvTranspose2d``).

    ``out = (size - 1)*stride - 2*padding + dilation*(kernel_size - 1) + output_padding + 1``
    """
    as_int = not isinstance(size, (tuple, list))
    s, k, st, d = (_pair(v, n) for v, n in (
        (size, "size"), (kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
    p, op = _pair(padding, "padding", minimum=0), _pair(output_padding, "output_padding", minimum=0)
    out = []
    for i in range(2):
        if op[i] >= max(st[i], d[i]):
            raise ValueError(
                f"output_padding={op[i]} must be smaller than stride={st[i]} or dilation={d[i]}")
        o = (s[i] - 1) * st[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
        if o < 1:
            raise ValueError(f"padding={p[i]} is too large: the output would have size {o}")
        out.append(o)
    return out[0] if as_int else tuple(out)


def conv2d_params(
    in_channels: int, out_channels: int, kernel_size: IntOrPair, groups: int = 1, bias: bool = True,
) -> int:
    """Parameters of ``nn.Conv2d``: ``k_h * k_w * (C_in / groups) * C_out`` (+ ``C_out`` biases).

    ``groups=1`` is an ordinary convolution; ``groups=in_channels`` is depthwise.
    Dilation and stride change nothing here.
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    return kh * kw * (in_channels // groups) * out_channels + (out_channels if V.boolean("bias", bias) else 0)


def conv2d_macs(
    in_channels: int, out_channels: int, kernel_size: IntOrPair, output_size: IntOrPair,
    groups: int = 1,
) -> int:
    """MACs of ``nn.Conv2d`` for one image: every output value costs one
    multiply-add per weight it sees, so ``weights * H_out * W_out``
    (biases and dilation add nothing).
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    ho, wo = _pair(output_size, "output_size")
    return kh * kw * (in_channels // groups) * out_channels * ho * wo


def conv_transpose2d_params(
    in_channels: int, out_channels: int, kernel_size: IntOrPair, groups: int = 1, bias: bool = True,
) -> int:
    """Parameters of ``nn.ConvTranspose2d``: the same count as the convolution it transposes."""
    return conv2d_params(in_channels, out_channels, kernel_size, groups, bias)


def conv_transpose2d_macs(
    in_channels: int, out_channels: int, kernel_size: IntOrPair, input_size: IntOrPair,
    groups: int = 1,
) -> int:
    """MACs of ``nn.ConvTranspose2d`` for one image: every *input* value is multiplied by
    a whole ``k_h x k_w x (C_out/groups)`` kernel and scattered into the output, so
    ``weights * H_in * W_in``.
    """
    _check_groups(in_channels, out_channels, groups)
    kh, kw = _pair(kernel_size, "kernel_size")
    hi, wi = _pair(input_size, "input_size")
    return kh * kw * in_channels * (out_channels // groups) * hi * wi


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of ``nn.Linear``: ``in * out`` (+ ``out``). Its MACs are ``in * out``."""
    for name, n in (("in_features", in_features), ("out_features", out_features)):
        V.positive_int(name, n, fix="in_features and out_features count the layer's inputs and outputs")
    return in_features * out_features + (out_features if V.boolean("bias", bias) else 0)


def receptive_field(layers: Sequence[tuple[int, int] | tuple[int, int, int]]) -> int:
    """Receptive field of a stack of convolutions/poolings, in input pixels.

    Args:
        layers: ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation)`` per layer,
            first layer first.

    ``r = 1 + sum_i d_i*(k_i - 1) * prod_{j<i} s_j``; two stacked 3x3 stride-1
    convolutions give 5, three give 7.
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise V.ArgumentTypeError(f"layers must be a list of (kernel_size, stride) tuples, got {layers!r}")
    r, jump = 1, 1
    for i, layer in enumerate(layers):
        try:  # (k, s) or (k, s, d), each an int >= 1; a fourth entry is a mistake, not ignored
            if not isinstance(layer, (tuple, list)) or len(layer) not in (2, 3):
                raise ValueError
            k, s, d = (V.positive_int("", v) for v in (*layer, 1)[:3])
        except ValueError:
            raise ValueError(f"bad layer layers[{i}]={layer!r}: give (kernel_size, stride) or "
                             f"(kernel_size, stride, dilation), ints >= 1") from None
        r += d * (k - 1) * jump
        jump *= s
    return r


# --------------------------------------------------------------------------- summaries


def summary(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), depth: int = 2, **kwargs):
    """A layer table (output shapes, parameters, MACs) from ``torchinfo``.

    Args:
        model: the network.
        input_size: one input without the batch dimension (or torchinfo's
            ``(1, C, H, W)``, as for :func:`count_macs`).
        depth: how deep into nested modules the table goes.
        **kwargs: passed to ``torchinfo.summary``.

    Returns:
        torchinfo's ``ModelStatistics``; it prints as the table, with the unit of the
        mult-adds written as ``(M)``, ``(G)`` or ``(T)``.
    """
    import torchinfo

    x = _example_input(model, input_size)
    kwargs.setdefault("col_names", ("output_size", "num_params", "mult_adds"))
    kwargs.setdefault("verbose", 0)
    # torchinfo re-raises a failing forward pass as a RuntimeError; its other errors are about kwargs.
    with V.explained_forward(model, x.shape[1:], errors=(RuntimeError,)):
        stats = torchinfo.summary(model, input_data=x, depth=depth, device=x.device, **kwargs)
    stats.__class__ = _with_unit_labels(type(stats))
    return stats


# torchinfo 1.8 writes the unit of "Total mult-adds" as f"({unit})" with its Units enum,
# which Python 3.11+ formats as "(Units.MEGABYTES)" instead of "(M)".
_ENUM_UNIT = re.compile(r"\(Units\.([A-Z]+)\)")


@functools.cache
def _with_unit_labels(cls: type) -> type:
    """A subclass of torchinfo's ``ModelStatistics`` that prints its units as "(M)"."""
    from torchinfo.enums import Units

    class ModelStatistics(cls):
        def __repr__(self) -> str:
            return _ENUM_UNIT.sub(lambda m: f"({Units[m[1]].value})", super().__repr__())

    return ModelStatistics


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass, in milliseconds."""

    median_ms: float  # the number to report: robust to a noisy shared machine
    q1_ms: float  # first quartile of the repeats
    q3_ms: float  # third quartile of the repeats
    repeats: int
    batch_size: int
    device: str
    threads: int
    # compare_latency only: the median of each interleaved round, in the order measured, so
    # that two models can be compared round by round (cnnlearn.verdict_paired); () otherwise
    rounds_ms: tuple[float, ...] = ()

    def __str__(self) -> str:
        return (f"{self.median_ms:.2f} ms (IQR {self.q1_ms:.2f}-{self.q3_ms:.2f}, "
                f"batch {self.batch_size}, {self.device}, {self.threads} threads)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def latency(
    model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch_size: int = 1,
    repeats: int = 30, warmup: int = 5, threads: int | None = None,
) -> LatencyResult:
    """Median wall time of a forward pass in eval mode, on the model's device.

    Warm-up passes run first (allocator, cuDNN autotuning, lazy init), the GPU is
    synchronised around each pass, and the CPU thread count is fixed for the
    measurement and restored afterwards.

    Args:
        model: the network, already on the device to measure.
        input_size: one input without the batch dimension.
        batch_size: images per pass.
        repeats: timed passes; the median is reported.
        warmup: untimed passes before timing.
        threads: CPU threads for the measurement (default: ``torch.get_num_threads()``).
    """
    V.positive_int("repeats", repeats), V.non_negative_int("warmup", warmup)
    V.optional(V.positive_int)("threads", threads)
    x = _example_input(model, input_size, batch_size)
    device = x.device
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    was_training = model.training
    model.eval()
    times = []
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode(), V.explained_forward(model, x.shape[1:]):
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return LatencyResult(statistics.median(times), q[0], q[2], repeats, batch_size, str(device), threads)


def compare_latency(
    models: Mapping[str, tuple[nn.Module, Sequence[int]]], batch_size: int = 1, rounds: int = 5,
    repeats: int = 10, warmup: int = 2, threads: int | None = None,
) -> dict[str, LatencyResult]:
    """:func:`latency` of several models, measured in interleaved rounds.

    On a shared machine the background load drifts: measuring model A for a minute and
    then model B would compare A's minute with B's. Here every round measures every
    model once (``repeats`` passes after ``warmup`` untimed ones), starting each round
    with a different model, so a slow spell hits all models alike. The result of a model
    is the median of its per-round medians (quartiles likewise over the rounds).

    Args:
        models: ``{name: (model, input_size)}``, ``input_size`` without the batch dimension.
        batch_size: images per pass.
        rounds: how many times every model is measured.
        repeats: timed passes per model and round.
        warmup: untimed passes per model and round.
        threads: CPU threads (default: ``torch.get_num_threads()``).

    Returns:
        ``{name: LatencyResult}`` in the order of ``models``; ``repeats`` counts all timed
        passes (``rounds * repeats``), and ``rounds_ms`` holds the per-round medians (round
        ``r`` of one model pairs with round ``r`` of another).
    """
    if not isinstance(models, Mapping):
        raise V.ArgumentTypeError(f"models must be a dict {{name: (model, input_size)}}, got {type(models).__name__}")
    if not models:
        raise ValueError("models is empty: give at least one {name: (model, input_size)}")
    for name, entry in models.items():
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(f"models[{name!r}] must be a pair (model, input_size), got {entry!r:.60}")
    if V.integer("rounds", rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(models)
    medians: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, LatencyResult] = {}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]  # rotate the starting model every round
            model, input_size = models[name]
            last[name] = latency(model, input_size, batch_size, repeats, warmup, threads)
            medians[name].append(last[name].median_ms)
    out = {}
    for n in names:
        q = statistics.quantiles(medians[n], n=4) if rounds > 1 else [medians[n][0]] * 3
        out[n] = LatencyResult(statistics.median(medians[n]), q[0], q[2], rounds * repeats,
                               batch_size, last[n].device, last[n].threads, tuple(medians[n]))
    return out


# --------------------------------------------------------------------------- memory


class _LiveTensorBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Tracks the bytes of tensor storages created by PyTorch ops that are still alive,
    and the peak of that number. Works on any device (the CPU has no allocator
    statistics like ``torch.cuda.max_memory_allocated``)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen.add(key)
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_memory(
    model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch_size: int = 1,
    train: bool = False,
) -> int:
    """Peak bytes of activations and temporaries during one pass (parameters excluded).

    On CUDA this is ``torch.cuda.max_memory_allocated`` above the memory in use before
    the pass; elsewhere a dispatch mode tracks the live tensors the pass creates.

    Args:
        model: the network, on its device.
        input_size: one input without the batch dimension.
        batch_size: images per pass.
        train: measure forward + backward in train mode (activations kept for the
            gradient) instead of an inference forward pass.
    """
    V.boolean("train", train)
    x = _example_input(model, input_size, batch_size)
    was_training = model.training
    model.train(train)
    try:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
            base = torch.cuda.memory_allocated(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            _one_pass(model, x, train)
            torch.cuda.synchronize(x.device)
            return torch.cuda.max_memory_allocated(x.device) - base
        tracker = _LiveTensorBytes()
        with tracker:
            _one_pass(model, x, train)
        return tracker.peak
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def _one_pass(model: nn.Module, x: torch.Tensor, train: bool) -> None:
    with V.explained_forward(model, x.shape[1:]):
        if train:
            model(x).float().sum().backward()
        else:
            with torch.no_grad():
                model(x)


# --------------------------------------------------------------------------- profiles

# Operator kinds, as in Figure 2 of ShuffleNet v2 (Ma et al. 2018, arXiv:1807.11164):
# PyTorch operator names (without "aten::") are sorted by the first kind whose fragments
# they contain, so the order matters ("addmm" is a matrix product before it is an "add").
OPERATOR_KINDS: dict[str, tuple[str, ...]] = {
    "convolution": ("conv", "addmm", "mm", "nnpack"),  # the classifier's matrix product too
    "batch norm": ("batch_norm",),  # in eager PyTorch a pass of its own; deployment folds it into the conv
    "element-wise": ("relu", "clamp", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "silu",
                     "add", "mul", "sub", "div", "threshold"),
    "data movement": ("cat", "copy_", "clone", "transpose", "permute", "reshape", "view", "flatten",
                      "narrow", "slice", "split", "chunk", "contiguous", "shuffle"),
    "pooling": ("pool", "mean"),  # global average pooling runs as a mean
}

# Longer names for figure legends.
OPERATOR_KIND_LABELS: dict[str, str] = {
    "convolution": "convolution (and the classifier's matrix product)",
    "batch norm": "batch norm",
    "element-wise": "element-wise (ReLU, add, ...)",
    "data movement": "data movement (shuffle, split, concat)",
    "pooling": "pooling",
    "other": "other",
}


def operator_kind(name: str, kinds: Mapping[str, Sequence[str]] = OPERATOR_KINDS) -> str:
    """The kind of a profiled operator, e.g. ``"aten::mkldnn_convolution"`` -> ``"convolution"``.

    Args:
        name: the operator's name as the profiler reports it.
        kinds: ``{kind: name fragments}``, tried in order; :data:`OPERATOR_KINDS` by default.

    Returns:
        The first kind with a fragment contained in the name, or ``"other"``.
    """
    bare = name.removeprefix("aten::")
    return next((kind for kind, fragments in kinds.items() if any(f in bare for f in fragments)), "other")


@dataclass(frozen=True)
class OperatorTime:
    """One operator's share of a profiled forward pass."""

    name: str  # as the profiler names it, e.g. "aten::mkldnn_convolution"
    kind: str  # see OPERATOR_KINDS
    self_ms: float  # time in the operator itself (not in operators it calls), per forward pass
    calls: float  # calls per forward pass
    share: float  # self_ms / OperatorProfile.total_ms


@dataclass(frozen=True)
class OperatorProfile:
    """Where the CPU time of a forward pass goes, by operator kind and by operator."""

    shares: dict[str, float]  # {kind: share of total_ms}, in the order of the kinds, "other" last; sums to 1
    operators: tuple[OperatorTime, ...]  # every operator, largest self time first
    total_ms: float  # summed self time of all operators, per forward pass
    passes: int  # profiled forward passes (the times are their mean)
    threads: int  # CPU threads during the measurement

    def top(self, n: int = 10) -> tuple[OperatorTime, ...]:
        """The ``n`` operators with the largest self time."""
        return self.operators[:n]

    def table(self, n: int = 10) -> str:
        """The top ``n`` operators as a text table: name, kind, ms per pass, share, calls."""
        rows = [f"{'operator':<36} {'kind':<14} {'ms/pass':>8} {'share':>6} {'calls':>6}"]
        rows += [f"{o.name:<36} {o.kind:<14} {o.self_ms:>8.3f} {o.share:>6.1%} {o.calls:>6.4g}"
                 for o in self.top(n)]
        return "\n".join(rows)

    def __str__(self) -> str:
        return "  ".join(f"{kind} {share:.0%}" for kind, share in self.shares.items())


@contextlib.contextmanager
def _quiet_profiler():
    """Silence what the profiler prints: its C++ backend (Kineto) writes status lines
    straight to the process's file descriptor 2, which ``sys.stderr`` does not reach, and
    some torch versions warn on every start (torch 2.11: "Profiler clears events at the end
    of each cycle"), a ``UserWarning`` about its own settings, not about the model."""
    sys.stderr.flush()
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to redirect (embedded interpreters)
        saved = devnull = None
    try:
        if saved is not None:
            os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def profile_by_kind(
    model: nn.Module, input_size: Sequence[int] = (3, 224, 224), passes: int = 20, threads: int | None = 1,
    warmup: int = 1, kinds: Mapping[str, Sequence[str]] = OPERATOR_KINDS,
) -> OperatorProfile:
    """Profile a forward pass on the model's device (CPU or CUDA) and split its time by
    operator kind.

    PyTorch's profiler records each operator with its *self* time, the time spent in the
    operator and not in the operators it calls, so self times add up to the whole pass
    without double counting. Operators are sorted into kinds by name
    (:func:`operator_kind`), as Figure 2 of ShuffleNet v2 splits its running times. The
    profiler's own messages are silenced; warnings from the model show in the warm-up pass.

    Args:
        model: the network, on the CPU or a CUDA GPU (then the times are the GPU kernels'
            times); its train/eval mode is restored afterwards.
        input_size: one input without the batch dimension (batch size 1).
        passes: profiled forward passes; times are per pass (their mean).
        threads: CPU threads for the measurement, restored afterwards (None: the current
            number). One thread by default, the setting of the paper's ARM measurements.
        warmup: unprofiled passes first (allocator, lazy initialisation).
        kinds: ``{kind: name fragments}`` (:data:`OPERATOR_KINDS` by default).

    Returns:
        An :class:`OperatorProfile`: ``.shares`` by kind, ``.top(n)`` / ``.table(n)`` for
        the operators with the largest self time.
    """
    if not (isinstance(passes, int) and passes >= 1 and isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"passes must be an int >= 1 and warmup an int >= 0; got passes={passes!r}, warmup={warmup!r}")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be an int >= 1 or None (keep the current number), got {threads!r}")
    x = _example_input(model, input_size)
    on_cuda = x.device.type == "cuda"
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"profile_by_kind measures CPU or CUDA time, but the model is on {x.device}; "
                         f"profile a CPU copy, e.g. copy.deepcopy(model).cpu()")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_cuda else [ProfilerActivity.CPU]

    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    was_training = model.training
    model.eval()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            if on_cuda:
                torch.cuda.synchronize(x.device)  # the warm-up's kernels finish outside the profile
            with _quiet_profiler(), profile(activities=activities) as prof:
                for _ in range(passes):
                    model(x)
                if on_cuda:
                    torch.cuda.synchronize(x.device)
            events = prof.key_averages()
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    # Self times are in microseconds, summed over all passes. On CUDA an operator's self
    # device time is the time of the kernels it launched; the kernels also appear as rows
    # of their own (device_type CUDA), which are skipped so that no time counts twice.
    if on_cuda:
        times = [(e.key, e.self_device_time_total / 1e3 / passes, e.count / passes)
                 for e in events if e.device_type == DeviceType.CPU]
    else:
        times = [(e.key, e.self_cpu_time_total / 1e3 / passes, e.count / passes) for e in events]
    total = sum(t for _, t, _ in times)
    if total <= 0:
        raise ValueError("the profiler recorded no operator time; does the model run any PyTorch operators?")
    by_kind = {kind: 0.0 for kind in [*kinds, "other"]}
    operators = []
    for name, ms, calls in sorted(times, key=lambda t: -t[1]):
        kind = operator_kind(name, kinds)
        by_kind[kind] += ms
        operators.append(OperatorTime(name, kind, ms, calls, ms / total))
    return OperatorProfile({k: v / total for k, v in by_kind.items()}, tuple(operators), total, passes, threads)


# --------------------------------------------------------------------------- describing


def _size(values: tuple[int, ...]) -> str:
    """``(2, 2)`` -> "2", ``(3, 1)`` -> "3x1"."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _settings(m: nn.Module) -> str:
    """The settings of a common layer in words, from its attributes (never its repr)."""
    parts: list[str] = []
    if isinstance(m, nn.modules.conv._ConvNd):
        # In nn.Conv2d's argument order: kernel, stride, padding, dilation, groups, bias.
        parts = [f"{m.in_channels} -> {m.out_channels}", "x".join(map(str, m.kernel_size))]
        parts += [f"stride {_size(m.stride)}"] if any(s != 1 for s in m.stride) else []
        if isinstance(m.padding, str):
            parts += [f"padding {m.padding}"] if m.padding != "valid" else []
        elif any(m.padding):
            parts.append(f"padding {_size(m.padding)}")
        parts += [f"dilation {_size(m.dilation)}"] if any(d != 1 for d in m.dilation) else []
        if m.transposed and any(m.output_padding):
            parts.append(f"output_padding {_size(m.output_padding)}")
        parts += [f"groups {m.groups}"] if m.groups != 1 else []
        parts += ["bias"] if m.bias is not None else []
    elif isinstance(m, nn.Linear):
        parts = [f"{m.in_features} -> {m.out_features}"] + (["bias"] if m.bias is not None else [])
    elif isinstance(m, nn.modules.batchnorm._NormBase):
        parts = [str(m.num_features)]
        # Only settings that differ from PyTorch's defaults: they are what a reader must notice.
        parts += [f"eps {m.eps:g}"] if m.eps != 1e-5 else []
        parts += [f"momentum {m.momentum:g}" if m.momentum is not None else "cumulative average"] \
            if m.momentum != 0.1 else []
        parts += ["no affine"] if not m.affine else []
    elif isinstance(m, nn.GroupNorm):
        parts = [f"{m.num_channels} channels in {m.num_groups} groups"]
    elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
        parts = [f"to {_size(size)}"]
    elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = (nn.modules.utils._pair(v) for v in (m.kernel_size, m.stride))
        parts = ["x".join(map(str, kernel)), f"stride {_size(stride)}"]
        parts += [f"padding {_size(nn.modules.utils._pair(m.padding))}"] if m.padding else []
    elif isinstance(m, nn.modules.dropout._DropoutNd):
        parts = [f"p {m.p:g}"]
    return ", ".join(parts)


def describe(module: nn.Module, input_size: Sequence[int] | None = None) -> str:
    """A module's tree as text: each submodule's name, class, settings and parameters.

    Use it instead of ``print(module)`` in a checked notebook cell: PyTorch's reprs change
    between versions (torch 2.13 added ``bias=True`` to BatchNorm's), while this text
    depends only on the module. Settings are written for the common layers (convolutions,
    linear, normalisation, pooling, dropout), and only where they differ from PyTorch's
    defaults, e.g. ``Conv2d 72 -> 72, 5x5, stride 2, padding 2, groups 72``.

    Args:
        module: any module; it is not changed.
        input_size: if given, one input without the batch dimension, e.g. ``(24, 56, 56)``;
            each line then shows the output shape of its submodule for a batch of one
            (run in eval mode, on the module's device; the meta device works).

    Returns:
        The tree, one submodule a line, indented by depth, ready to ``print``.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"describe expects an nn.Module, got {type(module).__name__}")
    shapes: dict[nn.Module, str] = {}
    if input_size is not None:
        x = _example_input(module, input_size)

        def record(m: nn.Module, args, out) -> None:
            if m not in shapes:  # a module called twice keeps its first shape
                outs = out if isinstance(out, (tuple, list)) else (out,)
                shapes[m] = ", ".join(str(tuple(o.shape)) for o in outs if isinstance(o, torch.Tensor))

        forward_with_hooks(module, x, [(m, record) for m in module.modules()])

    rows: list[tuple[str, str, str]] = []  # (name and class, parameters, output shape)

    def walk(m: nn.Module, label: str, depth: int) -> None:
        settings = _settings(m)
        text = "  " * depth + label + type(m).__name__ + (f" {settings}" if settings else "")
        n = count_params(m)
        rows.append((text, f"{n:,}" if n else "-", shapes.get(m, "")))
        for name, child in m.named_children():
            walk(child, f"{name}: ", depth + 1)

    walk(module, "", 0)
    width = max(len(r[0]) for r in rows)
    pwidth = max(len("parameters"), *(len(r[1]) for r in rows))
    header = f"{'module':<{width}}  {'parameters':>{pwidth}}" + ("  output" if shapes else "")
    lines = [f"{t:<{width}}  {p:>{pwidth}}" + (f"  {s}" if shapes else "") for t, p, s in rows]
    return "\n".join([header, *(line.rstrip() for line in lines)])


def forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One forward pass of ``x`` in eval mode without gradients, with the forward hooks
    ``hooks`` (pairs ``(module, hook(module, args, output))``) attached; they are
    removed and the model's train/eval mode restored afterwards, whatever happens."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@dataclass(frozen=True)
class Calibration:
    """How well a classifier's confidence matches its accuracy (:func:`calibration`)."""

    ece: float                  # expected calibration error: sum over bins of (share of images) * |accuracy - confidence|
    mean_confidence: float      # mean of the top-class probability over all images
    accuracy: float             # share of images whose top class is right
    bin_edges: list[float]      # bins + 1 edges of the confidence bins, from 0 to 1
    bin_confidence: list[float]  # mean confidence of the images in each bin (NaN for an empty bin)
    bin_accuracy: list[float]   # accuracy of the images in each bin (NaN for an empty bin)
    bin_count: list[int]        # images in each bin


def calibration(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Calibration:
    """Reliability-diagram data and expected calibration error (ECE) of predictions.

    Each image's confidence is its top-class probability. Images are sorted into
    ``bins`` equal-width confidence bins; a calibrated classifier is right on 80% of the
    images it is 80% sure about, so in every bin accuracy equals mean confidence. ECE is
    the mean gap, weighted by the share of images in each bin (Guo et al., 2017, "On
    Calibration of Modern Neural Networks", which uses 15 bins).

    Args:
        probs: ``(N, classes)`` probabilities (each row sums to 1), e.g. ``logits.softmax(1)``.
        labels: ``(N,)`` the true classes.
        bins: number of equal-width bins on [0, 1].

    Returns:
        A :class:`Calibration`.
    """
    if not (isinstance(probs, torch.Tensor) and probs.ndim == 2 and isinstance(labels, torch.Tensor)
            and labels.shape == probs.shape[:1]):
        raise ValueError("probs must be an (N, classes) tensor and labels an (N,) tensor of the same N; got "
                         f"{tuple(getattr(probs, 'shape', ()))} and {tuple(getattr(labels, 'shape', ()))}")
    if not (isinstance(bins, int) and bins >= 1):
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    if len(probs) == 0:
        raise ValueError("probs holds no predictions")
    if not torch.allclose(probs.float().sum(1), torch.ones(len(probs)), atol=1e-3):
        raise ValueError("each row of probs must sum to 1: pass probabilities (logits.softmax(1)), not logits")
    confidence, predicted = probs.float().max(1)
    correct = (predicted == labels.to(predicted.device)).float()
    # bin i holds confidences in (edge_i, edge_i+1]; the top-class probability is at least 1/classes > 0
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins).index_add_(0, index.cpu(), confidence.cpu())
    acc_sum = torch.zeros(bins).index_add_(0, index.cpu(), correct.cpu())
    count = count.cpu()
    nonempty = count > 0
    bin_conf = torch.where(nonempty, conf_sum / count.clamp_min(1), torch.tensor(float("nan")))
    bin_acc = torch.where(nonempty, acc_sum / count.clamp_min(1), torch.tensor(float("nan")))
    ece = ((acc_sum - conf_sum).abs().sum() / len(probs)).item()   # = sum_b (n_b / N) |acc_b - conf_b|
    return Calibration(ece, confidence.mean().item(), correct.mean().item(),
                       [i / bins for i in range(bins + 1)], bin_conf.tolist(), bin_acc.tolist(), count.tolist())
