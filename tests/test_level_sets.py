"""The one-pass contour boxes of all 256 masks against ``cv2.findContours`` run mask by mask."""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from wsssbench.metrics.level_sets import level_set_boxes
from wsssbench.metrics.localization import mask_boxes


def check_every_level(u8: np.ndarray) -> int:
    """Assert the boxes and largest box of every mask ``u8 > t``; returns the undecided levels."""
    spans, boxes, largest, undecided = level_set_boxes(u8)
    for t in range(256):
        mask = u8 > t
        here = boxes[(spans[:, 0] <= t) & (t <= spans[:, 1])]
        if not mask.any():
            assert len(here) == 0 and not largest[t].any() and not undecided[t], t
            continue
        ref_boxes, ref_largest = mask_boxes(mask)
        assert Counter(map(tuple, here.tolist())) == Counter(map(tuple, ref_boxes.tolist())), t
        if not undecided[t]:
            assert largest[t].tolist() == ref_largest.tolist(), t
    return int(undecided.sum())


def u8_of(a) -> np.ndarray:
    return np.asarray(a, dtype=np.uint8)


def test_ring_has_its_hole_contour():
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 200
    ring[3, 3] = 0
    spans, boxes, largest, undecided = level_set_boxes(ring)
    at = lambda t: sorted(boxes[(spans[:, 0] <= t) & (t <= spans[:, 1])].tolist())   # noqa: E731
    assert at(0) == [[1, 1, 6, 6], [2, 2, 5, 5]] == at(199)
    assert at(200) == [] and largest[0].tolist() == [1, 1, 6, 6] and not undecided.any()
    check_every_level(ring)


@pytest.mark.parametrize("u8", [
    # a diamond ring: its hole contour has the outer contour's polygon area
    u8_of([[0, 9, 0], [9, 0, 9], [0, 9, 0]]),
    # a blob inside another's hole, at a higher level
    u8_of(np.pad(np.pad(np.full((3, 3), 250), 2, constant_values=0), 1, constant_values=120)),
    # a 1-pixel line (zero polygon area) beside a single pixel: an area tie at 0
    u8_of([[5, 5, 5, 5, 0, 0], [0, 0, 0, 0, 0, 7]]),
    # two equal squares: a tie the pass leaves to cv2
    u8_of(np.kron([[1, 0, 1]], np.full((3, 3), 255))),
    # foreground touching every border (clipping of x1 / y1)
    u8_of(np.full((4, 5), 3)),
    u8_of([[1]]), u8_of([[0, 0]]), u8_of(np.zeros((3, 3))),
])
def test_hand_made_maps(u8):
    check_every_level(u8)


def test_equal_squares_are_undecided_and_drawn_by_cv2():
    assert check_every_level(u8_of(np.kron([[1, 0, 1]], np.full((3, 3), 255)))) == 255


def random_u8(rng) -> np.ndarray:
    h, w = rng.integers(1, 40, 2)
    kind = rng.integers(5)
    if kind == 0:                                          # white noise: many nodes and holes
        s = rng.random((h, w))
    elif kind == 1:                                        # smooth, CAM-like
        s = cv2.GaussianBlur(rng.random((h, w)), (0, 0), rng.uniform(0.5, 4))
    elif kind == 2:                                        # few levels: plateaus
        s = rng.integers(0, 4, (h, w)) / 3.0
    elif kind == 3:                                        # overlapping rectangles: nesting, holes
        s = np.zeros((h, w))
        for _ in range(rng.integers(1, 6)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            s[y:y + rng.integers(1, 9), x:x + rng.integers(1, 9)] += rng.random()
    else:                                                  # binary
        s = rng.integers(0, 2, (h, w)) * 1.0
    s = s - s.min()
    return (s / s.max() * 255 if s.max() > 0 else s).astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_match_cv2_at_every_level(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        check_every_level(random_u8(rng))


def test_cam_like_frame_is_decided_everywhere():
    rng = np.random.default_rng(7)
    cam = cv2.resize(rng.random((14, 14)), (224, 224), interpolation=cv2.INTER_CUBIC)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    assert check_every_level((cam * 255).astype(np.uint8)) == 0
