"""cnnlearn.regularize and the "Bag of Tricks" options of fit: mixup and CutMix do what
their formulas say, distillation's loss and gradient scale, the linear scaling rule and
warm-up, the EMA of the weights, and exact resume with all of them on.

(Each option's effect on one step of ``fit`` is tested in tests/test_config_options.py.)
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn.data import Data, DeviceLoader
from cnnlearn.regularize import (
    DEFAULT_MIX_ALPHA, BatchMixer, MixedLabels, cutmix, cutmix_box, distillation_loss, mixed_target, mixup,
)
from cnnlearn.train import TrainConfig, WeightEMA, evaluate, fit, lr_multiplier, scaled_lr, training_loss

K = 4
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()  # tiny tensors: one thread is faster than two fighting
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def brightness_data(n_train: int = 64, batch_size: int = 16, seed: int = 0, augment: bool = True) -> Data:
    """8x8 images whose class is their brightness (as in tests/test_train.py)."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % K
        noise = torch.randint(-30, 31, (n, 3, 8, 8), generator=g)
        return ((40 + 55 * labels)[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8), labels

    (xtr, ytr), (xte, yte) = make(n_train), make(32)
    train = DeviceLoader(xtr, ytr, batch_size, MEAN, STD, shuffle=True, augment=augment, pad=1, seed=seed,
                         drop_last=True)
    test = DeviceLoader(xte, yte, 2 * batch_size, MEAN, STD)
    return Data("brightness", train, test, tuple("abcd"), MEAN, STD, source="synthetic")


def small_net(seed: int = 0, norm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *([nn.BatchNorm2d(8)] if norm else []), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K))


def random_batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 8, 8, generator=g), torch.randint(0, K, (b,), generator=g), torch.randperm(b, generator=g)


# --------------------------------------------------------------------------- mixup


def test_mixup_of_two_one_hot_labels_gives_the_mixed_target():
    # An image of class 0 mixed 0.3 : 0.7 with one of class 2 has the target (0.3, 0, 0.7, 0).
    target = mixed_target(torch.tensor([0]), torch.tensor([2]), 0.3, K)
    torch.testing.assert_close(target, torch.tensor([[0.3, 0.0, 0.7, 0.0]]))
    x, y, perm = random_batch()
    mixed, labels = mixup(x, y, 0.3, perm)
    torch.testing.assert_close(mixed, 0.3 * x + 0.7 * x[perm])
    assert torch.equal(labels.y_a, y) and torch.equal(labels.y_b, y[perm]) and labels.lam == 0.3
    assert torch.allclose(mixed_target(labels.y_a, labels.y_b, 0.3, K).sum(1), torch.ones(len(y)))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mixed_loss_is_the_weighted_sum_of_the_two_cross_entropies(label_smoothing):
    x, y, perm = random_batch()
    logits = torch.randn(len(y), K, generator=torch.Generator().manual_seed(1))
    labels = MixedLabels(y, y[perm], 0.3)
    loss = labels.cross_entropy(logits, label_smoothing)
    ce = lambda t: F.cross_entropy(logits, t, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, 0.3 * ce(y) + 0.7 * ce(y[perm]))
    # ... which is the cross-entropy against the mixed (and smoothed) soft target
    smooth = lambda t: (1 - label_smoothing) * F.one_hot(t, K).float() + label_smoothing / K
    torch.testing.assert_close(loss, F.cross_entropy(logits, 0.3 * smooth(y) + 0.7 * smooth(y[perm])))
    assert loss != pytest.approx(ce(y).item())  # the comparison can fail: the partners' labels differ
    # training_loss takes mixed labels as it takes class indices
    torch.testing.assert_close(training_loss(logits, labels, label_smoothing)[0], loss)


def test_dominant_label_is_the_larger_share():
    y, y_b = torch.tensor([0, 1]), torch.tensor([2, 3])
    assert torch.equal(MixedLabels(y, y_b, 0.6).dominant, y)
    assert torch.equal(MixedLabels(y, y_b, 0.4).dominant, y_b)


# --------------------------------------------------------------------------- CutMix


def test_cutmix_pastes_the_box_and_weighs_the_labels_by_its_area():
    x, y, perm = random_batch()
    box = (1, 5, 2, 8)  # rows 1..4, columns 2..7: 4 x 6 = 24 of 64 pixels
    before = x.clone()
    mixed, labels = cutmix(x, y, box, perm)
    assert torch.equal(x, before)  # the input batch is left alone
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:5, 2:8] = True
    assert torch.equal(mixed[:, :, inside], x[perm][:, :, inside])
    assert torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
    assert labels.lam == pytest.approx(1 - 24 / 64)
    assert torch.equal(labels.y_b, y[perm])


