"""cnnlearn.measure.profile_by_kind: operator kinds, shares that add up, the top operators,
and a profiler that prints nothing (neither on file descriptor 2 nor as warnings)."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn as nn

from cnnlearn.measure import OPERATOR_KINDS, operator_kind, profile_by_kind


@pytest.mark.parametrize("name, kind", [
    ("aten::mkldnn_convolution", "convolution"),
    ("aten::_slow_conv2d_forward", "convolution"),
    ("aten::addmm", "convolution"),          # a matrix product, although it contains "add"
    ("aten::native_batch_norm", "batch norm"),
    ("aten::add_", "element-wise"),
    ("aten::hardswish", "element-wise"),
    ("aten::cat", "data movement"),
    ("aten::transpose", "data movement"),
    ("aten::max_pool2d_with_indices", "pooling"),
    ("aten::mean", "pooling"),
    ("aten::empty", "other"),
])
def test_operator_kind(name, kind):
    assert operator_kind(name) == kind


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_profile_by_kind_shares_and_top_operators():
    model = _small_net().train()
    threads = torch.get_num_threads()
    prof = profile_by_kind(model, (3, 16, 16), passes=3)
    assert list(prof.shares) == [*OPERATOR_KINDS, "other"]
    assert sum(prof.shares.values()) == pytest.approx(1.0)
    assert prof.shares["convolution"] > 0 and prof.shares["batch norm"] > 0
    assert prof.passes == 3 and prof.threads == 1
    # Self times add up to the total without double counting, largest first.
    assert sum(o.self_ms for o in prof.operators) == pytest.approx(prof.total_ms)
    times = [o.self_ms for o in prof.operators]
    assert times == sorted(times, reverse=True)
    assert prof.top(2) == prof.operators[:2]
    by_name = {o.name: o for o in prof.operators}
    assert by_name["aten::conv2d"].calls == 1 and by_name["aten::addmm"].calls == 1  # per pass
    assert by_name["aten::addmm"].kind == "convolution"
    for kind, share in prof.shares.items():
        assert share == pytest.approx(sum(o.share for o in prof.operators if o.kind == kind))
    assert prof.table(3).splitlines()[0].split() == ["operator", "kind", "ms/pass", "share", "calls"]
    assert len(prof.table(3).splitlines()) == 4
    assert str(prof).startswith("convolution ")
    assert model.training and torch.get_num_threads() == threads  # mode and threads restored


def test_profile_by_kind_with_other_kinds():
    prof = profile_by_kind(_small_net(), (3, 8, 8), passes=1, kinds={"matrix product": ("addmm",)})
    assert list(prof.shares) == ["matrix product", "other"]
    addmm = next(o for o in prof.operators if o.name == "aten::addmm")
    assert prof.shares["matrix product"] == pytest.approx(addmm.share)


class _Noisy(nn.Module):
    """Prints to file descriptor 2 and warns on every pass, as the profiler's backend does."""

    def forward(self, x):
        os.write(2, b"NOISE on fd 2\n")
        warnings.warn("NOISE as a warning", UserWarning)
        return x * 2


def test_profile_by_kind_is_silent_but_the_warm_up_is_not(capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile_by_kind(_Noisy(), (4,), passes=2, warmup=0)
    assert capfd.readouterr().err == "" and caught == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile_by_kind(_Noisy(), (4,), passes=2, warmup=1)   # the model's own messages, once
    assert capfd.readouterr().err.count("NOISE on fd 2") == 1
    assert [str(w.message) for w in caught] == ["NOISE as a warning"]


def test_profile_by_kind_hides_the_profilers_start_warning(monkeypatch, capfd):
    # torch 2.11 warns on every profiler start; later versions do not, so play it here.
    original = torch.profiler.profile.prepare_trace

    def prepare_trace(self):
        warnings.warn("Warning: Profiler clears events at the end of each cycle.", UserWarning)
        original(self)

    monkeypatch.setattr(torch.profiler.profile, "prepare_trace", prepare_trace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile_by_kind(_small_net(), (3, 8, 8), passes=1)
    assert caught == [] and capfd.readouterr().err == ""


def test_profile_by_kind_rejects_bad_arguments():
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        profile_by_kind(_small_net(), (3, 8, 8), passes=0)
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None"):
        profile_by_kind(_small_net(), (3, 8, 8), threads=0)
    with pytest.raises(ValueError, match="measures CPU or CUDA time, but the model is on meta"):
        profile_by_kind(nn.Linear(2, 2, device="meta"), (2,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_by_kind_on_cuda_counts_kernel_time_once():
    # On a GPU the shares are of kernel time; kernel rows are not added to their operators'.
    prof = profile_by_kind(_small_net().cuda(), (3, 16, 16), passes=3)
    assert abs(sum(prof.shares.values()) - 1) < 1e-6
    assert prof.shares["convolution"] > 0
    assert all(not op.name.startswith(("void ", "sm", "ampere", "cudnn")) for op in prof.operators)
