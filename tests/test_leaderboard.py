"""Consistency checks, rendering, reproduced numbers, and the `table` / `leaderboard` commands."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsssbench.cli import app
from wsssbench.leaderboard import check, load_rules, run_checks, verify_results
from wsssbench.records import RunRecord
from wsssbench.reported import LEADERBOARD_DIR, Cell, load_reported
from wsssbench.tables import FORMATS, load_tables, render, reproduce

runner = CliRunner()
TABLES = load_tables()


def _invoke(*args):
    return runner.invoke(app, list(args))


@pytest.fixture
def board(tmp_path) -> Path:
    """A private copy of the committed leaderboards/ folder, safe to alter."""
    root = tmp_path / "leaderboards"
    shutil.copytree(LEADERBOARD_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return root


def _alter(root: Path, paper: str, table: str, row: str, column: str, value: str, field: str = "value"):
    """Change one cell (``row`` is the row key: "group / label" for grouped rows) in a copy's CSV."""
    path = root / "reported" / f"{paper}.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    key = lambda r: f"{r['group']} / {r['row']}" if r.get("group") else r["row"]  # noqa: E731
    hits = [r for r in rows if (r["table"], key(r), r["column"]) == (table, row, column)]
    assert len(hits) == 1
    hits[0][field] = value
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- the check ------------------------------------------------------------------------------------


def test_check_passes_on_committed_data():
    report = check()
    assert report.ok, [f.message for f in report.unexplained] + report.stale + report.records
    assert "conta1-chosen-config" in report.checks_run and "conta2-superscripts" in report.checks_run
    result = _invoke("leaderboard", "check")
    assert result.exit_code == 0, result.output
    data = json.loads(_invoke("leaderboard", "check", "--json").output)
    assert data["ok"] and all(f["explained"] for f in data["findings"])


def test_altered_number_fails(board):
    _alter(board, "conta", "conta:1", "(Q3) / Block-5", "CAM", "56.3")
    result = _invoke("leaderboard", "check", "--root", str(board))
    assert result.exit_code == 1
    assert "conta1-chosen-config" in result.output and "56.3" in result.output


def test_altered_number_across_papers_fails(board):
    _alter(board, "conta", "A5", "(A2) / Round = 3", "Seg. Mask", "33.5")   # Table 3(b) prints 33.4
    report = check(board)
    assert not report.ok
    assert {f.check for f in report.unexplained} >= {"A5-chosen-config", "conta3-coco-irnet-conta-vs-A5"}


def test_altered_superscript_fails(board):
    _alter(board, "conta", "conta:2", "SEC [23] / + CONTA", "CAM", "+1.5", field="delta")
    report = check(board)
    assert [f.check for f in report.unexplained] == ["conta2-superscripts"]
    assert "+1.4" in report.unexplained[0].message


def test_explained_disagreement_goes_stale_when_the_value_changes(board):
    _alter(board, "conta", "conta:3", "(a) PASCAL VOC 2012 [12]. / SEAM [57]", "val", "64.6")
    report = check(board)
    assert {f.check for f in report.unexplained} >= {"conta3-voc-seam-vs-conta2"}
    if "cpn:5" in TABLES:       # CPN Table 5 re-prints SEAM's 64.5 too
        assert {f.check for f in report.unexplained} == {"conta3-voc-seam-vs-conta2", "cpn5-seam-vs-conta3"}
    assert len(report.stale) == 1 and "conta3-voc-seam-vs-conta2" in report.stale[0]


def test_rule_naming_a_missing_row_is_a_user_error(board):
    text = (board / "checks.yaml").read_text(encoding="utf-8")
    (board / "checks.yaml").write_text(text.replace('row: "(Q3) / Block-5"', 'row: "(Q3) / Block-6"'),
                                       encoding="utf-8")
    result = _invoke("leaderboard", "check", "--root", str(board))
    assert result.exit_code == 2 and "Block-6" in result.output


