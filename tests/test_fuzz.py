"""Property-based fuzzing of every reader and evaluator the CLI exposes: whatever a user's file holds, the
answer is a result or one line naming the file with exit 2 — never a traceback, never a number from an
invalid input (a result's numbers are finite and in range).

Each property damages one file of a small valid layout (CAM archives and their arrays, mask PNGs,
WSOL score maps, class-score CSVs, the metadata and split lists) with bytes or structured values that
hypothesis draws, runs the command, and restores the file. ``derandomize`` keeps CI's examples fixed.
"""
from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from typer.testing import CliRunner

from wsssbench.cams import save_cams
from wsssbench.cli import app

SETTINGS = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 12)), deadline=None, derandomize=not __import__("os").environ.get("FUZZ_EXAMPLES"), database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VOC_IDS = ["2007_000001", "2007_000002"]
WSOL = [("a/1.jpg", 0, (20, 30, 120, 150)), ("b/2.jpg", 1, (0, 0, 223, 100))]


def invoke(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception            # a traceback: the property fails with it
    return result.exit_code, result.stdout, result.stderr


def finite_in_range(obj) -> bool:
    """Every number in a JSON result is finite; every mIoU / accuracy-like number lies in [0, 100]."""
    if isinstance(obj, dict):
        return all(finite_in_range(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_in_range(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


def check(code: int, out: str, err: str, name: str) -> None:
    assert code in (0, 2), (code, out, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], err
    else:
        result = json.loads(out)
        assert finite_in_range(result), out
        for key in ("miou", "maxboxacc", "maxboxacc_v2", "top1_loc", "top5_loc", "gt_known_loc"):
            value = result.get(key)
            assert value is None or 0 <= value <= 100, (key, value)


class Restore:
    """Replace a file's bytes for one example, then put the original back (or remove a created one)."""

    def __init__(self, path: Path):
        self.path = path
        self.saved = path.read_bytes() if path.is_file() else None

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if self.path.is_dir():
            shutil.rmtree(self.path)
        if self.saved is None:
            self.path.unlink(missing_ok=True)
        else:
            self.path.write_bytes(self.saved)


# ------------------------------------------------------------------------------------------ layouts

@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Two VOC images (palette masks, train split), their CAMs and pseudo-masks."""
    top = tmp_path_factory.mktemp("voc")
    root, cams, masks = top / "VOC2012", top / "cams", top / "masks"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    cams.mkdir()
    masks.mkdir()
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(VOC_IDS) + "\n")
    for i, id_ in enumerate(VOC_IDS):
        gt = np.zeros((10, 12), np.uint8)
        gt[2:7, 3:9] = 1 + i
        im = Image.fromarray(gt, mode="P")
        im.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
        im.save(root / "SegmentationClass" / f"{id_}.png")
        planes = np.zeros((1, 10, 12), np.float32)
        planes[0, 2:7, 3:9] = 1
        save_cams(cams / f"{id_}.npz", [i], planes)
        Image.fromarray(gt).save(masks / f"{id_}.png")
    return root, cams, masks


@pytest.fixture(scope="module")
def wsol(tmp_path_factory):
    """Two images in wsolevaluation's metadata layout, their score maps and class scores."""
    top = tmp_path_factory.mktemp("wsol")
    meta, maps = top / "meta" / "test", top / "maps"
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("".join(f"{i}\n" for i, _, _ in WSOL))
    (meta / "class_labels.txt").write_text("".join(f"{i},{c}\n" for i, c, _ in WSOL))
    (meta / "image_sizes.txt").write_text("".join(f"{i},224,224\n" for i, _, _ in WSOL))
    (meta / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, _, b in WSOL))
    for image_id, _, (x0, y0, x1, y1) in WSOL:
        m = np.zeros((224, 224), np.float32)
        m[y0:y1, x0:x1] = 1
        (maps / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{image_id}.npy", m)
    scores = top / "scores.csv"
    scores.write_text("image_id,score_0,score_1\na/1.jpg,0.9,0.1\nb/2.jpg,0.2,0.8\n")
    return meta, maps, scores


def seeds_cmd(voc):
    root, cams, _ = voc
    return ("eval", "seeds", "--dataset", "voc", "--root", root, "--cams", cams, "--threshold", 0.15, "--json")


def masks_cmd(voc):
    root, _, masks = voc
    return ("eval", "masks", "--dataset", "voc", "--root", root, "--masks", masks, "--json")


def wsol_cmd(wsol, scores=False):
    meta, maps, csv = wsol
    return ("eval", "wsol", "--metadata", meta, "--cams", maps, "--json") + (("--scores", csv) if scores else ())


def test_the_layouts_are_valid(voc, wsol):
    for cmd in (seeds_cmd(voc), masks_cmd(voc), wsol_cmd(wsol, scores=True)):
        code, out, err = invoke(*cmd)
        assert code == 0, err


# ------------------------------------------------------------------------------------------ values

any_bytes = st.binary(max_size=400)
dtypes = st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "int8", "complex64"])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=12),
                                              elements=None if dt in ("bool", "uint8", "int8") else
                                              {"allow_nan": True, "allow_infinity": True} if dt.startswith("float")
                                              else None))
