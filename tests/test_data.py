"""cnnlearn.data: readers, the decoded cache, the offline error, subsets and the device loader.

Every test reads the tiny synthetic copies written by ``conftest.tiny_cifar_dir``.
"""
from __future__ import annotations

import gzip
import re
import urllib.error
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import cnnlearn.data as data_mod
from cnnlearn._io import CorruptFileError, atomic_save, safe_load
from cnnlearn.data import (
    CIFAR10_CLASSES, DataNotFoundError, DeviceLoader, ImageSet, balanced_subset, load_data, load_images,
    random_crop, random_flip, sample_images,
)

from conftest import SIZES, TEST_PER_CLASS, TRAIN_PER_CLASS

# torchvision 0.29 deprecates its image codecs (which cnnlearn.data and the fixtures use) in
# favour of TorchCodec; they still work, and the warning is not what these tests are about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def _cache_files(tmp_path):
    return sorted((tmp_path / "cache" / "decoded").glob("*.pt"))


def _temp_files(tmp_path):
    return [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_folder_loads(data_env, split):
    ds = load_images("cifar10", split)
    assert ds.images.shape == (SIZES[split], 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert torch.equal(ds.labels, data_env.folder_labels[split])  # labels follow the class folders
    assert ds.classes == CIFAR10_CLASSES
    assert ds.source.endswith("cifar10-jpeg")
    png = data_env.is_png(split)
    assert png.any() and (~png).any()
    assert torch.equal(ds.images[png], data_env.folder_images[split][png])  # lossless
    jpeg_error = (ds.images[~png].float() - data_env.folder_images[split][~png].float()).abs().mean()
    assert jpeg_error < 3  # lossy, but the same pictures


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_pickle_loads(data_env, monkeypatch, split):
    monkeypatch.setenv("CNNLEARN_DATA", str(data_env.pickle_root))
    ds = load_images("cifar10", split)
    assert ds.images.shape == (SIZES[split], 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert torch.equal(ds.images, data_env.pickle_images[split])
    assert torch.equal(ds.labels, data_env.pickle_labels[split])


@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist_idx_gz_loads(data_env, split):
    ds = load_images("fashion_mnist", split)
    assert ds.images.shape == (SIZES[split], 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, data_env.fashion_images[split])
    assert torch.equal(ds.labels, data_env.fashion_labels[split]) and ds.labels.dtype == torch.int64
    assert ds.classes == data_mod.FASHION_MNIST_CLASSES


def test_truncated_idx_file_is_reported(data_env):
    path = data_env.root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(CorruptFileError, match="truncated"):
        load_images("fashion_mnist", "test")


def test_bad_names_raise(data_env):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_images("mnist")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_images("cifar10", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data("imagenet")


def test_incomplete_copy_is_reported(data_env):
    data_env.folder_files["test"][0].unlink()
    with pytest.raises(DataNotFoundError, match="incomplete"):
        load_images("cifar10", "test")


def test_wrong_class_folders_are_reported(data_env):
    (data_env.root / "cifar10-jpeg" / "test" / "truck").rename(data_env.root / "cifar10-jpeg" / "test" / "lorry")
    with pytest.raises(DataNotFoundError, match="class folders"):
        load_images("cifar10", "test")


def test_corrupt_jpeg_names_the_file(data_env):
    bad = next(p for p in data_env.folder_files["train"] if p.suffix == ".jpg")
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with pytest.raises(CorruptFileError, match=re.escape(str(bad))):
        load_images("cifar10", "train")


def test_offline_without_data_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch, small_datasets):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CNNLEARN_DATA", str(empty))
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "_DEBIAN_FASHION", tmp_path / "missing")

    def offline(name, split):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(data_mod, "_download", offline)
    for name in ("cifar10", "fashion_mnist"):
        with pytest.raises(DataNotFoundError) as info:
            load_images(name, "train")
        msg = str(info.value)
        assert "could not be downloaded" in msg and "offline" in msg
        assert "Looked in" in msg and str(empty) in msg
        assert "CNNLEARN_DATA" in msg and str(tmp_path / "cache") in msg
    assert isinstance(info.value, FileNotFoundError)  # catchable as the built-in error too


# --------------------------------------------------------------------------- the decoded cache


def test_cache_is_written_then_used(data_env, tmp_path, monkeypatch):
    first = load_images("cifar10", "train")
    assert len(_cache_files(tmp_path)) == 1

    def no_reading(*args):
        raise AssertionError("the decoded cache should have been used")

    monkeypatch.setattr(data_mod, "_read_raw", no_reading)
    second = load_images("cifar10", "train")
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    assert second.source == first.source


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_garbage(path):
    path.write_bytes(b"definitely not a torch file" * 10)


def _corrupt_checksum(path):
    obj = torch.load(path, weights_only=True)
    obj["images"][0, 0, 0, 0] ^= 1  # one flipped bit, the stored checksum left as it was
    torch.save(obj, path)


def _corrupt_shape(path):
    obj = torch.load(path, weights_only=True)
    obj["images"] = obj["images"][:-1]
    torch.save(obj, path)


def _corrupt_version(path):
    obj = torch.load(path, weights_only=True)
    obj["version"] = 0
    torch.save(obj, path)


@pytest.mark.parametrize("corrupt, reason", [
    (_corrupt_truncate, "corrupt"), (_corrupt_garbage, "corrupt"), (_corrupt_checksum, "checksum"),
    (_corrupt_shape, "wrong shape"), (_corrupt_version, "version"),
])
def test_bad_cache_is_rebuilt_with_a_warning(data_env, tmp_path, corrupt, reason):
    good = load_images("cifar10", "test")
    (path,) = _cache_files(tmp_path)
    corrupt(path)
    with pytest.warns(UserWarning, match=f"(?s){reason}.*rebuilding the cache"):
        again = load_images("cifar10", "test")
    assert torch.equal(again.images, good.images) and torch.equal(again.labels, good.labels)
    # The rebuilt cache is valid: the next load neither warns nor decodes.
    assert _cache_files(tmp_path) == [path]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_images("cifar10", "test").images, good.images)


def test_cache_writes_leave_no_temporary_files(data_env, tmp_path):
    for name in ("cifar10", "fashion_mnist"):
        for split in ("train", "test"):
            load_images(name, split)
    assert len(_cache_files(tmp_path)) == 4
    assert _temp_files(tmp_path) == []


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "x.pt"
    atomic_save({"a": torch.arange(3)}, path)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.arange(5)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(safe_load(path, ("a",))["a"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]


def test_unwritable_cache_still_loads(data_env, tmp_path, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(UserWarning, match="could not write the decoded cache"):
        ds = load_images("cifar10", "test")
    assert len(ds) == SIZES["test"]
    assert _cache_files(tmp_path) == [] and _temp_files(tmp_path) == []


def test_safe_load_rejects_non_dicts_and_missing_keys(tmp_path):
    atomic_save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CorruptFileError, match="holds a list"):
        safe_load(tmp_path / "list.pt")
    atomic_save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(CorruptFileError, match="lacks b"):
        safe_load(tmp_path / "dict.pt", ("a", "b"))
    with pytest.raises(FileNotFoundError):
        safe_load(tmp_path / "nothing.pt")


# --------------------------------------------------------------------------- subsets


def test_balanced_subset():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 7)[torch.randperm(22, generator=torch.Generator().manual_seed(3))]
    idx = balanced_subset(labels, 4, seed=1)
    assert Counter(labels[idx].tolist()) == {0: 4, 1: 4, 2: 4}
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == 12
    assert torch.equal(balanced_subset(labels, 4, seed=1), idx)  # seed-deterministic
    others = [balanced_subset(labels, 4, seed=s) for s in range(2, 6)]
    assert any(not torch.equal(o, idx) for o in others)  # and the seed matters
    assert len(balanced_subset(labels, 5)) == 15
    with pytest.raises(ValueError, match="class 1 has only 5"):
        balanced_subset(labels, 6)
    with pytest.raises(ValueError, match="per_class must be a positive int, got 0"):
        balanced_subset(labels, 0)
    with pytest.raises(ValueError, match="per_class must be a positive int, got 2.5"):
        balanced_subset(labels, 2.5)


def test_load_data_per_class_subsets(data_env):
    data = load_data("cifar10", device="cpu", batch_size=8, train_per_class=2, test_per_class=1, seed=0)
    assert data.train.num_samples == 20 and data.test.num_samples == 10
    assert Counter(data.train.labels.tolist()) == {c: 2 for c in range(10)}
    assert Counter(data.test.labels.tolist()) == {c: 1 for c in range(10)}
    assert data.image_shape == (3, 32, 32) and data.classes == CIFAR10_CLASSES
    assert data.train.shuffle and data.train.augment and data.train.drop_last
    assert not data.test.shuffle and not data.test.augment and data.test.batch_size == 16
    assert len(data.train) == 2 and len(data.test) == 1
    assert "20 train / 10 test" in repr(data)
    # The same seed picks the same subset; the full split is used without per_class.
    again = load_data("cifar10", device="cpu", batch_size=8, train_per_class=2, test_per_class=1, seed=0)
    assert torch.equal(again.train.images, data.train.images)
    full = load_data("cifar10", device="cpu", batch_size=8, augment=False)
    assert full.train.num_samples == 10 * TRAIN_PER_CLASS and full.test.num_samples == 10 * TEST_PER_CLASS
    assert not full.train.augment
    x, y = next(iter(full.test))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and y.dtype == torch.int64


def test_load_data_fashion_mnist(data_env):
    data = load_data("fashion_mnist", device="cpu", batch_size=4)
    x, _ = next(iter(data.train))
    assert x.shape == (4, 1, 28, 28) and data.train.pad == 2


# --------------------------------------------------------------------------- stored order and samples


def _assert_class_mixed(labels: torch.Tensor, n: int = 20) -> None:
    """The first ``n`` labels hold several classes, and the split is not stored class by class."""
    first = labels[:n].tolist()
    assert len(set(first)) >= 3, f"the first {len(first)} images hold only the classes {sorted(set(first))}"
    assert (labels.diff() < 0).any(), "the labels are sorted: the split is stored class by class"


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist"])
@pytest.mark.parametrize("per_class", [None, 2])
def test_loaded_splits_are_stored_class_mixed(data_env, name, per_class):
    # The synthetic CIFAR-10 is an image-folder tree, listed class by class: the case the
    # seeded permutation exists for.
    assert torch.equal(load_images("cifar10", "train").labels, data_env.folder_labels["train"])
    data = load_data(name, device="cpu", batch_size=4, train_per_class=per_class, test_per_class=per_class, seed=0)
    for split, loader in (("train", data.train), ("test", data.test)):
        source = load_images(name, split)
        # A small split has few images to spare: look at half of it.
        _assert_class_mixed(loader.labels, n=min(20, len(loader.labels) // 2))
        if per_class is None:  # a permutation of the whole split, images and labels together
            order = [int(i) for i in _positions(loader.images, source.images)]
            assert sorted(order) == list(range(len(source)))
            assert torch.equal(loader.labels, source.labels[order])
        else:
            assert Counter(loader.labels.tolist()) == {c: per_class for c in range(10)}
    # Seeded: the same seed stores the same order, another seed another one.
    again = load_data(name, device="cpu", batch_size=4, train_per_class=per_class, test_per_class=per_class, seed=0)
    other = load_data(name, device="cpu", batch_size=4, train_per_class=per_class, test_per_class=per_class, seed=1)
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.test.labels, data.test.labels)
    assert not torch.equal(other.train.labels, data.train.labels)


def _positions(images: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """For each image, its index in ``source`` (every image must occur there exactly once)."""
    flat_src, flat = source.flatten(1).long(), images.flatten(1).long()
    match = (flat[:, None, :] == flat_src[None, :, :]).all(-1)  # (N, N_source)
    assert (match.sum(1) == 1).all()
    return match.int().argmax(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_class", [None, 20])
def test_a_class_ordered_source_is_stored_mixed_at_scale(monkeypatch, seed, per_class):
    # 10 classes of 100 images, listed class by class as ImageFolder lists them: the
    # first 20 stored images must show most classes, not one.
    labels = torch.arange(10).repeat_interleave(100)
    images = labels.to(torch.uint8)[:, None, None, None].expand(-1, 3, 4, 4).contiguous()  # pixel = label

    monkeypatch.setattr(data_mod, "load_images", lambda name, split: ImageSet(images, labels, CIFAR10_CLASSES, "fake"))
    data = load_data("cifar10", device="cpu", batch_size=8, train_per_class=per_class, seed=seed)
    for loader in (data.train, data.test):
        _assert_class_mixed(loader.labels)
        assert len(set(loader.labels[:20].tolist())) >= 5
        assert torch.equal(loader.images[:, 0, 0, 0].long(), loader.labels)  # images moved with their labels


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist"])
def test_real_datasets_are_stored_class_mixed(name, monkeypatch):
    """The real datasets under $CNNLEARN_DATA, when there (skipped otherwise; never downloads)."""
    root = data_mod.os.environ.get("CNNLEARN_DATA")
    if not root or not any(p.is_dir() for p in data_mod._candidates(name)[:-1]):
        pytest.skip(f"no copy of {name} under CNNLEARN_DATA")

    def no_download(name, split):
        pytest.skip(f"{name}/{split} is not under CNNLEARN_DATA={root}")

    monkeypatch.setattr(data_mod, "_download", no_download)
    for per_class in (None, 50):
        data = load_data(name, device="cpu", train_per_class=per_class, test_per_class=per_class)
        for loader in (data.train, data.test):
            _assert_class_mixed(loader.labels)
            assert len(set(loader.labels[:20].tolist())) >= 5
        images, labels = sample_images(data, per_class=2, split="test")
        assert labels.tolist() == list(range(10)) * 2


def test_sample_images_is_balanced_interleaved_and_seeded(data_env):
    data = load_data("cifar10", device="cpu", batch_size=4, seed=0)
    images, labels = sample_images(data, per_class=3)
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == list(range(10)) * 3  # one of each, then again
    # Each sampled image is a training image with that label, and none is drawn twice.
    where = _positions(images, data.train.images)
    assert len(set(where.tolist())) == 30 and torch.equal(data.train.labels[where], labels)
    # Seeded: the same seed gives the same sample, other seeds other samples.
    assert torch.equal(sample_images(data, per_class=3)[0], images)
    smaller, _ = sample_images(data, per_class=2, seed=5)
    assert any(not torch.equal(sample_images(data, per_class=2, seed=s)[0], smaller) for s in range(6, 9))
    # The test split, from the Data or from its loader, and normalised as the loader's batches.
    test_images, test_labels = sample_images(data, per_class=2, split="test", seed=3)
    assert test_labels.tolist() == list(range(10)) * 2
    assert len(set(_positions(test_images, data.test.images).tolist())) == 20
    same, same_labels = sample_images(data.test, per_class=2, seed=3)
    assert torch.equal(same, test_images) and torch.equal(same_labels, test_labels)
    normalised, _ = sample_images(data.test, per_class=2, seed=3, normalize=True)
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised, data.test.normalize(test_images))
    # Drawing a sample leaves the loader's epoch, and so its batches, alone.
    assert data.train.epoch == 0


def test_sample_images_bad_arguments(data_env):
    data = load_data("fashion_mnist", device="cpu", batch_size=4)
    with pytest.raises(ValueError, match="class 0 has only 3 examples; ask for at most 3"):
        sample_images(data, per_class=4)
    with pytest.raises(ValueError, match="per_class must be a positive int, got 0"):
        sample_images(data, per_class=0)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test', got 'val'"):
        sample_images(data, split="val")
    with pytest.raises(ValueError, match="split='test' was given with a DeviceLoader"):
        sample_images(data.train, split="test")
    with pytest.raises(TypeError, match="source must be the Data from load_data"):
        sample_images(data.train.images)
    with pytest.raises(TypeError, match="seed must be an int.*got 0.5"):
        sample_images(data, seed=0.5)


# --------------------------------------------------------------------------- the loader


def _loader(n=10, batch_size=4, **kwargs):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(n)  # each label names its image, to follow the order
    return DeviceLoader(images, labels, batch_size, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), **kwargs)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_same_seed_and_epoch_same_batches():
    a = _epoch(_loader(shuffle=True, augment=True, pad=2, seed=7))
    b = _epoch(_loader(shuffle=True, augment=True, pad=2, seed=7))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    # Setting the epoch reproduces that epoch's batches (what a resumed run does).
    loader = _loader(shuffle=True, augment=True, pad=2, seed=7)
    second = (_epoch(loader), _epoch(loader))[1]
    replay = _loader(shuffle=True, augment=True, pad=2, seed=7)
    replay.epoch = 1
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(second, _epoch(replay)))


def test_loader_epochs_and_seeds_change_the_order():
    loader = _loader(n=32, batch_size=8, shuffle=True)
    orders = [torch.cat([y for _, y in _epoch(loader)]) for _ in range(3)]
    assert loader.epoch == 3
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(32))  # a permutation of the data
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    other_seed = torch.cat([y for _, y in _epoch(_loader(n=32, batch_size=8, shuffle=True, seed=1))])
    assert not torch.equal(other_seed, orders[0])
    unshuffled = torch.cat([y for _, y in _epoch(_loader(n=32, batch_size=8))])
    assert torch.equal(unshuffled, torch.arange(32))


