"""Benchmark of the segmentation evaluation core on a VOC-shaped set (issue 8, item 9).

Generates (once, outside the repository) 1,464 images of 500×375 with 21 classes: a VOC 2012 layout with
PNG ground truth and float32 CAMs of the images' labelled classes, then prints side by side:

(a) a 100-threshold one-pass sweep vs one threshold;
(b) the sweep vs IRN's way of sweeping: re-read every CAM file and re-evaluate per threshold (timed on a
    few thresholds, scaled to 100);
(c) images/s with 1 and 2 worker processes;
(d) peak RSS of a sweep at 1× and 4× the images (4× = the same files under new ids, via symlinks).

    python benchmarks/bench_seg_eval.py [--root /tmp/wsssbench-bench] [--images 1464]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wsssbench.cams import load_cams, save_cams
from wsssbench.data import get_dataset
from wsssbench.metrics.segmentation import ConfusionMatrix, evaluate_seeds

H, W, C = 375, 500, 21


def generate(root: Path, n: int, seed: int = 0) -> None:
    if (root / "done").is_file():
        return
    rng = np.random.default_rng(seed)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    ids = [f"2007_{i:06d}" for i in range(n)]
    for id_ in ids:
        gt = np.zeros((H, W), np.uint8)
        for c in rng.choice(np.arange(1, C), size=rng.integers(1, 4), replace=False):
            y, x = rng.integers(0, H - 60), rng.integers(0, W - 60)
            gt[y:y + rng.integers(50, 250), x:x + rng.integers(50, 300)] = c
        gt[rng.random((H, W)) < 0.03] = 255
        Image.fromarray(gt).save(root / "SegmentationClass" / f"{id_}.png")
        labels = sorted(set(np.unique(gt).tolist()) - {0, 255})
        cams = np.stack([np.where(gt == c, 0.3, 0.0) + 0.7 * rng.random((H, W)) for c in labels]).astype(np.float32)
        save_cams(root / "cams" / f"{id_}.npz", [c - 1 for c in labels], cams / cams.max(axis=(1, 2), keepdims=True))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "done").write_text("ok\n")


def replicate(src: Path, dst: Path, times: int) -> None:
    """``times``× the images of ``src`` under new ids, as symlinks (no extra disk)."""
    if (dst / "done").is_file():
        return
    ids = (src / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for sub in ("ImageSets/Segmentation", "SegmentationClass", "cams"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    new = []
    for r in range(times):
        for id_ in ids:
            nid = f"{2007 + r}_{id_[5:]}"
            new.append(nid)
            for sub, ext in (("SegmentationClass", ".png"), ("cams", ".npz")):
                link = dst / sub / f"{nid}{ext}"
                if not link.exists():
                    link.symlink_to(src / sub / f"{id_}{ext}")
    (dst / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(new) + "\n")
    (dst / "done").write_text("ok\n")


def irn_loop(root: Path, thresholds) -> list[float]:
    """IRN's eval_cam, once per threshold: read every CAM, pad with t, argmax, accumulate."""
    ds = get_dataset("voc", root)
    samples = ds.samples("train")
    out = []
    for t in thresholds:
        cm = ConfusionMatrix(C)
        for s in samples:
            cf = load_cams(root / "cams" / f"{s.id}.npz")
            padded = np.pad(cf.cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
            pred = np.pad(cf.keys + 1, (1, 0), mode="constant")[np.argmax(padded, axis=0)]
            cm.update(pred, ds.load_mask(s))
        out.append(cm.compute("irn")[0])
    return out


def timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def peak_rss(root: Path) -> dict:
    code = ("import resource, json; from wsssbench.data import get_dataset; "
            "from wsssbench.metrics.segmentation import evaluate_seeds; "
            f"evaluate_seeds(get_dataset('voc', {str(root)!r}), 'train', {str(root / 'cams')!r}, sweep=True); "
            "print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    main_kb, worker_kb = json.loads(out.strip().splitlines()[-1])
    return {"main_mib": main_kb / 1024, "worker_mib": worker_kb / 1024, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/wsssbench-bench"))
    ap.add_argument("--images", type=int, default=1464)
    ap.add_argument("--loop-thresholds", type=int, default=3, help="thresholds the IRN-style loop is timed on")
    args = ap.parse_args()
    one, four = args.root / "x1", args.root / "x4"
    generate(one, args.images)
    replicate(one, four, 4)
    ds = get_dataset("voc", one)
    load = os.getloadavg()

    t_single, single = timed(lambda: evaluate_seeds(ds, "train", one / "cams", threshold=0.15))
    t_sweep, sweep = timed(lambda: evaluate_seeds(ds, "train", one / "cams", sweep=True))
    t_sweep1, _ = timed(lambda: evaluate_seeds(ds, "train", one / "cams", sweep=True, workers=1))
    ts = [0.15, 0.3, 0.45][: args.loop_thresholds]
    t_loop, loop = timed(lambda: irn_loop(one, ts))
    t_loop100 = t_loop / len(ts) * 100
    agree = max(abs(m - sweep["curve"][round(t * 100)]["miou"]) for m, t in zip(loop, ts))
    rss1, rss4 = peak_rss(one), peak_rss(four)

    n = args.images
    print(f"VOC-shaped set: {n} images of {W}x{H}, {C} classes, float32 CAMs; "
          f"load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores\n")
    print("| measurement | value |\n|---|---|")
    print(f"| one threshold (0.15), 2 workers | {t_single:.1f} s ({n / t_single:.0f} images/s), mIoU {single['miou']:.4f} |")
    print(f"| 100-threshold sweep, 2 workers | {t_sweep:.1f} s ({n / t_sweep:.0f} images/s); "
          f"**{t_sweep / t_single:.2f}x** one threshold |")
    print(f"| 100-threshold sweep, 1 worker | {t_sweep1:.1f} s ({n / t_sweep1:.0f} images/s); "
          f"2 workers are {t_sweep1 / t_sweep:.2f}x faster |")
    print(f"| IRN-style loop (re-read + re-evaluate per threshold) | {t_loop / len(ts):.1f} s per threshold "
          f"(timed on {len(ts)}); 100 thresholds ≈ {t_loop100:.0f} s |")
    print(f"| sweep vs IRN-style loop | **{t_loop100 / t_sweep:.0f}x** faster; "
          f"max |mIoU difference| at the looped thresholds {agree:.1e} |")
    print(f"| peak RSS, sweep over {n} images (1x) | main {rss1['main_mib']:.0f} MiB, "
          f"largest worker {rss1['worker_mib']:.0f} MiB ({rss1['seconds']:.0f} s) |")
    print(f"| peak RSS, sweep over {4 * n} images (4x) | main {rss4['main_mib']:.0f} MiB, "
          f"largest worker {rss4['worker_mib']:.0f} MiB ({rss4['seconds']:.0f} s) |")
    print(f"\nbest threshold {sweep['best_threshold']:.2f}, best mIoU {sweep['best_miou']:.4f} (irn)")


if __name__ == "__main__":
    main()
