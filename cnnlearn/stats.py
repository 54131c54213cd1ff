"""Verdicts against noise: is A really higher than B, or is the difference noise?

A chapter that compares two networks trained at a small budget must say whether the
difference it measured is larger than the differences that come from the seed alone.
:func:`verdict_paired` does this for per-seed results (seed ``i`` of A paired with seed
``i`` of B), :func:`verdict` for two numbers and a noise level the caller estimated. Both
return a :class:`Verdict` whose sentence can go into the prose with ``.glue(key)``::

    v = cnnlearn.verdict_paired(se_accs, plain_accs, names=("SE-ResNet-20", "ResNet-20"))
    v.glue("ch06_verdict")   # "SE-ResNet-20 is higher than ResNet-20 by 0.9 points, ..."

**The threshold.** A difference counts only when it is larger than twice the standard
error of the *mean paired difference*, ``2 * stdev(a_i - b_i) / sqrt(n)``. Pairing by seed
removes what the two runs of a seed share (the same data order and, with equal
architectures, the same initial weights), so the standard error of the difference is
usually smaller than that of either accuracy. Two standard errors is the usual rule of
thumb, about a 95% interval for many seeds; with few seeds the standard error is itself
uncertain (with 3 seeds, Student's t puts about 82% of the noise inside two standard
errors, not 95%), so read "outside the noise" as "worth taking seriously at this budget",
not as a significance test. One seed gives no estimate of the noise, and then no
difference is ever claimed.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Verdict", "verdict", "verdict_paired", "NOISE_STANDARD_ERRORS"]

# How many standard errors of the difference a difference must exceed to be called real.
NOISE_STANDARD_ERRORS = 2.0


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing A with B: a sentence for the prose and its numbers."""

    text: str  # the sentence, e.g. "A is higher than B by 2.1 points, outside the noise of ±0.8 (...)"
    difference: float  # A - B (the mean paired difference for per-seed samples)
    noise: float | None  # the half-width a difference must exceed; None when it cannot be estimated
    significant: bool  # |difference| > noise; always False without a noise estimate

    def __str__(self) -> str:
        return self.text

    def glue(self, key: str) -> None:
        """Glue :attr:`text` as ``key`` for ``{glue:text}`key``` in the prose (see
        :func:`cnnlearn.viz.glue`). Returns nothing, so it can end a cell silently."""
        from .viz import glue

        glue(key, self.text)


def _number(value: float, decimals: int, unit: str, sign: bool = False) -> str:
    value = round(value, decimals) + 0.0  # a difference that rounds to zero reads "+0.0", never "-0.0"
    text = f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"
    # A word unit ("points", "ms") takes a space; a symbol ("%", "x") does not.
    return f"{text} {unit}" if unit[:1].isalpha() else f"{text}{unit}"


def _check_common(names: Sequence[str], decimals: int, comparatives: Sequence[str]) -> None:
    if not (len(names) == 2 and all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"names must be two non-empty strings, e.g. ('SE-ResNet-20', 'ResNet-20'); got {names!r}")
    if not (isinstance(decimals, int) and decimals >= 0):
        raise ValueError(f"decimals must be an int >= 0, got {decimals!r}")
    if not (len(comparatives) == 2 and all(isinstance(w, str) and w for w in comparatives)):
        raise ValueError(f"comparatives must be two words for A > B and A < B, e.g. ('higher', 'lower') "
                         f"or ('slower', 'faster'); got {comparatives!r}")


