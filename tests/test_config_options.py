"""Every option of ``TrainConfig`` and ``GANConfig`` has an effect, and each has a test
here that fails if ``fit`` / ``fit_gan`` silently ignored it.

Most tests take one optimiser step on a tiny synthetic set whose single batch holds every
image, so the gradient does not depend on the batch order, and compare the step with the
arithmetic of the option (plain SGD: ``dw = -lr * g``). ``OPTION_TESTS`` maps every field
to its test; ``test_every_option_has_a_test`` fails for a field without one.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn.data import Data, DeviceLoader
from cnnlearn.gan import GANConfig, fit_gan
from cnnlearn.models.dcgan import dcgan
from cnnlearn.regularize import BatchMixer, distillation_loss
from cnnlearn.train import (
    TrainConfig, cpu_has_native_bf16, evaluate, fit, lr_multiplier, resolve_precision,
)

K = 4  # classes
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# One plain SGD step at a fixed learning rate: every option test changes one thing from here.
BASE = dict(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", precision="fp32",
            channels_last=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()  # tiny tensors: one thread is faster than two fighting
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_data(n_train: int = 16, batch_size: int = 16, n_test: int = 8, seed: int = 0) -> Data:
    """8x8 images whose class is their brightness. With ``n_train == batch_size`` an epoch
    is one step on one batch holding every image."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % K
        noise = torch.randint(-30, 31, (n, 3, 8, 8), generator=g)
        return ((40 + 55 * labels)[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8), labels

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    train = DeviceLoader(xtr, ytr, batch_size, MEAN, STD, shuffle=True, seed=seed, drop_last=True)
    test = DeviceLoader(xte, yte, 2 * batch_size, MEAN, STD)
    return Data("brightness", train, test, tuple("abcd"), MEAN, STD, source="synthetic")


def conv_net(seed: int = 0, dropout: float = 0.0, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if norm else []), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4, K))


