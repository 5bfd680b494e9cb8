"""`wsssbench compare`: the paired image bootstrap and the seed-pair interval."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsssbench import compare, harness
from wsssbench.cli import app

from harness_standins import SquaresDataset

REPO = Path(__file__).resolve().parent.parent
C2AM_RECORDS = REPO / "leaderboards" / "reproduced" / "c2am"


def _confusions(rng, n, c=3, bias=0):
    """Per-image (C·C + C) confusions of random label maps; ``bias`` more correct pixels per image."""
    rows = []
    for _ in range(n):
        m = rng.integers(0, 20, (c, c))
        m[np.diag_indices(c)] += 30 + bias
        rows.append(np.concatenate([m.reshape(-1), np.zeros(c, np.int64)]))
    return np.stack(rows).astype(np.int64)


def test_bootstrap_equals_a_plain_loop_on_the_same_draws():
    rng = np.random.default_rng(1)
    a, b = _confusions(rng, 12), _confusions(rng, 12)
    fast = compare.bootstrap_delta(a, b, "irn", 3, resamples=200, seed=7, chunk=64)
    draws = np.random.default_rng(7)
    slow = []
    for start in range(0, 200, 64):
        for counts in draws.multinomial(12, np.full(12, 1 / 12), size=min(64, 200 - start)):
            sa = sum(int(k) * a[i] for i, k in enumerate(counts))
            sb = sum(int(k) * b[i] for i, k in enumerate(counts))
            slow.append(compare.miou(sb, "irn", 3) - compare.miou(sa, "irn", 3))
    assert np.array_equal(fast, np.asarray(slow))


def test_identical_runs_are_not_resolved_and_a_better_one_is():
    rng = np.random.default_rng(2)
    a = _confusions(rng, 30)
    same = compare.image_bootstrap(a, a.copy(), "irn", 3, 300, 0)
    assert (same["low"], same["high"], same["resolved"]) == (0.0, 0.0, False)
    better = a.copy()
    better[:, [0, 4, 8]] += 40          # more correct pixels on every image, nothing else changed
    up = compare.image_bootstrap(a, better, "irn", 3, 300, 0)
    assert up["resolved"] and up["low"] > 0


def test_seed_pair_interval_by_hand():
    got = compare.seed_pairs([1.0, 2.0, 3.0])
    half = 4.302652729749456 * 1.0 / np.sqrt(3)      # t(0.975, 2) · std / sqrt(n)
    assert got["mean"] == 2.0 and got["std"] == 1.0 and not got["resolved"]     # low = 2 − 2.48 < 0
    assert got["low"] == pytest.approx(2.0 - half, abs=1e-9) and got["high"] == pytest.approx(2.0 + half, abs=1e-9)
    assert compare.seed_pairs([2.0, 2.1, 1.9])["resolved"]
    assert compare.seed_pairs([1.0]) is None
    assert not compare.seed_pairs([-1.0, 1.5, 0.2])["resolved"]


def test_cli_on_the_committed_c2am_records():
    result = CliRunner().invoke(app, ["compare", str(C2AM_RECORDS / "cam"), str(C2AM_RECORDS / "c2am"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    seeds = out["metrics"]["seed_miou"]
    assert seeds["image_bootstrap"] is None            # the records' artifacts are not committed
    assert seeds["seed_pairs"]["n"] == 3 and seeds["seed_pairs"]["resolved"] is False
    assert seeds["delta"] == pytest.approx(0.0511, abs=1e-4)
    bad = CliRunner().invoke(app, ["compare", str(C2AM_RECORDS / "cam"), str(REPO / "nowhere")])
    assert bad.exit_code == 2


def test_image_bootstrap_on_two_real_runs_matches_the_evaluation(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    fast = {"cls_epochs": "2", "cls_size": "40", "cam_scales": "1.0", "seg_iterations": "6", "seg_size": "40",
            "expansion": "crf"}
    a = harness.run_method("cam", overrides=fast, out=tmp_path / "r").to_dict()
    b = harness.run_method("cam", overrides={**fast, "seed_threshold": "0.3", "crf_alpha": "8"},
                           out=tmp_path / "r").to_dict()
    for metric in compare.METRICS:      # the per-image confusions add up to the records' own numbers
        for rec in (a, b):
            split, preds = compare.run_predictions(rec, metric, ds)
            total = compare.image_confusions(ds, split, preds).sum(0)
            assert compare.miou(total, rec["protocols"][metric], ds.num_classes) == pytest.approx(
                rec["metrics"][metric], abs=1e-9)
    result = compare.compare([a], [b], dataset=ds, resamples=200)
    seed = result["seed_miou"]
    assert seed["seed_pairs"] is None and seed["image_bootstrap"]["resamples"] == 200
    assert seed["image_bootstrap"]["low"] <= seed["delta"] <= seed["image_bootstrap"]["high"]


def test_a_missing_artifact_is_one_line(tmp_path, monkeypatch):
    from wsssbench.errors import UserError
    torch.set_num_threads(1)
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    fast = {"cls_epochs": "1", "cls_size": "40", "cam_scales": "1.0", "seg_enabled": "false", "expansion": "none"}
    rec = harness.run_method("cam", overrides=fast, out=tmp_path / "r").to_dict()
    masks = Path(rec["artifacts"]["masks"]).parent / "train"
    next(masks.glob("*.png")).unlink()
    (Path(rec["artifacts"]["cams"]) / "train" / f"{ds.samples('train')[1].id}.npz").unlink()
    with pytest.raises(UserError, match="mask of image .* is missing"):
        compare.run_predictions(rec, "pseudo_miou", ds)
    with pytest.raises(UserError, match="CAM file is missing"):
        compare.run_predictions(rec, "seed_miou", ds)