def _finite(values: Sequence[float], name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers, got {values!r}")
    return out


def _decide(
    difference: float, noise: float, names: Sequence[str], unit: str, decimals: int,
    comparatives: Sequence[str], noise_source: str,
) -> Verdict:
    a, b = names
    significant = abs(difference) > noise
    # A difference just outside the noise must not read as equal to it ("0.5, outside the
    # noise of ±0.5"): add decimals until the two printed numbers differ.
    while (significant and decimals < 6 and  # six decimals at most
           _number(abs(difference), decimals, unit) == _number(noise, decimals, unit)):
        decimals += 1
    size = _number(abs(difference), decimals, unit)
    noise_text = f"±{_number(noise, decimals, unit)}"
    source = f" ({noise_source})" if noise_source else ""
    if significant:
        word = comparatives[0] if difference > 0 else comparatives[1]
        text = f"{a} is {word} than {b} by {size}, outside the noise of {noise_text}{source}"
    else:
        source = f"; {noise_source}" if noise_source else ""
        text = (f"no measurable difference between {a} and {b} ({a} - {b} = "
                f"{_number(difference, decimals, unit, sign=True)}, within the noise of {noise_text}{source})")
    return Verdict(text, difference, noise, significant)


def verdict(
    a: float, b: float, noise: float, *, names: Sequence[str] = ("A", "B"), unit: str = "points",
    decimals: int = 1, comparatives: Sequence[str] = ("higher", "lower"), noise_source: str = "",
) -> Verdict:
    """Compare two measured values against a noise level the caller estimated.

    Use :func:`verdict_paired` when per-seed results exist; this form is for one value each
    with a noise estimated otherwise, e.g. two binomial standard errors of a test accuracy
    or the spread between repeated timing rounds.

    Args:
        a: the value of A, e.g. a test accuracy in percent.
        b: the value of B, in the same unit.
        noise: the half-width of the noise band (>= 0): ``a - b`` must exceed it in absolute
            value to count as a difference.
        names: what A and B are called in the sentence.
        unit: the unit after each number: a word ("points", "ms") gets a space, a symbol
            ("%") none, "" none.
        decimals: decimals of every number in the sentence.
        comparatives: the words for A > B and for A < B, e.g. ``("slower", "faster")`` for times.
        noise_source: how the noise was estimated, added in parentheses, e.g.
            ``"2 binomial standard errors on 10,000 test images"``.

    Returns:
        A :class:`Verdict`; ``.difference`` is ``a - b``, ``.noise`` is ``noise``.
    """
    _check_common(names, decimals, comparatives)
    a, b, noise = _finite([a, b, noise], "a, b and noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (the half-width of the noise band), got {noise}")
    return _decide(a - b, noise, names, unit, decimals, comparatives, noise_source)


def verdict_paired(
    xs: Sequence[float], ys: Sequence[float], *, names: Sequence[str] = ("A", "B"), unit: str = "points",
    decimals: int = 1, comparatives: Sequence[str] = ("higher", "lower"), pairs: str = "paired seeds",
) -> Verdict:
    """Compare per-seed results of A and B: the mean paired difference against twice its
    standard error (see the module's docstring for why two).

    Args:
        xs: A's result for each seed, e.g. final test accuracies in percent.
        ys: B's result for the same seeds, in the same order (``ys[i]`` pairs with ``xs[i]``).
        names: what A and B are called in the sentence.
        unit: the unit after each number ("points" for percentage points, "ms", "%").
        decimals: decimals of every number in the sentence.
        comparatives: the words for A > B and for A < B, e.g. ``("slower", "faster")``.
        pairs: what one pair is called in the sentence ("paired seeds", "paired runs").

    Returns:
        A :class:`Verdict`: ``.difference`` is ``mean(xs[i] - ys[i])``; ``.noise`` is
        ``2 * stdev(xs[i] - ys[i]) / sqrt(n)``, or None for a single seed, which never
        counts as a difference.
    """
    _check_common(names, decimals, comparatives)
    xs, ys = _finite(xs, "xs"), _finite(ys, "ys")
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"xs and ys must hold one result per seed each, paired by position; "
                         f"got {len(xs)} and {len(ys)} values")
    diffs = [x - y for x, y in zip(xs, ys)]
    difference = statistics.fmean(diffs)
    if len(diffs) == 1:
        a, b = names
        text = (f"{a} - {b} = {_number(difference, decimals, unit, sign=True)} on a single seed, "
                f"which gives no estimate of the noise: no difference can be claimed")
        return Verdict(text, difference, None, False)
    noise = NOISE_STANDARD_ERRORS * statistics.stdev(diffs) / math.sqrt(len(diffs))
    source = f"{NOISE_STANDARD_ERRORS:g} standard errors over {len(diffs)} {pairs}"
    return _decide(difference, noise, names, unit, decimals, comparatives, source)
