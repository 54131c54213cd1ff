"""Every public boundary validates its input (issue 22).

* A table of bad values for every public function: each must raise the documented
  exception, with a message that names the argument.
* Property-based tests (Hypothesis) of the formula helpers against real ``nn.Conv2d`` and
  ``nn.ConvTranspose2d`` layers over random valid arguments, and of their rejection of
  invalid ones.
* ``fit`` / ``fit_gan`` check the model against the data and the checkpoint path before
  the first step, stop a diverging run, and refuse to resume on other data or another
  network. Stale temporary files of killed writes are removed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnnlearn
import cnnlearn._validate as V
from cnnlearn import measure
from cnnlearn._io import CheckpointMismatchError, CorruptFileError, atomic_save
from cnnlearn.data import Data, DeviceLoader, cache_dir
from cnnlearn.gan import GANConfig, autocast_dtype, fit_gan, interpolate, latent, sample
from cnnlearn.models.dcgan import dcgan
from cnnlearn.train import History, TrainConfig, evaluate, fit, predict, recalibrate_bn
from cnnlearn.viz import plot_confusion, plot_history, show_feature_maps

K = 4
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CFG = dict(epochs=1, lr=0.05, precision="fp32", channels_last=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_data(n_train: int = 16, batch_size: int = 8, seed: int = 0, classes: int = K, size: int = 8) -> Data:
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % classes
        noise = torch.randint(-30, 31, (n, 3, size, size), generator=g)
        return ((40 + 55 * (labels % 4))[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8), labels

    (xtr, ytr), (xte, yte) = make(n_train), make(8)
    return Data("brightness", DeviceLoader(xtr, ytr, batch_size, MEAN, STD, shuffle=True, seed=seed, drop_last=True),
                DeviceLoader(xte, yte, 16, MEAN, STD), tuple("abcdefghij"[:classes]), MEAN, STD, source="synthetic")


def tiny_net(outputs: int = K, seed: int = 0, norm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if norm else []), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))


def raises_naming(exc: type[Exception], name: str):
    """``pytest.raises(exc)`` whose message must name ``name``."""
    return pytest.raises(exc, match=_escape(name))


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config, rules", [(TrainConfig, "cnnlearn.train._TRAIN_RULES"),
                                           (GANConfig, "cnnlearn.gan._GAN_RULES")], ids=["TrainConfig", "GANConfig"])
def test_every_config_field_has_a_rule(config, rules):
    module, name = rules.rsplit(".", 1)
    table = getattr(__import__(module, fromlist=[name]), name)
    fields = {f.name for f in dataclasses.fields(config)}
    assert fields == set(table), f"fields without a rule: {sorted(fields - set(table))}; " \
                                 f"rules without a field: {sorted(set(table) - fields)}"


BAD_CONFIG_VALUES = [
    # (field, bad value, exception): NaN, infinity, strings, bools, out of range
    ("epochs", 0, ValueError), ("epochs", 2.0, TypeError), ("epochs", True, TypeError), ("epochs", "3", TypeError),
    ("lr", float("nan"), ValueError), ("lr", float("inf"), ValueError), ("lr", -0.1, ValueError),
    ("lr", "0.1", TypeError), ("lr", None, TypeError),
    ("seed", -1, ValueError), ("seed", 1.5, TypeError), ("seed", 2**40, ValueError),
]
TRAIN_ONLY = [
    ("optimizer", "adam", ValueError), ("schedule", "step", ValueError), ("momentum", 1.0, ValueError),
    ("momentum", -0.1, ValueError), ("momentum", float("nan"), ValueError), ("weight_decay", -1e-4, ValueError),
    ("weight_decay", float("inf"), ValueError), ("warmup_epochs", float("nan"), ValueError),
    ("label_smoothing", 1.0, ValueError), ("grad_clip", -1.0, ValueError), ("grad_clip", 0.0, ValueError),
    ("grad_clip", float("nan"), ValueError), ("tta_flip", "no", TypeError), ("channels_last", 1, TypeError),
    ("precision", "float32", ValueError),
]
GAN_ONLY = [
    ("nz", 0, ValueError), ("d_steps", 0, ValueError), ("betas", (0.5,), ValueError), ("betas", 0.5, TypeError),
    ("betas", (1.0, 0.9), ValueError), ("betas", (0.5, float("nan")), ValueError), ("loss", "hinge", ValueError),
    ("n_fixed", -1, ValueError), ("sample_every", 0, ValueError), ("precision", "fp16", ValueError),
    ("channels_last", "yes", TypeError),
]


@pytest.mark.parametrize("config, field, value, exc",
                         [(TrainConfig, *row) for row in BAD_CONFIG_VALUES + TRAIN_ONLY]
                         + [(GANConfig, *row) for row in BAD_CONFIG_VALUES + GAN_ONLY],
                         ids=lambda v: v.__name__ if isinstance(v, type) else repr(v))
def test_bad_config_values_name_the_field(config, field, value, exc):
    with pytest.raises(exc) as info:
        config(**{field: value})
    assert isinstance(info.value, ValueError)  # every bad argument is a ValueError, as documented
    assert str(info.value).startswith(field)


def test_configs_store_plain_values():
    cfg = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5), tta_flip=np.bool_(True))
    assert (type(cfg.epochs), type(cfg.lr), type(cfg.tta_flip)) == (int, float, bool)
    assert GANConfig(betas=[0.5, 0.9]).betas == (0.5, 0.9)  # a list pair becomes the tuple Adam is given


# --------------------------------------------------------------------------- every public function

_model = tiny_net(norm=False)
_data = tiny_data()
_g, _d = dcgan(8, 1, nz=8, ngf=8, ndf=8)

# (call, exception, what the message must name). TypeError rows raise ArgumentTypeError,
# which is a ValueError too.
BAD_CALLS = {
    # budget
    "by_budget budget": (lambda: cnnlearn.by_budget(smoke=1, cpu=2, gpu=3, budget="fast"), ValueError, "budget"),
    "get_device string": (lambda: cnnlearn.get_device("gpu"), ValueError, "device='gpu'"),
    "get_device type": (lambda: cnnlearn.get_device(3), TypeError, "device"),
    "seed_everything": (lambda: cnnlearn.seed_everything(-1), ValueError, "seed"),
    "setup seed": (lambda: cnnlearn.setup(seed="0", verbose=False), TypeError, "seed"),
    # check
    "check id type": (lambda: cnnlearn.check(1, 73856), TypeError, "id"),
    "check unknown id": (lambda: cnnlearn.check("ch01.conv_parms", 73856), ValueError, "ch01.conv_params"),
    "list_exercises": (lambda: cnnlearn.list_exercises(1), TypeError, "prefix"),
    # data
    "load_data name": (lambda: cnnlearn.load_data("cifar100"), ValueError, "cifar100"),
    "load_data augment": (lambda: cnnlearn.load_data(augment="no"), TypeError, "augment"),
    "load_data batch_size": (lambda: cnnlearn.load_data(batch_size=0), ValueError, "batch_size"),
    "load_data per_class": (lambda: cnnlearn.load_data(train_per_class=2.5), TypeError, "train_per_class"),
    "load_data seed": (lambda: cnnlearn.load_data(seed=-3), ValueError, "seed"),
    "load_images split": (lambda: cnnlearn.load_images("cifar10", "val"), ValueError, "split"),
    "balanced_subset": (lambda: cnnlearn.balanced_subset(torch.zeros(4, dtype=torch.long), 0), ValueError,
                        "per_class"),
    "loader std=0": (lambda: DeviceLoader(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                                          2, MEAN, (0.2, 0.0, 0.2)), ValueError, "std[1]"),
    "loader std nan": (lambda: DeviceLoader(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                                            2, (0.5, float("nan"), 0.5), STD), ValueError, "mean[1]"),
    "loader path images": (lambda: DeviceLoader("cifar10/train", torch.zeros(4, dtype=torch.long), 2, MEAN, STD),
                           TypeError, "images"),
    "loader float labels": (lambda: DeviceLoader(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4), 2, MEAN,
                                                 STD), TypeError, "labels"),
    "loader augment": (lambda: DeviceLoader(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                                            2, MEAN, STD, augment="yes"), TypeError, "augment"),
    # formulas
    "conv2d_output_size size": (lambda: cnnlearn.conv2d_output_size(-4, 1, padding=3), ValueError, "size"),
    "conv2d_output_size dilation": (lambda: cnnlearn.conv2d_output_size(8, 3, dilation=0), ValueError, "dilation"),
    "conv2d_output_size stride": (lambda: cnnlearn.conv2d_output_size(8, 3, stride=-1), ValueError, "stride"),
    "conv2d_output_size padding": (lambda: cnnlearn.conv2d_output_size(8, 3, padding=-1), ValueError, "padding"),
    "conv2d_output_size float": (lambda: cnnlearn.conv2d_output_size(8.0, 3), TypeError, "size"),
    "conv2d_output_size triple": (lambda: cnnlearn.conv2d_output_size(8, (3, 3, 3)), TypeError, "kernel_size"),
    "conv_transpose2d_output_size": (lambda: cnnlearn.conv_transpose2d_output_size(4, 4, 2, padding=-1), ValueError,
                                     "padding"),
    "conv_transpose2d_output_size output_padding": (
        lambda: cnnlearn.conv_transpose2d_output_size(4, 4, 2, output_padding=-1), ValueError, "output_padding"),
    "conv2d_params kernel 0": (lambda: cnnlearn.conv2d_params(16, 16, 0), ValueError, "kernel_size"),
    "conv2d_params float channels": (lambda: cnnlearn.conv2d_params(16.0, 16, 3), TypeError, "in_channels"),
    "conv2d_params bias": (lambda: cnnlearn.conv2d_params(16, 16, 3, bias="no"), TypeError, "bias"),
    "conv2d_params groups": (lambda: cnnlearn.conv2d_params(16, 16, 3, groups=3), ValueError, "groups=3"),
    "conv2d_macs output_size": (lambda: cnnlearn.conv2d_macs(16, 16, 3, 0), ValueError, "output_size"),
    "conv_transpose2d_params": (lambda: cnnlearn.conv_transpose2d_params(16, -16, 3), ValueError, "out_channels"),
    "conv_transpose2d_macs": (lambda: cnnlearn.conv_transpose2d_macs(16, 16, 3, -2), ValueError, "input_size"),
    "linear_params": (lambda: cnnlearn.linear_params(512, 10.5), TypeError, "out_features"),
    "receptive_field extra entry": (lambda: cnnlearn.receptive_field([(3, 1, 1, 9)]), ValueError, "layers[0]"),
    "receptive_field zero stride": (lambda: cnnlearn.receptive_field([(3, 1), (3, 0)]), ValueError, "layers[1]"),
    "receptive_field float": (lambda: cnnlearn.receptive_field([(3.0, 1)]), ValueError, "layers[0]"),
    "receptive_field string": (lambda: cnnlearn.receptive_field("3x3"), TypeError, "layers"),
    # measuring
    "count_params": (lambda: cnnlearn.count_params("resnet20"), TypeError, "model"),
    "count_macs model": (lambda: cnnlearn.count_macs("resnet20", (3, 32, 32)), TypeError, "model"),
    "count_macs input_size": (lambda: cnnlearn.count_macs(_model, (3, 0, 8)), ValueError, "input_size"),
    "count_macs too small": (lambda: cnnlearn.count_macs(nn.Conv2d(3, 4, 5), (3, 2, 2)), ValueError, "(3, 2, 2)"),
    "summary too small": (lambda: cnnlearn.summary(nn.Conv2d(3, 4, 5), (3, 2, 2)), ValueError, "(3, 2, 2)"),
    "latency repeats": (lambda: cnnlearn.latency(_model, (3, 8, 8), repeats=0), ValueError, "repeats"),
    "latency threads": (lambda: cnnlearn.latency(_model, (3, 8, 8), threads=0), ValueError, "threads"),
    "latency channels": (lambda: cnnlearn.latency(_model, (1, 8, 8), repeats=1), ValueError, "(1, 8, 8)"),
    "peak_memory train": (lambda: cnnlearn.peak_memory(_model, (3, 8, 8), train="yes"), TypeError, "train"),
    "compare_latency rounds": (lambda: measure.compare_latency({"m": (_model, (3, 8, 8))}, rounds=0), ValueError,
                               "rounds"),
    # training
    "TrainConfig": (lambda: TrainConfig(lr=float("nan")), ValueError, "lr"),
    "fit model name": (lambda: fit("resnet20", _data, progress=False), TypeError, "model"),
    "fit loader as data": (lambda: fit(_model, _data.train, progress=False), TypeError, "data"),
    "fit dict config": (lambda: fit(_model, _data, {"epochs": 1}, progress=False), TypeError, "config"),
    "fit checkpoint type": (lambda: fit(_model, _data, checkpoint=3, progress=False), TypeError, "checkpoint"),
    "fit callback": (lambda: fit(_model, _data, callback="print", progress=False), TypeError, "callback"),
    "evaluate Data": (lambda: evaluate(_model, _data), TypeError, "loader"),
    "evaluate model": (lambda: evaluate(None, _data.test), TypeError, "model"),
    "predict tta_flip": (lambda: predict(_model, _data.test, tta_flip="yes"), TypeError, "tta_flip"),
    "recalibrate_bn batches": (lambda: recalibrate_bn(tiny_net(), _data.train, batches=1.5), TypeError, "batches"),
    # GANs
    "GANConfig": (lambda: GANConfig(betas=(0.5, 1.5)), ValueError, "betas"),
    "fit_gan Data": (lambda: fit_gan(_g, _d, _data, GANConfig(nz=8), progress=False), TypeError, "data.train"),
    "fit_gan iterator": (lambda: fit_gan(_g, _d, iter([torch.zeros(2, 1, 8, 8)]), GANConfig(nz=8), progress=False),
                         TypeError, "loader"),
    "fit_gan generator": (lambda: fit_gan("dcgan", _d, [torch.zeros(2, 1, 8, 8)], progress=False), TypeError,
                          "generator"),
    "fit_gan dict config": (lambda: fit_gan(_g, _d, [torch.zeros(2, 1, 8, 8)], {"nz": 8}, progress=False), TypeError,
                            "config"),
    "fit_gan device": (lambda: fit_gan(_g, _d, [torch.zeros(2, 1, 8, 8)], GANConfig(nz=8), device="gpu",
                                       progress=False), ValueError, "device"),
    "autocast_dtype": (lambda: autocast_dtype("float16", "cpu"), ValueError, "precision"),
    "sample n": (lambda: sample(_g, n=0), ValueError, "n"),
    "latent": (lambda: latent(2, 8, seed=-1), ValueError, "seed"),
    "interpolate zero": (lambda: interpolate(_g, torch.zeros(8), torch.zeros(8), spherical=True), ValueError, "z0"),
    "interpolate nan": (lambda: interpolate(_g, torch.full((8,), float("nan")), torch.ones(8)), ValueError, "z0"),
    "interpolate list": (lambda: interpolate(_g, "z0", torch.ones(8)), TypeError, "z0"),
    # figures
    "plot_confusion classes": (lambda: plot_confusion(torch.tensor([0, 1]), torch.tensor([0, 1]), "abcd"),
                               ValueError, "classes must be"),
    "plot_confusion prediction": (lambda: plot_confusion(torch.tensor([0, 4]), torch.tensor([0, 1]), tuple("abcd")),
                                  ValueError, "predictions"),
    "plot_confusion negative label": (lambda: plot_confusion(torch.tensor([0, 1]), torch.tensor([-1, 1]),
                                                             tuple("abcd")), ValueError, "labels"),
    "plot_confusion logits": (lambda: plot_confusion(torch.randn(2, 4), torch.tensor([0, 1]), tuple("abcd")),
                              ValueError, "argmax"),
    "plot_confusion lengths": (lambda: plot_confusion(torch.tensor([0]), torch.tensor([0, 1]), tuple("abcd")),
                               ValueError, "predictions and labels"),
    "plot_history": (lambda: plot_history([History()]), TypeError, "histories"),
    "show_feature_maps layers": (lambda: show_feature_maps(_model, torch.zeros(3, 8, 8), "0"), TypeError, "layers"),
    "show_feature_maps n": (lambda: show_feature_maps(_model, torch.zeros(3, 8, 8), ["0"], n=0), ValueError, "n"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS), ids=list(BAD_CALLS))
def test_bad_values_for_every_public_function(case):
    call, exc, name = BAD_CALLS[case]
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, ValueError), "every bad argument is a ValueError, as the docstrings say"
    assert name in str(info.value), f"the message does not name {name!r}: {info.value}"


def test_type_errors_are_value_errors_too():
    with pytest.raises(V.ArgumentTypeError) as info:
        TrainConfig(lr="0.1")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert "write it without quotes" in str(info.value)


# --------------------------------------------------------------------------- the formulas, by property

sizes = st.integers(1, 12)
pairs = lambda lo, hi: st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def _two(v):
    return (v, v) if isinstance(v, int) else v


@PROPERTY
@given(cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), groups=st.integers(1, 3), k=pairs(1, 5),
       stride=pairs(1, 3), padding=pairs(0, 3), dilation=pairs(1, 3), size=st.tuples(sizes, sizes),
       bias=st.booleans())
def test_conv2d_formulas_match_a_real_layer(cin_g, cout_g, groups, k, stride, padding, dilation, size, bias):
    kk, dd, pp = _two(k), _two(dilation), _two(padding)
    assume(all(size[i] + 2 * pp[i] >= dd[i] * (kk[i] - 1) + 1 for i in range(2)))  # the kernel fits
    cin, cout = cin_g * groups, cout_g * groups
    layer = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)
    out = cnnlearn.conv2d_output_size(size, k, stride, padding, dilation)
    assert out == tuple(layer(torch.zeros(1, cin, *size)).shape[2:])
    assert cnnlearn.conv2d_params(cin, cout, k, groups, bias) == cnnlearn.count_params(layer)
    assert cnnlearn.conv2d_macs(cin, cout, k, out, groups) == cnnlearn.count_macs(layer, (cin, *size))
    if isinstance(k, int) and isinstance(stride, int) and isinstance(padding, int) and isinstance(dilation, int) \
            and size[0] == size[1]:
        assert cnnlearn.conv2d_output_size(size[0], k, stride, padding, dilation) == out[0]  # ints give an int


@PROPERTY
@given(cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), groups=st.integers(1, 3), k=pairs(1, 5),
       stride=pairs(1, 3), padding=pairs(0, 2), dilation=pairs(1, 2), output_padding=pairs(0, 2),
       size=st.tuples(sizes, sizes), bias=st.booleans())
def test_conv_transpose2d_formulas_match_a_real_layer(cin_g, cout_g, groups, k, stride, padding, dilation,
                                                      output_padding, size, bias):
    st_, dd, op = _two(stride), _two(dilation), _two(output_padding)
    assume(all(op[i] < max(st_[i], dd[i]) for i in range(2)))  # nn.ConvTranspose2d's own rule
    cin, cout = cin_g * groups, cout_g * groups
    layer = nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding, groups, bias, dilation)
    try:
        real = tuple(layer(torch.zeros(1, cin, *size)).shape[2:])
    except RuntimeError:  # torch refuses a negative output size
        real = (0, 0)
    if min(real) < 1:  # torch returns an empty output at size 0: the formula refuses it with a reason
        with pytest.raises(ValueError, match="padding"):
            cnnlearn.conv_transpose2d_output_size(size, k, stride, padding, output_padding, dilation)
        return
    assert cnnlearn.conv_transpose2d_output_size(size, k, stride, padding, output_padding, dilation) == real
    assert cnnlearn.conv_transpose2d_params(cin, cout, k, groups, bias) == cnnlearn.count_params(layer)
    assert cnnlearn.conv_transpose2d_macs(cin, cout, k, size, groups) == cnnlearn.count_macs(layer, (cin, *size))


# Invalid values of each kind: each must be refused with a message naming the argument.
NEGATIVE_OR_ZERO = st.integers(-5, 0)
NOT_INTS = st.sampled_from([2.0, 2.5, "3", None, True, (1, 2, 3), [1]])
VALID = dict(size=8, kernel_size=3, stride=1, padding=1, dilation=1)


@PROPERTY
@given(arg=st.sampled_from(["size", "kernel_size", "stride", "padding", "dilation"]),
       bad=st.one_of(NEGATIVE_OR_ZERO, NOT_INTS, st.tuples(st.integers(1, 3), NEGATIVE_OR_ZERO)))
def test_conv2d_output_size_rejects_invalid_arguments(arg, bad):
    if arg == "padding" and isinstance(bad, int) and not isinstance(bad, bool):
        assume(bad < 0)  # padding 0 is valid
    if arg == "padding" and isinstance(bad, tuple) and len(bad) == 2 and isinstance(bad[1], int):
        assume(bad[1] < 0)
    with pytest.raises(ValueError) as info:
        cnnlearn.conv2d_output_size(**{**VALID, arg: bad})
    assert arg in str(info.value)


@PROPERTY
@given(arg=st.sampled_from(["in_channels", "out_channels", "kernel_size", "groups"]),
       bad=st.one_of(NEGATIVE_OR_ZERO, NOT_INTS), fn=st.sampled_from(["conv2d_params", "conv_transpose2d_params"]))
def test_params_formulas_reject_invalid_arguments(arg, bad, fn):
    args = dict(in_channels=4, out_channels=4, kernel_size=3, groups=1)
    assume(not (arg == "kernel_size" and isinstance(bad, list)))  # [1] is not a pair either: still refused below
    with pytest.raises(ValueError) as info:
        getattr(cnnlearn, fn)(**{**args, arg: bad})
    assert arg in str(info.value)


@PROPERTY
@given(layers=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=4))
def test_receptive_field_matches_a_real_stack(layers):
    convs = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in layers]
    r = cnnlearn.receptive_field(layers)
    assume(r <= 48)
    for c in convs:
        nn.init.constant_(c.weight, 1.0)
    x = torch.zeros(1, 1, 2 * r + 1, 2 * r + 1, requires_grad=True)
    try:
        y = nn.Sequential(*convs)(x)
    except RuntimeError:  # the stack leaves no output at this size
        return
    y[0, 0, 0, 0].backward()  # the first output: its field starts at the top-left corner
    cols = x.grad[0, 0].abs().sum(0).nonzero()
    assert int(cols.max() - cols.min() + 1) == r


# --------------------------------------------------------------------------- fit: model against data


@pytest.mark.parametrize("outputs, match", [(100, "has 100 outputs but the data has 4 classes; build it with "
                                                  "num_classes=4"),
                                            (3, "has 3 outputs but the data has 4 classes")])
def test_fit_refuses_a_head_for_another_number_of_classes(outputs, match):
    model = tiny_net(outputs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        fit(model, tiny_data(), TrainConfig(**CFG), progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing trained


class _Pixels(nn.Module):
    def __init__(self, out=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, K, 9)  # needs images of at least 9x9
        self.out = out

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.out(y) if self.out else y


def test_fit_refuses_images_the_model_cannot_take():
    with pytest.raises(ValueError, match=r"_Pixels cannot take the images of this data, shape \(3, 8, 8\)") as info:
        fit(_Pixels(), tiny_data(), TrainConfig(**CFG), progress=False)
    assert "Kernel size can't be greater than actual input size" in str(info.value)  # torch's reason, kept


def test_fit_refuses_outputs_that_are_not_logits():
    with pytest.raises(ValueError, match=r"must return logits of shape \(B, 4\)"):
        fit(nn.Sequential(nn.Conv2d(3, K, 1)), tiny_data(), TrainConfig(**CFG), progress=False)  # (B, 4, 8, 8)
    with pytest.raises(ValueError, match="model .* has no trainable parameters"):
        fit(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, K).requires_grad_(False)), tiny_data(),
            TrainConfig(**CFG), progress=False)
    with pytest.raises(ValueError, match="int64 logits"):
        fit(_Pixels(lambda y: y.long()), tiny_data(size=9), TrainConfig(**CFG), progress=False)


def test_fit_refuses_labels_beyond_the_classes():
    data = tiny_data()
    data.train.labels[0] = K  # a label for a fifth class
    with pytest.raises(ValueError, match=r"labels of the data must lie in \[0, 4\)"):
        fit(tiny_net(), data, TrainConfig(**CFG), progress=False)


def test_fit_refuses_a_loader_without_batches():
    data = tiny_data(n_train=4, batch_size=8)  # drop_last: no full batch
    with pytest.raises(ValueError, match="yields no batches"):
        fit(tiny_net(), data, TrainConfig(**CFG), progress=False)


def test_the_model_check_changes_nothing():
    model, data = tiny_net().train(), tiny_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    V.check_classifier(model, data)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics too
    model.eval()
    V.check_classifier(model, data)
    assert not model.training


# --------------------------------------------------------------------------- checkpoint paths


def test_checkpoint_paths_are_checked_before_training(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    cases = {tmp_path: "is a folder", tmp_path / "a_file" / "run.pt": "which is a file, not a folder",
             "": "must be a file path", "/proc/cnnlearn-no-such-dir/run.pt": "cannot be written"}
    for path, match in cases.items():
        model = tiny_net()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=match) as info:
            fit(model, tiny_data(), TrainConfig(**CFG), checkpoint=path, progress=False)
        assert "checkpoint" in str(info.value)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # before the first step
    assert (tmp_path / "a_file").read_text() == "mine"


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        with pytest.raises(ValueError, match="cannot be written"):
            fit_gan(*dcgan(8, 1, nz=8, ngf=8, ndf=8), [torch.zeros(2, 1, 8, 8)], GANConfig(nz=8),
                    checkpoint=folder / "gan.pt", progress=False, device="cpu")
    finally:
        folder.chmod(0o755)


def test_writable_file_leaves_nothing_behind(tmp_path):
    path = V.writable_file("checkpoint", tmp_path / "deep" / "er" / "run.pt")
    assert path == tmp_path / "deep" / "er" / "run.pt"
    assert list(tmp_path.iterdir()) == []  # no folder created, no probe file left
    assert V.writable_file("checkpoint", "~/x.pt") == Path.home() / "x.pt"


# --------------------------------------------------------------------------- checkpoints: what they were trained on


def _run(path, data=None, model=None, **cfg):
    return fit(model or tiny_net(), data or tiny_data(), TrainConfig(**{**CFG, **cfg}), checkpoint=path,
               progress=False)


@pytest.mark.parametrize("other, match", [
    (dict(data=tiny_data(n_train=24)), r"other data: train\.images: 16 in the checkpoint, 24 now"),
    (dict(data=tiny_data(seed=1)), r"train\.checksum: .* in the checkpoint, .* now; train\.seed: 0 in the "),
    (dict(data=tiny_data(batch_size=4)), r"train\.batch_size: 8 in the checkpoint, 4 now"),
    (dict(model=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(8, K))),
     r"other architecture: parameters\.0\.weight: \(4, 3, 3, 3\) in the checkpoint, \(8, 3, 3, 3\) now"),
])
def test_resume_refuses_other_data_or_another_network(tmp_path, other, match):
    path = tmp_path / "run.pt"
    _run(path, epochs=1)
    with pytest.raises(CheckpointMismatchError, match=match):
        _run(path, epochs=1, **other)


def test_resume_with_the_same_data_and_network_still_works(tmp_path):
    path = tmp_path / "run.pt"
    first = _run(path, epochs=1)
    again = _run(path, epochs=1, data=tiny_data(), model=tiny_net(seed=5))  # new objects, same content
    assert again.test_loss == first.test_loss


def test_a_file_that_is_not_a_checkpoint_is_left_alone(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": tiny_net().state_dict()}, path)  # the user's own file
    with pytest.raises(CorruptFileError) as info:
        _run(path)
    assert "is not a fit checkpoint" in str(info.value) and "delete" not in str(info.value)
    assert path.exists()
    gan_path = tmp_path / "gan.pt"
    fit_gan(*dcgan(8, 1, nz=8, ngf=8, ndf=8), [torch.rand(2, 1, 8, 8) * 2 - 1], GANConfig(epochs=1, nz=8, n_fixed=4),
            checkpoint=gan_path, progress=False, device="cpu")
    with pytest.raises(CheckpointMismatchError, match="is a checkpoint of fit_gan, not of fit"):
        _run(gan_path)


def test_an_old_checkpoint_without_records_is_refused_with_advice(tmp_path):
    path = tmp_path / "run.pt"
    _run(path)
    state = torch.load(path, weights_only=True)
    del state["records"], state["kind"]
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="has no record of its data.*older cnnlearn"):
        _run(path)
    del state["loss_start"]  # older still: it lacks a key as well
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"written by an older cnnlearn \(it lacks loss_start\)"):
        _run(path)


def test_gan_resume_refuses_other_networks(tmp_path):
    path, batches = tmp_path / "gan.pt", [torch.rand(2, 1, 8, 8) * 2 - 1]
    cfg = GANConfig(epochs=1, nz=8, n_fixed=4)
    fit_gan(*dcgan(8, 1, nz=8, ngf=8, ndf=8), batches, cfg, checkpoint=path, progress=False, device="cpu")
    with pytest.raises(CheckpointMismatchError, match=r"architecture: discriminator\.parameters\..*\(8,"):
        fit_gan(*dcgan(8, 1, nz=8, ngf=8, ndf=16)[:1], dcgan(8, 1, nz=8, ngf=8, ndf=16)[1], batches, cfg,
                checkpoint=path, progress=False, device="cpu")
    with pytest.raises(CheckpointMismatchError, match=r"other data: batches: 1 in the checkpoint, 2 now"):
        fit_gan(*dcgan(8, 1, nz=8, ngf=8, ndf=8), batches * 2, cfg, checkpoint=path, progress=False, device="cpu")


# --------------------------------------------------------------------------- divergence


class _Blowup(nn.Module):
    """A classifier whose logits are multiplied by ``scale`` (set from outside)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net(norm=False)
        self.scale = 1.0

    def forward(self, x):
        return self.net(x) * self.scale


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model, path = _Blowup(), tmp_path / "run.pt"

    def blow_up(epoch, history):  # after epoch 1 is saved: finite but enormous losses
        model.scale = 1e4

    with pytest.raises(FloatingPointError, match=r"the training loss diverged in epoch 2.*lower the learning rate"):
        fit(model, tiny_data(), TrainConfig(**{**CFG, "epochs": 3}), checkpoint=path, progress=False,
            callback=blow_up)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_huge_learning_rate_is_stopped():
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(tiny_net(norm=False), tiny_data(), TrainConfig(**{**CFG, "epochs": 3, "lr": 1e6, "schedule": "constant"}),
            progress=False)


