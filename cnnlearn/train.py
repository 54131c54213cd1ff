"""Training and evaluation: ``TrainConfig``, ``fit``, ``evaluate``, checkpoints.

One loop serves every chapter. It is written for the free Colab GPU as much as for a
laptop CPU. ``TrainConfig.precision="auto"`` (the default) picks the fastest safe
arithmetic for the device: on CUDA mixed precision (bfloat16 where supported, else
float16 with loss scaling); on a CPU with native bfloat16 instructions (``avx512_bf16``
or AMX) bfloat16 autocast, which trains ResNets 1.4-2x as fast as float32 there (networks of
small depthwise or grouped convolutions may not gain: see ``resolve_precision``); float32
elsewhere. Inputs and weights use the channels-last (NHWC) memory layout on CUDA and
CPUs, where convolutions run faster in it. Everywhere the loop steps the learning rate
every batch, keeps weight decay off biases and normalisation parameters, and saves an
atomic checkpoint after every epoch so an interrupted run resumes exactly.

The same loop trains semantic segmentation: when the data's labels are per-pixel masks
(``load_data("scenes")``), the network returns logits ``(B, K, H, W)``, the loss is the
cross-entropy averaged over the labelled pixels (``IGNORE_INDEX`` pixels left out), the
accuracy is pixel accuracy, and every evaluation also records the mean IoU
(:func:`evaluate_segmentation`, :mod:`cnnlearn.segmentation`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate as V
from ._io import architecture, data_record, restore_run, save_run
from .budget import get_device
from .data import Data, DeviceLoader
from .measure import _one_input_size  # the input-shape check of count_macs and latency
from .models.layers import AuxOutputs
from .regularize import MIXINGS, BatchMixer, MixedLabels, distillation_loss
from .segmentation import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy

__all__ = ["TrainConfig", "History", "fit", "evaluate", "evaluate_segmentation", "SegmentationScores", "evaluate_ten_crop", "ten_crops", "predict", "recalibrate_bn",
           "lr_multiplier", "scaled_lr", "WeightEMA", "PRECISIONS", "cpu_has_native_bf16", "resolve_precision",
           "fastest_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 ``avx512_bf16`` or AMX tiles).

    Without them PyTorch still runs bfloat16 on the CPU, but emulated and slower than
    float32, so ``precision="auto"`` only uses it where it is native. Apple silicon is
    left on float32: autocast to bfloat16 there has not been measured faster.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if p is not None]
    if probes:
        try:
            return any(bool(p()) for p in probes)
        except Exception:  # a private probe that changed its signature: read the flags below
            pass
    try:  # older torch without the probes: the kernel's CPU flags (Linux)
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain float32.

    * ``"auto"``: CUDA -> bfloat16 on GPUs with native support (Ampere or newer), else float16; a CPU with
      native bfloat16 -> bfloat16; anything else -> float32.
    * ``"fp32"``: float32 everywhere (the reference arithmetic).
    * ``"bf16"``: bfloat16 autocast; refused on a CPU without native bfloat16, where
      it would be emulated and slower than float32.
    * ``"fp16"``: float16 autocast with loss scaling; CUDA only.

    On a CPU, bfloat16 pays most for networks whose time goes into large matrix products
    (ResNets: about 1.4-2x on our build machines). Networks dominated by small depthwise or
    grouped convolutions can train slower with it than in float32 there (e.g. ShuffleNet v2
    at batch 128: 135 against 192 images/s), and which way a depthwise network goes depends
    on its width and batch, so measure before choosing ``"fp32"`` for one.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`, or the device
            cannot run it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "fp16":
            return torch.float16
        # Native bfloat16 needs compute capability 8.0 (Ampere) or newer; on older GPUs such
        # as Colab's T4 it is emulated (torch.cuda.is_bf16_supported() says True there), so
        # "auto" takes float16 with loss scaling instead.
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return torch.bfloat16
        if precision == "bf16":
            raise ValueError(f"precision='bf16' was asked for, but this GPU (compute capability {major}.{minor}) "
                             "has no native bfloat16 and would emulate it slowly; use precision='auto' (float16 "
                             "with loss scaling) or 'fp32'")
        return torch.float16
    if device.type == "cpu":
        if precision == "fp16":
            raise ValueError("precision='fp16' needs a CUDA GPU; on the CPU use 'bf16' (where it is native) or 'fp32'")
        if cpu_has_native_bf16():
            return torch.bfloat16
        if precision == "bf16":
            raise ValueError("precision='bf16' was asked for, but this CPU has no native bfloat16 "
                             "(avx512_bf16 or AMX) and emulated bfloat16 is slower than float32; "
                             "use precision='auto' or 'fp32'")
        return None
    if precision == "auto":  # MPS and others: float32 until measured faster
        return None
    raise ValueError(f"precision={precision!r} is not supported on device {device.type!r}; "
                     "use precision='auto' or 'fp32'")


def fastest_precision(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32), batch_size: int = 64,
                      steps: int = 3, channels_last: bool = True) -> str:
    """``"bf16"`` or ``"fp32"``: whichever trains ``model`` faster on its CPU, measured on a copy.

    On a CPU, bfloat16 speeds up networks whose time goes into large matrix products, but it
    can slow down networks dominated by depthwise convolutions and element-wise work, and
    which way a network goes depends on the CPU, its width and the batch size (on one of our
    2-core build machines, at batch 64: MobileNetV2 156 against 129 images/s in bf16 and
    fp32, EfficientNet-B0 59 against 99). This times ``steps`` SGD steps of a deep copy of
    ``model`` on random inputs in each precision, after one warm-up step each, and returns the
    faster, for :class:`TrainConfig`'s ``precision``. Nothing is measured, and ``"auto"``
    returned, on a GPU (mixed precision is the fast path there) and on a CPU without native
    bfloat16 (where ``"auto"`` is float32 anyway). ``model`` and the global random state are
    left as they were, so a seeded run after this call is unchanged.

    Args:
        model: the network, on the device it will train on.
        input_size: one input's shape, without the batch dimension.
        batch_size: the batch size of the run to come (the answer can change with it).
        steps: timed steps per precision; the median counts.
        channels_last: as :class:`TrainConfig`'s.
    """
    V.module("model", model)
    V.positive_int("batch_size", batch_size), V.positive_int("steps", steps)
    input_size = _one_input_size(input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type != "cpu" or not cpu_has_native_bf16():
        return "auto"
    seconds = {}
    with torch.random.fork_rng(devices=[]):  # dropout and the random batch draw from a private stream
        torch.manual_seed(0)
        x = _prepare_input(torch.randn(batch_size, *input_size), _use_channels_last(device, channels_last))
        for precision in ("bf16", "fp32"):
            net = copy.deepcopy(model).train()
            if _use_channels_last(device, channels_last):
                net = net.to(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
            dtype = resolve_precision(precision, device)
            times = []
            for step in range(steps + 1):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    out = net(x)
                    out = out[0] if isinstance(out, tuple) else out
                    loss = out.float().logsumexp(1).mean()  # any scalar that depends on every logit
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:  # the first step builds the kernels for these shapes
                    times.append(time.perf_counter() - start)
            seconds[precision] = sorted(times)[len(times) // 2]
    return min(seconds, key=seconds.get)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are a sound recipe for CIFAR-10 from scratch."""

    epochs: int = 10  # passes over the training set
    optimizer: str = "sgd"  # "sgd" (with Nesterov momentum) or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW's beta1)
    weight_decay: float = 5e-4  # applied to weights only, never to biases or norm parameters (unless bias_decay)
    bias_decay: bool = False  # decay biases and norm parameters too: the "Bag of Tricks" baseline, before its no-bias-decay
    schedule: str = "onecycle"  # "onecycle", "cosine" or "linear" (warm-up, then decay), "constant"
    warmup_epochs: float = 1.0  # warm-up length of the "cosine" and "linear" schedules
    label_smoothing: float = 0.0  # 0.1 in "Bag of Tricks"
    precision: str = "auto"  # "auto" (fastest safe: see resolve_precision), "fp32", "bf16" or "fp16"
    channels_last: bool = True  # NHWC memory layout on CUDA and CPUs: faster convolutions (not on MPS)
    tta_flip: bool = False  # test-time augmentation: average the logits of an image and its mirror
    tta_translate: int = 0  # test-time augmentation: also average over copies shifted by this many pixels
    tta_final_only: bool = False  # apply the test-time augmentation only when evaluating the last epoch
    norm_lr_scale: float = 1.0  # learning rate of normalisation layers' parameters, as a multiple of lr (airbench: 64)
    lookahead: bool = False  # pull the weights towards their running average every 5 steps (airbench)
    eval_every: int = 1  # evaluate the test set every this many epochs and after the last (others: NaN)
    grad_clip: float | None = None  # clip the gradient norm to this, if set
    seed: int = 0  # seeds the model-independent randomness (dropout, mixing) of the run
    # "Bag of Tricks" refinements (cnnlearn/regularize.py); all off by default.
    mixing: str = "none"  # "none", "mixup" (Zhang et al. 2018) or "cutmix" (Yun et al. 2019) of the training batches
    mix_alpha: float | None = None  # mixing ratio ~ Beta(alpha, alpha); None: 0.2 for mixup, 1.0 for cutmix
    mix_off_epochs: int = 0  # train the last this many epochs on unmixed batches (GluonCV's --mixup-off-epoch)
    distill_weight: float = 0.0  # w of (1 - w) * CE + w * T^2 * KL(teacher || student); > 0 needs fit(teacher=...)
    distill_temperature: float = 20.0  # T of the distillation (20: GluonCV's train_imagenet.py, "Bag of Tricks")
    ema_decay: float | None = None  # keep an exponential moving average of the weights and evaluate it (e.g. 0.999)

    def __post_init__(self) -> None:
        V.check_fields(self, _TRAIN_RULES)  # every field, from the table below the class
        if self.schedule in ("cosine", "linear") and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} is longer than the run (epochs={self.epochs}): "
                             f"the learning rate would never reach its peak; use at most {self.epochs}")
        # Options that would silently do nothing are refused, naming the switch they need.
        if self.mixing == "none" and (self.mix_alpha is not None or self.mix_off_epochs):
            raise ValueError("mix_alpha and mix_off_epochs have no effect with mixing='none'; "
                             "set mixing='mixup' or mixing='cutmix'")
        if self.mixing != "none" and self.mix_off_epochs >= self.epochs:
            raise ValueError(f"mix_off_epochs={self.mix_off_epochs} leaves no epoch of {self.mixing} in a run of "
                             f"epochs={self.epochs}; use at most {self.epochs - 1}")
        if self.distill_weight == 0 and self.distill_temperature != _field_default(self, "distill_temperature"):
            raise ValueError(f"distill_temperature={self.distill_temperature} has no effect with distill_weight=0; "
                             "set distill_weight (e.g. 0.5) and pass fit(..., teacher=...)")


