"""Pictures: feature maps, filters, image grids, training curves, confusion matrices.

Every function returns the matplotlib ``Figure`` it drew (so a notebook can save or
glue it) and labels its axes.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from .train import History

__all__ = [
    "feature_maps", "show_feature_maps", "show_filters", "show_images", "plot_history",
    "plot_confusion", "show_source", "glue",
]


def feature_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named sub-modules for input ``x``, via forward hooks.

    Args:
        model: the network (run in eval mode; its mode is restored).
        x: a batch ``(B, C, H, W)`` on the model's device.
        layers: names from ``model.named_modules()``, e.g. ``["stem", "stages.stage1"]``.

    Returns:
        ``{name: tensor}``, each detached from the graph and moved to the CPU.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        names = [n for n in modules if n and n.count(".") < 2]
        raise ValueError(f"no layer named {unknown}; some names this model has: {names[:20]}")
    maps: dict[str, torch.Tensor] = {}
    # Copy each output: on the CPU ``.cpu()`` returns the same storage, which a later
    # in-place layer (``ReLU(inplace=True)``) would overwrite.
    hooks = [modules[n].register_forward_hook(
        lambda _m, _inp, out, n=n: maps.__setitem__(n, out.detach().to("cpu", copy=True))) for n in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return maps


def show_feature_maps(
    model: nn.Module, image: torch.Tensor, layers: Sequence[str], n: int = 12, ncols: int = 6,
):
    """The first ``n`` channels of each named layer's output for one image, one row block per layer.

    Args:
        model: the network.
        image: one normalised image ``(C, H, W)`` or ``(1, C, H, W)`` on the model's device.
        layers: layer names (see :func:`feature_maps`).
        n: channels shown per layer.
        ncols: maps per row.
    """
    x = image if image.ndim == 4 else image.unsqueeze(0)  # add the batch axis
    maps = feature_maps(model, x, layers)
    rows_per = math.ceil(n / ncols)
    fig, axes = plt.subplots(rows_per * len(layers), ncols, squeeze=False,
                             figsize=(1.6 * ncols, 1.75 * rows_per * len(layers)))
    for li, name in enumerate(layers):
        fmap = maps[name][0]  # drop the batch axis: (C, H, W)
        for j in range(rows_per * ncols):
            ax = axes[li * rows_per + j // ncols, j % ncols]
            ax.axis("off")
            if j < min(n, fmap.shape[0]):
                ax.imshow(fmap[j].numpy(), cmap="viridis")
                ax.set_title(f"ch {j}", fontsize=7)
        axes[li * rows_per, 0].text(-0.15, 0.5, f"{name}\n{tuple(fmap.shape)}", transform=axes[li * rows_per, 0].transAxes,
                                    ha="right", va="center", fontsize=8)
    fig.suptitle("Feature maps (first channels of each layer's output)")
    fig.tight_layout()
    return fig


def show_filters(weight: torch.Tensor, n: int = 32, ncols: int = 8, title: str = "Filters"):
    """The first ``n`` filters of a convolution's weight ``(C_out, C_in, k, k)``.

    RGB filters (``C_in == 3``) are drawn in colour, each rescaled to [0, 1];
    others show their first input channel in grey.
    """
    w = weight.detach().float().cpu()
    n = min(n, w.shape[0])
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(1.1 * ncols, 1.2 * nrows))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        f = w[i]
        f = (f - f.min()) / (f.max() - f.min() + 1e-8)
        if f.shape[0] == 3:
            ax.imshow(f.permute(1, 2, 0).numpy())  # (C, k, k) -> (k, k, C) for imshow
        else:
            ax.imshow(f[0].numpy(), cmap="gray")
    fig.suptitle(f"{title}: {n} of {w.shape[0]}, {w.shape[2]}x{w.shape[3]}")
    fig.tight_layout()
    return fig


def show_images(
    images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None, ncols: int = 8, title: str = "",
    predictions: Sequence[int] | torch.Tensor | None = None,
):
    """A grid of images ``(N, C, H, W)``: uint8, or floats in [0, 1]. Titles give the
    class names; with ``predictions``, wrong ones are shown in red."""
    imgs = images.detach().cpu()
    if imgs.dtype == torch.uint8:
        imgs = imgs.float() / 255
    n = len(imgs)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(1.3 * ncols, 1.5 * nrows))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = imgs[i].permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        if labels is not None:
            lab = int(labels[i])
            text = classes[lab] if classes else str(lab)
            color = "black"
            if predictions is not None:
                pred = int(predictions[i])
                color = "black" if pred == lab else "red"
                text = f"{classes[pred] if classes else pred}" + ("" if pred == lab else f"\n(is {text})")
            ax.set_title(text, fontsize=7, color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(histories: History | Mapping[str, History], title: str = "Training curves"):
    """Loss and error curves of one run or of several named runs (train dashed, test solid).

    The loss axis is logarithmic, so that an early spike (a test loss of 25 in the first
    epoch is common with BatchNorm and few steps) does not flatten every later value. With
    several runs, one legend beside the plots names the runs by colour and the line styles.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    if isinstance(histories, History):
        histories = {"": histories}
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, (name, h) in enumerate(histories.items()):
        c = colors[i % len(colors)]
        ax_loss.plot(h.epoch, h.train_loss, "--", color=c)
        ax_loss.plot(h.epoch, h.test_loss, "-", color=c)
        ax_err.plot(h.epoch, [100 * (1 - a) for a in h.train_acc], "--", color=c)
        ax_err.plot(h.epoch, [100 * (1 - a) for a in h.test_acc], "-", color=c)
        if name:
            handles.append(Line2D([], [], color=c, label=name))
    handles += [Line2D([], [], color="gray", ls="--", label="train"),
                Line2D([], [], color="gray", ls="-", label="test")]
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss (log scale)", title="Loss", yscale="log")
    ax_loss.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))  # ... 1, 2, 3, 5, 7, 10 ...
    ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%g"))        # plain numbers, not 2x10^0
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="Error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    if len(handles) > 2:   # several runs: one legend for both plots, beside them
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    else:
        ax_err.legend(handles=handles, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(
    predictions: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str = "Confusion matrix",
):
    """Row-normalised confusion matrix (rows: true class, columns: predicted), in percent."""
    k = len(classes)
    cm = torch.bincount(labels.cpu() * k + predictions.cpu(), minlength=k * k).reshape(k, k).float()
    cm = 100 * cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 1.5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > 50 else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(im, ax=ax, label="% of the true class")
    fig.tight_layout()
    return fig


def show_source(obj) -> None:
    """Display the source code of a class or function of the package, highlighted."""
    src = inspect.getsource(obj)
    try:
        from IPython.display import Code, display

        display(Code(src, language="python"))
    except ImportError:  # outside IPython: plain text
        print(src)


def glue(name: str, value, display: bool = False) -> None:
    """Make ``value`` available to the book's prose as ``{glue:text}`name```.

    Uses MyST-NB's ``glue`` when it is installed (building the book); in Colab or
    plain Jupyter without it, nothing happens, so notebooks run anywhere. Returns
    nothing, so a ``glue(...)`` that ends a cell adds no stray output.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)
