"""How fast can CIFAR-10 be learned? A named recipe for :class:`~cnnlearn.models.speedrun.SpeedrunNet`.

The recipe puts together what fast CIFAR-10 training has found (airbench: Jordan, 2024,
arXiv:2404.00498, and its ablations; "Bag of Tricks": He et al., 2019), each idea as an
option of :func:`cnnlearn.fit` rather than a training loop of its own, so every chapter
can switch one on or off:

* a large batch (1024 on a GPU, as airbench; 512 on a CPU, where a batch of 1024 runs
  no faster per image and half as many steps learn less in a few epochs) and a large
  learning rate, scaled with the batch (the linear scaling rule), reached by a linear
  warm-up and decayed linearly (``schedule="linear"``);
* Nesterov SGD with momentum 0.85, and the BatchNorm shifts learning 64 times faster
  than the weights (``norm_lr_scale``, airbench's "bias scaler");
* label smoothing 0.2;
* lookahead on the weights (``lookahead``): the weights are pulled towards their
  running average, more strongly as training ends;
* the first convolution whitens 2x2 patches, fixed before training from the data
  (:meth:`SpeedrunNet.init_whitening`);
* random crops of at most 2 pixels, and flips that alternate: each image is mirrored in
  every other epoch (``DeviceLoader.alternate_flip``, airbench's "alternating flip");
* test-time augmentation over mirror images (``tta_flip``) and, on a GPU, copies shifted by
  one pixel (``tta_translate``), on the final evaluation only (``tta_final_only``), and no
  evaluation before the end (``eval_every``). On a CPU the shifted copies are left out:
  they triple the final evaluation (about 10 s of a 3-minute run on 2 cores) for a gain
  we could not tell from seed noise there;
* bfloat16 autocast and channels-last on CPUs that have bfloat16 in hardware
  (``precision="auto"``), mixed precision on a GPU.

Where we differ from airbench94, for simplicity: zero-padded crops (airbench pads by
reflection), a first layer without bias (airbench trains the whitening layer's bias for
3 epochs; with none, no gradient flows back through the 31x31 first layer at all, which
saves about a tenth of a CPU training step), no weight decay on BatchNorm shifts, a
schedule that decays to zero (airbench stops at 0.07 of the peak), and no ``torch.compile``.

On a GPU, :func:`speedrun` trains airbench94's widths (``speedrun_cifar``): airbench's
paper reports 94% in 3.29 seconds on one A100 (its title; 9.9 epochs). Our recipe is
that one less the details above; we have not measured it on a GPU. On a CPU it trains
the narrower ``speedrun_cifar_small``; ``make speedrun`` measures it.

:func:`speedrun` measures what matters for a reader: wall time from loading the data to
the final test accuracy, and when each accuracy target was first reached.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _validate as V
from .data import Data, load_data
from .budget import get_device
from .models import create_model
from .train import History, TrainConfig, fit

__all__ = ["SPEEDRUN_BATCH_SIZE", "speedrun_batch_size", "speedrun_config", "SpeedrunResult", "speedrun", "time_to"]

SPEEDRUN_BATCH_SIZE = 1024  # airbench's; the recipe's learning rate is stated for it


def speedrun_batch_size(device: str | torch.device | None = None) -> int:
    """The recipe's batch size on ``device`` (default :func:`cnnlearn.get_device`):
    airbench's 1024 on a GPU, 512 elsewhere (see the module's notes). Sized for the
    CPU's ``speedrun_cifar_small``; ``make speedrun`` trains the wide ``speedrun_cifar`` at
    airbench's 1024, where it reached 90% on our 2-core CPU (at 512 its epochs were slower,
    though the machine's speed also varied between those runs)."""
    return SPEEDRUN_BATCH_SIZE if get_device(device).type == "cuda" else SPEEDRUN_BATCH_SIZE // 2


def speedrun_config(epochs: int = 10, *, batch_size: int | None = None, device: str | torch.device | None = None,
                    **overrides) -> TrainConfig:
    """The speedrun recipe as a :class:`TrainConfig` for ``epochs`` epochs of batches of ``batch_size``.

    The learning rate and weight decay are airbench's, converted from its summed loss
    and decoupled decay to ``fit``'s mean loss and coupled decay: lr 1.5 at batch 1024,
    and a decay of 0.002 of every convolution and linear weight per step at the peak
    learning rate (airbench: lr 11.5 and decay 0.0153 "per 1024 examples", divided by
    ``1024 * (1 + 1 / (1 - momentum))``). Another batch size scales the learning rate
    linearly (the linear scaling rule: lr 0.75 at 512) and keeps the decay coefficient, so
    that the decay per epoch stays the same.

    Args:
        epochs: passes over the training set.
        batch_size: the training batch (default :func:`speedrun_batch_size` of ``device``).
        device: where it will train (default :func:`cnnlearn.get_device`): on a GPU the
            final evaluation adds one-pixel shifts to the mirror images.
        overrides: replace any field (e.g. ``lookahead=False`` to measure what lookahead is worth).
    """
    device = get_device(device)
    batch_size = speedrun_batch_size(device) if batch_size is None else V.positive_int("batch_size", batch_size)
    lr = 1.5 * batch_size / SPEEDRUN_BATCH_SIZE
    recipe = dict(
        epochs=epochs, optimizer="sgd", lr=lr, momentum=0.85, weight_decay=0.002 / 1.5,
        schedule="linear", warmup_epochs=round(0.23 * epochs, 3), label_smoothing=0.2,
        norm_lr_scale=64.0, lookahead=True, tta_flip=True, tta_translate=1 if device.type == "cuda" else 0,
        tta_final_only=True,
        eval_every=epochs,  # a speedrun evaluates once, at the end (10k test images cost ~8% of an epoch)
    )
    recipe.update(overrides)
    return TrainConfig(**recipe)


