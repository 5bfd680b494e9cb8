"""Localization (WSOL) evaluation: MaxBoxAcc, MaxBoxAccV2, PxAP and the CAM paper's Top-k metrics.

A *box protocol* says how a score map becomes boxes: the frame it is evaluated in, its normalisation,
binarisation and box extraction. Protocols are presets in :data:`BOX_PROTOCOLS`; ``wsolevaluation``
reproduces clovaai/wsolevaluation@96f4b88 (``evaluation.py``, ``inference.py``) exactly.

Speed: the reference thresholds a uint8 map, so a grid of θ only ever produces the masks
``u8 > int(θ · u8.max())``, at most 256. The boxes of all of them come from one pass over the pixels
(component trees, :mod:`.level_sets`), each box stored once with the masks it belongs to, and the θ
grid is mapped onto the masks: 1,000 θ cost what 100 do. Hit counts per (θ, δ) are additive state
(:class:`BoxAccumulator`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..registry import Registry
from .level_sets import NUM_LEVELS, level_set_boxes
from .wsol_preset import WSOL

if TYPE_CHECKING:
    from .wsol_inputs import ScoreMaps

#: θ grid of the reference (``np.arange(0, 1, cam_curve_interval)``, ``cam_curve_interval=.001``).
THETA_GRID = np.arange(0, 1, 0.001)
#: IoU thresholds δ (percent) of MaxBoxAccV2 (Choe et al. 2020, ``--iou_threshold_list 30 50 70``).
IOU_THRESHOLDS = (30, 50, 70)
#: δ of MaxBoxAcc, Top-k localization and GT-known (the CAM paper's IoU ≥ 0.5).
IOU_MAIN = 50


# --------------------------------------------------------------------------------------------- boxes
def box_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every (box, gt) pair with inclusive "+1" pixel areas, as wsolevaluation computes it.

    >>> float(box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]]))[0, 0])
    0.5
    """
    a = np.asarray(boxes, dtype=np.int64)[:, None, :]
    b = np.asarray(gt, dtype=np.int64)[None, :, :]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    return np.where(degenerate, 0.0, inter / np.where(degenerate, 1, union))


