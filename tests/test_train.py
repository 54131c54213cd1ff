"""cnnlearn.train: configuration, schedules, a real (tiny) training run, exact resume,
checkpoint validation, weight-decay groups, evaluation and prediction."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn._io import CheckpointMismatchError, CorruptFileError
from cnnlearn.data import Data, DeviceLoader
from cnnlearn.train import (
    History, TrainConfig, _make_optimizer, _param_groups, cpu_has_native_bf16, evaluate, fit, lr_multiplier,
    predict, recalibrate_bn, resolve_precision,
)

NUM_CLASSES = 4
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def brightness_data(n_train: int = 64, n_test: int = 32, batch_size: int = 16, seed: int = 0,
                    augment: bool = False) -> Data:
    """Random 8x8 images whose class is their brightness (4 levels, with noise): learnable in
    a few epochs by a tiny network, and not by chance. (Random crops pad with black, which
    changes the brightness: the learning test goes without them, the resume test with them.)"""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % NUM_CLASSES
        level = 40 + 55 * labels.float()  # 40, 95, 150, 205
        noise = torch.randint(-30, 31, (n, 3, 8, 8), generator=g).float()
        images = (level[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8)
        return images, labels

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    train = DeviceLoader(xtr, ytr, batch_size, MEAN, STD, shuffle=True, augment=augment, pad=1, seed=seed,
                         drop_last=True)
    test = DeviceLoader(xte, yte, 2 * batch_size, MEAN, STD)
    return Data("brightness", train, test, tuple(str(c) for c in range(NUM_CLASSES)), MEAN, STD, source="synthetic")


def tiny_net(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8, NUM_CLASSES))


# --------------------------------------------------------------------------- config and schedules


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs must be a positive int"),
    ({"epochs": 2.5}, "epochs must be a positive int"),
    ({"optimizer": "adam"}, "optimizer must be one of 'sgd', 'adamw'"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": "0.1"}, "lr must be a finite number > 0, got '0.1'"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
    ({"warmup_epochs": -1}, "warmup_epochs must be a finite number >= 0"),
    ({"schedule": "cosine", "epochs": 2, "warmup_epochs": 3}, "warmup_epochs=3.0 is longer than the run"),
    ({"grad_clip": -1.0}, "grad_clip must be a finite number > 0.*None for no clipping"),
    ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0"),
    ({"tta_flip": "no"}, "tta_flip must be True or False"),
    ({"seed": -1}, "seed must be an int in"),
])
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_is_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().lr = 1.0


def test_onecycle_shape():
    total = 200
    m = [lr_multiplier("onecycle", s, total, 0) for s in range(total)]
    assert m[0] == pytest.approx(1 / 25)
    assert max(m) == pytest.approx(1.0) and m.index(max(m)) == 50  # the peak after 25% of the steps
    assert all(a < b for a, b in zip(m[:50], m[1:51]))  # rising
    assert all(a >= b for a, b in zip(m[50:], m[51:]))  # then falling
    assert m[-1] < 1e-3 and lr_multiplier("onecycle", total, total, 0) == pytest.approx(0.0)


def test_cosine_with_warmup_shape():
    total, warmup = 100, 10
    m = [lr_multiplier("cosine", s, total, warmup) for s in range(total + 1)]
    assert m[0] == pytest.approx(0.1) and m[9] == pytest.approx(1.0)  # linear warm-up
    assert m[10] == pytest.approx(1.0)
    assert m[55] == pytest.approx(0.5)  # half way through the cosine
    assert all(a >= b for a, b in zip(m[10:], m[11:]))
    assert m[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier("cosine", 0, total, 0) == pytest.approx(1.0)  # no warm-up


def test_constant_and_unknown_schedules():
    assert {lr_multiplier("constant", s, 10, 2) for s in range(10)} == {1.0}
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier("step", 0, 10, 0)


# --------------------------------------------------------------------------- training


def test_training_learns_brightness():
    data = brightness_data(n_train=128)
    model = tiny_net()
    _, acc_before = evaluate(model, data.test)
    history = fit(model, data, TrainConfig(epochs=5, lr=0.2), progress=False)
    assert history.epoch == [1, 2, 3, 4, 5]
    sometimes_empty = ("test_miou", "grad_norm_max", "grad_norm_mean")
    assert all(len(v) == 5 for k, v in history.as_dict().items() if k not in sometimes_empty)
    assert history.test_miou == []  # mean IoU is recorded for segmentation data only
    assert history.grad_norm_max == history.grad_norm_mean == []  # gradient norms with grad_clip only
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert history.test_acc[-1] >= 0.9 > acc_before + 0.3
    assert history.final_test_acc == history.test_acc[-1]
    assert history.lr[-1] < 1e-3  # one-cycle ends near zero
    assert all(t > 0 for t in history.epoch_time)
    assert "5 epochs" in repr(history)


def test_fit_rejects_other_data():
    with pytest.raises(ValueError, match="load_data"):
        fit(tiny_net(), [(torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.int64))], progress=False)


class _NaNLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, NUM_CLASSES)

    def forward(self, x):
        return self.linear(x.mean((2, 3))) * float("nan")


def test_a_diverging_loss_stops_the_run():
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(_NaNLogits(), brightness_data(), TrainConfig(epochs=1), progress=False)


class _Interrupt(Exception):
    pass


def _interrupt_after_first_epoch(epoch, history):
    if epoch == 1:
        raise _Interrupt


def test_resume_gives_the_same_run(tmp_path):
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="cosine", warmup_epochs=0.5)
    full_model = tiny_net(seed=0)
    full = fit(full_model, brightness_data(augment=True), cfg, checkpoint=tmp_path / "full.pt", progress=False)

    interrupted = tmp_path / "interrupted.pt"
    with pytest.raises(_Interrupt):
        fit(tiny_net(seed=0), brightness_data(augment=True), cfg, checkpoint=interrupted, progress=False,
            callback=_interrupt_after_first_epoch)
    # A fresh process: new data loaders, a differently initialised model, other RNG state.
    torch.manual_seed(123)
    resumed_model = tiny_net(seed=99)
    resumed = fit(resumed_model, brightness_data(augment=True), cfg, checkpoint=interrupted, progress=False)

    for key, values in full.as_dict().items():
        if key != "epoch_time":
            assert resumed.as_dict()[key] == values, key
    assert len(resumed.epoch_time) == 3
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for k in full_state:
        assert torch.equal(full_state[k], resumed_state[k]), k

    # A finished run resumes to its end at once: nothing changes.
    again = fit(resumed_model, brightness_data(augment=True), cfg, checkpoint=interrupted, progress=False)
    assert again.test_acc == full.test_acc
    assert all(torch.equal(v, full_state[k]) for k, v in resumed_model.state_dict().items())


def test_checkpoint_with_another_config_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    fit(tiny_net(), brightness_data(n_train=32), TrainConfig(epochs=1), checkpoint=path, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"different config \(changed: epochs, lr\)"):
        fit(tiny_net(), brightness_data(n_train=32), TrainConfig(epochs=2, lr=0.2), checkpoint=path, progress=False)


def test_corrupt_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(CorruptFileError, match="corrupt"):
        fit(tiny_net(), brightness_data(n_train=32), TrainConfig(epochs=1), checkpoint=path, progress=False)
    torch.save({"model": {}}, path)  # readable, but not a checkpoint
    with pytest.raises(CorruptFileError, match="lacks"):
        fit(tiny_net(), brightness_data(n_train=32), TrainConfig(epochs=1), checkpoint=path, progress=False)


# --------------------------------------------------------------------------- optimiser


def test_weight_decay_spares_biases_and_norm_parameters():
    model = tiny_net()
    conv, bn, linear = model[0], model[1], model[6]
    decay, no_decay = _param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(conv.bias), id(bn.weight), id(bn.bias), id(linear.bias)}
    for name in ("sgd", "adamw"):
        opt = _make_optimizer(model, TrainConfig(optimizer=name, weight_decay=1e-3))
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
    model[0].weight.requires_grad_(False)  # frozen parameters are left out
    assert id(conv.weight) not in {id(p) for p in _param_groups(model, 5e-4)[0]["params"]}


# --------------------------------------------------------------------------- evaluation


class _Asymmetric(nn.Module):
    """Logits that depend on the left-right order of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 8 * 8, NUM_CLASSES)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_predict_shapes_and_order():
    data = brightness_data(n_test=40)
    model = _Asymmetric().train()
    logits, labels = predict(model, data.test)
    assert logits.shape == (40, NUM_CLASSES) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.equal(labels, data.test.labels)  # the test loader keeps the order
    assert model.training  # the mode is restored