def test_rules_for_untranscribed_tables_are_skipped():
    cells = [c for c in load_reported() if c.paper == "conta"]
    report = run_checks(cells, load_rules(), [])
    assert any(s.startswith("cpn5-conta-vs-conta3") for s in report.skipped)


def test_equal_rule_compares_at_the_coarser_precision():
    cells = [Cell("p", "t", "a", "x", "57.43"), Cell("p", "t", "b", "x", "57.4"), Cell("p", "t", "c", "x", "57.5")]
    rule = {"id": "r", "why": "w", "equal": [{"table": "t", "row": "a", "columns": ["x"]}, {"table": "t", "row": "b"}]}
    assert run_checks(cells, [rule], []).ok
    rule["equal"][1]["row"] = "c"
    assert not run_checks(cells, [rule], []).ok


def test_committed_records_are_validated(board):
    bad = {"method": "cam", "dataset": "synthetic", "metrics": {"seed_miou": 50.0}}
    (board / "reproduced" / "bad.json").write_text(json.dumps(bad))
    result = _invoke("leaderboard", "check", "--root", str(board))
    assert result.exit_code == 1 and "bad.json" in result.output and "code_version" in result.output


# --- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table_id", list(TABLES))
def test_every_table_renders_in_every_format(table_id, fmt):
    result = _invoke("table", table_id, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    if fmt == "json":
        assert json.loads(result.output)["id"] == table_id


def test_csv_is_header_then_one_row_per_table_row():
    table = TABLES["conta:2"]
    rows = list(csv.reader(io.StringIO(render(table, "csv"))))
    """The group first as the paper prints it (and on every row), values as printed, each printed
    superscript in a column of its own, and the bold columns."""
    assert rows[0] == ["Baseline", "Method", "Backbone", "CAM", "CAM superscript", "Pseudo-Mask",
                       "Pseudo-Mask superscript", "Seg. Mask", "Seg. Mask superscript", "best"]
    assert len(rows) == 1 + len(table.rows)
    assert rows[2] == ["SEC [23]", "+ CONTA", "VGG-16", "47.9", "+1.4", "55.7", "+2.3", "53.2", "+2.5", ""]
    assert rows[1][4] == "" and rows[1][0] == "SEC [23]"
    md = render(table, "md").splitlines()
    assert "| SEC [23] | SEC [23] | VGG-16 |" in md[4] and md[5].startswith("|  | + CONTA |")   # group once


def test_bold_where_the_paper_prints_bold():
    """cicam:3's "TwoC + ConPool" rows are bold in the paper (flag ``best``): bold in every format that has it,
    the values unchanged and a ``best`` column in CSV."""
    table = TABLES["cicam:3"]
    md = render(table, "md")
    assert "| **75.56** | **92.03** | **58.39** | **70.54** | **75.68** |" in md and "| 74.43 |" in md
    assert r"\textbf{75.56} & \textbf{92.03}" in render(table, "latex")
    rows = {r["Dataset"]: r for r in csv.DictReader(io.StringIO(render(table, "csv")))}
    best = rows["CUB-200-2011 test set: TwoC + ConPool"]
    assert best["Top-1 Cls(%)"] == "75.56" and best["best"].split(";")[0] == "Top-1 Cls(%)"
    assert rows["CUB-200-2011 test set: TwoC"]["best"] == ""
    from rich.console import Console
    console = Console(record=True, width=200, force_terminal=True)
    console.print(render(table, "rich"))
    assert re.search(r"\x1b\[1m +75\.56", console.export_text(styles=True))


def test_latex_captions_say_what_the_paper_says():
    """CI-CAM's "* indicates our re-implemented results": a star, not the text extraction's escaped one."""
    tex = render(TABLES["cicam:1"], "latex")
    assert r"\caption{Performance on the CUB-200-2011 test set. * indicates" in tex and "textbackslash" not in tex


def test_superscripts_and_latex():
    table = TABLES["conta:2"]
    assert "47.9<sup>+1.4</sup>" in render(table, "md")
    tex = render(table, "latex")
    assert r"47.9$^{+1.4}$" in tex and r"\begin{tabular}" in tex and "SEAM* [57]" in tex


def test_list():
    result = _invoke("table", "--list", "--format", "md")
    assert result.exit_code == 0
    ids = [line.split("\t")[0] for line in result.output.splitlines()]
    assert {"conta:1", "A7", "c2am:1", "cicam:4", "cpn:5"} <= set(ids)


def test_unknown_table_and_format():
    assert _invoke("table", "conta:9").exit_code == 2
    assert _invoke("table", "A1", "--format", "html").exit_code == 2


# --- reproduced numbers ---------------------------------------------------------------------------


def _record(method, seed, metrics, dataset="synthetic", **config):
    return RunRecord(method=method, dataset=dataset, dataset_preset="tiny" if dataset == "synthetic" else None,
                     config={"backbone": "small", **config}, seed=seed, metrics=metrics,
                     protocols={k: "irn" for k in metrics}, pretrained=None, code_version="test")


def test_runs_render_mean_std_and_delta(tmp_path):
    _record("seam", 0, {"seed_miou": 50.0, "pseudo_miou": 60.0}, "voc").write(tmp_path / "a" / "seam0.json")
    _record("seam", 1, {"seed_miou": 52.0, "pseudo_miou": 61.0}, "voc").write(tmp_path / "a" / "seam1.json")
    _record("conta", 0, {"seed_miou": 57.0}, "voc", base="seam", rounds=3).write(tmp_path / "conta3.json")
    _record("conta", 0, {"seed_miou": 1.0}, "voc", base="seam", rounds=2).write(tmp_path / "conta2.json")
    result = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {(r["Method"], r["Baseline"]): r for r in csv.DictReader(io.StringIO(result.output))}
    seam = rows[("SEAM* [57]", "SEAM* [57]")]
    assert seam["CAM (ours)"] == "51.0 ± 1.4 (n=2)" and seam["Δ CAM"] == "-4.1 †"     # 55.1 in 51.0 ± 12.7
    assert rows[("+ CONTA", "SEAM* [57]")]["CAM (ours)"] == "57.0"           # the rounds=2 run is not this row
    assert rows[("+ CONTA", "SEAM* [57]")]["Δ CAM"] == "+0.8"
    assert rows[("SEC [23]", "SEC [23]")]["CAM (ours)"] == ""
    md = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "md").output
    assert "on voc;" in md and "seed_miou=irn" in md and "random" in md and "†: the printed number" in md


