"""ImageNet (ILSVRC 2012) localization in the Kaggle ``imagenet-object-localization-challenge`` layout.

Validation: ``LOC_val_solution.csv`` gives every image's boxes (several per image) as
``<synset> x_min y_min x_max y_max`` groups; classes are the 1,000 synsets of ``LOC_synset_mapping.txt``
in file order (0-based, no background). Training: the class folders of ``train/``, labels from the
folder name (boxes from ``LOC_train_solution.csv`` where it has the image). Sample ids are the image
paths relative to ``Data/CLS-LOC`` (``val/ILSVRC2012_val_00000001.JPEG``), as wsolevaluation names them.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import UserError
from . import DATASETS
from .base import Box, Dataset, Sample, find_layout, read_lines

LAYOUT = """expected layout (the Kaggle ILSVRC localization download):
  LOC_synset_mapping.txt              <synset> <names>, one line per class, in class order
  LOC_val_solution.csv                ImageId,PredictionString  ("<synset> x0 y0 x1 y1 ..." per image)
  LOC_train_solution.csv              same, for the training images that have boxes (optional)
  ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG
  ILSVRC/Data/CLS-LOC/train/<synset>/<ImageId>.JPEG"""


class ILSVRC(Dataset):
    name = "ilsvrc"
    task = "localization"
    has_background = False

    def __init__(self, root: Path):
        mapping = root / "LOC_synset_mapping.txt"
        self.synsets, names = [], []
        for line in read_lines(mapping, f"ILSVRC synset mapping\n{LAYOUT}"):
            synset, _, name = line.partition(" ")
            if not synset.startswith("n") or not name:
                raise UserError(f"{mapping}: malformed line {line!r}; expected '<synset> <names>'")
            self.synsets.append(synset)
            names.append(name.strip())
        super().__init__(root, names)
        self._index = {s: i for i, s in enumerate(self.synsets)}
        self.images = root / "ILSVRC" / "Data" / "CLS-LOC"

    def split_names(self) -> tuple[str, ...]:
        return tuple(s for s in ("train", "val") if (self.images / s).is_dir())

    def describe_gt(self, split: str) -> str:
        return f"{split} split, boxes from {self.root / f'LOC_{split}_solution.csv'}"

    def _read_split(self, split: str) -> list[Sample]:
        return self._val() if split == "val" else self._train()

    def _val(self) -> list[Sample]:
        boxes = self._solution(self.root / "LOC_val_solution.csv", required=True)
        out = []
        for image_id in sorted(boxes):
            entries = boxes[image_id]
            labels = tuple(dict.fromkeys(cls for cls, _ in entries))      # distinct, in file order
            out.append(Sample(id=f"val/{image_id}.JPEG", image=self.images / "val" / f"{image_id}.JPEG",
                              labels=labels, boxes=tuple(b for _, b in entries)))
        return out

    def _train(self) -> list[Sample]:
        boxes = self._solution(self.root / "LOC_train_solution.csv", required=False)
        out = []
        for synset in self.synsets:
            folder = self.images / "train" / synset
            if not folder.is_dir():
                raise UserError(f"{folder}: class folder of {synset} is missing; {LAYOUT}")
            cls = self._index[synset]
            for name in sorted(e.name for e in os.scandir(folder) if e.is_file()):
                image_id = name.rsplit(".", 1)[0]
                out.append(Sample(id=f"train/{synset}/{name}", image=folder / name, labels=(cls,),
                                  boxes=tuple(b for _, b in boxes.get(image_id, ()))))
        return out

    def _solution(self, path: Path, required: bool) -> dict[str, list[tuple[int, Box]]]:
        """ImageId -> [(class, (x0, y0, x1, y1)), ...] in file order."""
        if not path.is_file():
            if required:
                raise UserError(f"{path}: missing ILSVRC box file; {LAYOUT}")
            return {}
        out: dict[str, list[tuple[int, Box]]] = {}
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise UserError(f"{path}: expected the header 'ImageId,PredictionString'")
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                fields = row[1].split() if len(row) > 1 else []
                if len(row) != 2 or not fields or len(fields) % 5:
                    raise UserError(f"{path}:{lineno}: expected '<ImageId>,<synset> x0 y0 x1 y1 ...'")
                entries = []
                for k in range(0, len(fields), 5):
                    synset = fields[k]
                    if synset not in self._index:
                        raise UserError(f"{path}:{lineno}: synset {synset} is not in LOC_synset_mapping.txt")
                    try:
                        box = tuple(float(v) for v in fields[k + 1:k + 5])
                    except ValueError:
                        raise UserError(f"{path}:{lineno}: box coordinates must be numbers") from None
                    entries.append((self._index[synset], box))
                out[row[0]] = entries
        return out


@DATASETS.register("ilsvrc")
def ilsvrc(root=None) -> ILSVRC:
    root = find_layout("ilsvrc", root, ("imagenet-object-localization-challenge",), "LOC_synset_mapping.txt",
                       "ILSVRC localization", LAYOUT)
    return ILSVRC(root)
