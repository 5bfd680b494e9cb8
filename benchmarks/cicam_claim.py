"""CI-CAM's claim on the synthetic localization benchmark: does it localise better than NL-CCAM, and more so
as the context confounds the class?

    python benchmarks/cicam_claim.py --out runs-cicam-claim [--seeds 0,1,2] [--confounding 0,0.5,0.9]
                                     [--set KEY=VALUE ...] [--records DIR] [--figure PNG] [--curve PNG]
                                     [--json] [--reuse]

Runs ``nlccam`` and ``cicam`` (their ``tiny`` defaults and the same ``--set`` settings, one after the
other, one thread each) on
``synthetic-loc`` generated at each confounding level with each seed, then scores every run's saved
maps under CI-CAM's box rule (protocol ``cicam``, θ 0: Top-1 Loc, GT-known) and under wsolevaluation
(MaxBoxAccV2, θ-free), and prints per level the mean ± std over seeds of both methods and the paired
difference CI-CAM − NL-CCAM with its 95% t interval over seeds. ``--curve`` draws Top-1 Loc over θ
under the cicam rule for both methods at the middle level (CI-CAM Fig. 4). Runs already in ``--out``'s
cache are not redone; ``--reuse`` analyses the records there without running.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

METHODS = ("nlccam", "cicam")
#: (key, protocol, metric): what each run's maps are scored by
SCORES = (("top1_loc", "cicam", "top1_loc"), ("gt_known", "cicam", "gt_known"),
          ("top1_cls", "cicam", "top1_cls"), ("maxboxacc_v2", "wsolevaluation", "maxboxacc_v2"))


def dataset(level: float):
    from wsssbench.data import get_dataset
    return get_dataset("synthetic-loc", preset="tiny", confounding=level)


def run(method: str, level: float, seed: int, out: Path, sets: dict[str, str]) -> dict:
    from wsssbench.harness import run_method
    rec = run_method(method, dataset="synthetic-loc", dataset_options={"preset": "tiny", "confounding": level},
                     overrides=sets, seed=seed, out=out)
    return rec.to_dict()


def score(record: dict, level: float) -> dict:
    """The run's maps under each protocol of :data:`SCORES` (and the θ curves of the cicam rule)."""
    from wsssbench.metrics.localization import evaluate_wsol
    ds, maps = dataset(level), record["artifacts"]["maps"]
    split = "test" if "test" in ds.split_names() else "val"
    results = {p: evaluate_wsol(ds, split, maps, protocol=p, threshold=None) for p in {p for _, p, _ in SCORES}}
    out = {key: results[p][m] for key, p, m in SCORES}
    out["curve"] = {k: results["cicam"]["curve"][k] for k in ("threshold", "top1_loc", "maxboxacc")}
    return out


def saved(out: Path, levels: list[float], seeds: list[int], sets: dict[str, str]) -> dict:
    """``--reuse``: the records in ``out`` for every (method, level, seed)."""
    found = {}
    for method in METHODS:
        for path in sorted((out / "records" / method).glob("*/*.json")):
            rec = json.loads(path.read_text())
            level = rec.get("extra", {}).get("generation", {}).get("confounding")
            same = all(str(rec["config"].get(k)) == str(_parsed(method, k, v)) for k, v in sets.items())
            if level in levels and rec["seed"] in seeds and rec["config"].get("recipe") == "tiny" and same:
                found[(method, level, rec["seed"])] = rec
    missing = [k for k in ((m, c, s) for m in METHODS for c in levels for s in seeds) if k not in found]
    if missing:
        sys.exit(f"--reuse: no record in {out} for (method, confounding, seed) {missing}")
    return found


def _parsed(method: str, key: str, value: str):
    """``--set`` value as the config stores it (a tuple field as a list, as records hold it)."""
    from wsssbench.methods_api import METHODS, make_config
    v = getattr(make_config(METHODS.get(method), {key: value}), key)
    return list(v) if isinstance(v, tuple) else v


def analyse(scores: dict, levels: list[float], seeds: list[int]) -> dict:
    from wsssbench.compare import seed_pairs
    out = {}
    for level in levels:
        entry = {}
        for key, _, _ in SCORES:
            per = {m: [scores[(m, level, s)][key] for s in seeds] for m in METHODS}
            entry[key] = {m: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None,
                              "values": v} for m, v in per.items()}
            entry[key]["delta"] = seed_pairs([c - n for c, n in zip(per["cicam"], per["nlccam"])])
        out[str(level)] = entry
    return {"seeds": seeds, "levels": out}


