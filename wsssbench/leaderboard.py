"""Reported numbers: checking them against each other, and verifying reproduced ones.

The reported numbers are data (``leaderboards/reported/<paper>.csv``, one row per printed cell; the
numbers each paper states in its text, ``<paper>_text.csv``, join them as cells of the tables
``conta:text``, ``A:text``, …, so that a rule can hold a claim against a table). The
consistency checks are data too (``leaderboards/checks.yaml``): each rule says which cells must agree,
within a paper or across papers. A disagreement passes only when ``leaderboards/disagreements.yaml``
lists it (same rule, same cells, same printed values) with an explanation; an entry that no longer
matches anything is stale and fails too, so that file stays reviewed.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .reported import (Cell, ProseCell, board_dir, decimals, load_prose, load_reported, load_yaml,
                       parse_number, parse_ref)
from .tables import load_tables


# ---------------------------------------------------------------------------------------------
# Consistency checks


@dataclass(frozen=True)
class Finding:
    """Cells a rule says must agree, and do not."""

    check: str
    cells: tuple[Cell, ...]
    message: str
    explanation: str | None = None     # from disagreements.yaml; None = unexplained
    said: tuple[tuple[str, str, int], ...] = ()   # (paper, text file, line) of each sentence making the claim

    @property
    def signature(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.ref, c.value) for c in self.cells)

    def to_dict(self, sources: dict[str, str] | None = None) -> dict[str, Any]:
        """``sources``: table id → the paper text file it was printed in (each cell's ``source``)."""
        sources = sources or {}
        return {"check": self.check, "message": self.message, "explained": self.explanation is not None,
                "explanation": self.explanation,
                "cells": [{"ref": c.ref, "value": c.value, "source_line": c.source_line,
                           "paper": c.paper, "source": sources.get(c.table)} for c in self.cells],
                "said": [{"paper": p, "source": f, "line": n} for p, f, n in self.said]}


@dataclass
class CheckReport:
    checks_run: list[str]
    skipped: list[str]            # rules naming a table nobody has transcribed yet
    findings: list[Finding]       # explained and unexplained disagreements
    stale: list[str]              # disagreements.yaml entries matching no finding
    records: list[str] = field(default_factory=list)              # committed run records without provenance
    verified: list["Verification"] = field(default_factory=list)  # committed records vs reported, by tolerance
    sources: dict[str, str] = field(default_factory=dict)         # table id -> paper text file
    prose: dict[str, int] = field(default_factory=dict)           # text table id -> numbers transcribed

    @property
    def unexplained(self) -> list[Finding]:
        return [f for f in self.findings if f.explanation is None]

    @property
    def ok(self) -> bool:
        return not self.unexplained and not self.stale and not self.records and all(v.ok for v in self.verified)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks_run": self.checks_run, "skipped": self.skipped,
                "findings": [f.to_dict(self.sources) for f in self.findings], "stale": self.stale,
                "records": self.records, "verified": [{**asdict(v), "ok": v.ok} for v in self.verified],
                "prose": self.prose}


def agrees(a: Cell, b: Cell) -> bool:
    """Two printed values agree when equal at the coarser of their two printed precisions.

    >>> agrees(Cell("p", "t", "r", "c", "57.43"), Cell("p", "t", "r", "c", "57.4"))
    True
    >>> agrees(Cell("p", "t", "r", "c", "64.5"), Cell("p", "t", "r", "c", "64.3"))
    False
    """
    x, y = a.number, b.number
    if x is None or y is None:
        return (x is None) == (y is None) and a.value.strip() == b.value.strip()
    places = min(decimals(a.value), decimals(b.value))
    return abs(x - y) <= 0.5 * 10 ** -places + 1e-9