def test_loader_len_and_drop_last():
    keep = _loader(n=10, batch_size=4)
    assert len(keep) == 3 and [len(y) for _, y in keep] == [4, 4, 2]
    drop = _loader(n=10, batch_size=4, drop_last=True, shuffle=True)
    assert len(drop) == 2 and [len(y) for _, y in drop] == [4, 4]
    assert len(_loader(n=8, batch_size=4, drop_last=True)) == 2


def test_loader_augmentation_keeps_shape_and_changes_pixels():
    plain = _epoch(_loader(n=16, batch_size=16))
    augmented = _epoch(_loader(n=16, batch_size=16, augment=True, pad=2))
    (x0, y0), (x1, y1) = plain[0], augmented[0]
    assert x1.shape == x0.shape == (16, 3, 8, 8) and x1.dtype == torch.float32
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)


def test_loader_without_augmentation_is_just_normalisation():
    loader = _loader(n=6, batch_size=6)
    x, y = next(iter(loader))
    mean = torch.tensor([0.5, 0.4, 0.3])[None, :, None, None]
    std = torch.tensor([0.2, 0.25, 0.3])[None, :, None, None]
    torch.testing.assert_close(x, (loader.images.float() / 255 - mean) / std)


def test_loader_bad_arguments():
    images, labels = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, 2, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        DeviceLoader(images, labels[:3], 2, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, 0, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="one value per channel"):
        DeviceLoader(images, labels, 2, (0.5,), (0.2,))


