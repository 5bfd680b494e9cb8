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

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..cams import load_cams, validate_cams
from ..data.base import IGNORE, Dataset, Sample, read_mask
from ..errors import UserError
from .seg_protocols import PROTOCOLS, SegProtocol, resolve_protocols

#: ``--sweep`` default: background thresholds 0.00–0.99 step 0.01 (issue 8; SEAM's ``--curve`` runs 0.00–0.59).
DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(100))
#: Default α values of a power-background sweep (SEAM's CRF uses α = 4 and 24, ``infer_SEAM.py``).
DEFAULT_ALPHAS = (1, 2, 4, 8, 16, 24, 32)
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
    """Per pixel: the winning class label (``keys + 1``; lowest id on ties) and its score, in the CAM dtype.

    With no planes the label is 0 and the score −inf: the pixel is background at every threshold.
    """
    if len(keys) == 0:
        shape = cams.shape[1:]
        return np.zeros(shape, np.int64), np.full(shape, -np.inf, dtype=cams.dtype)
    idx = np.argmax(cams, axis=0)
    score = np.take_along_axis(cams, idx[None], axis=0)[0]
    return (np.asarray(keys, np.int64) + 1)[idx], score


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
    planes = np.concatenate([bg.astype(cams.dtype), cams], axis=0)
    return np.concatenate([[0], np.asarray(keys, np.int64) + 1])[np.argmax(planes, axis=0)]


@lru_cache(maxsize=256)
def power_threshold(alpha: float, dtype: str = "float32") -> float:
    """τ(α): in ``dtype`` arithmetic, ``m > (1 − m)^α`` holds exactly when ``m > τ(α)``, for m in [0, 1].

    Found by bisection over the dtype's ordered bit patterns; the predicate's monotonicity is checked
    on 4,096 neighbours either side of the crossing.
    """
    dt = np.dtype(dtype)
    uint = np.dtype(f"uint{8 * dt.itemsize}")
    one, a = np.asarray(1, dt), np.asarray(alpha, dt)

    def fg(bits: np.ndarray) -> np.ndarray:
        m = bits.astype(uint).view(dt)
        return m > np.power(one - m, a)

    lo, hi = int(np.asarray(0, dt).view(uint)), int(one.view(uint))   # fg(0) is False, fg(1) is True for α > 0
    if alpha <= 0:
        raise ValueError("alpha must be > 0")
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
        """The thresholds, in :attr:`order`, as exact float64 values of the CAM dtype's background plane."""
        dt = np.dtype(dtype)
        if self.alphas:
            taus = np.array([power_threshold(a, dt.name) for a in self.alphas], dtype=np.float64)
        else:
            taus = np.asarray(self.thresholds, dtype=np.float64).astype(dt).astype(np.float64)
        taus = taus[self.order]
        if np.any(np.diff(taus) < 0):
            raise RuntimeError(f"background thresholds are not monotone in {dt}: {taus.tolist()}")
        return taus


