"""Mean ± std over seeds of C2AM vs CAM (and CAM+Constant) run records, as a Markdown table.

    python benchmarks/c2am_compare.py runs/records/cam/synthetic-tiny runs/records/c2am/synthetic-tiny

Each argument is a folder of run records (``<hash>-seed<S>.json``, as ``wsssbench run`` writes them);
the table has one row per folder: seed mIoU, pseudo-mask mIoU (percent), and the context confusion
of the seeds and of the pseudo-masks (the mean over classes of the share of a class's false-positive
pixels lying on its own context, percent; lower is better).
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
    for folder in folders:
        records = sorted(load_dir(Path(folder)), key=lambda r: r["seed"])
        def col(get):
            return _stat([v for v in (get(r) for r in records) if v is not None])
        lines.append("| " + " | ".join([
            records[0]["method"], ",".join(str(r["seed"]) for r in records),
            col(lambda r: r["metrics"].get("seed_miou")), col(lambda r: r["metrics"].get("pseudo_miou")),
            col(lambda r: (r["extra"].get("seed_context_confusion") or {}).get("mean")),
            col(lambda r: (r["extra"].get("pseudo_context_confusion") or {}).get("mean")),
        ]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
