"""The benchmark scripts compile, and the training benchmark runs end to end on a tiny setting
(``make bench`` and ``make speedrun`` are not run by CI: they take minutes and need a quiet machine)."""
from __future__ import annotations

import py_compile
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmark_scripts_compile(path):
    py_compile.compile(str(path), doraise=True)


def test_bench_train_prints_the_speedup_line(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("bench_train", None)
    import bench_train

    monkeypatch.setattr(bench_train, "MODELS", ["resnet20", "speedrun_cifar_small"])
    results = bench_train.main(rounds=1, steps=1, batch_size=16)
    out = capsys.readouterr().out
    assert set(results) == {"resnet20", "speedrun_cifar_small"} and all(r > 0 for r in results.values())
    assert out.count("train_speedup_cpu_fast_vs_fp32: ") == 2
