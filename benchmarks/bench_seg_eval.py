"""Benchmark of the segmentation evaluation core on a VOC-shaped set (issue 8, item 9).

Generates (once, outside the repository) 1,464 images of 500×375 with 21 classes: a VOC 2012 layout with
PNG ground truth and float32 CAMs of the images' labelled classes, then prints side by side:

(a) a 100-threshold one-pass sweep vs one threshold;
(b) the sweep vs IRN's way of sweeping: re-read every CAM file and re-evaluate per threshold (timed on
    ``--loop-thresholds`` thresholds, scaled to 100);
(c) images/s with 2 worker processes, and CPU seconds per image (which a loaded machine does not change);
(d) peak RSS of a sweep at 1× and 4× the images: by default a quarter of the set and the whole set;
    ``--rss-times 4`` measures the set and 4× it (the same files under new ids, via symlinks).

    python benchmarks/bench_seg_eval.py [--root DIR] [--images 1464]
"""
from __future__ import annotations

import argparse
import tempfile
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


def replicate(src: Path, dst: Path, times: int, count: int | None = None) -> None:
    """``times``× the first ``count`` images of ``src`` under new ids, as symlinks (no extra disk)."""
    if (dst / "done").is_file():
        return
    ids = (src / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:count]
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


def _cpu() -> float:
    import resource
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def timed(fn):
    """(wall seconds, CPU seconds of this process and its finished workers, result)."""
    t0, c0 = time.perf_counter(), _cpu()
    res = fn()
    return time.perf_counter() - t0, _cpu() - c0, res


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
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "wsssbench-bench")
    ap.add_argument("--images", type=int, default=1464)
    ap.add_argument("--loop-thresholds", type=int, default=1, help="thresholds the IRN-style loop is timed on")
    ap.add_argument("--rss-times", type=int, default=0, help="measure RSS at the set and this many times it "
                                                             "(default: at a quarter of the set and the set)")
    args = ap.parse_args()
    n, one = args.images, args.root / "x1"
    generate(one, n)
    if args.rss_times:
        small, big = one, args.root / f"x{args.rss_times}"
        replicate(one, big, args.rss_times)
    else:
        small, big = args.root / "quarter", one
        replicate(one, small, 1, count=n // 4)
    ds = get_dataset("voc", one)
    load = os.getloadavg()
    print(f"VOC-shaped set: {n} images of {W}x{H}, {C} classes, float32 CAMs; "
          f"load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores\n", flush=True)
    print("| measurement | wall | CPU s / image | note |\n|---|---|---|---|", flush=True)

    def row(what, wall, cpu, note=""):
        print(f"| {what} | {wall:.1f} s ({n / wall:.0f} images/s) | {1000 * cpu / n:.1f} ms | {note} |", flush=True)

    w1, c1, single = timed(lambda: evaluate_seeds(ds, "train", one / "cams", threshold=0.15))
    row("one threshold (0.15), 2 workers", w1, c1, f"mIoU {single['miou']:.4f}")
    w100, c100, sweep = timed(lambda: evaluate_seeds(ds, "train", one / "cams", sweep=True))
    row("100-threshold one-pass sweep, 2 workers", w100, c100,
        f"**{w100 / w1:.2f}x** one threshold's wall time, {c100 / c1:.2f}x its CPU")
    ts = [0.15, 0.3, 0.45][: args.loop_thresholds]
    wl, cl, loop = timed(lambda: irn_loop(one, ts))
    agree = max(abs(m - sweep["curve"][round(t * 100)]["miou"]) for m, t in zip(loop, ts))
    row(f"IRN-style loop, per threshold (timed on {len(ts)}, 1 process)", wl / len(ts), cl / len(ts),
        f"100 thresholds ≈ {100 * wl / len(ts):.0f} s wall, {100 * cl / len(ts):.0f} CPU s: the sweep is "
        f"**{100 * wl / len(ts) / w100:.0f}x** faster in wall time, {100 * cl / len(ts) / c100:.0f}x in CPU; "
        f"max mIoU difference at the looped thresholds {agree:.1e}")
    for root in (small, big):
        images = len((root / "ImageSets" / "Segmentation" / "train.txt").read_text().split())
        r = peak_rss(root)
        print(f"| peak RSS, sweep over {images} images | {r['seconds']:.0f} s | – | main process "
              f"{r['main_mib']:.0f} MiB, largest worker {r['worker_mib']:.0f} MiB |", flush=True)
    print(f"\nbest threshold {sweep['best_threshold']:.2f}, best mIoU {sweep['best_miou']:.4f} (irn); "
          f"load average at end {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
