"""CI-CAM Tables 1-4, transcribed in leaderboards/reported/cicam.csv, checked against the paper text."""
import pytest

from _reported import cell, check_against_text, check_line_order, check_schema, paper_lines, read_cells, read_tables

PAPER, TEXT = "cicam", "003_9892b06b13b04f49.txt"
T3_ROWS = ["CUB-200-2011 test set: TwoC", "CUB-200-2011 test set: TwoC + ConPool",
           "ILSVRC 2016 val set: TwoC", "ILSVRC 2016 val set: TwoC + ConPool"]


def cells():
    return read_cells(PAPER)[1]


def value(table, row, column):
    return float(cell(cells(), table, row, column)["value"])


def test_schema():
    check_schema(PAPER, delta=True)
    assert [t["id"] for t in read_tables(PAPER)] == ["cicam:1", "cicam:2", "cicam:3", "cicam:4"]


def test_every_cell_is_on_its_source_line():
    check_against_text(PAPER, TEXT)
    check_line_order(PAPER, TEXT)


@pytest.mark.parametrize("table, row, column, printed, line, flags", [
    ("cicam:1", "VGG-CAM [52]", "Top-1 Loc(%)", "44.15", 233, ""),
    ("cicam:1", "VGG-ACoL [51]", "Top-1 Cls(%)", "71.90", 234, ""),
    ("cicam:1", "VGG-Rethinking-CAM [1]", "Top-1 Loc(%)", "61.3", 239, "best"),
    ("cicam:1", "VGG-Baseline* [46]", "Top-1 Cls(%)", "74.45", 240, "reimpl"),
    ("cicam:1", "VGG-CI-CAM(ours)", "Top-1 Cls(%)", "75.56", 241, "best"),
    ("cicam:2", "VGG-NL-CCAM [46]", "Top-1 Loc(%)", "50.17", 261, "best"),
    ("cicam:2", "VGG-Rethinking-CAM [1]", "Top-1 Loc(%)", "45.4", 263, ""),
    ("cicam:2", "VGG-CI-CAM(ours)", "Top-1 Loc(%)", "48.71", 265, ""),
    ("cicam:3", T3_ROWS[0], "GT-know Loc(%)", "75.37", 280, ""),
    ("cicam:3", T3_ROWS[3], "Top-5 Loc(%)", "58.76", 283, "best"),
    ("cicam:4", "0.002", "GT-know Loc", "77.80", 289, "best"),
    ("cicam:4", "0.08", "Top-1 Cls(%)", "74.20", 294, ""),
])
def test_cells(table, row, column, printed, line, flags):
    c = cell(cells(), table, row, column)
    assert (c["value"], int(c["source_line"]), c["flags"]) == (printed, line, flags)
    text = paper_lines(TEXT)[line - 1].split("\t")
    header = read_tables(PAPER)[int(table[-1]) - 1]["header"]
    assert text[header.index(column)].replace("<b>", "").replace("</b>", "").split(" (")[0] == printed
    if table in ("cicam:1", "cicam:2", "cicam:4"):
        assert text[0] == row


def test_deltas_are_the_printed_ones_and_the_differences():
    for table, line, (cls, loc) in [("cicam:1", 241, ("+1.11", "+5.85")), ("cicam:2", 265, ("+0.47", "+0.16"))]:
        ours = {c["column"]: c for c in cells() if c["table"] == table and c["row"] == "VGG-CI-CAM(ours)"}
        assert (ours["Top-1 Cls(%)"]["delta"], ours["Top-1 Loc(%)"]["delta"]) == (cls, loc)
        printed = paper_lines(TEXT)[line - 1]
        assert f"( {cls[1:]} $\\uparrow$ )" in printed and f"( {loc[1:]} $\\uparrow$ )" in printed
        for column, delta in [("Top-1 Cls(%)", cls), ("Top-1 Loc(%)", loc)]:
            diff = value(table, "VGG-CI-CAM(ours)", column) - value(table, "VGG-Baseline* [46]", column)
            assert round(diff, 2) == float(delta)
    assert sum(bool(c["delta"]) for c in cells()) == 4


def test_row_and_column_order_follow_the_paper():
    def order(table):
        tcells = [c for c in cells() if c["table"] == table]
        return list(dict.fromkeys(c["row"] for c in tcells)), list(dict.fromkeys(c["column"] for c in tcells))

    lines = paper_lines(TEXT)
    labels = [line.split("\t")[0] for line in lines]
    assert order("cicam:1") == (labels[232:241], lines[231].split("\t")[1:])
    assert order("cicam:2") == (labels[257:265], lines[256].split("\t")[1:])
    assert order("cicam:3") == (T3_ROWS, lines[278].split("\t")[3:])
    assert order("cicam:4") == (labels[287:294], lines[286].split("\t")[1:])


def test_ablation_differences_stated_in_the_text():
    """Lines 275 and 296 state Table 3's row differences; the transcription must reproduce them."""
    stated = {("CUB", "Top-1 Cls(%)"): 1.13, ("CUB", "Top-1 Loc(%)"): 1.23, ("CUB", "Top-5 Cls(%)"): 0.18,
              ("CUB", "Top-5 Loc(%)"): 0.42, ("CUB", "GT-know Loc(%)"): 0.31,
              ("ILSVRC", "Top-1 Loc(%)"): 0.46, ("ILSVRC", "Top-5 Loc(%)"): 0.56, ("ILSVRC", "GT-know Loc(%)"): 0.54,
              ("ILSVRC", "Top-1 Cls(%)"): 0.02, ("ILSVRC", "Top-5 Cls(%)"): 0.03}
    lines = paper_lines(TEXT)
    for (ds, column), diff in stated.items():
        without, with_pool = T3_ROWS[:2] if ds == "CUB" else T3_ROWS[2:]
        assert round(value("cicam:3", with_pool, column) - value("cicam:3", without, column), 2) == diff
        assert f"{diff}%" in lines[274] + lines[295]


def test_the_same_configuration_agrees_across_tables():
    """CI-CAM (lambda = 0.01, both components) appears in Tables 1, 3 and 4 on CUB, and 2 and 3 on ILSVRC."""
    for column in ("Top-1 Cls(%)", "Top-1 Loc(%)"):
        assert value("cicam:1", "VGG-CI-CAM(ours)", column) == value("cicam:3", T3_ROWS[1], column) \
            == value("cicam:4", "0.01", column)
        assert value("cicam:2", "VGG-CI-CAM(ours)", column) == value("cicam:3", T3_ROWS[3], column)
    assert value("cicam:3", T3_ROWS[1], "GT-know Loc(%)") == value("cicam:4", "0.01", "GT-know Loc")


def test_bold_is_the_column_maximum():
    for table, groups in [("cicam:1", None), ("cicam:2", None), ("cicam:4", None),
                          ("cicam:3", (T3_ROWS[:2], T3_ROWS[2:]))]:
        tcells = [c for c in cells() if c["table"] == table]
        for rows in groups or ([c["row"] for c in tcells],):
            for column in {c["column"] for c in tcells}:
                col = [c for c in tcells if c["column"] == column and c["row"] in rows]
                top = max(float(c["value"]) for c in col)
                assert {c["row"] for c in col if "best" in c["flags"]} == \
                    {c["row"] for c in col if float(c["value"]) == top}, (table, column)