small_ints = hnp.arrays("int64", hnp.array_shapes(min_dims=0, max_dims=2, max_side=4),
                        elements=st.integers(-3, 30))
text_lines = st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
                      max_size=6).map("\n".join)
csv_like = st.lists(st.lists(st.one_of(st.sampled_from(["a/1.jpg", "b/2.jpg", "x.jpg", "", "nan", "inf", "-1",
                                                        "224", "0", "1e309", "0.5", "score_0", "image_id"]),
                                       st.text(max_size=6)), max_size=6), max_size=5).map(
    lambda rows: "\n".join(",".join(r) for r in rows))


def npz_bytes(keys, cams, norm) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, keys=keys, cams=cams, norm=np.array(norm))
    return buf.getvalue()


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def png_bytes(array, mode) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


images = st.tuples(hnp.arrays("uint8", st.tuples(st.integers(1, 14), st.integers(1, 14)), elements=st.integers(0, 255)),
                   st.sampled_from(["L", "P", "RGB", "I;16", "1", "RGBA", "LA"]))


# ------------------------------------------------------------------------------------------ properties

@SETTINGS
@given(payload=st.one_of(any_bytes, st.builds(npz_bytes, small_ints, arrays, st.sampled_from(["max", "none", "x"]))))
def test_cam_archives(voc, payload):
    target = voc[1] / f"{VOC_IDS[1]}.npz"
    with Restore(target) as path:
        path.write_bytes(payload)
        check(*invoke(*seeds_cmd(voc)), path.name)


@SETTINGS
@given(payload=st.one_of(any_bytes, images.map(lambda image: png_bytes(*image))))
def test_mask_pngs(voc, payload):
    target = voc[2] / f"{VOC_IDS[0]}.png"
    with Restore(target) as path:
        path.write_bytes(payload)
        check(*invoke(*masks_cmd(voc)), path.name)


@SETTINGS
@given(text=text_lines)
def test_split_lists(voc, text):
    target = voc[0] / "ImageSets" / "Segmentation" / "train.txt"
    with Restore(target) as path:
        path.write_text(text)
        check(*invoke(*masks_cmd(voc)), "")


@SETTINGS
@given(payload=st.one_of(any_bytes, st.builds(npy_bytes, arrays)))
def test_wsol_score_maps(wsol, payload):
    target = wsol[1] / "b" / "2.jpg.npy"
    with Restore(target) as path:
        path.write_bytes(payload)
        check(*invoke(*wsol_cmd(wsol)), "2.jpg.npy")


@SETTINGS
@given(text=st.one_of(csv_like, text_lines))
def test_class_score_csvs(wsol, text):
    with Restore(wsol[2]) as path:
        path.write_text(text)
        check(*invoke(*wsol_cmd(wsol, scores=True)), path.name)


@SETTINGS
@given(name=st.sampled_from(["localization.txt", "class_labels.txt", "image_sizes.txt", "image_ids.txt"]),
       text=st.one_of(csv_like, text_lines))
def test_wsol_metadata(wsol, name, text):
    with Restore(wsol[0] / name) as path:
        path.write_text(text)
        check(*invoke(*wsol_cmd(wsol)), "")
