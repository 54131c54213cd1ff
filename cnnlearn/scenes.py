"""A segmentation set built offline from data the package already has: Fashion-MNIST
garments placed on CIFAR-10 backgrounds.

Each scene is a CIFAR-10 image upsampled to 64x64 (the textured background) with one to
three Fashion-MNIST garments pasted on it, each scaled, placed at random (overlapping
allowed: a later garment hides an earlier one) and tinted with a random colour. A
garment's pixels brighter than a threshold form its mask; the label of a pixel is 0 for
the background and ``1 + the garment's Fashion-MNIST class`` (1..10) where a garment is.

Training scenes use the training splits of both datasets, test scenes the test splits,
so the test set holds garments and backgrounds never seen in training. Everything is
drawn from a generator seeded per split: the same sources give the same scenes. They are
generated on first use and cached in the user cache (``<cache>/decoded/scenes-*.pt``),
written atomically and validated when read (shape, label range, checksum), like the
decoded CIFAR-10 cache; a corrupt file is rebuilt with a warning.

``cnnlearn.load_data("scenes")`` loads them like the other datasets; its loader flips a
scene's mask with the scene.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from . import _validate as V
from ._io import CorruptFileError, atomic_save, safe_load
from .segmentation import IGNORE_INDEX  # the mask value of pixels that have no label (a crop's padding)

__all__ = ["SCENE_CLASSES", "SceneConfig", "compose_scenes", "make_scenes", "load_scenes",
           "class_fractions", "IGNORE_INDEX"]

SCENE_CLASSES = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FORMAT_VERSION = 1
_SPLIT_SEEDS = {"train": 0, "test": 1}  # the scenes of each split are drawn from this seed


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are composed (the defaults make the ``"scenes"`` dataset)."""

    size: int = 64  # height and width of a scene
    min_garments: int = 1  # garments per scene, drawn uniformly from min..max
    max_garments: int = 3
    min_side: int = 20  # side of a pasted garment in pixels (Fashion-MNIST's are 28), drawn uniformly
    max_side: int = 44
    threshold: int = 48  # garment pixels above this (of 255) form the mask; our choice: keeps the faint halo out
    min_tint: float = 0.4  # each colour channel of a garment's tint is drawn from [min_tint, 1]

    def __post_init__(self) -> None:
        V.positive_int("size", self.size)
        V.positive_int("min_garments", self.min_garments), V.positive_int("max_garments", self.max_garments)
        V.positive_int("min_side", self.min_side), V.positive_int("max_side", self.max_side)
        if self.min_garments > self.max_garments or self.min_side > self.max_side:
            raise ValueError(f"min_garments/min_side must not exceed max_garments/max_side, got {self}")
        if self.max_side > self.size:
            raise ValueError(f"max_side={self.max_side} must fit in a scene of size={self.size}")
        V.integer("threshold", self.threshold, minimum=0)
        if self.threshold > 254:
            raise ValueError(f"threshold={self.threshold} must be below 255, or no pixel would pass")
        V.real("min_tint", self.min_tint, low=0.0, high=1.0, low_open=True)


