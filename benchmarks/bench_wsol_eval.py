"""Benchmark of the localization evaluator on CUB-test-shaped (or ILSVRC-val-shaped) score maps.

Generates one synthetic 28×28 CAM per image of a wsolevaluation metadata split (CUB test: 5,794 images,
real image sizes and boxes; ILSVRC val: several boxes per image) into a scratch folder, then times
MaxBoxAcc and MaxBoxAccV2 over the 1,000-θ grid and the 100-θ grid with the one-pass evaluator
(alternated, ``--repeats`` times each), and the straightforward per-θ loop (the reference's way, written
here independently) on the same maps; the hit counts must be identical.

    python benchmarks/bench_wsol_eval.py --metadata wsolevaluation/metadata/CUB/test --work DIR \
        [--naive-images N] [--repeats R] [--reference wsolevaluation/]

``--reference`` runs clovaai/wsolevaluation's own ``BoxEvaluator`` (imported from that checkout, never
copied) on the same maps for the side-by-side numbers. The split and dataset names are the metadata
folder's (``.../ILSVRC/val``: split ``val`` of ``ILSVRC``).
"""
from __future__ import annotations

import argparse
import tempfile
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from wsssbench.data import get_dataset
from wsssbench.metrics.localization import (BOX_PROTOCOLS, BoxAccumulator, box_iou, evaluate_wsol, resize_box,
                                            summarize, wsolevaluation_frame)

CAM_SIZE = 28        # ResNet50 CAM at 224 input in wsolevaluation (stride 8)


