"""fit, evaluate and evaluate_segmentation on per-pixel masks; the Oxford-IIIT Pet path offline."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
import torch

import cnnlearn.data as data_mod
from cnnlearn import DataNotFoundError, TrainConfig, evaluate, fit, load_images
from cnnlearn.data import Data, DeviceLoader
from cnnlearn.models.segmentation import fcn8s_small, unet_small
from cnnlearn.segmentation import IGNORE_INDEX, confusion_matrix, mean_iou, pixel_accuracy
from cnnlearn.train import evaluate_segmentation

CLASSES = ("background", "square", "disc")


def _shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes a small network can learn: a bright square (class 1) or a dark disc (class 2) on noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(90, 160, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    for i in range(n):
        cy, cx = torch.randint(8, 24, (2,), generator=g).tolist()
        if i % 2:
            on = ((yy - cy).abs() <= 5) & ((xx - cx).abs() <= 5)
            images[i][:, on], masks[i][on] = 250, 1
        else:
            on = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
            images[i][:, on], masks[i][on] = 10, 2
    masks[:, 0, :] = IGNORE_INDEX  # an unlabelled row: left out of loss and metrics
    return images, masks


def _data(n_train: int = 96, n_test: int = 32) -> Data:
    mean, std = (0.5,) * 3, (0.25,) * 3
    train = DeviceLoader(*_shapes(n_train, 0), 16, mean, std, shuffle=True, augment=True, pad=0, drop_last=True)
    test = DeviceLoader(*_shapes(n_test, 1), 32, mean, std)
    return Data("shapes", train, test, CLASSES, mean, std, source="synthetic")


def test_fit_trains_per_pixel_classification_and_records_miou():
    torch.manual_seed(0)
    data = _data()
    model = fcn8s_small(num_classes=3, width=8)
    history = fit(model, data, TrainConfig(epochs=6, lr=0.05, precision="fp32"), progress=False)
    assert len(history.test_miou) == 6
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    for acc in history.train_acc + history.test_acc:  # pixel accuracies, never above 1
        assert 0 <= acc <= 1
    # the trivial all-background predictor: its mIoU is the background's IoU over 3 classes
    labelled = data.test.labels[data.test.labels != IGNORE_INDEX]
    trivial = confusion_matrix(torch.zeros_like(labelled), labelled, 3)
    assert history.final_test_miou > mean_iou(trivial) + 0.2
    # fit's numbers are evaluate_segmentation's, which agree with a confusion matrix by hand
    scores = evaluate_segmentation(model, data.test)
    with torch.no_grad():
        model.eval()
        x, y = next(iter(data.test))
        cm = confusion_matrix(model(x).argmax(1), y, 3, ignore_index=IGNORE_INDEX)
    assert torch.equal(scores.confusion, cm)
    assert scores.pixel_accuracy == pytest.approx(pixel_accuracy(cm))
    assert scores.mean_iou == pytest.approx(history.final_test_miou, abs=0.02)  # fit evaluated in its precision
    loss, acc = evaluate(model, data.test)
    assert acc == pytest.approx(scores.pixel_accuracy) and loss == pytest.approx(scores.loss)
    assert "mIoU" in repr(history)


def test_fit_resumes_a_segmentation_run_exactly(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, precision="fp32")
    torch.manual_seed(0)
    full = fit(unet_small(num_classes=3, width=4, depth=2), _data(48, 16), cfg, progress=False)
    torch.manual_seed(0)
    model = unet_small(num_classes=3, width=4, depth=2)
    fit(model, _data(48, 16), TrainConfig(epochs=1, lr=0.05, precision="fp32"), progress=False,
        checkpoint=tmp_path / "one.pt")  # another config: a separate file
    torch.manual_seed(0)
    model = unet_small(num_classes=3, width=4, depth=2)
    ckpt = tmp_path / "run.pt"

    def stop(epoch, history):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, _data(48, 16), cfg, progress=False, checkpoint=ckpt, callback=stop)
    resumed = fit(unet_small(num_classes=3, width=4, depth=2), _data(48, 16), cfg, progress=False, checkpoint=ckpt)
    assert resumed.test_miou == pytest.approx(full.test_miou)
    assert resumed.train_loss == pytest.approx(full.train_loss)


def test_segmentation_refuses_what_it_does_not_support():
    data = _data(32, 8)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    with pytest.raises(ValueError, match="per-pixel logits"):
        fit(classifier, data, TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="3 outputs|classes"):
        fit(fcn8s_small(num_classes=5, width=4), data, TrainConfig(epochs=1), progress=False)
    for cfg in (TrainConfig(epochs=2, mixing="mixup"), TrainConfig(epochs=1, tta_translate=2)):
        with pytest.raises(ValueError, match="segmentation"):
            fit(fcn8s_small(num_classes=3, width=4), data, cfg, progress=False)
    with pytest.raises(ValueError, match="tta_translate"):
        evaluate_segmentation(fcn8s_small(num_classes=3, width=4), data.test, tta_translate=1)
    images = DeviceLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), 2, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="masks"):
        evaluate_segmentation(fcn8s_small(num_classes=3, width=4), images)


def test_tta_flip_mirrors_the_logits_back():
    # A network that labels bright pixels 1: its logits on the mirror, mirrored back, are
    # its logits on the image, so flip TTA keeps every pixel right. (Averaged without
    # mirroring back, the two halves would tie and half the pixels would be wrong.)
    class Bright(torch.nn.Module):
        def forward(self, x):
            return torch.stack([torch.zeros_like(x[:, 0]), x[:, 0]], dim=1)  # (B, 2, H, W)

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    images[:, :, :, :3] = 255
    masks = (images[:, 0] > 0).to(torch.uint8)
    loader = DeviceLoader(images, masks, 4, (0.5,) * 3, (0.2,) * 3)
    assert evaluate_segmentation(Bright(), loader, tta_flip=True).pixel_accuracy == 1.0


def _offline(monkeypatch):
    """No network at all: any URL or socket connection fails."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unavailable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_oxford_pet_offline_gives_the_packages_clear_error(tmp_path, monkeypatch):
    _offline(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CNNLEARN_DATA", str(empty))
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as info:
        load_images("oxford_pet", "train")
    msg = str(info.value)
    assert "oxford_pet" in msg and "could not be downloaded" in msg
    assert "Looked in" in msg and str(empty) in msg and "CNNLEARN_DATA" in msg
    assert "oxford_pet" in data_mod.MASK_DATASETS


def test_oxford_pet_reads_a_local_copy_and_maps_the_trimap(tmp_path, monkeypatch):
    _offline(monkeypatch)
    from PIL import Image

    import cnnlearn.pets as pets

    root = tmp_path / "data" / "oxford-iiit-pet"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    names = ["Abyssinian_1", "beagle_2"]
    (root / "annotations" / "trainval.txt").write_text("".join(f"{n} {i + 1} 1 1\n" for i, n in enumerate(names)))
    (root / "annotations" / "test.txt").write_text("")
    for n in names:
        Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "images" / f"{n}.jpg")
        trimap = torch.full((30, 40), 2, dtype=torch.uint8)  # background
        trimap[10:20, 10:30] = 1  # the pet
        trimap[10:14, 10:30] = 3  # its border
        Image.fromarray(trimap.numpy()).save(root / "annotations" / "trimaps" / f"{n}.png")
    monkeypatch.setenv("CNNLEARN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CNNLEARN_CACHE", str(tmp_path / "cache"))
    ds = pets.load_pets("train", size=16)
    assert ds.images.shape == (2, 3, 16, 16) and ds.labels.shape == (2, 16, 16)
    assert set(ds.labels.unique().tolist()) == {0, 1, IGNORE_INDEX}
    again = pets.load_pets("train", size=16)  # from the decoded cache now
    assert torch.equal(again.labels, ds.labels)
