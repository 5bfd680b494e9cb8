"""evaluate_wsol end to end: input layouts, ground-truth layouts, class scores, bad input, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wsssbench.cams import save_cams
from wsssbench.cli.app import app
from wsssbench.data import get_dataset
from wsssbench.errors import UserError
from wsssbench.metrics.localization import evaluate_wsol

# (image id, class, box x0 y0 x1 y1 in a 224x224 image); the last image's map misses its box
IMAGES = [("a/1.jpg", 0, (20, 30, 120, 150)), ("a/2.jpg", 1, (0, 0, 223, 100)),
          ("b/3.jpg", 2, (60, 60, 200, 223)), ("b/4.jpg", 3, (10, 10, 60, 60))]
NUM_CLASSES = 8


def box_map(box, miss=False) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((224, 224), np.float32)
    if miss:
        m[150:220, 150:220] = 1
    else:
        m[y0:y1, x0:x1] = 1          # contour box [x0, y0, x1, y1] (x + w = x1)
    return m


@pytest.fixture()
def meta(tmp_path) -> Path:
    d = tmp_path / "meta" / "test"
    d.mkdir(parents=True)
    (d / "image_ids.txt").write_text("".join(f"{i}\n" for i, _, _ in IMAGES))
    (d / "class_labels.txt").write_text("".join(f"{i},{c}\n" for i, c, _ in IMAGES))
    (d / "image_sizes.txt").write_text("".join(f"{i},224,224\n" for i, _, _ in IMAGES))
    (d / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, _, b in IMAGES)
                                        + "b/4.jpg,0,0,5,5\n")           # a second box for image 4
    return d


def write_maps(root: Path, layout: str) -> Path:
    rng = np.random.default_rng(0)
    for k, (image_id, cls, box) in enumerate(IMAGES):
        gt_map = box_map(box, miss=k == 3)
        path = root / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        others = [c for c in (5, 6) if c != cls]
        keys = [others[0], cls, others[1]]                               # the true class is never first
        planes = np.stack([rng.random((224, 224)), gt_map, rng.random((224, 224))]).astype(np.float32)
        if layout == "wsolevaluation":
            np.save(f"{path}.npy", gt_map)
        elif layout == "irn":
            np.save(f"{path}.npy", {"keys": np.array(keys), "high_res": planes})
        else:
            save_cams(f"{path}.npz", keys, planes, norm="none")
    return root


def scores_csv(path: Path) -> Path:
    # ranks of the true class: 0, 2, 6, 0
    ranks = [0, 2, 6, 0]
    lines = ["image_id," + ",".join(f"score_{c}" for c in range(NUM_CLASSES))]
    for (image_id, cls, _), rank in zip(IMAGES, ranks):
        s = np.linspace(1.0, 0.1, NUM_CLASSES)
        order = [c for c in range(NUM_CLASSES) if c != cls]
        order.insert(rank, cls)
        row = np.empty(NUM_CLASSES)
        row[order] = s
        lines.append(image_id + "," + ",".join(f"{v:.3f}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("layout", ["wsolevaluation", "irn", "toolkit"])
def test_layouts_agree_and_topk_hand_worked(meta, tmp_path, layout):
    cams = write_maps(tmp_path / layout, layout)
    ds = get_dataset("wsolmeta", meta.parent)
    out = evaluate_wsol(ds, "test", cams, scores=scores_csv(tmp_path / "s.csv"))
    assert out["gt_known"] == 75.0 and out["maxboxacc"] == 75.0 and out["maxboxacc_v2"] == 75.0
    assert (out["top1_cls"], out["top5_cls"]) == (50.0, 75.0)
    assert (out["top1_loc"], out["top5_loc"]) == (25.0, 50.0)
    assert out["protocol"] == "wsolevaluation" and out["frame"] == "224" and out["threshold"] == 0.2
    native = evaluate_wsol(ds, "test", cams, frame="native", sweep=True)
    assert native["threshold_selected_on_gt"] is True and "top1_loc" not in native
    assert native["gt_known"] == 75.0 and native["best_threshold"]["gt_known"] == 0.0


def test_scores_from_the_cam_files(meta, tmp_path):
    cams = tmp_path / "c"
    for image_id, cls, box in IMAGES:
        scores = np.zeros(NUM_CLASSES, np.float32)
        scores[cls] = 1.0 if image_id != "b/3.jpg" else -1.0
        save_cams(cams / f"{image_id}.npz", [cls], box_map(box)[None], norm="none", scores=scores)
    out = evaluate_wsol(get_dataset("wsolmeta", meta), "test", cams)
    assert out["top1_cls"] == 75.0 and out["top5_cls"] == 75.0 and out["gt_known"] == 100.0


def error_of(fn) -> str:
    with pytest.raises(UserError) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_inputs_name_the_file(meta, tmp_path):
    ds = lambda: get_dataset("wsolmeta", meta)                    # noqa: E731
    cams = write_maps(tmp_path / "w", "wsolevaluation")
    (cams / "a" / "2.jpg.npy").rename(tmp_path / "moved.npy")
    assert "2.jpg.npy" in error_of(lambda: evaluate_wsol(ds(), "test", cams))
    (tmp_path / "moved.npy").rename(cams / "a" / "2.jpg.npy")
    np.save(cams / "stray.jpg.npy", np.zeros((4, 4)))
    assert "stray.jpg.npy" in error_of(lambda: evaluate_wsol(ds(), "test", cams))
    (cams / "stray.jpg.npy").unlink()
    good_map = np.load(cams / "a" / "1.jpg.npy")
    np.save(cams / "a" / "1.jpg.npy", np.full((8, 8), np.inf))
    assert "1.jpg.npy" in error_of(lambda: evaluate_wsol(ds(), "test", cams))
    np.save(cams / "a" / "1.jpg.npy", good_map)

    irn = tmp_path / "irn"
    write_maps(irn, "irn")
    np.save(irn / "a" / "1.jpg.npy", {"keys": np.array([4]), "high_res": np.zeros((1, 8, 8))})
    assert "1.jpg.npy" in error_of(lambda: evaluate_wsol(ds(), "test", irn))

    bad = scores_csv(tmp_path / "s.csv")
    bad.write_text(bad.read_text().replace("1.000", "nan", 1))
    assert "s.csv" in error_of(lambda: evaluate_wsol(ds(), "test", cams, scores=bad))

    loc = meta / "localization.txt"
    good = loc.read_text()
    loc.write_text(good.replace("0,0,223,100", "0,0,230,100"))
    assert "localization.txt" in error_of(lambda: evaluate_wsol(ds(), "test", cams))
    loc.write_text(good)
    labels = meta / "class_labels.txt"
    labels.write_text(labels.read_text() + "c/9.jpg,1\n")
    assert "class_labels.txt" in error_of(ds)


def test_cli_json_and_exit_codes(meta, tmp_path):
    cams = write_maps(tmp_path / "w", "wsolevaluation")
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "wsol", "--metadata", str(meta), "--cams", str(cams), "--json",
                              "--plot", str(tmp_path / "curve.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["gt_known"] == 75.0 and set(out["maxboxacc_v2_by_iou"]) == {"30", "50", "70"}
    assert (tmp_path / "curve.png").stat().st_size > 0
    res = runner.invoke(app, ["eval", "wsol", "--metadata", str(meta), "--cams", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["eval", "wsol", "--metadata", str(meta), "--cams", str(cams), "--sweep"])
    assert res.exit_code == 0 and "MaxBoxAccV2" in res.stdout


def test_cub_official_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "images" / "002.B").mkdir(parents=True)
    rows = [(1, "001.A/x.jpg", 1, 0, (10, 5, 40, 30)), (2, "002.B/y.jpg", 2, 0, (0, 0, 80, 50)),
            (3, "001.A/z.jpg", 1, 1, (1, 1, 2, 2))]
    for _, rel, _, _, _ in rows:
        Image.new("RGB", (80, 60)).save(root / "images" / rel)
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, *_ in rows))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _, _ in rows))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t, _ in rows))
    (root / "bounding_boxes.txt").write_text("".join(f"{i} {' '.join(map(str, b))}\n" for i, *_, b in rows))
    cams = tmp_path / "cams"
    for _, rel, _, t, (x, y, w, h) in rows:
        if t == 0:
            m = np.zeros((60, 80), np.float32)
            m[y:y + h, x:x + w] = 1
            (cams / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(cams / f"{rel}.npy", m)
    res = CliRunner().invoke(app, ["eval", "wsol", "--dataset", "cub", "--root", str(tmp_path), "--cams", str(cams),
                                   "--frame", "native", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["gt_known"] == 100.0


def test_pxap_where_masks_exist(meta, tmp_path):
    from dataclasses import replace
    ds = get_dataset("wsolmeta", meta)
    samples = []
    for s, (_, _, box) in zip(ds.samples("test"), IMAGES):
        mask = box_map(box).astype(np.uint8)
        mask[0, 0] = 255                                                  # ignored pixel
        path = tmp_path / "masks" / f"{s.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path)
        samples.append(replace(s, mask=path))
    ds._cache["test"] = samples
    cams = tmp_path / "c"
    for image_id, _, box in IMAGES:
        (cams / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(cams / f"{image_id}.npy", box_map(box))
    assert evaluate_wsol(ds, "test", cams)["pxap"] == 100.0


def test_one_wsol_preset(meta, tmp_path, monkeypatch):
    """evaluate_wsol, the method config and `eval wsol` take their defaults from the one WSOL preset."""
    import inspect

    from wsssbench.cli import eval_wsol as cli
    from wsssbench.methods_api import CamConfig
    from wsssbench.metrics.wsol_preset import WSOL, WsolPreset

    preset = (WSOL.protocol, WSOL.frame, WSOL.threshold)
    params = inspect.signature(evaluate_wsol).parameters
    assert tuple(params[k].default for k in ("protocol", "frame", "threshold")) == preset
    assert (CamConfig.wsol_protocol, CamConfig.wsol_frame, CamConfig.wsol_threshold) == preset
    monkeypatch.setattr(cli, "WSOL", WsolPreset(threshold=0.6))
    cams = write_maps(tmp_path / "w", "wsolevaluation")
    res = CliRunner().invoke(app, ["eval", "wsol", "--metadata", str(meta), "--cams", str(cams), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["threshold"] == 0.6
