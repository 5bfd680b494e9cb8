"""CUB-200-2011 in its official layout: 200 classes, one box per image, train/test split."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from . import DATASETS
from .base import Dataset, Sample, find_layout, read_lines

LAYOUT = """expected layout (CUB_200_2011/):
  images/<class folder>/<name>.jpg
  images.txt               <image_id> <relative path>
  classes.txt              <class_id> <class name>
  image_class_labels.txt   <image_id> <class_id, 1-based>
  train_test_split.txt     <image_id> <1 = train, 0 = test>
  bounding_boxes.txt       <image_id> <x> <y> <width> <height>"""


class CUB(Dataset):
    name = "cub"
    task = "localization"
    has_background = False

    def __init__(self, root: Path):
        names = [_two(ln, root / "classes.txt")[1] for ln in read_lines(root / "classes.txt", f"CUB class list\n{LAYOUT}")]
        super().__init__(root, names)

    def split_names(self) -> tuple[str, ...]:
        return ("test", "train")

    def describe_gt(self, split: str) -> str:
        return f"{split} split, boxes from {self.root / 'bounding_boxes.txt'}"

    def _read_split(self, split: str) -> list[Sample]:
        """The images of ``split``; every line of the metadata files is checked, whichever split it is in."""
        def table(fname: str) -> dict[str, str]:
            path = self.root / fname
            return dict(_two(ln, path) for ln in read_lines(path, f"CUB metadata file\n{LAYOUT}"))

        paths, labels, is_train, boxes = (table(f) for f in ("images.txt", "image_class_labels.txt",
                                                              "train_test_split.txt", "bounding_boxes.txt"))
        out = []
        for image_id, rel in paths.items():
            for what, tab in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                              ("bounding_boxes.txt", boxes)):
                if image_id not in tab:
                    raise UserError(f"{self.root / what}: image id {image_id} of images.txt is missing")
            x, y, w, h = _box(boxes[image_id], self.root / "bounding_boxes.txt", image_id)
            try:
                cls = int(labels[image_id]) - 1
            except ValueError:
                cls = -1
            if not 0 <= cls < self.num_classes:
                raise UserError(f"{self.root / 'image_class_labels.txt'}: class {labels[image_id]!r} of image "
                                f"{image_id} is not an integer in 1..{self.num_classes}")
            flag = is_train[image_id].strip()
            if flag not in ("0", "1"):
                raise UserError(f"{self.root / 'train_test_split.txt'}: image {image_id} has split {flag!r}; "
                                "expected 1 (train) or 0 (test)")
            if ("train" if flag == "1" else "test") == split:
                # As wsolevaluation's metadata: corners (x, y, x + w, y + h), no -1.
                out.append(Sample(id=rel, image=self.root / "images" / rel, labels=(cls,),
                                  boxes=((x, y, x + w, y + h),)))
        return out


def _box(text: str, path: Path, image_id: str) -> tuple[float, float, float, float]:
    """``<x> <y> <width> <height>``: four finite numbers, width and height not negative."""
    try:
        x, y, w, h = (float(v) for v in text.split())
    except ValueError:
        x = y = w = h = float("nan")
    if not all(map(math.isfinite, (x, y, w, h))) or w < 0 or h < 0:
        raise UserError(f"{path}: box of image {image_id} is {text!r}; expected '<x> <y> <width> <height>' "
                        "(four finite numbers, width and height >= 0)")
    return x, y, w, h


def _two(line: str, path: Path) -> tuple[str, str]:
    parts = line.split(maxsplit=1)
    if len(parts) != 2:
        raise UserError(f"{path}: malformed line {line!r}; expected '<id> <value>'")
    return parts[0], parts[1]


@DATASETS.register("cub")
def cub(root=None) -> CUB:
    root = find_layout("cub", root, ("CUB_200_2011",), "images.txt",
                       "CUB-200-2011", LAYOUT)
    return CUB(root)
