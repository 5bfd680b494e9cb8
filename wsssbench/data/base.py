"""What every dataset reader yields: samples of an official on-disk layout, read as they are."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

Box = tuple[float, float, float, float]   # (x0, y0, x1, y1) in image pixels, as the layout defines them
IGNORE = 255
PNG_OPTIONS = {"compress_level": 6, "optimize": False}     # pinned, so generated masks are byte-reproducible


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    labels: tuple[int, ...]                 # indices into Dataset.class_names; never the background
    mask: Path | None = None                # class-index PNG on disk, when the split has one
    boxes: tuple[Box, ...] = ()             # ground-truth boxes, localization datasets
    size: tuple[int, int] | None = None     # (height, width) when the layout states it


class Dataset:
    """Base reader. Subclasses set the attributes and implement :meth:`_read_split`.

    ``class_names`` includes ``"background"`` at index 0 for segmentation datasets
    (``has_background``), so ``num_classes`` is 21 for VOC and 81 for COCO; localization datasets
    (CUB, ILSVRC) have no background class.
    """

    name: str = ""
    task: str = "segmentation"              # or "localization"
    has_background: bool = True

    def __init__(self, root: Path, class_names: Sequence[str]):
        self.root = Path(root)
        self.class_names = tuple(class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def samples(self, split: str) -> list[Sample]:
        """The samples of ``split``, read once per reader; a read that fails is not kept, so it is retried."""
        self._check_split(split)
        # Made on first use: wsolmeta lists its samples before Dataset.__init__, to learn its classes.
        cache = vars(self).setdefault("_cache", {})
        if split not in cache:
            cache[split] = self._read_split(split)
        return cache[split]

    def _read_split(self, split: str) -> list[Sample]:
        """The samples of a known ``split``, read from disk (:meth:`samples` checks the split and caches)."""
        raise NotImplementedError

    def describe_gt(self, split: str) -> str:
        """Where the ground truth of ``split`` comes from, printed beside every number."""
        return str(self.root)

    def load_image(self, sample: Sample) -> np.ndarray:
        return read_image(sample.image)

    def load_mask(self, sample: Sample) -> np.ndarray:
        """The (H, W) uint8 class-index mask; values in [0, num_classes) or 255 (ignore)."""
        if sample.mask is None:
            raise UserError(f"{self.name}: image {sample.id!r} has no ground-truth mask in this split; "
                            f"use a split with masks ({self.describe_gt('train')})")
        return read_mask(sample.mask, self.num_classes)

    def load_context(self, sample: Sample) -> np.ndarray | None:
        """The (H, W) uint8 context map where the dataset has one (the synthetic benchmark), else None.

        A pixel of value ``c > 0`` lies on the *context* of class ``c`` (the region that co-occurs with
        class ``c`` and confounds it); 0 is no context. Context confusion is the share of class ``c``'s
        false-positive pixels that fall where the context map is ``c``.
        """
        return None

    def _check_split(self, split: str) -> None:
        if split not in self.split_names():
            raise UserError(f"{self.name}: unknown split {split!r}; this layout has: {', '.join(self.split_names())}")


def num_fg(dataset: Dataset) -> int:
    """The foreground classes (the classifier's outputs): ``num_classes`` less the background, if any.
    A function rather than a property so that datasets not derived from :class:`Dataset` have it too."""
    return dataset.num_classes - 1 if dataset.has_background else dataset.num_classes


def read_image(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; a missing or unreadable file is a :class:`UserError`."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path}: unreadable image ({err}); re-extract the dataset") from None


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    """A class-index PNG (palette or grayscale) as (H, W) uint8, values checked against the classes."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise UserError(f"{path}: mask has mode {im.mode}; expected a palette or grayscale "
                                "class-index PNG")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise UserError(f"{path}: mask file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path}: unreadable mask ({err}); re-extract or regenerate it") from None
    bad = (arr >= num_classes) & (arr != IGNORE)
    if bad.any():
        raise UserError(f"{path}: mask value {int(arr[bad].max())} is outside the {num_classes} classes "
                        f"(0..{num_classes - 1}, 255 = ignore)")
    return arr.astype(np.uint8, copy=False)


def mask_png(arr: np.ndarray, palette: Sequence[int] | None = None) -> bytes:
    """A class-index mask as PNG bytes: grayscale, or palette mode with ``palette`` (256 × RGB, flat)."""
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="L" if palette is None else "P")
    if palette is not None:
        im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="PNG", **PNG_OPTIONS)
    return buf.getvalue()


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a list file; a missing file is a :class:`UserError` saying what it is."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: missing {what}") from None
    except (OSError, UnicodeDecodeError) as err:      # a folder in its place, no permission, binary bytes
        raise UserError(f"{path}: unreadable {what.splitlines()[0]} ({type(err).__name__}: {err})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    """``--root``, else ``$WSSSBENCH_DATA/<name>``, else ``~/.cache/wsssbench/data/<name>``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("WSSSBENCH_DATA")
    if env:
        return Path(env).expanduser() / name
    return Path.home() / ".cache" / "wsssbench" / "data" / name


def find_layout(name: str, root: str | os.PathLike | None, subdirs: tuple[str, ...], marker: str,
                what: str, layout: str) -> Path:
    """The folder holding a dataset's layout: the resolved root or one of its ``subdirs``, whichever has
    ``marker``; none → a :class:`UserError` showing the expected ``layout``."""
    base = resolve_root(name, root)
    for cand in (base, *(base / d for d in subdirs)):
        if (cand / marker).exists():
            return cand
    raise UserError(f"{base}: no {what} layout found; {layout}")
