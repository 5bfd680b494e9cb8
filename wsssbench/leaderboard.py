"""Reported numbers: checking them against each other, and verifying reproduced ones.

The reported numbers are data (``leaderboards/reported/<paper>.csv``, one row per printed cell). The
consistency checks are data too (``leaderboards/checks.yaml``): each rule says which cells must agree,
within a paper or across papers. A disagreement passes only when ``leaderboards/disagreements.yaml``
lists it (same rule, same cells, same printed values) with an explanation; an entry that no longer
matches anything is stale and fails too, so that file stays reviewed.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .reported import Cell, board_dir, decimals, load_reported, load_yaml, parse_number
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

    @property
    def signature(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.ref, c.value) for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "explained": self.explanation is not None,
                "explanation": self.explanation,
                "cells": [{"ref": c.ref, "value": c.value, "source_line": c.source_line,
                           "paper": c.paper} for c in self.cells]}


@dataclass
class CheckReport:
    checks_run: list[str]
    skipped: list[str]            # rules naming a table nobody has transcribed yet
    findings: list[Finding]       # explained and unexplained disagreements
    stale: list[str]              # disagreements.yaml entries matching no finding
    records: list[str] = field(default_factory=list)              # committed run records without provenance
    verified: list["Verification"] = field(default_factory=list)  # committed records vs reported, by tolerance

    @property
    def unexplained(self) -> list[Finding]:
        return [f for f in self.findings if f.explanation is None]

    @property
    def ok(self) -> bool:
        return not self.unexplained and not self.stale and not self.records and all(v.ok for v in self.verified)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks_run": self.checks_run, "skipped": self.skipped,
                "findings": [f.to_dict() for f in self.findings], "stale": self.stale,
                "records": self.records, "verified": [{**asdict(v), "ok": v.ok} for v in self.verified]}


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

    def get(self, table: str, row: str, column: str, rule: str) -> Cell:
        try:
            return self.cells[(table, row, column)]
        except KeyError:
            rows = sorted({k[1] for k in self.cells if k[0] == table})
            raise UserError(f"checks.yaml rule {rule!r}: no cell {table} | {row} | {column}; "
                            f"rows of {table}: {rows}") from None


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


_KINDS = {"equal": _check_equal, "superscripts": _check_superscripts}


def _tables_of(rule: dict) -> set[str]:
    if "equal" in rule:
        return {s["table"] for s in rule["equal"]}
    return {rule["superscripts"]}


def _validate_rule(rule: Any, path: Path) -> None:
    if not isinstance(rule, dict) or "id" not in rule or "why" not in rule:
        raise UserError(f"{path}: every rule needs an 'id' and a 'why' (got {rule!r})")
    kinds = [k for k in _KINDS if k in rule]
    if len(kinds) != 1:
        raise UserError(f"{path}: rule {rule['id']!r} needs exactly one of {sorted(_KINDS)}")
    if "equal" in rule:
        sides = rule["equal"]
        if (not isinstance(sides, list) or len(sides) < 2 or "columns" not in sides[0]
                or any(len(s.get("columns", sides[0]["columns"])) != len(sides[0]["columns"]) for s in sides)):
            raise UserError(f"{path}: rule {rule['id']!r}: 'equal' needs two or more sides "
                            "{table, row, columns}, the first naming the columns, all the same length")


def run_checks(cells: list[Cell], rules: list[dict], disagreements: list[dict]) -> CheckReport:
    """Apply every rule to the cells, then explain what disagrees from the reviewed list."""
    index = _Index(cells)
    findings: list[Finding] = []
    run, skipped = [], []
    for rule in rules:
        absent = sorted(_tables_of(rule) - index.tables)
        if absent:
            skipped.append(f"{rule['id']}: table(s) {', '.join(absent)} not transcribed")
            continue
        run.append(rule["id"])
        kind = next(k for k in _KINDS if k in rule)
        findings.extend(_KINDS[kind](rule, index))
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
            explained.append(Finding(finding.check, finding.cells, finding.message,
                                     f"{d['cause']}: {d['explanation']}"))
    stale = [f"disagreements.yaml entry {i + 1} ({d['check']}): matches no current disagreement; "
             "remove it or update its cells and values"
             for i, d in enumerate(disagreements) if i not in used and not _rule_skipped(d, skipped)]
    return CheckReport(run, skipped, explained, stale)


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
    report = run_checks(load_reported(base), load_rules(base), load_disagreements(base))
    records, report.records = validate_reproduced(base / "reproduced")
    if records:
        for table in load_tables(base).values():
            report.verified += verify_results(table, records)
    return report


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
