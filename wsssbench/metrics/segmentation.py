"""Segmentation evaluation: the confusion accumulator, seeds from CAMs, pseudo-mask and label-map scores.

The seed rule of every lineage (IRN ``eval_cam.py``, SEAM ``evaluation.py``) is: put a constant
background plane *before* the image's class planes and take the argmax — so a pixel is foreground iff
its best CAM is strictly greater than the background value, an exact tie is background, and between
tied classes the lowest class id wins. Per pixel only two things matter: the best class ``b`` and its
score ``m``. A background threshold ``t`` only decides "``b`` or background" by ``m > t``, and SEAM's
power background ``(1 − m)^α`` does the same with an equivalent threshold ``τ(α)`` (see
:func:`power_threshold`). So a whole sweep is one pass: each pixel is counted once in a histogram
``[bucket, gt, b]`` where ``bucket`` = how many thresholds lie strictly below ``m`` (an exact
``searchsorted`` on the thresholds in the CAM's own dtype), and every threshold's confusion matrix is a
cumulative sum of that histogram — equal, ties included, to evaluating that threshold alone.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .. import distributed
from ..cams import load_cams, validate_cams
from ..data.base import IGNORE, Dataset, Sample, read_mask
from ..errors import UserError
from .seg_protocols import PROTOCOLS, SegProtocol, resolve_protocols

#: ``--sweep`` default: background thresholds 0.00–0.99 step 0.01 (issue 8; SEAM's ``--curve`` runs 0.00–0.59).
DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(100))
#: The :func:`seed_rule` modes that try several values, report the best and have a curve.
SWEEP_MODES = ("sweep", "alpha_sweep")
CAM_CLASSES_NOTE = "seeds use only each image's ground-truth labelled classes (as IRN and SEAM do)"
_CHUNK = 16   # images per worker task


# ---------------------------------------------------------------------------------------------------
# The accumulator
# ---------------------------------------------------------------------------------------------------

class ConfusionMatrix:
    """An int64 ``[gt, pred]`` confusion with additive state; GT 255 pixels are dropped.

    A predicted 255 is kept apart, in ``void[gt]``, because the protocols disagree on it (see
    :mod:`~wsssbench.metrics.seg_protocols`). Values outside the classes raise ``ValueError``.

    >>> cm = ConfusionMatrix(3)
    >>> cm.update(np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 1]]))
    >>> cm.matrix.tolist(), cm.void.tolist()
    ([[1, 0, 0], [0, 1, 1], [0, 0, 0]], [0, 1, 0])
    >>> round(cm.compute("irn")[0], 4)
    27.7778
    """

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.void = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred, gt) -> None:
        """Add one prediction/ground-truth pair (numpy arrays, or torch tensors on any device)."""
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
        n = self.num_classes
        if _is_torch(pred) or _is_torch(gt):
            import torch
            gt = torch.as_tensor(gt).reshape(-1).long()
            pred, count = torch.as_tensor(pred).reshape(-1).long().to(gt.device), torch.bincount
        else:
            gt, pred, count = gt.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64), np.bincount
        for x, what in ((gt, "ground truth"), (pred, "prediction")):
            bad = (x < 0) | ((x >= n) & (x != IGNORE))
            if bad.any():
                raise ValueError(f"{what} has value {int(x[bad][0])} outside the {n} classes "
                                 f"(0..{n - 1}, 255 = ignore)")
        keep = gt != IGNORE
        g, p = gt[keep], pred[keep]
        p = p - (p == IGNORE) * (IGNORE - n)              # a predicted 255 goes to the extra column n
        counts = count(g * (n + 1) + p, minlength=n * (n + 1))
        counts = np.asarray(counts.cpu() if hasattr(counts, "cpu") else counts, dtype=np.int64).reshape(n, n + 1)
        self.matrix += counts[:, :n]
        self.void += counts[:, n]

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class confusion")
        self.matrix += other.matrix
        self.void += other.void
        return self

    def compute(self, protocol: str | SegProtocol = "irn") -> tuple[float, np.ndarray]:
        """(mIoU, per-class IoU) in percent under a protocol preset."""
        proto = PROTOCOLS.get(protocol) if isinstance(protocol, str) else protocol
        return proto.scores(self.matrix, self.void)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


# ---------------------------------------------------------------------------------------------------
# Seeds from CAMs
# ---------------------------------------------------------------------------------------------------

def best_class(cams: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the winning class label (``keys + 1``) and its score, in the CAM dtype.

    Planes are visited in key order and a later plane wins only if strictly greater, so a tie goes to
    the lowest class id, as ``np.argmax`` does. With no planes the label is 0 and the score −inf: the
    pixel is background at every threshold.
    """
    shape = cams.shape[1:]
    if len(keys) == 0:
        return np.zeros(shape, np.intp), np.full(shape, -np.inf, dtype=cams.dtype)
    score = cams[0].copy()
    label = np.full(shape, keys[0] + 1, np.intp)
    for key, plane in zip(keys[1:], cams[1:]):
        better = plane > score
        np.putmask(score, better, plane)
        np.putmask(label, better, key + 1)
    return label, score


