"""Forward latency of our networks against their torchvision twins, side by side.

For every pair both models are built and timed in interleaved rounds
(``cnnlearn.measure.compare_latency``: each round times both, starting with the other
model than the round before, so neither always runs first on a warm cache; warm-up,
median of repeats, fixed threads); the ratio of the medians is printed. A ratio near 1.0 means building a
network "from scratch" for teaching costs nothing at run time.
"""
from __future__ import annotations

import torch
import torchvision

import cnnlearn
from cnnlearn.measure import compare_latency

# (our name, torchvision constructor, input size); pairs whose model is not registered are skipped.
PAIRS = [
    ("alexnet", torchvision.models.alexnet, (3, 224, 224)),
    ("resnet18", torchvision.models.resnet18, (3, 224, 224)),
    ("resnet50", torchvision.models.resnet50, (3, 224, 224)),
    ("mobilenet_v2", torchvision.models.mobilenet_v2, (3, 224, 224)),
    ("mobilenet_v3_large", torchvision.models.mobilenet_v3_large, (3, 224, 224)),
    ("efficientnet_b0", torchvision.models.efficientnet_b0, (3, 224, 224)),
    ("shufflenet_v2_x1_0", torchvision.models.shufflenet_v2_x1_0, (3, 224, 224)),
]


def main(rounds: int = 6, repeats: int = 10, threads: int = 2) -> dict:
    results = {}
    available = set(cnnlearn.list_models())
    for name, tv_factory, size in PAIRS:
        if name not in available:
            continue
        ours, theirs = cnnlearn.create_model(name).eval(), tv_factory(weights=None).eval()
        r = compare_latency({"ours": (ours, size), "torchvision": (theirs, size)},
                            rounds=rounds, repeats=repeats, warmup=2, threads=threads)
        ratio = r["ours"].median_ms / r["torchvision"].median_ms
        results[name] = ratio
        print(f"{name:<20} ours {r['ours'].median_ms:8.2f} ms  torchvision {r['torchvision'].median_ms:8.2f} ms  "
              f"latency_ratio_vs_torchvision: {ratio:.2f}")
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
