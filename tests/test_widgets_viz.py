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
    feature_maps, plot_confusion, plot_history, show_feature_maps, show_filters, show_images,
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


def test_plot_confusion_is_row_normalised():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    fig = plot_confusion(preds, labels, ["x", "y", "z"])
    assert isinstance(fig, Figure)
    cm = torch.as_tensor(fig.axes[0].images[0].get_array())
    expected = torch.tensor([[75.0, 25, 0], [0, 50, 50], [0, 0, 100]])
    torch.testing.assert_close(cm.float(), expected)
    plt.close("all")
