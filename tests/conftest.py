"""Shared fixtures and helpers: a tiny synthetic CIFAR-10 and Fashion-MNIST written to a
temporary folder, an environment that points cnnlearn at it, and the equivalence check
of our networks against torchvision's and timm's (``demanding_reference``,
``assert_equivalent``).

Unit tests never touch the network, and read the real datasets only in
``test_data.test_real_datasets_are_stored_class_mixed``, which runs when
``$CNNLEARN_DATA`` holds them: every other test that loads data gets its own copy here,
and ``cnnlearn.data.DATASETS`` is patched so that the expected split sizes are the tiny
ones written below instead of 50,000 / 10,000.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in tests; must come before pyplot is imported anywhere

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cnnlearn.data  # noqa: E402
from cnnlearn.models.weights import compare_outputs, randomize_batchnorm  # noqa: E402
from cnnlearn.train import recalibrate_bn  # noqa: E402

# Images per class in the synthetic copies (10 classes each).
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2
SIZES = {"train": 10 * TRAIN_PER_CLASS, "test": 10 * TEST_PER_CLASS}


@dataclass
class TinyData:
    """What the ``tiny_cifar_dir`` fixture wrote, and where."""

    root: Path  # a CNNLEARN_DATA folder: cifar10-jpeg/{train,test}/<class>/*.png|jpg and fashion-mnist/*.gz
    pickle_root: Path  # a CNNLEARN_DATA folder holding only cifar-10-batches-py
    folder_images: dict  # split -> (N, 3, 32, 32) uint8 written to the image-folder tree, in ImageFolder order
    folder_labels: dict  # split -> (N,) int64
    folder_files: dict  # split -> list of the N file paths, in the same order
    pickle_images: dict  # split -> (N, 3, 32, 32) uint8 written to the pickle batches
    pickle_labels: dict
    fashion_images: dict  # split -> (N, 1, 28, 28) uint8 written to the IDX files
    fashion_labels: dict

    def is_png(self, split: str) -> torch.Tensor:
        """Mask of the images stored losslessly (PNG); the others are JPEGs."""
        return torch.tensor([p.suffix == ".png" for p in self.folder_files[split]])


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one thread: its networks are tiny, and one thread is several
    times faster than two fighting over a shared 2-core machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def smooth_images(n: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random but smooth uint8 images (JPEG stores them almost losslessly)."""
    low = torch.rand(n, channels, 4, 4, generator=generator)
    up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up * 255).round().to(torch.uint8)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_idx(path: Path, array: torch.Tensor) -> None:
    # IDX: two zero bytes, type 0x08 (unsigned byte), ndim, one big-endian int32 per dimension.
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


@pytest.fixture
def small_datasets(monkeypatch):
    """``cnnlearn.data.DATASETS`` with split sizes of the synthetic copies."""
    patched = {name: dataclasses.replace(spec, sizes=dict(SIZES))
               for name, spec in cnnlearn.data.DATASETS.items()}
    monkeypatch.setattr(cnnlearn.data, "DATASETS", patched)
    return patched


