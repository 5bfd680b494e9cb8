"""CONTA's causal claim on the synthetic benchmark: does its gain over the baseline grow with the confounding?

    python benchmarks/conta_claim.py --out runs-claim [--seeds 0,1,2] [--confounding 0,0.5,0.9]
                                     [--rounds 2] [--base cam] [--jobs 2] [--records DIR] [--json]

Runs ``conta`` (round 0 = the baseline itself, so baseline and CONTA share the seed, the base classifier's
initialisation and the images) on the ``tiny`` preset generated at each confounding level, then prints,
per level: mean ± std over seeds of seed, pseudo-mask and segmentation mIoU and of their context
confusion (the share of a class's false positives lying on its own context; lower is better) for every
round, and the paired difference of the last round to round 0 with two 95% intervals — over seeds (t)
and over the images of seed 0 (bootstrap, when the artifacts are on disk). Runs already in ``--out``'s
cache are not redone. ``--records DIR`` copies the records (artifact paths dropped) for committing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

METRICS = ("seed_miou", "pseudo_miou", "seg_miou")
CONFUSIONS = ("seed_context_confusion", "pseudo_context_confusion", "seg_context_confusion")


def _run(job: tuple) -> dict:
    from wsssbench.harness import run_method
    confounding, seed, overrides, out = job
    rec = run_method("conta", dataset="synthetic", dataset_options={"preset": "tiny", "confounding": confounding},
                     overrides=overrides, seed=seed, out=Path(out))
    return rec.to_dict()


def _stat(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def _interval(ci: dict | None) -> str:
    return "–" if ci is None else f"[{ci['low']:+.2f}, {ci['high']:+.2f}]" + (" resolved" if ci["resolved"] else "")


def analyse(records_by_level: dict[float, list[dict]], resamples: int = 1000) -> dict:
    """Per level: every round's mean/std, and last round − round 0 with its seed and image intervals."""
    from wsssbench.compare import at_round, compare
    from wsssbench.data import get_dataset
    out = {}
    for level, records in sorted(records_by_level.items()):
        records = sorted(records, key=lambda r: r["seed"])
        last = min(len(r["rounds"]) for r in records) - 1
        rounds = []
        for t in range(last + 1):
            entry = {"round": t}
            for key in METRICS + CONFUSIONS:
                values = [r["rounds"][t].get(key) for r in records]
                values = [v for v in values if v is not None]
                if values:
                    entry[key] = {"mean": statistics.fmean(values),
                                  "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
            rounds.append(entry)
        ds = get_dataset("synthetic", preset="tiny", confounding=level)
        diff = compare([at_round(r, 0) for r in records], [at_round(r, last) for r in records], dataset=ds,
                       resamples=resamples)
        confusion = {}
        for key in CONFUSIONS:
            deltas = [r["rounds"][last].get(key) - r["rounds"][0].get(key) for r in records
                      if r["rounds"][last].get(key) is not None and r["rounds"][0].get(key) is not None]
            if len(deltas) > 1:
                from wsssbench.compare import seed_pairs
                confusion[key] = seed_pairs(deltas)
        out[str(level)] = {"seeds": [r["seed"] for r in records], "rounds": rounds, "last_round": last,
                           "delta": diff, "delta_context_confusion": confusion}
    return out


def markdown(result: dict) -> str:
    lines = ["| confounding | round | seed mIoU | pseudo-mask mIoU | seg. mIoU | seed ctx. conf. | pseudo ctx. conf. "
             "| seg. ctx. conf. |", "|---|---|---|---|---|---|---|---|"]
    for level, res in result.items():
        for entry in res["rounds"]:
            cells = [_stat([]) if k not in entry else (f"{entry[k]['mean']:.2f}" + (
                f" ± {entry[k]['std']:.2f}" if entry[k]["std"] is not None else "")) for k in METRICS + CONFUSIONS]
            lines.append(f"| {level} | {entry['round']} | " + " | ".join(cells) + " |")
    lines += ["", "Last round − round 0 (the baseline), paired by seed; 95% intervals over seeds (t) and over "
                  "the images of seed 0 (bootstrap):", "",
              "| confounding | metric | Δ (mean) | seeds | images |", "|---|---|---|---|---|"]
    for level, res in result.items():
        for metric, d in res["delta"].items():
            lines.append(f"| {level} | {metric} | {d['delta']:+.2f} | {_interval(d['seed_pairs'])} "
                         f"| {_interval(d['image_bootstrap'])} |")
        for key, ci in res["delta_context_confusion"].items():
            lines.append(f"| {level} | Δ {key} | {ci['mean']:+.2f} | {_interval(ci)} | – |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="runs folder (stage cache and records)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--confounding", default="0,0.5,0.9")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--base", default="cam", help="conta's base (cam: the toolkit's CPU default, CRF expansion)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (each on one thread)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--records", type=Path, help="copy the records here, artifact paths dropped")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON instead of Markdown")
    args = p.parse_args(argv)
    from wsssbench.io import write_json
    levels = [float(c) for c in args.confounding.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {"base": args.base, "rounds": str(args.rounds)}
    jobs = [(c, s, overrides, str(args.out)) for s in seeds for c in levels]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        records = list(pool.map(_run, jobs))
    by_level: dict[float, list[dict]] = {}
    for (level, *_), rec in zip(jobs, records):
        by_level.setdefault(level, []).append(rec)
    result = analyse(by_level, args.resamples)
    if args.records:
        for rec in records:
            gen = rec["extra"]["generation"]
            path = args.records / f"c{gen['confounding']:g}" / f"conta-{args.base}-seed{rec['seed']}.json"
            write_json(path, {**rec, "artifacts": {}, "rounds": [{k: v for k, v in r.items() if k != "artifacts"}
                                                                 for r in rec["rounds"]]})
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
