"""Copying a reference model's weights into ours, by explicit names.

Every equivalence test of the book copies torchvision's or timm's weights into our
from-scratch network and compares outputs. The copy must be *checked*: each of their
tensors goes to exactly one of ours with the same shape, and none of ours is left
unset. A copy that passes these checks and then gives equal outputs shows that the two
networks compute the same function. Each family module writes only its name mapping.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["copy_weights", "rename", "load_by_prefix", "randomize_batchnorm", "compare_outputs",
           "OutputComparison"]


def copy_weights(ours: nn.Module, theirs: nn.Module,
                 rename: Callable[[str], str] | Mapping[str, str]) -> nn.Module:
    """Copy every tensor of ``theirs`` (parameters and buffers) into ``ours``.

    Args:
        ours: the model to fill.
        theirs: the reference model.
        rename: maps each of their tensor names to ours; a function or a dict.

    Returns:
        ``ours``.

    Raises:
        ValueError: a name has no counterpart, two names map to one, shapes differ, or
            one of our tensors is left unset. Nothing is copied then.
    """
    src, dst = theirs.state_dict(), ours.state_dict()
    lookup = rename.__getitem__ if isinstance(rename, Mapping) else rename
    mapped: dict[str, torch.Tensor] = {}
    for their_name, tensor in src.items():
        try:
            our_name = lookup(their_name)
        except KeyError:
            raise ValueError(f"their tensor {their_name!r} has no counterpart in our model") from None
        if our_name not in dst:
            raise ValueError(f"{their_name!r} maps to {our_name!r}, which our model does not have")
        if dst[our_name].shape != tensor.shape:
            raise ValueError(f"shape mismatch: theirs {their_name} {tuple(tensor.shape)} vs "
                             f"ours {our_name} {tuple(dst[our_name].shape)}")
        if our_name in mapped:
            raise ValueError(f"two of their tensors map to {our_name!r}")
        mapped[our_name] = tensor
    missing = sorted(set(dst) - set(mapped))
    if missing:
        raise ValueError(f"the mapping leaves {len(missing)} of our tensors unset, e.g. {missing[:3]}")
    ours.load_state_dict(mapped)
    return ours


def rename(name: str, rules: Sequence[tuple[str, str]]) -> str:
    """Apply the first ``(regex, replacement)`` rule that matches all of ``name``.

    Raises:
        KeyError: no rule matches (``copy_weights`` reports it as a ``ValueError``).
    """
    for pattern, repl in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    raise KeyError(name)


def load_by_prefix(ours: nn.Module, theirs: nn.Module, pairs: Sequence[tuple[str, str]]) -> nn.Module:
    """Copy weights through a map of module names: each ``(our_prefix, their_prefix)``
    sends every tensor under their module to the same suffix under ours, e.g.
    ``("stem", "features.0")`` sends ``features.0.1.running_mean`` to ``stem.1.running_mean``.

    Raises:
        ValueError: a prefix matches nothing, a tensor is mapped twice, or
            :func:`copy_weights`' checks fail.
    """
    dst = ours.state_dict()
    their_to_ours: dict[str, str] = {}
    for our_prefix, their_prefix in pairs:
        keys = [k for k in dst if k.startswith(our_prefix + ".")]
        if not keys:
            raise ValueError(f"our model has no tensors under {our_prefix!r}")
        for k in keys:
            their_key = their_prefix + k[len(our_prefix):]
            if their_key in their_to_ours:
                raise ValueError(f"{their_key!r} is mapped twice; check the prefix {our_prefix!r}")
            their_to_ours[their_key] = k
    return copy_weights(ours, theirs, their_to_ours)


def randomize_batchnorm(model: nn.Module, seed: int = 0, spread: float = 0.1) -> nn.Module:
    """Give every BatchNorm of ``model`` non-default affine parameters and statistics.

    A fresh BatchNorm in eval mode is the identity, so an equivalence test on fresh
    networks cannot notice a BN copied to the wrong layer or placed wrongly. Afterwards
    each BN has weight in [0.5, 1.5), bias and running mean ~ N(0, spread^2), and
    running variance in [0.5, 1.5), drawn from a generator seeded with ``seed`` (the
    global random state is untouched).

    Returns:
        ``model``, changed in place.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``, or ``spread`` is negative.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not spread >= 0:
        raise ValueError(f"spread must be >= 0, got {spread!r}")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * spread)
                m.running_mean.copy_(torch.randn(c, generator=g) * spread)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