def test_the_guard_leaves_a_learning_run_alone():
    h = fit(tiny_net(), tiny_data(n_train=64), TrainConfig(**{**CFG, "epochs": 3, "lr": 0.2}), progress=False)
    assert len(h.epoch) == 3


def test_check_loss_bounds():
    V.check_loss(13.0, 1, start=1.4, floor=math.log(10), what="loss", fix="")  # below 10 x 2.30
    with pytest.raises(FloatingPointError, match="diverged"):
        V.check_loss(24.0, 1, start=1.4, floor=math.log(10), what="loss", fix="")
    V.check_loss(250.0, 1, start=30.0, floor=math.log(10), what="loss", fix="")  # a badly scaled start
    with pytest.raises(FloatingPointError, match="became nan"):
        V.check_loss(float("nan"), 1, start=None, floor=1.0, what="loss", fix="")


class _LoudD(nn.Module):
    """A discriminator whose logits are shifted by ``-shift`` (set from outside): a real
    image then costs about ``shift`` nats, finite but far beyond any learning run."""

    def __init__(self, d: nn.Module) -> None:
        super().__init__()
        self.d, self.shift = d, 0.0

    def forward(self, x):
        return self.d(x) - self.shift


def test_a_diverging_gan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    g, d = dcgan(8, 1, nz=8, ngf=8, ndf=8)
    loud, path = _LoudD(d), tmp_path / "gan.pt"

    def blow_up(epoch, history):
        loud.shift = 1e4

    with pytest.raises(FloatingPointError, match="diverged in epoch 2"):
        fit_gan(g, loud, [torch.rand(4, 1, 8, 8) * 2 - 1], GANConfig(epochs=3, nz=8, n_fixed=4), checkpoint=path,
                progress=False, device="cpu", callback=blow_up)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_fit_gan_checks_the_pair_against_the_data():
    g, d = dcgan(8, 1, nz=8, ngf=8, ndf=8)
    with pytest.raises(ValueError, match=r"generator draws images of shape \(1, 8, 8\) but the loader's are "
                                         r"\(1, 16, 16\)"):
        fit_gan(g, d, [torch.zeros(2, 1, 16, 16)], GANConfig(nz=8), progress=False, device="cpu")
    with pytest.raises(ValueError, match=r"one float logit per image"):
        fit_gan(g, nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten()), [torch.zeros(2, 1, 8, 8)], GANConfig(nz=8),
                progress=False, device="cpu")
    with pytest.raises(ValueError, match="discriminator .* has no trainable parameters"):
        fit_gan(g, nn.Flatten(), [torch.zeros(2, 1, 8, 8)], GANConfig(nz=8), progress=False, device="cpu")


