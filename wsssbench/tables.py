"""Table specs built from the reported numbers, and their renderings (rich, md, csv, latex, json).

A :class:`Table` is data: its id, paper, caption, columns and rows in the paper's order (from
``leaderboards/reported/<paper>.csv`` and ``<paper>_tables.yaml``), and for each row the method and
config overrides that reproduce it (``leaderboards/reproduce.yaml``), or why the toolkit cannot run
it yet. Rendering with run records puts reproduced numbers (mean ± std over seeds) beside reported
ones, with the delta and the evaluation protocol.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import dumps
from .records import SEG_METRICS, WSOL_METRICS
from .reported import Cell, board_dir, decimals, load_prose, load_reported, load_yaml, reported_dir

FORMATS = ("rich", "md", "csv", "latex", "json")
COLUMN = "column"       # csv: a printed superscript in a column of its own, the value left as printed
# How each format shows a printed superscript (CONTA Table 2's gains); csv and json keep the bare value
# (json carries the superscript as its own field).
_SUPERSCRIPT = {"rich": "{value} ({delta})", "md": "{value}<sup>{delta}</sup>", "latex": "{value}$^{{{delta}}}$",
                "csv": COLUMN, "json": None}


@dataclass(frozen=True)
class RowSpec:
    """One printed row, and how the toolkit reproduces it."""

    key: str                              # identity within the table: "group / label" or "label"
    label: str                            # as printed
    group: str = ""
    method: str | None = None             # registered method name that reproduces the row
    overrides: dict[str, Any] = field(default_factory=dict)   # config overrides for that method
    tolerance: float | None = None        # percentage points, for :func:`verify_results`
    no_recipe: str = ""                   # the recipe's reason for a row it gives no method
    round: int | None = None              # a rounds row: the record's ``rounds[round]`` (0 = the baseline)

    @property
    def missing(self) -> str:
        """Why the toolkit cannot run this row (empty = it can). The method registry is imported here, not
        when the tables load: it imports torch, which rendering a table does not need."""
        if self.method is None:
            return self.no_recipe or "no reproduction recipe for this row yet"
        from .methods_api import METHODS, make_config

        if self.method not in METHODS.names():
            return f"method {self.method!r} is not in the toolkit yet"
        try:                # the settings themselves may name what is not here yet (conta's base=seam)
            make_config(METHODS.get(self.method), {k: str(v) for k, v in self.overrides.items()})
        except UserError as err:
            return str(err)
        return ""

    @property
    def runnable(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Table:
    """One paper table: printed cells keyed by (row key, column), rows and columns in printed order."""

    id: str
    paper: str
    caption: str
    datasets: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[RowSpec, ...]
    cells: dict[tuple[str, str], Cell]
    metrics: dict[str, str] = field(default_factory=dict)    # column -> run-record metric key
    row_header: str = "Method"
    group_header: str = ""
    numbers: bool = True
    source: str = ""
    source_lines: tuple[int, ...] = ()
    box_protocols: tuple[str, ...] = ()   # WSOL: each run's maps also scored by these box protocols (reproduce.yaml)

    def cell(self, row_key: str, column: str) -> Cell | None:
        return self.cells.get((row_key, column))

    def row(self, key: str) -> RowSpec:
        for spec in self.rows:
            if spec.key == key:
                return spec
        raise UserError(f"table {self.id} has no row {key!r}; rows: {[r.key for r in self.rows]}")

    def on_paper_dataset(self, dataset: str) -> bool:
        """Whether a run on registered dataset ``dataset`` ("voc") is on this table's dataset ("voc2012").

        >>> Table("t", "p", "", ("voc2012",), (), (), {}).on_paper_dataset("voc")
        True
        """
        name = _alnum(dataset)
        return bool(name) and any(_alnum(d).startswith(name) for d in self.datasets)

    @property
    def grouped(self) -> bool:
        return any(r.group for r in self.rows)

    def match(self, records: list[dict]) -> dict[str, list[dict]]:
        """The run records of each row with a recipe: same method, and the row's overrides in the config."""
        out = {}
        for spec in self.rows:
            if spec.method is None:
                continue
            # a setting another row of this method varies must be at its default where this row leaves it
            # (CONTA's "Round = 2" row is not read from the "Block-2" run)
            varied = {k for r in self.rows if r.method == spec.method for k in r.overrides} - set(spec.overrides)
            if spec.round is not None:
                varied.discard("rounds")
            elif any(r.method == spec.method and r.round is not None for r in self.rows):
                varied.add("rounds")        # the "Block-2" row is read from a run of the default rounds
            defaults = _defaults(spec.method) if varied else {}
            wanted = {**{k: defaults[k] for k in varied if k in defaults}, **spec.overrides}
            hits = [r for r in records if r.get("method") == spec.method
                    and all(_same(_config_get(r.get("config", {}), k), v) for k, v in wanted.items())]
            hits = _closest_config(hits, {**_defaults(spec.method), **spec.overrides})
            if spec.round is not None:      # one multi-round run gives every round row: one record per seed
                by_seed = {}
                for r in hits:
                    if len(r.get("rounds") or ()) > spec.round:
                        by_seed.setdefault(r["seed"], {**r, "metrics": _round_metrics(r, spec.round)})
                hits = list(by_seed.values())
            if hits:
                out[spec.key] = hits
        return out