def pixel_net(seed: int = 0) -> nn.Module:
    """Logits depend on where each pixel is: flipping or shifting an image changes them."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K))


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def train(model: nn.Module | None = None, data: Data | None = None, **options):
    """Run ``fit`` with ``BASE`` changed by ``options``; return (model, history, initial parameters)."""
    model = model if model is not None else conv_net()
    before = params(model)
    history = fit(model, data if data is not None else tiny_data(), TrainConfig(**{**BASE, **options}),
                  progress=False)
    return model, history, before


def gradient(model: nn.Module, data: Data, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """The gradient of the first step: the mean loss over every training image."""
    model = copy.deepcopy(model).train()
    x = data.train.normalize(data.train.images)
    F.cross_entropy(model(x), data.train.labels, label_smoothing=label_smoothing).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def step(model: nn.Module, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() - before[k] for k, v in model.named_parameters()}


def assert_steps(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-7, msg=k)


# --------------------------------------------------------------------------- TrainConfig


def test_epochs():
    for epochs in (1, 3):
        _, history, _ = train(epochs=epochs)
        assert history.epoch == list(range(1, epochs + 1))


def test_lr():
    model0, data = conv_net(), tiny_data()
    g = gradient(model0, data)
    for lr in (0.1, 0.3):
        model, _, before = train(copy.deepcopy(model0), data, lr=lr)
        assert_steps(step(model, before), {k: -lr * v for k, v in g.items()})


def test_momentum():
    # Nesterov SGD's first step: the buffer is g, the update g + momentum * g.
    model0, data = conv_net(), tiny_data()
    g = gradient(model0, data)
    model, _, before = train(copy.deepcopy(model0), data, momentum=0.9)
    assert_steps(step(model, before), {k: -0.1 * 1.9 * v for k, v in g.items()})


def test_optimizer():
    # AdamW's first step moves every weight by lr against the sign of its gradient
    # (m / sqrt(v) = g / |g| after bias correction), whatever the gradient's size.
    model0, data = conv_net(), tiny_data()
    g = gradient(model0, data)
    model, _, before = train(copy.deepcopy(model0), data, optimizer="adamw", lr=0.01)
    for k, d in step(model, before).items():
        big = g[k].abs() > 1e-4
        torch.testing.assert_close(d[big], -0.01 * g[k][big].sign(), rtol=1e-3, atol=1e-6, msg=k)


def test_weight_decay():
    # SGD: dw = -lr (g + wd * w) for weights; biases are never decayed.
    model0, data = conv_net(), tiny_data()
    g, w = gradient(model0, data), params(model0)
    model, _, before = train(copy.deepcopy(model0), data, weight_decay=0.5)
    expected = {k: -0.1 * (v + (0.5 * w[k] if v.ndim > 1 else 0)) for k, v in g.items()}
    assert_steps(step(model, before), expected)


def test_bias_decay():
    # bias_decay=True: every parameter, biases and BatchNorm's too, steps by -lr (g + wd * w).
    model0, data = conv_net(norm=True), tiny_data()  # "1." is the BatchNorm, "0.bias" and "6.bias" biases
    g, w = gradient(model0, data), params(model0)
    for norm_lr_scale in (1.0, 3.0):   # also when the norm parameters are a group of their own
        model, _, before = train(copy.deepcopy(model0), data, weight_decay=0.5, bias_decay=True,
                                 norm_lr_scale=norm_lr_scale)
        scale = {k: norm_lr_scale if k.startswith("1.") else 1.0 for k in g}
        expected = {k: -0.1 * scale[k] * (v + 0.5 * w[k]) for k, v in g.items()}
        assert_steps(step(model, before), expected)


def test_label_smoothing():
    model0, data = conv_net(), tiny_data()
    x, y = data.train.normalize(data.train.images), data.train.labels
    for ls in (0.0, 0.3):
        model, history, before = train(copy.deepcopy(model0), data, label_smoothing=ls)
        with torch.no_grad():
            first_loss = F.cross_entropy(model0(x), y, label_smoothing=ls).item()
        assert history.train_loss[0] == pytest.approx(first_loss, rel=1e-5)  # the loss of the one step
        assert_steps(step(model, before), {k: -0.1 * v for k, v in gradient(model0, data, ls).items()})


def test_grad_clip():
    # The whole update is the gradient scaled to norm grad_clip (it is larger here).
    model0, data = conv_net(), tiny_data()
    g = gradient(model0, data)
    norm = math.sqrt(sum(float(v.pow(2).sum()) for v in g.values()))
    clip = norm / 4
    model, history, before = train(copy.deepcopy(model0), data, grad_clip=clip)
    assert_steps(step(model, before), {k: -0.1 * v * clip / norm for k, v in g.items()})
    # The history records the norm before clipping (one step: the largest and the mean are it).
    assert history.grad_norm_max == pytest.approx([norm], rel=1e-5)
    assert history.grad_norm_mean == pytest.approx([norm], rel=1e-5)
    _, unclipped, _ = train(copy.deepcopy(model0), data)
    assert unclipped.grad_norm_max == [] and unclipped.grad_norm_mean == []


def test_norm_lr_scale():
    model0, data = conv_net(norm=True), tiny_data()  # "1." is the BatchNorm: only its parameters learn faster
    g = gradient(model0, data)
    model, _, before = train(copy.deepcopy(model0), data, norm_lr_scale=3.0)
    assert_steps(step(model, before), {k: -0.1 * v * (3.0 if k.startswith("1.") else 1.0) for k, v in g.items()})


def test_eval_every():
    # Every third epoch and the last are evaluated; the others record NaN, and training is unchanged.
    _, every, _ = train(data=tiny_data(n_train=64), epochs=5)
    _, sparse, _ = train(data=tiny_data(n_train=64), epochs=5, eval_every=3)
    assert [math.isnan(a) for a in sparse.test_acc] == [True, True, False, True, False]
    assert sparse.test_acc[2] == every.test_acc[2] and sparse.test_acc[4] == every.test_acc[4]
    assert sparse.train_loss == every.train_loss


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "linear", "constant"])
def test_schedule(schedule):
    # 4 steps per epoch, 3 epochs: the learning rate at the end of each epoch is the schedule's,
    # and told apart from every other schedule's.
    curve = lambda name: [0.1 * lr_multiplier(name, s, 12, 2) for s in (4, 8, 12)]
    _, history, _ = train(data=tiny_data(n_train=64), epochs=3, schedule=schedule, warmup_epochs=0.5)
    assert history.lr == pytest.approx(curve(schedule), abs=1e-12)
    others = [o for o in ("onecycle", "cosine", "linear", "constant") if o != schedule]
    assert all(history.lr != pytest.approx(curve(o), abs=1e-6) for o in others)


def test_warmup_epochs():
    lrs = {}
    for warmup in (0.5, 1.0):
        _, history, _ = train(data=tiny_data(n_train=64), epochs=2, schedule="cosine", warmup_epochs=warmup)
        lrs[warmup] = history.lr[0]
        assert lrs[warmup] == pytest.approx(0.1 * lr_multiplier("cosine", 4, 8, int(warmup * 4)))
    assert lrs[1.0] == pytest.approx(0.1) and lrs[0.5] == pytest.approx(0.075)  # at the peak / past it


def test_seed():
    # The config's seed drives dropout: the same seed gives the same run, another seed another.
    runs = [train(conv_net(dropout=0.5), tiny_data(), seed=s)[0][-1].weight for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def _conv_dtypes_and_layout(model, **options):
    seen = set()
    handle = model[0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    try:
        train(model, **options)
    finally:
        handle.remove()
    return seen


def test_precision():
    assert _conv_dtypes_and_layout(conv_net(), precision="fp32") == {torch.float32}
    auto = resolve_precision("auto", torch.device("cpu")) or torch.float32
    assert _conv_dtypes_and_layout(conv_net(), precision="auto") == {auto}
    if cpu_has_native_bf16():
        assert _conv_dtypes_and_layout(conv_net(), precision="bf16") == {torch.bfloat16}
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        train(precision="fp16")


def test_channels_last():
    for on in (False, True):
        model, _, _ = train(channels_last=on)
        w = model[0].weight
        assert w.is_contiguous(memory_format=torch.channels_last) == on and w.is_contiguous() != on


def _tta_losses(epochs: int = 1, **options) -> tuple[list[float], list[dict[str, float]]]:
    """The test losses fit records, and what evaluate says after each epoch with and
    without each test-time augmentation."""
    data, seen = tiny_data(), []

    def record(epoch, history):
        seen.append({"plain": evaluate(model, data.test, precision="fp32")[0],
                     "flip": evaluate(model, data.test, tta_flip=True, precision="fp32")[0],
                     "shift": evaluate(model, data.test, tta_translate=1, precision="fp32")[0]})

    model = pixel_net()
    history = fit(model, data, TrainConfig(**{**BASE, "epochs": epochs, **options}), progress=False, callback=record)
    for s in seen:
        assert len({round(v, 6) for v in s.values()}) == 3  # the three evaluations differ
    return history.test_loss, seen


def test_tta_flip():
    for on in (False, True):
        losses, seen = _tta_losses(tta_flip=on)
        assert losses[0] == pytest.approx(seen[0]["flip" if on else "plain"], rel=1e-6)


def test_tta_translate():
    for t in (0, 1):
        losses, seen = _tta_losses(tta_translate=t)
        assert losses[0] == pytest.approx(seen[0]["shift" if t else "plain"], rel=1e-6)


def test_tta_final_only():
    losses, seen = _tta_losses(epochs=2, tta_flip=True, tta_final_only=True)
    assert losses == pytest.approx([seen[0]["plain"], seen[1]["flip"]], rel=1e-6)
    losses, seen = _tta_losses(epochs=2, tta_flip=True, tta_final_only=False)
    assert losses == pytest.approx([seen[0]["flip"], seen[1]["flip"]], rel=1e-6)


def test_lookahead():
    # 5 steps per epoch: after the first epoch the weights are pulled back towards their
    # start, slow = decay * start + (1 - decay) * fast, decay = 0.95**5 * (5 / 10)**3.
    data = tiny_data(n_train=80)
    states = {}
    for on in (False, True):
        model, at_epoch_1 = pixel_net(), {}
        start = params(model)
        fit(model, data, TrainConfig(**{**BASE, "epochs": 2, "lookahead": on}), progress=False,
            callback=lambda e, h: at_epoch_1.update(params(model)) if e == 1 else None)
        states[on] = at_epoch_1
    decay = 0.95 ** 5 * (5 / 10) ** 3
    for k, fast in states[False].items():
        torch.testing.assert_close(states[True][k], decay * start[k] + (1 - decay) * fast, rtol=1e-5, atol=1e-6)


def _batch(data: Data, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training batch of ``epoch``, in the order fit sees it."""
    data.train.epoch = epoch
    return next(iter(data.train))


