"""The reported numbers as printed: ``leaderboards/reported/<paper>.csv``, one row per printed cell, and
the numbers the papers state in their text (``<paper>_text.csv``, one row per number, see :class:`ProseCell`).

Loading them is its own module so that the consistency checks (:mod:`.leaderboard`) and the paper
tables (:mod:`.tables`) both build on it without importing each other.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

from . import leaderboards as _data

#: The committed leaderboard data: the repository's ``leaderboards/`` folder, installed as
#: ``wsssbench.leaderboards``.
LEADERBOARD_DIR = Path(_data.__file__).resolve().parent

CSV_FIELDS = ("paper", "table", "row", "column", "value", "unit", "dataset", "split", "backbone",
              "flags", "source_line", "note")
FLAGS = frozenset({"reimpl", "best", "second", "na"})
NOT_A_NUMBER = {"–", "-", "—", "/", ""}
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: ~10x faster


@dataclass(frozen=True)
class Cell:
    """One printed cell of a paper's table, exactly as printed, with where it was printed."""

    paper: str
    table: str
    row: str                  # row label as printed
    column: str               # column header as printed (levels joined with " / ")
    value: str                # as printed: "66.1", "–", "ResNet-38"
    unit: str = ""
    dataset: str = ""
    split: str = ""
    backbone: str = ""
    flags: tuple[str, ...] = ()
    source_line: int | None = None
    note: str = ""
    delta: str = ""           # a printed superscript such as "+2.1"
    group: str = ""           # row group as printed ("(Q2)", a table half), empty when none

    @property
    def row_key(self) -> str:
        """The row's identity within its table: ``group / row`` when the row is in a group."""
        return f"{self.group} / {self.row}" if self.group else self.row

    @property
    def ref(self) -> str:
        return f"{self.table} | {self.row_key} | {self.column}"

    @property
    def number(self) -> float | None:
        """The printed value as a number, or None for text and "not applicable" cells."""
        return parse_number(self.value)


def parse_number(text: str) -> float | None:
    """``"66.1"`` → 66.1; ``"–"``, ``"ResNet-38"`` → None; thousands separators as printed in prose.

    >>> parse_number("57.43"), parse_number("–"), parse_number("VGG-16"), parse_number("10,582")
    (57.43, None, None, 10582.0)
    """
    text = text.strip().rstrip("%")
    if text in NOT_A_NUMBER:
        return None
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def decimals(text: str) -> int:
    """Digits printed after the decimal point (``"57.43"`` → 2, ``"80"`` → 0)."""
    text = text.strip().rstrip("%")
    return len(text.split(".", 1)[1]) if "." in text else 0


def board_dir(root: str | Path | None = None) -> Path:
    """The leaderboards folder: ``root``, or the committed one when None."""
    return Path(root) if root is not None else LEADERBOARD_DIR


def reported_dir(root: str | Path | None = None) -> Path:
    return board_dir(root) / "reported"


def _csv_rows(path: Path, fields, what: str) -> list[dict]:
    """The rows of a CSV whose header must hold ``fields``; unreadable or missing columns: a UserError."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in fields if f not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header must hold "
                                f"{','.join(fields)}")
            return list(reader)
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err})") from None


def load_cells(path: str | Path) -> list[Cell]:
    """Every cell of one ``<paper>.csv``, in file order; a malformed file is a UserError naming it."""
    path = Path(path)
    rows = _csv_rows(path, CSV_FIELDS, "reported numbers")
    cells = []
    for lineno, raw in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        flags = tuple(f for f in (raw.get("flags") or "").split(";") if f)
        unknown = set(flags) - FLAGS
        if unknown:
            raise UserError(f"{where}: unknown flag(s) {sorted(unknown)}; use {sorted(FLAGS)}")
        line = (raw.get("source_line") or "").strip()
        if line and not line.isdigit():
            raise UserError(f"{where}: source_line {line!r} is not a line number")
        if not raw.get("table") or not raw.get("row") or not raw.get("column"):
            raise UserError(f"{where}: every cell needs table, row and column")
        cells.append(Cell(
            paper=raw["paper"], table=raw["table"], row=raw["row"], column=raw["column"],
            value=raw.get("value") or "", unit=raw.get("unit") or "", dataset=raw.get("dataset") or "",
            split=raw.get("split") or "", backbone=raw.get("backbone") or "", flags=flags,
            source_line=int(line) if line else None, note=raw.get("note") or "",
            delta=raw.get("delta") or "", group=raw.get("group") or ""))
    return cells


def load_reported(root: str | Path | None = None) -> list[Cell]:
    """Every cell of every ``reported/<paper>.csv`` (papers in name order, cells in file order); the
    prose files (``*_text.csv``) are :func:`load_prose`'s."""
    directory = reported_dir(root)
    if not directory.is_dir():
        raise UserError(f"{directory}: no folder of reported numbers")
    cells: list[Cell] = []
    seen: dict[tuple[str, str, str], str] = {}
    for path in sorted(p for p in directory.glob("*.csv") if not p.name.endswith(TEXT_SUFFIX)):
        for cell in load_cells(path):
            key = (cell.table, cell.row_key, cell.column)
            if key in seen:
                raise UserError(f"{path}: cell {cell.ref} is recorded twice (also in {seen[key]}); "
                                "give repeated row labels a group")
            seen[key] = str(path)
            cells.append(cell)
    return cells


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not readable YAML ({err})") from None