def _field_default(config: object, name: str) -> object:
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


# How each TrainConfig field is checked (cnnlearn/_validate.py); a new field needs an entry,
# and tests/test_validation.py fails for a field without one.
_TRAIN_RULES = {
    "epochs": V.positive_int,
    "optimizer": V.choice("sgd", "adamw"),
    "lr": V.positive_float,
    "momentum": V.interval(0.0, 1.0),  # [0, 1): 1 would never forget a gradient
    "weight_decay": V.non_negative_float,
    "bias_decay": V.boolean,
    "schedule": V.choice("onecycle", "cosine", "linear", "constant"),
    "warmup_epochs": V.non_negative_float,
    "label_smoothing": V.interval(0.0, 1.0),  # [0, 1): 1 would make every target uniform
    "precision": V.choice(*PRECISIONS),
    "channels_last": V.boolean,
    "tta_flip": V.boolean,
    "tta_translate": V.non_negative_int,
    "tta_final_only": V.boolean,
    "norm_lr_scale": V.positive_float,
    "lookahead": V.boolean,
    "eval_every": V.positive_int,
    # 0 would freeze the weights and a negative norm reverse every step (uphill)
    "grad_clip": V.optional(partial(V.positive_float, fix="use None for no clipping, or a norm such as 1.0")),
    "seed": V.seed,
    "mixing": V.choice(*MIXINGS),
    "mix_alpha": V.optional(partial(V.positive_float, fix="use None for the method's default (mixup 0.2, cutmix 1.0)")),
    "mix_off_epochs": V.non_negative_int,
    "distill_weight": V.interval(0.0, 1.0, high_open=False),  # [0, 1]: 1 learns from the teacher alone
    "distill_temperature": V.positive_float,
    "ema_decay": V.optional(V.interval(0.0, 1.0, low_open=True)),  # (0, 1): 1 would never move, 0 is no average
}


