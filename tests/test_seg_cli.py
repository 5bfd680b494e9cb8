"""`wsssbench eval seeds|masks` on a VOC-layout folder: the JSON contract, the formats, and bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from wsssbench.cams import save_cams
from wsssbench.cli import app

IDS = ["2007_000001", "2007_000002", "2007_000003"]


@pytest.fixture()
def voc(tmp_path):
    """A 3-image VOC 2012 layout with palette masks, and matching IRN-style CAMs and label maps."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    cams, masks = tmp_path / "cams", tmp_path / "masks"
    cams.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i, id_ in enumerate(IDS):
        gt = np.zeros((12, 16), np.uint8)
        gt[2:8, 3:10] = 1 + i
        gt[9:, 12:] = 15
        gt[8, :] = 255
        im = Image.fromarray(gt, mode="P")
        im.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
        im.save(root / "SegmentationClass" / f"{id_}.png")
        keys = np.array([i, 14])
        planes = rng.random((2, 12, 16)).astype(np.float32)
        planes[0][gt == 1 + i] += 0.5
        save_cams(cams / f"{id_}.npz", keys, planes / planes.max(axis=(1, 2), keepdims=True))
        Image.fromarray(np.where(rng.random((12, 16)) < 0.8, gt, 0).astype(np.uint8)).save(masks / f"{id_}.png")
    return root, cams, masks


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_seeds_json_contract(voc):
    root, cams, _ = voc
    code, out, _ = run("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", cams, "--threshold", 0.15,
                       "--json")
    assert code == 0
    res = json.loads(out)
    assert res["protocol"] == "irn" and 0 <= res["miou"] <= 100 and res["threshold"] == 0.15
    assert set(res["iou"]) >= {"background", "aeroplane", "person"} and res["iou"]["cat"] is None
    assert res["split"] == "train" and "SegmentationClass" in res["gt"] and res["images"] == 3
    assert res["context_confusion"] is None


def test_seeds_sweep_all_protocols_and_plot(voc, tmp_path):
    root, cams, _ = voc
    png = tmp_path / "curve.png"
    code, out, _ = run("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", cams, "--sweep",
                       "--protocol", "all", "--json", "--plot", png)
    assert code == 0
    res = json.loads(out)
    assert set(res["by_protocol"]) == {"irn", "seam", "deeplab"} and res["spread"] >= 0
    irn = res["by_protocol"]["irn"]
    assert len(irn["curve"]) == 100 and irn["threshold_selected_on_gt"] is True
    assert irn["best_miou"] == max(p["miou"] for p in irn["curve"])
    assert png.stat().st_size > 1000


def test_seeds_table_output(voc):
    root, cams, _ = voc
    code, out, err = run("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", cams, "--alpha", "1,4")
    assert code == 0 and "mIoU" in out and "best alpha" in out and "train split" in err


def test_masks_json(voc):
    root, _, masks = voc
    code, out, _ = run("eval", "masks", "--dataset", "voc", "--root", root, "--masks", masks, "--json")
    assert code == 0 and 0 < json.loads(out)["miou"] <= 100


def test_irn_and_seam_npy_formats_agree_with_npz(voc, tmp_path):
    from wsssbench.cams import load_cams
    root, cams, _ = voc
    irn, seam = tmp_path / "irn", tmp_path / "seam"
    irn.mkdir()
    seam.mkdir()
    for id_ in IDS:
        cf = load_cams(cams / f"{id_}.npz")
        np.save(irn / f"{id_}.npy", {"keys": torch.from_numpy(cf.keys), "cam": torch.zeros(2, 1, 1),
                                     "high_res": cf.cams})
        np.save(seam / f"{id_}.npy", {int(k): p for k, p in zip(cf.keys, cf.cams)})
    outs = [json.loads(run("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", d, "--threshold", 0.2,
                           "--json")[1])["miou"] for d in (cams, irn, seam)]
    assert outs[0] == outs[1] == outs[2]


