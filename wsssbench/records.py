"""Run records: what one run measured, with the provenance a table row needs.

A record is one JSON file written atomically by the harness. The leaderboard renders records beside
reported numbers and refuses any record whose provenance is incomplete (:func:`validate`).
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import code_version
from .errors import UserError
from .io import write_json

SCHEMA_VERSION = 1

#: Metric keys, all in percent. Segmentation runs fill the first three, WSOL runs the rest.
SEG_METRICS = ("seed_miou", "pseudo_miou", "seg_miou")
WSOL_METRICS = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known")


@dataclass
class RunRecord:
    method: str                       # registered method name, e.g. "cam", "c2am"
    dataset: str                      # registered dataset name, e.g. "synthetic", "voc"
    dataset_preset: str | None        # synthetic preset ("tiny", ...) or None for real data
    config: dict[str, Any]            # the full resolved method config (after --set overrides)
    seed: int
    metrics: dict[str, float]         # percent, unrounded
    protocols: dict[str, str]         # metric key -> evaluation protocol preset that produced it
    pretrained: str | None            # weights source, or None: random init (not comparable to papers)
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)     # stage -> seconds
    artifacts: dict[str, str] = field(default_factory=dict)     # name -> path
    extra: dict[str, Any] = field(default_factory=dict)         # e.g. context confusion, per-class IoU
    rounds: list[dict[str, Any]] = field(default_factory=list)  # [{"round": r, "seed_miou": …}, …]; round 0 = baseline
    code_version: str = field(default_factory=code_version)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict())
        return path


class UnreadableRecord(UserError):
    """A record file that is not JSON at all (truncated by a crash, or something else)."""


_REQUIRED = {"method": str, "dataset": str, "config": dict, "seed": int, "metrics": dict,
             "protocols": dict, "code_version": str, "created": str, "schema": int}


def validate(obj: dict[str, Any]) -> list[str]:
    """Problems with a record's schema and provenance; empty when it is acceptable."""
    problems = []
    for key, typ in _REQUIRED.items():
        if key not in obj:
            problems.append(f"missing {key!r}")
        elif not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            problems.append(f"{key!r} should be {typ.__name__}, got {type(obj[key]).__name__}")
    if problems:
        return problems
    if obj["schema"] != SCHEMA_VERSION:
        problems.append(f"schema {obj['schema']} is not {SCHEMA_VERSION}")
    if "pretrained" not in obj:
        problems.append("missing 'pretrained' (weights source, or null for random init)")
    if not obj["code_version"]:
        problems.append("empty 'code_version'")
    if not obj["config"]:
        problems.append("empty 'config'")
    for key, value in obj["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            problems.append(f"metric {key!r} is not a number: {value!r}")
        elif key not in obj["protocols"]:
            problems.append(f"metric {key!r} names no protocol")
    return problems


def read(path: Path) -> tuple[Any, list[str]]:
    """One record file's JSON and its problems (empty when valid); an unreadable file is a :class:`UserError`
    naming it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UnreadableRecord(f"{path}: not a readable run record ({err})") from None
    return obj, validate(obj) if isinstance(obj, dict) else ["not a JSON object"]


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate one record; a bad one is a :class:`UserError` naming the file."""
    path = Path(path)
    obj, problems = read(path)
    if problems:
        raise UserError(f"{path}: invalid run record: {'; '.join(problems)}")
    return obj


def record_paths(directory: str | Path) -> list[Path]:
    """Every ``*.json`` below ``directory`` in path order, except the atomic writer's temporaries (and
    anything else in a dot-prefixed file or folder), which are not records."""
    directory = Path(directory)
    return sorted(p for p in directory.rglob("*.json")
                  if not any(part.startswith(".") for part in p.relative_to(directory).parts))


def load_dir(directory: str | Path) -> list[dict[str, Any]]:
    """Every record below ``directory``, validated. An unreadable file (truncated by a crash, not JSON) is
    skipped with one line on stderr naming it, so it never counts as a run; a readable record with
    incomplete provenance is refused (:class:`UserError`), as a table must not show it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such folder of run records")
    good = []
    for path in record_paths(directory):
        try:
            good.append(load(path))
        except UnreadableRecord as err:
            print(f"warning: skipped {err}", file=sys.stderr)
    return good
