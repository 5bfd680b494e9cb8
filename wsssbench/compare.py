"""Paired statistics of two runs: is B's mIoU really different from A's?

Two independent sources of uncertainty, each with its own 95% interval:

* **images** (works with one seed): confusion matrices are additive over images, so one pass stores each
  image's matrix and a bootstrap resample is a weighted sum — ``counts @ matrices``, one matrix product for
  all resamples. A and B are resampled with the *same* draws (paired), so what varies is the image set.
* **seeds** (several seeds): the per-seed differences of the records' metrics, paired by seed, with a
  Student-t interval. This one needs only the records, not their artifacts.

A difference is *resolved* when its interval excludes 0.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from .errors import UserError
from .metrics.seg_protocols import PROTOCOLS

METRICS = ("seed_miou", "pseudo_miou", "seg_miou")


# ---------------------------------------------------------------------------------------------- seeds

def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF).

    >>> round(t_quantile(0.975, 2), 4), round(t_quantile(0.975, 30), 4)
    (4.3027, 2.0423)
    """
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def _t_cdf(t: float, df: int) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1 + num / (c if abs(c) > 1e-300 else 1e-300)
        f *= c * d
        if abs(1 - c * d) < 1e-15:
            break
    return front * (f - 1)


def seed_pairs(deltas: list[float]) -> dict | None:
    """Mean paired difference over seeds with its 95% t interval; None with fewer than two pairs."""
    if len(deltas) < 2:
        return None
    mean, std = statistics.fmean(deltas), statistics.stdev(deltas)
    half = t_quantile(0.975, len(deltas) - 1) * std / math.sqrt(len(deltas))
    return {"n": len(deltas), "mean": mean, "std": std, "low": mean - half, "high": mean + half,
            "resolved": not mean - half <= 0 <= mean + half}


# --------------------------------------------------------------------------------------------- images

def image_confusions(dataset, split: str, predictions: dict[str, np.ndarray]) -> np.ndarray:
    """``(n_images, C·C + C)`` int64: each image's ``[gt, pred]`` confusion and its predicted-255 counts,
    in the split's order (the layout :meth:`SegProtocol.scores` takes)."""
    from .metrics.segmentation import ConfusionMatrix
    rows = []
    for sample in dataset.samples(split):
        cm = ConfusionMatrix(dataset.num_classes)
        cm.update(predictions[sample.id], dataset.load_mask(sample))
        rows.append(np.concatenate([cm.matrix.reshape(-1), cm.void]))
    return np.stack(rows)


def miou(confusion: np.ndarray, protocol: str, num_classes: int) -> float:
    """mIoU of one summed ``(C·C + C)`` confusion under ``protocol`` (the evaluation core's arithmetic)."""
    c = num_classes
    return PROTOCOLS.get(protocol).scores(confusion[: c * c].reshape(c, c), confusion[c * c:])[0]


def bootstrap_delta(conf_a: np.ndarray, conf_b: np.ndarray, protocol: str, num_classes: int, *,
                    resamples: int = 1000, seed: int = 0, chunk: int = 250) -> np.ndarray:
    """mIoU(B) − mIoU(A) on ``resamples`` image resamples drawn with replacement, the same draws for both."""
    rng = np.random.default_rng(seed)
    n = len(conf_a)
    out = []
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(chunk, resamples - start))
        sum_a, sum_b = counts @ conf_a, counts @ conf_b
        out += [miou(b, protocol, num_classes) - miou(a, protocol, num_classes) for a, b in zip(sum_a, sum_b)]
    return np.asarray(out)


def image_bootstrap(conf_a, conf_b, protocol: str, num_classes: int, resamples: int, seed: int) -> dict:
    deltas = bootstrap_delta(conf_a, conf_b, protocol, num_classes, resamples=resamples, seed=seed)
    low, high = (float(v) for v in np.percentile(deltas, [2.5, 97.5]))
    return {"low": low, "high": high, "resamples": resamples, "resolved": not low <= 0 <= high}


# --------------------------------------------------------------------------------------------- records

def load_runs(path: Path) -> list[dict]:
    """The records of a record file or a folder of records."""
    from . import records
    path = Path(path)
    runs = records.load_dir(path) if path.is_dir() else [records.load(path)]
    if not runs:
        raise UserError(f"{path}: no run records")
    return runs


