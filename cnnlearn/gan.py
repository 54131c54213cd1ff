"""Training a GAN: ``GANConfig``, ``fit_gan``, the two update steps, sampling, latent walks.

The game (Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014,
arXiv:1406.2661): the discriminator D ascends ``log D(x) + log(1 - D(G(z)))``; the
generator G descends ``log(1 - D(G(z)))`` ("minimax") or, as recommended in the same
paper (Sec. 3) because that loss has no gradient while D confidently rejects G's early
samples, ascends ``log D(G(z))`` ("nonsaturating", the default). Both are written as
binary cross-entropy on D's logits. The optimiser settings are DCGAN's (Radford et al.
2016, arXiv:1511.06434, Sec. 4): Adam, learning rate 2e-4, beta1 = 0.5.

Images must be in [-1, 1], the range of the generator's ``tanh``. cnnlearn's
:class:`~cnnlearn.data.DeviceLoader` yields images normalised by the dataset's mean and
standard deviation instead; pass ``preprocess=to_gan_range(data.train)`` to
:func:`fit_gan` to map them back (and build that loader with ``augment=False``: random
crops fill their borders with black pixels, which a generator would then learn to draw).

Arithmetic: float32 by default, unlike :func:`cnnlearn.fit`. ``GANConfig(precision="auto",
channels_last=True)`` opts into the faster trainer's bfloat16 autocast (where the device
computes bfloat16 natively: CUDA from Ampere on, CPUs with ``avx512_bf16`` or AMX) and the
NHWC memory layout. bfloat16 has float32's exponent range, so it needs no loss scaler;
float16 would need two (one per adversarial loss) and add overflow to the instabilities a
reader already has to diagnose, so it is not offered. The losses are computed in float32
either way. On the CPU a run is bit-for-bit reproducible across a resume in both arithmetics.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _validate as V
from ._io import architecture, loader_record, restore_run, save_run
from .budget import get_device
from .train import _use_channels_last, resolve_precision

__all__ = [
    "GANConfig", "GANHistory", "fit_gan", "discriminator_step", "generator_step",
    "latent", "sample", "interpolate", "to_uint8", "image_grid", "to_gan_range", "autocast_dtype",
]

GAN_LOSSES = ("nonsaturating", "minimax")
GAN_PRECISIONS = ("fp32", "auto", "bf16")  # no "fp16": it would need a loss scaler per network


@dataclass(frozen=True)
class GANConfig:
    """How to train a GAN. The defaults are DCGAN's recipe (Radford et al. 2016, Sec. 4)."""

    epochs: int = 5  # passes over the loader
    nz: int = 100  # latent size; must equal the generator's
    lr: float = 2e-4  # Adam learning rate of both networks (DCGAN: 0.001 was too high)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas; DCGAN: beta1 = 0.9 oscillated, 0.5 steadied training
    loss: str = "nonsaturating"  # generator loss: "nonsaturating" -log D(G(z)), or "minimax" log(1 - D(G(z)))
    # Discriminator updates per generator update (k in Goodfellow et al. 2014, Alg. 1). They
    # reuse the batch's real images with fresh noise (Alg. 1 draws fresh real images too), so
    # an epoch stays one pass over the loader and the history one entry per batch.
    d_steps: int = 1
    seed: int = 0  # seeds the noise of the run, the fixed noise, and the global RNG (loader shuffles)
    n_fixed: int = 64  # fixed latent vectors whose samples are kept in the history as the run goes
    sample_every: int = 1  # keep a sample grid every this many epochs (and before training and at the end)
    # "fp32"; "auto": bfloat16 autocast where the device has native bfloat16, else float32;
    # "bf16": bfloat16 autocast, refused where it would be emulated (see cnnlearn.train.resolve_precision)
    precision: str = "fp32"
    channels_last: bool = False  # NHWC layout for both networks and the images (CUDA and CPU; ignored elsewhere)

    def __post_init__(self) -> None:
        V.check_fields(self, _GAN_RULES)  # every field, from the table below the class


