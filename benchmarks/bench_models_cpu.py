"""CPU timings of the models the default (synthetic ``tiny``) run uses: best of 3, one thread.

    python benchmarks/bench_models_cpu.py
"""
import os
import time

import torch

from wsssbench.models import AffinityNet, CAMClassifier, DeepLabV2, affinity_matrix, build_backbone


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(16, 3, 96, 96)
    clf = CAMClassifier(build_backbone("small"), 20)
    seg = DeepLabV2(build_backbone("small", output_stride=8), 21)
    aff = AffinityNet(build_backbone("small"), freeze_backbone=False)
    labels = torch.randint(0, 3, (16, 96, 96))
    rows = [
        ("CAMClassifier(small) fwd+bwd, 16×96²", lambda: clf(x).sum().backward()),
        ("DeepLabV2(small, OS 8, MSC) fwd+bwd, 16×96²",
         lambda: DeepLabV2.loss(seg.outputs(x), labels).backward()),
        ("AffinityNet(small) fwd+loss(r=10)+bwd, 16×96²",
         lambda: AffinityNet.loss(aff(x), labels, radius=10).backward()),
        ("affinity_matrix 24×24, r=5", lambda: affinity_matrix(torch.rand(24, 24), 5)),
    ]
    print(f"| model | ms (best of 3, 1 thread; load average {os.getloadavg()[0]:.1f}) |")
    print("|---|---|")
    for name, fn in rows:
        print(f"| {name} | {best_of(fn):.0f} |")


if __name__ == "__main__":
    main()
