"""`wsssbench cache list|clean`: the stage cache of a runs folder, and removing what interrupted runs left."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import UserError
from ..io import dumps
from ..stages import cache
from .app import cache_app

_OUT_HELP = "The runs folder (run/table --out); its stages are in OUT/cache."


def _root(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a runs folder")
    return out / "cache"


def _rows(entries: list[cache.Entry]) -> list[dict]:
    return [{"name": e.name, "state": e.state, "bytes": e.bytes, "path": str(e.path)} for e in entries]


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MB"


@cache_app.command("list")
def list_command(out: Path = typer.Option(Path("runs"), "--out", help=_OUT_HELP),
                 json_: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table.")) -> None:
    """Every cached stage with its state (done; building: a live run holds it; orphaned: left by an
    interrupted run) and size."""
    root = _root(out)
    entries = cache.entries(root)
    if json_:
        sys.stdout.write(dumps({"root": str(root), "stages": _rows(entries),
                                "total_bytes": sum(e.bytes for e in entries)}) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{root}: {len(entries)} stages, {_mb(sum(e.bytes for e in entries))}")
    for name in ("stage", "state", "size"):
        table.add_column(name, justify="right" if name == "size" else "left")
    for e in entries:
        table.add_row(e.name, e.state, _mb(e.bytes))
    Console().print(table)


@cache_app.command("clean")
def clean_command(out: Path = typer.Option(Path("runs"), "--out", help=_OUT_HELP),
                  json_: bool = typer.Option(False, "--json", help="Print one JSON object instead of lines.")) -> None:
    """Remove the orphaned stage folders (interrupted runs' leftovers). Finished stages and stages a live
    run is building are kept."""
    root = _root(out)
    removed = cache.clean(root)
    freed = sum(e.bytes for e in removed)
    if json_:
        sys.stdout.write(dumps({"root": str(root), "removed": _rows(removed), "freed_bytes": freed}) + "\n")
        return
    for e in removed:
        sys.stdout.write(f"removed {e.path} ({_mb(e.bytes)})\n")
    sys.stdout.write(f"{len(removed)} orphaned stage folders removed, {_mb(freed)} freed\n")
