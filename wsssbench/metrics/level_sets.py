"""The contour boxes of a uint8 map at every threshold, from component trees built in one pass.

wsolevaluation thresholds a uint8 map at up to 255 levels and calls ``cv2.findContours(RETR_TREE)`` on
each mask ``u8 > t``. The masks are nested, so their connected components form a tree, which one
union-find pass over the pixels sorted by value builds for all levels at once (Berger et al., ICIP
2007). Each contour follows from a component:

* an **outer contour** traces an 8-connected component of ``u8 > t`` (a node of the max-tree of
  ``u8``) and has its bounding rect;
* a **hole contour** traces the foreground around a 4-connected component of ``u8 ≤ t`` that does not
  touch the image border (a node of the min-tree): its bounding rect is the hole's, one pixel larger
  on every side;
* the **polygon area** (``cv2.contourArea``) of an outer contour is that of its component with the
  holes filled, counted over 2×2 pixel blocks: 1 per block with all 4 pixels inside, ½ per block with
  3. A hole's polygon lies inside its component's (and cv2 lists a contour before its holes), and a
  component nested in a hole is smaller than the one around it, so a mask's largest contour is an
  outer one. Without holes the areas are exact;
  with holes a component's filled area lies between its own area and its pixel count plus the level's
  hole pixels (and its bounding box). A level whose largest contour these bounds do not single out
  (a tie included: then cv2's contour order decides) is flagged for the caller to draw with cv2.

A max-tree node at level ``l`` whose parent is at level ``lp`` is the same component (same pixels,
box and area) for every ``t`` in ``[lp, l - 1]``; a min-tree node for ``t`` in ``[l, lp - 1]``. So
each component is stored once, with its span of levels, and the cost does not depend on how many
thresholds are asked for. The min-tree is only built up to the last level with a hole, which the
Euler numbers of all levels (one pass over the 2×2 blocks) and the max-tree's component counts give.
Tested against ``cv2.findContours`` level by level on random maps (``tests/test_level_sets.py``).
"""
from __future__ import annotations

import numba as nb
import numpy as np

NUM_LEVELS = 256


@nb.njit(cache=True)
def _sort_pixels(values, height, width, order):
    """Fill ``order`` with the image pixels (padded indices) by ascending value, a counting sort."""
    w2 = width + 2
    start = np.zeros(NUM_LEVELS + 1, np.int64)
    for y in range(1, height + 1):
        for p in range(y * w2 + 1, y * w2 + width + 1):
            start[values[p] + 1] += 1
    for v in range(NUM_LEVELS):
        start[v + 1] += start[v]
    for y in range(1, height + 1):
        for p in range(y * w2 + 1, y * w2 + width + 1):
            order[start[values[p]]] = p
            start[values[p]] += 1


@nb.njit(cache=True)
def _component_tree(values, order, stop, descending, width2, conn8, weight, work):
    """The nodes of a component tree, processing ``stop`` pixels of ``order`` (Berger et al.).

    ``values`` is the padded image (a 1-pixel frame that is never processed), ``width2`` its row
    length; pixels are taken from the end of ``order`` when ``descending`` (max-tree) or from its
    start (min-tree). A node is emitted when it closes, i.e. when a pixel of another value joins it,
    as ``(level, parent level, x0, y0, x1, y1, pixels, weight)`` in padded coordinates with
    ``weight`` summed over its pixels; components still open after ``stop`` pixels get parent level
    -1. ``work`` holds scratch arrays: parent, top, rank, root data, nodes (see :func:`_workspace`).
    """
    n = values.size
    zpar, top, rank, data, nodes = work[0][:n], work[1][:n], work[2][:n], work[3][:n], work[4]
    zpar[:] = -1                                 # union-find parent; -1: not processed yet
    rank[:] = 0                                  # union by rank; top: a root's last processed pixel
    m = 0                                        # data, at a root: x0, y0, x1, y1, pixels, weight
    # The 8 neighbours in ring order (NW, N, NE, E, SE, S, SW, W). Neighbours next to each other on
    # the ring touch, so a run of processed ring neighbours is one component and needs one merge.
    ring = np.array([-width2 - 1, -width2, -width2 + 1, 1, width2 + 1, width2, width2 - 1, -1])
    inv_width2 = 1.0 / width2
    for i in range(stop):
        p = order[order.size - 1 - i] if descending else order[i]
        vp = values[p]
        zpar[p] = p
        y0 = y1 = int((p + 0.5) * inv_width2)
        x0 = x1 = p - y0 * width2
        count = 1
        w = weight[p]
        done = 0
        for k in range(8):
            if zpar[p + ring[k]] >= 0:
                done |= 1 << k
        before = ((done << 1) | (done >> 7)) & 255           # bit k: ring neighbour k - 1 is processed
        if conn8:
            merge = done & ~before                             # the first neighbour of each run
        else:                                                  # N, E, S, W; one per corner-joined run
            merge = done & 0b10101010 & ~(before & ((done << 2) | (done >> 6)))
        if done == 255 and merge == 0:                         # the whole ring is one run
            merge = 2
        root = p
        for k in range(8):
            if not (merge >> k) & 1:
                continue
            q = p + ring[k]
            r = q
            while zpar[r] != r:
                r = zpar[r]
            while zpar[q] != r:                                # path compression
                nxt = zpar[q]
                zpar[q] = r
                q = nxt
            if r == root:
                continue
            if values[top[r]] != vp:                           # r's component closes: a node
                nodes[m, 0] = values[top[r]]
                nodes[m, 1] = vp
                for j in range(6):
                    nodes[m, 2 + j] = data[r, j]
                m += 1
            x0 = min(x0, data[r, 0])
            y0 = min(y0, data[r, 1])
            x1 = max(x1, data[r, 2])
            y1 = max(y1, data[r, 3])
            count += data[r, 4]
            w += data[r, 5]
            if rank[root] < rank[r]:
                root, r = r, root
            zpar[r] = root
            if rank[root] == rank[r]:
                rank[root] += 1
        top[root] = p
        data[root, 0] = x0
        data[root, 1] = y0
        data[root, 2] = x1
        data[root, 3] = y1
        data[root, 4] = count
        data[root, 5] = w
    for i in range(stop):                                      # the components still open
        p = order[order.size - 1 - i] if descending else order[i]
        if zpar[p] == p:
            nodes[m, 0] = values[top[p]]
            nodes[m, 1] = -1
            for j in range(6):
                nodes[m, 2 + j] = data[p, j]
            m += 1
    return nodes[:m]