class _Index:
    """Cells by (table, row key, column), with the error a mistyped rule deserves."""

    def __init__(self, cells: Iterable[Cell]):
        self.cells = {(c.table, c.row_key, c.column): c for c in cells}
        self.tables = {c.table for c in self.cells.values()}
        self.prose: dict[str, list[ProseCell]] = {}       # text table id -> its numbers

    def get(self, table: str, row: str, column: str, rule: str) -> Cell:
        try:
            return self.cells[(table, row, column)]
        except KeyError:
            rows = sorted({k[1] for k in self.cells if k[0] == table})
            raise UserError(f"checks.yaml rule {rule!r}: no cell {table} | {row} | {column}; "
                            f"rows of {table}: {rows}") from None

    def ref(self, ref: str, rule: str) -> Cell:
        return self.get(*parse_ref(ref, f"checks.yaml rule {rule!r}"), rule)

    def column(self, table: str, column: str) -> list[Cell]:
        """Every numeric cell of one column of a table, in row order."""
        return [c for (t, _, col), c in self.cells.items() if t == table and col == column and c.number is not None]


def _check_equal(rule: dict, index: _Index) -> list[Finding]:
    """``equal``: every side's cells (positionally, column by column) print the same value."""
    sides = rule["equal"]
    columns0 = sides[0]["columns"]
    out = []
    for i in range(len(columns0)):
        cells = [index.get(s["table"], s["row"], s.get("columns", columns0)[i], rule["id"]) for s in sides]
        if not all(agrees(cells[0], c) for c in cells[1:]):
            values = ", ".join(f"{c.ref} = {c.value}" for c in cells)
            out.append(Finding(rule["id"], tuple(cells), f"should agree: {values}"))
    return out


def _check_superscripts(rule: dict, index: _Index) -> list[Finding]:
    """``superscripts``: each printed ``+x`` equals the cell minus the same column of its group's first row."""
    table = rule["superscripts"]
    first_row: dict[str, str] = {}
    out = []
    for (tab, row_key, column), cell in index.cells.items():
        if tab != table:
            continue
        first_row.setdefault(cell.group, row_key)
        if not cell.delta:
            continue
        base = index.get(table, first_row[cell.group], column, rule["id"])
        stated = parse_number(cell.delta)
        if stated is None or cell.number is None or base.number is None:
            out.append(Finding(rule["id"], (cell, base), f"{cell.ref}: superscript {cell.delta!r} "
                                                         f"cannot be compared with {base.ref} = {base.value}"))
            continue
        places = max(decimals(cell.value), decimals(base.value), decimals(cell.delta))
        actual = round(cell.number - base.number, places)
        if abs(actual - stated) > 1e-9:
            out.append(Finding(rule["id"], (cell, base),
                               f"{cell.ref} = {cell.value} prints {cell.delta} over {base.ref} = {base.value}, "
                               f"the difference is {actual:+.{places}f}"))
    return out


# --- claims: a number or a sentence of a paper's text held against the tables it is about


def _claims(rule: dict, index: _Index, n: int) -> list[tuple[Cell, ...]]:
    """The prose cell(s) stating a rule's claim, one tuple per checked column: ``claim`` is one ref (the
    same for every column) or a list with one ref per column; none when the rule names no claim."""
    claim = rule[_kind(rule)].get("claim")
    if not claim:
        return [()] * n
    refs = claim if isinstance(claim, list) else [claim] * n
    return [(index.ref(r, rule["id"]),) for r in refs]


def _side_cells(side: dict, columns: list[str], index: _Index, rule: str) -> list[Cell]:
    return [index.get(side["table"], side["row"], c, rule) for c in side.get("columns", columns)]


def _close(actual: float, stated: Cell) -> bool:
    """A stated number agrees with a computed one when they round alike at the stated precision."""
    return abs(actual - stated.number) <= 0.5 * 10 ** -decimals(stated.value.lstrip("+-")) + 1e-9


