"""What the stages share: image tensors, label vectors, training pairs, and seeding."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import Dataset, Sample
from ..data.base import num_fg

MEAN = (0.485, 0.456, 0.406)    # ImageNet statistics, as IRN's imutils.Normalize
STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → normalised (3, H, W) float32."""
    x = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def train_split(dataset: Dataset) -> str:
    """The classifier's training split: ``train_aug`` where the layout has it (VOC + SBD, as IRN), else ``train``."""
    return "train_aug" if "train_aug" in dataset.split_names() else "train"


def fg_index(dataset: Dataset, label: int) -> int:
    """A Sample label (index into class_names) → classifier output index (IRN: VOC class − 1)."""
    return label - 1 if dataset.has_background else label


def label_vector(dataset: Dataset, sample: Sample) -> torch.Tensor:
    v = torch.zeros(num_fg(dataset))
    for label in sample.labels:
        v[fg_index(dataset, label)] = 1.0
    return v


class ImageLabels(torch.utils.data.Dataset):
    """(image, multi-hot labels, the method's extra inputs). Training: IRN's augmentation — random rescale
    by a factor in ``rescale``, horizontal flip, random crop (zero-padded, i.e. the mean colour) to
    ``size``², the extras with the image; evaluation: resized to ``size``². ``augment`` says how the
    rescale is done: ``"toolkit"`` bilinear on the normalised image, long side ``size`` × U(lo, hi);
    ``"irn"`` as IRN's loader (:func:`irn_resize_long` on the uint8 image, then normalised); ``"seam"`` as SEAM's
    (the same resize, then :func:`seam_jitter`)."""

    def __init__(self, dataset: Dataset, samples: list[Sample], size: int, train: bool = True,
                 rescale: tuple[float, float] = (1.0, 1.0), extras: Callable[[Sample], dict] | None = None,
                 augment: str = "toolkit"):
        self.dataset, self.samples, self.size, self.train, self.rescale = dataset, samples, size, train, rescale
        self.extras, self.augment = extras, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        image = self.dataset.load_image(sample)
        extra = extra_tensors(self.extras, sample, image.shape[:2])
        item = {"labels": label_vector(self.dataset, sample), "index": i}
        if not self.train:
            return {"image": resize(to_tensor(image), (self.size, self.size)), **item,
                    **{k: resize(v, (self.size, self.size)) for k, v in extra.items()}}
        x = self.rescaled(image)
        extra = {k: resize(v, x.shape[-2:]) for k, v in extra.items()}
        if torch.rand(()) < 0.5:
            x, extra = x.flip(-1), {k: v.flip(-1) for k, v in extra.items()}
        crop = random_crop(torch.cat([x, *(v.to(x.dtype) for v in extra.values())]), self.size)
        parts = crop.split([len(x), *(len(v) for v in extra.values())])
        return {"image": parts[0], **item, **{k: p.to(v.dtype) for (k, v), p in zip(extra.items(), parts[1:])}}

    def rescaled(self, image: np.ndarray) -> torch.Tensor:
        """The normalised (3, h, w) image at a random scale, as ``augment`` says."""
        lo, hi = self.rescale
        if self.augment in ("irn", "seam"):
            image = irn_resize_long(image, round(self.size * lo), round(self.size * hi))
            return to_tensor(seam_jitter(image) if self.augment == "seam" else image)
        x = to_tensor(image)
        s = self.size / max(x.shape[-2:]) * (lo + (hi - lo) * float(torch.rand(())))
        return resize(x, (max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s))))


