"""cnnlearn.measure: every formula against real layers and the MAC counter."""
from __future__ import annotations

import itertools
import statistics

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn.measure import (
    LatencyResult, compare_latency, conv2d_macs, conv2d_output_size, conv2d_params, conv_transpose2d_macs,
    conv_transpose2d_output_size, conv_transpose2d_params, count_macs, count_params, latency,
    linear_params, peak_memory, receptive_field, summary,
)


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


# --------------------------------------------------------------------------- output sizes


def test_conv2d_output_size_matches_conv2d_on_a_grid():
    checked = 0
    for size, k, s, p, d in itertools.product((5, 8, 11), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        x = torch.zeros(1, 1, size, size)
        w = torch.zeros(1, 1, k, k)
        if d * (k - 1) + 1 > size + 2 * p:  # the kernel does not fit: both must refuse
            with pytest.raises(ValueError, match="does not fit"):
                conv2d_output_size(size, k, s, p, d)
            with pytest.raises(RuntimeError):
                F.conv2d(x, w, stride=s, padding=p, dilation=d)
            continue
        out = F.conv2d(x, w, stride=s, padding=p, dilation=d)
        assert conv2d_output_size(size, k, s, p, d) == out.shape[-1], (size, k, s, p, d)
        checked += 1
    assert checked > 150


@pytest.mark.parametrize("size, k, s, p, d", [
    ((9, 12), (3, 1), (2, 1), (1, 0), (1, 2)),
    ((7, 16), (1, 5), (1, 3), (0, 2), (2, 1)),
    ((32, 17), 3, (2, 3), 1, (1, 2)),
])
def test_conv2d_output_size_with_pairs(size, k, s, p, d):
    conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
    out = conv(torch.zeros(1, 1, *size))
    assert conv2d_output_size(size, k, s, p, d) == tuple(out.shape[-2:])


def test_conv2d_output_size_int_in_int_out():
    assert conv2d_output_size(32, 3, 2, 1) == 16
    assert conv2d_output_size((32, 32), 3, 2, 1) == (16, 16)
    assert conv2d_output_size(224, 11, 4, 2) == 55  # AlexNet's first layer


@pytest.mark.parametrize("cin, cout, k, s, p, op, d, g, size", [
    (4, 6, 3, 2, 1, 1, 1, 2, 5),
    (3, 3, 4, 2, 1, 0, 1, 3, 7),  # depthwise, DCGAN-style 4x4 stride-2 upsampling
    (2, 4, 3, 3, 0, 2, 2, 2, 4),  # dilated, output_padding 2 < stride 3
    (8, 4, 5, 1, 2, 1, 2, 1, 6),  # output_padding 1 allowed by dilation 2 with stride 1
    (2, 6, (3, 1), (2, 1), (1, 0), (1, 0), 1, 2, (5, 3)),
])
def test_conv_transpose2d_formulas_match_the_layer(cin, cout, k, s, p, op, d, g, size):
    layer = nn.ConvTranspose2d(cin, cout, k, s, p, op, groups=g, dilation=d)
    hw = (size, size) if isinstance(size, int) else size
    out = layer(torch.zeros(1, cin, *hw))
    expected = conv_transpose2d_output_size(size, k, s, p, op, d)
    assert (expected if isinstance(expected, tuple) else (expected, expected)) == tuple(out.shape[-2:])
    assert conv_transpose2d_params(cin, cout, k, g) == count_params(layer)
    assert conv_transpose2d_params(cin, cout, k, g, bias=False) == count_params(layer) - cout
    assert conv_transpose2d_macs(cin, cout, k, size, g) == count_macs(layer, (cin, *hw))


def test_conv_transpose_output_padding_must_be_smaller_than_stride():
    with pytest.raises(ValueError, match="output_padding=2 must be smaller"):
        conv_transpose2d_output_size(4, 3, stride=2, output_padding=2)
    # PyTorch refuses the same layer.
    with pytest.raises((RuntimeError, ValueError)):
        nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="padding=5 is too large"):
        conv_transpose2d_output_size(2, 3, stride=1, padding=5)


# --------------------------------------------------------------------------- params and MACs


@pytest.mark.parametrize("cin, cout, k, g, bias", [
    (3, 4, 3, 1, False),
    (3, 4, 3, 1, True),
    (8, 16, 3, 4, True),  # grouped
    (8, 8, 3, 8, False),  # depthwise
    (32, 64, 5, 32, True),  # depthwise with a channel multiplier of 2
    (8, 16, (1, 3), 2, True),  # non-square kernel
    (64, 128, 1, 1, False),  # pointwise
])
def test_conv2d_params_matches_count_params(cin, cout, k, g, bias):
    assert conv2d_params(cin, cout, k, g, bias) == count_params(nn.Conv2d(cin, cout, k, groups=g, bias=bias))