# How each GANConfig field is checked (cnnlearn/_validate.py); a new field needs an entry,
# and tests/test_validation.py fails for a field without one.
_GAN_RULES = {
    "epochs": V.positive_int,
    "nz": V.positive_int,
    "lr": V.positive_float,
    "betas": V.betas,
    "loss": V.choice(*GAN_LOSSES),
    "d_steps": V.positive_int,
    "seed": V.seed,
    "n_fixed": V.positive_int,
    "sample_every": V.positive_int,
    "precision": V.choice(*GAN_PRECISIONS),
    "channels_last": V.boolean,
}


@dataclass
class GANHistory:
    """Record of a GAN run.

    A *step* is one loader batch: ``d_steps`` discriminator updates, then one generator
    update. The per-step lists have one entry per step; ``epoch_end[i]`` is the number of
    steps done when epoch ``epoch[i]`` ended. ``samples[i]`` is the grid of the fixed
    noise's images after epoch ``sample_epochs[i]`` (0: before training), a uint8 CPU
    tensor ``(3, H, W)`` ready for ``plt.imshow(grid.permute(1, 2, 0))``.
    """

    d_loss: list[float] = field(default_factory=list)  # -log D(x) - log(1 - D(G(z))), before D's update
    g_loss: list[float] = field(default_factory=list)  # the generator's loss, before G's update
    d_real: list[float] = field(default_factory=list)  # mean D(x) on the real batch: should fall from ~1 towards 1/2
    d_fake: list[float] = field(default_factory=list)  # mean D(G(z)) on the D step's fakes: should rise towards 1/2
    epoch: list[int] = field(default_factory=list)  # epochs completed
    epoch_end: list[int] = field(default_factory=list)  # steps done at the end of each epoch
    epoch_time: list[float] = field(default_factory=list)  # seconds of training per epoch (sampling excluded)
    sample_epochs: list[int] = field(default_factory=list)
    samples: list[torch.Tensor] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    def epoch_mean(self, name: str) -> list[float]:
        """Per-epoch means of a per-step series (``"d_loss"``, ``"g_loss"``, ``"d_real"``, ``"d_fake"``)."""
        if name not in ("d_loss", "g_loss", "d_real", "d_fake"):
            raise ValueError(f"name must be one of 'd_loss', 'g_loss', 'd_real', 'd_fake'; got {name!r}")
        values, starts = getattr(self, name), [0] + self.epoch_end[:-1]
        return [sum(values[a:b]) / (b - a) for a, b in zip(starts, self.epoch_end)]

    def __repr__(self) -> str:
        if not self.epoch:
            return "GANHistory(empty)"
        return (f"GANHistory({len(self.epoch)} epochs, {len(self.d_loss)} steps: last epoch "
                f"D loss {self.epoch_mean('d_loss')[-1]:.3f}, G loss {self.epoch_mean('g_loss')[-1]:.3f}, "
                f"D(x) {self.epoch_mean('d_real')[-1]:.2f}, D(G(z)) {self.epoch_mean('d_fake')[-1]:.2f})")


# --------------------------------------------------------------------------- one update each


