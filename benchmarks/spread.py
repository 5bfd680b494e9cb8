"""Seed-to-seed spread of a method on a synthetic preset: how far apart are two runs that differ only by --seed?

    python benchmarks/spread.py [--preset quiet] [--confounding P] [--seeds 5] [--method cam] [--set KEY=VALUE ...]
                                [--vary all|init|order|segmenter] [--first N] [--out runs-spread] [--json]

Runs seeds 0..N-1 through the harness (each stage cached under ``--out``, so an interrupted or extended
sweep only trains what is missing) and prints mean ± std over seeds of seed, pseudo-mask and segmentation
mIoU, the per-class IoU behind each, each run's wall time, and the image-sampling noise of one run (the
std of its mIoU over bootstrap resamples of the scored images: what a larger scored split would remove);
``--first N`` also scores every run on the first N images of each split only.

``--vary`` lets only one source of randomness follow the seed, the others stay at seed 0's, to
decompose the spread (``docs/statistics.md``):

- ``all``: the plain ``wsssbench run --seed S`` (everything follows S);
- ``init``: the classifier's initialisation and augmentation draws (torch's global generator), with
  seed 0's batch order;
- ``order``: the classifier's batch order (its DataLoader generator), with seed 0's initialisation and
  augmentation;
- ``segmenter``: the segmenter alone (initialisation, batches, flips), trained on seed 0's pseudo-masks.

The data are the same in every case (``--seed`` never reaches the generator: a preset is generated with
data seed 0).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

METRICS = ("seed_miou", "pseudo_miou", "seg_miou")
PER_CLASS = {"seed_miou": "seed_iou", "pseudo_miou": "pseudo_iou", "seg_miou": "seg_iou"}
VARY = ("all", "init", "order", "segmenter")


def split_run(vary: str):
    """The harness's run class with the seed split as ``vary`` says (``all``: the harness's own).

    The run keeps seed 0 (``segmenter``) or S (``init``, ``order``) for every stage's key and draws, except
    the varied stage: there the global generator and ``ctx.seed`` (the batch generator) are set apart, and
    the stage key records the split so the cache never mixes variants. S = 0 is the plain seed-0 run."""
    from wsssbench import harness
    if vary == "all":
        return harness._Run

    class Split(harness._Run):
        def __init__(self, method, cfg, ds, ds_key, seed, device, out, progress):
            super().__init__(method, cfg, ds, ds_key, 0 if vary == "segmenter" else seed, device, out, progress)
            self.run_seed = seed
            self.contexts = []

        def ctx(self, round_=0, inputs=None):
            c = super().ctx(round_, inputs)
            self.contexts.append(c)
            return c

        def stage(self, name, key, build, *args, **kwargs):
            s = self.run_seed
            varied = {"init": "classifier", "order": "classifier", "segmenter": "segmenter"}[vary]
            if name != varied or s == 0:
                return super().stage(name, key, build, *args, **kwargs)
            draws, batches = {"init": (s, 0), "order": (0, s), "segmenter": (s, s)}[vary]
            saved = self.seed, [c.seed for c in self.contexts]
            self.seed = draws
            for c in self.contexts:
                c.seed = batches
            try:
                return super().stage(name, {**key, "vary": {vary: s}}, build, *args, **kwargs)
            finally:
                self.seed = saved[0]
                for c, old in zip(self.contexts, saved[1]):
                    c.seed = old
    return Split


def run_seeds(method: str, options: dict, seeds: list[int], overrides: dict, vary: str, out: Path) -> list[dict]:
    """One record per seed (``vary`` ≠ all: records under ``out/vary-<what>``, the stage cache shared)."""
    from wsssbench import harness
    records_out = out if vary == "all" else out / f"vary-{vary}"
    if vary != "all":
        records_out.mkdir(parents=True, exist_ok=True)
        (out / "cache").mkdir(parents=True, exist_ok=True)
        link = records_out / "cache"
        if not link.exists():
            link.symlink_to((out / "cache").resolve(), target_is_directory=True)
    original = harness._Run
    harness._Run = split_run(vary)
    try:
        records = []
        for s in seeds:
            start, cpu = time.perf_counter(), time.process_time()
            rec = harness.run_method(method, dataset="synthetic", dataset_options=dict(options),
                                     overrides=dict(overrides), seed=s, out=records_out)
            d = json.loads(Path(rec.artifacts["record"]).read_text())
            d["wall_s"], d["cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
            print(f"seed {s}: " + "  ".join(f"{k} {v:.2f}" for k, v in d["metrics"].items())
                  + f"  ({d['wall_s']:.0f} s wall, {d['cpu_s']:.0f} s CPU)", file=sys.stderr, flush=True)
            records.append(d)
        return records
    finally:
        harness._Run = original


def confusions(record: dict, metric: str, dataset):
    """Per-image confusions behind one metric of a run, in the split's order (None: artifacts gone)."""
    from wsssbench.compare import image_confusions, run_predictions
    got = run_predictions(record, metric, dataset)
    return None if got is None else image_confusions(dataset, got[0], got[1])