def generate(dataset, split: str, cams: Path, seed: int = 0) -> None:
    """A Gaussian blob on the (jittered) box, sometimes a distractor blob, plus smooth noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CAM_SIZE, 0:CAM_SIZE] + 0.5
    for s in dataset.samples(split):
        path = cams / f"{s.id}.npy"
        if path.exists():
            continue
        h, w = s.size
        x0, y0, x1, y1 = s.boxes[0]
        cx, cy = (x0 + x1) / 2 / w * CAM_SIZE, (y0 + y1) / 2 / h * CAM_SIZE
        sx, sy = (x1 - x0) / w * CAM_SIZE / 4, (y1 - y0) / h * CAM_SIZE / 4
        cam = np.exp(-(((xx - cx - rng.normal(0, sx)) / (sx * rng.uniform(0.5, 1.5))) ** 2
                       + ((yy - cy - rng.normal(0, sy)) / (sy * rng.uniform(0.5, 1.5))) ** 2) / 2)
        if rng.random() < 0.5:
            dx, dy = rng.uniform(0, CAM_SIZE, 2)
            cam += rng.uniform(0.2, 0.8) * np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * rng.uniform(1, 4) ** 2))
        cam += 0.15 * cv2.GaussianBlur(rng.random((CAM_SIZE, CAM_SIZE)), (5, 5), 1.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, cam.astype(np.float32))


def framed(dataset, split: str, cams: Path, limit: int | None = None):
    for s in dataset.samples(split)[:limit]:
        scoremap = wsolevaluation_frame(np.load(cams / f"{s.id}.npy"), (224, 224))
        gt = np.array([resize_box(b, (s.size[1], s.size[0]), (224, 224)) for b in s.boxes])
        yield s.id, scoremap, gt


def fast_hits(items, thetas):
    proto = BOX_PROTOCOLS.get("wsolevaluation")
    acc = BoxAccumulator(len(thetas))
    for _, scoremap, gt in items:
        acc.update(proto.boxes(scoremap, thetas), gt)
    return acc


def naive_hits(items, thetas, deltas=(0.3, 0.5, 0.7)):
    """The reference's way: threshold, findContours and score at every θ separately.

    Returns hit counts per (θ, δ) over all contours (V2) and per θ for the largest contour at δ = 0.5.
    """
    v2 = np.zeros((len(thetas), len(deltas)), dtype=np.int64)
    v1 = np.zeros(len(thetas), dtype=np.int64)
    for _, scoremap, gt in items:
        u8 = (scoremap * 255).astype(np.uint8)
        for k, theta in enumerate(thetas):
            _, binary = cv2.threshold(u8, int(theta * np.max(u8)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            boxes, largest = [[0, 0, 0, 0]], [0, 0, 0, 0]
            if contours:
                boxes = []
                for c in contours:
                    x, y, w, h = cv2.boundingRect(c)
                    boxes.append([x, y, min(x + w, 223), min(y + h, 223)])
                largest = boxes[max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]))]
            best = box_iou(np.array(boxes), gt).max()
            v2[k] += [best >= d for d in deltas]
            v1[k] += box_iou(np.array([largest]), gt).max() >= 0.5
    return v1, v2


def timed(fn, *args):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def reference(repo: Path, dataset, split: str, cams: Path, metadata: Path, limit: int | None = None):
    """clovaai/wsolevaluation's BoxEvaluator on the same maps, framed by its own inference.py code.

    Returns its hit counts per (θ, δ ∈ 30/50/70) for the largest contour (MaxBoxAcc) and all contours (V2).
    """
    import types
    sys.path.insert(0, str(repo))
    np.float = float                                            # removed in NumPy ≥ 1.24; the reference uses it
    sys.modules.setdefault("munch", types.SimpleNamespace(Munch=type("Munch", (dict,), {   # attribute dict
        "__getattr__": dict.__getitem__, "__setattr__": dict.__setitem__})))
    from evaluation import BoxEvaluator, configure_metadata    # noqa: E402
    from inference import normalize_scoremap                   # noqa: E402
    out = []
    samples = dataset.samples(split)[:limit]
    for multi in (False, True):
        ev = BoxEvaluator(metadata=configure_metadata(str(metadata)), dataset_name=metadata.parent.name, split=split,
                          cam_threshold_list=list(np.arange(0, 1, 0.001)), iou_threshold_list=[30, 50, 70],
                          mask_root="", multi_contour_eval=multi)
        for s in samples:
            cam = np.load(cams / f"{s.id}.npy").astype(np.float64)
            ev.accumulate(normalize_scoremap(cv2.resize(cam, (224, 224), interpolation=cv2.INTER_CUBIC)), s.id)
        out.append(np.stack([ev.num_correct[d] for d in (30, 50, 70)], axis=1).astype(np.int64))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metadata", type=Path, required=True,
                    help="a wsolevaluation metadata split folder, e.g. metadata/CUB/test")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wsolbench", help="scratch folder for the maps")
    ap.add_argument("--naive-images", type=int, default=300, help="images timed with the per-θ loop")
    ap.add_argument("--reference", type=Path, help="a clovaai/wsolevaluation checkout to compare with")
    ap.add_argument("--reference-images", type=int, default=300, help="images compared with the reference")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each grid, alternated")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    dataset, split = get_dataset("wsolmeta", args.metadata), args.metadata.name
    cams = args.work / "cams"
    generate(dataset, split, cams)
    n = len(dataset.samples(split))
    print(f"{n} maps in {cams}; load average {os.getloadavg()[0]:.2f}")

    grid1000, grid100 = np.arange(0, 1, 0.001), np.arange(0, 1, 0.01)
    fast_hits(framed(dataset, split, cams, 1), grid1000)                 # compiles (or loads) the kernel
    _, t_frame, c_frame = timed(lambda: sum(1 for _ in framed(dataset, split, cams)))
    print(f"load+frame only: {t_frame:.1f}s wall, {c_frame:.1f}s CPU")
    # 1,000-θ and 100-θ grids alternated, twice each; load + frame + boxes + IoU
    runs = {"1000": [], "100": []}
    for _ in range(args.repeats):
        for name, grid in (("1000", grid1000), ("100", grid100)):
            acc, wall, cpu = timed(fast_hits, framed(dataset, split, cams), grid)
            runs[name].append((wall, cpu))
            print(f"  {name:>4}-θ grid: {wall:.1f}s wall ({n / wall:.1f} images/s), {cpu:.1f}s CPU")
            if name == "1000":
                acc1000 = acc
            else:
                acc100 = acc
    (w1000, c1000), (w100, c100) = (min(runs["1000"]), min(runs["100"]))
    m1000, m100 = (float(np.median([c for _, c in runs[k]])) for k in ("1000", "100"))
    print(f"1000-θ / 100-θ: best of {args.repeats} {w1000 / w100:.3f} wall, {c1000 / c100:.3f} CPU; "
          f"median {m1000 / m100:.3f} CPU; boxes + IoU only (best) {(c1000 - c_frame) / (c100 - c_frame):.3f} CPU")

    items = list(framed(dataset, split, cams, max(args.naive_images, args.reference_images)))
    m = min(args.naive_images, n)
    fast_m, t_fast, c_fast = timed(fast_hits, items[:m], grid1000)
    (naive_v1, naive_v2), t_naive, c_naive = timed(naive_hits, items[:m], grid1000)
    same = np.array_equal(naive_v2, fast_m.v2) and np.array_equal(naive_v1, fast_m.v1)
    print(f"boxes+IoU on {m} pre-framed images, 1000-θ: per-θ loop {t_naive:.1f}s wall / {c_naive:.1f}s CPU, "
          f"one-pass {t_fast:.2f}s / {c_fast:.2f}s: {t_naive / t_fast:.1f}x wall, {c_naive / c_fast:.1f}x CPU; "
          f"identical hit counts (largest contour and all contours, every θ and δ): {same}")

    res = summarize(acc1000, grid1000, sweep=True, fixed=None, with_scores=False)
    full, t_cli, _ = timed(lambda: evaluate_wsol(dataset, split, cams, sweep=True))
    assert full["maxboxacc_v2_by_iou"] == res["maxboxacc_v2_by_iou"]
    print(f"evaluate_wsol (file checks, all metrics): {t_cli:.1f}s, {n / t_cli:.1f} images/s")
    print(f"ours: MaxBoxAcc {res['maxboxacc']!r}, V2 {res['maxboxacc_v2']!r} {res['maxboxacc_v2_by_iou']}")
    print(f"100-θ grid: V2 {summarize(acc100, grid100, sweep=True, fixed=None, with_scores=False)['maxboxacc_v2']!r}")
    if args.reference:
        r = min(args.reference_images, n)
        t = time.perf_counter()
        ref_v1, ref_v2 = reference(args.reference, dataset, split, cams, args.metadata, limit=r)
        ours = fast_hits(items[:r], grid1000)
        mine = summarize(ours, grid1000, sweep=True, fixed=None, with_scores=False)
        # the reference's own arithmetic: BoxEvaluator.compute() per δ, then np.average over δ
        ref_v2_value = float(np.average([(ref_v2[:, j] * 100. / float(r)).max() for j in range(3)]))
        print(f"reference BoxEvaluator on {r} images ({time.perf_counter() - t:.0f}s): hit counts per (θ, δ) "
              f"identical: V2 {np.array_equal(ref_v2, ours.v2)}, MaxBoxAcc {np.array_equal(ref_v1[:, 1], ours.v1)}; "
              f"MaxBoxAcc {mine['maxboxacc']!r} (ours) vs {float((ref_v1[:, 1] * 100. / float(r)).max())!r} (ref), "
              f"MaxBoxAccV2 {mine['maxboxacc_v2']!r} (ours) vs {ref_v2_value!r} (ref)")


if __name__ == "__main__":
    main()
