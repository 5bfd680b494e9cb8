"""The synthetic confounded benchmark: generated once, then read through the VOC, CUB and COCO readers.

``get_dataset("synthetic", preset="tiny", seed=0, confounding=None)`` generates (if needed) and reads
the VOC-layout segmentation benchmark; ``get_dataset("synthetic-loc", ...)`` its CUB-layout
localization twin (one labelled object per image). The COCO-shaped presets (``coco-shape``,
``coco-tiny``) are written by ``wsssbench data synth`` in MS-COCO 2014's layout, read by the ``coco``
reader itself. The scene design is in :mod:`.synthetic_scene` and ``docs/datasets.md``. A generated
folder is::

    <preset>-seed<S>-c<P>/
      seg/   JPEGImages/ SegmentationClass/ SegmentationClassAug/ ContextMap/ ImageSets/Segmentation/
             cls_labels.npy synthetic.json
      loc/   images/ images.txt classes.txt image_class_labels.txt train_test_split.txt
             bounding_boxes.txt contexts/ synthetic.json
      coco/  train2014/ val2014/ annotations/instances_{train,val}2014.json synthetic.json

Each layout is written into a temporary sibling folder and renamed into place when complete, so a
folder that exists is whole. Every image has its own random stream ``(seed, layout, index)``, so the
files do not depend on how many processes wrote them: same preset + seed + confounding → same bytes.
"""
from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import cv2
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import UserError
from . import DATASETS
from .base import Sample, mask_png, read_mask, resolve_root
from .cub import CUB
from .synthetic_scene import ClassSpec, make_classes, render
from .voc import VOCSegmentation, voc_palette

#: Bumped whenever a change to the generator changes its output; a folder of another version is refused.
GENERATOR_VERSION = 2
MANIFEST = "synthetic.json"
JPEG_OPTIONS = {"quality": 95, "subsampling": 0, "optimize": False}   # 4:4:4 keeps thin stripes intact
PARALLEL_MIN_IMAGES = 2000   # below this, starting worker processes costs more than it saves
ID_PREFIX = 9000       # ids "9000_000123": IRN's int-coded ids (9000000123) round-trip, no clash with VOC's years
STREAMS = {"seg": 0, "loc": 1, "coco": 2}    # the layout's entry in each image's random stream
#: MS-COCO's 80 category ids (1..90 with gaps); a preset of K classes takes K of them, evenly spread.
COCO_CATEGORY_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                     *range(72, 83), *range(84, 91))
CROWD_SHARE = 0.01     # COCO 2014: about 1 % of instance annotations are iscrowd (uncompressed RLE)


@dataclass(frozen=True)
class Preset:
    name: str
    num_classes: int                          # foreground classes
    sizes: tuple[tuple[int, int], ...]        # (H, W) choices
    size_weights: tuple[float, ...]
    objects: tuple[float, ...]                # P(1 primary object), P(2), ... per segmentation image
    scale: tuple[float, float]                # object radius as a fraction of min(H, W)
    seg: tuple[int, int, int] | None          # (train_aug, train ⊂ train_aug, val) image counts
    loc: tuple[int, int] | None               # (train, test) image counts
    confounding: float                        # default P(context tied to its class)
    coco: tuple[int, int] | None = None       # (train2014, val2014) image counts
    polygon_tolerance: float = 0.0            # coco: how far (px) a polygon may stray from the pixels; 0 = exact

    def resolve_confounding(self, confounding: float | None) -> float:
        """``confounding`` as a float, or this preset's default when it is None."""
        return self.confounding if confounding is None else float(confounding)

    def describe(self) -> str:
        size = "×".join(map(str, self.sizes[0][::-1])) + ("…" if len(self.sizes) > 1 else "")
        parts = [f"{self.num_classes} classes", size]
        if self.seg:
            parts.append(f"seg train_aug/train/val {self.seg[0]}/{self.seg[1]}/{self.seg[2]}")
        if self.loc:
            parts.append(f"loc train/test {self.loc[0]}/{self.loc[1]}")
        if self.coco:
            parts.append(f"coco train2014/val2014 {self.coco[0]}/{self.coco[1]}")
        return ", ".join(parts)