def mask_boxes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All contour boxes and the largest contour's box of one binary mask, as wsolevaluation draws them.

    Every contour of ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` counts, hole contours included;
    a box is ``[x, y, x + w, y + h]`` of the bounding rect with x1/y1 clipped to W−1/H−1; the largest
    contour is the first of maximal ``contourArea`` (polygon area). A mask without contours gives the
    single box ``[0, 0, 0, 0]``.

    >>> ring = np.zeros((7, 7), bool); ring[1:6, 1:6] = True; ring[3, 3] = False
    >>> boxes, largest = mask_boxes(ring)
    >>> boxes.tolist(), largest.tolist()       # the outer contour, then the hole's
    ([[1, 1, 6, 6], [2, 2, 5, 5]], [1, 1, 6, 6])
    """
    contours = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_TREE,
                                cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64), np.zeros(4, dtype=np.int64)
    height, width = mask.shape
    x, y, w, h = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).T
    boxes = np.stack([x, y, np.minimum(x + w, width - 1), np.minimum(y + h, height - 1)], axis=1)
    largest = max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]))
    return boxes, boxes[largest]


def resize_box(box: Sequence[float], image_wh: tuple[int, int], frame_wh: tuple[int, int]) -> tuple[int, ...]:
    """A ground-truth box rescaled from the image to the frame, each coordinate truncated by ``int()``.

    Computed as ``v * new / old`` in that order, as the reference's ``resize_bbox`` does.
    """
    (w, h), (fw, fh) = (map(float, image_wh)), (map(float, frame_wh))
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(x0 * fw / w), int(y0 * fh / h), int(x1 * fw / w), int(y1 * fh / h)


# ----------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class LevelBoxes:
    """Boxes of one score map at every θ, each stored once with the masks it is a contour of.

    The map's binary masks are numbered 0…L−1 and θ_k uses mask ``level_of[k]``. Box i is a contour
    of masks ``spans[i, 0]…spans[i, 1]`` (all contours: MaxBoxAccV2); ``largest[m]`` is mask m's
    largest contour's box (MaxBoxAcc, Top-k). Every mask has at least one box.
    """
    level_of: np.ndarray            # int (K,)
    boxes: np.ndarray               # int (N, 4)
    spans: np.ndarray               # int (N, 2), inclusive
    largest: np.ndarray             # int (L, 4)


@dataclass(frozen=True)
class BoxProtocol:
    """How an image's maps become the evaluated score map, and that map boxes.

    ``score_map(maps, (H, W))`` gives the float64 map in an (H, W) frame from the image's
    :class:`~wsssbench.metrics.wsol_inputs.ScoreMaps` (the true class's plane, all planes, scores: a
    rule such as NL-CCAM's combinational map may use them all); ``boxes(scoremap, thetas)`` the
    :class:`LevelBoxes` at every θ. ``frame_size`` is the (H, W) of ``--frame 224``.
    """
    name: str
    source: str
    score_map: Callable[["ScoreMaps", tuple[int, int]], np.ndarray]
    boxes: Callable[[np.ndarray, np.ndarray], LevelBoxes]
    frame_size: tuple[int, int] = (224, 224)
    thetas: np.ndarray = field(default_factory=lambda: THETA_GRID)
    threshold: float = WSOL.threshold       # the θ of Top-k and GT-known when none is given (its paper's)
    #: ``to_image(boxes, (fh, fw), (W, H))``: boxes scaled from the frame back to the image, where the
    #: protocol compares them with the unscaled ground truth (CI-CAM); None: the ground truth is scaled
    #: into the frame (``resize_box``, wsolevaluation)
    to_image: Callable[[np.ndarray, tuple[int, int], tuple[int, int]], np.ndarray] | None = None
    iou: Callable[[np.ndarray, np.ndarray], np.ndarray] = box_iou


BOX_PROTOCOLS: Registry[BoxProtocol] = Registry("box protocol")


def wsolevaluation_frame(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``inference.py``: float64, ``cv2.resize`` bicubic to (H, W), then min-max (constant/NaN → 0)."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.shape != size:
        cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)   # dsize is (W, H)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros(size, dtype=np.float64)
    cam = cam - cam.min()
    cam /= cam.max()
    return cam


def wsolevaluation_boxes(scoremap: np.ndarray, thetas: np.ndarray) -> LevelBoxes:
    """``evaluation.py``: ``u8 = (s·255).astype(uint8)``; foreground iff ``u8 > int(θ · u8.max())``.

    ``θ · max`` is a float64 product (``np.float64 * np.uint8`` in the reference), truncated. Mask t
    is ``u8 > t``; the boxes of all 256 come from one pass (:mod:`.level_sets`), so the cost does not
    depend on the number of θ. Levels whose largest contour the pass leaves open are drawn with cv2.
    """
    u8 = (scoremap * 255).astype(np.uint8)
    top = int(u8.max())
    levels = np.floor(np.asarray(thetas, dtype=np.float64) * float(top)).astype(np.int64)
    spans, boxes, largest, undecided = level_set_boxes(u8)
    for t in np.unique(levels[undecided[levels]]):
        largest[t] = mask_boxes(u8 > t)[1]
    # masks t >= max are empty: the box [0, 0, 0, 0]
    boxes = np.concatenate([boxes, np.zeros((1, 4), dtype=np.int64)])
    spans = np.concatenate([spans, [[top, NUM_LEVELS - 1]]])
    return LevelBoxes(level_of=levels, boxes=boxes, spans=spans, largest=largest)


BOX_PROTOCOLS.add("wsolevaluation", BoxProtocol(
    name="wsolevaluation", source="clovaai/wsolevaluation@96f4b88 evaluation.py, inference.py",
    score_map=lambda maps, size: wsolevaluation_frame(maps.plane, size), boxes=wsolevaluation_boxes))


def nlccam_frame(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NL-CCAM ``IoU_check_cub_5.py`` ``returnCAM_``: float64, ``cv2.resize`` (bilinear, its default) to
    (H, W), then min-max (constant/NaN → 0; the rule below does not depend on the map's scale)."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.shape != size:
        cam = cv2.resize(cam, (size[1], size[0]))
    return wsolevaluation_frame(cam, size)


def nlccam_box(scoremap: np.ndarray, theta: float) -> np.ndarray:
    """NL-CCAM's box at θ: keep pixels ``> θ · max`` (``returnCAM_``); foreground is the kept map above
    its own mean over every pixel; the box of the 4-connected component of largest box area, first on
    ties (``bounding_box.py`` ``connected_component``), as ``[x0, y0, x_stop, y_stop]`` (its slices'
    exclusive stops, which NL-CCAM's IoU then counts with "+1"). No foreground: ``[0, 0, 0, 0]``."""
    from scipy import ndimage
    cut = np.where(scoremap > np.amax(scoremap) * theta, scoremap, 0)
    labels = ndimage.label(cut > cut.mean())[0]
    slices = ndimage.find_objects(labels)
    if not slices:
        return np.zeros(4, dtype=np.int64)
    ys, xs = slices[int(np.argmax([(y.stop - y.start) * (x.stop - x.start) for y, x in slices]))]
    return np.array([xs.start, ys.start, xs.stop, ys.stop], dtype=np.int64)


def nlccam_boxes(scoremap: np.ndarray, thetas: np.ndarray) -> LevelBoxes:
    """:func:`nlccam_box` at every θ, one box per mask (also MaxBoxAccV2's: NL-CCAM draws one box).

    Each mask is ``{s > max(θ · max, mean kept)}``, an upper level set of the map, so masks with the
    same pixel count are the same mask, all boxed in one pass (:func:`~.upper_boxes.upper_set_boxes`)."""
    from .upper_boxes import upper_set_boxes
    values = np.sort(scoremap, axis=None)
    cuts = np.asarray(thetas, dtype=np.float64) * values[-1]
    above = np.concatenate([np.cumsum(values[::-1])[::-1], [0.0]])      # sum of values[i:]
    means = above[np.searchsorted(values, cuts, side="right")] / values.size
    counts = (values.size - np.searchsorted(values, np.maximum(cuts, means), side="right")).tolist()
    unique, level_of = np.unique(counts, return_inverse=True)
    largest = upper_set_boxes(scoremap, unique)
    spans = np.repeat(np.arange(len(unique))[:, None], 2, axis=1)
    return LevelBoxes(level_of=level_of.reshape(-1), boxes=largest, spans=spans, largest=largest)


BOX_PROTOCOLS.add("nlccam", BoxProtocol(
    name="nlccam", source="Yangseung/NL-CCAM IoU_check_cub_5.py returnCAM_, bounding_box.py",
    score_map=lambda maps, size: nlccam_frame(maps.plane, size), boxes=nlccam_boxes, threshold=0.12))


def cicam_weights(num_classes: int):
    """CI-CAM's quadratic γ (``utils.py`` ``torch_cam_combination``, ``function='quadratic'``):
    ``−linspace(0, −1, C)²`` in float32, i.e. ``−(k/(C−1))²`` for rank k; the top class weighs 0.
    Not NL-CCAM's (:func:`wsssbench.models.nonlocal_vgg.combination_weights`)."""
    import torch
    h = torch.linspace(0, -1, num_classes)
    return -(h * h)


def cicam_combined(maps: "ScoreMaps") -> "torch.Tensor":
    """The image's localization map at its own resolution, a float32 tensor, minus its minimum.

    One map per image (a single plane, or every plane the same: what ``wsol_maps`` saves) is taken as
    it is; per-class CAMs are combined as ``torch_cam_combination`` does: ranked by descending score
    (stable: ties keep the lower class id first), ``γ · M`` as one float32 matmul, classes without a
    plane counting as zero activation. A NaN map counts as constant (it localises nothing)."""
    import torch
    planes = maps.planes
    if planes is None or len(planes) == 1 or (planes == planes[:1]).all():
        m = torch.from_numpy(np.ascontiguousarray(maps.plane, dtype=np.float32))
    else:
        if maps.scores is None:
            raise UserError(f"{maps.path}: the cicam protocol ranks the class CAMs by score; save scores with "
                            "the maps or give --scores")
        scores = np.asarray(maps.scores, dtype=np.float32)
        full = torch.zeros((len(scores), *planes.shape[1:]), dtype=torch.float32)
        full[torch.from_numpy(np.asarray(maps.keys, dtype=np.int64))] = torch.from_numpy(planes.astype(np.float32))
        order = torch.sort(torch.from_numpy(scores), descending=True, stable=True).indices
        m = torch.matmul(cicam_weights(len(scores)), full[order].reshape(len(scores), -1)).reshape(planes.shape[1:])
    if torch.isnan(m).any():
        m = torch.zeros_like(m)
    return m - m.min()


def cicam_frame(maps: "ScoreMaps", size: tuple[int, int]) -> np.ndarray:
    """:func:`cicam_combined` resized to (H, W) with torch's bilinear upsampling (``cub_vgg16.py``
    ``nn.Upsample(scale_factor=16, mode='bilinear')``, after combining), float32, not normalised."""
    import torch
    import torch.nn.functional as F
    m = cicam_combined(maps)
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.numpy()


def _largest_slice_box(mask: np.ndarray) -> np.ndarray:
    """``utils.py`` ``_connected_component``: 4-connected components, the first of largest *box* area,
    ``[x0, y0, x_stop, y_stop]``; none (where the reference crashes on ``argmax([])``): ``[0, 0, 0, 0]``."""
    from scipy import ndimage
    slices = ndimage.find_objects(ndimage.label(mask)[0])
    if not slices:
        return np.zeros(4, dtype=np.int64)
    ys, xs = slices[int(np.argmax([(y.stop - y.start) * (x.stop - x.start) for y, x in slices]))]
    return np.array([xs.start, ys.start, xs.stop, ys.stop], dtype=np.int64)


def cicam_box(scoremap: np.ndarray, theta: float) -> np.ndarray:
    """CI-CAM's box at θ (``utils.py`` ``create_rois``/``compute_gt_rois``, ``_get_seg_bbox``) on the
    float32 frame map: values ``> θ·max`` kept (the float32 product), the rest 0; foreground the kept
    map above its own mean (numpy's float32 mean over the (H, W) array); :func:`_largest_slice_box`."""
    import torch
    m = torch.from_numpy(np.ascontiguousarray(scoremap, dtype=np.float32))
    cut = torch.where(m > torch.mul(m.max(), theta), m, torch.zeros(m.shape)).numpy()
    return _largest_slice_box(cut > cut.mean())


def cicam_boxes(scoremap: np.ndarray, thetas: np.ndarray) -> LevelBoxes:
    """:func:`cicam_box` at every θ, one box per mask (also MaxBoxAccV2's), in one pass.

    The mask at θ is ``s > max(cut, mean)`` (the map being ≥ 0): an upper level set, so its pixel count
    names it and :func:`~.upper_boxes.upper_set_boxes` boxes them all. The cut is the reference's float32
    product; the mean of the kept map is taken in float64 from a cumulative sum, and where a map value
    lies within 4e-6·mean of it (where numpy's float32 pairwise mean, off by less than about 2e-6·mean,
    could fall on the other side) it is recomputed as the reference does (``np.where`` + float32 ``mean``)."""
    import torch

    from .upper_boxes import upper_set_boxes
    m = np.ascontiguousarray(scoremap, dtype=np.float32)
    cuts = (torch.from_numpy(m).max() * torch.as_tensor(np.asarray(thetas), dtype=torch.float32)).numpy()
    values = np.sort(m, axis=None)
    n = values.size
    kept = n - np.searchsorted(values, cuts, side="right")
    above = np.concatenate([np.cumsum(values[::-1].astype(np.float64))[::-1], [0.0]])    # sum of values[i:]
    means = above[n - kept] / n
    tol = 4e-6 * means + 1e-30        # numpy's float32 pairwise mean: |error| < ~2e-6 · mean (seen: 1.6e-7)
    close = np.searchsorted(values, means + tol, side="right") > np.searchsorted(values, means - tol, side="right")
    for i in np.flatnonzero(close):
        cut = np.where(m > cuts[i], m, np.float32(0))
        means[i] = cut.mean()
    counts = n - np.searchsorted(values, np.maximum(cuts.astype(np.float64), means), side="right")
    unique, level_of = np.unique(counts, return_inverse=True)
    largest = upper_set_boxes(m, unique)
    spans = np.repeat(np.arange(len(unique))[:, None], 2, axis=1)
    return LevelBoxes(level_of=level_of.reshape(-1), boxes=largest, spans=spans, largest=largest)


def cicam_to_image(boxes: np.ndarray, frame: tuple[int, int], image_wh: tuple[int, int]) -> np.ndarray:
    """``utils.py`` ``pred_bbox_resize_imagesize``: each coordinate times ``size / frame`` in float32,
    x0/y0 clamped at 0 and x1/y1 at the image width/height, truncated to int."""
    (fh, fw), (w, h) = frame, image_wh
    fw32, fh32, w32, h32 = np.float32(fw), np.float32(fh), np.float32(w), np.float32(h)
    scale = np.array([w32 / fw32, h32 / fh32, w32 / fw32, h32 / fh32], dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
    b[:, :2] = np.where(b[:, :2] >= 0, b[:, :2], np.float32(0))
    b[:, 2:] = np.minimum(b[:, 2:], np.array([w32, h32], dtype=np.float32))
    return np.trunc(b).astype(np.int64)


def cicam_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``utils.py`` ``IoU`` for every (box, gt) pair: "+1" areas, the union rounded to float32 (``.float()``),
    the quotient in float64 against float ground truth, in float32 when every bound is the box's own
    (the int32 box strictly inside the ground truth)."""
    a = np.asarray(boxes, dtype=np.int64)[:, None, :]
    b = np.asarray(gt, dtype=np.float64)[None, :, :]
    from_a = (a[..., 0] > b[..., 0]) & (a[..., 1] > b[..., 1]) & (a[..., 2] < b[..., 2]) & (a[..., 3] < b[..., 3])
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = ((a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
             + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        single = (inter.astype(np.float32) / union).astype(np.float64)
        double = inter / union.astype(np.float64)
    return np.where(from_a, single, double)


BOX_PROTOCOLS.add("cicam", BoxProtocol(
    name="cicam", source="shaofeifei11/CI-CAM tmp_test.py, utils.py create_rois, pred_bbox_resize_imagesize, IoU",
    score_map=lambda maps, size: cicam_frame(maps, size), boxes=cicam_boxes, threshold=0.0,
    to_image=cicam_to_image, iou=cicam_iou))


# -------------------------------------------------------------------------------------- accumulators
class BoxAccumulator:
    """Hit counts per (θ, δ): additive state, one :meth:`update` per image, :meth:`merge` across shards.

    ``v2[k, j]``: best IoU over all boxes at θ_k ≥ δ_j; ``v1[k]``: the largest contour's box at θ_k has
    IoU ≥ 0.5 (MaxBoxAcc and GT-known); ``top1``/``top5``: ``v1`` and the class ranks 1st / in the top 5.
    """

    def __init__(self, num_thetas: int, iou_thresholds: Sequence[int] = IOU_THRESHOLDS):
        self.iou_thresholds = tuple(iou_thresholds)
        self.count = 0
        self.v2 = np.zeros((num_thetas, len(self.iou_thresholds)), dtype=np.int64)
        self.v1 = np.zeros(num_thetas, dtype=np.int64)
        self.top1 = np.zeros(num_thetas, dtype=np.int64)
        self.top5 = np.zeros(num_thetas, dtype=np.int64)
        self.top1_cls = 0
        self.top5_cls = 0

    def update(self, level_boxes: LevelBoxes, gt_boxes: np.ndarray, rank: int | None = None,
               iou_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] = box_iou) -> None:
        """Add one image; ``rank`` is the 0-based rank of its true class among the scores, if known;
        ``iou_fn`` the protocol's IoU (:attr:`BoxProtocol.iou`)."""
        gt = np.asarray(gt_boxes).reshape(-1, 4)
        lb = level_boxes
        num_masks = len(lb.largest)
        iou = iou_fn(lb.boxes, gt).max(axis=1)
        # mask m passes δ when a box whose span covers m does: count passing boxes by span
        for j, d in enumerate(self.iou_thresholds):
            passing = iou >= d / 100
            covering = np.cumsum(np.bincount(lb.spans[passing, 0], minlength=num_masks + 1)
                                 - np.bincount(lb.spans[passing, 1] + 1, minlength=num_masks + 1))
            self.v2[:, j] += covering[lb.level_of] > 0
        best_v1 = iou_fn(lb.largest, gt).max(axis=1)[lb.level_of]
        hit = best_v1 >= IOU_MAIN / 100
        self.v1 += hit
        if rank is not None:
            self.top1 += hit & (rank < 1)
            self.top5 += hit & (rank < 5)
            self.top1_cls += rank < 1
            self.top5_cls += rank < 5
        self.count += 1

    def merge(self, other: "BoxAccumulator") -> "BoxAccumulator":
        for name in ("v2", "v1", "top1", "top5"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.count += other.count
        self.top1_cls += other.top1_cls
        self.top5_cls += other.top5_cls
        return self


class PxAPAccumulator:
    """Pixel average precision from score histograms (wsolevaluation ``MaskEvaluator``).

    Bins are ``[θ_0, θ_1), …, [θ_{K-1}, 1), [1, 2), [2, 3)``; ground truth 1 = foreground, 0 =
    background; other values are ignored.
    """

    def __init__(self, thetas: np.ndarray = THETA_GRID):
        self.edges = np.append(thetas, [1.0, 2.0, 3.0])
        self.pos = np.zeros(len(self.edges) - 1, dtype=np.float64)
        self.neg = np.zeros(len(self.edges) - 1, dtype=np.float64)

    def update(self, scoremap: np.ndarray, gt: np.ndarray) -> None:
        self.pos += np.histogram(scoremap[gt == 1], bins=self.edges)[0]
        self.neg += np.histogram(scoremap[gt == 0], bins=self.edges)[0]

    def compute(self) -> float:
        tp = self.pos[::-1].cumsum()
        fp = self.neg[::-1].cumsum()
        fn = self.pos.sum() - tp
        if not (tp + fn > 0).any() or not (tp + fp > 0).any():
            return math.nan
        nonzero = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision, recall = tp / (tp + fp), tp / (tp + fn)
        return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)


def summarize(acc: BoxAccumulator, thetas: np.ndarray, *, sweep: bool, fixed: int | None,
              with_scores: bool) -> dict:
    """The ``--json`` numbers (percent, unrounded) from the hit counts.

    ``thetas`` are the grid; ``fixed`` the index (in the accumulator) of the fixed-θ column for Top-k,
    or ``None`` with ``sweep``, where each Top-k metric takes its best θ on the grid.
    """
    k = len(thetas)
    n = max(acc.count, 1)
    pct = lambda hits: hits * 100.0 / n          # noqa: E731
    v2 = pct(acc.v2[:k])
    best_v2 = v2.argmax(axis=0)
    by_iou = {str(d): float(v2[best_v2[j], j]) for j, d in enumerate(acc.iou_thresholds)}
    v1 = pct(acc.v1[:k])
    out: dict = {
        "maxboxacc": float(v1.max()),
        "maxboxacc_v2": float(np.mean(list(by_iou.values()))),
        "maxboxacc_v2_by_iou": by_iou,
        "best_threshold": {"maxboxacc": float(thetas[v1.argmax()]),
                           **{f"maxboxacc_v2_{d}": float(thetas[best_v2[j]])
                              for j, d in enumerate(acc.iou_thresholds)}},
        "num_images": acc.count,
    }
    curves = {"gt_known": v1}
    if with_scores:
        curves.update(top1_loc=pct(acc.top1[:k]), top5_loc=pct(acc.top5[:k]))
    if sweep:
        for name, curve in curves.items():
            out[name] = float(curve.max())
            out["best_threshold"][name] = float(thetas[curve.argmax()])
        out["threshold_selected_on_gt"] = True
    else:
        out["gt_known"] = float(pct(acc.v1[fixed]))
        if with_scores:
            out["top1_loc"] = float(pct(acc.top1[fixed]))
            out["top5_loc"] = float(pct(acc.top5[fixed]))
    if with_scores:
        out["top1_cls"] = acc.top1_cls * 100.0 / n
        out["top5_cls"] = acc.top5_cls * 100.0 / n
    out["curve"] = {"threshold": thetas.tolist(), "maxboxacc": v1.tolist(),
                    **{f"maxboxacc_v2_{d}": v2[:, j].tolist() for j, d in enumerate(acc.iou_thresholds)},
                    **{k: curves[k].tolist() for k in ("top1_loc", "top5_loc") if k in curves}}
    return out


# ------------------------------------------------------------------------------------------ evaluate
FRAMES = ("224", "native")


def evaluate_wsol(dataset, split: str, cams_dir, *, scores=None, protocol: str = WSOL.protocol,
                  frame: str = WSOL.frame, threshold: float | None = WSOL.threshold, sweep: bool = False,
                  progress: bool = False) -> dict:
    """Score the maps under ``cams_dir`` against ``dataset``'s boxes; the ``eval wsol --json`` dict.

    ``scores`` is an optional ``image_id,score_0,…`` CSV; otherwise class scores come from the CAM
    files when they carry them. Top-k keys appear only with scores. ``frame="224"`` evaluates in the
    protocol's 224×224 frame; ``"native"`` at each map's own resolution. ``threshold=None``: the
    protocol's own θ (:attr:`BoxProtocol.threshold`).
    """
    from rich.progress import Progress

    from .wsol_inputs import (check_box, check_no_extra_maps, class_rank, find_map, read_maps,
                              read_scores_csv)

    from dataclasses import replace

    proto = BOX_PROTOCOLS.get(protocol)
    threshold = proto.threshold if threshold is None else threshold
    frame = str(frame)
    if frame not in FRAMES:
        raise UserError(f"unknown frame {frame!r}; use one of {', '.join(FRAMES)}")
    if not sweep and not 0 <= threshold < 1:
        raise UserError(f"--threshold must be in [0, 1); got {threshold}")
    cams_dir = Path(cams_dir)
    if not cams_dir.is_dir():
        raise UserError(f"{cams_dir}: score-map folder does not exist")
    score_table = read_scores_csv(Path(scores)) if scores is not None else None
    samples = dataset.samples(split)
    gt_where = dataset.describe_gt(split)
    thetas = proto.thetas if sweep else np.append(proto.thetas, threshold)
    acc = BoxAccumulator(len(thetas))
    pxap = PxAPAccumulator(proto.thetas) if samples and all(s.mask is not None for s in samples) else None
    with_scores: bool | None = None if score_table is None else True
    used: set[Path] = set()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("wsol: loading the box kernel (compiled on first use, ~15 s)", total=len(samples))
        proto.boxes(np.zeros((2, 2)), thetas[:1])
        bar.update(task, description=f"wsol {protocol}")
        for sample in samples:
            if len(sample.labels) != 1:
                raise UserError(f"{gt_where}: image {sample.id!r} has {len(sample.labels)} class labels; "
                                "localization evaluation needs exactly one")
            cls = sample.labels[0]
            path = find_map(cams_dir, sample.id)
            used.add(path)
            maps = read_maps(path, cls)
            file_scores = maps.scores
            if score_table is not None:
                if sample.id not in score_table:
                    raise UserError(f"{scores}: no scores for image {sample.id!r}")
                rank = class_rank(score_table[sample.id], cls, str(scores))
                maps = replace(maps, scores=np.asarray(score_table[sample.id], dtype=np.float64))
            else:
                if with_scores is None:
                    with_scores = file_scores is not None
                if with_scores != (file_scores is not None):
                    raise UserError(f"{path}: class scores are {'missing' if with_scores else 'present'} here "
                                    "but not in the other score maps; save them for all images or none")
                rank = class_rank(file_scores, cls, str(path)) if with_scores else None
            size = proto.frame_size if frame == "224" else maps.plane.shape
            scoremap = proto.score_map(maps, size)
            image_wh = _image_wh(sample)
            for box in sample.boxes:
                check_box(box, image_wh, gt_where, sample.id)
            if len(sample.boxes) == 0:
                raise UserError(f"{gt_where}: image {sample.id!r} has no ground-truth box")
            level_boxes = proto.boxes(scoremap, thetas)
            if proto.to_image is None:
                gt = np.array([resize_box(b, image_wh, (size[1], size[0])) for b in sample.boxes], dtype=np.int64)
            else:
                gt = np.array(sample.boxes, dtype=np.float64)
                level_boxes = replace(level_boxes, boxes=proto.to_image(level_boxes.boxes, size, image_wh),
                                      largest=proto.to_image(level_boxes.largest, size, image_wh))
            acc.update(level_boxes, gt, rank, proto.iou)
            if pxap is not None:
                top = float(scoremap.max())     # PxAP's bins are over [0, 1]: a protocol's raw map is scaled
                pxap.update(scoremap / top if top > 0 else scoremap, _fg_mask(dataset, sample, size))
            bar.advance(task)
    check_no_extra_maps(cams_dir, used)
    out = summarize(acc, proto.thetas, sweep=sweep, fixed=None if sweep else len(thetas) - 1,
                    with_scores=bool(with_scores))
    if not sweep:
        out["threshold"] = float(threshold)
    if pxap is not None:
        out["pxap"] = pxap.compute()
    out["protocol"] = protocol
    out["frame"] = frame
    return out


def _image_wh(sample) -> tuple[int, int]:
    if sample.size is not None:
        return int(sample.size[1]), int(sample.size[0])
    from PIL import Image
    try:
        with Image.open(sample.image) as im:        # reads the header only
            return im.size
    except (FileNotFoundError, OSError):
        raise UserError(f"{sample.image}: image is missing and its size is unknown; the boxes need it "
                        "(give the images, or --metadata with image_sizes.txt)") from None


def _fg_mask(dataset, sample, size: tuple[int, int]) -> np.ndarray:
    """Ground truth for PxAP in the frame: 1 foreground, 0 background, 255 ignore (nearest resize)."""
    mask = dataset.load_mask(sample)
    mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return np.where(mask == 255, 255, (mask != 0).astype(np.uint8))


#: the metrics a box protocol changes (Top-k cls and MaxBoxAcc's maxima do not depend on the fixed θ rule)
BOX_METRICS = ("top1_loc", "top5_loc", "gt_known")


def rescore_record(record: dict, protocol: str) -> dict | None:
    """A WSOL run record's saved maps (``artifacts.maps``) scored under ``protocol`` at that protocol's own
    θ: the :func:`evaluate_wsol` dict, or None when the maps or the dataset are not on this machine. The
    dataset is the record's (synthetic: regenerated from ``extra.generation``; real: its standard place)."""
    maps = (record.get("artifacts") or {}).get("maps")
    if not maps or not Path(maps).is_dir():
        return None
    from ..data import get_dataset
    generation = (record.get("extra") or {}).get("generation") or {}
    options = {k: generation[k] for k in ("preset", "seed", "confounding") if k in generation}
    try:
        ds = get_dataset(record["dataset"], **options)
        split = "test" if "test" in ds.split_names() else "val"
        return evaluate_wsol(ds, split, maps, protocol=protocol, frame=record["config"].get("wsol_frame", WSOL.frame),
                             threshold=None)
    except UserError:
        return None
