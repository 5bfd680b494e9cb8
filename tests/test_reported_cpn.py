"""CPN Tables 1-5 and its text-stated figure values, in leaderboards/reported/cpn.csv, checked
against the paper text."""
import pytest

from _reported import cell, check_against_text, check_line_order, check_schema, paper_lines, read_cells, read_tables

PAPER, TEXT = "cpn", "004_82ede8bfee2a3087.txt"
TABLES = ["cpn:1", "cpn:2", "cpn:3", "cpn:4", "cpn:5", "cpn:fig-sn", "cpn:fig-k"]


def cells(table=None):
    return [c for c in read_cells(PAPER)[1] if table in (None, c["table"])]


def value(table, row, column):
    return float(cell(cells(), table, row, column)["value"])


def order(table):
    tcells = cells(table)
    return list(dict.fromkeys(c["row"] for c in tcells)), list(dict.fromkeys(c["column"] for c in tcells))


def test_schema():
    check_schema(PAPER)
    assert [t["id"] for t in read_tables(PAPER)] == TABLES


def test_every_cell_is_on_its_source_line():
    check_against_text(PAPER, TEXT)
    check_line_order(PAPER, TEXT)


@pytest.mark.parametrize("table, row, column, printed, line", [
    ("cpn:1", "baseline", "Image scale / 0.5", "41.15", 202),
    ("cpn:1", "SEAM*", "Image scale / 2.0", "50.55", 204),
    ("cpn:1", "CPN", "Image scale / all", "57.43", 205),
    ("cpn:2", "baseline + \\mathcal{L}_{tcp} + \\mathcal{L}_{cpcr}^* + PCM", "mIoU (%)", "56.58", 213),
    ("cpn:3", "f.", "SEAM", "54.06", 229),
    ("cpn:4", "mIoU(%)", "0.3", "56.29", 264),
    ("cpn:5", "*MCOF [34]", "Test", "61.2", 277),
    ("cpn:5", "†Conta [42]", "Val", "66.1", 289),
    ("cpn:5", "†Ours (w/ CRF)", "Test", "68.5", 293),
])
def test_table_cells(table, row, column, printed, line):
    c = cell(cells(), table, row, column)
    assert (c["value"], int(c["source_line"])) == (printed, line)
    header = read_tables(PAPER)[TABLES.index(table)]["header"]
    text = paper_lines(TEXT)[line - 1].split("\t")
    assert text[0].replace("<i>", "").replace("</i>", "") == row
    assert text[header.index(column)] == printed


def test_figure_values_stated_in_the_text():
    lines = paper_lines(TEXT)
    for table, row, printed, line, phrase in [
        ("cpn:fig-sn", "S_N = 200", "57.43", 235, "(57.43%) with $S_N = 200$"),
        ("cpn:fig-sn", "S_N = 8000", "55.79", 235, "(55.79%) with $S_N = 8000$"),
        ("cpn:fig-k", "K = {56, 112}", "57.07", 237, "(57.07%) with $K = \\{56, 112\\}$"),
        ("cpn:fig-k", "K = {4, 7}", "55.67", 237, "$K = \\{4, 7\\}$ and $K = \\{224, 448\\}$, respectively achieving 55.67%"),
        ("cpn:fig-k", "K = {224, 448}", "55.80", 237, "55.67% and 55.80% mIoU"),
    ]:
        c = cell(cells(), table, row, "mIoU (%)")
        assert (c["value"], int(c["source_line"])) == (printed, line)
        assert phrase in lines[line - 1]
    assert len(cells("cpn:fig-sn")) == 2 and len(cells("cpn:fig-k")) == 3
    for table in ("cpn:fig-sn", "cpn:fig-k"):
        assert "only values the text states" in read_tables(PAPER)[TABLES.index(table)]["caption"].lower()


def test_shape_and_order_follow_the_paper():
    lines = paper_lines(TEXT)
    labels = [line.split("\t")[0] for line in lines]
    scales = ["Image scale / " + s for s in lines[200].split("\t")[1:]]
    assert order("cpn:1") == (labels[201:205], scales)
    assert order("cpn:2") == (labels[209:214], ["mIoU (%)"])
    assert order("cpn:3") == (["bg.", "f."], ["baseline", "SEAM", "CPN"])
    assert order("cpn:4") == (["mIoU(%)"], lines[262].split("\t")[1:])
    assert order("cpn:5") == (labels[276:293], ["Val", "Test"])


def test_backbone_follows_the_table_5_markers():
    for c in cells("cpn:5"):
        assert c["backbone"] == {"*": "ResNet101", "†": "ResNet38"}[c["row"][0]]
        assert c["flags"] == ""  # the markers name backbones here, not re-implementations


def test_same_configuration_agrees_across_tables():
    """Tables 1-4 and the S_N = 200 figure value are one configuration (line 192)."""
    best = value("cpn:1", "CPN", "Image scale / all")
    assert best == value("cpn:2", "baseline + \\mathcal{L}_{tcp} + \\mathcal{L}_{cpcr}^* + PCM + PRCM", "mIoU (%)") \
        == value("cpn:4", "mIoU(%)", "0.5") == value("cpn:fig-sn", "S_N = 200", "mIoU (%)") == 57.43
    assert value("cpn:1", "baseline", "Image scale / all") == value("cpn:2", "baseline (\\mathcal{L}_{cls})", "mIoU (%)")


def test_table_3_averages_to_table_1():
    """mIoU over 21 classes = (bg + 20 f) / 21, up to the rounding of f to two decimals."""
    for method, row in [("baseline", "baseline"), ("SEAM", "SEAM [35]"), ("CPN", "CPN")]:
        miou = (value("cpn:3", "bg.", method) + 20 * value("cpn:3", "f.", method)) / 21
        assert abs(miou - value("cpn:1", row, "Image scale / all")) <= 0.005 + 20 * 0.005 / 21


def test_differences_stated_in_the_text():
    lines = paper_lines(TEXT)
    t2 = [float(c["value"]) for c in cells("cpn:2")]
    assert (round(t2[2] - t2[1], 2), round(t2[4] - t2[3], 2)) == (4.63, 0.85)
    assert "4.63% improvement" in lines[197] and "0.85% improvement" in lines[197]
    assert round(value("cpn:3", "bg.", "SEAM") - value("cpn:3", "bg.", "baseline"), 2) == 5.14
    assert round(value("cpn:3", "f.", "SEAM") - value("cpn:3", "f.", "baseline"), 2) == 7.68
    assert round(value("cpn:3", "f.", "CPN") - value("cpn:3", "f.", "baseline"), 2) == 9.75
    assert round(value("cpn:3", "f.", "CPN") - value("cpn:3", "f.", "SEAM"), 2) == 2.07
    assert all(f"{d}%" in lines[217] for d in ("5.14", "7.68", "56.13", "9.75", "2.07"))
