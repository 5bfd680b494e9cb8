"""Shared checks for the transcriptions in leaderboards/reported/ (used by tests/test_reported_*.py).

The transcription is checked against the paper texts themselves: each cell's printed value must
occur on the line its `source_line` names. The texts live outside the package, in the workspace's
`../shared/papers/` beside the repository (or where $WSSSBENCH_PAPERS points); tests that need
them skip, saying where they looked, when absent; the checks of the CSVs alone still run.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REPORTED = REPO / "leaderboards" / "reported"
COLUMNS = ["paper", "table", "row", "column", "value", "unit", "dataset", "split", "backbone",
           "flags", "source_line", "note"]
FLAGS = {"reimpl", "best", "second", "na"}
DATASETS = {"voc", "coco", "cub", "ilsvrc"}
NUMBER = re.compile(r"^\d+(\.\d+)?$")
DELTA = re.compile(r"^[+-]\d+(\.\d+)?$")


def papers_dir() -> Path:
    """The folder of the paper texts: $WSSSBENCH_PAPERS, else ``../shared/papers`` beside the repository."""
    if os.environ.get("WSSSBENCH_PAPERS"):
        return Path(os.environ["WSSSBENCH_PAPERS"])
    return REPO.parent / "shared" / "papers"


def paper_lines(filename: str) -> list[str]:
    """The lines of one paper text; the calling test skips, saying where it looked, when it is absent."""
    path = papers_dir() / filename
    if not path.is_file():
        pytest.skip(f"paper text {path} not available (set WSSSBENCH_PAPERS to the folder of the texts)")
    return path.read_text(encoding="utf-8").split("\n")


def read_cells(paper: str) -> tuple[list[str], list[dict]]:
    with open(REPORTED / f"{paper}.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def read_tables(paper: str) -> list[dict]:
    return yaml.safe_load((REPORTED / f"{paper}_tables.yaml").read_text(encoding="utf-8"))


def cell(cells: list[dict], table: str, row: str, column: str) -> dict:
    found = [c for c in cells if (c["table"], c["row"], c["column"]) == (table, row, column)]
    assert len(found) == 1, f"{table} / {row} / {column}: {len(found)} cells"
    return found[0]


def check_schema(paper: str, *, delta: bool = False) -> None:
    """Columns, values, flags, and one caption entry per table id, for one paper's files."""
    fields, cells = read_cells(paper)
    assert fields == COLUMNS + (["delta"] if delta else [])
    assert cells
    seen = set()
    for c in cells:
        where = f"{paper}.csv {c['table']} / {c['row']} / {c['column']}"
        assert c["paper"] == paper, where
        assert c["row"] and c["column"] and c["unit"], where
        assert NUMBER.match(c["value"]) or c["value"] == "–", where
        flags = set(filter(None, c["flags"].split(";")))
        assert flags <= FLAGS, where
        assert (c["value"] == "–") == ("na" in flags), where
        assert c["dataset"] in DATASETS, where
        assert c["split"] in {"train", "val", "test"}, where
        assert c["source_line"].isdigit(), where
        if delta and c["delta"]:
            assert DELTA.match(c["delta"]), where
        key = (c["table"], c["row"], c["column"])
        assert key not in seen, f"duplicate cell {where}"
        seen.add(key)
    for table in {c["table"] for c in cells}:  # rows in the paper's order
        lines = [int(c["source_line"]) for c in cells if c["table"] == table]
        assert lines == sorted(lines), f"{paper}.csv {table}: rows out of the paper's order"
    tables = read_tables(paper)
    ids = [t["id"] for t in tables]
    assert len(ids) == len(set(ids))
    assert {c["table"] for c in cells} <= set(ids)
    for t in tables:
        assert t["caption"].strip(), t["id"]
        first, last = t["source_lines"]
        assert first <= last


def check_against_text(paper: str, filename: str) -> None:
    """Every cell's printed value occurs on its source line, inside the table's line range."""
    lines = paper_lines(filename)
    tables = {t["id"]: t for t in read_tables(paper)}
    _, cells = read_cells(paper)
    for c in cells:
        n = int(c["source_line"])
        first, last = tables[c["table"]]["source_lines"]
        assert first <= n <= last, f"{c['table']} {c['row']}: line {n} outside {first}..{last}"
        printed = c["value"]
        if printed == "–" and (m := re.search(r'printed "(.+?)"', c["note"])):
            printed = m.group(1)  # a "not applicable" mark the paper prints another way, e.g. "/"
        assert printed_on(lines[n - 1], printed), f"{c['table']} {c['row']} {c['column']}: {printed} not on line {n}"


def check_line_order(paper: str, filename: str) -> None:
    """The cells of one source line appear on it in CSV order (catches swapped columns or rows)."""
    lines = paper_lines(filename)
    by_line: dict[tuple[str, int], list[str]] = {}
    for c in read_cells(paper)[1]:
        if c["value"] != "–":
            by_line.setdefault((c["table"], int(c["source_line"])), []).append(c["value"])
    for (table, n), values in by_line.items():
        printed = iter(re.findall(r"\d+(?:\.\d+)?", lines[n - 1]))
        assert all(v in printed for v in values), f"{table}: {values} not in this order on line {n}"


def printed_on(line: str, value: str) -> bool:
    """`value` occurs on `line` as a whole number (not as part of a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(value)}(?!\d|\.\d)", line) is not None
