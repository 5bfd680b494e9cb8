"""PASCAL VOC 2012 in its official layout (plus SBD's ``SegmentationClassAug`` for ``train_aug``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from . import DATASETS
from .base import Dataset, Sample, find_layout, read_lines, read_mask

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")

LAYOUT = """expected layout (VOCdevkit/VOC2012 or a folder holding it):
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png          palette PNG, train/val ground truth
  SegmentationClassAug/<id>.png       SBD class-index PNG, train_aug ground truth (optional)
  ImageSets/Segmentation/{train,val,test,train_aug}.txt"""

# split -> folder of its ground truth (else SegmentationClass); IRN scores seeds on `train` with the original
# SegmentationClass PNGs, while train_aug's masks come from SBD's SegmentationClassAug.
MASK_DIRS = {"train_aug": "SegmentationClassAug"}


class VOCSegmentation(Dataset):
    name = "voc"

    def __init__(self, root: Path, class_names=VOC_CLASSES):
        super().__init__(root, class_names)
        self._lists = self.root / "ImageSets" / "Segmentation"
        self._cls_labels = _load_irn_cls_labels(self.root, self.num_classes - 1)

    def split_names(self) -> tuple[str, ...]:
        return tuple(sorted(p.stem for p in self._lists.glob("*.txt")))

    def _check_split(self, split: str) -> None:
        if split == "train_aug" and split not in self.split_names():
            raise UserError(f"{self._lists / 'train_aug.txt'}: missing; VOC 2012 does not ship it — copy IRN's "
                            "voc12/train_aug.txt (10,582 ids) there, with SBD's SegmentationClassAug/")
        super()._check_split(split)

    def mask_dir(self, split: str) -> Path:
        return self.root / MASK_DIRS.get(split, "SegmentationClass")

    def describe_gt(self, split: str) -> str:
        return f"{split} split, masks from {self.mask_dir(split)}"

    def _read_split(self, split: str) -> list[Sample]:
        ids = [ln.split()[0] for ln in read_lines(self._lists / f"{split}.txt", f"VOC split list\n{LAYOUT}")]
        mask_dir = self.mask_dir(split)
        has_masks = split != "test" and mask_dir.is_dir()
        if split != "test" and not has_masks and self._cls_labels is None:
            raise UserError(f"{mask_dir}: missing, and no cls_labels.npy in {self.root}; the {split} split needs "
                            f"one of them for its labels\n{LAYOUT}")
        out = []
        for id_ in ids:
            # Images are checked when read (`load_image` names a missing one): evaluating masks needs none.
            image = self.root / "JPEGImages" / f"{id_}.jpg"
            mask = mask_dir / f"{id_}.png" if has_masks else None
            if mask is not None and not mask.is_file():
                raise UserError(f"{mask}: mask of {id_!r} (listed in {split}.txt) is missing")
            out.append(Sample(id=id_, image=image, labels=self._labels(id_, mask), mask=mask))
        return out

    def _labels(self, id_: str, mask: Path | None) -> tuple[int, ...]:
        """Image-level labels: IRN's ``cls_labels.npy`` when present, else the classes in the mask."""
        if self._cls_labels is not None and id_ in self._cls_labels:
            return self._cls_labels[id_]
        if mask is None:
            return ()
        present = np.unique(read_mask(mask, self.num_classes))
        return tuple(int(c) for c in present if 0 < c < self.num_classes)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 × RGB, as VOC's SegmentationClass PNGs carry it."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _load_irn_cls_labels(root: Path, num_foreground: int) -> dict[str, tuple[int, ...]] | None:
    """IRN's ``cls_labels.npy``: {int id (2007000032) or str id: 20-dim multi-hot} → 1-based labels."""
    path = root / "cls_labels.npy"
    if not path.is_file():
        return None
    try:
        table = np.load(path, allow_pickle=True).item()
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: unreadable ({err}); expected IRN's cls_labels.npy (a pickled dict)") from None
    if not isinstance(table, dict):
        raise UserError(f"{path}: holds a {type(table).__name__}, not IRN's {{image id: multi-hot}} dict")
    out = {}
    for key, hot in table.items():
        hot = np.asarray(hot).ravel()
        if hot.shape != (num_foreground,):
            raise UserError(f"{path}: labels of {key} have {hot.size} entries, not {num_foreground} "
                            "(one per foreground class)")
        key = str(key)
        # IRN codes "2007_000032" as the int 2007000032 (decode_int_filename).
        id_ = f"{key[:4]}_{key[4:]}" if "_" not in key and len(key) == 10 else key
        out[id_] = tuple(int(i) + 1 for i in np.flatnonzero(hot))
    return out


@DATASETS.register("voc")
def voc(root=None, **options) -> VOCSegmentation:
    root = find_layout("voc", root, ("VOC2012", "VOCdevkit/VOC2012"), "ImageSets/Segmentation",
                       "VOC 2012", LAYOUT)
    return VOCSegmentation(root, **options)
