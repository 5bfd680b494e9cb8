"""CI regression guard: `wsssbench run cam` on synthetic `tiny` must reproduce the committed record.

The reference is ``leaderboards/reproduced/cam-synthetic-tiny-seed0.json``. CPU runs use one torch
thread (``WSSSBENCH_THREADS``) and are deterministic per seed, so on one machine the numbers repeat
exactly; across CPUs and torch builds float sums may differ in the last bits and flip a few pixels,
hence the tolerance. A change of the defaults fails the config check: re-run this file as a script
(``python tests/test_regression_tiny.py``) to rewrite the reference, and commit it with the change.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from wsssbench.harness import run_method
from wsssbench.io import write_json
from wsssbench.records import validate

REFERENCE = Path(__file__).resolve().parent.parent / "leaderboards" / "reproduced" / "cam-synthetic-tiny-seed0.json"
TOLERANCE = 1.0     # mIoU points (percent): the most a number may move before CI fails


def run_tiny(out: Path):
    return run_method("cam", dataset="synthetic", dataset_options={"preset": "tiny"}, seed=0, out=out)


def test_tiny_cam_matches_the_committed_record(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    assert not validate(ref)
    rec = run_tiny(tmp_path)
    assert rec.config == ref["config"], "the cam defaults changed: regenerate the reference (see module docstring)"
    assert set(rec.metrics) == set(ref["metrics"]) == {"seed_miou", "pseudo_miou", "seg_miou"}
    moved = {k: (ref["metrics"][k], rec.metrics[k]) for k in ref["metrics"]
             if abs(rec.metrics[k] - ref["metrics"][k]) > TOLERANCE}
    assert not moved, f"numbers moved by more than {TOLERANCE} points (reference, now): {moved}"
    # well above the all-background floor: the pipeline learns something at every stage
    for key, split in (("seed_miou", "train"), ("pseudo_miou", "train"), ("seg_miou", "val")):
        assert rec.metrics[key] > 2 * background_floor(split, rec.protocols[key], tmp_path / "floor"), key


def background_floor(split: str, protocol: str, folder: Path) -> float:
    """mIoU of predicting background everywhere, scored by the evaluation core."""
    import numpy as np

    from wsssbench.data import get_dataset
    from wsssbench.metrics.segmentation import evaluate_masks
    from wsssbench.stages.expand import save_mask
    ds = get_dataset("synthetic", preset="tiny")
    for sample in ds.samples(split):
        save_mask(folder / split / f"{sample.id}.png", np.zeros(ds.load_mask(sample).shape, np.uint8))
    return evaluate_masks(ds, split, folder / split, protocol=protocol)["miou"]


if __name__ == "__main__":      # regenerate the reference record
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    record = run_tiny(out).to_dict()
    record["artifacts"] = {}      # machine-specific paths; the record is the evidence, not the cache
    write_json(REFERENCE, record)
    print(f"wrote {REFERENCE}: {record['metrics']}")
