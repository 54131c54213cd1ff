"""Pictures: feature maps, filters, image grids, training curves, confusion matrices.

Every function returns the matplotlib ``Figure`` it drew (so a notebook can save or
glue it). The book's figure style is applied here, so that every chapter gets it alike:

* every figure has a title and its axes are labelled with units;
* constrained layout (``layout="constrained"``), so labels, titles and colour bars do not
  overlap; :func:`subplots` gives a chapter's own figures the same;
* accuracy plots show the chance level (:func:`accuracy_axes`, ``plot_history(...,
  num_classes=10)``), and accuracy bars start at zero (:func:`bar_compare`), so that a
  short bar is never drawn as a long one;
* :data:`STYLE`, set by ``cnnlearn.setup()`` through :func:`use_style`, or for one block
  with ``with viz.style(): ...``.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from . import _validate as V
from .train import History

__all__ = [
    "feature_maps", "show_feature_maps", "show_filters", "show_images", "plot_history",
    "plot_confusion", "show_source", "glue", "STYLE", "use_style", "style", "subplots",
    "accuracy_axes", "bar_compare",
]


# --------------------------------------------------------------------------- style

# rcParams of every figure of the book. Constrained layout is *not* among them: a
# chapter's figure that calls ``fig.tight_layout()`` after constrained layout was switched
# on globally gets a warning, or an error when it has a colour bar; so the helpers here
# and :func:`subplots` ask for it per figure instead.
STYLE: dict[str, object] = {
    "axes.titlesize": "medium",
    "figure.titlesize": "large",
    "legend.fontsize": "small",
    "legend.framealpha": 0.85,
    "grid.alpha": 0.3,
}

# How the chance level is drawn on every accuracy plot.
_CHANCE = {"color": "0.35", "linestyle": ":", "linewidth": 1.5}


def use_style() -> None:
    """Apply :data:`STYLE` to every later figure (``cnnlearn.setup()`` calls this)."""
    plt.rcParams.update(STYLE)


def style(constrained: bool = True) -> contextlib.AbstractContextManager:
    """:data:`STYLE` for the figures created inside a ``with`` block, constrained layout
    included (unless ``constrained=False``); the previous settings come back afterwards."""
    return plt.rc_context({**STYLE, "figure.constrained_layout.use": constrained})


def subplots(*args, **kwargs):
    """``plt.subplots`` with constrained layout: no ``tight_layout()`` needed, and titles,
    labels and colour bars do not overlap. Arguments as for ``plt.subplots``."""
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(*args, **kwargs)


def accuracy_axes(ax, chance: float | None = None, *, zero: bool = True, unit: str = "%",
                  label: str | None = None):
    """Make an accuracy axis honest: the y axis starts at zero and a dotted line marks
    the accuracy of guessing.

    Call it after plotting, so that zero is added to the limits the data chose.

    Args:
        ax: axes whose y axis shows an accuracy.
        chance: the accuracy of guessing, in the axis's unit (``100 / num_classes`` for
            percent, 10.0 for CIFAR-10); None draws no line.
        zero: start the y axis at zero (always for bars: a bar's length is its value);
            False keeps the data's limits, e.g. for curves whose differences matter.
        unit: the axis's unit, for the line's label.
        label: the line's label (default ``"chance (10%)"``), shown by ``ax.legend()``.

    Returns:
        ``ax``.
    """
    if chance is not None:
        if not math.isfinite(chance) or chance < 0:
            raise ValueError(f"chance must be a finite accuracy >= 0 in the axis's unit, e.g. "
                             f"100 / num_classes for percent; got {chance!r}")
        ax.axhline(chance, **_CHANCE, label=label or f"chance ({chance:g}{unit})")
    if zero:
        ax.set_ylim(bottom=0)
    return ax


def bar_compare(
    values: Mapping[str, float], *, title: str, ylabel: str = "test accuracy (%)", xlabel: str = "",
    errors: Mapping[str, float] | Sequence[float] | None = None, chance: float | None = None,
    decimals: int = 1, colors: Sequence[str] | None = None, ax=None,
):
    """Bars of one number per variant (accuracies, by default in percent), from zero.

    Args:
        values: ``{label: value}``, in the order to draw.
        title: the figure's title.
        ylabel: the y axis's label with its unit.
        xlabel: the x axis's label, e.g. "ResNet-20 variant".
        errors: error-bar half-widths, ``{label: err}`` or one per bar (e.g. two standard
            errors); say what they are in the title or the caption.
        chance: the accuracy of guessing in the unit of ``values``, drawn as a dotted line
            (10.0 for CIFAR-10 in percent).
        decimals: decimals of the value written on each bar.
        colors: one colour per bar (default: all the first colour of the cycle).
        ax: axes to draw into (default: a new figure).

    Returns:
        The ``Figure``.
    """
    if not values:
        raise ValueError("values is empty: give {label: value} for at least one bar")
    labels, heights = list(values), [float(v) for v in values.values()]
    if min(heights) < 0:
        raise ValueError(f"bar_compare draws bars from zero and needs values >= 0, got {values!r}; "
                         f"plot differences with ax.bar and a line at 0 instead")
    if isinstance(errors, Mapping):
        errors = [errors[k] for k in labels]
    if errors is not None and len(errors) != len(labels):
        raise ValueError(f"errors must give one value per bar ({len(labels)}), got {len(errors)}")
    if ax is None:
        fig, ax = subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.6))
    else:
        fig = ax.figure
    bars = ax.bar(labels, heights, yerr=errors, capsize=4 if errors is not None else 0, color=colors)
    # With error bars the number would collide with the bar's whisker: write it inside.
    ax.bar_label(bars, fmt=f"%.{decimals}f", label_type="center" if errors is not None else "edge",
                 padding=0 if errors is not None else 2, fontsize=8)
    accuracy_axes(ax, chance, zero=True)
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    if max(len(k) for k in labels) > 10:  # long names: slant them so they do not overlap
        ax.tick_params(axis="x", labelrotation=30)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    if chance is not None:
        ax.legend(loc="lower right")
    ax.grid(axis="y")
    return fig


def feature_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named sub-modules for input ``x``, via forward hooks.

    Args:
        model: the network (run in eval mode; its mode is restored).
        x: a batch ``(B, C, H, W)`` on the model's device.
        layers: names from ``model.named_modules()``, e.g. ``["stem", "stages.stage1"]``.

    Returns:
        ``{name: tensor}``, each detached from the graph and moved to the CPU.
    """
    model, x = V.module("model", model), V.tensor("x", x)
    if isinstance(layers, str):
        raise V.ArgumentTypeError(f"layers must be a list of layer names, got the string {layers!r}; "
                                  f"write [{layers!r}]")
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        names = [n for n in modules if n and n.count(".") < 2]
        raise ValueError(f"no layer named {unknown}; some names this model has: {names[:20]}")
    maps: dict[str, torch.Tensor] = {}
    # Copy each output: on the CPU ``.cpu()`` returns the same storage, which a later
    # in-place layer (``ReLU(inplace=True)``) would overwrite.
    from .measure import forward_with_hooks

    forward_with_hooks(model, x, [(modules[n], lambda _m, _inp, out, n=n: maps.__setitem__(
        n, out.detach().to("cpu", copy=True))) for n in layers])
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
    image, n, ncols = V.tensor("image", image), V.positive_int("n", n), V.positive_int("ncols", ncols)
    x = image if image.ndim == 4 else image.unsqueeze(0)  # add the batch axis
    maps = feature_maps(model, x, layers)
    rows_per = math.ceil(n / ncols)
    fig, axes = subplots(rows_per * len(layers), ncols, squeeze=False,
                         figsize=(1.6 * ncols, 1.75 * rows_per * len(layers)))
    for li, name in enumerate(layers):
        fmap = maps[name][0]  # drop the batch axis: (C, H, W)
        for j in range(rows_per * ncols):
            ax = axes[li * rows_per + j // ncols, j % ncols]
            ax.axis("off")
            if j < min(n, fmap.shape[0]):
                ax.imshow(fmap[j].numpy(), cmap="viridis")
                ax.set_title(f"map {j}", fontsize=7)
        axes[li * rows_per, 0].text(-0.15, 0.5, f"{name}\n{tuple(fmap.shape)}", transform=axes[li * rows_per, 0].transAxes,
                                    ha="right", va="center", fontsize=8)
    fig.suptitle("Feature maps (first channels of each layer's output)")
    return fig


def show_filters(weight: torch.Tensor, n: int = 32, ncols: int = 8, title: str = "Filters"):
    """The first ``n`` filters of a convolution's weight ``(C_out, C_in, k, k)``.

    RGB filters (``C_in == 3``) are drawn in colour, each rescaled to [0, 1];
    others show their first input channel in grey.
    """
    w = weight.detach().float().cpu()
    n = min(n, w.shape[0])
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(nrows, ncols, squeeze=False, figsize=(1.1 * ncols, 1.2 * nrows))
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
    return fig


def show_images(
    images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None,
    classes: Sequence[str] | None = None, ncols: int = 8, title: str = "",
    predictions: Sequence[int] | torch.Tensor | None = None,
):
    """A grid of images ``(N, C, H, W)``: uint8, or floats in [0, 1]. Titles give the
    class names; with ``predictions``, wrong ones are shown in red. Without a ``title``
    the figure says what it shows ("16 images and their classes")."""
    imgs = images.detach().cpu()
    if imgs.dtype == torch.uint8:
        imgs = imgs.float() / 255
    n = len(imgs)
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(nrows, ncols, squeeze=False, figsize=(1.3 * ncols, 1.5 * nrows))
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
    if not title:
        title = (f"{n} images: predicted class, the true one in red where wrong" if predictions is not None
                 else f"{n} images and their classes" if labels is not None else f"{n} images")
    fig.suptitle(title)
    return fig


def plot_history(
    histories: History | Mapping[str, History], title: str = "Training curves",
    num_classes: int | None = None, chance: float | None = None,
):
    """Loss and error curves of one run or of several named runs (train dashed, test solid).

    The loss axis is logarithmic, so that an early spike (a test loss of 25 in the first
    epoch is common with BatchNorm and few steps) does not flatten every later value. With
    several runs, one legend beside the plots names the runs by colour and the line styles.

    Args:
        histories: one :class:`History`, or ``{name: History}``.
        title: the figure's title.
        num_classes: the number of classes (``len(data.classes)``); draws the chance level:
            the error of guessing, ``100 (1 - 1/K)`` %, and the loss of a uniform
            prediction, ``ln K``.
        chance: the accuracy of guessing as a fraction, instead of ``num_classes`` (for
            unbalanced test sets: the share of the largest class).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter

    if num_classes is not None and chance is not None:
        raise ValueError(f"give num_classes or chance, not both (got {num_classes!r} and {chance!r})")
    if num_classes is not None:
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"num_classes must be an int >= 2, e.g. len(data.classes); got {num_classes!r}")
        chance = 1 / num_classes
    if chance is not None and not 0 < chance < 1:
        raise ValueError(f"chance must be the accuracy of guessing as a fraction in (0, 1), e.g. 0.1; got {chance!r}")
    if isinstance(histories, History):
        histories = {"": histories}
    if not isinstance(histories, Mapping) or not all(isinstance(h, History) for h in histories.values()):
        raise V.ArgumentTypeError(f"histories must be a History from fit, or a dict {{name: History}}, got "
                                  f"{type(histories).__name__}")
    fig, (ax_loss, ax_err) = subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    # A run evaluated only every few epochs (fit's eval_every) has NaN test values in between; a
    # line cannot join isolated points, so such runs mark their test values with dots.
    sparse = any(math.isnan(v) for h in histories.values() for v in h.test_loss)
    test_style = dict(ls="-", marker="o", ms=4) if sparse else dict(ls="-")
    for i, (name, h) in enumerate(histories.items()):
        c = colors[i % len(colors)]
        ax_loss.plot(h.epoch, h.train_loss, "--", color=c)
        ax_loss.plot(h.epoch, h.test_loss, color=c, **test_style)
        ax_err.plot(h.epoch, [100 * (1 - a) for a in h.train_acc], "--", color=c)
        ax_err.plot(h.epoch, [100 * (1 - a) for a in h.test_acc], color=c, **test_style)
        if name:
            handles.append(Line2D([], [], color=c, label=name))
    handles.append(Line2D([], [], color="gray", ls="--", label="train"))
    if any(not math.isnan(v) for h in histories.values() for v in h.test_loss):   # no entry for absent curves
        handles.append(Line2D([], [], color="gray", label="test (dots: evaluated epochs)" if sparse else "test",
                              **test_style))
    loss_chance = []  # the loss panel's own legend entry for its chance line
    if chance is not None:
        # Guessing: error 1 - chance; a uniform prediction over K classes has loss ln K.
        ax_err.axhline(100 * (1 - chance), **_CHANCE)
        ax_loss.axhline(-math.log(chance), **_CHANCE)
        handles.append(Line2D([], [], **_CHANCE, label=f"chance ({100 * (1 - chance):.0f}% error)"))
        k = round(1 / chance)
        loss_label = (f"chance (loss ln {k} = {math.log(k):.2f})" if num_classes is not None
                      else f"chance (loss {-math.log(chance):.2f})")
        loss_chance = [Line2D([], [], **_CHANCE, label=loss_label)]
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss (log scale)", title="Loss", yscale="log")
    ax_loss.yaxis.set_major_locator(FixedLocator(_log_ticks(*ax_loss.get_ylim())))
    ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%g"))        # plain numbers, not 2x10^0
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="Error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    if any(histories):   # named runs: one legend for both plots, beside them
        fig.legend(handles=handles, loc="outside right center", fontsize=8)
        if loss_chance:  # the figure's legend gives the chance error; the loss panel its loss
            ax_loss.legend(handles=loss_chance, fontsize=8)
    else:  # each panel its own legend, each with its own chance level
        ax_loss.legend(handles=handles[:-1] + loss_chance if chance is not None else handles, fontsize=8)
        ax_err.legend(handles=handles, fontsize=8)
    fig.suptitle(title)
    return fig


def _log_ticks(low: float, high: float, fewest: int = 4, most: int = 7) -> list[float]:
    """Round tick values for a log axis from ``low`` to ``high``: the sparsest of the series
    1, 1-2-5, 1-1.5-2-3-5-7 and 1-1.2-1.5-2-2.5-3-4-5-6-8 (per decade) that puts at least
    ``fewest`` ticks inside, thinned to at most ``most``; evenly spaced round values when
    the range is too narrow for any of them. A loss from 0.7 to 2.2 then reads 0.8, 1,
    1.2, 1.5, 2 rather than only 1 and 2."""
    from matplotlib.ticker import MaxNLocator

    ticks: list[float] = []
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    for mantissas in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)):
        ticks = [float(f"{m * 10.0 ** e:.6g}") for e in decades for m in mantissas]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= fewest:
            break
    if len(ticks) < 3:  # less than a factor of 1.5 from low to high: plain linear steps
        ticks = [float(f"{t:.6g}") for t in MaxNLocator(nbins=4).tick_values(low, high) if low <= t <= high]
    return ticks[::math.ceil(len(ticks) / most)]


def plot_confusion(
    predictions: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str = "Confusion matrix",
):
    """Row-normalised confusion matrix (rows: true class, columns: predicted), in percent.

    Raises:
        ValueError: ``classes`` is empty, or ``predictions`` and ``labels`` are not
            class indices in ``[0, len(classes))`` of equal length (an index outside
            would be counted in a wrong cell).
    """
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ValueError(f"classes must be a non-empty list of class names, e.g. data.classes; got {classes!r:.60}")
    k = len(classes)
    predictions, labels = V.class_indices("predictions", predictions, k), V.class_indices("labels", labels, k)
    if len(predictions) != len(labels):
        raise ValueError(f"predictions and labels must have one entry per image, "
                         f"got {len(predictions)} and {len(labels)}")
    cm = torch.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).float()
    cm = 100 * cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 1.5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > 50 else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(im, ax=ax, label="% of the true class")
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
