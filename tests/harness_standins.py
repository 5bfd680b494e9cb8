"""A small stand-in dataset for the harness tests: two colours of squares, generated in a second."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsssbench.data import Dataset, Sample


class SquaresDataset(Dataset):
    """Two foreground classes: a red or a blue square on grey noise; masks, labels, splits train/val."""

    name = "squares"

    def __init__(self, root: Path, n: int = 24, size: int = 40):
        super().__init__(root, ("background", "red", "blue"))
        rng = np.random.default_rng(0)
        self._splits = {}
        for split, count in (("train", n), ("val", n // 2)):
            samples = []
            for i in range(count):
                img = rng.integers(90, 130, (size, size, 3)).astype(np.uint8)
                mask = np.zeros((size, size), np.uint8)
                labels = sorted(set(rng.choice([1, 2], size=rng.integers(1, 3)).tolist()))
                for c in labels:
                    s = rng.integers(10, 18)
                    y, x = rng.integers(0, size - s, 2)
                    img[y:y + s, x:x + s] = (220, 30, 30) if c == 1 else (30, 30, 220)
                    mask[y:y + s, x:x + s] = c
                sid = f"{split}_{i:03d}"
                (root / "img").mkdir(parents=True, exist_ok=True)
                (root / "gt").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / "img" / f"{sid}.png")
                Image.fromarray(mask).save(root / "gt" / f"{sid}.png")
                samples.append(Sample(sid, root / "img" / f"{sid}.png", tuple(labels), root / "gt" / f"{sid}.png"))
            self._splits[split] = samples

    def split_names(self):
        return tuple(self._splits)

    def samples(self, split):
        self._check_split(split)
        return list(self._splits[split])
