"""Regularisers of the training batch and loss: mixup, CutMix and knowledge distillation.

* Mixup: Zhang, Cisse, Dauphin and Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
  ICLR 2018, arXiv:1710.09412.
* CutMix: Yun, Han, Oh, Chun, Choe and Yoo, "CutMix: Regularization Strategy to Train Strong
  Classifiers with Localizable Features", ICCV 2019, arXiv:1905.04899.
* Knowledge distillation: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
  Network", 2015, arXiv:1503.02531.

All three are refinements that "Bag of Tricks for Image Classification with Convolutional
Neural Networks" (He, Zhang, Zhang, Zhang, Xie and Li, CVPR 2019, arXiv:1812.01187) measures.
:func:`cnnlearn.fit` applies them through ``TrainConfig.mixing`` and ``distill_weight``
(with ``fit(..., teacher=...)``); the maths is here, in small functions a test can check
against the formulas.

Every function works on whole batches with tensor ops: one mixing ratio and one partner
permutation per batch (as the mixup paper's reference code and CutMix's do), no Python loop
over images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import _validate as V

__all__ = ["MIXINGS", "DEFAULT_MIX_ALPHA", "MixedLabels", "mixup", "cutmix", "cutmix_box", "mixed_target",
           "BatchMixer", "distillation_loss"]

MIXINGS = ("none", "mixup", "cutmix")

# The Beta(alpha, alpha) parameter each method draws its mixing ratio from by default:
# 0.2 for mixup as GluonCV's train_imagenet.py (the code of "Bag of Tricks") uses
# (--mixup-alpha 0.2); 1.0 for CutMix, the CutMix paper's choice (a uniform ratio).
DEFAULT_MIX_ALPHA = {"mixup": 0.2, "cutmix": 1.0}


@dataclass(frozen=True)
class MixedLabels:
    """The labels of a mixed batch: image ``i`` is ``lam`` parts of an image of class
    ``y_a[i]`` and ``1 - lam`` parts of one of class ``y_b[i]``."""

    y_a: torch.Tensor  # (B,) int64: the labels of the batch itself
    y_b: torch.Tensor  # (B,) int64: the labels of the partners mixed in
    lam: float  # the weight of y_a, in [0, 1]

    def cross_entropy(self, logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` (batch mean).

        Cross-entropy is linear in the target distribution, so this is the cross-entropy
        against :func:`mixed_target` (and, with ``label_smoothing``, against the mixture of
        the two smoothed targets), computed without building the ``(B, classes)`` targets.
        """
        return (self.lam * F.cross_entropy(logits, self.y_a, label_smoothing=label_smoothing)
                + (1 - self.lam) * F.cross_entropy(logits, self.y_b, label_smoothing=label_smoothing))

    @property
    def dominant(self) -> torch.Tensor:
        """The label with the larger share, per image: what training accuracy counts."""
        return self.y_a if self.lam >= 0.5 else self.y_b


