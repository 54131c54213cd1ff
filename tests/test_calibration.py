"""cnnlearn.measure.calibration: expected calibration error and reliability-diagram bins."""
from __future__ import annotations

import pytest
import torch

from cnnlearn.measure import calibration


def test_a_calibrated_classifier_has_zero_ece():
    # 10 images at confidence 0.8, 8 of them right; 10 at 0.6, 6 right: each bin's accuracy = confidence
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    c = calibration(probs, labels, bins=10)
    assert c.ece == pytest.approx(0.0, abs=1e-6)
    assert c.accuracy == pytest.approx(0.7) and c.mean_confidence == pytest.approx(0.7)
    assert sum(c.bin_count) == 20 and len(c.bin_edges) == 11


def test_an_overconfident_classifier_has_the_gap_as_ece():
    # always 0.9 sure, right half the time: ECE = |0.5 - 0.9| = 0.4; bins above accuracy
    probs = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0, 1] * 5)
    c = calibration(probs, labels, bins=15)
    assert c.ece == pytest.approx(0.4, abs=1e-6)
    full = [i for i, n in enumerate(c.bin_count) if n]
    assert full == [13]                              # 0.9 lies in (13/15, 14/15]
    assert c.bin_confidence[13] == pytest.approx(0.9) and c.bin_accuracy[13] == pytest.approx(0.5)
    assert all(v != v for i, v in enumerate(c.bin_accuracy) if i != 13)   # empty bins are NaN


def test_ece_weights_bins_by_their_share_of_images():
    # 30 images at 0.95 all right (gap 0.05), 10 at 0.55 none right (gap 0.55): (30*0.05 + 10*0.55) / 40
    probs = torch.tensor([[0.95, 0.05]] * 30 + [[0.55, 0.45]] * 10)
    labels = torch.tensor([0] * 30 + [1] * 10)
    assert calibration(probs, labels).ece == pytest.approx((30 * 0.05 + 10 * 0.55) / 40, abs=1e-6)


@pytest.mark.parametrize("probs, labels, bins, match", [
    (torch.tensor([[2.0, 1.0]]), torch.tensor([0]), 15, "sum to 1"),
    (torch.tensor([0.5, 0.5]), torch.tensor([0]), 15, "an \\(N, classes\\) tensor"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0, 1]), 15, "same N"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0]), 0, "bins must be an int"),
])
def test_bad_arguments_raise(probs, labels, bins, match):
    with pytest.raises(ValueError, match=match):
        calibration(probs, labels, bins)
