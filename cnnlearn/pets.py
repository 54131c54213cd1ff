"""The Oxford-IIIT Pet segmentation set through torchvision, for the ``gpu`` budget.

Parkhi, Vedaldi, Zisserman, Jawahar, "Cats and Dogs", CVPR 2012: 7,349 photographs of
37 breeds, each with a trimap (pet, background, border). ``load_data("oxford_pet")``
reads torchvision's copy (``OxfordIIITPet(target_types="segmentation")``, its
``trainval`` split as our ``train`` and its ``test``), resizes every image to 128x128
(bilinear) and its trimap likewise (nearest), and labels pixels 0 = background,
1 = pet, ``IGNORE_INDEX`` = the uncertain border (as the trimap marks it).

Where it is looked for: ``$CNNLEARN_DATA`` (a folder holding torchvision's
``oxford-iiit-pet/``), then the user cache's ``downloads/oxford_pet``, then a torchvision
download there. Without network and without a copy, the error is the package's
:class:`~cnnlearn.data.DataNotFoundError` saying where it looked and how to fix it, as
for CIFAR-10. The decoded tensors are cached like CIFAR-10's (atomic, validated).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from . import _validate as V
from ._io import CorruptFileError, atomic_save, safe_load
from .segmentation import IGNORE_INDEX

__all__ = ["PET_CLASSES", "PET_SIZE", "load_pets"]

PET_CLASSES = ("background", "pet")
PET_SIZE = 128  # side of the resized images, our choice for the gpu budget
_FORMAT_VERSION = 1
_TV_SPLIT = {"train": "trainval", "test": "test"}
# torchvision's trimap values: 1 pet, 2 background, 3 border -> our labels
_TRIMAP_TO_LABEL = {1: 1, 2: 0, 3: IGNORE_INDEX}


def _candidates() -> list[Path]:
    from .data import cache_dir

    out = []
    if os.environ.get("CNNLEARN_DATA"):
        out.append(V.env_folder("CNNLEARN_DATA"))
    out.append(cache_dir() / "downloads" / "oxford_pet")
    return out


def _open(root: Path, split: str, download: bool):
    from torchvision.datasets import OxfordIIITPet

    return OxfordIIITPet(str(root), split=_TV_SPLIT[split], target_types="segmentation", download=download)


def _decode(ds, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    images = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
    masks = torch.empty(len(ds), size, size, dtype=torch.uint8)
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
    for value, label in _TRIMAP_TO_LABEL.items():
        lut[value] = label
    for i in range(len(ds)):
        image, trimap = ds[i]  # PIL images
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        t = torch.from_numpy(np.asarray(trimap, dtype=np.uint8).copy())
        images[i] = F.interpolate(x[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        masks[i] = lut[F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()]
    return images, masks


def _checksum(images: torch.Tensor, masks: torch.Tensor) -> int:
    return int(images.reshape(-1)[::61].sum(dtype=torch.int64)) * 31 + int(masks.sum(dtype=torch.int64))


def load_pets(split: str = "train", size: int = PET_SIZE):
    """The Oxford-IIIT Pet split as an :class:`~cnnlearn.data.ImageSet` of 128x128 images
    whose ``labels`` are masks ``(N, size, size)`` uint8 (0 background, 1 pet, 255 border).

    Raises:
        DataNotFoundError: no copy was found and the download failed (e.g. offline).
    """
    from .data import DataNotFoundError, ImageSet, cache_dir

    split = V.one_of("split", split, ("train", "test"))
    size = V.positive_int("size", size)
    path = cache_dir() / "decoded" / f"oxford_pet-{split}-{size}.pt"
    if path.is_file():
        try:
            obj = safe_load(path, ("images", "masks", "checksum", "version", "source"))
            if obj["version"] != _FORMAT_VERSION or obj["checksum"] != _checksum(obj["images"], obj["masks"]):
                raise CorruptFileError(f"{path} fails its checksum")
            return ImageSet(obj["images"], obj["masks"], PET_CLASSES, obj["source"])
        except CorruptFileError as e:
            warnings.warn(f"{e}; decoding Oxford-IIIT Pet again", stacklevel=3)
            path.unlink(missing_ok=True)
    ds, looked = None, []
    for root in _candidates():
        looked.append(str(root))
        if (root / "oxford-iiit-pet").is_dir():
            try:
                ds = _open(root, split, download=False)
                break
            except RuntimeError:  # torchvision: incomplete copy
                continue
    if ds is None:
        root = cache_dir() / "downloads" / "oxford_pet"
        try:
            ds = _open(root, split, download=True)
        except Exception as e:  # offline: URLError, socket errors, HTTP errors, bad checksums
            raise DataNotFoundError(
                f"oxford_pet ({split}) was not found and could not be downloaded ({type(e).__name__}: {e}).\n"
                f"Looked in: {'; '.join(looked)}.\n"
                f"Fix: connect to the internet once (torchvision downloads it, about 800 MB, into {root}), or "
                f"set CNNLEARN_DATA to a folder holding torchvision's 'oxford-iiit-pet' folder."
            ) from None
    images, masks = _decode(ds, size)
    source = f"Oxford-IIIT Pet via torchvision ({_TV_SPLIT[split]}), resized to {size}x{size}"
    try:
        atomic_save({"images": images, "masks": masks, "checksum": _checksum(images, masks),
                     "version": _FORMAT_VERSION, "source": source}, path)
    except OSError as e:
        warnings.warn(f"could not write the Oxford-IIIT Pet cache ({e}); continuing without it", stacklevel=3)
    return ImageSet(images, masks, PET_CLASSES, source)
