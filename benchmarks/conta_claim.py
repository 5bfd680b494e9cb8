"""CONTA's causal claim on the synthetic benchmark: does its gain over the baseline grow with the confounding?

    python benchmarks/conta_claim.py --out runs-claim [--seeds 0,1,2] [--confounding 0,0.5,0.9]
                                     [--rounds 2] [--base cam] [--jobs 2] [--records DIR] [--figure PNG] [--json]
                                     [--reuse]

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


def _saved(out: Path, base: str, rounds: int, levels: list[float], seeds: list[int]) -> list[dict]:
    """The records already in ``out`` for these runs (``--reuse``), one per (level, seed). Records of one
    run made by several code versions (a config field added since) must agree on every round's numbers."""
    import json as _json
    found: dict[tuple[float, int], dict] = {}
    for path in sorted((out / "records" / "conta").glob("*/*.json")):
        rec = _json.loads(path.read_text())
        level, cfg = rec.get("extra", {}).get("generation", {}).get("confounding"), rec["config"]
        if cfg.get("base") != base or cfg.get("rounds") != rounds or level not in levels or rec["seed"] not in seeds:
            continue
        key = (level, rec["seed"])
        if key in found:
            numbers = [[r.get(m) for m in METRICS] for r in found[key]["rounds"]]
            if numbers != [[r.get(m) for m in METRICS] for r in rec["rounds"]]:
                sys.exit(f"{path}: differs from another record of confounding {level}, seed {rec['seed']}")
        found[key] = rec
    missing = [(c, s) for s in seeds for c in levels if (c, s) not in found]
    if missing:
        sys.exit(f"--reuse: no record in {out} for (confounding, seed) {missing}")
    return [found[(c, s)] for s in seeds for c in levels]


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


def _levels(result: dict) -> dict:
    """The per-level entries of an analysis (its other key is ``trend``)."""
    return {k: v for k, v in result.items() if k != "trend"}


def trend(by_level: dict[float, list[dict]]) -> dict:
    """Does the gain grow with the confounding? Per metric, Δ at the highest level minus Δ at the lowest
    (Δ = last round − round 0 per seed), with a Welch 95% interval (the levels are different datasets,
    so their seeds are not paired; degrees of freedom Welch–Satterthwaite, rounded down)."""
    import math

    from wsssbench.compare import t_quantile
    lo, hi = min(by_level), max(by_level)
    out = {}
    for metric in METRICS:
        d = {level: [r["rounds"][-1][metric] - r["rounds"][0][metric] for r in by_level[level]] for level in (lo, hi)}
        mean = statistics.fmean(d[hi]) - statistics.fmean(d[lo])
        v = {k: statistics.variance(x) / len(x) for k, x in d.items()}
        df = (v[lo] + v[hi]) ** 2 / sum(x ** 2 / (len(d[k]) - 1) for k, x in v.items())
        half = t_quantile(0.975, max(1, math.floor(df))) * math.sqrt(v[lo] + v[hi])
        out[metric] = {"levels": [lo, hi], "mean": mean, "low": mean - half, "high": mean + half,
                       "resolved": not mean - half <= 0 <= mean + half}
    return out


