"""The harness end to end on a small stand-in dataset: stages, cache, records, CLI errors."""
from __future__ import annotations

import json

import pytest
import torch

from wsssbench import harness
from wsssbench.errors import UserError
from wsssbench.methods_api import METHODS, CamConfig, make_config, parse_value, stage_fields
from wsssbench.records import validate

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = {"cls_epochs": "3", "cls_size": "40", "cam_scales": "1.0,0.5", "rw_epochs": "2",
        "seg_iterations": "20", "seg_size": "40"}


@pytest.fixture
def squares(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data")
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    return ds


def test_every_method_has_defaults_and_a_summary():
    for name in METHODS:
        m = METHODS.get(name)
        assert issubclass(m.config, CamConfig) and m.summary
        make_config(m)


def test_set_overrides_parse_by_type_and_reject_bad_input():
    cfg = make_config(METHODS.get("cam"), {"cls_epochs": "3", "cam_flip": "false", "weights": "none",
                                            "cam_scales": "1, 2"})
    assert (cfg.cls_epochs, cfg.cam_flip, cfg.weights, cfg.cam_scales) == (3, False, None, (1.0, 2.0))
    with pytest.raises(UserError, match="no setting 'bogus'"):
        make_config(METHODS.get("cam"), {"bogus": "1"})
    with pytest.raises(UserError, match="cls_epochs=three"):
        make_config(METHODS.get("cam"), {"cls_epochs": "three"})
    with pytest.raises(UserError):
        parse_value(bool, "maybe")


def test_stage_fields_split_the_config_by_prefix():
    cfg = CamConfig()
    assert set(stage_fields(cfg, "classifier")) == {"backbone", "weights"} | {
        k for k in vars(cfg) if k.startswith("cls_")}
    assert "seed_threshold" not in stage_fields(cfg, "expand")


@pytest.mark.parametrize("expansion", ["rw", "crf"])
def test_cam_end_to_end_then_cached(squares, tmp_path, expansion):
    out = tmp_path / "runs"
    rec = harness.run_method("cam", overrides={**FAST, "expansion": expansion}, out=out)
    assert not validate(rec.to_dict())
    assert set(rec.metrics) == {"seed_miou", "pseudo_miou", "seg_miou"}
    assert rec.pretrained is None and rec.protocols["seg_miou"] == "deeplab"
    saved = json.loads(open(rec.artifacts["record"]).read())
    assert saved["metrics"] == rec.metrics
    assert (out / "records").exists() and rec.artifacts["figure"].endswith(".png")
    # the repeat hits the cache for every stage and gives identical numbers
    before = sorted(p.name for p in (out / "cache").iterdir())
    again = harness.run_method("cam", overrides={**FAST, "expansion": expansion}, out=out)
    assert again.metrics == rec.metrics
    assert sorted(p.name for p in (out / "cache").iterdir()) == before
    # a change of the seed threshold re-scores the seeds but trains nothing again
    third = harness.run_method("cam", overrides={**FAST, "expansion": expansion, "seed_threshold": "0.3"}, out=out)
    assert third.artifacts["classifier"] == rec.artifacts["classifier"]


def test_seed_changes_the_run_but_cpu_runs_are_deterministic(squares, tmp_path):
    over = {**FAST, "expansion": "none", "seg_enabled": "false"}
    a = harness.run_method("cam", overrides=over, out=tmp_path / "a")
    b = harness.run_method("cam", overrides=over, out=tmp_path / "b")
    c = harness.run_method("cam", overrides=over, out=tmp_path / "c", seed=1)
    assert a.metrics == b.metrics
    assert a.artifacts["classifier"] != c.artifacts["classifier"]


def test_interrupted_stage_leaves_no_finished_folder(squares, tmp_path, monkeypatch):
    from wsssbench.stages import infer_cams

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(infer_cams, "run", boom)
    over = {**FAST, "expansion": "none", "seg_enabled": "false"}
    with pytest.raises(KeyboardInterrupt):
        harness.run_method("cam", overrides=over, out=tmp_path)
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert any(n.startswith("classifier-") for n in names)          # finished, kept
    assert not any(n.startswith("cams-") for n in names)            # unfinished: only a .tmp folder
    monkeypatch.undo()
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: squares)
    rec = harness.run_method("cam", overrides=over, out=tmp_path)   # resumes at the CAM stage
    assert rec.metrics["seed_miou"] > 0


def test_bad_input_is_one_line(squares, tmp_path):
    with pytest.raises(UserError, match="unknown method 'nope'"):
        harness.run_method("nope", out=tmp_path)
    with pytest.raises(UserError, match="expansion=walk"):
        harness.run_method("cam", overrides={"expansion": "walk"}, out=tmp_path)
    assert not (tmp_path / "cache").exists()


def test_split_without_masks_is_refused_before_training(squares, tmp_path, monkeypatch):
    import dataclasses
    train = [dataclasses.replace(s, mask=None) for s in squares.samples("train")]
    monkeypatch.setattr(squares, "samples", lambda split: train if split == "train" else squares._splits[split])
    with pytest.raises(UserError, match="without ground-truth masks"):
        harness.run_method("cam", overrides=FAST, out=tmp_path)
    assert not (tmp_path / "cache").exists()


def test_wsol_path_on_synthetic_loc(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path / "data"))
    rec = harness.run_method("cam", dataset="synthetic-loc", dataset_options={"preset": "tiny"},
                             overrides={"cls_epochs": "1", "cam_scales": "1.0"}, out=tmp_path / "runs")
    assert set(rec.metrics) == {"top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known", "maxboxacc_v2"}
    assert all(0 <= v <= 100 for v in rec.metrics.values())
    assert rec.metrics["top1_loc"] <= rec.metrics["top1_cls"] and rec.metrics["top5_cls"] >= rec.metrics["top1_cls"]
    assert not validate(rec.to_dict())


def test_records_name_their_weights_files_by_checksum(tmp_path):
    import hashlib

    from wsssbench.methods_api import CamConfig
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x" * 3_000_000)            # over the 1 MiB read chunk
    cfg = CamConfig(weights=str(weights), seg_weights="torchvision")
    assert harness.weights_checksums(cfg) == {"weights": hashlib.sha256(b"x" * 3_000_000).hexdigest()}
    assert harness.weights_checksums(CamConfig()) == {}