# --------------------------------------------------------------------------- temporary files


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path, monkeypatch):
    import cnnlearn._io as io

    target = tmp_path / "cache.pt"
    host = io._writer_tag().split("-")[0]
    dead = tmp_path / f".cache.pt.{host}-999999999-abc.tmp"  # a killed write of this machine
    live = tmp_path / f".cache.pt.{host}-{os.getpid()}-abc.tmp"  # a write in progress
    other = tmp_path / ".cache.pt.otherhost-1-abc.tmp"  # another machine's write (shared disk)
    legacy = tmp_path / ".cache.pt.abc123.tmp"  # an older cnnlearn's name
    unrelated = tmp_path / ".other.pt.x-1-y.tmp"
    for p in (dead, live, other, legacy, unrelated):
        p.write_bytes(b"half")
    old = time.time() - 2 * io._STALE_AFTER_S
    os.utime(legacy, (old, old))
    atomic_save({"x": 1}, target)
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists() and unrelated.exists()
    os.utime(other, (old, old))  # an hour without a write: stale whoever wrote it
    atomic_save({"x": 2}, target)
    assert not other.exists() and live.exists()
    assert torch.load(target, weights_only=True) == {"x": 2}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache.pt.") and p != live]


# --------------------------------------------------------------------------- the environment