def _check_restated(rule: dict, index: _Index) -> list[Finding]:
    """``restated``: each number of a text table that restates a table cell (kind result or figure value,
    with ``refers_to``) prints the same value as that cell."""
    out = []
    for prose in index.prose.get(rule["restated"], []):
        if prose.kind not in ("result", "figure value") or not prose.refers_to:
            continue
        said, cell = index.ref(prose.ref, rule["id"]), index.ref(prose.refers_to, rule["id"])
        if not agrees(said, cell):
            out.append(Finding(rule["id"], (said, cell),
                               f"the text says {said.value} (line {said.source_line}), {cell.ref} prints {cell.value}"))
    return out


def _check_delta(rule: dict, index: _Index) -> list[Finding]:
    """``delta``: a stated difference equals the mean of ``pairs`` (each ``[minuend, subtrahend]`` refs) at
    the stated precision: one pair for "improves by x", several for "x on average"."""
    spec = rule["delta"]
    claim = index.ref(spec["claim"], rule["id"])
    pairs = [(index.ref(a, rule["id"]), index.ref(b, rule["id"])) for a, b in spec["pairs"]]
    if claim.number is None or any(a.number is None or b.number is None for a, b in pairs):
        return [Finding(rule["id"], (claim, *[c for p in pairs for c in p]), f"{claim.ref}: not all numbers")]
    actual = statistics.fmean(a.number - b.number for a, b in pairs)
    if _close(actual, claim):
        return []
    terms = "; ".join(f"{a.value} - {b.value}" for a, b in pairs)
    what = "mean of " if len(pairs) > 1 else ""
    return [Finding(rule["id"], (claim, *[c for p in pairs for c in p]),
                    f"the text states {claim.value} (line {claim.source_line}), the tables give {what}{terms} "
                    f"= {actual:+.2f}")]


def _among(spec: dict, subject: Cell, column: str, index: _Index, rule: str) -> list[Cell]:
    """The competitors of one subject cell: every other numeric cell of its table's column (``among: all``)
    or the ``among`` sides' cells of that column."""
    among = spec["among"]
    if among == "all":
        return [c for c in index.column(subject.table, subject.column) if c is not subject]
    position = spec["cell"]["columns"].index(column)
    return [c for c in (_side_cells(s, spec["cell"]["columns"], index, rule)[position] for s in among)
            if c.number is not None]


def _check_rank(rule: dict, index: _Index) -> list[Finding]:
    """``rank``: the cell is the ``place``-th highest (1 = best, 2 = second best) among its competitors, in
    each of its columns; ties count in its favour."""
    spec = rule["rank"]
    columns = spec["cell"]["columns"]
    subjects = _side_cells(spec["cell"], columns, index, rule["id"])
    out = []
    for claim, column, subject in zip(_claims(rule, index, len(columns)), columns, subjects):
        rivals = sorted(_among(spec, subject, column, index, rule["id"]), key=lambda c: -c.number)
        above = [c for c in rivals if c.number > subject.number]
        place = len(above) + 1
        if place != spec["place"]:
            shown = tuple(above) or tuple(rivals[:1])
            out.append(Finding(rule["id"], (*claim, subject, *shown),
                               f"{subject.ref} = {subject.value} is said to rank {spec['place']} and ranks {place}: "
                               + ", ".join(f"{c.ref} = {c.value}" for c in shown)))
    return out


def _check_outperforms(rule: dict, index: _Index) -> list[Finding]:
    """``outperforms``: every ``by`` side prints a strictly higher number than every ``over`` side, column
    by column (``columns`` of the first ``by`` side, unless a side names its own)."""
    spec = rule["outperforms"]
    columns = spec["by"][0]["columns"]
    claims = _claims(rule, index, len(columns))
    out = []
    for winner in spec["by"]:
        for loser in spec["over"]:
            pairs = zip(_side_cells(winner, columns, index, rule["id"]), _side_cells(loser, columns, index, rule["id"]))
            for claim, (w, l) in zip(claims, pairs):
                if w.number is None or l.number is None or w.number <= l.number:
                    out.append(Finding(rule["id"], (*claim, w, l),
                                       f"{w.ref} = {w.value} is said to outperform {l.ref} = {l.value}"))
    return out


