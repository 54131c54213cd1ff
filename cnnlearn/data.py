"""Datasets as whole tensors on the training device, and a loader that augments on it.

CIFAR-10 is 50,000 images of 3x32x32 bytes: 150 MB as uint8, small enough to keep on a
GPU (or in RAM) for the whole run. Decoding JPEGs or unpickling batches once, then
cropping and flipping whole batches with tensor ops, removes the per-image Python work
of a ``Dataset`` + ``DataLoader`` pipeline (see ``benchmarks/bench_loader.py``).

Where the data comes from, in order:

1. ``$CNNLEARN_DATA``: a folder holding torchvision's ``cifar-10-batches-py``, or an
   image-folder tree ``{train,test}/<class>/*.jpg`` (e.g. ``cifar10-jpeg/``), or
   Fashion-MNIST's IDX files (``fashion-mnist/``, gzip-compressed or not).
   Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) is
   looked at too.
2. The user cache (``$CNNLEARN_CACHE``, else ``$XDG_CACHE_HOME/cnnlearn``, else
   ``~/.cache/cnnlearn``), where earlier downloads live.
3. A torchvision download into that cache.

Whatever the source, the decoded uint8 tensors are cached once in the user cache,
validated when read, rebuilt when corrupt, and written atomically.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as V
from ._io import CorruptFileError, atomic_save, safe_load
from .budget import get_device

__all__ = [
    "DATASETS", "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "DataNotFoundError", "ImageSet",
    "Data", "DeviceLoader", "load_images", "load_data", "balanced_subset", "sample_images", "cache_dir",
    "random_crop", "random_flip", "augment_batch", "augment_with_masks", "MASK_DATASETS", "dominant_class",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class _Spec:
    classes: tuple[str, ...]
    shape: tuple[int, int, int]  # (C, H, W) of one image
    sizes: dict  # images per split
    mean: tuple[float, ...]  # per-channel mean of the training images, in [0, 1]
    std: tuple[float, ...]  # per-channel standard deviation of the training images
    pad: int  # padding of the random-crop augmentation
    flip: bool  # whether horizontal flips preserve the label's meaning


DATASETS = {
    # Statistics of the original training sets (torchvision's CIFAR-10 and Fashion-MNIST).
    "cifar10": _Spec(CIFAR10_CLASSES, (3, 32, 32), {"train": 50_000, "test": 10_000},
                     (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), pad=4, flip=True),
    "fashion_mnist": _Spec(FASHION_MNIST_CLASSES, (1, 28, 28), {"train": 60_000, "test": 10_000},
                           (0.2860,), (0.3530,), pad=2, flip=True),
    # Segmentation scenes composed from the two (cnnlearn.scenes): labels are masks
    # (N, 64, 64), 0 = background, 1..10 = garments. Normalised with CIFAR-10's statistics,
    # the backgrounds'. No crop augmentation (pad 0): flips move the mask with the image.
    "scenes": _Spec(("background", *FASHION_MNIST_CLASSES), (3, 64, 64), {"train": 10_000, "test": 2_000},
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), pad=0, flip=True),
    # Oxford-IIIT Pet through torchvision (cnnlearn.pets), for the gpu budget: masks
    # (N, 128, 128), 0 = background, 1 = pet, 255 = border (ignored). ImageNet statistics.
    "oxford_pet": _Spec(("background", "pet"), (3, 128, 128), {"train": 3680, "test": 3669},
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), pad=0, flip=True),
}
MASK_DATASETS = ("scenes", "oxford_pet")  # datasets whose labels are per-pixel masks
_FORMAT_VERSION = 1
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset, decoded: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str  # where it was read from, for the record

    def __len__(self) -> int:
        return len(self.labels)


def cache_dir() -> Path:
    """The user cache: ``$CNNLEARN_CACHE``, ``$XDG_CACHE_HOME/cnnlearn`` or ``~/.cache/cnnlearn``."""
    explicit = V.env_folder("CNNLEARN_CACHE")  # the variable is named in the error of a bad value
    if explicit is not None:
        return explicit
    return (V.env_folder("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlearn"


# --------------------------------------------------------------------------- readers
# Each reader takes a folder and a split and returns (images uint8 NCHW, labels int64),
# or None when the folder does not hold that format.


def _read_cifar_pickle(folder: Path, split: str):
    if not (folder / "cifar-10-batches-py" / "data_batch_1").is_file():
        return None
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(folder), train=split == "train", download=False)
    except RuntimeError as e:  # torchvision's integrity check failed
        raise CorruptFileError(
            f"{folder / 'cifar-10-batches-py'} is incomplete or corrupt ({e}); "
            f"delete it and download or copy CIFAR-10 again") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    return images, torch.tensor(ds.targets, dtype=torch.int64)


def _read_image_folder(folder: Path, split: str, spec: _Spec):
    root = folder / split
    if not root.is_dir() or not any(p.is_dir() for p in root.iterdir()):
        return None
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, decode_image, read_file

    listing = ImageFolder(str(root), loader=lambda p: p)  # lists files; we decode in bulk below
    if tuple(listing.classes) != spec.classes and [c.lower() for c in listing.classes] != [c.lower() for c in spec.classes]:
        raise DataNotFoundError(
            f"{root} has class folders {listing.classes}, expected {list(spec.classes)}: "
            f"point CNNLEARN_DATA at a copy of the right dataset")
    mode = ImageReadMode.RGB if spec.shape[0] == 3 else ImageReadMode.GRAY
    images = torch.empty((len(listing.samples), *spec.shape), dtype=torch.uint8)
    for i, (path, _) in enumerate(listing.samples):
        try:
            with warnings.catch_warnings():  # torchvision >= 0.29 deprecates io decoders for TorchCodec
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(read_file(path), mode=mode)
        except RuntimeError as e:
            raise CorruptFileError(f"cannot decode image {path}: {e}; replace or delete the file") from e
        if tuple(img.shape) != spec.shape:
            raise CorruptFileError(f"image {path} has shape {tuple(img.shape)}, expected {spec.shape}")
        images[i] = img
    return images, torch.tensor(listing.targets, dtype=torch.int64)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    # IDX header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    # then one big-endian int32 per dimension.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CorruptFileError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise CorruptFileError(f"{path} is truncated: {data.size} bytes for dimensions {dims.tolist()}")
    return data.reshape(dims)


def _read_fashion_idx(folder: Path, split: str):
    prefix = "train" if split == "train" else "t10k"
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            for name in (f"{prefix}-{kind}.gz", f"{prefix}-{kind}"):
                if (sub / name).is_file():
                    found[kind] = sub / name
                    break
        if len(found) == 2:
            images = torch.from_numpy(_read_idx(found["images-idx3-ubyte"]).copy()).unsqueeze(1)  # (N, 1, 28, 28)
            labels = torch.from_numpy(_read_idx(found["labels-idx1-ubyte"]).astype(np.int64))
            return images, labels
    return None


def _candidates(name: str) -> list[Path]:
    """Folders to look in, in order (see the module docstring)."""
    out: list[Path] = []
    if os.environ.get("CNNLEARN_DATA"):
        root = V.env_folder("CNNLEARN_DATA")
        sub = ("cifar10-jpeg", "cifar10", "cifar-10") if name == "cifar10" else ("fashion-mnist", "fashion_mnist")
        out += [root / s for s in sub] + [root]
    if name == "fashion_mnist":
        out.append(_DEBIAN_FASHION)
    out.append(cache_dir() / "downloads" / name)
    return out


def _read_raw(name: str, folder: Path, split: str):
    spec = DATASETS[name]
    if not folder.is_dir():
        return None
    if name == "cifar10":
        return _read_cifar_pickle(folder, split) or _read_image_folder(folder, split, spec)
    return _read_fashion_idx(folder, split) or _read_image_folder(folder, split, spec)


def _download(name: str, split: str) -> Path:
    """Download through torchvision into the user cache; return the folder."""
    from torchvision import datasets

    folder = cache_dir() / "downloads" / name
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.FashionMNIST
    cls(str(folder), train=split == "train", download=True)
    if name == "fashion_mnist":
        folder = folder / "FashionMNIST" / "raw"
    return folder


# --------------------------------------------------------------------------- decoded cache


def _fingerprint(folder: Path, split: str) -> str:
    """Identifies a source for the decoded cache: its path and the number, sizes and
    modification times of its files, so replacing an image invalidates the cache.
    (One ``stat`` per file: a fraction of a second for CIFAR-10's 60,000 files.)"""
    if (folder / split).is_dir():  # an image-folder tree: every file below the split
        roots, recursive = [folder / split], True
    else:  # pickled batches or IDX files: the files of the folder itself
        roots = [p for p in (folder, folder / "cifar-10-batches-py", folder / "FashionMNIST" / "raw") if p.is_dir()]
        recursive = False
    count = total = newest = 0
    while roots:
        with os.scandir(roots.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    if recursive:
                        roots.append(Path(e.path))
                elif e.is_file():
                    st = e.stat()
                    count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
    key = f"{folder.resolve()}|{split}|{count}|{total}|{newest}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _validate(obj: dict, name: str, split: str) -> None:
    spec = DATASETS[name]
    images, labels = obj["images"], obj["labels"]
    n = spec.sizes[split]
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
            and tuple(images.shape) == (n, *spec.shape)):
        raise CorruptFileError(f"cached {name}/{split} images have the wrong shape or type")
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == (n,)):
        raise CorruptFileError(f"cached {name}/{split} labels have the wrong shape or type")
    if int(labels.min()) < 0 or int(labels.max()) >= len(spec.classes):
        raise CorruptFileError(f"cached {name}/{split} labels are out of range")
    # A cheap checksum over every byte catches bit rot and partial overwrites.
    if obj["checksum"] != _checksum(images, labels):
        raise CorruptFileError(f"cached {name}/{split} fails its checksum")


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> int:
    weights = torch.arange(1, images.shape[0] + 1, dtype=torch.int64)
    per_image = images.reshape(images.shape[0], -1).sum(1, dtype=torch.int64)
    return int((per_image * weights).sum()) * 31 + int((labels * weights).sum())