@nb.njit(cache=True)
def _block_pass(values, height, width, area2):
    """Per-pixel area weights (into ``area2``) and four times the Euler number of every level, from the 2×2 blocks.

    A block adds 1 to the area of the components holding its lowest pixel and ½ to those holding
    only its three highest (``area2``: twice that, on the lowest and second-lowest pixel). Euler
    numbers (8-connected foreground, Gray 1971): 4E = Q1 − Q3 − 2·Q_diagonal over all blocks,
    the frame included.
    """
    w2 = width + 2
    area2[:] = 0
    euler4 = np.zeros(NUM_LEVELS + 1, np.int64)
    for y in range(height + 1):
        for x in range(width + 1):
            # the corners a b / c d sorted by value (a sorting network); a-d and b-c are diagonal
            p0, p1, p2, p3 = y * w2 + x, y * w2 + x + 1, (y + 1) * w2 + x, (y + 1) * w2 + x + 1
            if values[p1] < values[p0]:
                p0, p1 = p1, p0
            if values[p3] < values[p2]:
                p2, p3 = p3, p2
            if values[p2] < values[p0]:
                p0, p2 = p2, p0
            if values[p3] < values[p1]:
                p1, p3 = p3, p1
            if values[p2] < values[p1]:
                p1, p2 = p2, p1
            s1, s2, s3, s4 = values[p0], values[p1], values[p2], values[p3]
            area2[p0] += 1
            area2[p1] += 1
            euler4[s3] += 1                            # one pixel in for t in [s3, s4)
            euler4[s4] -= 1
            euler4[s1] -= 1                            # three in for t in [s1, s2)
            euler4[s2] += 1
            if abs(p2 - p3) == w2 + 1 or abs(p2 - p3) == w2 - 1:
                euler4[s2] -= 2                        # two diagonal ones in for t in [s2, s3)
                euler4[s3] += 2
    for t in range(NUM_LEVELS):
        euler4[t + 1] += euler4[t]
    return euler4[:NUM_LEVELS]