_KINDS = {"equal": _check_equal, "superscripts": _check_superscripts, "restated": _check_restated,
          "delta": _check_delta, "rank": _check_rank, "outperforms": _check_outperforms}


def _kind(rule: dict) -> str:
    return next(k for k in _KINDS if k in rule)


def _tables_of(rule: dict) -> set[str]:
    """Every table a rule reads, its text table (``text``) included: a rule naming one that is not
    transcribed is skipped."""
    return _spec_tables(rule) | ({rule["text"]["table"]} if rule.get("text") else set())


def _spec_tables(rule: dict) -> set[str]:
    kind = _kind(rule)
    spec = rule[kind]
    if kind == "equal":
        return {s["table"] for s in spec}
    if kind in ("superscripts", "restated"):
        return {spec}
    refs = [spec["claim"]] if isinstance(spec.get("claim"), str) else list(spec.get("claim") or [])
    if kind == "delta":
        refs += [r for pair in spec["pairs"] for r in pair]
    sides = [spec["cell"], *(spec["among"] if isinstance(spec.get("among"), list) else [])] if kind == "rank" \
        else [*spec.get("by", []), *spec.get("over", [])]
    return {r.split(" | ")[0].strip() for r in refs} | {s["table"] for s in sides}


def _validate_rule(rule: Any, path: Path) -> None:
    if not isinstance(rule, dict) or "id" not in rule or "why" not in rule:
        raise UserError(f"{path}: every rule needs an 'id' and a 'why' (got {rule!r})")
    kinds = [k for k in _KINDS if k in rule]
    if len(kinds) != 1:
        raise UserError(f"{path}: rule {rule['id']!r} needs exactly one of {sorted(_KINDS)}")
    problem = _RULE_SHAPES[kinds[0]](rule[kinds[0]])
    text = rule.get("text")
    if text is not None and not (isinstance(text, dict) and isinstance(text.get("table"), str)
                                 and isinstance(text.get("lines"), list)
                                 and all(isinstance(n, int) for n in text["lines"])):
        problem = "'text' needs {table: <paper>:text, lines: [line numbers]}"
    if problem:
        raise UserError(f"{path}: rule {rule['id']!r}: {problem}")


def _sides_ok(sides: Any) -> bool:
    return (isinstance(sides, list) and bool(sides) and all(isinstance(s, dict) and {"table", "row"} <= set(s)
                                                             for s in sides) and "columns" in sides[0]
            and all(len(s.get("columns", sides[0]["columns"])) == len(sides[0]["columns"]) for s in sides))


def _shape_equal(spec: Any) -> str:
    return "" if _sides_ok(spec) and len(spec) >= 2 else (
        "'equal' needs two or more sides {table, row, columns}, the first naming the columns, all the same length")


def _shape_delta(spec: Any) -> str:
    ok = (isinstance(spec, dict) and isinstance(spec.get("claim"), str) and isinstance(spec.get("pairs"), list)
          and spec["pairs"] and all(isinstance(p, list) and len(p) == 2 for p in spec["pairs"]))
    return "" if ok else "'delta' needs a claim (ref) and pairs: a list of [minuend ref, subtrahend ref]"


def _shape_rank(spec: Any) -> str:
    ok = (isinstance(spec, dict) and isinstance(spec.get("place"), int) and spec["place"] >= 1
          and _sides_ok([spec.get("cell")]) and (spec.get("among") == "all" or _sides_ok(
              [{**s, "columns": s.get("columns", spec["cell"]["columns"])} for s in spec.get("among") or []])))
    return "" if ok else "'rank' needs place (1 = best), cell {table, row, columns} and among ('all' or sides)"


def _shape_outperforms(spec: Any) -> str:
    ok = isinstance(spec, dict) and _sides_ok(spec.get("by")) and isinstance(spec.get("over"), list) and \
        _sides_ok([{**s, "columns": s.get("columns", spec["by"][0]["columns"])} for s in spec["over"]])
    return "" if ok else "'outperforms' needs by and over: sides {table, row, columns}, the first naming the columns"


