"""`wsssbench data synth|info|masks` and their bad-input exits."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from test_data_readers import _coco_fixture, voc_root  # noqa: F401  (fixture)
from wsssbench.cli import app
from wsssbench.data import get_dataset
from wsssbench.data.synthetic import PRESETS, Preset

MICRO = Preset("micro", num_classes=4, sizes=((40, 40),), size_weights=(1.0,), objects=(0.6, 0.4),
               scale=(0.16, 0.28), seg=(24, 8, 8), loc=(8, 4), confounding=0.8)


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_synth_info_masks_on_synthetic(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)
    out = tmp_path / "syn"
    res = _run("data", "synth", "--preset", "micro", "--seed", 2, "--confounding", 0.5, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    res = _run("data", "info", "synthetic", "--root", out, "--json")
    info = json.loads(res.output)
    assert info["num_classes"] == 5 and info["splits"] == {"train": 8, "train_aug": 24, "val": 8}
    assert info["synthetic"]["seed"] == 2 and info["synthetic"]["confounding"] == 0.5
    loc = json.loads(_run("data", "info", "synthetic-loc", "--root", out, "--json").output)
    assert loc["splits"] == {"test": 4, "train": 8} and loc["num_classes"] == 4
    res = _run("data", "masks", "synthetic", "--root", out, "--split", "val", "--out", tmp_path / "gt", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["count"] == 8
    ds = get_dataset("synthetic", root=out)
    for sample in ds.samples("val"):
        with Image.open(tmp_path / "gt" / f"{sample.id}.png") as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), ds.load_mask(sample))


def test_masks_are_the_evaluation_ground_truth_for_coco(tmp_path):
    top, _ = _coco_fixture(tmp_path)
    res = _run("data", "masks", "coco", "--root", top, "--split", "val", "--out", tmp_path / "gt", "-q")
    assert res.exit_code == 0, res.output
    ds = get_dataset("coco", root=top)
    for sample in ds.samples("val"):
        with Image.open(tmp_path / "gt" / f"{sample.id}.png") as im:
            assert np.array_equal(np.asarray(im), ds.load_mask(sample))
    info = json.loads(_run("data", "info", "coco", "--root", top, "--json").output)
    assert info["num_classes"] == 4 and info["splits"] == {"val": 3}


def test_info_voc_table(voc_root):
    top, _ = voc_root
    res = _run("data", "info", "voc", "--root", top)
    text = " ".join(res.output.split())              # rich wraps at the terminal width (a long tmp path)
    assert res.exit_code == 0 and "train_aug" in text and "21 classes" in text, res.output


@pytest.mark.parametrize("case", ["missing split", "coco without categories", "unknown option", "localization masks"])
def test_bad_input_exits_2_naming_the_file(tmp_path, case, voc_root, monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)
    top, _ = voc_root
    if case == "missing split":
        args = ("data", "masks", "voc", "--root", top, "--split", "test", "--out", tmp_path / "o")
        where = "unknown split 'test'"
    elif case == "coco without categories":
        coco_top, _ = _coco_fixture(tmp_path / "c", drop_categories=True)
        args = ("data", "info", "coco", "--root", coco_top)
        where = "instances_val2014.json: has no `categories`"
    elif case == "unknown option":
        args = ("data", "info", "voc", "--root", top, "-o", "preset=tiny")
        where = "dataset 'voc'"
    else:
        args = ("data", "masks", "synthetic-loc", "--root", tmp_path / "x", "-o", "preset=micro", "--split", "test",
                "--out", tmp_path / "o")
        where = "localization dataset"
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert where in res.output and res.output.startswith("error: ")