def level_set_boxes(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All contour boxes of the masks ``u8 > t``, t = 0…255, and each mask's largest contour.

    Returns ``(spans, boxes, largest, undecided)``: box i (``[x, y, x + w, y + h]`` of the bounding
    rect, x1/y1 clipped to W−1/H−1, as wsolevaluation draws it) is a contour of every mask t in
    ``spans[i, 0]…spans[i, 1]``; ``largest[t]`` is the box of mask t's contour of largest polygon
    area, unless ``undecided[t]``. Empty masks (t ≥ u8.max()) have no box here.
    """
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    return _level_set_boxes(u8, _workspace((u8.shape[0] + 2) * (u8.shape[1] + 2)))


_WORKSPACE: list[tuple[np.ndarray, ...]] = []


def _workspace(size: int) -> tuple[np.ndarray, ...]:
    """Scratch arrays for a padded image of ``size`` pixels, kept from call to call.

    Fresh arrays cost about a third of the time in page faults. The kernel holds the GIL, so one
    set serves the process. Values, weights, sorted pixels, union-find parent, top, rank, root data,
    nodes (sized for the worst case, one per pixel; only the rows written are ever touched).
    """
    if not _WORKSPACE or _WORKSPACE[0][0].size < size:
        _WORKSPACE[:] = [(np.empty(size, np.uint8), np.empty(size, np.int32), np.empty(size, np.int32),
                          np.empty(size, np.int32), np.empty(size, np.int32), np.empty(size, np.uint8),
                          np.empty((size, 6), np.int32), np.empty((size, 8), np.int32))]
    return _WORKSPACE[0]


@nb.njit(cache=True)
def _level_set_boxes(u8, work):
    height, width = u8.shape
    w2 = width + 2
    n = (height + 2) * w2
    values, order = work[0][:n], work[2][:height * width]
    values[:] = 0
    for y in range(height):
        for x in range(width):
            values[(y + 1) * w2 + x + 1] = u8[y, x]
    area2 = work[1][:n]
    euler4 = _block_pass(values, height, width, area2)
    _sort_pixels(values, height, width, order)
    trees = work[3:]
    outer = _component_tree(values, order, order.size, True, w2, True, area2, trees).copy()

    # Components per level minus the Euler number: the holes per level; the min-tree stops after the last.
    components = np.zeros(NUM_LEVELS + 1, np.int64)
    for i in range(outer.shape[0]):
        components[max(outer[i, 1], 0)] += 1
        components[outer[i, 0]] -= 1
    last_hole = -1
    for t in range(NUM_LEVELS):
        if t > 0:
            components[t] += components[t - 1]
        if 4 * components[t] != euler4[t]:
            last_hole = t
    stop = 0
    while stop < order.size and values[order[stop]] <= last_hole:
        stop += 1
    lower = _component_tree(values, order, stop, False, w2, False, area2, trees)

    spans = np.empty((outer.shape[0] + lower.shape[0], 2), np.int64)
    boxes = np.empty((outer.shape[0] + lower.shape[0], 4), np.int64)
    hole_pixels = np.zeros(NUM_LEVELS + 1, np.int64)
    k = 0
    for i in range(lower.shape[0]):
        x0, y0, x1, y1 = lower[i, 2], lower[i, 3], lower[i, 4], lower[i, 5]
        if x0 > 1 and y0 > 1 and x1 < width and y1 < height:            # off the border: a hole
            hi = last_hole if lower[i, 1] < 0 else min(lower[i, 1] - 1, last_hole)
            spans[k, 0], spans[k, 1] = lower[i, 0], hi
            boxes[k, 0], boxes[k, 1] = x0 - 2, y0 - 2                     # padded → image, one out
            boxes[k, 2], boxes[k, 3] = min(x1 + 1, width - 1), min(y1 + 1, height - 1)
            hole_pixels[lower[i, 0]] += lower[i, 6]
            hole_pixels[hi + 1] -= lower[i, 6]
            k += 1
    for t in range(NUM_LEVELS):
        hole_pixels[t + 1] += hole_pixels[t]

    # Largest contour: the component whose least filled area beats every other's greatest.
    best = np.full(NUM_LEVELS, -1, np.int64)           # twice the largest lower bound, and its node
    best_node = np.full(NUM_LEVELS, -1, np.int64)
    high = np.full(NUM_LEVELS, -1, np.int64)           # twice the two largest upper bounds
    high_node = np.full(NUM_LEVELS, -1, np.int64)
    second = np.full(NUM_LEVELS, -1, np.int64)
    for i in range(outer.shape[0]):
        lo = max(outer[i, 1], 0)
        if lo >= outer[i, 0]:
            continue
        spans[k, 0], spans[k, 1] = lo, outer[i, 0] - 1
        boxes[k, 0], boxes[k, 1] = outer[i, 2] - 1, outer[i, 3] - 1
        boxes[k, 2], boxes[k, 3] = min(outer[i, 4], width - 1), min(outer[i, 5], height - 1)
        k += 1
        box2 = 2 * (outer[i, 4] - outer[i, 2]) * (outer[i, 5] - outer[i, 3])
        for t in range(lo, outer[i, 0]):
            upper = outer[i, 7] if hole_pixels[t] == 0 else min(box2, 2 * (outer[i, 6] + hole_pixels[t]))
            if outer[i, 7] > best[t]:
                best[t] = outer[i, 7]
                best_node[t] = k - 1
            if upper > high[t]:
                second[t] = high[t]
                high[t] = upper
                high_node[t] = k - 1
            elif upper > second[t]:
                second[t] = upper
    largest = np.zeros((NUM_LEVELS, 4), np.int64)
    undecided = np.zeros(NUM_LEVELS, np.bool_)
    for t in range(NUM_LEVELS):
        if best_node[t] < 0:
            continue
        rival = second[t] if high_node[t] == best_node[t] else high[t]
        if best[t] > rival:
            largest[t] = boxes[best_node[t]]
        else:
            undecided[t] = True
    return spans[:k], boxes[:k], largest, undecided