def load_images(name: str, split: str = "train") -> ImageSet:
    """Decode one split of a dataset into uint8 tensors on the CPU (cached).

    Args:
        name: ``"cifar10"``, ``"fashion_mnist"`` or ``"scenes"`` (whose ``labels`` are
            uint8 masks ``(N, 64, 64)``; see :mod:`cnnlearn.scenes`).
        split: ``"train"`` or ``"test"``.

    Raises:
        DataNotFoundError: no copy was found and the download failed (e.g. offline);
            the message says where it looked and how to provide the data.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "scenes":  # composed from cifar10 and fashion_mnist, and cached, by cnnlearn.scenes
        from .scenes import load_scenes

        return load_scenes(split)
    if name == "oxford_pet":  # through torchvision, resized and cached, by cnnlearn.pets
        from .pets import load_pets

        return load_pets(split)
    spec = DATASETS[name]
    looked: list[str] = []
    for folder in _candidates(name):
        looked.append(str(folder))
        if folder.is_dir():
            cached = _load_cached(name, split, folder)
            if cached is not None:
                return cached
            raw = _read_raw(name, folder, split)
            if raw is not None:
                return _store(name, split, folder, *raw)
    try:
        folder = _download(name, split)
    except Exception as e:  # offline: URLError, socket errors, HTTP errors, bad checksums
        raise DataNotFoundError(
            f"{name} ({split}) was not found and could not be downloaded ({type(e).__name__}: {e}).\n"
            f"Looked in: {'; '.join(looked)}.\n"
            f"Fix: connect to the internet once (torchvision downloads it into {cache_dir()}), or set "
            f"CNNLEARN_DATA to a folder holding "
            + ("'cifar-10-batches-py' or an image-folder tree {train,test}/<class>/*.jpg"
               if name == "cifar10" else "Fashion-MNIST's four IDX files (.gz or not)")
            + "."
        ) from None
    raw = _read_raw(name, folder, split)
    if raw is None:
        raise DataNotFoundError(f"the download into {folder} did not produce readable {name} files")
    return _store(name, split, folder, *raw)


def _cache_prefix(name: str, split: str, folder: Path) -> str:
    """``<name>-<split>-<source>``: one source folder's cache files share it."""
    source = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"{name}-{split}-{source}"


