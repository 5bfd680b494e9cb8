"""The stage cache: a stage's artifacts live in a folder named by the hash of its config and inputs.

A folder is complete iff it holds ``DONE``: the stage writes into a temporary sibling, writes
``key.json`` and ``DONE`` there, and renames it into place in one step. An interrupted run leaves
only a temporary folder (removed on the next try), so a repeated run resumes at the stage it
stopped in and reuses every finished one. A lock per stage keeps two runs on one folder from
building (and deleting) the same stage at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from ..io import write_json

DONE = "DONE"


def key_hash(key: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the key's canonical JSON.

    >>> key_hash({"a": 1, "b": [1.0, "x"]}) == key_hash({"b": [1.0, "x"], "a": 1})
    True
    """
    text = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_dir(root: Path, name: str, key: dict[str, Any]) -> Path:
    return Path(root) / f"{name}-{key_hash(key)}"


def is_done(path: Path) -> bool:
    return (Path(path) / DONE).is_file()


def cached(root: Path, name: str, key: dict[str, Any], build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Run ``build(tmp_dir)`` unless the stage is cached; return ``(folder, was_cached)``.

    One process builds a stage at a time: a second run on the same ``--out`` waits for the first
    (one line on stderr says for which PID), then finds the stage done and reuses it.
    """
    final = stage_dir(root, name, key)
    if is_done(final):
        return final, True
    with _stage_lock(final):
        if is_done(final):              # built by the run we waited for
            return final, True
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():                # left by an interrupted run (its lock died with it)
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        build(tmp)
        write_json(tmp / "key.json", key)
        (tmp / DONE).write_text("")
        if final.exists():              # an incomplete folder from an older layout: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    return final, False


@contextlib.contextmanager
def _stage_lock(final: Path):
    """An exclusive ``flock`` on ``.<stage>.lock`` beside the stage (released by the OS if the holder dies)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(f".{final.name}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            print(f"waiting: stage {final.name} is being built by PID {holder} (another run on this folder)",
                  file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
