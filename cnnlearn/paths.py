"""A residual network unrolled into paths, and the gradient that each path length carries.

Veit, Wilber and Belongie, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks", NeurIPS 2016, arXiv:1605.06431.

A residual block computes ``act(F(x) + s(x))``: a branch ``F`` and a shortcut ``s``. In
the backward pass the gradient that reaches the block's output splits in two, one part
through the branch and one through the shortcut, so through ``n`` blocks the gradient at
the input is a sum over ``2**n`` paths, each a choice of branch or shortcut in every
block. A path's **length** is the number of branches it passes through; ``math.comb(n, k)``
paths have length ``k``. Veit et al. (Sec. 5) measured the gradient of single paths: one
forward pass as usual, then a backward pass that, in ``k`` sampled blocks, lets the
gradient through the branch only and, in the other ``n - k``, through the shortcut only.
The gradient of a path shrinks quickly with its length, so, weighted by how many paths
there are of each length, most of the gradient comes from paths far shorter than the
network (in their ResNet-110 of 54 blocks, paths through 5 to 17 blocks).

The network runs in eval mode here: BatchNorm then normalises with fixed statistics, each
image is processed on its own, and the ``2**n`` path gradients add up exactly to the
ordinary input gradient (``tests/test_paths.py`` checks it). The ReLU masks are those of
the forward pass, shared by all paths.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["residual_blocks", "path_input_gradient", "gradient_by_path_length", "PathGradients"]


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of ``model``, in the order ``model.modules()`` lists them (for
    the book's networks, the order of the forward pass).

    A residual block is a module with ``residual=True``, a ``shortcut`` module and an
    ``attn`` module that ends its branch, as cnnlearn's ``BasicBlock``, ``Bottleneck`` and
    ``PreActBasicBlock`` (their ``attn`` is the identity unless squeeze-and-excitation is
    used). Plain blocks (``residual=False``) are not residual blocks.

    Raises:
        ValueError: ``model`` has no residual block.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    blocks = [m for m in model.modules()
              if getattr(m, "residual", False) is True and isinstance(getattr(m, "shortcut", None), nn.Module)
              and isinstance(getattr(m, "attn", None), nn.Module)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no residual blocks (modules with residual=True, a "
                         f"shortcut and an attn module, as cnnlearn's BasicBlock): a plain network has a "
                         f"single path, there is nothing to unroll")
    return blocks


class _PathRouter:
    """Forward hooks that route the backward pass of every residual block through its
    branch only or its shortcut only; ``through`` (block indices) says which blocks route
    it through the branch. The routing is read when the gradient passes, so one forward
    pass serves any number of backward passes."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.through: frozenset[int] = frozenset()
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.attn.register_forward_hook(partial(self._route, i, True)))
            self.handles.append(block.shortcut.register_forward_hook(partial(self._route, i, False)))

    def _route(self, index: int, branch: bool, module: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
        # A new tensor, so that the hook sees only this path's gradient: an identity
        # shortcut returns the block's input itself, which the branch reads too.
        out = out * 1.0

        def gate(grad: torch.Tensor) -> torch.Tensor:
            return grad if (index in self.through) == branch else torch.zeros_like(grad)

        out.register_hook(gate)
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 2):
        raise ValueError(f"x must be a floating-point batch of inputs (B, C, H, W), got "
                         f"{type(x).__name__ if not isinstance(x, torch.Tensor) else (x.dtype, tuple(x.shape))}")
    if not (isinstance(y, torch.Tensor) and y.ndim == 1 and len(y) == len(x) and not y.is_floating_point()):
        raise ValueError(f"y must hold one integer class label per input ({len(x)}), got "
                         f"{y!r:.80}")


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, router: _PathRouter | None,
                    paths: Sequence[frozenset[int]]) -> list[torch.Tensor]:
    """One forward pass in eval mode, one backward pass per path (all paths when ``router``
    is None: the ordinary gradient). The loss is the cross-entropy summed over the batch,
    so each image's gradient does not depend on the batch size."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), y, reduction="sum")
            grads = []
            for i, path in enumerate(paths):
                if router is not None:
                    router.through = path
                (g,) = torch.autograd.grad(loss, x, retain_graph=i + 1 < len(paths))
                grads.append(g)
    finally:
        model.train(was_training)
    return grads


def _check_path(through: Collection[int], n: int) -> frozenset[int]:
    try:
        path = frozenset(int(i) for i in through)
    except (TypeError, ValueError):
        raise ValueError(f"through must be a collection of block indices, got {through!r}") from None
    if any(i < 0 or i >= n for i in path) or len(path) != len(list(through)):
        raise ValueError(f"through must hold distinct block indices in 0..{n - 1} (the network has {n} "
                         f"residual blocks), got {sorted(through)}")
    return path


def path_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        through: Collection[int]) -> torch.Tensor:
    """The gradient at the input that flows along one path of a residual network.

    The forward pass is the network's own (eval mode); in the backward pass the gradient
    goes through the branch of the blocks in ``through`` and through the shortcut of
    every other block. Summed over all ``2**n`` choices of ``through``, these gradients
    give the ordinary gradient of the loss at the input.

    Args:
        model: a network with residual blocks (see :func:`residual_blocks`); its
            train/eval mode is restored afterwards and its weights get no gradient.
        x: a batch of inputs, as the network takes them (normalised images).
        y: their class labels.
        through: indices (into :func:`residual_blocks`) of the blocks whose branch the
            path passes through; ``len(through)`` is the path's length.

    Returns:
        ``d loss / d x`` along the path, the shape of ``x``; the loss is the cross-entropy
        summed over the batch.
    """
    blocks = residual_blocks(model)
    _check_inputs(model, x, y)
    path = _check_path(through, len(blocks))
    router = _PathRouter(blocks)
    try:
        return _input_gradient(model, x, y, router, [path])[0]
    finally:
        router.remove()


@dataclass(frozen=True)
class PathGradients:
    """The gradient by path length of one network on one batch (Veit et al. 2016, Fig. 6)."""

    blocks: int  # n, the residual blocks of the network
    lengths: tuple[int, ...]  # the path lengths measured (branches passed through)
    mean_norm: tuple[float, ...]  # per length: the norm of one image's input gradient along one path, averaged
    paths_measured: tuple[int, ...]  # per length: how many paths were sampled (all of them where there are few)

    @property
    def num_paths(self) -> tuple[int, ...]:
        """Per length: how many paths of that length the network has, ``comb(n, k)``."""
        return tuple(math.comb(self.blocks, k) for k in self.lengths)

    @property
    def total(self) -> tuple[float, ...]:
        """Per length: the gradient magnitude all paths of that length carry together,
        ``comb(n, k) * mean_norm[k]``, as Veit et al.'s Fig. 6(c)."""
        return tuple(c * g for c, g in zip(self.num_paths, self.mean_norm))

    def mean_length(self, weighted: bool = True) -> float:
        """The mean path length, each length weighted by the gradient it carries
        (:attr:`total`), or, with ``weighted=False``, by its number of paths."""
        weights = self.total if weighted else self.num_paths
        return sum(k * w for k, w in zip(self.lengths, weights)) / sum(weights)

    def range_holding(self, share: float = 0.9) -> tuple[int, int]:
        """The narrowest range of consecutive lengths ``(lo, hi)`` whose paths carry at
        least ``share`` of the total gradient (the first such range where several tie)."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        total, best = sum(self.total), None
        for i in range(len(self.lengths)):
            carried = 0.0
            for j in range(i, len(self.lengths)):
                carried += self.total[j]
                if carried >= share * total * (1 - 1e-12):
                    if best is None or j - i < best[1] - best[0]:
                        best = (i, j)
                    break
        return self.lengths[best[0]], self.lengths[best[1]]


def gradient_by_path_length(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, samples: int = 3,
    lengths: Sequence[int] | None = None, seed: int = 0,
) -> PathGradients:
    """Veit et al.'s measurement: the input gradient along single paths, by path length.

    For each length ``k``, ``samples`` paths are drawn at random (every path where there
    are at most ``samples``), and the norm of each image's input gradient along each path
    is averaged. One forward pass serves all the backward passes.

    Args:
        model: a network with residual blocks (see :func:`residual_blocks`).
        x: a batch of inputs, as the network takes them.
        y: their class labels.
        samples: paths drawn per length.
        lengths: the lengths to measure (default: every length, 0 to n).
        seed: seeds the choice of paths.

    Returns:
        A :class:`PathGradients`.
    """
    blocks = residual_blocks(model)
    _check_inputs(model, x, y)
    n = len(blocks)
    if not (isinstance(samples, int) and not isinstance(samples, bool) and samples > 0):
        raise ValueError(f"samples must be a positive int (paths drawn per length), got {samples!r}")
    lengths = tuple(range(n + 1)) if lengths is None else tuple(lengths)
    if not lengths or any(not isinstance(k, int) or not 0 <= k <= n for k in lengths):
        raise ValueError(f"lengths must be path lengths in 0..{n} (the network has {n} residual blocks), "
                         f"got {lengths!r}")
    rng = random.Random(seed)
    chosen: list[list[frozenset[int]]] = []
    for k in lengths:
        if math.comb(n, k) <= samples:  # few paths of this length: measure them all
            chosen.append([frozenset(c) for c in itertools.combinations(range(n), k)])
        else:
            chosen.append([frozenset(rng.sample(range(n), k)) for _ in range(samples)])
    router = _PathRouter(blocks)
    try:
        grads = _input_gradient(model, x, y, router, [p for paths in chosen for p in paths])
    finally:
        router.remove()
    norms, start = [], 0
    for paths in chosen:
        per_path = [g.flatten(1).norm(dim=1).mean().item() for g in grads[start:start + len(paths)]]
        norms.append(sum(per_path) / len(per_path))
        start += len(paths)
    return PathGradients(n, lengths, tuple(norms), tuple(len(p) for p in chosen))
