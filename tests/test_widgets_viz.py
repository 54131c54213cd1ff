"""cnnlearn.widgets and cnnlearn.viz: the explorer reacts to its controls, feature maps
have the right shapes, and every plotting function returns a Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from cnnlearn import create_model
from cnnlearn.train import History
from cnnlearn.viz import (
    STYLE, accuracy_axes, bar_compare, feature_maps, plot_confusion, plot_history, show_feature_maps,
    show_filters, show_images, style, subplots,
)
from cnnlearn.widgets import conv_explorer, conv_report

# The explorer calls plt.show(), which the Agg backend of the tests cannot do.
pytestmark = pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive:UserWarning")


# --------------------------------------------------------------------------- widgets


def _explorer_parts(box):
    left = box.children[0]
    controls = {c.description: c for c in left.children[:-1]}
    return controls, left.children[-1]  # the sliders and dropdowns, the numbers HTML


def test_conv_explorer_updates_its_numbers():
    box = conv_explorer(size=7)
    controls, numbers = _explorer_parts(box)
    assert {"input size", "kernel", "stride", "padding", "dilation", "in channels", "out channels",
            "groups"} <= set(controls)
    # Defaults: 7x7 input, 3x3 kernel, padding 1, 3 -> 4 channels: 3*3*3*4 + 4 = 112 parameters.
    assert "7 x 7 x 4" in numbers.value and "112" in numbers.value
    before = numbers.value
    controls["kernel"].value = 5  # 5x5, padding 1: 5x5 output, 5*5*3*4 + 4 = 304 parameters
    assert numbers.value != before
    assert "5 x 5 x 4" in numbers.value and "304" in numbers.value
    controls["stride"].value = 2  # 3x3 output: 300 weights x 9 positions = 2,700 MACs
    assert "3 x 3 x 4" in numbers.value and "2,700" in numbers.value


def test_conv_explorer_shows_invalid_settings_instead_of_raising():
    box = conv_explorer()
    controls, numbers = _explorer_parts(box)
    controls["groups"].value = 2  # 2 does not divide 3 input channels
    assert "Not a valid layer" in numbers.value and "groups=2" in numbers.value
    controls["groups"].value = 1
    assert "Not a valid layer" not in numbers.value
    controls["input size"].value = 3
    controls["padding"].value = 0
    controls["kernel"].value = 7  # does not fit a 3x3 input without padding
    assert "Not a valid layer" in numbers.value and "does not fit" in numbers.value


def test_conv_report_numbers():
    r = conv_report(32, 64, 128, 3, stride=1, padding=1, dilation=1, groups=1)
    assert r["output size"] == "32 x 32 x 128"
    assert r["parameters"] == 73_856 and r["MACs"] == 75_497_472
    assert r["receptive field of one output"] == 3
    depthwise = conv_report(5, 3, 3, 3, stride=1, padding=0, dilation=1, groups=3, bias=False)
    assert depthwise["parameters"] == 27 and depthwise["MACs"] == 243
    dilated = conv_report(16, 8, 8, 3, stride=2, padding=2, dilation=2, groups=1)
    assert dilated["receptive field of one output"] == 5 and dilated["_out"] == 8
    with pytest.raises(ValueError, match="groups=2 must divide"):
        conv_report(8, 3, 4, 3, 1, 1, 1, groups=2)


# --------------------------------------------------------------------------- feature maps


@pytest.fixture(scope="module")
def alexnet_cifar():
    torch.manual_seed(0)
    return create_model("alexnet_cifar")


def test_feature_maps_shapes(alexnet_cifar):
    model = alexnet_cifar.train()
    x = torch.randn(2, 3, 32, 32)
    maps = feature_maps(model, x, ["stem", "stages.stage1", "stages.stage2", "head"])
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "stem": (2, 48, 15, 15), "stages.stage1": (2, 128, 7, 7), "stages.stage2": (2, 128, 3, 3),
        "head": (2, 10)}
    for v in maps.values():
        assert v.device.type == "cpu" and not v.requires_grad and v.grad_fn is None
    assert model.training  # the mode is restored
    assert not any(m._forward_hooks for m in model.modules())  # and the hooks removed
    # Eval mode: the head's output is what the model returns.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(maps["head"], model(x))
    model.train()


def test_feature_maps_are_not_changed_by_later_in_place_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
    x = torch.randn(1, 3, 8, 8)
    maps = feature_maps(model, x, ["0", "1"])
    torch.testing.assert_close(maps["0"], model[0](x).detach())
    assert (maps["0"] < 0).any() and (maps["1"] >= 0).all()


def test_feature_maps_unknown_layer(alexnet_cifar):
    with pytest.raises(ValueError, match=r"no layer named \['stage9'\].*stages.stage1"):
        feature_maps(alexnet_cifar, torch.randn(1, 3, 32, 32), ["stem", "stage9"])


# --------------------------------------------------------------------------- figures


def test_show_feature_maps_and_filters(alexnet_cifar):
    fig = show_feature_maps(alexnet_cifar, torch.randn(3, 32, 32), ["stem", "stages.stage1"], n=6, ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 3
    assert sum(len(ax.images) for ax in fig.axes) == 12
    assert fig.axes[1].get_title() == "map 1"  # the same word as the chapters' own feature-map figures
    fig = show_filters(alexnet_cifar.stem[0].weight, n=10, ncols=5)  # RGB filters
    assert isinstance(fig, Figure) and sum(len(ax.images) for ax in fig.axes) == 10
    assert fig.axes[0].images[0].get_array().shape == (5, 5, 3)
    fig = show_filters(alexnet_cifar.stages.stage1[0].weight, n=4)  # 48 input channels: grey
    assert fig.axes[0].images[0].get_array().shape == (5, 5)
    plt.close("all")


def test_show_images():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    fig = show_images(images, labels=[0, 1, 2, 0, 1], classes=["a", "b", "c"], ncols=3,
                      predictions=torch.tensor([0, 2, 2, 1, 1]), title="grid")
    assert isinstance(fig, Figure) and sum(len(ax.images) for ax in fig.axes) == 5
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles[0] == "a" and titles[1] == "c\n(is b)"
    assert fig.axes[1].title.get_color() == "red" and fig.axes[0].title.get_color() == "black"
    grey = show_images(torch.rand(3, 1, 6, 6))
    assert grey.axes[0].images[0].get_array().shape == (6, 6)
    plt.close("all")


def test_plot_history():
    h = History()
    for e in range(1, 4):
        h.append(epoch=e, train_loss=2.0 / e, train_acc=0.3 * e, test_loss=2.2 / e, test_acc=0.25 * e,
                 lr=0.1, epoch_time=1.0)
    fig = plot_history(h)
    assert isinstance(fig, Figure)
    loss_ax, err_ax = fig.axes
    assert len(loss_ax.lines) == 2 and list(loss_ax.lines[0].get_ydata()) == h.train_loss
    assert err_ax.lines[1].get_ydata()[0] == pytest.approx(75.0)  # 100 * (1 - 0.25)
    assert loss_ax.get_xlabel() == "epoch"
    assert loss_ax.get_yscale() == "log"
    assert [t.get_text() for t in err_ax.get_legend().get_texts()] == ["train", "test"]
    two = plot_history({"a": h, "b": h})
    assert len(two.axes[0].lines) == 4
    (legend,) = two.legends                       # one legend for both plots: runs, then styles
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "train", "test"]
    plt.close("all")


def test_plot_history_marks_sparse_test_points():
    # fit(eval_every=epochs) leaves NaN test values before the last epoch: the lone point must be
    # visible (a marker) and the legend's test entry must show that marker.
    h = History()
    nan = float("nan")
    for e in range(1, 4):
        last = e == 3
        h.append(epoch=e, train_loss=2.0 / e, train_acc=0.3 * e, test_loss=1.0 if last else nan,
                 test_acc=0.7 if last else nan, lr=0.1, epoch_time=1.0)
    fig = plot_history({"a": h, "b": h})
    test_lines = fig.axes[1].lines[1::2]
    assert all(line.get_marker() == "o" for line in test_lines)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:3] == ["a", "b", "train"] and labels[3].startswith("test")
    assert legend.legend_handles[3].get_marker() == "o"
    plt.close("all")


def test_plot_confusion_is_row_normalised():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    fig = plot_confusion(preds, labels, ["x", "y", "z"])
    assert isinstance(fig, Figure)
    cm = torch.as_tensor(fig.axes[0].images[0].get_array())
    expected = torch.tensor([[75.0, 25, 0], [0, 50, 50], [0, 0, 100]])
    torch.testing.assert_close(cm.float(), expected)
    plt.close("all")


# --------------------------------------------------------------------------- the figure style


def _history() -> History:
    h = History()
    for e in range(1, 4):
        h.append(epoch=e, train_loss=2.0 / e, train_acc=0.3 * e, test_loss=2.2 / e, test_acc=0.25 * e,
                 lr=0.1, epoch_time=1.0)
    return h


def _title(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle else " ".join(ax.get_title() for ax in fig.axes)


def test_every_helper_figure_has_a_title_and_constrained_layout(alexnet_cifar):
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    figures = {
        "feature maps": show_feature_maps(alexnet_cifar, torch.randn(3, 32, 32), ["stem"], n=3, ncols=3),
        "filters": show_filters(alexnet_cifar.stem[0].weight, n=4),
        "images": show_images(torch.rand(2, 3, 4, 4), labels=[0, 1]),
        "history": plot_history(_history(), num_classes=10),
        "confusion": plot_confusion(torch.tensor([0, 1]), torch.tensor([0, 1]), ["a", "b"]),
        "bars": bar_compare({"A": 50.0}, title="t"),
        "subplots": subplots()[0],
    }
    for name, fig in figures.items():
        assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine), name
        assert name == "subplots" or _title(fig).strip(), name
    assert _title(figures["images"]) == "2 images and their classes"
    plt.close("all")


def test_plot_history_draws_the_chance_level():
    fig = plot_history(_history(), num_classes=10)
    loss_ax, err_ax = fig.axes
    chance = [line for line in err_ax.lines if list(line.get_ydata()) == [90.0, 90.0]]
    assert len(chance) == 1 and chance[0].get_linestyle() == ":"
    assert err_ax.get_ylim()[1] >= 90  # the line is inside the axis
    assert any(list(line.get_ydata()) == pytest.approx([2.302585] * 2) for line in loss_ax.lines)  # ln 10
    assert [t.get_text() for t in err_ax.get_legend().get_texts()] == ["train", "test", "chance (90% error)"]
    # the loss panel has its own legend, whose chance entry gives the loss, not the error
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "test", "chance (loss ln 10 = 2.30)"]
    # chance= for an unbalanced test set; with named runs the chance level joins the figure's legend.
    two = plot_history({"a": _history(), "b": _history()}, chance=0.25)
    (legend,) = two.legends
    assert [t.get_text() for t in legend.get_texts()][-1] == "chance (75% error)"
    assert [t.get_text() for t in two.axes[0].get_legend().get_texts()] == ["chance (loss 1.39)"]  # -ln 0.25
    assert len(plot_history(_history()).axes[1].lines) == 2  # no chance line unless asked
    with pytest.raises(ValueError, match="num_classes or chance, not both"):
        plot_history(_history(), num_classes=10, chance=0.1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        plot_history(_history(), num_classes=1)
    with pytest.raises(ValueError, match=r"chance must be .* in \(0, 1\)"):
        plot_history(_history(), chance=10)
    plt.close("all")


def test_loss_axis_ticks_are_round_numbers_however_narrow_the_range():
    from cnnlearn.viz import _log_ticks

    assert _log_ticks(0.72, 2.2) == [0.8, 1.0, 1.2, 1.5, 2.0]      # not only 1 and 2
    assert _log_ticks(0.5, 25) == [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
    assert _log_ticks(1e-3, 5) == [0.001, 0.01, 0.1, 1.0]           # decades when the range is wide
    narrow = _log_ticks(2.0, 2.4)                                    # no 1-2-5 value inside: linear steps
    assert len(narrow) >= 3 and all(2.0 <= t <= 2.4 for t in narrow)
    for low, high in [(0.05, 3), (0.3, 2.4), (0.9, 1.1), (1.5, 40)]:
        ticks = _log_ticks(low, high)
        assert 3 <= len(ticks) <= 7 and ticks == sorted(ticks) and low <= ticks[0] and ticks[-1] <= high
    fig = plot_history(_history(), num_classes=10)  # losses 0.67 to 2.3: at least four labelled ticks
    labels = [t for t in fig.axes[0].get_yticks() if fig.axes[0].get_ylim()[0] <= t <= fig.axes[0].get_ylim()[1]]
    assert len(labels) >= 4
    plt.close("all")


def test_bar_compare_starts_at_zero_with_a_chance_line():
    fig = bar_compare({"option A": 91.2, "option B (projection)": 90.5}, errors={"option A": 0.6,
                      "option B (projection)": 0.6}, chance=10.0, title="ResNet-20 variants",
                      xlabel="variant")
    (ax,) = fig.axes
    assert ax.get_ylim()[0] == 0  # bars from zero, although both values are near 91
    assert [p.get_height() for p in ax.patches] == [91.2, 90.5]
    assert [list(line.get_ydata()) for line in ax.lines if line.get_linestyle() == ":"] == [[10.0, 10.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance (10%)"]
    assert ax.get_title() == "ResNet-20 variants" and ax.get_ylabel() == "test accuracy (%)"
    assert ax.get_xlabel() == "variant"
    assert [t.get_text() for t in ax.texts] == ["91.2", "90.5"]  # the values, written on the bars
    assert ax.get_xticklabels()[0].get_rotation() == 30  # long names slanted
    with pytest.raises(ValueError, match="values is empty"):
        bar_compare({}, title="t")
    with pytest.raises(ValueError, match="needs values >= 0"):
        bar_compare({"a": -1.0}, title="t")
    with pytest.raises(ValueError, match=r"errors must give one value per bar \(2\), got 1"):
        bar_compare({"a": 1.0, "b": 2.0}, errors=[0.1], title="t")
    plt.close("all")


def test_accuracy_axes():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [80, 85, 90])
    assert accuracy_axes(ax, chance=10) is ax
    assert ax.get_ylim()[0] == 0
    (line,) = [line for line in ax.lines if line.get_label() == "chance (10%)"]
    assert list(line.get_ydata()) == [10, 10]
    fig, curve = plt.subplots()
    curve.plot([1, 2, 3], [0.8, 0.85, 0.9])   # accuracy as a fraction, two classes
    accuracy_axes(curve, chance=0.5, zero=False, unit="", label="guessing")
    assert 0.3 < curve.get_ylim()[0] < 0.5 and curve.lines[-1].get_label() == "guessing"
    with pytest.raises(ValueError, match="chance must be a finite accuracy >= 0"):
        accuracy_axes(ax, chance=-1)
    plt.close("all")


def test_style_and_setup_apply_the_book_style():
    import cnnlearn

    with plt.rc_context():   # leave the tests' settings as they were
        with style():
            assert plt.rcParams["figure.constrained_layout.use"] is True
            assert plt.rcParams["legend.fontsize"] == STYLE["legend.fontsize"]
        plt.rcParams["grid.alpha"] = 1.0
        cnnlearn.setup(seed=0, verbose=False)
        assert plt.rcParams["grid.alpha"] == STYLE["grid.alpha"]
        # setup() leaves the layout to each figure: chapters still call tight_layout().
        assert plt.rcParams["figure.constrained_layout.use"] is False