def _cache_file(name: str, split: str, folder: Path) -> Path:
    return cache_dir() / "decoded" / f"{_cache_prefix(name, split, folder)}-{_fingerprint(folder, split)}.pt"


def _prune_stale(path: Path, name: str, split: str, folder: Path) -> None:
    """Delete the cache files of the same source whose fingerprint is outdated: a changed
    source folder would otherwise leave ~150 MB behind each time."""
    for old in path.parent.glob(f"{_cache_prefix(name, split, folder)}-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def _load_cached(name: str, split: str, folder: Path) -> ImageSet | None:
    path = _cache_file(name, split, folder)
    if not path.is_file():
        return None
    try:
        obj = safe_load(path, ("images", "labels", "checksum", "version", "source"))
        if obj["version"] != _FORMAT_VERSION:
            raise CorruptFileError(f"{path} has format version {obj['version']}")
        _validate(obj, name, split)
    except CorruptFileError as e:
        warnings.warn(f"{e}; rebuilding the cache from {folder}", stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    return ImageSet(obj["images"], obj["labels"], DATASETS[name].classes, obj["source"])


def _store(name: str, split: str, folder: Path, images: torch.Tensor, labels: torch.Tensor) -> ImageSet:
    spec = DATASETS[name]
    if len(images) != spec.sizes[split]:
        raise DataNotFoundError(
            f"{folder} holds {len(images)} {split} images of {name}, expected {spec.sizes[split]}: "
            f"the copy is incomplete")
    obj = {"images": images, "labels": labels, "checksum": _checksum(images, labels),
           "version": _FORMAT_VERSION, "source": str(folder)}
    _validate(obj, name, split)
    try:
        path = _cache_file(name, split, folder)
        atomic_save(obj, path)
        _prune_stale(path, name, split, folder)
    except OSError as e:  # a read-only home still works, just without the cache
        warnings.warn(f"could not write the decoded cache ({e}); continuing without it (set CNNLEARN_CACHE "
                      f"to a writable folder to keep it)", stacklevel=3)
    return ImageSet(images, labels, spec.classes, str(folder))


# --------------------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator,
                  mirrored: torch.Tensor | None = None) -> torch.Tensor:
    """Random crops (after zero padding by ``pad`` pixels) and, if ``flip``, random
    left-right flips of a whole batch, each image with its own offset and coin
    (or, if ``mirrored`` (B,) bool is given, flipped where it is True: no coin drawn).

    Both are one ``gather`` on the flattened padded batch: output pixel ``(i, j)`` of
    image ``b`` reads padded pixel ``(dy_b + i, dx_b + j)``, or ``(dy_b + i, dx_b + W-1-j)``
    when the image is flipped. No Python loop over images, any device, any dtype.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(dev, non_blocking=True)
    else:
        dy = dx = torch.zeros(b, dtype=torch.int64, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if flip:
        if mirrored is None:
            mirrored = torch.rand(b, generator=generator) < 0.5
        mirrored = mirrored.to(dev, non_blocking=True)
        cols = torch.where(mirrored[:, None], w - 1 - cols, cols)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x  # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H)
    index = rows[:, :, None] * (w + 2 * pad) + (dx[:, None, None] + cols[:, None, :])  # (B, H, W)
    index = index.reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).reshape(b, c, h, w)


def augment_with_masks(x: torch.Tensor, masks: torch.Tensor, pad: int, flip: bool,
                       generator: torch.Generator, ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment_batch` for images with per-pixel labels: each mask is cropped and
    flipped exactly as its image, since both go through one gather as one more channel.
    The padding a crop brings in gets ``ignore_index`` in the mask (no pixel to label).
    The random draws are those of ``augment_batch(x, ...)``.

    Args:
        x: ``(B, C, H, W)`` uint8 images.
        masks: ``(B, H, W)`` uint8 masks.
        pad, flip, generator: as :func:`augment_batch`.
        ignore_index: the mask value of padded pixels, 0..255.

    Returns:
        ``(images, masks)`` of the same shapes.
    """
    if x.dtype != torch.uint8 or masks.dtype != torch.uint8 or masks.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"need uint8 images (B, C, H, W) and uint8 masks (B, H, W), got "
                         f"{x.dtype} {tuple(x.shape)} and {masks.dtype} {tuple(masks.shape)}")
    # The crop pads with zeros: store ignore_index - mask (mod 256) so that a padded 0
    # comes back as ignore_index, and every real label as itself.
    shifted = (ignore_index - masks.int()).remainder(256).to(torch.uint8)
    both = augment_batch(torch.cat([x, shifted[:, None]], dim=1), pad, flip, generator)  # (B, C+1, H, W)
    out_masks = (ignore_index - both[:, -1].int()).remainder(256).to(torch.uint8)
    return both[:, :-1], out_masks


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random crops of a whole batch after zero padding by ``pad`` pixels on each side."""
    return augment_batch(x, pad, False, generator) if pad > 0 else x


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of a batch left-right with probability 1/2."""
    return augment_batch(x, 0, True, generator)


