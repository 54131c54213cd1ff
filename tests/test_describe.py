"""cnnlearn.measure.describe: a module tree whose text does not depend on torch's reprs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlearn import create_model
from cnnlearn.measure import count_params, describe


def _v3_block() -> nn.Module:
    with torch.device("meta"):
        return create_model("mobilenet_v3_large").stages.stage3[0]


def test_a_mobilenet_v3_block_reads_as_its_layers_settings():
    text = describe(_v3_block())
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0].split() == ["module", "parameters"]
    assert lines[1].split() == ["InvertedResidual", f"{count_params(_v3_block()):,}"]
    expected = [
        "  expand: ConvBNAct",
        "    0: Conv2d 24 -> 72, 1x1",
        "    1: BatchNorm2d 72, eps 0.001, momentum 0.01",
        "    0: Conv2d 72 -> 72, 5x5, stride 2, padding 2, groups 72",
        "    fc1: Conv2d 72 -> 24, 1x1, bias",
        "    gate: Hardsigmoid",
        "  drop_path: Identity",
    ]
    for want in expected:
        assert any(line.startswith(want + "  ") for line in lines), f"no line {want!r} in\n{text}"
    # Nothing of PyTorch's reprs: those are what changes between versions.
    for repr_only in ("affine=True", "bias=True", "bias=False", "track_running_stats", "kernel_size=("):
        assert repr_only not in text


def test_the_text_does_not_change_with_the_layers_reprs(monkeypatch):
    before = describe(_v3_block())
    # torch 2.13 added "bias=True" to BatchNorm's repr; any such change must not show.
    monkeypatch.setattr(nn.modules.batchnorm._NormBase, "extra_repr", lambda self: "changed=True")
    monkeypatch.setattr(nn.Conv2d, "extra_repr", lambda self: "changed=True")
    assert describe(_v3_block()) == before


def test_parameters_per_line_and_output_shapes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                          nn.Linear(8, 10))
    lines = describe(model, (3, 16, 16)).splitlines()
    assert lines[0].split() == ["module", "parameters", "output"]
    rows = {line.split(":")[0].strip(): line for line in lines[2:]}
    assert rows["0"].strip().split("  ")[0] == "0: Conv2d 3 -> 8, 3x3, padding 1"
    assert rows["0"].rstrip().endswith("216  (1, 8, 16, 16)")
    assert rows["1"].rstrip().endswith("16  (1, 8, 16, 16)") and "eps" not in rows["1"]
    assert rows["2"].rstrip().endswith("-  (1, 8, 16, 16)")
    assert "MaxPool2d 2x2, stride 2" in rows["3"] and rows["3"].rstrip().endswith("(1, 8, 8, 8)")
    assert "AdaptiveAvgPool2d to 1" in rows["4"] and rows["4"].rstrip().endswith("(1, 8, 1, 1)")
    assert "Dropout p 0.2" in rows["6"]
    assert "Linear 8 -> 10, bias" in rows["7"] and rows["7"].rstrip().endswith("90  (1, 10)")
    assert lines[1].split()[:2] == ["Sequential", f"{count_params(model):,}"]
    assert model.training, "describe must restore the module's train mode"


def test_grouped_dilated_and_transposed_convolutions():
    text = describe(nn.Sequential(nn.Conv2d(8, 16, 3, dilation=2, groups=4),
                                  nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, output_padding=1)))
    assert "Conv2d 8 -> 16, 3x3, dilation 2, groups 4, bias" in text
    assert "ConvTranspose2d 16 -> 8, 4x4, stride 2, padding 1, output_padding 1, bias" in text


def test_rejects_what_is_not_a_module():
    with pytest.raises(ValueError, match="describe expects an nn.Module, got list"):
        describe([nn.ReLU()])
