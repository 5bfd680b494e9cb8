"""Dataset readers, one per official layout, and the registry of their names.

``get_dataset(name, root)`` returns a :class:`~wsssbench.data.base.Dataset`; a reader is a plain
function ``(root: Path | None, **options) -> Dataset`` registered under its name.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

from ..registry import Registry
from .base import IGNORE, Box, Dataset, Sample, read_image, read_mask, resolve_root

DATASETS: Registry = Registry("dataset")

# Every module of this package but ``base`` is a reader that registers itself on import.
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")


def get_dataset(name: str, root: str | os.PathLike | None = None, **options) -> Dataset:
    return DATASETS.get(name)(root, **options)


__all__ = ["DATASETS", "Box", "Dataset", "IGNORE", "Sample", "get_dataset", "read_image", "read_mask",
           "resolve_root"]