# VOC 2012 image shapes (most are 500 wide, 333–375 high, some portrait), for the full-size presets.
_VOC_SIZES = ((375, 500), (333, 500), (500, 375), (500, 333), (281, 500))
_VOC_WEIGHTS = (0.45, 0.25, 0.15, 0.1, 0.05)
# COCO 2014 image shapes (mostly 640 on the long side, landscape 4:3 and 3:2, some portrait and square).
_COCO_SIZES = ((480, 640), (427, 640), (640, 480), (640, 427), (612, 612), (375, 500))
_COCO_WEIGHTS = (0.4, 0.25, 0.15, 0.1, 0.05, 0.05)

PRESETS = {p.name: p for p in (
    # CPU default: the whole CAM → seeds → random walk → DeepLab pipeline runs in minutes on 2 cores.
    Preset("tiny", num_classes=6, sizes=((64, 64),), size_weights=(1.0,), objects=(0.6, 0.4),
           scale=(0.16, 0.28), seg=(800, 200, 200), loc=(600, 300), confounding=0.8),
    # tiny's scenes, 5x the images: pseudo-mask std 2.5 over seeds, tiny 7.2 (docs/statistics.md, "The quiet preset").
    Preset("quiet", num_classes=6, sizes=((64, 64),), size_weights=(1.0,), objects=(0.6, 0.4),
           scale=(0.16, 0.28), seg=(4000, 1000, 1000), loc=(3000, 1500), confounding=0.8),
    # PASCAL VOC 2012 + SBD split sizes (10,582 train_aug ⊃ 1,464 train; 1,449 val), 20 classes, VOC shapes.
    Preset("voc-shape", num_classes=20, sizes=_VOC_SIZES, size_weights=_VOC_WEIGHTS, objects=(0.5, 0.3, 0.2),
           scale=(0.12, 0.26), seg=(10582, 1464, 1449), loc=None, confounding=0.8),
    # CUB-200-2011 split sizes (5,994 train / 5,794 test), 200 fine-grained classes, one object per image.
    Preset("cub-shape", num_classes=200, sizes=_VOC_SIZES, size_weights=_VOC_WEIGHTS, objects=(1.0,),
           scale=(0.18, 0.32), seg=None, loc=(5994, 5794), confounding=0.8),
    # MS-COCO 2014 (82,783 train2014 / 40,504 val2014), 80 classes, COCO shapes, ~3 classes per image
    # (COCO: 2.9), small objects; written in COCO's own layout, polygons and RLE. Polygons simplified to
    # 0.75 px keep the train json near COCO's size (exact ones would make it ~2 GB).
    Preset("coco-shape", num_classes=80, sizes=_COCO_SIZES, size_weights=_COCO_WEIGHTS,
           objects=(0.4, 0.3, 0.15, 0.08, 0.04, 0.03), scale=(0.05, 0.22), seg=None, loc=None,
           confounding=0.8, coco=(82783, 40504), polygon_tolerance=0.75),
    # Its CPU sibling: COCO's shapes at 1/8 scale, 2:1 train/val like COCO, several classes per image.
    Preset("coco-tiny", num_classes=20, sizes=((60, 80), (53, 80), (80, 60)), size_weights=(0.5, 0.3, 0.2),
           objects=(0.3, 0.3, 0.25, 0.15), scale=(0.14, 0.26), seg=None, loc=None, confounding=0.8,
           coco=(1200, 600)),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown synthetic preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def folder_name(preset: str, seed: int, confounding: float) -> str:
    return f"{preset}-seed{seed}-c{confounding:g}"


def coco_category_ids(k: int) -> tuple[int, ...]:
    """The COCO category ids of classes 1..k: k of COCO's 80, evenly spread (so sparse, with gaps)."""
    return tuple(COCO_CATEGORY_IDS[j * len(COCO_CATEGORY_IDS) // k] for j in range(k))


# ---------------------------------------------------------------------------------------------------- writing

def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", **JPEG_OPTIONS)
    return buf.getvalue()


class _Job:
    """Renders and writes image ``i`` of a layout; picklable so a process pool can run it."""

    def __init__(self, preset: Preset, seed: int, confounding: float, layout: str, out: Path):
        self.preset, self.seed, self.confounding, self.layout, self.out = preset, seed, confounding, layout, out
        self.classes = make_classes(preset.num_classes)
        k = preset.num_classes
        mean_objects = sum((n + 1) * w for n, w in enumerate(preset.objects)) if layout != "loc" else 1.0
        self.base_rate = mean_objects / k          # context frequency = class frequency (see synthetic_scene)
        self.palette = voc_palette()
        self.category_ids = coco_category_ids(k) if layout == "coco" else ()

    def rng(self, i: int) -> np.random.Generator:
        """Image ``i``'s own random stream: the files do not depend on which process renders which image."""
        return np.random.default_rng([self.seed, STREAMS[self.layout], i])

    def scene(self, rng: np.random.Generator, primaries: list[int] | None = None):
        p = self.preset
        h, w = p.sizes[rng.choice(len(p.sizes), p=p.size_weights)]
        if primaries is None:
            n = 1 + rng.choice(len(p.objects), p=p.objects)
            primaries = [int(c) + 1 for c in rng.choice(p.num_classes, n, replace=False)]
        return render(self.classes, rng, int(h), int(w), primaries, self.confounding, self.base_rate, p.scale)

    def __call__(self, job: tuple) -> dict:
        if self.layout == "seg":
            i, id_, with_class_png = job
            s = self.scene(self.rng(i))
            (self.out / "JPEGImages" / f"{id_}.jpg").write_bytes(_jpeg(s.image))
            (self.out / "SegmentationClassAug" / f"{id_}.png").write_bytes(mask_png(s.mask))
            if with_class_png:
                (self.out / "SegmentationClass" / f"{id_}.png").write_bytes(mask_png(s.mask, self.palette))
            (self.out / "ContextMap" / f"{id_}.png").write_bytes(mask_png(s.context))
            labels = sorted(s.boxes)
        elif self.layout == "coco":
            return self._coco_image(*job)
        else:
            i, rel, cls = job
            s = self.scene(self.rng(i), primaries=[cls])
            (self.out / "images" / rel).write_bytes(_jpeg(s.image))
            (self.out / "contexts" / rel).with_suffix(".png").write_bytes(mask_png(s.context))
            labels = [cls]
        return {"labels": labels, "primaries": s.primaries, "contexts": s.contexts,
                "box": s.boxes.get(labels[0]) if labels else None}

    def _coco_image(self, i: int, folder: str, image_id: int) -> dict:
        rng = self.rng(i)
        s = self.scene(rng)
        name = f"COCO_{folder}_{image_id:012d}.jpg"
        (self.out / folder / name).write_bytes(_jpeg(s.image))
        h, w = s.mask.shape
        anns = [_coco_annotation(visible, self.category_ids[c - 1], rng.random() < CROWD_SHARE,
                                 self.preset.polygon_tolerance)
                for c, visible in s.instances]              # drawing order: later ones in front, as recam paints
        return {"labels": sorted(s.boxes), "primaries": s.primaries, "contexts": s.contexts,
                "image": {"id": image_id, "file_name": name, "height": h, "width": w}, "annotations": anns}


def _coco_annotation(visible: np.ndarray, category_id: int, crowd: bool, tolerance: float) -> dict:
    """One instance as COCO writes it: polygons where they can draw it, else compressed RLE; a crowd as
    uncompressed RLE. Area and box are those of the pixels."""
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    if crowd:
        segmentation = _uncompressed_rle(visible)
    else:
        compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        segmentation = _polygons(visible, tolerance) or compressed
    return {"segmentation": segmentation, "area": int(mask_utils.area(rle)), "iscrowd": int(crowd),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "category_id": category_id}


def _polygons(visible: np.ndarray, tolerance: float) -> list[list[float]] | None:
    """The outlines of ``visible`` as COCO polygons, or None when polygons cannot draw it (a hole, or a
    piece that simplification shrinks below 3 vertices).

    Contours are traced on the mask upscaled 2× and mapped back by ``(u + 0.5) / 2``: each outline runs a
    quarter pixel inside the boundary of the pixel squares, so COCO's rasteriser, which fills the pixels
    whose centre lies inside, gives back exactly these pixels. ``tolerance`` > 0 simplifies the outlines
    (Douglas–Peucker, in pixels): smaller files, pixels off along the boundary."""
    big = np.repeat(np.repeat(visible.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if (hierarchy[0, :, 3] >= 0).any():
        return None
    if tolerance:
        contours = [cv2.approxPolyDP(c, 2 * tolerance, True) for c in contours]
    if any(len(c) < 3 for c in contours):
        return None
    return [((c.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for c in contours]


def _uncompressed_rle(visible: np.ndarray) -> dict:
    """COCO's crowd encoding: column-major run lengths, the first run of zeros (possibly empty)."""
    flat = visible.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return {"counts": [0, *runs] if flat[0] else runs, "size": list(visible.shape)}


def _run_jobs(job: _Job, items: list[tuple], label: str, progress: bool):
    """Yields each item's result, in order, as it is done."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    workers = min(2, os.cpu_count() or 1) if len(items) >= PARALLEL_MIN_IMAGES else 1
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(label, total=len(items))
        if workers == 1:
            for item in items:
                yield job(item)
                bar.advance(task)
        else:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                for res in pool.imap(job, items, chunksize=16):
                    yield res
                    bar.advance(task)


def _context_stats(results: list[dict], k: int) -> dict:
    """Generator-level co-occurrence per class: how often its context was placed with and without it."""
    stats = {}
    for c in range(1, k + 1):
        with_c = [r for r in results if c in r["primaries"]]
        without = [r for r in results if c not in r["primaries"]]
        stats[str(c)] = {"images_with_class": len(with_c),
                         "context_given_class": sum(c in r["contexts"] for r in with_c),
                         "images_without_class": len(without),
                         "context_given_no_class": sum(c in r["contexts"] for r in without)}
    return stats


def _manifest(job: _Job, layout: str, splits: dict[str, int], results: list[dict]) -> dict:
    return {"generator": GENERATOR_VERSION, "layout": layout, "preset": job.preset.name, "seed": job.seed,
            "confounding": job.confounding, "base_rate": job.base_rate,
            "classes": [c.to_dict() for c in job.classes], "splits": splits,
            "context_stats": _context_stats(results, job.preset.num_classes)}


def _write_seg(job: _Job, out: Path, progress: bool) -> None:
    n_aug, n_train, n_val = job.preset.seg
    ids = [f"{ID_PREFIX}_{i:06d}" for i in range(n_aug + n_val)]
    splits = {"train_aug": ids[:n_aug], "train": ids[:n_train], "val": ids[n_aug:]}
    class_png = set(splits["train"]) | set(splits["val"])
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ContextMap", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True)
    results = list(_run_jobs(job, [(i, id_, id_ in class_png) for i, id_ in enumerate(ids)],
                             f"synthetic {job.preset.name} seg", progress))
    for split, members in splits.items():
        (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{m}\n" for m in members))
    k = job.preset.num_classes
    cls_labels = {}
    for id_, res in zip(ids, results):
        hot = np.zeros(k, np.float32)
        hot[[c - 1 for c in res["labels"]]] = 1
        cls_labels[int(id_.replace("_", ""))] = hot        # IRN's cls_labels.npy: {int id: K-dim multi-hot}
    np.save(out / "cls_labels.npy", cls_labels, allow_pickle=True)
    manifest = _manifest(job, "voc", {s: len(m) for s, m in splits.items()}, results)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _write_loc(job: _Job, out: Path, progress: bool) -> None:
    n_train, n_test = job.preset.loc
    k = job.preset.num_classes
    folders = [f"{c.index:03d}.{c.name}" for c in job.classes]
    items, is_train = [], []
    for i in range(n_train + n_test):
        j = i if i < n_train else i - n_train
        cls = j % k + 1                                   # classes balanced within each split
        rel = f"{folders[cls - 1]}/{folders[cls - 1].split('.', 1)[1]}_{i + 1:06d}.jpg"
        items.append((i, rel, cls))
        is_train.append(i < n_train)
    for folder in folders:
        (out / "images" / folder).mkdir(parents=True)
        (out / "contexts" / folder).mkdir(parents=True)
    results = list(_run_jobs(job, items, f"synthetic {job.preset.name} loc", progress))

    def table(rows):
        return "".join(f"{i + 1} {v}\n" for i, v in enumerate(rows))

    (out / "classes.txt").write_text("".join(f"{c.index} {f}\n" for c, f in zip(job.classes, folders)))
    (out / "images.txt").write_text(table(rel for _, rel, _ in items))
    (out / "image_class_labels.txt").write_text(table(cls for _, _, cls in items))
    (out / "train_test_split.txt").write_text(table(int(t) for t in is_train))
    # CUB's (x, y, w, h) with x + w, y + h the last pixel: the reader's corners are the inclusive extremes.
    (out / "bounding_boxes.txt").write_text(table(
        f"{float(x0)} {float(y0)} {float(x1 - x0)} {float(y1 - y0)}" for x0, y0, x1, y1 in (r["box"] for r in results)))
    manifest = _manifest(job, "cub", {"train": n_train, "test": n_test}, results)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _write_coco(job: _Job, out: Path, progress: bool) -> None:
    n_train, n_val = job.preset.coco
    image_ids = _coco_image_ids(job.seed, n_train + n_val)
    categories = [{"supercategory": c.shape, "id": cid, "name": c.name}
                  for c, cid in zip(job.classes, job.category_ids)]
    (out / "annotations").mkdir(parents=True)
    ann_ids = itertools.count(1)                       # unique across both files, as COCO's are
    results = []
    for folder, span in (("train2014", range(n_train)), ("val2014", range(n_train, n_train + n_val))):
        (out / folder).mkdir()
        items = [(i, folder, image_ids[i]) for i in span]
        results += _write_coco_split(job, out, folder, items, categories, ann_ids, progress)
    manifest = _manifest(job, "coco", {"train": n_train, "val": n_val}, results)
    manifest["category_ids"] = list(job.category_ids)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _coco_image_ids(seed: int, n: int) -> list[int]:
    """Sparse image ids, unique across the two splits and not in rendering order, as COCO's are."""
    return [int(v) + 1 for v in np.random.default_rng([seed, STREAMS["coco"]]).permutation(2 * n)[:n]]


def _write_coco_split(job: _Job, out: Path, folder: str, items: list[tuple], categories: list[dict],
                      ann_ids, progress: bool) -> list[dict]:
    """Render one split and write its ``instances_<folder>.json``; returns the per-image manifest entries.

    Annotations are spooled to a file as they come (coco-shape has ~10⁶), so memory holds the image
    entries only."""
    compact = {"separators": (",", ":")}
    spool = out / f".{folder}.annotations"
    images, results, sep = [], [], ""
    with open(spool, "w") as f:
        for res in _run_jobs(job, items, f"synthetic {job.preset.name} {folder}", progress):
            images.append(res.pop("image"))
            for ann in res.pop("annotations"):
                ann.update(image_id=images[-1]["id"], id=next(ann_ids))
                f.write(sep + json.dumps(ann, **compact))
                sep = ","
            results.append(res)
    info = {"description": f"wsssbench synthetic {job.preset.name} seed {job.seed} "
                           f"confounding {job.confounding:g}", "version": f"generator v{GENERATOR_VERSION}"}
    head = json.dumps({"info": info, "images": images, "licenses": []}, **compact)
    with open(out / "annotations" / f"instances_{folder}.json", "w") as f, open(spool) as annotations:
        f.write(head[:-1] + ',"annotations":[')
        shutil.copyfileobj(annotations, f)
        f.write('],"categories":' + json.dumps(categories, **compact) + "}")
    spool.unlink()
    return results


_WRITERS = {"seg": _write_seg, "loc": _write_loc, "coco": _write_coco}


def generate(out: str | os.PathLike, preset: str = "tiny", seed: int = 0, confounding: float | None = None,
             layouts: tuple[str, ...] = ("seg", "loc", "coco"), progress: bool = False) -> Path:
    """Generate the layouts of ``preset`` into ``out/seg``, ``out/loc``, ``out/coco`` (those the preset has).

    A layout already there with the same options is kept; one with other options is a :class:`UserError`.
    """
    spec = get_preset(preset)
    p = spec.resolve_confounding(confounding)
    if not 0.0 <= p <= 1.0:
        raise UserError(f"confounding must lie in [0, 1] (got {confounding})")
    if int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a non-negative integer (got {seed})")
    out = Path(out)
    for layout in layouts:
        if getattr(spec, layout) is None:
            continue
        final = out / layout
        if (final / MANIFEST).is_file():
            _check_manifest(final, preset, int(seed), p)
            continue
        if final.exists():
            raise UserError(f"{final}: exists but holds no {MANIFEST}; it is not a complete synthetic layout "
                            "— delete it to regenerate")
        _remove_abandoned(out, layout)
        tmp = out / f".{layout}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            job = _Job(spec, int(seed), p, layout, tmp)
            _WRITERS[layout](job, tmp, progress)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / MANIFEST).is_file():     # not another process that finished first
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return out


def _remove_abandoned(out: Path, layout: str) -> None:
    """Delete temporary folders of generations whose process is gone (killed before it could clean up)."""
    for tmp in out.glob(f".{layout}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue                                    # still generating
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; not a generated synthetic layout (run `wsssbench data synth`)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: unreadable manifest ({err}); delete the folder to regenerate") from None
    if manifest.get("generator") != GENERATOR_VERSION:
        raise UserError(f"{path}: made by synthetic generator v{manifest.get('generator')}, this is "
                        f"v{GENERATOR_VERSION}; delete {folder} to regenerate")
    return manifest


def _check_manifest(folder: Path, preset: str | None, seed: int | None, confounding: float | None) -> dict:
    m = read_manifest(folder)
    for key, want in (("preset", preset), ("seed", seed), ("confounding", confounding)):
        if want is not None and m[key] != want:
            raise UserError(f"{folder / MANIFEST}: holds {key} {m[key]!r}, not the requested {want!r}; "
                            "use another folder or drop the option")
    return m


# ---------------------------------------------------------------------------------------------------- reading

class _Generated:
    """What both synthetic readers add to the VOC / CUB reader: the generation options, in the GT's name."""

    def _set_manifest(self, manifest: dict) -> None:
        self.manifest = manifest
        self.preset, self.seed, self.confounding = manifest["preset"], manifest["seed"], manifest["confounding"]
        self.classes = [ClassSpec(**c) for c in manifest["classes"]]

    def describe_gt(self, split: str) -> str:
        options = f"synthetic {self.preset} seed {self.seed} confounding {self.confounding:g}"
        return f"{options}: {super().describe_gt(split)}"


class SyntheticSegmentation(_Generated, VOCSegmentation):
    """The VOC-layout benchmark, plus its context maps and generation options."""

    name = "synthetic"

    def __init__(self, root: Path, manifest: dict):
        self._set_manifest(manifest)
        super().__init__(root, class_names=("background", *(c.name for c in self.classes)))

    def load_context(self, sample: Sample) -> np.ndarray:
        return read_mask(self.root / "ContextMap" / f"{sample.id}.png", self.num_classes)


class SyntheticLocalization(_Generated, CUB):
    """The CUB-layout twin: one labelled object per image, its box, and the image's context map."""

    name = "synthetic-loc"

    def __init__(self, root: Path, manifest: dict):
        self._set_manifest(manifest)
        super().__init__(root)

    def load_context(self, sample: Sample) -> np.ndarray:
        # Context values are 1-based foreground classes; CUB-style class_names has no background, hence + 1.
        return read_mask((self.root / "contexts" / sample.id).with_suffix(".png"), self.num_classes + 1)


def _generation_options(preset: str | None, seed: int | None) -> tuple[str, int]:
    """The preset and seed a generation uses where the options leave them unset: tiny and 0."""
    return preset or "tiny", 0 if seed is None else seed


def _layout_folder(root, preset, seed, confounding, layout: str) -> tuple[Path, dict]:
    """Where the layout is (generating it when absent) and its manifest."""
    if root is None:
        name, gen_seed = _generation_options(preset, seed)
        p = get_preset(name).resolve_confounding(confounding)
        base = resolve_root("synthetic", None) / folder_name(name, int(gen_seed), p)
        stale = base / layout
        if (stale / MANIFEST).is_file() and json.loads((stale / MANIFEST).read_text())["generator"] != GENERATOR_VERSION:
            shutil.rmtree(stale)                        # our own cache, made by another generator version
    else:
        base = Path(root).expanduser()
        if (base / MANIFEST).is_file():                     # pointed at the layout folder itself
            m = _check_manifest(base, preset, seed, confounding)
            if m["layout"] != ("voc" if layout == "seg" else "cub"):
                raise UserError(f"{base}: holds the {m['layout']} layout; point at its parent folder")
            return base, m
    folder = base / layout
    if not (folder / MANIFEST).is_file():
        sibling = base / ("loc" if layout == "seg" else "seg")
        if (sibling / MANIFEST).is_file():                  # unset options: the twin layout's
            m = _check_manifest(sibling, preset, seed, confounding)
            preset, seed, confounding = m["preset"], m["seed"], m["confounding"]
        name, gen_seed = _generation_options(preset, seed)
        if get_preset(name).coco is not None:
            raise UserError(f"synthetic preset {name!r} is written in MS-COCO's layout: generate it with `wsssbench "
                            f"data synth --preset {name} --out DIR`, read it with --dataset coco --root DIR")
        if getattr(get_preset(name), layout) is None:
            raise UserError(f"synthetic preset {name!r} has no {'segmentation' if layout == 'seg' else 'localization'} "
                            f"layout; use {'synthetic-loc' if layout == 'seg' else 'synthetic'} or another preset")
        generate(base, name, gen_seed, confounding, layouts=(layout,), progress=sys.stderr.isatty())
    return folder, _check_manifest(folder, preset, seed, confounding)


@DATASETS.register("synthetic")
def synthetic(root=None, preset: str | None = None, seed: int | None = None,
              confounding: float | None = None) -> SyntheticSegmentation:
    """``root`` None: the cache folder ``<data root>/synthetic/<preset>-seed<S>-c<P>``; None options: the
    folder's own (or tiny / 0 / the preset's default when generating)."""
    folder, manifest = _layout_folder(root, preset, seed, confounding, "seg")
    return SyntheticSegmentation(folder, manifest)


@DATASETS.register("synthetic-loc")
def synthetic_loc(root=None, preset: str | None = None, seed: int | None = None,
                  confounding: float | None = None) -> SyntheticLocalization:
    folder, manifest = _layout_folder(root, preset, seed, confounding, "loc")
    return SyntheticLocalization(folder, manifest)