def _mixed_gradient(model: nn.Module, data: Data, mixing: str, alpha: float | None,
                    epoch: int = 0) -> dict[str, torch.Tensor]:
    """The gradient of the first step of ``epoch`` on the batch mixed as fit mixes it (seed 0)."""
    x, y = _batch(data, epoch)
    mixed, labels = BatchMixer(mixing, alpha, (0, epoch))(x, y)
    model = copy.deepcopy(model).train()
    labels.cross_entropy(model(mixed)).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("mixing", ["mixup", "cutmix"])
def test_mixing(mixing):
    model0, data = pixel_net(), tiny_data()  # pixel_net: a CutMix box changes the logits
    g = _mixed_gradient(model0, data, mixing, None)
    model, history, before = train(copy.deepcopy(model0), data, mixing=mixing)
    assert_steps(step(model, before), {k: -0.1 * v for k, v in g.items()})
    plain = gradient(model0, data)
    assert not all(torch.allclose(g[k], plain[k], rtol=1e-3) for k in g)  # mixing changed the step


def test_mix_alpha():
    model0, data = pixel_net(), tiny_data()
    steps = {}
    for alpha in (0.2, 2.0):
        g = _mixed_gradient(model0, data, "mixup", alpha)
        model, _, before = train(copy.deepcopy(model0), data, mixing="mixup", mix_alpha=alpha)
        steps[alpha] = step(model, before)
        assert_steps(steps[alpha], {k: -0.1 * v for k, v in g.items()})
    assert not torch.allclose(steps[0.2]["1.weight"], steps[2.0]["1.weight"])