def seeds_from_cams(cams: np.ndarray, keys: np.ndarray, *, threshold: float | None = None,
                    alpha: float | None = None) -> np.ndarray:
    """The reference seed rule, literally: prepend the background plane in the CAM's dtype, argmax, map.

    Background is ``threshold`` (IRN) or ``(1 − max CAM)^alpha`` (SEAM/CPN). This is the slow,
    obvious definition the one-pass sweep is tested against.
    """
    if (threshold is None) == (alpha is None):
        raise ValueError("give exactly one of threshold, alpha")
    cams = np.asarray(cams)
    if alpha is not None:
        top = cams.max(axis=0) if len(keys) else np.zeros(cams.shape[1:], cams.dtype)
        bg = np.power(np.asarray(1, cams.dtype) - top, np.asarray(alpha, cams.dtype))[None]
    else:
        bg = np.full((1,) + cams.shape[1:], threshold, dtype=cams.dtype)
    planes = np.concatenate([bg, cams], axis=0)
    return np.concatenate([[0], np.asarray(keys, np.int64) + 1])[np.argmax(planes, axis=0)]


@lru_cache(maxsize=256)
def power_threshold(alpha: float, dtype: str = "float32") -> float:
    """τ(α): in ``dtype`` arithmetic, ``m > (1 − m)^α`` holds exactly when ``m > τ(α)``, for m in [0, 1].

    Found by bisection over the dtype's ordered bit patterns; the predicate's monotonicity is checked
    on 4,096 neighbours either side of the crossing.
    """
    if alpha <= 0:
        raise ValueError("alpha must be > 0")
    dt = np.dtype(dtype)
    uint = np.dtype(f"uint{8 * dt.itemsize}")
    one, a = np.asarray(1, dt), np.asarray(alpha, dt)

    def fg(bits: np.ndarray) -> np.ndarray:
        m = bits.astype(uint).view(dt)
        return m > np.power(one - m, a)

    lo, hi = int(np.asarray(0, dt).view(uint)), int(one.view(uint))   # fg(0) is False, fg(1) is True for α > 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fg(np.array([mid]))[0]:
            hi = mid
        else:
            lo = mid
    window = 4096
    below = np.arange(max(lo - window, 0), lo + 1)
    above = np.arange(hi, min(hi + window, int(one.view(uint))) + 1)
    if fg(below).any() or not fg(above).all():
        raise RuntimeError(f"power background with alpha={alpha} is not monotone in {dt} near its crossing")
    return float(np.array([lo]).astype(uint).view(dt)[0])


@dataclass(frozen=True)
class SeedRule:
    """How background is decided: by thresholds, or by powers α (each an equivalent threshold τ(α))."""

    thresholds: tuple[float, ...] = ()
    alphas: tuple[float, ...] = ()

    @property
    def values(self) -> tuple[float, ...]:
        return self.alphas or self.thresholds

    @property
    def order(self) -> np.ndarray:
        """The permutation that sorts the values by their threshold (τ falls as α grows)."""
        return np.argsort(-np.asarray(self.alphas) if self.alphas else np.asarray(self.thresholds), kind="stable")

    def taus(self, dtype) -> np.ndarray:
        """The thresholds in :attr:`order`, as the CAM dtype's background plane holds them (IRN's ``np.pad``)."""
        dt = np.dtype(dtype)
        if self.alphas:
            taus = np.array([power_threshold(a, dt.name) for a in self.alphas], dtype=np.float64).astype(dt)
        else:
            taus = np.asarray(self.thresholds, dtype=np.float64).astype(dt)
        taus = taus[self.order] + dt.type(0)          # + 0 turns a -0.0 into 0.0
        if np.any(np.diff(taus) < 0):
            raise RuntimeError(f"background thresholds are not monotone in {dt}: {taus.tolist()}")
        return taus