@dataclass(frozen=True)
class OutputComparison:
    """What :func:`compare_outputs` measured; ``ok`` says whether the comparison proves anything."""

    max_difference: float  # largest |ours - reference| over the batch's outputs
    spread: float  # median over output elements of their standard deviation across the batch
    perturbed_difference: float  # largest |perturbed copy of ours - reference|
    atol: float  # the tolerance the three numbers are judged against

    @property
    def ok(self) -> bool:
        """Equal outputs, outputs that vary across inputs, and a perturbed copy told apart."""
        return not self.failures()

    def failures(self) -> list[str]:
        """One sentence per check that failed (empty when ``ok``)."""
        reasons = []
        if not self.max_difference <= self.atol:  # `not <=` also catches NaN
            reasons.append(f"the outputs differ by {self.max_difference:.1e} > atol={self.atol:.0e}")
        if not self.spread >= 10 * self.atol:
            reasons.append(f"the logits barely vary across inputs (spread {self.spread:.1e} < 10*atol): "
                           f"any two near-constant networks would agree")
        if not self.perturbed_difference > self.atol:
            reasons.append(f"a perturbed copy differs by only {self.perturbed_difference:.1e} <= atol: "
                           f"the comparison cannot see a changed weight")
        return reasons

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` naming every check that failed."""
        if not self.ok:
            raise AssertionError("equivalence check failed: " + "; ".join(self.failures()))

    def __str__(self) -> str:
        return (f"max difference {self.max_difference:.1e} | logits spread across inputs {self.spread:.1e}"
                f" | a perturbed copy differs by {self.perturbed_difference:.1e}")


def compare_outputs(ours: nn.Module, reference: nn.Module, inputs: torch.Tensor, *,
                    atol: float = 1e-5, perturb: str | Sequence[str] | None = None) -> OutputComparison:
    """Compare two networks' outputs in a way that can fail.

    Equal outputs alone prove little: two networks whose outputs hardly depend on the
    input (a deep net with random weights, or a branch silenced by a zero-initialised
    BatchNorm) agree whatever their weights. So besides the largest difference this
    measures how much the reference's outputs vary across the batch, and how far a copy of
    ``ours`` with one weight changed moves away from the reference.

    Both networks are put in eval mode (and left there). Randomise BatchNorms first with
    :func:`randomize_batchnorm`, or the comparison cannot see a misplaced BN.

    Args:
        ours: our network, with the reference's weights copied in.
        reference: the network it must equal.
        inputs: a batch of at least two different inputs, e.g. ``(4, 3, 224, 224)``.
        atol: the largest absolute difference accepted.
        perturb: more parameter names of ``ours`` to perturb, one copy each (e.g. an SE
            unit's, which a zero-initialised BN before it would silence). The weight
            tensor (a parameter of two or more dimensions) halfway through the network is
            always perturbed; ``perturbed_difference`` is the smallest over the copies.

    Returns:
        An :class:`OutputComparison`; call ``.assert_ok()`` on it to fail loudly.

    Raises:
        ValueError: ``inputs`` holds fewer than two inputs, ``atol`` is not positive,
            ``perturb`` names no parameter of ``ours``, or the two output shapes differ.
    """
    if len(inputs) < 2:
        raise ValueError(f"inputs must hold at least two inputs (outputs vary only across a batch), "
                         f"got a batch of {len(inputs)}")
    if not atol > 0:
        raise ValueError(f"atol must be > 0, got {atol!r}")
    ours.eval(), reference.eval()
    with torch.no_grad():
        expected, actual = reference(inputs), ours(inputs)
        if actual.shape != expected.shape:
            raise ValueError(f"output shapes differ: ours {tuple(actual.shape)}, "
                             f"reference {tuple(expected.shape)}")
        difference = (actual - expected).abs().max().item()
        # (B, ...) -> one standard deviation across the batch per output element -> their median
        spread = expected.reshape(len(expected), -1).std(0).median().item()

        weights = [n for n, p in ours.named_parameters() if p.ndim > 1]
        if not weights:
            raise ValueError("ours has no weight tensor (a parameter of 2+ dimensions) to perturb")
        names = [weights[len(weights) // 2], *([perturb] if isinstance(perturb, str) else perturb or [])]
        g = torch.Generator().manual_seed(0)
        perturbed_difference = float("inf")
        for name in names:
            perturbed = copy.deepcopy(ours)
            try:
                p = perturbed.get_parameter(name)
            except AttributeError:
                raise ValueError(f"perturb names {name!r}, which is not a parameter of ours") from None
            # a change of about 10% of the tensor's typical size (plus a floor for all-zero tensors)
            p.add_(torch.randn(p.shape, generator=g).to(p) * 0.1 * (p.abs().mean() + 1e-2))
            moved = (perturbed(inputs) - expected).abs().max().item()
            perturbed_difference = min(perturbed_difference, moved)
    return OutputComparison(difference, spread, perturbed_difference, atol)