@dataclass
class SpeedrunResult:
    """What :func:`speedrun` measured.

    Attributes:
        history: the run's per-epoch record (test accuracy of the last epoch with TTA).
        wall: seconds from the start (before loading the data) to the end of each
            epoch's evaluation, one entry per epoch.
        load_seconds: the part of the first entry spent loading the data and
            initialising the network.
        model_name: the registered network trained.
        config: the recipe.
        network: the trained network (e.g. to evaluate further, or as a distillation teacher).
    """

    history: History
    wall: list[float] = field(default_factory=list)
    load_seconds: float = 0.0
    model_name: str = ""
    config: TrainConfig | None = None
    network: torch.nn.Module | None = None

    @property
    def final_test_acc(self) -> float:
        return self.history.final_test_acc

    def time_to(self, accuracy: float) -> float | None:
        """Seconds until the test accuracy first reached ``accuracy``, or None."""
        return time_to(self.history.test_acc, self.wall, accuracy)


def time_to(test_acc: list[float], wall: list[float], accuracy: float) -> float | None:
    """The first wall time at which ``test_acc`` reached ``accuracy`` (None if never)."""
    return next((t for a, t in zip(test_acc, wall) if a >= accuracy), None)


def speedrun(
    epochs: int = 10, *, model: str | None = None, config: TrainConfig | None = None,
    data: Data | None = None, batch_size: int | None = None, seed: int = 0,
    progress: bool = True, callback: Callable[[int, History], None] | None = None,
    teacher: torch.nn.Module | None = None, model_kwargs: dict | None = None,
) -> SpeedrunResult:
    """Train a network on CIFAR-10 with the speedrun recipe and time it from the start.

    Args:
        epochs: passes over the training set (the schedule is fitted to them).
        model: a registered network (default: ``speedrun_cifar`` on a CUDA GPU,
            ``speedrun_cifar_small`` elsewhere); a :class:`SpeedrunNet` gets its whitening
            stem initialised from the training images, any other network is trained as it is.
        config: the recipe (default :func:`speedrun_config` for ``epochs`` and the data's
            batch size and device).
        data: CIFAR-10 from :func:`cnnlearn.load_data` (loaded here, and timed, if None).
            The recipe's augmentation is set on it: crops of at most 2 pixels
            (``data.train.pad = 2``) and alternating flips (``data.train.alternate_flip``).
        batch_size: used when the data is loaded here (default :func:`speedrun_batch_size`).
        seed: seeds the data order, the augmentation and the network's initialisation.
        progress: show a progress bar.
        callback: passed on to :func:`cnnlearn.fit`.
        teacher: passed on to :func:`cnnlearn.fit`, for a ``config`` that distils
            (``distill_weight > 0``).
        model_kwargs: passed on to :func:`cnnlearn.create_model` (e.g.
            ``zero_init_residual=True`` for a ResNet).

    Returns:
        A :class:`SpeedrunResult`.
    """
    if model_kwargs is not None:
        V.instance("model_kwargs", model_kwargs, dict, "pass the network's arguments as a dict, e.g. "
                   "model_kwargs=dict(zero_init_residual=True)")
    start = time.perf_counter()
    if data is None:
        data = load_data("cifar10", batch_size=batch_size or speedrun_batch_size(), seed=seed)
    elif not isinstance(data, Data):
        raise ValueError(f"data must come from cnnlearn.load_data(...), got {type(data).__name__}")
    # airbench translates by at most 2 pixels; 4 (the usual CIFAR padding) is too much
    # augmentation for a run of a few epochs.
    data.train.pad = 2
    data.train.alternate_flip = True
    if model is None:
        model = "speedrun_cifar" if data.train.device.type == "cuda" else "speedrun_cifar_small"
    cfg = config if config is not None else speedrun_config(epochs, batch_size=data.train.batch_size,
                                                            device=data.train.device, seed=seed)
    torch.manual_seed(seed)
    net = create_model(model, num_classes=len(data.classes), **(model_kwargs or {}))
    if hasattr(net, "init_whitening"):
        net.to(data.train.device)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(data.train.num_samples, generator=g)[:5000].to(data.train.device)
        net.init_whitening(data.train.normalize(data.train.images[pick]))
    load_seconds = time.perf_counter() - start
    wall: list[float] = []

    def record(epoch: int, history: History) -> None:
        wall.append(time.perf_counter() - start)
        if callback is not None:
            callback(epoch, history)

    history = fit(net, data, cfg, progress=progress, callback=record, teacher=teacher)
    return SpeedrunResult(history, wall, load_seconds, model, dataclasses.replace(cfg), net)
