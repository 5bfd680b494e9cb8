"""Localization metrics against hand-worked cases and an independent per-θ loop (the reference's way)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsssbench.metrics.localization import (BOX_PROTOCOLS, THETA_GRID, BoxAccumulator, PxAPAccumulator, box_iou,
                                            mask_boxes, resize_box, summarize, wsolevaluation_boxes,
                                            wsolevaluation_frame)

PROTO = BOX_PROTOCOLS.get("wsolevaluation")


def naive_best_ious(scoremap, gt, thetas):
    """Per θ: threshold, findContours, (all boxes, largest box) → best IoU. Written as the reference reads."""
    u8 = (scoremap * 255).astype(np.uint8)
    h, w = u8.shape
    v1, v2 = [], []
    for theta in thetas:
        _, binary = cv2.threshold(u8, int(theta * np.max(u8)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]

        def box(c):
            x, y, bw, bh = cv2.boundingRect(c)
            return [x, y, min(x + bw, w - 1), min(y + bh, h - 1)]
        if len(contours) == 0:
            all_boxes = big = [[0, 0, 0, 0]]
        else:
            all_boxes = [box(c) for c in contours]
            big = [box(max(contours, key=cv2.contourArea))]
        ious = lambda boxes: max(iou_plus_one(b, g) for b in boxes for g in gt)   # noqa: E731
        v1.append(ious(big))
        v2.append(ious(all_boxes))
    return np.array(v1), np.array(v2)


def iou_plus_one(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def boxes_at(lb, k):
    mask = lb.level_of[k]
    return lb.boxes[(lb.spans[:, 0] <= mask) & (mask <= lb.spans[:, 1])]


def random_scoremap(rng, size=64):
    cam = rng.random((rng.integers(4, 12), rng.integers(4, 12)))
    if rng.random() < 0.3:
        cam[rng.random(cam.shape) < 0.3] = 0            # plateaus and isolated blobs
    return wsolevaluation_frame(cam, (size, size))


def test_iou_plus_one_hand_worked():
    # 10x10 box vs its left half (5x10): 50 / 100 = exactly 0.5
    assert box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]]))[0, 0] == 0.5
    # single pixels: identical → 1, adjacent → 0; a zero box is one pixel under "+1"
    assert box_iou(np.array([[3, 3, 3, 3]]), np.array([[3, 3, 3, 3], [4, 3, 4, 3]])).tolist() == [[1.0, 0.0]]
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 1, 1]]))[0, 0] == 0.25


def test_iou_exactly_half_is_a_hit():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:9] = True           # contour box [0, 0, 9, 10]
    gt = np.array([[0, 0, 4, 10]])   # 5x11 = 55 of 10x11 = 110 → 0.5
    acc = BoxAccumulator(1)
    acc.update(wsolevaluation_boxes(mask.astype(float), np.array([0.5])), gt)
    assert box_iou(mask_boxes(mask)[1][None], gt)[0, 0] == 0.5
    assert acc.v1.tolist() == [1] and acc.v2.tolist() == [[1, 1, 0]]


def test_hole_adds_a_box_and_line_has_zero_area():
    ring = np.zeros((12, 12), bool)
    ring[1:11, 1:11] = True
    ring[4:7, 4:7] = False
    boxes, largest = mask_boxes(ring)
    assert boxes.tolist() == [[1, 1, 11, 11], [3, 3, 8, 8]]          # outer, then the hole's border
    assert largest.tolist() == [1, 1, 11, 11]
    # a long 1-pixel line has polygon area 0: a 2x2 square (area 1) is the "largest" contour
    m = np.zeros((10, 20), bool)
    m[2, 1:18] = True
    m[6:8, 5:7] = True
    boxes, largest = mask_boxes(m)
    assert sorted(boxes.tolist()) == [[1, 2, 18, 3], [5, 6, 7, 8]]
    assert largest.tolist() == [5, 6, 7, 8]


def test_border_clipping_and_empty_mask():
    m = np.zeros((10, 12), bool)
    m[5:, 8:] = True
    assert mask_boxes(m)[0].tolist() == [[8, 5, 11, 9]]              # x1, y1 clipped to W-1, H-1
    boxes, largest = mask_boxes(np.zeros((10, 12), bool))
    assert boxes.tolist() == [[0, 0, 0, 0]] and largest.tolist() == [0, 0, 0, 0]


def test_all_zero_constant_and_nan_maps_frame_to_zeros():
    for cam in (np.zeros((7, 9)), np.full((7, 9), 3.0), np.where(np.eye(7, 9) > 0, np.nan, 1.0)):
        assert not wsolevaluation_frame(cam, (224, 224)).any()
    lb = wsolevaluation_boxes(np.zeros((224, 224)), THETA_GRID)
    assert lb.boxes.tolist() == [[0, 0, 0, 0]] and (lb.level_of == 0).all()


def test_frame_is_opencv_bicubic_then_minmax():
    rng = np.random.default_rng(0)
    cam = rng.random((28, 28)).astype(np.float32)
    ref = cv2.resize(cam.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
    ref = (ref - ref.min()) / (ref - ref.min()).max()
    np.testing.assert_array_equal(wsolevaluation_frame(cam, (224, 224)), ref)
    # non-square frames: cv2 takes (W, H)
    assert wsolevaluation_frame(cam, (30, 50)).shape == (30, 50)


def test_uint8_strictness_at_the_threshold():
    # u8 levels 0, 51, 255: θ = 0.2 cuts at int(0.2 * 255) = 51, and 51 itself is background
    s = np.zeros((10, 10))
    s[1:3, 1:3] = 51 / 255 + 1e-9
    s[6:8, 6:8] = 1.0
    lb = wsolevaluation_boxes(s, np.array([0.2, 0.19]))
    assert (s * 255).astype(np.uint8)[1, 1] == 51
    at = lambda k: boxes_at(lb, k).tolist()   # noqa: E731
    assert [6, 6, 8, 8] in at(0) and [1, 1, 3, 3] not in at(0)
    assert [1, 1, 3, 3] in at(1)                                        # int(0.19 * 255) = 48 < 51


def test_threshold_levels_match_python_int_of_numpy_product():
    for m in (0, 1, 37, 128, 254, 255):
        u8 = np.zeros((4, 4), np.uint8)
        u8[0, 0] = m
        expected = [int(t * np.max(u8)) for t in list(np.arange(0, 1, 0.001))]
        got = np.floor(THETA_GRID * float(m)).astype(int).tolist()
        assert got == expected


def test_several_gt_boxes_best_pair_counts():
    m = np.zeros((50, 50))
    m[30:40, 30:40] = 1.0
    acc = BoxAccumulator(1)
    acc.update(wsolevaluation_boxes(m, np.array([0.5])), np.array([[0, 0, 10, 10], [30, 30, 40, 40]]))
    assert acc.v1.tolist() == [1]


@pytest.mark.parametrize("seed", range(6))
def test_level_mapping_equals_per_theta_loop(seed):
    rng = np.random.default_rng(seed)
    thetas = THETA_GRID[::7] if seed % 2 else np.arange(0, 1, 0.01)
    for _ in range(3):
        s = random_scoremap(rng)
        gt = [sorted(rng.integers(0, 64, 2)) for _ in range(2)]
        gt = np.array([[gt[0][0], gt[1][0], gt[0][1], gt[1][1]], [5, 5, 40, 30]])
        lb = wsolevaluation_boxes(s, thetas)
        v1, v2 = naive_best_ious(s, gt.tolist(), thetas)
        fast_v2 = np.array([box_iou(boxes_at(lb, k), gt).max() for k in range(len(thetas))])
        fast_v1 = box_iou(lb.largest, gt).max(1)[lb.level_of]
        np.testing.assert_array_equal(fast_v1, v1)
        np.testing.assert_array_equal(fast_v2, v2)


def test_perfect_map_gives_full_marks_and_max_dominates():
    acc = BoxAccumulator(len(THETA_GRID) + 1)
    thetas = np.append(THETA_GRID, 0.2)
    for x0, y0, x1, y1 in ((10, 20, 100, 150), (0, 0, 223, 223), (50, 60, 51, 61)):
        s = np.zeros((224, 224))
        s[y0:y1 + 1, x0:x1 + 1] = 1.0
        gt = np.array([[x0, y0, min(x1 + 1, 223), min(y1 + 1, 223)]])
        acc.update(wsolevaluation_boxes(s, thetas), gt, rank=0)
    out = summarize(acc, THETA_GRID, sweep=False, fixed=len(thetas) - 1, with_scores=True)
    assert out["gt_known"] == out["top1_loc"] == out["maxboxacc"] == out["maxboxacc_v2"] == 100.0
    curve = np.array(out["curve"]["maxboxacc"])
    assert out["maxboxacc"] == curve.max() and (curve <= out["maxboxacc"]).all()


def test_accumulators_merge_additively():
    rng = np.random.default_rng(3)
    maps = [random_scoremap(rng) for _ in range(4)]
    gt = np.array([[5, 5, 30, 30]])
    whole, a, b = BoxAccumulator(100), BoxAccumulator(100), BoxAccumulator(100)
    thetas = np.arange(0, 1, 0.01)
    for i, s in enumerate(maps):
        lb = wsolevaluation_boxes(s, thetas)
        whole.update(lb, gt, rank=i)
        (a if i < 2 else b).update(lb, gt, rank=i)
    a.merge(b)
    assert a.count == 4 and np.array_equal(a.v2, whole.v2) and np.array_equal(a.top5, whole.top5)
    assert a.top1_cls == 1


def test_pxap_against_direct_precision_recall():
    rng = np.random.default_rng(1)
    acc = PxAPAccumulator()
    maps, gts = [], []
    for _ in range(3):
        s = random_scoremap(rng, 32)
        g = (rng.random((32, 32)) < s).astype(np.uint8)
        g[0, :5] = 255                                    # ignored
        acc.update(s, g)
        maps.append(s)
        gts.append(g)
    s, g = np.concatenate([m.ravel() for m in maps]), np.concatenate([x.ravel() for x in gts])
    # direct: predicted positive iff score ≥ θ, at θ = 3, 2, 1, 0.999, ..., 0
    edges = np.append(THETA_GRID, [1.0, 2.0, 3.0])[::-1]
    tp = np.array([((s >= t) & (g == 1)).sum() for t in edges[1:]])
    fp = np.array([((s >= t) & (g == 0)).sum() for t in edges[1:]])
    prec = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    rec = tp / (g == 1).sum()
    direct = (prec[1:] * np.diff(rec))[(tp + fp)[1:] > 0].sum() * 100
    assert acc.compute() == pytest.approx(direct, abs=1e-9)
    perfect = PxAPAccumulator()
    perfect.update(np.array([[0.0, 1.0]]), np.array([[0, 1]]))
    assert perfect.compute() == 100.0


def test_resize_box_truncates():
    assert resize_box((60, 27, 385, 331), (500, 335), (224, 224)) == (26, 18, 172, 221)
    assert PROTO.frame_size == (224, 224)
