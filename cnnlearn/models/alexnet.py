"""AlexNet, and the small AlexNet-style network that chapter 1 trains on CIFAR-10.

Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012. The ImageNet version follows torchvision's single-GPU variant
(64/192/384/256/256 filters, from Krizhevsky's "One weird trick", arXiv:1404.5997), so
its weights can be copied from ``torchvision.models.alexnet`` and the outputs compared.

The CIFAR version keeps AlexNet's pattern (five convolutions, three max-poolings, a
dropout-regularised fully connected head) with the channel widths of the course notes'
version (48/128/192/192/128: one of the two GPUs' halves of the original 96/256/384/
384/256) and kernels sized for 32x32 images.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .registry import register_model
from .layers import check_images, check_positive
from .weights import copy_weights

__all__ = ["AlexNet", "alexnet", "alexnet_cifar", "load_torchvision_alexnet"]


class AlexNet(nn.Module):
    """AlexNet's anatomy: ``stem`` (conv1) -> ``stages`` (conv2, conv3-5) -> ``head``.

    Args:
        widths: output channels of the five convolutions.
        kernels: kernel sizes of the five convolutions.
        stem_stride: stride of the first convolution (4 on ImageNet, 1 on CIFAR).
        pool_size: the spatial size the features are pooled to before the head.
        hidden: width of the two hidden fully connected layers.
        num_classes: classes predicted by the head.
        dropout: dropout probability before each hidden fully connected layer.
        norm_layer: normalisation after each convolution (``None`` in the 2012 network).
    """

    def __init__(
        self, widths: Sequence[int], kernels: Sequence[int], stem_stride: int,
        pool_size: int, hidden: int, num_classes: int, dropout: float = 0.5,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(kernels) != 5:
            raise ValueError(f"AlexNet has five convolutions: got {len(widths)} widths and {len(kernels)} kernels")
        check_positive(num_classes=num_classes, hidden=hidden, pool_size=pool_size, **{f"widths[{i}]": w for i, w in enumerate(widths)})
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c1, c2, c3, c4, c5 = widths
        k1, k2, k3, k4, k5 = kernels
        pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2)  # overlapping pooling (Sec. 3.4)

        def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> list[nn.Module]:
            padding = k // 2 if padding is None else padding
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding, bias=norm_layer is None)]
            if norm_layer is not None:
                layers.append(norm_layer(cout))
            return layers + [nn.ReLU(inplace=True)]

        pad1 = 2 if stem_stride > 1 else k1 // 2
        self.stem = nn.Sequential(*conv(3, c1, k1, stem_stride, pad1), pool())
        self.stages = nn.Sequential()
        self.stages.add_module("stage1", nn.Sequential(*conv(c1, c2, k2), pool()))
        self.stages.add_module("stage2", nn.Sequential(
            *conv(c2, c3, k3), *conv(c3, c4, k4), *conv(c4, c5, k5), pool()))
        # Adaptive pooling fixes the head's input size whatever the image size.
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, c5, p, p) -> (B, c5*p*p)
            nn.Dropout(dropout), nn.Linear(c5 * pool_size * pool_size, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self, name="AlexNet")
        return self.head(self.forward_features(x))


@register_model
def alexnet(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """AlexNet for 224x224 ImageNet images; 61,100,840 parameters, as torchvision's."""
    return AlexNet((64, 192, 384, 256, 256), (11, 5, 3, 3, 3), stem_stride=4, pool_size=6,
                   hidden=4096, num_classes=num_classes, dropout=dropout)


@register_model
def alexnet_cifar(num_classes: int = 10, widths: Sequence[int] = (48, 128, 192, 192, 128),
                  hidden: int = 512, dropout: float = 0.5,
                  norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d) -> AlexNet:
    """AlexNet-style network for 32x32 images (chapter 1): 32 -> 15 -> 7 -> 3 spatially.

    Unlike the 2012 network it normalises after every convolution with BatchNorm
    (Ioffe & Szegedy 2015, arXiv:1502.03167), which lets it train in minutes on a CPU;
    pass ``norm_layer=None`` for the original recipe.
    """
    return AlexNet(widths, (5, 5, 3, 3, 3), stem_stride=1, pool_size=3, hidden=hidden,
                   num_classes=num_classes, dropout=dropout, norm_layer=norm_layer)


# torchvision's AlexNet keeps its layers in two flat Sequentials; ours groups them
# into stem/stages/head. The mapping names every layer that has weights.
_TORCHVISION_NAMES = {
    "features.0": "stem.0",
    "features.3": "stages.stage1.0",
    "features.6": "stages.stage2.0",
    "features.8": "stages.stage2.2",
    "features.10": "stages.stage2.4",
    "classifier.1": "head.2",
    "classifier.4": "head.5",
    "classifier.6": "head.7",
}


def load_torchvision_alexnet(ours: AlexNet, theirs: nn.Module) -> AlexNet:
    """Copy the weights of ``torchvision.models.alexnet()`` into our ``alexnet()``.

    Every tensor is copied by an explicit name mapping and its shape is checked, so a
    successful copy followed by equal outputs shows the two networks compute the same
    function.
    """
    names = {f"{tv}.{kind}": f"{our}.{kind}" for tv, our in _TORCHVISION_NAMES.items() for kind in ("weight", "bias")}
    return copy_weights(ours, theirs, names)
