"""Saliency maps, a per-image input: DSRG's background cues (normalised saliency below 0.06).

Real datasets read them from disk, one grayscale PNG per image id (``<dir>/<id>.png``, 0–255), as the
DSRG repository distributes its DRFI maps; ``--set saliency_dir=DIR`` names the folder. The synthetic
benchmark has no saliency detector, so :func:`synthetic_saliency` derives one map per image,
deterministically, from what the dataset already holds (ground-truth mask and context map): the
objects blurred (a detector's soft, bleeding boundaries) at a per-image gain, the image's *contexts*
as false positives (so saliency is a confounded cue as well), and a smooth noise floor that keeps
part of the true background above the cue threshold. ``docs/datasets.md`` describes it. The maps are
computed on demand; the stage that reads them (DSRG's seeds) is cached, and with it their effect.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import UserError

#: the synthetic saliency's design version: part of what a cache keyed on the dataset must include.
SYNTHETIC_SALIENCY_VERSION = 1
OBJECT_GAIN = (0.7, 1.0)        # the per-image peak of the object saliency, uniform in this range
CONTEXT_LEVEL = 0.6             # a context region's saliency (before blurring): a false positive
NOISE_LEVEL = 0.08              # the smooth noise floor's amplitude on every pixel
BLUR = 0.05                     # Gaussian sigma as a share of the image's longer side


def synthetic_saliency(mask: np.ndarray, context: np.ndarray, key: str) -> np.ndarray:
    """(H, W) uint8 saliency from a ground-truth ``mask`` (0 background, 255 ignore) and a ``context``
    map (c > 0 on class c's context); ``key`` (the image id) seeds the gain and the noise.

    >>> m = np.zeros((32, 32), np.uint8); m[8:24, 8:24] = 1
    >>> s = synthetic_saliency(m, np.zeros_like(m), "a")
    >>> bool(s[16, 16] > 150 and s[0, 0] < 0.06 * 255), bool((s == synthetic_saliency(m, 0 * m, "a")).all())
    (True, True)
    """
    h, w = mask.shape
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    sigma = BLUR * max(h, w)
    objects = ((mask > 0) & (mask != 255)).astype(np.float32)
    contexts = (context > 0).astype(np.float32) * CONTEXT_LEVEL
    gain = rng.uniform(*OBJECT_GAIN)
    noise = cv2.resize(rng.random((8, 8), dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    blurred = [cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for a in (objects, contexts)]
    sal = np.maximum(gain * blurred[0] / max(float(blurred[0].max()), 1e-6), blurred[1]) + NOISE_LEVEL * noise
    return np.round(np.clip(sal, 0, 1) * 255).astype(np.uint8)


def read_saliency(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 saliency from a grayscale PNG, resized (bilinear) to ``shape`` if it differs.
    A missing file is a one-line UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"saliency map {path} is missing (saliency_dir holds one PNG per image id)")
    with Image.open(path) as im:
        sal = np.array(im.convert("L"))
    if sal.shape != tuple(shape):
        sal = cv2.resize(sal, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return sal


def load_saliency(dataset, sample, saliency_dir: str | None = None) -> np.ndarray:
    """(H, W) float32 normalised saliency (PNG value / 255) of ``sample``: from ``saliency_dir`` when
    given, else the synthetic benchmark's derived map; other datasets without a folder: a UserError."""
    shape = dataset.load_image(sample).shape[:2]
    if saliency_dir:
        return read_saliency(Path(saliency_dir) / f"{sample.id}.png", shape).astype(np.float32) / 255
    context = dataset.load_context(sample) if sample.mask is not None else None
    if context is None:
        raise UserError(f"{dataset.name or 'this dataset'}: no saliency maps; give --set saliency_dir=DIR "
                        "(one PNG per image id, as the DSRG repository distributes them)")
    return synthetic_saliency(dataset.load_mask(sample), context, sample.id).astype(np.float32) / 255
