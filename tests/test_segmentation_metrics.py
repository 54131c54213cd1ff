"""Segmentation metrics against a confusion matrix worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from cnnlearn.segmentation import boundary_band, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy

# A 3-class example, by hand. Rows are the truth, columns the prediction:
#            pred 0  pred 1  pred 2
# true 0        3       1       0      (4 pixels)
# true 1        0       2       2      (4 pixels)
# true 2        1       0       1      (2 pixels)
# accuracy = (3 + 2 + 1) / 10 = 0.6
# IoU_0 = 3 / (4 + 4 - 3) = 3/5; IoU_1 = 2 / (4 + 3 - 2) = 2/5; IoU_2 = 1 / (2 + 3 - 1) = 1/4
# mean IoU = (0.6 + 0.4 + 0.25) / 3 = 0.41666...
HAND = torch.tensor([[3, 1, 0], [0, 2, 2], [1, 0, 1]])
TRUE = torch.tensor([[0, 0, 0, 0, 1], [1, 1, 1, 2, 2]])
PRED = torch.tensor([[0, 0, 0, 1, 1], [1, 2, 2, 0, 2]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TRUE, 3)
    assert torch.equal(cm, HAND)
    assert cm.dtype == torch.int64


def test_metrics_by_hand():
    assert pixel_accuracy(HAND) == pytest.approx(0.6)
    torch.testing.assert_close(iou_per_class(HAND), torch.tensor([3 / 5, 2 / 5, 1 / 4], dtype=torch.float64))
    assert mean_iou(HAND) == pytest.approx((0.6 + 0.4 + 0.25) / 3)


def test_ignore_index_leaves_pixels_out():
    target = TRUE.clone()
    target[0, 0] = target[1, 4] = 255  # a true-0 predicted 0 and a true-2 predicted 2
    pred = PRED.clone()
    pred[0, 0] = 7  # whatever is predicted on an ignored pixel is not counted
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    assert torch.equal(cm, HAND - torch.diag(torch.tensor([1, 0, 1])))
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(PRED, target, 3)


def test_absent_class_has_no_iou_and_is_skipped():
    cm = torch.tensor([[5, 0, 1], [0, 0, 0], [1, 0, 3]])  # class 1: neither true nor predicted
    iou = iou_per_class(cm)
    assert math.isnan(iou[1])
    assert mean_iou(cm) == pytest.approx((5 / 7 + 3 / 5) / 2)
    # a class predicted but never true has IoU 0 and counts
    cm[0, 1] = 2
    assert iou_per_class(cm)[1] == 0 and mean_iou(cm) == pytest.approx((5 / 9 + 0 + 3 / 5) / 3)


def test_metrics_from_logits_on_a_batch():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    cm = confusion_matrix(logits.argmax(1), target, 4)
    assert int(cm.sum()) == 128
    assert pixel_accuracy(cm) == pytest.approx((logits.argmax(1) == target).float().mean().item())
    perfect = confusion_matrix(target, target, 4)
    assert pixel_accuracy(perfect) == 1.0 and mean_iou(perfect) == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="argmax"):
        confusion_matrix(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), 3)
    with pytest.raises(ValueError, match="square"):
        mean_iou(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="negative"):
        mean_iou(torch.tensor([[1, -1], [0, 2]]))
    with pytest.raises(ValueError, match="NaN"):
        pixel_accuracy(torch.tensor([[1.0, float("nan")], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="num_classes"):  # mismatched class counts
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 0)


def test_boundary_band():
    masks = torch.zeros(1, 8, 8, dtype=torch.int64)
    masks[0, 2:6, 2:6] = 3  # a 4x4 square
    band = boundary_band(masks, width=1)
    # the square's outline, one pixel each side: the 6x6 ring around it minus its 2x2 core
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:7, 1:7] = True
    expected[3:5, 3:5] = False
    assert torch.equal(band[0], expected)
    assert not boundary_band(torch.zeros(2, 5, 5, dtype=torch.int64)).any()  # no border, no band
    masks[0, 0, :] = 255
    assert not boundary_band(masks, width=1)[0, 0].any()
    with pytest.raises(ValueError, match="width"):
        boundary_band(masks, width=0)
    with pytest.raises(ValueError, match="masks"):
        boundary_band(torch.zeros(8, 8, dtype=torch.int64))
