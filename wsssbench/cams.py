"""CAM files: the toolkit's own format, and readers for IRN's and SEAM's per-image ``.npy`` dicts.

The toolkit's format is one ``<image_id>.npz`` per image (``/`` in an id becomes a sub-folder) with
named arrays:

``keys``    int64 (k,) — 0-based *foreground* class ids of the planes (IRN's convention: VOC class
            index − 1; for localization datasets, which have no background, the class index itself).
``cams``    float16 or float32 (k, H, W) — one map per key at image resolution.
``norm``    str — how the maps were normalised: ``"max"`` (each plane / (its max + 1e-5), IRN),
            ``"minmax"`` (SEAM) or ``"none"``.
``scores``  float32 (C,), optional — the classifier's score for every foreground class (WSOL Top-k).
``stride4`` float32 (k, ⌈H/4⌉, ⌈W/4⌉), optional — IRN's stride-4 ``cam`` (make_cam.py: each scale's map
            resized to the stride-4 grid, summed, max-normalised), which IRN's random walk starts from;
            written with ``cam_arithmetic=irn``.

Readers also take the two formats the lineages save (both ``<image_id>.npy`` pickled dicts):

* IRN (``step/make_cam.py``): ``{"keys": (k,) 0-based fg ids — a torch tensor in IRN's own files,
  "high_res": (k, H, W) float32, "cam": the stride-4 maps make_cam.py builds for the walk (read as
  ``stride4``)}``, planes max-normalised;
* SEAM (``infer_SEAM.py``): ``{fg_class_id: (H, W) map}``, planes min-max normalised.

:func:`load_cams` returns the planes sorted by key, so "the first listed class wins a tie" is "the
lowest class id wins", as in IRN's files (whose keys are ascending). :func:`validate_cams` checks a
file against the image it belongs to (finite values, shape, exactly the image's labelled classes).
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .io import atomic_path

NORMS = ("max", "minmax", "none")

#: what ``np.load`` raises on a file that is not what it claims: random bytes, a truncated archive, or a
#: pickle of classes this process cannot import (unpickling runs the pickle's own constructors)
UNREADABLE = (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ImportError,
              AttributeError, TypeError, IndexError)


@dataclass
class CamFile:
    keys: np.ndarray                   # int64 (k,)
    cams: np.ndarray                   # float (k, H, W)
    norm: str = "max"
    scores: np.ndarray | None = None   # float32 (C,)
    stride4: np.ndarray | None = None  # float (k, h4, w4): IRN's stride-4 maps for its walk


def save_cams(path: str | Path, keys, cams, norm: str = "max", scores=None, stride4=None) -> Path:
    path = Path(path)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    cams = np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != keys.shape[0]:
        raise ValueError(f"cams must be (len(keys), H, W); got {cams.shape} for {keys.shape[0]} keys")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}")
    arrays = {"keys": keys, "cams": cams, "norm": np.array(norm)}
    if scores is not None:
        arrays["scores"] = np.asarray(scores, dtype=np.float32).reshape(-1)
    if stride4 is not None:
        arrays["stride4"] = np.asarray(stride4, dtype=np.float32)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def load_cams(path: str | Path) -> CamFile:
    """Read a CAM file in any supported format (toolkit ``.npz``, IRN or SEAM ``.npy`` dict)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _sorted(CamFile(keys=z["keys"].astype(np.int64).reshape(-1), cams=z["cams"],
                                       norm=str(z["norm"]), scores=z["scores"] if "scores" in z else None,
                                       stride4=z["stride4"] if "stride4" in z else None), path)
        obj = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise UserError(f"{path}: CAM file is missing") from None
    except UNREADABLE as err:
        raise UserError(f"{path}: unreadable CAM file ({type(err).__name__}: {err})") from None
    return cams_from_object(obj, path)


