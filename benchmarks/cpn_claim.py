"""CPN's premise on the synthetic benchmark: do complementary patch pairs find more of the object than SEAM?

    python benchmarks/cpn_claim.py --out runs-cpn-claim [--seeds 0,1,2] [--confounding 0.8] [--json]

CPN (Eq. 5) argues that the two halves of a CP pair together find object parts the whole image's CAM
misses. The synthetic benchmark's ``part`` context role ("incomplete foreground", docs/datasets.md) is
built for that failure: a confounded CAM covers the constant wheels and the plate and misses the window.
This runs ``seam`` and ``cpn`` (same seed, same images, CPU defaults; seeds only: no expansion, no
DeepLab) and reports, on the ``train`` seeds (background (1 − max)^16, the ``seam`` preset):

- seed mIoU, the IoU of the ``part`` classes, foreground recall (ground-truth object pixels given their
  own class) over every class and over the ``part`` classes;
- Δ = CPN − SEAM with a 95% t interval over the seed pairs and an image bootstrap (1000 resamples, seed 0's
  pair; the same draws for both methods).

Runs already in ``--out``'s cache are not redone. ``--records DIR`` copies the records (artifact paths
dropped) for committing.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

METHODS = ("seam", "cpn")
OVERRIDES = {"seg_enabled": "false", "expansion": "none"}
METRICS = ("seed_miou", "part_iou", "fg_recall", "part_recall")


def part_classes(dataset) -> list[int]:
    """Class indices whose context role is ``part`` (wsssbench.data.synthetic_scene.make_classes)."""
    from wsssbench.data.synthetic_scene import make_classes
    return [c.index for c in make_classes(dataset.num_classes - 1) if c.role == "part"]


def per_image(record: dict, dataset) -> np.ndarray:
    """(n_images, C, C) ``[gt, pred]`` confusions of the record's train seeds."""
    from wsssbench.compare import image_confusions, run_predictions
    split, preds = run_predictions(record, "seed_miou", dataset)
    c = dataset.num_classes
    return image_confusions(dataset, split, preds)[:, : c * c].reshape(-1, c, c)


def scores(conf: np.ndarray, part: list[int]) -> dict:
    """Part-class IoU and the two recalls (percent) of one summed (C, C) confusion."""
    tp, gt, pred = np.diag(conf), conf.sum(1), conf.sum(0)
    iou = tp / np.maximum(gt + pred - tp, 1)
    fg = np.arange(1, len(tp))
    return {"part_iou": 100 * float(iou[part].mean()),
            "fg_recall": 100 * float(tp[fg].sum() / max(gt[fg].sum(), 1)),
            "part_recall": 100 * float(tp[part].sum() / max(gt[part].sum(), 1))}


def bootstrap(conf_a: np.ndarray, conf_b: np.ndarray, part: list[int], resamples: int = 1000) -> dict:
    """Per metric of :func:`scores`, the 95% percentile interval of Δ over image resamples (same draws)."""
    rng = np.random.default_rng(0)
    n = len(conf_a)
    deltas: dict[str, list[float]] = {k: [] for k in ("part_iou", "fg_recall", "part_recall")}
    for _ in range(resamples):
        w = rng.multinomial(n, np.full(n, 1 / n))
        a, b = scores(np.tensordot(w, conf_a, 1), part), scores(np.tensordot(w, conf_b, 1), part)
        for k in deltas:
            deltas[k].append(b[k] - a[k])
    out = {}
    for k, v in deltas.items():
        low, high = (float(x) for x in np.percentile(v, [2.5, 97.5]))
        out[k] = {"low": low, "high": high, "resolved": not low <= 0 <= high}
    return out


def analyse(records: dict[tuple[str, int], dict], seeds: list[int], dataset) -> dict:
    from wsssbench.compare import compare, seed_pairs
    part = part_classes(dataset)
    values: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in METHODS}
    confs = {}
    for seed in seeds:
        for m in METHODS:
            conf = per_image(records[(m, seed)], dataset)
            confs[(m, seed)] = conf
            values[m]["seed_miou"].append(records[(m, seed)]["metrics"]["seed_miou"])
            for k, v in scores(conf.sum(0), part).items():
                values[m][k].append(v)
    boot = bootstrap(confs[("seam", seeds[0])], confs[("cpn", seeds[0])], part)
    boot["seed_miou"] = compare([records[("seam", seeds[0])]], [records[("cpn", seeds[0])]],
                                dataset=dataset)["seed_miou"]["image_bootstrap"]
    out = {"part_classes": part, "seeds": seeds, "metrics": {}}
    for k in METRICS:
        a, b = values["seam"][k], values["cpn"][k]
        out["metrics"][k] = {"seam": a, "cpn": b, "delta": statistics.fmean(b) - statistics.fmean(a),
                             "seed_pairs": seed_pairs([y - x for x, y in zip(a, b)]), "image_bootstrap": boot[k]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="runs folder (stage cache, records)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--confounding", type=float, default=None, help="default: the preset's (tiny: 0.8)")
    parser.add_argument("--records", type=Path, help="copy the records here (artifact paths dropped)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from wsssbench.data import get_dataset
    from wsssbench.harness import run_method
    seeds = [int(s) for s in args.seeds.split(",")]
    options = {"preset": "tiny", **({"confounding": args.confounding} if args.confounding is not None else {})}
    records = {}
    for seed in seeds:
        for m in METHODS:
            records[(m, seed)] = run_method(m, dataset="synthetic", dataset_options=options, overrides=OVERRIDES,
                                            seed=seed, out=args.out).to_dict()
            if args.records:
                args.records.mkdir(parents=True, exist_ok=True)
                rec = {k: v for k, v in records[(m, seed)].items() if k != "artifacts"}
                # the rounds' artifact paths name this machine's runs folder: not evidence, not committed
                rec["rounds"] = [{k: v for k, v in r.items() if k != "artifacts"} for r in rec.get("rounds", [])]
                (args.records / f"{m}-seed{seed}.json").write_text(json.dumps(rec, indent=1))
    result = analyse(records, seeds, get_dataset("synthetic", **options))
    if args.json:
        print(json.dumps(result))
        return

    def mean(v):
        return f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    def ci(c):
        return "–" if c is None else f"[{c['low']:+.2f}, {c['high']:+.2f}]" + (" resolved" if c["resolved"] else "")
    print(f"part classes: {result['part_classes']}; seeds {seeds}")
    for k, e in result["metrics"].items():
        print(f"{k:>12}: SEAM {mean(e['seam'])}  CPN {mean(e['cpn'])}  Δ {e['delta']:+.2f}  "
              f"seeds {ci(e['seed_pairs'])}  images {ci(e['image_bootstrap'])}")


if __name__ == "__main__":
    main()
