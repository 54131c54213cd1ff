"""Segmentation metrics: the confusion matrix of pixels, pixel accuracy, IoU and mean IoU.

Everything is read off one confusion matrix ``M`` (``M[t, p]`` pixels of true class ``t``
predicted as ``p``), accumulated over a whole test set (the PASCAL VOC protocol; Long,
Shelhamer, Darrell 2015, arXiv:1411.4038, Sec. 5, define the same metrics):

* pixel accuracy: ``sum_i M[i, i] / sum M``;
* IoU of class ``i``: ``M[i, i] / (sum_j M[i, j] + sum_j M[j, i] - M[i, i])``, the
  intersection of predicted and true region over their union;
* mean IoU: the average of the per-class IoUs over the classes that occur (in the truth
  or in the predictions); a class absent from both has no IoU (``nan``) and is skipped.

Pixels labelled ``ignore_index`` (e.g. 255 on object borders in VOC) are left out.
"""
from __future__ import annotations

import math

import torch

from . import _validate as V

__all__ = ["confusion_matrix", "pixel_accuracy", "iou_per_class", "mean_iou", "boundary_band", "IGNORE_INDEX"]

IGNORE_INDEX = 255  # the mask value of pixels that have no label (VOC's borders, a crop's padding)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """Count pixels by (true class, predicted class).

    Args:
        pred: predicted classes, any shape (e.g. ``logits.argmax(1)``, ``(B, H, W)``).
        target: true classes, the same shape.
        num_classes: classes ``0 .. num_classes - 1``.
        ignore_index: a target value to leave out (its predictions are not counted).

    Returns:
        ``(num_classes, num_classes)`` int64 on ``target``'s device; rows are true classes.

    Raises:
        ValueError: the shapes differ, or a label outside ``0 .. num_classes - 1`` that is
            not ``ignore_index``.
    """
    pred = V.tensor("pred", pred)
    target = V.tensor("target", target)
    k = V.positive_int("num_classes", num_classes)
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; "
                         f"take the argmax over the class dimension of the logits first")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(f"{name} holds labels outside 0..{k - 1} (min {int(t.min())}, max {int(t.max())}); "
                             f"check num_classes or pass ignore_index")
    # one bincount over the pair index t*K + p: (K*K,) -> (K, K)
    return torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)


def _matrix(cm: torch.Tensor) -> torch.Tensor:
    cm = V.tensor("cm", cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square confusion matrix (K, K), got shape {tuple(cm.shape)}")
    if cm.is_floating_point() and not torch.isfinite(cm).all():
        raise ValueError("cm holds NaN or infinite counts; build it with confusion_matrix(pred, target, K)")
    if (cm < 0).any():
        raise ValueError("cm holds negative counts; a confusion matrix counts pixels (build it with "
                         "confusion_matrix(pred, target, K))")
    return cm.double()


def pixel_accuracy(cm: torch.Tensor) -> float:
    """The fraction of (non-ignored) pixels whose class is predicted right."""
    cm = _matrix(cm)
    total = cm.sum()
    return float(cm.diag().sum() / total) if total > 0 else math.nan


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every class, ``(K,)`` float64; ``nan`` for a class that
    appears neither in the truth nor in the predictions."""
    cm = _matrix(cm)
    intersection = cm.diag()
    union = cm.sum(0) + cm.sum(1) - intersection  # predicted + true - both
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, math.nan))


def mean_iou(cm: torch.Tensor) -> float:
    """The mean of :func:`iou_per_class` over the classes that have one."""
    return float(iou_per_class(cm).nanmean())


def boundary_band(masks: torch.Tensor, width: int = 2, ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """The pixels within ``width`` pixels (a square neighbourhood) of a change of label:
    where boundary quality is judged. A confusion matrix restricted to them
    (``confusion_matrix(pred[band], target[band], K)``) measures how well a network
    places the borders, which a coarse output stride blurs (Long et al. 2015, Fig. 4).

    Args:
        masks: ``(B, H, W)`` integer labels.
        width: half-width of the band in pixels (>= 1).
        ignore_index: pixels with this label are left out of the band.

    Returns:
        ``(B, H, W)`` bool.
    """
    masks = V.tensor("masks", masks, ndim=3, integer_dtype=True)
    width = V.positive_int("width", width)
    labels = masks.float()[:, None]  # (B, 1, H, W)
    k = 2 * width + 1
    # the largest and the smallest label in every k x k window differ exactly near a border;
    # replicate padding keeps the image's own edge from counting as one
    padded = torch.nn.functional.pad(labels, (width,) * 4, mode="replicate")
    high = torch.nn.functional.max_pool2d(padded, k, stride=1)
    low = -torch.nn.functional.max_pool2d(-padded, k, stride=1)
    band = (high != low)[:, 0]
    if ignore_index is not None:
        band &= masks != ignore_index
    return band