def _closest_config(hits: list[dict], wanted: dict) -> list[dict]:
    """The records of one configuration: where a row's records were made with different settings (a folder
    holding a default ``seam`` run and an ``expansion=psa`` one), those closest to the row's own config
    (fewest settings differing from ``wanted``: the method's defaults with the row's overrides), so seeds of
    different configurations are never averaged into one cell (chosen per dataset and preset). Ties go to the
    configuration with more seeds.

    >>> a, b = {"config": {"x": 1, "y": 2}}, {"config": {"x": 1, "y": 3}}
    >>> _closest_config([a, b, b], {"x": 1, "y": 2}) == [a], _closest_config([a, b, b], {"x": 1}) == [b, b]
    (True, True)
    """
    import json
    by_data: dict[tuple, dict[str, list[dict]]] = {}
    for r in hits:
        groups = by_data.setdefault((r.get("dataset"), r.get("dataset_preset")), {})
        groups.setdefault(json.dumps(r.get("config", {}), sort_keys=True, default=str), []).append(r)

    def distance(group: list[dict]) -> tuple[int, int]:
        config = group[0].get("config", {})
        return sum(not _same(_config_get(config, k), v) for k, v in wanted.items()), -len(group)
    chosen = {id(r) for groups in by_data.values() for r in min(groups.values(), key=distance)}
    return [r for r in hits if id(r) in chosen]


def _round_metrics(record: dict, round_: int) -> dict:
    """Round ``round_``'s metrics of a record (none where the round measured nothing)."""
    entry = record["rounds"][round_]
    return {k: v for k, v in entry.items() if k in record.get("metrics", {}) and v is not None}