def test_evaluate_with_tta_flip():
    data = brightness_data(n_test=40)
    model = _Asymmetric()
    x = data.test.normalize(data.test.images)
    with torch.no_grad():
        plain, flipped = model(x), model(x.flip(3))
    logits, _ = predict(model, data.test, tta_flip=True, precision="fp32")
    torch.testing.assert_close(logits, (plain + flipped) / 2)
    assert not torch.allclose(logits, plain)
    loss, acc = evaluate(model, data.test, tta_flip=True, precision="fp32")
    y = data.test.labels
    assert loss == pytest.approx(F.cross_entropy((plain + flipped) / 2, y).item(), rel=1e-5)
    assert acc == pytest.approx(((plain + flipped).argmax(1) == y).float().mean().item())
    loss_plain, _ = evaluate(model, data.test, precision="fp32")
    assert loss_plain == pytest.approx(F.cross_entropy(plain, y).item(), rel=1e-5)
    assert not math.isclose(loss, loss_plain)


def test_history_repr_and_empty():
    h = History()
    assert repr(h) == "History(empty)" and math.isnan(h.final_test_acc)
    h.append(epoch=1, train_loss=1.0, train_acc=0.5, test_loss=1.1, test_acc=0.25, lr=0.1, epoch_time=2.0)
    assert h.final_test_acc == 0.25 and "25.00%" in repr(h)


