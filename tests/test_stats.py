"""cnnlearn.stats: verdicts against noise, with known inputs giving known sentences."""
from __future__ import annotations

import math

import pytest

import cnnlearn
from cnnlearn.stats import verdict, verdict_paired


def test_verdict_paired_outside_the_noise():
    # Differences 2.0, 1.8, 1.4: mean 1.733, stdev 0.3055, noise 2 * 0.3055 / sqrt(3) = 0.353.
    v = verdict_paired([72.0, 73.0, 71.5], [70.0, 71.2, 70.1], names=("SE-ResNet-20", "ResNet-20"))
    assert v.difference == pytest.approx(1.7333333)
    assert v.noise == pytest.approx(2 * math.sqrt(0.28 / 3) / math.sqrt(3))
    assert v.significant
    assert v.text == ("SE-ResNet-20 is higher than ResNet-20 by 1.7 points, outside the noise of ±0.4 points "
                      "(2 standard errors over 3 paired seeds)")
    assert str(v) == v.text


def test_verdict_paired_within_the_noise():
    # Differences -1.0, 2.0, 0.3: mean 0.433, stdev 1.504, noise 1.737.
    v = verdict_paired([70.0, 72.0, 71.0], [71.0, 70.0, 70.7])
    assert not v.significant and v.noise == pytest.approx(1.7372, abs=1e-4)
    assert v.text == ("no measurable difference between A and B (A - B = +0.4 points, within the "
                      "noise of ±1.7 points; 2 standard errors over 3 paired seeds)")


def test_verdict_paired_uses_the_noise_of_the_difference():
    # The seeds move both networks alike (60, 70, 80): each accuracy spreads by 10 points,
    # but B is consistently about a point lower, which pairing detects.
    v = verdict_paired([60.0, 70.0, 80.0], [59.0, 69.0, 79.2], names=("A", "B"), comparatives=("better", "worse"))
    assert v.significant and v.noise < 0.3
    assert v.text.startswith("A is better than B by 0.9 points")
    lower = verdict_paired([59.0, 69.0, 79.2], [60.0, 70.0, 80.0], unit="%", decimals=2)
    assert lower.difference == pytest.approx(-0.9333333)
    assert lower.text.startswith("A is lower than B by 0.93%, outside the noise of ±0.")


def test_verdict_paired_never_writes_minus_zero():
    # Differences -0.02, -0.05, +0.01: the mean, -0.02, rounds to zero at one decimal.
    v = verdict_paired([70.0, 71.0, 72.0], [70.02, 71.05, 71.99])
    assert not v.significant and "A - B = +0.0 points" in v.text and "-0.0" not in v.text


def test_a_difference_just_outside_the_noise_gets_the_decimals_to_show_it():
    v = verdict(10.53, 10.0, 0.52)
    assert v.significant and v.text.startswith("A is higher than B by 0.53 points, outside the noise of ±0.52")
    assert verdict(11.53, 10.0, 0.52).text.startswith("A is higher than B by 1.5 points, outside the noise of ±0.5 ")


def test_verdict_paired_with_one_seed_claims_nothing():
    v = verdict_paired([75.0], [71.0])
    assert v.difference == 4.0 and v.noise is None and not v.significant
    assert v.text == ("A - B = +4.0 points on a single seed, which gives no estimate of the noise: "
                      "no difference can be claimed")


def test_verdict_with_a_given_noise():
    v = verdict(12.5, 10.0, 1.2, names=("ShuffleNet v1", "v2"), unit="ms", comparatives=("slower", "faster"),
                noise_source="half the spread of the rounds")
    assert v.significant and v.difference == 2.5 and v.noise == 1.2
    assert v.text == ("ShuffleNet v1 is slower than v2 by 2.5 ms, outside the noise of ±1.2 ms "
                      "(half the spread of the rounds)")
    tie = verdict(70.0, 70.5, 0.8)
    assert not tie.significant
    assert tie.text == "no measurable difference between A and B (A - B = -0.5 points, within the noise of ±0.8 points)"
    assert not verdict(1.0, 0.0, 1.0).significant  # exactly at the noise is not outside it


def test_verdict_glue(monkeypatch):
    glued = {}
    monkeypatch.setattr(cnnlearn.viz, "glue", lambda key, value, display=False: glued.__setitem__(key, value))
    v = cnnlearn.verdict_paired([1.0, 2.0], [0.0, 1.0])
    assert v.glue("ch00_verdict") is None
    assert glued == {"ch00_verdict": v.text}


@pytest.mark.parametrize("call, message", [
    (lambda: verdict_paired([1.0, 2.0], [1.0]), "xs and ys must hold one result per seed each.*2 and 1"),
    (lambda: verdict_paired([], []), "xs and ys must hold one result per seed"),
    (lambda: verdict_paired([1.0, float("nan")], [1.0, 2.0]), "xs must hold finite numbers"),
    (lambda: verdict_paired(["a"], [1.0]), "xs must be a sequence of numbers"),
    (lambda: verdict_paired([1.0], [1.0], names=("A",)), "names must be two non-empty strings"),
    (lambda: verdict_paired([1.0], [1.0], decimals=-1), "decimals must be an int >= 0"),
    (lambda: verdict(1.0, 2.0, -0.1), "noise must be >= 0"),
    (lambda: verdict(1.0, 2.0, 0.1, comparatives=("higher",)), "comparatives must be two words"),
])
def test_verdict_rejects_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