def _autocast(device: torch.device, dtype: torch.dtype | None):
    # Autocast around the forward passes only: backward runs outside it, as PyTorch advises.
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def discriminator_step(
    generator: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
    real: torch.Tensor, z: torch.Tensor, *, autocast: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One update of D: descend ``-log D(x) - log(1 - D(G(z)))``.

    Real and fake images go through D in separate batches, so each BatchNorm batch is
    all real or all fake, as in the DCGAN reference code.

    Args:
        generator: G, in the mode the caller chose (train mode while training).
        discriminator: D, returning logits ``(B,)``.
        optimizer: D's optimizer.
        real: a batch of real images in [-1, 1].
        z: latent vectors for the fake batch.
        autocast: run the forward passes under autocast to this dtype (``torch.bfloat16``);
            None (the default): float32. The loss is computed in float32 either way.

    Returns:
        Detached 0-dim tensors measured *before* the update: ``d_loss``, ``d_real``
        (mean D(x)) and ``d_fake`` (mean D(G(z))).
    """
    with torch.no_grad(), _autocast(real.device, autocast):  # D's update needs no gradient through G
        fake = generator(z)
    with _autocast(real.device, autocast):
        real_logits = discriminator(real).float()  # (B,)
        fake_logits = discriminator(fake).float()
    loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"d_loss": loss.detach(), "d_real": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach()).mean()}


def generator_step(
    generator: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
    z: torch.Tensor, loss: str = "nonsaturating", *, autocast: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One update of G against the current D.

    Args:
        generator: G.
        discriminator: D, returning logits ``(B,)``.
        optimizer: G's optimizer.
        z: latent vectors.
        loss: ``"nonsaturating"``: descend ``-log D(G(z))``; ``"minimax"``: descend
            ``log(1 - D(G(z)))`` (negative, and flat while D rejects G's samples).
        autocast: as in :func:`discriminator_step`.

    Returns:
        Detached 0-dim tensors measured before the update: ``g_loss`` and ``d_fake``.
    """
    if loss not in GAN_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, GAN_LOSSES))}, got {loss!r}")
    with _autocast(z.device, autocast):
        logits = discriminator(generator(z)).float()  # (B,)
    if loss == "nonsaturating":
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))  # -log sigmoid(l)
    else:
        g_loss = -F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))  # log(1 - sigmoid(l))
    optimizer.zero_grad(set_to_none=True)
    # D's parameters receive gradients here too; discriminator_step clears them
    # (zero_grad) before its own update, so they never leak into D's step.
    g_loss.backward()
    optimizer.step()
    return {"g_loss": g_loss.detach(), "d_fake": torch.sigmoid(logits.detach()).mean()}


# --------------------------------------------------------------------------- the loop


def _images(batch, preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
            device: torch.device) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch  # (images, labels) or images
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("the loader must yield image tensors (B, C, H, W) or (images, labels) pairs, "
                         f"got {type(x).__name__}{'' if not isinstance(x, torch.Tensor) else tuple(x.shape)}")
    x = x.to(device, non_blocking=True)
    return preprocess(x) if preprocess is not None else x