@pytest.mark.parametrize("value, match", [("gpu", "CNNLEARN_DEVICE='gpu' is not a device"),
                                          ("cuda:7", "CNNLEARN_DEVICE='cuda:7'"),
                                          ("mps", "CNNLEARN_DEVICE='mps'"),
                                          ("meta", "cnnlearn runs on")])
def test_bad_device_variable_is_named(monkeypatch, value, match):
    if value == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if value == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    monkeypatch.setenv("CNNLEARN_DEVICE", value)
    with pytest.raises(ValueError, match=match) as info:
        cnnlearn.get_device()
    assert "unset CNNLEARN_DEVICE" in str(info.value)
    assert cnnlearn.get_device("cpu") == torch.device("cpu")  # an argument wins over the variable


def test_bad_cache_variable_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLEARN_CACHE", "~no-such-user-cnnlearn/cache")
    with pytest.raises(ValueError, match="CNNLEARN_CACHE='~no-such-user-cnnlearn/cache' cannot be expanded"):
        cache_dir()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "file"))
    with pytest.raises(ValueError, match="CNNLEARN_CACHE=.* is a file, not a folder"):
        cache_dir()
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------- inputs the networks cannot take


@pytest.mark.parametrize("x, match", [
    (np.zeros((1, 3, 32, 32), np.float32), "got a ndarray of shape .* torch.from_numpy"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), r"float images, got dtype torch.uint8; .* x.float\(\) / 255"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.float64), r"float32 parameters but got torch.float64 images"),
    (torch.zeros(3, 32, 32), r"add the batch dimension with x.unsqueeze\(0\)"),
])
@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar", "alexnet_cifar"])
def test_networks_explain_inputs_they_cannot_take(name, x, match):
    with pytest.raises(ValueError, match=match):
        cnnlearn.create_model(name, num_classes=10)(x)


