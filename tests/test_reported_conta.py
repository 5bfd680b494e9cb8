"""CONTA's reported numbers against the paper text they were transcribed from."""
from __future__ import annotations

import re

import pytest

from wsssbench.reported import load_cells, reported_dir
from wsssbench.tables import load_tables

from _reported import paper_lines

MAIN = "002_d39495ed1c525044.txt"
APPENDIX = "000_926c1148dc5f3dd2.txt"

CELLS = load_cells(reported_dir() / "conta.csv")
TABLES = {t.id: t for t in load_tables().values() if t.paper == "conta"}


def test_every_conta_table_is_known():
    assert list(TABLES) == ["conta:1", "conta:2", "conta:3", "A1", "A2", "A3", "A4", "A5", "A6", "A7"]
    assert not TABLES["A6"].numbers and not TABLES["A7"].numbers
    assert not TABLES["A6"].cells and not TABLES["A7"].cells   # never invented


def test_shapes():
    rows = {t.id: len(t.rows) for t in TABLES.values()}
    assert rows == {"conta:1": 14, "conta:2": 8, "conta:3": 14, "A1": 14, "A2": 14, "A3": 14, "A4": 14,
                    "A5": 14, "A6": 0, "A7": 0}
    assert TABLES["conta:3"].columns == ("Backbone", "val", "test")
    assert TABLES["A1"].columns == ("CAM", "Pseudo-Mask", "Seg. Mask")


@pytest.mark.parametrize("cell", [c for c in CELLS], ids=lambda c: c.ref)
def test_every_cell_is_printed_on_its_source_line(cell):
    source = TABLES[cell.table].source
    line = paper_lines(source)[cell.source_line - 1]
    assert cell.value in re.split(r"[\t ]+", line.strip()), line
    assert cell.row in line, line
    if cell.delta:
        assert f"{cell.value} ^{{{cell.delta}}}" in line


def test_each_lines_numbers_are_transcribed_in_printed_order():
    """Catches a value put in the wrong column: per source line, the CSV's numbers (in CSV order)
    are exactly the numbers printed on that line (in printed order)."""
    by_line: dict[tuple[str, int], list[str]] = {}
    for cell in CELLS:
        if cell.number is not None or cell.value == "–":
            by_line.setdefault((TABLES[cell.table].source, cell.source_line), []).append(cell.value)
    assert len(by_line) == 14 + 8 + 7 + 5 * 14
    for (source, line), values in by_line.items():
        printed = [t for t in re.split(r"[\t ]+", paper_lines(source)[line - 1]) if re.fullmatch(r"\d+\.\d+|–", t)]
        assert values == printed, (source, line)


PINNED = {   # source text -> (table, row, column, printed value, line), checked by hand against the text
    MAIN: [("conta:1", "(Q2) / Round = 3", "Seg. Mask", "66.1", 144),
           ("conta:1", "Upperbound [32]", "Seg. Mask", "80.8", 139),
           ("conta:1", "(Q3) / Dense", "CAM", "56.1", 150),
           ("conta:2", "DSRG [20] / + CONTA", "Pseudo-Mask", "64.0", 181),
           ("conta:2", "SEC [23] / SEC [23]", "Seg. Mask", "50.7", 174),
           ("conta:3", "(a) PASCAL VOC 2012 [12]. / SEAM+CONTA", "test", "66.7", 207),
           ("conta:3", "(b) MS-COCO [30]. / SEC+CONTA", "val", "23.7", 205)],
    APPENDIX: [("A1", "(A2) / Round = 3", "Pseudo-Mask", "67.9", 232),
               ("A2", "(A2) / Round = 2", "CAM", "48.0", 291),
               ("A3", "(A3) / Dense", "Seg. Mask", "53.0", 330),
               ("A4", "Upperbound∗ [14]", "Seg. Mask", "44.8", 349),
               ("A5", "(A4) / CPseudo-Mask", "CAM", "28.5", 399)],
}


@pytest.mark.parametrize("source, table, row, column, value, line",
                         [(source, *pin) for source, pins in PINNED.items() for pin in pins])
def test_pinned_cells(source, table, row, column, value, line):
    cell = TABLES[table].cell(row, column)
    assert (cell.value, cell.source_line) == (value, line)
    assert value in paper_lines(source)[line - 1]


def test_flags_and_deltas():
    t2 = TABLES["conta:2"]
    assert t2.cell("SEAM* [57] / SEAM* [57]", "CAM").flags == ("reimpl",)
    assert t2.cell("SEC [23] / SEC [23]", "CAM").flags == ()
    assert t2.cell("IRNet* [1] / + CONTA", "Seg. Mask").delta == "+2.3"
    up = TABLES["conta:1"].cell("Upperbound [32]", "CAM")
    assert up.value == "–" and "na" in up.flags and up.number is None
    assert TABLES["A4"].cell("Upperbound∗ [14]", "Seg. Mask").flags == ("reimpl",)


def test_row_order_is_the_papers():
    labels = [r.label for r in TABLES["conta:1"].rows]
    assert labels[:3] == ["Upperbound [32]", "Baseline* [57]", "$M_t \\leftarrow$ Seg. Mask"]
    assert labels[-1] == "$C_{\\text{Seg. Mask}}$"
    groups = [r.group for r in TABLES["conta:3"].rows]
    assert groups == ["(a) PASCAL VOC 2012 [12]."] * 7 + ["(b) MS-COCO [30]."] * 7