def test_mix_off_epochs():
    # Two one-step epochs: with mix_off_epochs=1 the second step is the plain one, with 0 it is mixed.
    model0, data = pixel_net(), tiny_data()
    for off in (0, 1):
        model, after_1 = copy.deepcopy(model0), {}
        fit(model, data, TrainConfig(**{**BASE, "epochs": 2, "mixing": "mixup", "mix_off_epochs": off}),
            progress=False, callback=lambda e, h: after_1.update(params(model)) if e == 1 else None)
        at_1 = copy.deepcopy(model0)
        at_1.load_state_dict(after_1)
        g = gradient(at_1, data) if off else _mixed_gradient(at_1, data, "mixup", None, epoch=1)
        assert_steps(step(model, after_1), {k: -0.1 * v for k, v in g.items()})


def _distilled_gradient(model: nn.Module, teacher: nn.Module, data: Data, w: float,
                        temperature: float) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model).train()
    x, y = data.train.normalize(data.train.images), data.train.labels
    out = model(x)
    with torch.no_grad():
        t = teacher.eval()(x)
    ((1 - w) * F.cross_entropy(out, y) + w * distillation_loss(out, t, temperature)).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_distill_weight():
    model0, teacher, data = conv_net(), conv_net(seed=1), tiny_data()
    for w in (0.25, 1.0):
        g = _distilled_gradient(model0, teacher, data, w, 3.0)
        model = copy.deepcopy(model0)
        before = params(model)
        fit(model, data, TrainConfig(**{**BASE, "distill_weight": w, "distill_temperature": 3.0}), teacher=teacher,
            progress=False)
        assert_steps(step(model, before), {k: -0.1 * v for k, v in g.items()})


def test_distill_temperature():
    model0, teacher, data = conv_net(), conv_net(seed=1), tiny_data()
    steps = {}
    for t in (2.0, 6.0):
        g = _distilled_gradient(model0, teacher, data, 0.5, t)
        model = copy.deepcopy(model0)
        before = params(model)
        fit(model, data, TrainConfig(**{**BASE, "distill_weight": 0.5, "distill_temperature": t}), teacher=teacher,
            progress=False)
        steps[t] = step(model, before)
        assert_steps(steps[t], {k: -0.1 * v for k, v in g.items()})
    assert not torch.allclose(steps[2.0]["5.weight"], steps[6.0]["5.weight"])