def test_runs_on_another_dataset_show_no_delta(tmp_path):
    """A synthetic run beside the paper's VOC number: its value in the ours column, no Δ, a note saying why."""
    _record("seam", 0, {"seed_miou": 50.0}).write(tmp_path / "seam0.json")
    result = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert "CAM (ours)" in rows[0] and not any(k.startswith("Δ") for k in rows[0])
    assert {(r["Method"], r["Baseline"]): r for r in rows}[("SEAM* [57]", "SEAM* [57]")]["CAM (ours)"] == "50.0"
    md = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "md").output
    assert "no Δ: ours ran on synthetic/tiny, the paper's numbers on" in md
    out = json.loads(_invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "json").output)
    cell = next(r for r in out["rows"] if r["key"] == "SEAM* [57] / SEAM* [57]")["cells"]["CAM"]["reproduced"]
    assert cell["mean"] == 50.0 and cell["delta"] is None and out["reproduced"]["comparable"] is False


def test_a_delta_the_seeds_resolve_is_not_marked(tmp_path):
    for seed, value in enumerate((50.0, 50.1, 49.9)):          # 95% t interval 50.0 ± 0.25, printed 55.1
        _record("seam", seed, {"seed_miou": value}, "voc").write(tmp_path / f"seam{seed}.json")
    result = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "csv")
    seam = {(r["Method"], r["Baseline"]): r for r in csv.DictReader(io.StringIO(result.output))}[("SEAM* [57]", "SEAM* [57]")]
    assert seam["Δ CAM"] == "-5.1"
    out = json.loads(_invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "json").output)
    cell = next(r for r in out["rows"] if r["key"] == "SEAM* [57] / SEAM* [57]")["cells"]["CAM"]["reproduced"]
    assert cell["delta_resolved"] is True and cell["n"] == 3 and out["reproduced"]["comparable"] is True
    assert not any("†" in note for note in out["notes"])