_RULE_SHAPES = {"equal": _shape_equal, "superscripts": lambda s: "" if isinstance(s, str) else "needs a table id",
                "restated": lambda s: "" if isinstance(s, str) and s.endswith(":text") else "needs a text table id",
                "delta": _shape_delta, "rank": _shape_rank, "outperforms": _shape_outperforms}


def run_checks(cells: list[Cell], rules: list[dict], disagreements: list[dict],
               prose: list[ProseCell] = ()) -> CheckReport:
    """Apply every rule to the cells (and the numbers stated in the text), then explain what disagrees
    from the reviewed list."""
    index = _Index([*cells, *(p.as_cell() for p in prose)])
    for p in prose:
        index.prose.setdefault(p.table, []).append(p)
        if p.refers_to and parse_ref(p.refers_to) not in index.cells:
            raise UserError(f"{p.table} row {p.row!r} (line {p.source_line}): refers_to {p.refers_to!r} names no "
                            "transcribed table cell")
    findings: list[Finding] = []
    run, skipped = [], []
    for rule in rules:
        absent = sorted(_tables_of(rule) - index.tables)
        if absent:
            skipped.append(f"{rule['id']}: table(s) {', '.join(absent)} not transcribed")
            continue
        run.append(rule["id"])
        said = _said(rule, index)
        findings.extend(replace(f, said=_claim_lines(f, said, index)) for f in _KINDS[_kind(rule)](rule, index))
    explained = []
    used: set[int] = set()
    for finding in findings:
        match = next((i for i, d in enumerate(disagreements)
                      if d["check"] == finding.check
                      and frozenset((c["ref"], str(c["value"])) for c in d["cells"]) == finding.signature), None)
        if match is None:
            explained.append(finding)
        else:
            used.add(match)
            d = disagreements[match]
            explained.append(replace(finding, explanation=f"{d['cause']}: {d['explanation']}"))
    stale = [f"disagreements.yaml entry {i + 1} ({d['check']}): matches no current disagreement; "
             "remove it or update its cells and values"
             for i, d in enumerate(disagreements) if i not in used and not _rule_skipped(d, skipped)]
    return CheckReport(run, skipped, explained, stale)


def _said(rule: dict, index: _Index) -> list[tuple[str, str, int]]:
    """The sentences a rule's ``text: {table, lines}`` names: a claim in words ("outperforms CONTA") has
    no number to be a prose cell, but it has a line."""
    text = rule.get("text")
    if not text:
        return []
    prose = index.prose.get(text["table"])
    if not prose:
        raise UserError(f"checks.yaml rule {rule['id']!r}: text table {text['table']!r} has no numbers transcribed")
    return [(prose[0].paper, prose[0].source, int(n)) for n in text.get("lines", [])]


def _claim_lines(finding: Finding, said: list[tuple[str, str, int]], index: _Index) -> tuple[tuple[str, str, int], ...]:
    """Where the text makes the claim: the rule's ``text`` lines and the lines of its prose cells."""
    prose = [(c.paper, index.prose[c.table][0].source, c.source_line) for c in finding.cells if c.table in index.prose]
    return tuple(dict.fromkeys([*said, *prose]))


def _rule_skipped(entry: dict, skipped: list[str]) -> bool:
    return any(s.startswith(f"{entry['check']}:") for s in skipped)


