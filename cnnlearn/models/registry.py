"""The model registry: every network in the book, by name (a plain dict, as timm's ``_registry.py``).

A plain dict maps a name to a factory function. Each model module registers its
factories with :func:`register_model` when it is imported; importing this package
(``cnnlearn.models``) imports every model module, so ``create_model("resnet50")`` works without the reader
knowing which file a network lives in.
"""
from __future__ import annotations

import difflib
from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name (used as a decorator)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Names of the registered networks, sorted; only those containing ``pattern``."""
    return sorted(n for n in _MODELS if pattern in n)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network by name.

    Args:
        name: a name from :func:`list_models`, e.g. ``"resnet50"`` or ``"alexnet_cifar"``.
        **kwargs: passed to the factory, e.g. ``num_classes=10``.

    Returns:
        The freshly initialised ``nn.Module``.

    Raises:
        ValueError: the name is unknown; the message lists the closest names.
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    try:
        factory = _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} cnnlearn.list_models() lists all {len(_MODELS)}."
        ) from None
    return factory(**kwargs)