@dataclass
class SeedAccumulator:
    """The one-pass sweep's state: ``hist[bucket, gt, best]`` and context-hit counts ``ctx[bucket, best]``.

    ``bucket`` = the number of (sorted) thresholds strictly below the pixel's best score, so the pixel is
    foreground (its best class) for the first ``bucket`` thresholds and background for the rest.
    """

    num_classes: int
    num_thresholds: int
    images: int = 0
    hist: np.ndarray = field(init=False)
    ctx: np.ndarray = field(init=False)

    def __post_init__(self):
        self.hist = np.zeros((self.num_thresholds + 1, self.num_classes, self.num_classes), np.int64)
        self.ctx = np.zeros((self.num_thresholds + 1, self.num_classes), np.int64)

    def update(self, label: np.ndarray, score: np.ndarray, taus: np.ndarray, gt: np.ndarray,
               context: np.ndarray | None = None) -> None:
        n, t = self.num_classes, self.num_thresholds
        keep = gt != IGNORE
        g = gt[keep].astype(np.int64)
        b = label[keep]
        bucket = np.searchsorted(taus, score[keep].astype(np.float64), side="left")
        self.hist += np.bincount((bucket * n + g) * n + b, minlength=(t + 1) * n * n).reshape(t + 1, n, n)
        if context is not None:
            hit = (context[keep] == b) & (g != b) & (b > 0)
            self.ctx += np.bincount(bucket[hit] * n + b[hit], minlength=(t + 1) * n).reshape(t + 1, n)
        self.images += 1

    def merge(self, other: "SeedAccumulator") -> "SeedAccumulator":
        self.hist += other.hist
        self.ctx += other.ctx
        self.images += other.images
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
    rule, mode = _seed_rule(threshold, sweep, alpha)
    protocols = resolve_protocols(protocol)
    samples = _samples(dataset, split)
    files = _match_files(samples, Path(cams_dir), (".npz", ".npy"), "CAM")
    jobs = [(dataset, chunk, rule) for chunk in _chunks(list(zip(samples, files)))]
    acc = SeedAccumulator(dataset.num_classes, len(rule.values))
    for part in _run(_seed_chunk, jobs, progress, "seeds", workers):
        acc.merge(part)
    confs, ctxs = acc.confusions()
    unsort = np.argsort(rule.order)
    confs, ctxs = confs[unsort], ctxs[unsort]

    base = _header(dataset, split, len(samples), cams=str(cams_dir))
    base["cam_classes"] = CAM_CLASSES_NOTE
    has_ctx = _has_context(dataset, samples)
    results = {}
    for proto in protocols:
        curve = [proto.scores(c, np.zeros(dataset.num_classes, np.int64))[0] for c in confs]
        best = int(np.nanargmax(curve)) if mode in ("sweep", "alpha_sweep") else 0
        res = _scores(dataset, proto, confs[best], np.zeros(dataset.num_classes, np.int64),
                      ctxs[best] if has_ctx else None)
        key = "alpha" if mode.startswith("alpha") else "threshold"
        if mode in ("sweep", "alpha_sweep"):
            res[f"best_{key}"] = rule.values[best]
            res["best_miou"] = res["miou"]
            res["curve"] = [{key: v, "miou": m} for v, m in zip(rule.values, curve)]
            res["threshold_selected_on_gt"] = True
        else:
            res[key] = rule.values[0]
        results[proto.name] = res
    return _combine(base, results, protocol)


def _seed_rule(threshold, sweep, alpha) -> tuple[SeedRule, str]:
    given = [threshold is not None, bool(sweep) or (sweep is not None and not isinstance(sweep, bool)),
             alpha is not None]
    if sum(given) != 1:
        raise UserError("give exactly one of --threshold T, --sweep or --alpha A for the background")
    if threshold is not None:
        return SeedRule(thresholds=(float(threshold),)), "threshold"
    if alpha is not None:
        alphas = tuple(float(a) for a in np.atleast_1d(alpha))
        if not alphas or min(alphas) <= 0:
            raise UserError(f"alpha must be > 0; got {list(alphas)}")
        return SeedRule(alphas=alphas), "alpha_sweep" if len(alphas) > 1 else "alpha"
    values = DEFAULT_THRESHOLDS if sweep is True else tuple(float(t) for t in sweep)
    if not values:
        raise UserError("the threshold sweep is empty")
    return SeedRule(thresholds=values), "sweep"


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
        acc.update(label, score, rule.taus(cf.cams.dtype), gt, dataset.load_context(sample))
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
    for part_cm, part_ctx in _run(_mask_chunk, jobs, progress, "masks", workers):
        cm.merge(part_cm)
        ctx += part_ctx
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
            hit = (context == pred) & (gt != pred) & (gt != IGNORE) & (pred > 0) & (pred != IGNORE)
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
    workers = min(os.cpu_count() or 1, 2) if workers is None else max(1, workers)
    bar = _progress(progress, what, sum(len(j[1]) for j in jobs))
    with bar:
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                yield fn(*job)
                bar.advance(len(job[1]))
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(fn, *job): len(job[1]) for job in jobs}
            try:
                for fut in as_completed(pending):
                    yield fut.result()
                    bar.advance(pending.pop(fut))
            finally:
                for fut in pending:
                    fut.cancel()


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n: int) -> None:
        pass


class _Bar:
    def __init__(self, what: str, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
        self._progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(f"scoring {what}", total=total)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


def _progress(enabled: bool, what: str, total: int):
    return _Bar(what, total) if enabled else _NoBar()


def _has_context(dataset: Dataset, samples: list[Sample]) -> bool:
    return type(dataset).load_context is not Dataset.load_context and dataset.load_context(samples[0]) is not None


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