def first_images(record: dict, metric: str, dataset, n: int) -> float | None:
    """``metric`` of a run scored on the first ``n`` images of its split only (quiet's first 200 train
    images are tiny's train: the same masks scored on tiny's split)."""
    from wsssbench.compare import miou
    conf = confusions(record, metric, dataset)
    return None if conf is None else miou(conf[:n].sum(0), record["protocols"][metric], dataset.num_classes)


def image_noise(record: dict, metric: str, dataset, resamples: int = 500) -> float | None:
    """Std of ``metric`` over bootstrap resamples of the scored images (one run, its artifacts on disk)."""
    import numpy as np

    from wsssbench.compare import miou
    conf = confusions(record, metric, dataset)
    if conf is None:
        return None
    counts = np.random.default_rng(0).multinomial(len(conf), np.full(len(conf), 1 / len(conf)), size=resamples)
    protocol = record["protocols"][metric]
    return float(np.std([miou(c, protocol, dataset.num_classes) for c in counts @ conf], ddof=1))


def summarise(records: list[dict], dataset, first: int | None = None) -> dict:
    out = {"seeds": [r["seed"] for r in records], "metrics": {}, "wall_s": {}}
    for metric in METRICS:
        values = [r["metrics"][metric] for r in records if metric in r["metrics"]]
        if not values:
            continue
        entry = {"per_seed": values, "mean": statistics.fmean(values),
                 "std": statistics.stdev(values) if len(values) > 1 else None, "per_class": {}}
        per_class = [r["extra"].get(PER_CLASS[metric]) or {} for r in records]
        for name in per_class[0]:
            v = [pc[name] for pc in per_class]
            entry["per_class"][name] = {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None,
                                        "per_seed": v}
        entry["image_std_seed0"] = image_noise(records[0], metric, dataset)
        if first:
            sub = [first_images(r, metric, dataset, first) for r in records]
            if None not in sub:
                entry[f"first_{first}"] = {"per_seed": sub, "mean": statistics.fmean(sub),
                                           "std": statistics.stdev(sub) if len(sub) > 1 else None}
        out["metrics"][metric] = entry
    out["wall_s"] = {str(r["seed"]): r["wall_s"] for r in records}
    out["cpu_s"] = {str(r["seed"]): r["cpu_s"] for r in records}
    return out


def fmt(mean: float, std: float | None) -> str:
    return f"{mean:6.2f} ± {std:5.2f}" if std is not None else f"{mean:6.2f}"


def print_table(summary: dict, title: str) -> None:
    print(f"## {title}\n")
    print("| metric | " + " | ".join(f"seed {s}" for s in summary["seeds"]) + " | mean ± std | image-bootstrap std (seed "
          f"{summary['seeds'][0]}) |")
    print("|---|" + "---|" * (len(summary["seeds"]) + 2))
    for metric, e in summary["metrics"].items():
        noise = e["image_std_seed0"]
        print(f"| {metric} | " + " | ".join(f"{v:.2f}" for v in e["per_seed"]) + f" | {fmt(e['mean'], e['std'])} | "
              + (f"{noise:.2f}" if noise is not None else "–") + " |")
        for key in (k for k in e if k.startswith("first_")):
            print(f"| {metric}, first {key[6:]} images | " + " | ".join(f"{v:.2f}" for v in e[key]["per_seed"])
                  + f" | {fmt(e[key]['mean'], e[key]['std'])} | |")
    for metric, e in summary["metrics"].items():
        print(f"\nper-class IoU, {metric}:\n")
        print("| class | " + " | ".join(f"seed {s}" for s in summary["seeds"]) + " | mean ± std |")
        print("|---|" + "---|" * (len(summary["seeds"]) + 1))
        for name, c in e["per_class"].items():
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in c["per_seed"]) + f" | {fmt(c['mean'], c['std'])} |")
    print("\nthis invocation's time per run (wall / CPU s; a cached run costs ~0): "
          + ", ".join(f"seed {s}: {summary['wall_s'][s]:.0f} / {summary['cpu_s'][s]:.0f}" for s in summary["wall_s"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quiet")
    p.add_argument("--seeds", type=int, default=5, help="run seeds 0..N-1")
    p.add_argument("--confounding", type=float, help="the preset's confounding level (default: its own)")
    p.add_argument("--method", default="cam")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--vary", choices=VARY, default="all")
    p.add_argument("--out", type=Path, default=Path("runs-spread"))
    p.add_argument("--first", type=int, help="also score each run on the first N images of each split")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from wsssbench.cli.run import parse_sets
    from wsssbench.data import get_dataset
    overrides = parse_sets(args.sets)
    overrides.setdefault("recipe", "tiny")
    options = {"preset": args.preset, **({} if args.confounding is None else {"confounding": args.confounding})}
    records = run_seeds(args.method, options, list(range(args.seeds)), overrides, args.vary, args.out)
    summary = summarise(records, get_dataset("synthetic", None, **options), args.first)
    summary.update(method=args.method, preset=args.preset, confounding=args.confounding, vary=args.vary,
                   overrides=args.sets)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary, f"{args.method} on {args.preset}"
                    + ("" if args.confounding is None else f" at confounding {args.confounding:g}") + f", --vary {args.vary}"
                    + (f", --set {' '.join(args.sets)}" if args.sets else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