def _defaults(method: str) -> dict:
    """A registered method's default settings, or nothing for a method not in the toolkit."""
    import dataclasses

    from .methods_api import METHODS, make_config
    return dataclasses.asdict(make_config(METHODS.get(method))) if method in METHODS.names() else {}


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _config_get(config: dict, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; a missing key gives a sentinel that equals nothing."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _same(config_value: Any, override: Any) -> bool:
    """An override (as written in reproduce.yaml, applied as a ``--set`` string) matches a config value.

    >>> _same(5, "5"), _same(0.2, 0.2), _same(True, "true"), _same(_MISSING, "x")
    (True, True, True, False)
    """
    if config_value is _MISSING:
        return False
    return str(config_value).lower() == str(override).lower()


# ---------------------------------------------------------------------------------------------
# Building the tables


def _table_meta(root: str | Path | None) -> list[dict]:
    metas = []
    for path in sorted(reported_dir(root).glob("*_tables.yaml")):
        data = load_yaml(path)
        tables = data.get("tables") if isinstance(data, dict) else data
        if not isinstance(tables, list):
            raise UserError(f"{path}: should hold a list of tables (or a mapping with 'tables')")
        for meta in tables:
            if not isinstance(meta, dict) or "id" not in meta or "caption" not in meta:
                raise UserError(f"{path}: every table needs an 'id' and a 'caption' (got {meta!r})")
            paper = meta.get("paper") or (data.get("paper") if isinstance(data, dict) else None)
            metas.append({**meta, "paper": paper or path.name.removesuffix("_tables.yaml"), "_path": path})
    return metas


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(v.strip() for v in str(value).split(",")) if isinstance(value, str) else (value,)


def load_tables(root: str | Path | None = None) -> dict[str, Table]:
    """Every table of every paper, keyed by id, in the order the papers' yaml files list them."""
    cells = load_reported(root)
    recipes_path = board_dir(root) / "reproduce.yaml"
    recipes = load_yaml(recipes_path) if recipes_path.exists() else {}
    by_table: dict[str, list[Cell]] = {}
    for c in cells:
        by_table.setdefault(c.table, []).append(c)
    tables: dict[str, Table] = {}
    for meta in _table_meta(root):
        tid = meta["id"]
        if tid in tables:
            raise UserError(f"{meta['_path']}: table {tid} is described twice")
        table_cells = by_table.pop(tid, [])
        numbers = meta.get("numbers", True) is not False
        if numbers and not table_cells:
            raise UserError(f"{meta['_path']}: table {tid} has no cells in reported/*.csv; "
                            "mark it 'numbers: false' if the paper prints none")
        recipe = recipes.get(tid) or {}
        table_cells = _with_text_columns(meta, table_cells)
        header = [str(h) for h in meta.get("header") or []]
        columns = tuple(dict.fromkeys([*header[1:], *(c.column for c in table_cells)]))
        columns = tuple(c for c in columns if any(cell.column == c for cell in table_cells))
        rows = tuple(_row_spec(key, table_cells, recipe.get("rows", {}))
                     for key in dict.fromkeys(c.row_key for c in table_cells))
        unknown = set(recipe.get("rows", {})) - {r.key for r in rows}
        if unknown:
            raise UserError(f"{recipes_path}: table {tid} has no row(s) {sorted(unknown)}")
        for column, metric in (recipe.get("metrics") or {}).items():
            if column not in columns or metric not in SEG_METRICS + WSOL_METRICS:
                raise UserError(f"{recipes_path}: table {tid} metrics maps {column!r} to {metric!r}; columns: "
                                f"{list(columns)}, metrics: {list(SEG_METRICS + WSOL_METRICS)}")
        tables[tid] = Table(
            id=tid, paper=meta["paper"], caption=" ".join(str(meta["caption"]).split()),
            datasets=_as_tuple(meta.get("dataset")), columns=columns, rows=rows,
            cells={(c.row_key, c.column): c for c in table_cells},
            metrics=dict(recipe.get("metrics", {})),
            row_header=meta.get("row_header") or (header[0] if header else "Method"),
            group_header=meta.get("group_header") or "", numbers=numbers, source=meta.get("source", ""),
            source_lines=_as_tuple(meta.get("source_lines")), box_protocols=_as_tuple(recipe.get("box_protocols")))
    if by_table:
        raise UserError(f"{reported_dir(root)}: table(s) {sorted(by_table)} have cells but no entry in any "
                        "*_tables.yaml")
    return tables


def _with_text_columns(meta: dict, cells: list[Cell]) -> list[Cell]:
    """Add the printed text columns a ``*_tables.yaml`` describes instead of the CSV: ``text_columns``
    ({column: {row: text}}) and ``backbone_column`` (the CSV's ``backbone`` field, printed as a column)."""
    extra = []
    first_cells = {}
    for c in cells:
        first_cells.setdefault(c.row_key, c)
    if meta.get("backbone_column"):
        extra += [replace(c, column=meta["backbone_column"], value=c.backbone, unit="", flags=(), delta="", note="")
                  for c in first_cells.values() if c.backbone]
    for column, texts in (meta.get("text_columns") or {}).items():
        for row, text in (texts or {}).items():
            if row not in first_cells:
                raise UserError(f"{meta['_path']}: text_columns {column!r} names row {row!r}, which table "
                                f"{meta['id']} does not have")
            extra.append(replace(first_cells[row], column=column, value=str(text), unit="", flags=(), delta="",
                                 note=""))
    return cells + extra


def _row_spec(key: str, cells: list[Cell], recipes: dict) -> RowSpec:
    first = next(c for c in cells if c.row_key == key)
    recipe = recipes.get(key) or {}
    return RowSpec(key=key, label=first.row, group=first.group, method=recipe.get("method"),
                   overrides=dict(recipe.get("overrides") or {}), tolerance=recipe.get("tolerance"),
                   no_recipe=recipe.get("missing") or "", round=recipe.get("round"))


def get_table(table_id: str, root: str | Path | None = None) -> Table:
    tables = load_tables(root)
    if table_id not in tables and table_id.endswith(":text"):
        tables.update(load_text_tables(root))
    if table_id not in tables:
        known = [*tables, *(load_text_tables(root) if not table_id.endswith(":text") else ())]
        raise UserError(f"unknown table {table_id!r}; known: {', '.join(known)} (see `wsssbench table --list`)")
    return tables[table_id]


TEXT_COLUMNS = ("Line", "Kind", "Value", "Unit", "Refers to", "Says")


def load_text_tables(root: str | Path | None = None) -> dict[str, Table]:
    """The numbers each paper states in its text (``reported/<paper>_text.csv``) as one table per paper
    text (``conta:text``, ``A:text``, …): a row per number, in the paper's line order."""
    by_table: dict[str, list] = {}
    for p in load_prose(root):
        by_table.setdefault(p.table, []).append(p)
    tables = {}
    for tid, prose in by_table.items():
        prose = sorted(prose, key=lambda p: p.source_line)      # stable: file order within a line
        cells = {}
        for p in prose:
            base = p.as_cell()
            for col, value in zip(TEXT_COLUMNS, (str(p.source_line), p.kind, p.value, p.unit, p.refers_to, p.says)):
                cells[(p.row, col)] = replace(base, column=col, value=value, note=p.note)
        lines = [p.source_line for p in prose]
        tables[tid] = Table(
            id=tid, paper=prose[0].paper, caption=f"Numbers stated in the text of {prose[0].source} (outside its "
            "tables): results, deltas, dataset sizes, figure values and context, each with its line and the "
            "table cell it refers to.", datasets=(), columns=TEXT_COLUMNS,
            rows=tuple(RowSpec(key=p.row, label=p.row, no_recipe="a number stated in the text") for p in prose),
            cells=cells, row_header="Statement", source=prose[0].source, source_lines=(min(lines), max(lines)))
    return tables


# ---------------------------------------------------------------------------------------------
# Reproduced numbers


@dataclass(frozen=True)
class Reproduced:
    """Reproduced values of one table: per (row key, metric) the values over seeds, with provenance."""

    values: dict[tuple[str, str], list[float]]
    protocols: dict[str, list[str]]            # metric -> distinct protocol presets
    datasets: list[str]                        # distinct "dataset[/preset]" of the records used
    random_init: bool                          # some record had no pretrained weights

    def comparable(self, table: "Table") -> bool:
        """Whether every record behind these values ran on the table's own dataset: only then is a Δ to
        the printed number a measurement (a synthetic run beside a VOC number is not)."""
        return bool(self.datasets) and all(table.on_paper_dataset(d.split("/")[0]) for d in self.datasets)

    def summary(self, row: str, metric: str) -> tuple[float, float, int] | None:
        vals = self.values.get((row, metric))
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def round_view(spec: RowSpec, record: dict) -> dict:
    """The record as a row reads it: a rounds row, its round's metrics."""
    return record if spec.round is None else {**record, "metrics": _round_metrics(record, spec.round)}


def reproduce(table: Table, records: list[dict], by_row: dict[str, list[dict]] | None = None) -> Reproduced:
    """Reproduced values of ``table`` from ``records`` matched to rows by their settings, or from ``by_row``
    (row key → the records run for it, as ``table --run`` knows them)."""
    values: dict[tuple[str, str], list[float]] = {}
    protocols: dict[str, list[str]] = {}
    row_protocols: dict[tuple[str, str], set[str]] = {}
    datasets: list[str] = []
    random_init = False
    matched = table.match(records) if by_row is None else {
        key: [round_view(table.row(key), r) for r in hits] for key, hits in by_row.items()}
    for key, hits in matched.items():
        for rec in hits:
            name = rec["dataset"] + (f"/{rec['dataset_preset']}" if rec.get("dataset_preset") else "")
            if name not in datasets:
                datasets.append(name)
            random_init |= rec.get("pretrained") is None
            for metric in table.metrics.values():
                if metric in rec["metrics"]:
                    values.setdefault((key, metric), []).append(float(rec["metrics"][metric]))
                    row_protocols.setdefault((key, metric), set()).add(rec["protocols"][metric])
                    if rec["protocols"][metric] not in protocols.setdefault(metric, []):
                        protocols[metric].append(rec["protocols"][metric])
    _rescored(table, matched, values, protocols)
    for (key, metric), names in row_protocols.items():
        if len(names) > 1:      # a mean over different scoring conventions would be no number at all
            raise UserError(f"table {table.id} row {key!r}: the records score {metric} with different protocols "
                            f"({', '.join(sorted(names))}); render one protocol at a time")
    return Reproduced(values, protocols, datasets, random_init)


def _rescored(table: Table, matched: dict[str, list[dict]], values: dict, protocols: dict) -> None:
    """WSOL tables with ``box_protocols``: every matched run's saved maps scored again under each of them
    (its own θ), as ``<metric>@<protocol>`` values beside the run's own; runs whose maps are gone add none."""
    if not table.box_protocols:
        return
    from .metrics.localization import BOX_METRICS, BOX_PROTOCOLS, rescore_record
    metrics = [m for m in table.metrics.values() if m in BOX_METRICS]
    for proto in table.box_protocols:
        BOX_PROTOCOLS.get(proto)                # an unknown name: one line naming the known ones
        for key, hits in matched.items():
            for rec in hits:
                result = rescore_record(rec, proto) if metrics else None
                for metric in metrics if result is not None else ():
                    if metric in result:
                        values.setdefault((key, f"{metric}@{proto}"), []).append(float(result[metric]))
                        name = f"{result['protocol']}/{result['frame']} θ {result['threshold']:g}"
                        if name not in protocols.setdefault(f"{metric}@{proto}", []):
                            protocols[f"{metric}@{proto}"].append(name)


def _extra_protocols(table: Table, reproduced: "Reproduced | None", col: str) -> list[str]:
    """The ``box_protocols`` a column is also shown under (its metric depends on the box rule)."""
    if reproduced is None or col not in table.metrics or not table.box_protocols:
        return []
    from .metrics.localization import BOX_METRICS
    return [p for p in table.box_protocols if table.metrics[col] in BOX_METRICS]


# ---------------------------------------------------------------------------------------------
# Rendering


def grid(table: Table, reproduced: Reproduced | None = None,
         superscript: str | None = None) -> tuple[list[str], list[list[str]], list[str], set[tuple[int, int]]]:
    """Header, rows as strings, and each column's alignment ("l" text, "r" numbers): the group first
    (when the table has groups, as the papers print Q1…/A1…), then the row label, the printed columns,
    and with ``reproduced`` an "ours" and a "Δ" column after each metric column. ``superscript`` (e.g.
    ``"{value} ({delta})"``) shows a printed superscript such as Table 2's gains; :data:`COLUMN` puts it
    in a column of its own after its column; None drops it. The last item holds the (row, column)
    positions of the cells the paper prints in bold (flag ``best``)."""
    header, aligns = [], []
    if table.grouped:
        header.append(table.group_header or "Group")
        aligns.append("l")
    header.append(table.row_header or "Method")
    aligns.append("l")
    with_delta = reproduced is not None and reproduced.comparable(table)
    sup_columns = {col for (_, col), c in table.cells.items() if c.delta} if superscript == COLUMN else set()
    for col in table.columns:
        header.append(col)
        numeric = any(c.number is not None for (_, name), c in table.cells.items() if name == col)
        aligns.append("r" if numeric else "l")
        if col in sup_columns:
            header.append(f"{col} superscript")
            aligns.append("r")
        if reproduced is not None and col in table.metrics:
            header.append(f"{col} (ours)")
            aligns.append("r")
            if with_delta:
                header.append(f"Δ {col}")
                aligns.append("r")
            for proto in _extra_protocols(table, reproduced, col):
                header += [f"{col} (ours, {proto})"] + ([f"Δ {col} ({proto})"] if with_delta else [])
                aligns += ["r"] * (2 if with_delta else 1)
    body, bold = [], set()
    for spec in table.rows:
        line = ([spec.group] if table.grouped else []) + [spec.label]
        for col in table.columns:
            cell = table.cell(spec.key, col)
            text = cell.value if cell else ""
            if cell is not None and cell.delta and superscript and superscript != COLUMN:
                text = superscript.format(value=cell.value, delta=cell.delta)
            if cell is not None and "best" in cell.flags:
                bold.add((len(body), len(line)))
            line.append(text)
            if col in sup_columns:
                line.append(cell.delta if cell is not None and cell.delta else "")
            if reproduced is not None and col in table.metrics:
                line += _ours(cell, reproduced.summary(spec.key, table.metrics[col]))[:2 if with_delta else 1]
                for proto in _extra_protocols(table, reproduced, col):
                    line += _ours(cell, reproduced.summary(spec.key, f"{table.metrics[col]}@{proto}"))[
                        :2 if with_delta else 1]
        body.append(line)
    return header, body, aligns, bold


UNRESOLVED = "†"


def unresolved(cell: Cell | None, summary: tuple[float, float, int] | None) -> bool:
    """Whether the printed number lies inside the 95% t interval of ours over seeds (n ≥ 2): Δ is then
    not resolved from zero by the seeds run."""
    if summary is None or cell is None or cell.number is None or summary[2] < 2:
        return False
    from .compare import t_quantile
    mean, std, n = summary
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return mean - half <= cell.number <= mean + half


def _ours(cell: Cell | None, summary: tuple[float, float, int] | None) -> list[str]:
    if summary is None:
        return ["", ""]
    mean, std, n = summary
    places = decimals(cell.value) if cell is not None and cell.number is not None else 1
    ours = f"{mean:.{places}f}" + (f" ± {std:.{places}f} (n={n})" if n > 1 else "")
    delta = f"{mean - cell.number:+.{places}f}" if cell is not None and cell.number is not None else ""
    return [ours, delta + (f" {UNRESOLVED}" if unresolved(cell, summary) else "")]


def footnotes(table: Table, reproduced: Reproduced | None) -> list[str]:
    notes = []
    if not table.numbers:
        notes.append("The paper names this table but its numbers are not in the paper text; none are recorded.")
    if reproduced is not None:
        if not reproduced.values:
            notes.append("No run record matches a row of this table.")
        else:
            notes.append(f"ours: mean ± std over seeds, on {', '.join(reproduced.datasets)}; protocols: "
                         + ", ".join(f"{m}={'/'.join(p)}" for m, p in reproduced.protocols.items()))
            if not reproduced.comparable(table):
                notes.append(f"no Δ: ours ran on {', '.join(reproduced.datasets)}, the paper's numbers on "
                             f"{', '.join(table.datasets)}; a difference between the two measures nothing.")
            elif any(unresolved(table.cell(spec.key, col), reproduced.summary(spec.key, metric))
                   for spec in table.rows for col, metric in table.metrics.items()):
                notes.append(f"{UNRESOLVED}: the printed number lies inside the 95% t interval of ours over seeds "
                             "(Δ not resolved by these seeds).")
            if reproduced.random_init:
                notes.append("some runs used randomly initialised backbones: not comparable to the paper.")
    return notes


def render(table: Table, fmt: str = "md", reproduced: Reproduced | None = None) -> str | Any:
    """The table in ``fmt`` (a string; for ``rich``, a renderable)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    header, body, aligns, bold = grid(table, reproduced, _SUPERSCRIPT[fmt])
    notes = footnotes(table, reproduced)
    return _RENDERERS[fmt](table, header, body, aligns, bold, notes, reproduced)


def _render_rich(table, header, body, aligns, bold, notes, reproduced):
    from rich.table import Table as RichTable
    from rich.text import Text

    if not table.numbers:
        return Text("\n".join([f"{table.id} ({table.paper})", table.caption, *notes]))
    out = RichTable(title=f"{table.id} ({table.paper})", caption="\n".join([table.caption, *notes]),
                    caption_justify="left")
    for name, align in zip(header, aligns):
        # every column may wrap (long headers too), so a narrow terminal wraps cells instead of cutting
        # the table or squeezing a text column to nothing beside unbreakable numeric ones
        out.add_column(name, justify="right" if align == "r" else "left", overflow="fold")
    for i, line in enumerate(body):
        shown = [Text(v, style="bold" if (i, j) in bold else "") for j, v in enumerate(line)]
        if _repeats_group(table, body, i):
            shown[0] = Text("")        # print a group's name once, as the paper does
        last_of_group = table.grouped and (i + 1 == len(body) or body[i + 1][0] != line[0])
        out.add_row(*shown, end_section=last_of_group)
    return out


def _repeats_group(table: Table, body: list[list[str]], i: int) -> bool:
    """Whether row ``i`` continues the group of the row above (its group cell is then printed blank)."""
    return table.grouped and i > 0 and body[i - 1][0] == body[i][0]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _render_md(table, header, body, aligns, bold, notes, reproduced):
    lines = [f"**{table.id}** ({table.paper}): {_md_escape(table.caption)}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|")
    for i, line in enumerate(body):
        shown = ["" if j == 0 and _repeats_group(table, body, i) else v for j, v in enumerate(line)]
        lines.append("| " + " | ".join(f"**{_md_escape(v)}**" if (i, j) in bold else _md_escape(v)
                                       for j, v in enumerate(shown)) + " |")
    lines += [""] + [f"*{_md_escape(n)}*" for n in notes] if notes else []
    return "\n".join(lines) + "\n"


def _render_csv(table, header, body, aligns, bold, notes, reproduced):
    """Values unchanged; a last ``best`` column names the row's columns the paper prints in bold."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, "best"])
    writer.writerows([*line, ";".join(header[j] for j in range(len(line)) if (i, j) in bold)]
                     for i, line in enumerate(body))
    return buf.getvalue()


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "$": r"\$", "–": "--", "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"$\dagger$", "∗": "*",
                  "←": r"$\leftarrow$", "✓": r"$\checkmark$"}


