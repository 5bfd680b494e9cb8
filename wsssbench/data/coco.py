"""MS-COCO 2014 in its official layout, with the CONTA lineage's semantic ground truth (recipe ``recam``).

COCO has no official semantic mask. The recipe pinned here is ReCAM's (``zhaozhengChen/ReCAM@2bdbcd2``,
``mscoco/annToMask.py`` and ``mscoco/dataloader.py``), which CONTA's COCO numbers share:

* per image, the non-crowd annotations only (crowd pixels stay background 0, never 255), painted in
  JSON order, a later annotation overwriting an earlier one; every image of the json gets a mask
  (all zeros when it has no annotation);
* category ids 1..90 compacted to 1..80 in increasing id order, 0 = background (81 classes, no ignore);
* image-level labels: the categories of *all* the image's annotations, crowd included;
* images in increasing image id (torchvision's ``CocoDetection`` order), named by the file stem
  (``COCO_train2014_000000000009``), as ReCAM names its CAM files.

Another community recipe (crowd included, area-sorted, raw ids) gives different ground truth; numbers
made on it are not comparable.

**Mask cache.** pycocotools' index of ``instances_train2014.json`` takes several GB. So the first read of a
split decodes every mask once (as ``wsssbench data masks`` writes them) into ``<mask_cache>/recam/<split>/``
(default ``<root>/wsssbench_masks``; option ``mask_cache``, ``none`` to decode on demand) with a
``manifest.json`` holding the annotation file's size and SHA-256, the samples and each PNG's SHA-256; the
index is then dropped. Later reads check the annotation file against the manifest (another file: the
cache is rebuilt) and each PNG against its digest when it is read (a mismatch is a UserError), and never
load the json: memory holds the sample list, never the annotations or the masks.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import DATASETS
from ..io import atomic_path, write_json
from .base import Dataset, Sample, find_layout, mask_png

RECIPE = "recam"

LAYOUT = """expected layout (the folder holding):
  train2014/COCO_train2014_<12-digit id>.jpg
  val2014/COCO_val2014_<12-digit id>.jpg
  annotations/instances_train2014.json, annotations/instances_val2014.json"""

SPLITS = {"train": "train2014", "val": "val2014"}


class COCOSegmentation(Dataset):
    name = "coco"

    def __init__(self, root: Path, mask_cache: str | os.PathLike | None = None):
        self.root = Path(root)
        if mask_cache is None:
            self.cache: Path | None = self.root / "wsssbench_masks"
        else:
            self.cache = None if str(mask_cache).lower() == "none" else Path(mask_cache)
        self._coco: dict[str, object] = {}
        self._manifests: dict[str, dict] = {}
        splits = self.split_names()
        if not splits:
            raise UserError(f"{self.root / 'annotations'}: no instances_{{train,val}}2014.json; {LAYOUT}")
        manifest = next(filter(None, (self._manifest(s) for s in splits)), None)
        if manifest is not None:
            cats = [(int(c), str(n)) for c, n in manifest["categories"]]
        else:
            first = self.api("val" if "val" in splits else splits[0])     # val's json is the smaller one
            cats = sorted((int(c["id"]), str(c["name"])) for c in first.dataset["categories"])
        self.category_ids = tuple(c for c, _ in cats)
        super().__init__(root, ("background", *(name for _, name in cats)))
        # ReCAM's category_map: the k-th smallest category id -> k (1-based), background 0.
        self._lut = {cat: k + 1 for k, cat in enumerate(self.category_ids)}

    def split_names(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if self._ann_path(s).is_file())

    def _ann_path(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{SPLITS[split]}.json"

    def describe_gt(self, split: str) -> str:
        return f"{SPLITS.get(split, split)} masks decoded from {self._ann_path(split)} (recipe {RECIPE})"

    def api(self, split: str):
        """The pycocotools ``COCO`` object of ``split`` (loaded once)."""
        if split not in SPLITS or not self._ann_path(split).is_file():
            self._check_split(split)
        if split not in self._coco:
            self._coco[split] = _load_api(self._ann_path(split))
            ids = tuple(sorted(int(c["id"]) for c in self._coco[split].dataset["categories"]))
            if hasattr(self, "category_ids") and ids != self.category_ids:
                raise UserError(f"{self._ann_path(split)}: its categories differ from the other split's")
        return self._coco[split]

    def _read_split(self, split: str) -> list[Sample]:
        if self.cache is None:
            return self._samples_from_api(split)
        manifest = self._manifest(split) or self._build_cache(split)
        folder = self.cache / RECIPE / split
        return [Sample(id=i, image=self.root / SPLITS[split] / name, labels=tuple(labels), mask=folder / f"{i}.png",
                       size=(h, w)) for i, name, labels, h, w in manifest["samples"]]

    def _samples_from_api(self, split: str) -> list[Sample]:
        api = self.api(split)
        path = self._ann_path(split)
        out = []
        for image_id in sorted(api.imgs):           # torchvision CocoDetection's order
            info = api.imgs[image_id]
            cats = {a["category_id"] for a in api.imgToAnns.get(image_id, [])}   # crowd included
            unknown = cats - self._lut.keys()
            if unknown:
                raise UserError(f"{path}: image {image_id} has annotations of category {min(unknown)}, "
                                "which `categories` does not list")
            # `mask` names the file the mask is decoded from (load_mask), so it is never None here.
            out.append(Sample(id=Path(info["file_name"]).stem, image=self.root / SPLITS[split] / info["file_name"],
                              labels=tuple(sorted(self._lut[c] for c in cats)), mask=path,
                              size=(int(info["height"]), int(info["width"]))))
        return out

    def _annotation_stamp(self, split: str) -> dict:
        """The annotation file's size and SHA-256 (what a cache must have been made from)."""
        path = self._ann_path(split)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        return {"file": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}

    def _manifest(self, split: str) -> dict | None:
        """The split's cache manifest if the cache was made from the present annotation file, else None."""
        if self.cache is None:
            return None
        if split not in self._manifests:
            path = self.cache / RECIPE / split / "manifest.json"
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            if manifest.get("recipe") != RECIPE or manifest.get("annotations") != self._annotation_stamp(split):
                return None
            self._manifests[split] = manifest
        return self._manifests[split]

    def _build_cache(self, split: str) -> dict:
        """Decode every mask of ``split`` once into the cache, write the manifest last, drop the json's index."""
        folder = self.cache / RECIPE / split
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"coco: cannot write the mask cache {folder} ({err}); give a writable folder with "
                            "--option mask_cache=DIR, or mask_cache=none to decode masks on demand") from None
        samples = self._samples_from_api(split)
        digests = {}
        for sample in samples:
            png = mask_png(self._decode(sample))
            with atomic_path(folder / f"{sample.id}.png") as tmp:
                tmp.write_bytes(png)
            digests[sample.id] = hashlib.sha256(png).hexdigest()
        manifest = {"recipe": RECIPE, "annotations": self._annotation_stamp(split),
                    "categories": [[c, self.class_names[self._lut[c]]] for c in self.category_ids],
                    "samples": [[s.id, s.image.name, list(s.labels), *s.size] for s in samples], "masks": digests}
        write_json(folder / "manifest.json", manifest)
        self._coco.pop(split, None)                 # the index is no longer needed: its gigabytes go
        self._manifests[split] = manifest
        return manifest

    def load_mask(self, sample: Sample) -> np.ndarray:
        """The ``recam`` semantic mask of ``sample``: from the cache (its digest checked), else decoded."""
        if self.cache is None or Path(sample.mask).suffix != ".png":
            return self._decode(sample)
        split = Path(sample.mask).parent.name
        manifest = self._manifest(split) if split in SPLITS else None
        if manifest is None or sample.id not in manifest["masks"]:
            raise UserError(f"coco: sample {sample.id!r} does not come from this dataset's mask cache")
        data = Path(sample.mask).read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["masks"][sample.id]:
            raise UserError(f"{sample.mask}: differs from the mask cache's manifest (corrupt or edited); delete "
                            f"{self.cache / RECIPE / split} to rebuild it")
        from PIL import Image
        return np.array(Image.open(io.BytesIO(data)))

    def _decode(self, sample: Sample) -> np.ndarray:
        """The mask decoded from the split's instances json with pycocotools."""
        split = next((s for s in SPLITS if sample.mask == self._ann_path(s)), None)
        if split is None:
            raise UserError(f"coco: sample {sample.id!r} does not come from this dataset's annotation files")
        image_id = int(sample.id.rsplit("_", 1)[1])
        try:
            return recam_mask(self.api(split), image_id, self._lut)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as err:
            raise UserError(f"{self._ann_path(split)}: malformed annotation of image {image_id} ({type(err).__name__}: "
                            f"{err}); expected a known category_id and a segmentation of polygons or RLE") from None


def _load_api(path: Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):    # pycocotools prints its progress to stdout
            api = COCO(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: missing COCO annotation file; {LAYOUT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); re-download the annotations") from None
    except (KeyError, TypeError, AssertionError) as err:
        raise UserError(f"{path}: not a COCO instances file ({err!r})") from None
    for key in ("categories", "images"):
        if key not in api.dataset:
            raise UserError(f"{path}: has no `{key}`; expected a COCO instances file")
    return api


def recam_mask(api, image_id: int, lut: dict[int, int]) -> np.ndarray:
    """ReCAM's ``annToMask.py`` per image: non-crowd annotations in JSON order, later overwrites earlier."""
    info = api.imgs[image_id]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    for ann in api.imgToAnns.get(image_id, []):      # JSON order, as getAnnIds + loadAnns return them
        if ann.get("iscrowd", 0):
            continue
        out[api.annToMask(ann) == 1] = lut[ann["category_id"]]
    return out


@DATASETS.register("coco")
def coco(root=None, mask_cache=None) -> COCOSegmentation:
    root = find_layout("coco", root, ("coco", "COCO", "MSCOCO"), "annotations",
                       "MS-COCO 2014", LAYOUT)
    return COCOSegmentation(root, mask_cache)