def compose_scenes(backgrounds: torch.Tensor, garments: torch.Tensor, garment_labels: torch.Tensor,
                   n: int, seed: int, config: SceneConfig = SceneConfig(),
                   chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose ``n`` scenes from background images and garment images.

    Args:
        backgrounds: ``(M, 3, h, w)`` uint8 (CIFAR-10 images), upsampled bilinearly to the scene.
        garments: ``(G, 1, 28, 28)`` uint8 (Fashion-MNIST images).
        garment_labels: ``(G,)`` their classes, 0..9.
        n: number of scenes.
        seed: seeds every random choice; the same arguments give the same scenes.
        config: sizes, counts, threshold and tints.
        chunk: scenes composed at once (bounds the memory: ~50 KB of floats per scene).

    Returns:
        ``(images, masks)``: ``(n, 3, S, S)`` uint8 and ``(n, S, S)`` uint8 with 0 for the
        background and ``1 + class`` on garments, ``S = config.size``.
    """
    backgrounds = V.tensor("backgrounds", backgrounds, ndim=4)
    garments = V.tensor("garments", garments, ndim=4)
    garment_labels = V.tensor("garment_labels", garment_labels, ndim=1, integer_dtype=True)
    if backgrounds.shape[1] != 3 or garments.shape[1] != 1 or len(garments) != len(garment_labels):
        raise ValueError("backgrounds must be (M, 3, h, w), garments (G, 1, h, w) with one label each")
    n, seed, chunk = V.non_negative_int("n", n), V.seed("seed", seed), V.positive_int("chunk", chunk)
    s = config.size
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, s, s, dtype=torch.uint8)
    masks = torch.zeros(n, s, s, dtype=torch.uint8)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        idx = torch.randint(len(backgrounds), (b,), generator=g)
        canvas = F.interpolate(backgrounds[idx].float(), size=(s, s), mode="bilinear",
                               align_corners=False)  # (b, 3, h, w) -> (b, 3, S, S), values in [0, 255]
        mask = torch.zeros(b, s, s, dtype=torch.uint8)
        count = torch.randint(config.min_garments, config.max_garments + 1, (b,), generator=g)
        for slot in range(config.max_garments):
            # Draw every slot's numbers for all b scenes (used or not), so that the scenes
            # depend only on the seed, not on how the draws fall into chunks of slots.
            gi = torch.randint(len(garments), (b,), generator=g)
            side = torch.randint(config.min_side, config.max_side + 1, (b,), generator=g).float()
            x0 = (torch.rand(b, generator=g) * (s - side + 1)).floor()  # top-left corner, inside the scene
            y0 = (torch.rand(b, generator=g) * (s - side + 1)).floor()
            tint = config.min_tint + (1 - config.min_tint) * torch.rand(b, 3, generator=g)
            # An affine grid maps scene pixel centres to the garment's [-1, 1] coordinates:
            # u = (x + 0.5 - x0) / side * 2 - 1 in pixels, written in the scene's own
            # normalised coordinates x_n = (x + 0.5) / S * 2 - 1.
            scale = s / side
            theta = torch.zeros(b, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = scale
            theta[:, 0, 2] = scale - 1 - 2 * x0 / side
            theta[:, 1, 2] = scale - 1 - 2 * y0 / side
            grid = F.affine_grid(theta, [b, 1, s, s], align_corners=False)  # (b, S, S, 2)
            placed = F.grid_sample(garments[gi].float(), grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)  # (b, 1, S, S), 0 outside the garment's square
            on = (placed[:, 0] > config.threshold) & (slot < count)[:, None, None]  # (b, S, S)
            colour = placed * tint[:, :, None, None]  # (b, 3, S, S): the garment's texture, tinted
            canvas = torch.where(on[:, None], colour, canvas)
            mask = torch.where(on, (garment_labels[gi] + 1).to(torch.uint8)[:, None, None], mask)
        images[start:start + b] = canvas.round().clamp(0, 255).to(torch.uint8)
        masks[start:start + b] = mask
    return images, masks


def class_fractions(masks: torch.Tensor, num_classes: int = len(SCENE_CLASSES)) -> torch.Tensor:
    """The fraction of pixels of every class, ``(num_classes,)`` float64 (ignored pixels
    left out): the class balance a segmentation loss and mean IoU face."""
    masks = V.tensor("masks", masks, integer_dtype=True)
    V.positive_int("num_classes", num_classes)
    counts = torch.bincount(masks.reshape(-1).long(), minlength=IGNORE_INDEX + 1)[:num_classes].double()
    return counts / counts.sum()


def make_scenes(split: str = "train", n: int | None = None, seed: int | None = None,
                config: SceneConfig = SceneConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose scenes from the CIFAR-10 and Fashion-MNIST ``split`` (read with
    :func:`cnnlearn.data.load_images`), without caching.

    Args:
        split: ``"train"`` or ``"test"``.
        n: scenes (default: the ``"scenes"`` dataset's size of the split).
        seed: default 0 for train, 1 for test (the dataset's).
        config: see :class:`SceneConfig`.
    """
    from .data import DATASETS, load_images  # data imports this module lazily: no cycle

    split = V.one_of("split", split, ("train", "test"))
    n = DATASETS["scenes"].sizes[split] if n is None else n
    seed = _SPLIT_SEEDS[split] if seed is None else seed
    backgrounds = load_images("cifar10", split)
    garments = load_images("fashion_mnist", split)
    return compose_scenes(backgrounds.images, garments.images, garments.labels, n, seed, config)


# --------------------------------------------------------------------------- the cache


def _checksum(images: torch.Tensor, masks: torch.Tensor) -> int:
    from .data import _checksum as image_checksum

    per_image = masks.reshape(len(masks), -1).sum(1, dtype=torch.int64)  # a flipped mask pixel changes it
    return image_checksum(images, per_image)


def _cache_file(split: str, n: int, seed: int, config: SceneConfig):
    from .data import cache_dir

    key = f"{_FORMAT_VERSION}|{split}|{n}|{seed}|{sorted(asdict(config).items())}"
    return cache_dir() / "decoded" / f"scenes-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _validate(obj: dict, n: int, config: SceneConfig) -> None:
    images, masks, s = obj["images"], obj["masks"], config.size
    if obj["version"] != _FORMAT_VERSION:
        raise CorruptFileError(f"scenes cache has format version {obj['version']}")
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == (n, 3, s, s)):
        raise CorruptFileError("cached scenes have images of the wrong shape or type")
    if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.uint8 and tuple(masks.shape) == (n, s, s)):
        raise CorruptFileError("cached scenes have masks of the wrong shape or type")
    if n and int(masks.max()) >= len(SCENE_CLASSES):
        raise CorruptFileError("cached scene masks hold labels out of range")
    if obj["checksum"] != _checksum(images, masks):
        raise CorruptFileError("cached scenes fail their checksum")


