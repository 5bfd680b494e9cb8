"""Classifier training throughput: bare torchvision ResNet-50 step vs the harness's classifier stage.

In one process: (1) a bare loop — torchvision ResNet-50, random tensors already on the device,
multilabel soft-margin loss, SGD; (2) the harness's classifier training (``stages.train_classifier.train``:
real images of the synthetic ``voc-shape`` preset through its DataLoader) on the same backbone and size;
both in images/s, and their ratio (goal ≥ 0.8: the data pipeline must not starve the GPU). Then the
wall time of the whole ``run cam`` on ``voc-shape`` (``--full-run``).

GPU (the real figures):  python benchmarks/bench_train_throughput.py --device cuda --full-run
CPU smoke (tiny setting): python benchmarks/bench_train_throughput.py --preset tiny --size 64 --steps 3 --batch 4
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F


# The papers' settings for VOC-sized images (see CamConfig's comments).
VOC_LIKE = {"backbone": "resnet50", "cls_output_stride": "16", "cls_rescale": "0.64,1.28",
            "cam_scales": "1.0,0.5,1.5,2.0"}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_resnet50(device: str, size: int, batch: int, steps: int, classes: int) -> float:
    """Images/s of the plain torchvision training step on tensors already on the device."""
    import torchvision
    model = torchvision.models.resnet50(num_classes=classes).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, classes, device=device) > 0.8).float()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = F.multilabel_soft_margin_loss(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(min(3, steps)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def harness_classifier(device: str, preset: str, size: int, batch: int, steps: int, workers: int) -> tuple[float, int]:
    """Images/s of the harness's classifier training on real images (DataLoader included)."""
    from wsssbench.data import get_dataset
    from wsssbench.methods_api import METHODS, Context, make_config
    from wsssbench.stages import train_classifier
    ds = get_dataset("synthetic", preset=preset)
    method = METHODS.get("cam")
    cfg = make_config(method, {**VOC_LIKE, "cls_size": str(size), "cls_batch_size": str(batch),
                               "cls_workers": str(workers), "cls_epochs": "1"})
    ctx = Context(cfg, ds, device, 0)
    model = method.build_classifier(ctx)
    warm = ds.samples("train_aug")[: batch * min(3, steps)]
    samples = ds.samples("train_aug")[: batch * steps]
    kwargs = dict(epochs=1, batch_size=batch, lr=0.01, weight_decay=1e-4, size=size, rescale=cfg.cls_rescale,
                  workers=workers)
    train_classifier.train(ctx, model, method.train_step, warm, **kwargs)
    sync(device)
    start = time.perf_counter()
    train_classifier.train(ctx, model, method.train_step, samples, **kwargs)
    sync(device)
    return len(samples) // batch * batch / (time.perf_counter() - start), ctx.num_fg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="voc-shape", help="synthetic preset (voc-shape; tiny for a CPU smoke test)")
    ap.add_argument("--size", type=int, default=448, help="training image side")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--full-run", action="store_true", help="also time `wsssbench run cam` on the preset")
    args = ap.parse_args()
    harness_ips, classes = harness_classifier(args.device, args.preset, args.size, args.batch, args.steps, args.workers)
    bare_ips = bare_resnet50(args.device, args.size, args.batch, args.steps, classes)
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "preset": args.preset,
           "size": args.size, "batch": args.batch, "steps": args.steps, "workers": args.workers,
           "bare_resnet50_img_s": bare_ips, "harness_img_s": harness_ips, "ratio": harness_ips / bare_ips}
    if args.full_run:
        from wsssbench.harness import run_method
        start = time.perf_counter()
        run_method("cam", dataset_options={"preset": args.preset}, device=args.device,
                   overrides={**VOC_LIKE, "cls_size": str(args.size), "seg_size": "321"},
                   out=Path("runs-bench"))
        out["run_cam_wall_s"] = time.perf_counter() - start
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