def dominant_class(masks: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """For each mask ``(N, H, W)``, the foreground class (label >= 1) covering the most
    pixels, or 0 when it has none: what a class-balanced sample of scenes balances.
    Returns ``(N,)`` int64 on the masks' device."""
    masks = V.tensor("masks", masks, ndim=3, integer_dtype=True)
    labelled = masks[masks != ignore_index]
    k = int(labelled.max()) + 1 if labelled.numel() else 1
    # one pass per class over the masks: (N, K) pixel counts without an (N, H*W) int64 copy
    counts = torch.stack([(masks == c).sum((1, 2)) if c else torch.zeros(len(masks), dtype=torch.int64,
                                                                              device=masks.device)
                          for c in range(max(k, 2))], dim=1)  # the background (column 0) never dominates
    best = counts.argmax(1)
    return torch.where(counts.amax(1) > 0, best, torch.zeros_like(best))


def _choose_per_class(labels: torch.Tensor, per_class: int, seed: int, skip: int | None = None) -> torch.Tensor:
    """``(K, per_class)`` indices: row ``k`` holds ``per_class`` examples of the k-th class
    (classes in increasing label order, ``skip`` left out), drawn without replacement by
    a seeded generator."""
    per_class = V.positive_int("per_class", per_class)
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    rows = []
    for c in labels.unique().tolist():
        if c == skip:
            continue
        idx = (labels == c).nonzero().squeeze(1)
        if per_class > len(idx):
            raise ValueError(f"per_class={per_class} but class {c} has only {len(idx)} examples; "
                             f"ask for at most {len(idx)}")
        rows.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.stack(rows)


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class, chosen by a seeded generator, sorted."""
    return _choose_per_class(labels, per_class, seed).flatten().sort().values


# --------------------------------------------------------------------------- the loader


@contextlib.contextmanager
def _batch_threads(device: torch.device):
    """Make a batch on one CPU thread. The work is a few memory-bound passes over
    under a megabyte, which one thread does about as fast as many; and on a busy
    machine the threads' synchronisation made it ten times slower in our benchmark."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class DeviceLoader:
    """Mini-batches from uint8 tensors that already live on the device.

    Each pass over the data (an epoch) draws its order and augmentations from a
    generator seeded with ``(seed, epoch)``, so a run is reproducible and a resumed
    run sees exactly the batches the uninterrupted run would have seen.

    Args:
        images: (N, C, H, W) uint8 tensor on the device.
        labels: (N,) int64 tensor on the device, or per-pixel masks (N, H, W) uint8 (a
            segmentation set): batches then carry (B, H, W) int64 masks, cropped and
            flipped with their images (:func:`augment_with_masks`).
        batch_size: images per batch.
        mean: per-channel mean in [0, 1] used for normalisation.
        std: per-channel standard deviation.
        shuffle: draw a new order every epoch.
        augment: random crop (with ``pad`` pixels of padding) and, if ``flip``, left-right flips.
        seed: seeds order and augmentation.
        drop_last: drop the last incomplete batch (keeps BatchNorm statistics stable).
        alternate_flip: instead of a fresh coin per image and epoch, flip each image in
            every other epoch (a seeded half of the images in even epochs, the other half
            in odd ones), so any two consecutive epochs show every image both ways round
            (airbench's "alternating flip", Jordan 2024: fewer epochs for the same accuracy).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: Sequence[float],
        std: Sequence[float], *, shuffle: bool = False, augment: bool = False, pad: int = 4,
        flip: bool = True, seed: int = 0, drop_last: bool = False, alternate_flip: bool = False,
    ) -> None:
        images = V.tensor("images", images)
        if isinstance(labels, torch.Tensor) and labels.ndim == 3:  # masks: kept uint8 (8x less memory)
            if labels.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
                raise ValueError(f"masks must be (N, H, W) uint8 matching images (N, C, H, W), got "
                                 f"{labels.dtype} {tuple(labels.shape)} for images {tuple(images.shape)}")
        else:
            labels = V.tensor("labels", labels, ndim=1, integer_dtype=True).long()  # cross-entropy takes int64
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels; give one label per image")
        if images.device != labels.device:
            raise ValueError(f"images are on {images.device} but labels on {labels.device}; move both to one device")
        V.positive_int("batch_size", batch_size), V.non_negative_int("pad", pad), V.seed("seed", seed)
        for flag, value in (("shuffle", shuffle), ("augment", augment), ("flip", flip), ("drop_last", drop_last),
                            ("alternate_flip", alternate_flip)):
            V.boolean(flag, value)
        mean = V.per_channel("mean", mean, images.shape[1])
        std = V.per_channel("std", std, images.shape[1], positive=True)
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.pad, self.flip, self.seed, self.drop_last = pad, flip, seed, drop_last
        self.alternate_flip = alternate_flip
        self.epoch = 0
        self.device = images.device
        # Normalisation as one multiply-add on the uint8 values: x/255 -> (x/255 - mean)/std.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device)[None, :, None, None]
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device)[None, :, None, None]
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def has_masks(self) -> bool:
        """Whether the labels are per-pixel masks (N, H, W) rather than classes (N,)."""
        return self.labels.ndim == 3

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images on the device -> normalised float32."""
        return x.float() * self._scale + self._shift

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`, to floats in [0, 1] for display."""
        return ((x - self._shift) / self._scale / 255.0).clamp(0, 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device, non_blocking=True)
        mirrored = None
        if self.alternate_flip and self.augment and self.flip and not self.has_masks:
            # One coin per image for the whole run (seed only), inverted in odd epochs.
            coins = torch.rand(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 - 1)) < 0.5
            mirrored = (coins ^ bool(self.epoch % 2))[order.cpu()]
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            with _batch_threads(self.device):
                x, y = self.images[idx], self.labels[idx]  # (B, C, H, W) uint8, (B,) or masks (B, H, W)
                if self.has_masks:
                    if self.augment:
                        x, y = augment_with_masks(x, y, self.pad, self.flip, g)
                    y = y.long()  # (B, H, W) int64, as cross-entropy takes it
                elif self.augment:
                    x = augment_batch(x, self.pad, self.flip, g,  # crop offsets drawn first, then flips
                                      None if mirrored is None else mirrored[i * self.batch_size:(i + 1) * self.batch_size])
                x = self.normalize(x)
            yield x, y
        self.epoch += 1


@dataclass
class Data:
    """A dataset ready for training: a shuffled, augmented ``train`` loader and a plain ``test`` loader."""

    name: str
    train: DeviceLoader
    test: DeviceLoader
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = field(default="")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def __repr__(self) -> str:
        return (f"Data({self.name}: {self.train.num_samples} train / {self.test.num_samples} test images "
                f"of shape {self.image_shape}, {len(self.classes)} classes, on {self.train.device}, from {self.source})")


def load_data(
    name: str = "cifar10", *, device: str | torch.device | None = None, batch_size: int = 256,
    train_per_class: int | None = None, test_per_class: int | None = None,
    augment: bool = True, seed: int = 0, train_size: int | None = None, test_size: int | None = None,
) -> Data:
    """Load a dataset onto the training device with its loaders.

    Args:
        name: ``"cifar10"``, ``"fashion_mnist"`` or ``"scenes"`` (segmentation: the
            batches' labels are masks ``(B, 64, 64)``, see :mod:`cnnlearn.scenes`).
        device: where the images live and batches are made (default: :func:`get_device`).
        batch_size: training batch size (the test loader uses twice this: no gradients).
        train_per_class: keep this many training images per class (balanced subset), or all.
        test_per_class: likewise for the test split.
        augment: random crop with padding and left-right flips on the training batches.
        seed: seeds the subset choice, the stored order of each split (a random
            permutation, so that ``data.train.images[:16]`` holds a mix of classes), the
            batch order and the augmentation.
        train_size: keep only this many training images (the first of the seeded random
            order; not class-balanced). The way to take a subset of ``"scenes"``.
        test_size: likewise for the test split.

    Returns:
        A :class:`Data` with ``train`` and ``test`` :class:`DeviceLoader` s.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    V.positive_int("batch_size", batch_size), V.boolean("augment", augment), V.seed("seed", seed)
    for arg, per_class in (("train_per_class", train_per_class), ("test_per_class", test_per_class),
                           ("train_size", train_size), ("test_size", test_size)):
        V.optional(V.positive_int)(arg, per_class)
    if name in MASK_DATASETS and (train_per_class is not None or test_per_class is not None):
        raise ValueError(f"{name} labels pixels, not images, so there are no per-class subsets: "
                         f"pass train_size/test_size instead of train_per_class/test_per_class")
    spec = DATASETS[name]
    device = get_device(device)
    loaders = []
    sources = []
    for split, per_class, size in (("train", train_per_class, train_size), ("test", test_per_class, test_size)):
        ds = load_images(name, split)
        images, labels = ds.images, ds.labels
        idx = torch.arange(len(labels)) if per_class is None else balanced_subset(labels, per_class, seed)
        # Image folders list the images class by class, and balanced_subset's indices are
        # sorted, so images[:16] would be sixteen airplanes: store every split in a seeded
        # random order instead, so that any slice of it is a fair sample.
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
        if size is not None:
            idx = idx[:size]
        images, labels = images[idx], labels[idx]
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        train = split == "train"
        loaders.append(DeviceLoader(
            images, labels, batch_size if train else 2 * batch_size, spec.mean, spec.std,
            shuffle=train, augment=train and augment, pad=spec.pad, flip=spec.flip, seed=seed,
            drop_last=train and len(labels) > batch_size))
        sources.append(ds.source)
    return Data(name, loaders[0], loaders[1], spec.classes, spec.mean, spec.std, source=sources[0])


def sample_images(
    source: Data | DeviceLoader, per_class: int = 1, *, split: str | None = None, seed: int = 0,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, class-balanced sample of a split, for figures and probes.

    The images come interleaved by class: one of every class (in label order), then a
    second of every class, and so on, so that any prefix of ``n * num_classes`` images
    is balanced too. The same ``seed`` gives the same sample; the loader's own random
    state (its epoch, its augmentation) is neither used nor changed.

    Args:
        source: a :class:`Data` from :func:`load_data`, or one of its loaders.
        per_class: images of every class.
        split: ``"train"`` or ``"test"`` when ``source`` is a :class:`Data` (default
            ``"train"``); leave it out for a loader, which is one split already.
        seed: seeds the choice.
        normalize: return what the network sees (float32, normalised with the
            dataset's mean and standard deviation, as in the loaders' batches) instead of
            the stored pixels.

    For segmentation data (masks) the balance is over the foreground classes: an image
    counts for the class that covers most of its foreground pixels
    (:func:`dominant_class`; images without foreground are never drawn), and the labels
    returned are its masks ``(per_class * K, H, W)`` uint8, ``K`` the foreground classes.

    Returns:
        ``(images, labels)`` on the data's device: images ``(per_class * K, C, H, W)``,
        uint8 in [0, 255] (for :func:`cnnlearn.viz.show_images`) or float32 when
        ``normalize``; labels ``(per_class * K,)`` int64, ``labels[:K]`` being
        ``0, 1, ..., K-1`` for a split holding all ``K`` classes.

    Raises:
        ValueError: a bad ``source``, ``split``, ``per_class`` or ``seed`` (one of the
            wrong type is a ``TypeError`` too), or a class with fewer than ``per_class``
            images.
    """
    if isinstance(source, Data):
        split = V.one_of("split", "train" if split is None else split, ("train", "test"))
        loader = source.train if split == "train" else source.test
    elif isinstance(source, DeviceLoader):
        if split is not None:
            raise ValueError(f"split={split!r} was given with a DeviceLoader, which is one split "
                             f"already: pass the Data from load_data(...) to choose, or drop split")
        loader = source
    else:
        raise V.ArgumentTypeError(f"source must be the Data from load_data(...) or one of its loaders, "
                                  f"got {type(source).__name__}")
    keys = dominant_class(loader.labels) if loader.has_masks else loader.labels
    if loader.has_masks:
        keys = torch.where(keys > 0, keys, -1)  # scenes without any foreground take no part
    rows = _choose_per_class(keys, per_class, V.seed("seed", seed), skip=-1)  # (K, per_class)
    idx = rows.T.flatten().to(loader.device)  # interleaved: column j holds the j-th image of every class
    images, labels = loader.images[idx], loader.labels[idx]
    return (loader.normalize(images) if normalize else images), labels
