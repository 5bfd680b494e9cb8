"""wsolevaluation's metadata layout (clovaai/wsolevaluation ``metadata/<DATASET>/<split>/``).

Four comma-separated files per split: ``image_ids.txt`` (``<path>``), ``class_labels.txt``
(``<path>,<class>``), ``image_sizes.txt`` (``<path>,<w>,<h>``) and ``localization.txt``
(``<path>,<x0>,<y0>,<x1>,<y1>``, one line per box, several boxes per image allowed). Evaluation needs
only these; the images (``images=DIR``) are optional.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import DATASETS
from .base import Dataset, Sample, read_lines, resolve_root

FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


class WsolMetadata(Dataset):
    name = "wsolmeta"
    task = "localization"
    has_background = False

    def __init__(self, root: Path, images: Path | None = None):
        self.images = Path(images) if images is not None else None
        self._splits = {p.name: p for p in sorted(root.iterdir()) if (p / "image_ids.txt").is_file()} \
            if root.is_dir() else {}
        if (root / "image_ids.txt").is_file():        # a split folder itself
            self._splits = {root.name: root}
        if not self._splits:
            raise UserError(f"{root}: no wsolevaluation metadata here; expected {', '.join(FILES)} "
                            "in this folder or in its <split>/ sub-folders")
        labels = [s.labels[0] for split in self._splits for s in self.samples(split)]
        super().__init__(root, [str(c) for c in range(max(labels, default=-1) + 1)])

    def split_names(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def describe_gt(self, split: str) -> str:
        return f"boxes from {self._splits[split] / 'localization.txt'}"

    def _read_split(self, split: str) -> list[Sample]:
        folder = self._splits[split]
        ids = read_lines(folder / "image_ids.txt", "wsolevaluation image list")
        labels = _table(folder / "class_labels.txt", 1)
        sizes = _table(folder / "image_sizes.txt", 2)
        boxes: dict[str, list[tuple[float, ...]]] = {}
        for image_id, values in _rows(folder / "localization.txt", 4):
            boxes.setdefault(image_id, []).append(values)
        known = set(ids)
        for path, table in ((folder / "class_labels.txt", labels), (folder / "image_sizes.txt", sizes),
                            (folder / "localization.txt", boxes)):
            extra = [i for i in table if i not in known]
            missing = [i for i in ids if i not in table]
            if extra or missing:
                what = f"has id {extra[0]!r} not in image_ids.txt" if extra else f"lacks image id {missing[0]!r}"
                raise UserError(f"{path}: {what} ({len(extra)} extra, {len(missing)} missing); "
                                "the metadata files must list the same images")
        root = self.images if self.images is not None else folder
        return [Sample(id=i, image=root / i, labels=(int(labels[i][0]),), boxes=tuple(boxes[i]),
                       size=(int(sizes[i][1]), int(sizes[i][0]))) for i in ids]


def _rows(path: Path, width: int):
    for line in read_lines(path, "wsolevaluation metadata file"):
        parts = line.split(",")
        try:
            if len(parts) != width + 1:
                raise ValueError
            yield parts[0], tuple(float(v) for v in parts[1:])
        except ValueError:
            raise UserError(f"{path}: malformed line {line!r}; expected <image id> and {width} "
                            "comma-separated numbers") from None


def _table(path: Path, width: int) -> dict[str, tuple[float, ...]]:
    table: dict[str, tuple[float, ...]] = {}
    for image_id, values in _rows(path, width):
        if image_id in table:
            raise UserError(f"{path}: image id {image_id!r} is listed twice")
        table[image_id] = values
    return table


@DATASETS.register("wsolmeta")
def wsolmeta(root=None, images=None) -> WsolMetadata:
    return WsolMetadata(resolve_root("wsolmeta", root), images)