def load_scenes(split: str = "train", config: SceneConfig = SceneConfig()):
    """The ``"scenes"`` dataset's split as an :class:`cnnlearn.data.ImageSet` whose
    ``labels`` are the masks ``(N, S, S)`` uint8: read from the cache, or composed (from
    CIFAR-10 and Fashion-MNIST, which must be available: otherwise their
    :class:`~cnnlearn.data.DataNotFoundError`) and cached.
    """
    from .data import DATASETS, ImageSet

    split = V.one_of("split", split, ("train", "test"))
    n, seed = DATASETS["scenes"].sizes[split], _SPLIT_SEEDS[split]
    path = _cache_file(split, n, seed, config)
    if path.is_file():
        try:
            obj = safe_load(path, ("images", "masks", "checksum", "version", "source"))
            _validate(obj, n, config)
            return ImageSet(obj["images"], obj["masks"], SCENE_CLASSES, obj["source"])
        except CorruptFileError as e:
            warnings.warn(f"{e}; composing the scenes again", stacklevel=3)
            path.unlink(missing_ok=True)
    images, masks = make_scenes(split, n, seed, config)
    source = f"scenes composed from CIFAR-10 and Fashion-MNIST ({split}, seed {seed})"
    obj = {"images": images, "masks": masks, "checksum": _checksum(images, masks),
           "version": _FORMAT_VERSION, "source": source}
    try:
        atomic_save(obj, path)
    except OSError as e:  # a read-only home still works, just without the cache
        warnings.warn(f"could not write the scenes cache ({e}); continuing without it (set CNNLEARN_CACHE "
                      f"to a writable folder to keep it)", stacklevel=3)
    return ImageSet(images, masks, SCENE_CLASSES, source)
