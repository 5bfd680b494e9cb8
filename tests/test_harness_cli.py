"""`wsssbench run`: the --json contract, several seeds, and bad input as one line with exit code 2."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from wsssbench import harness
from wsssbench.cli import app

from harness_standins import SquaresDataset

torch.set_num_threads(1)
FAST = ["--set", "cls_epochs=2", "--set", "cls_size=40", "--set", "cam_scales=1.0", "--set", "expansion=none",
        "--set", "seg_enabled=false"]


@pytest.fixture
def squares(tmp_path, monkeypatch):
    ds = SquaresDataset(tmp_path / "data", n=12)
    monkeypatch.setattr(harness, "get_dataset", lambda name, root=None, **options: ds)
    return ds


def invoke(*args):
    return CliRunner().invoke(app, ["run", *args])


def test_json_with_two_seeds(squares, tmp_path):
    res = invoke("cam", *FAST, "--seeds", "0,1", "--out", str(tmp_path / "runs"), "--json")
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["seeds"] == [0, 1] and len(obj["records"]) == 2
    for key in ("seed_miou", "pseudo_miou"):
        assert obj[key] == pytest.approx(sum(obj["per_seed"][key]) / 2)
        assert obj["std"][key] >= 0 and key in obj["mean"]
    assert obj["config"]["cls_epochs"] == 2 and obj["pretrained"] is None
    assert set(obj["timings"]["0"]) >= {"classifier", "cams", "expand"}
    for path in obj["records"]:
        assert json.load(open(path))["method"] == "cam"


def test_table_says_random_init(squares, tmp_path):
    res = invoke("cam", *FAST, "--out", str(tmp_path / "runs"))
    assert res.exit_code == 0, res.output
    assert "seed_miou" in res.stdout and "random initialisation" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown method 'nope'"),
    (["cam", "--set", "bogus=1"], "no setting 'bogus'"),
    (["cam", "--set", "cls_epochs=x"], "cls_epochs=x"),
    (["cam", "--set", "novalue"], "expected key=value"),
    (["cam", "--seeds", "a"], "--seeds"),
    (["cam", "--device", "tpu"], "--device tpu"),
    (["cam", "--weights", "/nonexistent.pth"], "no such file"),
])
def test_bad_input_one_line_exit_2(squares, tmp_path, args, message):
    res = invoke(*args, "--out", str(tmp_path / "runs"))
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_unknown_dataset_exit_2(tmp_path):
    res = invoke("cam", "--dataset", "nope", "--out", str(tmp_path / "runs"))
    assert res.exit_code == 2 and "unknown dataset 'nope'" in res.stderr


@pytest.mark.parametrize("command", [["run", "cam"], ["table", "cpn:1", "--run", "--dataset", "synthetic"]])
@pytest.mark.parametrize("seeds, message", [
    ("0,0,1", "seed(s) 0 given twice"),
    ("1,2,1,2", "seed(s) 1, 2 given twice"),
    ("-1", "expected comma-separated integers"),
    ("1.5", "expected comma-separated integers"),
    ("0,,1", "expected comma-separated integers"),
    ("", "expected comma-separated integers"),
    (str(2**32), "expected comma-separated integers"),
])
def test_run_and_table_refuse_the_same_seed_lists(monkeypatch, tmp_path, command, seeds, message):
    """`run --seeds` and `table --run --seeds` share one parser: a bad list is one line, exit 2, nothing run."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("a run started despite bad --seeds")
    monkeypatch.setattr(harness, "run_method", must_not_run)
    res = CliRunner().invoke(app, [*command, "--seeds", seeds, "--out" if command[0] == "run" else "--runs",
                                   str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: --seeds") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_parse_seeds_keeps_the_order_given():
    from wsssbench.cli.options import parse_seeds
    assert parse_seeds(" 2, 0,1 ") == [2, 0, 1] and parse_seeds(str(2**32 - 1)) == [2**32 - 1]