class _FixedCentre:
    """A stand-in for a NumPy generator whose every integer draw is ``value``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def integers(self, high: int) -> int:
        return self.value


def test_cutmix_box_has_area_one_minus_lambda_unless_clipped():
    # lam = 0.75: sides 32 * sqrt(0.25) = 16 around the centre (16, 16): a quarter of the image
    assert cutmix_box(32, 32, 0.75, _FixedCentre(16)) == (8, 24, 8, 24)
    # at a corner the box is clipped to the image, and pastes less
    assert cutmix_box(32, 32, 0.75, _FixedCentre(0)) == (0, 8, 0, 8)
    rng = np.random.default_rng(0)
    for lam in rng.uniform(size=20):
        top, bottom, left, right = cutmix_box(32, 24, float(lam), rng)
        assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 24
        assert (bottom - top) * (right - left) <= (1 - lam) * 32 * 24 + 1e-9


# --------------------------------------------------------------------------- the mixer in fit


def test_batch_mixer_is_seeded_and_draws_beta_ratios():
    x, y, _ = random_batch(b=16)
    a = BatchMixer("mixup", None, (0, 3))(x, y)
    b = BatchMixer("mixup", None, (0, 3))(x, y)
    c = BatchMixer("mixup", None, (0, 4))(x, y)
    assert torch.equal(a[0], b[0]) and a[1].lam == b[1].lam
    assert not torch.equal(a[0], c[0])
    # the ratio is the generator's first Beta(alpha, alpha) draw, alpha = 0.2 for mixup by default
    assert a[1].lam == np.random.default_rng((0, 3)).beta(0.2, 0.2)
    assert DEFAULT_MIX_ALPHA == {"mixup": 0.2, "cutmix": 1.0}
    lams = [BatchMixer("mixup", 1.0, s)(x, y)[1].lam for s in range(200)]
    assert 0.42 < float(np.mean(lams)) < 0.58  # Beta(1, 1): uniform, mean 1/2
    # CutMix's weight is the area kept, at least the drawn ratio (the box is rounded down and clipped)
    for s in range(20):
        assert BatchMixer("cutmix", 1.0, s)(x, y)[1].lam >= np.random.default_rng(s).beta(1.0, 1.0)
    with pytest.raises(ValueError, match="kind must be one of 'mixup', 'cutmix'"):
        BatchMixer("mixip", None, 0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        BatchMixer("mixup", 0.0, 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"mixing": "mixupp"}, "mixing must be one of 'none', 'mixup', 'cutmix'"),
    ({"mixing": "mixup", "mix_alpha": 0.0}, "mix_alpha must be a finite number > 0"),
    ({"mix_alpha": 0.2}, "no effect with mixing='none'; set mixing='mixup' or mixing='cutmix'"),
    ({"mix_off_epochs": 1}, "no effect with mixing='none'"),
    ({"mixing": "cutmix", "epochs": 3, "mix_off_epochs": 3}, "mix_off_epochs=3 leaves no epoch of cutmix"),
    ({"mixing": "mixup", "mix_off_epochs": -1}, "mix_off_epochs must be a non-negative int"),
    ({"distill_weight": 1.5}, r"distill_weight must be a number in \[0, 1\]"),
    ({"distill_weight": 0.5, "distill_temperature": 0.0}, "distill_temperature must be a finite number > 0"),
    ({"distill_temperature": 4.0}, "distill_temperature=4.0 has no effect with distill_weight=0"),
    ({"ema_decay": 1.0}, r"ema_decay must be a number in \(0, 1\)"),
    ({"ema_decay": 0.0}, r"ema_decay must be a number in \(0, 1\)"),
])
def test_new_options_refuse_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# --------------------------------------------------------------------------- distillation


def test_distillation_from_a_teacher_equal_to_the_student_is_zero():
    logits = torch.randn(5, K, generator=torch.Generator().manual_seed(0)) * 3
    for t in (1.0, 4.0, 20.0):
        assert distillation_loss(logits, logits.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, logits.flip(1), 4.0).item() > 0.01  # and not zero for another teacher


def test_distillation_loss_is_t_squared_times_the_kl_divergence():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, K, generator=g), torch.randn(5, K, generator=g)
    T = 3.0
    p_t, log_p_s = (t / T).softmax(1), (s / T).log_softmax(1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t, T), T ** 2 * kl)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        distillation_loss(s, t, 0.0)


def test_the_t_squared_factor_keeps_the_gradient_scale():
    # d/ds of T^2 KL = T (softmax(s/T) - softmax(t/T)) / B exactly; for zero-mean logits and a
    # large T it tends to (s - t) / (K B) (Hinton et al., 2015, Eq. 4 times T^2): the same
    # size at T = 50 as at T = 100, where without the factor it would fall by 4.
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, K, generator=g), torch.randn(5, K, generator=g)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    grads = {}
    for T in (2.0, 50.0, 100.0):
        s_ = s.clone().requires_grad_()
        distillation_loss(s_, t, T).backward()
        torch.testing.assert_close(s_.grad, T * ((s / T).softmax(1) - (t / T).softmax(1)) / len(s))
        grads[T] = s_.grad
    limit = (s - t) / (K * len(s))
    torch.testing.assert_close(grads[100.0], limit, rtol=0, atol=0.02 * limit.abs().max().item())  # O(1/T)
    ratio = grads[100.0].norm() / grads[50.0].norm()
    assert ratio.item() == pytest.approx(1.0, abs=1e-3)


def test_fit_with_a_teacher_equal_to_the_student_at_weight_one_does_not_move():
    # w = 1: the loss is the distillation term alone, zero at every step for a copy of the
    # student (no BatchNorm or dropout, so train and eval mode compute alike).
    model = small_net(norm=False)
    teacher = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, lr=0.5, momentum=0.0, weight_decay=0.0, schedule="constant", precision="fp32",
                      channels_last=False, distill_weight=1.0, distill_temperature=4.0)
    history = fit(model, brightness_data(), cfg, teacher=teacher, progress=False)
    assert history.train_loss == pytest.approx([0.0, 0.0], abs=1e-6)
    for k, v in model.state_dict().items():  # (the zero gradient, up to float32 rounding)
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-7, msg=k)


def test_fit_leaves_the_teacher_unchanged_and_in_its_mode():
    model, teacher = small_net(seed=0), small_net(seed=1)
    teacher.train()
    state = copy.deepcopy(teacher.state_dict())
    cfg = TrainConfig(epochs=1, precision="fp32", distill_weight=0.5, distill_temperature=4.0)
    fit(model, brightness_data(), cfg, teacher=teacher, progress=False)
    assert teacher.training  # restored
    # eval mode throughout: BatchNorm's running statistics did not move; no gradient reached it
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_fit_refuses_a_teacher_without_weight_and_the_reverse():
    data = brightness_data()
    with pytest.raises(ValueError, match="distill_weight=0.5 needs a teacher"):
        fit(small_net(), data, TrainConfig(epochs=1, distill_weight=0.5), progress=False)
    with pytest.raises(ValueError, match="a teacher was given but config.distill_weight=0"):
        fit(small_net(), data, TrainConfig(epochs=1), teacher=small_net(1), progress=False)
    model = small_net()
    with pytest.raises(ValueError, match="teacher is the model being trained"):
        fit(model, data, TrainConfig(epochs=1, distill_weight=0.5), teacher=model, progress=False)
    with pytest.raises(ValueError, match="teacher must be an nn.Module"):
        fit(small_net(), data, TrainConfig(epochs=1, distill_weight=0.5), teacher="resnet20", progress=False)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K + 1))
    with pytest.raises(ValueError, match="has 5 outputs but the data has 4 classes"):
        fit(small_net(), data, TrainConfig(epochs=1, distill_weight=0.5), teacher=wrong, progress=False)


# --------------------------------------------------------------------------- linear scaling, warm-up


def test_linear_scaling_rule():
    assert scaled_lr(256) == pytest.approx(0.1)
    assert scaled_lr(1024) == pytest.approx(0.4)  # "Bag of Tricks": 0.1 x b / 256
    assert scaled_lr(128) == pytest.approx(0.05)
    assert scaled_lr(512, base_lr=0.05, base_batch_size=128) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        scaled_lr(0)
    with pytest.raises(ValueError, match="base_lr must be a finite number > 0"):
        scaled_lr(256, base_lr=-0.1)


def test_cosine_warmup_is_the_gradual_warmup_of_goyal_et_al():
    # at batch i of m warm-up batches (from 1) the rate is i / m of the peak, then the cosine
    m, total = 5, 20
    assert [lr_multiplier("cosine", i - 1, total, m) for i in range(1, m + 1)] == pytest.approx(
        [i / m for i in range(1, m + 1)])
    assert lr_multiplier("cosine", m, total, m) == pytest.approx(1.0)
    assert lr_multiplier("cosine", total, total, m) == pytest.approx(0.0)


# --------------------------------------------------------------------------- EMA of the weights


def test_weight_ema_arithmetic_and_warmup_of_the_decay():
    model = small_net()
    ema = WeightEMA(model, 0.9)
    w0 = model[0].weight.detach().clone()
    assert ema.current_decay() == pytest.approx(2 / 11)  # min(0.9, (1 + 1) / (10 + 1))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.average[0], 2 / 11 * w0 + 9 / 11 * (w0 + 1))
    ema.updates = 1000
    assert ema.current_decay() == 0.9  # warmed up: the configured decay
    with ema.swapped_in():
        torch.testing.assert_close(model[0].weight, 2 / 11 * w0 + 9 / 11 * (w0 + 1))
    torch.testing.assert_close(model[0].weight, w0 + 1)  # the live weights are back
    with pytest.raises(ValueError, match=r"decay must be a number in \(0, 1\)"):
        WeightEMA(model, 1.0)


def test_fit_evaluates_and_returns_the_averaged_weights_and_batchnorm_statistics():
    # One batch per epoch: the live state after each epoch is that of a run without EMA (the
    # average never feeds back into training), so the EMA can be computed by hand.
    data = lambda: brightness_data(n_train=16, augment=False)
    base = dict(epochs=3, lr=0.2, precision="fp32", channels_last=False, schedule="constant")
    live, seen = [], []
    model = small_net()
    live.append({k: v.clone() for k, v in model.state_dict().items()})
    plain = fit(model, data(), TrainConfig(**base), progress=False,
                callback=lambda e, h: live.append({k: v.clone() for k, v in model.state_dict().items()}))
    decay = 0.8
    expected = [{k: v.clone() for k, v in live[0].items()}]
    for t in range(1, 4):
        d = min(decay, (1 + t) / (10 + t))
        expected.append({k: (d * expected[-1][k] + (1 - d) * live[t][k]) if v.is_floating_point() else live[t][k]
                         for k, v in live[t].items()})

    ema_model = small_net()
    history = fit(ema_model, data(), TrainConfig(**base, ema_decay=decay), progress=False)
    assert history.train_loss == plain.train_loss  # training itself is unchanged
    for k, v in ema_model.state_dict().items():  # weights and BatchNorm's running mean and variance
        torch.testing.assert_close(v, expected[3][k], rtol=1e-5, atol=1e-6, msg=k)
    assert "1.running_mean" in expected[3] and not torch.allclose(expected[3]["1.running_mean"],
                                                                  live[3]["1.running_mean"])
    # every epoch's test loss is that of the averaged weights of the time
    for epoch in (1, 2, 3):
        check = small_net()
        check.load_state_dict(expected[epoch])
        assert history.test_loss[epoch - 1] == pytest.approx(evaluate(check, data().test)[0], rel=1e-5)
        assert history.test_loss[epoch - 1] != pytest.approx(plain.test_loss[epoch - 1], rel=1e-4)


# --------------------------------------------------------------------------- exact resume


class _Interrupt(Exception):
    pass


def _stop_after_first_epoch(epoch, history):
    if epoch == 1:
        raise _Interrupt


@pytest.mark.parametrize("mixing", ["mixup", "cutmix"])
def test_resume_is_exact_with_mixing_distillation_and_ema(tmp_path, mixing):
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="cosine", warmup_epochs=0.5, precision="fp32", mixing=mixing,
                      mix_off_epochs=1, distill_weight=0.5, distill_temperature=4.0, ema_decay=0.9)
    teacher = small_net(seed=7)
    full_model = small_net()
    full = fit(full_model, brightness_data(), cfg, teacher=teacher, progress=False)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):
        fit(small_net(), brightness_data(), cfg, teacher=teacher, checkpoint=ckpt, progress=False,
            callback=_stop_after_first_epoch)
    torch.manual_seed(123)  # another global random state: the mixing must not depend on it
    resumed_model = small_net(seed=99)
    resumed = fit(resumed_model, brightness_data(), cfg, teacher=teacher, checkpoint=ckpt, progress=False)
    for key, values in full.as_dict().items():
        if key != "epoch_time":
            assert resumed.as_dict()[key] == values, key
    for k, v in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k

    # another teacher (same shapes, other weights) is a different run
    with pytest.raises(Exception, match="teacher"):
        fit(small_net(), brightness_data(), cfg, teacher=small_net(seed=8), checkpoint=ckpt, progress=False)


def test_checkpoints_without_the_new_options_keep_their_config():
    # At their defaults the new fields stay out of a checkpoint's config, so runs written
    # before they existed still resume; set, they are part of it.
    from cnnlearn.train import _config_key

    key = _config_key(TrainConfig())
    assert not {"mixing", "mix_alpha", "mix_off_epochs", "distill_weight", "distill_temperature",
                "ema_decay", "bias_decay"} & key.keys()
    assert _config_key(TrainConfig(mixing="mixup"))["mixing"] == "mixup"
    assert _config_key(TrainConfig(bias_decay=True))["bias_decay"] is True
    assert _config_key(TrainConfig(ema_decay=0.99))["ema_decay"] == 0.99
