"""Benchmark of the localization evaluator on CUB-test-shaped score maps.

Generates one synthetic 28×28 CAM per CUB-200-2011 test image (5,794, from wsolevaluation's metadata:
real image sizes and boxes) into a scratch folder, then times MaxBoxAccV2 over the 1,000-θ grid and the
100-θ grid with the level-mapped evaluator, and the straightforward per-θ loop (the reference's way,
written here independently) on the same maps; the hit counts must be identical.

    python benchmarks/bench_wsol_eval.py --metadata wsolevaluation/metadata/CUB/test --work /tmp/wsolbench \
        [--naive-images N] [--reference wsolevaluation/]

``--reference`` runs clovaai/wsolevaluation's own ``BoxEvaluator`` (imported from that checkout, never
copied) on the same maps for the side-by-side numbers.
"""
from __future__ import annotations

import argparse
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


def generate(dataset, cams: Path, seed: int = 0) -> None:
    """A Gaussian blob on the (jittered) box, sometimes a distractor blob, plus smooth noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CAM_SIZE, 0:CAM_SIZE] + 0.5
    for s in dataset.samples("test"):
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


def framed(dataset, cams: Path, limit: int | None = None):
    for s in dataset.samples("test")[:limit]:
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
    """The reference's way: threshold, findContours and score at every θ separately."""
    v2 = np.zeros((len(thetas), len(deltas)), dtype=np.int64)
    for _, scoremap, gt in items:
        u8 = (scoremap * 255).astype(np.uint8)
        for k, theta in enumerate(thetas):
            _, binary = cv2.threshold(u8, int(theta * np.max(u8)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            boxes = [[0, 0, 0, 0]]
            if contours:
                boxes = []
                for c in contours:
                    x, y, w, h = cv2.boundingRect(c)
                    boxes.append([x, y, min(x + w, 223), min(y + h, 223)])
            best = box_iou(np.array(boxes), gt).max()
            v2[k] += [best >= d for d in deltas]
    return v2


def reference(repo: Path, dataset, cams: Path, metadata: Path, limit: int | None = None):
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
    samples = dataset.samples("test")[:limit]
    for multi in (False, True):
        ev = BoxEvaluator(metadata=configure_metadata(str(metadata)), dataset_name="CUB", split="test",
                          cam_threshold_list=list(np.arange(0, 1, 0.001)), iou_threshold_list=[30, 50, 70],
                          mask_root="", multi_contour_eval=multi)
        for s in samples:
            cam = np.load(cams / f"{s.id}.npy").astype(np.float64)
            ev.accumulate(normalize_scoremap(cv2.resize(cam, (224, 224), interpolation=cv2.INTER_CUBIC)), s.id)
        out.append(np.stack([ev.num_correct[d] for d in (30, 50, 70)], axis=1).astype(np.int64))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metadata", type=Path, required=True, help="wsolevaluation metadata/CUB/test folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wsolbench"), help="scratch folder for the maps")
    ap.add_argument("--naive-images", type=int, default=300, help="images timed with the per-θ loop")
    ap.add_argument("--reference", type=Path, help="a clovaai/wsolevaluation checkout to compare with")
    ap.add_argument("--reference-images", type=int, default=300, help="images compared with the reference")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    dataset = get_dataset("wsolmeta", args.metadata)
    cams = args.work / "cams"
    generate(dataset, cams)
    n = len(dataset.samples("test"))
    print(f"{n} maps in {cams}; load average {os.getloadavg()[0]:.2f}")

    t = time.perf_counter(); sum(1 for _ in framed(dataset, cams)); t_frame = time.perf_counter() - t
    grid1000, grid100 = np.arange(0, 1, 0.001), np.arange(0, 1, 0.01)
    t = time.perf_counter(); acc1000 = fast_hits(framed(dataset, cams), grid1000); t1000 = time.perf_counter() - t
    t = time.perf_counter(); acc100 = fast_hits(framed(dataset, cams), grid100); t100 = time.perf_counter() - t
    print(f"load+frame only {t_frame:.1f}s; load+frame+boxes+IoU: 1000-θ {t1000:.1f}s ({n / t1000:.1f} images/s), "
          f"100-θ {t100:.1f}s ({n / t100:.1f} images/s); 1000-θ / 100-θ = {t1000 / t100:.2f} "
          f"(boxes+IoU only: {(t1000 - t_frame) / (t100 - t_frame):.2f})")

    items = list(framed(dataset, cams, max(args.naive_images, args.reference_images)))
    m = min(args.naive_images, n)
    t = time.perf_counter(); fast_m = fast_hits(items[:m], grid1000); t_fast = time.perf_counter() - t
    t = time.perf_counter(); naive = naive_hits(items[:m], grid1000); t_naive = time.perf_counter() - t
    same = np.array_equal(naive, fast_m.v2)
    print(f"boxes+IoU on {m} pre-framed images, 1000-θ: per-θ loop {t_naive:.1f}s, level-mapped {t_fast:.1f}s: "
          f"{t_naive / t_fast:.1f}x; "
          f"identical hit counts: {same}")

    res = summarize(acc1000, grid1000, sweep=True, fixed=None, with_scores=False)
    t = time.perf_counter(); full = evaluate_wsol(dataset, "test", cams, sweep=True); t_cli = time.perf_counter() - t
    assert full["maxboxacc_v2_by_iou"] == res["maxboxacc_v2_by_iou"]
    print(f"evaluate_wsol (file checks, all metrics): {t_cli:.1f}s, {n / t_cli:.1f} images/s")
    print(f"ours: MaxBoxAcc {res['maxboxacc']!r}, V2 {res['maxboxacc_v2']!r} {res['maxboxacc_v2_by_iou']}")
    print(f"100-θ grid: V2 {summarize(acc100, grid100, sweep=True, fixed=None, with_scores=False)['maxboxacc_v2']!r}")
    if args.reference:
        r = min(args.reference_images, n)
        t = time.perf_counter()
        ref_v1, ref_v2 = reference(args.reference, dataset, cams, args.metadata, limit=r)
        ours = fast_hits(items[:r], grid1000)
        print(f"reference BoxEvaluator on {r} images ({time.perf_counter() - t:.0f}s): hit counts per (θ, δ) "
              f"identical: V2 {np.array_equal(ref_v2, ours.v2)}, MaxBoxAcc {np.array_equal(ref_v1[:, 1], ours.v1)}; "
              f"MaxBoxAccV2 {float(ours.v2.max(0).mean() * 100 / r)!r} (ours) vs {float(ref_v2.max(0).mean() * 100 / r)!r} (ref)")


if __name__ == "__main__":
    main()
