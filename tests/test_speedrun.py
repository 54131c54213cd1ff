"""The speedrun network and recipe: whitening, the network's anatomy, the recipe's options
(linear schedule, faster norm parameters, lookahead) and the timed run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnlearn
from cnnlearn.data import Data, DeviceLoader
from cnnlearn.models.speedrun import SpeedrunConfig, SpeedrunNet, whitening_filters
from cnnlearn.speedrun import speedrun, speedrun_batch_size, speedrun_config, time_to
from cnnlearn.train import Lookahead, TrainConfig, _make_optimizer, evaluate, lr_multiplier


def test_whitening_filters_decorrelate_patches():
    g = torch.Generator().manual_seed(0)
    # Correlated channels: every channel is a mix of one smooth shared signal and noise.
    base = F.avg_pool2d(torch.randn(64, 1, 20, 20, generator=g), 3, 1, 1)
    images = torch.cat([base + 0.1 * k * torch.randn(64, 1, 20, 20, generator=g) for k in (1, 2, 3)], 1)
    filters = whitening_filters(images, patch=2, eps=0.0)
    assert filters.shape == (24, 3, 2, 2)
    out = F.conv2d(images, filters[:12])  # the 12 whitened coordinates (the rest are their negatives)
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(flat)
    torch.testing.assert_close(cov, torch.eye(12), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(filters[12:], -filters[:12])
    with pytest.raises(ValueError, match="float tensor"):
        whitening_filters(images.to(torch.uint8))


def test_speedrun_net_anatomy_and_frozen_parameters():
    model = cnnlearn.create_model("speedrun_cifar_small")
    assert [n for n, _ in model.named_children()] == ["stem", "stages", "head"]
    model.init_whitening(torch.randn(20, 3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    assert model.forward_features(x).shape == (4, 128, 3, 3)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert model.stem.whiten.weight.grad is None  # fixed by the data, never trained
    assert model.stem.whiten.bias is None  # and no bias: nothing in the first layer learns
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "stem.whiten.weight" in frozen
    # So no gradient is computed through the first layer: its output needs none.
    assert not model.stem(x).requires_grad
    assert all(n.endswith("weight") and ".bn" in n for n in frozen - {"stem.whiten.weight"})  # BN scales
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # airbench94's widths: about 1.97 M parameters (Jordan, 2024)
    assert cnnlearn.count_params(cnnlearn.create_model("speedrun_cifar")) == pytest.approx(1.97e6, rel=0.01)
    with pytest.raises(ValueError, match="widths must hold three"):
        SpeedrunConfig(widths=(32, 64))
    with pytest.raises(ValueError, match="bn_momentum"):
        SpeedrunConfig(bn_momentum=0.0)
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of gelu, relu"):
        SpeedrunConfig(activation="swish")
    relu = SpeedrunNet(SpeedrunConfig(widths=(8, 8, 8), activation="relu"))
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu.modules()) == 7  # the stem's and two per stage
    assert not any(isinstance(m, torch.nn.GELU) for m in relu.modules())
    with pytest.raises(ValueError, match="expects images of shape"):
        model(torch.randn(2, 1, 32, 32))


def test_training_without_whitening_is_refused():
    model = cnnlearn.create_model("speedrun_cifar_small")
    with pytest.raises(ValueError, match="not whitened yet: call model.init_whitening"):
        model.train()(torch.randn(2, 3, 32, 32))
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # looking is fine
    model.init_whitening(torch.randn(20, 3, 32, 32))
    assert bool(model.whitened) and model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_init_whitening_sets_the_stem_from_data():
    model = cnnlearn.create_model("speedrun_cifar_small")
    images = torch.randn(50, 3, 32, 32)
    model.init_whitening(images)
    torch.testing.assert_close(model.stem.whiten.weight, whitening_filters(images))
    with pytest.raises(ValueError, match="the stem expects"):
        model.init_whitening(torch.randn(10, 1, 32, 32))


def test_linear_schedule():
    total, warm = 100, 20
    m = [lr_multiplier("linear", s, total, warm) for s in range(total + 1)]
    assert m[0] == pytest.approx(0.2) and m[warm] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(m[:warm], m[1:warm + 1]))  # rising
    assert all(a > b for a, b in zip(m[warm:total], m[warm + 1:total + 1]))  # falling
    assert m[total] == pytest.approx(0.0) and m[60] == pytest.approx(0.5)


def test_norm_lr_scale_speeds_up_only_norm_parameters():
    conv, bn, fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)
    opt = _make_optimizer(nn.Sequential(conv, bn, nn.Flatten(), fc), TrainConfig(lr=0.5, norm_lr_scale=64.0))
    weights, biases, norms = opt.param_groups
    assert (weights["lr"], biases["lr"], norms["lr"]) == (0.5, 0.5, 32.0)
    assert {id(p) for p in weights["params"]} == {id(conv.weight), id(fc.weight)}
    assert {id(p) for p in biases["params"]} == {id(conv.bias), id(fc.bias)}  # a conv bias is no norm parameter
    assert {id(p) for p in norms["params"]} == {id(bn.weight), id(bn.bias)}
    assert weights["weight_decay"] > 0 and biases["weight_decay"] == norms["weight_decay"] == 0


def test_lookahead_pulls_weights_to_their_average():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la = Lookahead(model, every=5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.step(3, 100)  # not a multiple of 5: nothing happens
    assert model.weight.item() == 1.0
    la.step(50, 100)
    decay = 0.95 ** 5 * 0.5 ** 3
    assert model.weight.item() == pytest.approx(1 - decay)  # slow = decay * 0 + (1 - decay) * 1, fast = slow
    with torch.no_grad():
        model.weight.fill_(5.0)
    la.step(100, 100)  # the last step: the fast weights become the slow ones
    assert model.weight.item() == pytest.approx(1 - decay)


def _cifar_like(n: int = 240, seed: int = 0) -> Data:
    """32x32 images whose class is the colour of a centred square: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for c in range(3):
        images[labels == c, c, 8:24, 8:24] = 220
    mean, std = (0.3, 0.3, 0.3), (0.3, 0.3, 0.3)
    train = DeviceLoader(images, labels, 40, mean, std, shuffle=True, augment=True, pad=2, drop_last=True)
    test = DeviceLoader(images[:60], labels[:60], 60, mean, std)
    return Data("squares", train, test, ("r", "g", "b"), mean, std, source="synthetic")


