"""Inputs that used to end in a traceback: each is now one line naming the file, exit 2, and no number."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from wsssbench.cli import app
from wsssbench.data import get_dataset
from wsssbench.errors import UserError


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def loc(tmp_path_factory):
    """A synthetic CUB-layout folder and a complete folder of 2-D score maps for its test split."""
    top = tmp_path_factory.mktemp("loc")
    root = get_dataset("synthetic-loc", root=top / "data", preset="tiny").root
    ds = get_dataset("cub", root=root)
    maps = top / "maps"
    for sample in ds.samples("test"):
        path = maps / f"{sample.id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(0).random((14, 14), dtype=np.float32))
    return root, maps, ds.samples("test")[0].id


def _copy_maps(maps, dst, first_id, payload: bytes):
    import shutil
    shutil.copytree(maps, dst)
    (dst / f"{first_id}.npy").write_bytes(payload)
    return dst


@pytest.mark.parametrize("kind", ["random", "pickle"])
def test_foreign_score_map_is_one_line(loc, tmp_path, kind):
    root, maps, first = loc
    payload = os.urandom(300) if kind == "random" else pickle.dumps({1, 2})
    bad = _copy_maps(maps, tmp_path / "m", first, payload)
    result = _invoke("eval", "wsol", "--root", str(root), "--cams", str(bad), "--json")
    assert result.exit_code == 2 and first in result.output
    assert "Traceback" not in result.output and "maxboxacc" not in result.output


@pytest.mark.parametrize("what", ["folder", "binary"])
def test_unreadable_scores_file_is_one_line(loc, tmp_path, what):
    root, maps, _ = loc
    scores = tmp_path / "scores.csv"
    if what == "folder":
        scores.mkdir()
    else:
        scores.write_bytes(bytes(range(256)))
    result = _invoke("eval", "wsol", "--root", str(root), "--cams", str(maps), "--scores", str(scores))
    assert result.exit_code == 2 and "unreadable scores file" in result.output


@pytest.mark.parametrize("fname, line, message", [
    ("bounding_boxes.txt", "3 24.0 abc", "box of image 3"),
    ("bounding_boxes.txt", "3 1 2 nan 4", "box of image 3"),
    ("bounding_boxes.txt", "3 1 2 -5 4", "box of image 3"),
    ("image_class_labels.txt", "3 x", "class 'x' of image 3"),
    ("train_test_split.txt", "3 x", "image 3 has split 'x'")])
def test_malformed_cub_lines_are_one_line(loc, tmp_path, fname, line, message):
    import shutil
    root, _, _ = loc
    bad = tmp_path / "cub"
    shutil.copytree(root, bad)
    lines = (bad / fname).read_text().splitlines()
    lines[2] = line
    (bad / fname).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        get_dataset("cub", root=bad).samples("test")


def test_split_list_that_is_a_folder(tmp_path):
    import shutil
    root = get_dataset("synthetic", root=tmp_path / "data", preset="tiny").root
    bad = tmp_path / "voc"
    shutil.copytree(root, bad)
    (bad / "ImageSets" / "Segmentation" / "val.txt").unlink()
    (bad / "ImageSets" / "Segmentation" / "val.txt").mkdir()
    with pytest.raises(UserError, match="val.txt: unreadable"):
        get_dataset("synthetic", root=bad).samples("val")


@pytest.mark.parametrize("args", [["run", "cam"], ["data", "synth"], ["data", "masks", "synthetic", "--split", "val"]])
def test_out_that_is_a_file(tmp_path, args):
    target = tmp_path / "afile"
    target.write_text("x")
    result = _invoke(*args, "--out", str(target / "sub"))
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert target.read_text() == "x"


def test_coco_segmentation_that_is_neither_polygon_nor_rle(tmp_path):
    from PIL import Image
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "val2014" / "COCO_val2014_000000000001.jpg")
    data = {"images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "height": 8, "width": 8}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": "oops",
                             "area": 1, "bbox": [0, 0, 1, 1]}],
            "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    ds = get_dataset("coco", root=tmp_path)
    with pytest.raises(UserError, match="instances_val2014.json: malformed annotation of image 1"):
        ds.load_mask(ds.samples("val")[0])


@pytest.mark.parametrize("option", [["--threshold", "nan"], ["--threshold", "inf"], ["--threshold", "15"],
                                    ["--threshold", "-0.1"], ["--alpha", "nan"], ["--alpha", "4,inf"]])
def test_eval_seeds_refuses_non_finite_and_out_of_range_values(tmp_path, option):
    result = _invoke("eval", "seeds", "--dataset", "synthetic", "--root", str(tmp_path / "absent"),
                     "--cams", str(tmp_path), *option)
    assert result.exit_code == 2 and ("not in [0, 1]" in result.output or "finite number > 0" in result.output)
    assert not (tmp_path / "absent").exists()        # refused before any data was read or generated


def test_record_temporaries_are_skipped_and_truncated_records_named_by_table_and_leaderboard_check(tmp_path):
    """The atomic writer's dot-prefixed temporaries are not runs; a record cut short by a crash is named, never
    counted (``table --runs``: one stderr line, the table still renders; ``leaderboard check``: a problem, exit 1)."""
    import shutil

    from wsssbench.reported import LEADERBOARD_DIR
    from wsssbench.records import RunRecord
    board = tmp_path / "leaderboards"
    shutil.copytree(LEADERBOARD_DIR, board, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    runs = board / "reproduced" / "extra"
    rec = RunRecord(method="seam", dataset="voc", dataset_preset=None, config={"rounds": 0}, seed=0,
                    metrics={"seed_miou": 50.0}, protocols={"seed_miou": "seam"}, pretrained=None)
    text = rec.write(runs / "seam0.json").read_text()
    (runs / ".seam0.json.a1b2.json").write_text(text[:40])      # a temporary, itself cut short
    assert _invoke("leaderboard", "check", "--root", str(board)).exit_code == 0
    result = _invoke("table", "conta:2", "--runs", str(runs), "--format", "csv")
    assert result.exit_code == 0 and ".seam0" not in result.output
    (runs / "seam1.json").write_text(text[: len(text) // 2])
    result = _invoke("leaderboard", "check", "--root", str(board))
    assert result.exit_code == 1 and "seam1.json" in result.output and ".seam0" not in result.output
    result = _invoke("table", "conta:2", "--runs", str(runs), "--format", "csv")
    assert result.exit_code == 0 and "seam1.json" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["run", "cam", "--set", "cls_lr=nan"], "cls_lr=nan: not a finite number"),
    (["run", "cam", "--set", "crf_alpha=-inf"], "crf_alpha=-inf: not a finite number"),
    (["run", "cam", "--confounding", "nan"], "confounding must lie in [0, 1] (got nan)"),
    (["run", "cam", "--confounding", "1.5"], "confounding must lie in [0, 1] (got 1.5)"),
    (["data", "synth", "--confounding", "inf"], "confounding must lie in [0, 1] (got inf)")])
def test_run_and_synth_refuse_non_finite_settings_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path / "data"))
    result = _invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1.5"])
def test_eval_wsol_refuses_a_threshold_that_is_not_a_fraction(loc, value):
    root, maps, _ = loc
    result = _invoke("eval", "wsol", "--root", str(root), "--cams", str(maps), "--threshold", value, "--json")
    assert result.exit_code == 2 and f"--threshold must be in [0, 1); got {value}" in result.output
    assert "maxboxacc" not in result.output
