"""The box of the largest 4-connected component of every upper level set of a map, in one pass.

NL-CCAM's and CI-CAM's box rule labels a mask with ``scipy.ndimage.label`` (4-connectivity) and keeps
the first component (in raster order of its first pixel) of largest *bounding-box* area. Their masks
are upper level sets of the map, so all of them come from adding the pixels in descending order to a
union-find: a component's box area only grows and its first pixel only moves earlier, so the running
best by (area, −first pixel) is the labelled answer at each pixel count. Tested against ndimage.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@nb.njit(cache=True)
def _boxes(order, width, checkpoints):
    n = order.size
    parent = np.full(n, -1, np.int64)
    size = np.zeros(n, np.int64)
    y0 = np.zeros(n, np.int64)
    x0 = np.zeros(n, np.int64)
    y1 = np.zeros(n, np.int64)
    x1 = np.zeros(n, np.int64)
    first = np.zeros(n, np.int64)
    out = np.zeros((checkpoints.size, 4), np.int64)
    best_area, best_first, best_root = -1, 0, -1
    j = 0
    while j < checkpoints.size and checkpoints[j] == 0:
        j += 1
    for s in range(n):
        p = order[s]
        parent[p], size[p], first[p] = p, 1, p
        y0[p] = y1[p] = p // width
        x0[p] = x1[p] = p % width
        root = p
        r, c = p // width, p % width
        for k in range(4):
            if k == 0:
                if r == 0:
                    continue
                q = p - width
            elif k == 1:
                if r == n // width - 1:
                    continue
                q = p + width
            elif k == 2:
                if c == 0:
                    continue
                q = p - 1
            else:
                if c == width - 1:
                    continue
                q = p + 1
            if parent[q] < 0:
                continue
            a, b = _find(parent, root), _find(parent, q)
            if a == b:
                continue
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            y0[a], x0[a] = min(y0[a], y0[b]), min(x0[a], x0[b])
            y1[a], x1[a] = max(y1[a], y1[b]), max(x1[a], x1[b])
            first[a] = min(first[a], first[b])
            root = a
        area = (y1[root] - y0[root] + 1) * (x1[root] - x0[root] + 1)
        if area > best_area or (area == best_area and first[root] < best_first):
            best_area, best_first, best_root = area, first[root], root
        while j < checkpoints.size and checkpoints[j] == s + 1:
            out[j, 0], out[j, 1] = x0[best_root], y0[best_root]
            out[j, 2], out[j, 3] = x1[best_root] + 1, y1[best_root] + 1
            j += 1
    return out


def upper_set_boxes(scoremap: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(len(counts), 4)`` boxes ``[x0, y0, x_stop, y_stop]``: for each pixel count k, the mask of the k
    highest pixels (an upper level set: k must not split equal values), its largest component by box
    area, first in raster order on ties; k = 0 gives ``[0, 0, 0, 0]``. ``counts`` ascending."""
    counts = np.asarray(counts, dtype=np.int64)
    order = np.argsort(-np.asarray(scoremap).ravel(), kind="stable").astype(np.int64)
    return _boxes(order, scoremap.shape[1], counts)
