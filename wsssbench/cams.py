"""CAM files: the toolkit's own format, and readers for IRN's and SEAM's per-image ``.npy`` dicts.

The toolkit's format is one ``<image_id>.npz`` per image (``/`` in an id becomes a sub-folder) with
named arrays:

``keys``    int64 (k,) — 0-based *foreground* class ids of the planes (IRN's convention: VOC class
            index − 1; for localization datasets, which have no background, the class index itself).
``cams``    float16 or float32 (k, H, W) — one map per key at image resolution.
``norm``    str — how the maps were normalised: ``"max"`` (each plane / (its max + 1e-5), IRN),
            ``"minmax"`` (SEAM) or ``"none"``.
``scores``  float32 (C,), optional — the classifier's score for every foreground class (WSOL Top-k).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .io import atomic_path

NORMS = ("max", "minmax", "none")


@dataclass
class CamFile:
    keys: np.ndarray                   # int64 (k,)
    cams: np.ndarray                   # float (k, H, W)
    norm: str = "max"
    scores: np.ndarray | None = None   # float32 (C,)


def save_cams(path: str | Path, keys, cams, norm: str = "max", scores=None) -> Path:
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
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def load_cams(path: str | Path) -> CamFile:
    """Read a CAM file in any supported format (toolkit ``.npz``, IRN or SEAM ``.npy`` dict)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return CamFile(keys=z["keys"].astype(np.int64), cams=z["cams"], norm=str(z["norm"]),
                               scores=z["scores"] if "scores" in z else None)
        obj = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise UserError(f"{path}: CAM file is missing") from None
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise UserError(f"{path}: unreadable CAM file ({err})") from None
    if obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, dict) and "high_res" in obj:          # IRN: {"keys", "high_res", ["cam"]}
        keys = obj["keys"]
        keys = keys.cpu().numpy() if hasattr(keys, "cpu") else np.asarray(keys)
        return CamFile(keys=keys.astype(np.int64).reshape(-1), cams=np.asarray(obj["high_res"]), norm="max",
                       scores=np.asarray(obj["scores"], dtype=np.float32) if "scores" in obj else None)
    if isinstance(obj, dict) and obj and all(isinstance(k, (int, np.integer)) for k in obj):   # SEAM
        keys = np.array(sorted(int(k) for k in obj), dtype=np.int64)
        return CamFile(keys=keys, cams=np.stack([np.asarray(obj[k]) for k in keys]), norm="minmax")
    raise UserError(f"{path}: not a CAM file this toolkit reads (toolkit .npz, IRN dict with 'keys'/'high_res', "
                    "or SEAM dict {class_id: map})")
