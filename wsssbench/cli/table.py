"""`wsssbench table`: a paper's table as printed, optionally beside what the toolkit reproduces."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import records as run_records
from ..errors import UserError
from ..io import dumps
from ..tables import FORMATS, Reproduced, Table, get_table, load_tables, load_text_tables, render, reproduce
from .app import app
from .options import parse_seeds
from .run import parse_sets


def run_rows(table: Table, *, dataset: str, seeds: list[int], out: Path, device: str,
             sets: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Run every runnable row of ``table`` through the harness, once per seed; the records of each row.
    ``sets``: settings for every row (a row's own overrides win)."""
    from ..harness import run_method

    runnable = [r for r in table.rows if r.runnable]
    if not runnable:
        reasons = "; ".join(f"{r.key}: {r.missing}" for r in table.rows)
        raise UserError(f"table {table.id} has no row the toolkit can run yet ({reasons})")
    sets = sets or {}
    known = _settings(runnable) if sets else {}
    unknown = [k for k in sets if not any(k in names for names in known.values())]
    if unknown:
        raise UserError(f"--set {unknown[0]}: no method of table {table.id} has that setting "
                        f"({', '.join(sorted(known))})")
    done: dict[str, list[dict]] = {}
    for spec in runnable:
        # `--set key=value` strings: the common settings the row's method has, then the row's own
        overrides = {**{k: v for k, v in sets.items() if k in known.get(spec.method, ())},
                     **{k: str(v) for k, v in spec.overrides.items()}}
        if spec.round:      # the run up to this round; runs for the other rounds share its cached stages
            overrides["rounds"] = str(spec.round)
        for seed in seeds:
            record = run_method(spec.method, dataset=dataset, overrides=overrides, seed=seed,
                                out=out, device=device, progress=True)
            done.setdefault(spec.key, []).append(record.to_dict())
    return done


def _settings(rows) -> dict[str, set[str]]:
    """Each row method's setting names (its config dataclass's fields)."""
    from ..methods_api import METHODS
    return {spec.method: {f.name for f in dataclasses.fields(METHODS.get(spec.method).config)} for spec in rows}


@app.command("table")
def table_command(
    table_id: Optional[str] = typer.Argument(None, metavar="ID", help="Table id, e.g. conta:2 or A1 (see --list)."),
    list_: bool = typer.Option(False, "--list", help="List every table id with its paper and caption."),
    fmt: str = typer.Option("rich", "--format", "-f",
                            help=f"Output format: {', '.join(FORMATS)} (rich is for a terminal)."),
    runs: Optional[Path] = typer.Option(None, "--runs",
                                        help="Folder of run records (*.json, searched recursively) to show "
                                             "beside the reported numbers, with deltas."),
    run: bool = typer.Option(False, "--run", help="Run every row the toolkit can run (needs --dataset), "
                                                  "then render reported beside reproduced."),
    dataset: Optional[str] = typer.Option(None, "--dataset",
                                          help="Dataset for --run (e.g. synthetic); with --runs, keep only "
                                               "records on this dataset."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds for --run, e.g. 0,1,2."),
    device: str = typer.Option("cpu", "--device", help="Torch device for --run, e.g. cpu or cuda."),
    sets: List[str] = typer.Option([], "--set", help="With --run: a setting for every row, key=value (repeatable; "
                                                     "a row's own settings win), e.g. --set backbone=resnet50."),
) -> None:
    """Render a paper's table in its own row and column order, reported numbers exactly as printed."""
    if list_:
        _list(fmt)
        return
    if table_id is None:
        raise UserError("give a table ID (see `wsssbench table --list`)")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    table = get_table(table_id)
    if sets and not run:
        raise UserError("--set applies to the rows --run runs; add --run (or drop --set)")
    reproduced: Reproduced | None = None
    if run:
        if dataset is None:
            raise UserError("--run needs --dataset NAME (e.g. --dataset synthetic)")
        out = runs if runs is not None else Path("runs")
        by_row = run_rows(table, dataset=dataset, seeds=parse_seeds(seeds), out=out, device=device,
                          sets=parse_sets(sets))
        reproduced = reproduce(table, [], by_row)
    elif runs is not None:
        records = run_records.load_dir(runs)
        if dataset is not None:
            records = [r for r in records if r["dataset"] == dataset]
        names = {rec["dataset"] for hits in table.match(records).values() for rec in hits}
        if len(names) > 1:
            raise UserError(f"{runs}: records on several datasets ({', '.join(sorted(names))}) match "
                            f"table {table.id}; pick one with --dataset")
        reproduced = reproduce(table, records)
    _emit(render(table, fmt, reproduced))


def _emit(rendered) -> None:
    if isinstance(rendered, str):
        sys.stdout.write(rendered)
    else:
        from rich.console import Console

        Console().print(rendered)


def _list(fmt: str) -> None:
    tables = {**load_tables(), **load_text_tables()}
    if fmt == "json":
        sys.stdout.write(dumps([{"id": t.id, "paper": t.paper, "caption": t.caption, "numbers": t.numbers,
                                 "rows": len(t.rows)} for t in tables.values()]) + "\n")
        return
    if fmt == "rich":
        from rich.table import Table as RichTable

        out = RichTable(title="Tables (wsssbench table ID)")
        for name in ("id", "paper", "rows", "caption"):
            out.add_column(name, overflow="fold")
        for t in tables.values():
            out.add_row(t.id, t.paper, str(len(t.rows)) if t.numbers else "no numbers", t.caption)
        _emit(out)
        return
    for t in tables.values():
        sys.stdout.write(f"{t.id}\t{t.paper}\t{t.caption}\n")