def load_rules(root: str | Path | None = None) -> list[dict]:
    path = board_dir(root) / "checks.yaml"
    rules = load_yaml(path) or []
    if not isinstance(rules, list):
        raise UserError(f"{path}: should be a list of rules")
    for rule in rules:
        _validate_rule(rule, path)
    ids = [r["id"] for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise UserError(f"{path}: duplicate rule id(s) {sorted(dup)}")
    return rules


def load_disagreements(root: str | Path | None = None) -> list[dict]:
    path = board_dir(root) / "disagreements.yaml"
    entries = load_yaml(path) or []
    if not isinstance(entries, list):
        raise UserError(f"{path}: should be a list of disagreements")
    for i, d in enumerate(entries, start=1):
        if not isinstance(d, dict) or not {"check", "cells", "cause", "explanation"} <= set(d):
            raise UserError(f"{path}: entry {i} needs check, cells (ref + value), cause and explanation")
        if not str(d["explanation"]).strip():
            raise UserError(f"{path}: entry {i} ({d['check']}) has an empty explanation")
        for c in d["cells"]:
            if not isinstance(c, dict) or not {"ref", "value"} <= set(c):
                raise UserError(f"{path}: entry {i} ({d['check']}): each cell needs 'ref' and 'value'")
    return entries


def check(root: str | Path | None = None) -> CheckReport:
    """The whole ``wsssbench leaderboard check``: the reported numbers, then committed run records."""
    base = board_dir(root)
    prose = load_prose(base)
    report = run_checks(load_reported(base), load_rules(base), load_disagreements(base), prose)
    report.prose = {t: sum(p.table == t for p in prose) for t in dict.fromkeys(p.table for p in prose)}
    report.sources = {**{p.table: p.source for p in prose}, **_table_sources(base, prose)}
    records, report.records = validate_reproduced(base / "reproduced")
    if records:
        for table in load_tables(base).values():
            report.verified += verify_results(table, records)
    return report


def _table_sources(root: Path, prose: list[ProseCell]) -> dict[str, str]:
    """Each table's paper text file: its ``source`` in ``*_tables.yaml``, else its paper's text file."""
    by_paper = {}
    for p in prose:
        by_paper.setdefault(p.paper, p.source)
    return {t.id: t.source or by_paper.get(t.paper, "") for t in load_tables(root).values()}


def validate_reproduced(directory: str | Path) -> tuple[list[dict], list[str]]:
    """The committed run records (``*.json``) below ``directory`` that are valid, and the problems of
    those that are not (schema, provenance)."""
    from .records import read, record_paths

    directory = Path(directory)
    good, problems = [], []
    for path in record_paths(directory) if directory.is_dir() else []:
        try:
            obj, found = read(path)
        except UserError as err:
            problems.append(str(err))
            continue
        problems.extend(f"{path}: {p}" for p in found)
        if not found:
            good.append(obj)
    return good, problems


# ---------------------------------------------------------------------------------------------
# Reproduced numbers against reported ones


@dataclass(frozen=True)
class Verification:
    table: str
    row: str
    column: str
    metric: str
    reported: float
    reproduced: float
    n: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.reproduced - self.reported) <= self.tolerance

    def __str__(self) -> str:
        state = "ok" if self.ok else "FAILED"
        return (f"{state}: {self.table} | {self.row} | {self.column} ({self.metric}): reproduced "
                f"{self.reproduced:.2f} (n={self.n}) vs reported {self.reported} "
                f"(|Δ| {abs(self.reproduced - self.reported):.2f}, tolerance {self.tolerance})")


def verify_results(table: Any, records: list[dict]) -> list[Verification]:
    """Compare reproduced metrics (mean over seeds) with the reported cells, within each row's tolerance.

    Like detectron2's ``verify_results``: one function, the tolerances stated as data (the row's
    ``tolerance`` in ``leaderboards/reproduce.yaml``). Only rows with a tolerance and only records on
    the table's own dataset are compared: a synthetic run says nothing about a VOC number.
    """
    out = []
    for row, matched in table.match(records).items():
        spec = table.row(row)
        if spec.tolerance is None:
            continue
        matched = [r for r in matched if table.on_paper_dataset(r["dataset"])]
        for column, metric in table.metrics.items():
            cell = table.cell(row, column)
            values = [r["metrics"][metric] for r in matched if metric in r["metrics"]]
            if cell is None or cell.number is None or not values:
                continue
            out.append(Verification(table.id, row, column, metric, cell.number, statistics.fmean(values),
                                    len(values), spec.tolerance))
    return out
