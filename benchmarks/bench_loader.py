"""Images per second: cnnlearn's device loader against torchvision's DataLoader.

Both pipelines deliver the same thing from the same CIFAR-10 images: shuffled batches
of 256 normalised float images, randomly cropped (4 pixels of padding) and flipped.

* torchvision: ``ImageFolder`` over the JPEG files + ``DataLoader`` with 2 workers and
  ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``: per-image
  decoding and transforms in Python, as most tutorials do it.
* cnnlearn: the images decoded once into a uint8 tensor on the device, batches cut,
  cropped and flipped with batched tensor operations.

The two are timed alternately in one run, and the medians of the repeats are compared,
so machine noise hits both alike. Needs CNNLEARN_DATA with an image-folder copy of
CIFAR-10 (``cifar10-jpeg/train/<class>/*.jpg``).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch


def _jpeg_root() -> Path | None:
    root = os.environ.get("CNNLEARN_DATA")
    if not root:
        return None
    for sub in ("cifar10-jpeg", "cifar10", ""):
        p = Path(root) / sub / "train"
        if p.is_dir():
            return p
    return None


def torchvision_rate(root: Path, batches: int, batch_size: int = 256) -> float:
    from torchvision import datasets, transforms as T

    from cnnlearn.data import DATASETS

    spec = DATASETS["cifar10"]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(spec.mean, spec.std)])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform=tf),
                                         batch_size=batch_size, shuffle=True, num_workers=2)
    it = iter(loader)
    next(it)  # start the workers before timing
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _y = next(it)
        n += len(x)
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


def cnnlearn_rate(data, epochs: int = 1) -> float:
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for x, _y in data.train:
            n += len(x)
    if data.train.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(repeats: int = 3) -> dict:
    import cnnlearn

    root = _jpeg_root()
    if root is None:
        print("bench_loader: skipped (set CNNLEARN_DATA to a folder with cifar10-jpeg/train)")
        return {}
    t0 = time.perf_counter()
    data = cnnlearn.load_data("cifar10", device="cpu", batch_size=256)
    load_s = time.perf_counter() - t0
    ours, theirs = [], []
    for _ in range(repeats):
        theirs.append(torchvision_rate(root, batches=30))
        ours.append(cnnlearn_rate(data))
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"cnnlearn loader (cpu):       {statistics.median(ours):>10,.0f} images/s "
          f"(one-off load of 60,000 decoded images from the cache: {load_s:.1f} s)")
    print(f"torchvision DataLoader (2w): {statistics.median(theirs):>10,.0f} images/s")
    print(f"loader_speedup_vs_dataloader: {ratio:.1f}")
    return {"loader_speedup_vs_dataloader": ratio}


if __name__ == "__main__":
    main()