def test_recalibrate_bn_measures_the_training_statistics():
    data = brightness_data(n_train=64)
    loader = DeviceLoader(data.train.images, data.train.labels, 16, MEAN, STD)   # fixed order, 4 batches
    model = tiny_net().eval()
    bn = model[1]
    bn.momentum = 0.01                                  # as MobileNetV3: slow running averages
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    with torch.no_grad():
        feats = torch.cat([model[0](x) for x, _ in loader])           # (N, 8, 8, 8) conv outputs
    assert recalibrate_bn(model, loader) == 1
    torch.testing.assert_close(bn.running_mean, feats.mean(dim=(0, 2, 3)))
    # the cumulative average of the batches' unbiased variances (equal batch sizes)
    per_batch = feats.reshape(4, 16, 8, 8, 8).transpose(1, 2).reshape(4, 8, -1).var(dim=2)
    torch.testing.assert_close(bn.running_var, per_batch.mean(0))
    assert bn.momentum == 0.01 and not model.training            # settings and mode restored
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k          # no weight changed
    assert recalibrate_bn(model, loader, batches=1) == 1
    torch.testing.assert_close(bn.running_mean, feats[:16].mean(dim=(0, 2, 3)))


def test_recalibrate_bn_without_batchnorm_and_bad_batches():
    data = brightness_data()
    assert recalibrate_bn(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), data.train) == 0
    with pytest.raises(ValueError, match="batches must be >= 1"):
        recalibrate_bn(tiny_net(), data.train, batches=0)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        recalibrate_bn(tiny_net().state_dict(), data.train)


# --------------------------------------------------------------------------- precision (fast path)

needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")


def test_resolve_precision_choices_and_errors():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'fp32', 'bf16', 'fp16'"):
        resolve_precision("half", cpu)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="float32")