def test_random_crop_is_a_shifted_copy():
    x = torch.randint(1, 256, (6, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    pad = 3
    out = random_crop(x, pad, torch.Generator().manual_seed(11))
    # Reproduce the offsets from the same generator state, then pad and slice by hand.
    dy, dx = torch.randint(0, 2 * pad + 1, (2, 6), generator=torch.Generator().manual_seed(11))
    padded = F.pad(x, (pad,) * 4)
    for i in range(6):
        expected = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], expected)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert len({(int(a), int(b)) for a, b in zip(dy, dx)}) > 1  # images get their own offsets
    assert random_crop(x, 0, torch.Generator()) is x


def test_random_crop_known_offset():
    # With pad=1 every offset is in {0, 1, 2}; offset (1, 1) is the identity, (0, 0) moves the
    # image one pixel right and down with a zero row and column at the top and left.
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    dy, dx = torch.randint(0, 3, (2, 64), generator=torch.Generator().manual_seed(0))
    for i in range(64):
        if (dy[i], dx[i]) == (1, 1):
            assert torch.equal(out[i], x[i])
        if (dy[i], dx[i]) == (0, 0):
            assert torch.equal(out[i, 0, 1:, 1:], x[i, 0, :3, :3])
            assert out[i, 0, 0].abs().sum() == 0 and out[i, 0, :, 0].abs().sum() == 0
    assert {(1, 1), (0, 0)} <= {(int(a), int(b)) for a, b in zip(dy, dx)}