def markdown(result: dict) -> str:
    names = {"top1_loc": "Top-1 Loc (cicam, θ 0)", "gt_known": "GT-known (cicam, θ 0)",
             "top1_cls": "Top-1 Cls", "maxboxacc_v2": "MaxBoxAccV2 (wsolevaluation)"}
    lines = [f"Seeds {', '.join(map(str, result['seeds']))}; percent; Δ = CI-CAM − NL-CCAM paired by seed, 95% t "
             "interval over seeds.", "",
             "| confounding | metric | NL-CCAM | CI-CAM | Δ | 95% interval |", "|---|---|---|---|---|---|"]
    for level, entry in result["levels"].items():
        for key, label in names.items():
            e = entry[key]
            cells = [f"{e[m]['mean']:.2f}" + (f" ± {e[m]['std']:.2f}" if e[m]["std"] is not None else "")
                     for m in METHODS]
            d = e["delta"]
            ci = "–" if d is None else f"[{d['low']:+.2f}, {d['high']:+.2f}]" + (" resolved" if d["resolved"] else "")
            delta = f"{statistics.fmean(c - n for c, n in zip(e['cicam']['values'], e['nlccam']['values'])):+.2f}"
            lines.append(f"| {level} | {label} | {cells[0]} | {cells[1]} | {delta} | {ci} |")
    return "\n".join(lines)


def figure(result: dict, path: Path) -> Path:
    """Δ (CI-CAM − NL-CCAM) against the confounding with the seed-pair 95% intervals, per metric."""
    from wsssbench.figures import pyplot
    from wsssbench.io import save_figure
    plt = pyplot()
    levels = [float(k) for k in result["levels"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, key in enumerate(("top1_loc", "gt_known", "maxboxacc_v2")):
        ci = [result["levels"][str(lv)][key]["delta"] for lv in levels]
        if any(c is None for c in ci):
            continue
        xs = [x + (i - 1) * 0.012 for x in levels]
        mean = [c["mean"] for c in ci]
        ax.errorbar(xs, mean, yerr=[[m - c["low"] for m, c in zip(mean, ci)], [c["high"] - m for m, c in zip(mean, ci)]],
                    marker="o", capsize=3, label=key)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="confounding p", ylabel="Δ CI-CAM − NL-CCAM (points)", xticks=levels)
    ax.legend(fontsize=8)
    fig.suptitle(f"CI-CAM vs NL-CCAM on synthetic-loc tiny ({len(result['seeds'])} seeds; 95% seed-pair intervals)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="runs folder (stage cache and records)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--confounding", default="0,0.5,0.9")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for both methods (repeatable), e.g. cam_scales=2.0")
    p.add_argument("--records", type=Path, help="copy the records and scores here (artifact paths dropped)")
    p.add_argument("--figure", type=Path, help="write the Δ-vs-confounding figure here (PNG)")
    p.add_argument("--curve", type=Path, help="write Top-1 Loc over θ (cicam rule) of both methods here (PNG)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON instead of Markdown")
    p.add_argument("--reuse", action="store_true", help="analyse the records already in --out")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    levels = [float(c) for c in args.confounding.split(",")]
    sets = dict(kv.split("=", 1) for kv in args.sets)
    if args.reuse:
        records = saved(args.out, levels, seeds, sets)
    else:
        records = {}
        for s in seeds:
            for c in levels:
                for m in METHODS:
                    records[(m, c, s)] = run(m, c, s, args.out, sets)
                    print(f"ran {m}, confounding {c:g}, seed {s}", file=sys.stderr, flush=True)
    scores = {k: score(rec, k[1]) for k, rec in records.items()}
    result = analyse(scores, levels, seeds)
    if args.records:
        args.records.mkdir(parents=True, exist_ok=True)
        for (m, c, s), rec in records.items():
            slim = {k: v for k, v in rec.items() if k != "artifacts"}
            slim["scores"] = {k: v for k, v in scores[(m, c, s)].items() if k != "curve"}
            (args.records / f"{m}-c{c:g}-s{s}.json").write_text(json.dumps(slim, indent=1, sort_keys=True) + "\n")
    if args.figure:
        figure(result, args.figure)
    if args.curve:
        from wsssbench.cli.eval_wsol import theta_curve
        mid = levels[len(levels) // 2]
        theta_curve({m: {"curve": scores[(m, mid, seeds[0])]["curve"]} for m in METHODS}, args.curve,
                    title=f"Top-1 Loc over θ, cicam rule (confounding {mid:g}, seed {seeds[0]})")
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WSSSBENCH_THREADS", "1")
    sys.exit(main())
