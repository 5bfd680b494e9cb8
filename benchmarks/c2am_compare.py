"""Mean ± std over seeds of C2AM vs CAM (and CAM+Constant) run records, as a Markdown table.

    python benchmarks/c2am_compare.py runs/records/cam/synthetic-tiny runs/records/c2am/synthetic-tiny

Each argument is a folder of run records (``<hash>-seed<S>.json``, as ``wsssbench run`` writes them);
the table has one row per folder: seed mIoU, pseudo-mask mIoU (percent), and the context confusion
of the seeds and of the pseudo-masks (the mean over classes of the share of a class's false-positive
pixels lying on its own context, percent; lower is better). A second table gives, for each later
folder, the paired difference to the first folder over the seeds both have (same run seed = same
base classifier, so the pairing removes the base classifier's seed-to-seed spread).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from wsssbench.records import load_dir


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main(folders: list[str]) -> str:
    lines = ["| method | seeds | seed mIoU | pseudo-mask mIoU | seed context confusion | pseudo-mask context confusion |",
             "|---|---|---|---|---|---|"]
    by_folder = {folder: sorted(load_dir(Path(folder)), key=lambda r: r["seed"]) for folder in folders}
    for folder in folders:
        records = by_folder[folder]
        def col(get):
            return _stat([v for v in (get(r) for r in records) if v is not None])
        lines.append("| " + " | ".join([
            records[0]["method"] + f" ({Path(folder).name})", ",".join(str(r["seed"]) for r in records),
            col(lambda r: r["metrics"].get("seed_miou")), col(lambda r: r["metrics"].get("pseudo_miou")),
            col(lambda r: (r["extra"].get("seed_context_confusion") or {}).get("mean")),
            col(lambda r: (r["extra"].get("pseudo_context_confusion") or {}).get("mean")),
        ]) + " |")
    base = {r["seed"]: r for r in by_folder[folders[0]]}
    lines += ["", f"Paired difference to {base[min(base)]['method']} ({folders[0]}), same seeds:", "",
              "| method | seeds | Δ seed mIoU | Δ pseudo-mask mIoU | Δ seed ctx. conf. | Δ pseudo ctx. conf. |",
              "|---|---|---|---|---|---|"]
    for folder in folders[1:]:
        records = [r for r in by_folder[folder] if r["seed"] in base]
        def delta(get):
            return _stat([get(r) - get(base[r["seed"]]) for r in records])
        lines.append("| " + " | ".join([
            records[0]["method"] + f" ({Path(folder).name})", ",".join(str(r["seed"]) for r in records),
            delta(lambda r: r["metrics"]["seed_miou"]), delta(lambda r: r["metrics"]["pseudo_miou"]),
            delta(lambda r: r["extra"]["seed_context_confusion"]["mean"]),
            delta(lambda r: r["extra"]["pseudo_context_confusion"]["mean"]),
        ]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
