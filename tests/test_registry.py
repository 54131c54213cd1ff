"""The model registry, and AlexNet (the first registered family) against torchvision."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlearn import count_macs, count_params, create_model, list_models, register_model
from cnnlearn.models.alexnet import AlexNet, alexnet, alexnet_cifar, load_torchvision_alexnet
from cnnlearn.models.weights import randomize_batchnorm

from conftest import assert_equivalent, demanding_reference

# --------------------------------------------------------------------------- the registry


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'alexnet_cifr'\. Did you mean: alexnet_cifar"):
        create_model("alexnet_cifr")
    with pytest.raises(ValueError, match=r"unknown model 'zzzz'\. cnnlearn.list_models\(\) lists all"):
        create_model("zzzz")
    with pytest.raises(ValueError, match="must be a string"):
        create_model(alexnet)


def test_list_models_sorted_and_filtered():
    names = list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    assert {"alexnet", "alexnet_cifar"} <= set(names)
    some = list_models("alexnet")
    assert "alexnet" in some and "alexnet_cifar" in some and all("alexnet" in n for n in some)
    assert some == sorted(some)
    assert list_models("no-such-model-anywhere") == []


def test_names_are_registered_once():
    def alexnet(num_classes: int = 1000) -> nn.Module:  # same name as the real one
        return nn.Linear(1, num_classes)

    with pytest.raises(ValueError, match="'alexnet' is already registered"):
        register_model(alexnet)
    assert isinstance(create_model("alexnet"), AlexNet)  # the original is untouched


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_with_defaults(name):
    # Forward passes of the ImageNet-sized networks are in each family's own test file.
    model = create_model(name)
    assert isinstance(model, nn.Module)
    assert count_params(model) > 0


# --------------------------------------------------------------------------- AlexNet


@pytest.mark.parametrize("name, size, num_classes, features", [
    ("alexnet_cifar", 32, 10, (128, 3, 3)),
    ("alexnet", 64, 1000, (256, 6, 6)),  # adaptive pooling lets the ImageNet net take small images
])
def test_alexnet_forward_backward(name, size, num_classes, features):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(2, 3, size, size)
    assert model.forward_features(x).shape == (2, *features)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without a gradient: {no_grad}"


def test_alexnet_num_classes_and_bad_arguments():
    assert create_model("alexnet_cifar", num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert create_model("alexnet_cifar", norm_layer=None).stem[1].__class__ is nn.ReLU  # the 2012 recipe
    with pytest.raises(ValueError, match="five convolutions"):
        alexnet_cifar(widths=(48, 128, 192, 128))
    with pytest.raises(ValueError, match="num_classes must be a positive number"):
        alexnet_cifar(num_classes=0)
    with pytest.raises(ValueError, match=r"widths\[2\] must be a positive number"):
        alexnet_cifar(widths=(48, 128, 0, 192, 128))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        alexnet(dropout=1.0)
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, H, W\)"):
        alexnet_cifar()(torch.randn(1, 1, 32, 32))


def test_alexnet_cifar_counts():
    # 5x5 and 3x3 convolutions with BatchNorm (no conv biases), 128*3*3 -> 512 -> 512 -> 10.
    convs = (5 * 5 * 3 * 48 + 5 * 5 * 48 * 128 + 3 * 3 * 128 * 192 + 3 * 3 * 192 * 192 + 3 * 3 * 192 * 128)
    bn = 2 * (48 + 128 + 192 + 192 + 128)
    fc = (128 * 9 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert count_params(alexnet_cifar()) == convs + bn + fc


# torchvision's AlexNet keeps its layers in two flat Sequentials, ours in stem/stages/head
# (see cnnlearn/models/alexnet.py): torchvision name -> our name, for every layer with weights.
TORCHVISION_TO_OURS = {
    "features.0": "stem.0",  # conv1 11x11/4, 64
    "features.3": "stages.stage1.0",  # conv2 5x5, 192 (after features.1 ReLU, features.2 pool)
    "features.6": "stages.stage2.0",  # conv3 3x3, 384
    "features.8": "stages.stage2.2",  # conv4 3x3, 256
    "features.10": "stages.stage2.4",  # conv5 3x3, 256
    "classifier.1": "head.2",  # fc6 (after Dropout); our head.0 is the Flatten
    "classifier.4": "head.5",  # fc7
    "classifier.6": "head.7",  # fc8
}


def copy_torchvision_alexnet(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy every tensor by the explicit mapping, checking that both sides are covered."""
    src, dst = theirs.state_dict(), ours.state_dict()
    mapped = {f"{our}.{kind}": src[f"{tv}.{kind}"]
              for tv, our in TORCHVISION_TO_OURS.items() for kind in ("weight", "bias")}
    assert set(mapped) == set(dst)
    assert {f"{tv}.{kind}" for tv in TORCHVISION_TO_OURS for kind in ("weight", "bias")} == set(src)
    for k, v in mapped.items():
        assert v.shape == dst[k].shape, k
    ours.load_state_dict(mapped)


@pytest.fixture(scope="module")
def alexnet_pair():
    from torchvision.models import alexnet as tv_alexnet

    torch.manual_seed(0)
    return alexnet().eval(), tv_alexnet(weights=None).eval()


def test_alexnet_matches_torchvision_counts(alexnet_pair):
    ours, theirs = alexnet_pair
    assert count_params(ours) == count_params(theirs) == 61_100_840
    assert count_macs(ours) == count_macs(theirs) == 714_188_480


def test_alexnet_matches_torchvision_outputs(alexnet_pair):
    ours, theirs = alexnet_pair
    demanding_reference(theirs)  # classifiers of unit gain: torchvision's tiny ones give nearly constant logits
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    copy_torchvision_alexnet(ours, theirs)
    assert_equivalent(ours, theirs, x)
    # The package's own loader does the same.
    assert_equivalent(load_torchvision_alexnet(alexnet(), theirs), theirs, x)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_torchvision_alexnet(alexnet_cifar(), theirs)


def test_randomize_batchnorm_is_seeded_and_makes_bn_non_trivial():
    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.BatchNorm2d(8, affine=False))
    a, b = randomize_batchnorm(net(), seed=3), randomize_batchnorm(net(), seed=3)
    bn = a[1]
    assert torch.equal(bn.running_var, b[1].running_var) and torch.equal(bn.bias, b[1].bias)
    assert 0.5 <= bn.weight.min() and bn.weight.max() < 1.5 and 0.5 <= bn.running_var.min()
    assert not torch.equal(bn.running_mean, torch.zeros(8))           # no longer the identity in eval mode
    assert torch.equal(a[3].running_var, torch.ones(8))              # a BN without affine parameters is left alone
    fresh = net()                                                      # building it draws from the global RNG
    state = torch.get_rng_state()
    randomize_batchnorm(fresh)
    assert torch.equal(torch.get_rng_state(), state)                 # the global random state is untouched
    with pytest.raises(ValueError, match="spread must be >= 0"):
        randomize_batchnorm(net(), spread=-1)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        randomize_batchnorm(torch.zeros(3))