def _noise_generator(device: torch.device, seed: int) -> torch.Generator:
    # A generator of its own on the device: the noise of the run does not depend on who
    # else draws from the global RNG, and no host-to-device copy stalls a GPU every step.
    return torch.Generator(device=device).manual_seed(seed)


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype :func:`fit_gan` uses for ``GANConfig.precision`` on ``device``
    (None: float32), to pass as ``autocast=`` to :func:`discriminator_step` and
    :func:`generator_step` in a loop of one's own.

    :func:`cnnlearn.train.resolve_precision`'s answer, except that ``"auto"`` never picks
    float16 (GPUs before Ampere): float16 would need a loss scaler per network, so those
    GPUs train in float32.

    Raises:
        ValueError: ``precision`` is not one of ``"fp32"``, ``"auto"``, ``"bf16"``, or
            ``"bf16"`` where the device would only emulate it.
    """
    V.one_of("precision", precision, GAN_PRECISIONS)
    dtype = resolve_precision(precision, torch.device(device))
    return None if dtype == torch.float16 else dtype


def _config_key(cfg: GANConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(d["betas"])  # compare as a list whatever the file format returns
    return d


def fit_gan(
    generator: nn.Module, discriminator: nn.Module, loader: Iterable, config: GANConfig = GANConfig(), *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | torch.device | None = None, checkpoint: str | Path | None = None,
    progress: bool = True, callback: Callable[[int, GANHistory], None] | None = None,
) -> GANHistory:
    """Train a GAN: per batch, ``config.d_steps`` updates of D, then one update of G.

    Args:
        generator: G, mapping ``(B, nz)`` noise to images in [-1, 1].
        discriminator: D, mapping images to logits ``(B,)``.
        loader: re-iterable batches, each ``(images, labels)`` or ``images`` (labels are
            ignored). If it has an ``epoch`` attribute (cnnlearn's ``DeviceLoader``) it is
            set before each epoch, so a resumed run sees the same batches.
        config: the recipe.
        preprocess: applied to each image batch on the device; must return images in
            [-1, 1]. Use :func:`to_gan_range` for a cnnlearn loader. Default: none.
        device: where to train; default the loader's ``device`` attribute if it has one,
            else :func:`cnnlearn.budget.get_device`.
        checkpoint: a file path. After every epoch both networks, both optimizers, the
            history, the epoch and the random states are written there atomically; if the
            file exists when ``fit_gan`` starts with the same config, the run resumes and
            finishes as the uninterrupted run would (bit for bit on the CPU).
        progress: show a progress bar.
        callback: called as ``callback(epoch, history)`` after every epoch (after the checkpoint).

    Returns:
        The :class:`GANHistory` of the run, including the epochs before a resume.

    Raises:
        ValueError: a bad argument (checked before the first update): bad config,
            ``config.nz`` differs from the generator's, the checkpoint path cannot be
            written, ``config.precision`` asks for bfloat16 where the device would only
            emulate it, the loader is empty, its images are not in [-1, 1], or the networks
            do not fit them (the generator draws another shape, the discriminator does
            not return one logit per image).
        FloatingPointError: a loss became NaN or infinite, or diverged: an epoch's mean
            D or G loss beyond 100 nats (logits beyond +-100, where float32's sigmoid
            is exactly 0 or 1 and no gradient flows). The checkpoint keeps the last
            epoch before it.
        CorruptFileError: the checkpoint file exists but is not a ``fit_gan`` checkpoint.
        CheckpointMismatchError: the checkpoint belongs to a run with another config,
            other data or other networks.
    """
    generator, discriminator = V.trainable("generator", generator), V.trainable("discriminator", discriminator)
    loader, cfg = V.batches("loader", loader), V.instance("config", config, GANConfig)
    preprocess, callback = V.function("preprocess", preprocess), V.function("callback", callback)
    checkpoint = None if checkpoint is None else V.writable_file("checkpoint", checkpoint)
    V.boolean("progress", progress)
    g_nz = getattr(generator, "nz", cfg.nz)
    if g_nz != cfg.nz:
        raise ValueError(f"config.nz={cfg.nz} but the generator takes nz={g_nz}; pass GANConfig(nz={g_nz})")
    if device is None and isinstance(getattr(loader, "device", None), torch.device):
        device = loader.device
    device = get_device(device)
    amp_dtype = autocast_dtype(cfg.precision, device)  # before moving: a refused precision changes nothing
    channels_last = _use_channels_last(device, cfg.channels_last)
    generator.to(device)
    discriminator.to(device)
    if channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
    torch.manual_seed(cfg.seed)
    noise = _noise_generator(device, cfg.seed + 1)  # + 1: a stream apart from the fixed noise's
    fixed_z = latent(cfg.n_fixed, cfg.nz, seed=cfg.seed, device=device)
    history = GANHistory()
    start_epoch = 0

    stateful = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d}
    records = {"data": loader_record(loader),  # a resume must match the data, the networks and the arithmetic
               "architecture": {"generator": architecture(generator), "discriminator": architecture(discriminator)},
               "autocast": str(amp_dtype)}
    if checkpoint is not None and checkpoint.is_file():
        state = restore_run(checkpoint, stateful, _config_key(cfg), extra_keys=("noise_rng", "noise_device"),
                            kind="fit_gan", records=records)
        history = GANHistory(**state["history"])
        start_epoch = state["epoch"]
        if state["noise_device"] == device.type:
            noise.set_state(state["noise_rng"])
        else:  # a generator's state only fits a generator of the same device type
            noise.manual_seed(cfg.seed + 1 + start_epoch)
            warnings.warn(f"checkpoint written on {state['noise_device']}, resumed on {device.type}: "
                          "the noise stream is reseeded, so the run continues but not bit for bit")
        if start_epoch >= cfg.epochs:
            return history
    else:  # a fresh run: keep what the untrained generator draws, as epoch 0
        history.sample_epochs.append(0)
        history.samples.append(image_grid(_generate(generator, fixed_z)))

    from tqdm.auto import tqdm

    steps_per_epoch = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(total=steps_per_epoch and cfg.epochs * steps_per_epoch,
               initial=(steps_per_epoch or 0) * start_epoch, disable=not progress,
               desc=f"{type(generator).__name__} vs {type(discriminator).__name__}", unit="batch")
    range_checked = False
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if hasattr(loader, "epoch"):
                loader.epoch = epoch  # cnnlearn's loader draws its order from (seed, epoch)
            generator.train()
            discriminator.train()
            t0 = time.perf_counter()
            stats = []  # one (4,) tensor per step, kept on the device: .item() per step would stall a GPU
            for batch in loader:
                real = _images(batch, preprocess, device)
                if channels_last:
                    real = real.contiguous(memory_format=torch.channels_last)
                if not range_checked:  # once per run: the commonest mistake is normalised images
                    lo, hi = real.min().item(), real.max().item()
                    if lo < -1.001 or hi > 1.001:
                        raise ValueError(
                            f"real images must be in [-1, 1] (the generator's tanh range), got [{lo:.2f}, {hi:.2f}]; "
                            "for a cnnlearn loader pass preprocess=to_gan_range(loader)")
                    V.check_gan_pair(generator, discriminator, real, cfg.nz)
                    range_checked = True
                for _ in range(cfg.d_steps):  # fresh noise each time; the real batch is reused
                    z = torch.randn(len(real), cfg.nz, device=device, generator=noise)
                    d = discriminator_step(generator, discriminator, opt_d, real, z, autocast=amp_dtype)
                z = torch.randn(len(real), cfg.nz, device=device, generator=noise)
                g = generator_step(generator, discriminator, opt_g, z, cfg.loss, autocast=amp_dtype)
                stats.append(torch.stack([d["d_loss"], g["g_loss"], d["d_real"], d["d_fake"]]))
                bar.update()
            if not stats:
                raise ValueError("the loader yielded no batches")
            values = torch.stack(stats).float().cpu()  # (steps, 4)
            epoch_time = time.perf_counter() - t0  # .cpu() above waited for the device
            if not torch.isfinite(values).all():
                raise FloatingPointError(
                    f"a GAN loss became NaN or infinite in epoch {epoch + 1}: lower the learning rate "
                    f"(now {cfg.lr}) or check that the images are in [-1, 1]")
            d_loss, g_loss, d_real, d_fake = values.T.tolist()
            for what, losses in (("the discriminator's loss", d_loss), ("the generator's loss", g_loss)):
                # floor 10 nats: the guard fires beyond 100 nats (see check_loss and Raises above)
                V.check_loss(sum(losses) / len(losses), epoch + 1, start=None, floor=10.0, what=what,
                             fix=f"lower the learning rate (now {cfg.lr}) or check that the images are in [-1, 1]")
            history.d_loss += d_loss
            history.g_loss += g_loss
            history.d_real += d_real
            history.d_fake += d_fake
            history.epoch.append(epoch + 1)
            history.epoch_end.append(len(history.d_loss))
            history.epoch_time.append(epoch_time)
            if (epoch + 1) % cfg.sample_every == 0 or epoch + 1 == cfg.epochs:
                history.sample_epochs.append(epoch + 1)
                history.samples.append(image_grid(_generate(generator, fixed_z)))
            bar.set_postfix(d_loss=f"{sum(d_loss) / len(d_loss):.3f}", g_loss=f"{sum(g_loss) / len(g_loss):.3f}")
            if checkpoint is not None:
                save_run(checkpoint, stateful, history, epoch + 1, _config_key(cfg), kind="fit_gan", records=records,
                         noise_rng=noise.get_state(), noise_device=device.type)
            if callback is not None:
                callback(epoch + 1, history)
    finally:
        bar.close()
    return history



# --------------------------------------------------------------------------- using a generator


def latent(n: int, nz: int, seed: int = 0, device: str | torch.device | None = None) -> torch.Tensor:
    """``n`` standard-normal latent vectors ``(n, nz)``, drawn on the CPU from ``seed`` (so
    the same on every device) and moved to ``device`` (default: the CPU)."""
    if not (isinstance(n, int) and n >= 1 and isinstance(nz, int) and nz >= 1):
        raise ValueError(f"n and nz must be positive ints, got n={n!r}, nz={nz!r}")
    V.seed("seed", seed)
    z = torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))
    return z.to(device) if device is not None else z


@torch.no_grad()
def _generate(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    # Eval mode: BatchNorm uses its running statistics, so an image depends on its own z
    # only (not on the other vectors in the batch) and sampling changes no buffer.
    was_training = generator.training
    generator.eval()
    try:
        return generator(z).float().cpu()
    finally:
        generator.train(was_training)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def sample(generator: nn.Module, n: int = 64, nz: int | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` images from the generator for the latent vectors :func:`latent` draws from ``seed``.

    Args:
        generator: G (its mode is restored afterwards).
        n: how many images.
        nz: latent size; default the generator's ``nz`` attribute.
        seed: picks the latent vectors; the same seed gives the same images.

    Returns:
        Float images ``(n, C, H, W)`` in [-1, 1] on the CPU; :func:`to_uint8` makes them
        displayable with :func:`cnnlearn.viz.show_images`.
    """
    generator, n, seed = V.module("generator", generator), V.positive_int("n", n), V.seed("seed", seed)
    nz = V.positive_int("nz", nz) if nz is not None else getattr(generator, "nz", None)
    if nz is None:
        raise ValueError("nz is needed: the generator has no nz attribute")
    return _generate(generator, latent(n, nz, seed, device=_device_of(generator)))


def interpolate(generator: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8,
                spherical: bool = False) -> torch.Tensor:
    """Images along a path from ``z0`` to ``z1``, endpoints included ("walking in the latent
    space", Radford et al. 2016, Sec. 6.1): smooth changes mean G has not memorised images.

    Args:
        generator: G.
        z0: a latent vector ``(nz,)`` (or ``(1, nz)``).
        z1: another.
        steps: images on the path, >= 2.
        spherical: follow the great circle (slerp) instead of the straight line. Points
            on the line between two Gaussian vectors are shorter than typical samples;
            slerp keeps the norm (White, "Sampling Generative Networks", arXiv:1609.04468).

    Returns:
        Float images ``(steps, C, H, W)`` in [-1, 1] on the CPU.
    """
    if V.integer("steps", steps) < 2:
        raise ValueError(f"steps must be an int >= 2 (the two endpoints included), got {steps!r}")
    generator, spherical = V.module("generator", generator), V.boolean("spherical", spherical)
    z0, z1 = (V.tensor(n, z).detach().reshape(-1).float().cpu() for n, z in (("z0", z0), ("z1", z1)))
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same size, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    for n, z in (("z0", z0), ("z1", z1)):
        if not torch.isfinite(z).all():
            raise ValueError(f"{n} holds NaN or infinite values; draw it with cnnlearn.gan.latent(...)")
        if spherical and z.norm() == 0:
            raise ValueError(f"{n} is the zero vector, which has no direction to follow on a great circle; "
                             f"use spherical=False or a nonzero vector such as latent(1, nz)[0]")
    t = torch.linspace(0, 1, steps)[:, None]  # (steps, 1)
    if spherical:
        omega = torch.arccos(torch.clamp(torch.dot(z0 / z0.norm(), z1 / z1.norm()), -1, 1))
        if omega.abs() < 1e-6:  # (anti)parallel vectors: the straight line is the arc
            zs = (1 - t) * z0 + t * z1
        else:
            zs = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
    else:
        zs = (1 - t) * z0 + t * z1  # (steps, nz)
    return _generate(generator, zs.to(_device_of(generator)))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] on the CPU (values outside are clipped)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """One uint8 grid image ``(3, H, W)`` of a batch in [-1, 1] (grey images become RGB).

    Args:
        images: ``(N, C, H, W)`` floats in [-1, 1].
        nrow: images per row; default a near-square grid.
        padding: pixels between images.
    """
    from torchvision.utils import make_grid

    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return make_grid(to_uint8(images), nrow=nrow, padding=padding)


def to_gan_range(loader) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``preprocess`` for :func:`fit_gan` that maps a cnnlearn loader's normalised
    images back to [-1, 1].

    Args:
        loader: a :class:`cnnlearn.data.DeviceLoader` (anything with ``denormalize``, which
            returns images in [0, 1]).
    """
    if not callable(getattr(loader, "denormalize", None)):
        raise ValueError("loader must have a denormalize() method (cnnlearn's DeviceLoader, e.g. data.train)")
    return lambda x: loader.denormalize(x) * 2 - 1  # [0, 1] -> [-1, 1]
