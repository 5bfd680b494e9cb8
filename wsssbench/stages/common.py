"""What the stages share: image tensors, label vectors, and the seeded torch set-up."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Dataset, Sample

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


def fg_index(dataset: Dataset, label: int) -> int:
    """A Sample label (index into class_names) → classifier output index (IRN: VOC class − 1)."""
    return label - 1 if dataset.has_background else label


def num_fg(dataset: Dataset) -> int:
    return dataset.num_classes - 1 if dataset.has_background else dataset.num_classes


def label_vector(dataset: Dataset, sample: Sample) -> torch.Tensor:
    v = torch.zeros(num_fg(dataset))
    for label in sample.labels:
        v[fg_index(dataset, label)] = 1.0
    return v


class ImageLabels(torch.utils.data.Dataset):
    """(image resized to ``size``², multi-hot labels) with a random horizontal flip when ``train``."""

    def __init__(self, dataset: Dataset, samples: list[Sample], size: int, train: bool = True):
        self.dataset, self.samples, self.size, self.train = dataset, samples, size, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        x = to_tensor(self.dataset.load_image(sample))
        x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        if self.train and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"image": x, "labels": label_vector(self.dataset, sample), "index": i}


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """IRN/DeepLab's poly schedule: ``base · (1 − step/total)^power``."""
    return base * (1 - step / max(total, 1)) ** power


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for one stage, so a stage's result depends on its key alone."""
    seed_everything(seed)
    yield