@dataclass
class History:
    """Per-epoch record of a run (lists of one entry per epoch; ``test_miou`` only for segmentation)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate at the end of the epoch
    epoch_time: list[float] = field(default_factory=list)  # seconds of training (evaluation excluded)
    # Segmentation data only: mean IoU on the test split per epoch (train_acc and test_acc
    # are then pixel accuracies). Empty for image classification, whose checkpoints
    # written before this field existed still load.
    test_miou: list[float] = field(default_factory=list)
    # Runs with grad_clip only: the largest and the mean gradient norm of each epoch's steps,
    # measured before clipping (clip_grad_norm_ computes it anyway). Empty without grad_clip.
    grad_norm_max: list[float] = field(default_factory=list)
    grad_norm_mean: list[float] = field(default_factory=list)

    def append(self, **values: float) -> None:
        for k, v in values.items():
            getattr(self, k).append(v)

    def as_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(empty)"
        miou = f", test mIoU {self.test_miou[-1]:.2%}" if self.test_miou and not math.isnan(self.test_miou[-1]) else ""
        return (f"History({len(self.epoch)} epochs: train loss {self.train_loss[-1]:.3f}, "
                f"test accuracy {self.test_acc[-1]:.2%}{miou}, {sum(self.epoch_time):.0f} s)")

    @property
    def final_test_miou(self) -> float:
        """The last epoch's test mean IoU (segmentation data; NaN otherwise)."""
        return self.test_miou[-1] if self.test_miou else float("nan")


