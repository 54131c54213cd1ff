"""The segmentation scenes: composition, determinism, masks, cache, loading and augmentation."""
from __future__ import annotations

import urllib.error

import pytest
import torch

import cnnlearn.data as data_mod
import cnnlearn.scenes as scenes_mod
from cnnlearn import DataNotFoundError, load_data, load_images
from cnnlearn.data import DeviceLoader, augment_with_masks, sample_images
from cnnlearn.scenes import SCENE_CLASSES, SceneConfig, class_fractions, compose_scenes


def _sources(n_bg=8, n_garments=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    backgrounds = torch.randint(0, 256, (n_bg, 3, 32, 32), generator=g, dtype=torch.uint8)
    garments = torch.randint(0, 256, (n_garments, 1, 28, 28), generator=g, dtype=torch.uint8)
    return backgrounds, garments, torch.arange(n_garments) % 10


def test_composition_is_deterministic_and_seeded():
    bg, gar, lab = _sources()
    a = compose_scenes(bg, gar, lab, 25, seed=3, chunk=7)
    b = compose_scenes(bg, gar, lab, 25, seed=3, chunk=7)
    c = compose_scenes(bg, gar, lab, 25, seed=4, chunk=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == (25, 3, 64, 64) and a[1].shape == (25, 64, 64)
    assert a[0].dtype == a[1].dtype == torch.uint8


def test_masks_are_exactly_the_garment_pixels():
    # On black backgrounds a pixel is non-black exactly where the mask has a garment: the
    # tint (>= 0.4) keeps every masked pixel (> threshold 48) visible, and nothing else is drawn.
    bg, gar, lab = _sources()
    images, masks = compose_scenes(torch.zeros_like(bg), gar, lab, 40, seed=0)
    assert torch.equal(images.amax(1) > 0, masks > 0)
    assert set(masks.unique().tolist()) <= set(range(11)) and (masks > 0).any()
    # On real backgrounds: the same masks and garment pixels, and background pixels from the backgrounds
    images2, masks2 = compose_scenes(bg, gar, lab, 40, seed=0)
    assert torch.equal(masks, masks2)  # the same draws, whatever the backgrounds' pixels
    on = masks > 0  # garments are drawn over the backgrounds, the same pixels in both
    assert torch.equal(images.permute(0, 2, 3, 1)[on], images2.permute(0, 2, 3, 1)[on])
    upsampled = torch.nn.functional.interpolate(bg.float(), size=(64, 64), mode="bilinear")
    assert set(images2.permute(0, 2, 3, 1)[~on].float().flatten().tolist()) <= set(upsampled.round().flatten().tolist())


def test_a_solid_garment_gives_a_solid_square_mask_with_its_label():
    bg = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    garments = torch.full((1, 1, 28, 28), 255, dtype=torch.uint8)
    cfg = SceneConfig(min_garments=1, max_garments=1, min_side=20, max_side=20)
    _, masks = compose_scenes(bg, garments, torch.tensor([6]), 10, seed=0, config=cfg)
    for m in masks:
        ys, xs = (m > 0).nonzero(as_tuple=True)
        assert len(ys) == 400  # a 20 x 20 square
        assert int(ys.max() - ys.min()) == int(xs.max() - xs.min()) == 19
        assert set(m[m > 0].tolist()) == {7}  # "Shirt", class 6, is label 1 + 6


def test_overlapping_garments_hide_earlier_ones():
    bg = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    garments = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    cfg = SceneConfig(min_garments=3, max_garments=3, min_side=40, max_side=44)
    _, masks = compose_scenes(bg, garments, torch.tensor([0, 9]), 50, seed=0, config=cfg)
    # three big squares in a 64 x 64 scene must overlap; each pixel has one label
    assert ((masks == 1) | (masks == 10) | (masks == 0)).all()
    assert (masks == 1).any() and (masks == 10).any()


def test_class_fractions():
    masks = torch.tensor([[[0, 0], [1, 255]], [[0, 10], [1, 1]]], dtype=torch.uint8)
    f = class_fractions(masks)
    assert f.shape == (11,) and float(f.sum()) == pytest.approx(1.0)
    assert f[0] == pytest.approx(3 / 7) and f[1] == pytest.approx(3 / 7) and f[10] == pytest.approx(1 / 7)


def test_scenes_dataset_loads_reports_balance_and_is_cached(data_env, monkeypatch, capsys):
    train = load_images("scenes", "train")
    assert train.images.shape == (30, 3, 64, 64) and train.labels.shape == (30, 64, 64)  # tiny test sizes
    assert train.classes == SCENE_CLASSES and len(SCENE_CLASSES) == 11
    fractions = class_fractions(train.labels)
    with capsys.disabled():
        print("\nscene class balance (pixel fractions, tiny test data):",
              {c: round(float(f), 3) for c, f in zip(SCENE_CLASSES, fractions)})
    assert 0.3 < fractions[0] < 0.98  # background is the majority class, garments the rest
    assert fractions[1:].sum() > 0.02
    test = load_images("scenes", "test")  # other split, other seed, other sources
    assert test.images.shape == (20, 3, 64, 64) and not torch.equal(test.labels[:20], train.labels[:20])
    # a second load reads the cache: composing again would fail now
    monkeypatch.setattr(scenes_mod, "make_scenes", lambda *a, **k: pytest.fail("composed again"))
    for split, first in (("train", train), ("test", test)):
        again = load_images("scenes", split)
        assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)


@pytest.mark.parametrize("corrupt", ["garbage", "flipped_mask_pixel", "bad_label"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(data_env, corrupt):
    first = load_images("scenes", "test")
    files = list((data_mod.cache_dir() / "decoded").glob("scenes-test-*.pt"))
    assert len(files) == 1
    if corrupt == "garbage":
        files[0].write_bytes(b"not a torch file")
    else:
        obj = torch.load(files[0], weights_only=True)
        obj["masks"][0, 5, 5] = (obj["masks"][0, 5, 5] + 1) % 11 if corrupt == "flipped_mask_pixel" else 200
        torch.save(obj, files[0])
    with pytest.warns(UserWarning, match="composing the scenes again"):
        rebuilt = load_images("scenes", "test")
    assert torch.equal(rebuilt.images, first.images) and torch.equal(rebuilt.labels, first.labels)


def test_without_sources_the_error_is_the_packages(tmp_path, monkeypatch, small_datasets):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CNNLEARN_DATA", str(empty))
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "_DEBIAN_FASHION", tmp_path / "missing")

    def offline(name, split):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.raises(DataNotFoundError, match="cifar10 \\(train\\) was not found") as info:
        load_data("scenes", device="cpu")
    assert "CNNLEARN_DATA" in str(info.value)


def test_load_data_scenes_batches_masks(data_env):
    data = load_data("scenes", device="cpu", batch_size=8, train_size=16)
    assert data.train.num_samples == 16 and data.test.num_samples == 20
    assert data.classes == SCENE_CLASSES and data.train.has_masks
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (8, 64, 64) and y.dtype == torch.int64 and int(y.max()) <= 10
    with pytest.raises(ValueError, match="train_size/test_size"):
        load_data("scenes", device="cpu", train_per_class=2)
    images, masks = sample_images(data, 1, split="test", seed=3)
    again = sample_images(data, 1, split="test", seed=3)
    assert torch.equal(images, again[0]) and torch.equal(masks, again[1])
    assert masks.ndim == 3 and masks.shape[0] == len(images)
    # class-balanced over the garments: the k-th image's largest garment is the k-th class present
    keys = data_mod.dominant_class(data.test.labels)
    present = sorted(set(keys.tolist()) - {0})
    assert data_mod.dominant_class(masks).tolist() == present


def test_dominant_class():
    masks = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks[0, :2] = 3  # 8 pixels of 3
    masks[0, 3, :3] = 5  # 3 pixels of 5
    masks[1, :, :] = 255  # unlabelled only
    masks[2, 0, 0] = 7
    assert data_mod.dominant_class(masks).tolist() == [3, 0, 7]
    with pytest.raises(ValueError, match="masks"):
        data_mod.dominant_class(torch.zeros(4, 4, dtype=torch.uint8))


def test_flips_move_the_mask_with_the_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, 11, (32, 8, 8), generator=g, dtype=torch.uint8)
    loader = DeviceLoader(images, masks, 32, (0.5,) * 3, (0.25,) * 3, augment=True, pad=0, flip=True, seed=1)
    x, y = next(iter(loader))
    x = (loader.denormalize(x) * 255).round().to(torch.uint8)
    flipped = torch.equal
    kinds = []
    for i in range(32):
        if flipped(x[i], images[i]):
            assert torch.equal(y[i], masks[i].long())
            kinds.append("same")
        else:
            assert torch.equal(x[i], images[i].flip(-1)) and torch.equal(y[i], masks[i].flip(-1).long())
            kinds.append("flipped")
    assert 4 < kinds.count("flipped") < 28


def test_crops_move_the_mask_and_mark_the_padding_ignored():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(1, 11, (16, 8, 8), generator=g, dtype=torch.uint8)
    images = masks[:, None].expand(16, 3, 8, 8).clone()  # each pixel shows its own label
    x, y = augment_with_masks(images, masks, pad=2, flip=True, generator=torch.Generator().manual_seed(5))
    real = x[:, 0] > 0  # the padding is black
    assert torch.equal(y[real], x[:, 0][real])  # every real pixel kept its label
    assert (y[~real] == 255).all() and (~real).any()  # padding is ignore_index
    # the same draws as the images-only augmentation
    assert torch.equal(x, data_mod.augment_batch(images, 2, True, torch.Generator().manual_seed(5)))