def _break(kind, cams, masks, root):
    """Damage the inputs one way; return (command folder option, the file the error must name)."""
    id_ = IDS[1]
    f = cams / f"{id_}.npz"
    if kind == "missing":
        f.unlink()
        return "cams", f"{id_}.npz"
    if kind == "extra":
        save_cams(cams / "2099_000001.npz", [0], np.zeros((1, 12, 16), np.float32))
        return "cams", "2099_000001.npz"
    if kind == "empty":
        for p in cams.iterdir():
            p.unlink()
        return "cams", str(cams)
    if kind in ("nan", "shape", "lacks"):
        planes = np.zeros((2, 12, 16), np.float32)
        keys = [1, 14]
        if kind == "nan":
            planes[1, 3, 4] = np.nan
        if kind == "shape":
            planes = np.zeros((2, 12, 15), np.float32)
        if kind == "lacks":
            keys = [1, 6]
        save_cams(f, keys, planes)
        return "cams", f"{id_}.npz"
    if kind == "truncated_cam":
        f.write_bytes(f.read_bytes()[:40])
        return "cams", f"{id_}.npz"
    if kind == "truncated_png":
        m = masks / f"{id_}.png"
        m.write_bytes(m.read_bytes()[:30])
        return "masks", f"{id_}.png"
    if kind == "mask_shape":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / f"{id_}.png")
        return "masks", f"{id_}.png"
    if kind == "mask_range":
        Image.fromarray(np.full((12, 16), 40, np.uint8)).save(masks / f"{id_}.png")
        return "masks", f"{id_}.png"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "extra", "empty", "nan", "shape", "lacks", "truncated_cam",
                                  "truncated_png", "mask_shape", "mask_range"])
def test_bad_input_is_one_line_exit_2(voc, kind):
    root, cams, masks = voc
    what, name = _break(kind, cams, masks, root)
    if what == "cams":
        args = ("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", cams, "--sweep", "--json")
    else:
        args = ("eval", "masks", "--dataset", "voc", "--root", root, "--masks", masks, "--json")
    code, out, err = run(*args)
    assert code == 2, err
    assert out == "" and err.startswith("error: ") and name in err and len(err.strip().splitlines()) == 1


def test_deeplab_refuses_predicted_ignore(voc):
    root, _, masks = voc
    Image.fromarray(np.full((12, 16), 255, np.uint8)).save(masks / f"{IDS[0]}.png")
    code, _, err = run("eval", "masks", "--dataset", "voc", "--root", root, "--masks", masks, "--protocol", "deeplab")
    assert code == 2 and "255" in err
    code, out, _ = run("eval", "masks", "--dataset", "voc", "--root", root, "--masks", masks, "--protocol", "all",
                       "--json")
    assert code == 0 and json.loads(out)["by_protocol"]["deeplab"]["miou"] is None


def test_default_synthetic_dataset_reports_context_confusion(tmp_path, monkeypatch):
    """Seeds on the embedded synthetic benchmark (the default --dataset) carry context confusion."""
    from wsssbench.data import DATASETS, get_dataset
    if "synthetic" not in DATASETS:
        pytest.skip("the synthetic dataset is not on this branch yet")
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path / "data"))
    ds = get_dataset("synthetic")
    cams = tmp_path / "cams"
    rng = np.random.default_rng(0)
    for s in ds.samples("train"):
        gt, ctx = ds.load_mask(s), ds.load_context(s)
        planes = [0.6 * (gt == c) + 0.5 * (ctx == c) + 0.3 * rng.random(gt.shape) for c in s.labels]
        save_cams(cams / f"{s.id}.npz", [c - 1 for c in s.labels], np.array(planes, np.float32))
    code, out, err = run("eval", "seeds", "--cams", cams, "--threshold", 0.5, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["dataset"] == "synthetic" and res["split"] == "train"
    cc = res["context_confusion"]
    assert set(cc["per_class"]) == set(ds.class_names[1:]) and cc["mean"] > 50   # FPs were put on the context


@pytest.mark.parametrize("options, message", [
    (["eval", "seeds", "--threshold", 0.2, "--sweep"], "exactly one of --threshold T, --sweep or --alpha A"),
    (["eval", "seeds"], "exactly one of --threshold T, --sweep or --alpha A"),
    (["eval", "seeds", "--alpha", "0,4"], "alpha must be a finite number > 0"),
    (["eval", "seeds", "--threshold", 0.2, "--protocol", "nope"], "'nope'"),
    (["eval", "seeds", "--threshold", 0.2, "--plot", "curve.png"], "--plot draws a sweep's curve"),
    (["eval", "masks", "--protocol", "nope"], "'nope'"),
])
@pytest.mark.parametrize("dataset", [[], ["--dataset", "voc", "--root", "/nonexistent/VOC2012"]])
def test_option_errors_come_before_the_dataset(tmp_path, monkeypatch, options, message, dataset):
    """Conflicting options are refused before the dataset is read, or (the default synthetic) generated."""
    monkeypatch.setenv("WSSSBENCH_DATA", str(tmp_path / "data"))
    folder = "--cams" if options[1] == "seeds" else "--masks"
    code, out, err = run(*options, *dataset, folder, tmp_path / "inputs")
    assert code == 2 and out == "" and err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()