# ---------------------------------------------------------------------------------------------
# Numbers stated in the papers' text


TEXT_SUFFIX = "_text.csv"
PROSE_FIELDS = ("paper", "table", "row", "value", "unit", "kind", "source", "source_line", "refers_to", "says",
                "note")
PROSE_KINDS = ("result", "delta", "dataset", "figure value", "context")
PROSE_COLUMN = "value"      # a prose cell's column, so that refs to it read "conta:text | <row> | value"


@dataclass(frozen=True)
class ProseCell:
    """One number a paper states in its text (not in a table), exactly as printed, with its line.

    ``table`` is the paper's text table (``conta:text``, ``A:text`` for CONTA's appendix), ``row`` a
    label unique within it, ``refers_to`` the table cell the number is about (a ref ``table | row key |
    column``, empty when none), ``says`` the words around it, verbatim from the line."""

    paper: str
    table: str
    row: str
    value: str
    unit: str
    kind: str
    source: str               # the paper text file
    source_line: int
    refers_to: str = ""
    says: str = ""
    note: str = ""

    @property
    def ref(self) -> str:
        return f"{self.table} | {self.row} | {PROSE_COLUMN}"

    @property
    def number(self) -> float | None:
        return parse_number(self.value)

    def as_cell(self) -> Cell:
        """The prose number as a :class:`Cell`, so that the consistency rules treat it like a table cell."""
        return Cell(paper=self.paper, table=self.table, row=self.row, column=PROSE_COLUMN, value=self.value,
                    unit=self.unit, source_line=self.source_line, note=self.says)


def parse_ref(ref: str, where: str = "") -> tuple[str, str, str]:
    """``"conta:1 | (Q3) / Block-5 | CAM"`` → ``("conta:1", "(Q3) / Block-5", "CAM")``.

    >>> parse_ref("conta:1 | (Q3) / Block-5 | CAM")
    ('conta:1', '(Q3) / Block-5', 'CAM')
    """
    parts = [p.strip() for p in str(ref).split(" | ")]
    if len(parts) != 3 or not all(parts):
        raise UserError(f"{where}{': ' if where else ''}{ref!r} is not a cell ref \"table | row key | column\"")
    return parts[0], parts[1], parts[2]


def load_prose_file(path: str | Path) -> list[ProseCell]:
    """Every number of one ``<paper>_text.csv``, in file order; a malformed file is a UserError naming it."""
    path = Path(path)
    rows = _csv_rows(path, PROSE_FIELDS, "prose numbers")
    out = []
    for lineno, raw in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        raw = {k: (raw.get(k) or "").strip() for k in PROSE_FIELDS}
        if raw["kind"] not in PROSE_KINDS:
            raise UserError(f"{where}: kind {raw['kind']!r}; use one of {', '.join(PROSE_KINDS)}")
        if not raw["source_line"].isdigit():
            raise UserError(f"{where}: source_line {raw['source_line']!r} is not a line number")
        if not all(raw[k] for k in ("paper", "table", "row", "value", "source")):
            raise UserError(f"{where}: every prose number needs paper, table, row, value and source")
        if raw["refers_to"]:
            parse_ref(raw["refers_to"], f"{where}: refers_to")
        out.append(ProseCell(**{**raw, "source_line": int(raw["source_line"])}))
    return out


def load_prose(root: str | Path | None = None) -> list[ProseCell]:
    """Every number of every ``reported/*_text.csv`` (papers in name order); rows unique per text table."""
    cells: list[ProseCell] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(reported_dir(root).glob(f"*{TEXT_SUFFIX}")):
        for cell in load_prose_file(path):
            if (cell.table, cell.row) in seen:
                raise UserError(f"{path}: {cell.table} row {cell.row!r} is recorded twice; labels must be unique")
            seen.add((cell.table, cell.row))
            cells.append(cell)
    return cells