def mixed_target(y_a: torch.Tensor, y_b: torch.Tensor, lam: float, num_classes: int) -> torch.Tensor:
    """The soft target of mixup, ``lam * onehot(y_a) + (1 - lam) * onehot(y_b)``.
    ``(B,), (B,) -> (B, num_classes)``, float32; each row sums to 1."""
    return (lam * F.one_hot(y_a, num_classes).float()
            + (1 - lam) * F.one_hot(y_b, num_classes).float())


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float,
          perm: torch.Tensor) -> tuple[torch.Tensor, MixedLabels]:
    """Mixup (Zhang et al., 2018, Eq. 1): ``x~ = lam * x_i + (1 - lam) * x_j`` with the
    partner ``j = perm[i]``, and the label mixed by the same ratio.

    Args:
        x: a batch ``(B, C, H, W)`` of normalised images.
        y: its labels ``(B,)``.
        lam: the mixing ratio in [0, 1] (drawn from Beta(alpha, alpha) in training).
        perm: a permutation of ``range(B)`` on ``x``'s device: the partner of each image.

    Returns:
        The mixed batch (same shape) and its :class:`MixedLabels`.
    """
    return lam * x + (1 - lam) * x[perm], MixedLabels(y, y[perm], lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The box ``(top, bottom, left, right)`` that CutMix pastes (Yun et al., 2019, Sec. 3.1):
    sides ``H * sqrt(1 - lam)`` and ``W * sqrt(1 - lam)``, so that its area is ``1 - lam`` of
    the image, centred on a uniformly drawn pixel and clipped at the border (so the pasted
    area can be smaller: :func:`cutmix` weighs the labels by the area actually pasted)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix(x: torch.Tensor, y: torch.Tensor, box: tuple[int, int, int, int],
           perm: torch.Tensor) -> tuple[torch.Tensor, MixedLabels]:
    """CutMix (Yun et al., 2019, Eq. 1): paste the ``box`` of each image's partner
    ``perm[i]`` into it; the label weight of the image's own class is the area it keeps,
    ``lam = 1 - box area / image area``.

    Args:
        x: a batch ``(B, C, H, W)``.
        y: its labels ``(B,)``.
        box: ``(top, bottom, left, right)`` pixel bounds (bottom and right exclusive), the
            same for the whole batch, as :func:`cutmix_box` draws it.
        perm: a permutation of ``range(B)`` on ``x``'s device.

    Returns:
        The mixed batch (a new tensor; ``x`` is unchanged) and its :class:`MixedLabels`.
    """
    top, bottom, left, right = box
    h, w = x.shape[-2:]
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]  # (B, C, bh, bw)
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, MixedLabels(y, y[perm], lam)


class BatchMixer:
    """Draws and applies one epoch's mixing, batch after batch, reproducibly.

    Its random numbers come from a NumPy generator seeded with ``seed`` (``fit`` passes
    ``(config seed, epoch)``), never from the global random state, so a run resumed at an
    epoch boundary mixes exactly the batches the uninterrupted run would have mixed. Per
    batch: a ratio ``lam ~ Beta(alpha, alpha)``, a partner permutation and, for CutMix,
    a box.

    Args:
        kind: ``"mixup"`` or ``"cutmix"``.
        alpha: the Beta distribution's parameter (> 0); None: :data:`DEFAULT_MIX_ALPHA`.
        seed: seeds the generator (an int or a sequence of ints).
    """

    def __init__(self, kind: str, alpha: float | None, seed: int | tuple[int, ...]) -> None:
        if kind not in ("mixup", "cutmix"):
            raise ValueError(f"kind must be one of 'mixup', 'cutmix', got {kind!r}")
        self.kind = kind
        self.alpha = DEFAULT_MIX_ALPHA[kind] if alpha is None else V.positive_float("alpha", alpha)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, MixedLabels]:
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(self.rng.permutation(len(y))).to(x.device, non_blocking=True)
        if self.kind == "mixup":
            return mixup(x, y, lam, perm)
        return cutmix(x, y, cutmix_box(x.shape[-2], x.shape[-1], lam, self.rng), perm)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """The soft-target term of knowledge distillation (Hinton et al., 2015, Sec. 2):
    ``T^2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch.

    Hinton et al. train the student on the cross-entropy with the teacher's softened
    probabilities; the KL divergence differs from it by the teacher's entropy, which does
    not depend on the student, so the gradients are the same, and the KL is zero when the
    student matches the teacher. Its gradient with respect to a student logit is
    ``(softmax(s/T) - softmax(t/T)) / T``, which shrinks as ``1/T^2`` for large ``T`` (for
    zero-mean logits it tends to ``(s - t) / (K T^2)`` for ``K`` classes, their Eq. 3-4);
    the factor ``T^2`` keeps its size comparable with that of the hard-label term when ``T``
    changes, as they advise.

    Computed in float32 whatever the autocast dtype: the softened probabilities of a large
    ``T`` differ in decimals bfloat16 does not hold.

    Args:
        student_logits: ``(B, K)``.
        teacher_logits: ``(B, K)``, computed without gradient.
        temperature: ``T > 0``.

    Returns:
        A scalar tensor.
    """
    t = V.positive_float("temperature", temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
