"""The `cicam` box protocol against shaofeifei11/CI-CAM's own test code on a fixture.

The expected numbers below are what CI-CAM's ``utils.py`` (``create_rois``, ``compute_gt_rois``,
``pred_bbox_resize_imagesize``, ``localization_acc``, looped as ``tmp_test.py`` does) gives on
:func:`fixture_inputs`; regenerate them with

    python benchmarks/cicam_box_side_by_side.py /path/to/CI-CAM-checkout --json
"""
from __future__ import annotations

import numpy as np
import pytest

from wsssbench.cams import save_cams
from wsssbench.data import get_dataset
from wsssbench.metrics.localization import (BOX_PROTOCOLS, cicam_box, cicam_boxes, cicam_frame, cicam_iou,
                                            cicam_to_image, cicam_weights, evaluate_wsol)
from wsssbench.metrics.wsol_inputs import ScoreMaps


def fixture_inputs():
    """Ten images, six classes, 14 × 14 CAMs (VGG-16's at 224 px): noise in [-1, 1] and, per image, an
    object every class's CAM dips on (the combination weighs all but the top class negatively);
    crop-pass scores (the true class first in the first five images), image sizes (H, W), labels and
    ground-truth boxes (x0, y0, x1, y1) near the object."""
    rng = np.random.default_rng(2021)
    n, c = 10, 6
    cams = rng.integers(-10, 11, size=(n, c, 14, 14)).astype(np.float32) / np.float32(10)
    sizes = rng.integers(120, 500, size=(n, 2))
    boxes = []
    for i in range(n):
        y0, x0 = rng.integers(0, 8, size=2)
        h, w = rng.integers(3, 7, size=2)
        for k in range(c):
            dy, dx = rng.integers(-1, 2, size=2)
            ys, xs = slice(max(0, y0 + dy), y0 + dy + h), slice(max(0, x0 + dx), x0 + dx + w)
            cams[i, k, ys, xs] -= np.float32(rng.integers(30, 70) / 10)
        H, W = sizes[i]
        j = rng.integers(-12, 13, size=4)
        boxes.append([max(0, x0 * W // 14 + j[0]), max(0, y0 * H // 14 + j[1]),
                      min(W - 1, (x0 + w) * W // 14 + j[2]), min(H - 1, (y0 + h) * H // 14 + j[3])])
    labels = rng.integers(0, c, size=n)
    scores = np.stack([rng.permutation(c) + rng.integers(0, 9, size=c) / 10 for _ in range(n)]).astype(np.float32)
    scores[np.arange(n // 2), labels[: n // 2]] = 9.5
    return cams, scores, sizes, labels, np.array(boxes)


# CI-CAM's code on fixture_inputs(): the boxes in the 224 frame (θ 0), scaled to the image at θ 0, 0.3, 0.6
REF_FRAME_BOXES = [[42, 43, 174, 152], [72, 0, 201, 97], [69, 82, 183, 200], [0, 29, 92, 152], [83, 92, 190, 187],
                   [30, 98, 164, 224], [75, 105, 199, 189], [74, 0, 203, 118], [0, 106, 101, 224],
                   [82, 11, 194, 209]]
REF_IMAGE_BOXES = {
    0.0: [[22, 70, 93, 247], [53, 0, 149, 60], [144, 43, 382, 107], [0, 39, 59, 204], [130, 100, 297, 204],
          [26, 201, 147, 460], [99, 138, 262, 248], [82, 0, 227, 232], [0, 206, 169, 437], [147, 12, 349, 243]],
    0.3: [[24, 79, 88, 244], [57, 0, 146, 57], [192, 56, 367, 105], [5, 43, 56, 200], [142, 107, 278, 195],
          [26, 203, 147, 460], [104, 140, 257, 239], [85, 0, 212, 226], [0, 210, 165, 437], [160, 101, 299, 193]],
    0.6: [[36, 127, 71, 228], [80, 0, 138, 40], [213, 60, 323, 102], [9, 60, 51, 186], [169, 119, 246, 187],
          [52, 261, 139, 460], [118, 150, 240, 231], [93, 47, 199, 173], [21, 228, 150, 413], [185, 113, 270, 186]],
}
REF_ACCURACY = {"top1_cls": 0.6, "top5_cls": 1.0, "top1_loc": 0.2, "top5_loc": 0.3, "gt_known": 0.3}


def per_class(i, cams, scores, keys=None) -> ScoreMaps:
    keys = np.arange(cams.shape[1]) if keys is None else np.asarray(keys)
    return ScoreMaps(path=None, plane=cams[i, keys[0]], keys=keys, planes=cams[i, keys], scores=scores[i])


@pytest.mark.parametrize("theta", [0.0, 0.3, 0.6])
def test_boxes_equal_ci_cams_code(theta):
    cams, scores, sizes, _, _ = fixture_inputs()
    proto = BOX_PROTOCOLS.get("cicam")
    for i in range(len(cams)):
        frame = proto.score_map(per_class(i, cams, scores), (224, 224))
        box = cicam_box(frame, theta)
        if theta == 0.0:
            assert box.tolist() == REF_FRAME_BOXES[i]
        image = cicam_to_image(box[None], (224, 224), (int(sizes[i][1]), int(sizes[i][0])))[0]
        assert image.tolist() == REF_IMAGE_BOXES[theta][i], (i, theta)
        # the grid gives the same box at that θ
        grid = cicam_boxes(frame, np.array([0.0, 0.3, 0.6, theta]))
        assert grid.largest[grid.level_of[-1]].tolist() == box.tolist()


def test_combined_map_is_the_one_map_the_protocol_also_takes():
    """The combination as a loop: γ_k = −(k/(C−1))² over the classes ranked by score, minus the minimum;
    given as one plane (what ``wsol_maps`` saves) it boxes the same; absent classes count as zero."""
    cams, scores, _, _, _ = fixture_inputs()
    proto = BOX_PROTOCOLS.get("cicam")
    c = cams.shape[1]
    assert cicam_weights(c).tolist() == pytest.approx([-(k / (c - 1)) ** 2 for k in range(c)])
    for i in range(3):
        loop = sum(-(k / (c - 1)) ** 2 * cams[i, cls].astype(np.float64)
                   for k, cls in enumerate(np.argsort(-scores[i], kind="stable")))
        loop -= loop.min()
        one = ScoreMaps(path=None, plane=loop.astype(np.float32), keys=np.arange(c),
                        planes=np.repeat(loop[None].astype(np.float32), c, 0))
        np.testing.assert_allclose(proto.score_map(one, (14, 14)), loop, atol=1e-5)
        assert cicam_box(proto.score_map(one, (224, 224)), 0.0).tolist() == REF_FRAME_BOXES[i]
        sub = [1, 3, 4]
        partial = sum(-(k / (c - 1)) ** 2 * cams[i, cls].astype(np.float64) * (cls in sub)
                      for k, cls in enumerate(np.argsort(-scores[i], kind="stable")))
        np.testing.assert_allclose(proto.score_map(per_class(i, cams, scores, sub), (14, 14)),
                                   partial - partial.min(), atol=1e-5)


def test_iou_and_scaling_follow_the_reference_conventions():
    # +1 areas: [0, 0, 9, 9] vs [0, 0, 4, 9] is 50 / 100
    assert cicam_iou(np.array([[0, 0, 9, 9]]), np.array([[0.0, 0.0, 4.0, 9.0]]))[0, 0] == 0.5
    # the box's exclusive stop 224 scales to the width and is clamped there; truncation, not rounding
    assert cicam_to_image(np.array([[1, 1, 224, 224]]), (224, 224), (300, 100)).tolist() == [[1, 0, 300, 100]]
    # a constant map: no foreground, the box [0, 0, 0, 0] (CI-CAM's code raises on argmax([]))
    assert cicam_box(np.zeros((224, 224), np.float32), 0.0).tolist() == [0, 0, 0, 0]


def write_fixture(tmp_path, layout: str):
    """The fixture as wsolevaluation metadata and toolkit maps: per-class CAMs + scores, or one map."""
    cams, scores, sizes, labels, boxes = fixture_inputs()
    meta = tmp_path / "meta" / "test"
    meta.mkdir(parents=True)
    ids = [f"{i}.jpg" for i in range(len(cams))]
    (meta / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (meta / "class_labels.txt").write_text("".join(f"{i},{c}\n" for i, c in zip(ids, labels)))
    (meta / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (h, w) in zip(ids, sizes)))
    (meta / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, b in zip(ids, boxes)))
    maps = tmp_path / layout
    proto = BOX_PROTOCOLS.get("cicam")
    for k, image_id in enumerate(ids):
        if layout == "per-class":
            save_cams(maps / f"{image_id}.npz", list(range(cams.shape[1])), cams[k], norm="none", scores=scores[k])
        else:
            one = proto.score_map(per_class(k, cams, scores), (14, 14))
            save_cams(maps / f"{image_id}.npz", list(range(cams.shape[1])), np.repeat(one[None], cams.shape[1], 0),
                      norm="none", scores=scores[k])
    return meta, maps


@pytest.mark.parametrize("layout", ["per-class", "one-map"])
def test_accuracies_equal_ci_cams_code(tmp_path, layout):
    meta, maps = write_fixture(tmp_path, layout)
    out = evaluate_wsol(get_dataset("wsolmeta", meta), "test", maps, protocol="cicam", threshold=None)
    assert out["threshold"] == 0.0 and out["protocol"] == "cicam"
    for key, value in REF_ACCURACY.items():
        assert out[key] == pytest.approx(100 * value), key


def test_one_pass_boxes_equal_ndimage_per_mask():
    """upper_set_boxes against scipy.ndimage.label on every upper level set of small maps with ties."""
    from wsssbench.metrics.localization import _largest_slice_box
    from wsssbench.metrics.upper_boxes import upper_set_boxes
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.integers(0, 6, size=rng.integers(1, 12, size=2)).astype(np.float32)
        counts = np.array(sorted({0, *((m > v).sum() for v in np.unique(m))}))
        ranked = np.sort(m, axis=None)[::-1]
        for k, box in zip(counts, upper_set_boxes(m, counts)):
            mask = m >= ranked[k - 1] if k else np.zeros(m.shape, bool)
            assert box.tolist() == _largest_slice_box(mask).tolist()


def test_grid_equals_a_loop_over_theta():
    cams, scores, _, _, _ = fixture_inputs()
    frame = BOX_PROTOCOLS.get("cicam").score_map(per_class(1, cams, scores), (224, 224))
    thetas = np.arange(0, 1, 0.01)
    grid = cicam_boxes(frame, thetas)
    for k, theta in enumerate(thetas):
        assert grid.largest[grid.level_of[k]].tolist() == cicam_box(frame, float(theta)).tolist(), theta


def test_eval_wsol_all_protocols_side_by_side_and_the_theta_curve(tmp_path):
    import json

    from typer.testing import CliRunner

    from wsssbench.cli.app import app
    meta, maps = write_fixture(tmp_path, "per-class")
    args = ["eval", "wsol", "--metadata", str(meta), "--cams", str(maps), "--protocol", "all"]
    res = CliRunner().invoke(app, [*args, "--json", "--curve", str(tmp_path / "fig4.png")])
    assert res.exit_code == 0, res.output
    by = json.loads(res.stdout)["by_protocol"]
    assert {k: v["threshold"] for k, v in by.items()} == {"cicam": 0.0, "nlccam": 0.12, "wsolevaluation": 0.2}
    assert by["cicam"]["top1_loc"] == pytest.approx(100 * REF_ACCURACY["top1_loc"])
    assert len(by["cicam"]["curve"]["top1_loc"]) == len(by["cicam"]["curve"]["threshold"])
    assert (tmp_path / "fig4.png").stat().st_size > 0
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "cicam (θ 0)" in res.stdout and "nlccam (θ 0.12)" in res.stdout, res.output


def test_table_shows_each_run_under_a_second_box_protocol(tmp_path, monkeypatch):
    """cicam:1 (reproduce.yaml box_protocols: [wsolevaluation]): the run's own Top-1 Loc and its saved maps
    scored again under wsolevaluation at θ 0.2, each beside the printed number; Top-1 Cls only once."""
    import json

    import wsssbench.data
    from wsssbench.tables import get_table, render, reproduce
    meta, maps = write_fixture(tmp_path, "per-class")
    ds = get_dataset("wsolmeta", meta)
    monkeypatch.setattr(wsssbench.data, "get_dataset", lambda name, root=None, **options: ds)
    own = evaluate_wsol(ds, "test", maps, protocol="cicam", threshold=None)
    rec = {"method": "cicam", "dataset": "fixture", "dataset_preset": None, "pretrained": None, "seed": 0,
           "metrics": {k: own[k] for k in ("top1_cls", "top1_loc")}, "config": {"wsol_frame": "224"},
           "protocols": {"top1_cls": "cicam/224", "top1_loc": "cicam/224"}, "artifacts": {"maps": str(maps)}}
    table = get_table("cicam:1")
    assert table.box_protocols == ("wsolevaluation",)
    reproduced = reproduce(table, [], {"VGG-CI-CAM(ours)": [rec]})
    out = json.loads(render(table, "json", reproduced))
    cells = next(r for r in out["rows"] if r["key"] == "VGG-CI-CAM(ours)")["cells"]
    second = evaluate_wsol(ds, "test", maps, protocol="wsolevaluation", threshold=None)
    assert cells["Top-1 Loc(%)"]["reproduced"]["mean"] == pytest.approx(100 * REF_ACCURACY["top1_loc"])
    assert cells["Top-1 Loc(%)"]["reproduced_by_protocol"]["wsolevaluation"]["mean"] == second["top1_loc"]
    assert "reproduced_by_protocol" not in cells["Top-1 Cls(%)"]
    assert "Top-1 Loc(%) (ours, wsolevaluation)" in out["header"]
    assert "Top-1 Cls(%) (ours, wsolevaluation)" not in out["header"]
    assert "top1_loc@wsolevaluation=wsolevaluation/224 θ 0.2" in " ".join(out["notes"])
