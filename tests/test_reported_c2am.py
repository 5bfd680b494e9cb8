"""C2AM Table 1, transcribed in leaderboards/reported/c2am.csv, checked against the paper text."""
import pytest

from _reported import cell, check_against_text, check_line_order, check_schema, paper_lines, read_cells, read_tables

PAPER, TEXT = "c2am", "001_f9b338e56250a5cc.txt"


def test_schema():
    check_schema(PAPER)
    assert [t["id"] for t in read_tables(PAPER)] == ["c2am:1"]


def test_every_cell_is_on_its_source_line():
    check_against_text(PAPER, TEXT)
    check_line_order(PAPER, TEXT)


@pytest.mark.parametrize("row, column, value, line", [
    ("CAM[]CVPR'16", "Seed", "48.3", 160),
    ("CONTA[]NeurIPS'20", "Pseudo-Mask", "67.9", 161),
    ("CONTA+SEAM []", "test", "66.7", 162),
    ("$C^2$ AM (Ours)", "Pseudo-Mask", "69.6", 164),
    ("RCA[]CVPR'22", "val", "72.2", 167),
])
def test_cells(row, column, value, line):
    c = cell(read_cells(PAPER)[1], "c2am:1", row, column)
    assert (c["value"], int(c["source_line"])) == (value, line)
    text = paper_lines(TEXT)[line - 1].split("\t")
    assert text[0] == row
    assert text[["Method", "Type", "Backbone", "Seed", "Pseudo-Mask", "val", "test"].index(column)] == value


def test_shape_and_order_follow_the_paper():
    lines = paper_lines(TEXT)
    cells = read_cells(PAPER)[1]
    table = read_tables(PAPER)[0]
    assert lines[table["source_lines"][0] - 1].split("\t") == table["header"]
    assert lines[table["source_lines"][1] - 1].startswith("Table 1: " + table["caption"][:40])
    rows = list(dict.fromkeys(c["row"] for c in cells))
    assert rows == [lines[n - 1].split("\t")[0] for n in range(160, 168)]
    assert list(dict.fromkeys(c["column"] for c in cells)) == ["Seed", "Pseudo-Mask", "val", "test"]
    assert len(cells) == 8 * 4


def test_rca_seed_is_not_applicable():
    c = cell(read_cells(PAPER)[1], "c2am:1", "RCA[]CVPR'22", "Seed")
    assert (c["value"], c["flags"]) == ("–", "na")
    assert paper_lines(TEXT)[166].split("\t")[3] == "/"


def test_claimed_gains_match_the_table():
    """Text, line 157: C2AM beats CAM by +3.7 and CONTA by +1.7 on Pseudo-Mask."""
    cells = read_cells(PAPER)[1]
    ours = float(cell(cells, "c2am:1", "$C^2$ AM (Ours)", "Pseudo-Mask")["value"])
    assert round(ours - float(cell(cells, "c2am:1", "CAM[]CVPR'16", "Pseudo-Mask")["value"]), 1) == 3.7
    assert round(ours - float(cell(cells, "c2am:1", "CONTA[]NeurIPS'20", "Pseudo-Mask")["value"]), 1) == 1.7
    assert "(+3.7%)" in paper_lines(TEXT)[156] and "(+1.7%)" in paper_lines(TEXT)[156]