def test_runs_without_provenance_are_rejected(tmp_path):
    rec = _record("seam", 0, {"seed_miou": 50.0}).to_dict()
    del rec["code_version"]
    (tmp_path / "r.json").write_text(json.dumps(rec))
    result = _invoke("table", "conta:1", "--runs", str(tmp_path))
    assert result.exit_code == 2 and "r.json" in result.output and "code_version" in result.output


def test_runs_on_several_datasets_need_a_choice(tmp_path):
    _record("seam", 0, {"seed_miou": 50.0}).write(tmp_path / "a.json")
    _record("seam", 0, {"seed_miou": 54.0}, dataset="voc").write(tmp_path / "b.json")
    assert _invoke("table", "conta:1", "--runs", str(tmp_path)).exit_code == 2
    result = _invoke("table", "conta:1", "--runs", str(tmp_path), "--dataset", "voc", "-f", "json")
    row = next(r for r in json.loads(result.output)["rows"] if r["label"] == "Baseline* [57]")
    assert row["cells"]["CAM"]["reproduced"]["mean"] == 54.0


def test_verify_results_uses_the_stated_tolerance():
    base = TABLES["conta:1"]
    rows = tuple(replace(r, tolerance=0.5) if r.key == "Baseline* [57]" else r for r in base.rows)
    table = replace(base, rows=rows)
    records = [_record("seam", s, {"seed_miou": v}, dataset="voc").to_dict() for s, v in ((0, 55.0), (1, 55.4))]
    (ok,) = verify_results(table, records)
    assert ok.ok and ok.n == 2 and ok.reported == 55.1
    records.append(_record("seam", 2, {"seed_miou": 50.0}, dataset="voc").to_dict())
    (bad,) = verify_results(table, records)
    assert not bad.ok and "FAILED" in str(bad)
    synthetic = [_record("seam", 0, {"seed_miou": 10.0}).to_dict()]
    assert verify_results(table, synthetic) == []     # a synthetic run says nothing about VOC


def test_reproduce_collects_protocols():
    table = TABLES["A1"]
    recs = [_record("irnet", 0, {"seg_miou": 60.0}).to_dict()]
    rep = reproduce(table, recs)
    assert rep.summary("Baseline∗ [1]", "seg_miou") == (60.0, 0.0, 1)
    assert rep.protocols == {"seg_miou": ["irn"]}