def test_ema_decay():
    # Two one-step epochs; the model ends with the average d2 * (d1 * w0 + (1 - d1) * w1) + (1 - d2) * w2,
    # d_t = min(decay, (1 + t) / (10 + t)).
    model0, data = conv_net(), tiny_data()
    live, w1 = copy.deepcopy(model0), {}
    fit(live, data, TrainConfig(**{**BASE, "epochs": 2}), progress=False,
        callback=lambda e, h: w1.update(params(live)) if e == 1 else None)
    w0, w2 = params(model0), params(live)
    for decay in (0.1, 0.5):
        d1, d2 = min(decay, 2 / 11), min(decay, 3 / 12)
        model, _, _ = train(copy.deepcopy(model0), data, epochs=2, ema_decay=decay)
        expected = {k: d2 * (d1 * w0[k] + (1 - d1) * w1[k]) + (1 - d2) * w2[k] for k in w0}
        for k, v in params(model).items():
            torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-7, msg=k)


# --------------------------------------------------------------------------- GANConfig


def gan_pair(seed: int = 0, nz: int = 8):
    torch.manual_seed(seed)
    return dcgan(8, 1, nz=nz, ngf=8, ndf=8)


def gan_batches(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 1, 8, 8, generator=g) * 2 - 1 for _ in range(n)]


GAN_BASE = dict(epochs=1, nz=8, n_fixed=4)


def gan_run(tmp_path=None, batches=None, nets=None, **options):
    """``fit_gan`` with ``GAN_BASE`` changed by ``options``; the checkpoint (read back) too if
    ``tmp_path`` is given: its optimizer states show what the run really used."""
    g, d = nets or gan_pair()
    path = None if tmp_path is None else tmp_path / f"gan-{len(list(tmp_path.iterdir()))}.pt"
    history = fit_gan(g, d, batches or gan_batches(), GANConfig(**{**GAN_BASE, **options}), device="cpu",
                      progress=False, checkpoint=path)
    state = None if path is None else torch.load(path, weights_only=True)
    return history, state, (g, d)


def test_gan_epochs():
    for epochs in (1, 3):
        h, _, _ = gan_run(epochs=epochs)
        assert h.epoch == list(range(1, epochs + 1)) and h.epoch_end == [2 * e for e in h.epoch]


def test_gan_nz():
    h, _, _ = gan_run(nets=gan_pair(nz=5), nz=5)
    assert len(h.d_loss) == 2
    with pytest.raises(ValueError, match="config.nz=9 but the generator takes nz=8"):
        gan_run(nz=9)


def test_gan_lr(tmp_path):
    for lr in (1e-3, 4e-3):
        g, d = gan_pair()
        d_before = params(d)
        _, state, _ = gan_run(tmp_path, batches=gan_batches(1), nets=(g, d), lr=lr)
        assert [grp["lr"] for o in ("opt_g", "opt_d") for grp in state[o]["param_groups"]] == [lr, lr]
        # Adam's first step moves a parameter by lr against its gradient's sign, whatever its size.
        largest = max(float((v.detach() - d_before[k]).abs().max()) for k, v in d.named_parameters())
        assert largest == pytest.approx(lr, rel=1e-3)


def test_gan_betas(tmp_path):
    _, state, _ = gan_run(tmp_path, betas=(0.3, 0.95))
    for opt in ("opt_g", "opt_d"):
        assert tuple(state[opt]["param_groups"][0]["betas"]) == (0.3, 0.95)
    # and they change the run: Adam's first step does not depend on them, the second does
    final = {b: params(gan_run(betas=b)[2][1]) for b in ((0.3, 0.95), (0.5, 0.999))}
    assert not all(torch.equal(v, final[(0.5, 0.999)][k]) for k, v in final[(0.3, 0.95)].items())


def test_gan_loss():
    assert all(v > 0 for v in gan_run(loss="nonsaturating")[0].g_loss)  # -log D(G(z))
    assert all(v < 0 for v in gan_run(loss="minimax")[0].g_loss)  # log(1 - D(G(z)))


def test_gan_d_steps(tmp_path):
    for k in (1, 3):
        _, state, _ = gan_run(tmp_path, d_steps=k)  # 2 batches
        steps = lambda opt: {int(s["step"]) for s in state[opt]["state"].values()}
        assert steps("opt_d") == {2 * k} and steps("opt_g") == {2}


def test_gan_seed():
    a, b, c = (gan_run(seed=s)[0] for s in (0, 0, 1))
    assert a.d_loss == b.d_loss and torch.equal(a.samples[0], b.samples[0])
    assert a.d_loss != c.d_loss and not torch.equal(a.samples[0], c.samples[0])  # other noise, other fixed z