def markdown(result: dict) -> str:
    lines = ["| confounding | round | seed mIoU | pseudo-mask mIoU | seg. mIoU | seed ctx. conf. | pseudo ctx. conf. "
             "| seg. ctx. conf. |", "|---|---|---|---|---|---|---|---|"]
    for level, res in _levels(result).items():
        for entry in res["rounds"]:
            cells = [_stat([]) if k not in entry else (f"{entry[k]['mean']:.2f}" + (
                f" ± {entry[k]['std']:.2f}" if entry[k]["std"] is not None else "")) for k in METRICS + CONFUSIONS]
            lines.append(f"| {level} | {entry['round']} | " + " | ".join(cells) + " |")
    lines += ["", "Last round − round 0 (the baseline), paired by seed; 95% intervals over seeds (t) and over "
                  "the images of seed 0 (bootstrap):", "",
              "| confounding | metric | Δ (mean) | seeds | images |", "|---|---|---|---|---|"]
    for level, res in _levels(result).items():
        for metric, d in res["delta"].items():
            lines.append(f"| {level} | {metric} | {d['delta']:+.2f} | {_interval(d['seed_pairs'])} "
                         f"| {_interval(d['image_bootstrap'])} |")
        for key, ci in res["delta_context_confusion"].items():
            lines.append(f"| {level} | Δ {key} | {ci['mean']:+.2f} | {_interval(ci)} | – |")
    if "trend" in result:
        lo, hi = next(iter(result["trend"].values()))["levels"]
        lines += ["", f"Does the gain grow with the confounding? Δ at {hi:g} minus Δ at {lo:g} (Welch 95% interval):",
                  "", "| metric | difference | interval |", "|---|---|---|"]
        lines += [f"| {m} | {t['mean']:+.2f} | {_interval(t)} |" for m, t in result["trend"].items()]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> Path:
    """Left: Δ mIoU (last round − round 0) against the confounding, with the seed-pair 95% intervals;
    right: the context confusion of round 0 and the last round (mean ± std over seeds)."""
    from wsssbench.figures import pyplot
    from wsssbench.io import save_figure
    plt = pyplot()
    result = _levels(result)
    levels = [float(k) for k in result]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for i, (metric, label) in enumerate(zip(METRICS, ("seeds", "pseudo-masks", "segmentation"))):
        xs = [x + (i - 1) * 0.012 for x in levels]
        ci = [res["delta"][metric]["seed_pairs"] for res in result.values()]     # needs ≥ 2 seeds
        mean = [c["mean"] for c in ci]
        below, above = [m - c["low"] for m, c in zip(mean, ci)], [c["high"] - m for m, c in zip(mean, ci)]
        left.errorbar(xs, mean, yerr=[below, above], marker="o", capsize=3, label=label)
    left.axhline(0, color="grey", lw=0.8)
    left.set(xlabel="confounding p", ylabel="Δ mIoU, last round − baseline", xticks=levels)
    left.legend(fontsize=8)
    for key, label, style in (("pseudo_context_confusion", "pseudo-masks", "-"),
                              ("seg_context_confusion", "segmentation", "--")):
        for which, colour in ((0, "tab:blue"), (-1, "tab:red")):
            stats = [res["rounds"][which].get(key) for res in result.values()]
            right.errorbar(levels, [s["mean"] for s in stats], yerr=[s["std"] or 0 for s in stats], ls=style,
                           color=colour, marker="o", capsize=3,
                           label=f"{label}, {'baseline' if which == 0 else 'last round'}")
    right.set(xlabel="confounding p", ylabel="context confusion (%)", xticks=levels)
    right.legend(fontsize=7)
    seeds = len(next(iter(result.values()))["seeds"])
    fig.suptitle(f"CONTA vs its baseline on synthetic tiny ({seeds} seeds; bars: 95% seed-pair intervals / std)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


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
    p.add_argument("--figure", type=Path, help="write the Δ / context-confusion figure here (PNG)")
    p.add_argument("--reuse", action="store_true", help="analyse the records already in --out instead of running "
                                                        "(a config field added since would otherwise rerun them)")
    args = p.parse_args(argv)
    from wsssbench.io import write_json
    levels = [float(c) for c in args.confounding.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {"base": args.base, "rounds": str(args.rounds)}
    jobs = [(c, s, overrides, str(args.out)) for s in seeds for c in levels]
    if args.reuse:
        records = _saved(args.out, args.base, args.rounds, levels, seeds)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            records = list(pool.map(_run, jobs))
    by_level: dict[float, list[dict]] = {}
    for (level, *_), rec in zip(jobs, records):
        by_level.setdefault(level, []).append(rec)
    result = analyse(by_level, args.resamples)
    if len(by_level) > 1 and len(seeds) > 1:
        result["trend"] = trend(by_level)
    if args.records:
        for rec in records:
            gen = rec["extra"]["generation"]
            path = args.records / f"c{gen['confounding']:g}" / f"conta-{args.base}-seed{rec['seed']}.json"
            write_json(path, {**rec, "artifacts": {}, "rounds": [{k: v for k, v in r.items() if k != "artifacts"}
                                                                 for r in rec["rounds"]]})
    if args.figure:
        figure(result, args.figure)
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