def cams_from_object(obj, path: str | Path) -> CamFile:
    """The IRN or SEAM CAM dict that ``np.load(path, allow_pickle=True)`` returned."""
    path = Path(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, dict) and "high_res" in obj:          # IRN: {"keys", "high_res", ["cam"]}
        keys = _numpy(obj["keys"]).astype(np.int64).reshape(-1)
        scores = np.asarray(_numpy(obj["scores"]), dtype=np.float32) if "scores" in obj else None
        stride4 = _numpy(obj["cam"]) if "cam" in obj else None
        return _sorted(CamFile(keys=keys, cams=_numpy(obj["high_res"]), norm="max", scores=scores, stride4=stride4),
                       path)
    if isinstance(obj, dict) and obj and all(isinstance(k, (int, np.integer)) for k in obj):   # SEAM
        keys = np.array(sorted(int(k) for k in obj), dtype=np.int64)
        planes = [_numpy(obj[k]) for k in keys]
        if len({p.shape for p in planes}) != 1:
            raise UserError(f"{path}: SEAM CAM planes have different shapes {sorted({p.shape for p in planes})}")
        return CamFile(keys=keys, cams=np.stack(planes), norm="minmax")
    raise UserError(f"{path}: not a CAM file this toolkit reads (toolkit .npz, IRN dict with 'keys'/'high_res', "
                    "or SEAM dict {class_id: map})")


def _numpy(x) -> np.ndarray:
    """A numpy array from a numpy array, a list or a (CPU or GPU) torch tensor."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _check_shape(cf: CamFile, path) -> None:
    if cf.cams.ndim != 3 or cf.cams.shape[0] != cf.keys.shape[0]:
        raise UserError(f"{path}: CAMs have shape {cf.cams.shape} for {cf.keys.shape[0]} keys; "
                        "expected (len(keys), H, W)")


def _sorted(cf: CamFile, path: Path) -> CamFile:
    _check_shape(cf, path)
    if np.any(np.diff(cf.keys) <= 0):
        order = np.argsort(cf.keys, kind="stable")
        cf = CamFile(keys=cf.keys[order], cams=cf.cams[order], norm=cf.norm, scores=cf.scores,
                     stride4=None if cf.stride4 is None else cf.stride4[order])
    return cf


def validate_cams(cf: CamFile, path: str | Path, *, keys=None, shape=None) -> None:
    """Raise a one-line :class:`UserError` naming ``path`` unless ``cf`` is usable for its image.

    ``keys``: the image's labelled classes as 0-based foreground ids — the file must hold exactly
    these (a plane for a class the image lacks would leak label information the other way, a missing
    plane silently scores 0). ``shape``: the image's (H, W).
    """
    _check_shape(cf, path)
    if not np.issubdtype(cf.cams.dtype, np.floating):
        raise UserError(f"{path}: CAMs have dtype {cf.cams.dtype}; expected float16/32/64")
    if len(np.unique(cf.keys)) != len(cf.keys):
        raise UserError(f"{path}: repeated class keys {cf.keys.tolist()}")
    if shape is not None and tuple(cf.cams.shape[1:]) != tuple(shape):
        raise UserError(f"{path}: CAMs are {cf.cams.shape[1]}x{cf.cams.shape[2]} (HxW) but the image and its "
                        f"mask are {shape[0]}x{shape[1]}; save CAMs at image resolution")
    if keys is not None:
        want, have = set(int(k) for k in keys), set(cf.keys.tolist())
        if have - want:
            raise UserError(f"{path}: CAM for class key(s) {sorted(have - want)} the image is not labelled with "
                            f"(its labels as 0-based foreground ids: {sorted(want)}); CAMs must cover exactly "
                            "the image's labelled classes")
        if want - have:
            raise UserError(f"{path}: no CAM for labelled class key(s) {sorted(want - have)} (0-based foreground "
                            "ids); CAMs must cover exactly the image's labelled classes")
    if not np.isfinite(cf.cams).all():
        bad = np.argwhere(~np.isfinite(cf.cams))[0]
        raise UserError(f"{path}: CAM value {cf.cams[tuple(bad)]} (NaN/Inf) at key {int(cf.keys[bad[0]])}, "
                        f"pixel (y={bad[1]}, x={bad[2]}); regenerate the CAMs")