def irn_resize_long(image: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The long side to a random integer in [lo, hi], PIL bicubic on uint8 (IRN misc/imutils.py random_resize_long)."""
    target = lo + int(torch.randint(hi - lo + 1, ()))
    h, w = image.shape[:2]
    return pil_rescale(image, target / (h if w < h else w))


def seam_jitter(image: np.ndarray) -> np.ndarray:
    """SEAM train_SEAM.py / PSA train_aff.py: torchvision ``ColorJitter(0.3, 0.3, 0.3, 0.1)`` on the uint8 image
    (brightness, contrast, saturation, hue in a random order; draws from torch's generator)."""
    from torchvision.transforms import ColorJitter
    return np.asarray(ColorJitter(0.3, 0.3, 0.3, 0.1)(Image.fromarray(image)))


def pil_rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) uint8 scaled by ``scale``, sides rounded (IRN misc/imutils.py pil_rescale, order 3)."""
    h, w = image.shape[:2]
    return pil_resize(image, (int(np.round(h * scale)), int(np.round(w * scale))))


def pil_resize(image: np.ndarray, size) -> np.ndarray:
    """(H, W, 3) uint8 to ``size`` with PIL bicubic; the image itself at its own size (IRN misc/imutils.py pil_resize)."""
    if tuple(size) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size)[::-1], Image.BICUBIC))


#: batch keys the harness sets; a method's extra inputs take other names.
BATCH_KEYS = ("image", "labels", "index", "mask", "cams")


def extra_tensors(extras: Callable[[Sample], dict] | None, sample: Sample, shape) -> dict[str, torch.Tensor]:
    """The method's per-image inputs as (C, H, W) tensors: float32 for float arrays, int64 for integers."""
    if extras is None:
        return {}
    out = {}
    for name, arr in extras(sample).items():
        arr = np.asarray(arr)
        if name in BATCH_KEYS:
            raise ValueError(f"extra input {name!r} clashes with the harness's batch key of that name")
        if arr.shape[:2] != tuple(shape) or arr.ndim not in (2, 3):
            raise ValueError(f"extra input {name!r} of {sample.id}: shape {arr.shape}, expected "
                             f"{tuple(shape)} or {tuple(shape)} + (C,) as the image")
        t = torch.from_numpy(np.ascontiguousarray(arr.reshape(*arr.shape[:2], -1).transpose(2, 0, 1)))
        out[name] = t.float() if np.issubdtype(arr.dtype, np.floating) else t.long()
    return out


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """(C, H, W) to ``size``: bilinear for floats, nearest for integer maps (labels, superpixels)."""
    if x.dtype.is_floating_point:
        return F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return F.interpolate(x[None].float(), size=tuple(size), mode="nearest")[0].to(x.dtype)


def random_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """A random ``size``² window of (C, H, W) ``x``, zero-padded where ``x`` is smaller (IRN imutils.random_crop)."""
    h, w = x.shape[-2:]
    out = x.new_zeros((x.shape[0], size, size))
    ch, cw = min(size, h), min(size, w)
    sy, sx = int(torch.randint(h - ch + 1, ())), int(torch.randint(w - cw + 1, ()))    # source window
    dy, dx = int(torch.randint(size - ch + 1, ())), int(torch.randint(size - cw + 1, ()))  # place in output
    out[:, dy:dy + ch, dx:dx + cw] = x[:, sy:sy + ch, sx:sx + cw]
    return out


def loader_workers(cfg) -> int:
    """DataLoader worker processes: ``workers``, or every core this process may use but one, at most 4."""
    if cfg.workers is not None:
        return max(0, cfg.workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cores - 1)


def stream(data: torch.utils.data.Dataset, batches, workers: int, device: str = "cpu") -> torch.utils.data.DataLoader:
    """Batches of ``data`` read by ``workers`` processes. ``batches`` (drawn in this process from its own
    generator) names each item with its random draws, so the numbers never depend on ``workers``."""
    return torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=workers,
                                       pin_memory=device == "cuda")


class MaskPairs(torch.utils.data.Dataset):
    """Item ``(i, flip)``: image ``i`` (bilinear) and its ``<id>.png`` label in ``masks_dir`` (nearest), resized to
    ``size``², flipped if ``flip``; read from disk when asked, so memory does not grow with the image count."""

    def __init__(self, dataset: Dataset, samples: list[Sample], masks_dir: Path, size: int):
        self.dataset, self.samples, self.masks_dir, self.size = dataset, samples, masks_dir, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        i, flip = item
        sample, size = self.samples[i], (self.size, self.size)
        x = F.interpolate(to_tensor(self.dataset.load_image(sample))[None], size=size, mode="bilinear",
                          align_corners=False)[0]
        y = torch.from_numpy(np.array(Image.open(self.masks_dir / f"{sample.id}.png"))).float()
        y = F.interpolate(y[None, None], size=size, mode="nearest")[0, 0].long()
        return (x.flip(-1), y.flip(-1)) if flip else (x, y)


class EpochBatches:
    """Shuffled epochs of ``n`` items in batches of ``batch_size`` (the last partial one dropped, at least one
    batch an epoch), each item ``(index, flip)`` with a fair coin for its flip, all from ``generator``."""

    def __init__(self, n: int, batch_size: int, epochs: int, generator: torch.Generator):
        self.n, self.batch_size, self.epochs, self.generator = n, batch_size, epochs, generator
        self.steps = max(1, n // batch_size)

    def __len__(self) -> int:
        return self.epochs * self.steps

    def __iter__(self):
        for _ in range(self.epochs):
            order = torch.randperm(self.n, generator=self.generator)
            for k in range(self.steps):
                sel = order[k * self.batch_size:(k + 1) * self.batch_size]
                flip = torch.rand(len(sel), generator=self.generator) < 0.5
                yield [(int(i), bool(f)) for i, f in zip(sel, flip)]


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """IRN/DeepLab's poly schedule: ``base · (1 − step/total)^power``."""
    return base * (1 - step / max(total, 1)) ** power
