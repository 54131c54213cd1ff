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

import statistics
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_params",
    "count_macs",
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
    if not isinstance(model, nn.Module):
        raise ValueError(f"count_params expects an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    if isinstance(input_size, int) or not all(isinstance(s, int) and s > 0 for s in input_size):
        raise ValueError(
            f"input_size must be a tuple of positive ints without the batch dimension, "
            f"e.g. (3, 224, 224); got {input_size!r}"
        )
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
            ``(3, 224, 224)`` for ImageNet or ``(3, 32, 32)`` for CIFAR-10.

    Returns:
        MACs as an int (FLOPs are twice this).
    """
    x = _example_input(model, input_size)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------- formulas


def _pair(v: IntOrPair, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(i, int) for i in v)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return v


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    for name, c in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(c, int) or c <= 0:
            raise ValueError(f"{name} must be a positive int, got {c!r}")
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
    as_int = isinstance(size, int)
    s, k, st, p, d = (_pair(v, n) for v, n in ((size, "size"), (kernel_size, "kernel_size"),
                                              (stride, "stride"), (padding, "padding"),
                                              (dilation, "dilation")))
    out = []
    for i in range(2):
        if k[i] < 1 or st[i] < 1 or d[i] < 1 or p[i] < 0:
            raise ValueError("kernel_size, stride and dilation must be >= 1 and padding >= 0")
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
    as_int = isinstance(size, int)
    s, k, st, p, op, d = (_pair(v, n) for v, n in (
        (size, "size"), (kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"),
        (output_padding, "output_padding"), (dilation, "dilation")))
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
    return kh * kw * (in_channels // groups) * out_channels + (out_channels if bias else 0)


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
    if in_features <= 0 or out_features <= 0:
        raise ValueError("in_features and out_features must be positive")
    return in_features * out_features + (out_features if bias else 0)


def receptive_field(layers: Sequence[tuple[int, int] | tuple[int, int, int]]) -> int:
    """Receptive field of a stack of convolutions/poolings, in input pixels.

    Args:
        layers: ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation)`` per layer,
            first layer first.

    ``r = 1 + sum_i d_i*(k_i - 1) * prod_{j<i} s_j``; two stacked 3x3 stride-1
    convolutions give 5, three give 7.
    """
    r, jump = 1, 1
    for layer in layers:
        k, s, *rest = layer
        d = rest[0] if rest else 1
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f"bad layer {layer!r}: kernel, stride and dilation must be >= 1")
        r += d * (k - 1) * jump
        jump *= s
    return r


# --------------------------------------------------------------------------- summaries


def summary(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), depth: int = 2, **kwargs):
    """A layer table (output shapes, parameters, MACs) from ``torchinfo``.

    Args:
        model: the network.
        input_size: one input without the batch dimension.
        depth: how deep into nested modules the table goes.
        **kwargs: passed to ``torchinfo.summary``.

    Returns:
        torchinfo's ``ModelStatistics``; it prints as the table.
    """
    import torchinfo

    x = _example_input(model, input_size)
    kwargs.setdefault("col_names", ("output_size", "num_params", "mult_adds"))
    kwargs.setdefault("verbose", 0)
    return torchinfo.summary(model, input_data=x, depth=depth, device=x.device, **kwargs)


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
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("repeats and batch_size must be >= 1 and warmup >= 0")
    x = _example_input(model, input_size, batch_size)
    device = x.device
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    was_training = model.training
    model.eval()
    times = []
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
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
        passes (``rounds * repeats``).
    """
    if not models:
        raise ValueError("models is empty: give at least one {name: (model, input_size)}")
    if rounds < 1:
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
                               batch_size, last[n].device, last[n].threads)
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
    if train:
        model(x).float().sum().backward()
    else:
        with torch.no_grad():
            model(x)