def test_tables_and_checks_do_not_import_each_other():
    """Both build on wsssbench.reported; the tables never load the checks (a fresh interpreter, so
    other tests' imports cannot hide one)."""
    import subprocess
    import sys

    code = ("import sys, wsssbench.reported; assert 'wsssbench.tables' not in sys.modules; "
            "import wsssbench.tables; assert 'wsssbench.leaderboard' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_calls_the_harness_for_each_runnable_row_and_seed(tmp_path, monkeypatch):
    """--run against the harness contract (run_method(...) -> RunRecord), with stand-in modules."""
    import sys
    import types

    from wsssbench.registry import Registry

    methods = Registry("method")
    methods.add("seam", object())
    calls = []

    def run_method(method, *, dataset, overrides, seed, out, device, progress):
        calls.append((method, dataset, overrides, seed, device))
        record = _record(method, seed, {"seed_miou": 50.0 + seed}, **overrides)
        record.write(Path(out) / f"{method}-{seed}.json")
        return record

    monkeypatch.setitem(sys.modules, "wsssbench.methods_api",
                        types.SimpleNamespace(METHODS=methods, make_config=lambda method, overrides=None: None))
    monkeypatch.setitem(sys.modules, "wsssbench.harness", types.SimpleNamespace(run_method=run_method))
    result = _invoke("table", "conta:1", "--run", "--dataset", "synthetic", "--seeds", "0,1",
                     "--runs", str(tmp_path), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert calls == [("seam", "synthetic", {}, 0, "cpu"), ("seam", "synthetic", {}, 1, "cpu")]
    rows = {r["Setting"]: r for r in csv.DictReader(io.StringIO(result.output))}
    assert rows["Baseline* [57]"]["CAM (ours)"] == "50.5 ± 0.7 (n=2)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seam-0.json", "seam-1.json"]


def test_committed_records_are_verified_against_stated_tolerances(board):
    recipes = (board / "reproduce.yaml").read_text(encoding="utf-8")
    (board / "reproduce.yaml").write_text(recipes.replace("    Baseline* [57]: {method: seam}\n",
                                                          "    Baseline* [57]: {method: seam, tolerance: 1.0}\n", 1),
                                          encoding="utf-8")
    _record("seam", 0, {"seed_miou": 54.6}, dataset="voc").write(board / "reproduced" / "seam-voc.json")
    report = check(board)
    assert report.ok and [v.ok for v in report.verified] == [True]
    _record("seam", 1, {"seed_miou": 50.0}, dataset="voc").write(board / "reproduced" / "seam-voc-1.json")
    result = _invoke("leaderboard", "check", "--root", str(board))
    assert result.exit_code == 1 and "FAILED: conta:1 | Baseline* [57] | CAM" in result.output


def test_records_scored_with_different_protocols_are_not_averaged(tmp_path):
    a = _record("seam", 0, {"seed_miou": 50.0})
    b = _record("seam", 1, {"seed_miou": 52.0})
    b.protocols = {"seed_miou": "seam"}
    a.write(tmp_path / "a.json")
    b.write(tmp_path / "b.json")
    result = _invoke("table", "conta:1", "--runs", str(tmp_path))
    assert result.exit_code == 2 and "irn, seam" in result.output


@pytest.mark.parametrize("table_id", ["cicam:3", "cicam:1", "conta:2", "A1"])
def test_rich_fits_an_80_column_terminal_by_wrapping(table_id):
    """No line wider than the terminal, and every printed value still there (wrapped, never cut)."""
    from rich.console import Console
    table = TABLES[table_id]
    console = Console(record=True, width=80)
    console.print(render(table, "rich"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = re.sub(r"[\s│┃]", "", text)
    for (_, column), cell in table.cells.items():
        if cell.number is not None:
            assert cell.value in flat, (column, cell.value)
    # the label column too (text columns used to be squeezed to nothing): its fragments, line by line
    at = 1 + table.grouped
    labels = re.sub(r"\s", "", "".join(line.split("│")[at] for line in text.splitlines() if line.startswith("│")))
    for spec in table.rows:
        assert re.sub(r"\s", "", spec.label) in labels, spec.label


def test_a_row_never_averages_records_of_different_settings(tmp_path):
    # a folder with a default seam run (2 seeds) and an expansion=psa one: the row without overrides reads the
    # default-configured records only (before, all three were averaged as n=3)
    from dataclasses import asdict

    from wsssbench.methods_api import METHODS, make_config
    default = asdict(make_config(METHODS.get("seam")))
    for seed, value in ((0, 50.0), (1, 52.0)):
        _record("seam", seed, {"seed_miou": value}, **default).write(tmp_path / f"seam{seed}.json")
    _record("seam", 0, {"seed_miou": 10.0}, **{**default, "expansion": "psa"}).write(tmp_path / "psa.json")
    result = _invoke("table", "conta:2", "--runs", str(tmp_path), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {(r["Method"], r["Baseline"]): r for r in csv.DictReader(io.StringIO(result.output))}
    assert rows[("SEAM* [57]", "SEAM* [57]")]["CAM (ours)"] == "51.0 ± 1.4 (n=2)"