def test_gan_n_fixed():
    for n, side in ((4, 2), (9, 3)):
        h, _, _ = gan_run(n_fixed=n)
        assert h.samples[0].shape == (3, side * 10 + 2, side * 10 + 2)  # 8x8 images, 2 pixels of padding


def test_gan_sample_every():
    assert gan_run(epochs=3, sample_every=1)[0].sample_epochs == [0, 1, 2, 3]
    assert gan_run(epochs=3, sample_every=2)[0].sample_epochs == [0, 2, 3]  # and always the last


def _gan_dtypes_and_layouts(**options) -> tuple[set, set]:
    """The dtypes of the outputs of G's and D's first layers during a fit_gan run, and
    whether their weights ended up channels_last."""
    g, d = gan_pair()
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.add(o.dtype)) for m in (g.stem[0], d.stem[0])]
    try:
        gan_run(nets=(g, d), **options)
    finally:
        for h in hooks:
            h.remove()
    # every 4-D weight whose two layouts differ (not those with a single input channel)
    layouts = {w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
               for w in (*g.parameters(), *d.parameters()) if w.ndim == 4 and w.shape[1] > 1}
    return seen, layouts


def test_gan_precision(tmp_path):
    # check_gan_pair and the sample grids run in float32; the updates in the autocast dtype
    assert _gan_dtypes_and_layouts(precision="fp32")[0] == {torch.float32}
    auto = resolve_precision("auto", torch.device("cpu"))
    assert _gan_dtypes_and_layouts(precision="auto")[0] == {torch.float32} | ({auto} if auto else set())
    if cpu_has_native_bf16():
        assert _gan_dtypes_and_layouts(precision="bf16")[0] == {torch.float32, torch.bfloat16}
        h, state, _ = gan_run(tmp_path, precision="bf16")
        assert state["records"]["autocast"] == "torch.bfloat16"
        assert all(math.isfinite(v) for v in h.d_loss + h.g_loss)
    else:
        with pytest.raises(ValueError, match="no native bfloat16"):
            gan_run(precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        GANConfig(precision="fp16")  # would need a loss scaler per network: not offered


def test_gan_channels_last():
    assert _gan_dtypes_and_layouts(channels_last=False)[1] == {False}
    assert _gan_dtypes_and_layouts(channels_last=True)[1] == {True}


# --------------------------------------------------------------------------- every option is tested

OPTION_TESTS = {
    TrainConfig: {
        "epochs": test_epochs, "optimizer": test_optimizer, "lr": test_lr, "momentum": test_momentum,
        "weight_decay": test_weight_decay, "bias_decay": test_bias_decay, "schedule": test_schedule, "warmup_epochs": test_warmup_epochs,
        "label_smoothing": test_label_smoothing, "precision": test_precision, "channels_last": test_channels_last,
        "tta_flip": test_tta_flip, "tta_translate": test_tta_translate, "tta_final_only": test_tta_final_only,
        "norm_lr_scale": test_norm_lr_scale, "lookahead": test_lookahead, "eval_every": test_eval_every,
        "grad_clip": test_grad_clip,
        "seed": test_seed, "mixing": test_mixing, "mix_alpha": test_mix_alpha, "mix_off_epochs": test_mix_off_epochs,
        "distill_weight": test_distill_weight, "distill_temperature": test_distill_temperature,
        "ema_decay": test_ema_decay,
    },
    GANConfig: {
        "epochs": test_gan_epochs, "nz": test_gan_nz, "lr": test_gan_lr, "betas": test_gan_betas,
        "loss": test_gan_loss, "d_steps": test_gan_d_steps, "seed": test_gan_seed, "n_fixed": test_gan_n_fixed,
        "sample_every": test_gan_sample_every, "precision": test_gan_precision,
        "channels_last": test_gan_channels_last,
    },
}


@pytest.mark.parametrize("config", [TrainConfig, GANConfig], ids=lambda c: c.__name__)
def test_every_option_has_a_test(config):
    fields = {f.name for f in dataclasses.fields(config)}
    missing = sorted(fields - OPTION_TESTS[config].keys())
    assert not missing, f"{config.__name__} options without a test in {__name__}: {missing}"
    assert not OPTION_TESTS[config].keys() - fields  # no test of an option that is gone