def at_round(record: dict, round_: int | None) -> dict:
    """``record`` as of round ``round_`` of its ``rounds`` (0 = the baseline of a multi-round method):
    that round's metrics and artifacts; None: the record as it is (its last round)."""
    if round_ is None:
        return record
    rounds = {r["round"]: r for r in record.get("rounds") or []}
    if round_ not in rounds:
        raise UserError(f"{record.get('method')} seed {record.get('seed')}: no round {round_} in its record "
                        f"(rounds: {', '.join(map(str, sorted(rounds))) or 'none'})")
    entry = rounds[round_]
    metrics = {k: entry[k] for k in record["metrics"] if entry.get(k) is not None}
    return {**record, "metrics": metrics, "artifacts": entry.get("artifacts") or {}}


def run_predictions(record: dict, metric: str, dataset) -> tuple[str, dict[str, np.ndarray]] | None:
    """The split and per-image label maps behind one metric of a record, or None when its artifacts are gone."""
    from PIL import Image

    from .cams import load_cams
    from .metrics.segmentation import seeds_from_cams
    art, cfg = record.get("artifacts") or {}, record["config"]
    where = {"seed_miou": ("cams", "train", lambda p: Path(p) / "train"),
             "pseudo_miou": ("masks", "train", lambda p: Path(p).parent / "train"),
             "seg_miou": ("predictions", "val", Path)}
    name, split, folder_of = where[metric]
    if not art.get(name) or not folder_of(art[name]).is_dir():
        return None
    folder = folder_of(art[name])
    out = {}
    for sample in dataset.samples(split):
        if metric == "seed_miou":
            cam = load_cams(folder / f"{sample.id}.npz")
            rule = {"alpha": cfg["seed_alpha"]} if cfg.get("seed_alpha") is not None else \
                {"threshold": cfg["seed_threshold"]}
            out[sample.id] = seeds_from_cams(cam.cams, cam.keys, **rule)
        else:
            path = folder / f"{sample.id}.png"
            if not path.is_file():
                raise UserError(f"{path}: the run's mask of image {sample.id!r} is missing; the image bootstrap "
                                f"scores both runs on every image of {split}")
            out[sample.id] = np.array(Image.open(path))
    return split, out


def compare(runs_a: list[dict], runs_b: list[dict], *, dataset=None, resamples: int = 1000, seed: int = 0) -> dict:
    """Δ = B − A per metric: means, the seed-pair interval and (with artifacts and a dataset) the image one."""
    by_seed_a, by_seed_b = {r["seed"]: r for r in runs_a}, {r["seed"]: r for r in runs_b}
    paired = sorted(set(by_seed_a) & set(by_seed_b))
    if not paired:
        raise UserError(f"no seed in common: A has {sorted(by_seed_a)}, B has {sorted(by_seed_b)}")
    if {r["dataset"] for r in runs_a + runs_b} != {runs_a[0]["dataset"]}:
        raise UserError("A and B are runs on different datasets; compare runs on the same images")
    out = {}
    for metric in METRICS:
        pairs = [(by_seed_a[s], by_seed_b[s]) for s in paired
                 if metric in by_seed_a[s]["metrics"] and metric in by_seed_b[s]["metrics"]]
        if not pairs:
            continue
        protocols = {r["protocols"][metric] for pair in pairs for r in pair}
        if len(protocols) != 1:
            raise UserError(f"{metric}: A and B are scored under different protocols ({', '.join(sorted(protocols))})")
        a = [p[0]["metrics"][metric] for p in pairs]
        b = [p[1]["metrics"][metric] for p in pairs]
        entry = {"a": statistics.fmean(a), "b": statistics.fmean(b), "delta": statistics.fmean(b) - statistics.fmean(a),
                 "protocol": protocols.pop(), "seeds": [p[0]["seed"] for p in pairs],
                 "seed_pairs": seed_pairs([y - x for x, y in zip(a, b)]), "image_bootstrap": None}
        if dataset is not None:
            got = [run_predictions(r, metric, dataset) for r in pairs[0]]
            if all(got):
                split = got[0][0]
                conf_a, conf_b = (image_confusions(dataset, split, g[1]) for g in got)
                entry["image_bootstrap"] = image_bootstrap(conf_a, conf_b, entry["protocol"], dataset.num_classes,
                                                           resamples, seed)
                entry["image_bootstrap"]["seed"] = pairs[0][0]["seed"]
        out[metric] = entry
    return out