def test_speedrun_trains_and_times_every_epoch():
    data = _cifar_like()
    result = speedrun(4, data=data, progress=False, config=speedrun_config(4, lr=0.2, eval_every=1))
    assert len(result.wall) == 4 and all(a < b for a, b in zip(result.wall, result.wall[1:]))
    assert 0 < result.load_seconds < result.wall[0]
    assert result.final_test_acc > 0.9, result.history.test_acc  # chance is 1/3
    assert result.time_to(0.0) == result.wall[0] and result.time_to(1.01) is None
    assert time_to([0.5, 0.9, 0.95], [1.0, 2.0, 3.0], 0.9) == 2.0
    # The trained network comes back, trained (chance is 1/3).
    assert isinstance(result.network, torch.nn.Module) and bool(result.network.whitened)
    assert evaluate(result.network, data.test)[1] > 0.9


def test_speedrun_config_is_the_recipe():
    cfg = speedrun_config(10, batch_size=1024, device="cpu")
    assert (cfg.schedule, cfg.label_smoothing, cfg.norm_lr_scale, cfg.lookahead) == ("linear", 0.2, 64.0, True)
    assert cfg.warmup_epochs == pytest.approx(2.3) and cfg.tta_final_only and cfg.tta_flip
    assert math.isclose(cfg.lr * cfg.weight_decay, 0.002) and cfg.eval_every == 10  # evaluated once
    assert cfg.lr == 1.5 and cfg.tta_translate == 0  # no shifted copies on a CPU
    assert speedrun_config(10, lookahead=False).lookahead is False
    # The linear scaling rule: half the batch, half the rate; the decay per epoch is unchanged.
    half = speedrun_config(10, batch_size=512, device="cpu")
    assert half.lr == 0.75 and half.weight_decay == cfg.weight_decay
    assert speedrun_batch_size("cpu") == 512 and speedrun_config(10, device="cpu").lr == 0.75
    with pytest.raises(ValueError, match="batch_size"):
        speedrun_config(10, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_speedrun_config_on_a_gpu_is_airbench():
    cfg = speedrun_config(10, device="cuda")
    assert speedrun_batch_size("cuda") == 1024 and cfg.lr == 1.5 and cfg.tta_translate == 1


def test_speedrun_sets_the_recipe_augmentation_and_checks_data(monkeypatch):
    data = _cifar_like()
    data.train.pad = 4
    speedrun(1, data=data, progress=False, config=speedrun_config(1, lr=0.2))
    assert data.train.pad == 2 and data.train.alternate_flip
    # A teacher and model arguments reach create_model and fit.
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(net, data, config, *, teacher=None, **kwargs):
        seen.update(net=net, teacher=teacher)
        raise Stop

    monkeypatch.setattr("cnnlearn.speedrun.fit", fake_fit)
    teacher = nn.Linear(1, 1)
    with pytest.raises(Stop):
        speedrun(1, model="resnet20", data=data, progress=False, teacher=teacher,
                 model_kwargs=dict(zero_init_residual=True))
    assert seen["teacher"] is teacher
    with pytest.raises(TypeError, match="model_kwargs"):
        speedrun(1, model="resnet20", data=data, progress=False, model_kwargs=["zero_init_residual"])
    last_bns = [m.bn2 for m in seen["net"].modules() if hasattr(m, "bn2")]
    assert last_bns and all(float(bn.weight.abs().sum()) == 0 for bn in last_bns)
    with pytest.raises(ValueError, match="data must come from cnnlearn.load_data"):
        speedrun(1, data={"train": None}, progress=False)
