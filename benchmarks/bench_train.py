"""Training throughput: ``fit``'s fast path against plain float32, side by side.

For each network, two identical ``fit`` runs on the same synthetic CIFAR-sized batches:

* ``fp32``: ``TrainConfig(precision="fp32", channels_last=False)``, what ``fit`` did on a
  CPU before the fast path;
* ``fast``: the defaults, ``precision="auto"`` and ``channels_last=True`` (bfloat16
  autocast and NHWC on a CPU with native bfloat16, mixed precision on a GPU).

Each round times one epoch of each (after a warm-up epoch, so oneDNN's kernel choice is
not timed), alternating which goes first; the ratio of the median epoch times is
printed as ``train_speedup_cpu_fast_vs_fp32`` (``..._gpu_...`` on a GPU). Synthetic data:
the speed of a training step does not depend on what the images show.
"""
from __future__ import annotations

import statistics

import torch

import cnnlearn
from cnnlearn.data import Data, DeviceLoader
from cnnlearn.train import TrainConfig, fit, resolve_precision

MODELS = ["resnet20", "alexnet_cifar", "speedrun_cifar_small"]


def _synthetic_cifar(n: int, batch_size: int, device: torch.device) -> Data:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = (torch.arange(n) % 10).to(device)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    train = DeviceLoader(images, labels, batch_size, mean, std, shuffle=True, augment=True, drop_last=True)
    test = DeviceLoader(images[:batch_size], labels[:batch_size], batch_size, mean, std)
    return Data("synthetic", train, test, tuple(map(str, range(10))), mean, std, source="random bytes")


def _epoch_seconds(name: str, data: Data, **config) -> float:
    torch.manual_seed(0)
    model = cnnlearn.create_model(name, num_classes=10)
    if hasattr(model, "init_whitening"):  # the speedrun network's fixed first layer
        model.init_whitening(data.train.normalize(data.train.images[:512]))
    history = fit(model, data, TrainConfig(epochs=2, lr=0.02, **config), progress=False)
    return history.epoch_time[-1]  # the second epoch: oneDNN has chosen its kernels


def main(rounds: int = 3, steps: int = 8, batch_size: int = 256) -> dict:
    device = cnnlearn.get_device()
    kind = "gpu" if device.type == "cuda" else "cpu"
    fast_dtype = resolve_precision("auto", device)
    print(f"training throughput on {device} (batch {batch_size}, {steps} steps an epoch, median of {rounds}); "
          f"fast path: {fast_dtype or torch.float32} autocast, channels_last")
    data = _synthetic_cifar(steps * batch_size, batch_size, device)
    variants = {"fp32": dict(precision="fp32", channels_last=False), "fast": dict(precision="auto", channels_last=True)}
    results = {}
    for name in MODELS:
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for k in order:
                times[k].append(_epoch_seconds(name, data, **variants[k]))
        rate = {k: steps * batch_size / statistics.median(v) for k, v in times.items()}
        ratio = rate["fast"] / rate["fp32"]
        results[name] = ratio
        print(f"{name:<22} fp32 NCHW {rate['fp32']:7.0f} img/s   fast {rate['fast']:7.0f} img/s   "
              f"train_speedup_{kind}_fast_vs_fp32: {ratio:.2f}")
    return results


if __name__ == "__main__":
    main()