@pytest.fixture
def tiny_cifar_dir(tmp_path, monkeypatch, small_datasets) -> TinyData:
    """Write a tiny CIFAR-10 (image folders and torchvision pickles) and Fashion-MNIST (IDX .gz)."""
    from torchvision.datasets import CIFAR10
    from torchvision.io import encode_jpeg, write_png

    g = torch.Generator().manual_seed(1234)
    classes = cnnlearn.data.CIFAR10_CLASSES
    root = tmp_path / "data"
    folder_images, folder_labels, folder_files = {}, {}, {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        imgs = smooth_images(10 * per_class, 3, 32, g)
        files = []
        for c, name in enumerate(classes):
            d = root / "cifar10-jpeg" / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                img = imgs[c * per_class + i]
                if i % 2 == 0:
                    path = d / f"{i:03d}.png"
                    write_png(img, str(path))
                else:
                    path = d / f"{i:03d}.jpg"
                    path.write_bytes(encode_jpeg(img, quality=98).numpy().tobytes())
                files.append(path)
        # ImageFolder lists classes alphabetically (CIFAR10_CLASSES already is) and files by name.
        folder_images[split] = imgs
        folder_labels[split] = torch.arange(10).repeat_interleave(per_class)
        folder_files[split] = files

    # torchvision's pickled batches: five training batches and one test batch, each a dict
    # with "data" (N, 3072) uint8 rows in C, H, W order and "labels".
    pickle_root = tmp_path / "pickled"
    batches = pickle_root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    pickle_images, pickle_labels = {}, {}
    for split in ("train", "test"):
        n = SIZES[split]
        pickle_images[split] = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        pickle_labels[split] = torch.randperm(n, generator=g) % 10
    names = [f"data_batch_{i}" for i in range(1, 6)]
    chunks = torch.arange(SIZES["train"]).chunk(5)
    for name, idx in zip(names, chunks):
        entry = {"data": pickle_images["train"][idx].reshape(len(idx), -1).numpy(),
                 "labels": pickle_labels["train"][idx].tolist()}
        (batches / name).write_bytes(pickle.dumps(entry))
    (batches / "test_batch").write_bytes(pickle.dumps(
        {"data": pickle_images["test"].reshape(SIZES["test"], -1).numpy(),
         "labels": pickle_labels["test"].tolist()}))
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": list(classes)}))
    # torchvision checks every file's MD5 against the real dataset's: give it ours instead,
    # so the integrity check still runs on the synthetic files.
    monkeypatch.setattr(CIFAR10, "train_list", [[n, _md5(batches / n)] for n in names])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(batches / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": _md5(batches / "batches.meta")})

    # Fashion-MNIST: four gzip-compressed IDX files.
    fashion = root / "fashion-mnist"
    fashion.mkdir(parents=True)
    fashion_images, fashion_labels = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = SIZES[split]
        fashion_images[split] = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        fashion_labels[split] = torch.arange(n) % 10
        _write_idx(fashion / f"{prefix}-images-idx3-ubyte.gz", fashion_images[split][:, 0])
        _write_idx(fashion / f"{prefix}-labels-idx1-ubyte.gz", fashion_labels[split].to(torch.uint8))

    return TinyData(root, pickle_root, folder_images, folder_labels, folder_files,
                    pickle_images, pickle_labels, fashion_images, fashion_labels)


@pytest.fixture
def data_env(tmp_path, monkeypatch, tiny_cifar_dir) -> TinyData:
    """CNNLEARN_DATA -> the synthetic copies, CNNLEARN_CACHE -> a fresh temporary folder;
    no Debian Fashion-MNIST and no downloads."""
    monkeypatch.setenv("CNNLEARN_DATA", str(tiny_cifar_dir.root))
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cnnlearn.data, "_DEBIAN_FASHION", tmp_path / "no-debian-fashion-mnist")

    def no_download(name, split):
        raise AssertionError(f"a unit test tried to download {name}/{split}")

    monkeypatch.setattr(cnnlearn.data, "_download", no_download)
    return tiny_cifar_dir


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test left open."""
    yield
    plt.close("all")


def demanding_reference(model: torch.nn.Module, size: int | tuple[int, ...] = 224) -> torch.nn.Module:
    """Make a freshly built reference network a demanding test case, in eval mode.

    Reference models initialise BatchNorm as the identity, or zero its weight at the end
    of a residual branch (timm's ``zero_init_last``), which silences the branch and
    everything after it, such as an SE unit; and a deep net with random weights gives
    nearly the same logits for every input. So: random BN weights and biases
    (``randomize_batchnorm``, the package's one helper for this), then BN statistics
    measured on random images (``recalibrate_bn``: the random fixed statistics that
    ``randomize_batchnorm`` sets make the activations of a deep mobile net vanish), and a
    classifier of unit gain instead of torchvision's tiny one.

    Args:
        model: the reference, e.g. ``torchvision.models.mobilenet_v2(weights=None)``.
        size: height and width of the random RGB images the statistics are measured on,
            or the shape of one input, e.g. ``(100, 1, 1)`` for a DCGAN generator's noise.
    """
    g = torch.Generator().manual_seed(0)
    shape = (3, size, size) if isinstance(size, int) else tuple(size)
    randomize_batchnorm(model)
    recalibrate_bn(model, [(torch.randn(2, *shape, generator=g), None)])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    return model.eval()


def _assert_batchnorm_is_not_trivial(model: torch.nn.Module) -> None:
    """No BatchNorm still has its initial (or zero-initialised) weights and statistics:
    an equivalence test must not depend on a test remembering to randomise them."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
            trivial = [what for what, tensor, value in (("weight", m.weight, 1.0), ("weight", m.weight, 0.0),
                                                        ("running_var", m.running_var, 1.0),
                                                        ("running_mean", m.running_mean, 0.0))
                       if torch.all(tensor == value)]
            assert not trivial, (f"BatchNorm {name!r} of the reference has its initial {trivial[0]}: "
                                 f"call randomize_batchnorm (or demanding_reference) on it first")


def assert_equivalent(
    ours: torch.nn.Module, reference: torch.nn.Module, inputs: torch.Tensor, *, atol: float = 1e-4,
    rtol: float = 1e-4, perturb: str | list[str] | None = None,
) -> None:
    """Assert that ``ours`` computes the same function as ``reference``, in a test that can fail.

    1. No BatchNorm of the reference is left at its initial values.
    2. ``cnnlearn.models.weights.compare_outputs`` (the package's one equivalence check,
       which the chapters print too): both in eval mode, the outputs for ``inputs`` agree
       within ``atol + rtol * max|reference output|``, they vary across the inputs (median
       spread at least ten times that tolerance), and a copy of ``ours`` with one
       parameter perturbed is told apart: the middle weight tensor, and each parameter
       named in ``perturb``.

    Args:
        ours: our network, with the reference's weights copied in.
        reference: the torchvision/timm (or hand-written) network.
        inputs: a batch of at least two different inputs.
        atol, rtol: absolute and relative tolerance, combined into one absolute one.
        perturb: more parameter names of ``ours`` to perturb, one copy each (e.g. an SE
            unit's, which a zero-initialised BN before it would silence).
    """
    assert len(inputs) >= 2, "the outputs can only vary across at least two inputs"
    _assert_batchnorm_is_not_trivial(reference)
    reference.eval()
    with torch.no_grad():
        scale = reference(inputs).abs().max().item()
    comparison = compare_outputs(ours, reference, inputs, atol=atol + rtol * scale, perturb=perturb)
    comparison.assert_ok()