def _order_keys(x: np.ndarray) -> np.ndarray:
    """Unsigned integers that sort as the (non-NaN) floats ``x`` do: IEEE 754 sign-magnitude → offset binary."""
    bits = 8 * x.dtype.itemsize
    u = np.ascontiguousarray(x).view(f"uint{bits}")
    return np.where(u >> (bits - 1) == 1, ~u, u | np.array(1 << (bits - 1), u.dtype))


class Buckets:
    """Exact ``np.searchsorted(taus, m, side="left")`` — how many thresholds lie strictly below each score.

    Compares order-preserving integer keys of the floats, through a lookup table on their top bits
    (2^16 or 2^20 cells); only scores in a cell that holds a threshold fall back to ``searchsorted``.
    Several times faster than ``searchsorted`` over 100 thresholds, and exactly equal to it.
    """

    _SHIFT = {2: 0, 4: 12, 8: 44}

    def __init__(self, taus: np.ndarray):
        bits = 8 * taus.dtype.itemsize
        self.keys = _order_keys(taus)
        self.shift = self._SHIFT[taus.dtype.itemsize]
        lo = np.arange(1 << (bits - self.shift), dtype=self.keys.dtype) << self.keys.dtype.type(self.shift)
        first = np.searchsorted(self.keys, lo, side="left")
        last = np.searchsorted(self.keys, lo | self.keys.dtype.type((1 << self.shift) - 1), side="left")
        self.lut = np.where(first == last, first, -1).astype(np.int32)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        keys = _order_keys(scores)
        bucket = self.lut[keys >> keys.dtype.type(self.shift)].astype(np.intp)
        unsure = bucket < 0
        if unsure.any():
            bucket[unsure] = np.searchsorted(self.keys, keys[unsure], side="left")
        return bucket


@lru_cache(maxsize=16)
def _buckets(rule: "SeedRule", dtype: str) -> Buckets:
    return Buckets(rule.taus(dtype))


