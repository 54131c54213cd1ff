"""cnnlearn.check: every registered exercise accepts a reference solution and rejects a
wrong answer with its hint.

When a chapter registers a new exercise, add it to ``EXERCISES`` below: a test fails
for every exercise that has no entry here.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlearn.check import check, exercise, list_exercises

# --------------------------------------------------------------------------- reference answers


def output_size_ok(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_size_ignores_dilation(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - kernel_size) // stride + 1


def output_size_rounds_up(size, kernel_size, stride=1, padding=0, dilation=1):
    return -(-(size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride) + 1


class GAPHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))  # (B, C, H, W) -> (B, C) -> (B, classes)


class MaxHead(GAPHead):
    def __init__(self, in_channels, num_classes):
        super().__init__(in_channels, num_classes)
        self.pool = nn.AdaptiveMaxPool2d(1)


class SumHead(GAPHead):
    def forward(self, x):
        return self.fc(x.sum((2, 3)))


class FlattenHead(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_channels * 8 * 8, num_classes)  # only works for 8x8 inputs

    def forward(self, x):
        return self.fc(x.flatten(1))


class CornerHead(GAPHead):
    def forward(self, x):
        return self.fc(x[:, :, 0, 0])  # reads one position: right parameters, wrong pooling


# Exercise id -> (a correct answer, [(a wrong answer, a phrase its message must contain), ...]).
EXERCISES = {
    "ch01.output_size": (14, [(12, "padding"), (15, "rounded down"), (28, "stride"), (13, "ends with + 1"),
                              (8, "too small"), ("14", "give a number")]),
    "ch01.conv_params": (295_168, [(294_912, "bias"), (1_152, "256 filters"), (2_304, "3*3*128"),
                                   (300_000, "too large")]),
    "ch01.conv_macs": (75_497_472, [(150_994_944, "FLOPs"), (75_628_544, "biases"),
                                    (66_355_200, "32x32"), (True, "give a number")]),
    "ch01.stacked_3x3": ((73_728, 102_400), [((36_864, 102_400), "one 3x3 convolution"),
                                             ((73_728, 76_800), "one 5x5"), (73_728, "pair")]),
    "ch01.output_size_fn": (output_size_ok, [(output_size_ignores_dilation, "dilated kernel spans"),
                                             (output_size_rounds_up, "round down"),
                                             (output_size_ok(32, 3), "pass your function")]),
    "ch01.gap_head": (GAPHead, [(MaxHead, "mean over H and W"), (SumHead, "not the max or the sum"),
                                (FlattenHead, "parameters"), (CornerHead, "depends on where"),
                                (GAPHead(64, 10), "the class itself")]),
}


# --------------------------------------------------------------------------- chapter 2


class BasicBlockA(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra = stride, out_channels - in_channels

    def branch(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))


class BlockNoFinalRelu(BasicBlockA):
    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class BlockReluBeforeAdd(BasicBlockA):
    def forward(self, x):
        return torch.relu(self.branch(x)) + self.shortcut(x)


class BlockNoShortcut(BasicBlockA):
    def forward(self, x):
        return torch.relu(self.branch(x))


class BlockZerosFirst(BasicBlockA):
    def shortcut(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra, 0))


class BlockAvgSubsample(BasicBlockA):
    def shortcut(self, x):
        x = nn.functional.avg_pool2d(x, self.stride) if self.stride > 1 else x
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))


class BlockStrideOnConv2(BasicBlockA):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__(in_channels, out_channels, stride)
        self.conv1.stride, self.conv2.stride = (1, 1), (stride, stride)


class BlockProjection(BasicBlockA):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__(in_channels, out_channels, stride)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def shortcut(self, x):
        return self.proj(x)


class BlockOtherNames(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.body = BasicBlockA(in_channels, out_channels, stride)

    def forward(self, x):
        return self.body(x)


EXERCISES.update({
    "ch02.basic_block": (BasicBlockA, [(BlockNoFinalRelu, "ReLU after the addition"),
                                       (BlockReluBeforeAdd, "after the addition, not before"),
                                       (BlockNoShortcut, "shortcut is missing"),
                                       (BlockZerosFirst, "after the input's channels"),
                                       (BlockAvgSubsample, "does not average"),
                                       (BlockStrideOnConv2, "first 3x3 convolution"),
                                       (BlockProjection, "no parameters"),
                                       (BlockOtherNames, "name the layers"),
                                       (BasicBlockA(16, 16), "the class itself")]),
    "ch02.bottleneck_params": (1_117_184, [(1_114_112, "weights only"), (1_120_256, "buffers"),
                                           (18_874_368, "without a bottleneck"), (1_115_648, "two parameters"),
                                           (2_000_000, "too large")]),
    "ch02.resnet200_blocks": ((3, 24, 36, 3), [((3, 8, 36, 3), "ResNet-152 itself"), ((3, 4, 23, 3), "ResNet-101"),
                                               ((3, 57, 36, 3), "two convolutions per block"),
                                               ((3, 25, 36, 3), "3 x 67 + 2 = 203"),
                                               ((4, 24, 35, 3), "keep ResNet-152's"),
                                               ((3, 24, 36), "four ints"), ("32436", "four ints")]),
    "ch02.option_a_cost": ((0, 10_624), [((0, 10_240), "BatchNorm too"), ((0, 55_616), "option C"),
                                         ((10_624, 10_624), "adds nothing"), ((0, 8_448), "two blocks change"),
                                         ((0, 2_752), "twice as wide"), ((0, "10624"), "give a number"),
                                         (10_624, "pair")]),
})


def test_ch02_basic_block_accepts_a_list_for_the_blocks_and_the_package_block():
    assert check("ch02.resnet200_blocks", [3, 24, 36, 3], quiet=True)

    from cnnlearn.models.resnet import BasicBlock, make_shortcut

    class PackageBlock(BasicBlock):  # cnnlearn's own block with option A passes its own checker
        def __init__(self, in_channels, out_channels, stride=1):
            same = (in_channels, stride) == (out_channels, 1)
            super().__init__(in_channels, out_channels, stride,
                             None if same else make_shortcut("A", in_channels, out_channels, stride))

    assert check("ch02.basic_block", PackageBlock, quiet=True)


# --------------------------------------------------------------------------- chapter 6


class SE(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def gates(self, x):
        return self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))  # (B, C) before the sigmoid

    def forward(self, x):
        return x * torch.sigmoid(self.gates(x))[:, :, None, None]


class SENoSigmoid(SE):
    def forward(self, x):
        return x * self.gates(x)[:, :, None, None]


class SEMaxSqueeze(SE):
    def forward(self, x):
        z = self.fc2(torch.relu(self.fc1(x.amax((2, 3)))))
        return x * torch.sigmoid(z)[:, :, None, None]


class SEAdds(SE):
    def forward(self, x):
        return x + torch.sigmoid(self.gates(x))[:, :, None, None]


class SENoBias(SE):
    def __init__(self, channels, reduction):
        super().__init__(channels, reduction)
        self.fc1 = nn.Linear(channels, channels // reduction, bias=False)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=False)


class SEGatesOnly(SE):
    def forward(self, x):
        return torch.sigmoid(self.gates(x))


class CBAM(SE):  # CBAM's channel attention: the answer of exercise 6.1
    def mlp(self, z):
        return self.fc2(torch.relu(self.fc1(z)))

    def forward(self, x):
        return x * torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]


class CBAMSigmoidEach(CBAM):
    def forward(self, x):
        g = torch.sigmoid(self.mlp(x.mean((2, 3)))) + torch.sigmoid(self.mlp(x.amax((2, 3))))
        return x * g[:, :, None, None]


class CBAMSquezesAdded(CBAM):
    def forward(self, x):
        return x * torch.sigmoid(self.mlp(x.mean((2, 3)) + x.amax((2, 3))))[:, :, None, None]


class CBAMNoSigmoid(CBAM):
    def forward(self, x):
        return x * (self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]


class CBAMAdds(CBAM):
    def forward(self, x):
        return x + torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]


class CBAMTwoBottlenecks(CBAM):
    def __init__(self, channels, reduction):
        super().__init__(channels, reduction)
        self.other = SE(channels, reduction)

    def forward(self, x):
        return x * torch.sigmoid(self.mlp(x.mean((2, 3))) + self.other.gates(x))[:, :, None, None]


def _branch(b, x):
    return b.bn2(b.conv2(b.act(b.bn1(b.conv1(x)))))


class SEBlock(nn.Module):
    def __init__(self, block, reduction):
        from cnnlearn.models.layers import SqueezeExcite

        super().__init__()
        self.block = block
        self.se = SqueezeExcite.from_reduction(block.bn2.num_features, reduction)

    def forward(self, x):
        return self.block.act(self.se(_branch(self.block, x)) + self.block.shortcut(x))


class SEBlockViaAttn(nn.Module):  # also right: resnet.py's own attention slot
    def __init__(self, block, reduction):
        from cnnlearn.models.layers import SqueezeExcite

        super().__init__()
        self.se = block.attn = SqueezeExcite.from_reduction(block.bn2.num_features, reduction)
        self.block = block

    def forward(self, x):
        return self.block(x)


class SEBlockPost(SEBlock):
    def forward(self, x):
        return self.se(self.block(x))


class SEBlockIdentity(SEBlock):
    def forward(self, x):
        return self.block.act(_branch(self.block, x) + self.se(self.block.shortcut(x)))


class SEBlockUnused(SEBlock):
    def forward(self, x):
        return self.block(x)


class SEBlockNoSE(nn.Module):
    def __init__(self, block, reduction):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


class SEBlockInputChannels(SEBlock):
    def __init__(self, block, reduction):
        from cnnlearn.models.layers import SqueezeExcite

        super().__init__(block, reduction)
        self.se = SqueezeExcite.from_reduction(block.conv1.in_channels, reduction)


EXERCISES.update({
    "ch06.se_module": (CBAM, [(SE, "that is SE's unit"), (SEMaxSqueeze, "average-pooled squeeze too"),
                              (CBAMSigmoidEach, "before the sigmoid"), (CBAMSquezesAdded, "on its own"),
                              (CBAMNoSigmoid, "must pass through a sigmoid"), (CBAMAdds, "do not add"),
                              (CBAMTwoBottlenecks, "share one bottleneck"),
                              (SENoBias, "Both layers have a bias"), (SEGatesOnly, "input rescaled"),
                              (CBAM(64, 16), "the class itself")]),
    "ch06.se_overhead": (74_544, [(73_728, "weights only"), (73_776, "second layer has a bias"),
                                  (74_496, "first layer has a bias"), (36_864, "there are two"),
                                  (1_181_184, "no bottleneck"), (80_000, "too large")]),
    "ch06.add_se": (SEBlock, [(SEBlockPost, "SE-POST"), (SEBlockIdentity, "SE-Identity"),
                              (SEBlockUnused, "never applied"), (SEBlockInputChannels, "input channels"),
                              (SEBlockNoSE, "self.se")]),
})


def test_ch06_add_se_accepts_the_attention_slot():
    assert check("ch06.add_se", SEBlockViaAttn, quiet=True)


def _hard_gate_seresnet20():
    from cnnlearn import create_model

    return create_model("seresnet20", gate_layer=nn.Hardsigmoid)


def _gate_variant_answer(make_model=_hard_gate_seresnet20, accs=(61.2, 58.9, 60.4), base=(60.1, 59.5, 61.0),
                         result=None):
    from cnnlearn.stats import verdict_paired

    accs, base = list(accs), list(base)
    if result is None:
        result = verdict_paired(accs, base, names=("hard-sigmoid gates", "sigmoid gates"))
    return (make_model, accs, base, result)


def _gate_variant_wrong_answers():
    from cnnlearn import create_model
    from cnnlearn.stats import verdict

    unpaired = verdict(60.17, 60.2, 3.0)  # the means against a noise guessed otherwise: not seed by seed
    return [
        (_gate_variant_answer(make_model=lambda: create_model("seresnet20")), "Sigmoid"),
        (_gate_variant_answer(make_model=lambda: create_model("resnet20")), "no SE unit"),
        (_gate_variant_answer(make_model=lambda: create_model("seresnet20", reduction=4, gate_layer=nn.Hardsigmoid)),
         "more than its gates"),
        (_gate_variant_answer(make_model=_hard_gate_seresnet20()), "function that returns"),
        (_gate_variant_answer(accs=(0.612, 0.589, 0.604)), "fractions"),
        (_gate_variant_answer(accs=(61.2,), base=(60.1,), result=unpaired), "at least two seeds"),
        (_gate_variant_answer(accs=(61.2, 58.9), base=(60.1, 59.5, 61.0), result=unpaired), "pair up"),
        (_gate_variant_answer(accs=(60.1, 59.5, 61.0)), "standard unit's"),
        (_gate_variant_answer(result=unpaired), "seed by seed"),
        (_gate_variant_answer(result="no difference"), "Verdict"),
        ((_hard_gate_seresnet20, [61.2]), "tuple of four"),
    ]


EXERCISES["ch06.gate_variant"] = (_gate_variant_answer(), _gate_variant_wrong_answers())


# --------------------------------------------------------------------------- chapter 9


def d_loss_ok(real_logits, fake_logits, smoothing):
    # -(t log D(x) + (1 - t) log(1 - D(x))) with t = 1 - smoothing, and -log(1 - D(G(z))), via logsigmoid
    t = 1 - smoothing
    real_term = -(t * F.logsigmoid(real_logits) + (1 - t) * F.logsigmoid(-real_logits)).mean()
    return real_term - F.logsigmoid(-fake_logits).mean()


def d_loss_unstable(real_logits, fake_logits, smoothing):
    d_real, d_fake = torch.sigmoid(real_logits), torch.sigmoid(fake_logits)
    t = 1 - smoothing
    return -(t * torch.log(d_real) + (1 - t) * torch.log(1 - d_real)).mean() - torch.log(1 - d_fake).mean()


def d_loss_unsmoothed(real_logits, fake_logits, smoothing):
    return d_loss_ok(real_logits, fake_logits, 0.0)


def d_loss_fixed_smoothing(real_logits, fake_logits, smoothing):
    return d_loss_ok(real_logits, fake_logits, 0.1)


def d_loss_two_sided(real_logits, fake_logits, smoothing):
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1 - smoothing))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, smoothing)))


def d_loss_target_eps(real_logits, fake_logits, smoothing):
    return d_loss_ok(real_logits, fake_logits, 1 - smoothing)


def d_loss_scaled(real_logits, fake_logits, smoothing):
    return (1 - smoothing) * d_loss_ok(real_logits, fake_logits, 0.0)


def d_loss_swapped(real_logits, fake_logits, smoothing):
    return d_loss_ok(-real_logits, -fake_logits, smoothing)


def d_loss_halved(real_logits, fake_logits, smoothing):
    return 0.5 * d_loss_ok(real_logits, fake_logits, smoothing)


def d_loss_summed(real_logits, fake_logits, smoothing):
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1 - smoothing), reduction="sum")
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="sum"))


def d_loss_concatenated(real_logits, fake_logits, smoothing):
    logits = torch.cat([real_logits, fake_logits])
    labels = torch.cat([torch.full_like(real_logits, 1 - smoothing), torch.zeros_like(fake_logits)])
    return F.binary_cross_entropy_with_logits(logits, labels)


def d_loss_per_image(real_logits, fake_logits, smoothing):
    return -F.logsigmoid(real_logits)  # a value per image


def d_loss_logits_as_probabilities(real_logits, fake_logits, smoothing):
    return -(torch.log(real_logits).mean() + torch.log(1 - fake_logits).mean())


EXERCISES.update({
    "ch09.conv_transpose_size": (17, [(5, "ordinary convolution"), (18, "doubles the size only"),
                                      (21, "padding crops"), (19, "not padding once"), (16, "ends with + 1"),
                                      (13, "kernel's extent"), (30, "too large")]),
    "ch09.smoothed_d_loss": (d_loss_ok, [(d_loss_unstable, "underflows"), (d_loss_unsmoothed, "without smoothing"),
                                         (d_loss_fixed_smoothing, "smoothing argument"),
                                         (d_loss_two_sided, "both sides"), (d_loss_target_eps, "close to 1"),
                                         (d_loss_scaled, "does not scale"), (d_loss_swapped, "labels are swapped"),
                                         (d_loss_halved, "do not average"), (d_loss_summed, "do not sum"),
                                         (d_loss_concatenated, "its own batch"), (d_loss_per_image, "one number"),
                                         (d_loss_logits_as_probabilities, "not finite"),
                                         (d_loss_ok(torch.zeros(2), torch.zeros(2), 0.1), "function itself")]),
    "ch09.loss_curve": ("b", [("a", "cannot tell real from fake"), ("c", "D(G(z)) high"), ("d", "certainly learned"),
                              ("e", "one letter"), (2, "one letter")]),
    "ch09.equilibrium_g_loss": (0.6931, [(1.3863, "D's loss"), (0.301, "base 10"), (1, "bits"),
                                         (-0.6931, "minimax loss"), (0.5, "negative log"), (3, "put D(G(z))"),
                                         ("0.693", "give a number")]),
})


# --------------------------------------------------------------------------- chapter 7


def perm_ok(channels, groups):
    return [(i % groups) * (channels // groups) + i // groups for i in range(channels)]


def perm_inverse(channels, groups):
    return [(i % (channels // groups)) * groups + i // (channels // groups) for i in range(channels)]


def _lat(ms, repeats=20, batch_size=1, threads=1):
    from cnnlearn.measure import LatencyResult

    return LatencyResult(ms, ms * 0.9, ms * 1.1, repeats, batch_size, "cpu", threads)


EXERCISES.update({
    "ch07.shuffle_permutation": (perm_ok, [(lambda c, g: list(range(c)), "old order"),
                                           (perm_inverse, "inverse shuffle"),
                                           (lambda c, g: [0] * c, "not a permutation"),
                                           (lambda c, g: list(reversed(range(c))), "order is wrong"),
                                           (lambda c, g: None, "list of"), ("f", "function itself")]),
    "ch07.group_conv_params": (73_728, [(589_824, "ungrouped"), (9_216, "twice"), (74_112, "no biases"),
                                        (192, "one filter"), (80_000, "too large")]),
    "ch07.faster_block": (("A", _lat(1.0), _lat(2.0)), [
        (("B", _lat(1.0), _lat(2.0)), "your measurement says A"),
        (("A", _lat(2.0), _lat(1.0)), "your measurement says B"),
        (("a", _lat(1.0), _lat(2.0)), "'A' or 'B'"),
        (("A", 1.0, 2.0), "LatencyResult"),
        (("A", _lat(1.0, repeats=3), _lat(2.0)), "at least 10"),
        (("A", _lat(1.0), _lat(2.0, batch_size=8)), "same conditions"),
        ("A", "triple")]),
})


# --------------------------------------------------------------------------- chapter 5


class SeparableOK(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, act=torch.relu, padding=None,
                 bias=False, groups=None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        groups = in_channels if groups is None else groups
        self.dw = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = act

    def forward(self, x):
        return self.act(self.bn2(self.pw(self.act(self.bn1(self.dw(x))))))


class XceptionOK(nn.Module):  # the answer: depthwise, pointwise, then one BatchNorm and ReLU
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=None, bias=False, padding=None):
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, kernel_size, stride,
                            kernel_size // 2 if padding is None else padding,
                            groups=in_channels if groups is None else groups, bias=bias)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return torch.relu(self.bn(self.pw(self.dw(x))))


class XceptionStandard(XceptionOK):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, groups=1)


class XceptionBias(XceptionOK):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias=True)


class XceptionNoPadding(XceptionOK):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0)


class XceptionReLUBetween(XceptionOK):
    def forward(self, x):
        return torch.relu(self.bn(self.pw(torch.relu(self.dw(x)))))


class XceptionNoReLU(XceptionOK):
    def forward(self, x):
        return self.bn(self.pw(self.dw(x)))


class XceptionReLU6(XceptionOK):
    def forward(self, x):
        return torch.nn.functional.relu6(self.bn(self.pw(self.dw(x))))


class SeparablePointwiseFirst(nn.Module):  # the "extreme Inception" order: 1x1 first
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1):
        super().__init__()
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.dw = nn.Conv2d(out_channels, out_channels, kernel_size, stride, kernel_size // 2,
                            groups=out_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.pw(x))))))


EXERCISES.update({
    "ch05.separable_block": (XceptionOK, [(SeparableOK, "one BatchNorm"), (XceptionStandard, "groups=1"),
                                          (XceptionBias, "no biases"), (XceptionNoPadding, "padding"),
                                          (XceptionReLUBetween, "no ReLU between"), (XceptionNoReLU, "end with a ReLU"),
                                          (XceptionReLU6, "ReLU6"), (SeparablePointwiseFirst, "first convolution is the 1x1"),
                                          (XceptionOK(8, 8), "the class itself")]),
    "ch05.separable_macs": (27_496_448, [(231_211_008, "standard 3x3"), (1_806_336, "depthwise convolution alone"),
                                         (25_690_112, "pointwise convolution alone"), (54_992_896, "FLOPs"),
                                         (29_302_784, "64 input channels"), (25_567_488, "keeps the 56x56"),
                                         (8_768, "those are the weights"), (30_000_000, "too large")]),
    "ch05.make_divisible": (24, [(19.2, "not a multiple of 8"), (16, "more than 10%"), (20, "not a multiple"),
                                 (32, "thins the stem"), (40, "too large"), ("24", "give a number")]),
})


# --------------------------------------------------------------------------- chapter 4


# --------------------------------------------------------------------------- chapter 3


class EarlyConcatOK(nn.Module):
    def __init__(self, channels, width, padding=1, residual=True, bias=False, dim=1):
        super().__init__()
        self.paths = nn.ModuleList(nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=bias), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=padding, bias=bias), nn.BatchNorm2d(width), nn.ReLU())
            for _ in range(4))
        self.conv3, self.bn3 = nn.Conv2d(4 * width, channels, 1, bias=bias), nn.BatchNorm2d(channels)
        self.residual, self.dim = residual, dim

    def forward(self, x):
        out = self.bn3(self.conv3(torch.cat([path(x) for path in self.paths], self.dim)))
        return torch.relu(out + x if self.residual else out)


class EarlyConcatNoPadding(EarlyConcatOK):
    def __init__(self, channels, width):
        super().__init__(channels, width, padding=0)


class EarlyConcatNoShortcut(EarlyConcatOK):
    def __init__(self, channels, width):
        super().__init__(channels, width, residual=False)


class EarlyConcatBias(EarlyConcatOK):
    def __init__(self, channels, width):
        super().__init__(channels, width, bias=True)


class EarlyConcatSummed(EarlyConcatOK):
    def forward(self, x):
        out = sum(self.bn3(self.conv3(torch.cat([path(x)] * 4, 1))) for path in self.paths) / 4
        return torch.relu(out + x)


EXERCISES.update({
    "ch03.resnext_block_params": (141_824, [
        (140_288, "add the BatchNorms"), (141_056, "two parameters per channel"),
        (280_064, "grouped"), (150_000, "too large"), ("141824", "give a number"),
    ]),
    "ch03.dense_input_channels": (544, [
        (576, "not its own output"), (256, "the block's input"), (928, "halves"), (800, "after block 2"),
        (128, "bottleneck"), (600, "too large"),
    ]),
    "ch03.harmonic_sources": ((11, 10, 8), [
        ((11, 10, 8, 4), "would need 8 to divide 12"), ((11, 10, 8, 4, 0), "only for the powers of two"),
        (tuple(range(12)), "dense block"), ((11,), "odd layers"), ((11, 9), "every power of two"),
        ("11, 10, 8", "tuple of layer numbers"),
    ]),
    "ch03.concat_form": (EarlyConcatOK, [
        (EarlyConcatNoPadding, "padding=1"), (EarlyConcatNoShortcut, "differs"), (EarlyConcatBias, "no biases"),
        (EarlyConcatSummed, "differs"), (EarlyConcatOK(8, 2), "the class itself"),
    ]),
})



class InvolutionOK(nn.Module):
    def __init__(self, channels, kernel_size, group_channels=16, reduction=4, relu=True, groups=None):
        super().__init__()
        self.kernel_size, self.groups = kernel_size, groups or channels // group_channels
        self.reduce = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels // reduction)
        self.span = nn.Conv2d(channels // reduction, kernel_size * kernel_size * self.groups, 1)
        self.relu = relu

    def kernels(self, x):
        out = self.bn(self.reduce(x))
        return self.span(torch.relu(out) if self.relu else out)


class InvolutionNoReLU(InvolutionOK):
    def __init__(self, channels, kernel_size, group_channels=16, reduction=4):
        super().__init__(channels, kernel_size, group_channels, reduction, relu=False)


class InvolutionOneGroup(InvolutionOK):
    def __init__(self, channels, kernel_size, group_channels=16, reduction=4):
        super().__init__(channels, kernel_size, group_channels, reduction, groups=1)


class InvolutionTransposedTaps(InvolutionOK):
    def kernels(self, x):  # taps ordered (K*K, G) instead of (G, K*K)
        k = super().kernels(x)
        b, _, h, w = k.shape
        return k.view(b, self.groups, -1, h, w).transpose(1, 2).reshape(b, -1, h, w)


_SE_OK = dict(radix=1, cardinality=1, attn_channels=16, norm_layer=None, bias=True)

EXERCISES.update({
    "ch03b.split_attention_params": (116_608, [
        (115_968, "biases"), (115_328, "BatchNorms"), (632_704, "8 groups"), (337_792, "not by the cardinality"),
        (157_568, "grouped by the cardinality"), (85_600, "attention width"), (120_000, "too large"),
        ("116608", "give a number"),
    ]),
    "ch03b.se_settings": (_SE_OK, [
        ({**_SE_OK, "radix": 2}, "softmax"), ({**_SE_OK, "cardinality": 2}, "cardinal group"),
        ({**_SE_OK, "attn_channels": 32}, "16"), ({**_SE_OK, "norm_layer": nn.BatchNorm2d}, "norm_layer=None"),
        ({**_SE_OK, "bias": False}, "biases"), ((1, 1, 16, None, True), "dict"),
        (dict.fromkeys(_SE_OK, ...), "replace the ..."), ({**_SE_OK, "bias": ...}, "replace the ... of bias"),
    ]),
    "ch03b.involution_kernels": (InvolutionOK, [
        (InvolutionNoReLU, "ReLU"), (InvolutionOneGroup, "shapes"), (InvolutionTransposedTaps, "differs"),
        (InvolutionOK(8, 3), "the class itself"),
    ]),
})


class FactorizedOK(nn.Module):
    def __init__(self, in_channels, out_channels, n, kernels=None, padding=True, bias=False, eps=1e-3, mid_relu=True):
        super().__init__()
        k1, k2 = kernels or ((1, n), (n, 1))
        pad = (lambda k: (k[0] // 2, k[1] // 2)) if padding else (lambda k: 0)
        self.conv1 = nn.Conv2d(in_channels, out_channels, k1, padding=pad(k1), bias=bias)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, k2, padding=pad(k2), bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.mid_relu = mid_relu

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = torch.relu(x) if self.mid_relu else x
        return torch.relu(self.bn2(self.conv2(x)))


class FactorizedSwapped(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, kernels=((n, 1), (1, n)))


class FactorizedSquare(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, kernels=((n, n), (1, 1)))


class FactorizedNoPadding(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, padding=False)


class FactorizedBias(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, bias=True)


class FactorizedDefaultEps(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, eps=1e-5)


class FactorizedNoMidReLU(FactorizedOK):
    def __init__(self, in_channels, out_channels, n):
        super().__init__(in_channels, out_channels, n, mid_relu=False)


EXERCISES.update({
    "ch04.module_width": ((176, 176, 352, 44, 88, 88), [
        ((176, 176, 352, 44, 88, 44), "outputs 660"),
        ((176, 176, 88, 44, 352, 88), "3x3 branch comes before"),
        ((176, 176, 352, 88, 88, 88), "half as wide"),
        ((160, 160, 352, 44, 104, 88), "shares are not"),
        ((176, 176, 352, 44, 88), "six positive ints"),
        ((128, 128, 256, 32, 64, 96), "not part of the output"),
    ]),
    "ch04.reduction_saving": (154_441_728, [
        (180_633_600, "direct 5x5"), (26_191_872, "reduced pair costs"), (158_054_400, "costs MACs too"),
        (308_883_456, "FLOPs"), (196_992, "those are weights"), (6, "ratio"), (200_000_000, "too large"),
        ("154441728", "give a number"),
    ]),
    "ch04.asymmetric_conv": (FactorizedOK, [
        (FactorizedSwapped, "1 x n first"), (FactorizedSquare, "is the convolution being factorised"),
        (FactorizedNoPadding, "padding"), (FactorizedBias, "no biases"), (FactorizedDefaultEps, "eps=0.001"),
        (FactorizedNoMidReLU, "after the first BatchNorm"), (FactorizedOK(4, 4, 3), "the class itself"),
    ]),
})


# --------------------------------------------------------------------------- chapter 10

EXERCISES.update({
    "ch10.scaled_lr": (1.0, [(0.5, "paper's base"), (0.16, "upside down"), (0.6325, "square-root"),
                             (0.4, "changes the rate"), (2.0, "ratio of the batch sizes"), ("1.0", "give a number")]),
    "ch10.mixup_target": ((0, 0, 0, 0.7, 0, 0, 0, 0, 0.3, 0), [
        ((0, 0, 0, 0.3, 0, 0, 0, 0, 0.7, 0), "swapped"), ((0, 0, 0, 1, 0, 0, 0, 0, 0, 0), "one-hot label alone"),
        ((0, 0, 0, 0.5, 0, 0, 0, 0, 0.5, 0), "not half and half"),
        ((0, 0, 0.7, 0, 0, 0, 0, 0.3, 0, 0), "counted from 0"), ((0.7, 0.3), "10 of them"),
        ((0, 0, 0, 0.7, 0, 0, 0, 0, 0.2, 0), "sums to"), ("0.7", "give 10 numbers")]),
    "ch10.smoothed_target": ((0.04, 0.84, 0.04, 0.04, 0.04), [
        ((0.05, 0.8, 0.05, 0.05, 0.05), "paper's form"), ((0.04, 0.8, 0.04, 0.04, 0.04), "its share"),
        ((0, 0.8, 0, 0, 0), "not dropped"), ((0.84, 0.04, 0.04, 0.04, 0.04), "counted from 0"),
        ((0.1, 0.6, 0.1, 0.1, 0.1), "from the formula")]),
    "ch10.distill_loss": (1.3975, [(1.3975 / 16, "KL divergence alone"), (1.5248, "other way round"),
                                   (0.9555, "at T = 1"), (16 * 0.9555, "divided by T"), (0.0, "soften both"),
                                   ("1.4", "give a number")]),
})


def test_ch07_faster_block_accepts_a_tie_and_the_right_b(capsys):
    assert check("ch07.faster_block", ("B", _lat(1.0), _lat(1.02))).passed is True
    assert "a tie" in capsys.readouterr().out
    assert check("ch07.faster_block", ("B", _lat(2.0), _lat(1.0))).passed is True
    assert "as you predicted" in capsys.readouterr().out


EXERCISES.update({
    "ch08.dilated_rf": (19, [(11, "multiply"), (13, "5x5"), (9, "ignores the dilations"), (23, "overlap"),
                             (21, "starting from 1"), (40, "too large"), ("19", "give a number")]),
    "ch08.transposed_size": (23, [(21, "output_padding"), (2, "ordinary"), (25, "2*padding"), (24, "not padding once"),
                                  (26, "6 gaps"), (22, "+ 1"), (30, "too large")]),
    "ch08.no_gridding": ((1, 2, 5), [((2, 2, 4), "common factor"), ((1, 2, 3), "at least 17"),
                                     ((1, 1, 7), "rule of thumb"), ((1, 2), "three ints"), ((0, 4, 5), "three ints")]),
    "ch08.iou": (7 / 12, [(14 / 20, "recall"), (14 / 18, "precision"), (0.84, "pixel accuracy"), (58, "percent"),
                          (14 / 38, "once"), ("0.58", "a number"), (0.3, "union")]),
})

def test_every_exercise_has_a_reference_and_a_wrong_answer():
    missing = sorted(set(list_exercises()) - set(EXERCISES))
    assert not missing, f"add a reference and a wrong answer for {missing} to tests/test_check.py"
    assert not set(EXERCISES) - set(list_exercises()), "EXERCISES lists exercises that do not exist"


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_passes(exercise_id, capsys):
    reference, _ = EXERCISES[exercise_id]
    assert check(exercise_id, reference).passed is True
    assert capsys.readouterr().out.startswith("✅ Correct.")


@pytest.mark.parametrize("exercise_id, index", [(k, i) for k, (_, wrong) in sorted(EXERCISES.items())
                                                for i in range(len(wrong))])
def test_wrong_answer_fails_with_its_hint(exercise_id, index, capsys):
    wrong, hint = EXERCISES[exercise_id][1][index]
    assert check(exercise_id, wrong).passed is False
    out = capsys.readouterr().out
    assert out.startswith("❌ Not yet.")
    assert hint in out


def test_quiet_prints_nothing(capsys):
    assert check("ch01.output_size", 14, quiet=True).passed is True
    assert check("ch01.output_size", 15, quiet=True).passed is False
    assert capsys.readouterr().out == ""


def test_numbers_as_tensors_and_floats():
    assert check("ch01.output_size", torch.tensor(14), quiet=True)
    assert check("ch01.output_size", 14.0, quiet=True)


def test_a_raising_answer_is_a_failed_attempt(capsys):
    class Broken(nn.Module):
        def __init__(self, in_channels, num_classes):
            raise RuntimeError("oops")

    assert check("ch01.gap_head", Broken).passed is False
    assert "your answer raised RuntimeError: oops" in capsys.readouterr().out


def test_unknown_exercise_raises_with_close_matches():
    with pytest.raises(ValueError, match="no exercise 'ch01.conv_param'; did you mean ch01.conv_params"):
        check("ch01.conv_param", 295_168)
    with pytest.raises(ValueError, match="no exercise 'nothing'$"):
        check("nothing", 1)


def test_list_and_register():
    assert list_exercises() == sorted(list_exercises())
    some = list_exercises("ch01.conv")
    assert {"ch01.conv_macs", "ch01.conv_params"} <= set(some)
    assert all(k.startswith("ch01.conv") for k in some)
    with pytest.raises(ValueError, match="already registered"):
        exercise("ch01.output_size", "again")(lambda answer: (True, ""))


def test_verdict_is_truthy_and_displays_nothing_more(capsys):
    verdict = check("ch01.output_size", 14)
    assert verdict and verdict.passed and verdict.message.startswith("✅ Correct.")
    assert not check("ch01.output_size", 15, quiet=True)
    assert "passed=True" in repr(verdict)
    assert verdict._ipython_display_() is None    # IPython shows nothing for it: the message is printed


def _as_numpy(value):
    """The same answer as NumPy values, as a learner computing it with NumPy would give it."""
    import numpy as np

    if isinstance(value, (tuple, list)):
        return type(value)(_as_numpy(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return np.int64(value) if isinstance(value, int) else np.float64(value)


def test_numpy_answers_are_checked_like_python_numbers():
    import numpy as np

    from cnnlearn.check import reference

    numeric = [i for i in list_exercises() if isinstance(reference(i), (int, float, tuple))
               and not isinstance(reference(i), bool)]
    assert len(numeric) >= 5
    for i in numeric:
        assert check(i, _as_numpy(reference(i)), quiet=True), i
    assert check("ch02.resnet200_blocks", np.array([3, 24, 36, 3]), quiet=True)  # an array for a tuple
    assert check("ch01.conv_params", torch.tensor(295_168), quiet=True)  # a one-element tensor
    assert not check("ch01.conv_params", np.int64(294_912), quiet=True)  # and a wrong one still fails
    with pytest.raises(ValueError, match="id must be an exercise id"):
        check(101, 295_168)

