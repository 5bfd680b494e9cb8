"""Atomic writes: a result file is either absent or complete, never half-written."""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` defaults to the target's suffix, so writers that pick a format by extension
    (``np.save``, ``PIL.Image.save``, ``plt.savefig``) keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)     # mkstemp makes 0600; results should read like any file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks (memory flat in the file size)."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def strict_json(obj: Any) -> Any:
    """``obj`` with paths as strings, numpy values as Python ones and NaN/±inf as ``None``: strict JSON
    parsers reject ``NaN``, and a number that is not one must not look like a result.

    >>> import numpy as np
    >>> strict_json({"miou": float("nan"), "iou": np.array([1.0, np.inf]), "p": Path("a")})
    {'miou': None, 'iou': [1.0, None], 'p': 'a'}
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):          # numpy scalars and arrays
        return strict_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it (figures are made once, never shown)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def dumps(obj: Any) -> str:
    """The one JSON rendering of ``--json`` outputs (numpy values and paths allowed)."""
    return json.dumps(strict_json(obj), indent=2, allow_nan=False)


def out_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as an output folder: a :class:`UserError` before any work when it, or a folder above it,
    is a file (nothing would be writable there)."""
    from .errors import UserError
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{option} {path}: {p} is a file, not a folder")
            break
    return path
