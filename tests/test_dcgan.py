"""DCGAN (cnnlearn.models.dcgan) and its training loop (cnnlearn.gan).

There is no DCGAN in torchvision or timm, so the networks are checked against the
arithmetic (output sizes, parameters and MACs from the formulas vs. the counter and the
real layers) and against a flat reference stack written out layer by layer below, the
layout of the paper's 64x64 networks. The loop is checked by what each update must do
to its own loss, by bit-exact resume, and by a short run that must learn.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn import (
    conv2d_macs, conv2d_output_size, conv2d_params, conv_transpose2d_macs,
    conv_transpose2d_output_size, conv_transpose2d_params, count_macs, count_params, create_model,
)
from cnnlearn._io import CheckpointMismatchError, CorruptFileError
from cnnlearn.data import DeviceLoader
from cnnlearn.gan import (
    GANConfig, autocast_dtype, discriminator_step, fit_gan, generator_step, image_grid, interpolate,
    latent, sample, to_gan_range, to_uint8,
)
from cnnlearn.train import cpu_has_native_bf16
from cnnlearn.models.dcgan import (
    DCGANConfig, Discriminator, Generator, dcgan, dcgan_discriminator, dcgan_generator,
    discriminator_table, generator_table,
)

from conftest import assert_equivalent, demanding_reference

SIZES = [(32, 3), (28, 1)]  # CIFAR-10 and Fashion-MNIST


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_pair(seed: int = 0, image_size: int = 8, channels: int = 1, nz: int = 8):
    torch.manual_seed(seed)
    return dcgan(image_size, channels, nz=nz, ngf=8, ndf=8)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# --------------------------------------------------------------------------- shapes and arithmetic


@pytest.mark.parametrize("image_size,channels", SIZES)
def test_shapes_and_ranges(image_size, channels):
    torch.manual_seed(0)
    g = dcgan_generator(image_size, channels).eval()
    d = dcgan_discriminator(image_size, channels).eval()
    z = torch.randn(3, 100)
    with torch.no_grad():
        x = g(z)
        assert x.shape == (3, channels, image_size, image_size)
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
        torch.testing.assert_close(g(z[:, :, None, None]), x)  # (B, nz, 1, 1) is the same input
        logits = d(x)
    assert logits.shape == (3,)
    # backward reaches every parameter of both networks
    g.train(), d.train()
    d(g(z)).sum().backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("image_size,channels", SIZES + [(64, 3)])
def test_generator_layers_match_the_formulas(image_size, channels):
    g = dcgan_generator(image_size, channels)
    table = generator_table(g.config)
    shapes = {}
    hooks = [g.get_submodule(row.name)[0].register_forward_hook(
        lambda m, i, o, name=row.name: shapes.__setitem__(name, (i[0].shape, o.shape))) for row in table]
    count_macs(g, (100,))
    for h in hooks:
        h.remove()
    total_macs = total_params = 0
    for row in table:
        layer = g.get_submodule(row.name)[0]
        assert isinstance(layer, nn.ConvTranspose2d)
        (_, cin, hin, _), (_, cout, hout, wout) = shapes[row.name]
        assert (cin, hin, cout) == (row.in_channels, row.in_size, row.out_channels)
        out = conv_transpose2d_output_size(row.in_size, row.kernel_size, row.stride, row.padding)
        assert out == hout == wout == row.out_size
        macs = conv_transpose2d_macs(row.in_channels, row.out_channels, row.kernel_size, row.in_size)
        assert count_macs(layer, (cin, hin, hin)) == macs  # the formula vs the counter, layer by layer
        total_macs += macs
        total_params += conv_transpose2d_params(row.in_channels, row.out_channels, row.kernel_size,
                                                bias=not row.norm) + (2 * row.out_channels if row.norm else 0)
    assert total_macs == count_macs(g, (100,))  # BN, ReLU and tanh add no MACs by convention
    assert total_params == count_params(g)
    assert table[0].in_size == 1 and table[-1].out_size == image_size
    for a, b in zip(table, table[1:]):
        assert b.in_size == a.out_size and b.in_channels == a.out_channels


def test_cifar_generator_numbers_by_hand():
    # z (100) -> 256@4x4 -> 128@8x8 -> 64@16x16 -> 3@32x32, 4x4 kernels:
    weights = 100 * 256 * 16 + 256 * 128 * 16 + 128 * 64 * 16 + 64 * 3 * 16
    g = dcgan_generator(32, 3)
    assert count_params(g) == weights + 2 * (256 + 128 + 64) + 3 == 1_068_931
    # MACs: each weight once per *input* pixel (1, 4x4, 8x8, 16x16)
    macs = 100 * 256 * 16 * 1 + 256 * 128 * 16 * 16 + 128 * 64 * 16 * 64 + 64 * 3 * 16 * 256
    assert count_macs(g, (100,)) == macs == 17_973_248


@pytest.mark.parametrize("image_size,channels", SIZES)
def test_discriminator_layers_match_the_formulas(image_size, channels):
    d = dcgan_discriminator(image_size, channels)
    table = discriminator_table(d.config)
    total_macs = total_params = 0
    for row in table:
        layer = d.get_submodule(row.name)[0]
        assert isinstance(layer, nn.Conv2d)
        assert conv2d_output_size(row.in_size, row.kernel_size, row.stride, row.padding) == row.out_size
        macs = conv2d_macs(row.in_channels, row.out_channels, row.kernel_size, row.out_size)
        assert count_macs(layer, (row.in_channels, row.in_size, row.in_size)) == macs
        total_macs += macs
        total_params += conv2d_params(row.in_channels, row.out_channels, row.kernel_size,
                                      bias=not row.norm) + (2 * row.out_channels if row.norm else 0)
    assert total_macs == count_macs(d, (channels, image_size, image_size))
    assert total_params == count_params(d)
    assert not table[0].norm and all(r.norm for r in table[1:-1])  # no BN on the input layer (Sec. 3)
    assert table[-1].out_size == 1 and table[-1].in_size == generator_table(d.config)[0].out_size


# --------------------------------------------------------------------------- against a flat reference


def reference_generator(nz=100, ngf=64, nc=3) -> nn.Sequential:
    """The 64x64 generator as one flat stack: z -> 8ngf@4 -> 4ngf@8 -> 2ngf@16 -> ngf@32 -> nc@64."""
    def up(cin, cout, k=4, s=2, p=1):
        return [nn.ConvTranspose2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*up(nz, ngf * 8, 4, 1, 0), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2),
                         *up(ngf * 2, ngf), nn.ConvTranspose2d(ngf, nc, 4, 2, 1), nn.Tanh())


def reference_discriminator(ndf=64, nc=3) -> nn.Sequential:
    """The 64x64 discriminator as one flat stack: nc@64 -> ndf@32 -> ... -> 8ndf@4 -> 1."""
    def down(cin, cout):
        return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    return nn.Sequential(nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2), *down(ndf, ndf * 2),
                         *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8), nn.Conv2d(ndf * 8, 1, 4, 1, 0))


# flat index in the reference -> our module name; every tensor of both is mapped.
G_NAMES = {"0": "stem.0", "1": "stem.1", "3": "stages.up1.0", "4": "stages.up1.1", "6": "stages.up2.0",
           "7": "stages.up2.1", "9": "stages.up3.0", "10": "stages.up3.1", "12": "head.0"}
D_NAMES = {"0": "stem.0", "2": "stages.down1.0", "3": "stages.down1.1", "5": "stages.down2.0",
           "6": "stages.down2.1", "8": "stages.down3.0", "9": "stages.down3.1", "11": "head.0"}


def copy_by_names(ours: nn.Module, theirs: nn.Module, names: dict[str, str]) -> None:
    src, dst = theirs.state_dict(), ours.state_dict()
    mapped = {}
    for key, value in src.items():
        prefix, _, leaf = key.partition(".")
        target = f"{names[prefix]}.{leaf}"
        assert dst[target].shape == value.shape, (key, target)
        mapped[target] = value
    assert set(mapped) == set(dst)
    ours.load_state_dict(mapped)


def test_64px_pair_equals_the_flat_reference():
    torch.manual_seed(0)
    g, d = dcgan(64, 3)
    # Random BN weights, and statistics measured on noise: with DCGAN's N(0, 0.02) weights
    # and fixed statistics, the image would be nearly the same for every z.
    ref_g = demanding_reference(reference_generator(), size=(100, 1, 1))
    ref_d = demanding_reference(reference_discriminator(), size=64)
    assert count_params(g) == count_params(ref_g) and count_params(d) == count_params(ref_d)
    copy_by_names(g, ref_g, G_NAMES)
    copy_by_names(d, ref_d, D_NAMES)
    z = torch.randn(4, 100, 1, 1)  # (B, nz, 1, 1): the reference's input, which ours accepts too
    assert_equivalent(g, ref_g, z, atol=1e-5)
    with torch.no_grad():
        x = g.eval()(z)
    # The reference ends in a (B, 1, 1, 1) map, ours in one logit per image.
    assert_equivalent(d, nn.Sequential(ref_d, nn.Flatten(0)), x, atol=1e-5)


def test_weights_init():
    torch.manual_seed(0)
    g, d = dcgan(32, 3)
    for model in (g, d):
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight
                if w.numel() > 10_000:  # enough samples for tight statistics
                    assert abs(w.std().item() - 0.02) < 0.001, name
                    assert abs(w.mean().item()) < 0.001, name
                if m.bias is not None:
                    assert torch.all(m.bias == 0), name
            elif isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.bias == 0), name
                if m.weight.numel() >= 128:
                    assert abs(m.weight.mean().item() - 1) < 0.01 and 0.01 < m.weight.std().item() < 0.03, name


def test_not_in_the_classification_registry():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("dcgan_generator")


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=30), "image_size=30 cannot be produced"),
    (dict(image_size=36), "image_size=36 cannot be produced"),
    (dict(image_size=6), "image_size=6 cannot be produced"),
    (dict(image_size=0), "image_size must be a positive"),
    (dict(image_size=32.0), "image_size must be an int"),
    (dict(nz=0), "nz must be a positive"),
    (dict(channels=0), "channels must be a positive"),
    (dict(ngf=-8), "ngf must be a positive"),
])
def test_bad_generator_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dcgan_generator(**kwargs)


def test_bad_inputs_and_configs():
    with pytest.raises(ValueError, match="ndf must be a positive"):
        dcgan_discriminator(ndf=0)
    with pytest.raises(ValueError, match="config must be a DCGANConfig"):
        Generator({"image_size": 32})
    g, d = tiny_pair()
    with pytest.raises(ValueError, match=r"z of shape \(B, 8\)"):
        g(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"images of shape \(B, 1, 8, 8\)"):
        d(torch.randn(2, 1, 16, 16))
    for kwargs, match in [(dict(loss="wasserstein"), "loss must be one of"), (dict(epochs=0), "epochs must be"),
                          (dict(d_steps=0), "d_steps must be"), (dict(lr=0), "lr must be"),
                          (dict(betas=(0.5,)), "betas must be"), (dict(betas=(1.0, 0.999)), "betas must be"),
                          (dict(n_fixed=0), "n_fixed must be")]:
        with pytest.raises(ValueError, match=match):
            GANConfig(**kwargs)
    batches = [torch.rand(4, 1, 8, 8) * 2 - 1]
    with pytest.raises(ValueError, match="config.nz=100 but the generator takes nz=8"):
        fit_gan(g, d, batches, GANConfig(epochs=1), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):  # e.g. mean/std-normalised images
        fit_gan(g, d, [torch.randn(4, 1, 8, 8) * 3], GANConfig(epochs=1, nz=8), device="cpu", progress=False)
    with pytest.raises(ValueError, match="no batches"):
        fit_gan(g, d, [], GANConfig(epochs=1, nz=8), device="cpu", progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        interpolate(g, torch.randn(8), torch.randn(8), steps=1)
    with pytest.raises(ValueError, match="loss must be one of"):
        generator_step(g, d, torch.optim.Adam(g.parameters()), torch.randn(2, 8), loss="hinge")
    with pytest.raises(ValueError, match="denormalize"):
        to_gan_range(batches)


# --------------------------------------------------------------------------- the two updates


def test_discriminator_step_lowers_its_loss_and_leaves_g_alone():
    g, d = tiny_pair()
    g.train(), d.train()
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    z = torch.randn(16, 8)
    g_before, d_before = params_of(g), params_of(d)
    opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    stats = discriminator_step(g, d, opt, real, z)
    with torch.no_grad():  # train mode: BN uses this batch's statistics, as during the step
        fake_logits, real_logits = d(g(z)), d(real)
        loss_after = (F.binary_cross_entropy_with_logits(real_logits, torch.ones(16))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros(16)))
    # Only the sum must fall: D(x) and D(G(z)) share the head's bias, so one step can
    # move both up (or both down) while separating them.
    assert loss_after < stats["d_loss"]
    assert all(torch.equal(v, g_before[k]) for k, v in g.named_parameters())
    assert all(not torch.equal(v, d_before[k]) for k, v in d.named_parameters())


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax"])
def test_generator_step_raises_d_of_g_and_leaves_d_alone(loss):
    g, d = tiny_pair()
    g.train(), d.train()
    z = torch.randn(16, 8)
    g_before, d_before = params_of(g), params_of(d)
    opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    with torch.no_grad():
        logits = d(g(z))
    stats = generator_step(g, d, opt, z, loss)
    expected = (-F.logsigmoid(logits) if loss == "nonsaturating" else torch.log1p(-torch.sigmoid(logits))).mean()
    torch.testing.assert_close(stats["g_loss"], expected)
    assert (stats["g_loss"] < 0) == (loss == "minimax")
    with torch.no_grad():
        d_fake_after = torch.sigmoid(d(g(z))).mean()
    assert d_fake_after > stats["d_fake"]
    assert all(torch.equal(v, d_before[k]) for k, v in d.named_parameters())
    assert all(not torch.equal(v, g_before[k]) for k, v in g.named_parameters())


def test_one_fit_step_changes_both_networks():
    g, d = tiny_pair()
    g_before, d_before = params_of(g), params_of(d)
    h = fit_gan(g, d, [(torch.rand(8, 1, 8, 8) * 2 - 1, torch.zeros(8))],
                GANConfig(epochs=1, nz=8, n_fixed=4), device="cpu", progress=False)
    for model, before in ((g, g_before), (d, d_before)):
        for k, v in model.named_parameters():
            assert not torch.equal(v, before[k]), k
    assert len(h.d_loss) == len(h.g_loss) == len(h.d_real) == len(h.d_fake) == 1
    assert h.epoch == [1] and h.epoch_end == [1] and h.sample_epochs == [0, 1]
    for grid in h.samples:
        assert grid.dtype == torch.uint8 and grid.device.type == "cpu" and grid.shape == (3, 22, 22)
    assert not torch.equal(h.samples[0], h.samples[1])


def test_resume_continues_identically(tmp_path):
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    # torch's DataLoader shuffles with the global RNG: resume must restore it.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(32)),
                                         batch_size=8, shuffle=True)
    cfg = GANConfig(epochs=3, nz=8, n_fixed=4, seed=3)
    g, d = tiny_pair(seed=1)
    full = fit_gan(g, d, loader, cfg, device="cpu", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_first(epoch, history):
        if epoch == 1:
            raise Interrupt

    ckpt = tmp_path / "gan.pt"
    g2, d2 = tiny_pair(seed=1)
    with pytest.raises(Interrupt):
        fit_gan(g2, d2, loader, cfg, device="cpu", progress=False, checkpoint=ckpt, callback=stop_after_first)
    g3, d3 = tiny_pair(seed=99)  # other initial weights: everything must come from the checkpoint
    torch.manual_seed(12345)  # and the global RNG too
    resumed = fit_gan(g3, d3, loader, cfg, device="cpu", progress=False, checkpoint=ckpt)

    a, b = full.as_dict(), resumed.as_dict()
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "epoch", "epoch_end", "sample_epochs"):
        assert a[key] == b[key], key
    assert len(a["d_loss"]) == 12 and a["epoch"] == [1, 2, 3]
    assert all(torch.equal(x, y) for x, y in zip(a["samples"], b["samples"])) and len(b["samples"]) == 4
    for ours, theirs in ((g, g3), (d, d3)):
        for (k, v), (_, w) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(v, w), k
    # a finished run returns its history; a different config refuses the checkpoint
    assert fit_gan(g3, d3, loader, cfg, device="cpu", progress=False, checkpoint=ckpt).d_loss == a["d_loss"]
    with pytest.raises(CheckpointMismatchError, match="changed: lr"):
        fit_gan(g3, d3, loader, GANConfig(epochs=3, nz=8, n_fixed=4, seed=3, lr=1e-3),
                device="cpu", progress=False, checkpoint=ckpt)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bfloat16 autocast needs a CPU with native bfloat16")
def test_resume_is_identical_with_bf16_and_channels_last(tmp_path):
    # the chapter's arithmetic: bfloat16 autocast and NHWC, stopped and resumed on the CPU
    images = torch.rand(24, 1, 8, 8) * 2 - 1
    batches = [images[i:i + 8] for i in range(0, 24, 8)]
    cfg = GANConfig(epochs=3, nz=8, n_fixed=4, seed=5, precision="bf16", channels_last=True)
    g, d = tiny_pair(seed=2)
    full = fit_gan(g, d, batches, cfg, device="cpu", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_second(epoch, history):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / "gan.pt"
    with pytest.raises(Interrupt):
        fit_gan(*tiny_pair(seed=2), batches, cfg, device="cpu", progress=False, checkpoint=ckpt,
                callback=stop_after_second)
    g3, d3 = tiny_pair(seed=7)
    resumed = fit_gan(g3, d3, batches, cfg, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.g_loss == full.g_loss and resumed.d_loss == full.d_loss
    for ours, theirs in ((g, g3), (d, d3)):
        for (k, v), w in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(v, w), k
    # another arithmetic refuses the checkpoint
    with pytest.raises(CheckpointMismatchError):
        fit_gan(g3, d3, batches, dataclasses.replace(cfg, precision="fp32"), device="cpu", progress=False,
                checkpoint=ckpt)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bfloat16 autocast needs a CPU with native bfloat16")
def test_steps_under_bf16_autocast_report_float32_losses_close_to_float32():
    real, z = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randn(8, 8)
    results = {}
    for dtype in (None, torch.bfloat16):
        g, d = tiny_pair(seed=4)
        ds = discriminator_step(g, d, torch.optim.Adam(d.parameters()), real, z, autocast=dtype)
        gs = generator_step(g, d, torch.optim.Adam(g.parameters()), z, autocast=dtype)
        assert all(v.dtype == torch.float32 for v in (*ds.values(), *gs.values()))
        assert all(p.dtype == torch.float32 for p in (*g.parameters(), *d.parameters()))  # weights stay float32
        results[dtype] = (ds["d_loss"].item(), gs["g_loss"].item())
    for a, b in zip(results[None], results[torch.bfloat16]):
        assert a == pytest.approx(b, rel=0.05)  # bfloat16 keeps about 3 significant digits per operation
    assert autocast_dtype("fp32", "cpu") is None and autocast_dtype("auto", "cpu") == torch.bfloat16


def test_cnnlearn_loader_with_to_gan_range():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    images[0] = 0
    images[1] = 255
    loader = DeviceLoader(images, torch.zeros(24, dtype=torch.long), 8, mean=(0.3,), std=(0.2,), shuffle=True)
    to_range = to_gan_range(loader)
    x = to_range(loader.normalize(images))
    torch.testing.assert_close(x, images.float() / 127.5 - 1)  # exactly [0, 255] -> [-1, 1]
    g, d = tiny_pair()
    h = fit_gan(g, d, loader, GANConfig(epochs=2, nz=8, n_fixed=4), preprocess=to_range, progress=False)
    assert h.epoch_end == [3, 6] and loader.epoch == 2


def test_a_short_run_learns_the_data():
    # Every real image is close to grey 0.5; an untrained generator draws ~0 (tanh of
    # small numbers). Adversarial training alone must pull its samples towards 0.5.
    torch.manual_seed(0)
    data = [(0.5 + 0.1 * torch.randn(16, 1, 8, 8)).clamp(-1, 1) for _ in range(8)]
    g, d = tiny_pair()
    before = (sample(g, 64, seed=1) - 0.5).abs().mean()
    h = fit_gan(g, d, data, GANConfig(epochs=6, nz=8, lr=1e-3, n_fixed=4), device="cpu", progress=False)
    after = (sample(g, 64, seed=1) - 0.5).abs().mean()
    assert before > 0.4 and after < 0.5 * before
    assert len(h.epoch_mean("d_loss")) == 6


# --------------------------------------------------------------------------- using a generator


def test_sample_interpolate_and_images():
    g, _ = tiny_pair()
    g.train()
    buffers = {k: v.clone() for k, v in g.named_buffers()}
    x = sample(g, 5, seed=7)
    assert x.shape == (5, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(sample(g, 5, seed=7), x, rtol=0, atol=0)
    assert not torch.equal(sample(g, 5, seed=8), x)
    assert g.training and all(torch.equal(v, buffers[k]) for k, v in g.named_buffers())  # no side effects
    z = latent(2, 8, seed=7)
    torch.testing.assert_close(sample(g, 2, seed=7), x[:2])  # sample draws latent(n, nz, seed)
    for spherical in (False, True):
        path = interpolate(g, z[0], z[1], steps=6, spherical=spherical)
        assert path.shape == (6, 1, 8, 8)
        torch.testing.assert_close(path[[0, -1]], x[:2], atol=1e-5, rtol=1e-5)  # endpoints are G(z0), G(z1)
    assert not torch.allclose(interpolate(g, z[0], z[1], 3)[1], interpolate(g, z[0], z[1], 3, spherical=True)[1])
    u = to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0]))
    assert u.dtype == torch.uint8 and u.tolist() == [0, 128, 255, 255]
    grid = image_grid(x, nrow=5, padding=1)
    assert grid.shape == (3, 10, 46) and grid.dtype == torch.uint8
