"""Training and evaluation: ``TrainConfig``, ``fit``, ``evaluate``, checkpoints.

One loop serves every chapter. It is written for the free Colab GPU as much as for a
laptop CPU: on CUDA it uses mixed precision (bfloat16 where supported, else float16
with loss scaling) and channels-last memory layout; everywhere it steps the learning
rate every batch, keeps weight decay off biases and normalisation parameters, and
saves an atomic checkpoint after every epoch so an interrupted run resumes exactly.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._io import restore_run, save_run
from .budget import get_device
from .data import Data, DeviceLoader

__all__ = ["TrainConfig", "History", "fit", "evaluate", "predict", "recalibrate_bn", "lr_multiplier"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are a sound recipe for CIFAR-10 from scratch."""

    epochs: int = 10  # passes over the training set
    optimizer: str = "sgd"  # "sgd" (with Nesterov momentum) or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW's beta1)
    weight_decay: float = 5e-4  # applied to weights only, never to biases or norm parameters
    schedule: str = "onecycle"  # "onecycle", "cosine" (linear warm-up, then cosine), "constant"
    warmup_epochs: float = 1.0  # warm-up length of the "cosine" schedule
    label_smoothing: float = 0.0  # 0.1 in "Bag of Tricks"
    amp: bool = True  # mixed precision; only on CUDA
    channels_last: bool = True  # NHWC memory layout, faster convolutions on tensor cores; only on CUDA
    tta_flip: bool = False  # test-time augmentation: average the logits of an image and its mirror
    grad_clip: float | None = None  # clip the gradient norm to this, if set
    seed: int = 0  # seeds the model-independent randomness (dropout) of the run

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {self.schedule!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1)")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclass
class History:
    """Per-epoch record of a run (lists of equal length, one entry per epoch)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate at the end of the epoch
    epoch_time: list[float] = field(default_factory=list)  # seconds of training (evaluation excluded)

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
        return (f"History({len(self.epoch)} epochs: train loss {self.train_loss[-1]:.3f}, "
                f"test accuracy {self.test_acc[-1]:.2%}, {sum(self.epoch_time):.0f} s)")


def lr_multiplier(schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning rate at ``step`` as a fraction of the peak.

    * ``onecycle`` (Smith & Topin 2017): a linear rise from 1/25 of the peak over the
      first 25% of the steps, then a cosine decay to zero.
    * ``cosine`` (Loshchilov & Hutter 2017, with the linear warm-up of Goyal et al.
      2017): linear from 0 over ``warmup_steps``, then a cosine decay to zero.
    * ``constant``: always the peak.
    """
    if schedule == "constant":
        return 1.0
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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay only weights of convolutions and linear layers (ndim > 1): decaying biases
    # and BatchNorm scales/shifts regularises nothing useful ("Bag of Tricks", Sec. 3.1).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def _amp_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype | None:
    if not (cfg.amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _config_key(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DeviceLoader, *, tta_flip: bool = False, amp: bool = True,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``loader``, in eval mode.

    Args:
        model: the network, on the loader's device.
        loader: batches ``(x, y)``.
        tta_flip: average the logits of each image and its left-right mirror.
        amp: autocast on CUDA.
        channels_last: NHWC inputs (match the model's memory format).

    Returns:
        ``(loss, accuracy)``, accuracy in [0, 1].
    """
    logits, labels = predict(model, loader, tta_flip=tta_flip, amp=amp, channels_last=channels_last)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


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
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    if batches is not None and batches < 1:
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


@torch.no_grad()
def predict(
    model: nn.Module, loader: DeviceLoader, *, tta_flip: bool = False, amp: bool = True,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels (CPU) of every batch of ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    device = loader.device
    dtype = _amp_dtype(device, TrainConfig(amp=amp))
    outs, labels = [], []
    try:
        for x, y in loader:
            x = _prepare_input(x, channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(x)
                if tta_flip:
                    out = (out + model(x.flip(3))) / 2
            outs.append(out.float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def fit(
    model: nn.Module, data: Data, config: TrainConfig = TrainConfig(), *,
    checkpoint: str | Path | None = None, progress: bool = True,
    callback: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` on ``data`` and evaluate it on the test split after every epoch.

    Args:
        model: the network; it is moved to the data's device (and to channels-last on CUDA).
        data: from :func:`cnnlearn.load_data`.
        config: the recipe.
        checkpoint: a file path. After every epoch the run's full state is written there
            atomically; if the file exists when ``fit`` starts with the same config, the
            run resumes from it and finishes exactly as an uninterrupted run would.
        progress: show a progress bar (a widget in notebooks, text in terminals).
        callback: called as ``callback(epoch, history)`` after every epoch.

    Returns:
        The :class:`History` of every epoch, including those before a resume.

    Raises:
        ValueError: ``data`` does not come from :func:`cnnlearn.load_data`.
        FloatingPointError: the training loss became NaN or infinite.
        CorruptFileError: the checkpoint file exists but cannot be read.
        CheckpointMismatchError: the checkpoint belongs to a run with another config.
    """
    if not isinstance(data, Data):
        raise ValueError("data must come from cnnlearn.load_data(...)")
    cfg = config
    device = data.train.device
    channels_last = cfg.channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(device, cfg)
    # float16 needs loss scaling to keep small gradients from underflowing; bfloat16 does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    steps_per_epoch = len(data.train)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(cfg.schedule, s, total_steps, warmup_steps))
    history = History()
    start_epoch = 0
    torch.manual_seed(cfg.seed)

    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    if checkpoint is not None and Path(checkpoint).is_file():
        state = restore_run(checkpoint, stateful, _config_key(cfg))
        history = History(**state["history"])
        start_epoch = state["epoch"]
        if start_epoch >= cfg.epochs:
            return history

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc=type(model).__name__, unit="batch", leave=True)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            data.train.epoch = epoch  # the loader's randomness is a function of (seed, epoch)
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            for x, y in data.train:
                x = _prepare_input(x, channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = model(x)
                    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                # Accumulate on the device: a .item() per batch would wait for the GPU.
                loss_sum += loss.detach().float() * len(y)
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
                bar.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_time = time.perf_counter() - t0
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning "
                    f"rate (now {cfg.lr}) or add grad_clip")
            test_loss, test_acc = evaluate(model, data.test, tta_flip=cfg.tta_flip,
                                           amp=cfg.amp, channels_last=channels_last)
            history.append(epoch=epoch + 1, train_loss=train_loss, train_acc=correct.item() / seen,
                           test_loss=test_loss, test_acc=test_acc,
                           lr=optimizer.param_groups[0]["lr"], epoch_time=epoch_time)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.3f}")
            if checkpoint is not None:
                save_run(checkpoint, stateful, history, epoch + 1, _config_key(cfg))
            if callback is not None:
                callback(epoch + 1, history)
    finally:
        bar.close()
    return history