def test_bf16_refused_without_native_support(monkeypatch):
    import cnnlearn.train as train
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        resolve_precision("bf16", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu")) is None  # auto falls back to float32
    with pytest.raises(ValueError, match="no native bfloat16"):  # fit refuses before touching the model
        fit(tiny_net(), brightness_data(), TrainConfig(epochs=1, precision="bf16"), progress=False)


def test_fastest_precision_times_a_copy_and_leaves_the_random_state(monkeypatch):
    import cnnlearn.train as train
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    choice = train.fastest_precision(model, (3, 8, 8), batch_size=4, steps=1)
    assert choice in (("bf16", "fp32") if cpu_has_native_bf16() else ("auto",))
    assert torch.equal(torch.get_rng_state(), rng)  # a seeded run after it is unchanged
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert model.training and next(model.parameters()).is_contiguous()
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    assert train.fastest_precision(model, (3, 8, 8), batch_size=4) == "auto"  # nothing to choose
    with pytest.raises(ValueError, match="batch_size"):
        train.fastest_precision(model, (3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="input_size must be a tuple of positive ints"):
        train.fastest_precision(model, (3, 0, 8))


def _conv_input_dtypes(model, run):
    seen = set()
    handle = model[0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    try:
        run()
    finally:
        handle.remove()
    return seen


@needs_bf16
def test_bf16_changes_speed_not_results():
    """bf16 autocast really runs (the first conv computes in bfloat16, the weights differ from the
    float32 run's), yet over paired seeds its accuracy is within noise of float32's."""
    accs = {"fp32": [], "bf16": []}
    for seed in range(3):
        finals = {}
        for precision in accs:
            model, data = tiny_net(seed, dropout=0.0), brightness_data(n_train=128, seed=seed)
            cfg = TrainConfig(epochs=5, lr=0.2, precision=precision, seed=seed)
            dtypes = _conv_input_dtypes(model, lambda: fit(model, data, cfg, progress=False))
            assert dtypes == ({torch.bfloat16} if precision == "bf16" else {torch.float32})
            accs[precision].append(evaluate(model, data.test, precision="fp32")[1])
            finals[precision] = model[0].weight.detach().float().clone()
        assert not torch.equal(finals["fp32"], finals["bf16"])  # the precision did change the arithmetic
    diffs = [b - f for b, f in zip(accs["bf16"], accs["fp32"])]
    assert min(accs["fp32"]) > 0.6 and min(accs["bf16"]) > 0.6, accs  # both learned (chance is 0.25)
    assert abs(sum(diffs) / len(diffs)) <= 0.1, accs


@needs_bf16
def test_bf16_resume_is_exact(tmp_path):
    cfg = TrainConfig(epochs=3, lr=0.05, precision="bf16")
    whole = fit(tiny_net(), brightness_data(augment=True), cfg, progress=False)
    ckpt = tmp_path / "run.pt"

    class Stop(Exception):
        pass

    def stop_after_two(epoch, history):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(tiny_net(), brightness_data(augment=True), cfg, checkpoint=ckpt, progress=False, callback=stop_after_two)
    resumed = fit(tiny_net(), brightness_data(augment=True), cfg, checkpoint=ckpt, progress=False)
    assert resumed.train_loss == whole.train_loss and resumed.test_acc == whole.test_acc


def test_fit_uses_channels_last_on_cpu_and_evaluation_sees_float():
    model, data = tiny_net(), brightness_data()
    fit(model, data, TrainConfig(epochs=1, lr=0.05), progress=False)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    outputs = _conv_input_dtypes(model, lambda: model.eval()(data.test.normalize(data.test.images)))
    assert outputs == {torch.float32}  # hooks outside fit see float tensors
    fit(plain := tiny_net(), data, TrainConfig(epochs=1, lr=0.05, channels_last=False, precision="fp32"),
        progress=False)
    assert plain[0].weight.is_contiguous()


def test_tta_translate_averages_shifted_copies():
    from cnnlearn.train import _shift
    data = brightness_data(n_test=40)
    model = _Asymmetric()
    x = data.test.normalize(data.test.images)
    assert torch.equal(_shift(x, 0, 0), x)
    assert torch.equal(_shift(x, 1, 1)[..., 1:, 1:], x[..., :-1, :-1])  # moved down-right by one pixel
    with torch.no_grad():
        expected = 0.5 * model(x) + 0.25 * (model(_shift(x, -1, -1)) + model(_shift(x, 1, 1)))
    logits, _ = predict(model, data.test, tta_translate=1, precision="fp32")
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ValueError, match="tta_translate"):
        predict(model, data.test, tta_translate=-1)
    with pytest.raises(ValueError, match="must be smaller than the images"):
        predict(model, data.test, tta_translate=8)


def test_evaluate_defaults_to_float32_so_hooks_see_float32():
    model, data = tiny_net(), brightness_data()
    assert _conv_input_dtypes(model, lambda: evaluate(model, data.test)) == {torch.float32}


# --------------------------------------------------------------------------- auxiliary classifiers


class AuxNet(nn.Module):
    """tiny_net with an auxiliary classifier on its features, as GoogLeNet's contract:
    AuxOutputs in training mode, the logits alone in eval mode."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc, self.aux_fc = nn.Linear(8, NUM_CLASSES), nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        from cnnlearn.models.layers import AuxOutputs

        f = self.features(x)
        return AuxOutputs(self.fc(f), (self.aux_fc(f),), 0.3) if self.training else self.fc(f)


def test_training_loss_adds_the_weighted_auxiliary_losses():
    from cnnlearn.models.layers import AuxOutputs
    from cnnlearn.train import training_loss

    torch.manual_seed(0)
    logits, a1, a2, y = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    loss, out = training_loss(AuxOutputs(logits, (a1, a2), 0.3), y, 0.1)
    expected = sum(w * F.cross_entropy(t, y, label_smoothing=0.1) for w, t in [(1, logits), (0.3, a1), (0.3, a2)])
    torch.testing.assert_close(loss, expected)
    assert out is logits
    plain, out = training_loss(logits, y)
    torch.testing.assert_close(plain, F.cross_entropy(logits, y)) and out is logits


def test_fit_trains_a_network_with_auxiliary_classifiers():
    model = AuxNet()
    history = fit(model, brightness_data(), TrainConfig(epochs=3, lr=0.2, precision="fp32"), progress=False)
    assert all(math.isfinite(v) for v in history.train_loss)
    assert history.train_loss[-1] < history.train_loss[0]
    # the auxiliary head was trained too: the total loss reached its weights
    assert model.aux_fc.weight.grad is not None and model.aux_fc.weight.grad.abs().sum() > 0
    assert history.test_acc[-1] > 1 / NUM_CLASSES


# --------------------------------------------------------------------------- 10-crop testing


def test_ten_crops_are_the_centre_corners_and_their_mirrors():
    from cnnlearn.train import ten_crops

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1   # no zeros inside the image
    crops = ten_crops(x, pad=1)
    assert len(crops) == 10 and all(c.shape == x.shape for c in crops)
    assert torch.equal(crops[0], x)                                  # the centre crop is the image itself
    padded = F.pad(x, (1, 1, 1, 1))
    assert torch.equal(crops[1], padded[..., :4, :4])                # top-left corner
    assert torch.equal(crops[4], padded[..., 2:, 2:])                # bottom-right corner
    assert (crops[1][..., 0, :] == 0).all() and (crops[4][..., -1, :] == 0).all()   # the zero padding shows
    for plain, mirrored in zip(crops[:5], crops[5:]):
        assert torch.equal(mirrored, plain.flip(-1))
    assert len({tuple(c.flatten().tolist()) for c in crops}) == 10   # ten different views
    with pytest.raises(ValueError, match="pad must be >= 1"):
        ten_crops(x, pad=0)


def test_ten_crops_pad_with_the_colour_training_pads_with():
    # Training pads the raw uint8 images with black, then normalises; 10-crop testing works on
    # normalised images and must pad with black in normalised units, so that each of its crops
    # is exactly the training augmentation's crop at the same offset (here: offsets drawn with
    # the augmentation's own generator, and every image whose offset is a centre or a corner).
    from cnnlearn.data import augment_batch
    from cnnlearn.train import ten_crops

    data = brightness_data(n_train=8, n_test=120)
    loader, pad = data.test, 1
    raw = loader.images                                              # (B, 3, 8, 8) uint8
    trained_view = loader.normalize(augment_batch(raw, pad, False, torch.Generator().manual_seed(0)))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, len(raw)), generator=torch.Generator().manual_seed(0))
    black = loader.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    crops = ten_crops(loader.normalize(raw), pad, fill=black)
    offsets = [(pad, pad), (0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad)]
    for k, (oy, ox) in enumerate(offsets):
        at = (dy == oy) & (dx == ox)
        assert at.any()                                              # every offset occurs among 120 draws
        torch.testing.assert_close(crops[k][at], trained_view[at], rtol=0, atol=1e-6)
    # With the old zero fill the border is the mean colour, which training never shows.
    zero_fill = ten_crops(loader.normalize(raw), pad)[1]
    at = (dy == 0) & (dx == 0)
    assert not torch.allclose(zero_fill[at], trained_view[at])
    with pytest.raises(ValueError, match="one per channel"):
        ten_crops(loader.normalize(raw), pad, fill=torch.zeros(2))


def test_evaluate_ten_crop_averages_the_probabilities_of_ten_views():
    from cnnlearn.train import evaluate_ten_crop, ten_crops

    data = brightness_data()
    model = tiny_net().eval()
    loss, acc = evaluate_ten_crop(model, data.test)
    # the same by hand: mean softmax over the ten views, then the NLL of that mean
    xs, y = (torch.cat(t) for t in zip(*data.test))                  # the normalised test images
    with torch.no_grad():
        black = data.test.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
        probs = sum(model(c).softmax(1) for c in ten_crops(xs, data.test.pad, fill=black)) / 10
    assert acc == pytest.approx((probs.argmax(1) == y).float().mean().item())
    assert loss == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    assert 0.0 <= acc <= 1.0 and loss > 0
    model.train()
    evaluate_ten_crop(model, data.test)
    assert model.training                                            # mode restored


def test_ten_crop_testing_helps_a_trained_network_or_ties():
    # Train the tiny network on brightness, with the random crops (black borders) that 10-crop
    # testing imitates; 10-crop must classify at least about as well as one view.
    from cnnlearn.train import evaluate_ten_crop

    torch.manual_seed(0)
    data = brightness_data(n_train=256, n_test=128, augment=True)
    model = tiny_net()
    fit(model, data, TrainConfig(epochs=4, lr=0.05, precision="fp32", channels_last=False), progress=False)
    _, one = evaluate(model, data.test)
    _, ten = evaluate_ten_crop(model, data.test, pad=1)
    assert one > 0.5 and ten >= one - 0.1
