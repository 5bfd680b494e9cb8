"""The numbers the papers state in their text (reported/<paper>_text.csv) and the claims the check holds
against the tables: transcription against the paper texts, refs, rendering, and the claim rules."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from wsssbench.cli import app
from wsssbench.errors import UserError
from wsssbench.leaderboard import check, run_checks
from wsssbench.reported import (LEADERBOARD_DIR, PROSE_KINDS, Cell, ProseCell, load_prose, load_reported,
                                parse_ref, reported_dir)
from wsssbench.tables import load_text_tables

from _reported import paper_lines, printed_on

runner = CliRunner()
PROSE = load_prose()
TEXT_TABLES = {"conta:text": 32, "A:text": 6, "c2am:text": 20, "cicam:text": 36, "cpn:text": 35}


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "leaderboards"
    shutil.copytree(LEADERBOARD_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return root


# --- the transcription ----------------------------------------------------------------------------


def test_every_text_table_and_its_size():
    counts = {t: sum(p.table == t for p in PROSE) for t in TEXT_TABLES}
    assert counts == TEXT_TABLES
    assert {p.kind for p in PROSE} <= set(PROSE_KINDS)
    assert {p.source for p in PROSE if p.table == "A:text"} == {"000_926c1148dc5f3dd2.txt"}


def test_prose_files_are_not_table_cells():
    assert not any(c.table.endswith(":text") for c in load_reported())


@pytest.mark.parametrize("prose", PROSE, ids=lambda p: p.ref)
def test_every_number_is_printed_on_its_source_line(prose):
    line = paper_lines(prose.source)[prose.source_line - 1]
    assert printed_on(line, prose.value), line
    assert prose.says in line and printed_on(prose.says, prose.value), (prose.says, line)


@pytest.mark.parametrize("prose", [p for p in PROSE if p.refers_to], ids=lambda p: p.ref)
def test_refs_name_transcribed_table_cells(prose):
    cells = {(c.table, c.row_key, c.column): c for c in load_reported()}
    assert parse_ref(prose.refers_to) in cells


def test_pinned_numbers():
    by_ref = {p.ref: p for p in PROSE}
    pins = [("conta:text | block-5 gain on CAM | value", "1.1", 169, "conta:1 | (Q3) / Block-5 | CAM"),
            ("A:text | IRNet + CONTA pseudo-mask, called second best | value", "67.9", 271,
             "A1 | (A2) / Round = 3 | Pseudo-Mask"),
            ("c2am:text | VOC val images | value", "1,499", 147, ""),
            ("cicam:text | classification gain over the baseline (intro) | value", "2.16", 94,
             "cicam:1 | VGG-CI-CAM(ours) | Top-1 Cls(%)"),
            ("cpn:text | Super-pixel time | value", "1.45", 253, "")]
    for ref, value, line, refers_to in pins:
        p = by_ref[ref]
        assert (p.value, p.source_line, p.refers_to) == (value, line, refers_to)


def test_a_bad_prose_file_is_one_user_error(board):
    path = board / "reported" / "cpn_text.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",delta,", ",gain,", 1), encoding="utf-8")
    with pytest.raises(UserError, match="kind 'gain'"):
        load_prose(board)


def test_a_ref_to_no_cell_is_a_user_error(board):
    path = board / "reported" / "cpn_text.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("cpn:5 | †Ours (w/ CRF) | Val", "cpn:5 | Ours | Val"),
                    encoding="utf-8")
    with pytest.raises(UserError, match="names no transcribed table cell"):
        check(board)


# --- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "md", "rich", "latex"])
@pytest.mark.parametrize("table_id", list(TEXT_TABLES))
def test_text_tables_render(table_id, fmt):
    result = runner.invoke(app, ["table", table_id, "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(result.output)))
        assert rows[0][:7] == ["Statement", "Line", "Kind", "Value", "Unit", "Refers to", "Says"]
        assert len(rows) == 1 + TEXT_TABLES[table_id]
    if fmt == "json":
        obj = json.loads(result.output)
        assert obj["id"] == table_id and len(obj["rows"]) == TEXT_TABLES[table_id]
        assert all(r["cells"]["Value"]["source_line"] == int(r["cells"]["Line"]["value"]) for r in obj["rows"])


def test_conta_text_md_shows_the_claim_and_its_cell():
    out = runner.invoke(app, ["table", "conta:text", "--format", "md"]).output
    assert "| block-5 gain on CAM | 169 | delta | 1.1 | % mIoU | conta:1 \\| (Q3) / Block-5 \\| CAM |" in out


def test_list_names_the_text_tables():
    result = runner.invoke(app, ["table", "--list", "--format", "md"])
    ids = [line.split("\t")[0] for line in result.output.splitlines()]
    assert set(TEXT_TABLES) <= set(ids) and "conta:1" in ids
    assert set(load_text_tables()) == set(TEXT_TABLES)


# --- the claims -----------------------------------------------------------------------------------

CONTRADICTIONS = {"text-voc-val-images", "A-text-irnet-second-best", "c2am-text-outperforms-conta",
                  "cicam-text-intro-gain-cls", "cicam-text-intro-gain-loc", "cicam-text-sota-cub",
                  "cicam-text-ilsvrc-above-nlccam"}


def test_every_contradiction_is_found_and_explained():
    report = check()
    assert report.ok
    claims = {f.check for f in report.findings if "text" in f.check}
    assert claims == CONTRADICTIONS
    for kind in ("restated", "delta", "rank", "outperforms"):
        assert any(kind in r for r in yaml.safe_load((LEADERBOARD_DIR / "checks.yaml").read_text(encoding="utf-8")))


def test_json_lists_both_sides_sources():
    result = runner.invoke(app, ["leaderboard", "check", "--json"])
    assert result.exit_code == 0
    obj = json.loads(result.output)
    assert {"ok", "checks_run", "skipped", "findings", "stale", "records", "verified"} <= set(obj)
    assert obj["prose"] == TEXT_TABLES
    found = {f["check"]: f for f in obj["findings"]}
    second = found["A-text-irnet-second-best"]
    assert second["said"] == [{"paper": "conta", "source": "000_926c1148dc5f3dd2.txt", "line": 271}]
    assert [(c["source"], c["source_line"]) for c in second["cells"]] == [
        ("000_926c1148dc5f3dd2.txt", 271), ("000_926c1148dc5f3dd2.txt", 232), ("002_d39495ed1c525044.txt", 177)]
    c2am = found["c2am-text-outperforms-conta"]
    assert [s["line"] for s in c2am["said"]] == [17, 40, 179]
    assert all(c["source"] == "001_f9b338e56250a5cc.txt" for c in c2am["cells"])


def test_an_unexplained_contradiction_fails(board):
    path = board / "disagreements.yaml"
    entries = [d for d in yaml.safe_load(path.read_text(encoding="utf-8")) if d["check"] != "cicam-text-sota-cub"]
    path.write_text(yaml.safe_dump(entries, allow_unicode=True, sort_keys=False), encoding="utf-8")
    result = runner.invoke(app, ["leaderboard", "check", "--root", str(board)])
    assert result.exit_code == 1
    assert "DISAGREES cicam-text-sota-cub" in result.output


def test_a_wrong_stated_delta_fails(board):
    path = board / "reported" / "conta_text.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",block-5 gain on CAM,1.1,", ",block-5 gain on CAM,1.3,"),
                    encoding="utf-8")
    report = check(board)
    assert not report.ok
    assert {f.check for f in report.unexplained} >= {"conta-text-block5-gain-cam"}


def _cell(table, row, column, value, line=1):
    return Cell("p", table, row, column, value, source_line=line)


def _prose(row, value):
    return ProseCell("p", "p:text", row, value, "%", "delta", "p.txt", 7)


def test_delta_rank_and_outperforms_rules():
    cells = [_cell("t", "a", "x", "50.0"), _cell("t", "b", "x", "48.9"), _cell("t", "c", "x", "49.5")]
    prose = [_prose("gain", "1.1"), _prose("average gain", "0.8")]
    rules = [
        {"id": "d", "why": "", "delta": {"claim": "p:text | gain | value", "pairs": [["t | a | x", "t | b | x"]]}},
        {"id": "avg", "why": "", "delta": {"claim": "p:text | average gain | value",
                                            "pairs": [["t | a | x", "t | b | x"], ["t | a | x", "t | c | x"]]}},
        {"id": "first", "why": "", "rank": {"place": 1, "cell": {"table": "t", "row": "a", "columns": ["x"]},
                                             "among": "all"}},
        {"id": "second", "why": "", "rank": {"place": 2, "cell": {"table": "t", "row": "a", "columns": ["x"]},
                                              "among": [{"table": "t", "row": "b"}]}},
        {"id": "beats", "why": "", "outperforms": {"by": [{"table": "t", "row": "c", "columns": ["x"]}],
                                                   "over": [{"table": "t", "row": "a"}, {"table": "t", "row": "b"}]}},
    ]
    report = run_checks(cells, rules, [], prose)
    assert sorted(f.check for f in report.findings) == ["beats", "second"]   # 0.8 = mean(1.1, 0.5) passes
    assert report.findings[0].said == ()


def test_a_malformed_claim_rule_is_a_user_error(board):
    path = board / "checks.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n- id: broken\n  why: x\n  rank: {place: 0}\n",
                    encoding="utf-8")
    result = runner.invoke(app, ["leaderboard", "check", "--root", str(board)])
    assert result.exit_code == 2 and "'rank' needs place" in result.output
    assert reported_dir(board).is_dir()