@pytest.mark.parametrize("cin, cout, k, s, p, d, g, size", [
    (3, 4, 3, 1, 0, 1, 1, 5),
    (8, 16, 3, 1, 1, 1, 4, 9),  # grouped
    (8, 8, 3, 1, 1, 1, 8, 10),  # depthwise
    (6, 12, 3, 1, 2, 2, 3, 11),  # dilated and grouped
    (4, 8, 5, 2, 2, 1, 1, 15),  # strided
    (4, 4, 3, 3, 0, 2, 4, 17),  # strided, dilated, depthwise
    (6, 4, (3, 1), (2, 1), (1, 0), 1, 2, (9, 7)),
])
def test_conv2d_macs_matches_count_macs(cin, cout, k, s, p, d, g, size):
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g)
    hw = (size, size) if isinstance(size, int) else size
    out = conv2d_output_size(size, k, s, p, d)
    assert conv2d_macs(cin, cout, k, out, g) == count_macs(conv, (cin, *hw))


def test_linear_params_and_macs():
    assert linear_params(512, 10) == count_params(nn.Linear(512, 10)) == 5130
    assert linear_params(512, 10, bias=False) == count_params(nn.Linear(512, 10, bias=False)) == 5120
    assert count_macs(nn.Linear(512, 10), (512,)) == 512 * 10
    with pytest.raises(ValueError, match="in_features and out_features"):
        linear_params(0, 10)