def lr_multiplier(schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate at ``step`` as a fraction of the peak.

    * ``onecycle`` (Smith & Topin 2017): a linear rise from 1/25 of the peak over the
      first 25% of the steps, then a cosine decay to zero.
    * ``cosine`` (Loshchilov & Hutter 2017, with the linear warm-up of Goyal et al.
      2017): linear from 0 over ``warmup_steps``, then a cosine decay to zero.
    * ``linear`` (after airbench's, which ends at 0.07 of the peak rather than zero): a
      linear rise from 1/5 of the peak over ``warmup_steps``, then a linear decay to zero.
    * ``constant``: always the peak.

    The ``cosine`` schedule's warm-up is the "gradual warm-up" of Goyal et al. (2017,
    Sec. 2.2) that "Bag of Tricks" (He et al., 2019, Sec. 3.1) uses: at batch ``i`` of ``m``
    warm-up batches (``i`` counted from 1, ``step = i - 1``) the rate is ``i / m`` of the
    peak. With a large batch, pair it with the peak of :func:`scaled_lr`.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        if step < warmup_steps:
            return 0.2 + 0.8 * step / warmup_steps
        return max(0.0, 1 - (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "onecycle":
        rise = max(1, int(0.25 * total_steps))
        if step < rise:
            return 1 / 25 + (1 - 1 / 25) * step / rise
        progress = (step - rise) / max(1, total_steps - rise)
    elif schedule == "cosine":
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def scaled_lr(batch_size: int, base_lr: float = 0.1, base_batch_size: int = 256) -> float:
    """The linear scaling rule: the learning rate grows in proportion to the batch size,
    ``lr = base_lr * batch_size / base_batch_size``.

    Goyal et al. (2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
    arXiv:1706.02677, Sec. 2.1) keep ResNet-50's accuracy up to batch 8192 this way, with
    the gradual warm-up of the ``cosine`` schedule (:func:`lr_multiplier`); "Bag of
    Tricks" (He et al., 2019, Sec. 3.1) takes 0.1 for batch 256 as the base, the defaults
    here. Why it works: a step on a ``k`` times larger batch averages ``k`` times as many
    gradients, so the gradient's noise shrinks, and a ``k`` times larger step keeps the
    distance travelled per epoch.

    Args:
        batch_size: the batch size to train with.
        base_lr: the learning rate known to work at ``base_batch_size``.
        base_batch_size: the batch size of ``base_lr``.

    Returns:
        The scaled learning rate.
    """
    V.positive_int("batch_size", batch_size), V.positive_int("base_batch_size", base_batch_size)
    return V.positive_float("base_lr", base_lr) * batch_size / base_batch_size


_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                  norm_lr_scale: float = 1.0, bias_decay: bool = False) -> list[dict]:
    # Decay only weights of convolutions and linear layers (ndim > 1): decaying biases
    # and BatchNorm scales/shifts regularises nothing useful ("Bag of Tricks", Sec. 3.1).
    # bias_decay=True decays them too, the baseline that trick is measured against.
    # Normalisation layers' parameters may learn faster (norm_lr_scale): airbench trains
    # its BatchNorm shifts at 64x the rate of the weights.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    other_decay = weight_decay if bias_decay else 0.0
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": other_decay}]
    if lr is None:
        return groups
    groups[0]["lr"] = groups[1]["lr"] = lr
    if norm_lr_scale != 1.0:
        norm = {id(p) for m in model.modules() if isinstance(m, _NORM_LAYERS) for p in m.parameters(recurse=False)}
        groups[1]["params"] = [p for p in no_decay if id(p) not in norm]
        groups.append({"params": [p for p in no_decay if id(p) in norm], "weight_decay": other_decay,
                       "lr": lr * norm_lr_scale})
        groups = [g for g in groups if g["params"]]
    return groups


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay, cfg.lr, cfg.norm_lr_scale, cfg.bias_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def _use_channels_last(device: torch.device, channels_last: bool) -> bool:
    # NHWC pays on CUDA (tensor cores) and on CPUs (oneDNN's blocked kernels: 1.3x in
    # float32, more in bfloat16 in our benchmark); MPS gains nothing from it.
    return channels_last and device.type in ("cuda", "cpu")


def _prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# Fields added after checkpoints were in use: at their defaults they are left out of a
# checkpoint's config, so that runs written before they existed still resume.
_OMITTED_AT_DEFAULT = ("mixing", "mix_alpha", "mix_off_epochs", "distill_weight", "distill_temperature",
                       "ema_decay", "bias_decay")


def _config_key(cfg: TrainConfig) -> dict:
    key = dataclasses.asdict(cfg)
    for name in _OMITTED_AT_DEFAULT:
        if key[name] == _field_default(cfg, name):
            del key[name]
    return key


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DeviceLoader, *, tta_flip: bool = False, tta_translate: int = 0,
    precision: str = "fp32", channels_last: bool | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``loader``, in eval mode.

    Args:
        model: the network, on the loader's device.
        loader: batches ``(x, y)``.
        tta_flip: average the logits of each image and its left-right mirror.
        tta_translate: if > 0, also average over copies shifted by this many pixels (see
            :func:`predict`).
        precision: autocast as in :class:`TrainConfig`; ``fit`` passes its own. Called
            directly the default is float32, so forward hooks see float32 tensors.
        channels_last: NHWC inputs; ``None`` matches the model's memory format.

    Returns:
        ``(loss, accuracy)``, accuracy in [0, 1]. On a loader of masks: the loss per
        labelled pixel and the pixel accuracy (:func:`evaluate_segmentation` gives the IoUs).
    """
    if getattr(loader, "has_masks", False):
        scores = evaluate_segmentation(model, loader, tta_flip=tta_flip, tta_translate=tta_translate,
                                       precision=precision, channels_last=channels_last)
        return scores.loss, scores.pixel_accuracy
    logits, labels = predict(model, loader, tta_flip=tta_flip, tta_translate=tta_translate,
                             precision=precision, channels_last=channels_last)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@dataclass(frozen=True)
class SegmentationScores:
    """What :func:`evaluate_segmentation` measures on a test set."""

    loss: float  # mean cross-entropy per labelled pixel
    confusion: torch.Tensor  # (K, K) int64 pixel counts, rows the true classes (cnnlearn.segmentation)

    @property
    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confusion)

    @property
    def mean_iou(self) -> float:
        return mean_iou(self.confusion)

    @property
    def iou_per_class(self) -> torch.Tensor:
        return iou_per_class(self.confusion)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, loader: DeviceLoader, *, tta_flip: bool = False, tta_translate: int = 0,
    precision: str = "fp32", channels_last: bool | None = None, ignore_index: int = IGNORE_INDEX,
) -> SegmentationScores:
    """Loss and confusion matrix of a segmentation network on a loader of masks, in eval
    mode. The confusion matrix is summed batch by batch on the device (a test set's
    logits, ``N x K x H x W`` floats, would not fit in memory), and pixel accuracy and
    IoUs are read off it for the whole set, the PASCAL VOC protocol.

    Args:
        model: returns logits ``(B, K, H, W)`` at the masks' resolution.
        loader: batches ``(x, masks)`` with masks ``(B, H, W)``.
        tta_flip: average the logits of each image and of its mirror, mirrored back.
        tta_translate: must be 0 (a shifted image would need its mask shifted).
        precision, channels_last: as :func:`evaluate`.
        ignore_index: the mask value of unlabelled pixels, left out of loss and counts.

    Returns:
        :class:`SegmentationScores` (``loss``, ``confusion``, ``pixel_accuracy``,
        ``mean_iou``, ``iou_per_class``).
    """
    model, loader = V.module("model", model), V.loader("loader", loader)
    if not getattr(loader, "has_masks", False):
        raise ValueError("evaluate_segmentation needs a loader of masks (load_data('scenes')); "
                         "for image classes use evaluate")
    V.boolean("tta_flip", tta_flip)
    if tta_translate:
        raise ValueError(f"tta_translate={tta_translate} is not supported for segmentation: a shifted image "
                         f"would need its mask shifted; use 0 (tta_flip works)")
    was_training, device, dtype, channels_last = _evaluation_mode(model, loader, precision, channels_last)
    nll, pixels, cm = torch.zeros((), device=device, dtype=torch.float64), 0, None
    try:
        for x, y in loader:
            x = _prepare_input(x, channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(x).float()  # (B, K, H, W)
                if tta_flip:
                    out = (out + model(x.flip(3)).float().flip(3)) / 2  # the mirror's logits, mirrored back
            if out.ndim != 4 or out.shape[-2:] != y.shape[-2:]:
                raise ValueError(f"{type(model).__name__} returned {tuple(out.shape)} for masks "
                                 f"{tuple(y.shape)}; a segmentation network returns (B, K, H, W) logits")
            nll += F.cross_entropy(out, y, ignore_index=ignore_index, reduction="sum").double()
            pixels += int((y != ignore_index).sum())
            batch_cm = confusion_matrix(out.argmax(1), y, out.shape[1], ignore_index=ignore_index)
            cm = batch_cm if cm is None else cm + batch_cm
    finally:
        model.train(was_training)
    if cm is None:
        raise ValueError("the loader yields no batches")
    return SegmentationScores(float(nll) / max(pixels, 1), cm.cpu())


def ten_crops(x: torch.Tensor, pad: int, fill: float | torch.Tensor = 0.0) -> list[torch.Tensor]:
    """The ten views of 10-crop testing: the four corner crops and the centre crop of each
    image, and their left-right mirrors (Krizhevsky et al., 2012; Szegedy et al., 2015).

    On CIFAR-sized images the crops come from the image padded by ``pad`` pixels on each
    side, as the random-crop augmentation of training does, so every crop has the image's
    own size and the centre crop is the image itself.

    Args:
        x: a batch ``(B, C, H, W)``.
        pad: the padding in pixels (> 0: with 0 all five crops would be the same).
        fill: the value of the padding, a number or one value per channel (a tensor of
            ``C`` values). Training pads the raw uint8 images with black (0) and then
            normalises them; on normalised images the same black is ``(0 - mean) / std``
            per channel (``loader.normalize`` of a black pixel), which
            :func:`evaluate_ten_crop` passes. ``0`` on normalised images would pad with the
            mean colour, a border the network never saw in training.

    Returns:
        Ten tensors of ``x``'s shape: centre, four corners, then the same five mirrored.
    """
    if V.integer("pad", pad) < 1:
        raise ValueError(f"pad must be >= 1 pixel (the corners are 2 * pad apart), got {pad}")
    b, c, h, w = x.shape
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    if fill.numel() not in (1, c):
        raise ValueError(f"fill must be one number or one per channel ({c}), got {fill.numel()} values")
    padded = fill.reshape(1, -1, 1, 1).expand(b, c, h + 2 * pad, w + 2 * pad).clone()   # (B, C, H + 2p, W + 2p)
    padded[..., pad:pad + h, pad:pad + w] = x
    offsets = [(pad, pad), (0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad)]
    crops = [padded[..., dy:dy + h, dx:dx + w] for dy, dx in offsets]
    return crops + [c.flip(-1) for c in crops]


@torch.no_grad()
def evaluate_ten_crop(
    model: nn.Module, loader: DeviceLoader, *, pad: int | None = None, precision: str = "fp32",
    channels_last: bool | None = None,
) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on ``loader`` with 10-crop testing: the softmax
    probabilities of the ten views of :func:`ten_crops` are averaged, as GoogLeNet
    averaged over its crops (Szegedy et al., 2015, Sec. 7), and the class with the
    highest mean probability is the prediction. It costs ten forward passes per image.

    Args:
        model: the network, on the loader's device; its train/eval mode is restored.
        loader: batches ``(x, y)`` (the test loader: no augmentation of its own).
        pad: crop offsets come from the image padded by this many pixels; default the
            loader's ``pad``, the padding its training augmentation uses (4 on CIFAR).
            The padding is black, as in training (see :func:`ten_crops`'s ``fill``).
        precision: autocast as in :class:`TrainConfig` (default float32; pass the
            training config's ``precision`` to compare with the accuracy ``fit`` reports).
        channels_last: NHWC inputs; ``None`` matches the model's memory format.

    Returns:
        ``(loss, accuracy)``: the cross-entropy of the averaged probabilities and the
        accuracy in [0, 1], comparable with :func:`evaluate`'s.
    """
    model, loader = V.module("model", model), V.loader("loader", loader)
    pad = loader.pad if pad is None else pad
    was_training, device, dtype, channels_last = _evaluation_mode(model, loader, precision, channels_last)
    black = loader.normalize(torch.zeros((1, loader.images.shape[1], 1, 1), dtype=torch.uint8,
                                         device=device)).flatten()     # training's zero padding, normalised
    nll, correct, seen = 0.0, 0, 0
    try:
        for x, y in loader:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                probs = sum(model(_prepare_input(c, channels_last)).float().softmax(1)
                            for c in ten_crops(x, pad, fill=black)) / 10
            nll += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").item()
            correct += (probs.argmax(1) == y).sum().item()
            seen += len(y)
    finally:
        model.train(was_training)
    return nll / seen, correct / seen


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, loader: DeviceLoader, *, batches: int | None = None, channels_last: bool = False,
) -> int:
    """Re-estimate every BatchNorm's running mean and variance from ``loader``.

    In eval mode BatchNorm normalises with running averages that training updates by
    ``momentum`` per step. With a small momentum (0.01 in the TensorFlow-derived
    MobileNetV3) and few steps, those averages are still near their initial values
    (mean 0, variance 1) when training stops, and the evaluated network is a different
    function from the trained one. This resets them and averages over whole batches
    (``momentum=None``: a cumulative mean), with no gradient and no weight changed.

    Args:
        model: the network, on the loader's device; its train/eval mode is restored.
        loader: batches ``(x, y)``, usually the training loader.
        batches: use at most this many batches (default: one pass over the loader).
        channels_last: NHWC inputs (match the model's memory format).

    Returns:
        The number of BatchNorm layers recalibrated (0: nothing to do).

    Raises:
        ValueError: ``model`` is not an ``nn.Module``, or ``batches`` is below 1.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    V.batches("loader", loader)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    if batches is not None and V.integer("batches", batches) < 1:
        raise ValueError(f"batches must be >= 1 or None, got {batches}")
    saved, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i, (x, _) in enumerate(loader):
            if batches is not None and i >= batches:
                break
            model(_prepare_input(x, channels_last))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def _evaluation_mode(model: nn.Module, loader, precision, channels_last: bool | None):
    """Put ``model`` in eval mode for the evaluation functions; returns ``(was_training, device,
    autocast dtype or None, channels_last)``, the last resolved from the model when ``None``."""
    was_training = model.training
    model.eval()
    device = loader.device
    dtype = resolve_precision(precision, device)
    if channels_last is None:
        channels_last = _model_is_channels_last(model)
    return was_training, device, dtype, channels_last


def _model_is_channels_last(model: nn.Module) -> bool:
    # A weight with one input channel or a 1x1 kernel is contiguous in both layouts; ask
    # one whose layouts differ.
    for p in model.parameters():
        if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    # Translate a batch by (dy, dx) pixels, filling the border by reflection. (B, C, H, W)
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


@torch.no_grad()
def predict(
    model: nn.Module, loader: DeviceLoader, *, tta_flip: bool = False, tta_translate: int = 0,
    precision: str = "fp32", channels_last: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels (CPU) of every batch of ``loader``, in eval mode.

    Args:
        model: the network, on the loader's device.
        loader: batches ``(x, y)``.
        tta_flip: average the logits of each image and its left-right mirror.
        tta_translate: if ``t > 0``, weight the logits of the image 1/2 and those of two
            copies shifted by ``t`` pixels (up-left, down-right; borders reflected) 1/4
            each, as airbench's test-time augmentation (Jordan, 2024) does.
        precision: autocast as in :class:`TrainConfig` (default float32; ``fit`` passes its own).
        channels_last: NHWC inputs; ``None`` matches the model's memory format.
    """
    model, loader = V.module("model", model), V.loader("loader", loader)
    V.boolean("tta_flip", tta_flip)
    if V.integer("tta_translate", tta_translate) < 0:
        raise ValueError(f"tta_translate must be >= 0 pixels, got {tta_translate}")
    if tta_translate and tta_translate >= min(loader.images.shape[-2:]):
        raise ValueError(f"tta_translate={tta_translate} pixels must be smaller than the images "
                         f"({tuple(loader.images.shape[-2:])}); use 1 or 2")
    was_training, device, dtype, channels_last = _evaluation_mode(model, loader, precision, channels_last)

    def logits(x: torch.Tensor) -> torch.Tensor:
        x = _prepare_input(x, channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x).float()
            if tta_flip:
                out = (out + model(x.flip(3)).float()) / 2
        return out

    outs, labels = [], []
    try:
        for x, y in loader:
            out = logits(x)
            if tta_translate:
                t = tta_translate
                out = 0.5 * out + 0.25 * (logits(_shift(x, -t, -t)) + logits(_shift(x, t, t)))
            outs.append(out.cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


class Lookahead:
    """Weight averaging as airbench does it (after hlb-cifar10 and Zhang et al., 2019,
    "Lookahead Optimizer: k steps forward, 1 step back").

    Every ``every`` steps the slow copy moves towards the trained ("fast") weights,
    ``slow = decay * slow + (1 - decay) * fast``, and the fast weights are reset to it.
    ``decay`` grows as ``0.95**every * progress**3``: no averaging early, when the
    weights move fast, strong averaging at the end, where it smooths the noise of SGD.
    At the end of training the fast weights are set to the slow ones. BatchNorm's
    running statistics are averaged with the weights.
    """

    def __init__(self, model: nn.Module, every: int = 5) -> None:
        self.every = every
        seen: set[int] = set()  # tied weights appear twice in a state_dict: average them once
        self.fast = [t for t in model.state_dict().values() if t.is_floating_point()
                     and not (t.data_ptr() in seen or seen.add(t.data_ptr()))]
        self.slow = [t.detach().clone() for t in self.fast]

    @torch.no_grad()
    def step(self, step: int, total_steps: int) -> None:
        """Call after optimizer step ``step`` (counted from 1)."""
        if step % self.every and step != total_steps:
            return
        decay = 1.0 if step == total_steps else 0.95 ** self.every * (step / total_steps) ** 3
        for slow, fast in zip(self.slow, self.fast):
            slow.lerp_(fast, 1 - decay)
            fast.copy_(slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        for slow, saved in zip(self.slow, state["slow"]):
            slow.copy_(saved)


class WeightEMA:
    """An exponential moving average (EMA) of the weights, evaluated in their place.

    After every optimiser step ``average = d * average + (1 - d) * weights``; averaging the
    iterates of SGD smooths out its noise (Polyak and Juditsky, 1992, averaged all of them;
    an exponential average forgets the early, poor ones). The decay warms up as
    TensorFlow's ``ExponentialMovingAverage`` with ``num_updates`` does,
    ``d_t = min(decay, (1 + t) / (10 + t))`` at update ``t`` (counted from 1): early in
    training, when the weights move fast, the average follows them instead of holding on
    to the random initial weights for the ``1 / (1 - decay)`` steps its memory spans.

    BatchNorm's running mean and variance are averaged with the weights, as
    :class:`Lookahead` and timm's ``ModelEmaV2`` do: the averaged weights then come with
    statistics averaged over the same steps. They are estimates for the live weights, not
    for the averaged ones; :func:`recalibrate_bn` on the averaged network measures exact
    ones if that matters. Integer buffers (``num_batches_tracked``) stay the live ones.

    Args:
        model: the network whose ``state_dict`` tensors are averaged (they are read and,
            by :meth:`swapped_in` and :meth:`copy_to_model`, written in place).
        decay: the decay ``d`` in (0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = V.real("decay", decay, low=0.0, high=1.0, low_open=True, high_open=True)
        seen: set[int] = set()  # tied weights appear twice in a state_dict: average them once
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()
                     and not (t.data_ptr() in seen or seen.add(t.data_ptr()))]
        self.average = [t.detach().clone() for t in self.live]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Call after every optimiser step."""
        d = self.current_decay()
        self.updates += 1
        for avg, live in zip(self.average, self.live):
            avg.lerp_(live, 1 - d)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; after it, its own again."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for avg, live in zip(self.average, self.live):
            kept = live.clone()
            live.copy_(avg)
            avg.copy_(kept)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the model's weights by the averaged ones (at the end of training)."""
        for avg, live in zip(self.average, self.live):
            live.copy_(avg)

    def state_dict(self) -> dict:
        return {"average": self.average, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for avg, saved in zip(self.average, state["average"]):
            avg.copy_(saved)
        self.updates = int(state["updates"])


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor | MixedLabels, label_smoothing: float,
                   ignore_index: int = -100) -> torch.Tensor:
    if isinstance(labels, MixedLabels):
        return labels.cross_entropy(logits, label_smoothing)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index)


def training_loss(output: torch.Tensor | AuxOutputs, labels: torch.Tensor | MixedLabels,
                  label_smoothing: float = 0.0, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one training step, and the logits that accuracy is measured on.

    ``output`` is what the model returned in training mode: logits ``(B, classes)``, or
    :class:`~cnnlearn.models.layers.AuxOutputs` from a network with auxiliary classifiers
    (GoogLeNet, Inception v3), whose loss is
    ``CE(logits) + aux_weight * sum(CE(a) for a in aux)`` (Szegedy et al., 2015, Sec. 5:
    each auxiliary loss weighted 0.3). Accuracy counts the main classifier only.
    ``labels`` are class indices, or the :class:`~cnnlearn.regularize.MixedLabels` of a
    mixed batch, whose cross-entropy is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``. For
    segmentation, logits ``(B, K, H, W)`` and masks ``(B, H, W)``: the cross-entropy is
    averaged over the pixels whose label is not ``ignore_index``.
    """
    if isinstance(output, AuxOutputs):
        loss = _cross_entropy(output.logits, labels, label_smoothing, ignore_index)
        for aux in output.aux:
            loss = loss + output.aux_weight * _cross_entropy(aux, labels, label_smoothing, ignore_index)
        return loss, output.logits
    return _cross_entropy(output, labels, label_smoothing, ignore_index), output


def _teacher_record(teacher: nn.Module) -> dict:
    # What identifies the teacher in a checkpoint: its architecture and a checksum of its
    # weights (a teacher of the same shapes but other weights would teach another run).
    # Summed on the CPU in a fixed layout and written to 12 digits, so that neither the
    # device nor the memory format the teacher arrives in changes the record.
    total = sum(float(t.detach().cpu().contiguous().double().sum())
                for t in teacher.state_dict().values() if t.is_floating_point())
    return {**architecture(teacher), "checksum": f"{total:.12g}"}


def fit(
    model: nn.Module, data: Data, config: TrainConfig = TrainConfig(), *,
    checkpoint: str | Path | None = None, progress: bool = True,
    callback: Callable[[int, History], None] | None = None, teacher: nn.Module | None = None,
) -> History:
    """Train ``model`` on ``data`` and evaluate it on the test split after every epoch.

    The refinements of "Bag of Tricks" that change the loop (all off by default):

    * ``config.mixing``: each training batch is mixed with a permutation of itself by
      mixup or CutMix (:mod:`cnnlearn.regularize`), except in the last
      ``config.mix_off_epochs`` epochs; the loss is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``
      and training accuracy counts the label with the larger share.
    * ``config.distill_weight`` ``w > 0`` with a ``teacher``: the loss is
      ``(1 - w) * CE + w * T^2 * KL(softmax(t / T) || softmax(s / T))``
      (:func:`~cnnlearn.regularize.distillation_loss`), the teacher seeing the same (mixed)
      batch. This is the form of GluonCV's ``DistillationSoftmaxCrossEntropyLoss``, the
      code of "Bag of Tricks", whose ``train_imagenet.py`` weighs the two terms equally
      (``--hard-weight 0.5``, ``--temperature 20``); the paper writes the unweighted sum
      ``CE + T^2 * CE_soft`` (Sec. 5.3), twice the loss of ``w = 0.5`` up to a constant.
    * Segmentation data (labels are masks, ``data.train.has_masks``): the model returns
      logits ``(B, K, H, W)``; the loss is the per-pixel cross-entropy without the
      ``IGNORE_INDEX`` pixels, ``train_acc``/``test_acc`` are pixel accuracies and
      ``History.test_miou`` the test mean IoU (:func:`evaluate_segmentation`). Mixing,
      distillation and ``tta_translate`` are refused there.
    * ``config.ema_decay``: a :class:`WeightEMA` of the weights is kept; every evaluation
      uses the averaged weights, and the model holds them when ``fit`` returns. (Training
      loss and accuracy are those of the live weights.)

    Args:
        model: the network; it is moved to the data's device (and to channels-last on CUDA and CPUs).
        data: from :func:`cnnlearn.load_data`.
        config: the recipe.
        checkpoint: a file path. After every epoch the run's full state is written there
            atomically; if the file exists when ``fit`` starts with the same config, the
            run resumes from it and finishes exactly as an uninterrupted run would.
        progress: show a progress bar (a widget in notebooks, text in terminals).
        callback: called as ``callback(epoch, history)`` after every epoch.
        teacher: the trained network to distil from (needs ``config.distill_weight > 0``).
            It is moved to the data's device and runs in eval mode without gradients, in
            the run's precision; its train/eval mode is restored at the end.

    Returns:
        The :class:`History` of every epoch, including those before a resume.

    Raises:
        ValueError: a bad argument (checked before the first step): ``data`` does not
            come from :func:`cnnlearn.load_data`, ``config`` is not a ``TrainConfig``,
            the checkpoint path cannot be written, the model (or the teacher) does not take
            the data's images or has another number of outputs than the data has classes,
            or a teacher is given without ``distill_weight`` (or the reverse).
        FloatingPointError: the training loss became NaN or infinite, or diverged: an
            epoch's mean above 10x the larger of the first batch's loss and
            ln(number of classes). The checkpoint keeps the last epoch before it.
        CorruptFileError: the checkpoint file exists but is not a ``fit`` checkpoint.
        CheckpointMismatchError: the checkpoint belongs to a run with another config,
            other data (dataset, subset, seed, batch size), another network or teacher.
    """
    model, data = V.trainable("model", model), V.data("data", data)
    cfg = V.instance("config", config, TrainConfig)
    checkpoint = None if checkpoint is None else V.writable_file("checkpoint", checkpoint)
    V.boolean("progress", progress), V.function("callback", callback)
    _check_teacher(teacher, model, cfg)
    masks = data.train.has_masks
    if masks:
        _check_segmentation_config(cfg, teacher)
    ignore_index = IGNORE_INDEX if masks else -100  # -100: F.cross_entropy's default, no class
    device = data.train.device
    channels_last = _use_channels_last(device, cfg.channels_last)
    amp_dtype = resolve_precision(cfg.precision, device)  # before moving: a refused precision changes nothing
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    V.check_classifier(model, data, amp_dtype)  # one eval-mode forward pass: inputs, outputs, classes
    if teacher is not None:
        teacher.to(device)
        if channels_last:
            teacher.to(memory_format=torch.channels_last)
        V.check_classifier(teacher, data, amp_dtype)
    # float16 needs loss scaling to keep small gradients from underflowing; bfloat16 does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    steps_per_epoch = len(data.train)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(cfg.schedule, s, total_steps, warmup_steps))
    history = History()
    start_epoch, loss_start = 0, None  # loss_start: the run's first batch loss, for the divergence guard
    torch.manual_seed(cfg.seed)

    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    lookahead = Lookahead(model) if cfg.lookahead else None
    if lookahead is not None:
        stateful["lookahead"] = lookahead
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    if ema is not None:
        stateful["ema"] = ema
    # A resume must match the data, the network and the arithmetic ("auto" resolves per machine).
    records = {"data": data_record(data), "architecture": architecture(model), "autocast": str(amp_dtype)}
    if teacher is not None:
        records["teacher"] = _teacher_record(teacher)
    if checkpoint is not None and checkpoint.is_file():
        state = restore_run(checkpoint, stateful, _config_key(cfg), ("loss_start",), kind="fit", records=records)
        history = History(**state["history"])
        start_epoch, loss_start = state["epoch"], state["loss_start"]
        if start_epoch >= cfg.epochs:
            return history

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc=type(model).__name__, unit="batch", leave=True)
    teacher_was_training = teacher is not None and teacher.training
    try:
        for epoch in range(start_epoch, cfg.epochs):
            data.train.epoch = epoch  # the loader's randomness is a function of (seed, epoch)
            model.train()
            if teacher is not None:
                teacher.eval()  # a teacher's BatchNorm uses its running statistics and never updates them
            # The mixing of an epoch is a function of (seed, epoch), as the loader's augmentation.
            mixer = (BatchMixer(cfg.mixing, cfg.mix_alpha, (cfg.seed, epoch))
                     if cfg.mixing != "none" and epoch < cfg.epochs - cfg.mix_off_epochs else None)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            counted_pixels = torch.zeros((), device=device, dtype=torch.int64)
            norm_max = torch.zeros((), device=device)  # gradient norms (grad_clip only), kept on the device
            norm_sum = torch.zeros((), device=device)
            seen = steps = 0
            for x, y in data.train:
                target = y
                if mixer is not None:
                    x, target = mixer(x, y)  # on the float32 batch, before the layout change
                x = _prepare_input(x, channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, out = training_loss(model(x), target, cfg.label_smoothing, ignore_index)
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(x)
                        w = cfg.distill_weight
                        loss = (1 - w) * loss + w * distillation_loss(out, teacher_logits, cfg.distill_temperature)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach().float()
                    norm_max, norm_sum = torch.maximum(norm_max, norm), norm_sum + norm
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if lookahead is not None:
                    lookahead.step(scheduler.last_epoch, total_steps)
                if ema is not None:
                    ema.update()
                # Accumulate on the device: a .item() per batch would wait for the GPU.
                loss_sum += loss.detach().float() * len(y)
                if loss_start is None:  # one wait, on the run's first batch only
                    loss_start = loss.item()
                if masks:  # pixel accuracy over the labelled pixels
                    labelled = y != ignore_index
                    correct += ((out.argmax(1) == y) & labelled).sum()
                    counted_pixels += labelled.sum()
                else:
                    counted = target.dominant if isinstance(target, MixedLabels) else y
                    correct += (out.argmax(1) == counted).sum()
                seen += len(y)
                steps += 1
                bar.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_time = time.perf_counter() - t0
            train_loss = loss_sum.item() / seen
            # Before the checkpoint is written: after a divergence it keeps the last good epoch.
            V.check_loss(train_loss, epoch + 1, start=loss_start, floor=math.log(len(data.classes)),
                         what="the training loss", fix=f"lower the learning rate (now {cfg.lr}) or add grad_clip")
            last = epoch + 1 == cfg.epochs
            if ema is not None and last:
                ema.copy_to_model()  # the run ends with the weights it evaluates
            test_loss = test_acc = test_miou = float("nan")  # epochs that are not evaluated (eval_every)
            if last or (epoch + 1) % cfg.eval_every == 0:
                tta = not cfg.tta_final_only or last
                with ema.swapped_in() if ema is not None and not last else contextlib.nullcontext():
                    if masks:
                        scores = evaluate_segmentation(model, data.test, tta_flip=cfg.tta_flip and tta,
                                                       precision=cfg.precision, channels_last=channels_last)
                        test_loss, test_acc, test_miou = scores.loss, scores.pixel_accuracy, scores.mean_iou
                    else:
                        test_loss, test_acc = evaluate(model, data.test, tta_flip=cfg.tta_flip and tta,
                                                       tta_translate=cfg.tta_translate if tta else 0,
                                                       precision=cfg.precision, channels_last=channels_last)
            train_acc = correct.item() / (max(counted_pixels.item(), 1) if masks else seen)
            history.append(epoch=epoch + 1, train_loss=train_loss, train_acc=train_acc,
                           test_loss=test_loss, test_acc=test_acc,
                           lr=optimizer.param_groups[0]["lr"], epoch_time=epoch_time)
            if masks:
                history.append(test_miou=test_miou)
            if cfg.grad_clip is not None:
                history.append(grad_norm_max=norm_max.item(), grad_norm_mean=norm_sum.item() / max(steps, 1))
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.3f}")
            if checkpoint is not None:
                save_run(checkpoint, stateful, history, epoch + 1, _config_key(cfg), kind="fit", records=records,
                         loss_start=loss_start)
            if callback is not None:
                callback(epoch + 1, history)
    finally:
        bar.close()
        if teacher is not None:
            teacher.train(teacher_was_training)
    return history


def _check_segmentation_config(cfg: TrainConfig, teacher: nn.Module | None) -> None:
    # Options whose meaning on masks is not defined here: refused before the first step.
    if cfg.mixing != "none":
        raise ValueError(f"mixing={cfg.mixing!r} mixes image labels; it is not defined for segmentation masks: "
                         f"use mixing='none'")
    if teacher is not None or cfg.distill_weight > 0:
        raise ValueError("distillation is not supported for segmentation data; set distill_weight=0, no teacher")
    if cfg.tta_translate:
        raise ValueError(f"tta_translate={cfg.tta_translate} is not supported for segmentation (a shifted image "
                         f"would need its mask shifted); use 0 (tta_flip works)")


def _check_teacher(teacher: nn.Module | None, model: nn.Module, cfg: TrainConfig) -> None:
    if teacher is None:
        if cfg.distill_weight > 0:
            raise ValueError(f"config.distill_weight={cfg.distill_weight} needs a teacher: pass "
                             "fit(..., teacher=trained_network), or set distill_weight=0")
        return
    V.module("teacher", teacher)
    if teacher is model:
        raise ValueError("teacher is the model being trained; pass another, already trained network")
    if cfg.distill_weight == 0:
        raise ValueError("a teacher was given but config.distill_weight=0, so it would teach nothing; "
                         "set distill_weight (e.g. 0.5) and distill_temperature")