def latex_escape(text: str) -> str:
    r"""Escape text for LaTeX, keeping ``$...$`` math as printed in the paper text.

    >>> latex_escape("R&D 5% $C_{\\text{x}}$")
    'R\\&D 5\\% $C_{\\text{x}}$'
    """
    parts = re.split(r"(\$[^$]+\$)", text)
    return "".join(p if p.startswith("$") and p.endswith("$") and len(p) > 1
                   else "".join(_LATEX_SPECIAL.get(ch, ch) for ch in p) for p in parts)


def _render_latex(table, header, body, aligns, bold, notes, reproduced):
    spec = "".join(aligns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for i, line in enumerate(body):
        if table.grouped and i and body[i - 1][0] != line[0]:
            lines.append(r"\midrule")
        shown = ["" if j == 0 and _repeats_group(table, body, i) else v for j, v in enumerate(line)]
        lines.append(" & ".join(rf"\textbf{{{latex_escape(v)}}}" if (i, j) in bold else latex_escape(v)
                                for j, v in enumerate(shown)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(' '.join([table.caption, *notes]))}}}",
              rf"\label{{tab:{table.id.replace(':', '-')}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _render_json(table, header, body, aligns, bold, notes, reproduced):
    rows = []
    for spec, line in zip(table.rows, body):
        entry: dict[str, Any] = {"label": spec.label, "group": spec.group, "key": spec.key,
                                 "method": spec.method, "overrides": spec.overrides,
                                 "runnable": spec.runnable, "missing": spec.missing or None, "cells": {}}
        for col in table.columns:
            cell = table.cell(spec.key, col)
            if cell is None:
                continue
            entry["cells"][col] = {"value": cell.value, "flags": list(cell.flags), "delta": cell.delta or None,
                                   "source_line": cell.source_line}
            if reproduced is not None and col in table.metrics:
                s = reproduced.summary(spec.key, table.metrics[col])
                if s is not None:
                    numeric = cell.number is not None and reproduced.comparable(table)
                    entry["cells"][col]["reproduced"] = {
                        "metric": table.metrics[col], "mean": s[0], "std": s[1], "n": s[2],
                        "delta": s[0] - cell.number if numeric else None,
                        # the printed number outside the 95% t interval of ours (None: fewer than 2 seeds)
                        "delta_resolved": not unresolved(cell, s) if numeric and s[2] > 1 else None}
                for proto in _extra_protocols(table, reproduced, col):
                    s = reproduced.summary(spec.key, f"{table.metrics[col]}@{proto}")
                    if s is not None:
                        entry["cells"][col].setdefault("reproduced_by_protocol", {})[proto] = {
                            "mean": s[0], "std": s[1], "n": s[2],
                            "delta": s[0] - cell.number if cell.number is not None and reproduced.comparable(table)
                            else None}
        rows.append(entry)
    obj = {"id": table.id, "paper": table.paper, "caption": table.caption, "datasets": list(table.datasets),
           "numbers": table.numbers, "source": table.source, "source_lines": list(table.source_lines),
           "header": header, "rows": rows, "notes": notes}
    if reproduced is not None:
        obj["reproduced"] = {"datasets": reproduced.datasets, "protocols": reproduced.protocols,
                             "random_init": reproduced.random_init, "comparable": reproduced.comparable(table)}
    return dumps(obj) + "\n"


_RENDERERS = {"rich": _render_rich, "md": _render_md, "csv": _render_csv, "latex": _render_latex,
              "json": _render_json}