@dataclass
class SeedAccumulator:
    """The one-pass sweep's state: ``hist[bucket, gt, best]`` and context-hit counts ``ctx[bucket, best]``.

    ``bucket`` = the number of (sorted) thresholds strictly below the pixel's best score, so the pixel is
    foreground (its best class) for the first ``bucket`` thresholds and background for the rest.
    """

    num_classes: int
    num_thresholds: int
    hist: np.ndarray = field(init=False)
    ctx: np.ndarray = field(init=False)

    def __post_init__(self):
        self._row = np.full(256, -1, np.intp)           # uint8 GT value -> histogram row; 255 -> spare row n
        self._row[:self.num_classes] = np.arange(self.num_classes)
        self._row[IGNORE] = self.num_classes
        self.hist = np.zeros((self.num_thresholds + 1, self.num_classes, self.num_classes), np.int64)
        self.ctx = np.zeros((self.num_thresholds + 1, self.num_classes), np.int64)

    def update(self, label: np.ndarray, bucket: np.ndarray, gt: np.ndarray,
               context: np.ndarray | None = None) -> None:
        """One image: best-class ``label`` and score ``bucket`` per pixel (see :class:`Buckets`), its GT."""
        n, t = self.num_classes, self.num_thresholds
        row = self._row[gt]
        if row.min() < 0:
            raise ValueError(f"ground truth has values outside the {n} classes (0..{n - 1}, 255 = ignore)")
        code = (bucket * (n + 1) + row) * n + label
        counts = np.bincount(code.reshape(-1), minlength=(t + 1) * (n + 1) * n).reshape(t + 1, n + 1, n)
        self.hist += counts[:, :n]
        if context is not None:
            hit = _context_hits(context, label, gt)
            self.ctx += np.bincount(bucket[hit] * n + label[hit], minlength=(t + 1) * n).reshape(t + 1, n)

    def merge(self, other: "SeedAccumulator") -> "SeedAccumulator":
        self.hist += other.hist
        self.ctx += other.ctx
        return self

    def confusions(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sorted threshold j: the ``[gt, pred]`` confusion and the context hits of each class's FPs."""
        below = np.cumsum(self.hist, axis=0)[:-1]           # pixels with bucket <= j: background at threshold j
        fg = self.hist.sum(axis=0)[None] - below            # bucket > j: their best class
        fg[:, :, 0] += below.sum(axis=2)
        ctx = self.ctx.sum(axis=0)[None] - np.cumsum(self.ctx, axis=0)[:-1]
        return fg, ctx


def evaluate_seeds(dataset: Dataset, split: str, cams_dir, *, threshold: float | None = None,
                   sweep: bool | Sequence[float] | None = None, alpha: float | Sequence[float] | None = None,
                   protocol: str = "irn", progress: bool = False, workers: int | None = None) -> dict:
    """Score CAM seeds against the split's ground truth (the ``wsssbench eval seeds --json`` contract).

    Exactly one of: ``threshold`` (IRN: background = t), ``sweep`` (``True`` for 0.00–0.99 step 0.01,
    or a sequence of thresholds), ``alpha`` (SEAM/CPN power background; a sequence sweeps α).
    ``protocol`` is a preset name or ``"all"``. One read of the data serves every threshold and every
    protocol.
    """
    rule, mode = seed_rule(threshold, sweep, alpha)
    protocols = resolve_protocols(protocol)
    samples = _samples(dataset, split)
    files = _match_files(samples, Path(cams_dir), (".npz", ".npy"), "CAM")
    jobs = [(dataset, chunk, rule) for chunk in _chunks(list(zip(samples, files)))]
    acc = SeedAccumulator(dataset.num_classes, len(rule.values))
    for part in _run(_seed_chunk, distributed.shard(jobs), progress, "seeds", workers):
        acc.merge(part)
    if distributed.active():        # each rank scored its shard: sum the counts
        acc.hist, acc.ctx = distributed.all_reduce_sum(acc.hist), distributed.all_reduce_sum(acc.ctx)
    confs, ctxs = acc.confusions()
    unsort = np.argsort(rule.order)
    confs, ctxs = confs[unsort], ctxs[unsort]

    base = _header(dataset, split, len(samples), cams=str(cams_dir))
    base["cam_classes"] = CAM_CLASSES_NOTE
    has_ctx = _has_context(dataset, samples)
    results = {}
    for proto in protocols:
        curve = [proto.scores(c, np.zeros(dataset.num_classes, np.int64))[0] for c in confs]
        sweeping = mode in SWEEP_MODES
        best = int(np.nanargmax(curve)) if sweeping and np.isfinite(curve).any() else 0
        res = _scores(dataset, proto, confs[best], np.zeros(dataset.num_classes, np.int64),
                      ctxs[best] if has_ctx else None)
        key = "alpha" if mode.startswith("alpha") else "threshold"
        if sweeping:
            res[f"best_{key}"] = rule.values[best]
            res["best_miou"] = res["miou"]
            res["curve"] = [{key: v, "miou": _pct(m)} for v, m in zip(rule.values, curve)]
            res["threshold_selected_on_gt"] = True
        else:
            res[key] = rule.values[0]
        results[proto.name] = res
    return _combine(base, results, protocol)


def seed_rule(threshold, sweep, alpha) -> tuple[SeedRule, str]:
    """The background rule the options give and its mode (threshold, sweep, alpha or alpha_sweep); a
    conflict is a UserError. Public so that a command refuses bad options before it reads any data."""
    given = [threshold is not None, bool(sweep) or (sweep is not None and not isinstance(sweep, bool)),
             alpha is not None]
    if sum(given) != 1:
        raise UserError("give exactly one of --threshold T, --sweep or --alpha A for the background")
    if threshold is not None:
        return SeedRule(thresholds=_fractions((threshold,))), "threshold"
    if alpha is not None:
        alphas = tuple(float(a) for a in np.atleast_1d(alpha))
        if not alphas or not all(math.isfinite(a) and a > 0 for a in alphas):
            raise UserError(f"alpha must be a finite number > 0; got {list(alphas)}")
        return SeedRule(alphas=alphas), "alpha_sweep" if len(alphas) > 1 else "alpha"
    values = DEFAULT_THRESHOLDS if sweep is True else _fractions(sweep)
    if not values:
        raise UserError("the threshold sweep is empty")
    return SeedRule(thresholds=values), "sweep"


def _fractions(values) -> tuple[float, ...]:
    """Thresholds on max-normalised CAMs: each in [0, 1] (``15`` for 0.15 would make every pixel background)."""
    out = tuple(float(t) for t in values)
    bad = [t for t in out if not 0 <= t <= 1]      # NaN fails both comparisons
    if bad:
        raise UserError(f"threshold {bad[0]} is not in [0, 1]: CAMs are max-normalised, so give a fraction, e.g. 0.15")
    return out


def _seed_chunk(dataset: Dataset, items: list[tuple[Sample, Path]], rule: SeedRule) -> SeedAccumulator:
    acc = SeedAccumulator(dataset.num_classes, len(rule.values))
    for sample, path in items:
        gt = dataset.load_mask(sample)
        cf = load_cams(path)
        validate_cams(cf, path, keys=[c - 1 for c in sample.labels], shape=gt.shape)
        label, score = best_class(cf.cams, cf.keys)
        if rule.alphas and cf.keys.size and (cf.cams.min() < 0 or cf.cams.max() > 1):
            raise UserError(f"{path}: CAM values span [{float(cf.cams.min()):g}, {float(cf.cams.max()):g}]; the "
                            "power background (1 - max CAM)^alpha needs CAMs normalised to [0, 1]")
        acc.update(label, _buckets(rule, cf.cams.dtype.name)(score), gt, dataset.load_context(sample))
    return acc


# ---------------------------------------------------------------------------------------------------
# Label maps (pseudo-masks, segmentation outputs)
# ---------------------------------------------------------------------------------------------------

def evaluate_masks(dataset: Dataset, split: str, masks_dir, *, protocol: str = "irn", progress: bool = False,
                   workers: int | None = None) -> dict:
    """Score class-index PNGs (``<id>.png``, palette or grayscale; 255 allowed) — ``eval masks --json``."""
    protocols = resolve_protocols(protocol)
    samples = _samples(dataset, split)
    files = _match_files(samples, Path(masks_dir), (".png",), "mask")
    jobs = [(dataset, chunk) for chunk in _chunks(list(zip(samples, files)))]
    cm, ctx = ConfusionMatrix(dataset.num_classes), np.zeros(dataset.num_classes, np.int64)
    for part_cm, part_ctx in _run(_mask_chunk, distributed.shard(jobs), progress, "masks", workers):
        cm.merge(part_cm)
        ctx += part_ctx
    if distributed.active():        # each rank scored its shard: sum the counts
        cm.matrix, cm.void, ctx = (distributed.all_reduce_sum(a) for a in (cm.matrix, cm.void, ctx))
    has_ctx = _has_context(dataset, samples)
    results = {}
    for proto in protocols:
        try:
            results[proto.name] = _scores(dataset, proto, cm.matrix, cm.void, ctx if has_ctx else None)
        except UserError as err:
            if len(protocols) == 1:
                raise
            results[proto.name] = {"protocol": proto.name, "miou": None, "iou": None, "error": str(err)}
    return _combine(_header(dataset, split, len(samples), masks=str(masks_dir)), results, protocol)


def _mask_chunk(dataset: Dataset, items: list[tuple[Sample, Path]]) -> tuple[ConfusionMatrix, np.ndarray]:
    n = dataset.num_classes
    cm, ctx = ConfusionMatrix(n), np.zeros(n, np.int64)
    for sample, path in items:
        gt = dataset.load_mask(sample)
        pred = read_mask(path, n)
        if pred.shape != gt.shape:
            raise UserError(f"{path}: mask is {pred.shape[0]}x{pred.shape[1]} (HxW) but the ground truth of "
                            f"{sample.id!r} is {gt.shape[0]}x{gt.shape[1]}; save masks at image resolution")
        cm.update(pred, gt)
        context = dataset.load_context(sample)
        if context is not None:
            hit = _context_hits(context, pred, gt)
            ctx += np.bincount(pred[hit].astype(np.int64), minlength=n)
    return cm, ctx


# ---------------------------------------------------------------------------------------------------
# Shared plumbing: files, parallel chunks, reports
# ---------------------------------------------------------------------------------------------------

def _samples(dataset: Dataset, split: str) -> list[Sample]:
    samples = dataset.samples(split)
    if not samples:
        raise UserError(f"{dataset.name}: split {split!r} has no images ({dataset.describe_gt(split)})")
    return samples


def _match_files(samples: list[Sample], folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """One file per sample (``<id><suffix>``); a missing, duplicated or extra file is a UserError."""
    if not folder.is_dir():
        raise UserError(f"{folder}: {what} folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix not in suffixes:
            continue
        id_ = path.relative_to(folder).with_suffix("").as_posix()
        if id_ in found:
            raise UserError(f"{path}: a second {what} file for image {id_!r} (also {found[id_]}); keep one")
        found[id_] = path
    if not found:
        raise UserError(f"{folder}: no {what} files ({'/'.join(suffixes)}) in this folder")
    out = []
    for sample in samples:
        path = found.pop(sample.id, None)
        if path is None:
            raise UserError(f"{folder / (sample.id + suffixes[0])}: {what} file of image {sample.id!r} is missing; "
                            "every image of the split needs one")
        out.append(path)
    if found:
        extra = next(iter(found.values()))
        raise UserError(f"{extra}: {what} file for an image that is not in the split ({len(found)} such "
                        "file(s)); remove them or choose the split they belong to (--split)")
    return out


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _run(fn: Callable, jobs: list[tuple], progress: bool, what: str, workers: int | None) -> Iterable:
    """Yield ``fn(*job)`` for every job, in worker processes when there is enough work (order not kept)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, workers)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task(f"scoring {what}", total=sum(len(j[1]) for j in jobs))
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                yield fn(*job)
                bar.advance(task, len(job[1]))
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(fn, *job): len(job[1]) for job in jobs}
            try:
                for fut in as_completed(pending):
                    yield fut.result()
                    bar.advance(task, pending.pop(fut))
            finally:
                for fut in pending:
                    fut.cancel()


def _has_context(dataset: Dataset, samples: list[Sample]) -> bool:
    return dataset.load_context(samples[0]) is not None


def _context_hits(context: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """False-positive foreground pixels whose class is the one the context map names there."""
    return (context == pred) & (gt != pred) & (gt != IGNORE) & (pred > 0) & (pred != IGNORE)


def _header(dataset: Dataset, split: str, images: int, **inputs) -> dict:
    return {"dataset": dataset.name, "split": split, "gt": dataset.describe_gt(split), "images": images, **inputs}


def _pct(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _scores(dataset: Dataset, proto: SegProtocol, matrix: np.ndarray, void: np.ndarray,
            ctx_hits: np.ndarray | None) -> dict:
    miou, iou = proto.scores(matrix, void)
    out = {"protocol": proto.name, "protocol_summary": proto.summary, "miou": _pct(miou),
           "iou": {name: _pct(v) for name, v in zip(dataset.class_names, iou)}}
    out["context_confusion"] = None if ctx_hits is None else context_confusion(dataset.class_names, matrix, ctx_hits)
    return out


def context_confusion(class_names: Sequence[str], matrix: np.ndarray, ctx_hits: np.ndarray) -> dict:
    """Share (percent) of each foreground class's false-positive pixels that lie on its own context.

    ``None`` for a class without false positives; ``mean`` over the classes that have some.
    """
    fp = matrix.sum(axis=0) - np.diag(matrix)
    per_class = {name: (100.0 * float(ctx_hits[c]) / float(fp[c]) if fp[c] else None)
                 for c, name in enumerate(class_names) if c > 0}
    vals = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "mean": float(np.mean(vals)) if vals else None}


def _combine(base: dict, results: dict[str, dict], protocol: str) -> dict:
    if protocol != "all":
        return {**base, **results[protocol]}
    mious = [r["miou"] for r in results.values() if r.get("miou") is not None]
    return {**base, "protocol": "all", "by_protocol": results,
            "spread": (max(mious) - min(mious)) if mious else None}