def test_random_flip_flips_about_half():
    x = torch.randn(32, 2, 5, 5)
    out = random_flip(x, torch.Generator().manual_seed(4))
    flipped = torch.rand(32, generator=torch.Generator().manual_seed(4)) < 0.5
    for i in range(32):
        assert torch.equal(out[i], x[i].flip(-1) if flipped[i] else x[i])
    assert 0 < flipped.sum() < 32


def test_normalize_denormalize_round_trip():
    loader = _loader()
    x = loader.images
    back = loader.denormalize(loader.normalize(x))
    torch.testing.assert_close(back, x.float() / 255, atol=1e-5, rtol=0)
    # The dataset mean maps to zero.
    mean_img = (torch.tensor([0.5, 0.4, 0.3]) * 255)[None, :, None, None].expand(1, 3, 2, 2)
    torch.testing.assert_close(loader.normalize(mean_img), torch.zeros(1, 3, 2, 2), atol=1e-5, rtol=0)


def test_a_changed_source_file_rebuilds_the_cache_and_prunes_the_old_one(data_env, tmp_path):
    before = load_images("cifar10", "test")
    (old_cache,) = _cache_files(tmp_path)
    files = data_env.folder_files["test"]
    same_kind = [i for i, f in enumerate(files) if f.suffix == files[0].suffix]
    a, b = same_kind[0], same_kind[-1]
    assert not torch.equal(before.images[a], before.images[b])
    files[a].write_bytes(files[b].read_bytes())          # replace image a by a copy of image b
    after = load_images("cifar10", "test")
    assert torch.equal(after.images[a], before.images[b])  # decoded again, not read from the old cache
    (new_cache,) = _cache_files(tmp_path)                   # the outdated file is gone
    assert new_cache != old_cache


