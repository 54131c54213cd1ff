"""Copying a reference model's weights into ours, by explicit names.

Every equivalence test of the book copies torchvision's or timm's weights into our
from-scratch network and compares outputs. The copy must be *checked*: each of their
tensors goes to exactly one of ours with the same shape, and none of ours is left
unset. A copy that passes these checks and then gives equal outputs shows that the two
networks compute the same function. Each family module writes only its name mapping.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["copy_weights", "rename", "load_by_prefix", "randomize_batchnorm"]


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