def test_measuring_explains_an_input_too_small():
    alexnet = cnnlearn.create_model("alexnet")
    for fn in (cnnlearn.count_macs, cnnlearn.summary, lambda m, s: cnnlearn.latency(m, s, repeats=1, warmup=0)):
        with pytest.raises(ValueError, match=r"AlexNet cannot take an input of size \(3, 32, 32\).*too small"):
            fn(alexnet, (3, 32, 32))
    assert cnnlearn.count_macs(nn.Conv2d(3, 4, 3), (1, 3, 8, 8)) == cnnlearn.count_macs(nn.Conv2d(3, 4, 3), (3, 8, 8))


# --------------------------------------------------------------------------- answers and figures


def test_check_accepts_numpy_answers(capsys):
    assert cnnlearn.check("ch01.conv_params", np.int64(295168), quiet=True)
    assert cnnlearn.check("ch01.conv_params", np.float64(295168.0), quiet=True)
    assert cnnlearn.check("ch02.resnet200_blocks", np.array([3, 24, 36, 3]), quiet=True)
    assert cnnlearn.check("ch01.stacked_3x3", (np.int32(73_728), np.int64(102_400)), quiet=True)
    assert not cnnlearn.check("ch01.conv_params", np.int64(294912), quiet=True)


def test_plot_confusion_counts_in_the_right_cells():
    fig = plot_confusion(np.array([0, 1, 1, 3]), [0, 1, 2, 3], tuple("abcd"))  # NumPy and lists are fine
    cells = fig.axes[0].images[0].get_array()
    assert cells[2, 1] == 100 and cells[0, 0] == 100 and cells[1, 1] == 100


def test_interpolate_of_nonzero_vectors_still_works():
    g, _ = dcgan(8, 1, nz=8, ngf=8, ndf=8)
    path = interpolate(g, torch.ones(8), -torch.ones(8), steps=3, spherical=True)  # antiparallel: the line
    assert path.shape == (3, 1, 8, 8) and torch.isfinite(path).all()
