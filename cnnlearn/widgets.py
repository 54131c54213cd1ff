"""Interactive explorers for the book (ipywidgets 7.7, as on Colab, and 8.x).

Only APIs common to both major versions are used: ``IntSlider``/``Dropdown`` with
``description``, ``observe(..., names="value")``, ``Output`` as a context manager,
``VBox``/``HBox`` and ``HTML``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from .measure import conv2d_macs, conv2d_output_size, conv2d_params

__all__ = ["conv_explorer", "conv_report"]


def conv_report(size: int, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                padding: int, dilation: int, groups: int, bias: bool = True) -> dict:
    """The numbers the explorer shows, as a dict (raises ``ValueError`` on a bad setting)."""
    out = conv2d_output_size(size, kernel_size, stride, padding, dilation)
    return {
        "output size": f"{out} x {out} x {out_channels}",
        "parameters": conv2d_params(in_channels, out_channels, kernel_size, groups, bias),
        "MACs": conv2d_macs(in_channels, out_channels, kernel_size, out, groups),
        "receptive field of one output": dilation * (kernel_size - 1) + 1,
        "_out": out,
    }


def _draw(ax, size: int, kernel_size: int, stride: int, padding: int, dilation: int, out: int) -> None:
    """Input grid (with padding shaded) and the input pixels that output (0, 0) and
    output (0, 1) read."""
    total = size + 2 * padding
    ax.clear()
    for i in range(total):
        for j in range(total):
            pad = not (padding <= i < padding + size and padding <= j < padding + size)
            ax.add_patch(Rectangle((j, total - 1 - i), 1, 1, facecolor="#eeeeee" if pad else "white",
                                   edgecolor="#bbbbbb", lw=0.5))
    for k, (col, color) in enumerate(((0, "tab:blue"), (min(1, out - 1) * stride, "tab:orange"))):
        if k == 1 and out < 2:
            break
        for a in range(kernel_size):
            for b in range(kernel_size):
                i, j = a * dilation, col + b * dilation
                ax.add_patch(Rectangle((j + 0.1 * k, total - 1 - i + 0.1 * k), 0.8, 0.8,
                                       facecolor=color, alpha=0.55, lw=0))
    ax.set_xlim(0, total)
    ax.set_ylim(0, total)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("input (grey: padding); blue: pixels read by output (0,0),\n"
                 "orange: by output (0,1)", fontsize=8)


def conv_explorer(size: int = 7):
    """A widget: choose kernel, stride, padding, dilation, groups and channels; see the
    output size, parameters, MACs and which input pixels one output reads.

    Returns:
        An ``ipywidgets.HBox`` (controls and numbers on the left, the drawing on the
        right); display it (it is the last expression of a cell).
    """
    import ipywidgets as W
    from IPython.display import display

    style = {"description_width": "110px"}
    controls = {
        "size": W.IntSlider(value=size, min=3, max=16, description="input size", style=style),
        "kernel_size": W.IntSlider(value=3, min=1, max=7, description="kernel", style=style),
        "stride": W.IntSlider(value=1, min=1, max=4, description="stride", style=style),
        "padding": W.IntSlider(value=1, min=0, max=3, description="padding", style=style),
        "dilation": W.IntSlider(value=1, min=1, max=3, description="dilation", style=style),
        "in_channels": W.Dropdown(options=[1, 2, 3, 4, 8, 16, 32, 64], value=3, description="in channels", style=style),
        "out_channels": W.Dropdown(options=[1, 2, 4, 8, 16, 32, 64], value=4, description="out channels", style=style),
        "groups": W.Dropdown(options=[1, 2, 4, 8, 16, 32, 64], value=1, description="groups", style=style),
    }
    numbers = W.HTML()
    plot = W.Output()

    def update(_change=None) -> None:
        values = {k: c.value for k, c in controls.items()}
        try:
            report = conv_report(**values)
        except ValueError as e:
            numbers.value = f"<b style='color:#b00'>Not a valid layer:</b> {e}"
            plot.clear_output()
            return
        out = report.pop("_out")
        numbers.value = "<br>".join(f"<b>{k}</b>: {v:,}" if isinstance(v, int) else f"<b>{k}</b>: {v}"
                                    for k, v in report.items())
        fig, ax = plt.subplots(figsize=(3.6, 3.8))
        _draw(ax, values["size"], values["kernel_size"], values["stride"], values["padding"],
              values["dilation"], out)
        plt.close(fig)  # shown once, inside the Output widget, not again by the inline backend
        with plot:
            plot.clear_output(wait=True)
            display(fig)

    for c in controls.values():
        c.observe(update, names="value")
    update()
    left = W.VBox(list(controls.values()) + [numbers])
    return W.HBox([left, plot])
