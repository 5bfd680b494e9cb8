"""IRN's random walk on a VOC-sized stride-4 grid: the dense squaring (IRN's arithmetic) vs the sparse walk.

    python benchmarks/bench_random_walk.py [--height 125 --width 94 --classes 3] [--repeats 3] [--json]

One image's worth of input, made here: a boundary map with the outlines of a few blobs plus noise,
and class maps that peak inside them, at 125 × 94 (a 500 × 375 VOC image at stride 4). Both walks use
IRN's inference settings (radius 5, β 10, t = 2^8). Printed side by side in one run:

- ``dense_s``, ``sparse_s``: seconds of ``random_walk(..., method=…)`` (best of ``--repeats``; the dense
  one once unless ``--repeats-dense``), and ``speedup`` = dense_s / sparse_s;
- ``max_abs_diff``: the largest difference of the two walked maps relative to their max, and each walk's
  difference from the exact walk (float64 squarings) as ``dense_error`` / ``sparse_error``;
- ``mask_disagreement``: the share of pixels whose label (after IRN's 0.25 background plane on the
  max-normalised maps) differs between the two walks;
- the memory the transition matrix takes in each: ``dense_matrix_mb`` (hw × hw float32) and
  ``sparse_matrix_mb`` (its non-zeros, indices included).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from wsssbench.models import affinity_matrix
from wsssbench.stages.expand import random_walk, sparse_transition_matrix

RADIUS, BETA, EXP_TIMES, BG = 5, 10.0, 8, 0.25


def make_inputs(h: int, w: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge (h, w), class maps (classes, h·w)): blobs at random places, their outlines as boundaries."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    edge = 0.05 * rng.random((h, w))
    maps = []
    for _ in range(classes):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        edge = np.maximum(edge, np.exp(-((d - 1) / 0.08) ** 2))
        maps.append(np.clip(1 - d, 0, None) * rng.uniform(0.5, 1.0))
    cams = torch.from_numpy(np.stack(maps).astype(np.float32))
    edge = torch.from_numpy(edge.astype(np.float32))
    return edge, (cams * (1 - edge)).reshape(classes, -1)


def labels(walked: torch.Tensor, h: int, w: int) -> np.ndarray:
    """IRN make_sem_seg_labels on the grid: max-normalise, background plane first, arg-max."""
    walked = walked / walked.max()
    planes = torch.cat([torch.full((1, h * w), BG, dtype=walked.dtype), walked])
    return planes.argmax(0).numpy()


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def exact_walk(x: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """The walk in float64 by IRN's squarings (from the same float32 affinities)."""
    aff = affinity_matrix(edge, RADIUS).to_dense().double().pow(BETA)
    trans = aff / aff.sum(0, keepdim=True)
    for _ in range(EXP_TIMES):
        trans = trans @ trans
    return x.double() @ trans


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=125)
    p.add_argument("--width", type=int, default=94)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timings of the sparse walk (best is kept)")
    p.add_argument("--repeats-dense", type=int, default=1, help="timings of the dense walk")
    p.add_argument("--no-exact", action="store_true", help="skip the float64 reference (another dense run)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    h, w = args.height, args.width
    edge, x = make_inputs(h, w, args.classes)
    with torch.no_grad():
        sparse_s, sparse = timed(lambda: random_walk(x, edge, RADIUS, BETA, EXP_TIMES, "sparse"), args.repeats)
        dense_s, dense = timed(lambda: random_walk(x, edge, RADIUS, BETA, EXP_TIMES, "dense"), args.repeats_dense)
        exact = None if args.no_exact else exact_walk(x, edge)
    scale = dense.abs().max().item()
    nnz = sparse_transition_matrix(edge, RADIUS, BETA)._nnz()
    out = {
        "grid": [h, w], "classes": args.classes, "threads": torch.get_num_threads(),
        "dense_s": dense_s, "sparse_s": sparse_s, "speedup": dense_s / sparse_s,
        "max_abs_diff": (dense - sparse).abs().max().item() / scale,
        "mask_disagreement": float((labels(dense, h, w) != labels(sparse, h, w)).mean()),
        "dense_matrix_mb": (h * w) ** 2 * 4 / 2 ** 20,
        "sparse_matrix_mb": nnz * (8 + 2 * 8) / 2 ** 20,      # float64 value + two int64 indices
    }
    if exact is not None:
        ref = exact.abs().max().item()
        out["dense_error"] = (dense.double() - exact).abs().max().item() / ref
        out["sparse_error"] = (sparse.double() - exact).abs().max().item() / ref
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"grid {h}×{w}, {args.classes} classes, {out['threads']} threads")
        print(f"  dense (IRN, {EXP_TIMES} squarings): {dense_s:9.3f} s   T {out['dense_matrix_mb']:8.1f} MB")
        print(f"  sparse ({2 ** EXP_TIMES} products):  {sparse_s:9.3f} s   T {out['sparse_matrix_mb']:8.1f} MB")
        print(f"  speedup {out['speedup']:.0f}×   max |dense − sparse| / max {out['max_abs_diff']:.2e}   "
              f"labels differing {100 * out['mask_disagreement']:.4f} %")
        if exact is not None:
            print(f"  vs the exact (float64) walk: dense {out['dense_error']:.2e}, sparse {out['sparse_error']:.2e}")
    return out


if __name__ == "__main__":
    main()
