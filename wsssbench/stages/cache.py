"""The stage cache: a stage's artifacts live in a folder named by the hash of its config and inputs.

A folder is complete iff it holds ``DONE``: the stage writes into a temporary sibling, writes
``key.json`` and ``DONE`` there, and renames it into place in one step. An interrupted run leaves
only a temporary folder (removed on the next try), so a repeated run resumes at the stage it
stopped in and reuses every finished one. A lock per stage keeps two runs on one folder from
building (and deleting) the same stage at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
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


def cached_ranks(root: Path, name: str, key: dict[str, Any], build: Callable[[Path], None],
                 collective: bool) -> tuple[Path, bool]:
    """:func:`cached` for the ranks of a torchrun job: every rank gets the same folder and answer.

    Rank 0 holds the lock, decides "cached" for all, makes the temporary folder and publishes it; a
    ``collective`` build runs on every rank into that one folder (each writes its own shard's files),
    any other on rank 0 alone; the ranks meet at a barrier before rank 0 publishes and after.
    """
    from .. import distributed as dist
    final = stage_dir(root, name, key)
    tmp = final.with_name(f".{final.name}.tmp")
    with contextlib.ExitStack() as stack:
        done = False
        if dist.is_main():
            stack.enter_context(_stage_lock(final))
            done = is_done(final)
            if not done:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
        if dist.broadcast_flag(done):
            return final, True
        if collective or dist.is_main():
            build(tmp)
        dist.barrier()
        if dist.is_main():
            write_json(tmp / "key.json", key)
            (tmp / DONE).write_text("")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    dist.barrier()
    return final, False


@contextlib.contextmanager
def _stage_lock(final: Path, wait: bool = True):
    """An exclusive ``flock`` on ``.<stage>.lock`` beside the stage (released by the OS if the holder dies).
    Yields True once held; with ``wait=False`` yields False at once when another process holds it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(f".{final.name}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
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
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------- inspection


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stage folder of a cache: ``state`` is done, building (a live run holds its lock) or orphaned
    (an interrupted run's temporary, or a folder without ``DONE``)."""

    name: str
    path: Path
    state: str
    bytes: int


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _held(lock: Path) -> bool:
    """Whether a live process holds the stage lock ``lock`` (the test takes and drops it at once)."""
    if not lock.is_file():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def entries(root: Path) -> list[Entry]:
    """Every stage folder under ``root`` (a run's ``--out``/cache), sorted by name."""
    root = Path(root)
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        if not path.is_dir():
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            name = path.name[1:-len(".tmp")]
            state = "building" if _held(path.with_name(f".{name}.lock")) else "orphaned"
        else:
            name, state = path.name, "done" if is_done(path) else "orphaned"
        out.append(Entry(name, path, state, _size(path)))
    return out


def clean(root: Path) -> list[Entry]:
    """Remove the orphaned folders under ``root``; the removed entries. Each removal happens under the
    stage's lock, so a run starting that stage meanwhile is not hit. The lock files stay (a few bytes
    each): one unlinked while another run has it open would let two runs build one stage."""
    removed = []
    for entry in entries(root):
        if entry.state != "orphaned":
            continue
        with _stage_lock(Path(root) / entry.name, wait=False) as got:
            if got and entry.path.exists():
                shutil.rmtree(entry.path)
                removed.append(entry)
    return removed
