"""Score maps and class scores for localization evaluation, in every layout the evaluator reads.

Score maps, one file per image under ``--cams`` (``/`` in an image id is a sub-folder):

* wsolevaluation: ``<image_id>.npy`` holding the ground-truth class's 2-D map (the id keeps its ``.jpg``);
* IRN: ``<image_id>.npy`` dict with ``keys`` (0-based class ids), ``high_res`` and optional ``scores``;
* the toolkit's ``<image_id>.npz`` (:mod:`wsssbench.cams`).

A plane is picked by its class id, never by its position. The id's extension may be dropped from the
file name (``<name>.npy``, as IRN saves).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cams import UNREADABLE, cams_from_object, load_cams
from ..errors import UserError

SUFFIXES = (".npy", ".npz")


def map_candidates(cams_dir: Path, image_id: str) -> list[Path]:
    stem = image_id[: -len(Path(image_id).suffix)] if Path(image_id).suffix else image_id
    names = dict.fromkeys([image_id, stem])
    return [cams_dir / f"{name}{suffix}" for name in names for suffix in SUFFIXES]


def find_map(cams_dir: Path, image_id: str) -> Path:
    for path in map_candidates(cams_dir, image_id):
        if path.is_file():
            return path
    raise UserError(f"{cams_dir / (image_id + '.npy')}: score map of image {image_id!r} is missing "
                    f"(looked for {image_id}.npy/.npz); every image of the split needs one")


def check_no_extra_maps(cams_dir: Path, used: set[Path]) -> None:
    """Every map file must belong to an evaluated image: a stray one means the wrong split or folder."""
    extra = sorted(p for p in cams_dir.rglob("*") if p.suffix in SUFFIXES and p not in used)
    if extra:
        raise UserError(f"{extra[0]}: score map matches no image of the evaluated split ({len(extra)} such "
                        f"files under {cams_dir}); check --cams, --dataset/--metadata and --split")


@dataclass(frozen=True)
class ScoreMaps:
    """What one image's file holds: the true class's map, every plane when the file has them, scores."""
    path: Path
    plane: np.ndarray                      # (H, W) map of the ground-truth class
    keys: np.ndarray | None = None         # class ids of ``planes``
    planes: np.ndarray | None = None       # (k, H, W); None for a wsolevaluation single map
    scores: np.ndarray | None = None       # (C,) class scores, when the file carries them


def read_maps(path: Path, class_id: int) -> ScoreMaps:
    """Read ``path`` and pick the plane of ``class_id`` (by id, never by position).

    A NaN map is allowed (the reference scores it as all zeros); an infinite value is an error.
    """
    maps = _read_maps(path, class_id)
    if np.isinf(maps.plane).any():
        raise UserError(f"{path}: the map of class {class_id} has infinite values; save finite scores")
    return maps


def _read_maps(path: Path, class_id: int) -> ScoreMaps:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=True)
        except UNREADABLE as err:
            raise UserError(f"{path}: unreadable score map ({type(err).__name__}: {err})") from None
        if isinstance(arr, np.ndarray) and arr.dtype != object:
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
                raise UserError(f"{path}: a wsolevaluation score map must be a 2-D numeric array; "
                                f"got shape {arr.shape}, dtype {arr.dtype}")
            return ScoreMaps(path, arr)
        cam = cams_from_object(arr, path)          # an IRN / SEAM dict: parsed, not read again
    else:
        cam = load_cams(path)
    where = np.flatnonzero(cam.keys == class_id)
    if where.size == 0:
        raise UserError(f"{path}: no map for class {class_id}, the image's ground-truth class "
                        f"(the file has classes {cam.keys.tolist()}); save the true class's map")
    return ScoreMaps(path, np.asarray(cam.cams[where[0]]), cam.keys, np.asarray(cam.cams), cam.scores)


def read_scores_csv(path: Path) -> dict[str, np.ndarray]:
    """``image_id,score_0,...,score_{K-1}`` per line (an ``image_id,...`` header line is optional)."""
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"{path}: scores file is missing") from None
    except (OSError, UnicodeDecodeError) as err:      # a folder, no permission, binary bytes
        raise UserError(f"{path}: unreadable scores file ({type(err).__name__}: {err})") from None
    width = None
    for lineno, row in enumerate(rows, 1):
        if not row or (lineno == 1 and row[0].strip() == "image_id"):
            continue
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float64)
        except ValueError:
            raise UserError(f"{path}:{lineno}: non-numeric score; expected image_id,score_0,...,score_K-1") from None
        if not np.isfinite(values).all():
            raise UserError(f"{path}:{lineno}: NaN or infinite score for image {row[0]!r}")
        if width is None:
            width = len(values)
        if len(values) != width or width == 0:
            raise UserError(f"{path}:{lineno}: {len(values)} scores, but the first row has {width}")
        if row[0] in out:
            raise UserError(f"{path}:{lineno}: image {row[0]!r} is listed twice")
        out[row[0]] = values
    return out


def class_rank(scores: np.ndarray, class_id: int, where: str) -> int:
    """0-based rank of ``class_id`` in a stable descending sort of the scores (ties: lower id first).

    >>> class_rank(np.array([0.1, 0.9, 0.9, 0.3]), 2, "x")
    1
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 0 <= class_id < scores.size:
        raise UserError(f"{where}: {scores.size} class scores, but the ground-truth class is {class_id}")
    if not np.isfinite(scores).all():
        raise UserError(f"{where}: NaN or infinite class score")
    s = scores[class_id]
    return int((scores > s).sum() + (scores[:class_id] == s).sum())


def check_box(box, image_wh: tuple[int, int], where: str, image_id: str) -> None:
    x0, y0, x1, y1 = box
    w, h = image_wh
    if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h) or any(math.isnan(v) for v in box):
        raise UserError(f"{where}: box {tuple(box)} of image {image_id!r} lies outside its {w}×{h} image "
                        "or has x1 < x0 / y1 < y0; fix the box")
