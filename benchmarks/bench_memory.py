"""Peak memory of each stage on 1x and 4x the images of a synthetic preset: is memory flat in the dataset size?

    python benchmarks/bench_memory.py [--json] [--images N] [--work DIR] [--workers W]

Makes two variants of the ``tiny`` preset, N and 4N ``train_aug`` images (a quarter as many ``train`` and
``val``), and runs each stage in a fresh Python process on each: the classifier, CAMs, the CRF expansion,
the random walk (confident labels, affinity training on every image, the walk), the segmenter (training
and val predictions) and the evaluation (seeds and masks scored). Each process reports its peak resident
memory (``VmHWM``). With ``--workers 0`` (the default) the stage process itself reads every batch, so its
peak covers the whole data path; with workers each of them holds a few batches beside it. Training lengths are
cut (1 classifier epoch, 1 affinity epoch, 20 segmenter iterations, one CAM scale, 2^4 walk steps): memory,
not accuracy, is measured. Goal: 4x the images costs at most 1.2x the memory, every stage.
``--json``: ``{stage: {"rss_1x_mb", "rss_4x_mb", "ratio"}}`` of the main processes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("classifier", "cams", "expansion", "affinity", "segmenter", "evaluation")
SETTINGS = {"cls_epochs": "1", "cam_scales": "1", "cam_flip": "false", "rw_epochs": "1", "rw_train_images": "none",
            "rw_exp_times": "4", "seg_iterations": "20"}


def preset_name(n: int) -> str:
    return f"tiny-mem{n}"


def register_preset(n: int) -> str:
    """``tiny`` with ``n`` train_aug images (n/4 train, n/4 val), added to the generator's presets in this process."""
    from wsssbench.data import synthetic
    name = preset_name(n)
    synthetic.PRESETS[name] = dataclasses.replace(synthetic.PRESETS["tiny"], name=name, seg=(n, n // 4, n // 4))
    return name


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB; ``ru_maxrss`` where /proc is missing."""
    status = Path("/proc/self/status")
    if status.is_file():
        hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
        return int(hwm.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, n: int, work: Path, workers: int) -> None:
    """One stage on the ``n``-image variant, reading the previous stages' outputs from ``work``."""
    import torch

    from wsssbench.data import get_dataset
    from wsssbench.methods_api import METHODS, Context, make_config
    from wsssbench.metrics.segmentation import evaluate_masks, evaluate_seeds
    from wsssbench.stages import expand, infer_cams, train_classifier, train_segmenter
    torch.set_num_threads(1)
    name = register_preset(n)
    ds = get_dataset("synthetic", work / f"data{n}", preset=name)
    method = METHODS.get("cam")
    overrides = {**SETTINGS, "workers": str(workers), "expansion": "rw" if stage == "affinity" else "crf"}
    ctx = Context(make_config(method, overrides), ds)
    train, val = ds.samples("train_aug"), ds.samples("val")
    out = work / f"run{n}"
    out.mkdir(exist_ok=True)
    if stage == "classifier":
        train_classifier.run(ctx, method, train, out)
        return
    if stage == "evaluation":
        evaluate_seeds(ds, "train_aug", out / "cams", threshold=0.15, workers=workers)
        evaluate_masks(ds, "train_aug", out / "crf" / "masks", workers=workers)
        evaluate_masks(ds, "val", out / "seg" / "pred", protocol="deeplab", workers=workers)
        return
    if stage == "cams":
        model = method.build_classifier(ctx)
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        infer_cams.run(ctx, method, model, train, out / "cams")
        infer_cams.run(ctx, method, model, val, out / "cams_val")
    elif stage in ("expansion", "affinity"):
        expand.run(ctx, out / "cams", train, out / ("crf" if stage == "expansion" else "rw"))
    elif stage == "segmenter":
        (out / "seg").mkdir(exist_ok=True)
        train_segmenter.run(ctx, method, train, out / "crf" / "masks", out / "cams", {"pred": val}, out / "seg")


def measure(n: int, work: Path, workers: int) -> dict[str, dict]:
    """Each stage in its own process on the ``n``-image variant: its peak MB and seconds."""
    results = {}
    for stage in STAGES:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--stage", stage, "--n", str(n), "--work", str(work),
                               "--workers", str(workers)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "WSSSBENCH_THREADS": "1"})
        if done.returncode:
            raise SystemExit(f"stage {stage} ({n} images) failed:\n{done.stderr[-3000:]}")
        peak = json.loads(done.stdout.strip().splitlines()[-1])
        results[stage] = {"mb": peak, "seconds": time.perf_counter() - start}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--images", type=int, default=400, help="train_aug images of the 1x variant (default 400)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers (default 0: all in the stage process)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:                              # a child: one stage, then its peaks as the last line
        run_stage(args.stage, args.n, args.work, args.workers)
        print(json.dumps(peak_mb()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        from wsssbench.data.synthetic import generate
        for n in (args.images, 4 * args.images):
            generate(work / f"data{n}", register_preset(n), layouts=("seg",))
        runs = {n: measure(n, work, args.workers) for n in (args.images, 4 * args.images)}
    one, four = runs[args.images], runs[4 * args.images]
    table = {s: {"rss_1x_mb": round(one[s]["mb"], 1), "rss_4x_mb": round(four[s]["mb"], 1),
                 "ratio": round(four[s]["mb"] / one[s]["mb"], 3)} for s in STAGES}
    if args.json:
        print(json.dumps(table, indent=1))
        return
    print(f"peak RSS, {args.images} vs {4 * args.images} train_aug images, {args.workers} DataLoader worker(s)")
    print(f"{'stage':<11} {'1x MB':>8} {'4x MB':>8} {'ratio':>6}   {'s 1x':>6} {'s 4x':>6}")
    for s in STAGES:
        print(f"{s:<11} {table[s]['rss_1x_mb']:>8.1f} {table[s]['rss_4x_mb']:>8.1f} {table[s]['ratio']:>6.3f}   "
              f"{one[s]['seconds']:>6.0f} {four[s]['seconds']:>6.0f}")


if __name__ == "__main__":
    main()