def test_alternate_flip_mirrors_each_image_in_every_other_epoch():
    loader = _loader(n=40, batch_size=12, shuffle=True, augment=True, pad=0, seed=3, alternate_flip=True)
    plain = loader.normalize(loader.images)

    def mirrored():  # per image (by its label): was it flipped this epoch?
        flags = torch.zeros(40, dtype=torch.bool)
        for x, y in loader:
            for xi, i in zip(x, y.tolist()):
                assert torch.equal(xi, plain[i]) or torch.equal(xi, plain[i].flip(-1))
                flags[i] = torch.equal(xi, plain[i].flip(-1))
        return flags

    e0, e1, e2 = mirrored(), mirrored(), mirrored()
    assert 0 < e0.sum() < 40  # a seeded half, not all or none
    assert torch.equal(e1, ~e0) and torch.equal(e2, e0)  # every image both ways round in two epochs
    other = _loader(n=40, batch_size=12, shuffle=True, augment=True, pad=0, seed=4, alternate_flip=True)
    loader = other
    assert not torch.equal(mirrored(), e0)  # the coins depend on the seed
    # A resumed run (the epoch set) sees the same flips.
    replay = _loader(n=40, batch_size=12, shuffle=True, augment=True, pad=0, seed=3, alternate_flip=True)
    replay.epoch = 1
    loader = replay
    assert torch.equal(mirrored(), e1)
    with pytest.raises(ValueError, match="alternate_flip"):
        _loader(alternate_flip="yes")