def test_the_notes_example():
    # A 5x5x3 input, 4 filters of 3x3x3, no padding, no bias: 3x3x4 output.
    conv = nn.Conv2d(3, 4, 3, bias=False)
    assert count_params(conv) == conv2d_params(3, 4, 3, bias=False) == 108
    assert count_macs(conv, (3, 5, 5)) == conv2d_macs(3, 4, 3, conv2d_output_size(5, 3)) == 972
    # Depthwise separable: 3 filters of 3x3x1, then 4 of 1x1x3.
    dw, pw = nn.Conv2d(3, 3, 3, groups=3, bias=False), nn.Conv2d(3, 4, 1, bias=False)
    assert count_params(dw) == conv2d_params(3, 3, 3, groups=3, bias=False) == 27
    assert count_params(pw) == conv2d_params(3, 4, 1, bias=False) == 12
    assert count_macs(dw, (3, 5, 5)) == conv2d_macs(3, 3, 3, 3, groups=3) == 243
    assert count_macs(pw, (3, 3, 3)) == conv2d_macs(3, 4, 1, 3) == 108
    separable = nn.Sequential(dw, pw)
    assert count_params(separable) == 39
    assert count_macs(separable, (3, 5, 5)) == 351


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="groups=4 must divide both in_channels=6"):
        conv2d_params(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        conv2d_macs(6, 8, 3, 5, groups=3)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        conv_transpose2d_macs(4, 3, 3, 5, groups=2)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        conv2d_params(0, 8, 3)
    with pytest.raises(ValueError, match="does not fit an input of 3"):
        conv2d_output_size(3, 5)
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        conv2d_output_size(8, (3, 3, 3))
    with pytest.raises(ValueError, match="padding >= 0"):
        conv2d_output_size(8, 3, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        conv2d_output_size(8, 3, stride=0)


# --------------------------------------------------------------------------- receptive field


def _measured_receptive_field(layers) -> int:
    """Width of the input region that the centre output of a conv stack depends on."""
    convs = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False)
             for k, s, *rest in layers for d in [rest[0] if rest else 1]]
    for c in convs:
        nn.init.constant_(c.weight, 1.0)
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    y = nn.Sequential(*convs)(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    cols = x.grad[0, 0].abs().sum(0).nonzero()
    return int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("layers, expected", [
    ([(3, 1)], 3),
    ([(3, 1), (3, 1)], 5),
    ([(3, 1), (3, 1), (3, 1)], 7),
    ([(3, 2), (3, 1)], 7),  # the stride doubles the second layer's step
    ([(3, 2), (3, 2), (3, 1)], 15),
    ([(3, 1, 2)], 5),  # a dilated 3x3 spans 5 pixels
    ([(3, 1, 1), (3, 1, 2), (3, 1, 4)], 15),  # Yu & Koltun 2016: 2^(i+2) - 1
    ([(11, 4), (3, 2)], 19),  # AlexNet's conv1 + pool1
])
def test_receptive_field(layers, expected):
    assert receptive_field(layers) == expected
    assert _measured_receptive_field(layers) == expected


def test_receptive_field_bad_layer():
    with pytest.raises(ValueError, match="bad layer"):
        receptive_field([(3, 0)])


# --------------------------------------------------------------------------- counters


def test_resnet50_counts_match_torchvision_model_card():
    from torchvision.models import resnet50

    model = resnet50()
    assert count_params(model) == 25_557_032
    assert count_macs(model) == 4_089_184_256


def test_count_macs_restores_the_mode():
    model = _tiny_cnn()
    model.train()
    count_macs(model, (3, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    count_macs(model, (3, 16, 16))
    assert not model.training


def test_count_params_trainable_only_and_bad_arguments():
    model = _tiny_cnn()
    total = count_params(model)
    assert total == sum(p.numel() for p in model.parameters())
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == total - 3 * 8 * 9
    with pytest.raises(ValueError, match="nn.Module"):
        count_params(torch.zeros(3))
    with pytest.raises(ValueError, match="without the batch dimension"):
        count_macs(model, 224)
    with pytest.raises(ValueError, match="positive ints"):
        count_macs(model, (3, 0, 16))


def test_latency_result_and_threads_restored():
    model = _tiny_cnn().train()
    threads = torch.get_num_threads()
    result = latency(model, (3, 16, 16), batch_size=2, repeats=3, warmup=1, threads=1)
    assert isinstance(result, LatencyResult)
    assert result.median_ms > 0 and result.q1_ms <= result.median_ms <= result.q3_ms
    assert (result.repeats, result.batch_size, result.threads, result.device) == (3, 2, 1, "cpu")
    assert "ms" in str(result)
    assert torch.get_num_threads() == threads
    assert model.training
    with pytest.raises(ValueError, match="repeats"):
        latency(model, (3, 16, 16), repeats=0)


def test_peak_memory_grows_with_batch_and_training():
    torch.manual_seed(0)
    model = _tiny_cnn().eval()
    one = peak_memory(model, (3, 32, 32), batch_size=1)
    eight = peak_memory(model, (3, 32, 32), batch_size=8)
    trained = peak_memory(model, (3, 32, 32), batch_size=8, train=True)
    assert one > 0
    assert eight > one
    assert trained > eight
    # At least the first convolution's output (8 channels of 32x32 float32) per image is live.
    assert eight >= 8 * 8 * 32 * 32 * 4
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_summary_table():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
    text = str(summary(model, (3, 5, 5)))
    assert "Total params" in text
    assert "108" in text
    assert str(summary(model, (1, 3, 5, 5))) == text  # torchinfo's size, with its batch of one


def test_summary_writes_the_unit_of_the_mult_adds():
    # torchinfo 1.8 on Python 3.11+ printed "Total mult-adds (Units.MEGABYTES): 0.00".
    small = nn.Conv2d(3, 4, 3, bias=False)
    text = str(summary(small, (3, 5, 5)))
    assert "Total mult-adds (M): 0.00" in text and "Units." not in text
    big = nn.Conv2d(64, 64, 3, bias=False)  # 64 * 64 * 9 * 198 * 198 = 1.445 GMACs
    stats = summary(big, (64, 200, 200))
    assert f"Total mult-adds (G): {count_macs(big, (64, 200, 200)) / 1e9:.2f}" in repr(stats)
    assert "Total mult-adds (G): 1.45" in str(stats)
    assert stats.total_mult_adds == 64 * 64 * 9 * 198 * 198  # still torchinfo's statistics


def test_count_macs_accepts_torchinfos_size_with_a_batch_of_one():
    from cnnlearn import create_model

    model = create_model("resnet20")
    per_image = count_macs(model, (3, 32, 32))
    assert per_image > 40_000_000  # ResNet-20: about 41 MMACs
    assert count_macs(model, (1, 3, 32, 32)) == per_image
    assert count_macs(_tiny_cnn(), (1, 3, 16, 16)) == count_macs(_tiny_cnn(), (3, 16, 16))
    # A larger batch is refused with the right form, before the model sees a 5-D tensor.
    with pytest.raises(ValueError, match=r"batch of 8 images.*input_size=\(3, 32, 32\).*batch_size=8"):
        count_macs(model, (8, 3, 32, 32))
    with pytest.raises(ValueError, match=r"input_size=\(3, 16, 16\)"):
        latency(_tiny_cnn(), (2, 3, 16, 16))
    with pytest.raises(ValueError, match="without the batch dimension"):
        count_macs(model, "3x32x32")


def test_compare_latency_interleaves_and_orders():
    torch.manual_seed(0)
    small = nn.Conv2d(16, 16, 1, bias=False)
    big = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1, bias=False) for _ in range(4)])  # ~150x the MACs
    results = compare_latency({"small": (small, (16, 32, 32)), "big": (big, (64, 32, 32))},
                              rounds=3, repeats=3, warmup=1, threads=1)
    assert list(results) == ["small", "big"]
    for r in results.values():
        assert isinstance(r, LatencyResult)
        assert (r.repeats, r.batch_size, r.threads, r.device) == (9, 1, 1, "cpu")
        assert 0 < r.q1_ms <= r.median_ms <= r.q3_ms
        assert len(r.rounds_ms) == 3 and r.median_ms == statistics.median(r.rounds_ms)  # one per round
    assert results["big"].median_ms > 3 * results["small"].median_ms
    one = compare_latency({"small": (small, (16, 8, 8))}, rounds=1, repeats=2, warmup=0)
    assert one["small"].q1_ms == one["small"].median_ms == one["small"].q3_ms
    with pytest.raises(ValueError, match="models is empty"):
        compare_latency({})
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        compare_latency({"small": (small, (16, 8, 8))}, rounds=0)
